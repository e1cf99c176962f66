//! 0011: rollups shaped for the questions the graphs ask, each with a few
//! key columns, so that a month-long graph reads hundreds or thousands of
//! rows instead of millions (the dimension-keyed `tool_calls_1h` and
//! `tool_calls_1m` hold about as many rows as events on varied traffic, and
//! `queries_1m` one row per query).
//!
//! * `query_counts_1h` / `query_counts_1m`: queries counted at their own
//!   time, from their `navigator_query` execution (one event per query,
//!   SEED_SPEC §4.3 and §4.5: `total_queries` from executions), per
//!   (tenant, hour or minute, project, navigator, navigator instance).
//!   Counting queries over any range or bucket is then a sum, exact, and a
//!   query with zero tool calls counts like any other. A query counts once,
//!   in the hour (minute) of its execution, even when its tool calls run
//!   into the next bucket.
//! * `tool_calls_server_1h`: tool calls per (tenant, hour, call kind,
//!   server, server instance, server name) with counts and the exact set
//!   of the queries that called the server (`uniqExactIf` state, the type
//!   of `tool_calls_1m.queries`, so the two union for the minutes at either
//!   end of a range): top servers and the servers list read a few rows per
//!   server-hour.
//! * `tool_calls_navigator_1h`: the tool-call aggregates (counts, sums,
//!   t-digest) per (tenant, hour, call kind, project, navigator, navigator
//!   instance), for graphs and totals filtered by project or navigator
//!   instance and the per-project and per-navigator lists.
//! * `tool_calls_tool_1h`: the same aggregates and the exact query set per
//!   (tenant, hour, call kind, tool id, tool name), for graphs and totals
//!   filtered by tool (the queries that used the tool) and the tools list.
//!
//! Same deduplication window, monthly partitions and 400-day TTL as the
//! other rollups; every view is backfilled from the rows already in its
//! source table (see [`Backfill`]).

use super::tool_call_aggregates::{COLUMNS as AGGREGATES_COLUMNS, SELECT as AGGREGATES};
use super::{Backfill, Migration};

pub struct QuestionRollups;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

const CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

/// `(table, view, time column, its expression)` of the query counts.
const QUERY_COUNTS: [(&str, &str, &str, &str); 2] = [
    ("query_counts_1h", "query_counts_1h_mv", "hour", "toStartOfHour(occurred_at)"),
    ("query_counts_1m", "query_counts_1m_mv", "minute", "toStartOfMinute(occurred_at)"),
];

fn query_counts_select(time: &str, expr: &str) -> String {
    format!(
        "SELECT tenant_id, {expr} AS {time}, project_id, navigator_id, navigator_instance_id, toUInt64(count()) AS queries
FROM agent_executions
WHERE execution_kind = 'navigator_query' AND execution_id != {NIL}"
    )
}

const SERVER_SELECT: &str = "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, server_id, server_instance_id, server_name,
    toUInt64(count()) AS calls,
    toUInt64(countIf(NOT success)) AS errors,
    uniqExactIfState(query_id, toUInt8(query_id != toUUID('00000000-0000-0000-0000-000000000000'))) AS queries
FROM tool_calls";

const SERVER_GROUP: &str = "GROUP BY tenant_id, hour, call_kind, server_id, server_instance_id, server_name";

fn navigator_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, project_id, navigator_id, navigator_instance_id,
    {AGGREGATES}
FROM tool_calls"
    )
}

fn tool_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, tool_id, tool_name,
    {AGGREGATES},
    uniqExactIfState(query_id, toUInt8(query_id != {NIL})) AS queries
FROM tool_calls"
    )
}

const TOOL_GROUP: &str = "GROUP BY tenant_id, hour, call_kind, tool_id, tool_name";

const NAVIGATOR_GROUP: &str = "GROUP BY tenant_id, hour, call_kind, project_id, navigator_id, navigator_instance_id";

