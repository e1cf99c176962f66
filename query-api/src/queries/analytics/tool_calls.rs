//! Tool-call figures from the tool-call rollups: totals, per-bucket
//! series, group-by lists and error-type series. [`rollup::choose`] (and
//! [`rollup::choose_ungrouped`] for totals and series) picks the hourly or
//! the minute rollup; the `_via` variants take the choice as an argument
//! (tests compare the paths).
//!
//! Counts are exact (sums of per-minute counts, exact distinct-query
//! sets); latency percentiles come from merged t-digest states, so they are
//! approximate (within a few percent), while averages are exact
//! (`sum / count`).

use clickhouse::Row;
use serde::Deserialize;

use super::bucket_index::index_sql;
use super::rollup::{self, Columns, Grouping, QueriesSource, Source, Tail};
use super::scope::Scope;
use crate::buckets::{Buckets, Key};
use crate::db::Db;
use crate::db::QueryError;
use crate::queries::sql::Sql;

/// Which aggregates a query needs, so that each endpoint asks only for
/// what it shows: merging t-digest states and exact distinct-query sets
/// costs far more than summing counts, and a graph of calls or errors
/// needs neither the other sums nor their bytes in every bucket. An
/// aggregate not asked for comes back as 0 / empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub latency_pct: bool,
    pub queries: bool,
    /// The latency sum besides `calls` and `errors` (which are always summed).
    pub latency_sum: bool,
    /// The runtime and suggestion sums.
    pub other_sums: bool,
}

impl Need {
    pub const ALL: Need = Need { latency_pct: true, queries: true, latency_sum: true, other_sums: true };
    /// Every sum, no t-digest, no queries.
    pub const COUNTS: Need = Need { latency_pct: false, queries: false, latency_sum: true, other_sums: true };
    /// Every sum and the queries.
    pub const QUERIES: Need = Need { latency_pct: false, queries: true, latency_sum: true, other_sums: true };
    /// The latency sum and percentiles (the latency graph and total): no
    /// runtime or suggestion column is read, each costing this ClickHouse
    /// about half a millisecond per table.
    pub const LATENCY: Need = Need { latency_pct: true, queries: false, latency_sum: true, other_sums: false };
    /// `calls` and `errors` only.
    pub const CALLS: Need = Need { latency_pct: false, queries: false, latency_sum: false, other_sums: false };
    /// `calls`, `errors` and the queries.
    pub const CALLS_AND_QUERIES: Need = Need { latency_pct: false, queries: true, latency_sum: false, other_sums: false };
}

/// The distinct-query count of the rollup rows' query sets, or 0.
fn queries_column(merge: bool) -> &'static str {
    if merge {
        "toUInt64(uniqExactIfMerge(queries))"
    } else {
        "toUInt64(0)"
    }
}

/// The aggregate columns read from `tool_calls_1m`. Aliases differ from the
/// column names on purpose: an alias equal to a column would be
/// substituted into other expressions by ClickHouse.
fn stats(need: Need) -> String {
    let lat_q = if need.latency_pct {
        "arrayMap(x -> toFloat64(x), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest))"
    } else {
        "CAST([], 'Array(Float64)')"
    };
    let queries = queries_column(need.queries);
    let latency_sum = if need.latency_sum { "toFloat64(sum(latency_sum_ms))" } else { "toFloat64(0)" };
    let [suggestions, runtime_sum, runtime_count] = if need.other_sums {
        ["toUInt64(sum(suggestions))", "toFloat64(sum(runtime_sum_ms))", "toUInt64(sum(runtime_count))"]
    } else {
        ["toUInt64(0)", "toFloat64(0)", "toUInt64(0)"]
    };
    format!(
        "toUInt64(sum(calls)) AS n_calls,
    toUInt64(sum(errors)) AS n_errors,
    {latency_sum} AS lat_sum_ms,
    {lat_q} AS lat_q,
    {queries} AS n_queries,
    {suggestions} AS n_suggestions,
    {runtime_sum} AS rt_sum_ms,
    {runtime_count} AS rt_count"
    )
}

