//! `/v1/limits`: admin-key endpoints to set, read and delete the plan limits
//! of the caller's tenant.
//!
//! * `POST /v1/limits` creates a limit with a new id (201).
//! * `PUT /v1/limits/{limit_id}` creates or replaces it (201 / 200).
//! * `GET /v1/limits`, `GET /v1/limits/{limit_id}`.
//! * `DELETE /v1/limits/{limit_id}` writes a tombstone.
//!
//! Every write returns the new `version` (also as `ETag: "<version>"`). A
//! write may name the version it expects, as `If-Match: "<version>"` or
//! `expected_version` in the body (0 = "must not exist yet"); a mismatch is
//! 409 with the current version in the detail. A limit id of another tenant
//! is 404, exactly like an unknown one.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::limits::{Limit, LimitInput, LimitView};
use super::UsageApiState;
use crate::auth::AdminCaller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::path::Path;
use crate::queries::limits::{load_one, load_tenant, write, LimitRow};

/// `GET /v1/limits`: the tenant's limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitList {
    pub count: usize,
    pub limits: Vec<LimitView>,
}

/// The answer of a deleted limit: the tombstone's version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub limit_id: Uuid,
    pub version: u64,
    /// Always `true`.
    pub deleted: bool,
}

fn parse_limit_id(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::invalid([FieldError::path("limit_id", "Input should be a valid UUID", "uuid_parsing")]))
}

/// The version a write expects, from `If-Match` (wins) or the body.
fn expected_version(headers: &HeaderMap, body: Option<u64>) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else { return Ok(body) };
    let s = v.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid([FieldError::new(&["header", "If-Match"], "Input should be a version number, e.g. \"3\"", "int_parsing")])
    })
}

fn parse_body(body: &Bytes) -> ApiResult<LimitInput> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid([FieldError::new(&["body"], format!("Invalid JSON body: {e}"), "json_invalid")]))
}

fn with_etag(status: StatusCode, limit: &Limit) -> Response {
    let mut resp = (status, Json(LimitView::from(limit))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", limit.version)) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

async fn upsert(state: &UsageApiState, caller: &AdminCaller, limit_id: Uuid, headers: &HeaderMap, body: &Bytes) -> ApiResult<Response> {
    let tenant = caller.0.tenant_id;
    let input = parse_body(body)?;
    let expected = expected_version(headers, input.expected_version)?;
    let mut limit = input
        .validate(tenant, limit_id, &caller.0.key_name)
        .map_err(|issues| ApiError::invalid(issues.into_iter().map(|i| FieldError::new(&["body", i.field], i.msg, i.kind))))?;
    let usage = &state.usage;
    let _guard = usage.write_lock.lock().await;
    let current = load_one(&state.db, tenant, limit_id).await?;
    let live_version = current.as_ref().filter(|r| !r.deleted).map(|r| r.version).unwrap_or(0);
    if let Some(e) = expected {
        if e != live_version {
            return Err(ApiError::Conflict(format!("Version mismatch: the limit is at version {live_version}, not {e}")));
        }
    }
    limit.version = current.as_ref().map(|r| r.version).unwrap_or(0) + 1;
    let row = LimitRow::from_limit(&limit, false);
    write(&state.db, &row).await?;
    usage.put_limit(tenant, limit_id, Some(limit.clone()));
    Ok(with_etag(if live_version == 0 { StatusCode::CREATED } else { StatusCode::OK }, &limit))
}

/// `POST /v1/limits`
#[utoipa::path(post, path = "/v1/limits", tag = "Limits", summary = "Create a plan limit (new id)",
    params(("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"0\" (must not exist yet)")),
    request_body = LimitInput,
    responses((status = 201, description = "Created (ETag: the version)", body = LimitView), (status = 409, description = "Version mismatch", body = crate::error::Detail)))]
