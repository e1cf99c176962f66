//! The two handlers: parse and validate, call
//! [`crate::queries::project_users`], shape the contract's answer
//! (`Page_UserSummary_`, `UserAuthDetails`; no envelope, as in the contract).

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::cursor;
use super::responses::{UsedServerItem, UserAuthDetails, UserSummary, UsersPage};
use crate::auth::Caller;
use crate::db::Db;
use crate::error::{ApiError, FieldError};
use crate::params::{path_uuid, Checker};
use crate::path::Path;
use crate::queries::project_users::{self, ProjectUser, UserFilter, UserPosition};
use crate::query_logs::responses::PageMeta;

/// Query parameters of the list (documentation; parsed from the pairs so
/// that `server_instance_ids` may repeat and a bad value is a 422 naming it).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Filter by user email: a case-insensitive part of the e-mail, or the
    /// exact `user_token_id`. At most 256 bytes; empty = no filter.
    search: Option<String>,
    /// Users whose tool calls reached any of these server instances (the
    /// events' stand-in for "authenticated to"); repeat the parameter, at
    /// most 100.
    #[param(value_type = Option<Vec<uuid::Uuid>>)]
    server_instance_ids: Option<Vec<String>>,
    /// Items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    size: Option<String>,
    /// Pagination cursor (`meta.next_cursor` of the previous page).
    cursor: Option<String>,
}

/// The list's parameters, validated.
pub struct ListQuery {
    search: Option<String>,
    server_instances: Vec<Uuid>,
    size: usize,
    after: Option<UserPosition>,
}

const SIZE_DEFAULT: u32 = 20;
const SIZE_MAX: u32 = 100;
const MAX_SERVER_INSTANCES: usize = 100;
const MAX_SEARCH_BYTES: usize = 256;

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = match Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
            Ok(Query(p)) => p,
            Err(e) => return Err(ApiError::invalid([FieldError::new(&["query"], e.body_text(), "query_parsing")])),
        };
        let mut c = Checker::new();
        let single = |name: &str, c: &mut Checker| -> Option<String> {
            let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone());
            let first = values.next();
            if values.next().is_some() {
                c.push(name, format!("{name} may be given once"));
            }
            first
        };
        let search = single("search", &mut c).filter(|s| !s.is_empty());
        if search.as_ref().is_some_and(|s| s.len() > MAX_SEARCH_BYTES) {
            c.push("search", format!("search must be at most {MAX_SEARCH_BYTES} bytes"));
        }
        let raw_size = single("size", &mut c);
        let size = c.int("size", &raw_size, SIZE_DEFAULT, 1, SIZE_MAX) as usize;
        let after = match single("cursor", &mut c).filter(|s| !s.is_empty()) {
            Some(s) => cursor::decode(&s).map_err(|msg| c.push("cursor", msg)).ok(),
            None => None,
        };
        let mut server_instances = Vec::new();
        for v in pairs.iter().filter(|(k, _)| k == "server_instance_ids").flat_map(|(_, v)| v.split(',')) {
            if let Some(id) = c.uuid("server_instance_ids", &Some(v.to_owned())) {
                server_instances.push(id);
            }
        }
        server_instances.sort_unstable();
        server_instances.dedup();
        if server_instances.len() > MAX_SERVER_INSTANCES {
            c.push("server_instance_ids", format!("at most {MAX_SERVER_INSTANCES} server instance ids"));
        }
        c.finish()?;
        Ok(ListQuery { search, server_instances, size, after })
    }
}

fn ts_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// "Now" of a request, whole seconds, and the start of its past 7 days.
fn week() -> (DateTime<Utc>, DateTime<Utc>) {
    let n = Utc::now();
    let now = DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n);
    (now - Duration::days(7), now)
}

fn summary(u: &ProjectUser, server_instances: u64) -> UserSummary {
    UserSummary {
        user_email: u.email.clone(),
        user_token_id: u.id.clone(),
        authenticated_servers_count: 0,
        total_project_server_instances: server_instances,
        server_logos: Vec::new(),
        last_authentication_at: None,
        weekly_queries: u.weekly_queries,
        weekly_tool_calls: u.weekly_tool_calls,
        first_seen_at: ts_ms(u.first_ms),
        last_seen_at: ts_ms(u.last_ms),
    }
}

