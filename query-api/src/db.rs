//! The only path from a handler to ClickHouse: a concurrency limit, a time
//! budget and a latency histogram around every query.
//!
//! A burst of expensive dashboard requests must not pile up unbounded work in
//! ClickHouse (or in the local HTTP front, which may serialise queries), so
//! at most `--clickhouse-concurrency` queries run at once. Waiting for a slot
//! and running the query share one budget of `--query-timeout-ms`; a request
//! over budget gets 503 `{detail}` instead of hanging.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::metrics::Metrics;

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

    /// The raw client (for code that manages its own limits, e.g. readiness).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one query. `name` labels the latency histogram and must come
    /// from a fixed set (a `&'static str` in code).
    pub async fn run<T, F, Fut>(&self, name: &'static str, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let started = Instant::now();
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| ApiError::Unavailable("ClickHouse client is shutting down".into()))?;
            let result = f(self.client.clone()).await;
            Ok::<_, ApiError>(result)
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        self.metrics
            .clickhouse_query_duration_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Err(_) => {
                self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "timeout"]).inc();
                Err(ApiError::Unavailable(format!(
                    "Analytics store is busy: query did not complete within {} ms, try again",
                    self.timeout.as_millis()
                )))
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(Err(e))) => {
                self.metrics.clickhouse_query_errors_total.with_label_values(&[name, "error"]).inc();
                Err(ApiError::ClickHouse(e))
            }
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}