/// Totals of a set of tool calls.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
pub struct CallStats {
    #[serde(rename = "n_calls")]
    pub calls: u64,
    #[serde(rename = "n_errors")]
    pub errors: u64,
    #[serde(rename = "lat_sum_ms")]
    pub latency_sum_ms: f64,
    /// p50, p95, p99 in ms (NaN / empty when there are no calls).
    #[serde(rename = "lat_q")]
    pub latency_q: Vec<f64>,
    #[serde(rename = "n_queries")]
    pub queries: u64,
    #[serde(rename = "n_suggestions")]
    pub suggestions: u64,
    #[serde(rename = "rt_sum_ms")]
    pub runtime_sum_ms: f64,
    #[serde(rename = "rt_count")]
    pub runtime_count: u64,
}

impl CallStats {
    /// Mean latency in ms (0 without calls).
    pub fn latency_avg_ms(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.latency_sum_ms / self.calls as f64
        }
    }
    /// Percentile `i` (0: p50, 1: p95, 2: p99) in ms, 0 without calls.
    pub fn latency_pct_ms(&self, i: usize) -> f64 {
        match self.latency_q.get(i) {
            Some(v) if self.calls > 0 && v.is_finite() => *v,
            _ => 0.0,
        }
    }
    /// Errors / calls in [0, 1], 0 without calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
    /// Calls / queries; 0 when there is no query, also when there are
    /// calls (calls whose query sent no `navigator_query` execution are
    /// not queries): the figure is a number in the contract's schema,
    /// never NaN or infinite.
    pub fn calls_per_query(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.calls as f64 / self.queries as f64
        }
    }
    pub fn runtime_avg_ms(&self) -> f64 {
        if self.runtime_count == 0 {
            0.0
        } else {
            self.runtime_sum_ms / self.runtime_count as f64
        }
    }
}

#[derive(Debug, Default, Row, Deserialize)]
struct BucketStats {
    bucket: u32,
    #[serde(rename = "n_calls")]
    calls: u64,
    #[serde(rename = "n_errors")]
    errors: u64,
    #[serde(rename = "lat_sum_ms")]
    latency_sum_ms: f64,
    #[serde(rename = "lat_q")]
    latency_q: Vec<f64>,
    #[serde(rename = "n_queries")]
    queries: u64,
    #[serde(rename = "n_suggestions")]
    suggestions: u64,
    #[serde(rename = "rt_sum_ms")]
    runtime_sum_ms: f64,
    #[serde(rename = "rt_count")]
    runtime_count: u64,
    /// See [`rollup::Tail`].
    tail_latest_ms: i64,
}

/// A bucket's calls, errors and queries alone, for a [`Need`] without
/// the other sums or the percentiles: 28 bytes a bucket instead of
/// [`BucketStats`]' 61 (a month of 5-minute buckets: 240 KB instead of
/// 530 KB to send and decode; about a millisecond here, the union of the
/// two rollups costs more).
#[derive(Debug, Row, Deserialize)]
struct BucketCounts {
    bucket: u32,
    #[serde(rename = "n_calls")]
    calls: u64,
    #[serde(rename = "n_errors")]
    errors: u64,
    #[serde(rename = "n_queries")]
    queries: u64,
    /// See [`rollup::Tail`].
    tail_latest_ms: i64,
}

impl Need {
    /// Whether [`BucketCounts`] carries everything asked for.
    fn counts_only(self) -> bool {
        !self.latency_pct && !self.latency_sum && !self.other_sums
    }
}

/// Whether [`series_via`] reads the source's rows as they are and sums
/// them per bucket itself instead of asking ClickHouse to `GROUP BY`: for
/// counts alone (sums, so adding rows of the same bucket, from parts not
/// yet merged too, gives the same numbers) from a tenant-level source
/// whose block is the buckets' step, so that there are a few rows per
/// bucket (one per call kind, and one per part not yet merged). A month of
/// 5-minute buckets from `tool_calls_tenant_5m`: ~10 ms of ClickHouse time
/// instead of ~14 ms (the `GROUP BY` over the union of the two rollups and
/// its `ORDER BY`). Coarser buckets than the blocks (days from hours), and
/// the sources keyed by dimensions (many rows per block), stay grouped in
/// ClickHouse, which then sends one row per bucket.
fn sums_rows_itself(need: Need, in_stats: bool, source: &Source, buckets: &Buckets) -> bool {
    need.counts_only() && !in_stats && matches!(buckets.key(), Key::Fixed { step, .. } if Some(step) == source.tenant_block_seconds())
}

