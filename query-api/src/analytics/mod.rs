//! The analytics endpoints: the Caylex-compatible `/api/v1/analytics/*`
//! family (SEED_SPEC §1.3 rows 1–23), the per-project user endpoints (rows
//! 24–25) and the Grafana-friendly `/api/v1/query/timeseries`.
//!
//! Handlers are thin: parse and validate parameters ([`crate::params`]),
//! check that filter ids belong to the caller's tenant, call one or two
//! functions of [`crate::queries`], shape the response in the spec's
//! envelope `{success, data, error, timestamp}`.

pub(crate) mod grafana;
pub(crate) mod graphs;
pub(crate) mod lists;
pub(crate) mod project_users;
pub mod responses;
pub(crate) mod summary;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, KeyStore};
use crate::buckets::Buckets;
use crate::db::Db;
use crate::error::{ApiError, FieldError};
use crate::params::{Accepts, Checker, Filters, RawParams, Resolved};
use crate::queries::{CallKinds, Scope};
use crate::window::{Span, TimeRange};
use responses::{Echo, Envelope, FilterEcho, Freshness};

/// What the analytics handlers need of the app's state.
#[derive(Clone)]
pub struct AnalyticsState {
    /// ClickHouse behind the concurrency limit and the query timeout.
    pub db: Db,
    /// Most buckets one series may have (`--max-buckets`).
    pub max_buckets: usize,
}

/// The analytics routes and their OpenAPI entries (`routes!` reads each
/// handler's path from its `#[utoipa::path]`).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AnalyticsState: FromRef<S>,
    Arc<KeyStore>: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(lists::navigator_tool_connections))
        .routes(routes!(summary::average_latency))
        .routes(routes!(graphs::latency_graph))
        .routes(routes!(summary::calls_per_query))
        .routes(routes!(summary::average_runtime))
        .routes(routes!(graphs::runtime_graph))
        .routes(routes!(graphs::calls_per_query_graph))
        .routes(routes!(graphs::error_rate_graph))
        .routes(routes!(graphs::error_types_graph))
        .routes(routes!(summary::global_stats))
        .routes(routes!(summary::queries_processed))
        .routes(routes!(graphs::queries_graph))
        .routes(routes!(summary::tool_calls_processed))
        .routes(routes!(graphs::tool_calls_graph))
        .routes(routes!(summary::proxy_tools))
        .routes(routes!(summary::suggest_tools))
        .routes(routes!(lists::tools))
        .routes(routes!(lists::servers))
        .routes(routes!(lists::top_servers))
        .routes(routes!(lists::top_projects))
        .routes(routes!(lists::top_navigators))
        .routes(routes!(lists::users))
        .routes(routes!(summary::analytics_health))
        .routes(routes!(project_users::summary))
        .routes(routes!(project_users::user_analytics))
        .routes(routes!(grafana::timeseries))
}

/// RFC 3339 UTC with seconds, as in the spec's examples.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The spec's success envelope.
pub(crate) fn envelope<T: Serialize>(data: T, now: DateTime<Utc>) -> Json<Envelope<T>> {
    Json(Envelope { success: true, data, error: None, timestamp: ts(now) })
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

    pub fn scope(&self, caller: &Caller, kinds: CallKinds) -> Scope {
        Scope { tenant: caller.tenant_id, range: self.res.range, filters: self.filters.clone(), kinds }
    }

    /// The `filters` echo.
    pub fn echo(&self) -> FilterEcho {
        self.filters.echo().into()
    }

    /// `window`, `filters` and `timestamp` of an answer.
    pub fn echo_all(&self) -> Echo {
        Echo { window: self.res.window_str.clone(), filters: self.echo(), timestamp: ts(self.now) }
    }

    /// Extra fields telling how fresh the answer is and what it covers.
    pub fn freshness(&self, range: TimeRange) -> Freshness {
        Freshness { as_of: ts(self.now), from: ts(range.start), to: ts(range.end), tz: self.res.tz.name().to_owned() }
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

/// `open_bucket` and per-point `partial` of a series.
pub(crate) fn open_bucket(buckets: &Buckets, now: DateTime<Utc>) -> Option<usize> {
    buckets.open_bucket(now)
}

/// Seconds from milliseconds, rounded to microseconds.
pub(crate) fn secs(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1_000_000.0
}
