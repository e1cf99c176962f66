//! A cheap fingerprint of the `plan_limits` table, read by every usage
//! refresh (250 ms by default), so that a limit written through any API
//! replica is enforced by every replica within one refresh interval rather
//! than at the next full reconcile. Works with or without Valkey: the table
//! is the only source of truth for limits.
//!
//! Every write appends a row (a new `version`, a fresh `updated_at`), so the
//! row count, the newest `updated_at` and the sum of versions change with
//! every write. Background merges of the `ReplacingMergeTree` only drop
//! superseded rows: they may change the fingerprint without a write (a
//! harmless extra reload), never hide a write, since the write's own row
//! raises `updated_at` and the sum of versions of the limit it supersedes.

use clickhouse::Row;
use serde::Deserialize;

/// The fingerprint; equal fingerprints mean the same set of limit rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct LimitsVersion {
    rows: u64,
    newest_ms: i64,
    versions: u64,
}

const VERSION_SQL: &str = "SELECT count() AS rows, toInt64(toUnixTimestamp64Milli(max(updated_at))) AS newest_ms,
        toUInt64(sum(version)) AS versions
    FROM plan_limits";

/// Reads the fingerprint (one aggregate over a small table).
pub async fn read(db: &clickhouse::Client) -> clickhouse::error::Result<LimitsVersion> {
    db.query(VERSION_SQL).fetch_one().await
}
