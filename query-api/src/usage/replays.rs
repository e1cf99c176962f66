//! The answers of recorded usage, by event id, so that a retried consume or
//! commit gets the answer of the attempt that was recorded instead of being
//! decided again (after its usage is counted, a second decision would see
//! that usage and could answer 402 for a request that succeeded).
//!
//! Kept in Valkey when it is configured (every replica sees every answer),
//! else in this process. Kept for [`REPLAY_TTL_S`]; a retry later than that
//! is decided again, and its event is still counted only once (the ingest
//! worker deduplicates by `event_id` over the data's retention).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::valkey::Valkey;

/// How long an answer is replayed.
pub const REPLAY_TTL_S: u64 = 24 * 3600;

/// Most answers kept in process (oldest dropped first).
const LOCAL_CAP: usize = 100_000;

/// Recorded answers.
#[derive(Debug, Default)]
pub struct Replays {
    valkey: Option<Arc<Valkey>>,
    local: Mutex<LocalReplays>,
}

#[derive(Debug, Default)]
struct LocalReplays {
    answers: HashMap<(Uuid, Uuid), String>,
    order: VecDeque<(Instant, (Uuid, Uuid))>,
}

impl Replays {
    pub fn new(valkey: Option<Arc<Valkey>>) -> Self {
        Self { valkey, local: Mutex::default() }
    }

    fn key(v: &Valkey, tenant: Uuid, event_id: Uuid) -> String {
        v.key(&format!("recorded:{}:{}", tenant.simple(), event_id.simple()))
    }

    /// The recorded answer (JSON) of an event, if any. Valkey unreachable:
    /// `None` (the request is decided again; its event still counts once).
    pub async fn get(&self, tenant: Uuid, event_id: Uuid) -> Option<String> {
        match &self.valkey {
            Some(v) => v.command::<Option<String>>(redis::cmd("GET").arg(Self::key(v, tenant, event_id))).await.ok().flatten(),
            None => self.local.lock().unwrap_or_else(|e| e.into_inner()).answers.get(&(tenant, event_id)).cloned(),
        }
    }

    /// Records the answer of an event that Kafka acknowledged.
    pub async fn put(&self, tenant: Uuid, event_id: Uuid, answer: String) {
        match &self.valkey {
            Some(v) => {
                let cmd = redis::cmd("SET").arg(Self::key(v, tenant, event_id)).arg(answer).arg("EX").arg(REPLAY_TTL_S).clone();
                if let Err(e) = v.command::<()>(&cmd).await {
                    tracing::warn!(error = %e, "recorded usage answer not kept in Valkey; a retry is decided again");
                }
            }
            None => {
                let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let ttl = Duration::from_secs(REPLAY_TTL_S);
                while let Some((at, k)) = l.order.front().copied() {
                    if now.duration_since(at) < ttl && l.order.len() < LOCAL_CAP {
                        break;
                    }
                    l.order.pop_front();
                    l.answers.remove(&k);
                }
                if l.answers.insert((tenant, event_id), answer).is_none() {
                    l.order.push_back((now, (tenant, event_id)));
                }
            }
        }
    }
}
