//! The last batch of a backlog is written as soon as the backlog is
//! drained (the batch before it went because it was full, and no message
//! has come for a moment), not after `--flush-interval-ms`; a batch of
//! traffic the worker keeps up with, before or after a backlog (also one
//! that ended on a full batch), still waits for its interval; and a
//! backlog held back at the in-flight bound is not drained while it waits
//! there.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::*;

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

async fn wait_for_stored(f: &Fixture, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_calls(f).await < n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the worker has read `n` calls, then 2 s more: long past
/// idle, so anything the end of a backlog would write is written by then.
async fn read_then_idle(consumed: &impl Fn() -> u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed() < n {
        assert!(Instant::now() < deadline, "the worker read {} of {n} calls", consumed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The configuration of a worker on `f` that writes only a full batch
/// (10 rows) or the end of a backlog during a test: its interval is 10
/// minutes.
fn backlog_config(f: &Fixture) -> agentmeter_ingest::Config {
    let mut config = f.config();
    config.flush_interval_ms = 600_000;
    config.max_batch_rows = 10;
    config
}

/// A worker with [`backlog_config`].
fn spawn_backlog_worker(
    f: &Fixture,
) -> (tokio::sync::oneshot::Sender<()>, std::sync::Arc<agentmeter_ingest::Metrics>, tokio::task::JoinHandle<()>) {
    spawn_worker(backlog_config(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_written_at_once_a_kept_up_trickle_waits() {
    let f = Fixture::new("backlog_end", 2).await;
    let (stop, metrics, worker) = spawn_backlog_worker(&f);
    let consumed = || metrics.events_consumed.with_label_values(&["tool_call"]).get();

    // A trickle: 5 calls, no full batch before them.
    produce_calls(&f, 5).await;
    read_then_idle(&consumed, 5).await;
    assert_eq!(stored_calls(&f).await, 0, "a batch of traffic kept up with waits for its interval");

    // 10 more: the open batch fills (a full batch of 10 goes), 5 are left
    // once nothing more comes.
    produce_calls(&f, 10).await;
    wait_for_stored(&f, 10, "the full batch was never written").await;
    wait_for_stored(&f, 15, "the backlog's last 5 calls wait for the 10-minute interval").await;

    // The backlog is over: a trickle waits for its interval again.
    produce_calls(&f, 3).await;
    read_then_idle(&consumed, 18).await;
    assert_eq!(stored_calls(&f).await, 15, "after the backlog's end, a trickle waits for its interval");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    assert_eq!(stored_calls(&f).await, 18, "written at shutdown");
    assert_eq!(metrics.events_inserted.with_label_values(&["tool_call"]).get(), 18, "inserted once");
    f.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_ending_on_a_full_batch_leaves_the_next_trickle_waiting() {
    let f = Fixture::new("backlog_full_end", 1).await;
    let (stop, metrics, worker) = spawn_backlog_worker(&f);
    let consumed = || metrics.events_consumed.with_label_values(&["tool_call"]).get();

    produce_calls(&f, 10).await;
    wait_for_stored(&f, 10, "the full batch was never written").await;
    read_then_idle(&consumed, 10).await;
    produce_calls(&f, 3).await;
    read_then_idle(&consumed, 13).await;
    assert_eq!(stored_calls(&f).await, 10, "nothing was left of the backlog: the trickle waits for its interval");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    assert_eq!(stored_calls(&f).await, 13, "written at shutdown");
    f.drop_database().await;
}

/// The memory one of [`tool_call`]'s rows takes in a batch (they all have
/// the same size).
fn row_bytes(retention_days: u32) -> usize {
    use agentmeter_ingest::batch::Encoded;
    let event = agentmeter_schema::parse_tool_call(&tool_call(Uuid::new_v4()), chrono::Utc::now()).unwrap();
    Encoded::new(&agentmeter_schema::rows::ToolCallRow::from(&event), retention_days).memory_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_held_at_the_in_flight_bound_is_written_in_full_batches() {
    let f = Fixture::new("backlog_held", 1).await;
    // Every insert into tool_calls takes 300 ms (a view that sleeps 30 ms
    // per row): several of the loop's 100 ms ticks pass while it waits.
    for sql in [
        "CREATE TABLE slow_sink (x UInt8) ENGINE = Null",
        "CREATE MATERIALIZED VIEW slow_mv TO slow_sink AS SELECT sleepEachRow(0.03) AS x FROM tool_calls",
    ] {
        f.ch.client().query(sql).execute().await.unwrap();
    }
    // 50 calls waiting before the worker starts: a backlog of five full
    // batches of 10.
    produce_calls(&f, 50).await;
    let mut config = backlog_config(&f);
    // Room for 12 rows in flight: while a full batch is written, the loop
    // takes 3 more rows and then holds back until the insert is over. That
    // wait is not the end of the backlog: no batch of 3 goes early.
    let bound = 12 * row_bytes(config.query_text_retention_days) + 16;
    (config.max_batch_bytes, config.max_inflight_bytes) = (bound, bound);
    let (stop, metrics, worker) = spawn_worker(config);
    wait_for_stored(&f, 50, "the backlog was not written: a batch went early and left the rest waiting for the interval").await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    let batches = metrics.flush_duration.with_label_values(&["tool_call"]).get_sample_count();
    assert_eq!(batches, 5, "50 calls in full batches of 10");
    assert_eq!(metrics.events_inserted.with_label_values(&["tool_call"]).get(), 50, "inserted once");
    f.drop_database().await;
}
