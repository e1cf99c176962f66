//! Duplicate detection before each insert.
//!
//! Two steps, both required for exactness (docs/ingest.md explains why):
//!
//! 1. [`dedup_in_batch`]: one row per `event_id` within the batch (the
//!    first one read wins).
//! 2. [`stored_ids`]: the ids of the batch that ClickHouse already holds.
//!    A duplicate carries its original's `occurred_at` and `tenant_id`, so
//!    only rows in the batch's key ranges can be duplicates: per tenant, the
//!    span of the batch's `occurred_at`, cut at its widest gaps
//!    ([`key_ranges`]). The raw tables' sort key
//!    `(tenant_id, occurred_at, event_id)` turns those ranges into a few
//!    granules. This catches a producer's duplicate sent any time later,
//!    and every row of a batch redelivered after a crash or a rebalance,
//!    whatever the batch boundaries of the second delivery.
//!
//! The look-up asks in one of two ways, cheapest first:
//!
//! * [`stored_ids_in_ranges`]: every `event_id` stored in the ranges, if
//!   there are at most [`range_cap`] (eight per id of the batch) of them
//!   (`LIMIT cap + 1` tells), compared with the batch's ids as they stream
//!   in. Live traffic is written in time order, so a batch's ranges hold
//!   few stored rows (the previous batches of other partitions, other
//!   workers' rows of the same seconds) and the request is a few hundred
//!   bytes, where a list of ids costs the server ~37 bytes to receive and
//!   parse per id: streaming a stored id back costs about a tenth of that.
//! * [`stored_ids_by_id`], when the ranges hold more (a backfill, a
//!   redelivery): the batch's ids, in chunks of [`LOOKUP_CHUNK_IDS`], within
//!   the same ranges. Values reach ClickHouse as bound parameters (`?` +
//!   `bind`, sent in the request body so that tens of thousands of ids do not
//!   hit URL limits); the ids travel as one comma-separated string split on
//!   the server: a single string literal parses in half the time of a
//!   10,000-element list.
//!
//! Both answers are exact: the first compares every stored id of the ranges
//! with the batch's, the second asks for the batch's ids themselves.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Deserialize;
use uuid::Uuid;

use crate::batch::{Encoded, Entry, IngestRow};

/// Ids per look-up query by id; large batches are looked up in chunks.
pub const LOOKUP_CHUNK_IDS: usize = 10_000;

/// Key ranges per look-up query at most (the widest gaps are cut first).
pub const MAX_KEY_RANGES: usize = 64;

/// A gap in `occurred_at` narrower than this is not worth a range of its
/// own (ms).
pub const MIN_GAP_MS: i64 = 1_000;

/// Removes rows whose `event_id` appeared earlier in the batch; returns how
/// many were removed.
pub fn dedup_in_batch<R: IngestRow>(entries: &mut Vec<Entry<Encoded<R>>>) -> usize {
    let before = entries.len();
    let mut seen = HashSet::with_capacity(before);
    entries.retain(|e| seen.insert(e.row.event_id()));
    before - entries.len()
}

/// The sort key of a raw table's row: tenant, `occurred_at` (epoch ms), id.
pub type Key = (Uuid, i64, Uuid);

/// `occurred_at` from `from` to `to` (epoch ms, both included) of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub tenant: Uuid,
    pub from: i64,
    pub to: i64,
}

/// The key ranges that hold every key of `keys`: one per tenant, cut at
/// that tenant's widest gaps of at least [`MIN_GAP_MS`], at most
/// `max_ranges` in all (at least one per tenant).
pub fn key_ranges(keys: &[Key], max_ranges: usize) -> Vec<KeyRange> {
    let mut by_tenant: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for (tenant, at, _) in keys {
        by_tenant.entry(*tenant).or_default().push(*at);
    }
    // Every gap worth cutting, widest first; each cut adds one range.
    let mut gaps: Vec<(i64, Uuid, i64)> = Vec::new();
    for (tenant, times) in &mut by_tenant {
        times.sort_unstable();
        times.dedup();
        gaps.extend(times.windows(2).filter(|w| w[1] - w[0] >= MIN_GAP_MS).map(|w| (w[1] - w[0], *tenant, w[1])));
    }
    gaps.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
    gaps.truncate(max_ranges.saturating_sub(by_tenant.len()));
    let cuts: HashSet<(Uuid, i64)> = gaps.into_iter().map(|(_, tenant, at)| (tenant, at)).collect();
    let mut ranges = Vec::new();
    for (tenant, times) in by_tenant {
        let mut from = times[0];
        let mut to = from;
        for at in times {
            if cuts.contains(&(tenant, at)) {
                ranges.push(KeyRange { tenant, from, to });
                from = at;
            }
            to = at;
        }
        ranges.push(KeyRange { tenant, from, to });
    }
    ranges
}

