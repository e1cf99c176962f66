//! A project's end users (SEED_SPEC §1.5): the paged list with weekly
//! activity (`GET /api/v1/projects/{project_id}/users`) and one user's
//! details (`GET /api/v1/projects/{project_id}/users/{user_id}`), built from
//! the events (SQL in [`crate::queries::project_users`]). The userbase
//! summary and one user's analytics are analytics endpoints
//! (`analytics::project_users`).
//!
//! What the events cannot know is empty, never invented: server
//! authentication (`authenticated_servers_count` 0, `server_logos` `[]`,
//! `last_authentication_at` `null`, `servers` `[]`). What they do know is
//! added beside the contract's fields (first and last event, the server
//! instances a user's tool calls reached). docs/api.md, "Project users",
//! describes the answers and the choices made where the contract is silent.
//!
//! Tenancy: every read names the caller's tenant, so another tenant's
//! project answers an empty page and another tenant's user a 404, exactly
//! as ids nobody uses (no existence oracle); malformed ids are 422.

mod cursor;
mod handlers;
pub mod responses;

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
    OpenApiRouter::new().routes(routes!(handlers::list)).routes(routes!(handlers::detail))
}
