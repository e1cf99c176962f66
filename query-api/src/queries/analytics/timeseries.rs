//! The Grafana endpoint's queries: one metric, per bucket, optionally
//! grouped by a dimension with the top N groups kept and the rest summed
//! into `other`. Metrics and dimensions map to fixed SQL fragments; the
//! top-N keys are bound as an array parameter. A grouped count is read in
//! one statement when its groups' points are few enough, and ranked here
//! ([`grouped`]): each statement costs the engine a fixed ~10–20 ms of
//! planning, as much as reading a small rollup.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::Deserialize;

use super::bucket_index::index_sql;
use super::rollup::{self, Columns, ExecutionKeys, Grouping, QueriesSource, Source, Tail};
use super::scope::Scope;
use crate::buckets::Buckets;
use crate::db::Db;
use crate::db::QueryError;

use crate::queries::sql::Sql;

/// Rollup a metric is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    ToolCalls,
    Executions,
}

/// A metric of the Grafana endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    ToolCalls,
    Queries,
    Errors,
    ErrorRate,
    LatencyAvg,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    Tokens,
    InputTokens,
    OutputTokens,
    CostUsd,
    /// Executions whose cost is not known (migration 0010).
    UnpricedExecutions,
    Messages,
}

pub const METRIC_NAMES: &str =
    "tool_calls, queries, errors, error_rate, latency_avg, latency_p50, latency_p95, latency_p99, tokens, input_tokens, \
     output_tokens, cost_usd, unpriced_executions, messages";

impl Metric {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tool_calls" => Self::ToolCalls,
            "queries" => Self::Queries,
            "errors" => Self::Errors,
            "error_rate" => Self::ErrorRate,
            "latency_avg" => Self::LatencyAvg,
            "latency_p50" => Self::LatencyP50,
            "latency_p95" => Self::LatencyP95,
            "latency_p99" => Self::LatencyP99,
            "tokens" => Self::Tokens,
            "input_tokens" => Self::InputTokens,
            "output_tokens" => Self::OutputTokens,
            "cost_usd" => Self::CostUsd,
            "unpriced_executions" => Self::UnpricedExecutions,
            "messages" => Self::Messages,
            _ => return None,
        })
    }

    pub fn table(self) -> Table {
        match self {
            Self::Tokens | Self::InputTokens | Self::OutputTokens | Self::CostUsd | Self::UnpricedExecutions | Self::Messages => {
                Table::Executions
            }
            _ => Table::ToolCalls,
        }
    }

    /// Counts are zero in an empty bucket; ratios and latencies are null
    /// (and a cost whose every execution is unpriced, see [`Metric::value_sql`]).
    pub fn zero_filled(self) -> bool {
        !matches!(self, Self::ErrorRate | Self::LatencyAvg | Self::LatencyP50 | Self::LatencyP95 | Self::LatencyP99)
    }

    fn value_sql(self) -> &'static str {
        match self {
            Self::ToolCalls => "toFloat64(sum(calls))",
            Self::Queries => "toFloat64(uniqExactIfMerge(queries))",
            Self::Errors => "toFloat64(sum(errors))",
            Self::ErrorRate => "if(sum(calls) = 0, nan, sum(errors) / sum(calls))",
            Self::LatencyAvg => "if(sum(calls) = 0, nan, sum(latency_sum_ms) / sum(calls))",
            Self::LatencyP50 => "toFloat64(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest)[1])",
            Self::LatencyP95 => "toFloat64(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest)[2])",
            Self::LatencyP99 => "toFloat64(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest)[3])",
            Self::Tokens => "toFloat64(sum(total_tokens))",
            Self::InputTokens => "toFloat64(sum(input_tokens))",
            Self::OutputTokens => "toFloat64(sum(output_tokens))",
            // The exact sum of the known costs; unknown (null) when every
            // execution of the bucket has an unknown cost.
            Self::CostUsd => {
                "if(sum(unpriced_executions) > 0 AND sum(unpriced_executions) = sum(executions), nan, toFloat64(sum(cost_usd)))"
            }
            Self::UnpricedExecutions => "toFloat64(sum(unpriced_executions))",
            Self::Messages => "toFloat64(sum(messages))",
        }
    }

    /// Whether the metric is a count (a sum of whole numbers) ranked by
    /// itself: a group's rank over the range is then the sum of its points
    /// ([`grouped`]).
    fn is_count(self) -> bool {
        matches!(
            self,
            Self::ToolCalls
                | Self::Errors
                | Self::Tokens
                | Self::InputTokens
                | Self::OutputTokens
                | Self::UnpricedExecutions
                | Self::Messages
        )
    }

    /// Whether the metric reads the latency columns.
    fn is_latency(self) -> bool {
        matches!(self, Self::LatencyAvg | Self::LatencyP50 | Self::LatencyP95 | Self::LatencyP99)
    }

    /// What ranks groups for top N: the value for additive metrics, the
    /// volume for ratios and latencies.
    fn rank_sql(self) -> &'static str {
        match self {
            Self::ErrorRate | Self::LatencyAvg | Self::LatencyP50 | Self::LatencyP95 | Self::LatencyP99 => "toFloat64(sum(calls))",
            Self::CostUsd => "toFloat64(sum(cost_usd))",
            m => m.value_sql(),
        }
    }
}

