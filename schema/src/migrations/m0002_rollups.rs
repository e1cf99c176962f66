//! 0002: per-minute rollups fed by materialized views; the analytics graphs,
//! totals and the plan-limit counters read these instead of raw events.
//!
//! * One row per (tenant, minute, dimensions the endpoints filter or group
//!   by). Counts and sums are `SimpleAggregateFunction(sum, ...)`, latency is
//!   a t-digest state (p50/p95/p99), distinct queries an exact set state (`uniqExactIfMerge`; the
//!   duration digest likewise is read with `quantilesTDigestIfMerge`).
//!   Readers must aggregate (`sum`, `quantilesTDigestMerge`, `uniqExactMerge`)
//!   because parts merge in the background.
//! * Money is summed as `Decimal(38, 6)`: exact, never a float.
//! * The targets carry `non_replicated_deduplication_window` so that an
//!   INSERT retried with the same deduplication token (and
//!   `deduplicate_blocks_in_dependent_materialized_views = 1`) is dropped
//!   from the rollup too, not only from the raw table.
//! * Same monthly partitions and 400-day TTL as the raw tables.

use super::Migration;

pub struct Rollups;

impl Migration for Rollups {
    fn version(&self) -> u32 {
        2
    }
    fn name(&self) -> &'static str {
        "minute_rollups"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS tool_calls_1m (
                tenant_id UUID,
                minute DateTime('UTC'),
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
                calls SimpleAggregateFunction(sum, UInt64),
                errors SimpleAggregateFunction(sum, UInt64),
                latency_sum_ms SimpleAggregateFunction(sum, Float64),
                latency_digest AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
                runtime_sum_ms SimpleAggregateFunction(sum, Float64),
                runtime_count SimpleAggregateFunction(sum, UInt64),
                suggestions SimpleAggregateFunction(sum, UInt64),
                queries AggregateFunction(uniqExactIf, UUID, UInt8),
                last_used SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(minute)
            ORDER BY (tenant_id, minute, project_id, navigator_instance_id, server_instance_id, tool_name,
                      navigator_id, server_id, server_name, tool_id, call_kind, error_type, organization_id)
            TTL minute + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_1m_mv TO tool_calls_1m AS
            SELECT
                tenant_id,
                toStartOfMinute(occurred_at) AS minute,
                project_id, navigator_id, navigator_instance_id, server_id, server_instance_id, server_name,
                tool_id, tool_name, call_kind, error_type, organization_id,
                toUInt64(count()) AS calls,
                toUInt64(countIf(NOT success)) AS errors,
                sum(latency_ms) AS latency_sum_ms,
                quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_digest,
                sum(ifNull(runtime_ms, 0)) AS runtime_sum_ms,
                toUInt64(count(runtime_ms)) AS runtime_count,
                toUInt64(sum(suggestions_count)) AS suggestions,
                uniqExactIfState(query_id, query_id != toUUID('00000000-0000-0000-0000-000000000000')) AS queries,
                max(occurred_at) AS last_used
            FROM tool_calls
            GROUP BY tenant_id, minute, project_id, navigator_id, navigator_instance_id, server_id,
                     server_instance_id, server_name, tool_id, tool_name, call_kind, error_type, organization_id"
                .into(),
            "CREATE TABLE IF NOT EXISTS agent_executions_1m (
                tenant_id UUID,
                minute DateTime('UTC'),
                organization_id UUID,
                user_id UUID,
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                execution_kind LowCardinality(String),
                billable Bool,
                status LowCardinality(String),
                model LowCardinality(String),
                error_type LowCardinality(String),
                executions SimpleAggregateFunction(sum, UInt64),
                input_tokens SimpleAggregateFunction(sum, UInt64),
                output_tokens SimpleAggregateFunction(sum, UInt64),
                total_tokens SimpleAggregateFunction(sum, UInt64),
                cost_usd SimpleAggregateFunction(sum, Decimal(38, 6)),
                messages SimpleAggregateFunction(sum, UInt64),
                duration_sum_ms SimpleAggregateFunction(sum, Float64),
                duration_count SimpleAggregateFunction(sum, UInt64),
                duration_digest AggregateFunction(quantilesTDigestIf(0.5, 0.95, 0.99), Float64, UInt8)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(minute)
            ORDER BY (tenant_id, minute, organization_id, user_id, project_id, navigator_instance_id,
                      navigator_id, execution_kind, billable, status, model, error_type)
            TTL minute + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS agent_executions_1m_mv TO agent_executions_1m AS
            SELECT
                tenant_id,
                toStartOfMinute(occurred_at) AS minute,
                organization_id, user_id, project_id, navigator_id, navigator_instance_id,
                execution_kind, billable, status, model, error_type,
                toUInt64(count()) AS executions,
                toUInt64(sum(input_tokens)) AS input_tokens,
                toUInt64(sum(output_tokens)) AS output_tokens,
                toUInt64(sum(total_tokens)) AS total_tokens,
                toDecimal128(sum(cost_usd), 6) AS cost_usd,
                toUInt64(sum(messages_count)) AS messages,
                sum(ifNull(duration_ms, 0)) AS duration_sum_ms,
                toUInt64(count(duration_ms)) AS duration_count,
                quantilesTDigestIfState(0.5, 0.95, 0.99)(ifNull(duration_ms, 0), duration_ms IS NOT NULL) AS duration_digest
            FROM agent_executions
            GROUP BY tenant_id, minute, organization_id, user_id, project_id, navigator_id, navigator_instance_id,
                     execution_kind, billable, status, model, error_type"
                .into(),
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_1m_mv; DROP TABLE tool_calls_1m; DROP VIEW agent_executions_1m_mv; DROP TABLE agent_executions_1m"
    }
}
