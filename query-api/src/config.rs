//! Command-line and environment configuration of `agentmeter-api`: every clap
//! struct of the API lives here, every flag with an `AGENTMETER_*` variable
//! and its unit in the name.
//!
//! Feature modules never see a clap struct: [`Args`] hands each of them a
//! plain settings value ([`Args::usage_settings`], [`Args::rate_budgets`],
//! [`Args::query_limits`], [`Args::http_limits`], [`Args::valkey_settings`], [`Args::recorder_settings`]), so that parsing the
//! command line is the only thing that knows about all of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentmeter_schema::config::ClickHouseArgs;
use clap::Parser;

use crate::db::QueryLimits;
use crate::limits_http::HttpLimits;
use crate::rate_limit::{Budget, Budgets};
use crate::usage::recorder::RecorderSettings;
use crate::usage::UsageSettings;
use crate::user_tokens::{KeySource, UserTokenSettings};
use crate::valkey::ValkeySettings;

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
    /// Most buckets a single time series may have; more is a 422. The
    /// default serves every window/frequency pair of the contract: its
    /// longest window (1mon, up to 31 days) at 5m is 8,928 buckets, plus
    /// the partial bucket the range starts in.
    #[arg(long = "max-buckets", env = "AGENTMETER_API_MAX_BUCKETS", default_value_t = 8_929)]
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
    pub usage: UsageArgs,
    #[command(flatten)]
    pub rate: RateLimitArgs,
    #[command(flatten)]
    pub request: RequestBoundsArgs,
    #[command(flatten)]
    pub clickhouse_limits: ClickHouseLimitArgs,
    #[command(flatten)]
    pub valkey: ValkeyArgs,
    #[command(flatten)]
    pub recorder: RecorderArgs,
    #[command(flatten)]
    pub user_tokens: UserTokenArgs,
}

impl Args {
    /// Settings of the usage counters and reservations.
    pub fn usage_settings(&self) -> UsageSettings {
        let u = &self.usage;
        UsageSettings {
            usage_refresh_interval_ms: u.usage_refresh_interval_ms,
            usage_refresh_lookback_minutes: u.usage_refresh_lookback_minutes,
            usage_reconcile_interval_ms: u.usage_reconcile_interval_ms,
            usage_reservation_ttl_ms: u.usage_reservation_ttl_ms,
        }
    }

    /// Where `POST /v1/usage/consume` and reservation commits record usage
    /// (`None`: no brokers configured, consuming answers 503).
    pub fn recorder_settings(&self) -> Option<RecorderSettings> {
        let r = &self.recorder;
        let brokers = r.kafka_brokers.as_deref().map(str::trim).filter(|b| !b.is_empty())?;
        Some(RecorderSettings {
            brokers: brokers.to_owned(),
            topic: r.agent_executions_topic.clone(),
            produce_timeout_ms: r.kafka_produce_timeout_ms.max(1),
        })
    }

    /// End-user token keys and checks (`None`: API keys only).
    pub fn user_token_settings(&self) -> Option<UserTokenSettings> {
        let t = &self.user_tokens;
        let keys = match (&t.jwt_jwks_file, &t.jwt_hs256_secret_file) {
            (Some(p), _) => KeySource::JwksFile(p.clone()),
            (None, Some(p)) => KeySource::Hs256SecretFile(p.clone()),
            (None, None) => return None,
        };
        let audiences = t.jwt_audience.iter().map(|a| a.trim()).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        let issuer = t.jwt_issuer.as_deref().map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned);
        let refresh_interval = (t.jwt_keys_refresh_s > 0).then(|| Duration::from_secs(t.jwt_keys_refresh_s));
        Some(UserTokenSettings { keys, audiences, issuer, refresh_interval })
    }

    /// Per-key budgets of the two endpoint classes.
    pub fn rate_budgets(&self) -> Budgets {
        let r = &self.rate;
        Budgets {
            analytics: Budget {
                rate_per_s: r.analytics_rate_per_s,
                burst: f64::from(r.analytics_burst.max(1)),
                concurrency: r.analytics_concurrency_per_key,
                queue: r.analytics_queue_per_key,
                max_wait: Duration::from_millis(r.analytics_queue_wait_ms),
            },
            check: Budget {
                rate_per_s: r.check_rate_per_s,
                burst: f64::from(r.check_burst.max(1)),
                concurrency: r.check_concurrency_per_key,
                queue: 0,
                max_wait: Duration::ZERO,
            },
        }
    }

    /// ClickHouse resource limits sent with every query.
    pub fn query_limits(&self) -> QueryLimits {
        let c = &self.clickhouse_limits;
        QueryLimits {
            max_execution_time_s: c.clickhouse_max_execution_time_s,
            max_memory_bytes: c.clickhouse_max_memory_bytes,
            max_rows_to_read: c.clickhouse_max_rows_to_read,
            max_result_rows: c.clickhouse_max_result_rows,
        }
    }

    /// Connection-level bounds (header size and read timeout).
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(self.request.header_read_timeout_ms),
            max_header_bytes: self.request.max_header_bytes,
        }
    }

    /// Where the state shared by every replica lives, and its fences: a loss
    /// of the store fences reservations for one hold lifetime; creating the
    /// store's epoch, for 8 refresh intervals (at least 2 s).
    pub fn valkey_settings(&self) -> ValkeySettings {
        ValkeySettings {
            url: self.valkey.valkey_url.clone(),
            key_prefix: self.valkey.valkey_key_prefix.clone(),
            loss_fence_ms: self.usage.usage_reservation_ttl_ms,
            young_fence_ms: self.usage.usage_refresh_interval_ms.saturating_mul(8).max(2_000),
        }
    }

    /// Longest a request can run (the query budget or the header read
    /// timeout, whichever is larger): shared in-flight leases outlive it.
    pub fn max_request_ms(&self) -> u64 {
        self.query_timeout_ms.max(self.request.header_read_timeout_ms)
    }

    /// Time budget of one ClickHouse query.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }
}

