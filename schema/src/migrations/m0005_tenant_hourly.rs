//! 0005: `tool_calls_tenant_1h`, tool-call figures per (tenant, hour, call
//! kind) only, for the graphs and totals of a whole tenant (no project,
//! navigator, server or tool filter): the common dashboard request.
//!
//! `tool_calls_1h` keeps 13 key columns, so a tenant with many projects,
//! navigators and tools has about as many hourly rows as events until it
//! makes thousands of calls an hour; a month-long unfiltered graph then
//! reads nearly as much as from raw events. This table holds at most a few
//! rows per tenant-hour (one per call kind), so that graph reads ~720
//! hours x kinds whatever the traffic. Distinct queries still come from
//! `tool_call_queries_1h` (exact sets per hour cost as much to read as the
//! ids themselves).
//!
//! Same deduplication window, monthly partitions, 400-day TTL and
//! backfill of existing rows as 0004.

use super::{Backfill, Migration};

pub struct TenantHourly;

const SELECT: &str = "SELECT
    tenant_id,
    toStartOfHour(occurred_at) AS hour,
    call_kind,
    toUInt64(count()) AS calls,
    toUInt64(countIf(NOT success)) AS errors,
    sum(latency_ms) AS latency_sum_ms,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_digest,
    sum(ifNull(runtime_ms, 0)) AS runtime_sum_ms,
    toUInt64(count(runtime_ms)) AS runtime_count,
    toUInt64(sum(suggestions_count)) AS suggestions
FROM tool_calls";

const GROUP: &str = "GROUP BY tenant_id, hour, call_kind";

impl Migration for TenantHourly {
    fn version(&self) -> u32 {
        5
    }
    fn name(&self) -> &'static str {
        "tenant_hourly_rollup"
    }
    fn statements(&self) -> Vec<String> {
        vec!["CREATE TABLE IF NOT EXISTS tool_calls_tenant_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                calls SimpleAggregateFunction(sum, UInt64),
                errors SimpleAggregateFunction(sum, UInt64),
                latency_sum_ms SimpleAggregateFunction(sum, Float64),
                latency_digest AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
                runtime_sum_ms SimpleAggregateFunction(sum, Float64),
                runtime_count SimpleAggregateFunction(sum, UInt64),
                suggestions SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, call_kind)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            .into()]
    }
    fn backfills(&self) -> Vec<Backfill> {
        vec![Backfill {
            view: "tool_calls_tenant_1h_mv",
            target: "tool_calls_tenant_1h",
            create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_tenant_1h_mv TO tool_calls_tenant_1h AS {SELECT} {GROUP}"),
            select_before_cutoff: format!("{SELECT} WHERE ingested_at < fromUnixTimestamp64Milli({{cutoff_ms:Int64}}, 'UTC') {GROUP}"),
        }]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_tenant_1h_mv; DROP TABLE tool_calls_tenant_1h; \
         ALTER TABLE rollup_backfills DELETE WHERE view = 'tool_calls_tenant_1h_mv'"
    }
}
