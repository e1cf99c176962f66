//! ClickHouse's own account of the work a phase asked of it: its
//! cumulative counters (`system.events`, the ProfileEvents every server
//! keeps) read before and after the phase.
//!
//! Wall time and CPU seconds say how long ClickHouse took; these say what
//! for: how many statements it ran, how many rows its inserts wrote (the
//! raw table's and every view's), how many rows its background merges read,
//! and how much of a statement's time went to planning it (parsing,
//! analysis, building and optimising the plan and the pipeline) rather
//! than running it. The ingest benchmark sets the worker's phase against
//! the ceiling's with them; the graphs benchmark splits each answer's
//! engine time into planning and execution, the part no rollup can remove.
//!
//! The counters are server-wide: anything else the server does meanwhile
//! (another database's merges) is counted too, so the benchmarks read them
//! with the machine otherwise quiet. A counter a server does not have reads
//! 0.

use std::collections::BTreeMap;

use clickhouse::Client;

/// One reading of `system.events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters(BTreeMap<String, u64>);

/// The counters' parts of a statement's planning, in microseconds.
const PLANNING: [&str; 5] = [
    "QueryParseMicroseconds",
    "QueryAnalysisMicroseconds",
    "QueryPlanBuildMicroseconds",
    "QueryPlanOptimizeMicroseconds",
    "QueryPipelineBuildMicroseconds",
];

impl Counters {
    /// The server's counters now.
    pub async fn read(client: &Client) -> anyhow::Result<Self> {
        let rows = client.query("SELECT event, value FROM system.events").fetch_all::<(String, u64)>().await?;
        Ok(Self(rows.into_iter().collect()))
    }

    /// What each counter gained between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters(self.0.iter().map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k)))).collect())
    }

    /// A counter's value (0 if the server does not have it).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Statements run (SELECTs, INSERTs and the rest).
    pub fn statements(&self) -> u64 {
        self.get("Query")
    }

    /// Milliseconds the statements ran, from start to end, planning included.
    pub fn query_ms(&self) -> f64 {
        self.get("QueryTimeMicroseconds") as f64 / 1000.0
    }

    /// Milliseconds spent planning the statements.
    pub fn planning_ms(&self) -> f64 {
        PLANNING.iter().map(|c| self.get(c)).sum::<u64>() as f64 / 1000.0
    }
}

/// The counters the ingest benchmark reports per 100k events, with what
/// each means there.
pub const INGEST: [(&str, &str); 5] = [
    ("InsertQuery", "INSERT statements"),
    ("SelectQuery", "SELECT statements (look-ups, polls)"),
    ("InsertedRows", "rows written by INSERTs (raw tables and views)"),
    ("MergedRows", "rows read by background merges"),
    ("SelectedRows", "rows read by SELECTs and views"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(pairs: &[(&str, u64)]) -> Counters {
        Counters(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn since_subtracts_and_reads_missing_counters_as_zero() {
        let before = counters(&[("Query", 10), ("QueryTimeMicroseconds", 5_000)]);
        let after = counters(&[("Query", 13), ("QueryTimeMicroseconds", 50_000), ("QueryParseMicroseconds", 1_500)]);
        let d = after.since(&before);
        assert_eq!(d.statements(), 3);
        assert_eq!(d.query_ms(), 45.0);
        assert_eq!(d.get("QueryParseMicroseconds"), 1_500);
        assert_eq!(d.get("NoSuchCounter"), 0);
    }

    #[test]
    fn planning_adds_every_planning_stage() {
        let d = counters(&[
            ("QueryParseMicroseconds", 1_000),
            ("QueryAnalysisMicroseconds", 2_000),
            ("QueryPlanBuildMicroseconds", 3_000),
            ("QueryPlanOptimizeMicroseconds", 4_000),
            ("QueryPipelineBuildMicroseconds", 5_000),
            ("QueryTimeMicroseconds", 40_000),
        ]);
        assert_eq!(d.planning_ms(), 15.0);
    }
}
