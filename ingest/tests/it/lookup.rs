//! The duplicate look-up against the local ClickHouse: its two ways of
//! asking (by key range, by id) find the same stored ids, and a batch
//! whose look-up ran while the previous batch was still being inserted
//! (the consumer's look-up ahead) stores a row both batches hold once, and
//! a batch whose ranges hold several times its rows (partitions read at
//! different positions) is still answered by range.

use std::collections::HashSet;
use std::time::Duration;

use agentmeter_ingest::batch::{Encoded, Entry, IngestRow, Source};
use agentmeter_ingest::dedup::{key_ranges, range_cap, sorted_keys, stored_ids, stored_ids_by_id, stored_ids_in_ranges, MAX_KEY_RANGES};
use agentmeter_ingest::errors::Backoff;
use agentmeter_ingest::writer::Writer;
use agentmeter_ingest::Metrics;
use agentmeter_schema::rows::ToolCallRow;
use uuid::Uuid;

use crate::support::*;

const TENANTS: [Uuid; 2] = [agentmeter_bench::TENANT_A, agentmeter_bench::TENANT_B];
const T0: i64 = 1_790_000_000_000;

/// A tool call `n`: its id, tenant and time follow from `n` alone, so the
/// same `n` in two batches is the same event.
fn call(n: u64, at: i64) -> Entry<Encoded<ToolCallRow>> {
    let payload = serde_json::json!({
        "event_id": Uuid::from_u128(0x5eed_0000_0000_0000 + n as u128), "occurred_at": at,
        "tenant_id": TENANTS[(n % 2) as usize], "tool_name": "search", "latency_ms": 3.5, "success": true,
    });
    let row = ToolCallRow::parse(payload.to_string().as_bytes(), chrono::Utc::now()).expect("valid tool call");
    Entry { row: Encoded::new(&row, 30), source: Source { partition: 0, offset: n as i64, bytes: 0 } }
}

/// Calls `range`, ten per millisecond from `start`.
fn calls(range: std::ops::Range<u64>, start: i64) -> Vec<Entry<Encoded<ToolCallRow>>> {
    range.map(|n| call(n, start + n as i64 / 10)).collect()
}

fn writer(f: &Fixture) -> Writer {
    Writer::new(f.ch.client(), Backoff::new(10, 100), Duration::from_secs(30), Metrics::new())
}

