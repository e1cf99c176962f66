//! 0010: a cost that is not known stays unknown. Before this, an execution
//! without a cost (an OpenTelemetry span whose model has no price) was
//! stored as `cost_usd = 0`, indistinguishable from a free one.
//!
//! * `agent_executions.cost_known Bool DEFAULT true`: `false` when the event
//!   said the cost is unknown (`cost_known: false`); `cost_usd` is then 0.
//!   A flag rather than making `cost_usd` `Nullable`: adding a column with
//!   a default is a metadata change (no mutation rewriting every part), the
//!   RowBinary shape of `cost_usd` does not change under running workers,
//!   and every existing sum (`sum(cost_usd)`) stays what it was: the exact
//!   sum of the known costs, since unknown ones add 0.
//! * `agent_executions_1m.unpriced_executions`: how many executions of the
//!   row's minute and dimensions had no known cost, so that every reader of
//!   the rollup can tell a complete cost from a partial one (`unpriced > 0`)
//!   and an unknown one (every execution unpriced). Fed by a second view
//!   (`agent_executions_1m_unpriced_mv`) that writes only that column for
//!   the unpriced rows: views cannot be altered in place, and the view of
//!   0002 keeps counting everything else. Its rows have `executions = 0` and
//!   an empty duration digest, so existing sums and quantiles are unchanged.
//!   Same deduplication window as the rest of the target (0002).
//! * Backfill: rows stored before this migration get `cost_known = true`
//!   (the column default): what they stored was what their events said
//!   under the contract of the time, where an absent cost meant 0. The view
//!   is created with the runner's [`Backfill`], which copies the unpriced
//!   rows already stored (those a worker of this version wrote between the
//!   column and the view) into the rollup exactly once.

use super::{Backfill, Migration};

pub struct UnpricedExecutions;

const KEYS: &str = "organization_id, user_id, project_id, navigator_id, navigator_instance_id, \
                    execution_kind, billable, status, model, error_type";

/// Every column of `agent_executions_1m`, in the table's order (a backfill
/// `INSERT ... SELECT` maps columns by position, the view by name): the
/// unpriced count, and zero or an empty state for everything 0002 counts.
fn select(extra_condition: &str) -> String {
    format!(
        "SELECT tenant_id, toStartOfMinute(occurred_at) AS minute, {KEYS}, \
         toUInt64(0) AS executions, toUInt64(0) AS input_tokens, toUInt64(0) AS output_tokens, toUInt64(0) AS total_tokens, \
         toDecimal128(0, 6) AS cost_usd, toUInt64(count()) AS unpriced_executions, toUInt64(0) AS messages, \
         toFloat64(0) AS duration_sum_ms, toUInt64(0) AS duration_count, \
         quantilesTDigestIfState(0.5, 0.95, 0.99)(toFloat64(0), toUInt8(0)) AS duration_digest \
         FROM agent_executions WHERE NOT cost_known{extra_condition} GROUP BY tenant_id, minute, {KEYS}"
    )
}

impl Migration for UnpricedExecutions {
    fn version(&self) -> u32 {
        10
    }
    fn name(&self) -> &'static str {
        "unpriced_executions"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS cost_known Bool DEFAULT true AFTER cost_usd".into(),
            "ALTER TABLE agent_executions_1m ADD COLUMN IF NOT EXISTS \
             unpriced_executions SimpleAggregateFunction(sum, UInt64) AFTER cost_usd"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        vec![Backfill {
            view: "agent_executions_1m_unpriced_mv",
            target: "agent_executions_1m",
            create_view: format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS agent_executions_1m_unpriced_mv TO agent_executions_1m AS {}",
                select("")
            ),
            select_before_cutoff: select(" AND ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')"),
        }]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW agent_executions_1m_unpriced_mv; ALTER TABLE agent_executions_1m DROP COLUMN unpriced_executions; \
         ALTER TABLE agent_executions DROP COLUMN cost_known; \
         ALTER TABLE rollup_backfills DELETE WHERE view = 'agent_executions_1m_unpriced_mv'"
    }
}
