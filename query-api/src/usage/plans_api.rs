//! `/v1/plans` and organization plan assignments (SEED_SPEC §2.3).
//!
//! * `GET /v1/plans?skip=0&limit=100&include_inactive=false` (any key):
//!   `{plans, total, page, per_page, has_next, has_prev}`, oldest first.
//! * `GET /v1/plans/{plan_id}` (any key): one `PlanResponse`.
//! * `POST /v1/plans` (admin) creates a plan with a new id (201);
//!   `PUT /v1/plans/{plan_id}` (admin) creates or replaces it (201 / 200).
//!   Every write returns the plan's new `version` (also the `ETag`) and may
//!   name the version it expects (`If-Match` or `expected_version`), as
//!   limit writes do.
//! * `GET /v1/plans/{plan_id}/organizations` (admin): who is on the plan.
//! * `PUT /v1/organizations/{organization_id}/plan` (admin) puts an
//!   organization on a plan (`{"plan_id": null}`: on none), versioned the
//!   same way; `GET` of the same path (any key) reads it (404: no plan).
//!
//! A plan of another tenant is 404, exactly like an unknown one.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::json::exact_json;
use super::plans::{Plan, PlanInput, PlanView};
use super::UsageApiState;
use crate::auth::{AdminCaller, Caller};
use crate::body::Body;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::path::Path;
use crate::queries::plans::{self as store, AssignmentRow};

/// Largest page of `GET /v1/plans`.
pub const MAX_PAGE: u64 = 1_000;
/// Page size of `GET /v1/plans` when `limit` is not given.
pub const DEFAULT_PAGE: u64 = 100;

/// `GET /v1/plans`: one page of the tenant's plans.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<PlanView>,
    /// Plans matching `include_inactive`, over every page.
    pub total: u64,
    /// 1-based: `skip / limit + 1`.
    pub page: u64,
    /// The `limit` asked for.
    pub per_page: u64,
    pub has_next: bool,
    pub has_prev: bool,
}

/// The body of `PUT /v1/organizations/{organization_id}/plan`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AssignmentInput {
    /// The plan (of the caller's tenant, active); `null`: no plan.
    #[schema(value_type = Option<uuid::Uuid>, required = true)]
    pub plan_id: Option<String>,
    /// The version the write expects (0: never assigned); `If-Match` wins.
    pub expected_version: Option<u64>,
}

/// Which plan an organization is on.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentView {
    pub organization_id: Uuid,
    /// `null`: on no plan (after an unassignment).
    pub plan_id: Option<Uuid>,
    pub plan_name: Option<String>,
    pub version: u64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// `GET /v1/plans/{plan_id}/organizations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOrganizations {
    pub plan_id: Uuid,
    pub count: usize,
    pub organizations: Vec<AssignmentView>,
}

fn parse_uuid(name: &str, s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::invalid([FieldError::path(name, "Input should be a valid UUID", "uuid_parsing")]))
}

/// The version a write expects, from `If-Match` (wins) or the body.
fn expected_version(headers: &HeaderMap, body: Option<u64>) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else { return Ok(body) };
    let s = v.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid([FieldError::new(&["header", "If-Match"], "Input should be a version number, e.g. \"3\"", "int_parsing")])
    })
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid([FieldError::new(&["body"], format!("Invalid JSON body: {e}"), "json_invalid")]))
}

fn etag(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

fn plan_response(status: StatusCode, plan: &Plan) -> Response {
    etag(exact_json(status, HeaderMap::new(), &PlanView::from(plan)), plan.version)
}

fn check_expected(expected: Option<u64>, live: u64, what: &str) -> ApiResult<()> {
    match expected {
        Some(e) if e != live => Err(ApiError::Conflict(format!("Version mismatch: the {what} is at version {live}, not {e}"))),
        _ => Ok(()),
    }
}

async fn upsert(state: &UsageApiState, caller: &AdminCaller, plan_id: Uuid, headers: &HeaderMap, body: &Bytes) -> ApiResult<Response> {
    let tenant = caller.0.tenant_id;
    let input: PlanInput = json_body(body)?;
    let expected = expected_version(headers, input.expected_version)?;
    let mut plan = input.validate(tenant, plan_id, &caller.0.key_name).map_err(ApiError::invalid)?;
    let usage = &state.usage;
    let _guard = usage.write_lock.lock().await;
    let current = store::load_one(&state.db, tenant, plan_id).await?;
    let live = current.as_ref().filter(|r| !r.deleted);
    check_expected(expected, live.map(|r| r.version).unwrap_or(0), "plan")?;
    plan.version = current.as_ref().map(|r| r.version).unwrap_or(0) + 1;
    if let Some(r) = live {
        plan.created_at = r.created_at;
    }
    store::write_plan(&state.db, &plan.to_row()).await?;
    usage.put_plan(plan.clone());
    Ok(plan_response(if live.is_none() { StatusCode::CREATED } else { StatusCode::OK }, &plan))
}

/// `POST /v1/plans`
#[utoipa::path(post, path = "/v1/plans", tag = "Plans", summary = "Create a plan (new id; admin key)",
    params(("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"0\" (must not exist yet)")),
    request_body = PlanInput,
    responses((status = 201, description = "Created (ETag: the version)", body = PlanView), (status = 403, description = "The key is not an admin key", body = crate::error::Detail), (status = 409, description = "Version mismatch", body = crate::error::Detail)))]
