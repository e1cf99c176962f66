//! 0007: `queries_1m`, one row per (tenant, minute, project, navigator,
//! navigator instance, query) fed from **both** events that show a query:
//! its `navigator_query` agent execution (`execution_id` is the query id)
//! and its tool calls (`query_id`). Before this, distinct queries were
//! counted from tool calls only, so a query that made no tool call was
//! missing from `total_queries`, the queries graphs and the calls-per-query
//! denominator (SEED_SPEC §4.3 says it counts).
//!
//! * `executions`, `tool_calls`, `proxy_calls`: what the row's minute saw
//!   of the query. A count of distinct queries over any set of minutes is
//!   `uniqExact(query_id)` over the rows, so a query whose execution and
//!   calls fall in different minutes, hours or buckets is counted once per
//!   range or bucket it shows up in, like the tool-call sets before.
//! * Minute grain: a query's events are seconds apart, so minute rows are
//!   barely more than hour rows (one per query), and one table answers
//!   every bucket width and time zone, 5-minute buckets included, with no
//!   raw edge reads.
//! * Same deduplication window, monthly partitions and 400-day TTL as
//!   0002/0004; both views are backfilled (see `Backfill`).
//!
//! `tool_call_queries_1h` (0004) is no longer read by the API; it is kept
//! until a later migration drops it, so a rollback of the API still works.

use super::{Backfill, Migration};

pub struct QueryMinutes;

const FROM_CALLS: &str = "SELECT
    tenant_id,
    toStartOfMinute(occurred_at) AS minute,
    project_id, navigator_id, navigator_instance_id, query_id,
    toUInt64(0) AS executions,
    toUInt64(countIf(call_kind = 'tool')) AS tool_calls,
    toUInt64(countIf(call_kind != 'tool')) AS proxy_calls
FROM tool_calls WHERE query_id != toUUID('00000000-0000-0000-0000-000000000000')";

const FROM_EXECUTIONS: &str = "SELECT
    tenant_id,
    toStartOfMinute(occurred_at) AS minute,
    project_id, navigator_id, navigator_instance_id, execution_id AS query_id,
    toUInt64(count()) AS executions,
    toUInt64(0) AS tool_calls,
    toUInt64(0) AS proxy_calls
FROM agent_executions
WHERE execution_kind = 'navigator_query' AND execution_id != toUUID('00000000-0000-0000-0000-000000000000')";

const GROUP: &str = "GROUP BY tenant_id, minute, project_id, navigator_id, navigator_instance_id, query_id";

const CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

impl Migration for QueryMinutes {
    fn version(&self) -> u32 {
        7
    }
    fn name(&self) -> &'static str {
        "query_minutes"
    }
    fn statements(&self) -> Vec<String> {
        vec!["CREATE TABLE IF NOT EXISTS queries_1m (
                tenant_id UUID,
                minute DateTime('UTC'),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                query_id UUID,
                executions SimpleAggregateFunction(sum, UInt64),
                tool_calls SimpleAggregateFunction(sum, UInt64),
                proxy_calls SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(minute)
            ORDER BY (tenant_id, minute, project_id, navigator_instance_id, navigator_id, query_id)
            TTL minute + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            .into()]
    }
    fn backfills(&self) -> Vec<Backfill> {
        [("queries_1m_calls_mv", FROM_CALLS), ("queries_1m_executions_mv", FROM_EXECUTIONS)]
            .into_iter()
            .map(|(view, select)| Backfill {
                view,
                target: "queries_1m",
                create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO queries_1m AS {select} {GROUP}"),
                select_before_cutoff: format!("{select} AND {CUTOFF} {GROUP}"),
            })
            .collect()
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW queries_1m_calls_mv; DROP VIEW queries_1m_executions_mv; DROP TABLE queries_1m; \
         ALTER TABLE rollup_backfills DELETE WHERE view IN ('queries_1m_calls_mv', 'queries_1m_executions_mv')"
    }
}
