//! Prometheus metrics of the API, declared once.
//!
//! Labels are bounded: `route` is the axum route template (`MatchedPath`,
//! e.g. `/api/v1/projects/{project_id}/analytics`, never the concrete path),
//! unknown paths are labelled `unmatched`; `query` is a fixed name in code.
//! No tenant, key or user id is ever a label.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::state::AppState;

/// Every metric of the API, in its own registry (so several apps can live
/// in one test process).
pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub clickhouse_query_duration_seconds: HistogramVec,
    pub clickhouse_query_errors_total: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new("agentmeter_api_requests_total", "HTTP requests handled, by route template, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new("agentmeter_api_request_duration_seconds", "HTTP request latency in seconds")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let clickhouse_query_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "agentmeter_api_clickhouse_query_duration_seconds",
                "ClickHouse query latency in seconds including the wait for a concurrency slot",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["query"],
        )
        .expect("valid metric");
        let clickhouse_query_errors_total = IntCounterVec::new(
            Opts::new("agentmeter_api_clickhouse_query_errors_total", "ClickHouse queries that failed or timed out"),
            &["query", "kind"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration_seconds.clone()),
            Box::new(clickhouse_query_duration_seconds.clone()),
            Box::new(clickhouse_query_errors_total.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self { registry, requests_total, request_duration_seconds, clickhouse_query_duration_seconds, clickhouse_query_errors_total }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware counting and timing every request by its route template.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.request_duration_seconds.with_label_values(&[&route, &method]).observe(started.elapsed().as_secs_f64());
    m.requests_total.with_label_values(&[&route, &method, resp.status().as_str()]).inc();
    resp
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let families = state.metrics.registry.gather();
    match TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => crate::error::ApiError::Internal(e.to_string()).into_response(),
    }
}
