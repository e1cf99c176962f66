//! The one place that decides which rollup answers a tool-call request, and
//! the `FROM` sources that follow from the decision.
//!
//! `tool_calls_1h` holds whole UTC hours, so it answers exactly only where a
//! whole hour falls inside one bucket. For a range `[start, end)` the full
//! hours `[ceil_hour(start), floor_hour(end))` are read from the hourly
//! rollup when no bucket boundary falls strictly inside one of them, and the
//! partial hours at either end (the trailing minutes up to "now", a range
//! starting at :17) from the minute rollup. That holds for hour, day, week
//! and month buckets in UTC and in whole-hour-offset zones
//! (Europe/Berlin, America/New_York, across DST changes too), and for any
//! totals; it does not for Asia/Kolkata (+05:30) or Asia/Kathmandu (+05:45)
//! hourly or daily buckets or for 5-minute buckets. Those still have every
//! boundary on a multiple of 5 minutes in UTC (every zone's offset is a
//! whole number of 5 minutes), so over a whole tenant the whole 5-minute
//! blocks come from `tool_calls_tenant_5m` and `query_counts_tenant_5m`
//! (migration 0012) and the minutes at either end from the minute rollups
//! ([`split_five_minutes`], the same cut at 5 minutes); filtered requests
//! read the minute rollup throughout.
//!
//! Queries are counted by one rule everywhere (docs/api.md, "How queries
//! are counted"): a query counts once, at its own time, from its
//! `navigator_query` execution (SEED_SPEC §4.5: `total_queries` from
//! executions). Unfiltered, or filtered by project or navigator instance:
//! the sums of `query_counts_1h` (whole hours) and `query_counts_1m` (the
//! minutes at either end, or every minute for sub-hour buckets), migration
//! 0011. Filtered by user (`user_email`, `user_token_id`, which only the
//! user rollups of migration 0013 keep): the sums of
//! `agent_executions_user_1h` for the whole hours and the user's raw
//! `navigator_query` executions for the minutes at either end (the whole
//! range when the buckets cut hours), counted the same way. A query with zero tool
//! calls counts like any other, a query counts once (in its execution's
//! bucket, even when its calls run into the next), and counting is a sum.
//! Tool calls whose query sent no execution are tool calls, not queries:
//! they add nothing to these counts or to the calls-per-query
//! denominator. Two figures are about calls rather than queries and count
//! the queries that made matching calls, from the minute rollup's exact
//! sets (the raw calls under a user filter): a request filtered by server
//! or tool (a query without calls has no server or tool), and a request
//! for the proxy kinds (the queries that made proxy calls).
//! [`choose_queries`] decides. `queries_1m` (migration 0007, a query from
//! its execution and/or its calls) is no longer read by the API; the
//! query logs read `query_events`, which lists call-only queries too.
//!
//! A request over a whole tenant (no project, navigator, server, tool or
//! user filter) that does not group by a dimension (totals and series:
//! [`choose_ungrouped`]) reads `tool_calls_tenant_kind_1h` (0017) and
//! `tool_calls_tenant_1m` instead, a few rows per tenant-hour and
//! tenant-minute whatever the traffic's variety; with buckets that cut
//! hours (5-minute buckets over a month, +05:45 days) it reads
//! `tool_calls_tenant_5m` for the whole 5-minute blocks and
//! `tool_calls_tenant_1m` for the rest (a month of 5-minute buckets: 8,640
//! blocks x call kinds instead of 43,200 minutes x call kinds), and its
//! distinct queries are the sums of `query_counts_tenant_5m`. Filtered by
//! project or navigator instance only, it reads
//! `tool_calls_navigator_1h` for the whole hours. Lists grouped by server
//! read `tool_calls_server_1h` (counts and exact per-server query sets),
//! lists grouped by project or navigator `tool_calls_navigator_1h`, lists
//! grouped by tool `tool_calls_tool_1h` ([`choose_grouped`]); totals and
//! series filtered by tool only read `tool_calls_tool_1h` too, with the
//! exact sets of the queries that used the tool. Series and rankings
//! grouped by error type (the error-types graph, a Grafana panel of errors
//! per type) read `tool_calls_error_type_1h` (0018) under the filters it
//! keeps, project and navigator instance. The minutes at either end come
//! from the minute rollup.
//!
//! Filtered by user (at most with project and navigator instance), totals,
//! series and lists grouped by project or navigator read
//! `tool_calls_user_1h` for the whole hours and the user's raw calls for
//! the minutes at either end ([`Source::UserHourly`],
//! [`choose_navigator_keys`]); the execution metrics read
//! `agent_executions_user_1h` the same way ([`executions_from`]). A user
//! filter with a server or tool filter, or with a grouping or buckets the
//! user rollups cannot answer, reads the raw tables ([`Source::Raw`]).
//!
//! Execution metrics read `agent_executions_1h` (migration 0016: keyed
//! like `agent_executions_1m` without the user), or grouped by the
//! executing user `agent_executions_executor_1h` (0019), for the whole
//! hours and `agent_executions_1m` for the minutes at either end
//! ([`executions_from`]).
//!
//! A series from a 5-minute or hourly rollup whose range ends inside a
//! block (the minutes up to "now") is first read with that block whole
//! from the block table, one table instead of a union of two, and kept
//! when the block's watermark (migrations 0014, 0015, 0016) shows no event
//! at or after the range's end ([`whole_tail`], [`executions_whole_tail`]);
//! so are its queries from `query_counts_1h` or `query_counts_tenant_5m`
//! ([`query_counts_whole_tail`]).
//!
//! A union of two rollups lists the columns its statement reads
//! ([`Columns`]): each branch selects only the shared columns the
//! statement around it mentions, because ClickHouse reads what a `UNION
//! ALL` branch lists even where the statement above does not use it (a
//! t-digest or an exact query set per row read, half a millisecond or more
//! per column here).
//!
//! Never a silent approximation: whichever source is chosen, counts and
//! distinct-query counts are the same as from the raw events; only the
//! t-digest latency percentiles differ slightly between sources.

use chrono::{DateTime, Utc};

use super::scope::Scope;
use crate::buckets::Buckets;
use crate::calendar::{ceil_five_minutes, ceil_hour, floor_five_minutes, floor_hour, is_whole_five_minutes, is_whole_hour};
use crate::queries::conditions::{CallKinds, Conditions, Filters, Table, TimeColumn};
use crate::window::TimeRange;

/// Which of a rollup's shared columns the `FROM` source of a statement
/// selects: all of them, or those the statement's own SQL around the
/// source mentions (its select list, conditions and ordering, given as
/// fragments).
#[derive(Debug, Clone, Copy)]
pub enum Columns<'a> {
    All,
    UsedBy(&'a [&'a str]),
}

impl Columns<'_> {
    /// The columns of `list` (comma-separated names) to select; all of
    /// them if the statement mentions none (it reads the rows' number only).
    fn pick(self, list: &str) -> String {
        let Columns::UsedBy(fragments) = self else {
            return list.to_owned();
        };
        let kept: Vec<&str> = list.split(',').map(str::trim).filter(|c| fragments.iter().any(|f| mentions(f, c))).collect();
        if kept.is_empty() {
            list.to_owned()
        } else {
            kept.join(", ")
        }
    }
}

/// Whether `sql` holds `name` as a whole identifier (`calls` in
/// `sum(calls)`, not in `n_calls`).
fn mentions(sql: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.match_indices(name)
        .any(|(at, _)| !sql[..at].chars().next_back().is_some_and(ident) && !sql[at + name.len()..].chars().next().is_some_and(ident))
}

/// Where a tool-call request is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `tool_calls_1m` over the whole range.
    Minute,
    /// The raw `tool_calls` table aggregated per minute like `tool_calls_1m`
    /// (same columns and states): a request filtered by user that the user
    /// rollups cannot answer (a server or tool filter too, a grouping by
    /// tool, server or error type, buckets that cut hours).
    Raw,
    /// `tool_calls_1h` for `whole` (hours), `tool_calls_1m` for `head` and `tail`.
    Hourly(Split),
    /// `tool_calls_tenant_kind_1h` for `whole` (hours), `tool_calls_tenant_1m` for `head`
    /// and `tail`: no filters and no grouping by a dimension.
    TenantHourly(Split),
    /// `tool_calls_tenant_5m` for `whole` (5-minute blocks),
    /// `tool_calls_tenant_1m` for `head` and `tail`: no filters, no grouping
    /// by a dimension, buckets that cut hours on multiples of 5 minutes
    /// (5-minute buckets, hourly or daily buckets at +05:30 or +05:45).
    TenantFiveMinutes(Split),
    /// `tool_calls_tenant_1m` over the whole range: no filters, no grouping
    /// by a dimension, buckets that cut 5-minute blocks or a range without
    /// a whole one.
    TenantMinute,
    /// `tool_calls_navigator_1h` for `whole` (hours), `tool_calls_1m` for `head` and
    /// `tail`: filters on project and navigator instance only; grouping by
    /// project or navigator.
    NavigatorHourly(Split),
    /// `tool_calls_server_1h` for `whole` (hours), `tool_calls_1m` for `head` and
    /// `tail`: a server-instance filter only; grouping by server. Calls,
    /// errors and the exact query sets only.
    ServerHourly(Split),
    /// `tool_calls_tool_1h` for `whole` (hours), `tool_calls_1m` for `head` and
    /// `tail`: tool filters (id, name) only; grouping by tool. Every
    /// aggregate and the exact query sets (the queries that used a tool).
    ToolHourly(Split),
    /// `tool_calls_error_type_1h` for `whole` (hours), `tool_calls_1m` for
    /// `head` and `tail`: filters on project and navigator instance only;
    /// grouping by error type. Every aggregate, no query sets.
    ErrorTypeHourly(Split),
    /// `tool_calls_user_1h` for `whole` (hours), the raw `tool_calls` of the user
    /// (per minute, like [`Source::Raw`]) for `head` and `tail`: a user
    /// filter with project and navigator-instance filters only; grouping
    /// by project or navigator. The columns of
    /// [`Source::NavigatorHourly`], no query sets.
    UserHourly(Split),
}

