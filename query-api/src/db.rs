//! The only path from a handler to ClickHouse: a concurrency limit, a time
//! budget and a latency histogram around every query.
//!
//! A burst of expensive dashboard requests must not pile up unbounded work in
//! ClickHouse, so at most `--clickhouse-concurrency` queries run at once.
//! Waiting for a slot and running the query share one budget of
//! `--query-timeout-ms`; a request over budget gets 503 `{detail}` instead
//! of hanging.
//!
//! Every query also carries ClickHouse's own resource limits as settings
//! ([`QueryLimits`]: `max_execution_time`, `max_memory_usage`,
//! `max_rows_to_read`, `max_result_rows`), so the server stops a query that
//! would scan or hold too much even when the client has stopped waiting.
//! A query stopped by a row limit is the request's fault
//! ([`QueryError::TooExpensive`]); by time or memory, the store is busy
//! ([`QueryError::Busy`]).
//!
//! Failures are typed ([`QueryError`]), not HTTP: `error.rs` turns them into
//! responses (422, 503, 500), once, at the edge.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// ClickHouse resource limits sent as settings with every query (0 = unset;
/// filled by `config` from the `--clickhouse-max-*` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryLimits {
    pub max_execution_time_s: u64,
    pub max_memory_bytes: u64,
    pub max_rows_to_read: u64,
    pub max_result_rows: u64,
}

impl QueryLimits {
    /// The settings as `(name, value)` pairs, unset ones left out.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (name, v) in [
            ("max_execution_time", self.max_execution_time_s),
            ("max_memory_usage", self.max_memory_bytes),
            ("max_rows_to_read", self.max_rows_to_read),
            ("max_result_rows", self.max_result_rows),
        ] {
            if v > 0 {
                out.push((name, v.to_string()));
            }
        }
        if self.max_rows_to_read > 0 {
            out.push(("read_overflow_mode", "throw".into()));
        }
        if self.max_result_rows > 0 {
            out.push(("result_overflow_mode", "throw".into()));
        }
        if self.max_execution_time_s > 0 {
            out.push(("timeout_overflow_mode", "throw".into()));
        }
        out
    }
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No slot or no answer within the time budget, or ClickHouse stopped the
    /// query by its time or memory limit; the message says which.
    #[error("busy: {0}")]
    Busy(String),
    /// ClickHouse stopped the query by a row limit: the request asks too much.
    #[error("the query would read or return too many rows")]
    TooExpensive,
    /// The thing asked about does not exist for this tenant.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request asks for a combination the queries do not support.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Any other ClickHouse failure.
    #[error("clickhouse: {0}")]
    Failed(#[from] clickhouse::error::Error),
}

/// What a ClickHouse error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitHit {
    /// Too many rows read or returned: 422.
    Rows,
    /// Too slow or too much memory: 503.
    Busy,
}

/// Recognises ClickHouse's resource-limit errors by their code
/// (TOO_MANY_ROWS 158, TOO_MANY_ROWS_OR_BYTES 396, TIMEOUT_EXCEEDED 159,
/// MEMORY_LIMIT_EXCEEDED 241).
fn limit_hit(e: &clickhouse::error::Error) -> Option<LimitHit> {
    let text = e.to_string();
    if text.contains("Code: 158.") || text.contains("Code: 396.") {
        Some(LimitHit::Rows)
    } else if text.contains("Code: 159.") || text.contains("Code: 241.") {
        Some(LimitHit::Busy)
    } else {
        None
    }
}

/// A ClickHouse client behind a concurrency limit and a per-query timeout.
#[derive(Clone)]
pub struct Db {
    client: Client,
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Db {
    pub fn new(client: Client, concurrency: usize, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self { client, permits: Arc::new(Semaphore::new(concurrency.max(1))), timeout, metrics }
    }

    /// Sends `limits` as settings with every query of this handle.
    pub fn with_limits(mut self, limits: QueryLimits) -> Self {
        for (name, value) in limits.settings() {
            self.client = self.client.with_option(name, value);
        }
        self
    }

    /// The raw client (for code that manages its own limits, e.g. readiness).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one query. `name` labels the latency histogram and must come
    /// from a fixed set (a `&'static str` in code).
    pub async fn run<T, F, Fut>(&self, name: &'static str, f: F) -> Result<T, QueryError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let started = Instant::now();
        let work = async {
            let _permit = self.permits.acquire().await.map_err(|_| QueryError::Busy("ClickHouse client is shutting down".into()))?;
            let result = f(self.client.clone()).await;
            Ok::<_, QueryError>(result)
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        self.metrics.clickhouse_query_duration_seconds.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
        match outcome {
            Err(_) => {
                self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "timeout"]).inc();
                Err(QueryError::Busy(format!(
                    "Analytics store is busy: query did not complete within {} ms, try again",
                    self.timeout.as_millis()
                )))
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(Err(e))) => match limit_hit(&e) {
                Some(LimitHit::Rows) => {
                    self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "limit"]).inc();
                    tracing::warn!(query = name, error = %e, "query stopped by a ClickHouse row limit");
                    Err(QueryError::TooExpensive)
                }
                Some(LimitHit::Busy) => {
                    self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "limit"]).inc();
                    tracing::warn!(query = name, error = %e, "query stopped by a ClickHouse time or memory limit");
                    Err(QueryError::Busy(
                        "Analytics store is busy: query exceeded its time or memory budget, try again or narrow the request".into(),
                    ))
                }
                None => {
                    self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "error"]).inc();
                    Err(QueryError::Failed(e))
                }
            },
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}
