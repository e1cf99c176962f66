//! Per-project end-user endpoints (SEED_SPEC §1.3 rows 24–25). One user's
//! calls, errors and queries come from the user rollups of migration 0013
//! (through `rollup`), the e-mail from `project_users_1mon`; the user's
//! top lists and error types, and the userbase counts, read the raw tables
//! (the user rollups keep no server, tool or error type).
//!
//! * Active user: a `user_token_id` with at least one event of the project
//!   (a tool call or an agent execution, as the users list counts them).
//! * `total_users`: distinct users of the project over the retained
//!   history (400 days); `weekly_active_users` / `monthly_active_users`:
//!   distinct users in the last 7 / 30 days; `inactive_users = total − MAU`.
//! * `wau_timeline`: distinct users per calendar week (Monday, in `tz`), the
//!   eight weeks ending with the current one.

use axum::extract::State;
use axum::Json;
use chrono::Duration;

use super::graphs::error_type_entries;
use super::responses::{
    Envelope, TimelinePoint, UserAnalytics, UserErrorRate, UserErrorTypes, UserNavigator, UserServer, UserTool, UsersSummary,
};
use super::AnalyticsState;
use super::{envelope, now, ts};
use crate::auth::Caller;
use crate::buckets::Buckets;
use crate::calendar::ceil_minute;
use crate::error::{ApiError, FieldError};
use crate::params::{path_uuid, Checker, Params};
use crate::path::Path;
use crate::queries::analytics::raw::{self, TopBy};
use crate::queries::Filters;
use crate::queries::{CallKinds, Scope};
use crate::window::{Span, TimeRange, Unit};

/// `GET /api/v1/projects/{project_id}/users/summary`.
#[utoipa::path(
    get,
    path = "/api/v1/projects/{project_id}/users/summary",
    extensions(("x-caylex-schema" = json!("UserbaseSummaryResponse"))),
    tag = "Users",
    summary = "Userbase statistics (total, WAU, MAU, inactive, 8-week WAU timeline)",
    params(("project_id" = uuid::Uuid, Path, description = "Project of the caller's tenant"), crate::param_docs::TzOnly),
    responses((status = 200, description = "Userbase statistics (total, WAU, MAU, inactive, 8-week WAU timeline)", body = Envelope<UsersSummary>))
)]
pub async fn summary(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Path(project): Path<String>,
    Params(p): Params,
) -> Result<Json<Envelope<UsersSummary>>, ApiError> {
    let project = path_uuid("project_id", &project)?;
    let mut c = Checker::new();
    let tz = c.tz(&p.tz);
    c.finish()?;
    let now = now();
    let end = ceil_minute(now);
    let weeks = TimeRange { start: end - Duration::weeks(7), end };
    let buckets = Buckets::plan(weeks, Span::new(1, Unit::Week), tz, 100).map_err(ApiError::Internal)?;
    let (counts, wau) = tokio::try_join!(
        raw::userbase(&state.db, caller.tenant_id, project, end - Duration::days(7), end - Duration::days(30), end),
        raw::active_users_series(&state.db, caller.tenant_id, project, &buckets, end),
    )?;
    let timeline = wau.iter().enumerate().map(|(i, n)| TimelinePoint { timestamp: ts(buckets.start(i)), value: *n }).collect();
    let data = UsersSummary {
        total_users: counts.total,
        weekly_active_users: counts.wau,
        monthly_active_users: counts.mau,
        inactive_users: counts.total.saturating_sub(counts.mau),
        wau_timeline: timeline,
        window: "8w",
        calculated_at: ts(now),
        as_of: ts(now),
        tz: tz.name().to_owned(),
    };
    Ok(envelope(data, now))
}

