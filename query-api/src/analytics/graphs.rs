//! Time-series endpoints: one point per bucket, every bucket present
//! (zero-filled), the still-open bucket marked `partial: true` and named in
//! `open_bucket`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AnalyticsState;
use super::{envelope, merge, open_bucket, plan_buckets, secs, ts, Base};
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

async fn prepare(state: &AnalyticsState, caller: &Caller, p: &RawParams, accepts: Accepts) -> Result<GraphReq, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, p, "1mon", accepts);
    let view = c.view(&p.view);
    let frequency = c.frequency(&p.frequency, "1d", false);
    c.finish()?;
    let (buckets, range) = plan_buckets(state, &base, frequency)?;
    base.authorize(state, caller).await?;
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
    fn points(&self, values: Vec<Value>) -> Vec<Value> {
        let open = self.open();
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut p = merge(json!({ "timestamp": ts(self.buckets.start(i)) }), v);
                if open == Some(i) {
                    p["partial"] = json!(true);
                }
                p
            })
            .collect()
    }

    /// Common fields of the `data` payload.
    fn common(&self, view_key: &str) -> Value {
        let mut v = json!({
            "frequency": self.buckets.frequency.frequency_string(),
            "window": self.base.res.window_str,
            "filters": self.base.echo(),
            "timestamp": ts(self.base.now),
            "open_bucket": self.open().map(|i| ts(self.buckets.start(i))),
            "bucket_count": self.buckets.len(),
        });
        v[view_key] = json!(self.view);
        merge(v, self.base.freshness(self.range))
    }
}

/// `GET /api/v1/analytics/average-tool-call-latency-graph`.
pub async fn latency_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS).await?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::LATENCY).await?;
    let points = g.points(
        series
            .iter()
            .map(|s| {
                json!({
                    "average_latency": secs(s.latency_avg_ms()),
                    "total_calls": s.calls,
                    "latency_p50": secs(s.latency_pct_ms(0)),
                    "latency_p95": secs(s.latency_pct_ms(1)),
                    "latency_p99": secs(s.latency_pct_ms(2)),
                })
            })
            .collect(),
    );
    let data = merge(json!({ "data_points": points }), g.common("view"));
    Ok(envelope(data, g.base.now))
}

/// `GET /api/v1/analytics/average-tool-call-runtime-graph`.
pub async fn runtime_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS).await?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::COUNTS).await?;
    let points = g.points(
        series.iter().map(|s| json!({ "average_runtime": secs(s.runtime_avg_ms()), "total_executions": s.runtime_count })).collect(),
    );
    let data = merge(json!({ "data_points": points }), g.common("view"));
    Ok(envelope(data, g.base.now))
}

/// `GET /api/v1/analytics/average-tool-calls-per-query-graph`.
pub async fn calls_per_query_graph(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS_TOOL_ID).await?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::QUERIES).await?;
    let points = g.points(
        series
            .iter()
            .map(|s| {
                json!({
                    "average_tool_calls_per_query": s.calls_per_query(),
                    "total_queries": s.queries,
                    "total_tool_calls": s.calls,
                })
            })
            .collect(),
    );
    let data = merge(json!({ "data_points": points }), g.common("view"));
    Ok(envelope(data, g.base.now))
}

/// `GET /api/v1/analytics/queries-processed-graph` (`{timestamp, count}`).
pub async fn queries_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    count_graph(state, caller, p, true).await
}

/// `GET /api/v1/analytics/tool-calls-processed-graph` (`{timestamp, count}`).
pub async fn tool_calls_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    count_graph(state, caller, p, false).await
}

async fn count_graph(state: AnalyticsState, caller: Caller, p: RawParams, queries: bool) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS_TOOL_NAME).await?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, if queries { Need::QUERIES } else { Need::COUNTS }).await?;
    let points = g.points(series.iter().map(|s| json!({ "count": if queries { s.queries } else { s.calls } })).collect());
    let data = merge(json!({ "data_points": points }), g.common("view"));
    Ok(envelope(data, g.base.now))
}

/// `GET /api/v1/analytics/error-rate-graph`: error rate as a fraction 0–1
/// per bucket (with its numerator and denominator).
pub async fn error_rate_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS).await?;
    let series = tool_calls::series(&state.db, &g.scope(&caller), &g.buckets, Need::COUNTS).await?;
    let (errors, calls) = series.iter().fold((0u64, 0u64), |(e, c), s| (e + s.errors, c + s.calls));
    let points = g.points(series.iter().map(|s| json!({ "value": s.error_rate(), "errors": s.errors, "calls": s.calls })).collect());
    let rate = if calls == 0 { 0.0 } else { errors as f64 / calls as f64 };
    let data = merge(
        json!({
            "time_series_data": points,
            "total_errors": errors,
            "total_tool_calls": calls,
            "average_error_rate": rate,
        }),
        g.common("view_type"),
    );
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
) -> (Vec<Value>, u64) {
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
            let name = error_name(&t);
            let points: Vec<Value> = v
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut p = json!({ "timestamp": ts(buckets.start(i)), "value": n, "labels": { "error_type": t, "error_name": name } });
                    if open == Some(i) {
                        p["partial"] = json!(true);
                    }
                    p
                })
                .collect();
            let pct = if total == 0 { 0.0 } else { (n as f64 / total as f64 * 10_000.0).round() / 100.0 };
            json!({ "error_type": t, "error_name": name, "time_series_data": points, "total_count": n, "percentage": pct })
        })
        .collect();
    (out, total)
}

/// `GET /api/v1/analytics/error-types-graph`.
pub async fn error_types_graph(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let g = prepare(&state, &caller, &p, Accepts::PNS).await?;
    let rows = tool_calls::error_type_series(&state.db, &g.scope(&caller), &g.buckets).await?;
    let (entries, total) = error_type_entries(rows.into_iter().map(|r| (r.error_type, r.bucket, r.errors)), &g.buckets, g.open());
    let data = merge(json!({ "time_series_data": entries, "total_errors": total }), g.common("view_type"));
    Ok(envelope(data, g.base.now))
}
