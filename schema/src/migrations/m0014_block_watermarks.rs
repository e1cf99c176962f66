//! 0014: the newest `occurred_at` of each block of the tenant-level
//! rollups, `latest_occurred_at`, in `tool_calls_tenant_5m` (0012) and
//! `tool_calls_tenant_1h` (0005).
//!
//! A graph's range ends at "now" (rounded up to the minute), inside a
//! block, and its last bucket counts the events of that block before the
//! end only. Until now the API read that partial block from the minute
//! rollup, a second table in a `UNION ALL` with the whole blocks: about
//! 2 ms of the 10–14 ms a month of 5-minute or daily buckets costs in the
//! local engine. With the watermark the API reads the last block whole from
//! the block table and keeps that answer when the block's newest event is
//! before the range's end, which is the case unless an event was dated
//! after "now" (clock skew, allowed up to an hour): then the block holds
//! events the range excludes, and the API asks again with the minutes, as
//! before (`rollup::tail_from_block`).
//!
//! Rows written before this migration have no watermark: they read the
//! column's default, a time after any range's end (2199), so a block that
//! holds such a row always takes the second way; a merge keeps the
//! default, as `max` of it and anything. Nothing is backfilled: the blocks
//! that end a range are the newest, written after this migration within
//! minutes or an hour of it. Between the `ADD COLUMN` and the `MODIFY
//! QUERY` of a view, rows it writes get the default too.

use super::tool_call_aggregates::SELECT as AGGREGATES;
use super::Migration;

pub struct BlockWatermarks;

/// `(table, its view, time column, the column's expression)`, as 0005 and
/// 0012 created them.
const TABLES: [(&str, &str, &str, &str); 2] = [
    ("tool_calls_tenant_5m", "tool_calls_tenant_5m_mv", "five_minute", "toStartOfFiveMinutes(occurred_at)"),
    ("tool_calls_tenant_1h", "tool_calls_tenant_1h_mv", "hour", "toStartOfHour(occurred_at)"),
];

/// The watermark's value in rows written before this migration.
pub const UNKNOWN_WATERMARK: &str = "2199-12-31 00:00:00";

/// The view's query, with the watermark (`with_watermark`) or as 0005 and
/// 0012 wrote it.
fn view_query(time: &str, expr: &str, with_watermark: bool) -> String {
    let watermark = if with_watermark { ",\n    max(occurred_at) AS latest_occurred_at" } else { "" };
    format!("SELECT tenant_id, {expr} AS {time}, call_kind, {AGGREGATES}{watermark} FROM tool_calls GROUP BY tenant_id, {time}, call_kind")
}

impl Migration for BlockWatermarks {
    fn version(&self) -> u32 {
        14
    }
    fn name(&self) -> &'static str {
        "block_watermarks"
    }
    fn statements(&self) -> Vec<String> {
        let mut statements = Vec::new();
        for (table, view, time, expr) in TABLES {
            statements.push(format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS latest_occurred_at \
                 SimpleAggregateFunction(max, DateTime64(3, 'UTC')) DEFAULT toDateTime64('{UNKNOWN_WATERMARK}', 3, 'UTC')"
            ));
            statements.push(format!("ALTER TABLE {view} MODIFY QUERY {}", view_query(time, expr, true)));
        }
        statements
    }
    fn rollback(&self) -> &'static str {
        // Built from the same fragments as the statements; a rollback runs
        // by hand or in tests, so the string is leaked once per call.
        let mut sql = Vec::new();
        for (table, view, time, expr) in TABLES {
            sql.push(format!("ALTER TABLE {view} MODIFY QUERY {}", view_query(time, expr, false)));
            sql.push(format!("ALTER TABLE {table} DROP COLUMN IF EXISTS latest_occurred_at"));
        }
        sql.join("; ").leak()
    }
}
