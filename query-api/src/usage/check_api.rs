//! The check an agent runtime makes before every agent call.
//!
//! * `POST /v1/usage/check` (Genlobe §2.2): body `{tokens, usage_type,
//!   organization_id, user_id}`; `tokens` is the amount whatever the
//!   `usage_type` (`amount` is accepted as an alias). `usage_type` is any
//!   limit metric (`tokens`, `messages`, `cost_usd`, `input_tokens`,
//!   `output_tokens`, `executions`, `tool_calls`). Beyond the spec:
//!   `reserve: true` holds the amount (see `reservations`), optionally
//!   tied to the `execution_id` whose usage event ends the hold.
//! * `POST /v1/organizations/{organization_id}/usage/check?additional_messages=&additional_tokens=`
//!   → `{would_exceed, limits: {messages, tokens}}`.
//! * `DELETE /v1/usage/reservations/{reservation_id}` ends a hold early.
//!
//! Answers come from memory; `as_of` / `staleness_ms` say how old the
//! figures are. `RateLimit-Policy` / `RateLimit` headers describe every
//! applicable limit (see `json`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

use super::engine::{request_subject, subject_ids, CheckOutcome, CheckRequest, LimitCheck};
use super::json::{exact_json, ratelimit_headers, Amount};
use super::limits::{json_decimal, LimitView, Metric};
use super::period::utc_month;
use super::UsageApiState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::path::Path;

/// The body of `POST /v1/usage/check`. Fields stay loose so that every
/// problem is named; the schema attributes describe what is accepted.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckBody {
    /// The amount to spend (> 0), in the unit of `usage_type`, whatever it
    /// is; a number or a decimal string. Required (or `amount`).
    #[schema(schema_with = super::json::amount_schema)]
    tokens: Option<serde_json::Value>,
    /// Alias of `tokens`.
    #[schema(schema_with = super::json::amount_schema)]
    amount: Option<serde_json::Value>,
    /// The metric (default `tokens`).
    #[schema(value_type = Option<String>, pattern = "^(tokens|input_tokens|output_tokens|messages|cost_usd|executions|tool_calls)$")]
    usage_type: Option<String>,
    #[schema(value_type = uuid::Uuid, required = true)]
    organization_id: Option<String>,
    #[schema(value_type = Option<uuid::Uuid>)]
    user_id: Option<String>,
    /// Hold the amount until the usage arrives or the hold expires.
    reserve: Option<bool>,
    /// The execution whose usage event ends the hold.
    #[schema(value_type = Option<uuid::Uuid>)]
    execution_id: Option<String>,
}

fn uuid_field(loc: &[&str], v: Option<&str>, required: bool, errs: &mut Vec<FieldError>) -> Option<Uuid> {
    match v {
        None if required => {
            errs.push(FieldError::new(loc, "Field required", "missing"));
            None
        }
        None => None,
        Some(s) => match Uuid::parse_str(s) {
            Ok(u) => Some(u),
            Err(_) => {
                errs.push(FieldError::new(loc, "Input should be a valid UUID", "uuid_parsing"));
                None
            }
        },
    }
}

/// One limit as evaluated for a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitCheckView {
    pub limit_id: Uuid,
    pub version: u64,
    /// The plan the limit comes from; `null`: a limit of its own.
    pub plan_id: Option<Uuid>,
    pub subject: &'static str,
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub allowed: bool,
    pub current_usage: Amount,
    pub reserved: Amount,
    pub max_limit: Amount,
    pub remaining: Amount,
    pub period_start: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
    pub soft_limit_reached: bool,
}