/// A group-by dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tool,
    Server,
    Project,
    Navigator,
    User,
    Model,
    ErrorType,
    Organization,
}

pub const GROUP_BY_NAMES: &str = "tool, server, project, navigator, user, model, error_type, organization";

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tool" => Self::Tool,
            "server" => Self::Server,
            "project" => Self::Project,
            "navigator" => Self::Navigator,
            "user" => Self::User,
            "model" => Self::Model,
            "error_type" => Self::ErrorType,
            "organization" => Self::Organization,
            _ => return None,
        })
    }

    /// How the group weighs in the choice of tool-call rollup
    /// ([`rollup::choose_grouped_series`]): `None` for the key only the
    /// dimension-keyed rollups have (organization) and those of executions.
    fn grouping(self) -> Option<Grouping> {
        match self {
            Self::Project | Self::Navigator => Some(Grouping::Navigator),
            Self::Tool => Some(Grouping::Tool),
            Self::Server => Some(Grouping::Server),
            Self::ErrorType => Some(Grouping::ErrorType),
            Self::User | Self::Model | Self::Organization => None,
        }
    }

    /// Key expression on `table`, `None` when the rollup lacks it.
    pub fn key_sql(self, table: Table) -> Option<&'static str> {
        match (self, table) {
            (Self::Tool, Table::ToolCalls) => Some("toString(tool_name)"),
            (Self::Server, Table::ToolCalls) => Some("toString(server_name)"),
            (Self::Project, _) => Some("toString(project_id)"),
            (Self::Navigator, _) => Some("toString(navigator_instance_id)"),
            (Self::User, Table::Executions) => Some("toString(user_id)"),
            (Self::Model, Table::Executions) => Some("toString(model)"),
            (Self::ErrorType, _) => Some("toString(error_type)"),
            (Self::Organization, _) => Some("toString(organization_id)"),
            _ => None,
        }
    }
}

/// The series name of the groups outside the top N.
pub const OTHER: &str = "other";

/// Whether `queries` is counted at the queries' `navigator_query`
/// executions (docs/api.md, "How queries are counted"): when
/// [`rollup::choose_queries`] says so (no server or tool filter) and the
/// groups, if any, are projects or navigator instances, which executions
/// have. Otherwise `queries` counts the queries that made matching calls,
/// from the minute rollup's sets (a query without calls has no tool,
/// server or error type).
fn queries_at_executions(scope: &Scope, metric: Metric, group: Option<GroupBy>) -> bool {
    metric == Metric::Queries
        && rollup::choose_queries(scope) != QueriesSource::CallSets
        && matches!(group, None | Some(GroupBy::Project) | Some(GroupBy::Navigator))
}

/// The value expression of `metric` on the source [`from_sql`] picks.
fn value_sql(scope: &Scope, metric: Metric, group: Option<GroupBy>) -> &'static str {
    if queries_at_executions(scope, metric, group) {
        "toFloat64(sum(queries))"
    } else {
        metric.value_sql()
    }
}

/// A `FROM` source, its `WHERE` condition and the parameters they bind.
type FromSql = (String, String, Vec<(String, String)>);

