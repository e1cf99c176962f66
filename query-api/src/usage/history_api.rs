//! Usage history and per-user usage (SEED_SPEC §2.2):
//!
//! * `GET /v1/api/usage/history?organization_id=&user_id=&limit=20&offset=0`:
//!   the organization's (or one user's) usage per period, newest first, the
//!   current period first; offset pagination, `X-Total-Count` header.
//! * `GET /v1/subscriptions/users/{user_id}/usage`: the user's current
//!   period as a `plan_usages` row.
//! * `GET /v1/subscriptions/users/{user_id}/usage/limits`: every limit that
//!   applies to the user, per metric, with its current figures.
//!
//! Periods: the period of the current-usage answer (the deciding messages
//! limit's, else the cost limit's) when it is a calendar period; a rolling
//! window, or no limit, gives UTC calendar months. The history runs from
//! the period of the subject's earliest retained billable usage to the
//! current one, zero-filled; without any usage it is the current period
//! alone. The current period is read from the usage counters (the figures
//! `current` and the check answer with), past periods from the minute
//! rollup in one query.
//!
//! `plan_id` and `plan_name` name the plan the organization is on now: on
//! the current period's record and on the limits answer. Past periods carry
//! `null` (which plan an organization was on in a past period is not
//! recorded per period).
//!
//! With an end-user token, `user_id` (query or path) defaults to the
//! token's user and another one is 403 ("User can only access own usage").

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::check_api::LimitCheckView;
use super::counters::Totals;
use super::current_api::{evaluate, path_uuid, query_uuid};
use super::engine::request_subject;
use super::json::{exact_json, Amount};
use super::limits::Metric;
use super::period::{PeriodSpec, Window};
use super::UsageApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::params::Checker;
use crate::path::Path;
use crate::queries::usage_counters::{self, PeriodTotals};

/// How a record's period was chosen and where its figures come from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageMetadata {
    /// `day`, `week` or `month`.
    period: &'static str,
    /// IANA time zone of the calendar period.
    time_zone: String,
    /// `counters` (the current period, as `current` answers it) or
    /// `clickhouse` (a past period, from the minute rollup).
    source: &'static str,
}

/// One period of usage (the `plan_usages` row shape plus tokens split,
/// cost and executions).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRecord {
    /// Stable id of (tenant, organization, user, period start).
    id: Uuid,
    organization_id: Uuid,
    /// `null`: the whole organization.
    user_id: Option<Uuid>,
    /// The plan the organization is on, on the current period's record;
    /// `null` on past periods and when on no plan.
    plan_id: Option<Uuid>,
    plan_name: Option<String>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    /// The period containing now (its figures still grow).
    is_current: bool,
    messages_count: i64,
    /// Input + output.
    tokens_count: i64,
    input_tokens_count: i64,
    output_tokens_count: i64,
    /// Billable executions.
    executions_count: i64,
    /// Exact dollars.
    cost_usd: Amount,
    usage_metadata: UsageMetadata,
    /// The period start.
    created_at: DateTime<Utc>,
    /// When the figures were true: the counters' time for the current
    /// period, the answer's time for past ones.
    updated_at: DateTime<Utc>,
}

/// Usage figures of a period, whichever source.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    messages: i128,
    total_tokens: i128,
    input_tokens: i128,
    output_tokens: i128,
    executions: i128,
    cost_micros: i128,
}

impl From<Totals> for Figures {
    fn from(t: Totals) -> Self {
        Self {
            messages: t.messages,
            total_tokens: t.total_tokens,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            executions: t.executions,
            cost_micros: t.cost_micros,
        }
    }
}

impl From<PeriodTotals> for Figures {
    fn from(t: PeriodTotals) -> Self {
        Self {
            messages: i128::from(t.messages),
            total_tokens: i128::from(t.total_tokens),
            input_tokens: i128::from(t.input_tokens),
            output_tokens: i128::from(t.output_tokens),
            executions: i128::from(t.executions),
            cost_micros: t.cost_usd,
        }
    }
}

