//! The background refresher: keeps the in-memory counters equal to the
//! minute rollups in ClickHouse.
//!
//! * Every `--usage-refresh-interval-ms` (250 ms): re-read the last
//!   `--usage-refresh-lookback-minutes` minutes (plus the current one) of
//!   `agent_executions_1m` (billable only) and `tool_calls_1m`, and replace
//!   those minutes in memory. These rows are few, so the query is cheap.
//! * At start: ask ClickHouse's sums per hour over the whole retention (35
//!   days, from an hour on) which hours hold rows, read those hours in
//!   runs of at most a day, build the counters on a blocking thread and
//!   swap them in. On an empty database that is two requests, where
//!   reading every day of the retention took 72.
//! * Every `--usage-reconcile-interval-ms` (60 s): compare ClickHouse's
//!   sums per hour over the retention with the counters' and read again
//!   only the hours that differ ([`reread_changed_hours`]). This catches
//!   events that reached ClickHouse more than the look-back after their
//!   `occurred_at`.
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

use std::collections::BTreeMap;
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

/// Hours read per ClickHouse request by the first load and by a reconcile:
/// one day's rows are held at a time, and a stalled replica catches up a
/// day at a time, holding the write lock briefly.
const HOURS_PER_READ: i64 = 24;

/// The [`Totals`] of an execution rollup's sums (no tool calls).
fn execution_totals(executions: u64, input_tokens: u64, output_tokens: u64, total_tokens: u64, messages: u64, cost_micros: i128) -> Totals {
    Totals {
        executions: i128::from(executions),
        input_tokens: i128::from(input_tokens),
        output_tokens: i128::from(output_tokens),
        total_tokens: i128::from(total_tokens),
        messages: i128::from(messages),
        cost_micros,
        tool_calls: 0,
    }
}

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
            totals: execution_totals(r.executions, r.input_tokens, r.output_tokens, r.total_tokens, r.messages, r.cost_usd),
        })
        .collect();
    let tools = tools
        .into_iter()
        .map(|r| ToolRow { minute: r.minute_no, tenant_id: r.tenant_id, organization_id: r.organization_id, calls: i128::from(r.calls) })
        .collect();
    Ok((exec, tools))
}

/// ClickHouse's sums of minutes `[from, to)` per hour, over every subject.
async fn read_hour_sums(db: &clickhouse::Client, from: i64, to: i64) -> clickhouse::error::Result<BTreeMap<i64, Totals>> {
    let (exec, tools) = usage_counters::hour_sums(db, from, to).await?;
    let mut sums: BTreeMap<i64, Totals> = BTreeMap::new();
    for r in exec {
        let t = sums.entry(r.hour_no).or_default();
        *t = t.plus(execution_totals(r.executions, r.input_tokens, r.output_tokens, r.total_tokens, r.messages, r.cost_usd));
    }
    for r in tools {
        sums.entry(r.hour_no).or_default().tool_calls += i128::from(r.calls);
    }
    Ok(sums)
}

/// A reconcile of counters already loaded: ClickHouse's sums per hour over
/// the retention (two aggregates that send a row per hour) are compared
/// with the counters' ([`Counters::hours_differing`]), and only the hours
/// that differ are read again minute by minute and replaced. Rollup rows
/// are only ever added (merges keep their sums), and each adds at least
/// one billable execution or one tool call to its hour, so an hour whose
/// sums match holds every row ClickHouse has for it. Reading the whole
/// retention every minute instead cost a replica holding a month of 16 M
/// events about 8 CPU s and a second copy of its counters (1.5 GB) each
/// time.
async fn reread_changed_hours(state: &UsageState, from: i64, to: i64) -> clickhouse::error::Result<()> {
    let theirs = read_hour_sums(&state.db, from, to).await?;
    let changed = state.counters.read().unwrap_or_else(|e| e.into_inner()).hours_differing(from.div_euclid(60), hours_to(to), &theirs);
    state.metrics.reconcile_hours_read_total.inc_by(changed.len() as u64);
    for (a, b) in read_ranges(&changed, to) {
        let (exec, tools) = read_minutes(&state.db, a, b).await?;
        state.counters.write().unwrap_or_else(|e| e.into_inner()).replace_minutes(a, b, &exec, &tools);
    }
    let mut c = state.counters.write().unwrap_or_else(|e| e.into_inner());
    c.prune(from);
    state.metrics.subjects.set(c.subjects() as i64);
    Ok(())
}

/// The end (exclusive) of the hours that hold minutes before `to`.
fn hours_to(to: i64) -> i64 {
    to.div_euclid(60) + i64::from(to.rem_euclid(60) != 0)
}

/// The minutes `[a, b)` to read for `hours` (ascending), before `to`: one
/// request per run of at most [`HOURS_PER_READ`] consecutive hours.
fn read_ranges(hours: &[i64], to: i64) -> impl Iterator<Item = (i64, i64)> {
    runs(hours, HOURS_PER_READ).into_iter().map(move |(first, last)| (first * 60, ((last + 1) * 60).min(to)))
}

/// `hours` (ascending) as runs of consecutive hours `(first, last)`, each
/// at most `max` hours long.
fn runs(hours: &[i64], max: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &h in hours {
        match out.last_mut() {
            Some((first, last)) if *last + 1 == h && h - *first < max => *last = h,
            _ => out.push((h, h)),
        }
    }
    out
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
    // The retention starts on an hour, so that a reconcile compares whole hours.
    let from = if full {
        (to - RETENTION_DAYS * 24 * 60).div_euclid(60) * 60
    } else {
        to - 1 - i64::from(state.cfg.usage_refresh_lookback_minutes)
    };

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
    if full && state.as_of().is_ok() {
        reread_changed_hours(state, from, to).await?;
    } else if full {
        // The first load: the hours that hold rows (ClickHouse's sums per
        // hour, read after `read_at`, so every row acknowledged before it is
        // in one of them), then a fresh set built from those hours a day at
        // a time (one day's rows held at once, not the retention's), off the
        // async workers, then swapped in whole. Nothing is lost by
        // replacing: deltas run in this same task, so none was applied after
        // these reads started.
        let hours: Vec<i64> = read_hour_sums(db, from, to).await?.into_keys().collect();
        state.metrics.reconcile_hours_read_total.inc_by(hours.len() as u64);
        let mut fresh = Counters::default();
        for (a, b) in read_ranges(&hours, to) {
            let (exec, tools) = read_minutes(db, a, b).await?;
            fresh = tokio::task::spawn_blocking(move || {
                fresh.replace_minutes(a, b, &exec, &tools);
                fresh
            })
            .await
            .expect("counter rebuild does not panic");
        }
        state.metrics.subjects.set(fresh.subjects() as i64);
        let old = std::mem::replace(&mut *state.counters.write().unwrap_or_else(|e| e.into_inner()), fresh);
        // Free the old set off the async workers too.
        tokio::task::spawn_blocking(move || drop(old));
    } else {
        let (exec, tools) = read_minutes(db, from, to).await?;
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

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn changed_hours_are_read_in_runs_of_consecutive_hours() {
        assert_eq!(runs(&[], 24), vec![]);
        assert_eq!(runs(&[5], 24), vec![(5, 5)]);
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10], 24), vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(runs(&[0, 1, 2, 3, 4], 2), vec![(0, 1), (2, 3), (4, 4)]);
    }

    #[test]
    fn the_hours_read_end_with_the_one_holding_the_last_minute() {
        assert_eq!(super::hours_to(120), 2);
        assert_eq!(super::hours_to(121), 3);
        assert_eq!(super::hours_to(179), 3);
    }
}