/// The [`BucketCounts`] columns of one source row (ungrouped).
fn row_counts() -> &'static str {
    "toUInt64(calls) AS n_calls, toUInt64(errors) AS n_errors, toUInt64(0) AS n_queries"
}

/// One [`BucketStats`] per bucket present in `rows`, in bucket order, with
/// the counts of that bucket's rows added up (grouped rows have one row
/// per bucket already).
fn sum_per_bucket(mut rows: Vec<BucketCounts>) -> Vec<BucketStats> {
    let mut out: Vec<BucketStats> = Vec::new();
    rows.sort_unstable_by_key(|r| r.bucket);
    for r in rows {
        match out.last_mut() {
            Some(last) if last.bucket == r.bucket => {
                last.calls += r.calls;
                last.errors += r.errors;
                last.queries += r.queries;
            }
            _ => out.push(BucketStats { bucket: r.bucket, calls: r.calls, errors: r.errors, queries: r.queries, ..BucketStats::default() }),
        }
    }
    out
}

/// The [`BucketCounts`] columns.
fn counts(need: Need) -> String {
    let queries = queries_column(need.queries);
    format!("toUInt64(sum(calls)) AS n_calls, toUInt64(sum(errors)) AS n_errors, {queries} AS n_queries")
}

/// Totals over the scope.
pub async fn totals(db: &Db, scope: &Scope, need: Need) -> Result<CallStats, QueryError> {
    totals_via(db, scope, need, &rollup::choose_ungrouped(scope, None, need.queries)).await
}

/// Whether the call statistics themselves must carry the distinct-query
/// count: only when [`rollup::choose_queries`] picks the call sets (then
/// `source` is the finest source or the per-tool rollup: see
/// [`rollup::choose_ungrouped`]).
fn queries_in_call_stats(scope: &Scope, need: Need, source: &Source) -> bool {
    let in_stats = need.queries && rollup::choose_queries(scope) == QueriesSource::CallSets;
    debug_assert!(
        !in_stats || matches!(source, Source::ToolHourly(_)) || *source == rollup::finest(scope),
        "call sets are read from the minute rollup (or raw) or the per-tool rollup only"
    );
    in_stats
}

/// [`totals`] from the given source.
pub async fn totals_via(db: &Db, scope: &Scope, need: Need, source: &Source) -> Result<CallStats, QueryError> {
    let in_stats = queries_in_call_stats(scope, need, source);
    let columns = stats(Need { queries: in_stats, ..need });
    let (from, cond, params) = rollup::tool_calls_from(scope, source, Columns::UsedBy(&[&columns]));
    let sql = Sql::new(format!("SELECT {columns} FROM {from} WHERE {cond}")).bind_all(params);
    let stats = db.run("tool_calls_totals", |c| async move { sql.query(&c).fetch_one::<CallStats>().await });
    if !need.queries || in_stats {
        return stats.await;
    }
    let q = rollup::query_counts_from(scope, None).ok_or(QueryError::Unsupported("queries counted with the calls"))?;
    let sql = Sql::new(format!("SELECT {} FROM {}", q.count, q.from)).bind_all(q.params);
    let queries = db.run("tool_calls_queries", |c| async move { sql.query(&c).fetch_one::<u64>().await });
    let (mut stats, queries) = tokio::try_join!(stats, queries)?;
    stats.queries = queries;
    Ok(stats)
}

/// One [`CallStats`] per bucket, zero-filled. The scope's range should
/// start at the first bucket.
pub async fn series(db: &Db, scope: &Scope, buckets: &Buckets, need: Need) -> Result<Vec<CallStats>, QueryError> {
    series_via(db, scope, buckets, need, &rollup::choose_ungrouped(scope, Some(buckets), need.queries)).await
}