fn count(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The calendar period of a subject's history (see the module docs).
async fn history_spec(state: &UsageApiState, tenant: Uuid, org: Uuid, user: Option<Uuid>) -> ApiResult<PeriodSpec> {
    let msgs = evaluate(state, tenant, org, user, Metric::Messages).await?;
    let cost = evaluate(state, tenant, org, user, Metric::CostUsd).await?;
    let spec = msgs.checks.first().or(cost.checks.first()).map(|c| c.limit.period);
    Ok(match spec {
        Some(s @ (PeriodSpec::Day { .. } | PeriodSpec::Week { .. } | PeriodSpec::Month { .. })) => s,
        _ => PeriodSpec::Month { tz: Tz::UTC, anchor_day: 1 },
    })
}

fn period_name(spec: &PeriodSpec) -> &'static str {
    match spec {
        PeriodSpec::Day { .. } => "day",
        PeriodSpec::Week { .. } => "week",
        PeriodSpec::Month { .. } => "month",
        PeriodSpec::Rolling { .. } => "rolling_hours",
    }
}

/// A UUID (version 8) from SHA-256 of the row's identity.
fn record_id(tenant: Uuid, org: Uuid, user: Option<Uuid>, start: DateTime<Utc>) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"usage-period")
        .chain_update(tenant.as_bytes())
        .chain_update(org.as_bytes())
        .chain_update(user.unwrap_or_default().as_bytes())
        .chain_update(start.timestamp().to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

struct Subject {
    tenant: Uuid,
    org: Uuid,
    user: Option<Uuid>,
    spec: PeriodSpec,
}

impl Subject {
    fn record(&self, w: Window, f: Figures, current: bool, updated_at: DateTime<Utc>) -> UsageRecord {
        UsageRecord {
            id: record_id(self.tenant, self.org, self.user, w.start),
            organization_id: self.org,
            user_id: self.user,
            plan_id: None,
            plan_name: None,
            period_start: w.start,
            period_end: w.end,
            is_current: current,
            messages_count: count(f.messages),
            tokens_count: count(f.total_tokens),
            input_tokens_count: count(f.input_tokens),
            output_tokens_count: count(f.output_tokens),
            executions_count: count(f.executions),
            cost_usd: Amount::Micros(f.cost_micros),
            usage_metadata: UsageMetadata {
                period: period_name(&self.spec),
                time_zone: self.spec.tz().unwrap_or(Tz::UTC).name().to_owned(),
                source: if current { "counters" } else { "clickhouse" },
            },
            created_at: w.start,
            updated_at,
        }
    }

    /// The current period's record, from the counters, with the plan the
    /// organization is on.
    fn current(&self, state: &UsageApiState, now: DateTime<Utc>, as_of: DateTime<Utc>) -> UsageRecord {
        let w = self.spec.window_at(now);
        let t = state.usage.usage(request_subject(self.tenant, Some(self.org), self.user), &w, now);
        let mut record = self.record(w, t.into(), true, as_of);
        if let Some(plan) = state.usage.plan_of(self.tenant, self.org) {
            record.plan_id = Some(plan.plan_id);
            record.plan_name = Some(plan.name.clone());
        }
        record
    }
}

/// Most periods a history walks back (the data's retention is 400 days).
const MAX_PERIODS: usize = 1000;

/// The periods of a history, newest (current) first.
fn periods(spec: &PeriodSpec, now: DateTime<Utc>, first_usage: Option<DateTime<Utc>>) -> Vec<Window> {
    let mut out = vec![spec.window_at(now)];
    if let Some(first) = first_usage {
        while let Some(last) = out.last().copied() {
            if last.start <= first || out.len() >= MAX_PERIODS {
                break;
            }
            out.push(spec.window_at(last.start - Duration::milliseconds(1)));
        }
    }
    out
}

const LIMIT: (u32, u32, u32) = (20, 1, 100);
const MAX_OFFSET: u32 = 100_000;

/// `GET /v1/api/usage/history`
#[utoipa::path(get, path = "/v1/api/usage/history", tag = "Usage", summary = "Usage per period, newest first (Genlobe)",
    params(
        ("organization_id" = uuid::Uuid, Query),
        ("user_id" = Option<uuid::Uuid>, Query, description = "One user of the organization"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Records per page (default 20)"),
        ("offset" = Option<u32>, Query, minimum = 0, maximum = 100000, description = "Records to skip (default 0)"),
    ),
    responses((status = 200, description = "Usage records, the current period first; X-Total-Count: all records",
        body = Vec<UsageRecord>, headers(("X-Total-Count" = u64, description = "Number of records over all pages")))))]