impl Source {
    /// For the tenant-level sources, whose rows are one per call kind and
    /// block, the block's span in seconds (60, 300 or 3,600; the edges of
    /// a split are minutes). `None` for the sources keyed by dimensions,
    /// which hold many rows per block.
    pub fn tenant_block_seconds(&self) -> Option<i64> {
        match self {
            Source::TenantMinute => Some(60),
            Source::TenantFiveMinutes(_) => Some(300),
            Source::TenantHourly(_) => Some(3_600),
            Source::Minute
            | Source::Raw
            | Source::Hourly(_)
            | Source::NavigatorHourly(_)
            | Source::ServerHourly(_)
            | Source::ToolHourly(_)
            | Source::ErrorTypeHourly(_)
            | Source::UserHourly(_) => None,
        }
    }

    /// The split of an hourly or 5-minute source.
    pub fn split(&self) -> Option<&Split> {
        match self {
            Source::Minute | Source::Raw | Source::TenantMinute => None,
            Source::Hourly(s)
            | Source::TenantHourly(s)
            | Source::TenantFiveMinutes(s)
            | Source::NavigatorHourly(s)
            | Source::ServerHourly(s)
            | Source::ToolHourly(s)
            | Source::ErrorTypeHourly(s)
            | Source::UserHourly(s) => Some(s),
        }
    }
}

/// A range cut at whole blocks of a grain: UTC hours for the hourly
/// sources, 5 minutes for [`Source::TenantFiveMinutes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Whole blocks, non-empty.
    pub whole: TimeRange,
    /// Minutes before the first whole block.
    pub head: Option<TimeRange>,
    /// Minutes after the last whole block.
    pub tail: Option<TimeRange>,
}

impl Split {
    /// The partial-hour ranges.
    pub fn edges(&self) -> impl Iterator<Item = TimeRange> + '_ {
        self.head.iter().chain(self.tail.iter()).copied()
    }
}

/// The coarsest source that answers exactly. `buckets` are the series'
/// buckets (`None` for totals and lists); `queries` says whether distinct
/// queries are needed.
pub fn choose(scope: &Scope, buckets: Option<&Buckets>, queries: bool) -> Source {
    if by_user(scope) {
        return Source::Raw;
    }
    if queries && choose_queries(scope) == QueriesSource::CallSets {
        return Source::Minute;
    }
    split(scope.range, buckets).map(Source::Hourly).unwrap_or(Source::Minute)
}

/// [`choose`] for totals and series (nothing grouped by a dimension): a
/// request over the whole tenant reads the tenant-level rollups (by the
/// minute when the buckets cut hours), one filtered by project or
/// navigator instance only the per-navigator rollup. `queries` as for
/// [`choose`]: whether distinct queries are needed (the call statistics
/// carry them when [`choose_queries`] picks the call sets, and the
/// tenant-level and per-navigator rollups have no query sets).
pub fn choose_ungrouped(scope: &Scope, buckets: Option<&Buckets>, queries: bool) -> Source {
    if by_user(scope) {
        let call_sets = queries && choose_queries(scope) == QueriesSource::CallSets;
        return if call_sets { Source::Raw } else { choose_navigator_keys(scope, buckets) };
    }
    let whole_tenant = scope.filters == Filters::default();
    if !whole_tenant && tool_table_answers(&scope.filters) {
        // Filtered by tool only: the per-tool rollup, query sets included.
        return split(scope.range, buckets).map(Source::ToolHourly).unwrap_or(Source::Minute);
    }
    let call_sets = queries && choose_queries(scope) == QueriesSource::CallSets;
    match choose(scope, buckets, queries) {
        Source::Hourly(split) if whole_tenant => Source::TenantHourly(split),
        Source::Hourly(split) if navigator_table_answers(&scope.filters) => Source::NavigatorHourly(split),
        Source::Minute if whole_tenant && !call_sets => {
            split_five_minutes(scope.range, buckets).map(Source::TenantFiveMinutes).unwrap_or(Source::TenantMinute)
        }
        other => other,
    }
}

/// [`choose`] for a request that reads only the columns the per-user
/// rollup keeps (call kind, project, navigator, navigator instance and
/// the aggregates, no query sets): under a user filter without server or
/// tool filters, `tool_calls_user_1h` for the whole hours and the user's
/// raw calls for the minutes at either end ([`Source::UserHourly`]).
pub fn choose_navigator_keys(scope: &Scope, buckets: Option<&Buckets>) -> Source {
    if by_user(scope) && user_table_answers(&scope.filters) {
        if let Some(s) = split(scope.range, buckets) {
            return Source::UserHourly(s);
        }
    }
    choose(scope, buckets, false)
}

/// [`choose_grouped`] for a series or its top groups (`buckets` `None`)
/// grouped by project or navigator, tool, server or error type, without
/// distinct queries (Grafana's panels, the error-types graph): the
/// per-question hourly rollup keyed by the group where the filters allow
/// (`tool_calls_server_1h` only without `latency`: it keeps calls and
/// errors), the user rollup under a user filter for project or navigator
/// groups, otherwise the dimension-keyed rollups.
pub fn choose_grouped_series(scope: &Scope, buckets: Option<&Buckets>, grouping: Grouping, latency: bool) -> Source {
    let hourly = |source: fn(Split) -> Source| split(scope.range, buckets).map(source).unwrap_or(Source::Minute);
    match grouping {
        Grouping::Navigator if navigator_table_answers(&scope.filters) => hourly(Source::NavigatorHourly),
        Grouping::Navigator => choose_navigator_keys(scope, buckets),
        Grouping::Tool if tool_table_answers(&scope.filters) => hourly(Source::ToolHourly),
        Grouping::Server if !latency && server_table_answers(&scope.filters) => hourly(Source::ServerHourly),
        Grouping::ErrorType if navigator_table_answers(&scope.filters) => hourly(Source::ErrorTypeHourly),
        _ => choose(scope, buckets, false),
    }
}

/// The finest source: the minute rollup, or the raw table under a user
/// filter (for the exact distinct-query sets).
pub fn finest(scope: &Scope) -> Source {
    if by_user(scope) {
        Source::Raw
    } else {
        Source::Minute
    }
}

/// A user filter: only the raw tables and the user rollups have the user.
fn by_user(scope: &Scope) -> bool {
    scope.filters.user_email.is_some() || scope.filters.user_token_id.is_some()
}

/// What a list groups by, as far as the choice of rollup goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Server id or name.
    Server,
    /// Project or navigator.
    Navigator,
    /// Tool name.
    Tool,
    /// Error type (series only: no list groups by it).
    ErrorType,
}

/// The source of a list grouped by `grouping`. `call_sets` says whether the
/// call statistics carry distinct queries (then only the minute rollup's
/// and the per-server and per-tool rollups' exact sets answer).
pub fn choose_grouped(scope: &Scope, grouping: Grouping, call_sets: bool) -> Source {
    let split = || split(scope.range, None);
    match grouping {
        Grouping::Server if server_table_answers(&scope.filters) => split().map(Source::ServerHourly).unwrap_or(Source::Minute),
        Grouping::Navigator if !call_sets && navigator_table_answers(&scope.filters) => {
            split().map(Source::NavigatorHourly).unwrap_or(Source::Minute)
        }
        Grouping::Navigator if !call_sets => choose_navigator_keys(scope, None),
        Grouping::Tool if tool_table_answers(&scope.filters) => split().map(Source::ToolHourly).unwrap_or(Source::Minute),
        _ if call_sets => finest(scope),
        _ => choose(scope, None, false),
    }
}

/// Where queries are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueriesSource {
    /// `query_counts_1h` / `query_counts_1m`: queries counted at their
    /// `navigator_query` execution, zero-call queries included; a sum.
    Executions,
    /// The raw `agent_executions` table: a user's `navigator_query`
    /// executions (the rollups carry no user), the same rule as
    /// [`QueriesSource::Executions`]; a sum.
    UserExecutions,
    /// The `uniqExactIf` sets of `tool_calls_1m` (the raw calls under a
    /// user filter): the queries that made calls matching a server or
    /// tool filter, or proxy calls.
    CallSets,
}

/// How queries are counted for `scope`: at their execution, unless the
/// request is about calls (a server or tool filter, the proxy kinds),
/// then the queries that made those calls.
pub fn choose_queries(scope: &Scope) -> QueriesSource {
    let f = &scope.filters;
    let about_calls = f.server_instance_id.is_some() || f.server_id.is_some() || f.tool_id.is_some() || f.tool_name.is_some();
    if about_calls || scope.kinds == CallKinds::Proxy {
        QueriesSource::CallSets
    } else if by_user(scope) {
        QueriesSource::UserExecutions
    } else {
        QueriesSource::Executions
    }
}