/// [`series`] from the given source (which must suit the buckets: see
/// [`rollup::choose_ungrouped`]). A block source with a watermark whose
/// range ends inside a block is first read with that block whole
/// ([`rollup::WholeTail`]); if the block holds events dated after the
/// range, it is read again as split.
pub async fn series_via(db: &Db, scope: &Scope, buckets: &Buckets, need: Need, source: &Source) -> Result<Vec<CallStats>, QueryError> {
    let in_stats = queries_in_call_stats(scope, need, source);
    let (bucket, bparams) = index_sql(buckets, "minute");
    let in_rows = Need { queries: in_stats, ..need };
    let sum_rows = sums_rows_itself(need, in_stats, source, buckets);
    let read = aggregates(in_rows, sum_rows);
    let used = [read.as_str()];
    let columns = Columns::UsedBy(&used);
    let rows = async {
        if let Some(w) = rollup::whole_tail(scope, source, buckets, columns) {
            let (rows, latest_ms) =
                bucket_rows(db, &w.from, "1", w.params.clone(), &bucket, &bparams, in_rows, Tail::of(&w), sum_rows).await?;
            if w.is_exact(latest_ms) {
                return Ok(rows);
            }
        }
        let (from, cond, params) = rollup::tool_calls_from(scope, source, columns);
        Ok(bucket_rows(db, &from, &cond, params, &bucket, &bparams, in_rows, Tail::Unguarded, sum_rows).await?.0)
    };
    let (rows, queries) = if !need.queries || in_stats {
        (rows.await?, Vec::new())
    } else {
        tokio::try_join!(rows, series_queries(db, scope, buckets, &bucket, &bparams))?
    };
    let mut out = vec![CallStats::default(); buckets.len()];
    for r in rows {
        if let Some(slot) = out.get_mut(r.bucket as usize) {
            *slot = CallStats {
                calls: r.calls,
                errors: r.errors,
                latency_sum_ms: r.latency_sum_ms,
                latency_q: r.latency_q,
                queries: r.queries,
                suggestions: r.suggestions,
                runtime_sum_ms: r.runtime_sum_ms,
                runtime_count: r.runtime_count,
            };
        }
    }
    for (b, n) in queries {
        if let Some(slot) = out.get_mut(b as usize) {
            slot.queries = n;
        }
    }
    Ok(out)
}

