//! Usage the API records itself (docs/limits.md, "Consume and commit"):
//! `POST /v1/usage/consume` and reservation commits become agent-execution
//! events through the real broker and a real ingest worker, on two API
//! replicas sharing Valkey. A consume retried three times counts once; the
//! budget is admitted exactly and then answered with 402; a commit made on
//! the other replica shows up in the check of both and in the organization
//! aggregate; Kafka away is a 503 that leaves nothing held; no brokers
//! configured is a 503 that says so.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::kafka::Pipeline;
use crate::replicas::{put_limit, valkey_url, Pair};

/// Two replicas producing to the topics of a fresh pipeline. The first
/// record of a replica's producer waits for its connection, the topic's
/// metadata and a producer id as well: 30 s for the acknowledgement (the
/// default 5 s is tight on a busy machine, and a late one is a 503).
async fn pair_with_pipeline(what: &str) -> (Pair, Pipeline) {
    let run = Uuid::new_v4().simple().to_string();
    let topic = Pipeline::executions_topic("replicas", &run);
    let brokers = std::env::var("AGENTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let flags = ["--kafka-brokers", &brokers, "--agent-executions-topic", &topic, "--kafka-produce-timeout-ms", "30000"];
    let pair = Pair::start(what, &valkey_url(), &flags).await;
    let pipeline = Pipeline::start_run("replicas", &pair.db.name, &run, Some(2)).await;
    (pair, pipeline)
}

/// `POST path` on replica `r` with an optional `Idempotency-Key`; returns
/// status, whether the answer was replayed, and the body.
async fn post(pair: &Pair, r: usize, path: &str, key: Option<&str>, body: Value) -> (u16, bool, Value) {
    let mut req = pair.http.post(format!("{}{}", pair.replicas[r].base, path)).header("X-API-Key", "am_test_replicas_admin").json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    crate::openapi_doc::assert_documented("POST", path, status, &v);
    (status, replayed, v)
}

/// Until both replicas' check of `probe` satisfies `done`.
async fn until_both(pair: &Pair, probe: &Value, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers = futures::future::join_all((0..2).map(|r| pair.check(r, probe.clone()))).await;
        if answers.iter().all(|(s, v)| *s == 200 && done(v)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw_rows(pair: &Pair, event_id: Uuid) -> u64 {
    pair.db.client.query("SELECT count() FROM agent_executions WHERE event_id = ?").bind(event_id).fetch_one::<u64>().await.unwrap()
}

/// A consume sent three times with one `Idempotency-Key` (alternating
/// replicas) is one event, one hold and one count; the rest of a 1,000-token
/// budget is admitted, then the next consume is a 402 with the contract's
/// body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consume_retried_three_times_counts_once_and_the_limit_answers_402() {
    let (pair, pipeline) = pair_with_pipeline("consume_retry").await;
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    put_limit(
        &pair,
        0,
        Uuid::new_v4(),
        json!({"subject": "user", "organization_id": org, "user_id": user, "metric": "tokens", "period": "day", "max_value": 1000}),
    )
    .await;
    let probe = json!({"tokens": 1, "usage_type": "tokens", "organization_id": org, "user_id": user});
    until_both(&pair, &probe, "limit never reached both replicas", |v| v["max_limit"] == 1000).await;

    let body = json!({"tokens": 300, "usage_type": "tokens", "organization_id": org, "user_id": user});
    let mut event_ids = Vec::new();
    for attempt in 0..3 {
        let (s, _, v) = post(&pair, attempt % 2, "/v1/usage/consume", Some("order-42"), body.clone()).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["success"].clone(), v["allowed"].clone(), v["consumed"].clone()), (json!(true), json!(true), json!(300)), "{v}");
        event_ids.push(v["event_id"].as_str().unwrap().to_owned());
    }
    assert!(event_ids.iter().all(|e| *e == event_ids[0]), "{event_ids:?}");
    let event_id = Uuid::parse_str(&event_ids[0]).unwrap();
    // Never more than one hold of 300, then exactly 300 used.
    until_both(&pair, &probe, "usage never counted once on both replicas", |v| {
        assert!(v["current_usage"].as_i64().unwrap() + v["reserved"].as_i64().unwrap() <= 600, "{v}");
        v["current_usage"] == 300 && v["reserved"] == 0
    })
    .await;
    assert_eq!(raw_rows(&pair, event_id).await, 1);
    // A retry after it was counted gets the recorded answer, not a new decision.
    let (s, replayed, v) = post(&pair, 1, "/v1/usage/consume", Some("order-42"), body.clone()).await;
    assert_eq!((s, replayed, v["event_id"].as_str()), (200, true, Some(event_ids[0].as_str())), "{v}");

    // The rest of the budget, then 402.
    let (s, _, v) = post(&pair, 0, "/v1/usage/consume", None, json!({"tokens": 700, "organization_id": org, "user_id": user})).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = post(&pair, 1, "/v1/usage/consume", None, json!({"tokens": 1, "organization_id": org, "user_id": user})).await;
    assert_eq!(s, 402, "{v}");
    assert_eq!((v["success"].clone(), v["allowed"].clone(), v["consumed"].clone()), (json!(false), json!(false), Value::Null), "{v}");
    assert!(v["error"].as_str().unwrap().contains("Usage limit exceeded"), "{v}");
    assert_eq!(v["limits"]["remaining"], 0, "{v}");
    until_both(&pair, &probe, "the 700 never counted", |v| v["current_usage"] == 1000 && v["reserved"] == 0).await;
    pipeline.stop().await;
    pair.drop_all().await;
}