/// The stored rows the range look-up reads back at most for `ids` ids before
/// it gives way to the look-up by id: about what that look-up would cost.
/// Measured on the ingest benchmark's batches of 50,000 ids: a range
/// look-up streamed 100,000-170,000 stored ids in 60-160 ms, a look-up by
/// id took 400-1,300 ms (it sends and parses ~37 bytes per id), so the
/// ranges may hold eight times the batch before the look-up by id is cheaper.
/// (With twice the batch, 2-5 of the benchmark's ~22 look-ups per run
/// fell back to the look-up by id: its partitions are read at different
/// positions, so a batch's ranges also hold other partitions' rows.)
pub fn range_cap(ids: usize) -> usize {
    8 * ids + 10_000
}

/// The WHERE condition of `ranges` (placeholders) and its binds.
fn ranges_condition(ranges: &[KeyRange]) -> String {
    let one = "(tenant_id = ? AND occurred_at BETWEEN fromUnixTimestamp64Milli(toInt64(?), 'UTC') \
               AND fromUnixTimestamp64Milli(toInt64(?), 'UTC'))";
    format!("({})", vec![one; ranges.len()].join(" OR "))
}

fn bind_ranges(mut query: clickhouse::query::Query, ranges: &[KeyRange]) -> clickhouse::query::Query {
    for r in ranges {
        query = query.bind(r.tenant).bind(r.from).bind(r.to);
    }
    query
}

#[derive(Row, Deserialize)]
struct StoredId {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

/// The keys of `entries`, sorted like the raw tables.
pub fn sorted_keys<R: IngestRow>(entries: &[Entry<Encoded<R>>]) -> Vec<Key> {
    let mut keys: Vec<Key> =
        entries.iter().map(|e| (e.row.tenant_id(), e.row.occurred_at().timestamp_millis(), e.row.event_id())).collect();
    keys.sort_unstable();
    keys
}

/// The `event_id`s of `entries` already present in the raw table: by range
/// when the batch's key ranges hold at most [`range_cap`] stored rows,
/// otherwise by id.
pub async fn stored_ids<R: IngestRow>(
    client: &Client,
    entries: &[Entry<Encoded<R>>],
    timeout: Duration,
) -> Result<HashSet<Uuid>, clickhouse::error::Error> {
    let keys = sorted_keys(entries);
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let started = std::time::Instant::now();
    let ranges = key_ranges(&keys, MAX_KEY_RANGES);
    let (found, by) = match stored_ids_in_ranges::<R>(client, &keys, &ranges, range_cap(keys.len()), timeout).await? {
        Some(found) => (found, "range"),
        None => (stored_ids_by_id::<R>(client, &keys, timeout).await?, "id"),
    };
    tracing::debug!(
        table = R::TABLE,
        ids = keys.len(),
        ranges = ranges.len(),
        by,
        found = found.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "duplicate look-up"
    );
    Ok(found)
}

/// Every `event_id` stored in `ranges` that `keys` holds; `None` when the
/// ranges hold more than `cap` stored rows (nothing more is read then).
/// The stored ids are compared as they stream in, never all held at once.
pub async fn stored_ids_in_ranges<R: IngestRow>(
    client: &Client,
    keys: &[Key],
    ranges: &[KeyRange],
    cap: usize,
    timeout: Duration,
) -> Result<Option<HashSet<Uuid>>, clickhouse::error::Error> {
    let sql = format!("SELECT event_id FROM {} WHERE {} LIMIT {}", R::TABLE, ranges_condition(ranges), cap + 1);
    let ids: HashSet<Uuid> = keys.iter().map(|k| k.2).collect();
    let read = async {
        let mut cursor = bind_ranges(client.query(&sql), ranges).fetch::<StoredId>()?;
        let (mut found, mut stored) = (HashSet::new(), 0usize);
        while let Some(row) = cursor.next().await? {
            stored += 1;
            if stored > cap {
                tracing::debug!(table = R::TABLE, stored, "duplicate look-up: ranges hold more than the cap");
                return Ok(None);
            }
            if ids.contains(&row.event_id) {
                found.insert(row.event_id);
            }
        }
        tracing::debug!(table = R::TABLE, stored, "duplicate look-up: stored rows in the ranges");
        Ok(Some(found))
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| clickhouse::error::Error::TimedOut)?
}

/// The `event_id`s of `keys` (sorted) stored in the raw table, asked for by
/// id in chunks of [`LOOKUP_CHUNK_IDS`], each within its own key ranges.
pub async fn stored_ids_by_id<R: IngestRow>(
    client: &Client,
    keys: &[Key],
    timeout: Duration,
) -> Result<HashSet<Uuid>, clickhouse::error::Error> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(LOOKUP_CHUNK_IDS) {
        let ranges = key_ranges(chunk, MAX_KEY_RANGES);
        let sql = format!(
            "SELECT event_id FROM {} WHERE {} AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', ?))))",
            R::TABLE,
            ranges_condition(&ranges)
        );
        let ids = chunk.iter().map(|k| k.2.to_string()).collect::<Vec<_>>().join(",");
        let query = bind_ranges(client.query(&sql), &ranges)
            .bind(ids)
            // ~37 bytes of SQL per id; the default limit is 256 KiB.
            .with_option("max_query_size", (1024 * 1024 + 64 * LOOKUP_CHUNK_IDS).to_string());
        let rows = tokio::time::timeout(timeout, query.fetch_all::<StoredId>()).await.map_err(|_| clickhouse::error::Error::TimedOut)??;
        found.extend(rows.into_iter().map(|r| r.event_id));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);

