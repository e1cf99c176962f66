//! Reservations shared by every API replica, in Valkey (when
//! `--valkey-url` is set; otherwise [`super::reservations`] keeps them in
//! process).
//!
//! One check is one call of a server-side Lua script (`shared_holds.lua`):
//! it sums the live holds that apply to each limit, compares them with the
//! budget the replica computed from its own counters (`max - used`),
//! decides, and records the new hold, atomically. No replica reads and then
//! writes, so two replicas can never both take the last budget.
//!
//! A hold must be counted by every replica until that replica's counters
//! include the execution's usage. The protocol (argued in docs/limits.md):
//!
//! * Each refresh takes the Valkey time just before it reads the rollups
//!   (its *snapshot start*, [`SharedHolds::set_snapshot`]); a check passes
//!   the snapshot start of the counters it used.
//! * The replica that created a hold looks its `execution_id` up in the raw
//!   table each refresh; once found, the hold is *stamped* with the Valkey
//!   time of that moment (after the row was visible).
//! * A replica counts a hold unless it was stamped more than the settle
//!   margin before its own snapshot start. Valkey runs scripts one at a
//!   time, so "before" is one total order, free of clock skew.
//! * A stamped hold is deleted only once `seen + settle + linger < now`, and
//!   a replica whose snapshot is older than the linger may not reserve
//!   (`stale`, 503): every replica allowed to decide has a snapshot later
//!   than `seen + settle` of every deleted hold, so it counts its usage.
//!
//! Valkey unreachable, fenced after a loss (see [`crate::valkey::epoch`]) or
//! counters too old: a reserving check fails with 503 and a `detail`, never
//! admits without a hold; a plain check answers from the counters alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::counters::SubjectKey;
use super::engine::UsageState;
use super::limits::Metric;
use super::reservations::Hold;
use crate::valkey::Valkey;

/// Largest amount the scripts handle exactly (Lua numbers are doubles).
const EXACT: i128 = 1 << 53;

/// A stamp counts only once the snapshot start is this much later: the
/// rollup rows of an insert become visible shortly after its raw rows.
const SETTLE_US: i64 = 1_000_000;

/// A hold this replica created and still has to look up.
#[derive(Debug, Clone)]
struct OwnHold {
    execution_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// What a commit needs of a shared hold (stored next to it).
#[derive(Debug, Serialize, Deserialize)]
struct HoldMeta {
    execution_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    user_id: Option<Uuid>,
    metric: String,
    units: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// What the script decided.
#[derive(Debug, Clone)]
pub struct SharedDecision {
    pub allowed: bool,
    /// Units held against each limit, in the order given.
    pub held: Vec<i128>,
}

/// The shared reservations of this replica.
pub struct SharedHolds {
    pub valkey: Arc<Valkey>,
    holds: Script,
    stamp: Script,
    release: Script,
    ttl_us: i64,
    linger_us: i64,
    /// Valkey time at which the installed counters were read (0: none yet).
    snapshot_us: AtomicI64,
    own: Mutex<HashMap<Uuid, Vec<OwnHold>>>,
}

impl std::fmt::Debug for SharedHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHolds").field("valkey", &self.valkey).finish_non_exhaustive()
    }
}

/// Subject of a limit as named inside one tenant's hash.
fn subject_name(s: SubjectKey) -> String {
    match s {
        SubjectKey::Tenant(_) => "t".to_owned(),
        SubjectKey::Organization(_, o) => format!("o:{}", o.simple()),
        SubjectKey::User(_, o, u) => format!("u:{}:{}", o.simple(), u.simple()),
    }
}

impl SharedHolds {
    /// `ttl_ms`: hold lifetime; `refresh_interval_ms`: of the counters,
    /// which sets the linger (40 intervals, at least 10 s).
    pub fn new(valkey: Arc<Valkey>, ttl_ms: u64, refresh_interval_ms: u64) -> Self {
        let ttl_us = i64::try_from(ttl_ms.max(1)).unwrap_or(i64::MAX / 4_000) * 1000;
        let linger_us = i64::try_from((refresh_interval_ms * 40).max(10_000)).unwrap_or(10_000) * 1000;
        Self {
            valkey,
            holds: Script::new(include_str!("shared_holds.lua")),
            stamp: Script::new(include_str!("shared_stamp.lua")),
            release: Script::new(include_str!("shared_release.lua")),
            ttl_us,
            linger_us,
            snapshot_us: AtomicI64::new(0),
            own: Mutex::new(HashMap::new()),
        }
    }

