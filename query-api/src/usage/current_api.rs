//! Current usage, in the shapes of SEED_SPEC §2.2 and §3.
//!
//! * `GET /v1/api/usage/current?organization_id=&user_id=` and
//!   `GET /v1/usage/stats?organization_id=&user_id=`: the Genlobe `usage`
//!   object (`messages` and `cost_usd` as `{current, max, remaining,
//!   percentage}`, `tokens` as `{total, input, output}`). Each limited
//!   metric is measured over the period of its deciding limit; the top-level
//!   period is the messages limit's, else the cost limit's, else the UTC
//!   calendar month (also the period of unlimited metrics and of tokens).
//! * `GET /v1/organizations/{organization_id}/usage/user/{user_id}`:
//!   `{usage}` of one user in one organization.
//! * `GET /v1/organizations/{organization_id}/usage?period_start=&period_end=`:
//!   the 3.3.1 flat aggregate over any `[period_start, period_end)`, read
//!   from ClickHouse (minute rollups when both ends are whole minutes, raw
//!   events otherwise); `cost_usd` is a 6-place decimal string there.
//! * `GET /api/organizations/{org_uuid}/usage`: the Organizations shape:
//!   one `{utilization, resets_at}` entry per limited metric and
//!   `extra_usage` from a monthly `cost_usd` limit. `utilization` is a
//!   percentage 0–100 like Genlobe's `percentage`.
//!
//! Only billable executions count. Figures come from memory except the
//! arbitrary-range aggregate.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::engine::{request_subject, CheckOutcome, CheckRequest};
use super::json::{exact_json, Amount};
use super::limits::Metric;
use super::period::{utc_month, PeriodSpec, Window};
use super::UsageApiState;
use crate::auth::Caller;
use crate::calendar;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::path::Path;
use crate::queries::usage_counters;

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricBlock {
    current: Amount,
    max: Amount,
    remaining: Amount,
    /// 0–100, two decimals.
    percentage: f64,
    period_start: DateTime<Utc>,
    resets_at: Option<DateTime<Utc>>,
    limit_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokensBlock {
    total: i64,
    input: i64,
    output: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageObject {
    messages: MetricBlock,
    cost_usd: MetricBlock,
    tokens: TokensBlock,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentView {
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    plan_name: Option<String>,
    plan_id: Option<Uuid>,
    organization_id: Uuid,
    user_id: Option<Uuid>,
    usage: UsageObject,
    error: Option<String>,
    as_of: DateTime<Utc>,
    staleness_ms: i64,
}

pub(super) fn percentage(current: i128, max: i128) -> f64 {
    if max <= 0 {
        return if current > 0 { 100.0 } else { 0.0 };
    }
    // A ratio for display, not money.
    ((current as f64 / max as f64) * 10000.0).round() / 100.0
}

pub(super) async fn evaluate(
    state: &UsageApiState,
    tenant: Uuid,
    org: Uuid,
    user: Option<Uuid>,
    metric: Metric,
) -> ApiResult<CheckOutcome> {
    let req = CheckRequest {
        organization_id: Some(org),
        user_id: user,
        metric,
        units: 0,
        reserve: false,
        execution_id: None,
        reservation_id: None,
    };
    state.usage.evaluate(tenant, &req).await
}

fn block(state: &UsageApiState, tenant: Uuid, org: Uuid, user: Option<Uuid>, out: &CheckOutcome, metric: Metric) -> MetricBlock {
    match out.checks.first() {
        Some(d) => MetricBlock {
            current: Amount::of(metric, d.used),
            max: Amount::of(metric, d.limit.max_units),
            remaining: Amount::of(metric, d.remaining),
            percentage: percentage(d.used, d.limit.max_units),
            period_start: d.window.start,
            resets_at: Some(d.resets_at),
            limit_id: Some(d.limit.limit_id),
        },
        None => {
            let w = utc_month(out.now);
            let used = state.usage.usage(request_subject(tenant, Some(org), user), &w, out.now).get(metric);
            MetricBlock {
                current: Amount::of(metric, used),
                max: Amount::Unlimited,
                remaining: Amount::Unlimited,
                percentage: 0.0,
                period_start: w.start,
                resets_at: None,
                limit_id: None,
            }
        }
    }
}

async fn current_view(state: &UsageApiState, tenant: Uuid, org: Uuid, user: Option<Uuid>) -> ApiResult<CurrentView> {
    let msgs = evaluate(state, tenant, org, user, Metric::Messages).await?;
    let cost = evaluate(state, tenant, org, user, Metric::CostUsd).await?;
    let now = msgs.now;
    let period: Window = msgs.checks.first().or(cost.checks.first()).map(|c| c.window).unwrap_or_else(|| utc_month(now));
    let t = state.usage.usage(request_subject(tenant, Some(org), user), &period, now);
    let plan = state.usage.plan_of(tenant, org);
    Ok(CurrentView {
        period_start: period.start,
        period_end: period.end,
        plan_name: plan.as_ref().map(|p| p.name.clone()),
        plan_id: plan.map(|p| p.plan_id),
        organization_id: org,
        user_id: user,
        usage: UsageObject {
            messages: block(state, tenant, org, user, &msgs, Metric::Messages),
            cost_usd: block(state, tenant, org, user, &cost, Metric::CostUsd),
            tokens: TokensBlock { total: t.total_tokens as i64, input: t.input_tokens as i64, output: t.output_tokens as i64 },
        },
        error: None,
        as_of: msgs.as_of,
        staleness_ms: msgs.staleness_ms(),
    })
}

pub(super) fn query_uuid(q: &HashMap<String, String>, name: &str, required: bool) -> ApiResult<Option<Uuid>> {
    match q.get(name) {
        None if required => Err(ApiError::invalid([FieldError::new(&["query", name], "Field required", "missing")])),
        None => Ok(None),
        Some(s) => Uuid::parse_str(s.trim())
            .map(Some)
            .map_err(|_| ApiError::invalid([FieldError::new(&["query", name], "Input should be a valid UUID", "uuid_parsing")])),
    }
}

pub(super) fn path_uuid(name: &str, s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::invalid([FieldError::path(name, "Input should be a valid UUID", "uuid_parsing")]))
}

/// `GET /v1/api/usage/current` and `GET /v1/usage/stats`
#[utoipa::path(get, path = "/v1/api/usage/current", tag = "Usage", summary = "Current usage against limits (Genlobe)",
    params(("organization_id" = uuid::Uuid, Query), ("user_id" = Option<uuid::Uuid>, Query, description = "One user of the organization")),
    responses((status = 200, description = "The usage object", body = CurrentView)))]
