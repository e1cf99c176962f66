//! The `plan_limits` table: an append-only log of limit versions (the
//! latest row of a limit wins; a tombstone row deletes it), and the
//! fingerprint of every table limits are built from (with `plans`).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::{Db, QueryError};

/// A row of `plan_limits`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct LimitRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub limit_id: Uuid,
    pub version: u64,
    pub deleted: bool,
    pub subject_kind: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub user_id: Uuid,
    pub metric: String,
    pub period_kind: String,
    pub period_tz: String,
    pub anchor_day: u8,
    pub rolling_hours: u32,
    /// `Decimal(38, 6)` as its mantissa.
    pub max_value: i128,
    pub soft_threshold: Option<f64>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// The latest row of every limit (tombstones included, so that versions of
/// deleted limits keep increasing when re-created). `LIMIT 1 BY` over
/// `version DESC` is the same answer as `argMax(..., version)` per column,
/// without depending on merges; `updated_at` breaks a tie between two
/// processes that wrote the same version.
const LATEST_SQL: &str = "SELECT ?fields FROM plan_limits";
const LATEST_ORDER: &str = "ORDER BY tenant_id, limit_id, version DESC, updated_at DESC LIMIT 1 BY tenant_id, limit_id";

/// Latest rows of every limit of every tenant (for the refresher, on its own
/// client).
pub async fn load_all(db: &clickhouse::Client) -> clickhouse::error::Result<Vec<LimitRow>> {
    db.query(&format!("{LATEST_SQL} {LATEST_ORDER}")).fetch_all().await
}

/// Latest rows of every limit of one tenant.
pub async fn load_tenant(db: &Db, tenant: Uuid) -> Result<Vec<LimitRow>, QueryError> {
    let sql = format!("{LATEST_SQL} WHERE tenant_id = {{t:UUID}} {LATEST_ORDER}");
    db.run("limits_list", |c| async move { c.query(&sql).param("t", tenant.to_string()).fetch_all().await }).await
}

/// Latest row of one limit of one tenant.
pub async fn load_one(db: &Db, tenant: Uuid, limit_id: Uuid) -> Result<Option<LimitRow>, QueryError> {
    let sql = format!("{LATEST_SQL} WHERE tenant_id = {{t:UUID}} AND limit_id = {{l:UUID}} {LATEST_ORDER}");
    let rows: Vec<LimitRow> =
        db.run("limits_read", |c| async move {
            c.query(&sql).param("t", tenant.to_string()).param("l", limit_id.to_string()).fetch_all().await
        })
        .await?;
    Ok(rows.into_iter().next())
}

/// A cheap fingerprint of the `plan_limits`, `plans` and `plan_assignments`
/// tables, read by every usage refresh (250 ms by default), so that a limit,
/// a plan or an assignment written through any API replica is enforced by
/// every replica within one refresh interval rather than at the next full
/// reconcile. Works with or without Valkey: the tables are the only source
/// of truth for limits.
///
/// Every write appends a row (a new `version`, a fresh `updated_at`), so,
/// per table, the row count, the newest `updated_at` and the sum of versions
/// change with every write. Background merges of a `ReplacingMergeTree` only
/// drop superseded rows: they may change the fingerprint without a write (a
/// harmless extra reload), never hide a write, since the write's own row
/// raises `updated_at` and the sum of versions of the key it supersedes.
/// Equal fingerprints mean the same set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct LimitsVersion {
    rows: u64,
    newest_ms: i64,
    versions: u64,
    plan_rows: u64,
    plan_newest_ms: i64,
    plan_versions: u64,
    assignment_rows: u64,
    assignment_newest_ms: i64,
    assignment_versions: u64,
}

const VERSION_SQL: &str = "SELECT l.1 AS rows, l.2 AS newest_ms, l.3 AS versions,
        p.1 AS plan_rows, p.2 AS plan_newest_ms, p.3 AS plan_versions,
        a.1 AS assignment_rows, a.2 AS assignment_newest_ms, a.3 AS assignment_versions
    FROM
        (SELECT (count(), toInt64(toUnixTimestamp64Milli(max(updated_at))), toUInt64(sum(version))) AS l FROM plan_limits) AS tl,
        (SELECT (count(), toInt64(toUnixTimestamp64Milli(max(updated_at))), toUInt64(sum(version))) AS p FROM plans) AS tp,
        (SELECT (count(), toInt64(toUnixTimestamp64Milli(max(updated_at))), toUInt64(sum(version))) AS a FROM plan_assignments) AS ta";

/// Reads the [`LimitsVersion`] (one aggregate over a small table), for the
/// refresher on its own client.
pub async fn version(db: &clickhouse::Client) -> clickhouse::error::Result<LimitsVersion> {
    db.query(VERSION_SQL).fetch_one().await
}

/// Appends one row.
pub async fn write(db: &Db, row: &LimitRow) -> Result<(), QueryError> {
    db.run("limits_write", |c| async move {
        let mut insert = c.insert::<LimitRow>("plan_limits").await?;
        insert.write(row).await?;
        insert.end().await
    })
    .await
}