/// How the in-memory usage counters are kept fresh, and how long a
/// reservation holds budget.
#[derive(clap::Args, Debug, Clone)]
pub struct UsageArgs {
    /// How often the recent minutes of the rollups are re-read, in milliseconds.
    #[arg(long = "usage-refresh-interval-ms", env = "AGENTMETER_USAGE_REFRESH_INTERVAL_MS", default_value_t = 250)]
    pub usage_refresh_interval_ms: u64,
    /// How many recent minutes each refresh re-reads (events that land later
    /// than this after their `occurred_at` are picked up by the reconcile).
    #[arg(long = "usage-refresh-lookback-minutes", env = "AGENTMETER_USAGE_REFRESH_LOOKBACK_MINUTES", default_value_t = 5)]
    pub usage_refresh_lookback_minutes: u32,
    /// How often the counters are reconciled with ClickHouse (every hour of
    /// the retention whose sums changed is re-read) and every limit is
    /// re-read in full, in milliseconds.
    #[arg(long = "usage-reconcile-interval-ms", env = "AGENTMETER_USAGE_RECONCILE_INTERVAL_MS", default_value_t = 60_000)]
    pub usage_reconcile_interval_ms: u64,
    /// How long a reservation made with `reserve=true` holds its amount, in milliseconds.
    #[arg(long = "usage-reservation-ttl-ms", env = "AGENTMETER_USAGE_RESERVATION_TTL_MS", default_value_t = 30_000)]
    pub usage_reservation_ttl_ms: u64,
}

/// Per-key rate limits and concurrency caps (see `rate_limit`).
#[derive(clap::Args, Debug, Clone)]
pub struct RateLimitArgs {
    /// Sustained analytics requests per second per API key (0 = unlimited).
    #[arg(long = "analytics-rate-per-s", env = "AGENTMETER_API_ANALYTICS_RATE_PER_S", default_value_t = 50.0)]
    pub analytics_rate_per_s: f64,
    /// Analytics requests a key may send at once above the sustained rate.
    #[arg(long = "analytics-burst", env = "AGENTMETER_API_ANALYTICS_BURST", default_value_t = 200)]
    pub analytics_burst: u32,
    /// Analytics requests in flight per API key (0 = unlimited); keep it
    /// below `--clickhouse-concurrency`.
    #[arg(long = "analytics-concurrency-per-key", env = "AGENTMETER_API_ANALYTICS_CONCURRENCY_PER_KEY", default_value_t = 8)]
    pub analytics_concurrency_per_key: u32,
    /// Analytics requests per API key that may wait for an in-flight slot
    /// when the key is at its cap (0 = refuse at once with 429); more
    /// waiting is 429.
    #[arg(long = "analytics-queue-per-key", env = "AGENTMETER_API_ANALYTICS_QUEUE_PER_KEY", default_value_t = 64)]
    pub analytics_queue_per_key: u32,
    /// Longest an analytics request waits for an in-flight slot of its key,
    /// in milliseconds; then 429 with Retry-After.
    #[arg(long = "analytics-queue-wait-ms", env = "AGENTMETER_API_ANALYTICS_QUEUE_WAIT_MS", default_value_t = 10_000)]
    pub analytics_queue_wait_ms: u64,
    /// Sustained plan-limit checks per second per API key (0 = unlimited).
    #[arg(long = "check-rate-per-s", env = "AGENTMETER_API_CHECK_RATE_PER_S", default_value_t = 10_000.0)]
    pub check_rate_per_s: f64,
    /// Plan-limit checks a key may send at once above the sustained rate.
    #[arg(long = "check-burst", env = "AGENTMETER_API_CHECK_BURST", default_value_t = 20_000)]
    pub check_burst: u32,
    /// Plan-limit checks in flight per API key (0 = unlimited).
    #[arg(long = "check-concurrency-per-key", env = "AGENTMETER_API_CHECK_CONCURRENCY_PER_KEY", default_value_t = 1024)]
    pub check_concurrency_per_key: u32,
}

