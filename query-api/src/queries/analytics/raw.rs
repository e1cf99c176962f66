//! Figures keyed by the end user (`user_token_id`, `user_email`). Calls,
//! errors and queries ([`totals`], [`series`]) and the calls per e-mail
//! ([`users_by_email`]) come from the per-user rollups of migration 0013
//! through [`rollup`] (the raw events only for the minutes at either end
//! of a range); the rest reads the raw `tool_calls` table (and, for who a
//! project's users are, `agent_executions` too): top lists, error types
//! and runtime, which need a server, tool or error type together with the
//! user, and the userbase counts. Every raw query is still bounded by
//! tenant and time range (the table's sort key prefix) and, for the
//! per-user endpoints, by project.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::bucket_index::index_sql;
use super::rollup::{self, Columns};
use super::scope::Scope;
use crate::buckets::Buckets;
use crate::db::Db;
use crate::db::QueryError;
use crate::queries::conditions::Order;
use crate::queries::conditions::TimeColumn;
use crate::queries::sql::Sql;

/// Calls, failed calls, queries (counted at their `navigator_query`
/// execution, as everywhere: [`queries_rows`]).
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
pub struct RawStats {
    pub n_calls: u64,
    pub n_errors: u64,
    pub n_queries: u64,
}

const STATS: &str = "toUInt64(sum(calls)) AS n_calls, toUInt64(sum(errors)) AS n_errors, toUInt64(0) AS n_queries";

/// The rows the scope's queries are counted from, as
/// [`rollup::choose_queries`] decides: under a user filter the user's
/// `navigator_query` executions (zero-call queries included, SEED_SPEC
/// §4.3; calls whose query sent no execution add nothing).
fn queries_rows(scope: &Scope, buckets: Option<&Buckets>) -> Result<rollup::QueriesRows, QueryError> {
    rollup::query_counts_from(scope, buckets).ok_or(QueryError::Unsupported("queries counted with the calls"))
}

/// Calls, errors and queries over the scope: the calls from the source
/// [`rollup::choose_ungrouped`] picks (under a user filter the per-user
/// rollup and the raw calls of the minutes at either end), the queries
/// from [`queries_rows`].
pub async fn totals(db: &Db, scope: &Scope) -> Result<RawStats, QueryError> {
    let (from, cond, params) = rollup::tool_calls_from(scope, &rollup::choose_ungrouped(scope, None, false), Columns::UsedBy(&[STATS]));
    let sql = Sql::new(format!("SELECT {STATS} FROM {from} WHERE {cond}")).bind_all(params);
    let stats = db.run("raw_totals", |c| async move { sql.query(&c).fetch_one::<RawStats>().await });
    let q = queries_rows(scope, None)?;
    let sql = Sql::new(format!("SELECT {} FROM {}", q.count, q.from)).bind_all(q.params);
    let queries = db.run("raw_queries", |c| async move { sql.query(&c).fetch_one::<u64>().await });
    let (mut stats, queries) = tokio::try_join!(stats, queries)?;
    stats.n_queries = queries;
    Ok(stats)
}

#[derive(Debug, Row, Deserialize)]
struct BucketRaw {
    bucket: u32,
    n_calls: u64,
    n_errors: u64,
    n_queries: u64,
}

/// [`totals`] per bucket, zero-filled.
pub async fn series(db: &Db, scope: &Scope, buckets: &Buckets) -> Result<Vec<RawStats>, QueryError> {
    let (from, cond, params) =
        rollup::tool_calls_from(scope, &rollup::choose_ungrouped(scope, Some(buckets), false), Columns::UsedBy(&[STATS]));
    let (bucket, bparams) = index_sql(buckets, "minute");
    let sql = Sql::new(format!("SELECT {bucket} AS bucket, {STATS} FROM {from} WHERE {cond} GROUP BY bucket ORDER BY bucket"))
        .bind_all(params)
        .bind_all(bparams);
    let rows = db.run("raw_series", |c| async move { sql.query(&c).fetch_all::<BucketRaw>().await });
    let q = queries_rows(scope, Some(buckets))?;
    let (minute_bucket, mparams) = index_sql(buckets, "minute");
    let sql = Sql::new(format!("SELECT {minute_bucket} AS bucket, {} AS n FROM {} GROUP BY bucket ORDER BY bucket", q.count, q.from))
        .bind_all(q.params)
        .bind_all(mparams);
    let queries = db.run("raw_queries_series", |c| async move { sql.query(&c).fetch_all::<(u32, u64)>().await });
    let (rows, queries) = tokio::try_join!(rows, queries)?;
    let mut out = vec![RawStats::default(); buckets.len()];
    for r in rows {
        if let Some(slot) = out.get_mut(r.bucket as usize) {
            *slot = RawStats { n_calls: r.n_calls, n_errors: r.n_errors, n_queries: r.n_queries };
        }
    }
    for (b, n) in queries {
        if let Some(slot) = out.get_mut(b as usize) {
            slot.n_queries = n;
        }
    }
    Ok(out)
}

