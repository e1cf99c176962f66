//! Time-series endpoints: one point per bucket, every bucket present
//! (zero-filled), the still-open bucket marked `partial: true` and named in
//! `open_bucket`.

use axum::extract::State;
use axum::Json;

use super::responses::{
    CallsPerQueryValue, CountValue, Envelope, ErrorLabels, ErrorRateGraph, ErrorRateValue, ErrorTypeSeries, ErrorTypeValue,
    ErrorTypesGraph, Graph, GraphCommon, LatencyValue, Point, RuntimeValue,
};
use super::AnalyticsState;
use super::{envelope, open_bucket, plan_buckets, secs, ts, Base};
use crate::auth::Caller;
use crate::buckets::Buckets;
use crate::error::ApiError;
use crate::params::{Accepts, Checker, Params, RawParams};
use crate::queries::analytics::tool_calls::{self, Need};
use crate::queries::CallKinds;
use crate::window::TimeRange;

/// A parsed graph request: base, view, frequency, buckets, scope range.
struct GraphReq {
    base: Base,
    view: &'static str,
    buckets: Buckets,
    range: TimeRange,
}

fn prepare(state: &AnalyticsState, p: &RawParams, accepts: Accepts) -> Result<GraphReq, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, p, "1mon", accepts);
    let view = c.view(&p.view);
    let frequency = c.frequency(&p.frequency, "1d", false);
    c.finish()?;
    let (buckets, range) = plan_buckets(state, &base, frequency)?;
    Ok(GraphReq { base, view, buckets, range })
}

impl GraphReq {
    fn scope(&self, caller: &Caller) -> crate::queries::Scope {
        let mut s = self.base.scope(caller, CallKinds::Tool);
        s.range = self.range;
        s
    }

    fn open(&self) -> Option<usize> {
        open_bucket(&self.buckets, self.base.now)
    }

    /// Adds `timestamp` (and `partial` for the open bucket) to each point.
    fn points<V>(&self, values: impl IntoIterator<Item = V>) -> Vec<Point<V>> {
        let open = self.open();
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Point { timestamp: ts(self.buckets.start(i)), partial: open == Some(i), value })
            .collect()
    }

    /// Common fields of the `data` payload.
    fn common(&self) -> GraphCommon {
        GraphCommon {
            frequency: self.buckets.frequency.frequency_string(),
            open_bucket: self.open().map(|i| ts(self.buckets.start(i))),
            bucket_count: self.buckets.len(),
            echo: self.base.echo_all(),
            freshness: self.base.freshness(self.range),
        }
    }

    /// The answer of a graph whose points are `values`.
    fn graph<V: serde::Serialize>(&self, values: impl IntoIterator<Item = V>) -> Json<Envelope<Graph<V>>> {
        envelope(Graph { data_points: self.points(values), view: self.view, common: self.common() }, self.base.now)
    }
}

/// `GET /api/v1/analytics/average-tool-call-latency-graph`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-call-latency-graph",
    extensions(("x-caylex-schema" = json!("AverageToolCallLatencyGraphResponse"))),
    tag = "Analytics",
    summary = "Latency per bucket",
    params(crate::param_docs::GraphPns),
    responses((status = 200, description = "Latency per bucket", body = Envelope<Graph<LatencyValue>>))
)]
pub async fn latency_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Graph<LatencyValue>>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS)?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::LATENCY).await?;
    Ok(g.graph(series.iter().map(|s| LatencyValue {
        average_latency: secs(s.latency_avg_ms()),
        total_calls: s.calls,
        latency_p50: secs(s.latency_pct_ms(0)),
        latency_p95: secs(s.latency_pct_ms(1)),
        latency_p99: secs(s.latency_pct_ms(2)),
    })))
}

/// `GET /api/v1/analytics/average-tool-call-runtime-graph`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-call-runtime-graph",
    extensions(("x-caylex-schema" = json!("AverageToolCallRuntimeGraphResponse"))),
    tag = "Analytics",
    summary = "Runtime per bucket",
    params(crate::param_docs::GraphPns),
    responses((status = 200, description = "Runtime per bucket", body = Envelope<Graph<RuntimeValue>>))
)]
pub async fn runtime_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Graph<RuntimeValue>>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS)?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::COUNTS).await?;
    Ok(g.graph(series.iter().map(|s| RuntimeValue { average_runtime: secs(s.runtime_avg_ms()), total_executions: s.runtime_count })))
}

/// `GET /api/v1/analytics/average-tool-calls-per-query-graph`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-calls-per-query-graph",
    extensions(("x-caylex-schema" = json!("ToolCallsPerQueryGraphResponse"))),
    tag = "Analytics",
    summary = "Tool calls per query per bucket (0 in a bucket without a query)",
    params(crate::param_docs::GraphToolId),
    responses((status = 200, description = "Tool calls per query per bucket (0 in a bucket without a query)", body = Envelope<Graph<CallsPerQueryValue>>))
)]
pub async fn calls_per_query_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Graph<CallsPerQueryValue>>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS_TOOL_ID)?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::CALLS_AND_QUERIES).await?;
    Ok(g.graph(series.iter().map(|s| CallsPerQueryValue {
        average_tool_calls_per_query: s.calls_per_query(),
        total_queries: s.queries,
        total_tool_calls: s.calls,
    })))
}