    fn keys(list: &[(Uuid, i64)]) -> Vec<Key> {
        let mut keys: Vec<Key> = list.iter().enumerate().map(|(i, (t, at))| (*t, *at, Uuid::from_u128(i as u128))).collect();
        keys.sort_unstable();
        keys
    }

    fn covers(ranges: &[KeyRange], keys: &[Key]) -> bool {
        keys.iter().all(|(t, at, _)| ranges.iter().any(|r| r.tenant == *t && r.from <= *at && *at <= r.to))
    }

    #[test]
    fn one_range_per_tenant_when_times_are_close() {
        let k = keys(&[(A, 1_000), (A, 1_400), (B, 1_100), (A, 1_200), (B, 1_900)]);
        let r = key_ranges(&k, MAX_KEY_RANGES);
        assert_eq!(r, vec![KeyRange { tenant: A, from: 1_000, to: 1_400 }, KeyRange { tenant: B, from: 1_100, to: 1_900 }]);
        assert!(covers(&r, &k));
    }

    #[test]
    fn widest_gaps_are_cut_first_within_the_limit() {
        // Gaps of A: 10 s, 1 h, 0.5 s; of B: 1 day.
        let k = keys(&[(A, 0), (A, 10_000), (A, 3_610_000), (A, 3_610_500), (B, 0), (B, 86_400_000)]);
        let r = key_ranges(&k, 3);
        assert_eq!(
            r,
            vec![
                KeyRange { tenant: A, from: 0, to: 3_610_500 },
                KeyRange { tenant: B, from: 0, to: 0 },
                KeyRange { tenant: B, from: 86_400_000, to: 86_400_000 },
            ]
        );
        let r = key_ranges(&k, 4);
        assert_eq!(r[..2], [KeyRange { tenant: A, from: 0, to: 10_000 }, KeyRange { tenant: A, from: 3_610_000, to: 3_610_500 }]);
        // Every gap of 1 s or more is cut when the limit allows; 0.5 s never is.
        let all = key_ranges(&k, MAX_KEY_RANGES);
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(all.contains(&KeyRange { tenant: A, from: 3_610_000, to: 3_610_500 }));
        for r in [key_ranges(&k, 1), key_ranges(&k, 3), key_ranges(&k, 4), all] {
            assert!(covers(&r, &k), "{r:?}");
        }
    }

    #[test]
    fn a_tenant_always_has_a_range_even_past_the_limit() {
        let k = keys(&[(A, 0), (A, 100_000), (B, 5)]);
        let r = key_ranges(&k, 1);
        assert_eq!(r, vec![KeyRange { tenant: A, from: 0, to: 100_000 }, KeyRange { tenant: B, from: 5, to: 5 }]);
    }
}