pub async fn create(State(state): State<UsageApiState>, caller: AdminCaller, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    upsert(&state, &caller, Uuid::new_v4(), &headers, &body).await
}

/// `PUT /v1/limits/{limit_id}`
#[utoipa::path(put, path = "/v1/limits/{limit_id}", tag = "Limits", summary = "Create or replace a plan limit",
    params(("limit_id" = uuid::Uuid, Path), ("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"3\"")),
    request_body = LimitInput,
    responses(
        (status = 200, description = "Replaced (ETag: the version)", body = LimitView),
        (status = 201, description = "Created (ETag: the version)", body = LimitView),
        (status = 409, description = "Version mismatch", body = crate::error::Detail),
    ))]
pub async fn put(
    State(state): State<UsageApiState>,
    caller: AdminCaller,
    Path(limit_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let limit_id = parse_limit_id(&limit_id)?;
    upsert(&state, &caller, limit_id, &headers, &body).await
}

/// `GET /v1/limits`
#[utoipa::path(get, path = "/v1/limits", tag = "Limits", summary = "The tenant's plan limits",
    responses((status = 200, description = "Every live limit", body = LimitList)))]
pub async fn list(State(state): State<UsageApiState>, caller: AdminCaller) -> ApiResult<Response> {
    let tenant = caller.0.tenant_id;
    let rows = load_tenant(&state.db, tenant).await?;
    let limits: Vec<LimitView> = rows.iter().filter_map(LimitRow::to_limit).map(|l| LimitView::from(&l)).collect();
    Ok(Json(LimitList { count: limits.len(), limits }).into_response())
}

/// `GET /v1/limits/{limit_id}`
#[utoipa::path(get, path = "/v1/limits/{limit_id}", tag = "Limits", summary = "One plan limit",
    params(("limit_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The limit (ETag: the version)", body = LimitView)))]
pub async fn get_one(State(state): State<UsageApiState>, caller: AdminCaller, Path(limit_id): Path<String>) -> ApiResult<Response> {
    let limit_id = parse_limit_id(&limit_id)?;
    let tenant = caller.0.tenant_id;
    let row = load_one(&state.db, tenant, limit_id).await?;
    match row.as_ref().and_then(LimitRow::to_limit) {
        Some(l) => Ok(with_etag(StatusCode::OK, &l)),
        None => Err(ApiError::NotFound("Limit not found".into())),
    }
}

/// `DELETE /v1/limits/{limit_id}`
#[utoipa::path(delete, path = "/v1/limits/{limit_id}", tag = "Limits", summary = "Delete a plan limit",
    params(("limit_id" = uuid::Uuid, Path), ("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"3\"")),
    responses((status = 200, description = "Deleted: the tombstone's version", body = Deleted), (status = 409, description = "Version mismatch", body = crate::error::Detail)))]
pub async fn delete(
    State(state): State<UsageApiState>,
    caller: AdminCaller,
    Path(limit_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit_id = parse_limit_id(&limit_id)?;
    let tenant = caller.0.tenant_id;
    let expected = expected_version(&headers, None)?;
    let usage = &state.usage;
    let _guard = usage.write_lock.lock().await;
    let row = load_one(&state.db, tenant, limit_id).await?;
    let Some(mut limit) = row.as_ref().and_then(LimitRow::to_limit) else {
        return Err(ApiError::NotFound("Limit not found".into()));
    };
    if let Some(e) = expected {
        if e != limit.version {
            return Err(ApiError::Conflict(format!("Version mismatch: the limit is at version {}, not {e}", limit.version)));
        }
    }
    limit.version += 1;
    limit.updated_at = chrono::Utc::now();
    limit.updated_by = caller.0.key_name.clone();
    let tombstone = LimitRow::from_limit(&limit, true);
    write(&state.db, &tombstone).await?;
    usage.put_limit(tenant, limit_id, None);
    Ok(Json(Deleted { limit_id, version: limit.version, deleted: true }).into_response())
}