/// Bounds on what one request may send (see `limits_http`).
#[derive(clap::Args, Debug, Clone)]
pub struct RequestBoundsArgs {
    /// Largest request body accepted, in bytes; larger is 413.
    #[arg(long = "max-body-bytes", env = "AGENTMETER_API_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers) accepted, in bytes
    /// (at least 8192); larger is 431.
    #[arg(long = "max-header-bytes", env = "AGENTMETER_API_MAX_HEADER_BYTES", default_value_t = 32_768)]
    pub max_header_bytes: usize,
    /// Time a client has to send a request's headers, in milliseconds; a
    /// slower client is disconnected.
    #[arg(long = "header-read-timeout-ms", env = "AGENTMETER_API_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
}

/// ClickHouse's own resource limits on every API query (see `db`).
#[derive(clap::Args, Debug, Clone)]
pub struct ClickHouseLimitArgs {
    /// ClickHouse `max_execution_time` of every API query, in seconds (0 = unset).
    #[arg(long = "clickhouse-max-execution-time-s", env = "AGENTMETER_API_CLICKHOUSE_MAX_EXECUTION_TIME_S", default_value_t = 10)]
    pub clickhouse_max_execution_time_s: u64,
    /// ClickHouse `max_memory_usage` of every API query, in bytes (0 = unset).
    #[arg(long = "clickhouse-max-memory-bytes", env = "AGENTMETER_API_CLICKHOUSE_MAX_MEMORY_BYTES", default_value_t = 1_073_741_824)]
    pub clickhouse_max_memory_bytes: u64,
    /// ClickHouse `max_rows_to_read` of every API query (0 = unset).
    #[arg(long = "clickhouse-max-rows-to-read", env = "AGENTMETER_API_CLICKHOUSE_MAX_ROWS_TO_READ", default_value_t = 2_000_000_000)]
    pub clickhouse_max_rows_to_read: u64,
    /// ClickHouse `max_result_rows` of every API query (0 = unset).
    #[arg(long = "clickhouse-max-result-rows", env = "AGENTMETER_API_CLICKHOUSE_MAX_RESULT_ROWS", default_value_t = 1_000_000)]
    pub clickhouse_max_result_rows: u64,
}

/// The store several API replicas share (reservations, per-key rate limits).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ValkeyArgs {
    /// Valkey (or Redis) URL, e.g. redis://127.0.0.1:6379. Reservations of
    /// `reserve=true` checks and per-key rate limits and concurrency caps are
    /// then shared by every API replica using it. Without it both are kept in
    /// this process: run a single replica.
    #[arg(long = "valkey-url", env = "AGENTMETER_VALKEY_URL")]
    pub valkey_url: Option<String>,
    /// Prefix of every Valkey key this deployment writes (deployments sharing
    /// one Valkey need different prefixes; replicas of one deployment the same).
    #[arg(long = "valkey-key-prefix", env = "AGENTMETER_VALKEY_KEY_PREFIX", default_value = "agentmeter")]
    pub valkey_key_prefix: String,
}

/// The Kafka producer through which consumed usage becomes agent-execution
/// events (`POST /v1/usage/consume`, reservation commits).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecorderArgs {
    /// Kafka bootstrap servers (the ingest worker's variable). Consumed usage
    /// and committed reservations are produced there as agent-execution
    /// events (idempotent producer, acks=all). Without it `POST
    /// /v1/usage/consume` and reservation commits answer 503; everything
    /// else works.
    #[arg(long = "kafka-brokers", env = "AGENTMETER_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic of the agent-execution events (the one the ingest worker reads).
    #[arg(long = "agent-executions-topic", env = "AGENTMETER_AGENT_EXECUTIONS_TOPIC", default_value = agentmeter_schema::config::TOPIC_AGENT_EXECUTIONS)]
    pub agent_executions_topic: String,
    /// How long a consume waits for Kafka to acknowledge its event, in
    /// milliseconds; longer -> 503 and no budget stays held.
    #[arg(long = "kafka-produce-timeout-ms", env = "AGENTMETER_API_KAFKA_PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub kafka_produce_timeout_ms: u64,
}

