//! Usage the API records itself (SEED_SPEC §2.2), the reservations that end
//! as usage:
//!
//! * `POST /v1/usage/consume` takes the check's request. Allowed: the
//!   amount is held (the reservation id is the event id) and produced to
//!   Kafka as an agent-execution event; the hold ends when the ingest worker
//!   has counted that event, as for any reservation. A limit exceeded: 402
//!   with the consume body. Kafka away: 503 and the hold is released.
//! * `POST /v1/usage/reservations/{reservation_id}/commit` with the actual
//!   amount turns a live reservation into its usage event (event id = the
//!   reservation id).
//!
//! The event id of a consume is the `Idempotency-Key` header (a UUID as is,
//! any other text mapped to a UUID within the tenant), else the body's
//! `execution_id`, else a new id (returned). A retry with the same key finds
//! the same hold, produces the same event (counted once), and once the first
//! attempt was recorded gets its answer again (`replays`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::check_api::{parse_check, view, CheckView};
use super::engine::CheckRequest;
use super::json::{exact_bytes, ratelimit_headers, Amount};
use super::limits::{json_decimal, Metric};
use super::reservations::Hold;
use super::UsageApiState;
use agentmeter_schema::event::{AgentExecutionEvent, ExecutionKind, ExecutionStatus};

use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult, FieldError};

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_BYTES: usize = 255;

/// The answer of a consume or a commit (200 and 402).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumeView {
    success: bool,
    /// The amount recorded (`null` when nothing was).
    consumed: Option<Amount>,
    usage_type: &'static str,
    allowed: bool,
    /// The check's answer: every applicable limit after this request.
    limits: Option<CheckView>,
    error: Option<String>,
    /// Id of the recorded agent-execution event (the idempotency key).
    event_id: Uuid,
    execution_id: Uuid,
    /// Same as `error` on a 402 (the API's error shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The event id of a consume: the `Idempotency-Key` header, else the