impl LimitCheckView {
    pub(crate) fn new(c: &LimitCheck) -> Self {
        let m = c.limit.metric;
        let (organization_id, user_id) = subject_ids(&c.limit.subject);
        Self {
            limit_id: c.limit.limit_id,
            version: c.limit.version,
            plan_id: c.limit.plan_id,
            subject: c.limit.subject.kind(),
            organization_id,
            user_id,
            allowed: c.allowed,
            current_usage: Amount::of(m, c.used),
            reserved: Amount::of(m, c.held),
            max_limit: Amount::of(m, c.limit.max_units),
            remaining: Amount::of(m, c.remaining),
            period_start: c.window.start,
            resets_at: c.resets_at,
            soft_limit_reached: c.soft_reached,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReservationView {
    reservation_id: Uuid,
    execution_id: Option<Uuid>,
    amount: Amount,
    expires_at: DateTime<Utc>,
}

/// The §2.2 check response plus the deciding limit and freshness.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    pub allowed: bool,
    pub current_usage: Amount,
    pub max_limit: Amount,
    pub remaining: Amount,
    pub requested: Amount,
    pub error: Option<String>,
    /// The plan the organization is on (`null`: none).
    pub plan_id: Option<Uuid>,
    pub plan_name: Option<String>,
    pub usage_type: &'static str,
    pub period_start: Option<DateTime<Utc>>,
    pub resets_at: Option<DateTime<Utc>>,
    pub soft_limit_reached: bool,
    pub reserved: Amount,
    /// The deciding limit (the strictest; see the docs).
    pub limit: Option<LimitView>,
    /// Every applicable limit, the deciding one first.
    pub limits: Vec<LimitCheckView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation: Option<ReservationView>,
    pub as_of: DateTime<Utc>,
    pub staleness_ms: i64,
}

pub(crate) fn view(state: &UsageApiState, tenant: Uuid, req: &CheckRequest, out: &CheckOutcome) -> CheckView {
    let m = req.metric;
    let limits: Vec<LimitCheckView> = out.checks.iter().map(LimitCheckView::new).collect();
    let reservation = out.reservation.as_ref().map(|h| ReservationView {
        reservation_id: h.reservation_id,
        execution_id: h.execution_id,
        amount: Amount::of(m, h.units),
        expires_at: h.expires_at,
    });
    let plan = req.organization_id.and_then(|o| state.usage.plan_of(tenant, o));
    let (plan_id, plan_name) = (plan.as_ref().map(|p| p.plan_id), plan.map(|p| p.name.clone()));
    match out.checks.first() {
        Some(d) => CheckView {
            allowed: out.allowed,
            current_usage: Amount::of(m, d.used),
            max_limit: Amount::of(m, d.limit.max_units),
            remaining: Amount::of(m, d.remaining),
            requested: Amount::of(m, req.units),
            error: (!out.allowed).then(|| format!("Usage limit exceeded: {} {} limit", d.limit.subject.kind(), m.as_str())),
            plan_id,
            plan_name,
            usage_type: m.as_str(),
            period_start: Some(d.window.start),
            resets_at: Some(d.resets_at),
            soft_limit_reached: out.checks.iter().any(|c| c.soft_reached),
            reserved: Amount::of(m, d.held),
            limit: Some(LimitView::from(&d.limit)),
            limits,
            reservation,
            as_of: out.as_of,
            staleness_ms: out.staleness_ms(),
        },
        None => {
            // No limit applies: report the usage of the calendar month (UTC).
            let w = utc_month(out.now);
            let used = state.usage.usage(request_subject(tenant, req.organization_id, req.user_id), &w, out.now).get(m);
            CheckView {
                allowed: true,
                current_usage: Amount::of(m, used),
                max_limit: Amount::Unlimited,
                remaining: Amount::Unlimited,
                requested: Amount::of(m, req.units),
                error: None,
                plan_id,
                plan_name,
                usage_type: m.as_str(),
                period_start: Some(w.start),
                resets_at: None,
                soft_limit_reached: false,
                reserved: Amount::of(m, 0),
                limit: None,
                limits,
                reservation,
                as_of: out.as_of,
                staleness_ms: out.staleness_ms(),
            }
        }
    }
}

/// `POST /v1/usage/check`
#[utoipa::path(post, path = "/v1/usage/check", tag = "Usage", summary = "May this subject spend N more? (Genlobe check)",
    request_body = CheckBody,
    responses((status = 200, description = "The verdict, the deciding limit and every applicable one (RateLimit headers)", body = CheckView)))]
pub async fn check(State(state): State<UsageApiState>, caller: Caller, Body(body): Body) -> ApiResult<Response> {
    let mut req = parse_check(&body)?;
    req.user_id = caller.user_for(req.user_id)?;
    let tenant = caller.tenant_id;
    let out = state.usage.check(tenant, &req).await?;
    let headers = ratelimit_headers(&out.checks, out.now);
    Ok(exact_json(StatusCode::OK, headers, &view(&state, tenant, &req, &out)))
}

