//! The app's state, built once from the configuration: ClickHouse access,
//! keys, metrics, the usage state and the limits.
//!
//! Nothing but the composition root (`lib.rs`) names [`AppState`]: handlers,
//! extractors and middleware take the part they need (`State<Db>`,
//! `Arc<KeyStore>`, ...) through axum's `FromRef`, implemented here. That is
//! what keeps feature modules from depending on the state that holds them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::analytics::AnalyticsState;
use crate::auth::KeyStore;
use crate::body::MaxBodyBytes;
use crate::config::Args;
use crate::db::Db;
use crate::limits_http::HttpLimits;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::shared_rate_limit::{SharedRateLimiter, SharedRateLimits};
use crate::usage::recorder::Recorder;
use crate::usage::{UsageApiState, UsageState};
use crate::user_tokens::UserTokens;
use crate::valkey::{SharedStore, Valkey};

/// Cloned into every request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    /// ClickHouse behind the concurrency limit and the query timeout.
    pub db: Db,
    pub keys: Arc<KeyStore>,
    pub usage: Arc<UsageState>,
    pub metrics: Arc<Metrics>,
    /// Most buckets one series may have (`--max-buckets`).
    pub max_buckets: usize,
    /// Per-key rate limits and concurrency caps.
    pub limiter: Arc<RateLimiter>,
    /// Connection-level bounds (header size and read timeout).
    pub http_limits: HttpLimits,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// The store shared by every replica (`--valkey-url`), if configured.
    pub valkey: Option<Arc<Valkey>>,
    /// Per-key budgets shared through Valkey (`None`: in process only).
    pub shared_limiter: Option<Arc<SharedRateLimiter>>,
}

impl AppState {
    /// State from configuration: loads the keys file (fails if it is missing
    /// or invalid) and builds the ClickHouse client. Does not connect.
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let user_tokens = args.user_token_settings().map(|s| UserTokens::load(&s)).transpose()?;
        let keys = KeyStore::load(&args.api_keys, Duration::from_millis(args.api_keys_reload_ms))?.with_user_tokens(user_tokens);
        // Rejects a malformed --valkey-url before anything starts.
        Valkey::connect(&args.valkey_settings())?;
        if let Some(s) = args.recorder_settings() {
            Recorder::new(&s)?;
        }
        Ok(Self::new(args.clickhouse.client(), Arc::new(keys), args))
    }

    /// State from parts (tests build their own key store and client). Must
    /// be called inside a Tokio runtime; panics on a malformed `--valkey-url`
    /// ([`AppState::from_args`] reports it as an error instead).
    pub fn new(clickhouse: clickhouse::Client, keys: Arc<KeyStore>, args: &Args) -> Self {
        let valkey = Valkey::connect(&args.valkey_settings()).expect("valid --valkey-url");
        let metrics = Arc::new(Metrics::new());
        let db = Db::new(clickhouse.clone(), args.clickhouse_concurrency, args.query_timeout(), metrics.clone())
            .with_limits(args.query_limits());
        let recorder = args.recorder_settings().map(|s| Recorder::new(&s).expect("valid Kafka producer settings"));
        let usage =
            Arc::new(UsageState::new(clickhouse, args.usage_settings(), &metrics).with_valkey(valkey.clone()).with_recorder(recorder));
        let shared_limiter = valkey.clone().map(|v| Arc::new(SharedRateLimiter::new(v, args.max_request_ms())));
        let limiter = Arc::new(RateLimiter::new(args.rate_budgets(), &metrics));
        Self {
            db,
            keys,
            usage,
            metrics,
            max_buckets: args.max_buckets,
            limiter,
            http_limits: args.http_limits(),
            max_body_bytes: args.request.max_body_bytes,
            valkey,
            shared_limiter,
        }
    }
}

impl FromRef<AppState> for Db {
    fn from_ref(s: &AppState) -> Self {
        s.db.clone()
    }
}

impl FromRef<AppState> for Arc<KeyStore> {
    fn from_ref(s: &AppState) -> Self {
        s.keys.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}

impl FromRef<AppState> for Arc<RateLimiter> {
    fn from_ref(s: &AppState) -> Self {
        s.limiter.clone()
    }
}

impl FromRef<AppState> for MaxBodyBytes {
    fn from_ref(s: &AppState) -> Self {
        MaxBodyBytes(s.max_body_bytes)
    }
}

impl FromRef<AppState> for AnalyticsState {
    fn from_ref(s: &AppState) -> Self {
        AnalyticsState { db: s.db.clone(), max_buckets: s.max_buckets }
    }
}

impl FromRef<AppState> for UsageApiState {
    fn from_ref(s: &AppState) -> Self {
        UsageApiState { usage: s.usage.clone(), db: s.db.clone() }
    }
}

impl FromRef<AppState> for SharedStore {
    fn from_ref(s: &AppState) -> Self {
        SharedStore(s.valkey.clone())
    }
}

impl FromRef<AppState> for SharedRateLimits {
    fn from_ref(s: &AppState) -> Self {
        SharedRateLimits(s.shared_limiter.clone())
    }
}
