//! Per-key request rate limits and concurrency caps, so that one API key
//! (a runaway dashboard, a script in a loop, a leaked key) cannot take the
//! API or ClickHouse away from every other caller.
//!
//! Each authenticated key gets, per endpoint class, a token bucket (a
//! sustained rate with a burst) and a cap on requests in flight. A request
//! over the rate gets 429 `{detail}` with `Retry-After` (whole seconds); a
//! request over the in-flight cap waits for a slot in a bounded queue
//! ([`crate::slot_queue`]) and gets the 429 only when the queue is full or
//! the wait bound has passed. Two classes with separate budgets:
//!
//! * `analytics`: the analytics endpoints, the usage read endpoints and the
//!   limits admin API. These reach ClickHouse; the per-key concurrency cap
//!   is below the global `--clickhouse-concurrency`, so one key can never
//!   hold every ClickHouse slot.
//! * `check`: the plan-limit check (`POST /v1/usage/check`, the
//!   organization check, releasing a reservation). Served from memory in
//!   about a millisecond and called before every agent call, so the budget
//!   is generous (thousands per second per key).
//!
//! With `--valkey-url` the buckets and in-flight counts live in Valkey and
//! are shared by every replica ([`crate::shared_rate_limit`]); while Valkey
//! is unreachable this in-process limiter takes over.
//!
//! Operational endpoints (`/health`, `/metrics`, ...), the web UI and
//! unknown paths are not limited here.
//!
//! Buckets are keyed by the SHA-256 of the presented key and created only
//! after the key authenticated, so the map holds at most one entry per key
//! of the keys file (plus revoked keys until the next sweep): an attacker
//! sending random keys creates no state. Metrics carry the class and the
//! reason, never a key, tenant or hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::KeyStore;
use crate::metrics::Metrics;
use crate::shared_rate_limit::{SharedPermit, SharedRateLimits, Verdict};
use crate::slot_queue::SlotQueue;

/// Which budget a route draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Analytics,
    Check,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Self::Analytics => "analytics",
            Self::Check => "check",
        }
    }

    /// The class of a route template, `None` for unlimited routes.
    pub fn of_route(route: &str) -> Option<Self> {
        match route {
            "/v1/usage/check"
            | "/v1/usage/consume"
            | "/v1/organizations/{organization_id}/usage/check"
            | "/v1/usage/reservations/{reservation_id}"
            | "/v1/usage/reservations/{reservation_id}/commit" => Some(Self::Check),
            r if r.starts_with("/api/v1/") || r.starts_with("/v1/") || r.starts_with("/api/organizations/") => Some(Self::Analytics),
            _ => None,
        }
    }
}

/// Rate, burst and concurrency of one class.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Sustained requests per second (0 = unlimited).
    pub rate_per_s: f64,
    /// Requests at once above the sustained rate (at least 1).
    pub burst: f64,
    /// Requests in flight (0 = unlimited).
    pub concurrency: u32,
    /// Requests that may wait for an in-flight slot (0 = refuse at once).
    pub queue: u32,
    /// Longest a request waits for an in-flight slot.
    pub max_wait: Duration,
}

/// The budgets of both classes (from `config`).
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub analytics: Budget,
    pub check: Budget,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Out of tokens; retry after this long.
    Rate(Duration),
    /// Too many requests of this key in flight.
    Concurrency,
}

/// The token buckets and in-flight counts of every key.
pub struct RateLimiter {
    analytics: Budget,
    check: Budget,
    buckets: Mutex<HashMap<([u8; 32], Class), Bucket>>,
    refused_total: IntCounterVec,
    /// Requests waiting for an in-flight slot.
    pub queue: Arc<SlotQueue>,
}

/// Holds one in-flight slot; released on drop.
pub struct Permit {
    limiter: Arc<RateLimiter>,
    key: ([u8; 32], Class),
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.limiter.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(&self.key) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        drop(map);
        self.limiter.queue.released();
    }
}

/// Buckets idle (full and nothing in flight) are dropped when the map grows
/// beyond this many entries.
const SWEEP_ABOVE: usize = 1024;

impl RateLimiter {
    pub fn new(budgets: Budgets, metrics: &Metrics) -> Self {
        Self {
            analytics: budgets.analytics,
            check: budgets.check,
            buckets: Mutex::new(HashMap::new()),
            refused_total: metrics.rate_limited_total.clone(),
            queue: Arc::new(SlotQueue::default()),
        }
    }