    fn holds_key(&self, tenant: Uuid) -> String {
        self.valkey.key(&format!("holds:{}", tenant.simple()))
    }

    /// Snapshot start of the installed counters (0 before the first refresh
    /// that reached Valkey).
    pub fn snapshot_us(&self) -> i64 {
        self.snapshot_us.load(Ordering::Acquire)
    }

    /// Called after counters read from `snapshot_us` on were installed.
    pub fn set_snapshot(&self, snapshot_us: i64) {
        self.snapshot_us.fetch_max(snapshot_us, Ordering::AcqRel);
    }

    /// The current Valkey time, probing the epoch on the way (used as the
    /// snapshot start of a refresh).
    pub async fn valkey_now(&self) -> Option<i64> {
        match self.valkey.epoch.probe(&self.valkey).await {
            Ok((view, changed)) => {
                if changed {
                    self.own.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                Some(view.now_us)
            }
            Err(_) => None,
        }
    }

    /// The check (and with `reserve`, the hold) for one request: `limits`
    /// are the applicable limits' subjects with `max - used` from counters
    /// whose snapshot start is `snapshot_us`. `Err` is the 503 detail.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        tenant: Uuid,
        metric: Metric,
        units: i128,
        limits: &[(SubjectKey, i128)],
        snapshot_us: i64,
        reserve: Option<(Uuid, Option<Uuid>)>,
        now: DateTime<Utc>,
    ) -> Result<SharedDecision, String> {
        if self.valkey.is_down() {
            // Fail fast while away; the epoch watch brings it back.
            return Err("Reservations are held in Valkey, which is unreachable; retry shortly".into());
        }
        if snapshot_us == 0 {
            return Err("Usage counters have not been read against the shared reservations yet; retry shortly".into());
        }
        for attempt in 0..2 {
            let mut inv = self.holds.prepare_invoke();
            inv.key(self.holds_key(tenant)).key(self.valkey.key("epoch"));
            inv.arg(self.valkey.epoch.known())
                .arg(snapshot_us)
                .arg(if reserve.is_some() { "reserve" } else { "check" })
                .arg(metric.as_str())
                .arg(units.clamp(0, EXACT).to_string())
                .arg(self.ttl_us)
                .arg(self.linger_us)
                .arg(SETTLE_US)
                .arg(reserve.map(|(r, _)| r.simple().to_string()).unwrap_or_default())
                .arg(reserve.and_then(|(_, e)| e).map(|e| e.simple().to_string()).unwrap_or_default())
                .arg(limits.len());
            for (subject, budget) in limits {
                inv.arg(subject_name(*subject)).arg(budget.clamp(&-EXACT, &EXACT).to_string());
            }
            let reply: Vec<redis::Value> = self
                .valkey
                .eval(&inv)
                .await
                .map_err(|e| format!("Reservations are held in Valkey, which is unreachable ({e}); retry shortly"))?;
            let text = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok()).unwrap_or_default();
            let int = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok()).unwrap_or(0);
            let status = text(0);
            match status.as_str() {
                "epoch" if attempt == 0 => {
                    let _ = self.valkey_now().await;
                    continue;
                }
                "epoch" => return Err("The shared reservations were reset; retry shortly".into()),
                "fenced" if reserve.is_some() => {
                    let left_ms = self.valkey.epoch.fence_left_us() / 1000;
                    return Err(format!(
                        "Valkey lost the shared reservations (restarted without persistence); reserving checks resume once every lost hold has expired, in about {} s",
                        (left_ms + 999) / 1000
                    ));
                }
                "stale" if reserve.is_some() => {
                    return Err(
                        "This replica's usage counters are too old to reserve safely (is ClickHouse reachable?); retry shortly".into()
                    );
                }
                _ => {}
            }
            let held: Vec<i128> = (0..limits.len()).map(|i| i128::from(int(3 + i))).collect();
            let allowed = int(1) == 1;
            if let (Some((_, Some(execution_id))), true, "ok") = (reserve, allowed && !limits.is_empty(), status.as_str()) {
                let expires_at = now + chrono::Duration::microseconds(self.ttl_us);
                let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
                let list = own.entry(tenant).or_default();
                list.retain(|h| h.execution_id != execution_id);
                list.push(OwnHold { execution_id, created_at: now, expires_at });
            }
            return Ok(SharedDecision { allowed, held });
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Execution ids awaited by this replica's own live holds, per tenant,
    /// with the earliest creation time.
    pub fn awaited(&self, now: DateTime<Utc>) -> Vec<(Uuid, Vec<Uuid>, DateTime<Utc>)> {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.retain(|_, list| {
            list.retain(|h| h.expires_at > now);
            !list.is_empty()
        });
        own.iter()
            .filter_map(|(t, list)| {
                let since = list.iter().map(|h| h.created_at).min()?;
                Some((*t, list.iter().map(|h| h.execution_id).collect(), since))
            })
            .collect()
    }