/// Queries per bucket, counted at their execution
/// ([`rollup::series_query_counts_from`]): first with the last block read
/// whole ([`rollup::query_counts_whole_tail`]), as the calls are.
async fn series_queries(
    db: &Db,
    scope: &Scope,
    buckets: &Buckets,
    bucket: &str,
    bparams: &[(&'static str, String)],
) -> Result<Vec<(u32, u64)>, QueryError> {
    let per_bucket = |count: &str, from: &str, tail: Tail| {
        let (tail_column, tparams) = tail.column(true);
        Sql::new(format!("SELECT {bucket} AS bucket, {count} AS n, {tail_column} FROM {from} GROUP BY bucket ORDER BY bucket"))
            .bind_all(bparams.to_vec())
            .bind_all(tparams)
    };
    if let Some(w) = rollup::query_counts_whole_tail(scope, buckets) {
        let sql = per_bucket("toUInt64(sum(queries))", &w.from, Tail::of(&w)).bind_all(w.params.clone());
        let rows = db.run("tool_calls_queries_whole_tail", |c| async move { sql.query(&c).fetch_all::<(u32, u64, i64)>().await }).await?;
        if w.is_exact(rows.iter().map(|r| r.2).max().unwrap_or(0)) {
            return Ok(rows.into_iter().map(|(b, n, _)| (b, n)).collect());
        }
    }
    let q = rollup::series_query_counts_from(scope, buckets).ok_or(QueryError::Unsupported("queries counted with the calls"))?;
    let sql = per_bucket(q.count, &q.from, Tail::Unguarded).bind_all(q.params);
    let rows = db.run("tool_calls_queries", |c| async move { sql.query(&c).fetch_all::<(u32, u64, i64)>().await }).await?;
    Ok(rows.into_iter().map(|(b, n, _)| (b, n)).collect())
}

/// The aggregate columns [`bucket_rows`] selects: a source row's counts
/// when it sums the rows itself, else [`counts`] or [`stats`] per bucket.
fn aggregates(need: Need, sum_rows: bool) -> String {
    if sum_rows {
        row_counts().to_owned()
    } else if need.counts_only() {
        counts(need)
    } else {
        stats(need)
    }
}

/// The per-bucket rows of a series from `from` (rows with `minute`),
/// summed by the API when `sum_rows` (see [`sums_rows_itself`]), and the
/// newest event of the guarded tail (0 when `tail` is unguarded).
#[allow(clippy::too_many_arguments)]
async fn bucket_rows(
    db: &Db,
    from: &str,
    cond: &str,
    params: Vec<(String, String)>,
    bucket: &str,
    bparams: &[(&'static str, String)],
    need: Need,
    tail: Tail,
    sum_rows: bool,
) -> Result<(Vec<BucketStats>, i64), QueryError> {
    let (tail_column, tparams) = tail.column(!sum_rows);
    let columns = aggregates(need, sum_rows);
    let text = if sum_rows {
        format!("SELECT {bucket} AS bucket, {columns}, {tail_column} FROM {from} WHERE {cond}")
    } else {
        format!("SELECT {bucket} AS bucket, {columns}, {tail_column} FROM {from} WHERE {cond} GROUP BY bucket ORDER BY bucket")
    };
    let sql = Sql::new(text).bind_all(params).bind_all(bparams.to_vec()).bind_all(tparams);
    let name = match tail {
        Tail::Unguarded => "tool_calls_series",
        Tail::Guarded { .. } => "tool_calls_series_whole_tail",
    };
    db.run(name, |c| async move {
        if need.counts_only() {
            let rows = sql.query(&c).fetch_all::<BucketCounts>().await?;
            let latest = rows.iter().map(|r| r.tail_latest_ms).max().unwrap_or(0);
            Ok((sum_per_bucket(rows), latest))
        } else {
            let rows = sql.query(&c).fetch_all::<BucketStats>().await?;
            let latest = rows.iter().map(|r| r.tail_latest_ms).max().unwrap_or(0);
            Ok((rows, latest))
        }
    })
    .await
}

/// What a list groups by. Each maps to a fixed column expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    ToolName,
    ServerName,
    ServerId,
    ProjectId,
    NavigatorId,
}

impl Dim {
    /// How the dimension weighs in the choice of rollup.
    pub fn grouping(self) -> Grouping {
        match self {
            Dim::ServerName | Dim::ServerId => Grouping::Server,
            Dim::ProjectId | Dim::NavigatorId => Grouping::Navigator,
            Dim::ToolName => Grouping::Tool,
        }
    }
    fn key_sql(self) -> &'static str {
        match self {
            Dim::ToolName => "toString(tool_name)",
            Dim::ServerName => "toString(server_name)",
            Dim::ServerId => "toString(server_id)",
            Dim::ProjectId => "toString(project_id)",
            Dim::NavigatorId => "toString(navigator_id)",
        }
    }
    /// Rows without the dimension (nil id, empty name) are left out.
    fn present_sql(self) -> &'static str {
        match self {
            Dim::ToolName => "tool_name != ''",
            Dim::ServerName => "server_name != ''",
            Dim::ServerId => "server_id != toUUID('00000000-0000-0000-0000-000000000000')",
            Dim::ProjectId => "project_id != toUUID('00000000-0000-0000-0000-000000000000')",
            Dim::NavigatorId => "navigator_id != toUUID('00000000-0000-0000-0000-000000000000')",
        }
    }
}

/// One group of a list.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct GroupCount {
    pub key: String,
    #[serde(rename = "n_calls")]
    pub calls: u64,
    #[serde(rename = "n_queries")]
    pub queries: u64,
}