/// A top-N entry: key, a label, a count.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Top {
    pub key: String,
    pub label: String,
    pub n: u64,
}

/// What a per-user top list groups by.
#[derive(Debug, Clone, Copy)]
pub enum TopBy {
    /// Navigator instance id, labelled with its latest name.
    NavigatorInstance,
    /// Tool name, labelled with its latest server name.
    Tool,
    /// Server name.
    Server,
}

pub async fn top(db: &Db, scope: &Scope, by: TopBy, limit: u32) -> Result<Vec<Top>, QueryError> {
    let (cond, params) = scope.tool_calls_where(TimeColumn::OccurredAt);
    let (key, label, present) = match by {
        TopBy::NavigatorInstance => (
            "toString(navigator_instance_id)",
            "toString(argMax(navigator_name, occurred_at))",
            "navigator_instance_id != toUUID('00000000-0000-0000-0000-000000000000')",
        ),
        TopBy::Tool => ("toString(tool_name)", "toString(argMax(server_name, occurred_at))", "tool_name != ''"),
        TopBy::Server => ("toString(server_name)", "toString(any(server_name))", "server_name != ''"),
    };
    let sql = Sql::new(format!(
        "SELECT {key} AS key, {label} AS label, toUInt64(count()) AS n FROM tool_calls
         WHERE {cond} AND {present} GROUP BY key ORDER BY n DESC, key LIMIT {{lim:UInt32}}"
    ))
    .bind_all(params)
    .bind("lim", limit);
    db.run("raw_top", |c| async move { sql.query(&c).fetch_all::<Top>().await }).await
}

/// Failed calls per error type and bucket.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct ErrorTypeBucket {
    pub kind: String,
    pub bucket: u32,
    pub n_errors: u64,
}

pub async fn error_type_series(db: &Db, scope: &Scope, buckets: &Buckets) -> Result<Vec<ErrorTypeBucket>, QueryError> {
    let (cond, params) = scope.tool_calls_where(TimeColumn::OccurredAt);
    let (bucket, bparams) = index_sql(buckets, "occurred_at");
    let sql = Sql::new(format!(
        "SELECT if(error_type = '', 'other', toString(error_type)) AS kind, {bucket} AS bucket, toUInt64(count()) AS n_errors
         FROM tool_calls WHERE {cond} AND NOT success GROUP BY kind, bucket ORDER BY kind, bucket"
    ))
    .bind_all(params)
    .bind_all(bparams);
    db.run("raw_error_types", |c| async move { sql.query(&c).fetch_all::<ErrorTypeBucket>().await }).await
}

/// Calls per user e-mail (`/analytics/users`), with the number of distinct
/// e-mails before the limit.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct UserCount {
    pub user_email: String,
    pub tool_count: u64,
    pub total: u64,
}

/// From [`rollup::user_emails_from`] (whole hours from `tool_calls_user_1h`),
/// or from the raw calls where it does not answer (a range without a whole
/// hour).
pub async fn users_by_email(db: &Db, scope: &Scope, order: Order, limit: u32) -> Result<Vec<UserCount>, QueryError> {
    let (from, params) = rollup::user_emails_from(scope).unwrap_or_else(|| {
        let (cond, params) = scope.tool_calls_where(TimeColumn::OccurredAt);
        (format!("(SELECT user_email, toUInt64(1) AS calls FROM tool_calls WHERE {cond})"), params)
    });
    let sql = Sql::new(format!(
        "SELECT email AS user_email, tool_count, toUInt64(count() OVER ()) AS total FROM (
            SELECT toString(user_email) AS email, toUInt64(sum(calls)) AS tool_count FROM {from}
            WHERE user_email != '' GROUP BY email)
         ORDER BY tool_count {dir}, user_email ASC LIMIT {{lim:UInt32}}",
        dir = order.sql()
    ))
    .bind_all(params)
    .bind("lim", limit);
    db.run("raw_users", |c| async move { sql.query(&c).fetch_all::<UserCount>().await }).await
}

/// The events of a project's users, both kinds (`user_token_id`,
/// `occurred_at`, `user_email`), filtered by `cond` (on those columns) in
/// both tables: a user whose queries made no tool call is a user too.
fn user_events(cond: &str) -> String {
    format!(
        "(SELECT user_token_id, occurred_at, user_email FROM tool_calls
           WHERE tenant_id = {{tenant:UUID}} AND project_id = {{project:UUID}} AND {cond}
          UNION ALL
          SELECT user_token_id, occurred_at, user_email FROM agent_executions
           WHERE tenant_id = {{tenant:UUID}} AND project_id = {{project:UUID}} AND {cond})"
    )
}

