//! 0008: names beside ids. `project_name` becomes a column of both raw
//! tables (an optional field of both event kinds), and `dimension_names`
//! keeps the latest name of each server, server instance, navigator,
//! navigator instance, tool and project per tenant, so top-N lists, the
//! connection matrix and the usage page show names without reading the
//! raw tables.
//!
//! * One row per `(tenant_id, kind, id)` once merged
//!   (`AggregatingMergeTree`): `name` is `argMax(name, occurred_at)`, the
//!   name of the latest event by event time (a late, older event does not
//!   overwrite a rename), `seen_at` the latest event time. Readers use
//!   `argMaxMerge(name) ... GROUP BY id` over the ids they show; the sort
//!   key makes that a primary-key lookup. Two events of the same id at the
//!   same millisecond with different names keep either one.
//! * Tenant first in the key: an id another tenant also uses has its own
//!   row per tenant, and every read names the caller's tenant.
//! * Fed by one view per raw table (`ARRAY JOIN` over the kinds the table
//!   names: executions name projects only); an event without the id (nil)
//!   or the name (empty) adds nothing. Both views are backfilled from the
//!   rows already stored (see `Backfill`).
//! * No TTL: a few rows per id, and a name outlives its last event.
//!
//! `kind` values: `server`, `server_instance`, `navigator`,
//! `navigator_instance`, `tool`, `project`.

use super::{Backfill, Migration};

pub struct Names;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

const FROM_CALLS: &str = "SELECT tenant_id, n.1 AS kind, n.2 AS id,
    argMaxState(n.3, occurred_at) AS name, max(occurred_at) AS seen_at
FROM tool_calls
ARRAY JOIN [
    ('server', server_id, toString(server_name)),
    ('server_instance', server_instance_id, toString(server_name)),
    ('navigator', navigator_id, toString(navigator_name)),
    ('navigator_instance', navigator_instance_id, toString(navigator_name)),
    ('tool', tool_id, toString(tool_name)),
    ('project', project_id, toString(project_name))
] AS n";

const FROM_EXECUTIONS: &str = "SELECT tenant_id, n.1 AS kind, n.2 AS id,
    argMaxState(n.3, occurred_at) AS name, max(occurred_at) AS seen_at
FROM agent_executions
ARRAY JOIN [('project', project_id, toString(project_name))] AS n";

const GROUP: &str = "GROUP BY tenant_id, kind, id";

const CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

fn present() -> String {
    format!("WHERE n.2 != {NIL} AND n.3 != ''")
}

impl Migration for Names {
    fn version(&self) -> u32 {
        8
    }
    fn name(&self) -> &'static str {
        "names"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "ALTER TABLE tool_calls ADD COLUMN IF NOT EXISTS project_name LowCardinality(String) AFTER project_id".into(),
            "ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS project_name LowCardinality(String) AFTER project_id".into(),
            "CREATE TABLE IF NOT EXISTS dimension_names (
                tenant_id UUID,
                kind LowCardinality(String),
                id UUID,
                name AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
                seen_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
            ) ENGINE = AggregatingMergeTree
            ORDER BY (tenant_id, kind, id)
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        [("dimension_names_calls_mv", FROM_CALLS), ("dimension_names_executions_mv", FROM_EXECUTIONS)]
            .into_iter()
            .map(|(view, select)| Backfill {
                view,
                target: "dimension_names",
                create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO dimension_names AS {select} {} {GROUP}", present()),
                select_before_cutoff: format!("{select} {} AND {CUTOFF} {GROUP}", present()),
            })
            .collect()
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW dimension_names_calls_mv; DROP VIEW dimension_names_executions_mv; DROP TABLE dimension_names; \
         ALTER TABLE rollup_backfills DELETE WHERE view IN ('dimension_names_calls_mv', 'dimension_names_executions_mv'); \
         ALTER TABLE tool_calls DROP COLUMN project_name; ALTER TABLE agent_executions DROP COLUMN project_name \
         (after rolling the ingest workers back to a version without project_name)"
    }
}