/// `(FROM source, WHERE condition, params)` of a metric: `queries` from
/// the execution counts where they answer ([`queries_at_executions`]:
/// `query_counts_1h`/`_1m`, or a user's raw `navigator_query` executions),
/// the other tool-call metrics from [`tool_calls_source`], execution
/// metrics from [`rollup::executions_from`].
fn from_sql(
    scope: &Scope,
    metric: Metric,
    buckets: Option<&Buckets>,
    group: Option<GroupBy>,
    columns: Columns,
) -> Result<FromSql, QueryError> {
    if let Some(source) = tool_calls_source(scope, metric, buckets, group) {
        return Ok(rollup::tool_calls_from(scope, &source, columns));
    }
    Ok(match metric.table() {
        Table::ToolCalls => {
            let q = rollup::query_counts_from(scope, buckets).ok_or(QueryError::Unsupported("queries counted with the calls"))?;
            (q.from, "1".into(), q.params)
        }
        Table::Executions => rollup::executions_from(scope, buckets, execution_keys(group), columns),
    })
}

/// The [`rollup::WholeTail`] of a series (or, without `buckets`, of a
/// ranking), when its source is a block rollup with a watermark and its
/// range ends inside a block.
fn whole_tail(
    scope: &Scope,
    metric: Metric,
    buckets: Option<&Buckets>,
    group: Option<GroupBy>,
    columns: Columns,
) -> Option<rollup::WholeTail> {
    match metric.table() {
        Table::ToolCalls => {
            let source = tool_calls_source(scope, metric, buckets, group)?;
            match buckets {
                Some(b) => rollup::whole_tail(scope, &source, b, columns),
                None => rollup::whole_tail_unbucketed(scope, &source, columns),
            }
        }
        Table::Executions => rollup::executions_whole_tail(scope, buckets, execution_keys(group), columns),
    }
}

/// The tool-call rollup of a metric, `None` for the queries counted at
/// their executions and for execution metrics: distinct queries from the
/// minute rollup's sets (groups may be tools or servers); the other
/// metrics from the rollup shaped for the question, ungrouped as the graphs
/// ([`rollup::choose_ungrouped`]: tenant-level, per-navigator, per-tool or
/// per-user rollups), grouped by [`rollup::choose_grouped_series`], by
/// organization from the dimension-keyed rollups ([`rollup::choose`]).
fn tool_calls_source(scope: &Scope, metric: Metric, buckets: Option<&Buckets>, group: Option<GroupBy>) -> Option<Source> {
    if metric.table() != Table::ToolCalls || queries_at_executions(scope, metric, group) {
        return None;
    }
    Some(match group {
        _ if metric == Metric::Queries => rollup::finest(scope),
        None => rollup::choose_ungrouped(scope, buckets, false),
        Some(g) => match g.grouping() {
            Some(grouping) => rollup::choose_grouped_series(scope, buckets, grouping, metric.is_latency()),
            None => rollup::choose(scope, buckets, false),
        },
    })
}

/// The keys an execution metric grouped by `group` reads.
fn execution_keys(group: Option<GroupBy>) -> ExecutionKeys {
    match group {
        None | Some(GroupBy::Project) | Some(GroupBy::Navigator) => ExecutionKeys::Navigator,
        Some(GroupBy::User) => ExecutionKeys::User,
        Some(GroupBy::Tool | GroupBy::Server | GroupBy::Model | GroupBy::ErrorType | GroupBy::Organization) => ExecutionKeys::Other,
    }
}

/// One value of one series in one bucket.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct Point {
    pub series: String,
    pub bucket: u32,
    pub value: f64,
}

/// The top `top` group keys by the metric's rank over the whole range, and
/// whether more groups exist. A ranking whose range ends inside a block is
/// first read with that block whole, as [`points`] does; the
/// guard is the newest event of that block over every group, not only the
/// ones kept (a window over the grouped rows, taken before the `LIMIT`).
pub async fn top_groups(db: &Db, scope: &Scope, metric: Metric, group: GroupBy, top: u32) -> Result<(Vec<String>, bool), QueryError> {
    let table = metric.table();
    let key = group.key_sql(table).ok_or_else(|| QueryError::Unsupported("group not available"))?;
    let rank = if metric == Metric::Queries { value_sql(scope, metric, Some(group)) } else { metric.rank_sql() };
    let columns = Columns::UsedBy(&[key, rank]);
    let query = |from: &str, cond: &str, params: Vec<(String, String)>, tail: Tail| {
        let (tail_column, tail_params) = tail.column(true);
        Sql::new(format!(
            "SELECT {key} AS g, {tail_column}, max(tail_latest_ms) OVER () AS all_tail_latest_ms FROM {from} WHERE {cond}
             GROUP BY g ORDER BY {rank} DESC, g ASC LIMIT {{top_plus_one:UInt32}}"
        ))
        .bind_all(params)
        .bind_all(tail_params)
        .bind("top_plus_one", top + 1)
    };
    let ranked = |rows: Vec<(String, i64, i64)>| {
        let mut keys: Vec<String> = rows.into_iter().map(|r| r.0).collect();
        let more = keys.len() > top as usize;
        keys.truncate(top as usize);
        (keys, more)
    };
    if let Some(w) = whole_tail(scope, metric, None, Some(group), columns) {
        let sql = query(&w.from, "1", w.params.clone(), Tail::of(&w));
        let rows = db.run("timeseries_top_whole_tail", |c| async move { sql.query(&c).fetch_all::<(String, i64, i64)>().await }).await?;
        if w.is_exact(rows.first().map_or(0, |r| r.2)) {
            return Ok(ranked(rows));
        }
    }
    let (from, cond, params) = from_sql(scope, metric, None, Some(group), columns)?;
    let sql = query(&from, &cond, params, Tail::Unguarded);
    let rows = db.run("timeseries_top", |c| async move { sql.query(&c).fetch_all::<(String, i64, i64)>().await }).await?;
    Ok(ranked(rows))
}

