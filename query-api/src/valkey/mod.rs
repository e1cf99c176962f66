//! The connection to Valkey, the shared store that lets several API replicas
//! behave as one: reservations ([`crate::usage::shared_holds`]) and per-key
//! rate limits ([`crate::shared_rate_limit`]) live there when
//! `--valkey-url` is set. Without it every replica keeps them in process.
//!
//! Client: the `redis` crate (the most used and best maintained Rust client
//! for the Redis protocol, which Valkey speaks) with its Tokio
//! `ConnectionManager`: one multiplexed connection per process that
//! reconnects by itself, so a Valkey restart or a cut network heals without
//! restarting the API. Everything is done by server-side Lua scripts (one
//! round trip each, atomic on the server).
//!
//! Every call has a deadline ([`CALL_TIMEOUT`]); a failed call marks Valkey
//! unreachable, and the epoch watch (`epoch`) marks it reachable again when
//! a probe succeeds. Callers decide what unreachable means for them:
//! reserving checks fail closed (503), rate limits fall back to the
//! in-process limiter. This module never logs the URL's password.

pub mod epoch;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, ScriptInvocation};

/// Longest wait for one Valkey call before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(750);

/// Where Valkey is and how this deployment's keys are named.
#[derive(Debug, Clone, Default)]
pub struct ValkeySettings {
    /// `redis://host:port[/db]`; `None` keeps holds and rate limits in process.
    pub url: Option<String>,
    /// Prefix of every key (several deployments, or tests, share one Valkey).
    pub key_prefix: String,
    /// Fence after a detected loss of the store: one hold lifetime (see [`epoch`]).
    pub loss_fence_ms: u64,
    /// Fence when the first replica creates the epoch (see [`epoch`]).
    pub young_fence_ms: u64,
}

/// Why a Valkey call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ValkeyError {
    #[error("Valkey did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Valkey call failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The shared store: a self-healing connection and its health.
pub struct Valkey {
    conn: ConnectionManager,
    /// For the dedicated subscriber connection ([`Valkey::subscribe`]).
    client: redis::Client,
    /// Which life of the store this replica knows; the fence after a loss.
    pub epoch: epoch::Epoch,
    prefix: String,
    /// `host:port` of the URL (no credentials), for logs and `/ready`.
    pub endpoint: String,
    /// [`UNKNOWN`] until the first call, then [`UP`] or [`DOWN`] by the last call.
    health: AtomicU8,
    failures: AtomicU64,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl std::fmt::Debug for Valkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Valkey").field("endpoint", &self.endpoint).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Valkey {
    /// A lazy connection (nothing is sent until the first call), or `None`
    /// without a URL. Must be called inside a Tokio runtime. Fails only on a
    /// malformed URL.
    pub fn connect(settings: &ValkeySettings) -> anyhow::Result<Option<Arc<Valkey>>> {
        let Some(url) = settings.url.as_deref().filter(|u| !u.trim().is_empty()) else { return Ok(None) };
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid --valkey-url: {e}"))?;
        let endpoint = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| anyhow::anyhow!("Valkey client: {e}"))?;
        let prefix = if settings.key_prefix.is_empty() { "agentmeter".to_owned() } else { settings.key_prefix.clone() };
        let ms_to_us = |ms: u64| i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let epoch = epoch::Epoch::new(ms_to_us(settings.loss_fence_ms.max(1)), ms_to_us(settings.young_fence_ms.max(1)));
        Ok(Some(Arc::new(Valkey { conn, client, epoch, prefix, endpoint, health: AtomicU8::new(UNKNOWN), failures: AtomicU64::new(0) })))
    }

    /// The full name of a key of this deployment.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Runs a script invocation with the call deadline and records the outcome.
    pub async fn eval<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, ValkeyError> {
        let mut conn = self.conn.clone();
        self.recorded(inv.invoke_async::<T>(&mut conn)).await
    }

    /// Awaits one call with the deadline and records the outcome (an error
    /// answer of the server says it is reachable, so it changes nothing).
    async fn recorded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ValkeyError> {
        let result = within_deadline(call).await;
        match &result {
            Ok(_) => self.mark(true),
            Err(ValkeyError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {}
            Err(_) => self.mark(false),
        }
        result
    }

    fn mark(&self, up: bool) {
        let was = self.health.swap(if up { UP } else { DOWN }, Ordering::AcqRel);
        if up {
            if was != UP {
                tracing::info!(endpoint = %self.endpoint, "Valkey reachable");
            }
            self.failures.store(0, Ordering::Relaxed);
        } else {
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if was != DOWN || n.is_multiple_of(100) {
                tracing::warn!(endpoint = %self.endpoint, failures = n, "Valkey unreachable: reserving checks answer 503, rate limits are per process until it is back");
            }
        }
    }

    /// Whether the last call succeeded.
    pub fn is_reachable(&self) -> bool {
        self.health.load(Ordering::Acquire) == UP
    }

    /// Whether the last call failed (before the first call: not known to
    /// be down, so callers try it).
    pub fn is_down(&self) -> bool {
        self.health.load(Ordering::Acquire) == DOWN
    }
}

