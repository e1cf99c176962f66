//! The background refresher: keeps the in-memory counters equal to the
//! minute rollups in ClickHouse.
//!
//! * Every `--usage-refresh-interval-ms` (250 ms): re-read the last
//!   `--usage-refresh-lookback-minutes` minutes (plus the current one) of
//!   `agent_executions_1m` (billable only) and `tool_calls_1m`, and replace
//!   those minutes in memory. These rows are few, so the query is cheap.
//! * Every `--usage-reconcile-interval-ms` (60 s) and at start: re-read the
//!   whole retention (35 days), build a fresh set of counters
//!   on a blocking thread and swap it in (so checks never wait for it). This catches events that
//!   reached ClickHouse more than the look-back after their `occurred_at`.
//! * Limits are loaded by their own loop ([`super::limits_watch`]): every
//!   interval it reads a fingerprint of `plan_limits` and reloads the limits
//!   when it moved (at once when another replica announces a write through
//!   Valkey, and in full every reconcile interval), however long the rollup
//!   reads take.
//! * Before each delta read, live reservations that name an `execution_id`
//!   are looked up in the raw `agent_executions` table (pruned by
//!   `occurred_at`, and only events at least two minutes inside the delta
//!   window, so that every replica's next delta still covers their minute).
//!   In-process holds found are released after the delta that contains
//!   their usage has been applied; shared holds (Valkey) are stamped as
//!   seen, and the snapshot start of this read (Valkey time) is published
//!   once the counters are installed (see `shared_holds`).
//! * A round whose previous success is older than a minute is a full
//!   reconcile: a stalled replica never skips minutes a delta would miss.
//!
//! `as_of` is the clock time just before the rollup read started: every row
//! ClickHouse had acknowledged by then is in the counters. A failed refresh
//! leaves the counters and `as_of` as they were, so `staleness_ms` grows and
//! says so.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::DateTime;
use uuid::Uuid;

use super::counters::{Counters, ExecRow, ToolRow, Totals};
use super::engine::UsageState;
use crate::calendar::minute_of;
use crate::queries::usage_counters;

/// Days of usage held in memory: the longest period (a month, or a rolling
/// window of up to 31 days) plus time-zone and anchor slack.
pub const RETENTION_DAYS: i64 = 35;

/// Reads minutes `[from, to)` of both rollups.
async fn read_minutes(db: &clickhouse::Client, from: i64, to: i64) -> clickhouse::error::Result<(Vec<ExecRow>, Vec<ToolRow>)> {
    let (exec, tools) = usage_counters::minutes(db, from, to).await?;
    let exec = exec
        .into_iter()
        .map(|r| ExecRow {
            minute: r.minute_no,
            tenant_id: r.tenant_id,
            organization_id: r.organization_id,
            user_id: r.user_id,
            totals: Totals {
                executions: i128::from(r.executions),
                input_tokens: i128::from(r.input_tokens),
                output_tokens: i128::from(r.output_tokens),
                total_tokens: i128::from(r.total_tokens),
                messages: i128::from(r.messages),
                cost_micros: r.cost_usd,
                tool_calls: 0,
            },
        })
        .collect();
    let tools = tools
        .into_iter()
        .map(|r| ToolRow { minute: r.minute_no, tenant_id: r.tenant_id, organization_id: r.organization_id, calls: i128::from(r.calls) })
        .collect();
    Ok((exec, tools))
}

/// Re-reads the recent minutes (or, with `full`, the whole retention) and
/// applies them.
pub async fn refresh_once(state: &UsageState, full: bool) -> clickhouse::error::Result<()> {
    let kind = if full { "reconcile" } else { "delta" };
    let started = Instant::now();
    let result = refresh_inner(state, full).await;
    state.metrics.refresh_duration_seconds.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        state.metrics.refresh_errors_total.with_label_values(&[kind]).inc();
    }
    result
}

