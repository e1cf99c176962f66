//! Requests over a key's concurrency cap wait for a slot instead of being
//! refused at once, so that a dashboard firing all its panels together
//! (16 or 32 requests with one key) is answered in full while the cap
//! still keeps one key from holding every ClickHouse slot.
//!
//! The wait is bounded twice: at most `queue` requests of one key (per
//! endpoint class, per process) wait at a time, and each waits at most
//! `max_wait`. Past either bound the request gets the usual 429 with
//! `Retry-After`. The in-process limiter wakes waiters when a slot is
//! released ([`SlotQueue::released`]); a slot shared through Valkey is
//! polled with a growing backoff (5 ms doubling to 100 ms, with jitter),
//! also woken early by any release on this replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// First and longest pause between two tries for a shared slot.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The waiters of every key, and the signal that a slot was released.
#[derive(Default)]
pub struct SlotQueue {
    waiting: Mutex<HashMap<([u8; 32], &'static str), u32>>,
    released: Notify,
}

/// Queues are per key hash and endpoint class (its label, e.g.
/// `analytics`).
///
/// One place in a key's queue; given back on drop.
pub struct Ticket {
    queue: Arc<SlotQueue>,
    key: ([u8; 32], &'static str),
    backoff: Duration,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.queue.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl SlotQueue {
    /// A place in the queue of `key_hash` in `class`, or `None` when
    /// `bound` requests of that key already wait.
    pub fn enter(self: &Arc<Self>, key_hash: [u8; 32], class: &'static str, bound: u32) -> Option<Ticket> {
        let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry((key_hash, class)).or_insert(0);
        if *n >= bound {
            if *n == 0 {
                map.remove(&(key_hash, class));
            }
            return None;
        }
        *n += 1;
        Some(Ticket { queue: self.clone(), key: (key_hash, class), backoff: FIRST_BACKOFF })
    }

    /// Wakes every waiter (a slot was released).
    pub fn released(&self) {
        self.released.notify_waiters();
    }

    /// Requests of `key_hash` in `class` waiting now.
    pub fn waiting(&self, key_hash: [u8; 32], class: &'static str) -> u32 {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).get(&(key_hash, class)).copied().unwrap_or(0)
    }
}

impl Ticket {
    /// Waits until a slot may be free (a release on this replica, or the
    /// next backoff step), never past `deadline`. `false`: the deadline
    /// has passed, stop waiting.
    pub async fn pause(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Up to a fifth of the step as jitter, so waiters do not poll in step.
        let jitter_ms = (uuid::Uuid::new_v4().as_u128() % u128::from(self.backoff.as_millis() as u64 / 5 + 1)) as u64;
        let pause = (self.backoff + Duration::from_millis(jitter_ms)).min(deadline - now);
        let _ = tokio::time::timeout(pause, self.queue.released.notified()).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_of_a_key_is_bounded_and_places_are_given_back() {
        let q = Arc::new(SlotQueue::default());
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let t1 = q.enter(a, "analytics", 2).unwrap();
        let _t2 = q.enter(a, "analytics", 2).unwrap();
        assert!(q.enter(a, "analytics", 2).is_none());
        // Another key and another class have queues of their own.
        assert!(q.enter(b, "analytics", 2).is_some());
        assert!(q.enter(a, "check", 2).is_some());
        drop(t1);
        assert_eq!(q.waiting(a, "analytics"), 1);
        assert!(q.enter(a, "analytics", 2).is_some());
        // A bound of 0 means no queue.
        assert!(q.enter(b, "check", 0).is_none());
        assert_eq!(q.waiting(b, "check"), 0);
    }

    #[tokio::test]
    async fn a_release_wakes_a_waiter_before_its_backoff_ends() {
        let q = Arc::new(SlotQueue::default());
        let mut t = q.enter([3u8; 32], "analytics", 1).unwrap();
        t.backoff = Duration::from_secs(3600);
        let far = Instant::now() + Duration::from_secs(7200);
        let waiter = tokio::spawn(async move { t.pause(far).await });
        tokio::task::yield_now().await;
        while !waiter.is_finished() {
            q.released();
            tokio::task::yield_now().await;
        }
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn no_pause_past_the_deadline() {
        let q = Arc::new(SlotQueue::default());
        let mut t = q.enter([4u8; 32], "analytics", 1).unwrap();
        assert!(!t.pause(Instant::now()).await);
    }
}
