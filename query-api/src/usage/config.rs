//! Settings of the usage counters and reservations, flattened into the API's
//! `Args` so that `--help` and the environment variables list them.

use clap::Args;

/// How the in-memory usage counters are kept fresh, and how long a
/// reservation holds budget.
#[derive(Args, Debug, Clone)]
pub struct UsageArgs {
    /// How often the recent minutes of the rollups are re-read, in milliseconds.
    #[arg(long = "usage-refresh-interval-ms", env = "AGENTMETER_USAGE_REFRESH_INTERVAL_MS", default_value_t = 250)]
    pub usage_refresh_interval_ms: u64,
    /// How many recent minutes each refresh re-reads (events that land later
    /// than this after their `occurred_at` are picked up by the reconcile).
    #[arg(long = "usage-refresh-lookback-minutes", env = "AGENTMETER_USAGE_REFRESH_LOOKBACK_MINUTES", default_value_t = 5)]
    pub usage_refresh_lookback_minutes: u32,
    /// How often every counter and every limit is re-read in full, in milliseconds.
    #[arg(long = "usage-reconcile-interval-ms", env = "AGENTMETER_USAGE_RECONCILE_INTERVAL_MS", default_value_t = 60_000)]
    pub usage_reconcile_interval_ms: u64,
    /// How long a reservation made with `reserve=true` holds its amount, in milliseconds.
    #[arg(long = "usage-reservation-ttl-ms", env = "AGENTMETER_USAGE_RESERVATION_TTL_MS", default_value_t = 30_000)]
    pub usage_reservation_ttl_ms: u64,
}

impl Default for UsageArgs {
    fn default() -> Self {
        Self {
            usage_refresh_interval_ms: 250,
            usage_refresh_lookback_minutes: 5,
            usage_reconcile_interval_ms: 60_000,
            usage_reservation_ttl_ms: 30_000,
        }
    }
}