/// `tool_calls_user_1h` and `agent_executions_user_1h` keep the user,
/// project and navigator (instance).
fn user_table_answers(f: &Filters) -> bool {
    f.server_instance_id.is_none() && f.server_id.is_none() && f.tool_id.is_none() && f.tool_name.is_none()
}

/// `tool_calls_navigator_1h` keeps project and navigator (instance).
fn navigator_table_answers(f: &Filters) -> bool {
    f.server_instance_id.is_none() && f.server_id.is_none() && f.tool_id.is_none() && f.tool_name.is_none() && !by_user_filters(f)
}

/// `tool_calls_tool_1h` keeps the tool (id and name) only.
fn tool_table_answers(f: &Filters) -> bool {
    f.project_id.is_none()
        && f.navigator_instance_id.is_none()
        && f.server_instance_id.is_none()
        && f.server_id.is_none()
        && !by_user_filters(f)
}

/// `tool_calls_server_1h` keeps the server (instance) only.
fn server_table_answers(f: &Filters) -> bool {
    f.project_id.is_none() && f.navigator_instance_id.is_none() && f.tool_id.is_none() && f.tool_name.is_none() && !by_user_filters(f)
}

/// A user filter of either kind.
fn by_user_filters(f: &Filters) -> bool {
    f.user_email.is_some() || f.user_token_id.is_some()
}

/// The hour split of `range`, if it has a whole hour and every bucket
/// boundary inside the whole hours is itself a whole hour.
pub fn split(range: TimeRange, buckets: Option<&Buckets>) -> Option<Split> {
    split_at(range, buckets, ceil_hour, floor_hour, is_whole_hour)
}

/// The 5-minute split of `range`, if it has a whole 5-minute block and
/// every bucket boundary inside the whole blocks is a multiple of 5
/// minutes: 5-, 10-, 15-minute ... buckets in any zone (every zone's
/// offset is a whole number of 5 minutes, +05:45 included), and hourly or
/// daily buckets in +05:30 and +05:45 zones.
pub fn split_five_minutes(range: TimeRange, buckets: Option<&Buckets>) -> Option<Split> {
    split_at(range, buckets, ceil_five_minutes, floor_five_minutes, is_whole_five_minutes)
}

/// The split of `range` at the blocks that `ceil`, `floor` and `whole`
/// round to.
fn split_at(
    range: TimeRange,
    buckets: Option<&Buckets>,
    ceil: fn(DateTime<Utc>) -> DateTime<Utc>,
    floor: fn(DateTime<Utc>) -> DateTime<Utc>,
    whole: fn(DateTime<Utc>) -> bool,
) -> Option<Split> {
    let (hs, he) = (ceil(range.start), floor(range.end));
    if hs >= he {
        return None;
    }
    if let Some(b) = buckets {
        let crosses = (1..b.len()).map(|i| b.start(i)).any(|t| t > hs && t < he && !whole(t));
        if crosses {
            return None;
        }
    }
    let part = |start, end| (start < end).then_some(TimeRange { start, end });
    Some(Split { whole: TimeRange { start: hs, end: he }, head: part(range.start, hs), tail: part(he, range.end) })
}

/// A series from a block table (5-minute or hourly) whose range ends inside
/// the block after its whole blocks (the minutes up to "now"), answered
/// with that block read whole from the block table instead of its minutes
/// from a minute rollup: one table instead of a `UNION ALL` of two
/// (migrations 0014 and 0015). Exact only if none of the block's events is
/// dated at or after `end`; the rows' newest `occurred_at`,
/// `latest_occurred_at`, says whether (rows written before the watermark
/// existed read 2199 and so never pass), and the
/// caller reads the source as split otherwise. For the calls,
/// [`whole_tail`]; for the queries counted at their execution,
/// [`query_counts_whole_tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeTail {
    /// `(SELECT <time column> AS minute, <columns> FROM <block table>
    /// WHERE <tenant, filters, blocks>)`, the columns ending with
    /// `latest_occurred_at`.
    pub from: String,
    pub params: Vec<(String, String)>,
    /// The whole blocks and the last, partial one, read whole.
    pub blocks: TimeRange,
    /// The start of the last block.
    pub last_block: DateTime<Utc>,
    /// The range's end: every event of the last block must be before it.
    pub end: DateTime<Utc>,
}

impl WholeTail {
    /// Whether the answer read this way is the range's: the last block's
    /// newest event (`latest_ms`, epoch ms; 0 when it has none) is before
    /// the range's end.
    pub fn is_exact(&self, latest_ms: i64) -> bool {
        latest_ms < self.end.timestamp_millis()
    }

    /// Reads `split`'s blocks and its partial last block whole from
    /// `table`, when the split has a tail and no head and no bucket (if
    /// any) starts inside the tail (as one could at +05:30 in the last hour).
    fn of(
        split: &Split,
        buckets: Option<&Buckets>,
        grain: Grain,
        block: chrono::Duration,
        columns: &str,
        common: Conditions,
    ) -> Option<Self> {
        let tail = match (split.head, split.tail) {
            (None, Some(tail)) => tail,
            _ => return None,
        };
        let splits_tail = buckets.is_some_and(|b| (1..b.len()).map(|i| b.start(i)).any(|t| t > tail.start && t < tail.end));
        if splits_tail || tail.start != split.whole.end || tail.end > tail.start + block {
            return None;
        }
        let blocks = TimeRange { start: split.whole.start, end: tail.start + block };
        let (cond, params) = common.any_of(grain.column, &pairs(&[blocks]), "r_h").into_parts();
        let from = format!("(SELECT {} AS minute, {columns} FROM {} WHERE {cond})", grain.column.name(), grain.table);
        Some(WholeTail { from, params, blocks, last_block: tail.start, end: tail.end })
    }
}

/// Whether a query reports the newest event of a [`WholeTail`]'s last
/// block, in its `tail_latest_ms` column; the caller passes the largest to
/// [`WholeTail::is_exact`].
#[derive(Debug, Clone, Copy)]
pub enum Tail {
    /// `tail_latest_ms` is 0.
    Unguarded,
    /// `tail_latest_ms` is the newest `latest_occurred_at` (epoch ms) of
    /// the rows from `last_block` (epoch s) on.
    Guarded { last_block: i64 },
}

impl Tail {
    /// The guard of `w`'s last block.
    pub fn of(w: &WholeTail) -> Self {
        Tail::Guarded { last_block: w.last_block.timestamp() }
    }

    /// The `tail_latest_ms` column, per group (`grouped`; 0 where the group
    /// has no row of the last block) or per row, and its parameter.
    pub fn column(self, grouped: bool) -> (String, Vec<(&'static str, String)>) {
        match self {
            Tail::Unguarded => ("toInt64(0) AS tail_latest_ms".into(), Vec::new()),
            Tail::Guarded { last_block } => {
                let is_tail = "minute >= toDateTime({t_last:Int64}, 'UTC')";
                let latest = "toUnixTimestamp64Milli(latest_occurred_at)";
                let sql = if grouped {
                    format!("toInt64(maxIf({latest}, {is_tail})) AS tail_latest_ms")
                } else {
                    format!("toInt64(if({is_tail}, {latest}, 0)) AS tail_latest_ms")
                };
                (sql, vec![("t_last", last_block.to_string())])
            }
        }
    }
}

/// The [`WholeTail`] of the calls of a series from a 5-minute or hourly
/// rollup (`source`): the tenant-level ones and the per-navigator,
/// per-server and per-tool ones carry `latest_occurred_at` (migrations 0014
/// and 0015), `tool_calls_1h` its `last_used`, the same newest
/// `occurred_at`. Not the per-user rollup, whose edges come from the raw
/// calls.
pub fn whole_tail(scope: &Scope, source: &Source, buckets: &Buckets, columns: Columns) -> Option<WholeTail> {
    whole_tail_within(scope, source, Some(buckets), columns)
}

/// [`whole_tail`] for a figure over the whole range (a ranking of groups),
/// with no buckets to respect.
pub fn whole_tail_unbucketed(scope: &Scope, source: &Source, columns: Columns) -> Option<WholeTail> {
    whole_tail_within(scope, source, None, columns)
}

fn whole_tail_within(scope: &Scope, source: &Source, buckets: Option<&Buckets>, columns: Columns) -> Option<WholeTail> {
    const WATERMARK: &str = "latest_occurred_at";
    let hour = chrono::Duration::hours(1);
    let (split, grain, block, list, watermark) = match source {
        Source::TenantFiveMinutes(s) => (
            s,
            Grain { table: "tool_calls_tenant_5m", column: TimeColumn::FiveMinute },
            chrono::Duration::minutes(5),
            TENANT_COLUMNS,
            WATERMARK,
        ),
        Source::TenantHourly(s) => (s, Grain::hours(TENANT_HOURS), hour, TENANT_COLUMNS, WATERMARK),
        Source::Hourly(s) => (s, Grain::hours("tool_calls_1h"), hour, SHARED_COLUMNS, "last_used AS latest_occurred_at"),
        Source::NavigatorHourly(s) => (s, Grain::hours("tool_calls_navigator_1h"), hour, NAVIGATOR_COLUMNS, WATERMARK),
        Source::ServerHourly(s) => (s, Grain::hours("tool_calls_server_1h"), hour, SERVER_COLUMNS, WATERMARK),
        Source::ToolHourly(s) => (s, Grain::hours("tool_calls_tool_1h"), hour, TOOL_COLUMNS, WATERMARK),
        Source::ErrorTypeHourly(s) => (s, Grain::hours(ERROR_TYPE_HOURS), hour, ERROR_TYPE_COLUMNS, WATERMARK),
        Source::Minute | Source::Raw | Source::TenantMinute | Source::UserHourly(_) => return None,
    };
    let common = Conditions::tenant(scope.tenant).and(scope.tool_calls_filters(Table::ToolCallsRollup));
    WholeTail::of(split, buckets, grain, block, &format!("{}, {watermark}", columns.pick(list)), common)
}

/// The [`WholeTail`] of the queries of a series counted at their execution
/// from `query_counts_tenant_5m` or `query_counts_1h`, where
/// [`series_query_counts_from`] reads those with `query_counts_1m`.
pub fn query_counts_whole_tail(scope: &Scope, buckets: &Buckets) -> Option<WholeTail> {
    if choose_queries(scope) != QueriesSource::Executions {
        return None;
    }
    let hours = split(scope.range, Some(buckets));
    match (hours, split_five_minutes(scope.range, Some(buckets))) {
        (None, Some(s)) if scope.filters == Filters::default() => {
            let grain = Grain { table: "query_counts_tenant_5m", column: TimeColumn::FiveMinute };
            let columns = "tenant_id, queries, latest_occurred_at";
            WholeTail::of(&s, Some(buckets), grain, chrono::Duration::minutes(5), columns, Conditions::tenant(scope.tenant))
        }
        (Some(s), _) => {
            let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::QueryCounts);
            let columns = "tenant_id, project_id, navigator_id, navigator_instance_id, queries, latest_occurred_at";
            WholeTail::of(&s, Some(buckets), Grain::hours("query_counts_1h"), chrono::Duration::hours(1), columns, common)
        }
        _ => None,
    }
}