    pub fn budget(&self, class: Class) -> Budget {
        match class {
            Class::Analytics => self.analytics,
            Class::Check => self.check,
        }
    }

    /// Counts a refusal (a rate refusal of the shared limiter, or a
    /// concurrency refusal once the request stopped waiting).
    pub fn count_refusal(&self, class: Class, refusal: Refusal) {
        let reason = match refusal {
            Refusal::Rate(_) => "rate",
            Refusal::Concurrency => "concurrency",
        };
        self.refused_total.with_label_values(&[class.label(), reason]).inc();
    }

    /// Takes a token and an in-flight slot for `key_hash` in `class`.
    /// Refusals are counted by the caller ([`Self::count_refusal`]): a
    /// concurrency refusal may still end in a slot after waiting.
    pub fn acquire(self: &Arc<Self>, key_hash: [u8; 32], class: Class, now: Instant) -> Result<Permit, Refusal> {
        let budget = self.budget(class);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_ABOVE {
            map.retain(|(_, c), b| {
                let budget = self.budget(*c);
                b.in_flight > 0 || b.tokens + now.duration_since(b.refilled).as_secs_f64() * budget.rate_per_s < budget.burst
            });
        }
        let b = map.entry((key_hash, class)).or_insert(Bucket { tokens: budget.burst, refilled: now, in_flight: 0 });
        if budget.rate_per_s > 0.0 {
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens = (b.tokens + elapsed * budget.rate_per_s).min(budget.burst);
            b.refilled = now;
        }
        if budget.concurrency > 0 && b.in_flight >= budget.concurrency {
            return Err(Refusal::Concurrency);
        }
        if budget.rate_per_s > 0.0 {
            if b.tokens < 1.0 {
                return Err(Refusal::Rate(Duration::from_secs_f64((1.0 - b.tokens) / budget.rate_per_s)));
            }
            b.tokens -= 1.0;
        }
        b.in_flight += 1;
        Ok(Permit { limiter: self.clone(), key: (key_hash, class) })
    }