pub async fn history(State(state): State<UsageApiState>, caller: Caller, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let org = query_uuid(&q, "organization_id", true)?.expect("required");
    let user = caller.user_for(query_uuid(&q, "user_id", false)?)?;
    let mut c = Checker::new();
    let limit = c.int("limit", &q.get("limit").cloned(), LIMIT.0, LIMIT.1, LIMIT.2) as usize;
    let offset = c.int("offset", &q.get("offset").cloned(), 0, 0, MAX_OFFSET) as usize;
    c.finish()?;
    let tenant = caller.tenant_id;
    let as_of = state.usage.as_of()?;
    let spec = history_spec(&state, tenant, org, user).await?;
    let now = state.usage.now();
    let first = usage_counters::first_usage(&state.db, tenant, org, user).await?;
    let all = periods(&spec, now, first);
    let subject = Subject { tenant, org, user, spec };
    let page: Vec<(usize, Window)> = all.iter().copied().enumerate().skip(offset).take(limit).collect();
    let past: Vec<Window> = page.iter().filter(|(i, _)| *i > 0).map(|(_, w)| *w).rev().collect();
    let past_totals = match (past.first(), past.last()) {
        (Some(_), Some(newest)) => {
            let starts = past.iter().map(|w| w.start.timestamp()).collect();
            usage_counters::period_totals(&state.db, tenant, org, user, starts, newest.end.timestamp()).await?
        }
        _ => Vec::new(),
    };
    // `past` is oldest first; the page is newest first.
    let mut past_records: Vec<UsageRecord> = past.iter().zip(past_totals).map(|(w, t)| subject.record(*w, t.into(), false, now)).collect();
    past_records.reverse();
    let mut records = Vec::with_capacity(page.len());
    if page.first().is_some_and(|(i, _)| *i == 0) {
        records.push(subject.current(&state, now, as_of));
    }
    records.extend(past_records);
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(all.len() as u64));
    Ok(exact_json(StatusCode::OK, headers, &records))
}

/// The organization of a per-user request: `organization_id`, else the
/// `X-Organization-Id` header (Genlobe's header for org-scoped calls); both
/// are validated when present, and must agree when both are.
fn organization_of(q: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<Uuid> {
    let header = match headers.get("x-organization-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(|s| Uuid::parse_str(s.trim()).ok()).ok_or_else(|| {
            ApiError::invalid([FieldError::new(&["header", "X-Organization-Id"], "Input should be a valid UUID", "uuid_parsing")])
        })?),
    };
    match (query_uuid(q, "organization_id", false)?, header) {
        (Some(a), Some(b)) if a != b => Err(ApiError::invalid([FieldError::new(
            &["header", "X-Organization-Id"],
            "X-Organization-Id differs from the organization_id parameter",
            "value_error",
        )])),
        (Some(org), _) | (None, Some(org)) => Ok(org),
        (None, None) => Err(ApiError::invalid([FieldError::new(
            &["query", "organization_id"],
            "Field required (the organization_id parameter or the X-Organization-Id header)",
            "missing",
        )])),
    }
}

/// The `plan_usages` row of a user's current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanUsage {
    #[serde(flatten)]
    record: UsageRecord,
    as_of: DateTime<Utc>,
    staleness_ms: i64,
}

/// `GET /v1/subscriptions/users/{user_id}/usage`
#[utoipa::path(get, path = "/v1/subscriptions/users/{user_id}/usage", tag = "Usage", summary = "A user's usage in the current period (plan_usages row)",
    params(
        ("user_id" = uuid::Uuid, Path),
        ("organization_id" = Option<uuid::Uuid>, Query, description = "The user's organization (or the X-Organization-Id header; one is required)"),
        ("X-Organization-Id" = Option<uuid::Uuid>, Header, description = "The user's organization, when organization_id is absent"),
    ),
    responses((status = 200, description = "The current period's row", body = PlanUsage)))]
pub async fn user_usage(
    State(state): State<UsageApiState>,
    caller: Caller,
    Path(user): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let user = caller.user_for(Some(path_uuid("user_id", &user)?))?.expect("a user");
    let org = organization_of(&q, &headers)?;
    let tenant = caller.tenant_id;
    let as_of = state.usage.as_of()?;
    let spec = history_spec(&state, tenant, org, Some(user)).await?;
    let now = state.usage.now();
    let subject = Subject { tenant, org, user: Some(user), spec };
    let body = PlanUsage { record: subject.current(&state, now, as_of), as_of, staleness_ms: (now - as_of).num_milliseconds().max(0) };
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &body))
}

