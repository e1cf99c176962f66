//! Command-line and environment configuration of `agentmeter-api`: one clap
//! struct, every flag with an `AGENTMETER_*` variable and its unit in the name.

use std::net::SocketAddr;
use std::path::PathBuf;

use agentmeter_schema::config::ClickHouseArgs;
use clap::Parser;

/// agentmeter-api: analytics, usage and plan-limit HTTP API over ClickHouse.
#[derive(Parser, Debug, Clone)]
#[command(name = "agentmeter-api", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long = "addr", env = "AGENTMETER_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Path of the API keys file (TOML, SHA-256 hashes of the keys).
    #[arg(long = "api-keys", env = "AGENTMETER_API_KEYS", default_value = "dev/api-keys.toml")]
    pub api_keys: PathBuf,
    /// Most buckets a single time series may have; more is a 422.
    #[arg(long = "max-buckets", env = "AGENTMETER_API_MAX_BUCKETS", default_value_t = 2000)]
    pub max_buckets: usize,
    /// Most ClickHouse queries in flight at once; requests beyond wait up to
    /// the query timeout and then get 503.
    #[arg(long = "clickhouse-concurrency", env = "AGENTMETER_API_CLICKHOUSE_CONCURRENCY", default_value_t = 16)]
    pub clickhouse_concurrency: usize,
    /// Time budget of one ClickHouse query including the wait for a slot, in
    /// milliseconds; exceeded -> 503.
    #[arg(long = "query-timeout-ms", env = "AGENTMETER_API_QUERY_TIMEOUT_MS", default_value_t = 10_000)]
    pub query_timeout_ms: u64,
    /// How often the keys file is checked for changes, in milliseconds.
    #[arg(long = "api-keys-reload-ms", env = "AGENTMETER_API_KEYS_RELOAD_MS", default_value_t = 1_000)]
    pub api_keys_reload_ms: u64,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub usage: crate::usage::UsageArgs,
    #[command(flatten)]
    pub abuse: crate::rate_limit::AbuseArgs,
}
