//! 0009: plans (named sets of limit templates) and their assignment to
//! organizations, set through the admin API and read by the usage check.
//!
//! Both tables are versioned exactly like `plan_limits` (0003): every change
//! appends a row with a higher `version`, `ReplacingMergeTree(version)` keeps
//! the latest row per key, and readers take the highest version themselves
//! (`LIMIT 1 BY`), so they never depend on merges. A plan's templates are
//! one JSON column (`templates`): a plan change is one row, so every
//! organization on the plan moves to its new limits in one step. An
//! assignment row with the nil `plan_id` means "no plan".

use super::Migration;

pub struct Plans;

impl Migration for Plans {
    fn version(&self) -> u32 {
        9
    }
    fn name(&self) -> &'static str {
        "plans"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            "CREATE TABLE IF NOT EXISTS plans (
                tenant_id UUID,
                plan_id UUID,
                version UInt64,
                deleted Bool DEFAULT false,
                name String,
                description Nullable(String),
                is_active Bool,
                is_free Bool,
                currency LowCardinality(String),
                features Array(String),
                templates String,
                created_at DateTime64(3, 'UTC'),
                updated_at DateTime64(3, 'UTC') DEFAULT now64(3),
                updated_by String
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY (tenant_id, plan_id)"
                .into(),
            "CREATE TABLE IF NOT EXISTS plan_assignments (
                tenant_id UUID,
                organization_id UUID,
                version UInt64,
                plan_id UUID,
                updated_at DateTime64(3, 'UTC') DEFAULT now64(3),
                updated_by String
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY (tenant_id, organization_id)"
                .into(),
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP TABLE plan_assignments; DROP TABLE plans"
    }
}
