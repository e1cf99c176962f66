//! Every metric of the worker, declared once, on a registry owned by the
//! worker (not the process-global one) so that tests can run several
//! workers in one process. Labels are bounded: the event kind, the rejection
//! reason, the error class; never a tenant or an event id.
//!
//! [`serve`] exposes `/metrics` (Prometheus text) and `/health`.

use std::net::SocketAddr;
use std::sync::Arc;

use agentmeter_schema::RejectionKind;
use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::errors::{ErrorClass, IngestError};

/// The two event kinds, as metric label values.
pub const KINDS: [&str; 2] = ["tool_call", "agent_execution"];

/// Dead-letter reason when ClickHouse itself refused a row.
pub const REASON_CLICKHOUSE_REJECTED: &str = "clickhouse_rejected";

pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_inserted: IntCounterVec,
    pub events_deduplicated: IntCounterVec,
    pub events_dead_lettered: IntCounterVec,
    pub events_forwarded: IntCounterVec,
    pub batch_rows: HistogramVec,
    pub flush_duration: HistogramVec,
    pub insert_retries: IntCounter,
    pub clickhouse_errors: IntCounterVec,
    pub end_to_end_delay: HistogramVec,
    pub inflight_bytes: IntGauge,
    pub last_flush_timestamp: IntGauge,
    pub consumption_paused: IntGauge,
    pub assigned_partitions: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histogram_vec = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["kind"]).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let insert_retries =
            IntCounter::new("agentmeter_ingest_insert_retries_total", "ClickHouse requests retried after a retryable error")
                .expect("valid metric");
        registry.register(Box::new(insert_retries.clone())).expect("registered once");
        let m = Self {
            events_consumed: counter_vec("agentmeter_ingest_events_consumed_total", "Kafka messages read, valid or not", &["kind"]),
            events_inserted: counter_vec(
                "agentmeter_ingest_events_inserted_total",
                "Events written to ClickHouse and acknowledged",
                &["kind"],
            ),
            events_deduplicated: counter_vec(
                "agentmeter_ingest_events_deduplicated_total",
                "Events skipped because their event_id was already stored or repeated in the batch",
                &["kind"],
            ),
            events_forwarded: counter_vec(
                "agentmeter_ingest_events_forwarded_total",
                "Valid events read off their home partition and copied to it (acknowledged by Kafka)",
                &["kind"],
            ),
            events_dead_lettered: counter_vec(
                "agentmeter_ingest_events_dead_lettered_total",
                "Messages sent to the dead-letter topic, by rejection reason",
                &["kind", "reason"],
            ),
            batch_rows: histogram_vec(
                "agentmeter_ingest_batch_rows",
                "Rows per INSERT",
                prometheus::exponential_buckets(1.0, 4.0, 10).expect("valid buckets"),
            ),
            flush_duration: histogram_vec(
                "agentmeter_ingest_flush_duration_seconds",
                "Time from the start of a flush (look-up, insert, retries) to its acknowledgement",
                prometheus::exponential_buckets(0.005, 2.0, 14).expect("valid buckets"),
            ),
            insert_retries,
            clickhouse_errors: counter_vec(
                "agentmeter_ingest_clickhouse_errors_total",
                "Failed ClickHouse requests, by error class",
                &["class"],
            ),
            end_to_end_delay: histogram_vec(
                "agentmeter_ingest_end_to_end_delay_seconds",
                "Time from an event's occurred_at to its insert acknowledgement",
                vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0],
            ),
            inflight_bytes: gauge("agentmeter_ingest_inflight_bytes", "Bytes held in batches, buffered or being written (rows as their memory, dead letters and forwarded copies as their messages)"),
            last_flush_timestamp: gauge("agentmeter_ingest_last_flush_timestamp_seconds", "Unix time of the last acknowledged flush"),
            consumption_paused: gauge(
                "agentmeter_ingest_consumption_paused",
                "1 while the partitions are paused because the in-flight byte bound held reading back for 2 s",
            ),
            assigned_partitions: gauge(
                "agentmeter_ingest_assigned_partitions",
                "Event-topic partitions currently assigned to this worker (after the last rebalance)",
            ),
            registry,
        };
        // Pre-register every label value so dashboards see zeros, not gaps.
        for kind in KINDS {
            m.events_consumed.with_label_values(&[kind]);
            m.events_inserted.with_label_values(&[kind]);
            m.events_deduplicated.with_label_values(&[kind]);
            m.events_forwarded.with_label_values(&[kind]);
            for reason in RejectionKind::ALL.iter().map(|k| k.as_str()).chain([REASON_CLICKHOUSE_REJECTED]) {
                m.events_dead_lettered.with_label_values(&[kind, reason]);
            }
        }
        for class in ErrorClass::ALL {
            m.clickhouse_errors.with_label_values(&[class.as_str()]);
        }
        Arc::new(m)
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    pub fn delay(&self, kind: &str) -> Histogram {
        self.end_to_end_delay.with_label_values(&[kind])
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

async fn health() -> &'static str {
    "ok\n"
}

/// Binds `addr` and serves `/metrics` and `/health` until `shutdown`
/// resolves. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), IngestError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(metrics_handler)).route("/health", get(health)).with_state(metrics);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok((bound, handle))
}