/// Calls and (if `with_queries`, else 0) queries per value of `dim` (at
/// most 10 000 groups), ordered by key. Per project or navigator the
/// queries are counted at their execution (zero-call queries included, so
/// a group may have queries and no calls; a user's from the raw
/// executions); per tool or server, and under a server or tool filter,
/// they are the queries that made those calls ([`rollup::choose_queries`]).
/// [`rollup::choose_grouped`] picks the rollup.
pub async fn group_counts(db: &Db, scope: &Scope, dim: Dim, with_queries: bool) -> Result<Vec<GroupCount>, QueryError> {
    let per_query_rows = matches!(dim, Dim::ProjectId | Dim::NavigatorId) && rollup::choose_queries(scope) != QueriesSource::CallSets;
    let in_calls = with_queries && !per_query_rows;
    let source = rollup::choose_grouped(scope, dim.grouping(), in_calls);
    group_counts_via(db, scope, dim, with_queries, &source).await
}

/// [`group_counts`] from the given source of the calls (which must have
/// the dimension and, when the calls carry the queries, the query sets).
pub async fn group_counts_via(
    db: &Db,
    scope: &Scope,
    dim: Dim,
    with_queries: bool,
    source: &Source,
) -> Result<Vec<GroupCount>, QueryError> {
    let per_query_rows = matches!(dim, Dim::ProjectId | Dim::NavigatorId) && rollup::choose_queries(scope) != QueriesSource::CallSets;
    let in_calls = with_queries && !per_query_rows;
    let queries = queries_column(in_calls);
    let (key, present) = (dim.key_sql(), dim.present_sql());
    let select = format!("SELECT {key} AS key, toUInt64(sum(calls)) AS n_calls, {queries} AS n_queries");
    let (from, cond, params) = rollup::tool_calls_from(scope, source, Columns::UsedBy(&[&select, present]));
    let sql = Sql::new(format!("{select} FROM {from} WHERE {cond} AND {present} GROUP BY key ORDER BY key LIMIT 10000")).bind_all(params);
    let calls = db.run("tool_calls_groups", |c| async move { sql.query(&c).fetch_all::<GroupCount>().await });
    if !(with_queries && per_query_rows) {
        return calls.await;
    }
    let q = rollup::query_counts_from(scope, None).ok_or(QueryError::Unsupported("queries counted with the calls"))?;
    let sql = Sql::new(format!(
        "SELECT {key} AS key, toUInt64(0) AS n_calls, {} AS n_queries
         FROM {} WHERE {present} GROUP BY key HAVING n_queries > 0 ORDER BY key LIMIT 10000",
        q.count, q.from
    ))
    .bind_all(q.params);
    let queries = db.run("tool_calls_group_queries", |c| async move { sql.query(&c).fetch_all::<GroupCount>().await });
    let (calls, queries) = tokio::try_join!(calls, queries)?;
    let mut merged: std::collections::BTreeMap<String, GroupCount> = calls.into_iter().map(|g| (g.key.clone(), g)).collect();
    for q in queries {
        merged.entry(q.key.clone()).or_insert(GroupCount { key: q.key, calls: 0, queries: 0 }).queries = q.queries;
    }
    Ok(merged.into_values().take(10_000).collect())
}

/// Usage of each (navigator instance, tool id) pair.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Connection {
    #[serde(rename = "nav")]
    pub navigator_instance_id: String,
    #[serde(rename = "tool")]
    pub tool_id: String,
    pub usage_count: u64,
    pub last_used_ms: i64,
}

/// Navigator-instance × tool usage, most used first (at most 1000 pairs).
pub async fn connections(db: &Db, scope: &Scope) -> Result<Vec<Connection>, QueryError> {
    const SELECT: &str = "SELECT toString(navigator_instance_id) AS nav, toString(tool_id) AS tool,
        toUInt64(sum(calls)) AS usage_count, toInt64(toUnixTimestamp64Milli(max(last_used))) AS last_used_ms";
    const PRESENT: &str = "navigator_instance_id != toUUID('00000000-0000-0000-0000-000000000000')
        AND tool_id != toUUID('00000000-0000-0000-0000-000000000000')";
    let (from, cond, params) = rollup::tool_calls_from(scope, &rollup::choose(scope, None, false), Columns::UsedBy(&[SELECT, PRESENT]));
    let sql = Sql::new(format!(
        "{SELECT} FROM {from} WHERE {cond} AND {PRESENT} GROUP BY nav, tool ORDER BY usage_count DESC, nav, tool LIMIT 1000"
    ))
    .bind_all(params);
    db.run("tool_calls_connections", |c| async move { sql.query(&c).fetch_all::<Connection>().await }).await
}