/// End-user tokens (JWT) next to the API key (docs/api.md).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "End-user tokens")]
#[command(group(clap::ArgGroup::new("jwt_keys").args(["jwt_jwks_file", "jwt_hs256_secret_file"]).multiple(false)))]
pub struct UserTokenArgs {
    /// JSON Web Key Set file with the RS256 / ES256 public keys of end-user
    /// tokens. When set (or --jwt-hs256-secret-file), the API key goes in
    /// X-API-Key and `Authorization: Bearer <jwt>` carries the end user's
    /// token: usage answers are for its `sub`, another user_id is 403, an
    /// expired or forged token is 401. Requests without a token are served
    /// on the key alone, unless the key has `requires_user_token = true` in
    /// the keys file. Re-read when it changes (--jwt-keys-refresh-s).
    #[arg(long = "jwt-jwks-file", env = "AGENTMETER_API_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// File holding the HS256 secret of end-user tokens (at least 32 bytes;
    /// surrounding whitespace is ignored). Same effect as --jwt-jwks-file.
    #[arg(long = "jwt-hs256-secret-file", env = "AGENTMETER_API_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Accepted audiences of end-user tokens (repeat the flag or separate
    /// with commas): a token's `aud` must name one of them, a token without
    /// `aud` is refused (401 "Invalid token"). Unset: `aud` is not checked.
    /// Needs --jwt-jwks-file or --jwt-hs256-secret-file.
    #[arg(long = "jwt-audience", env = "AGENTMETER_API_JWT_AUDIENCE", value_delimiter = ',', requires = "jwt_keys")]
    pub jwt_audience: Vec<String>,
    /// Issuer of end-user tokens: a token's `iss` must be exactly this, a
    /// token without `iss` is refused (401 "Invalid token"). Unset: `iss`
    /// is not checked. Needs --jwt-jwks-file or --jwt-hs256-secret-file.
    #[arg(long = "jwt-issuer", env = "AGENTMETER_API_JWT_ISSUER", requires = "jwt_keys")]
    pub jwt_issuer: Option<String>,
    /// How often the key file (--jwt-jwks-file / --jwt-hs256-secret-file) is
    /// checked for changes, in seconds. A changed file replaces the keys
    /// without a restart; one that is missing, unreadable or invalid is
    /// logged as an error and the previous keys stay. 0: read at start only.
    #[arg(long = "jwt-keys-refresh-s", env = "AGENTMETER_API_JWT_KEYS_REFRESH_S", default_value_t = crate::user_tokens::DEFAULT_REFRESH_S)]
    pub jwt_keys_refresh_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["agentmeter-api"].iter().chain(flags))
    }

    #[test]
    fn end_user_token_flags() {
        assert_eq!(parse(&[]).unwrap().user_token_settings(), None);
        let s = parse(&["--jwt-jwks-file", "keys.json"]).unwrap().user_token_settings().unwrap();
        assert_eq!(s.keys, KeySource::JwksFile("keys.json".into()));
        assert!(s.audiences.is_empty() && s.issuer.is_none(), "unchecked unless set");
        assert_eq!(s.refresh_interval, Some(Duration::from_secs(30)));

        let flags = ["--jwt-hs256-secret-file", "s", "--jwt-audience", "a, b", "--jwt-audience", "c", "--jwt-issuer", "https://id/"];
        let s = parse(&flags).unwrap().user_token_settings().unwrap();
        assert_eq!(s.keys, KeySource::Hs256SecretFile("s".into()));
        assert_eq!(s.audiences, ["a", "b", "c"], "comma-separated and repeated");
        assert_eq!(s.issuer.as_deref(), Some("https://id/"));
        let s = parse(&["--jwt-jwks-file", "k", "--jwt-keys-refresh-s", "0"]).unwrap().user_token_settings().unwrap();
        assert_eq!(s.refresh_interval, None, "0: read at start only");

        // Checks without keys would check nothing: refused, as are two key sources.
        assert!(parse(&["--jwt-audience", "a"]).is_err());
        assert!(parse(&["--jwt-issuer", "i"]).is_err());
        assert!(parse(&["--jwt-jwks-file", "k", "--jwt-hs256-secret-file", "s"]).is_err());
    }
}
