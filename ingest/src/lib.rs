//! agentmeter-ingest: moves tool-call and agent-execution events from Kafka
//! into ClickHouse, exactly once. `docs/ingest.md` is the guide; in short:
//!
//! * [`consumer`]: the loop, per-table batches, offsets stored only after
//!   acknowledgement, pause on the memory bound, commit on revoke/shutdown.
//! * [`writer`]: duplicate look-up ([`dedup`]), one deduplicated INSERT per
//!   batch, retry with backoff, split-and-isolate on data errors; returns
//!   the refused rows' positions (it never talks to Kafka).
//! * [`query_texts`]: the text of navigator queries, written apart from
//!   the metering rows with its own retention.
//! * [`dead_letter`]: rejected messages, verbatim, with the reason (the
//!   consumer dead-letters the rows the writer returns as refused).
//! * [`routing`]: every copy of an event is inserted from its home
//!   partition, so two workers never write one event at the same moment.
//! * [`errors`]: the error type and the one classification of failures.
//! * [`metrics`]: Prometheus metrics and the `/metrics` + `/health` server.
//! * [`otlp`]: OpenTelemetry GenAI spans (the OTLP topic) mapped onto the
//!   same rows, through the same parser.
//!
//! [`run`] is the whole worker; tests call it in-process.

pub mod batch;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
pub mod errors;
pub mod metrics;
pub mod otlp;
pub mod query_texts;
pub mod routing;
pub mod row_binary;
pub mod shutdown;
pub mod topics;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use errors::IngestError;
pub use metrics::Metrics;

/// Runs the worker (and its metrics server) until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), IngestError> {
    run_with_metrics(config, Metrics::new(), shutdown).await.map(|_| ())
}

/// [`run`] with a caller-owned metrics registry (tests read it directly).
/// Returns the address the metrics server was bound to.
pub async fn run_with_metrics(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<SocketAddr, IngestError> {
    config.validate()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = metrics::serve(config.metrics_addr, Arc::clone(&metrics), async {
        let _ = server_stopped.await;
    })
    .await?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    let result = consumer::run(config, metrics, shutdown).await;
    let _ = stop_server.send(());
    let _ = server.await;
    result.map(|()| addr)
}
