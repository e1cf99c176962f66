//! `--caught-up-flush-rows`: once the worker has read everything there is,
//! a batch of at least that many rows is written at once instead of after
//! `--flush-interval-ms`; a smaller one keeps waiting for its interval, so
//! a trickle of events does not become a trickle of inserts.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::*;

/// A valid tool-call message.
fn tool_call(event_id: Uuid) -> Vec<u8> {
    serde_json::json!({
        "event_id": event_id, "occurred_at": chrono::Utc::now().timestamp_millis(),
        "tenant_id": agentmeter_bench::TENANT_A, "tool_name": "search", "latency_ms": 12.5, "success": true,
    })
    .to_string()
    .into_bytes()
}

async fn produce_calls(f: &Fixture, n: usize) {
    let producer = producer();
    for _ in 0..n {
        let id = Uuid::new_v4();
        let (key, payload) = (id.to_string(), tool_call(id));
        let record = rdkafka::producer::FutureRecord::to(&f.tool_calls_topic).key(&key).payload(&payload);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produced");
    }
}

async fn stored_calls(f: &Fixture) -> u64 {
    f.ch.client().query("SELECT count() FROM tool_calls").fetch_one().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_batch_is_written_at_once_from_enough_rows_only() {
    let f = Fixture::new("caught_up", 2).await;
    let mut config = f.config();
    // Neither the interval nor the size writes anything during the test.
    config.flush_interval_ms = 600_000;
    config.max_batch_rows = 10_000;
    config.caught_up_flush_rows = 30;
    let (stop, metrics, worker) = spawn_worker(config);
    let consumed = || metrics.events_consumed.with_label_values(&["tool_call"]).get();

    produce_calls(&f, 10).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed() < 10 {
        assert!(Instant::now() < deadline, "the worker never read the first 10 calls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read to the end, and some time for the loop to act on it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_calls(&f).await, 0, "10 rows, under the threshold: the batch waits for its interval");

    produce_calls(&f, 25).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_calls(&f).await < 35 {
        assert!(Instant::now() < deadline, "35 rows caught up, never written (the interval is 10 minutes)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    assert_eq!(stored_calls(&f).await, 35);
    assert_eq!(metrics.events_inserted.with_label_values(&["tool_call"]).get(), 35, "inserted once");
    f.drop_database().await;
}
