//! The analytics endpoints: the Caylex-compatible `/api/v1/analytics/*`
//! family (SEED_SPEC §1.3 rows 1–23), the per-project user endpoints (rows
//! 24–25) and the Grafana-friendly `/api/v1/query/timeseries`.
//!
//! Handlers are thin: parse and validate parameters ([`crate::params`]),
//! check that filter ids belong to the caller's tenant, call one or two
//! functions of [`crate::queries`], shape the response in the spec's
//! envelope `{success, data, error, timestamp}`.

mod grafana;
mod graphs;
mod lists;
mod project_users;
mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::auth::{Caller, KeyStore};
use crate::buckets::Buckets;
use crate::db::Db;
use crate::error::{ApiError, FieldError};
use crate::params::{Accepts, Checker, Filters, RawParams, Resolved};
use crate::queries::analytics::ownership;
use crate::queries::{CallKinds, Scope};
use crate::window::{Span, TimeRange};

/// What the analytics handlers need of the app's state.
#[derive(Clone)]
pub struct AnalyticsState {
    /// ClickHouse behind the concurrency limit and the query timeout.
    pub db: Db,
    /// Most buckets one series may have (`--max-buckets`).
    pub max_buckets: usize,
}

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    AnalyticsState: FromRef<S>,
    Arc<KeyStore>: FromRef<S>,
{
    Router::new()
        .route("/api/v1/analytics/navigator-tool-connections", get(lists::navigator_tool_connections))
        .route("/api/v1/analytics/average-tool-call-latency", get(summary::average_latency))
        .route("/api/v1/analytics/average-tool-call-latency-graph", get(graphs::latency_graph))
        .route("/api/v1/analytics/average-tool-calls-per-query", get(summary::calls_per_query))
        .route("/api/v1/analytics/average-tool-call-runtime", get(summary::average_runtime))
        .route("/api/v1/analytics/average-tool-call-runtime-graph", get(graphs::runtime_graph))
        .route("/api/v1/analytics/average-tool-calls-per-query-graph", get(graphs::calls_per_query_graph))
        .route("/api/v1/analytics/error-rate-graph", get(graphs::error_rate_graph))
        .route("/api/v1/analytics/error-types-graph", get(graphs::error_types_graph))
        .route("/api/v1/analytics/heroes/global/stats", get(summary::global_stats))
        .route("/api/v1/analytics/queries-processed", get(summary::queries_processed))
        .route("/api/v1/analytics/queries-processed-graph", get(graphs::queries_graph))
        .route("/api/v1/analytics/tool-calls-processed", get(summary::tool_calls_processed))
        .route("/api/v1/analytics/tool-calls-processed-graph", get(graphs::tool_calls_graph))
        .route("/api/v1/analytics/proxy-tools", get(summary::proxy_tools))
        .route("/api/v1/analytics/proxy-tools/suggest-tools", get(summary::suggest_tools))
        .route("/api/v1/analytics/tools", get(lists::tools))
        .route("/api/v1/analytics/servers", get(lists::servers))
        .route("/api/v1/analytics/top-servers", get(lists::top_servers))
        .route("/api/v1/analytics/top-projects", get(lists::top_projects))
        .route("/api/v1/analytics/top-navigators", get(lists::top_navigators))
        .route("/api/v1/analytics/users", get(lists::users))
        .route("/api/v1/analytics/health", get(summary::analytics_health))
        .route("/api/v1/projects/{project_id}/users/summary", get(project_users::summary))
        .route("/api/v1/projects/{project_id}/users/{user_id}/analytics", get(project_users::user_analytics))
        .route("/api/v1/query/timeseries", get(grafana::timeseries))
}

/// RFC 3339 UTC with seconds, as in the spec's examples.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The spec's success envelope.
pub(crate) fn envelope(data: Value, now: DateTime<Utc>) -> Json<Value> {
    Json(json!({ "success": true, "data": data, "error": null, "timestamp": ts(now) }))
}

/// "Now" of a request, whole seconds (the `as_of` watermark).
pub(crate) fn now() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
}

/// The parsed common part of an analytics request.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub res: Resolved,
    pub filters: Filters,
    pub now: DateTime<Utc>,
}

impl Base {
    /// Window/from/to/tz and the filters the endpoint accepts.
    pub fn parse(c: &mut Checker, p: &RawParams, default_window: &str, accepts: Accepts) -> Self {
        let now = now();
        let res = c.range(p, default_window, false, now);
        let filters = c.filters(p, accepts);
        Self { res, filters, now }
    }

    /// 404 for filter ids outside the caller's tenant.
    pub async fn authorize(&self, state: &AnalyticsState, caller: &Caller) -> Result<(), ApiError> {
        Ok(ownership::require_filters(&state.db, caller.tenant_id, &(&self.filters).into()).await?)
    }

    pub fn scope(&self, caller: &Caller, kinds: CallKinds) -> Scope {
        Scope { tenant: caller.tenant_id, range: self.res.range, filters: (&self.filters).into(), kinds }
    }

    /// The `filters` echo.
    pub fn echo(&self) -> BTreeMap<String, String> {
        self.filters.echo()
    }

    /// Extra fields telling how fresh the answer is and what it covers.
    pub fn freshness(&self, range: TimeRange) -> Value {
        json!({
            "as_of": ts(self.now),
            "from": ts(range.start),
            "to": ts(range.end),
            "tz": self.res.tz.name(),
        })
    }
}

/// Buckets of a graph request; the scope's range is widened to start at
/// the first bucket so every bucket is complete.
pub(crate) fn plan_buckets(state: &AnalyticsState, base: &Base, frequency: Span) -> Result<(Buckets, TimeRange), ApiError> {
    let buckets = Buckets::plan(base.res.range, frequency, base.res.tz, state.max_buckets)
        .map_err(|msg| ApiError::invalid([FieldError::query("frequency", msg)]))?;
    let range = TimeRange { start: buckets.first_start(), end: base.res.range.end };
    Ok((buckets, range))
}

/// Merges `extra` object fields into `target`.
pub(crate) fn merge(mut target: Value, extra: Value) -> Value {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
    target
}

/// `open_bucket` and per-point `partial` of a series.
pub(crate) fn open_bucket(buckets: &Buckets, now: DateTime<Utc>) -> Option<usize> {
    buckets.open_bucket(now)
}

/// Seconds from milliseconds, rounded to microseconds.
pub(crate) fn secs(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1_000_000.0
}
