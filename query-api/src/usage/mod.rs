//! Usage and plan limits (SEED_SPEC §2, §3): the check an agent runtime makes
//! before every agent call, the current-usage endpoints, and the admin API
//! for the limits themselves. See docs/limits.md.
//!
//! * [`period`]: calendar and rolling periods (DST-correct, pure).
//! * [`limits`]: the limit model, validation and `plan_limits` storage.
//! * [`counters`]: per-minute usage buckets per subject, in memory.
//! * [`refresh`]: keeps the counters equal to the ClickHouse rollups.
//! * [`reservations`]: budget held by `reserve=true` checks, in process.
//! * [`shared_holds`]: the same, shared by every replica in Valkey.
//! * [`limits_watch`]: reloads the limits when any replica wrote one.
//! * [`engine`]: the state and the check (strictest limit, reservation).
//! * [`settings`]: the plain settings the state is built from.
//! * [`json`]: exact money in JSON, RateLimit headers.
//! * [`limits_api`], [`check_api`], [`current_api`]: the HTTP handlers.

pub mod check_api;
pub mod counters;
pub mod current_api;
pub mod engine;
pub mod json;
pub mod limits;
pub mod limits_api;
pub mod limits_watch;
pub mod period;
pub mod refresh;
pub mod reservations;
pub mod settings;
pub mod shared_holds;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::{delete, get, post};
use axum::Router;

pub use engine::UsageState;
pub use settings::UsageSettings;

use crate::auth::KeyStore;
use crate::body::MaxBodyBytes;
use crate::db::Db;

/// What the usage handlers need of the app's state.
#[derive(Clone)]
pub struct UsageApiState {
    /// Counters, limits and reservations in memory.
    pub usage: Arc<UsageState>,
    /// ClickHouse behind the concurrency limit and the query timeout.
    pub db: Db,
}

/// Routes of the usage endpoints (full paths, merged into the app).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    UsageApiState: FromRef<S>,
    Arc<KeyStore>: FromRef<S>,
    MaxBodyBytes: FromRef<S>,
{
    Router::new()
        .route("/v1/limits", get(limits_api::list).post(limits_api::create))
        .route("/v1/limits/{limit_id}", get(limits_api::get_one).put(limits_api::put).delete(limits_api::delete))
        .route("/v1/usage/check", post(check_api::check))
        .route("/v1/usage/reservations/{reservation_id}", delete(check_api::release))
        .route("/v1/organizations/{organization_id}/usage/check", post(check_api::org_check))
        .route("/v1/api/usage/current", get(current_api::current))
        .route("/v1/usage/stats", get(current_api::current))
        .route("/v1/organizations/{organization_id}/usage", get(current_api::org_aggregate))
        .route("/v1/organizations/{organization_id}/usage/user/{user_id}", get(current_api::org_user))
        .route("/api/organizations/{org_uuid}/usage", get(current_api::organizations_usage))
}