/// `GET /api/v1/projects/{project_id}/users/{user_id}/analytics`.
#[utoipa::path(
    get,
    path = "/api/v1/projects/{project_id}/users/{user_id}/analytics",
    extensions(("x-caylex-schema" = json!("UserAnalyticsResponse"))),
    tag = "Users",
    summary = "Analytics of one end user (user_token_id)",
    params(("project_id" = uuid::Uuid, Path, description = "Project of the caller's tenant"), ("user_id" = uuid::Uuid, Path, description = "The end user (user_token_id)"), crate::param_docs::UserAnalyticsParams),
    responses((status = 200, description = "Analytics of one end user (user_token_id)", body = Envelope<UserAnalytics>))
)]
pub async fn user_analytics(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
    Params(p): Params,
) -> Result<Json<Envelope<UserAnalytics>>, ApiError> {
    let project = path_uuid("project_id", &project)?;
    let user = path_uuid("user_id", &user)?;
    let mut c = Checker::new();
    let res = c.range(&p, "1w", true, now());
    let frequency = c.frequency(&p.frequency, "1d", true);
    c.finish()?;
    let now = now();
    let buckets = Buckets::plan(res.range, frequency, res.tz, state.max_buckets)
        .map_err(|m| ApiError::invalid([FieldError::query("frequency", m)]))?;
    let email = raw::user_email(&state.db, caller.tenant_id, project, user)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found in this project".into()))?;
    let filters = Filters { project_id: Some(project), user_token_id: Some(user), ..Filters::default() };
    let totals_scope = Scope { tenant: caller.tenant_id, range: res.range, filters: filters.clone(), kinds: CallKinds::Tool };
    let series_scope = Scope { range: TimeRange { start: buckets.first_start(), end: res.range.end }, ..totals_scope.clone() };
    let db = &state.db;
    let (totals, series, navs, tools, servers, errors) = tokio::try_join!(
        raw::totals(db, &totals_scope),
        raw::series(db, &series_scope, &buckets),
        raw::top(db, &totals_scope, TopBy::NavigatorInstance, 10),
        raw::top(db, &totals_scope, TopBy::Tool, 10),
        raw::top(db, &totals_scope, TopBy::Server, 10),
        raw::error_type_series(db, &series_scope, &buckets),
    )?;
    let open = buckets.open_bucket(now);
    fn timeline<V>(series: &[raw::RawStats], buckets: &Buckets, f: impl Fn(&raw::RawStats) -> V) -> Vec<TimelinePoint<V>> {
        series.iter().enumerate().map(|(i, s)| TimelinePoint { timestamp: ts(buckets.start(i)), value: f(s) }).collect()
    }
    let rate = |e: u64, n: u64| if n == 0 { 0.0 } else { e as f64 / n as f64 };
    let (type_entries, type_total) = error_type_entries(errors.into_iter().map(|r| (r.kind, r.bucket, r.n_errors)), &buckets, open);
    let data = UserAnalytics {
        user_email: email,
        user_token_id: user.to_string(),
        total_queries: totals.n_queries,
        total_tool_calls: totals.n_calls,
        avg_tool_calls_per_query: rate(totals.n_calls, totals.n_queries),
        top_navigators: navs
            .into_iter()
            .map(|t| UserNavigator { navigator_instance_id: t.key, navigator_name: t.label, tool_count: t.n })
            .collect(),
        top_tools: tools.into_iter().map(|t| UserTool { tool_name: t.key, server_name: t.label, call_count: t.n }).collect(),
        top_servers: servers.into_iter().map(|t| UserServer { server_name: t.key, tool_count: t.n }).collect(),
        queries_timeline: timeline(&series, &buckets, |s| s.n_queries),
        tool_calls_timeline: timeline(&series, &buckets, |s| s.n_calls),
        error_rate_data: UserErrorRate {
            average_error_rate: rate(totals.n_errors, totals.n_calls),
            total_errors: totals.n_errors,
            total_tool_calls: totals.n_calls,
            time_series_data: timeline(&series, &buckets, |s| rate(s.n_errors, s.n_calls)),
        },
        error_types_data: UserErrorTypes {
            view_type: "timeseries",
            frequency: frequency.frequency_string(),
            total_errors: type_total,
            time_series_data: type_entries,
        },
        window: res.window_str,
        frequency: frequency.frequency_string(),
        calculated_at: ts(now),
        as_of: ts(now),
        from: ts(res.range.start),
        to: ts(res.range.end),
        open_bucket: open.map(|i| ts(buckets.start(i))),
        tz: res.tz.name().to_owned(),
    };
    Ok(envelope(data, now))
}
