//! agentmeter-api: the HTTP API over ClickHouse.
//!
//! * [`analytics`]: the Caylex-compatible analytics endpoints under
//!   `/api/v1` and the Grafana time-series endpoint.
//! * [`usage`]: usage and plan-limit endpoints.
//! * [`ops`]: `/health`, `/ready`, `/metrics`, `/openapi.json`, `/docs`.
//!
//! [`app`] builds the router from an [`AppState`]; [`run`] binds the
//! configured address and serves until `shutdown` completes. Abuse bounds
//! (docs/security.md): per-key rate and concurrency limits
//! ([`rate_limit`]), a request body limit, header size and header read
//! timeout ([`limits_http`]) and ClickHouse settings on every query
//! ([`db`]). Handlers are
//! thin: they parse parameters ([`params`], [`window`], [`buckets`]), call one
//! function of [`queries`] and shape the response.

pub mod analytics;
pub mod auth;
pub mod body;
pub mod buckets;
pub mod config;
pub mod db;
pub mod error;
pub mod limits_http;
pub mod metrics;
pub mod ops;
pub mod params;
pub mod queries;
pub mod rate_limit;
pub mod state;
pub mod ui;
pub mod usage;
pub mod window;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;

pub use config::Args;
pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ops::router())
        .merge(analytics::router())
        .merge(usage::router())
        .merge(crate::ui::router())
        .fallback(ops::not_found)
        // Innermost first: the rate limit runs after routing (it needs the
        // route template) and inside the metrics layer (429s are counted).
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves `state` on an already bound listener until `shutdown` completes.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let limits = state.http_limits;
    limits_http::serve(listener, app(state), limits, shutdown).await
}

/// Loads the keys, binds `config.addr` and serves until `shutdown`.
pub async fn run(config: Args, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = AppState::from_args(&config)?;
    state.usage.start();
    let listener = TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, keys = state.keys.len(), "agentmeter-api listening");
    serve(listener, state, shutdown).await
}