/// Values per (series, bucket). Without a group the series is named after
/// the metric (`name`); with one, groups outside `keys` are summed into
/// `other`. A series whose range ends inside a block of a rollup with a
/// watermark is first read with that block whole ([`rollup::WholeTail`],
/// as the graphs are); if the block holds events dated after the range, it
/// is read again as split.
pub async fn points(
    db: &Db,
    scope: &Scope,
    metric: Metric,
    buckets: &Buckets,
    group: Option<(GroupBy, &[String])>,
    name: &str,
) -> Result<Vec<Point>, QueryError> {
    let series = match group {
        None => SeriesSql { expr: "{series_name:String}".to_owned(), binds: Sql::default().bind("series_name", name) },
        Some((g, keys)) => {
            let key = g.key_sql(metric.table()).ok_or(QueryError::Unsupported("group not available"))?;
            SeriesSql {
                expr: format!("if(has({{top_keys:Array(String)}}, {key}), {key}, {{other:String}})"),
                binds: Sql::default().bind_list("top_keys", keys.to_vec()).bind("other", OTHER),
            }
        }
    };
    let read =
        PointsRead { group: group.map(|(g, _)| g), series, max_rows: None, labels: ["timeseries_points_whole_tail", "timeseries_points"] };
    read_points(db, scope, metric, buckets, read).await
}

/// Rows a grouped series of a count reads in one statement at most
/// ([`grouped`]): every group's points, a few hundred kilobytes. Above
/// it (many groups over many buckets) the ranking and the top groups'
/// points are read apart.
pub const ONE_READ_MAX_ROWS: u32 = 10_000;

/// The series of `metric` grouped by `group`: the top `top` groups by the
/// metric's rank over the range (ties by key, ascending), and the rest
/// summed into [`OTHER`] when more groups exist. Returns the series names
/// (the kept keys, then `other` if there is more) and the points.
///
/// A count ([`Metric::is_count`]) whose groups have at most `max_rows`
/// points is read in one statement, every group's points, and ranked here
/// by their sum: the same order as [`top_groups`] (its rank is the
/// count), exact, since the points are whole numbers. That is one
/// statement instead of two, which on a small rollup halves the answer:
/// the engine's fixed cost per statement is most of it. Otherwise the
/// ranking ([`top_groups`]) and then the top groups' points ([`points`]);
/// a count whose groups have more points pays for the bounded read too
/// (its rows are cut at `max_rows + 1` and dropped), since the number of
/// groups is not known before reading them.
pub async fn grouped(
    db: &Db,
    scope: &Scope,
    metric: Metric,
    buckets: &Buckets,
    group: GroupBy,
    top: u32,
    max_rows: u32,
) -> Result<(Vec<String>, Vec<Point>), QueryError> {
    if metric.is_count() {
        let key = group.key_sql(metric.table()).ok_or(QueryError::Unsupported("group not available"))?;
        let series = SeriesSql { expr: key.to_owned(), binds: Sql::default() };
        let read = PointsRead {
            group: Some(group),
            series,
            max_rows: Some(max_rows),
            labels: ["timeseries_grouped_whole_tail", "timeseries_grouped"],
        };
        let every_group = read_points(db, scope, metric, buckets, read).await?;
        if every_group.len() <= max_rows as usize {
            return Ok(keep_top(every_group, top));
        }
    }
    let (mut keys, more) = top_groups(db, scope, metric, group, top).await?;
    let points = points(db, scope, metric, buckets, Some((group, &keys)), "").await?;
    if more {
        keys.push(OTHER.to_owned());
    }
    Ok((keys, points))
}

