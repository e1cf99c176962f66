//! agentmeter-api: the HTTP API over ClickHouse.
//!
//! Features:
//! * [`analytics`]: the Caylex-compatible analytics endpoints under
//!   `/api/v1` and the Grafana time-series endpoint.
//! * [`query_logs`]: a project's query logs, one query's details and its
//!   execution trace.
//! * [`project_users`]: a project's end users (paged list, one user).
//! * [`usage`]: usage and plan-limit endpoints, the in-memory counters and
//!   their refresher.
//! * [`ops`]: `/health`, `/ready`, `/metrics` and the request metrics
//!   middleware; [`openapi`]: the OpenAPI document generated from the
//!   handlers (`/openapi.json`, `/docs`); [`ui`]: the web page.
//!
//! Layers under them (each depends only on layers further down, never on a
//! feature or on the state; a test in `layering.rs` fails on any cycle
//! among the top-level modules):
//! * HTTP edge: [`params`], [`path`], [`window`] and [`buckets`] parse
//!   parameters ([`param_docs`] describes them for the document; their
//!   calendar arithmetic, like that of limit periods and of the rollup
//!   choice, is [`calendar`]'s);
//!   [`auth`] and [`body`] are extractors ([`user_tokens`] verifies the
//!   end-user JWT next to the key); [`rate_limit`] and
//!   [`limits_http`] bound what one key or one connection may take
//!   (docs/security.md); [`shared_rate_limit`] shares the per-key budgets
//!   of several replicas.
//! * Shared state: [`valkey`], the store several replicas share
//!   (reservations in [`usage::shared_holds`], per-key budgets).
//! * Data: [`queries`] holds every SQL statement of the API and knows no
//!   HTTP (plain filters in, typed [`db::QueryError`]s out, turned into
//!   responses by [`error`]); [`db`] is the only path to ClickHouse
//!   (concurrency limit, time budget, ClickHouse settings on every query).
//! * Leaves: [`error`] (the one error type and its HTTP shape), [`metrics`]
//!   (every metric of the API, declared once).
//!
//! Composition: [`config`] owns every command-line flag and hands each
//! feature a plain settings value; [`state`] builds [`AppState`] from it and
//! lends each handler, extractor and middleware the part it needs through
//! axum's `FromRef`; [`app`] builds the router; [`serve`] starts the usage
//! refresher and serves; [`run`] binds the configured address.

pub mod analytics;
pub mod auth;
pub mod body;
pub mod buckets;
pub mod calendar;
pub mod config;
pub mod db;
pub mod error;
pub mod limits_http;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod param_docs;
pub mod params;
pub mod path;
pub mod project_users;
pub mod queries;
pub mod query_logs;
pub mod rate_limit;
pub mod shared_rate_limit;
pub mod slot_queue;
pub mod state;
pub mod ui;
pub mod usage;
pub mod user_tokens;
pub mod valkey;
pub mod window;

#[cfg(test)]
mod layering;

use std::future::Future;
use std::sync::OnceLock;

use axum::extract::{DefaultBodyLimit, Extension};
use axum::Router;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

pub use config::Args;
pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// The API routes and their OpenAPI document, from the same `routes!`
/// calls (the web UI's static files are not API and not in the document).
fn api() -> (Router<AppState>, openapi::Document) {
    openapi::split(
        OpenApiRouter::new()
            .merge(ops::router())
            .merge(analytics::router())
            .merge(query_logs::router())
            .merge(project_users::router())
            .merge(usage::router())
            .merge(openapi::router()),
    )
}

/// The OpenAPI document of the API (built once per process).
pub fn openapi_document() -> &'static openapi::Document {
    static DOC: OnceLock<openapi::Document> = OnceLock::new();
    DOC.get_or_init(|| api().1)
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| openapi::to_json(openapi_document()));
    Router::new()
        .merge(api().0)
        .merge(crate::ui::router())
        .fallback(ops::not_found)
        // Innermost first: the rate limit runs after routing (it needs the
        // route template) and inside the metrics layer (429s are counted).
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::track))
        .layer(Extension(openapi::ServedDocument(json)))
        .with_state(state)
}

/// Serves `state` on an already bound listener until `shutdown` completes.
///
/// This is the one place the usage refresher and the end-user token key
/// refresh start: an app that serves keeps its usage counters current and
/// its token keys in step with their file from its first request on.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    state.usage.start();
    state.keys.start_user_token_refresh();
    let limits = state.http_limits;
    limits_http::serve(listener, app(state), limits, shutdown).await
}

/// Loads the keys, binds `config.addr` and serves until `shutdown`.
pub async fn run(config: Args, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = AppState::from_args(&config)?;
    let listener = TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, keys = state.keys.len(), "agentmeter-api listening");
    if let Some(tokens) = state.keys.user_tokens() {
        // Key ids, algorithms, audiences, issuer and refresh interval; never key material.
        tracing::info!(?tokens, "end-user tokens on");
    }
    match &state.valkey {
        Some(v) => tracing::info!(endpoint = %v.endpoint, "reservations and per-key rate limits are shared through Valkey"),
        None => tracing::warn!("no --valkey-url: reservations (holds) and per-key rate limits are process-local; run a single replica"),
    }
    serve(listener, state, shutdown).await
}
