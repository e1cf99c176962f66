//! Settings of the usage counters and reservations, as plain values (the
//! flags that fill them are `config::UsageArgs`).

/// How the in-memory usage counters are kept fresh, and how long a
/// reservation holds budget. Every field in the unit its name says.
#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// How often the recent minutes of the rollups are re-read.
    pub usage_refresh_interval_ms: u64,
    /// How many recent minutes each refresh re-reads.
    pub usage_refresh_lookback_minutes: u32,
    /// How often the counters are reconciled with ClickHouse (the hours whose
    /// sums changed are re-read) and every limit is re-read in full.
    pub usage_reconcile_interval_ms: u64,
    /// How long a reservation made with `reserve=true` holds its amount.
    pub usage_reservation_ttl_ms: u64,
}
