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
    // Every message read and what it became written before the final
    // counts: a stray row (a double count) would be in by then, and the
    // duplicates behind the last unique event are counted.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops in time").unwrap();

    assert_eq!(found.calls, expected.totals.calls);
    assert_eq!(raw_totals(&f.ch).await, expected.totals, "raw tables");
    assert_eq!(rollup_totals(&f.ch).await, expected.totals, "rollups");
    assert_no_duplicate_rows(&f.ch).await;
    assert_every_rollup_matches_raw(&f.ch).await;
    assert_dead_letters(&dead, &expected.bad);
    // Keyed by event id with librdkafka's default partitioner, every
    // message is on its home partition already: nothing is forwarded.
    for kind in KINDS {
        assert_eq!(metrics.events_forwarded.with_label_values(&[kind]).get(), 0, "{kind} forwarded");
    }

    let valid = messages.iter().filter(|m| m.expected.is_some()).count() as u64;
    let unique = expected.totals.calls + expected.totals.executions;
    let sum = |c: &prometheus::IntCounterVec| KINDS.iter().map(|k| c.with_label_values(&[k]).get()).sum::<u64>();
    assert_eq!(sum(&metrics.events_consumed), messages.len() as u64);
    assert_eq!(sum(&metrics.events_inserted), unique);
    assert_eq!(sum(&metrics.events_deduplicated), valid - unique);
    f.drop_database().await;
}

const KINDS: [&str; 2] = ["tool_call", "agent_execution"];

/// A row ClickHouse refuses is dead-lettered with its message read again
/// from the source topic by position (batches do not keep the bytes): the
/// key and payload come back verbatim, and a position past the end gives
/// an empty payload after the retries instead of hanging the writer.
///
/// The refusal itself cannot be produced by the local engine (its
/// streaming insert evaluates neither CHECK constraints nor exceptions
/// raised by a view); `refused.rs` tests the split against a mock
/// ClickHouse, and this test the read with its edge case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rows_message_is_read_again_verbatim() {
    let f = Fixture::new("read_again", 2).await;
    let messages = traffic(43, 200);
    let positions = produce(&f, &producer(), &messages).await;
    let metrics = agentmeter_ingest::Metrics::new();
    let backoff = agentmeter_ingest::errors::Backoff::new(10, 50);
    let dead_letters = agentmeter_ingest::dead_letter::DeadLetters::new(&brokers(), &f.dead_letter_topic, backoff, metrics).unwrap();
    for i in [0, 57, 199] {
        let p = &positions[i];
        let original = dead_letters.read_original(&p.topic, p.partition, p.offset).await;
        assert_eq!(original.payload, messages[i].payload, "payload at {p:?}");
        assert_eq!(original.key.as_deref(), Some(messages[i].key.as_slice()), "key at {p:?}");
    }
    let last = positions.iter().filter(|p| p.partition == 0 && p.topic == f.tool_calls_topic).map(|p| p.offset).max().unwrap();
    let missing = dead_letters.read_original(&f.tool_calls_topic, 0, last + 1_000).await;
    assert_eq!(missing, agentmeter_ingest::dead_letter::Original::default());
    f.drop_database().await;
}
