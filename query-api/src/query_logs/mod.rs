//! Query logs and traces (SEED_SPEC §1.5): the list of a project's queries,
//! one query's details, and its execution trace, built from the events
//! (`query_events` and `query_texts`, migration 0006; SQL in
//! [`crate::queries::query_logs`]). docs/api.md, "Query logs and traces",
//! describes the answers and the choices made where the contract is silent.
//!
//! Tenancy: every read names the caller's tenant, so another tenant's
//! project answers an empty page and another tenant's query a 404, exactly
//! as ids nobody uses (no existence oracle); malformed ids are 422.

mod cursor;
mod handlers;
pub mod responses;
mod trace;

use std::sync::Arc;

use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::KeyStore;
use crate::db::Db;

/// The routes and their OpenAPI entries.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    Arc<KeyStore>: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(handlers::list)).routes(routes!(handlers::detail)).routes(routes!(handlers::trace))
}
