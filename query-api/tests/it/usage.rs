//! Usage and plan limits against the local stack: limits set through the
//! admin API, usage inserted as raw `agent_executions` rows (the
//! materialized views fill the rollups the counters read), answers checked
//! against figures computed here; and once end to end, with the events
//! produced to Kafka and carried by the ingest worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_api::auth::Role;
use agentmeter_api::usage::engine::{CheckRequest, UsageState};
use agentmeter_api::usage::limits::Metric;
use agentmeter_api::usage::refresh::load_now;
use agentmeter_api::{AppState, Args};
use agentmeter_schema::rows::AgentExecutionRow;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{http_client, insert, key_store, serve, TestDb};
use crate::kafka::{Kind, Pipeline};

const ADMIN_A: &str = "am_test_usage_admin_a";
const READ_A: &str = "am_test_usage_read_a";
const ADMIN_B: &str = "am_test_usage_admin_b";

struct Harness {
    base: String,
    http: reqwest::Client,
    test_db: TestDb,
    db_name: String,
    state: AppState,
    tenant_a: Uuid,
    tenant_b: Uuid,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    /// A fresh database and an API on an ephemeral port. `pin` fixes the
    /// usage clock; `extra` are more command-line flags.
    async fn start(what: &str, pin: Option<DateTime<Utc>>, extra: &[&str]) -> Harness {
        let test_db = TestDb::fresh(what).await;
        let (url, db_name) = (test_db.url.clone(), test_db.name.clone());
        let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
        let keys = key_store(&[
            ("admin-a", tenant_a, Role::Admin, ADMIN_A),
            ("read-a", tenant_a, Role::Read, READ_A),
            ("admin-b", tenant_b, Role::Admin, ADMIN_B),
        ]);
        let mut argv = vec!["agentmeter-api", "--clickhouse-url", &url, "--clickhouse-database", &db_name];
        argv.extend_from_slice(extra);
        let args = Args::parse_from(argv);
        let state = AppState::new(args.clickhouse.client(), Arc::new(keys), &args);
        if let Some(t) = pin {
            state.usage.clock.pin(t);
        }
        let (base, stop) = serve(state.clone()).await;
        state.usage.start();
        let h = Harness { base, http: http_client(), test_db, db_name, state, tenant_a, tenant_b, _stop: stop };
        h.wait_loaded().await;
        h
    }

