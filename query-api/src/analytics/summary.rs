//! Single-figure endpoints: averages, totals, proxy counts, global stats.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AnalyticsState;
use super::{envelope, merge, secs, ts, Base};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::params::{Accepts, Checker, Params};
use crate::queries::analytics::raw;
use crate::queries::analytics::tool_calls::{self, Need};
use crate::queries::CallKinds;
use crate::window::{Span, TimeRange, Unit};

/// `GET /api/v1/analytics/average-tool-call-latency` (seconds; p50/p95/p99 extra).
pub async fn average_latency(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let s = tool_calls::totals(&state.db, &base.scope(&caller, CallKinds::Tool), Need::LATENCY).await?;
    let data = json!({
        "average_latency": secs(s.latency_avg_ms()),
        "total_calls": s.calls,
        "latency_p50": secs(s.latency_pct_ms(0)),
        "latency_p95": secs(s.latency_pct_ms(1)),
        "latency_p99": secs(s.latency_pct_ms(2)),
        "window": base.res.window_str,
        "filters": base.echo(),
        "timestamp": ts(base.now),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/average-tool-call-runtime` (seconds, over calls
/// that reported a runtime; percentiles from the raw table).
pub async fn average_runtime(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let r = raw::runtime(&state.db, &base.scope(&caller, CallKinds::Tool)).await?;
    let data = json!({
        "average_runtime": secs(r.avg_ms()),
        "total_executions": r.n,
        "runtime_p50": secs(r.pct_ms(0)),
        "runtime_p95": secs(r.pct_ms(1)),
        "runtime_p99": secs(r.pct_ms(2)),
        "window": base.res.window_str,
        "filters": base.echo(),
        "timestamp": ts(base.now),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/average-tool-calls-per-query`.
pub async fn calls_per_query(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS_TOOL_ID);
    let view = c.view(&p.view);
    let frequency = c.frequency(&p.frequency, "1h", false);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let s = tool_calls::totals(&state.db, &base.scope(&caller, CallKinds::Tool), Need::QUERIES).await?;
    let data = json!({
        "average_tool_calls_per_query": s.calls_per_query(),
        "total_queries": s.queries,
        "total_tool_calls": s.calls,
        "window": base.res.window_str,
        "view": view,
        "frequency": frequency.frequency_string(),
        "filters": base.echo(),
        "timestamp": ts(base.now),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

fn change_percent(current: u64, previous: u64) -> Value {
    if previous == 0 {
        Value::Null
    } else {
        json!(((current as f64 - previous as f64) / previous as f64 * 10_000.0).round() / 100.0)
    }
}

/// `GET /api/v1/analytics/queries-processed` (+ previous period, change %).
pub async fn queries_processed(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    processed(state, caller, p, true).await
}

/// `GET /api/v1/analytics/tool-calls-processed` (+ previous period, change %).
pub async fn tool_calls_processed(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    processed(state, caller, p, false).await
}

async fn processed(state: AnalyticsState, caller: Caller, p: crate::params::RawParams, queries: bool) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1mon", Accepts::PNS_TOOL_NAME);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let scope = base.scope(&caller, CallKinds::Tool);
    let mut prev_scope = scope.clone();
    prev_scope.range = if p.from.is_some() {
        let len = base.res.range.end - base.res.range.start;
        TimeRange { start: base.res.range.start - len, end: base.res.range.start }
    } else {
        base.res.range.previous(base.res.window, base.res.tz)
    };
    let need = if queries { Need::QUERIES } else { Need::COUNTS };
    let (cur, prev) = tokio::try_join!(tool_calls::totals(&state.db, &scope, need), tool_calls::totals(&state.db, &prev_scope, need))?;
    let (key, now_v, prev_v) =
        if queries { ("total_queries", cur.queries, prev.queries) } else { ("total_tool_calls", cur.calls, prev.calls) };
    let mut data = json!({
        "window": base.res.window_str,
        "filters": base.echo(),
        "timestamp": ts(base.now),
        "previous_period_start": ts(prev_scope.range.start),
        "change_percent": change_percent(now_v, prev_v),
    });
    data[key] = json!(now_v);
    data[format!("previous_{key}")] = json!(prev_v);
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/proxy-tools`.
pub async fn proxy_tools(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1w", Accepts::PN);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let kinds = tool_calls::kind_counts(&state.db, &base.scope(&caller, CallKinds::Proxy)).await?;
    let count = |k: &str| kinds.iter().find(|r| r.call_kind == k).map(|r| r.calls).unwrap_or(0);
    let data = json!({
        "suggest_tools_count": count("suggest_tools"),
        "get_tool_schemas_count": count("get_tool_schemas"),
        "invoke_tools_count": count("invoke_tools"),
        "window": base.res.window_str,
        "filters": base.echo(),
        "timestamp": ts(base.now),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/proxy-tools/suggest-tools`.
pub async fn suggest_tools(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1w", Accepts::PN);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let kinds = tool_calls::kind_counts(&state.db, &base.scope(&caller, CallKinds::Proxy)).await?;
    let row = kinds.iter().find(|r| r.call_kind == "suggest_tools");
    let data = json!({
        "count": row.map(|r| r.calls).unwrap_or(0),
        "suggested_tools": row.map(|r| r.suggestions).unwrap_or(0),
        "window": base.res.window_str,
        "filters": base.echo(),
        "timestamp": ts(base.now),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/heroes/global/stats`: current vs previous
/// rolling period (month = calendar month back in `tz`).
pub async fn global_stats(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let period = match p.comparison_period.as_deref().unwrap_or("rolling_month") {
        "rolling_month" => ("rolling_month", Span::new(1, Unit::Month)),
        "rolling_week" => ("rolling_week", Span::new(7, Unit::Day)),
        "rolling_day" => ("rolling_day", Span::new(24, Unit::Hour)),
        "rolling_hour" => ("rolling_hour", Span::new(1, Unit::Hour)),
        _ => {
            c.errors.push(FieldError::new(
                &["query", "comparison_period"],
                "Input should be 'rolling_month', 'rolling_week', 'rolling_day' or 'rolling_hour'",
                "enum",
            ));
            ("rolling_month", Span::new(1, Unit::Month))
        }
    };
    let mut params = p.clone();
    params.window = None;
    params.from = None;
    let mut base = Base::parse(&mut c, &params, "1mon", Accepts::PNS);
    c.finish()?;
    base.res.window = period.1;
    base.res.range = TimeRange::resolve(period.1, None, Some(base.res.range.end), base.now, base.res.tz)
        .map_err(|m| ApiError::invalid([FieldError::query("to", m)]))?;
    base.authorize(&state, &caller).await?;
    let scope = base.scope(&caller, CallKinds::Tool);
    let mut prev_scope = scope.clone();
    prev_scope.range = base.res.range.previous(period.1, base.res.tz);
    let (cur, prev) =
        tokio::try_join!(tool_calls::totals(&state.db, &scope, Need::QUERIES), tool_calls::totals(&state.db, &prev_scope, Need::QUERIES))?;
    let data = json!({
        "total_queries": cur.queries,
        "total_tool_calls": cur.calls,
        "previous_total_queries": prev.queries,
        "previous_total_tool_calls": prev.calls,
        "comparison_period": period.0,
        "timestamp": ts(base.now),
        "previous_from": ts(prev_scope.range.start),
        "filters": base.echo(),
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/health`: ClickHouse reachability (no InfluxDB
/// here: `influxdb_connected` mirrors the analytics store for old clients).
pub async fn analytics_health(State(state): State<AnalyticsState>) -> Response {
    let ok = crate::queries::health::ping(&state.db).await.is_ok();
    let body = json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "database_connected": ok,
        "influxdb_connected": ok,
        "last_check": ts(super::now()),
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