/// execution id, else a new one.
fn event_id(tenant: Uuid, headers: &HeaderMap, execution_id: Option<Uuid>) -> ApiResult<Uuid> {
    let Some(key) = headers.get("idempotency-key") else { return Ok(execution_id.unwrap_or_else(Uuid::new_v4)) };
    let key = key.to_str().map(str::trim).unwrap_or("");
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::invalid([FieldError::new(
            &["header", "Idempotency-Key"],
            format!("Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
            "value_error",
        )]));
    }
    if let Ok(u) = Uuid::parse_str(key) {
        return Ok(u);
    }
    // Any other key: a UUID (version 8) from SHA-256 of tenant and key, so
    // equal keys of one tenant are one event and tenants never collide.
    let digest = Sha256::new().chain_update(tenant.as_bytes()).chain_update(key.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Ok(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// The agent-execution event recording `units` of `metric`: only that
/// metric is non-zero (a consume of tokens records no message).
fn usage_event(
    tenant: Uuid,
    event_id: Uuid,
    execution_id: Uuid,
    hold_org: Option<Uuid>,
    hold_user: Option<Uuid>,
    metric: Metric,
    units: i128,
) -> ApiResult<AgentExecutionEvent> {
    let count = |m: Metric| if m == metric { u64::try_from(units).unwrap_or(u64::MAX) } else { 0 };
    let (input, output) = (count(Metric::InputTokens), count(Metric::OutputTokens));
    let total = match metric {
        Metric::Tokens => count(Metric::Tokens),
        _ => input + output,
    };
    let messages = u32::try_from(count(Metric::Messages))
        .map_err(|_| ApiError::invalid([FieldError::new(&["body", "tokens"], "At most 4294967295 messages at once", "less_than_equal")]))?;
    Ok(AgentExecutionEvent {
        event_id,
        occurred_at: Utc::now(),
        tenant_id: tenant,
        execution_id,
        execution_kind: ExecutionKind::AgentChat,
        billable: true,
        organization_id: hold_org,
        user_id: hold_user,
        agent_id: None,
        conversation_id: None,
        plan_id: None,
        project_id: None,
        project_name: None,
        navigator_id: None,
        navigator_instance_id: None,
        user_token_id: None,
        user_email: None,
        model: None,
        input_tokens: input,
        output_tokens: output,
        total_tokens: total,
        cost_usd: if metric == Metric::CostUsd { Decimal::from_i128_with_scale(units, 6) } else { Decimal::ZERO },
        cost_known: true,
        messages_count: messages,
        duration_ms: None,
        status: ExecutionStatus::Success,
        error_type: None,
        error_message: None,
        query_text: None,
    })
}

/// 422 unless a consume can record `metric` (an agent execution carries
/// tokens, messages and cost; executions and tool calls are counted, not
/// consumed).
fn recordable(metric: Metric, loc: &[&str]) -> ApiResult<()> {
    match metric {
        Metric::Executions | Metric::ToolCalls => Err(ApiError::invalid([FieldError::new(
            loc,
            "Usage of tokens, input_tokens, output_tokens, messages or cost_usd can be consumed; executions and tool_calls are counted from events",
            "enum",
        )])),
        _ => Ok(()),
    }
}

fn replayed(answer: String) -> Response {
    let mut resp = (StatusCode::OK, answer).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

fn no_producer() -> ApiError {
    ApiError::Unavailable(
        "Consuming usage is disabled: no Kafka brokers are configured (AGENTMETER_KAFKA_BROKERS / --kafka-brokers)".into(),
    )
}

/// `POST /v1/usage/consume`
#[utoipa::path(post, path = "/v1/usage/consume", tag = "Usage", summary = "Check and record usage in one step (Genlobe consume)",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key is the same event (counted once) and the same hold; default: the body's execution_id, else a new id")),
    request_body = super::check_api::CheckBody,
    responses(
        (status = 200, description = "Recorded: the event id, the amount, the check after it", body = ConsumeView),
        (status = 402, description = "A limit would be exceeded; nothing recorded", body = ConsumeView),
        (status = 503, description = "Not recorded, nothing held: Kafka did not acknowledge the event, no brokers are configured, or the shared reservations are unreachable", body = crate::error::Detail),
    ))]
pub async fn consume(State(state): State<UsageApiState>, caller: Caller, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    let mut req = parse_check(&body)?;
    req.user_id = caller.user_for(req.user_id)?;
    recordable(req.metric, &["body", "usage_type"])?;
    let Some(recorder) = state.usage.recorder() else { return Err(no_producer()) };
    let tenant = caller.tenant_id;
    let event_id = event_id(tenant, &headers, req.execution_id)?;
    if let Some(answer) = state.usage.replays.get(tenant, event_id).await {
        return Ok(replayed(answer));
    }
    let execution_id = req.execution_id.unwrap_or(event_id);
    req = CheckRequest { reserve: true, execution_id: Some(execution_id), reservation_id: Some(event_id), ..req };
    let out = state.usage.check(tenant, &req).await?;
    let rl = ratelimit_headers(&out.checks, out.now);
    let checked = view(&state, tenant, &req, &out);
    let metric = req.metric;
    if !out.allowed {
        let error = checked.error.clone();
        let answer = ConsumeView {
            success: false,
            consumed: None,
            usage_type: metric.as_str(),
            allowed: false,
            limits: Some(checked),
            detail: error.clone(),
            error,
            event_id,
            execution_id,
        };
        return Ok(respond(StatusCode::PAYMENT_REQUIRED, rl, &answer)?.1);
    }
    let event = usage_event(tenant, event_id, execution_id, req.organization_id, req.user_id, metric, req.units)?;
    if let Err(detail) = recorder.record(&event).await {
        if out.reservation.is_some() {
            let _ = state.usage.release(tenant, event_id).await;
        }
        return Err(ApiError::Unavailable(detail));
    }
    let answer = ConsumeView {
        success: true,
        consumed: Some(Amount::of(metric, req.units)),
        usage_type: metric.as_str(),
        allowed: true,
        limits: Some(checked),
        error: None,
        event_id,
        execution_id,
        detail: None,
    };
    let (text, resp) = respond(StatusCode::OK, rl, &answer)?;
    state.usage.replays.put(tenant, event_id, text).await;
    Ok(resp)
}

fn respond(status: StatusCode, headers: HeaderMap, answer: &ConsumeView) -> ApiResult<(String, Response)> {
    let bytes = exact_bytes(answer)?;
    let text = String::from_utf8(bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = (status, headers, text.clone()).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((text, resp))
}

/// The body of a commit: the actual amount, in the reservation's metric.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitBody {
    /// The amount used (>= 0), a number or a decimal string. Required (or `tokens`).
    #[schema(schema_with = super::json::amount_schema)]
    amount: Option<serde_json::Value>,
    /// Alias of `amount`.
    #[schema(schema_with = super::json::amount_schema)]
    tokens: Option<serde_json::Value>,
}

/// `POST /v1/usage/reservations/{reservation_id}/commit`
#[utoipa::path(post, path = "/v1/usage/reservations/{reservation_id}/commit", tag = "Usage", summary = "Record a reservation's actual usage",
    params(("reservation_id" = uuid::Uuid, Path)),
    request_body = CommitBody,
    responses(
        (status = 200, description = "Recorded as the event whose id is the reservation id", body = ConsumeView),
        (status = 404, description = "No live reservation of that id", body = crate::error::Detail),
        (status = 503, description = "Not recorded: Kafka did not acknowledge the event, no brokers are configured, or the shared reservations are unreachable", body = crate::error::Detail),
    ))]