/// The columns both tool-call rollups share (`minute`/`hour` aside).
const SHARED_COLUMNS: &str = "tenant_id, project_id, navigator_id, navigator_instance_id, server_id, server_instance_id, server_name,
    tool_id, tool_name, call_kind, error_type, organization_id, calls, errors, latency_sum_ms, latency_digest,
    runtime_sum_ms, runtime_count, suggestions, last_used";

/// The whole hours of a tenant: `tool_calls_tenant_kind_1h` (0017), the
/// figures of `tool_calls_tenant_1h` sorted by call kind before the hour in
/// small granules, so that a week of one kind reads its 168 rows and not
/// the month's every kind (a t-digest state is built per row read).
const TENANT_HOURS: &str = "tool_calls_tenant_kind_1h";

/// The columns `tool_calls_tenant_kind_1h` / `tool_calls_tenant_1m` share with the other rollups.
const TENANT_COLUMNS: &str =
    "tenant_id, call_kind, calls, errors, latency_sum_ms, latency_digest, runtime_sum_ms, runtime_count, suggestions";

/// The columns `tool_calls_navigator_1h` shares with `tool_calls_1m`.
const NAVIGATOR_COLUMNS: &str = "tenant_id, call_kind, project_id, navigator_id, navigator_instance_id, calls, errors, latency_sum_ms,
    latency_digest, runtime_sum_ms, runtime_count, suggestions";

/// The columns `tool_calls_tool_1h` shares with `tool_calls_1m`.
const TOOL_COLUMNS: &str = "tenant_id, call_kind, tool_id, tool_name, calls, errors, latency_sum_ms, latency_digest, runtime_sum_ms,
    runtime_count, suggestions, queries";

/// The whole hours of series grouped by error type:
/// `tool_calls_error_type_1h` (0018), keyed by the error type, the call
/// kind and the navigator keys only.
const ERROR_TYPE_HOURS: &str = "tool_calls_error_type_1h";

/// The columns `tool_calls_error_type_1h` shares with `tool_calls_1m`.
const ERROR_TYPE_COLUMNS: &str = "tenant_id, call_kind, error_type, project_id, navigator_id, navigator_instance_id, calls, errors,
    latency_sum_ms, latency_digest, runtime_sum_ms, runtime_count, suggestions";

/// The columns `tool_calls_server_1h` shares with `tool_calls_1m`.
const SERVER_COLUMNS: &str = "tenant_id, call_kind, server_id, server_instance_id, server_name, calls, errors, queries";

/// The raw table in the shape of `tool_calls_1m` (migration 0002's view).
const RAW_AS_MINUTES: &str = "SELECT tenant_id, toStartOfMinute(occurred_at) AS minute,
    project_id, navigator_id, navigator_instance_id, server_id, server_instance_id, server_name,
    tool_id, tool_name, call_kind, error_type, organization_id,
    toUInt64(count()) AS calls, toUInt64(countIf(NOT success)) AS errors,
    sum(latency_ms) AS latency_sum_ms, quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_digest,
    sum(ifNull(runtime_ms, 0)) AS runtime_sum_ms, toUInt64(count(runtime_ms)) AS runtime_count,
    toUInt64(sum(suggestions_count)) AS suggestions,
    uniqExactIfState(query_id, query_id != toUUID('00000000-0000-0000-0000-000000000000')) AS queries,
    max(occurred_at) AS last_used
FROM tool_calls";

const RAW_KEYS: &str = "tenant_id, minute, project_id, navigator_id, navigator_instance_id, server_id,
    server_instance_id, server_name, tool_id, tool_name, call_kind, error_type, organization_id";

fn pairs(ranges: &[TimeRange]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    ranges.iter().map(|r| (r.start, r.end)).collect()
}

/// A `FROM` source of tool-call rollup rows with a `minute` column, and
/// the conditions to put in the outer `WHERE` (the scope's): either one
/// minute rollup with the scope's conditions, or the union of an hourly
/// rollup and the minute rollup with the conditions inside each branch
/// (then the outer condition is `1`). The tenant-level sources have the
/// aggregate columns, `tenant_id` and `call_kind` only; the per-navigator
/// and per-server ones their keys and aggregates (see [`Source`]). A union's
/// branches select the `columns` the statement reads.
pub fn tool_calls_from(scope: &Scope, source: &Source, columns: Columns) -> (String, String, Vec<(String, String)>) {
    let (hour_table, minute_table, list, split) = match source {
        Source::TenantFiveMinutes(s) => {
            let common = Conditions::tenant(scope.tenant).and(scope.tool_calls_filters(Table::ToolCallsRollup));
            let grain = Grain { table: "tool_calls_tenant_5m", column: TimeColumn::FiveMinute };
            let (branches, params) = blocks_and_edges(common, s, grain, "tool_calls_tenant_1m", &columns.pick(TENANT_COLUMNS));
            return (branches, "1".into(), params);
        }
        Source::Raw => {
            let (cond, params) = scope.tool_calls_where(TimeColumn::OccurredAt);
            return (format!("({RAW_AS_MINUTES} WHERE {cond} GROUP BY {RAW_KEYS})"), "1".into(), params);
        }
        Source::Minute | Source::TenantMinute => {
            let table = if *source == Source::Minute { "tool_calls_1m" } else { "tool_calls_tenant_1m" };
            let (cond, params) = scope.tool_calls_where(TimeColumn::Minute);
            return (table.into(), cond, params);
        }
        Source::TenantHourly(s) => (TENANT_HOURS, "tool_calls_tenant_1m", TENANT_COLUMNS, s),
        Source::Hourly(s) => ("tool_calls_1h", "tool_calls_1m", SHARED_COLUMNS, s),
        Source::NavigatorHourly(s) => ("tool_calls_navigator_1h", "tool_calls_1m", NAVIGATOR_COLUMNS, s),
        Source::ServerHourly(s) => ("tool_calls_server_1h", "tool_calls_1m", SERVER_COLUMNS, s),
        Source::ToolHourly(s) => ("tool_calls_tool_1h", "tool_calls_1m", TOOL_COLUMNS, s),
        Source::ErrorTypeHourly(s) => (ERROR_TYPE_HOURS, "tool_calls_1m", ERROR_TYPE_COLUMNS, s),
        Source::UserHourly(s) => return user_calls_hours_and_raw_edges(scope, s, columns),
    };
    let common = Conditions::tenant(scope.tenant).and(scope.tool_calls_filters(Table::ToolCallsRollup));
    let (branches, params) = blocks_and_edges(common, split, Grain::hours(hour_table), minute_table, &columns.pick(list));
    (branches, "1".into(), params)
}

/// [`Source::UserHourly`]: `tool_calls_user_1h` over the whole hours and
/// the user's raw calls, aggregated per minute, over the minutes at
/// either end (bounded by tenant and those minutes).
fn user_calls_hours_and_raw_edges(scope: &Scope, split: &Split, columns: Columns) -> (String, String, Vec<(String, String)>) {
    let common = |table| Conditions::tenant(scope.tenant).and(scope.tool_calls_filters(table));
    let list = columns.pick(NAVIGATOR_COLUMNS);
    let (from, params) = hours_and_raw_edges(common(Table::ToolCallsUser), split, "tool_calls_user_1h", &list, |edges| {
        let (cond, params) = common(Table::ToolCallsRaw).any_of(TimeColumn::OccurredAt, &pairs(edges), "r_m").into_parts();
        (format!("SELECT minute, {list} FROM ({RAW_AS_MINUTES} WHERE {cond} GROUP BY {RAW_KEYS})"), params)
    });
    (from, "1".into(), params)
}

