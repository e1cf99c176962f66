//! The aggregates the hourly execution rollups keep (migrations 0013 and
//! 0016): their expressions over `agent_executions` and their column
//! definitions, written once so that `agent_executions_user_1h` and
//! `agent_executions_1h`, which the API reads for the same metrics, count
//! alike. `agent_executions_1m` (0002, with the unpriced executions of
//! 0010) spells the same columns out for itself: it landed before this
//! existed, and landed migrations are not edited.

/// The `SELECT` expressions, one per column of [`COLUMNS`].
pub(super) const SELECT: &str = "toUInt64(count()) AS executions,
    toUInt64(countIf(NOT cost_known)) AS unpriced_executions,
    toUInt64(sum(input_tokens)) AS input_tokens,
    toUInt64(sum(output_tokens)) AS output_tokens,
    toUInt64(sum(total_tokens)) AS total_tokens,
    toDecimal128(sum(cost_usd), 6) AS cost_usd,
    toUInt64(sum(messages_count)) AS messages";

/// The column definitions of the target tables.
pub(super) const COLUMNS: &str = "executions SimpleAggregateFunction(sum, UInt64),
                unpriced_executions SimpleAggregateFunction(sum, UInt64),
                input_tokens SimpleAggregateFunction(sum, UInt64),
                output_tokens SimpleAggregateFunction(sum, UInt64),
                total_tokens SimpleAggregateFunction(sum, UInt64),
                cost_usd SimpleAggregateFunction(sum, Decimal(38, 6)),
                messages SimpleAggregateFunction(sum, UInt64)";
