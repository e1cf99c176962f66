//! Every Prometheus metric of the API, declared once, in one registry.
//!
//! This module only declares; the code that counts holds a clone of the
//! metric it updates, and `ops` serves `/metrics` and times requests.
//!
//! Labels are bounded: `route` is the axum route template (`MatchedPath`,
//! e.g. `/api/v1/projects/{project_id}/analytics`, never the concrete path),
//! unknown paths are labelled `unmatched`; `query` is a fixed name in code;
//! `class`, `reason`, `kind` and `outcome` come from fixed sets.
//! No tenant, key or user id is ever a label.

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric of the API, in its own registry (so several apps can live
/// in one test process).
pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub clickhouse_query_duration_seconds: HistogramVec,
    pub clickhouse_query_errors_total: IntCounterVec,
    /// Requests refused with 429, by endpoint class and reason.
    pub rate_limited_total: IntCounterVec,
    /// The usage counters and checks.
    pub usage: UsageMetrics,
}

/// Metrics of the usage counters and the plan-limit check.
#[derive(Debug, Clone)]
pub struct UsageMetrics {
    pub refresh_duration_seconds: HistogramVec,
    pub refresh_errors_total: IntCounterVec,
    pub checks_total: IntCounterVec,
    pub subjects: IntGauge,
    pub counter_staleness_ms: IntGauge,
    pub reconcile_hours_read_total: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Self {
        let requests_total = counter(
            "agentmeter_api_requests_total",
            "HTTP requests handled, by route template, method and status",
            &["route", "method", "status"],
        );
        let request_duration_seconds =
            histogram("agentmeter_api_request_duration_seconds", "HTTP request latency in seconds", LATENCY_BUCKETS, &["route", "method"]);
        let clickhouse_query_duration_seconds = histogram(
            "agentmeter_api_clickhouse_query_duration_seconds",
            "ClickHouse query latency in seconds including the wait for a concurrency slot",
            LATENCY_BUCKETS,
            &["query"],
        );
        let clickhouse_query_errors_total =
            counter("agentmeter_api_clickhouse_query_errors_total", "ClickHouse queries that failed or timed out", &["query", "kind"]);
        let rate_limited_total = counter(
            "agentmeter_api_rate_limited_total",
            "Requests refused with 429, by endpoint class and reason (rate or concurrency)",
            &["class", "reason"],
        );
        let usage = UsageMetrics {
            refresh_duration_seconds: histogram(
                "agentmeter_usage_refresh_duration_seconds",
                "Time to re-read usage from the rollups, by kind (delta, reconcile)",
                &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                &["kind"],
            ),
            refresh_errors_total: counter("agentmeter_usage_refresh_errors_total", "Usage refreshes that failed, by kind", &["kind"]),
            checks_total: counter(
                "agentmeter_usage_checks_total",
                "Usage checks answered, by outcome (allowed, denied, unlimited)",
                &["outcome"],
            ),
            subjects: IntGauge::new("agentmeter_usage_subjects", "Subjects (tenant, organization, user) with usage held in memory")
                .expect("valid metric"),
            counter_staleness_ms: IntGauge::new(
                "agentmeter_usage_counter_staleness_milliseconds",
                "Age of the usage counters at the last refresh, in milliseconds",
            )
            .expect("valid metric"),
            reconcile_hours_read_total: IntCounter::new(
                "agentmeter_usage_reconcile_hours_read_total",
                "Hours of usage read minute by minute: by the first load, each hour that holds rows; by a reconcile, each hour whose sums in ClickHouse differed from the counters'",
            )
            .expect("valid metric"),
        };
        let registry = Registry::new();
        let all: [Box<dyn Collector>; 11] = [
            Box::new(requests_total.clone()),
            Box::new(request_duration_seconds.clone()),
            Box::new(clickhouse_query_duration_seconds.clone()),
            Box::new(clickhouse_query_errors_total.clone()),
            Box::new(rate_limited_total.clone()),
            Box::new(usage.refresh_duration_seconds.clone()),
            Box::new(usage.refresh_errors_total.clone()),
            Box::new(usage.checks_total.clone()),
            Box::new(usage.subjects.clone()),
            Box::new(usage.counter_staleness_ms.clone()),
            Box::new(usage.reconcile_hours_read_total.clone()),
        ];
        for c in all {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests_total,
            request_duration_seconds,
            clickhouse_query_duration_seconds,
            clickhouse_query_errors_total,
            rate_limited_total,
            usage,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
