//! 0006: what the query logs and traces read, and the query texts kept
//! apart from the metering rows.
//!
//! * `query_events`: one row per event that belongs to a query (a tool call
//!   with a `query_id`, or a `navigator_query` execution, whose
//!   `execution_id` is the query id), with the few columns a query log and a
//!   trace show. Sorted by `(tenant_id, project_id, occurred_at, query_id)`
//!   so that the newest queries of a project are read in order without
//!   aggregating the whole project (see `docs/api.md`, "Query logs"); a
//!   bloom filter on `query_id` finds one query's events for the detail and
//!   trace endpoints. Filled by two materialized views (with backfills of
//!   the rows already there), same deduplication window, partitions and
//!   400-day TTL as the raw tables.
//! * `query_texts`: the `query_text` of navigator queries, one row per
//!   query (`ReplacingMergeTree`, so a redelivered text replaces itself).
//!   Content that may be personal data, so it has its own retention:
//!   `TTL expire_at`, set by the ingest worker from
//!   `--query-text-retention-days` (default 30); a writer that does not set
//!   it gets 30 days from `occurred_at`. Readers also skip expired rows that
//!   a merge has not removed yet.

use super::{Backfill, Migration};

pub struct QueryLogs;

const FROM_TOOL_CALLS: &str = "SELECT
    tenant_id, project_id, occurred_at, query_id, event_id,
    'tool_call' AS source, call_kind,
    navigator_instance_id, navigator_name,
    server_id, server_name, server_instance_id, tool_name,
    latency_ms, success, error_message, suggestions_count
FROM tool_calls
WHERE query_id != toUUID('00000000-0000-0000-0000-000000000000')";

const FROM_EXECUTIONS: &str = "SELECT
    tenant_id, project_id, occurred_at, execution_id AS query_id, event_id,
    'execution' AS source, '' AS call_kind,
    navigator_instance_id, '' AS navigator_name,
    toUUID('00000000-0000-0000-0000-000000000000') AS server_id, '' AS server_name,
    toUUID('00000000-0000-0000-0000-000000000000') AS server_instance_id, '' AS tool_name,
    ifNull(duration_ms, 0) AS latency_ms, status != 'failed' AS success, error_message, toUInt32(0) AS suggestions_count
FROM agent_executions
WHERE execution_kind = 'navigator_query'";

const BEFORE_CUTOFF: &str = "AND ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

impl Migration for QueryLogs {
    fn version(&self) -> u32 {
        6
    }
    fn name(&self) -> &'static str {
        "query_logs"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS query_events (
                tenant_id UUID,
                project_id UUID,
                occurred_at DateTime64(3, 'UTC'),
                query_id UUID,
                event_id UUID,
                source LowCardinality(String),
                call_kind LowCardinality(String),
                navigator_instance_id UUID,
                navigator_name LowCardinality(String),
                server_id UUID,
                server_name LowCardinality(String),
                server_instance_id UUID,
                tool_name LowCardinality(String),
                latency_ms Float64,
                success Bool,
                error_message String,
                suggestions_count UInt32,
                INDEX query_id_bloom query_id TYPE bloom_filter(0.001) GRANULARITY 1
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(occurred_at)
            ORDER BY (tenant_id, project_id, occurred_at, query_id)
            TTL toDateTime(occurred_at) + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
            "CREATE TABLE IF NOT EXISTS query_texts (
                tenant_id UUID,
                query_id UUID,
                project_id UUID,
                occurred_at DateTime64(3, 'UTC'),
                query_text String,
                expire_at DateTime('UTC') DEFAULT toDateTime(occurred_at) + INTERVAL 30 DAY
            ) ENGINE = ReplacingMergeTree
            ORDER BY (tenant_id, query_id)
            TTL expire_at"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        vec![
            Backfill {
                view: "query_events_tool_calls_mv",
                target: "query_events",
                create_view: format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS query_events_tool_calls_mv TO query_events AS {FROM_TOOL_CALLS}"
                ),
                select_before_cutoff: format!("{FROM_TOOL_CALLS} {BEFORE_CUTOFF}"),
            },
            Backfill {
                view: "query_events_executions_mv",
                target: "query_events",
                create_view: format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS query_events_executions_mv TO query_events AS {FROM_EXECUTIONS}"
                ),
                select_before_cutoff: format!("{FROM_EXECUTIONS} {BEFORE_CUTOFF}"),
            },
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW query_events_tool_calls_mv; DROP VIEW query_events_executions_mv; DROP TABLE query_events; DROP TABLE query_texts; \
         ALTER TABLE rollup_backfills DELETE WHERE view IN ('query_events_tool_calls_mv', 'query_events_executions_mv')"
    }
}
