//! A burst of panel requests with one key is queued for the key's
//! in-flight slots and answered in full, on one replica and on two sharing
//! their slots through Valkey; the queue bound still gives 429.

use std::sync::Arc;

use agentmeter_api::auth::Role;
use agentmeter_api::{AppState, Args};
use chrono::Utc;
use clap::Parser;
use uuid::Uuid;

use super::{deliver, events};
use crate::analytics::{App, KEY_A};
use crate::common::{clickhouse_url, key_store, serve};

/// The panel-like requests of a burst: graphs, lists and Grafana series.
fn burst_paths(n: usize) -> Vec<String> {
    let kinds = [
        "/api/v1/analytics/tool-calls-processed-graph?window=1d&frequency=1h",
        "/api/v1/analytics/error-rate-graph?window=1d&frequency=15m",
        "/api/v1/analytics/tools?window=1d",
        "/api/v1/analytics/top-servers?window=1d",
        "/api/v1/query/timeseries?metric=tool_calls&group_by=tool&format=table",
        "/api/v1/query/timeseries?metric=latency_p95&format=table",
        "/api/v1/analytics/users?window=1d",
        "/api/v1/analytics/average-tool-call-latency-graph?window=1d&frequency=5m",
    ];
    (0..n).map(|i| kinds[i % kinds.len()].to_owned()).collect()
}

/// How long a request of these bursts may wait for a slot (the default is
/// 10 s): the last quarter of 32 requests waits for three rounds of 8 ahead
/// of it, which a busy machine can stretch past 10 s. What is tested is that
/// the burst waits instead of failing, not the machine's speed.
const QUEUE_WAIT: &str = "60000";

/// Sends every request at once with `key`, spread over `bases`; returns the
/// statuses.
async fn fire(http: &reqwest::Client, bases: &[String], key: &str, paths: &[String]) -> Vec<u16> {
    futures::future::join_all(paths.iter().enumerate().map(|(i, p)| {
        let url = format!("{}{p}", bases[i % bases.len()]);
        async move { http.get(url).header("X-API-Key", key).send().await.unwrap().status().as_u16() }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_requests_with_one_key_all_answer() {
    let app = App::start("dash_burst", &["--analytics-queue-wait-ms", QUEUE_WAIT]).await;
    let (_, calls, execs) = events(app.tenant_a, 120, "burst", Utc::now());
    deliver(&app, "dash_burst", &calls, &execs).await;
    // The default budget (8 in flight per key, 64 waiting), 32 at once.
    let statuses = fire(&app.http, std::slice::from_ref(&app.base), KEY_A, &burst_paths(32)).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    app.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_or_a_passed_wait_bound_is_429() {
    // One slot, one waiter: of 12 at once, at least 10 are refused at once.
    let app = App::start("dash_queue", &["--analytics-concurrency-per-key", "1", "--analytics-queue-per-key", "1"]).await;
    let statuses = fire(&app.http, std::slice::from_ref(&app.base), KEY_A, &burst_paths(12)).await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 1, "{statuses:?}");
    // No wait at all: a burst over the cap is refused in part.
    let app2 = App::start("dash_nowait", &["--analytics-concurrency-per-key", "1", "--analytics-queue-wait-ms", "0"]).await;
    let statuses = fire(&app2.http, std::slice::from_ref(&app2.base), KEY_A, &burst_paths(12)).await;
    assert!(statuses.contains(&429) && statuses.contains(&200), "{statuses:?}");
    app.drop_db().await;
    app2.drop_db().await;
}

fn valkey_url() -> String {
    std::env::var("AGENTMETER_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two replicas sharing one Valkey (so one set of 8 in-flight slots for
/// the key across both): 32 requests at once, half on each, all answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_requests_over_two_replicas_sharing_slots_all_answer() {
    let app = App::start("dash_burst2", &[]).await;
    let (_, calls, execs) = events(app.tenant_a, 120, "burst2", Utc::now());
    deliver(&app, "dash_burst2", &calls, &execs).await;
    let prefix = format!("test_dash_burst2_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let (url, valkey) = (clickhouse_url(), valkey_url());
    let mut bases = Vec::new();
    let mut states = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let keys = key_store(&[("a", app.tenant_a, Role::Read, KEY_A)]);
        let args = Args::parse_from([
            "agentmeter-api",
            "--clickhouse-url",
            &url,
            "--clickhouse-database",
            &app.db_name,
            "--valkey-url",
            &valkey,
            "--valkey-key-prefix",
            &prefix,
            "--analytics-queue-wait-ms",
            QUEUE_WAIT,
        ]);
        let state = AppState::new(args.clickhouse.client(), Arc::new(keys), &args);
        let (base, stop) = serve(state.clone()).await;
        bases.push(base);
        states.push(state);
        stops.push(stop);
    }
    // While the burst runs, the key's shared in-flight set never holds
    // more than the cap of 8, and it is used (the slots are the shared ones).
    let client = redis::Client::open(valkey.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let watch = async {
        let mut most = 0i64;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let sets: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:rate:*:inflight")).query_async(&mut conn).await.unwrap();
            for k in sets {
                let n: i64 = redis::cmd("ZCARD").arg(&k).query_async(&mut conn).await.unwrap();
                most = most.max(n);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        most
    };
    let burst = async {
        let statuses = fire(&app.http, &bases, KEY_A, &burst_paths(32)).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        statuses
    };
    let (most, statuses) = tokio::join!(watch, burst);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!((1..=8).contains(&most), "the shared in-flight set held {most} slots at most");
    let all: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
    if !all.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&all).query_async(&mut conn).await.unwrap();
    }
    drop(stops);
    app.drop_db().await;
}