    /// Stamps the holds of `executions`, whose usage was just seen in
    /// ClickHouse; they need no more look-ups by this replica.
    pub async fn stamp_seen(&self, tenant: Uuid, executions: &[Uuid]) -> bool {
        if executions.is_empty() {
            return true;
        }
        let mut inv = self.stamp.prepare_invoke();
        inv.key(self.holds_key(tenant));
        for e in executions {
            inv.arg(e.simple().to_string());
        }
        match self.valkey.eval::<i64>(&inv).await {
            Ok(_) => {
                let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = own.get_mut(&tenant) {
                    list.retain(|h| !executions.contains(&h.execution_id));
                }
                true
            }
            // Not stamped: looked up again next refresh (or the hold expires).
            Err(_) => false,
        }
    }

    /// Ends one reservation early. `Err` is the 503 detail.
    pub async fn release(&self, tenant: Uuid, reservation_id: Uuid) -> Result<bool, String> {
        let mut inv = self.release.prepare_invoke();
        inv.key(self.holds_key(tenant)).arg(reservation_id.simple().to_string());
        let live = self
            .valkey
            .eval::<i64>(&inv)
            .await
            .map(|n| n == 1)
            .map_err(|e| format!("Reservations are held in Valkey, which is unreachable ({e}); retry shortly"))?;
        let _ = self.valkey.command::<i64>(redis::cmd("DEL").arg(self.meta_key(tenant, reservation_id))).await;
        Ok(live)
    }

    fn meta_key(&self, tenant: Uuid, reservation_id: Uuid) -> String {
        self.valkey.key(&format!("hold:{}:{}", tenant.simple(), reservation_id.simple()))
    }

    /// Stores what a commit of `hold` needs (its organization, user, metric
    /// and execution) next to it, for the hold's lifetime. `Err` is the 503
    /// detail.
    pub async fn remember(&self, tenant: Uuid, hold: &Hold) -> Result<(), String> {
        let meta = HoldMeta {
            execution_id: hold.execution_id,
            organization_id: hold.organization_id,
            user_id: hold.user_id,
            metric: hold.metric.as_str().to_owned(),
            units: hold.units.to_string(),
            created_at: hold.created_at,
            expires_at: hold.expires_at,
        };
        let json = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
        let ttl_ms = (self.ttl_us / 1000).max(1);
        self.valkey
            .command::<()>(redis::cmd("SET").arg(self.meta_key(tenant, hold.reservation_id)).arg(json).arg("PX").arg(ttl_ms))
            .await
            .map_err(|e| format!("Reservations are held in Valkey, which is unreachable ({e}); retry shortly"))
    }

    /// The live reservation `reservation_id` as [`SharedHolds::remember`]
    /// stored it. `Err` is the 503 detail.
    pub async fn lookup(&self, tenant: Uuid, reservation_id: Uuid) -> Result<Option<Hold>, String> {
        let json: Option<String> = self
            .valkey
            .command(redis::cmd("GET").arg(self.meta_key(tenant, reservation_id)))
            .await
            .map_err(|e| format!("Reservations are held in Valkey, which is unreachable ({e}); retry shortly"))?;
        let Some(meta) = json.and_then(|j| serde_json::from_str::<HoldMeta>(&j).ok()) else { return Ok(None) };
        let (Some(metric), Ok(units)) = (Metric::parse(&meta.metric), meta.units.parse::<i128>()) else { return Ok(None) };
        Ok(Some(Hold {
            reservation_id,
            execution_id: meta.execution_id,
            organization_id: meta.organization_id,
            user_id: meta.user_id,
            subjects: Vec::new(),
            metric,
            units,
            created_at: meta.created_at,
            expires_at: meta.expires_at,
        }))
    }
}

/// Probes the epoch every refresh interval (noticing a loss of the store
/// promptly, and bringing Valkey back as reachable after an outage), until
/// the state is dropped.
pub async fn watch(state: Weak<UsageState>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        let interval = Duration::from_millis(s.cfg.usage_refresh_interval_ms.max(10));
        if let Some(shared) = s.shared.as_ref() {
            let _ = shared.valkey_now().await;
        } else {
            return;
        }
        drop(s);
        tokio::time::sleep(interval).await;
    }
}