    /// Until the counters are loaded and, with Valkey (AGENTMETER_VALKEY_URL),
    /// reservations can be made: a Valkey that never held this deployment's
    /// keys starts with a short fence (docs/limits.md).
    async fn wait_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let shared_ready = |s: &AppState| s.valkey.as_ref().is_none_or(|v| v.is_reachable() && v.epoch.fence_left_us() == 0);
        while !self.state.usage.is_loaded() || !shared_ready(&self.state) {
            assert!(Instant::now() < deadline, "usage counters never loaded or Valkey never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn drop_db(self) {
        self.test_db.drop().await;
    }

    async fn send(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, reqwest::header::HeaderMap, Value) {
        let method_name = method.as_str().to_owned();
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).header("X-API-Key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        crate::openapi_doc::assert_documented(&method_name, path, status, if v.is_string() { &Value::Null } else { &v });
        (status, headers, v)
    }

    async fn put_limit(&self, key: &str, id: Uuid, body: Value) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::PUT, &format!("/v1/limits/{id}"), key, Some(body)).await;
        (s, v)
    }

    async fn check(&self, body: Value) -> (Value, reqwest::header::HeaderMap) {
        let (s, h, v) = self.send(reqwest::Method::POST, "/v1/usage/check", ADMIN_A, Some(body)).await;
        assert_eq!(s, 200, "{v}");
        (v, h)
    }

    async fn check_text(&self, body: Value) -> String {
        let resp = self.http.post(format!("{}/v1/usage/check", self.base)).header("X-API-Key", ADMIN_A).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.unwrap()
    }

    async fn insert(&self, rows: &[AgentExecutionRow]) {
        insert(&self.test_db.client, "agent_executions", rows).await;
    }

    /// Polls a check until `current_usage` (as JSON) equals `want`.
    async fn wait_usage(&self, body: Value, want: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (v, _) = self.check(body.clone()).await;
            if v["current_usage"] == want {
                return v;
            }
            assert!(Instant::now() < deadline, "current_usage never reached {want}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Exec {
    tenant: Uuid,
    org: Uuid,
    user: Uuid,
    at: DateTime<Utc>,
    billable: bool,
    input: u64,
    output: u64,
    cost_micros: i64,
    messages: u32,
    execution_id: Uuid,
}

impl Exec {
    fn new(tenant: Uuid, org: Uuid, user: Uuid, at: DateTime<Utc>) -> Exec {
        Exec { tenant, org, user, at, billable: true, input: 0, output: 0, cost_micros: 0, messages: 1, execution_id: Uuid::new_v4() }
    }
    fn tokens(mut self, input: u64, output: u64) -> Exec {
        self.input = input;
        self.output = output;
        self
    }
    fn row(&self) -> AgentExecutionRow {
        AgentExecutionRow {
            event_id: Uuid::new_v4(),
            occurred_at: self.at,
            tenant_id: self.tenant,
            execution_id: self.execution_id,
            execution_kind: "agent_chat".into(),
            billable: self.billable,
            organization_id: self.org,
            user_id: self.user,
            agent_id: Uuid::nil(),
            conversation_id: Uuid::nil(),
            plan_id: Uuid::nil(),
            project_id: Uuid::nil(),
            project_name: String::new(),
            navigator_id: Uuid::nil(),
            navigator_instance_id: Uuid::nil(),
            user_token_id: Uuid::nil(),
            user_email: String::new(),
            model: "m".into(),
            input_tokens: self.input,
            output_tokens: self.output,
            total_tokens: self.input + self.output,
            cost_usd: self.cost_micros,
            cost_known: true,
            messages_count: self.messages,
            duration_ms: Some(10.0),
            status: "success".into(),
            error_type: String::new(),
            error_message: String::new(),
            query_text: None,
        }
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_admin_api_versions_validates_and_walls_off_tenants() {
    let h = Harness::start("usage_limits", None, &[]).await;
    let org = Uuid::new_v4();
    let id = Uuid::new_v4();
    let body = json!({"subject": "organization", "organization_id": org, "metric": "cost_usd", "period": "month",
        "time_zone": "Europe/Berlin", "anchor_day": 5, "max_value": "100.25", "soft_threshold": 0.8});

    // A read key cannot set limits, nor read them.
    assert_eq!(h.put_limit(READ_A, id, body.clone()).await.0, 403);
    assert_eq!(h.send(reqwest::Method::GET, "/v1/limits", READ_A, None).await.0, 403);
    assert_eq!(h.send(reqwest::Method::GET, "/v1/limits", "nope", None).await.0, 401);

    let (s, v) = h.put_limit(ADMIN_A, id, body.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["max_value"], "100.250000");
    assert_eq!(v["time_zone"], "Europe/Berlin");
    assert_eq!(v["anchor_day"], 5);

    // Update with the right expected version, then a stale one.
    let mut b2 = body.clone();
    b2["max_value"] = json!(200);
    b2["expected_version"] = json!(1);
    let (s, v) = h.put_limit(ADMIN_A, id, b2.clone()).await;
    assert_eq!((s, v["version"].clone(), v["max_value"].clone()), (200, json!(2), json!("200.000000")));
    let (s, v) = h.put_limit(ADMIN_A, id, b2).await;
    assert_eq!(s, 409, "{v}");
    let resp = h
        .http
        .put(format!("{}/v1/limits/{id}", h.base))
        .header("X-API-Key", ADMIN_A)
        .header("If-Match", "\"2\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["etag"], "\"3\"");

    let (s, _, v) = h.send(reqwest::Method::GET, &format!("/v1/limits/{id}"), ADMIN_A, None).await;
    assert_eq!((s, v["version"].clone(), v["max_value"].clone()), (200, json!(3), json!("100.250000")));

    // Validation: every problem, with its location.
    let bad = json!({"subject": "user", "organization_id": "x", "metric": "tool_calls", "period": "month",
        "anchor_day": 31, "time_zone": "Nowhere/City", "max_value": -1, "soft_threshold": 1.5});
    let (s, v) = h.put_limit(ADMIN_A, Uuid::new_v4(), bad).await;
    assert_eq!(s, 422, "{v}");
    let locs: Vec<String> = v["detail"].as_array().unwrap().iter().map(|d| d["loc"][1].as_str().unwrap().to_owned()).collect();
    for f in ["organization_id", "user_id", "subject", "anchor_day", "time_zone", "max_value", "soft_threshold"] {
        assert!(locs.iter().any(|l| l == f), "{f} not in {locs:?}");
    }
    let (s, v) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "tenant", "metric": "tokens", "period": "rolling_hours", "rolling_hours": 0, "max_value": 1}),
        )
        .await;
    assert_eq!((s, v["detail"][0]["loc"][1].clone()), (422, json!("rolling_hours")));
    let (s, _) =
        h.put_limit(ADMIN_A, Uuid::new_v4(), json!({"subject": "tenant", "metric": "tokens", "period": "day", "max_value": 1.5})).await;
    assert_eq!(s, 422);

    // Another tenant sees none of it and cannot change or delete it.
    let (s, _, v) = h.send(reqwest::Method::GET, &format!("/v1/limits/{id}"), ADMIN_B, None).await;
    assert_eq!(s, 404, "{v}");
    let (s, _, v) = h.send(reqwest::Method::GET, "/v1/limits", ADMIN_B, None).await;
    assert_eq!((s, v["count"].clone()), (200, json!(0)));
    assert_eq!(h.send(reqwest::Method::DELETE, &format!("/v1/limits/{id}"), ADMIN_B, None).await.0, 404);
    let mut theirs = body.clone();
    theirs["max_value"] = json!(1);
    let (s, v) = h.put_limit(ADMIN_B, id, theirs).await;
    assert_eq!((s, v["version"].clone()), (201, json!(1)), "same id in another tenant is another limit");
    let (_, _, v) = h.send(reqwest::Method::GET, &format!("/v1/limits/{id}"), ADMIN_A, None).await;
    assert_eq!((v["version"].clone(), v["max_value"].clone()), (json!(3), json!("100.250000")));

    // POST creates with a new id; list shows both of ours.
    let (s, _, v) = h
        .send(
            reqwest::Method::POST,
            "/v1/limits",
            ADMIN_A,
            Some(json!({"subject": "tenant", "metric": "messages", "period": "day", "max_value": 10})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, _, v) = h.send(reqwest::Method::GET, "/v1/limits", ADMIN_A, None).await;
    assert_eq!(v["count"], 2);

    // Delete, then it is gone; re-creating continues the version sequence.
    let (s, _, v) = h.send(reqwest::Method::DELETE, &format!("/v1/limits/{id}"), ADMIN_A, None).await;
    assert_eq!((s, v["version"].clone()), (200, json!(4)));
    assert_eq!(h.send(reqwest::Method::GET, &format!("/v1/limits/{id}"), ADMIN_A, None).await.0, 404);
    let (s, v) = h.put_limit(ADMIN_A, id, body).await;
    assert_eq!((s, v["version"].clone()), (201, json!(5)));

    // Durable: a fresh reload from ClickHouse sees the same set.
    load_now(&h.state.usage).await.unwrap();
    assert_eq!(h.state.usage.tenant_limits(h.tenant_a).len(), 2);
    assert_eq!(h.state.usage.tenant_limits(h.tenant_b).len(), 1);
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_flips_exactly_at_the_limit_and_ignores_non_billable() {
    let h = Harness::start("usage_flip", None, &[]).await;
    let (t, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now();
    let (s, v) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "organization", "organization_id": org, "metric": "tokens", "period": "month", "max_value": 1000}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mut rows = vec![Exec::new(t, org, user, now).tokens(600, 390).row()];
    let mut nb = Exec::new(t, org, user, now).tokens(500, 0);
    nb.billable = false;
    rows.push(nb.row());
    // Another tenant's usage with the same org id does not count either.
    rows.push(Exec::new(h.tenant_b, org, user, now).tokens(700, 0).row());
    h.insert(&rows).await;

    let probe = json!({"tokens": 10, "usage_type": "tokens", "organization_id": org, "user_id": user});
    let v = h.wait_usage(probe.clone(), json!(990)).await;
    assert_eq!(v["allowed"], true);
    assert_eq!(v["remaining"], 10);
    assert_eq!(v["max_limit"], 1000);
    assert_eq!(v["requested"], 10);
    assert_eq!(v["error"], Value::Null);
    assert!(v["staleness_ms"].as_i64().unwrap() < 5_000, "{v}");
    let (v, headers) = h.check(json!({"tokens": 11, "organization_id": org, "user_id": user})).await;
    assert_eq!(v["allowed"], false);
    assert!(v["error"].as_str().unwrap().contains("exceeded"));
    let policy = headers["ratelimit-policy"].to_str().unwrap();
    assert!(policy.contains(";q=1000;") && policy.contains("qu=\"tokens\""), "{policy}");
    assert!(headers["ratelimit"].to_str().unwrap().contains(";r=10;"), "{:?}", headers["ratelimit"]);

    h.insert(&[Exec::new(t, org, user, now).tokens(0, 10).row()]).await;
    let v = h.wait_usage(json!({"tokens": 1, "organization_id": org}), json!(1000)).await;
    assert_eq!((v["allowed"].clone(), v["remaining"].clone()), (json!(false), json!(0)));

    // Money: exact decimals in and out.
    let (s, _) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "organization", "organization_id": org, "metric": "cost_usd", "period": "day", "max_value": "1.5"}),
        )
        .await;
    assert_eq!(s, 201);
    let mut e = Exec::new(t, org, user, now);
    e.cost_micros = 1_234_567;
    h.insert(&[e.row()]).await;
    let probe = json!({"tokens": "0.265433", "usage_type": "cost_usd", "organization_id": org});
    h.wait_usage(probe.clone(), json!(1.234567)).await;
    let text = h.check_text(probe).await;
    assert!(text.contains("\"remaining\":0.265433") && text.contains("\"allowed\":true"), "{text}");
    let text = h.check_text(json!({"tokens": "0.265434", "usage_type": "cost_usd", "organization_id": org})).await;
    assert!(text.contains("\"allowed\":false") && text.contains("\"max_limit\":1.5"), "{text}");
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_org_and_tenant_limits_combine_strictest_wins() {
    let h = Harness::start("usage_combine", None, &[]).await;
    let (t, org, other_org, u1, u2) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let put = |body: Value| async { assert_eq!(h.put_limit(ADMIN_A, Uuid::new_v4(), body).await.0, 201) };
    put(json!({"subject": "user", "organization_id": org, "user_id": u1, "metric": "messages", "period": "day", "max_value": 100})).await;
    put(json!({"subject": "organization", "organization_id": org, "metric": "messages", "period": "week", "max_value": 150})).await;
    put(json!({"subject": "tenant", "metric": "messages", "period": "rolling_hours", "rolling_hours": 24, "max_value": 1000})).await;
    let now = Utc::now();
    let msgs = |org, user, n: u32| {
        let mut e = Exec::new(t, org, user, now);
        e.messages = n;
        e.row()
    };
    h.insert(&[msgs(org, u1, 80), msgs(org, u2, 60), msgs(other_org, u1, 500)]).await;
    h.wait_usage(json!({"tokens": 1, "usage_type": "messages", "organization_id": other_org}), json!(640)).await;

    // u1 asks 20: the user limit allows (80+20 <= 100), the org denies (140+20 > 150).
    let (v, _) = h.check(json!({"tokens": 20, "usage_type": "messages", "organization_id": org, "user_id": u1})).await;
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(
        (v["limit"]["subject"].clone(), v["remaining"].clone(), v["current_usage"].clone()),
        (json!("organization"), json!(10), json!(140))
    );
    let subjects: Vec<&str> = v["limits"].as_array().unwrap().iter().map(|l| l["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["organization", "user", "tenant"]);
    assert_eq!(v["limits"][1]["allowed"], true);
    assert_eq!(v["limits"][1]["remaining"], 20);
    assert_eq!(v["limits"][2]["remaining"], 360);
    // u1 asks 10: allowed, still decided by the organization (least remaining).
    let (v, _) = h.check(json!({"tokens": 10, "usage_type": "messages", "organization_id": org, "user_id": u1})).await;
    assert_eq!((v["allowed"].clone(), v["limit"]["subject"].clone()), (json!(true), json!("organization")));
    // Another org: only the tenant limit applies.
    let (v, _) = h.check(json!({"tokens": 360, "usage_type": "messages", "organization_id": other_org, "user_id": u1})).await;
    assert_eq!((v["allowed"].clone(), v["limit"]["subject"].clone(), v["remaining"].clone()), (json!(true), json!("tenant"), json!(360)));
    let (v, _) = h.check(json!({"tokens": 361, "usage_type": "messages", "organization_id": other_org})).await;
    assert_eq!(v["allowed"], false);
    // No limit on this metric: unlimited.
    let (v, _) = h.check(json!({"tokens": 5, "usage_type": "executions", "organization_id": org})).await;
    assert_eq!(
        (v["allowed"].clone(), v["max_limit"].clone(), v["remaining"].clone(), v["current_usage"].clone()),
        (json!(true), json!("unlimited"), json!("unlimited"), json!(2))
    );

    // The Genlobe current-usage shape.
    let (s, _, v) = h.send(reqwest::Method::GET, &format!("/v1/api/usage/current?organization_id={org}&user_id={u1}"), READ_A, None).await;
    assert_eq!(s, 200, "{v}");
    // The organization's limit binds u1 (10 left against the user's 20).
    assert_eq!(v["usage"]["messages"]["current"], 140, "{v}");
    assert_eq!(v["usage"]["messages"]["max"], 150);
    assert_eq!(v["usage"]["messages"]["remaining"], 10);
    assert_eq!(v["usage"]["messages"]["percentage"], 93.33);
    assert_eq!(v["usage"]["cost_usd"]["max"], "unlimited");
    assert_eq!(v["usage"]["tokens"]["total"], 0);
    let (s, _, v) = h.send(reqwest::Method::GET, "/v1/api/usage/current", READ_A, None).await;
    assert_eq!((s, v["detail"][0]["loc"].clone()), (422, json!(["query", "organization_id"])));
    let (_, _, v) = h.send(reqwest::Method::GET, &format!("/api/organizations/{org}/usage"), READ_A, None).await;
    assert_eq!(v["messages"]["utilization"], 93.33, "{v}");
    assert_eq!(v["extra_usage"]["is_enabled"], false);
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_day_resets_at_local_midnight_across_dst() {
    // Europe/Berlin, Sunday 2026-10-25: clocks fall back, the day lasts 25 h,
    // from 2026-10-24T22:00Z to 2026-10-25T23:00Z.
    let pinned = utc("2026-10-25T22:59:00Z"); // 23:59 local, the 25th hour
    let h = Harness::start("usage_dst", Some(pinned), &[]).await;
    let (t, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let (s, _) = h
        .put_limit(ADMIN_A, Uuid::new_v4(), json!({"subject": "organization", "organization_id": org, "metric": "messages", "period": "day", "time_zone": "Europe/Berlin", "max_value": 5}))
        .await;
    assert_eq!(s, 201);
    let mut before = Exec::new(t, org, user, utc("2026-10-24T21:59:00Z")); // 23:59 on the 24th, local
    before.messages = 3;
    let mut inside = Exec::new(t, org, user, utc("2026-10-24T22:30:00Z")); // 00:30 on the 25th, local
    inside.messages = 5;
    h.insert(&[before.row(), inside.row()]).await;
    // These minutes are older than the delta look-back: a reconcile loads them.
    load_now(&h.state.usage).await.unwrap();

    let probe = json!({"tokens": 1, "usage_type": "messages", "organization_id": org});
    let (v, headers) = h.check(probe.clone()).await;
    assert_eq!((v["allowed"].clone(), v["current_usage"].clone()), (json!(false), json!(5)), "{v}");
    assert_eq!(v["period_start"], "2026-10-24T22:00:00Z");
    assert_eq!(v["resets_at"], "2026-10-25T23:00:00Z");
    assert!(headers["ratelimit-policy"].to_str().unwrap().contains(";w=90000"), "{:?}", headers);
    assert!(headers["ratelimit"].to_str().unwrap().ends_with(";t=60"), "{:?}", headers);

    // One millisecond before the boundary: still the same day.
    h.state.usage.clock.pin(utc("2026-10-25T22:59:59.999Z"));
    assert_eq!(h.check(probe.clone()).await.0["allowed"], false);
    // At the boundary the new day starts with nothing used.
    h.state.usage.clock.pin(utc("2026-10-25T23:00:00Z"));
    let (v, _) = h.check(probe).await;
    assert_eq!((v["allowed"].clone(), v["current_usage"].clone(), v["remaining"].clone()), (json!(true), json!(0), json!(5)), "{v}");
    assert_eq!(v["period_start"], "2026-10-25T23:00:00Z");
    assert_eq!(v["resets_at"], "2026-10-26T23:00:00Z");
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_reads_again_only_the_hours_whose_sums_changed() {
    let h = Harness::start("usage_reconcile_hours", Some(utc("2026-11-10T12:30:00Z")), &[]).await;
    let (t, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let (s, _) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "user", "organization_id": org, "user_id": user, "metric": "messages", "period": "rolling_hours", "rolling_hours": 48, "max_value": 100}),
        )
        .await;
    assert_eq!(s, 201);
    let hours_read = || h.state.metrics.usage.reconcile_hours_read_total.get();
    let probe = json!({"tokens": 1, "usage_type": "messages", "organization_id": org, "user_id": user});
    // Older than the delta look-back, in two hours: only a reconcile sees them.
    let at = |s: &str| Exec::new(t, org, user, utc(s));
    h.insert(&[at("2026-11-10T09:10:00Z").row(), at("2026-11-09T06:05:00Z").row(), at("2026-11-09T06:50:00Z").row()]).await;
    let before = hours_read();
    load_now(&h.state.usage).await.unwrap();
    assert_eq!(hours_read() - before, 2);
    assert_eq!(h.check(probe.clone()).await.0["current_usage"], 3);
    // Nothing changed: nothing is read again.
    load_now(&h.state.usage).await.unwrap();
    assert_eq!(hours_read() - before, 2);
    // One more event in one of those hours, and a non-billable one in another
    // (neither side counts it): that hour alone.
    let mut free = at("2026-11-10T02:00:00Z");
    free.billable = false;
    h.insert(&[at("2026-11-10T09:59:00Z").row(), free.row()]).await;
    load_now(&h.state.usage).await.unwrap();
    assert_eq!(hours_read() - before, 3);
    assert_eq!(h.check(probe).await.0["current_usage"], 4);

    // A replica starting now reads the two hours that hold rows, not the
    // 35 days of its retention, and counts the same.
    let metrics = agentmeter_api::metrics::Metrics::new();
    let args = Args::parse_from(["agentmeter-api", "--clickhouse-url", &h.test_db.url, "--clickhouse-database", &h.db_name]);
    let fresh = Arc::new(UsageState::new(args.clickhouse.client(), args.usage_settings(), &metrics));
    fresh.clock.pin(utc("2026-11-10T12:30:00Z"));
    load_now(&fresh).await.unwrap();
    assert_eq!(metrics.usage.reconcile_hours_read_total.get(), 2);
    let req = CheckRequest {
        organization_id: Some(org),
        user_id: Some(user),
        metric: Metric::Messages,
        units: 1,
        reserve: false,
        execution_id: None,
        reservation_id: None,
    };
    let out = fresh.check(t, &req).await.unwrap();
    assert_eq!(out.checks.iter().map(|c| c.used).collect::<Vec<_>>(), vec![4]);
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_admit_exactly_the_budget() {
    // The holds must outlive the steps up to the early release below (a
    // second or two, more on a busy machine, where `wait_usage` alone may
    // take longer than 15 s): the default 30 s lifetime.
    let h = Harness::start("usage_reserve", None, &["--usage-reservation-ttl-ms", "30000"]).await;
    let (t, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let (s, _) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "user", "organization_id": org, "user_id": user, "metric": "executions", "period": "day", "max_value": 10}),
        )
        .await;
    assert_eq!(s, 201);
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let results = futures::future::join_all(ids.iter().map(|id| {
        let body =
            json!({"tokens": 1, "usage_type": "executions", "organization_id": org, "user_id": user, "reserve": true, "execution_id": id});
        let h = &h;
        async move { (*id, h.check(body).await.0) }
    }))
    .await;
    let admitted: Vec<(Uuid, Value)> = results.into_iter().filter(|(_, v)| v["allowed"] == true).collect();
    assert_eq!(admitted.len(), 10);
    assert!(admitted.iter().all(|(_, v)| v["reservation"]["reservation_id"].is_string()));

    // Three of the admitted executions happen: their holds turn into usage.
    let done: Vec<Uuid> = admitted.iter().take(3).map(|(id, _)| *id).collect();
    let rows: Vec<AgentExecutionRow> = done
        .iter()
        .map(|id| {
            let mut e = Exec::new(t, org, user, Utc::now());
            e.execution_id = *id;
            e.row()
        })
        .collect();
    h.insert(&rows).await;
    let probe = json!({"tokens": 1, "usage_type": "executions", "organization_id": org, "user_id": user});
    let v = h.wait_usage(probe.clone(), json!(3)).await;
    // Used 3 + held 7 = 10: nothing left (the released holds are not counted
    // twice). With Valkey a seen hold stops counting a settle time after a
    // later refresh: a few rounds, slower on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut v = v;
    while v["reserved"] != 7 {
        assert!(Instant::now() < deadline, "holds of seen executions were not released: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = h.check(probe.clone()).await.0;
    }
    assert_eq!((v["allowed"].clone(), v["remaining"].clone()), (json!(false), json!(0)));

    // Ending one reservation early frees one unit.
    let rid = admitted[5].1["reservation"]["reservation_id"].as_str().unwrap().to_owned();
    let (s, _, _) = h.send(reqwest::Method::DELETE, &format!("/v1/usage/reservations/{rid}"), ADMIN_A, None).await;
    assert_eq!(s, 200);
    let (v, _) = h.check(probe.clone()).await;
    assert_eq!((v["remaining"].clone(), v["reserved"].clone()), (json!(1), json!(6)));

    // When the TTL passes, the rest is released.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (v, _) = h.check(probe.clone()).await;
        if v["reserved"] == 0 {
            assert_eq!((v["remaining"].clone(), v["allowed"].clone()), (json!(7), json!(true)));
            break;
        }
        assert!(Instant::now() < deadline, "reservations never expired: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_usage_aggregate_and_org_check() {
    let h = Harness::start("usage_org", None, &[]).await;
    let (t, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now();
    let mut a = Exec::new(t, org, user, now).tokens(100, 50);
    a.cost_micros = 12_345_600;
    a.messages = 2;
    let mut b = Exec::new(t, org, user, now).tokens(1, 2);
    b.billable = false;
    h.insert(&[a.row(), b.row()]).await;
    let (s, _, v) = h.send(reqwest::Method::GET, &format!("/v1/organizations/{org}/usage"), READ_A, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages_count"], 2);
    assert_eq!(v["tokens_count"], 150);
    assert_eq!(v["input_tokens_count"], 100);
    assert_eq!(v["output_tokens_count"], 50);
    assert_eq!(v["cost_usd"], "12.345600");
    let (s, _, v) =
        h.send(reqwest::Method::GET, &format!("/v1/organizations/{org}/usage?period_start=2020-01-01T00:00:00Z"), READ_A, None).await;
    assert_eq!(s, 422, "{v}");

    let (s, _) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "organization", "organization_id": org, "metric": "tokens", "period": "month", "max_value": 200}),
        )
        .await;
    assert_eq!(s, 201);
    h.wait_usage(json!({"tokens": 1, "organization_id": org}), json!(150)).await;
    let path = format!("/v1/organizations/{org}/usage/check?additional_tokens=50&additional_messages=3");
    let (s, _, v) = h.send(reqwest::Method::POST, &path, READ_A, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["would_exceed"], false);
    assert_eq!(v["limits"]["tokens"]["remaining"], 50);
    assert_eq!(v["limits"]["messages"]["max_limit"], "unlimited");
    let path = format!("/v1/organizations/{org}/usage/check?additional_tokens=51");
    let (_, _, v) = h.send(reqwest::Method::POST, &path, READ_A, None).await;
    assert_eq!(v["would_exceed"], true);
    h.drop_db().await;
}

/// The billing path end to end: agent-execution events produced to Kafka,
/// half of them twice in a row and a third again hundreds of messages
/// later, with garbage in between, carried into ClickHouse by the ingest
/// worker (small batches, so repeats cross batch boundaries), answered by
/// the organization usage endpoint and the plan-limit check: the sums are
/// those of the unique billable events, to the micro-dollar, and the check
/// flips exactly at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_through_kafka_and_the_worker_counts_each_event_once() {
    use rust_decimal::Decimal;

    // Each counter refresh re-reads only the last `--usage-refresh-lookback-minutes`
    // minutes; rows that land later than that after their `occurred_at` wait
    // for the 60 s reconcile. The events below are up to 4 minutes old when
    // produced, and on a busy machine they can take more than a minute to
    // land: with the default 5 minutes the oldest could miss every refresh
    // and the check below would wait for the reconcile. An hour keeps them
    // all inside the refresh that follows their landing.
    let h = Harness::start("usage_e2e", None, &["--usage-refresh-lookback-minutes", "60"]).await;
    let (tenant, org, user) = (h.tenant_a, Uuid::new_v4(), Uuid::new_v4());
    let pipe = Pipeline::start_batched("usage_e2e", &h.db_name, 100).await;

    // 600 executions over the last 4 minutes (older arrivals wait for the
    // reconcile, which the other tests cover); every 7th is not billable.
    let now = Utc::now();
    let (mut input, mut output, mut messages, mut cost) = (0u64, 0u64, 0u64, Decimal::ZERO);
    let events: Vec<(String, Vec<u8>)> = (0..600u64)
        .map(|i| {
            let (billable, inp, out, msgs) = (i % 7 != 0, 10 + i % 90, 5 + i % 40, 1 + i % 3);
            let price = Decimal::new(1_234 * i as i64 + 1, 6);
            if billable {
                (input, output, messages, cost) = (input + inp, output + out, messages + msgs, cost + price);
            }
            let id = Uuid::new_v4();
            let at = (now - chrono::Duration::milliseconds(400 * i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let event = json!({
                "event_id": id, "occurred_at": at, "tenant_id": tenant, "execution_id": Uuid::new_v4(),
                "execution_kind": "agent_chat", "billable": billable, "organization_id": org, "user_id": user,
                "input_tokens": inp, "output_tokens": out, "total_tokens": inp + out, "cost_usd": price.to_string(),
                "messages_count": msgs, "status": "success",
            });
            (id.to_string(), serde_json::to_vec(&event).unwrap())
        })
        .collect();
    let mut stream: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        stream.push(e.clone());
        if i % 2 == 0 {
            stream.push(e.clone());
        }
        if i >= 300 && i % 3 == 0 {
            stream.push(events[i - 300].clone());
        }
        if i % 50 == 0 {
            stream.push((format!("garbage-{i}"), b"{\"event_id\": not json".to_vec()));
        }
    }
    pipe.produce_keyed(Kind::AgentExecution, &stream).await;

    // The organization's usage over a period around the events, polled
    // until every event has arrived, then compared field by field.
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:00Z").to_string();
    let path = format!(
        "/v1/organizations/{org}/usage?period_start={}&period_end={}",
        minute(now - chrono::Duration::hours(1)),
        minute(now + chrono::Duration::minutes(5))
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let usage = loop {
        let (s, _, v) = h.send(reqwest::Method::GET, &path, READ_A, None).await;
        assert_eq!(s, 200, "{v}");
        if v["messages_count"].as_u64() >= Some(messages) || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Anything counted twice would show up after the first match: wait a
    // few flush intervals and read again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, again) = h.send(reqwest::Method::GET, &path, READ_A, None).await;
    assert_eq!(usage, again, "usage moved after every event had arrived");
    assert_eq!(usage["messages_count"], json!(messages), "{usage}");
    assert_eq!(usage["input_tokens_count"], json!(input), "{usage}");
    assert_eq!(usage["output_tokens_count"], json!(output), "{usage}");
    assert_eq!(usage["tokens_count"], json!(input + output), "{usage}");
    assert_eq!(usage["cost_usd"], json!(format!("{:.6}", cost)), "{usage}");

    // A limit just above the usage: the check admits exactly what is left.
    let (s, v) = h
        .put_limit(
            ADMIN_A,
            Uuid::new_v4(),
            json!({"subject": "organization", "organization_id": org, "metric": "tokens", "period": "rolling_hours", "rolling_hours": 2, "max_value": input + output + 10}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let fits = h.wait_usage(json!({"tokens": 10, "usage_type": "tokens", "organization_id": org}), json!(input + output)).await;
    assert_eq!(fits["allowed"], true, "{fits}");
    let (over, _) = h.check(json!({"tokens": 11, "usage_type": "tokens", "organization_id": org})).await;
    assert_eq!(over["allowed"], false, "{over}");

    pipe.stop().await;
    h.drop_db().await;
}