/// `GET /api/v1/analytics/queries-processed-graph` (`{timestamp, count}`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/queries-processed-graph",
    extensions(("x-caylex-schema" = json!("ToolCallsGraphResponse"))),
    tag = "Analytics",
    summary = "Queries per bucket, each counted once at its navigator_query execution",
    params(crate::param_docs::GraphToolName),
    responses((status = 200, description = "Queries per bucket, each counted once at its navigator_query execution", body = Envelope<Graph<CountValue>>))
)]
pub async fn queries_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Graph<CountValue>>>, ApiError> {
    count_graph(state, caller, p, true).await
}

/// `GET /api/v1/analytics/tool-calls-processed-graph` (`{timestamp, count}`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/tool-calls-processed-graph",
    extensions(("x-caylex-schema" = json!("ToolCallsGraphResponse"))),
    tag = "Analytics",
    summary = "Tool calls per bucket",
    params(crate::param_docs::GraphToolName),
    responses((status = 200, description = "Tool calls per bucket", body = Envelope<Graph<CountValue>>))
)]
pub async fn tool_calls_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Graph<CountValue>>>, ApiError> {
    count_graph(state, caller, p, false).await
}

async fn count_graph(
    state: AnalyticsState,
    caller: Caller,
    p: RawParams,
    queries: bool,
) -> Result<Json<Envelope<Graph<CountValue>>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS_TOOL_NAME)?;
    let series =
        tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, if queries { Need::CALLS_AND_QUERIES } else { Need::CALLS }).await?;
    Ok(g.graph(series.iter().map(|s| CountValue { count: if queries { s.queries } else { s.calls } })))
}

/// `GET /api/v1/analytics/error-rate-graph`: error rate as a fraction 0–1
/// per bucket (with its numerator and denominator).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/error-rate-graph",
    extensions(("x-caylex-schema" = json!("ErrorRateGraphResponse"))),
    tag = "Analytics",
    summary = "Error rate (fraction 0-1) per bucket",
    params(crate::param_docs::GraphPns),
    responses((status = 200, description = "Error rate (fraction 0-1) per bucket", body = Envelope<ErrorRateGraph>))
)]
pub async fn error_rate_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<ErrorRateGraph>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS)?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::CALLS).await?;
    let (errors, calls) = series.iter().fold((0u64, 0u64), |(e, c), s| (e + s.errors, c + s.calls));
    let points = g.points(series.iter().map(|s| ErrorRateValue { value: s.error_rate(), errors: s.errors, calls: s.calls }));
    let rate = if calls == 0 { 0.0 } else { errors as f64 / calls as f64 };
    let data = ErrorRateGraph {
        time_series_data: points,
        total_errors: errors,
        total_tool_calls: calls,
        average_error_rate: rate,
        view_type: g.view,
        common: g.common(),
    };
    Ok(envelope(data, g.base.now))
}

/// Display name of an error type.
pub(crate) fn error_name(t: &str) -> String {
    match t {
        "timeout" => "Timeout Errors".into(),
        "authentication" => "Authentication Errors".into(),
        "rate_limit" => "Rate Limit Errors".into(),
        "validation" => "Validation Errors".into(),
        "upstream" => "Upstream Errors".into(),
        "internal" => "Internal Errors".into(),
        "other" => "Other Errors".into(),
        t => format!("{t} errors"),
    }
}

/// Error-type series from `(type, bucket, count)` rows: one entry per type,
/// every bucket present, most frequent type first.
pub(crate) fn error_type_entries(
    rows: impl IntoIterator<Item = (String, u32, u64)>,
    buckets: &Buckets,
    open: Option<usize>,
) -> (Vec<ErrorTypeSeries>, u64) {
    let mut by_type: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for (t, b, n) in rows {
        let v = by_type.entry(t).or_insert_with(|| vec![0; buckets.len()]);
        if let Some(slot) = v.get_mut(b as usize) {
            *slot += n;
        }
    }
    let mut entries: Vec<(String, Vec<u64>, u64)> = by_type
        .into_iter()
        .map(|(t, v)| {
            let total = v.iter().sum();
            (t, v, total)
        })
        .collect();
    entries.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let total: u64 = entries.iter().map(|e| e.2).sum();
    let out = entries
        .into_iter()
        .map(|(t, v, n)| {
            let labels = ErrorLabels { error_type: t.clone(), error_name: error_name(&t) };
            let points = v
                .iter()
                .enumerate()
                .map(|(i, n)| Point {
                    timestamp: ts(buckets.start(i)),
                    partial: open == Some(i),
                    value: ErrorTypeValue { value: *n, labels: labels.clone() },
                })
                .collect();
            let pct = if total == 0 { 0.0 } else { (n as f64 / total as f64 * 10_000.0).round() / 100.0 };
            ErrorTypeSeries { error_type: t, error_name: labels.error_name, time_series_data: points, total_count: n, percentage: pct }
        })
        .collect();
    (out, total)
}

/// `GET /api/v1/analytics/error-types-graph`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/error-types-graph",
    extensions(("x-caylex-schema" = json!("ErrorTypesGraphResponse"))),
    tag = "Analytics",
    summary = "Errors per type per bucket",
    params(crate::param_docs::GraphPns),
    responses((status = 200, description = "Errors per type per bucket", body = Envelope<ErrorTypesGraph>))
)]
pub async fn error_types_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<ErrorTypesGraph>>, ApiError> {
    let g = prepare(&state, &p, Accepts::PNS)?;
    let rows = tool_calls::error_type_series(&state.db, &g.scope(&caller), &g.buckets).await?;
    let (entries, total) = error_type_entries(rows.into_iter().map(|r| (r.error_type, r.bucket, r.errors)), &g.buckets, g.open());
    let data = ErrorTypesGraph { time_series_data: entries, total_errors: total, view_type: g.view, common: g.common() };
    Ok(envelope(data, g.base.now))
}