pub async fn commit(State(state): State<UsageApiState>, caller: Caller, Path(id): Path<String>, Body(body): Body) -> ApiResult<Response> {
    let reservation_id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::invalid([FieldError::path("reservation_id", "Input should be a valid UUID", "uuid_parsing")]))?;
    let b: CommitBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid([FieldError::new(&["body"], format!("Invalid JSON body: {e}"), "json_invalid")]))?;
    let Some(amount) = b.amount.as_ref().or(b.tokens.as_ref()) else {
        return Err(ApiError::invalid([FieldError::new(&["body", "amount"], "Field required", "missing")]));
    };
    let decimal = json_decimal(amount)
        .filter(|d| *d >= Decimal::ZERO)
        .ok_or_else(|| ApiError::invalid([FieldError::new(&["body", "amount"], "Input should be a number >= 0", "decimal_parsing")]))?;
    let Some(recorder) = state.usage.recorder() else { return Err(no_producer()) };
    let tenant = caller.tenant_id;
    if let Some(answer) = state.usage.replays.get(tenant, reservation_id).await {
        return Ok(replayed(answer));
    }
    let Some(hold): Option<Hold> = state.usage.reservation(tenant, reservation_id).await? else {
        return Err(ApiError::NotFound("Reservation not found or already ended".into()));
    };
    if caller.user_id.is_some() && caller.user_for(hold.user_id)? != hold.user_id {
        // An end user commits only their own reservations.
        return Err(ApiError::Forbidden("The reservation is not the authenticated user's".into()));
    }
    let metric = hold.metric;
    recordable(metric, &["path", "reservation_id"])?;
    let units = metric.units(decimal).map_err(|msg| ApiError::invalid([FieldError::new(&["body", "amount"], msg, "value_error")]))?;
    let execution_id = hold.execution_id.unwrap_or(reservation_id);
    let event = usage_event(tenant, reservation_id, execution_id, hold.organization_id, hold.user_id, metric, units)?;
    recorder.record(&event).await.map_err(ApiError::Unavailable)?;
    let answer = ConsumeView {
        success: true,
        consumed: Some(Amount::of(metric, units)),
        usage_type: metric.as_str(),
        allowed: true,
        limits: None,
        error: None,
        event_id: reservation_id,
        execution_id,
        detail: None,
    };
    let (text, resp) = respond(StatusCode::OK, HeaderMap::new(), &answer)?;
    state.usage.replays.put(tenant, reservation_id, text).await;
    Ok(resp)
}
