//! 0005: `tool_calls_tenant_1h` and `tool_calls_tenant_1m`, tool-call
//! figures per (tenant, hour or minute, call kind) only, for the graphs and
//! totals of a whole tenant (no project, navigator, server or tool filter):
//! the common dashboard request.
//!
//! `tool_calls_1h` keeps 13 key columns, so a tenant with many projects,
//! navigators and tools has about as many hourly rows as events until it
//! makes thousands of calls an hour; a month-long unfiltered graph then
//! reads nearly as much as from raw events. This table holds at most a few
//! rows per tenant-hour (one per call kind), so that graph reads ~720
//! hours x kinds whatever the traffic, and the partial hours at either end
//! of a range (the minutes up to now) read at most 120 minutes x kinds of
//! `tool_calls_tenant_1m` instead of the per-minute rollup, which has about
//! one row per event at such traffic. Distinct queries still come from
//! `tool_call_queries_1h` (exact sets per hour cost as much to read as the
//! ids themselves).
//!
//! Same deduplication window, monthly partitions, 400-day TTL and
//! backfill of existing rows as 0004.

use super::tool_call_aggregates::{COLUMNS, SELECT as AGGREGATES};
use super::{Backfill, Migration};

pub struct TenantRollups;

/// `(table, its view, time column, the column's expression)`.
const TABLES: [(&str, &str, &str, &str); 2] = [
    ("tool_calls_tenant_1h", "tool_calls_tenant_1h_mv", "hour", "toStartOfHour(occurred_at)"),
    ("tool_calls_tenant_1m", "tool_calls_tenant_1m_mv", "minute", "toStartOfMinute(occurred_at)"),
];

impl Migration for TenantRollups {
    fn version(&self) -> u32 {
        5
    }
    fn name(&self) -> &'static str {
        "tenant_rollups"
    }
    fn statements(&self) -> Vec<String> {
        TABLES
            .iter()
            .map(|(table, _, time, _)| {
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                tenant_id UUID,
                {time} DateTime('UTC'),
                call_kind LowCardinality(String),
                {COLUMNS}
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM({time})
            ORDER BY (tenant_id, {time}, call_kind)
            TTL {time} + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                )
            })
            .collect()
    }
    fn backfills(&self) -> Vec<Backfill> {
        TABLES
            .iter()
            .map(|(table, view, time, expr)| {
                let select = format!("SELECT tenant_id, {expr} AS {time}, call_kind, {AGGREGATES} FROM tool_calls");
                let group = format!("GROUP BY tenant_id, {time}, call_kind");
                Backfill {
                    view,
                    target: table,
                    create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {table} AS {select} {group}"),
                    select_before_cutoff: format!(
                        "{select} WHERE ingested_at < fromUnixTimestamp64Milli({{cutoff_ms:Int64}}, 'UTC') {group}"
                    ),
                }
            })
            .collect()
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_tenant_1h_mv; DROP VIEW tool_calls_tenant_1m_mv; DROP TABLE tool_calls_tenant_1h; \
         DROP TABLE tool_calls_tenant_1m; ALTER TABLE rollup_backfills DELETE WHERE view IN ('tool_calls_tenant_1h_mv', 'tool_calls_tenant_1m_mv')"
    }
}
