//! Reservations: budget held for a short time by a check made with
//! `reserve=true`, so that many concurrent calls cannot all pass the last
//! remaining budget before their usage reaches ClickHouse.
//!
//! Holds live per tenant behind one mutex; a check takes its tenant's mutex,
//! reads the counters, decides and records its hold before letting go, so the
//! decision and the hold are one atomic step for every subject of the tenant
//! (user, organization and tenant limits together). Tenants never contend.
//!
//! A hold ends when its TTL passes or when the refresher sees the matching
//! agent execution (by `execution_id`) in ClickHouse, after that usage has
//! been added to the counters (so the budget is never counted zero times;
//! for at most one refresh it may be counted twice, which only errs towards
//! denying).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::counters::SubjectKey;
use super::limits::Metric;

/// Budget held by one reserving check.
#[derive(Debug, Clone)]
pub struct Hold {
    pub reservation_id: Uuid,
    /// The execution whose usage event ends the hold: the one the check
    /// named, else the reservation id (what a commit records).
    pub execution_id: Option<Uuid>,
    /// The request's organization and user (what a commit records).
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// The subjects of every limit the check was evaluated against.
    pub subjects: Vec<SubjectKey>,
    pub metric: Metric,
    pub units: i128,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The holds of one tenant.
#[derive(Debug, Default)]
pub struct TenantHolds {
    holds: Vec<Hold>,
}

impl TenantHolds {
    /// Drops holds whose TTL has passed.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.holds.retain(|h| h.expires_at > now);
    }

    /// Units of `metric` held against `subject`.
    pub fn held(&self, subject: SubjectKey, metric: Metric) -> i128 {
        self.holds.iter().filter(|h| h.metric == metric && h.subjects.contains(&subject)).map(|h| h.units).sum()
    }

    /// The live hold with this reservation id.
    pub fn find(&self, reservation_id: Uuid) -> Option<Hold> {
        self.holds.iter().find(|h| h.reservation_id == reservation_id).cloned()
    }

    pub fn add(&mut self, hold: Hold) {
        self.holds.push(hold);
    }

    /// Ends the holds of the given reservation or execution ids; returns how many.
    pub fn release(&mut self, ids: &[Uuid]) -> usize {
        let before = self.holds.len();
        self.holds.retain(|h| !ids.contains(&h.reservation_id) && !h.execution_id.is_some_and(|e| ids.contains(&e)));
        before - self.holds.len()
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

/// Holds of every tenant.
#[derive(Debug, Default)]
pub struct Holds {
    tenants: Mutex<HashMap<Uuid, Arc<Mutex<TenantHolds>>>>,
}

impl Holds {
    /// The holds of one tenant (created on first use).
    pub fn tenant(&self, tenant: Uuid) -> Arc<Mutex<TenantHolds>> {
        let mut m = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(tenant).or_default().clone()
    }

    /// Execution ids awaited by live holds, per tenant, with the earliest
    /// creation time (for the raw-table look-up).
    pub fn awaited(&self, now: DateTime<Utc>) -> Vec<(Uuid, Vec<Uuid>, DateTime<Utc>)> {
        let tenants: Vec<(Uuid, Arc<Mutex<TenantHolds>>)> = {
            let m = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(t, h)| (*t, h.clone())).collect()
        };
        let mut out = Vec::new();
        for (t, h) in tenants {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            h.expire(now);
            let ids: Vec<Uuid> = h.holds.iter().filter_map(|x| x.execution_id).collect();
            if let Some(since) = h.holds.iter().filter(|x| x.execution_id.is_some()).map(|x| x.created_at).min() {
                out.push((t, ids, since));
            }
        }
        out
    }
}