/// `GET /api/v1/projects/{project_id}/users`.
#[utoipa::path(
    get,
    path = "/api/v1/projects/{project_id}/users",
    extensions(("x-caylex-schema" = json!("Page_UserSummary_"))),
    tag = "Users",
    summary = "Users of a project with weekly activity, newest first, in cursor pages",
    params(("project_id" = uuid::Uuid, Path, description = "Project of the caller's tenant (another tenant's answers an empty page)"), ListParams),
    responses((status = 200, description = "A page of users", body = UsersPage))
)]
pub async fn list(State(db): State<Db>, caller: Caller, Path(project): Path<String>, q: ListQuery) -> Result<Json<UsersPage>, ApiError> {
    let project = path_uuid("project_id", &project)?;
    let (week_start, end) = week();
    let filter = UserFilter { tenant: caller.tenant_id, project, search: q.search, server_instances: q.server_instances, week_start, end };
    let (mut users, instances) = tokio::try_join!(
        project_users::page(&db, &filter, q.after, q.size),
        project_users::server_instances(&db, caller.tenant_id, project, end),
    )?;
    let total = match (users.first(), q.after) {
        (Some(u), _) => u.total,
        (None, None) => 0,
        (None, Some(_)) => project_users::total(&db, &filter).await?,
    };
    let has_next = users.len() > q.size;
    users.truncate(q.size);
    let next_cursor = match users.last() {
        Some(last) if has_next => {
            let user_id = Uuid::parse_str(&last.id).map_err(|e| ApiError::Internal(format!("user id from ClickHouse: {e}")))?;
            Some(cursor::encode(UserPosition { first_ms: last.first_ms, user_id }))
        }
        _ => None,
    };
    Ok(Json(UsersPage {
        items: users.iter().map(|u| summary(u, instances)).collect(),
        meta: PageMeta { size: q.size as u64, total, next_cursor, has_next, has_prev: q.after.is_some() },
    }))
}

/// `GET /api/v1/projects/{project_id}/users/{user_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/projects/{project_id}/users/{user_id}",
    extensions(("x-caylex-schema" = json!("UserAuthDetails"))),
    tag = "Users",
    summary = "One user of a project (404 when the user has no event in the caller's project)",
    params(
        ("project_id" = uuid::Uuid, Path, description = "Project of the caller's tenant"),
        ("user_id" = uuid::Uuid, Path, description = "The end user (user_token_id)"),
    ),
    responses((status = 200, description = "The user", body = UserAuthDetails))
)]
pub async fn detail(
    State(db): State<Db>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<UserAuthDetails>, ApiError> {
    let project = path_uuid("project_id", &project)?;
    let user = path_uuid("user_id", &user)?;
    let (week_start, end) = week();
    let filter = UserFilter { tenant: caller.tenant_id, project, search: None, server_instances: Vec::new(), week_start, end };
    let (found, servers) =
        tokio::try_join!(project_users::user(&db, &filter, user), project_users::used_servers(&db, caller.tenant_id, project, user, end),)?;
    let u = found.ok_or_else(|| ApiError::NotFound("User not found in this project".into()))?;
    Ok(Json(UserAuthDetails {
        user_email: u.email.clone(),
        servers: Vec::new(),
        user_token_id: u.id.clone(),
        first_seen_at: ts_ms(u.first_ms),
        last_seen_at: ts_ms(u.last_ms),
        weekly_queries: u.weekly_queries,
        weekly_tool_calls: u.weekly_tool_calls,
        servers_used: servers
            .into_iter()
            .map(|s| UsedServerItem {
                server_instance_id: s.server_instance,
                server_id: s.server,
                server_name: s.server_name,
                tool_calls: s.tool_calls,
                first_used_at: ts_ms(s.first_ms),
                last_used_at: ts_ms(s.last_ms),
            })
            .collect(),
    }))
}
