//! Shared state of every handler: ClickHouse access, keys, metrics, limits.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::KeyStore;
use crate::config::Args;
use crate::db::{Db, QueryLimits};
use crate::limits_http::HttpLimits;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;

/// Cloned into every request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    /// The database-bound client. Handlers go through [`AppState::db`].
    pub clickhouse: clickhouse::Client,
    /// ClickHouse behind the concurrency limit and the query timeout.
    pub db: Db,
    pub keys: Arc<KeyStore>,
    pub usage: Arc<crate::usage::UsageState>,
    pub metrics: Arc<Metrics>,
    /// Most buckets one series may have (`--max-buckets`).
    pub max_buckets: usize,
    /// Per-key rate limits and concurrency caps.
    pub limiter: Arc<RateLimiter>,
    /// Connection-level bounds (header size and read timeout).
    pub http_limits: HttpLimits,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

impl AppState {
    /// State from configuration: loads the keys file (fails if it is missing
    /// or invalid) and builds the ClickHouse client. Does not connect.
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let keys = KeyStore::load(&args.api_keys, Duration::from_millis(args.api_keys_reload_ms))?;
        Ok(Self::new(args.clickhouse.client(), Arc::new(keys), args))
    }

    /// State from parts (tests build their own key store and client).
    pub fn new(clickhouse: clickhouse::Client, keys: Arc<KeyStore>, args: &Args) -> Self {
        let metrics = Arc::new(Metrics::new());
        let db = Db::new(clickhouse.clone(), args.clickhouse_concurrency, Duration::from_millis(args.query_timeout_ms), metrics.clone())
            .with_limits(QueryLimits::from_args(&args.abuse));
        let usage = Arc::new(crate::usage::UsageState::new(&clickhouse, args, &metrics));
        let limiter = Arc::new(RateLimiter::new(&args.abuse, &metrics.registry));
        let http_limits = HttpLimits {
            header_read_timeout: Duration::from_millis(args.abuse.header_read_timeout_ms),
            max_header_bytes: args.abuse.max_header_bytes,
        };
        Self {
            clickhouse,
            db,
            keys,
            usage,
            metrics,
            max_buckets: args.max_buckets,
            limiter,
            http_limits,
            max_body_bytes: args.abuse.max_body_bytes,
        }
    }
}