async fn counts(f: &Fixture) -> (u64, u64, u64) {
    f.ch.client()
        .query("SELECT count(), uniqExact(event_id), toUInt64(assumeNotNull((SELECT sum(calls) FROM tool_calls_1m))) FROM tool_calls")
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_in_two_batches_in_flight_at_once_is_stored_once() {
    let f = Fixture::new("lookup_ahead", 1).await;
    let w = writer(&f);
    // Batch 1 holds calls 0..1000, batch 2 calls 500..1500: 500 in both.
    let first = calls(0..1_000, T0);
    let second = calls(500..1_500, T0);

    // Batch 2's look-up runs before batch 1 is inserted, as when the
    // consumer looks up ahead: it cannot see the 500 rows they share.
    let mut ahead = w.look_up(second).await;
    assert_eq!((ahead.ids().len(), ahead.deduplicated()), (1_000, 0), "the look-up ran before batch 1 landed");

    let (written, landed) = w.insert(w.look_up(first).await).await;
    assert_eq!((written.inserted, written.deduplicated, landed.len()), (1_000, 0, 1_000));

    // What batch 1 landed is dropped from batch 2 before its insert.
    ahead.drop_landed(&landed);
    let (written, landed) = w.insert(ahead).await;
    assert_eq!((written.inserted, written.deduplicated), (500, 500));
    assert_eq!(landed, (1_000..1_500).map(|n| call(n, T0).row.event_id()).collect::<HashSet<_>>());

    assert_eq!(counts(&f).await, (1_500, 1_500, 1_500), "rows, distinct ids, rollup calls");
    f.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_ups_by_range_and_by_id_find_the_same_stored_ids() {
    let f = Fixture::new("lookup_ways", 1).await;
    let w = writer(&f);
    // Stored: 3,000 calls in one 300 ms stretch, 1,000 an hour later.
    let mut stored = calls(0..3_000, T0);
    stored.extend(calls(3_000..4_000, T0 + 3_600_000));
    assert_eq!(w.write(stored).await.inserted, 4_000);

    // A batch of 500 stored calls from both stretches, 2,000 new ones in
    // between and around them, and 200 new ones a day later.
    // (Every eighth call, odd and even ones: both tenants.)
    let mut batch: Vec<Entry<Encoded<ToolCallRow>>> =
        (0..500).map(|i| i * 8 + i % 2).map(|n| call(n, T0 + if n < 3_000 { 0 } else { 3_600_000 } + n as i64 / 10)).collect();
    batch.extend(calls(10_000..12_000, T0 + 1_000));
    batch.extend(calls(20_000..20_200, T0 + 86_400_000));
    let expected: HashSet<Uuid> = batch[..500].iter().map(|e| e.row.event_id()).collect();

    let keys = sorted_keys(&batch);
    // One range per tenant: from the first stretch to the day after, so
    // every stored row is in them.
    let ranges = key_ranges(&keys, 2);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let timeout = Duration::from_secs(30);
    let client = f.ch.client();

    let by_range = stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &ranges, 10_000, timeout).await.unwrap();
    assert_eq!(by_range.as_ref(), Some(&expected), "by range");
    // The ranges hold all 4,000 stored rows: with a lower cap it gives way.
    assert_eq!(stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &ranges, 3_999, timeout).await.unwrap(), None);
    assert_eq!(stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &ranges, 4_000, timeout).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(stored_ids_by_id::<ToolCallRow>(&client, &keys, timeout).await.unwrap(), expected, "by id");
    // Cut at the gaps of 1 s or more: per tenant the first stretch, the new
    // calls 1.7 s later, the hour and the day.
    let cut = key_ranges(&keys, MAX_KEY_RANGES);
    assert_eq!(cut.len(), 8, "{cut:?}");
    assert_eq!(stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &cut, 10_000, timeout).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(stored_ids::<ToolCallRow>(&client, &batch, timeout).await.unwrap(), expected);

    // The same id at another time is another event to the look-up.
    let moved = vec![call(1, T0 + 5_000)];
    assert!(stored_ids::<ToolCallRow>(&client, &moved, timeout).await.unwrap().is_empty());

    let written = w.write(batch).await;
    assert_eq!((written.inserted, written.deduplicated), (2_200, 500));
    assert_eq!(counts(&f).await, (6_200, 6_200, 6_200));
    f.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_holding_six_times_the_batch_are_still_looked_up_by_range() {
    let f = Fixture::new("lookup_cap", 1).await;
    let w = writer(&f);
    // Stored: 6,000 calls over 600 ms, as if other partitions had been read ahead.
    assert_eq!(w.write(calls(0..6_000, T0)).await.inserted, 6_000);
    // A batch of 1,000: 500 stored calls (every twelfth, of both tenants), 500 new ones in the same 600 ms.
    let mut batch: Vec<Entry<Encoded<ToolCallRow>>> = (0..500).map(|i| i * 12 + i % 2).map(|n| call(n, T0 + n as i64 / 10)).collect();
    batch.extend((0..500u64).map(|i| call(30_000 + i, T0 + i as i64)));
    let expected: HashSet<Uuid> = batch[..500].iter().map(|e| e.row.event_id()).collect();

    let keys = sorted_keys(&batch);
    let ranges = key_ranges(&keys, MAX_KEY_RANGES);
    assert_eq!(ranges.len(), 2, "one per tenant: {ranges:?}");
    let (client, timeout) = (f.ch.client(), Duration::from_secs(30));
    // The cap (eight stored rows per id) covers the 6,000 stored rows ...
    assert!(range_cap(keys.len()) >= 6_000);
    let by_range = stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &ranges, range_cap(keys.len()), timeout).await.unwrap();
    assert_eq!(by_range.as_ref(), Some(&expected));
    // ... which twice the batch (the cap before) did not: that look-up gave way to the one by id.
    assert_eq!(stored_ids_in_ranges::<ToolCallRow>(&client, &keys, &ranges, 2 * keys.len() + 1_000, timeout).await.unwrap(), None);
    assert_eq!(stored_ids::<ToolCallRow>(&client, &batch, timeout).await.unwrap(), expected);

    let written = w.write(batch).await;
    assert_eq!((written.inserted, written.deduplicated), (500, 500));
    assert_eq!(counts(&f).await, (6_500, 6_500, 6_500));
    f.drop_database().await;
}