pub async fn current(State(state): State<UsageApiState>, caller: Caller, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let org = query_uuid(&q, "organization_id", true)?.expect("required");
    let user = caller.user_for(query_uuid(&q, "user_id", false)?)?;
    let v = current_view(&state, caller.tenant_id, org, user).await?;
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &v))
}

/// `GET /v1/usage/stats`: the same as [`current`].
#[utoipa::path(get, path = "/v1/usage/stats", tag = "Usage", summary = "Current usage (alias of /v1/api/usage/current)",
    params(("organization_id" = uuid::Uuid, Query), ("user_id" = Option<uuid::Uuid>, Query, description = "One user of the organization")),
    responses((status = 200, description = "The usage object", body = CurrentView)))]
pub async fn stats(state: State<UsageApiState>, caller: Caller, q: Query<HashMap<String, String>>) -> ApiResult<Response> {
    current(state, caller, q).await
}

/// `GET /v1/organizations/{organization_id}/usage/user/{user_id}`
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/usage/user/{user_id}", tag = "Usage", summary = "Usage of one user of an organization",
    params(("organization_id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The usage object", body = CurrentView)))]
pub async fn org_user(
    State(state): State<UsageApiState>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let org = path_uuid("organization_id", &org)?;
    let user = caller.user_for(Some(path_uuid("user_id", &user)?))?;
    let v = current_view(&state, caller.tenant_id, org, user).await?;
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &v))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgAggregate {
    organization_id: Uuid,
    organization_name: Option<String>,
    organization_slug: Option<String>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    messages_count: u64,
    tokens_count: u64,
    input_tokens_count: u64,
    output_tokens_count: u64,
    /// Decimal as a string with 6 places, as the 3.3.1 spec shows: the
    /// exact sum of the costs that are known. `null` when every execution of
    /// the period has an unknown cost (OpenTelemetry spans of a model
    /// without a price); a partial sum when only some have one.
    #[schema(value_type = Option<String>, required = true)]
    cost_usd: Option<String>,
    /// Billable executions of the period whose cost is not known, left out
    /// of `cost_usd` (0: `cost_usd` is complete).
    unpriced_executions: u64,
}

/// `period_start` / `period_end`: an instant as `calendar` accepts it.
fn parse_instant(name: &str, s: &str) -> ApiResult<DateTime<Utc>> {
    calendar::parse_instant(s).map_err(|_| {
        ApiError::invalid([FieldError::new(
            &["query", name],
            "Input should be an RFC 3339 datetime or epoch milliseconds (1970 to 9998)",
            "datetime_parsing",
        )])
    })
}

/// `GET /v1/organizations/{organization_id}/usage`
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/usage", tag = "Usage", summary = "Organization usage aggregate",
    params(
        ("organization_id" = uuid::Uuid, Path),
        crate::param_docs::UsagePeriod,
    ),
    responses((status = 200, description = "Totals over [period_start, period_end)", body = OrgAggregate)))]
