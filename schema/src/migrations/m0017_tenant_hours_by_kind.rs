//! 0017: `tool_calls_tenant_kind_1h`, the figures of `tool_calls_tenant_1h`
//! (0005, with the watermark of 0014) sorted by call kind before the hour
//! and in granules of 256 rows, for the graphs and totals of a whole
//! tenant.
//!
//! `tool_calls_tenant_1h` is sorted `(tenant_id, hour, call_kind)` in the
//! default granules of 8,192 rows, so a week of one call kind's hours (168
//! rows) is read from granules that hold every kind of the whole month: a
//! t-digest state is built for each row read, and the latency graph of a
//! week at 10 M events/month spent 17.5 ms building ~2,900 states for the
//! 168 it needed (raw events: 58–72 ms). Sorted by kind, a week of one kind
//! is a run of 168 rows in one or two granules: 10.8–13.9 ms in the graphs
//! benchmark (bench/README.md).
//!
//! The view computes the same columns as 0005's and the watermark, from the
//! same strings; the rows already in `tool_calls` are backfilled (a
//! backfilled row's watermark is its real newest `occurred_at`).
//! `tool_calls_tenant_1h` and its view stay: an API replica of the version
//! before reads them until every replica runs this one, and a later
//! migration can drop them.

use super::tool_call_aggregates::{COLUMNS, SELECT as AGGREGATES};
use super::watermark::SELECT_ITEM as WATERMARK;
use super::{Backfill, Migration, BEFORE_CUTOFF};

pub struct TenantHoursByKind;

fn select() -> String {
    format!("SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, {AGGREGATES}, {WATERMARK} FROM tool_calls")
}

const GROUP: &str = "GROUP BY tenant_id, hour, call_kind";

impl Migration for TenantHoursByKind {
    fn version(&self) -> u32 {
        17
    }
    fn name(&self) -> &'static str {
        "tenant_hours_by_kind"
    }
    fn statements(&self) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS tool_calls_tenant_kind_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                {COLUMNS},
                latest_occurred_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, call_kind, hour)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256"
        )]
    }
    fn backfills(&self) -> Vec<Backfill> {
        let select = select();
        vec![Backfill {
            view: "tool_calls_tenant_kind_1h_mv",
            target: "tool_calls_tenant_kind_1h",
            create_view: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_tenant_kind_1h_mv TO tool_calls_tenant_kind_1h AS {select} {GROUP}"
            ),
            select_before_cutoff: format!("{select} WHERE {BEFORE_CUTOFF} {GROUP}"),
        }]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_tenant_kind_1h_mv; DROP TABLE tool_calls_tenant_kind_1h; \
         ALTER TABLE rollup_backfills DELETE WHERE view = 'tool_calls_tenant_kind_1h_mv'"
    }
}