/// Calls and suggestions per call kind.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct KindCount {
    #[serde(rename = "kind")]
    pub call_kind: String,
    #[serde(rename = "n_calls")]
    pub calls: u64,
    #[serde(rename = "n_suggestions")]
    pub suggestions: u64,
}

pub async fn kind_counts(db: &Db, scope: &Scope) -> Result<Vec<KindCount>, QueryError> {
    const SELECT: &str = "SELECT toString(call_kind) AS kind, toUInt64(sum(calls)) AS n_calls, toUInt64(sum(suggestions)) AS n_suggestions";
    let source = rollup::choose_navigator_keys(scope, None);
    let (from, cond, params) = rollup::tool_calls_from(scope, &source, Columns::UsedBy(&[SELECT]));
    let sql = Sql::new(format!("{SELECT} FROM {from} WHERE {cond} GROUP BY kind ORDER BY kind")).bind_all(params);
    db.run("tool_calls_kinds", |c| async move { sql.query(&c).fetch_all::<KindCount>().await }).await
}

/// Failed calls per error type and bucket (an empty type reads `other`).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct ErrorTypeBucket {
    #[serde(rename = "kind")]
    pub error_type: String,
    pub bucket: u32,
    #[serde(rename = "n_errors")]
    pub errors: u64,
}

