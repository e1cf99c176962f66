//! The epoch of the shared state in Valkey: which "life" of the store this
//! replica has seen, and the fence after a loss.
//!
//! Valkey restarted without persistence (or flushed) has lost every hold.
//! Holds cannot be rebuilt from ClickHouse (they stand for calls whose usage
//! has not arrived yet), so after a loss reserving checks fail closed until
//! every hold that may have been lost has expired: one hold lifetime (the
//! reservation TTL). The loss is detected through a sentinel: the epoch
//! hash holds a random id; each replica remembers the id it saw, and a
//! missing hash or a different id means the store was lost.
//!
//! A replica that has never seen an epoch and finds none cannot tell a
//! first start from a loss nobody noticed yet; it creates the epoch with a
//! short fence (a few refresh intervals, at least 2 s), during which every
//! running replica that knew the old epoch notices (each probes it every
//! refresh interval, [`crate::usage::shared_holds::watch`]) and extends the
//! fence to a full hold lifetime.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use redis::Script;
use uuid::Uuid;

use super::{Valkey, ValkeyError};

/// What the last probe of the epoch said (Valkey microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochView {
    pub now_us: i64,
    pub fence_until_us: i64,
    pub wiped_at_us: i64,
}

/// The epoch this replica knows.
pub struct Epoch {
    script: Script,
    known: Mutex<String>,
    fence_until_us: AtomicI64,
    last_now_us: AtomicI64,
    /// Fence after a detected loss (one hold lifetime).
    loss_fence_us: i64,
    /// Fence when creating the epoch without knowing an older one.
    young_fence_us: i64,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch").field("known", &self.known()).finish_non_exhaustive()
    }
}

impl Epoch {
    pub fn new(loss_fence_us: i64, young_fence_us: i64) -> Self {
        Self {
            script: Script::new(include_str!("epoch.lua")),
            known: Mutex::new(String::new()),
            fence_until_us: AtomicI64::new(0),
            last_now_us: AtomicI64::new(0),
            loss_fence_us,
            young_fence_us,
        }
    }

    /// The epoch id this replica knows ("" before the first probe).
    pub fn known(&self) -> String {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Probes the epoch (creating or fencing it as the module docs say).
    /// Returns the view and whether the epoch changed since the last probe
    /// (the store was lost: this replica's own holds are gone).
    pub async fn probe(&self, valkey: &Valkey) -> Result<(EpochView, bool), ValkeyError> {
        let known = self.known();
        let fresh = Uuid::new_v4().simple().to_string();
        let mut inv = self.script.prepare_invoke();
        inv.key(valkey.key("epoch")).arg(&known).arg(&fresh).arg(self.loss_fence_us).arg(self.young_fence_us);
        let (now_us, id, fence_until_us, wiped_at_us): (i64, String, i64, i64) = valkey.eval(&inv).await?;
        let changed = !known.is_empty() && known != id;
        if changed {
            tracing::warn!(
                fence_ms = (fence_until_us - now_us) / 1000,
                "Valkey lost the shared reservations (restart without persistence or flush); reserving checks answer 503 until every lost hold has expired"
            );
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = id;
        self.fence_until_us.store(fence_until_us, Ordering::Release);
        self.last_now_us.store(now_us, Ordering::Release);
        Ok((EpochView { now_us, fence_until_us, wiped_at_us }, changed))
    }

    /// Microseconds of fence left at the last probe (0 if none).
    pub fn fence_left_us(&self) -> i64 {
        (self.fence_until_us.load(Ordering::Acquire) - self.last_now_us.load(Ordering::Acquire)).max(0)
    }
}
