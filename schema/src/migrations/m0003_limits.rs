//! 0003: plan limits, set through the admin API and read by the usage check.
//!
//! Every change writes a new row with a higher `version`; a delete writes a
//! row with `deleted = 1`. `ReplacingMergeTree(version)` keeps the latest row
//! per limit, and readers take `argMax(..., version)` so they never depend on
//! merges having happened. The table is tiny; history is kept for audit.

use super::Migration;

pub struct Limits;

impl Migration for Limits {
    fn version(&self) -> u32 {
        3
    }
    fn name(&self) -> &'static str {
        "plan_limits"
    }
    fn statements(&self) -> Vec<String> {
        vec!["CREATE TABLE IF NOT EXISTS plan_limits (
                tenant_id UUID,
                limit_id UUID,
                version UInt64,
                deleted Bool DEFAULT false,
                subject_kind LowCardinality(String),
                organization_id UUID,
                user_id UUID,
                metric LowCardinality(String),
                period_kind LowCardinality(String),
                period_tz String,
                anchor_day UInt8,
                rolling_hours UInt32,
                max_value Decimal(38, 6),
                soft_threshold Nullable(Float64),
                updated_at DateTime64(3, 'UTC') DEFAULT now64(3),
                updated_by String
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY (tenant_id, limit_id)"
            .into()]
    }
    fn rollback(&self) -> &'static str {
        "DROP TABLE plan_limits"
    }
}