/// The latest non-empty e-mail seen for a user in a project, `None` if the
/// user has no event there (at any time within retention): from
/// `project_users_1mon` (migration 0013), the user's few rows.
pub async fn user_email(db: &Db, tenant: Uuid, project: Uuid, user: Uuid) -> Result<Option<String>, QueryError> {
    let sql = Sql::new(
        "SELECT toString(argMaxIfMerge(email)) AS mail, toUInt64(count()) AS n FROM project_users_1mon
         WHERE tenant_id = {tenant:UUID} AND project_id = {project:UUID} AND user_token_id = {user:UUID}",
    )
    .bind("tenant", tenant)
    .bind("project", project)
    .bind("user", user);
    let (email, n): (String, u64) = db.run("raw_user_email", |c| async move { sql.query(&c).fetch_one::<(String, u64)>().await }).await?;
    Ok((n > 0).then_some(email))
}

/// Distinct users of a project: ever (within retention), since `wau_start`
/// and since `mau_start`.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct UserbaseCounts {
    pub total: u64,
    pub wau: u64,
    pub mau: u64,
}

pub async fn userbase(
    db: &Db,
    tenant: Uuid,
    project: Uuid,
    wau_start: DateTime<Utc>,
    mau_start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<UserbaseCounts, QueryError> {
    let sql = Sql::new(format!(
        "SELECT toUInt64(uniqExact(user_token_id)) AS total,
                toUInt64(uniqExactIf(user_token_id, occurred_at >= fromUnixTimestamp64Milli({{wau:Int64}}, 'UTC'))) AS wau,
                toUInt64(uniqExactIf(user_token_id, occurred_at >= fromUnixTimestamp64Milli({{mau:Int64}}, 'UTC'))) AS mau
         FROM {}",
        user_events(
            "user_token_id != toUUID('00000000-0000-0000-0000-000000000000')
             AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')"
        )
    ))
    .bind("tenant", tenant)
    .bind("project", project)
    .bind("wau", wau_start.timestamp_millis())
    .bind("mau", mau_start.timestamp_millis())
    .bind("end", end.timestamp_millis());
    db.run("raw_userbase", |c| async move { sql.query(&c).fetch_one::<UserbaseCounts>().await }).await
}

/// Distinct users per bucket (zero-filled).
pub async fn active_users_series(
    db: &Db,
    tenant: Uuid,
    project: Uuid,
    buckets: &Buckets,
    end: DateTime<Utc>,
) -> Result<Vec<u64>, QueryError> {
    let (bucket, bparams) = index_sql(buckets, "occurred_at");
    let sql = Sql::new(format!(
        "SELECT {bucket} AS bucket, toUInt64(uniqExact(user_token_id)) AS n FROM {}
         GROUP BY bucket ORDER BY bucket",
        user_events(
            "user_token_id != toUUID('00000000-0000-0000-0000-000000000000')
             AND occurred_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')"
        )
    ))
    .bind("tenant", tenant)
    .bind("project", project)
    .bind("start", buckets.first_start().timestamp_millis())
    .bind("end", end.timestamp_millis())
    .bind_all(bparams);
    let rows = db.run("raw_active_users", |c| async move { sql.query(&c).fetch_all::<(u32, u64)>().await }).await?;
    let mut out = vec![0; buckets.len()];
    for (b, n) in rows {
        if let Some(slot) = out.get_mut(b as usize) {
            *slot = n;
        }
    }
    Ok(out)
}

/// Runtime of the calls that reported one: count, sum, p50/p95/p99 (ms).
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
pub struct RuntimeStats {
    pub n: u64,
    pub sum_ms: f64,
    pub q_ms: Vec<f64>,
}

impl RuntimeStats {
    pub fn avg_ms(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum_ms / self.n as f64
        }
    }
    pub fn pct_ms(&self, i: usize) -> f64 {
        match self.q_ms.get(i) {
            Some(v) if self.n > 0 && v.is_finite() => *v,
            _ => 0.0,
        }
    }
}

/// Runtime figures; the rollup keeps no runtime digest, so this reads raw.
pub async fn runtime(db: &Db, scope: &Scope) -> Result<RuntimeStats, QueryError> {
    let (cond, params) = scope.tool_calls_where(TimeColumn::OccurredAt);
    let sql = Sql::new(format!(
        "SELECT toUInt64(count(runtime_ms)) AS n, toFloat64(sum(ifNull(runtime_ms, 0))) AS sum_ms,
                arrayMap(x -> toFloat64(x), quantilesTDigest(0.5, 0.95, 0.99)(assumeNotNull(runtime_ms))) AS q_ms
         FROM tool_calls WHERE {cond} AND runtime_ms IS NOT NULL"
    ))
    .bind_all(params);
    db.run("raw_runtime", |c| async move { sql.query(&c).fetch_one::<RuntimeStats>().await }).await
}
