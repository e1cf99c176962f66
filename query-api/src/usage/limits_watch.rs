//! The limits loop: a cheap fingerprint of the `plan_limits`, `plans` and
//! `plan_assignments` tables, read
//! every usage refresh interval (250 ms by default) by a loop of its own, and
//! the limits reloaded when it moved (and in full every reconcile interval),
//! so that a limit written through any API replica is enforced by every
//! replica within one interval, whatever the rollup reads cost. Works with
//! or without Valkey: the tables are the only source of truth for limits
//! (a plan change or an assignment travels the same way as a limit). This
//! loop is the only one that loads limits, so no older read can overwrite a
//! newer one (writes through this replica are installed at once and guarded
//! by the generation counter of [`UsageState`]). With Valkey, a replica that
//! writes a limit, a plan or an assignment also announces it on [`CHANNEL`], and the others start
//! their next round at once.
//!
//! The fingerprint and the statements are in `queries::limits`.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::engine::UsageState;
use super::limits::LimitSet;
use crate::queries::limits::{load_all, version};
use crate::queries::plans;

/// The Valkey channel on which a replica announces a limit write (the
/// message is the tenant id); receivers reload at once instead of at their
/// next fingerprint read. Best effort: the fingerprint is the guarantee.
pub const CHANNEL: &str = "limits:written";

/// Reloads the limits if their fingerprint moved since the last load (or
/// always, with `force`).
pub async fn reload(state: &UsageState, force: bool) -> clickhouse::error::Result<()> {
    let version = version(&state.db).await?;
    let known = *state.limits_version.lock().unwrap_or_else(|e| e.into_inner());
    if force || known != Some(version) {
        let generation = state.limits_generation.load(Ordering::Acquire);
        let rows = load_all(&state.db).await?;
        let (plans, assignments) = plans::load_all(&state.db).await?;
        let set = LimitSet::from_rows(&rows).with_plans(&plans, &assignments);
        // Not installed (a write through this replica raced the read): the
        // fingerprint stays unknown, so the next round reads again.
        if state.install_limits(set, generation) {
            *state.limits_version.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
        }
    }
    Ok(())
}

/// The limits loop; ends when the state is dropped.
pub async fn watch(state: Weak<UsageState>) {
    let mut last_full: Option<Instant> = None;
    let mut failures: u32 = 0;
    loop {
        let Some(s) = state.upgrade() else { return };
        let interval = Duration::from_millis(s.cfg.usage_refresh_interval_ms.max(10));
        let reconcile = Duration::from_millis(s.cfg.usage_reconcile_interval_ms.max(1));
        let force = last_full.is_none_or(|t| t.elapsed() >= reconcile);
        match reload(&s, force).await {
            Ok(()) => {
                failures = 0;
                if force {
                    last_full = Some(Instant::now());
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                s.metrics.refresh_errors_total.with_label_values(&["limits"]).inc();
                if failures == 1 || failures.is_multiple_of(40) {
                    tracing::warn!(error = %e, failures, "plan limits reload failed; the limits in memory stay as they were");
                }
            }
        }
        let changed = s.limits_changed.clone();
        drop(s);
        let wait = if failures == 0 { interval } else { (interval * failures.min(20)).min(Duration::from_secs(5)) };
        // The next round comes after the interval, or at once when another
        // replica announces a write (Valkey pub/sub).
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed.notified() => {}
        }
    }
}
