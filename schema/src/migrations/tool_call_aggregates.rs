//! The aggregates every hourly or tenant-level tool-call rollup keeps
//! (migrations 0004 and 0005): their expressions over `tool_calls` and their
//! column definitions, written once so that the tables the API unions
//! (`tool_calls_1h` with `tool_calls_1m`, the tenant-level pair) cannot
//! drift apart. 0002 spells the same columns out for itself: it had landed
//! before this existed, and landed migrations are not edited.

/// The `SELECT` expressions, one per column of [`COLUMNS`].
pub(super) const SELECT: &str = "toUInt64(count()) AS calls,
    toUInt64(countIf(NOT success)) AS errors,
    sum(latency_ms) AS latency_sum_ms,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_digest,
    sum(ifNull(runtime_ms, 0)) AS runtime_sum_ms,
    toUInt64(count(runtime_ms)) AS runtime_count,
    toUInt64(sum(suggestions_count)) AS suggestions";

/// The column definitions of the target tables.
pub(super) const COLUMNS: &str = "calls SimpleAggregateFunction(sum, UInt64),
                errors SimpleAggregateFunction(sum, UInt64),
                latency_sum_ms SimpleAggregateFunction(sum, Float64),
                latency_digest AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
                runtime_sum_ms SimpleAggregateFunction(sum, Float64),
                runtime_count SimpleAggregateFunction(sum, UInt64),
                suggestions SimpleAggregateFunction(sum, UInt64)";