/// The calls per user e-mail of a list (`/analytics/users`), as a `FROM`
/// source of `user_email` and `calls` rows and its parameters:
/// `tool_calls_user_1h` (0013) for the whole hours and the raw calls, one
/// row each, for the minutes at either end. `None` for a range without a
/// whole hour or under a server or tool filter (the per-user rollup lacks
/// them): the caller reads the raw calls.
pub fn user_emails_from(scope: &Scope) -> Option<(String, Vec<(String, String)>)> {
    if !user_table_answers(&scope.filters) {
        return None;
    }
    let split = split(scope.range, None)?;
    let common = |table| Conditions::tenant(scope.tenant).and(scope.tool_calls_filters(table));
    Some(hours_and_raw_edges(common(Table::ToolCallsUser), &split, "tool_calls_user_1h", "user_email, calls", |edges| {
        let (cond, params) = common(Table::ToolCallsRaw).any_of(TimeColumn::OccurredAt, &pairs(edges), "r_m").into_parts();
        (format!("SELECT toStartOfMinute(occurred_at) AS minute, user_email, toUInt64(1) AS calls FROM tool_calls WHERE {cond}"), params)
    }))
}

/// One `UNION ALL` source over `split`: the whole hours from the per-user
/// `hour_table` (`columns`, `hour` read as `minute`; `common` holds the
/// tenant and the filters) and the minutes at either end from the raw rows
/// `raw_edges` selects for those ranges, with the same columns.
fn hours_and_raw_edges(
    common: Conditions,
    split: &Split,
    hour_table: &str,
    columns: &str,
    raw_edges: impl Fn(&[TimeRange]) -> (String, Vec<(String, String)>),
) -> (String, Vec<(String, String)>) {
    let (cond, mut params) = common.any_of(TimeColumn::Hour, &pairs(&[split.whole]), "r_h").into_parts();
    let mut branches = vec![format!("SELECT hour AS minute, {columns} FROM {hour_table} WHERE {cond}")];
    let edges: Vec<TimeRange> = split.edges().collect();
    if !edges.is_empty() {
        let (sql, p) = raw_edges(&edges);
        branches.push(sql);
        params.extend(p);
    }
    (format!("({})", branches.join(" UNION ALL ")), params)
}

/// The coarse table of a split and its time column.
struct Grain {
    table: &'static str,
    column: TimeColumn,
}

impl Grain {
    fn hours(table: &'static str) -> Self {
        Grain { table, column: TimeColumn::Hour }
    }
}

/// `(SELECT hour AS minute, columns FROM hour_table WHERE ... UNION ALL
/// SELECT minute, columns FROM minute_table WHERE ...)` over `split` (or
/// `five_minute AS minute` from a 5-minute table), with the `common`
/// conditions in each branch.
fn blocks_and_edges(common: Conditions, split: &Split, grain: Grain, minute_table: &str, columns: &str) -> (String, Vec<(String, String)>) {
    let whole = common.clone().any_of(grain.column, &pairs(&[split.whole]), "r_h");
    let mut params = whole.params().to_vec();
    let mut branches = vec![format!("SELECT {} AS minute, {columns} FROM {} WHERE {}", grain.column.name(), grain.table, whole.sql())];
    let edges: Vec<TimeRange> = split.edges().collect();
    if !edges.is_empty() {
        let minutes = Conditions::new().any_of(TimeColumn::Minute, &pairs(&edges), "r_m");
        params.extend(minutes.params().iter().cloned());
        branches.push(format!("SELECT minute, {columns} FROM {minute_table} WHERE {}", common.and(minutes).sql()));
    }
    (format!("({})", branches.join(" UNION ALL ")), params)
}

/// The rows queries are counted from, and the aggregate that counts them.
pub struct QueriesRows {
    /// A `FROM` source with `minute`, `project_id`, `navigator_id`,
    /// `navigator_instance_id` and `queries` (a count to sum); from
    /// [`series_query_counts_from`], `minute`, `tenant_id` and `queries`
    /// only.
    pub from: String,
    /// The count over any subset of the rows (`toUInt64(...)`).
    pub count: &'static str,
    pub params: Vec<(String, String)>,
}

/// The rows of the scope's `navigator_query` executions, for
/// [`QueriesSource::Executions`] (`query_counts_1h` for the whole hours
/// when the buckets keep them whole, `query_counts_1m` for the rest) and
/// [`QueriesSource::UserExecutions`] (the raw `agent_executions` rows of
/// the user, one per execution): the count is `sum(queries)` either way.
/// `None` for [`QueriesSource::CallSets`], whose queries are counted with
/// the calls (see [`choose_ungrouped`]).
pub fn query_counts_from(scope: &Scope, buckets: Option<&Buckets>) -> Option<QueriesRows> {
    const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";
    let columns = "tenant_id, project_id, navigator_id, navigator_instance_id, queries";
    let (from, params) = match choose_queries(scope) {
        QueriesSource::CallSets => return None,
        QueriesSource::Executions => {
            let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::QueryCounts);
            match split(scope.range, buckets) {
                Some(s) => blocks_and_edges(common, &s, Grain::hours("query_counts_1h"), "query_counts_1m", columns),
                None => {
                    let (cond, params) = common.between(TimeColumn::Minute, scope.range.start, scope.range.end).into_parts();
                    (format!("(SELECT minute, {columns} FROM query_counts_1m WHERE {cond})"), params)
                }
            }
        }
        QueriesSource::UserExecutions => {
            let raw_minutes = |ranges: &[TimeRange], prefix: &str| {
                let (cond, params) = Conditions::tenant(scope.tenant)
                    .any_of(TimeColumn::OccurredAt, &pairs(ranges), prefix)
                    .filters(&scope.filters, Table::ExecutionsRaw)
                    .into_parts();
                let sql = format!(
                    "SELECT toStartOfMinute(occurred_at) AS minute, {columns} FROM (
                         SELECT occurred_at, tenant_id, project_id, navigator_id, navigator_instance_id, toUInt64(1) AS queries
                         FROM agent_executions
                         WHERE {cond} AND execution_kind = 'navigator_query' AND execution_id != {NIL})"
                );
                (sql, params)
            };
            match split(scope.range, buckets) {
                Some(s) => {
                    let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::ExecutionsUser);
                    hours_and_raw_edges(common, &s, "agent_executions_user_1h", columns, |edges| raw_minutes(edges, "r_m"))
                }
                None => {
                    let (sql, params) = raw_minutes(&[scope.range], "r");
                    (format!("({sql})"), params)
                }
            }
        }
    };
    Some(QueriesRows { from, count: "toUInt64(sum(queries))", params })
}

/// [`query_counts_from`] for a series that reads the count per bucket
/// only (no project or navigator column): a whole tenant's series whose
/// buckets cut hours sums `query_counts_tenant_5m` for the whole 5-minute
/// blocks and `query_counts_1m` for the minutes after the last one.
pub fn series_query_counts_from(scope: &Scope, buckets: &Buckets) -> Option<QueriesRows> {
    let five_minutes = split_five_minutes(scope.range, Some(buckets));
    match five_minutes {
        Some(s)
            if choose_queries(scope) == QueriesSource::Executions
                && scope.filters == Filters::default()
                && split(scope.range, Some(buckets)).is_none() =>
        {
            let common = Conditions::tenant(scope.tenant);
            let grain = Grain { table: "query_counts_tenant_5m", column: TimeColumn::FiveMinute };
            let (from, params) = blocks_and_edges(common, &s, grain, "query_counts_1m", "tenant_id, queries");
            Some(QueriesRows { from, count: "toUInt64(sum(queries))", params })
        }
        _ => query_counts_from(scope, Some(buckets)),
    }
}

/// Raw executions with the columns of `agent_executions_1m` the
/// execution metrics and their groups read.
const RAW_EXECUTIONS: &str = "SELECT toStartOfMinute(occurred_at) AS minute, tenant_id, organization_id, user_id, project_id,
    navigator_id, navigator_instance_id, model, error_type, toUInt64(1) AS executions, toUInt64(NOT cost_known) AS unpriced_executions,
    input_tokens, output_tokens, total_tokens, cost_usd, messages_count AS messages
FROM agent_executions";

/// The columns `agent_executions_user_1h` shares with [`RAW_EXECUTIONS`].
const USER_EXECUTIONS_COLUMNS: &str = "tenant_id, project_id, navigator_id, navigator_instance_id, executions, unpriced_executions,
    input_tokens, output_tokens, total_tokens, cost_usd, messages";

/// The keys an execution request reads besides the time, which decide
/// its rollup ([`executions_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionKeys {
    /// None, or project or navigator (instance): the user rollups' keys.
    Navigator,
    /// Also model, organization or error type (`agent_executions_1h` has them).
    Other,
    /// The executing user (`user_id`): `agent_executions_executor_1h`
    /// (migration 0019) for the whole hours, `agent_executions_1m` for the
    /// minutes at either end.
    User,
}

