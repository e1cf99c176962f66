//! 0018: `tool_calls_error_type_1h`, the tool-call aggregates per (tenant,
//! hour, call kind, error type, project, navigator, navigator instance),
//! for the series and rankings grouped by error type: the error-types
//! graph and a Grafana panel of errors per error type.
//!
//! Those were read from `tool_calls_1h`, whose key holds every dimension
//! (server, tool, organization too): ~590,000 rows for a week of the
//! benchmark's month, read twice by a Grafana panel (its ranking, then
//! its points), 122 ms of the shipped dashboard's slowest panels. Without
//! server, tool and organization a week is a few rows per navigator and
//! hour. Project and navigator instance stay in the key so that the
//! dashboard's project and navigator variables are answered here too.
//!
//! Sorted by call kind and hour first, as `tool_calls_tenant_kind_1h`
//! (0017) is, so that a week of one kind is one run of rows; the watermark
//! of 0014 (`latest_occurred_at`) lets a series ending inside its last
//! hour read that hour whole. The view computes the same aggregates as the
//! other hourly rollups from the same strings; the rows already in
//! `tool_calls` are backfilled.

use super::tool_call_aggregates::{COLUMNS, SELECT as AGGREGATES};
use super::watermark::SELECT_ITEM as WATERMARK;
use super::{Backfill, Migration, BEFORE_CUTOFF};

pub struct ErrorTypeHours;

const KEYS: &str = "tenant_id, hour, call_kind, error_type, project_id, navigator_id, navigator_instance_id";

fn select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, error_type, project_id, navigator_id, \
         navigator_instance_id, {AGGREGATES}, {WATERMARK} FROM tool_calls"
    )
}

impl Migration for ErrorTypeHours {
    fn version(&self) -> u32 {
        18
    }
    fn name(&self) -> &'static str {
        "error_type_hours"
    }
    fn statements(&self) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS tool_calls_error_type_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                error_type LowCardinality(String),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                {COLUMNS},
                latest_occurred_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, call_kind, hour, error_type, project_id, navigator_instance_id, navigator_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
        )]
    }
    fn backfills(&self) -> Vec<Backfill> {
        let select = select();
        vec![Backfill {
            view: "tool_calls_error_type_1h_mv",
            target: "tool_calls_error_type_1h",
            create_view: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_error_type_1h_mv TO tool_calls_error_type_1h AS {select} GROUP BY {KEYS}"
            ),
            select_before_cutoff: format!("{select} WHERE {BEFORE_CUTOFF} GROUP BY {KEYS}"),
        }]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_error_type_1h_mv; DROP TABLE tool_calls_error_type_1h; \
         ALTER TABLE rollup_backfills DELETE WHERE view = 'tool_calls_error_type_1h_mv'"
    }
}
