//! Usage and plan limits (SEED_SPEC §2, §3): the check an agent runtime makes
//! before every agent call, the current-usage endpoints, and the admin API
//! for the limits themselves. See docs/limits.md.
//!
//! * [`period`]: calendar and rolling periods (DST-correct, pure).
//! * [`limits`]: the limit model, validation and `plan_limits` storage.
//! * [`plans`]: plans (named sets of limit templates) and their
//!   assignment to organizations.
//! * [`counters`]: per-minute usage buckets per subject, in memory.
//! * [`refresh`]: keeps the counters equal to the ClickHouse rollups.
//! * [`reservations`]: budget held by `reserve=true` checks, in process.
//! * [`shared_holds`]: the same, shared by every replica in Valkey.
//! * [`limits_watch`]: reloads the limits when any replica wrote one.
//! * [`engine`]: the state and the check (strictest limit, reservation).
//! * [`settings`]: the plain settings the state is built from.
//! * [`json`]: exact money in JSON, RateLimit headers.
//! * [`recorder`]: the Kafka producer of usage the API records itself;
//!   [`replays`]: the answers of recorded usage, for retries.
//! * [`limits_api`], [`plans_api`], [`check_api`], [`consume_api`],
//!   [`current_api`], [`history_api`] (usage history, per-user usage and
//!   limits): the HTTP handlers.

pub mod check_api;
pub mod consume_api;
pub mod counters;
pub mod current_api;
pub mod engine;
pub mod history_api;
pub mod json;
pub mod limits;
pub mod limits_api;
pub mod limits_watch;
pub mod period;
pub mod plans;
pub mod plans_api;
pub mod recorder;
pub mod refresh;
pub mod replays;
pub mod reservations;
pub mod settings;
pub mod shared_holds;

use std::sync::Arc;

use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    UsageApiState: FromRef<S>,
    Arc<KeyStore>: FromRef<S>,
    MaxBodyBytes: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(limits_api::list, limits_api::create))
        .routes(routes!(limits_api::get_one, limits_api::put, limits_api::delete))
        .routes(routes!(plans_api::list, plans_api::create))
        .routes(routes!(plans_api::get_one, plans_api::put))
        .routes(routes!(plans_api::organizations))
        .routes(routes!(plans_api::assignment, plans_api::assign))
        .routes(routes!(check_api::check))
        .routes(routes!(check_api::release))
        .routes(routes!(consume_api::consume))
        .routes(routes!(consume_api::commit))
        .routes(routes!(check_api::org_check))
        .routes(routes!(current_api::current))
        .routes(routes!(current_api::stats))
        .routes(routes!(current_api::org_aggregate))
        .routes(routes!(current_api::org_user))
        .routes(routes!(current_api::organizations_usage))
        .routes(routes!(history_api::history))
        .routes(routes!(history_api::user_usage))
        .routes(routes!(history_api::user_limits))
}