/// Every limit applying to a user, per metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserLimits {
    organization_id: Uuid,
    user_id: Uuid,
    /// The plan the organization is on (`null`: none).
    plan_id: Option<Uuid>,
    plan_name: Option<String>,
    /// Metric name -> its applicable limits (tenant, organization and user
    /// limits), the deciding (strictest) first; metrics without a limit
    /// are absent (unlimited).
    limits: BTreeMap<String, Vec<LimitCheckView>>,
    as_of: DateTime<Utc>,
    staleness_ms: i64,
}

/// `GET /v1/subscriptions/users/{user_id}/usage/limits`
#[utoipa::path(get, path = "/v1/subscriptions/users/{user_id}/usage/limits", tag = "Usage", summary = "The limits applying to a user, with current figures",
    params(
        ("user_id" = uuid::Uuid, Path),
        ("organization_id" = Option<uuid::Uuid>, Query, description = "The user's organization (or the X-Organization-Id header; one is required)"),
        ("X-Organization-Id" = Option<uuid::Uuid>, Header, description = "The user's organization, when organization_id is absent"),
    ),
    responses((status = 200, description = "The applicable limits per metric", body = UserLimits)))]
pub async fn user_limits(
    State(state): State<UsageApiState>,
    caller: Caller,
    Path(user): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let user = caller.user_for(Some(path_uuid("user_id", &user)?))?.expect("a user");
    let org = organization_of(&q, &headers)?;
    let tenant = caller.tenant_id;
    let mut limits = BTreeMap::new();
    let mut freshness = None;
    for metric in Metric::ALL {
        let out = evaluate(&state, tenant, org, Some(user), metric).await?;
        freshness = Some((out.as_of, out.staleness_ms()));
        if !out.checks.is_empty() {
            limits.insert(metric.as_str().to_owned(), out.checks.iter().map(LimitCheckView::new).collect());
        }
    }
    let (as_of, staleness_ms) = match freshness {
        Some(f) => f,
        None => (state.usage.as_of()?, 0),
    };
    let plan = state.usage.plan_of(tenant, org);
    let (plan_id, plan_name) = (plan.as_ref().map(|p| p.plan_id), plan.map(|p| p.name.clone()));
    let body = UserLimits { organization_id: org, user_id: user, plan_id, plan_name, limits, as_of, staleness_ms };
    Ok(exact_json(StatusCode::OK, HeaderMap::new(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_history_runs_from_the_first_usage_to_now_newest_first() {
        let spec = PeriodSpec::Month { tz: Tz::UTC, anchor_day: 1 };
        let now = utc("2026-11-29T07:00:00Z");
        assert_eq!(periods(&spec, now, None), vec![Window { start: utc("2026-11-01T00:00:00Z"), end: utc("2026-12-01T00:00:00Z") }]);
        let p = periods(&spec, now, Some(utc("2026-09-15T10:00:00Z")));
        let starts: Vec<_> = p.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![utc("2026-11-01T00:00:00Z"), utc("2026-10-01T00:00:00Z"), utc("2026-09-01T00:00:00Z")]);
        assert!(p.windows(2).all(|w| w[1].end == w[0].start), "contiguous: {p:?}");
        // A first usage exactly at a period start does not add the period before.
        assert_eq!(periods(&spec, now, Some(utc("2026-10-01T00:00:00Z"))).len(), 2);
    }

    #[test]
    fn weekly_periods_in_a_time_zone_follow_the_limit() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let spec = PeriodSpec::Week { tz, anchor: chrono::Weekday::Mon };
        let p = periods(&spec, utc("2026-11-04T12:00:00Z"), Some(utc("2026-10-20T00:00:00Z")));
        let starts: Vec<_> = p.iter().map(|w| w.start).collect();
        // Mondays at local midnight; the DST change of 25 October makes one week 169 hours.
        assert_eq!(starts, vec![utc("2026-11-01T23:00:00Z"), utc("2026-10-25T23:00:00Z"), utc("2026-10-18T22:00:00Z")], "{p:?}");
        assert_eq!((p[1].end - p[1].start).num_hours(), 168);
        assert_eq!((p[2].end - p[2].start).num_hours(), 169);
    }

    #[test]
    fn record_ids_are_stable_and_distinct() {
        let (t, o, u) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s = utc("2026-11-01T00:00:00Z");
        assert_eq!(record_id(t, o, Some(u), s), record_id(t, o, Some(u), s));
        assert_ne!(record_id(t, o, Some(u), s), record_id(t, o, None, s));
        assert_ne!(record_id(t, o, None, s), record_id(t, o, None, utc("2026-10-01T00:00:00Z")));
    }
}