async fn refresh_inner(state: &UsageState, full: bool) -> clickhouse::error::Result<()> {
    let db = &state.db;
    let now = state.now();
    let to = minute_of(now) + 1;
    let from = if full { to - RETENTION_DAYS * 24 * 60 } else { to - 1 - i64::from(state.cfg.usage_refresh_lookback_minutes) };

    // Executions awaited by reservations, looked up before the rollups so
    // that every one found is inside the rollup read that follows (and, for
    // shared holds, inside the next delta of every other replica).
    let since_seen = DateTime::from_timestamp((from + 2) * 60, 0).expect("in range");
    let mut seen: Vec<(Uuid, Vec<Uuid>)> = Vec::new();
    let awaited = match &state.shared {
        Some(shared) => shared.awaited(now),
        None => state.holds.awaited(now),
    };
    for (tenant, ids, _created) in awaited {
        // An event that occurred earlier keeps its hold until the TTL.
        let found = usage_counters::seen_executions(db, tenant, &ids, since_seen).await?;
        match &state.shared {
            // Stamped now, after the rows were visible.
            Some(shared) => {
                shared.stamp_seen(tenant, &found).await;
            }
            None if !found.is_empty() => seen.push((tenant, found)),
            None => {}
        }
    }

    // Snapshot start in Valkey time (None: Valkey away; the counters are
    // installed but the published snapshot stays older, which only counts
    // more holds).
    let snapshot_us = match &state.shared {
        Some(shared) => shared.valkey_now().await,
        None => None,
    };
    let read_at = state.now();
    let (exec, tools) = read_minutes(db, from, to).await?;
    if full {
        // Build the whole set off the async workers and swap it in: checks
        // never wait for a rebuild. Nothing is lost by replacing: deltas run
        // in this same task, so none was applied after this read started.
        let fresh = tokio::task::spawn_blocking(move || {
            let mut c = Counters::default();
            c.replace_minutes(from, to, &exec, &tools);
            c
        })
        .await
        .expect("counter rebuild does not panic");
        state.metrics.subjects.set(fresh.subjects() as i64);
        let old = std::mem::replace(&mut *state.counters.write().unwrap_or_else(|e| e.into_inner()), fresh);
        // Free the old set off the async workers too.
        tokio::task::spawn_blocking(move || drop(old));
    } else {
        let mut c = state.counters.write().unwrap_or_else(|e| e.into_inner());
        c.replace_minutes(from, to, &exec, &tools);
        state.metrics.subjects.set(c.subjects() as i64);
    }
    for (tenant, ids) in seen {
        let h = state.holds.tenant(tenant);
        h.lock().unwrap_or_else(|e| e.into_inner()).release(&ids);
    }
    if let (Some(shared), Some(snapshot_us)) = (&state.shared, snapshot_us) {
        shared.set_snapshot(snapshot_us);
    }
    state.set_as_of(read_at);
    state.metrics.counter_staleness_ms.set((state.now() - read_at).num_milliseconds());
    Ok(())
}

/// The refresher loop; ends when the state is dropped.
pub async fn run(state: Weak<UsageState>) {
    let mut last_full: Option<Instant> = None;
    let mut last_ok: Option<Instant> = None;
    let mut failures: u32 = 0;
    loop {
        let Some(s) = state.upgrade() else { return };
        let interval = Duration::from_millis(s.cfg.usage_refresh_interval_ms.max(10));
        let reconcile = Duration::from_millis(s.cfg.usage_reconcile_interval_ms.max(1));
        let stalled = last_ok.is_some_and(|t| t.elapsed() > Duration::from_secs(60));
        let full = stalled || last_full.is_none_or(|t| t.elapsed() >= reconcile);
        match refresh_once(&s, full).await {
            Ok(()) => {
                failures = 0;
                last_ok = Some(Instant::now());
                if full {
                    last_full = Some(Instant::now());
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(40) {
                    tracing::warn!(error = %e, full, failures, "usage refresh failed; counters keep their last figures");
                }
            }
        }
        drop(s);
        // Back off while ClickHouse is away (up to 5 s), else the interval.
        let wait = if failures == 0 { interval } else { (interval * failures.min(20)).min(Duration::from_secs(5)) };
        tokio::time::sleep(wait).await;
    }
}

/// Forces one full reload now (used at startup by callers that want to wait
/// for it, and by tests).
pub async fn load_now(state: &Arc<UsageState>) -> clickhouse::error::Result<()> {
    super::limits_watch::reload(state, true).await?;
    refresh_once(state, true).await
}
