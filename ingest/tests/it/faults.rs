//! Faults: a worker killed at random moments, ClickHouse away for a while,
//! two workers sharing partitions while one of them dies. Every test ends
//! with exact totals in the raw tables and the rollups.

use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};

use crate::support::*;

fn spawn_binary(f: &Fixture) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agentmeter-ingest"))
        .args(f.args())
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start agentmeter-ingest")
}

/// SIGTERM, then the exit status within `within`.
async fn terminate(mut child: Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    tokio::time::timeout(within, child.wait()).await.expect("exits within the shutdown timeout").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_worker_restarted_three_times_leaves_exact_totals() {
    let f = Fixture::new("kill", 4).await;
    let messages = traffic(21, event_count(20_000) / 2);
    let producing = produce_over(&f, messages.clone(), Duration::from_secs(20));
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::rng().random());
    let mut child = spawn_binary(&f);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(3_000..7_000))).await;
        child.kill().await.expect("SIGKILL");
        child = spawn_binary(&f);
    }
    let positions = producing.await.unwrap();
    let expected = expect(&messages, &positions);
    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    // The duplicates and bad messages behind the last unique event read and
    // handled (a stray row in, every dead letter out) before the worker stops.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    let status = terminate(child, Duration::from_secs(20)).await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert_exact(&f, &expected, found).await;
    assert_dead_lettered(&f, &expected).await;
    f.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_partitions_and_one_dies() {
    let f = Fixture::new("pair", 4).await;
    let messages = traffic(41, event_count(20_000) / 2);
    let producing = produce_over(&f, messages.clone(), Duration::from_secs(20));
    let first = spawn_binary(&f);
    let mut second = spawn_binary(&f);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(second.try_wait().unwrap().is_none(), "second worker still running");
    drop(first); // kill_on_drop: SIGKILL
    let positions = producing.await.unwrap();
    let expected = expect(&messages, &positions);
    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    // The duplicates and bad messages behind the last unique event read and
    // handled (a stray row in, every dead letter out) before the worker stops.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    let status = terminate(second, Duration::from_secs(20)).await;
    assert!(status.success());
    assert_exact(&f, &expected, found).await;
    assert_dead_lettered(&f, &expected).await;
    f.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_away_for_twenty_seconds_loses_nothing_and_bounds_memory() {
    let f = Fixture::new("outage", 2).await;
    let url = clickhouse_url();
    let target = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(target).await;
    let mut config = f.config();
    config.clickhouse.url = format!("http://{}", proxy.addr);
    config.max_batch_bytes = 256 * 1024;
    config.max_inflight_bytes = 1024 * 1024;
    config.clickhouse_timeout_ms = 3_000;
    let bound = config.max_inflight_bytes as i64;

    let messages = traffic(31, event_count(20_000) / 2);
    let producing = produce_over(&f, messages.clone(), Duration::from_secs(30));
    let (stop, metrics, worker) = spawn_worker(config);

    let peak = Arc::new(AtomicI64::new(0));
    let paused_seen = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (metrics, peak, paused_seen) = (Arc::clone(&metrics), Arc::clone(&peak), Arc::clone(&paused_seen));
        tokio::spawn(async move {
            loop {
                peak.fetch_max(metrics.inflight_bytes.get(), Ordering::SeqCst);
                paused_seen.fetch_max(metrics.consumption_paused.get(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.set_up(false);
    // An insert whose body crossed the proxy just before the cut is still
    // committed by ClickHouse (the worker sees a network error and its retry is
    // deduplicated later); let such inserts finish before taking the snapshot.
    let mut before = raw_totals(&f.ch).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = raw_totals(&f.ch).await;
        if now == before {
            break;
        }
        assert!(Instant::now() < deadline, "inserts still landing 20 s after the cut: {before:?} then {now:?}");
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = raw_totals(&f.ch).await;
    proxy.set_up(true);
    assert_eq!((before.calls, before.executions), (during.calls, during.executions), "nothing written while away");

    let positions = producing.await.unwrap();
    let expected = expect(&messages, &positions);
    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    // The duplicates and bad messages behind the last unique event read and
    // handled (a stray row in, every dead letter out) before the worker stops.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    sampler.abort();

    assert_exact(&f, &expected, found).await;
    let largest_message = agentmeter_schema::event::MAX_EVENT_BYTES as i64 * 2;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 0 && peak <= bound + largest_message, "in-flight bytes peaked at {peak}, bound {bound}");
    assert_eq!(paused_seen.load(Ordering::SeqCst), 1, "consumption was paused at the bound");
    assert!(metrics.insert_retries.get() > 0 || metrics.clickhouse_errors.with_label_values(&["network"]).get() > 0);
    assert_dead_lettered(&f, &expected).await;
    f.drop_database().await;
}
