//! 0004: hourly tool-call rollups, so that a month-long graph reads ~720
//! hours instead of ~43,000 minutes, and a narrow per-query table that makes
//! exact distinct-query counts cheap.
//!
//! * `tool_calls_1h`: the columns and sort key of `tool_calls_1m` with
//!   `hour` for `minute` and without the distinct-query state. Reading the
//!   exact `uniqExactIf` state cost more than computing from raw events, so
//!   distinct queries come from the next table instead.
//! * `tool_call_queries_1h`: one row per (tenant, hour, project, navigator
//!   instance, query) with the number of tool and proxy calls. A count of
//!   distinct queries over a range is `uniqExact(query_id)` over these rows:
//!   exact (the same query in two hours or two unmerged parts is counted
//!   once) and over about one row per query instead of one per call.
//!   `tool_calls > 0` / `proxy_calls > 0` select the call kinds (a row in
//!   one part may have only proxy calls, another part the tool calls of the
//!   same query: the condition is per row, the dedup across rows, so the
//!   answer is still exact).
//! * Same deduplication window, monthly partitions and 400-day TTL as 0002.
//!
//! Rows already in `tool_calls` when the views are created are copied by a
//! [`Backfill`](super::Backfill): the runner records a cutoff, creates the
//! view, and copies the rows with `ingested_at` before the cutoff (see
//! `Backfill` for the exactness argument and its caveat).

use super::tool_call_aggregates::{COLUMNS as AGGREGATE_COLUMNS, SELECT as AGGREGATES};
use super::{Backfill, Migration};

pub struct HourlyRollups;

fn tool_calls_1h_select() -> String {
    format!(
        "SELECT
    tenant_id,
    toStartOfHour(occurred_at) AS hour,
    project_id, navigator_id, navigator_instance_id, server_id, server_instance_id, server_name,
    tool_id, tool_name, call_kind, error_type, organization_id,
    {AGGREGATES},
    max(occurred_at) AS last_used
FROM tool_calls"
    )
}

const TOOL_CALLS_1H_GROUP: &str = "GROUP BY tenant_id, hour, project_id, navigator_id, navigator_instance_id, server_id,
         server_instance_id, server_name, tool_id, tool_name, call_kind, error_type, organization_id";

const QUERIES_1H_SELECT: &str = "SELECT
    tenant_id,
    toStartOfHour(occurred_at) AS hour,
    project_id, navigator_instance_id, query_id,
    toUInt64(countIf(call_kind = 'tool')) AS tool_calls,
    toUInt64(countIf(call_kind != 'tool')) AS proxy_calls
FROM tool_calls";

const QUERIES_1H_WHERE: &str = "query_id != toUUID('00000000-0000-0000-0000-000000000000')";

const QUERIES_1H_GROUP: &str = "GROUP BY tenant_id, hour, project_id, navigator_instance_id, query_id";

impl Migration for HourlyRollups {
    fn version(&self) -> u32 {
        4
    }
    fn name(&self) -> &'static str {
        "hourly_rollups"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS tool_calls_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                server_id UUID,
                server_instance_id UUID,
                server_name LowCardinality(String),
                tool_id UUID,
                tool_name LowCardinality(String),
                call_kind LowCardinality(String),
                error_type LowCardinality(String),
                organization_id UUID,
                {AGGREGATE_COLUMNS},
                last_used SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, project_id, navigator_instance_id, server_instance_id, tool_name,
                      navigator_id, server_id, server_name, tool_id, call_kind, error_type, organization_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            ),
            "CREATE TABLE IF NOT EXISTS tool_call_queries_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                project_id UUID,
                navigator_instance_id UUID,
                query_id UUID,
                tool_calls SimpleAggregateFunction(sum, UInt64),
                proxy_calls SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, project_id, navigator_instance_id, query_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        let select = tool_calls_1h_select();
        vec![
            Backfill {
                view: "tool_calls_1h_mv",
                target: "tool_calls_1h",
                create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_1h_mv TO tool_calls_1h AS {select} {TOOL_CALLS_1H_GROUP}"),
                select_before_cutoff: format!("{select} WHERE ingested_at < fromUnixTimestamp64Milli({{cutoff_ms:Int64}}, 'UTC') {TOOL_CALLS_1H_GROUP}"),
            },
            Backfill {
                view: "tool_call_queries_1h_mv",
                target: "tool_call_queries_1h",
                create_view: format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS tool_call_queries_1h_mv TO tool_call_queries_1h AS {QUERIES_1H_SELECT} WHERE {QUERIES_1H_WHERE} {QUERIES_1H_GROUP}"
                ),
                select_before_cutoff: format!(
                    "{QUERIES_1H_SELECT} WHERE {QUERIES_1H_WHERE} AND ingested_at < fromUnixTimestamp64Milli({{cutoff_ms:Int64}}, 'UTC') {QUERIES_1H_GROUP}"
                ),
            },
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_1h_mv; DROP VIEW tool_call_queries_1h_mv; DROP TABLE tool_calls_1h; DROP TABLE tool_call_queries_1h; \
         ALTER TABLE rollup_backfills DELETE WHERE view IN ('tool_calls_1h_mv', 'tool_call_queries_1h_mv')"
    }
}