/// A tool-call view of this migration and its query: `select` (ending
/// `FROM tool_calls`), then `group`. Migration 0015 sets these queries again
/// with a watermark, from the same strings.
pub(super) struct CallView {
    pub table: &'static str,
    pub view: &'static str,
    pub select: String,
    pub group: &'static str,
}

/// The per-server, per-navigator and per-tool hourly views.
pub(super) fn call_views() -> [CallView; 3] {
    [
        CallView { table: "tool_calls_server_1h", view: "tool_calls_server_1h_mv", select: SERVER_SELECT.into(), group: SERVER_GROUP },
        CallView {
            table: "tool_calls_navigator_1h",
            view: "tool_calls_navigator_1h_mv",
            select: navigator_select(),
            group: NAVIGATOR_GROUP,
        },
        CallView { table: "tool_calls_tool_1h", view: "tool_calls_tool_1h_mv", select: tool_select(), group: TOOL_GROUP },
    ]
}

impl Migration for QuestionRollups {
    fn version(&self) -> u32 {
        11
    }
    fn name(&self) -> &'static str {
        "question_rollups"
    }
    fn statements(&self) -> Vec<String> {
        let mut out: Vec<String> = QUERY_COUNTS
            .iter()
            .map(|(table, _, time, _)| {
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                tenant_id UUID,
                {time} DateTime('UTC'),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                queries SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM({time})
            ORDER BY (tenant_id, {time}, project_id, navigator_instance_id, navigator_id)
            TTL {time} + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                )
            })
            .collect();
        out.push(
            "CREATE TABLE IF NOT EXISTS tool_calls_server_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                server_id UUID,
                server_instance_id UUID,
                server_name LowCardinality(String),
                calls SimpleAggregateFunction(sum, UInt64),
                errors SimpleAggregateFunction(sum, UInt64),
                queries AggregateFunction(uniqExactIf, UUID, UInt8)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, call_kind, server_id, server_instance_id, server_name)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        );
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS tool_calls_navigator_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                {AGGREGATES_COLUMNS}
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, call_kind, project_id, navigator_instance_id, navigator_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
        ));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS tool_calls_tool_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                tool_id UUID,
                tool_name LowCardinality(String),
                {AGGREGATES_COLUMNS},
                queries AggregateFunction(uniqExactIf, UUID, UInt8)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, call_kind, tool_name, tool_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
        ));
        out
    }
    fn backfills(&self) -> Vec<Backfill> {
        let mut out: Vec<Backfill> = QUERY_COUNTS
            .iter()
            .map(|(table, view, time, expr)| {
                let select = query_counts_select(time, expr);
                let group = format!("GROUP BY tenant_id, {time}, project_id, navigator_id, navigator_instance_id");
                Backfill {
                    view,
                    target: table,
                    create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {table} AS {select} {group}"),
                    select_before_cutoff: format!("{select} AND {CUTOFF} {group}"),
                }
            })
            .collect();
        for v in call_views() {
            out.push(Backfill {
                view: v.view,
                target: v.table,
                create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {} TO {} AS {} {}", v.view, v.table, v.select, v.group),
                select_before_cutoff: format!("{} WHERE {CUTOFF} {}", v.select, v.group),
            });
        }
        out
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW query_counts_1h_mv; DROP VIEW query_counts_1m_mv; DROP VIEW tool_calls_server_1h_mv; DROP VIEW tool_calls_navigator_1h_mv; \
         DROP VIEW tool_calls_tool_1h_mv; DROP TABLE query_counts_1h; DROP TABLE query_counts_1m; DROP TABLE tool_calls_server_1h; \
         DROP TABLE tool_calls_navigator_1h; DROP TABLE tool_calls_tool_1h; ALTER TABLE rollup_backfills DELETE WHERE view IN \
         ('query_counts_1h_mv', 'query_counts_1m_mv', 'tool_calls_server_1h_mv', 'tool_calls_navigator_1h_mv', 'tool_calls_tool_1h_mv')"
    }
}