/// A reservation taken on replica 0 and committed (retried) on replica 1
/// with a smaller actual amount: one event whose id is the reservation id,
/// counted by both replicas' checks (the hold gone) and in the
/// organization aggregate that reads ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_reservation_is_usage_in_the_check_and_in_analytics() {
    let (pair, pipeline) = pair_with_pipeline("consume_commit").await;
    let (org, user) = (Uuid::new_v4(), Uuid::new_v4());
    put_limit(
        &pair,
        0,
        Uuid::new_v4(),
        json!({"subject": "organization", "organization_id": org, "metric": "tokens", "period": "month", "max_value": 1000}),
    )
    .await;
    let probe = json!({"tokens": 1, "usage_type": "tokens", "organization_id": org, "user_id": user});
    until_both(&pair, &probe, "limit never reached both replicas", |v| v["max_limit"] == 1000).await;
    let (s, v) = pair.check(0, json!({"tokens": 500, "organization_id": org, "user_id": user, "reserve": true})).await;
    assert_eq!(s, 200, "{v}");
    let rid = v["reservation"]["reservation_id"].as_str().unwrap().to_owned();
    until_both(&pair, &probe, "hold never shared", |v| v["reserved"] == 500).await;

    let path = format!("/v1/usage/reservations/{rid}/commit");
    let (s, _, v) = post(&pair, 1, &path, None, json!({"amount": 200})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["event_id"].as_str(), v["consumed"].clone()), (Some(rid.as_str()), json!(200)), "{v}");
    let (s, replayed, v) = post(&pair, 0, &path, None, json!({"amount": 200})).await;
    assert_eq!((s, replayed), (200, true), "{v}");

    until_both(&pair, &probe, "commit never counted", |v| v["current_usage"] == 200 && v["reserved"] == 0).await;
    assert_eq!(raw_rows(&pair, Uuid::parse_str(&rid).unwrap()).await, 1);
    let (s, v) = pair.send(&pair.replicas[1], reqwest::Method::GET, &format!("/v1/organizations/{org}/usage"), None).await;
    assert_eq!((s, v["tokens_count"].clone(), v["messages_count"].clone()), (200, json!(200), json!(0)), "{v}");

    // An unknown reservation is a 404.
    let (s, _, v) = post(&pair, 0, &format!("/v1/usage/reservations/{}/commit", Uuid::new_v4()), None, json!({"amount": 1})).await;
    assert_eq!(s, 404, "{v}");
    pipeline.stop().await;
    pair.drop_all().await;
}

/// A broker that never answers: the consume waits the produce timeout,
/// answers 503 with a detail, and holds nothing afterwards. No brokers at
/// all: 503 at once, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_away_or_unconfigured_is_a_503_that_holds_nothing() {
    // Nothing listens on port 1.
    let pair = Pair::start("consume_away", &valkey_url(), &["--kafka-brokers", "127.0.0.1:1", "--kafka-produce-timeout-ms", "1500"]).await;
    let org = Uuid::new_v4();
    put_limit(
        &pair,
        0,
        Uuid::new_v4(),
        json!({"subject": "organization", "organization_id": org, "metric": "messages", "period": "month", "max_value": 10}),
    )
    .await;
    let probe = json!({"tokens": 1, "usage_type": "messages", "organization_id": org});
    until_both(&pair, &probe, "limit never reached both replicas", |v| v["max_limit"] == 10).await;
    let (s, _, v) =
        post(&pair, 0, "/v1/usage/consume", Some("k1"), json!({"tokens": 4, "usage_type": "messages", "organization_id": org})).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("Kafka did not acknowledge"), "{v}");
    for r in 0..2 {
        let (_, v) = pair.check(r, probe.clone()).await;
        assert_eq!((v["reserved"].clone(), v["current_usage"].clone()), (json!(0), json!(0)), "{v}");
    }
    pair.drop_all().await;

    let pair = Pair::start("consume_off", &valkey_url(), &["--kafka-brokers", ""]).await;
    let (s, _, v) = post(&pair, 0, "/v1/usage/consume", None, json!({"tokens": 4, "organization_id": org})).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("no Kafka brokers are configured"), "{v}");
    pair.drop_all().await;
}