pub async fn create(State(state): State<UsageApiState>, caller: AdminCaller, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    upsert(&state, &caller, Uuid::new_v4(), &headers, &body).await
}

/// `PUT /v1/plans/{plan_id}`
#[utoipa::path(put, path = "/v1/plans/{plan_id}", tag = "Plans", summary = "Create or replace a plan: every organization on it moves to its new limits (admin key)",
    params(("plan_id" = uuid::Uuid, Path), ("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"3\"")),
    request_body = PlanInput,
    responses(
        (status = 200, description = "Replaced (ETag: the version)", body = PlanView),
        (status = 201, description = "Created (ETag: the version)", body = PlanView),
        (status = 403, description = "The key is not an admin key", body = crate::error::Detail),
        (status = 409, description = "Version mismatch", body = crate::error::Detail),
    ))]
pub async fn put(
    State(state): State<UsageApiState>,
    caller: AdminCaller,
    Path(plan_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let plan_id = parse_uuid("plan_id", &plan_id)?;
    upsert(&state, &caller, plan_id, &headers, &body).await
}

fn query_u64(q: &HashMap<String, String>, name: &str, default: u64, min: u64, max: u64, errs: &mut Vec<FieldError>) -> u64 {
    match q.get(name).map(|s| s.trim().parse::<u64>()) {
        None => default,
        Some(Ok(n)) if (min..=max).contains(&n) => n,
        Some(_) => {
            errs.push(FieldError::new(&["query", name], format!("Input should be an integer from {min} to {max}"), "int_parsing"));
            default
        }
    }
}

/// `GET /v1/plans`
#[utoipa::path(get, path = "/v1/plans", tag = "Plans", summary = "The tenant's plans, in pages (oldest first)",
    params(
        ("skip" = Option<u64>, Query, minimum = 0, description = "Plans to skip (default 0)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100, at most 1000)"),
        ("include_inactive" = Option<bool>, Query, description = "List inactive plans too (default false)"),
    ),
    responses((status = 200, description = "One page of plans", body = PlanList)))]
pub async fn list(State(state): State<UsageApiState>, caller: Caller, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let skip = query_u64(&q, "skip", 0, 0, u64::from(u32::MAX), &mut errs);
    let limit = query_u64(&q, "limit", DEFAULT_PAGE, 1, MAX_PAGE, &mut errs);
    let include_inactive = match q.get("include_inactive").map(|s| s.trim().to_ascii_lowercase()) {
        None => false,
        Some(s) if s == "true" || s == "1" => true,
        Some(s) if s == "false" || s == "0" => false,
        Some(_) => {
            errs.push(FieldError::new(&["query", "include_inactive"], "Input should be a valid boolean", "bool_parsing"));
            false
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs));
    }
    let rows = store::load_tenant(&state.db, caller.tenant_id).await?;
    let mut plans: Vec<Plan> = rows.iter().filter_map(Plan::from_row).filter(|p| include_inactive || p.is_active).collect();
    plans.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.plan_id.cmp(&b.plan_id)));
    let total = plans.len() as u64;
    let page: Vec<PlanView> = plans.iter().skip(skip as usize).take(limit as usize).map(PlanView::from).collect();
    let body = PlanList {
        has_next: skip + (page.len() as u64) < total,
        has_prev: skip > 0,
        plans: page,
        total,
        page: skip / limit + 1,
        per_page: limit,
    };
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &body))
}

async fn live_plan(state: &UsageApiState, tenant: Uuid, plan_id: Uuid) -> ApiResult<Plan> {
    let row = store::load_one(&state.db, tenant, plan_id).await?;
    row.as_ref().and_then(Plan::from_row).ok_or_else(|| ApiError::NotFound("Plan not found".into()))
}

/// `GET /v1/plans/{plan_id}`
#[utoipa::path(get, path = "/v1/plans/{plan_id}", tag = "Plans", summary = "One plan (inactive ones too)",
    params(("plan_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The plan (ETag: the version)", body = PlanView)))]
pub async fn get_one(State(state): State<UsageApiState>, caller: Caller, Path(plan_id): Path<String>) -> ApiResult<Response> {
    let plan_id = parse_uuid("plan_id", &plan_id)?;
    let plan = live_plan(&state, caller.tenant_id, plan_id).await?;
    Ok(plan_response(StatusCode::OK, &plan))
}

