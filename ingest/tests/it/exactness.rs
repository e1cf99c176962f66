//! The main guarantee: duplicates (same batch and far apart) counted once,
//! bad messages dead-lettered with their reason, rollups equal to the raw
//! tables and to totals computed independently from the generated traffic.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_valid_events_are_stored_exactly_once() {
    let f = Fixture::new("exact", 4).await;
    let messages = traffic(11, event_count(20_000));
    let positions = produce(&f, &producer(), &messages).await;
    let expected = expect(&messages, &positions);

    let (stop, metrics, worker) = spawn_worker(f.config());
    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    let bad: HashSet<Position> = expected.bad.keys().cloned().collect();
    let dead = read_dead_letters(&f, &bad, Duration::from_secs(60)).await;
    // Give stray rows (if any) time to show up before the final count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops in time").unwrap();

    assert_eq!(found.calls, expected.totals.calls);
    assert_eq!(raw_totals(&f.ch).await, expected.totals, "raw tables");
    assert_eq!(rollup_totals(&f.ch).await, expected.totals, "rollups");
    assert_no_duplicate_rows(&f.ch).await;
    assert_dead_letters(&dead, &expected.bad);

    let valid = messages.iter().filter(|m| m.expected.is_some()).count() as u64;
    let unique = expected.totals.calls + expected.totals.executions;
    let sum = |c: &prometheus::IntCounterVec| KINDS.iter().map(|k| c.with_label_values(&[k]).get()).sum::<u64>();
    assert_eq!(sum(&metrics.events_consumed), messages.len() as u64);
    assert_eq!(sum(&metrics.events_inserted), unique);
    assert_eq!(sum(&metrics.events_deduplicated), valid - unique);
    f.drop_database().await;
}

const KINDS: [&str; 2] = ["tool_call", "agent_execution"];