/// The top `top` groups of `every_group`'s points by their sum (ties by
/// key), the rest summed per bucket into [`OTHER`]; as SQL would group
/// them, a kept group named `other` shares its series with the rest.
fn keep_top(every_group: Vec<Point>, top: u32) -> (Vec<String>, Vec<Point>) {
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for p in &every_group {
        *totals.entry(p.series.as_str()).or_default() += p.value;
    }
    let mut ranked: Vec<(&str, f64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let more = ranked.len() > top as usize;
    let mut names: Vec<String> = ranked.iter().take(top as usize).map(|(k, _)| (*k).to_owned()).collect();
    let mut values: BTreeMap<(String, u32), f64> = BTreeMap::new();
    for p in &every_group {
        let series = if names.contains(&p.series) { p.series.clone() } else { OTHER.to_owned() };
        *values.entry((series, p.bucket)).or_default() += p.value;
    }
    if more {
        names.push(OTHER.to_owned());
    }
    let points = values.into_iter().map(|((series, bucket), value)| Point { series, bucket, value }).collect();
    (names, points)
}

/// A series expression of [`read_points`] and the parameters it binds.
struct SeriesSql {
    expr: String,
    binds: Sql,
}

/// What [`read_points`] reads: the group (for the choice of rollup), the
/// series expression, at most `max_rows + 1` rows in no order if bounded
/// (ordered by series and bucket otherwise), and the labels of its
/// whole-tail and split readings in the query metrics.
struct PointsRead {
    group: Option<GroupBy>,
    series: SeriesSql,
    max_rows: Option<u32>,
    labels: [&'static str; 2],
}

/// Values per (series, bucket) as `read` says, read whole-tail first where
/// that is exact (see [`points`]).
async fn read_points(db: &Db, scope: &Scope, metric: Metric, buckets: &Buckets, read: PointsRead) -> Result<Vec<Point>, QueryError> {
    let (bucket, bparams) = index_sql(buckets, "minute");
    let series = &read.series.expr;
    let mut base = read.series.binds.clone().bind_all(bparams);
    // A bounded read is ranked and summed by its caller, which needs no
    // order (sorting costs the engine a step of its plan).
    let order_or_limit = match read.max_rows {
        Some(n) => {
            base = base.bind("max_rows_plus_one", n + 1);
            " LIMIT {max_rows_plus_one:UInt32}"
        }
        None => " ORDER BY series, bucket",
    };
    let value = value_sql(scope, metric, read.group);
    let columns = Columns::UsedBy(&[series, value]);
    let query = |from: &str, cond: &str, params: Vec<(String, String)>, tail: Tail| {
        let (tail_column, tail_params) = tail.column(true);
        let mut sql = base.clone().bind_all(params).bind_all(tail_params);
        sql.text = format!(
            "SELECT {series} AS series, {bucket} AS bucket, {value} AS value, {tail_column} FROM {from} WHERE {cond}
             GROUP BY series, bucket{order_or_limit}"
        );
        sql
    };
    let [whole_label, split_label] = read.labels;
    if let Some(w) = whole_tail(scope, metric, Some(buckets), read.group, columns) {
        let sql = query(&w.from, "1", w.params.clone(), Tail::of(&w));
        let rows = db.run(whole_label, |c| async move { sql.query(&c).fetch_all::<PointRow>().await }).await?;
        if w.is_exact(rows.iter().map(|r| r.tail_latest_ms).max().unwrap_or(0)) {
            return Ok(rows.into_iter().map(PointRow::point).collect());
        }
    }
    let (from, cond, params) = from_sql(scope, metric, Some(buckets), read.group, columns)?;
    let sql = query(&from, &cond, params, Tail::Unguarded);
    let rows = db.run(split_label, |c| async move { sql.query(&c).fetch_all::<PointRow>().await }).await?;
    Ok(rows.into_iter().map(PointRow::point).collect())
}

/// A [`Point`] and the newest event of a whole-tail read's last block in
/// it (0 when not such a read).
#[derive(Debug, Row, Deserialize)]
struct PointRow {
    series: String,
    bucket: u32,
    value: f64,
    tail_latest_ms: i64,
}

impl PointRow {
    fn point(self) -> Point {
        Point { series: self.series, bucket: self.bucket, value: self.value }
    }
}