fn assignment_view(row: &AssignmentRow, plan_name: Option<String>) -> AssignmentView {
    AssignmentView {
        organization_id: row.organization_id,
        plan_id: (!row.plan_id.is_nil()).then_some(row.plan_id),
        plan_name,
        version: row.version,
        updated_at: row.updated_at,
        updated_by: row.updated_by.clone(),
    }
}

/// `GET /v1/plans/{plan_id}/organizations`
#[utoipa::path(get, path = "/v1/plans/{plan_id}/organizations", tag = "Plans", summary = "The organizations on a plan (admin key)",
    params(("plan_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "Every organization on the plan", body = PlanOrganizations), (status = 403, description = "The key is not an admin key", body = crate::error::Detail)))]
pub async fn organizations(State(state): State<UsageApiState>, caller: AdminCaller, Path(plan_id): Path<String>) -> ApiResult<Response> {
    let plan_id = parse_uuid("plan_id", &plan_id)?;
    let tenant = caller.0.tenant_id;
    let plan = live_plan(&state, tenant, plan_id).await?;
    let rows = store::load_plan_organizations(&state.db, tenant, plan_id).await?;
    let organizations: Vec<AssignmentView> = rows.iter().map(|r| assignment_view(r, Some(plan.name.clone()))).collect();
    Ok(Json(PlanOrganizations { plan_id, count: organizations.len(), organizations }).into_response())
}

/// `PUT /v1/organizations/{organization_id}/plan`
#[utoipa::path(put, path = "/v1/organizations/{organization_id}/plan", tag = "Plans", summary = "Put an organization on a plan, or on none (admin key)",
    params(("organization_id" = uuid::Uuid, Path), ("If-Match" = Option<String>, Header, pattern = r#"^\s*(W/)*"*\+?[0-9]+"*\s*$"#, description = "The version expected, e.g. \"3\"")),
    request_body = AssignmentInput,
    responses(
        (status = 200, description = "The assignment (ETag: the version)", body = AssignmentView),
        (status = 403, description = "The key is not an admin key", body = crate::error::Detail),
        (status = 409, description = "Version mismatch, or the plan is inactive", body = crate::error::Detail),
    ))]
pub async fn assign(
    State(state): State<UsageApiState>,
    caller: AdminCaller,
    Path(org): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let org = parse_uuid("organization_id", &org)?;
    let tenant = caller.0.tenant_id;
    let input: AssignmentInput = json_body(&body)?;
    // `null` means "no plan"; a body without the field is a mistake.
    let named = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.get("plan_id").is_some());
    if !named {
        return Err(ApiError::invalid([FieldError::new(&["body", "plan_id"], "Field required (null: no plan)", "missing")]));
    }
    let expected = expected_version(&headers, input.expected_version)?;
    let plan_id = match input.plan_id.as_deref() {
        None => None,
        Some(s) => Some(Uuid::parse_str(s).ok().filter(|u| !u.is_nil()).ok_or_else(|| {
            ApiError::invalid([FieldError::new(&["body", "plan_id"], "Input should be a valid, non-nil UUID or null", "uuid_parsing")])
        })?),
    };
    let plan = match plan_id {
        None => None,
        Some(p) => {
            let plan = live_plan(&state, tenant, p).await?;
            if !plan.is_active {
                return Err(ApiError::Conflict("The plan is inactive: it cannot be newly assigned".into()));
            }
            Some(plan)
        }
    };
    let usage = &state.usage;
    let _guard = usage.write_lock.lock().await;
    let current = store::load_assignment(&state.db, tenant, org).await?;
    let current_version = current.as_ref().map(|r| r.version).unwrap_or(0);
    check_expected(expected, current_version, "assignment")?;
    let row = AssignmentRow {
        tenant_id: tenant,
        organization_id: org,
        version: current_version + 1,
        plan_id: plan_id.unwrap_or(Uuid::nil()),
        updated_at: Utc::now(),
        updated_by: caller.0.key_name.clone(),
    };
    store::write_assignment(&state.db, &row).await?;
    usage.put_assignment(tenant, org, plan_id);
    Ok(etag(Json(assignment_view(&row, plan.map(|p| p.name))).into_response(), row.version))
}

/// `GET /v1/organizations/{organization_id}/plan`
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/plan", tag = "Plans", summary = "The plan an organization is on (404: none)",
    params(("organization_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The assignment (ETag: the version)", body = AssignmentView)))]
pub async fn assignment(State(state): State<UsageApiState>, caller: Caller, Path(org): Path<String>) -> ApiResult<Response> {
    let org = parse_uuid("organization_id", &org)?;
    let tenant = caller.tenant_id;
    let row = store::load_assignment(&state.db, tenant, org).await?.filter(|r| !r.plan_id.is_nil());
    let Some(row) = row else { return Err(ApiError::NotFound("The organization is on no plan".into())) };
    let name = store::load_one(&state.db, tenant, row.plan_id).await?.map(|p| p.name);
    Ok(etag(Json(assignment_view(&row, name)).into_response(), row.version))
}
