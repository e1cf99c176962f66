//! 0019: `agent_executions_executor_1h`, the execution figures per hour,
//! executing user (`user_id`), project, navigator and navigator instance,
//! for the series and rankings grouped by the executing user (a Grafana
//! panel of messages or tokens per user).
//!
//! `agent_executions_1h` (0016) has no user, so those were read from
//! `agent_executions_1m`, about a row per execution (1.2 M rows for a week
//! of the benchmark's month), twice per panel (its ranking, then its
//! points): 109 ms of ClickHouse time against 38 ms from a table of this
//! shape (130 k rows a week), the shipped dashboard's slowest panel.
//! Project and navigator instance stay in the key so that the dashboard's
//! project and navigator variables are answered here too.
//!
//! The view computes the aggregates of the other hourly execution rollups
//! (`execution_aggregates`) and the newest `occurred_at` of each row (the
//! watermark of 0014), so a series ending inside its last hour can read
//! that hour whole. The rows already in `agent_executions` are backfilled.

use super::execution_aggregates::{COLUMNS as EXECUTION_COLUMNS, SELECT as EXECUTION_AGGREGATES};
use super::watermark::SELECT_ITEM as WATERMARK;
use super::{Backfill, Migration, BEFORE_CUTOFF};

pub struct ExecutorHours;

const KEYS: &str = "tenant_id, hour, user_id, project_id, navigator_id, navigator_instance_id";

fn select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, user_id, project_id, navigator_id, navigator_instance_id, \
         {EXECUTION_AGGREGATES}, {WATERMARK} FROM agent_executions"
    )
}

impl Migration for ExecutorHours {
    fn version(&self) -> u32 {
        19
    }
    fn name(&self) -> &'static str {
        "executor_hours"
    }
    fn statements(&self) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS agent_executions_executor_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                user_id UUID,
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                {EXECUTION_COLUMNS},
                latest_occurred_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, hour, user_id, project_id, navigator_instance_id, navigator_id)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
        )]
    }
    fn backfills(&self) -> Vec<Backfill> {
        let select = select();
        vec![Backfill {
            view: "agent_executions_executor_1h_mv",
            target: "agent_executions_executor_1h",
            create_view: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS agent_executions_executor_1h_mv TO agent_executions_executor_1h AS {select} GROUP BY {KEYS}"
            ),
            select_before_cutoff: format!("{select} WHERE {BEFORE_CUTOFF} GROUP BY {KEYS}"),
        }]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW agent_executions_executor_1h_mv; DROP TABLE agent_executions_executor_1h; \
         ALTER TABLE rollup_backfills DELETE WHERE view = 'agent_executions_executor_1h_mv'"
    }
}
