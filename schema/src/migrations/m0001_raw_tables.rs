//! 0001: the raw tables, one row per unique event: the source of truth that
//! every rollup can be rebuilt from.
//!
//! * `ORDER BY (tenant_id, occurred_at, event_id)`: every query names one
//!   tenant and a time range, so both prune granules; `event_id` last makes
//!   the ingest worker's duplicate look-up cheap together with the bloom
//!   filter index on it.
//! * `PARTITION BY toYYYYMM(occurred_at)`: monthly parts match billing
//!   periods and make retention a partition drop.
//! * `TTL occurred_at + 400 days`: thirteen months of history (a year-over-
//!   year comparison plus the current month); change with a new migration.
//! * `non_replicated_deduplication_window`: a retried INSERT with the same
//!   `insert_deduplication_token` is dropped (see docs/ingest.md).

use super::Migration;

pub struct RawTables;

impl Migration for RawTables {
    fn version(&self) -> u32 {
        1
    }
    fn name(&self) -> &'static str {
        "raw_tables"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS tool_calls (
                event_id UUID,
                occurred_at DateTime64(3, 'UTC'),
                tenant_id UUID,
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                navigator_name LowCardinality(String),
                query_id UUID,
                call_kind LowCardinality(String),
                suggestions_count UInt32,
                server_id UUID,
                server_name LowCardinality(String),
                server_instance_id UUID,
                tool_id UUID,
                tool_name LowCardinality(String),
                user_token_id UUID,
                user_email String,
                organization_id UUID,
                agent_id UUID,
                agent_execution_id UUID,
                latency_ms Float64,
                runtime_ms Nullable(Float64),
                success Bool,
                error_type LowCardinality(String),
                error_message String,
                ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
                INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(occurred_at)
            ORDER BY (tenant_id, occurred_at, event_id)
            TTL toDateTime(occurred_at) + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
            "CREATE TABLE IF NOT EXISTS agent_executions (
                event_id UUID,
                occurred_at DateTime64(3, 'UTC'),
                tenant_id UUID,
                execution_id UUID,
                execution_kind LowCardinality(String),
                billable Bool,
                organization_id UUID,
                user_id UUID,
                agent_id UUID,
                conversation_id UUID,
                plan_id UUID,
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                user_token_id UUID,
                user_email String,
                model LowCardinality(String),
                input_tokens UInt64,
                output_tokens UInt64,
                total_tokens UInt64,
                cost_usd Decimal(18, 6),
                messages_count UInt32,
                duration_ms Nullable(Float64),
                status LowCardinality(String),
                error_type LowCardinality(String),
                error_message String,
                ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
                INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1
            ) ENGINE = MergeTree
            PARTITION BY toYYYYMM(occurred_at)
            ORDER BY (tenant_id, occurred_at, event_id)
            TTL toDateTime(occurred_at) + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP TABLE tool_calls; DROP TABLE agent_executions (after 0002's views are dropped)"
    }
}