pub async fn error_type_series(db: &Db, scope: &Scope, buckets: &Buckets) -> Result<Vec<ErrorTypeBucket>, QueryError> {
    let (bucket, bparams) = index_sql(buckets, "minute");
    let select =
        format!("SELECT if(error_type = '', 'other', toString(error_type)) AS kind, {bucket} AS bucket, toUInt64(sum(errors)) AS n_errors");
    let source = rollup::choose_grouped_series(scope, Some(buckets), Grouping::ErrorType, false);
    let (from, cond, params) = rollup::tool_calls_from(scope, &source, Columns::UsedBy(&[&select, "errors > 0"]));
    let sql = Sql::new(format!(
        "{select} FROM {from} WHERE {cond} AND errors > 0 GROUP BY kind, bucket HAVING n_errors > 0 ORDER BY kind, bucket"
    ))
    .bind_all(params)
    .bind_all(bparams);
    db.run("tool_calls_error_types", |c| async move { sql.query(&c).fetch_all::<ErrorTypeBucket>().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_row(bucket: u32, calls: u64, errors: u64) -> BucketCounts {
        BucketCounts { bucket, calls, errors, queries: 0, tail_latest_ms: 0 }
    }

    #[test]
    fn rows_of_a_bucket_are_added_up_in_bucket_order() {
        let rows = vec![counts_row(7, 1, 0), counts_row(2, 5, 1), counts_row(7, 3, 2), counts_row(2, 0, 0), counts_row(4, 9, 9)];
        let sums: Vec<(u32, u64, u64)> = sum_per_bucket(rows).iter().map(|s| (s.bucket, s.calls, s.errors)).collect();
        assert_eq!(sums, vec![(2, 5, 1), (4, 9, 9), (7, 4, 2)]);
        assert!(sum_per_bucket(Vec::new()).is_empty());
    }

    #[test]
    fn rows_are_summed_by_the_api_only_for_counts_from_tenant_blocks_of_one_bucket() {
        use crate::queries::analytics::rollup::Split;
        use crate::window::{Span, TimeRange, Unit};
        let end = chrono::DateTime::from_timestamp(1_790_000_000 / 3600 * 3600, 0).unwrap();
        let range = TimeRange { start: end - chrono::Duration::days(2), end };
        let plan = |n, unit| Buckets::plan(range, Span::new(n, unit), chrono_tz::Tz::UTC, 10_000).unwrap();
        let (five, hourly, daily) = (plan(5, Unit::Minute), plan(1, Unit::Hour), plan(1, Unit::Day));
        let split = Split { whole: range, head: None, tail: None };
        let (tenant_5m, tenant_1h) = (Source::TenantFiveMinutes(split), Source::TenantHourly(split));
        assert!(sums_rows_itself(Need::CALLS, false, &tenant_5m, &five));
        assert!(sums_rows_itself(Need::CALLS, false, &tenant_1h, &hourly));
        assert!(sums_rows_itself(Need::CALLS, false, &Source::TenantMinute, &plan(1, Unit::Minute)));
        // Coarser buckets than the rows, sources keyed by dimensions, other sums, digests, or query
        // sets in the rows: grouped by ClickHouse.
        assert!(!sums_rows_itself(Need::CALLS, false, &tenant_5m, &hourly));
        assert!(!sums_rows_itself(Need::CALLS, false, &Source::Minute, &plan(1, Unit::Minute)));
        assert!(!sums_rows_itself(Need::CALLS, false, &Source::Raw, &plan(1, Unit::Minute)));
        assert!(!sums_rows_itself(Need::CALLS, false, &Source::Hourly(split), &hourly));
        assert!(!sums_rows_itself(Need::CALLS, false, &Source::NavigatorHourly(split), &hourly));
        assert!(!sums_rows_itself(Need::CALLS, false, &tenant_1h, &daily));
        assert!(!sums_rows_itself(Need::ALL, false, &tenant_5m, &five));
        assert!(!sums_rows_itself(Need::LATENCY, false, &tenant_1h, &hourly));
        assert!(!sums_rows_itself(Need::CALLS_AND_QUERIES, true, &Source::TenantMinute, &plan(1, Unit::Minute)));
    }

    /// Every column an aggregate reads, by the `Need` flag that asks for it.
    const OTHER_SUMS: [&str; 4] = ["latency_sum_ms", "suggestions", "runtime_sum_ms", "runtime_count"];

    #[test]
    fn stats_read_only_what_is_needed() {
        let calls = stats(Need::CALLS);
        assert!(calls.contains("sum(calls)") && calls.contains("sum(errors)"), "{calls}");
        for column in OTHER_SUMS.iter().chain(&["latency_digest", "queries"]) {
            assert!(!calls.contains(&format!("({column})")), "{column} read for calls only: {calls}");
        }
        let with_queries = stats(Need::CALLS_AND_QUERIES);
        assert!(with_queries.contains("uniqExactIfMerge(queries)"), "{with_queries}");
        assert!(OTHER_SUMS.iter().all(|c| !with_queries.contains(&format!("({c})"))), "{with_queries}");
        let all = stats(Need::ALL);
        for column in OTHER_SUMS.iter().chain(&["latency_digest", "queries"]) {
            assert!(all.contains(&format!("({column})")), "{column} missing: {all}");
        }
        // The narrow row of a count-only series: calls, errors, queries.
        assert!(Need::CALLS.counts_only() && Need::CALLS_AND_QUERIES.counts_only());
        assert!(![Need::ALL, Need::COUNTS, Need::QUERIES, Need::LATENCY].iter().any(|n| n.counts_only()));
        assert_eq!(counts(Need::CALLS), "toUInt64(sum(calls)) AS n_calls, toUInt64(sum(errors)) AS n_errors, toUInt64(0) AS n_queries");
        assert!(counts(Need::CALLS_AND_QUERIES).ends_with("toUInt64(uniqExactIfMerge(queries)) AS n_queries"));
        // Each constant keeps the eight columns `CallStats` decodes, in order.
        for need in [Need::ALL, Need::COUNTS, Need::QUERIES, Need::LATENCY, Need::CALLS, Need::CALLS_AND_QUERIES] {
            let sql = stats(need);
            let aliases: Vec<&str> = sql.split(" AS ").skip(1).map(|s| s.split(',').next().unwrap().trim()).collect();
            assert_eq!(
                aliases,
                ["n_calls", "n_errors", "lat_sum_ms", "lat_q", "n_queries", "n_suggestions", "rt_sum_ms", "rt_count"],
                "{need:?}"
            );
        }
    }
}