    /// Number of buckets held (for tests of boundedness).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 429 response of a refusal.
pub fn too_many_requests(refusal: Refusal) -> Response {
    let (retry_after, detail) = match refusal {
        Refusal::Rate(wait) => (
            wait.as_secs_f64().ceil().max(1.0) as u64,
            "Too many requests for this API key; slow down and retry after the Retry-After delay",
        ),
        Refusal::Concurrency => (1, "Too many concurrent requests for this API key; wait for earlier requests to finish"),
    };
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(crate::error::Detail::new(detail))).into_response();
    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// A slot held while the request runs: of this process, or shared.
enum Held {
    Local(#[allow(dead_code)] Permit),
    Shared(Option<SharedPermit>),
}

/// One try for a token and a slot: through Valkey when configured and
/// answering, else (and if it fails now) this process's own buckets.
async fn try_acquire(
    limiter: &Arc<RateLimiter>,
    shared: &SharedRateLimits,
    tenant: Uuid,
    hash: [u8; 32],
    class: Class,
) -> Result<Held, Refusal> {
    let b = limiter.budget(class);
    // A class without a rate or an in-flight cap (both 0) has nothing to
    // share: no round trip to Valkey for it.
    let limited = b.rate_per_s > 0.0 || b.concurrency > 0;
    if let Some(shared) = shared.0.as_ref().filter(|s| limited && s.usable()) {
        match shared.acquire(tenant, &hash, class.label(), b.rate_per_s, b.burst, b.concurrency).await {
            Ok(Verdict::Admitted(permit)) => return Ok(Held::Shared(permit)),
            Ok(Verdict::RateLimited(wait)) => return Err(Refusal::Rate(wait)),
            Ok(Verdict::TooManyInFlight) => return Err(Refusal::Concurrency),
            Err(_) => {}
        }
    }
    limiter.acquire(hash, class, Instant::now()).map(Held::Local)
}

/// Middleware: authenticates the key (once: the caller is left in the
/// request's extensions for the handler's extractor) and applies the budget
/// of the route's class; over the in-flight cap the request waits in the
/// key's bounded queue. Requests without a valid key pass through and get
/// the handler's 401.
pub async fn limit(
    State(keys): State<Arc<KeyStore>>,
    State(limiter): State<Arc<RateLimiter>>,
    State(shared): State<SharedRateLimits>,
    req: Request,
    next: Next,
) -> Response {
    let Some(class) = req.extensions().get::<MatchedPath>().and_then(|p| Class::of_route(p.as_str())) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let Some(key) = keys.presented_key(&parts).map(str::to_owned) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Some(caller) = keys.authenticate(&key) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let tenant = caller.tenant_id;
    parts.extensions.insert(caller);
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let budget = limiter.budget(class);
    let deadline = tokio::time::Instant::now() + budget.max_wait;
    let mut ticket = None;
    let held = loop {
        match try_acquire(&limiter, &shared, tenant, hash, class).await {
            Ok(held) => break held,
            Err(Refusal::Concurrency) => {
                if ticket.is_none() {
                    ticket = limiter.queue.enter(hash, class.label(), budget.queue);
                }
                let waited = match ticket.as_mut() {
                    Some(t) => t.pause(deadline).await,
                    None => false,
                };
                if !waited {
                    limiter.count_refusal(class, Refusal::Concurrency);
                    return too_many_requests(Refusal::Concurrency);
                }
            }
            Err(refusal) => {
                limiter.count_refusal(class, refusal);
                return too_many_requests(refusal);
            }
        }
    };
    drop(ticket);
    let resp = next.run(Request::from_parts(parts, body)).await;
    match held {
        Held::Shared(Some(permit)) => {
            let queue = limiter.queue.clone();
            permit.release_then(move || queue.released());
        }
        Held::Shared(None) | Held::Local(_) => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of the command line, with `analytics` replaced.
    fn limiter(analytics: Budget) -> Arc<RateLimiter> {
        let check = Budget { rate_per_s: 10_000.0, burst: 20_000.0, concurrency: 1024, queue: 0, max_wait: Duration::ZERO };
        Arc::new(RateLimiter::new(Budgets { analytics, check }, &Metrics::new()))
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let l = limiter(Budget { rate_per_s: 2.0, burst: 3.0, concurrency: 0, queue: 0, max_wait: Duration::ZERO });
        let t0 = Instant::now();
        let k = [1u8; 32];
        for _ in 0..3 {
            drop(l.acquire(k, Class::Analytics, t0).unwrap());
        }
        match l.acquire(k, Class::Analytics, t0) {
            Err(Refusal::Rate(wait)) => assert_eq!(wait, Duration::from_millis(500)),
            other => panic!("expected a rate refusal, got {:?}", other.map(|_| ())),
        }
        // Another key and another class are untouched.
        assert!(l.acquire([2u8; 32], Class::Analytics, t0).is_ok());
        assert!(l.acquire(k, Class::Check, t0).is_ok());
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.acquire(k, Class::Analytics, t1).is_ok());
        assert!(l.acquire(k, Class::Analytics, t1).is_err());
    }

    #[test]
    fn concurrency_cap_releases_on_drop() {
        let l = limiter(Budget { rate_per_s: 50.0, burst: 200.0, concurrency: 2, queue: 0, max_wait: Duration::ZERO });
        let t = Instant::now();
        let k = [7u8; 32];
        let a = l.acquire(k, Class::Analytics, t).unwrap();
        let _b = l.acquire(k, Class::Analytics, t).unwrap();
        assert_eq!(l.acquire(k, Class::Analytics, t).err(), Some(Refusal::Concurrency));
        drop(a);
        assert!(l.acquire(k, Class::Analytics, t).is_ok());
    }

    #[test]
    fn idle_buckets_are_swept() {
        let l = limiter(Budget { rate_per_s: 1000.0, burst: 200.0, concurrency: 8, queue: 0, max_wait: Duration::ZERO });
        let t = Instant::now();
        for i in 0..3000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            drop(l.acquire(k, Class::Analytics, t).unwrap());
        }
        let later = t + Duration::from_secs(10);
        drop(l.acquire([9u8; 32], Class::Analytics, later).unwrap());
        assert!(l.len() <= SWEEP_ABOVE + 1, "{} buckets", l.len());
    }

    #[test]
    fn routes_map_to_classes() {
        assert_eq!(Class::of_route("/v1/usage/check"), Some(Class::Check));
        assert_eq!(Class::of_route("/v1/organizations/{organization_id}/usage/check"), Some(Class::Check));
        assert_eq!(Class::of_route("/api/v1/analytics/tools"), Some(Class::Analytics));
        assert_eq!(Class::of_route("/v1/limits"), Some(Class::Analytics));
        assert_eq!(Class::of_route("/health"), None);
        assert_eq!(Class::of_route("/metrics"), None);
    }
}