/// The check's request body (also the consume's), validated.
pub(crate) fn parse_check(body: &[u8]) -> ApiResult<CheckRequest> {
    let b: CheckBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid([FieldError::new(&["body"], format!("Invalid JSON body: {e}"), "json_invalid")]))?;
    let mut errs = Vec::new();
    let metric = Metric::parse(b.usage_type.as_deref().unwrap_or("tokens"));
    if metric.is_none() {
        errs.push(FieldError::new(
            &["body", "usage_type"],
            "Input should be one of tokens, messages, cost_usd, input_tokens, output_tokens, executions, tool_calls",
            "enum",
        ));
    }
    let organization_id = uuid_field(&["body", "organization_id"], b.organization_id.as_deref(), true, &mut errs);
    let user_id = uuid_field(&["body", "user_id"], b.user_id.as_deref(), false, &mut errs);
    let execution_id = uuid_field(&["body", "execution_id"], b.execution_id.as_deref(), false, &mut errs);
    let amount = b.tokens.as_ref().or(b.amount.as_ref());
    let units = match (amount, metric) {
        (None, _) => {
            errs.push(FieldError::new(&["body", "tokens"], "Field required", "missing"));
            None
        }
        (Some(v), m) => match json_decimal(v) {
            None => {
                errs.push(FieldError::new(&["body", "tokens"], "Input should be a valid number", "decimal_parsing"));
                None
            }
            Some(d) if d <= rust_decimal::Decimal::ZERO => {
                errs.push(FieldError::new(&["body", "tokens"], "Input should be greater than 0", "greater_than"));
                None
            }
            Some(d) => match m.map(|m| m.units(d)) {
                Some(Ok(u)) => Some(u),
                Some(Err(msg)) => {
                    errs.push(FieldError::new(&["body", "tokens"], msg, "value_error"));
                    None
                }
                None => None,
            },
        },
    };
    let (Some(metric), Some(units), true) = (metric, units, errs.is_empty()) else {
        return Err(ApiError::invalid(errs));
    };
    Ok(CheckRequest { organization_id, user_id, metric, units, reserve: b.reserve.unwrap_or(false), execution_id, reservation_id: None })
}

/// `POST /v1/organizations/{organization_id}/usage/check`
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/usage/check", tag = "Usage", summary = "Organization usage check",
    params(
        ("organization_id" = uuid::Uuid, Path),
        ("user_id" = Option<uuid::Uuid>, Query, description = "Check the user's limits too"),
        ("additional_messages" = Option<i64>, Query, minimum = 0, description = "Messages about to be spent (default 0)"),
        ("additional_tokens" = Option<i64>, Query, minimum = 0, description = "Tokens about to be spent (default 0)"),
    ),
    responses((status = 200, description = "Would either amount exceed a limit?", body = OrgCheckView)))]
pub async fn org_check(
    State(state): State<UsageApiState>,
    caller: Caller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let org = uuid_field(&["path", "organization_id"], Some(&org), true, &mut errs);
    let user_id = uuid_field(&["query", "user_id"], q.get("user_id").map(String::as_str), false, &mut errs);
    let mut amount = |name: &str| -> i128 {
        match q.get(name).map(|s| s.trim().parse::<i64>()) {
            None => 0,
            Some(Ok(n)) if n >= 0 => i128::from(n),
            Some(_) => {
                errs.push(FieldError::new(&["query", name], "Input should be a non-negative integer", "int_parsing"));
                0
            }
        }
    };
    let messages = amount("additional_messages");
    let tokens = amount("additional_tokens");
    let (Some(org), true) = (org, errs.is_empty()) else {
        return Err(ApiError::invalid(errs));
    };
    let user_id = caller.user_for(user_id)?;
    let tenant = caller.tenant_id;
    let mut all_checks: Vec<LimitCheck> = Vec::new();
    let mut views = Vec::new();
    let mut last = None;
    for (metric, units) in [(Metric::Messages, messages), (Metric::Tokens, tokens)] {
        let req =
            CheckRequest { organization_id: Some(org), user_id, metric, units, reserve: false, execution_id: None, reservation_id: None };
        let out = state.usage.check(tenant, &req).await?;
        all_checks.extend(out.checks.iter().cloned());
        views.push(view(&state, tenant, &req, &out));
        last = Some(out);
    }
    let last = last.expect("two metrics evaluated");
    let tokens_view = views.pop().expect("tokens view");
    let messages_view = views.pop().expect("messages view");
    let body = OrgCheckView {
        would_exceed: !(messages_view.allowed && tokens_view.allowed),
        limits: OrgCheckLimits { messages: messages_view, tokens: tokens_view },
        as_of: last.as_of,
        staleness_ms: last.staleness_ms(),
    };
    let headers = ratelimit_headers(&all_checks, last.now);
    Ok(exact_json(StatusCode::OK, headers, &body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgCheckLimits {
    messages: CheckView,
    tokens: CheckView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgCheckView {
    would_exceed: bool,
    limits: OrgCheckLimits,
    as_of: DateTime<Utc>,
    staleness_ms: i64,
}

/// The answer of a released reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    pub reservation_id: Uuid,
    /// Always `true`.
    pub released: bool,
}

/// `DELETE /v1/usage/reservations/{reservation_id}`
#[utoipa::path(delete, path = "/v1/usage/reservations/{reservation_id}", tag = "Usage", summary = "Release a reservation",
    params(("reservation_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "Released", body = Released)))]
pub async fn release(State(state): State<UsageApiState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::invalid([FieldError::path("reservation_id", "Input should be a valid UUID", "uuid_parsing")]))?;
    if state.usage.release(caller.tenant_id, id).await? {
        Ok(Json(Released { reservation_id: id, released: true }).into_response())
    } else {
        Err(ApiError::NotFound("Reservation not found or already ended".into()))
    }
}
