//! The HTTP server loop with bounds on what a client may send.
//!
//! `axum::serve` configures no header read timeout (hyper needs a timer
//! for it) and accepts request heads of about 400 KiB, so a client trickling
//! a header one byte a minute holds a connection and a task forever. This
//! loop serves HTTP/1.1 with hyper directly:
//!
//! * the request head must arrive within `--header-read-timeout-ms`, else
//!   the connection is closed (slowloris);
//! * a head larger than `--max-header-bytes` gets 431 and the connection
//!   is closed;
//! * bodies larger than `--max-body-bytes` get 413 (the body limit is an
//!   axum layer in [`crate::app`], applied by every body extractor);
//! * on shutdown, listening stops and open connections finish their
//!   current request, as with `axum::serve`'s graceful shutdown.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Bounds of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer; at least 8192).
    pub max_header_bytes: usize,
}

/// How long shutdown waits for open connections before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish within {} s of shutdown", DRAIN_TIMEOUT.as_secs());
    }
    Ok(())
}