impl Valkey {
    /// Runs one plain command with the call deadline and records the outcome.
    pub async fn command<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ValkeyError> {
        let mut conn = self.conn.clone();
        self.recorded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Removes `member` from the sorted set `key` (a lease ending).
    pub async fn zrem(&self, key: &str, member: &str) -> Result<(), ValkeyError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("ZREM").arg(key).arg(member).clone();
        within_deadline(cmd.query_async::<i64>(&mut conn)).await.map(|_| ())
    }
}

/// Awaits one call for at most [`CALL_TIMEOUT`].
async fn within_deadline<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ValkeyError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Err(ValkeyError::Timeout(CALL_TIMEOUT)),
        Ok(r) => r.map_err(ValkeyError::from),
    }
}

/// The store as handlers see it (`None`: not configured), lent through
/// axum's `FromRef`.
#[derive(Debug, Clone, Default)]
pub struct SharedStore(pub Option<Arc<Valkey>>);

/// What `/ready` says about the shared state: where holds and rate limits
/// live, and (with Valkey) whether it answers and whether reservations are
/// fenced after a loss. Valkey being away does not make the API unready:
/// analytics and plain checks keep working, reserving checks answer 503.
pub fn readiness(store: &SharedStore) -> SharedStateView {
    match store.0.as_deref() {
        None => SharedStateView {
            holds: "process-local",
            rate_limits: "process-local",
            valkey: ValkeyView { state: "not_configured", endpoint: None, fence_left_ms: None },
            detail: Some("Reservations and per-key rate limits are kept in this process (no --valkey-url): run a single replica"),
        },
        Some(v) => {
            let fence_left_ms = v.epoch.fence_left_us() / 1000;
            let state = if v.is_down() {
                "unreachable"
            } else if !v.is_reachable() {
                "connecting"
            } else if fence_left_ms > 0 {
                "fenced"
            } else {
                "ok"
            };
            SharedStateView {
                holds: "valkey",
                rate_limits: "valkey",
                valkey: ValkeyView { state, endpoint: Some(v.endpoint.clone()), fence_left_ms: Some(fence_left_ms) },
                detail: None,
            }
        }
    }
}

impl Valkey {
    /// Publishes `message` on this deployment's channel `name` (best effort:
    /// subscribers also poll what the message is about).
    pub async fn publish(&self, name: &str, message: &str) -> Result<(), ValkeyError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PUBLISH").arg(self.key(name)).arg(message).clone();
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<i64>(&mut conn)).await {
            Err(_) => Err(ValkeyError::Timeout(CALL_TIMEOUT)),
            Ok(r) => r.map(|_| ()).map_err(ValkeyError::from),
        }
    }

    /// Wakes `notify` for every message on this deployment's channel `name`
    /// (and once after each (re)subscription, for what was missed), on a
    /// connection of its own that is re-established after any failure,
    /// until `alive` says stop.
    pub async fn subscribe(&self, name: &str, notify: &tokio::sync::Notify, alive: impl Fn() -> bool) {
        use futures::StreamExt;
        let channel = self.key(name);
        while alive() {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            if let Ok(Ok(pubsub)) = tokio::time::timeout(CALL_TIMEOUT, subscribed).await {
                notify.notify_one();
                let mut messages = pubsub.into_on_message();
                loop {
                    // Re-check `alive` now and then on a quiet channel.
                    match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                        Ok(Some(_)) => notify.notify_one(),
                        Ok(None) => break,
                        Err(_) if alive() => {}
                        Err(_) => return,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The `shared_state` of `/ready`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SharedStateView {
    /// Where reservations live: `process-local` or `valkey`.
    #[schema(pattern = "^(process-local|valkey)$")]
    pub holds: &'static str,
    /// Where per-key rate limits live: `process-local` or `valkey`.
    #[schema(pattern = "^(process-local|valkey)$")]
    pub rate_limits: &'static str,
    pub valkey: ValkeyView,
    /// Why process-local state matters (without Valkey).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

/// Valkey as `/ready` reports it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ValkeyView {
    /// `not_configured`, `connecting`, `ok`, `unreachable` or `fenced`
    /// (reservations refused until a lost Valkey's holds have expired).
    #[schema(pattern = "^(not_configured|connecting|ok|unreachable|fenced)$")]
    pub state: &'static str,
    /// The Valkey endpoint (without credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Milliseconds until the fence lifts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_left_ms: Option<i64>,
}