/// The columns `agent_executions_1h` shares with `agent_executions_1m`.
const EXECUTIONS_COLUMNS: &str = "tenant_id, organization_id, project_id, navigator_id, navigator_instance_id, execution_kind, billable,
    status, model, error_type, executions, unpriced_executions, input_tokens, output_tokens, total_tokens, cost_usd, messages";

/// The columns `agent_executions_executor_1h` shares with `agent_executions_1m`.
const EXECUTOR_COLUMNS: &str = "tenant_id, user_id, project_id, navigator_id, navigator_instance_id, executions, unpriced_executions,
    input_tokens, output_tokens, total_tokens, cost_usd, messages";

/// The hourly execution rollup that answers `keys` without a user filter,
/// and the columns it shares with `agent_executions_1m`.
fn execution_hours(keys: ExecutionKeys) -> (&'static str, &'static str) {
    match keys {
        ExecutionKeys::User => ("agent_executions_executor_1h", EXECUTOR_COLUMNS),
        ExecutionKeys::Navigator | ExecutionKeys::Other => ("agent_executions_1h", EXECUTIONS_COLUMNS),
    }
}

/// `(FROM source, WHERE condition, params)` of the execution metrics
/// (executions, unpriced executions, tokens, cost, messages; `minute` and
/// the keys of `agent_executions_1m`): `agent_executions_1h` (migration
/// 0016), or `agent_executions_executor_1h` (0019) when the request needs
/// the executing user, for the whole hours and `agent_executions_1m` for
/// the minutes at either end, when the buckets keep hours whole;
/// otherwise `agent_executions_1m`. Under a user filter
/// `agent_executions_user_1h` for the whole hours and the user's raw
/// executions for the minutes at either end, when `keys` are the user
/// rollup's ([`ExecutionKeys::Navigator`]) and the buckets keep hours
/// whole; otherwise the user's raw executions over the range.
pub fn executions_from(
    scope: &Scope,
    buckets: Option<&Buckets>,
    keys: ExecutionKeys,
    columns: Columns,
) -> (String, String, Vec<(String, String)>) {
    if !by_user(scope) {
        let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::Executions);
        if let Some(s) = split(scope.range, buckets) {
            let (table, list) = execution_hours(keys);
            let (from, params) = blocks_and_edges(common, &s, Grain::hours(table), "agent_executions_1m", &columns.pick(list));
            return (from, "1".into(), params);
        }
        let (cond, params) = common.between(TimeColumn::Minute, scope.range.start, scope.range.end).into_parts();
        return ("agent_executions_1m".into(), cond, params);
    }
    let raw = |ranges: &[TimeRange], prefix: &str| {
        Conditions::tenant(scope.tenant)
            .any_of(TimeColumn::OccurredAt, &pairs(ranges), prefix)
            .filters(&scope.filters, Table::ExecutionsRaw)
    };
    match split(scope.range, buckets).filter(|_| keys == ExecutionKeys::Navigator) {
        Some(s) => {
            let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::ExecutionsUser);
            let list = columns.pick(USER_EXECUTIONS_COLUMNS);
            let (from, params) = hours_and_raw_edges(common, &s, "agent_executions_user_1h", &list, |edges| {
                let (cond, params) = raw(edges, "r_m").into_parts();
                (format!("SELECT minute, {list} FROM ({RAW_EXECUTIONS} WHERE {cond})"), params)
            });
            (from, "1".into(), params)
        }
        None => {
            let (cond, params) = raw(&[scope.range], "r").into_parts();
            (format!("({RAW_EXECUTIONS} WHERE {cond})"), "1".into(), params)
        }
    }
}