pub async fn org_aggregate(
    State(state): State<UsageApiState>,
    caller: Caller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let org = path_uuid("organization_id", &org)?;
    let (start, end) = match (q.get("period_start"), q.get("period_end")) {
        (None, None) => {
            let w = utc_month(state.usage.now());
            (w.start, w.end)
        }
        (Some(s), Some(e)) => (parse_instant("period_start", s)?, parse_instant("period_end", e)?),
        (Some(_), None) => {
            return Err(ApiError::invalid([FieldError::new(
                &["query", "period_end"],
                "period_end must be supplied together with period_start",
                "missing",
            )]))
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid([FieldError::new(
                &["query", "period_start"],
                "period_start must be supplied together with period_end",
                "missing",
            )]))
        }
    };
    if end <= start {
        return Err(ApiError::invalid([FieldError::query("period_end", "period_end must be after period_start")]));
    }
    let whole_minutes = start.timestamp_subsec_millis() == 0
        && end.timestamp_subsec_millis() == 0
        && start.timestamp() % 60 == 0
        && end.timestamp() % 60 == 0;
    let row = usage_counters::org_totals(&state.db, caller.tenant_id, org, start, end, whole_minutes).await?;
    let body = OrgAggregate {
        organization_id: org,
        organization_name: None,
        organization_slug: None,
        period_start: start,
        period_end: end,
        messages_count: row.messages,
        tokens_count: row.total_tokens,
        input_tokens_count: row.input_tokens,
        output_tokens_count: row.output_tokens,
        cost_usd: (row.unpriced_executions == 0 || row.unpriced_executions < row.executions)
            .then(|| Metric::CostUsd.decimal(row.cost_usd).to_string()),
        unpriced_executions: row.unpriced_executions,
    };
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Feature {
    utilization: Option<f64>,
    resets_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtraUsage {
    is_enabled: Option<bool>,
    monthly_limit: Option<Amount>,
    used_credits: Option<Amount>,
    utilization: Option<f64>,
}

/// One entry per limited metric (absent when no limit applies).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Features {
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executions: Option<Feature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Feature>,
}

impl Features {
    fn slot(&mut self, metric: Metric) -> &mut Option<Feature> {
        match metric {
            Metric::Tokens => &mut self.tokens,
            Metric::InputTokens => &mut self.input_tokens,
            Metric::OutputTokens => &mut self.output_tokens,
            Metric::Messages => &mut self.messages,
            Metric::CostUsd => &mut self.cost_usd,
            Metric::Executions => &mut self.executions,
            Metric::ToolCalls => &mut self.tool_calls,
        }
    }
}

/// The Organizations usage shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrgUsage {
    #[serde(flatten)]
    features: Features,
    extra_usage: ExtraUsage,
    as_of: Option<DateTime<Utc>>,
    staleness_ms: Option<i64>,
}

/// `GET /api/organizations/{org_uuid}/usage`
#[utoipa::path(get, path = "/api/organizations/{org_uuid}/usage", tag = "Usage", summary = "Organizations API usage shape",
    params(("org_uuid" = uuid::Uuid, Path)),
    responses((status = 200, description = "One entry per limited metric and extra_usage", body = OrgUsage)))]
pub async fn organizations_usage(State(state): State<UsageApiState>, caller: Caller, Path(org): Path<String>) -> ApiResult<Response> {
    let org = path_uuid("org_uuid", &org)?;
    let tenant = caller.tenant_id;
    let mut features = Features::default();
    let mut extra = ExtraUsage { is_enabled: Some(false), monthly_limit: None, used_credits: None, utilization: None };
    let mut as_of = None;
    for metric in Metric::ALL {
        let out = evaluate(&state, tenant, org, None, metric).await?;
        as_of = Some((out.as_of, out.staleness_ms()));
        let Some(d) = out.checks.first() else { continue };
        let f = Feature { utilization: Some(percentage(d.used, d.limit.max_units)), resets_at: Some(d.resets_at) };
        *features.slot(metric) = Some(f);
        if metric == Metric::CostUsd {
            if let Some(m) = out.checks.iter().find(|c| matches!(c.limit.period, PeriodSpec::Month { .. })) {
                extra = ExtraUsage {
                    is_enabled: Some(true),
                    monthly_limit: Some(Amount::Micros(m.limit.max_units)),
                    used_credits: Some(Amount::Micros(m.used)),
                    utilization: Some(percentage(m.used, m.limit.max_units)),
                };
            }
        }
    }
    let v = OrgUsage { features, extra_usage: extra, as_of: as_of.map(|a| a.0), staleness_ms: as_of.map(|a| a.1) };
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &v))
}
