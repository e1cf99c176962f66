//! Per-key rate limits and concurrency caps shared by every API replica,
//! in Valkey (when `--valkey-url` is set), so that N replicas give a key
//! one budget, not N. The budgets and classes are those of the in-process
//! limiter (`rate_limit`, which calls this module); this module only moves
//! the state.
//!
//! One request is one Lua script call (`shared_rate_limit.lua`): GCRA for
//! the rate (the same budget as the in-process token bucket: `burst`
//! requests at once, refilled at `rate` per second) and a sorted set of
//! leased in-flight slots. A slot is released when the request ends; a
//! lease also expires by itself after the longest a request can run (the
//! query timeout plus slack), so a replica that crashes mid-request cannot
//! leak slots.
//!
//! Availability over exactness: when Valkey is unreachable the middleware
//! falls back to the in-process limiter (each replica then enforces the
//! budget alone, as without Valkey) and comes back to the shared one by
//! itself once Valkey answers again.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use crate::valkey::{Valkey, ValkeyError};

/// The shared limiter as the middleware sees it (`None`: no Valkey), lent
/// through axum's `FromRef`.
#[derive(Debug, Clone, Default)]
pub struct SharedRateLimits(pub Option<Arc<SharedRateLimiter>>);

/// What the shared budget says about one request.
pub enum Verdict {
    /// Admitted; the in-flight slot (if the class has a cap) ends on drop.
    Admitted(Option<SharedPermit>),
    /// Out of rate budget; retry after this long.
    RateLimited(Duration),
    /// The key's in-flight cap is reached.
    TooManyInFlight,
}

/// The shared limiter of this replica.
pub struct SharedRateLimiter {
    valkey: Arc<Valkey>,
    script: Script,
    lease_us: i64,
}

impl std::fmt::Debug for SharedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimiter").field("lease_us", &self.lease_us).finish_non_exhaustive()
    }
}

/// One leased in-flight slot; released (in the background) on drop.
pub struct SharedPermit {
    valkey: Arc<Valkey>,
    inflight_key: String,
    lease_id: String,
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        let (valkey, key, id) = (self.valkey.clone(), std::mem::take(&mut self.inflight_key), std::mem::take(&mut self.lease_id));
        if key.is_empty() {
            return;
        }
        // If this fails the lease expires by itself.
        tokio::spawn(async move {
            let _ = valkey.zrem(&key, &id).await;
        });
    }
}

impl SharedPermit {
    /// Releases the slot (in the background), then calls `done` (the
    /// middleware wakes this replica's requests waiting for a slot).
    pub fn release_then(mut self, done: impl FnOnce() + Send + 'static) {
        let (valkey, key, id) = (self.valkey.clone(), std::mem::take(&mut self.inflight_key), std::mem::take(&mut self.lease_id));
        tokio::spawn(async move {
            let _ = valkey.zrem(&key, &id).await;
            done();
        });
    }
}

impl SharedRateLimiter {
    /// `max_request_ms`: the longest a request can run; leases last that
    /// plus 5 s.
    pub fn new(valkey: Arc<Valkey>, max_request_ms: u64) -> Self {
        let lease_us = i64::try_from(max_request_ms.saturating_add(5_000)).unwrap_or(i64::MAX / 1000) * 1000;
        Self { valkey, script: Script::new(include_str!("shared_rate_limit.lua")), lease_us }
    }

    /// Whether the shared budget can be used now (else: the in-process one).
    pub fn usable(&self) -> bool {
        !self.valkey.is_down()
    }

    /// Takes a slot and a token of endpoint class `class` for one key of
    /// one tenant: `rate_per_s` (0 = unlimited) with `burst`, at most
    /// `concurrency` in flight (0 = unlimited). `Err`: Valkey did not answer
    /// (the caller falls back).
    pub async fn acquire(
        &self,
        tenant: Uuid,
        key_hash: &[u8; 32],
        class: &str,
        rate_per_s: f64,
        burst: f64,
        concurrency: u32,
    ) -> Result<Verdict, ValkeyError> {
        let id: String = key_hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        let base = format!("rate:{}:{id}:{class}", tenant.simple());
        let (gcra_key, inflight_key) = (self.valkey.key(&base), self.valkey.key(&format!("{base}:inflight")));
        let lease_id = Uuid::new_v4().simple().to_string();
        let rate = if rate_per_s > 0.0 { rate_per_s } else { 0.0 };
        let mut inv = self.script.prepare_invoke();
        inv.key(&gcra_key).key(&inflight_key).arg(rate).arg(burst.max(1.0)).arg(concurrency).arg(self.lease_us).arg(&lease_id);
        let (status, wait_us): (String, i64) = self.valkey.eval(&inv).await?;
        Ok(match status.as_str() {
            "rate" => Verdict::RateLimited(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))),
            "concurrency" => Verdict::TooManyInFlight,
            _ if concurrency > 0 => Verdict::Admitted(Some(SharedPermit { valkey: self.valkey.clone(), inflight_key, lease_id })),
            _ => Verdict::Admitted(None),
        })
    }
}
