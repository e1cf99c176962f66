//! Two API replicas on one database and one Valkey (docs/limits.md,
//! "Several replicas"; docs/security.md): reserving checks spread over both
//! admit exactly the budget, also while the admitted executions' usage
//! arrives through Kafka and the ingest worker; a limit written on one is
//! enforced by the other at once (p99 printed); a key's rate budget is shared;
//! Valkey cut (a TCP proxy in front of it) and restored, and its data lost,
//! never lead to over-admission and heal without restarting the API.
//!
//! Needs AGENTMETER_VALKEY_URL (and the local ClickHouse and Kafka); every
//! test uses its own database, topics and Valkey key prefix.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_api::auth::Role;
use agentmeter_api::{AppState, Args};
use clap::Parser;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use uuid::Uuid;

use crate::common::{clickhouse_url, http_client, key_store, serve, TestDb};
use crate::kafka::{Kind, Pipeline};

const ADMIN: &str = "am_test_replicas_admin";

pub(crate) fn valkey_url() -> String {
    std::env::var("AGENTMETER_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A TCP proxy in front of Valkey that can drop every connection.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let up_rx = up.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !*up_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut up_rx = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up_rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// One API replica.
pub(crate) struct Replica {
    pub(crate) base: String,
    pub(crate) state: AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Two replicas of one deployment.
pub(crate) struct Pair {
    pub(crate) db: TestDb,
    pub(crate) tenant: Uuid,
    prefix: String,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) http: reqwest::Client,
}

impl Pair {
    /// Two replicas on a fresh database; `valkey` is the URL they use
    /// (direct, or through a proxy); `extra` are more flags of both.
    pub(crate) async fn start(what: &str, valkey: &str, extra: &[&str]) -> Pair {
        Self::start_uneven(what, valkey, extra, &[]).await
    }

    /// As [`Pair::start`], with `second` as more flags of replica 1 only.
    async fn start_uneven(what: &str, valkey: &str, extra: &[&str], second: &[&str]) -> Pair {
        let db = TestDb::fresh(what).await;
        let tenant = Uuid::new_v4();
        let prefix = format!("test_{what}_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut replicas = Vec::new();
        for i in 0..2 {
            let keys = key_store(&[("admin", tenant, Role::Admin, ADMIN)]);
            let url = clickhouse_url();
            let mut argv = vec![
                "agentmeter-api",
                "--clickhouse-url",
                &url,
                "--clickhouse-database",
                &db.name,
                "--valkey-url",
                valkey,
                "--valkey-key-prefix",
                &prefix,
            ];
            argv.extend_from_slice(extra);
            if i == 1 {
                argv.extend_from_slice(second);
            }
            let args = Args::parse_from(argv);
            let state = AppState::new(args.clickhouse.client(), Arc::new(keys), &args);
            let (base, stop) = serve(state.clone()).await;
            state.usage.start();
            replicas.push(Replica { base, state, _stop: stop });
        }
        let pair = Pair { db, tenant, prefix, replicas, http: http_client() };
        pair.wait_ready().await;
        pair
    }

    /// Until both replicas have loaded their counters and say Valkey is ok
    /// (not fenced: a fresh prefix starts with a short fence).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for r in &self.replicas {
            loop {
                let (_, v) = self.send(r, reqwest::Method::GET, "/ready", None).await;
                if r.state.usage.is_loaded() && v["shared_state"]["valkey"]["state"] == "ok" {
                    break;
                }
                assert!(Instant::now() < deadline, "replica never ready: {v}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub(crate) async fn send(&self, r: &Replica, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", r.base, path)).header("X-API-Key", ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) async fn check(&self, r: usize, body: Value) -> (u16, Value) {
        self.send(&self.replicas[r], reqwest::Method::POST, "/v1/usage/check", Some(body)).await
    }

    /// Every key of this test's prefix (what a Valkey restart without
    /// persistence would lose).
    async fn wipe_valkey(&self) {
        let client = redis::Client::open(valkey_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
        }
    }

    pub(crate) async fn drop_all(self) {
        self.wipe_valkey().await;
        self.db.drop().await;
    }
}

/// `n` reserving checks of `units` tokens at once, alternating replicas;
/// returns the admitted execution ids (every other answer must be a denial).
async fn reserve_round(pair: &Pair, org: Uuid, user: Uuid, n: usize, units: u64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let answers = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let body =
            json!({"tokens": units, "usage_type": "tokens", "organization_id": org, "user_id": user, "reserve": true, "execution_id": id});
        async move { (*id, pair.check(i % 2, body).await) }
    }))
    .await;
    let mut admitted = Vec::new();
    for (id, (status, v)) in answers {
        assert_eq!(status, 200, "{v}");
        if v["allowed"] == true {
            assert!(v["reservation"]["reservation_id"].is_string(), "{v}");
            admitted.push(id);
        }
    }
    admitted
}

