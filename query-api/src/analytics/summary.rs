//! Single-figure endpoints: averages, totals, proxy counts, global stats.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::responses::{
    AnalyticsHealth, AverageLatency, AverageRuntime, CallsPerQuery, Envelope, GlobalStats, ProxyTools, QueriesProcessed, SuggestTools,
    ToolCallsProcessed,
};
use super::AnalyticsState;
use super::{envelope, secs, ts, Base};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::params::{Accepts, Checker, Params};
use crate::queries::analytics::raw;
use crate::queries::analytics::tool_calls::{self, CallStats, Need};
use crate::queries::CallKinds;
use crate::window::{Span, TimeRange, Unit};

/// `GET /api/v1/analytics/average-tool-call-latency` (seconds; p50/p95/p99 extra).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-call-latency",
    extensions(("x-caylex-schema" = json!("AverageToolCallLatencyResponse"))),
    tag = "Analytics",
    summary = "Average tool call latency (seconds) with latency_p50/p95/p99",
    params(crate::param_docs::Summary24h),
    responses((status = 200, description = "Average tool call latency (seconds) with latency_p50/p95/p99", body = Envelope<AverageLatency>))
)]
pub async fn average_latency(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<AverageLatency>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    let s = tool_calls::totals(&state.db, &base.scope(&caller, CallKinds::Tool), Need::LATENCY).await?;
    let data = AverageLatency {
        average_latency: secs(s.latency_avg_ms()),
        total_calls: s.calls,
        latency_p50: secs(s.latency_pct_ms(0)),
        latency_p95: secs(s.latency_pct_ms(1)),
        latency_p99: secs(s.latency_pct_ms(2)),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/average-tool-call-runtime` (seconds, over calls
/// that reported a runtime; percentiles from the raw table).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-call-runtime",
    extensions(("x-caylex-schema" = json!("AverageToolCallRuntimeResponse"))),
    tag = "Analytics",
    summary = "Average tool procedure runtime (seconds) with runtime_p50/p95/p99",
    params(crate::param_docs::Summary24h),
    responses((status = 200, description = "Average tool procedure runtime (seconds) with runtime_p50/p95/p99", body = Envelope<AverageRuntime>))
)]
pub async fn average_runtime(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<AverageRuntime>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    let r = raw::runtime(&state.db, &base.scope(&caller, CallKinds::Tool)).await?;
    let data = AverageRuntime {
        average_runtime: secs(r.avg_ms()),
        total_executions: r.n,
        runtime_p50: secs(r.pct_ms(0)),
        runtime_p95: secs(r.pct_ms(1)),
        runtime_p99: secs(r.pct_ms(2)),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/average-tool-calls-per-query`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/average-tool-calls-per-query",
    extensions(("x-caylex-schema" = json!("ToolCallsPerQueryResponse"))),
    tag = "Analytics",
    summary = "Average tool calls per query (0 when there is no query)",
    params(crate::param_docs::CallsPerQueryParams),
    responses((status = 200, description = "Average tool calls per query (0 when there is no query)", body = Envelope<CallsPerQuery>))
)]
pub async fn calls_per_query(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<CallsPerQuery>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS_TOOL_ID);
    let view = c.view(&p.view);
    let frequency = c.frequency(&p.frequency, "1h", false);
    c.finish()?;
    let s = tool_calls::totals(&state.db, &base.scope(&caller, CallKinds::Tool), Need::CALLS_AND_QUERIES).await?;
    let data = CallsPerQuery {
        average_tool_calls_per_query: s.calls_per_query(),
        total_queries: s.queries,
        total_tool_calls: s.calls,
        view: view.to_owned(),
        frequency: frequency.frequency_string(),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

fn change_percent(current: u64, previous: u64) -> Option<f64> {
    (previous != 0).then(|| ((current as f64 - previous as f64) / previous as f64 * 10_000.0).round() / 100.0)
}

/// `GET /api/v1/analytics/queries-processed` (+ previous period, change %).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/queries-processed",
    extensions(("x-caylex-schema" = json!("QueriesProcessedResponse"))),
    tag = "Analytics",
    summary = "Queries, each counted once at its navigator_query execution (+ previous period and change_percent)",
    params(crate::param_docs::Processed),
    responses((status = 200, description = "Queries, each counted once at its navigator_query execution (+ previous period and change_percent)", body = Envelope<QueriesProcessed>))
)]
pub async fn queries_processed(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<QueriesProcessed>>, ApiError> {
    let (base, prev_start, (cur, prev)) = processed(state, caller, p, Need::CALLS_AND_QUERIES).await?;
    let data = QueriesProcessed {
        total_queries: cur.queries,
        previous_total_queries: prev.queries,
        previous_period_start: ts(prev_start),
        change_percent: change_percent(cur.queries, prev.queries),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/tool-calls-processed` (+ previous period, change %).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/tool-calls-processed",
    extensions(("x-caylex-schema" = json!("ToolCallsProcessedResponse"))),
    tag = "Analytics",
    summary = "Tool calls (+ previous period and change_percent)",
    params(crate::param_docs::Processed),
    responses((status = 200, description = "Tool calls (+ previous period and change_percent)", body = Envelope<ToolCallsProcessed>))
)]
pub async fn tool_calls_processed(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<ToolCallsProcessed>>, ApiError> {
    let (base, prev_start, (cur, prev)) = processed(state, caller, p, Need::CALLS).await?;
    let data = ToolCallsProcessed {
        total_tool_calls: cur.calls,
        previous_total_tool_calls: prev.calls,
        previous_period_start: ts(prev_start),
        change_percent: change_percent(cur.calls, prev.calls),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// The request, the previous period's start and the totals of this and
/// the previous period.
async fn processed(
    state: AnalyticsState,
    caller: Caller,
    p: crate::params::RawParams,
    need: Need,
) -> Result<(Base, chrono::DateTime<chrono::Utc>, (CallStats, CallStats)), ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1mon", Accepts::PNS_TOOL_NAME);
    c.finish()?;
    let scope = base.scope(&caller, CallKinds::Tool);
    let mut prev_scope = scope.clone();
    prev_scope.range = if p.from.is_some() {
        let len = base.res.range.end - base.res.range.start;
        TimeRange { start: base.res.range.start - len, end: base.res.range.start }
    } else {
        base.res.range.previous(base.res.window, base.res.tz)
    };
    let totals = tokio::try_join!(tool_calls::totals(&state.db, &scope, need), tool_calls::totals(&state.db, &prev_scope, need))?;
    Ok((base, prev_scope.range.start, totals))
}

/// `GET /api/v1/analytics/proxy-tools`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/proxy-tools",
    extensions(("x-caylex-schema" = json!("ProxyToolEfficiencyResponse"))),
    tag = "Analytics",
    summary = "Proxy tool counts",
    params(crate::param_docs::Proxy),
    responses((status = 200, description = "Proxy tool counts", body = Envelope<ProxyTools>))
)]
pub async fn proxy_tools(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<ProxyTools>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1w", Accepts::PN);
    c.finish()?;
    let kinds = tool_calls::kind_counts(&state.db, &base.scope(&caller, CallKinds::Proxy)).await?;
    let count = |k: &str| kinds.iter().find(|r| r.call_kind == k).map(|r| r.calls).unwrap_or(0);
    let data = ProxyTools {
        suggest_tools_count: count("suggest_tools"),
        get_tool_schemas_count: count("get_tool_schemas"),
        invoke_tools_count: count("invoke_tools"),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/proxy-tools/suggest-tools`.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/proxy-tools/suggest-tools",
    extensions(("x-caylex-schema" = json!("ProxyToolSuggestionsResponse"))),
    tag = "Analytics",
    summary = "Tool suggestions",
    params(crate::param_docs::Proxy),
    responses((status = 200, description = "Tool suggestions", body = Envelope<SuggestTools>))
)]
pub async fn suggest_tools(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<SuggestTools>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "1w", Accepts::PN);
    c.finish()?;
    let kinds = tool_calls::kind_counts(&state.db, &base.scope(&caller, CallKinds::Proxy)).await?;
    let row = kinds.iter().find(|r| r.call_kind == "suggest_tools");
    let data = SuggestTools {
        count: row.map(|r| r.calls).unwrap_or(0),
        suggested_tools: row.map(|r| r.suggestions).unwrap_or(0),
        echo: base.echo_all(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/heroes/global/stats`: current vs previous
/// rolling period (month = calendar month back in `tz`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/heroes/global/stats",
    extensions(("x-caylex-schema" = json!("GlobalStatsResponse"))),
    tag = "Analytics",
    summary = "Queries and tool calls, current vs previous rolling period",
    params(crate::param_docs::GlobalStatsParams),
    responses((status = 200, description = "Queries and tool calls, current vs previous rolling period", body = Envelope<GlobalStats>))
)]
pub async fn global_stats(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<GlobalStats>>, ApiError> {
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
    let scope = base.scope(&caller, CallKinds::Tool);
    let mut prev_scope = scope.clone();
    prev_scope.range = base.res.range.previous(period.1, base.res.tz);
    let (cur, prev) = tokio::try_join!(
        tool_calls::totals(&state.db, &scope, Need::CALLS_AND_QUERIES),
        tool_calls::totals(&state.db, &prev_scope, Need::CALLS_AND_QUERIES)
    )?;
    let data = GlobalStats {
        total_queries: cur.queries,
        total_tool_calls: cur.calls,
        previous_total_queries: prev.queries,
        previous_total_tool_calls: prev.calls,
        comparison_period: period.0,
        timestamp: ts(base.now),
        previous_from: ts(prev_scope.range.start),
        filters: base.echo(),
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/health`: ClickHouse reachability (no InfluxDB
/// here: `influxdb_connected` mirrors the analytics store for old clients).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/health",
    tag = "Analytics",
    summary = "Analytics store health",
    security(()),
    responses(
        (status = 200, description = "ClickHouse answers", body = AnalyticsHealth),
        (status = 503, description = "ClickHouse does not answer", body = AnalyticsHealth),
    )
)]
pub async fn analytics_health(State(state): State<AnalyticsState>) -> Response {
    let ok = crate::queries::health::ping(&state.db).await.is_ok();
    let body = AnalyticsHealth {
        status: if ok { "healthy" } else { "unhealthy" },
        database_connected: ok,
        influxdb_connected: ok,
        last_check: ts(super::now()),
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
