//! 0012: tenant-level rollups by the 5 minutes, for the graphs whose
//! buckets cut hours (5-, 10-, 15- and 30-minute buckets, hourly and daily
//! buckets in a zone like Asia/Kolkata at +05:30 or Asia/Kathmandu at
//! +05:45). Those read `tool_calls_tenant_1m` and `query_counts_1m`
//! throughout until now: a month of 5-minute buckets merges every
//! tenant-minute (43,200 minutes x call kinds, and more rows per minute
//! until the parts are merged) and every query-count row of every
//! (project, navigator) minute.
//!
//! Every bucket boundary of such a graph is a multiple of 5 minutes in UTC
//! (every zone's offset is a whole number of 5 minutes, and buckets of 5
//! minutes or more start on local multiples of 5 minutes), so whole
//! 5-minute blocks answer exactly; only the minutes at either end of a
//! range (up to "now") still come from the minute rollups.
//!
//! * `tool_calls_tenant_5m`: the tool-call aggregates (counts, sums,
//!   t-digest) per (tenant, 5 minutes, call kind), the columns of
//!   `tool_calls_tenant_1m` (0005) with `five_minute` for `minute`.
//! * `query_counts_tenant_5m`: queries counted at their execution (one
//!   `navigator_query` execution per query, as `query_counts_1m` of 0011)
//!   per (tenant, 5 minutes), without project or navigator: the count for
//!   a whole tenant.
//!
//! Same deduplication window, monthly partitions and 400-day TTL as the
//! other rollups; both views are backfilled from the rows already in their
//! source table (see [`Backfill`]).

use super::tool_call_aggregates::{COLUMNS as AGGREGATES_COLUMNS, SELECT as AGGREGATES};
use super::{Backfill, Migration};

pub struct FiveMinuteRollups;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

const CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

fn tool_calls_select() -> String {
    format!("SELECT tenant_id, toStartOfFiveMinutes(occurred_at) AS five_minute, call_kind, {AGGREGATES} FROM tool_calls")
}

const TOOL_CALLS_GROUP: &str = "GROUP BY tenant_id, five_minute, call_kind";

fn query_counts_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfFiveMinutes(occurred_at) AS five_minute, toUInt64(count()) AS queries
FROM agent_executions
WHERE execution_kind = 'navigator_query' AND execution_id != {NIL}"
    )
}

const QUERY_COUNTS_GROUP: &str = "GROUP BY tenant_id, five_minute";

impl Migration for FiveMinuteRollups {
    fn version(&self) -> u32 {
        12
    }
    fn name(&self) -> &'static str {
        "five_minute_rollups"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS tool_calls_tenant_5m (
                tenant_id UUID,
                five_minute DateTime('UTC'),
                call_kind LowCardinality(String),
                {AGGREGATES_COLUMNS}
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(five_minute)
            ORDER BY (tenant_id, five_minute, call_kind)
            TTL five_minute + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            ),
            "CREATE TABLE IF NOT EXISTS query_counts_tenant_5m (
                tenant_id UUID,
                five_minute DateTime('UTC'),
                queries SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(five_minute)
            ORDER BY (tenant_id, five_minute)
            TTL five_minute + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        let calls = tool_calls_select();
        let queries = query_counts_select();
        vec![
            Backfill {
                view: "tool_calls_tenant_5m_mv",
                target: "tool_calls_tenant_5m",
                create_view: format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_tenant_5m_mv TO tool_calls_tenant_5m AS {calls} {TOOL_CALLS_GROUP}"
                ),
                select_before_cutoff: format!("{calls} WHERE {CUTOFF} {TOOL_CALLS_GROUP}"),
            },
            Backfill {
                view: "query_counts_tenant_5m_mv",
                target: "query_counts_tenant_5m",
                create_view: format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS query_counts_tenant_5m_mv TO query_counts_tenant_5m AS {queries} {QUERY_COUNTS_GROUP}"
                ),
                select_before_cutoff: format!("{queries} AND {CUTOFF} {QUERY_COUNTS_GROUP}"),
            },
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_tenant_5m_mv; DROP VIEW query_counts_tenant_5m_mv; DROP TABLE tool_calls_tenant_5m; \
         DROP TABLE query_counts_tenant_5m; ALTER TABLE rollup_backfills DELETE WHERE view IN \
         ('tool_calls_tenant_5m_mv', 'query_counts_tenant_5m_mv')"
    }
}