/// The [`WholeTail`] of an execution series (or ranking, without
/// `buckets`) that [`executions_from`] reads from `agent_executions_1h` or
/// `agent_executions_executor_1h`.
pub fn executions_whole_tail(scope: &Scope, buckets: Option<&Buckets>, keys: ExecutionKeys, columns: Columns) -> Option<WholeTail> {
    if by_user(scope) {
        return None;
    }
    let s = split(scope.range, buckets)?;
    let common = Conditions::tenant(scope.tenant).filters(&scope.filters, Table::Executions);
    let (table, list) = execution_hours(keys);
    let list = format!("{}, latest_occurred_at", columns.pick(list));
    WholeTail::of(&s, buckets, Grain::hours(table), chrono::Duration::hours(1), &list, common)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queries::CallKinds;
    use crate::window::{Span, Unit};
    use chrono_tz::Tz;

    use crate::window::test_time::range;

    fn buckets(r: TimeRange, f: Span, tz: &str) -> (Buckets, TimeRange) {
        let b = Buckets::plan(r, f, tz.parse::<Tz>().unwrap(), 5000).unwrap();
        let r = TimeRange { start: b.first_start(), end: r.end };
        (b, r)
    }

    fn scope(r: TimeRange, filters: Filters) -> Scope {
        Scope { tenant: uuid::Uuid::nil(), range: r, filters, kinds: CallKinds::Tool }
    }

    #[test]
    fn daily_utc_up_to_now_reads_hours_and_the_trailing_minutes() {
        let (b, r) = buckets(range("2024-01-01T10:17:00Z", "2024-01-31T10:18:00Z"), Span::new(1, Unit::Day), "UTC");
        let s = split(r, Some(&b)).unwrap();
        assert_eq!(s.whole, range("2024-01-01T00:00:00Z", "2024-01-31T10:00:00Z"));
        assert_eq!(s.head, None);
        assert_eq!(s.tail, Some(range("2024-01-31T10:00:00Z", "2024-01-31T10:18:00Z")));
        assert!(matches!(choose(&scope(r, Filters::default()), Some(&b), true), Source::Hourly(_)));
        assert!(matches!(choose_ungrouped(&scope(r, Filters::default()), Some(&b), true), Source::TenantHourly(_)));
    }

    #[test]
    fn a_column_counts_as_used_only_as_a_whole_identifier() {
        assert!(mentions("toUInt64(sum(calls)) AS n_calls", "calls"));
        assert!(mentions("calls", "calls"));
        assert!(!mentions("toUInt64(0) AS n_queries", "queries"));
        assert!(!mentions("sum(runtime_count)", "runtime"));
        assert!(mentions("quantilesTDigestMerge(0.5)(latency_digest)[1]", "latency_digest"));
    }

    #[test]
    fn union_branches_select_the_columns_the_statement_reads() {
        let (b, r) = buckets(range("2024-01-01T10:17:00Z", "2024-01-31T10:18:00Z"), Span::new(1, Unit::Day), "UTC");
        let sc = scope(r, Filters::default());
        let source = choose_ungrouped(&sc, Some(&b), false);
        assert!(matches!(source, Source::TenantHourly(_)));
        let (all, ..) = tool_calls_from(&sc, &source, Columns::All);
        assert!(all.contains("runtime_sum_ms") && all.contains("suggestions"), "{all}");
        let latency = ["toUInt64(sum(calls)) AS n_calls, toFloat64(sum(latency_sum_ms)) AS lat_sum_ms,
            quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest) AS lat_q, toUInt64(0) AS rt_count"];
        let (from, cond, _) = tool_calls_from(&sc, &source, Columns::UsedBy(&latency));
        assert_eq!(cond, "1");
        let lists: Vec<&str> = from.split("SELECT ").skip(1).map(|b| b.split(" FROM ").next().unwrap()).collect();
        assert_eq!(lists, ["hour AS minute, calls, latency_sum_ms, latency_digest", "minute, calls, latency_sum_ms, latency_digest"]);
        // The whole-tail read keeps its watermark besides.
        let w = whole_tail(&sc, &source, &b, Columns::UsedBy(&latency)).unwrap();
        assert!(w.from.contains("SELECT hour AS minute, calls, latency_sum_ms, latency_digest, latest_occurred_at FROM"), "{}", w.from);
        // Per server: the key column and the query sets when read.
        let source = choose_grouped(&sc, Grouping::Server, true);
        let (from, ..) = tool_calls_from(&sc, &source, Columns::UsedBy(&["toString(server_name)", "uniqExactIfMerge(queries)"]));
        assert!(from.contains("SELECT hour AS minute, server_name, queries FROM tool_calls_server_1h"), "{from}");
        // A statement that names no column (it counts rows) gets them all.
        let (from, ..) = tool_calls_from(&sc, &choose_ungrouped(&sc, Some(&b), false), Columns::UsedBy(&["count()"]));
        assert_eq!(from, all);
    }

    #[test]
    fn the_partial_last_block_of_a_series_is_read_whole_only_without_a_head() {
        let t = |s: &str| range(s, s).start;
        // Daily up to 10:18: the hours to 10:00, then 10:00-11:00 whole, kept if nothing is dated from 10:18 on.
        let (b, r) = buckets(range("2024-01-01T10:17:00Z", "2024-01-31T10:18:00Z"), Span::new(1, Unit::Day), "UTC");
        let source = choose_ungrouped(&scope(r, Filters::default()), Some(&b), false);
        let w = whole_tail(&scope(r, Filters::default()), &source, &b, Columns::All).unwrap();
        assert_eq!(w.blocks, range("2024-01-01T00:00:00Z", "2024-01-31T11:00:00Z"));
        assert_eq!((w.last_block, w.end), (t("2024-01-31T10:00:00Z"), t("2024-01-31T10:18:00Z")));
        // 5-minute buckets up to 10:18: the blocks to 10:15, then 10:15-10:20 whole.
        let (b, r) = buckets(range("2024-01-30T10:18:00Z", "2024-01-31T10:18:00Z"), Span::new(5, Unit::Minute), "UTC");
        let source = choose_ungrouped(&scope(r, Filters::default()), Some(&b), false);
        assert!(matches!(source, Source::TenantFiveMinutes(_)), "{source:?}");
        let w = whole_tail(&scope(r, Filters::default()), &source, &b, Columns::All).unwrap();
        assert_eq!((w.blocks.end, w.last_block, w.end), (t("2024-01-31T10:20:00Z"), t("2024-01-31T10:15:00Z"), t("2024-01-31T10:18:00Z")));
        // Not: a range ending on a block (no tail), a range with a head.
        let (b, r) = buckets(range("2024-01-30T10:20:00Z", "2024-01-31T10:20:00Z"), Span::new(5, Unit::Minute), "UTC");
        assert_eq!(
            whole_tail(&scope(r, Filters::default()), &choose_ungrouped(&scope(r, Filters::default()), Some(&b), false), &b, Columns::All),
            None
        );
        let r = range("2024-01-30T10:17:00Z", "2024-01-31T10:18:00Z");
        assert_eq!(
            whole_tail(&scope(r, Filters::default()), &choose_ungrouped(&scope(r, Filters::default()), None, false), &b, Columns::All),
            None
        );
        let (b, r) = buckets(range("2024-01-01T10:17:00Z", "2024-01-31T10:18:00Z"), Span::new(1, Unit::Day), "UTC");
        let by_project = Filters { project_id: Some(uuid::Uuid::nil()), ..Filters::default() };
        let source = choose_ungrouped(&scope(r, by_project.clone()), Some(&b), false);
        assert!(matches!(source, Source::NavigatorHourly(_)));
        // Filtered: the dimension-keyed hourly rollups have the watermark too
        // (0015; `tool_calls_1h` has `last_used`), the per-user one not.
        let w = whole_tail(&scope(r, by_project.clone()), &source, &b, Columns::All).unwrap();
        assert_eq!((w.blocks.end, w.last_block), (t("2024-01-31T11:00:00Z"), t("2024-01-31T10:00:00Z")));
        assert!(w.from.contains("FROM tool_calls_navigator_1h") && w.from.contains(", latest_occurred_at FROM"), "{}", w.from);
        let by_tool = Filters { tool_name: Some("search".into()), ..Filters::default() };
        let source = choose_ungrouped(&scope(r, by_tool.clone()), Some(&b), true);
        assert!(matches!(source, Source::ToolHourly(_)), "{source:?}");
        assert!(whole_tail(&scope(r, by_tool), &source, &b, Columns::All).unwrap().from.contains("FROM tool_calls_tool_1h"));
        let by_server = Filters { server_instance_id: Some(uuid::Uuid::nil()), ..Filters::default() };
        let source = choose_ungrouped(&scope(r, by_server.clone()), Some(&b), false);
        assert!(matches!(source, Source::Hourly(_)), "{source:?}");
        let w = whole_tail(&scope(r, by_server), &source, &b, Columns::All).unwrap();
        assert!(w.from.contains("last_used AS latest_occurred_at FROM tool_calls_1h"), "{}", w.from);
        let by_user = Filters { user_email: Some("a@example.com".into()), ..Filters::default() };
        let source = choose_ungrouped(&scope(r, by_user.clone()), Some(&b), false);
        assert!(matches!(source, Source::UserHourly(_)), "{source:?}");
        assert_eq!(whole_tail(&scope(r, by_user), &source, &b, Columns::All), None);
        // The queries, counted at their execution, have watermarks per
        // project and navigator too; queries that made proxy calls do not.
        let q = query_counts_whole_tail(&scope(r, by_project), &b).unwrap();
        assert_eq!((q.blocks.end, q.last_block), (t("2024-01-31T11:00:00Z"), t("2024-01-31T10:00:00Z")));
        assert!(q.from.contains("query_counts_1h"), "{}", q.from);
        let proxy = Scope { kinds: CallKinds::Proxy, ..scope(r, Filters::default()) };
        assert_eq!(query_counts_whole_tail(&proxy, &b), None);
    }

    #[test]
    fn whole_hour_zones_across_dst_read_hours() {
        for tz in ["Europe/Berlin", "America/New_York"] {
            let (b, r) = buckets(range("2024-03-01T00:00:00Z", "2024-04-02T00:00:00Z"), Span::new(1, Unit::Day), tz);
            assert!(split(r, Some(&b)).is_some(), "{tz}");
            let (b, r) = buckets(range("2024-03-30T00:00:00Z", "2024-04-01T00:00:00Z"), Span::new(1, Unit::Hour), tz);
            assert!(split(r, Some(&b)).is_some(), "{tz}");
        }
    }

    #[test]
    fn half_hour_zones_and_sub_hour_buckets_read_minutes() {
        let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"), Span::new(1, Unit::Day), "Asia/Kolkata");
        assert_eq!(split(r, Some(&b)), None);
        assert_eq!(choose(&scope(r, Filters::default()), Some(&b), false), Source::Minute);
        let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"), Span::new(1, Unit::Hour), "Asia/Kolkata");
        assert_eq!(split(r, Some(&b)), None);
        let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"), Span::new(5, Unit::Minute), "UTC");
        assert_eq!(split(r, Some(&b)), None);
        // 60-minute buckets are whole hours.
        let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"), Span::new(60, Unit::Minute), "UTC");
        assert!(split(r, Some(&b)).is_some());
    }

    #[test]
    fn totals_split_any_range_with_a_whole_hour() {
        let s = split(range("2024-01-01T10:17:00Z", "2024-01-02T10:18:00Z"), None).unwrap();
        assert_eq!(s.head, Some(range("2024-01-01T10:17:00Z", "2024-01-01T11:00:00Z")));
        assert_eq!(s.whole, range("2024-01-01T11:00:00Z", "2024-01-02T10:00:00Z"));
        assert_eq!(s.tail, Some(range("2024-01-02T10:00:00Z", "2024-01-02T10:18:00Z")));
        assert_eq!(split(range("2024-01-01T10:17:00Z", "2024-01-01T11:18:00Z"), None), None);
        assert!(split(range("2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"), None).is_some());
    }

    #[test]
    fn queries_filtered_by_tool_read_minutes() {
        let r = range("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z");
        let by_tool = Filters { tool_name: Some("search".into()), ..Filters::default() };
        assert_eq!(choose(&scope(r, by_tool.clone()), None, true), Source::Minute);
        assert!(matches!(choose(&scope(r, by_tool), None, false), Source::Hourly(_)));
        let by_project = Filters { project_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert!(matches!(choose(&scope(r, by_project.clone()), None, true), Source::Hourly(_)));
        assert_eq!(choose_queries(&scope(r, by_project.clone())), QueriesSource::Executions);
        let by_user = Filters { user_email: Some("u@example.com".into()), ..by_project.clone() };
        assert_eq!(choose_queries(&scope(r, by_user.clone())), QueriesSource::UserExecutions);
        let by_server = Filters { server_instance_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert_eq!(choose_queries(&scope(r, by_server.clone())), QueriesSource::CallSets);
        assert_eq!(choose_queries(&scope(r, Filters { tool_name: Some("search".into()), ..by_user })), QueriesSource::CallSets);
        // Proxy kinds count the queries that made proxy calls: the call
        // sets, never the tenant-level rollups (which have none).
        let proxy = Scope { kinds: CallKinds::Proxy, ..scope(r, by_project.clone()) };
        assert_eq!(choose_queries(&proxy), QueriesSource::CallSets);
        assert!(query_counts_from(&proxy, None).is_none());
        assert_eq!(choose_ungrouped(&proxy, None, true), Source::Minute);
        let proxy_tenant = Scope { kinds: CallKinds::Proxy, ..scope(r, Filters::default()) };
        assert_eq!(choose_ungrouped(&proxy_tenant, None, true), Source::Minute);
        assert!(matches!(choose_ungrouped(&proxy_tenant, None, false), Source::TenantHourly(_)));
        // A project filter reads the per-navigator rollup, a server filter
        // the dimension-keyed one.
        assert!(matches!(choose_ungrouped(&scope(r, by_project), None, true), Source::NavigatorHourly(_)));
        assert!(matches!(choose_ungrouped(&scope(r, by_server), None, false), Source::Hourly(_)));
    }

    #[test]
    fn sub_hour_buckets_over_a_whole_tenant_read_tenant_five_minutes() {
        let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-03T00:03:00Z"), Span::new(5, Unit::Minute), "UTC");
        let s = split_five_minutes(r, Some(&b)).unwrap();
        assert_eq!(s.whole, range("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"));
        assert_eq!((s.head, s.tail), (None, Some(range("2024-01-03T00:00:00Z", "2024-01-03T00:03:00Z"))));
        assert_eq!(choose_ungrouped(&scope(r, Filters::default()), Some(&b), true), Source::TenantFiveMinutes(s));
        let by_project = Filters { project_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert_eq!(choose_ungrouped(&scope(r, by_project), Some(&b), true), Source::Minute);
    }

    #[test]
    fn quarter_hour_zones_read_five_minutes_where_hours_do_not_answer() {
        // Asia/Kathmandu is +05:45: its local hours and days begin at :15 UTC.
        for f in [Span::new(1, Unit::Hour), Span::new(1, Unit::Day), Span::new(15, Unit::Minute)] {
            let (b, r) = buckets(range("2024-01-01T00:00:00Z", "2024-01-08T00:07:00Z"), f, "Asia/Kathmandu");
            assert_eq!(split(r, Some(&b)), None, "{f:?}");
            let s = split_five_minutes(r, Some(&b)).unwrap();
            assert!(is_whole_five_minutes(s.whole.start) && is_whole_five_minutes(s.whole.end), "{f:?}");
            assert_eq!(s.tail, Some(TimeRange { start: s.whole.end, end: r.end }), "{f:?}");
            assert_eq!(choose_ungrouped(&scope(r, Filters::default()), Some(&b), false), Source::TenantFiveMinutes(s), "{f:?}");
        }
        // A range with no whole 5-minute block: minutes throughout.
        let r = range("2024-01-01T10:01:00Z", "2024-01-01T10:04:00Z");
        assert_eq!(split_five_minutes(r, None), None);
        assert_eq!(choose_ungrouped(&scope(r, Filters::default()), None, false), Source::TenantMinute);
    }

    #[test]
    fn user_filters_read_the_user_rollups_where_they_answer() {
        let r = range("2024-01-01T00:17:00Z", "2024-01-31T10:18:00Z");
        let by_user = Filters { user_email: Some("u@example.com".into()), project_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        let s = scope(r, by_user.clone());
        assert!(matches!(choose_ungrouped(&s, None, true), Source::UserHourly(sp) if sp.head.is_some() && sp.tail.is_some()));
        assert!(matches!(choose_grouped(&s, Grouping::Navigator, false), Source::UserHourly(_)));
        assert!(matches!(choose_navigator_keys(&s, None), Source::UserHourly(_)));
        // What the user rollups do not keep: the raw calls.
        assert_eq!(choose_grouped(&s, Grouping::Tool, false), Source::Raw);
        assert_eq!(choose(&s, None, false), Source::Raw);
        let with_tool = Filters { tool_name: Some("search".into()), ..by_user.clone() };
        assert_eq!(choose_ungrouped(&scope(r, with_tool), None, false), Source::Raw);
        let proxy = Scope { kinds: CallKinds::Proxy, ..s.clone() };
        assert_eq!(choose_ungrouped(&proxy, None, true), Source::Raw);
        let (b, r5) = buckets(range("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"), Span::new(5, Unit::Minute), "UTC");
        assert_eq!(choose_ungrouped(&scope(r5, by_user.clone()), Some(&b), false), Source::Raw);
        let by_id = Filters { user_token_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert!(matches!(choose_ungrouped(&scope(r, by_id), None, false), Source::UserHourly(_)));
        let (from, _, _) = executions_from(&s, None, ExecutionKeys::Navigator, Columns::All);
        assert!(from.contains("agent_executions_user_1h"), "{from}");
        let (from, _, _) = executions_from(&s, None, ExecutionKeys::Other, Columns::All);
        assert!(!from.contains("agent_executions_user_1h") && from.contains("agent_executions"), "{from}");
    }

    #[test]
    fn lists_by_server_or_navigator_read_their_rollups() {
        let r = range("2024-01-01T00:17:00Z", "2024-01-08T00:18:00Z");
        assert!(matches!(choose_grouped(&scope(r, Filters::default()), Grouping::Server, true), Source::ServerHourly(_)));
        let by_server = Filters { server_instance_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert!(matches!(choose_grouped(&scope(r, by_server), Grouping::Server, true), Source::ServerHourly(_)));
        let by_project = Filters { project_id: Some(uuid::Uuid::new_v4()), ..Filters::default() };
        assert_eq!(choose_grouped(&scope(r, by_project.clone()), Grouping::Server, true), Source::Minute);
        assert!(matches!(choose_grouped(&scope(r, by_project.clone()), Grouping::Navigator, false), Source::NavigatorHourly(_)));
        assert!(matches!(choose_grouped(&scope(r, by_project), Grouping::Tool, false), Source::Hourly(_)));
        assert!(matches!(choose_grouped(&scope(r, Filters::default()), Grouping::Tool, false), Source::ToolHourly(_)));
        let by_tool = Filters { tool_name: Some("search".into()), ..Filters::default() };
        assert!(matches!(choose_ungrouped(&scope(r, by_tool), None, true), Source::ToolHourly(_)));
        // Less than a whole hour: the minute rollup.
        let short = range("2024-01-01T00:17:00Z", "2024-01-01T00:48:00Z");
        assert_eq!(choose_grouped(&scope(short, Filters::default()), Grouping::Server, true), Source::Minute);
    }

    #[test]
    fn execution_series_read_whole_hours_from_an_hourly_rollup() {
        let (b, r) = buckets(range("2024-01-01T00:17:00Z", "2024-01-08T00:18:00Z"), Span::new(1, Unit::Hour), "UTC");
        let all = scope(r, Filters::default());
        for keys in [ExecutionKeys::Navigator, ExecutionKeys::Other] {
            let (from, _, _) = executions_from(&all, Some(&b), keys, Columns::All);
            assert!(from.contains("FROM agent_executions_1h") && from.contains("FROM agent_executions_1m"), "{from}");
            let w = executions_whole_tail(&all, Some(&b), keys, Columns::All).unwrap();
            assert_eq!(w.last_block, range("2024-01-08T00:00:00Z", "2024-01-08T00:00:00Z").start);
        }
        // Grouped by the executing user: the per-executor rollup.
        let (from, _, _) = executions_from(&all, Some(&b), ExecutionKeys::User, Columns::All);
        assert!(from.contains("FROM agent_executions_executor_1h") && from.contains("FROM agent_executions_1m"), "{from}");
        let w = executions_whole_tail(&all, Some(&b), ExecutionKeys::User, Columns::All).unwrap();
        assert!(w.from.contains("FROM agent_executions_executor_1h"), "{}", w.from);
        // Buckets that cut hours: the minute rollup.
        let (b5, r5) = buckets(range("2024-01-07T00:17:00Z", "2024-01-08T00:18:00Z"), Span::new(5, Unit::Minute), "UTC");
        assert_eq!(executions_from(&scope(r5, Filters::default()), Some(&b5), ExecutionKeys::Other, Columns::All).0, "agent_executions_1m");
    }

    #[test]
    fn grafana_series_grouped_by_a_question_read_its_rollup() {
        let (b, r) = buckets(range("2024-01-01T00:17:00Z", "2024-01-08T00:18:00Z"), Span::new(1, Unit::Hour), "UTC");
        let all = scope(r, Filters::default());
        let hourly = |s: &Source| matches!(s, Source::Hourly(_));
        assert!(matches!(choose_grouped_series(&all, Some(&b), Grouping::Navigator, true), Source::NavigatorHourly(_)));
        assert!(matches!(choose_grouped_series(&all, Some(&b), Grouping::Tool, true), Source::ToolHourly(_)));
        assert!(matches!(choose_grouped_series(&all, Some(&b), Grouping::Server, false), Source::ServerHourly(_)));
        assert!(matches!(choose_grouped_series(&all, Some(&b), Grouping::ErrorType, true), Source::ErrorTypeHourly(_)));
        // `tool_calls_server_1h` keeps no latency.
        assert!(hourly(&choose_grouped_series(&all, Some(&b), Grouping::Server, true)));
        // Filters the rollup lacks: the dimension-keyed one; a user filter:
        // the user rollup for project or navigator groups.
        let by_tool = scope(r, Filters { tool_name: Some("search".into()), ..Filters::default() });
        assert!(hourly(&choose_grouped_series(&by_tool, Some(&b), Grouping::Navigator, false)));
        assert!(matches!(choose_grouped_series(&by_tool, Some(&b), Grouping::Tool, false), Source::ToolHourly(_)));
        let by_project = scope(r, Filters { project_id: Some(uuid::Uuid::nil()), ..Filters::default() });
        assert!(hourly(&choose_grouped_series(&by_project, Some(&b), Grouping::Server, false)));
        assert!(matches!(choose_grouped_series(&by_project, Some(&b), Grouping::ErrorType, false), Source::ErrorTypeHourly(_)));
        assert!(hourly(&choose_grouped_series(&by_tool, Some(&b), Grouping::ErrorType, false)));
        let by_user = scope(r, Filters { user_email: Some("a@example.com".into()), ..Filters::default() });
        assert!(matches!(choose_grouped_series(&by_user, Some(&b), Grouping::Navigator, false), Source::UserHourly(_)));
        assert_eq!(choose_grouped_series(&by_user, Some(&b), Grouping::ErrorType, false), Source::Raw);
        // Buckets that cut hours: the minute rollup.
        let (b5, r5) = buckets(range("2024-01-07T00:17:00Z", "2024-01-08T00:18:00Z"), Span::new(5, Unit::Minute), "UTC");
        assert_eq!(choose_grouped_series(&scope(r5, Filters::default()), Some(&b5), Grouping::Tool, false), Source::Minute);
    }
}
