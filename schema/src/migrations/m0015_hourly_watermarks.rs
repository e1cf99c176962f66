//! 0015: the watermark of 0014, `latest_occurred_at`, for the per-question
//! hourly rollups of 0011: `tool_calls_server_1h`, `tool_calls_navigator_1h`
//! and `tool_calls_tool_1h`.
//!
//! A graph filtered by project, navigator instance or tool reads the
//! per-navigator or per-tool rollup for its whole hours and, until now,
//! the minutes of the current hour from `tool_calls_1m`, in a `UNION ALL`
//! (about 2 ms of the local engine's fixed cost per table read). With the
//! watermark the API reads the current hour whole from the hourly table and
//! keeps that answer when its newest event is before the range's end, as it
//! does for a whole tenant since 0014 (`rollup::whole_tail`).
//! `tool_calls_1h` (0004) needs nothing: its `last_used` is already the
//! newest `occurred_at` of each row.
//!
//! The views' queries are 0011's, taken from the same strings
//! (`m0011_question_rollups::call_views`), with the watermark added before
//! `FROM`. Rows written before read the default (2199) and so never pass
//! the check; nothing is backfilled (see 0014).

use super::m0011_question_rollups::{call_views, CallView};
use super::{watermark, Migration};

pub struct HourlyWatermarks;

/// `v`'s query, with the watermark or as 0011 wrote it.
fn query(v: &CallView, with_watermark: bool) -> String {
    let select = if with_watermark {
        let list = v.select.strip_suffix("\nFROM tool_calls").expect("0011's tool-call views select FROM tool_calls");
        format!("{list},\n    {}\nFROM tool_calls", watermark::SELECT_ITEM)
    } else {
        v.select.clone()
    };
    format!("{select} {}", v.group)
}

impl Migration for HourlyWatermarks {
    fn version(&self) -> u32 {
        15
    }
    fn name(&self) -> &'static str {
        "hourly_watermarks"
    }
    fn statements(&self) -> Vec<String> {
        call_views().iter().flat_map(|v| watermark::add(v.table, v.view, &query(v, true))).collect()
    }
    fn rollback(&self) -> &'static str {
        // As in 0014: built from the same fragments, leaked once per call.
        let sql: Vec<String> = call_views().iter().flat_map(|v| watermark::remove(v.table, v.view, &query(v, false))).collect();
        sql.join("; ").leak()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_selected_before_from_and_the_rest_is_0011s_query() {
        for v in call_views() {
            let with = query(&v, true);
            assert!(with.contains(",\n    max(occurred_at) AS latest_occurred_at\nFROM tool_calls GROUP BY"), "{with}");
            assert_eq!(with.replace(",\n    max(occurred_at) AS latest_occurred_at", ""), query(&v, false));
        }
    }
}
