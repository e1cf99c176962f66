//! 0014: the newest `occurred_at` of each row of the block rollups a
//! whole tenant's graphs read, `latest_occurred_at`: `tool_calls_tenant_5m`
//! (0012) and `tool_calls_tenant_1h` (0005) for the calls,
//! `query_counts_tenant_5m` (0012) and `query_counts_1h` (0011) for the
//! queries.
//!
//! A graph's range ends at "now" (rounded up to the minute), inside a
//! block, and its last bucket counts the events of that block before the
//! end only. Until now the API read that partial block from a minute
//! rollup, a second table in a `UNION ALL` with the whole blocks: about
//! 2 ms of the 10–14 ms a month of 5-minute or daily buckets costs in the
//! local engine. With the watermark the API reads the last block whole from
//! the block table and keeps that answer when the block's newest event is
//! before the range's end, which is the case unless an event was dated
//! after "now" (clock skew, allowed up to an hour): then the block holds
//! events the range excludes, and the API asks again with the minutes, as
//! before (`rollup::whole_tail`, `rollup::query_counts_whole_tail`).
//!
//! Rows written before this migration have no watermark: they read the
//! column's default, a time after any range's end (2199), so a block that
//! holds such a row always takes the second way; a merge keeps the
//! default, as `max` of it and anything. Nothing is backfilled: the blocks
//! that end a range are the newest, written after this migration within
//! minutes or an hour of it. Between the `ADD COLUMN` and the `MODIFY
//! QUERY` of a view, rows it writes get the default too.

use super::tool_call_aggregates::SELECT as AGGREGATES;
use super::{watermark, Migration};

pub struct BlockWatermarks;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

/// A rollup, its view, and the view's query as its migration wrote it:
/// the `SELECT` list, then `FROM ... [WHERE ...] GROUP BY ...`.
struct View {
    table: &'static str,
    view: &'static str,
    select: String,
    rest: String,
}

impl View {
    /// The view's query, with the watermark or without it.
    fn query(&self, with_watermark: bool) -> String {
        let item = if with_watermark { format!(",\n    {}", watermark::SELECT_ITEM) } else { String::new() };
        format!("SELECT {}{item}\n{}", self.select, self.rest)
    }
}

fn views() -> Vec<View> {
    let calls = |table, view, time, expr| View {
        table,
        view,
        select: format!("tenant_id, {expr} AS {time}, call_kind, {AGGREGATES}"),
        rest: format!("FROM tool_calls GROUP BY tenant_id, {time}, call_kind"),
    };
    let executions = format!("FROM agent_executions\nWHERE execution_kind = 'navigator_query' AND execution_id != {NIL}");
    vec![
        calls("tool_calls_tenant_5m", "tool_calls_tenant_5m_mv", "five_minute", "toStartOfFiveMinutes(occurred_at)"),
        calls("tool_calls_tenant_1h", "tool_calls_tenant_1h_mv", "hour", "toStartOfHour(occurred_at)"),
        View {
            table: "query_counts_tenant_5m",
            view: "query_counts_tenant_5m_mv",
            select: "tenant_id, toStartOfFiveMinutes(occurred_at) AS five_minute, toUInt64(count()) AS queries".into(),
            rest: format!("{executions}\nGROUP BY tenant_id, five_minute"),
        },
        View {
            table: "query_counts_1h",
            view: "query_counts_1h_mv",
            select: "tenant_id, toStartOfHour(occurred_at) AS hour, project_id, navigator_id, navigator_instance_id, toUInt64(count()) AS queries"
                .into(),
            rest: format!("{executions}\nGROUP BY tenant_id, hour, project_id, navigator_id, navigator_instance_id"),
        },
    ]
}

impl Migration for BlockWatermarks {
    fn version(&self) -> u32 {
        14
    }
    fn name(&self) -> &'static str {
        "block_watermarks"
    }
    fn statements(&self) -> Vec<String> {
        views().iter().flat_map(|v| watermark::add(v.table, v.view, &v.query(true))).collect()
    }
    fn rollback(&self) -> &'static str {
        // Built from the same fragments as the statements; a rollback runs
        // by hand or in tests, so the string is leaked once per call.
        let sql: Vec<String> = views().iter().flat_map(|v| watermark::remove(v.table, v.view, &v.query(false))).collect();
        sql.join("; ").leak()
    }
}