pub(crate) async fn put_limit(pair: &Pair, r: usize, id: Uuid, body: Value) {
    let (s, v) = pair.send(&pair.replicas[r], reqwest::Method::PUT, &format!("/v1/limits/{id}"), Some(body)).await;
    assert!(s == 200 || s == 201, "{s} {v}");
}

/// Puts a daily limit of 1,000 tokens on `user` through replica 0 and waits
/// until replica 1 enforces it (within one refresh; the deadline is generous
/// because this is a test's setup on a possibly busy machine, and
/// `a_limit_written_on_one_replica_is_enforced_by_the_other_within_a_second`
/// is the test of the lag). Returns a 1-token check of that user.
async fn put_user_token_limit(pair: &Pair, org: Uuid, user: Uuid) -> Value {
    put_limit(
        pair,
        0,
        Uuid::new_v4(),
        json!({"subject": "user", "organization_id": org, "user_id": user, "metric": "tokens", "period": "day", "max_value": 1000}),
    )
    .await;
    let probe = json!({"tokens": 1, "usage_type": "tokens", "organization_id": org, "user_id": user});
    let deadline = Instant::now() + Duration::from_secs(30);
    while pair.check(1, probe.clone()).await.1["max_limit"] != 1000 {
        assert!(Instant::now() < deadline, "replica 1 never saw the limit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe
}

/// Produces one billable agent execution of `tokens` through `pipeline`.
async fn produce_execution(pipeline: &Pipeline, tenant: Uuid, org: Uuid, user: Uuid, execution_id: Uuid, tokens: u64) {
    let event = json!({
        "event_id": Uuid::new_v4(), "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenant_id": tenant, "execution_id": execution_id, "execution_kind": "agent_chat", "billable": true,
        "organization_id": org, "user_id": user, "input_tokens": tokens / 2, "output_tokens": tokens - tokens / 2,
        "total_tokens": tokens, "cost_usd": "0.01", "messages_count": 1, "status": "success",
    });
    pipeline.produce(Kind::AgentExecution, &[event]).await;
}

/// 40 reserving checks of 100 tokens against a 1,000-token budget, spread
/// over two replicas, admit exactly 10. Then the admitted executions happen
/// (60 tokens each, through Kafka and the worker) while both replicas keep
/// answering reserving checks: at no instant is more admitted than the
/// budget allows (usage + live holds <= 1,000), and once every replica
/// counts the usage, exactly the rest (400 tokens: 4 checks) is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_admit_exactly_the_budget_while_usage_arrives() {
    // Replica 1 refreshes four times less often than replica 0: its
    // counters lag while replica 0 already counts the usage, the moment a
    // hold released on first sight would be counted zero times there.
    let pair = Pair::start_uneven(
        "replicas_budget",
        &valkey_url(),
        &["--usage-reservation-ttl-ms", "120000"],
        &["--usage-refresh-interval-ms", "1000"],
    )
    .await;
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    let probe = put_user_token_limit(&pair, org, user).await;

    let first = reserve_round(&pair, org, user, 40, 100).await;
    assert_eq!(first.len(), 10, "the budget allows exactly 10 of 100 tokens");

    // The executions happen while both replicas keep checking.
    let pipeline = Pipeline::start_batched("replicas", &pair.db.name, 2).await;
    let checking = async {
        let mut admitted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            admitted.extend(reserve_round(&pair, org, user, 4, 100).await);
            // Each admitted check holds 100 for 120 s; the executions use
            // 60 of their 100: never more than 4 more fit.
            assert!(admitted.len() <= 4, "over-admitted during the transition: {} more", admitted.len());
            let both_counted = futures::future::join_all((0..2).map(|r| pair.check(r, probe.clone()))).await;
            if both_counted.iter().all(|(_, v)| v["current_usage"] == 600) {
                return admitted;
            }
            assert!(Instant::now() < deadline, "usage never reached both replicas: {both_counted:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let producing = async {
        for id in &first {
            produce_execution(&pipeline, pair.tenant, org, user, *id, 60).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let (mut admitted, ()) = tokio::join!(checking, producing);

    // Every replica now counts the 600 tokens of usage and holds nothing
    // for the finished executions: exactly the rest is admitted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answers = futures::future::join_all((0..2).map(|r| pair.check(r, probe.clone()))).await;
        let reserved = i64::try_from(admitted.len()).unwrap() * 100;
        if answers.iter().all(|(_, v)| v["reserved"] == reserved && v["current_usage"] == 600) {
            break;
        }
        assert!(Instant::now() < deadline, "holds of seen executions never stopped counting: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admitted.extend(reserve_round(&pair, org, user, 40, 100).await);
    assert_eq!(admitted.len(), 4, "600 used + 400 held = the budget");
    for r in 0..2 {
        let (_, v) = pair.check(r, probe.clone()).await;
        assert_eq!((v["current_usage"].clone(), v["reserved"].clone(), v["remaining"].clone()), (json!(600), json!(400), json!(0)), "{v}");
    }
    pipeline.stop().await;
    pair.drop_all().await;
}

/// Limits created, changed and deleted through replica 0 are enforced by
/// replica 1 at once (a Valkey announcement wakes its limits reload; the
/// 250 ms fingerprint poll is the fallback); prints the p50 and p99 lag.
/// The full reload is moved out to 10 minutes, so that only the
/// announcement or the fingerprint can explain a write enforced within the
/// test's 30 s (the default 60 s reload could explain some of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_written_on_one_replica_is_enforced_by_the_other_within_a_second() {
    let pair = Pair::start("replicas_limits", &valkey_url(), &["--usage-reconcile-interval-ms", "600000"]).await;
    let org = Uuid::new_v4();
    let probe = json!({"tokens": 10, "usage_type": "tokens", "organization_id": org});
    let mut lags = Vec::new();
    for round in 0..10 {
        let id = Uuid::new_v4();
        // (what is written, what replica 1 must answer for 10 tokens)
        let steps: [(Option<u64>, Value); 3] = [(Some(5), json!(5)), (Some(100 + round), json!(100 + round)), (None, json!("unlimited"))];
        for (max, want) in steps {
            match max {
                Some(m) => {
                    put_limit(
                        &pair,
                        0,
                        id,
                        json!({"subject": "organization", "organization_id": org, "metric": "tokens", "period": "month", "max_value": m}),
                    )
                    .await
                }
                None => {
                    let (s, v) = pair.send(&pair.replicas[0], reqwest::Method::DELETE, &format!("/v1/limits/{id}"), None).await;
                    assert_eq!(s, 200, "{v}");
                }
            }
            // From the acknowledged write.
            let written = Instant::now();
            loop {
                let (s, v) = pair.check(1, probe.clone()).await;
                assert_eq!(s, 200, "{v}");
                if v["max_limit"] == want {
                    assert_eq!(v["allowed"], json!(max != Some(5)), "{v}");
                    break;
                }
                assert!(written.elapsed() < Duration::from_secs(30), "replica 1 still answers {v}, wants {want}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            lags.push(written.elapsed());
        }
    }
    lags.sort();
    let p99 = lags[(lags.len() * 99).div_ceil(100) - 1];
    println!("limit write on replica 0 -> enforced by replica 1: p50 {:?}, p99 {:?} over {} writes", lags[lags.len() / 2], p99, lags.len());
    // Every write above was enforced within 30 s, far inside the 10-minute
    // full reload of this test (a reload takes a few ClickHouse reads, which
    // wait behind other work on a busy machine); the p99 (about 0.3 s on a
    // quiet machine, docs/limits.md) is printed, not asserted: a timing
    // assertion fails on a loaded machine without telling anything about
    // the code.
    pair.drop_all().await;
}

/// One key's check budget (burst 12, refilled at one request per 1000 s)
/// is one budget for both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_rate_budget_is_shared_by_the_replicas() {
    let pair = Pair::start("replicas_rate", &valkey_url(), &["--check-rate-per-s", "0.001", "--check-burst", "12"]).await;
    // /ready is not rate limited; the checks of Pair::start were not checks.
    let probe = json!({"tokens": 1, "usage_type": "tokens", "organization_id": Uuid::new_v4()});
    let answers = futures::future::join_all((0..30).map(|i| pair.check(i % 2, probe.clone()))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((ok, limited), (12, 18), "{answers:?}");
    pair.drop_all().await;
}

/// Valkey cut (a proxy in front of it drops every connection) and
/// restored: while away, reserving checks answer 503 with a detail and
/// plain checks answer from the counters; rate limits fall back to each
/// process; afterwards both replicas reserve again by themselves, and the
/// holds from before the cut still count. Then Valkey loses its data:
/// reserving checks are fenced for one hold lifetime, then resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_cut_restored_and_wiped_never_over_admits() {
    let target = valkey_url().trim_start_matches("redis://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(target).await;
    let url = format!("redis://{}", proxy.addr);
    // The holds taken before the cut must outlive the cut, the reconnection
    // and the round after it (a few seconds, more on a busy machine); the
    // hold lifetime is also the fence after the loss below.
    const TTL_S: u64 = 20;
    let ttl_ms = (TTL_S * 1000).to_string();
    let pair = Pair::start("replicas_outage", &url, &["--usage-reservation-ttl-ms", &ttl_ms]).await;
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    let probe = put_user_token_limit(&pair, org, user).await;
    let before = reserve_round(&pair, org, user, 3, 100).await;
    assert_eq!(before.len(), 3);

    proxy.set_up(false);
    let reserve = json!({"tokens": 100, "usage_type": "tokens", "organization_id": org, "user_id": user, "reserve": true});
    for r in 0..2 {
        let (s, v) = pair.check(r, reserve.clone()).await;
        assert_eq!(s, 503, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("Valkey"), "{v}");
        let (s, v) = pair.check(r, probe.clone()).await;
        assert_eq!((s, v["current_usage"].clone(), v["max_limit"].clone()), (200, json!(0), json!(1000)), "{v}");
        let (_, ready) = pair.send(&pair.replicas[r], reqwest::Method::GET, "/ready", None).await;
        assert_eq!(ready["shared_state"]["valkey"]["state"], "unreachable", "{ready}");
    }

    proxy.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    for r in 0..2 {
        loop {
            let (s, v) = pair.check(r, probe.clone()).await;
            if s == 200 && v["reserved"] == 300 {
                break;
            }
            assert!(Instant::now() < deadline, "replica {r} never came back: {s} {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after = reserve_round(&pair, org, user, 40, 100).await;
    assert_eq!(after.len(), 7, "300 held before the cut + 700");

    // Valkey loses everything (as a restart without persistence would):
    // the lost holds may stand for calls still running, so no replica may
    // reserve until they would have expired.
    pair.wipe_valkey().await;
    let wiped = Instant::now();
    let mut fenced = 0;
    loop {
        let (s, v) = pair.check(fenced % 2, reserve.clone()).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("Valkey"), "{v}");
        fenced += 1;
        assert!(wiped.elapsed() < Duration::from_secs(TTL_S + 40), "reservations never resumed after the loss");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fenced for about the hold lifetime (the first replica to notice may
    // be a refresh late), far longer than the young fence.
    assert!(wiped.elapsed() >= Duration::from_secs(TTL_S - 1), "resumed after {:?}", wiped.elapsed());
    assert!(fenced > 0);
    pair.drop_all().await;
}

/// The in-flight cap of a key is shared: a slot held through one replica's
/// limiter refuses the other's; released, it is free again; and a slot whose
/// holder dies without releasing it (the permit is leaked, as by a crashed
/// replica) frees itself when its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_slots_are_shared_and_a_dead_replicas_slots_expire() {
    use agentmeter_api::shared_rate_limit::{SharedRateLimiter, Verdict};
    use agentmeter_api::valkey::{Valkey, ValkeySettings};

    let prefix = format!("test_replicas_slots_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let settings = ValkeySettings { url: Some(valkey_url()), key_prefix: prefix.clone(), loss_fence_ms: 1_000, young_fence_ms: 1_000 };
    // Two replicas; requests last at most 0 ms + the 5 s lease slack.
    let a = SharedRateLimiter::new(Valkey::connect(&settings).unwrap().unwrap(), 0);
    let b = SharedRateLimiter::new(Valkey::connect(&settings).unwrap().unwrap(), 0);
    let (tenant, key) = (Uuid::new_v4(), [7u8; 32]);
    let held = match a.acquire(tenant, &key, "analytics", 0.0, 1.0, 1).await.unwrap() {
        Verdict::Admitted(Some(permit)) => permit,
        _ => panic!("the first slot is free"),
    };
    assert!(matches!(b.acquire(tenant, &key, "analytics", 0.0, 1.0, 1).await.unwrap(), Verdict::TooManyInFlight));
    // Another key of the same tenant has its own slots.
    assert!(matches!(b.acquire(tenant, &[8u8; 32], "analytics", 0.0, 1.0, 1).await.unwrap(), Verdict::Admitted(Some(_))));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let leaked = loop {
        match b.acquire(tenant, &key, "analytics", 0.0, 1.0, 1).await.unwrap() {
            Verdict::Admitted(Some(permit)) => break permit,
            _ => assert!(Instant::now() < deadline, "a released slot stayed taken"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The holder dies: nothing releases the slot, its lease ends it.
    std::mem::forget(leaked);
    let died = Instant::now();
    assert!(matches!(a.acquire(tenant, &key, "analytics", 0.0, 1.0, 1).await.unwrap(), Verdict::TooManyInFlight));
    loop {
        match a.acquire(tenant, &key, "analytics", 0.0, 1.0, 1).await.unwrap() {
            Verdict::Admitted(_) => break,
            _ => assert!(died.elapsed() < Duration::from_secs(30), "a dead holder's slot never expired"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(died.elapsed() >= Duration::from_secs(4), "the lease ended early: {:?}", died.elapsed());
    let client = redis::Client::open(valkey_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
}
