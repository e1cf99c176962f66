//! In-memory usage counters: per-minute buckets per subject, so a check is
//! answered from memory in microseconds.
//!
//! The source of truth is ClickHouse's minute rollups; this module only holds
//! a copy. The refresher replaces whole minutes ([`Counters::replace_minutes`])
//! with what ClickHouse returned for them, never adds increments, so the copy
//! cannot drift: re-reading a minute twice leaves the same figure.
//!
//! Layout:
//! * `exec_keys` / `tool_keys`: per minute, the finest keys of the rollup
//!   rows read ((tenant, organization, user) for billable agent
//!   executions, (tenant, organization) for tool calls — tool-call rollups
//!   carry no user), so that a key a new read no longer has is zeroed. The
//!   figures themselves are only in the series: a user's series holds its
//!   execution key's rows, an organization's tool calls its tool key's;
//!   keeping the rows a second time took a third of the memory;
//! * `series`: per subject (tenant, organization, user) the sums of those
//!   rows per minute and per hour, maintained by deltas when a minute is
//!   replaced. A period sum reads whole hours plus at most 118 edge minutes,
//!   so a month costs about a thousand additions.
//!
//! * `hour_sums`: per hour, the sums of every row held (all subjects), for
//!   the reconcile to compare with ClickHouse's sums of the same hour
//!   ([`Counters::hours_differing`]).
//!
//! Memory grows with the number of (subject, active minute) pairs within the
//! retention (the longest period, 35 days); minutes before it are pruned.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use super::limits::Metric;

/// Sums of one bucket. Money is in micro-dollars; everything is `i128` so
/// that deltas (new - old) are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub executions: i128,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub total_tokens: i128,
    pub messages: i128,
    pub cost_micros: i128,
    pub tool_calls: i128,
}

impl Totals {
    /// The figure of one metric, in its unit (micro-dollars for cost).
    pub fn get(&self, metric: Metric) -> i128 {
        match metric {
            Metric::Tokens => self.total_tokens,
            Metric::InputTokens => self.input_tokens,
            Metric::OutputTokens => self.output_tokens,
            Metric::Messages => self.messages,
            Metric::CostUsd => self.cost_micros,
            Metric::Executions => self.executions,
            Metric::ToolCalls => self.tool_calls,
        }
    }

    fn zip(self, o: Totals, f: impl Fn(i128, i128) -> i128) -> Totals {
        Totals {
            executions: f(self.executions, o.executions),
            input_tokens: f(self.input_tokens, o.input_tokens),
            output_tokens: f(self.output_tokens, o.output_tokens),
            total_tokens: f(self.total_tokens, o.total_tokens),
            messages: f(self.messages, o.messages),
            cost_micros: f(self.cost_micros, o.cost_micros),
            tool_calls: f(self.tool_calls, o.tool_calls),
        }
    }

    pub fn plus(self, o: Totals) -> Totals {
        self.zip(o, |a, b| a + b)
    }

    pub fn minus(self, o: Totals) -> Totals {
        self.zip(o, |a, b| a - b)
    }

    pub fn is_zero(&self) -> bool {
        *self == Totals::default()
    }
}

/// Who a figure is about. Organization and user ids may be nil (events
/// without them); limits never name a nil id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKey {
    Tenant(Uuid),
    Organization(Uuid, Uuid),
    User(Uuid, Uuid, Uuid),
}

/// One rollup row of billable agent executions, summed per minute and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecRow {
    pub minute: i64,
    pub tenant_id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub totals: Totals,
}

/// One rollup row of tool calls, summed per minute and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolRow {
    pub minute: i64,
    pub tenant_id: Uuid,
    pub organization_id: Uuid,
    pub calls: i128,
}

#[derive(Debug, Default)]
struct Series {
    minutes: BTreeMap<i64, Totals>,
    hours: BTreeMap<i64, Totals>,
}

impl Series {
    fn apply(&mut self, minute: i64, delta: Totals) {
        bump(&mut self.minutes, minute, delta);
        bump(&mut self.hours, minute.div_euclid(60), delta);
    }

    fn sum(&self, from: i64, to: i64) -> Totals {
        if to <= from {
            return Totals::default();
        }
        let h_from = from.div_euclid(60) + i64::from(from.rem_euclid(60) != 0);
        let h_to = to.div_euclid(60);
        if h_from >= h_to {
            return fold(self.minutes.range(from..to));
        }
        fold(self.minutes.range(from..h_from * 60)).plus(fold(self.hours.range(h_from..h_to))).plus(fold(self.minutes.range(h_to * 60..to)))
    }

    fn prune(&mut self, before: i64) {
        self.minutes = self.minutes.split_off(&before);
        // Keep an hour that is only partly pruned: sums starting at or after
        // `before` never use it as a whole hour.
        self.hours = self.hours.split_off(&before.div_euclid(60));
    }
}

fn bump<K: Ord + Copy>(map: &mut BTreeMap<K, Totals>, k: K, delta: Totals) {
    let v = map.entry(k).or_default();
    *v = v.plus(delta);
    if v.is_zero() {
        map.remove(&k);
    }
}

fn fold<'a>(it: impl Iterator<Item = (&'a i64, &'a Totals)>) -> Totals {
    it.fold(Totals::default(), |acc, (_, t)| acc.plus(*t))
}

type ExecKey = (Uuid, Uuid, Uuid);
type ToolKey = (Uuid, Uuid);

/// All counters of all tenants.
#[derive(Debug, Default)]
pub struct Counters {
    exec_keys: BTreeMap<i64, Vec<ExecKey>>,
    tool_keys: BTreeMap<i64, Vec<ToolKey>>,
    series: HashMap<SubjectKey, Series>,
    hour_sums: BTreeMap<i64, Totals>,
}

impl Counters {
    /// Usage of `subject` in minutes `[from, to)`.
    pub fn sum(&self, subject: SubjectKey, from_minute: i64, to_minute: i64) -> Totals {
        self.series.get(&subject).map(|s| s.sum(from_minute, to_minute)).unwrap_or_default()
    }

    /// The first minute in `[from, to)` with usage of `metric` by `subject`.
    pub fn first_used_minute(&self, subject: SubjectKey, metric: Metric, from: i64, to: i64) -> Option<i64> {
        let s = self.series.get(&subject)?;
        s.minutes.range(from..to).find(|(_, t)| t.get(metric) != 0).map(|(m, _)| *m)
    }

    /// Replaces minutes `[from, to)` with `exec` and `tools` (which must hold
    /// every row of those minutes: a key absent from them becomes zero).
    /// A key's figure before is its own series' minute (a user's for an
    /// execution key, an organization's tool calls for a tool key): only
    /// the difference is applied, to every level.
    pub fn replace_minutes(&mut self, from: i64, to: i64, exec: &[ExecRow], tools: &[ToolRow]) {
        let mut new_exec: BTreeMap<i64, HashMap<ExecKey, Totals>> = BTreeMap::new();
        for r in exec.iter().filter(|r| r.minute >= from && r.minute < to) {
            let e = new_exec.entry(r.minute).or_default().entry((r.tenant_id, r.organization_id, r.user_id)).or_default();
            *e = e.plus(r.totals);
        }
        let mut new_tools: BTreeMap<i64, HashMap<ToolKey, i128>> = BTreeMap::new();
        for r in tools.iter().filter(|r| r.minute >= from && r.minute < to) {
            *new_tools.entry(r.minute).or_default().entry((r.tenant_id, r.organization_id)).or_default() += r.calls;
        }

        let old_minutes: Vec<i64> = self.exec_keys.range(from..to).map(|(m, _)| *m).collect();
        let minutes: HashSet<i64> = old_minutes.into_iter().chain(new_exec.keys().copied()).collect();
        for m in minutes {
            let old_keys = self.exec_keys.remove(&m).unwrap_or_default();
            let new = new_exec.remove(&m).unwrap_or_default();
            let keys: HashSet<ExecKey> = old_keys.into_iter().chain(new.keys().copied()).collect();
            for k in keys {
                let old = self.series.get(&SubjectKey::User(k.0, k.1, k.2)).and_then(|s| s.minutes.get(&m)).copied().unwrap_or_default();
                let delta = new.get(&k).copied().unwrap_or_default().minus(old);
                if !delta.is_zero() {
                    self.apply_exec(m, k, delta);
                }
            }
            if !new.is_empty() {
                self.exec_keys.insert(m, new.into_keys().collect());
            }
        }

        let old_minutes: Vec<i64> = self.tool_keys.range(from..to).map(|(m, _)| *m).collect();
        let minutes: HashSet<i64> = old_minutes.into_iter().chain(new_tools.keys().copied()).collect();
        for m in minutes {
            let old_keys = self.tool_keys.remove(&m).unwrap_or_default();
            let new = new_tools.remove(&m).unwrap_or_default();
            let keys: HashSet<ToolKey> = old_keys.into_iter().chain(new.keys().copied()).collect();
            for k in keys {
                let old = self.series.get(&SubjectKey::Organization(k.0, k.1)).and_then(|s| s.minutes.get(&m)).map_or(0, |t| t.tool_calls);
                let d = new.get(&k).copied().unwrap_or(0) - old;
                if d != 0 {
                    let delta = Totals { tool_calls: d, ..Totals::default() };
                    self.series.entry(SubjectKey::Organization(k.0, k.1)).or_default().apply(m, delta);
                    self.series.entry(SubjectKey::Tenant(k.0)).or_default().apply(m, delta);
                    bump(&mut self.hour_sums, m.div_euclid(60), delta);
                }
            }
            if !new.is_empty() {
                self.tool_keys.insert(m, new.into_keys().collect());
            }
        }
    }

    fn apply_exec(&mut self, minute: i64, (t, o, u): ExecKey, delta: Totals) {
        self.series.entry(SubjectKey::User(t, o, u)).or_default().apply(minute, delta);
        self.series.entry(SubjectKey::Organization(t, o)).or_default().apply(minute, delta);
        self.series.entry(SubjectKey::Tenant(t)).or_default().apply(minute, delta);
        bump(&mut self.hour_sums, minute.div_euclid(60), delta);
    }

    /// The hours of `[from_hour, to_hour)` whose sums differ from `theirs`
    /// (ClickHouse's sums of the same rows per hour; an hour absent from
    /// either side sums to zero), in order.
    pub fn hours_differing(&self, from_hour: i64, to_hour: i64, theirs: &BTreeMap<i64, Totals>) -> Vec<i64> {
        let hours: std::collections::BTreeSet<i64> =
            self.hour_sums.range(from_hour..to_hour).chain(theirs.range(from_hour..to_hour)).map(|(h, _)| *h).collect();
        hours
            .into_iter()
            .filter(|h| self.hour_sums.get(h).copied().unwrap_or_default() != theirs.get(h).copied().unwrap_or_default())
            .collect()
    }

    /// Drops every minute before `before`.
    pub fn prune(&mut self, before: i64) {
        self.exec_keys = self.exec_keys.split_off(&before);
        self.tool_keys = self.tool_keys.split_off(&before);
        self.hour_sums = self.hour_sums.split_off(&before.div_euclid(60));
        self.series.retain(|_, s| {
            s.prune(before);
            !s.minutes.is_empty()
        });
    }

    /// Number of subjects held (for metrics).
    pub fn subjects(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tokens: i128) -> Totals {
        Totals { total_tokens: tokens, executions: 1, ..Totals::default() }
    }

    #[test]
    fn replace_sets_and_aggregates_levels() {
        let (ten, org, u1, u2) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4));
        let mut c = Counters::default();
        let rows = [
            ExecRow { minute: 100, tenant_id: ten, organization_id: org, user_id: u1, totals: t(10) },
            ExecRow { minute: 130, tenant_id: ten, organization_id: org, user_id: u2, totals: t(5) },
            ExecRow { minute: 250, tenant_id: ten, organization_id: org, user_id: u1, totals: t(7) },
        ];
        c.replace_minutes(0, 300, &rows, &[ToolRow { minute: 100, tenant_id: ten, organization_id: org, calls: 3 }]);
        assert_eq!(c.sum(SubjectKey::User(ten, org, u1), 0, 300).total_tokens, 17);
        assert_eq!(c.sum(SubjectKey::Organization(ten, org), 0, 300).total_tokens, 22);
        assert_eq!(c.sum(SubjectKey::Tenant(ten), 0, 300).total_tokens, 22);
        assert_eq!(c.sum(SubjectKey::Tenant(ten), 0, 300).tool_calls, 3);
        assert_eq!(c.sum(SubjectKey::User(ten, org, u1), 0, 300).tool_calls, 0);
        // Partial ranges use hours and edge minutes.
        assert_eq!(c.sum(SubjectKey::Organization(ten, org), 101, 251).total_tokens, 12);
        assert_eq!(c.sum(SubjectKey::Organization(ten, org), 100, 250).total_tokens, 15);
        assert_eq!(c.sum(SubjectKey::Organization(ten, org), 120, 240).total_tokens, 5);
        // Replacing a range that lost a row zeroes it; re-reading is idempotent.
        c.replace_minutes(200, 300, &[], &[]);
        c.replace_minutes(200, 300, &[], &[]);
        assert_eq!(c.sum(SubjectKey::User(ten, org, u1), 0, 300).total_tokens, 10);
        c.replace_minutes(0, 200, &rows, &[]);
        assert_eq!(c.sum(SubjectKey::Tenant(ten), 0, 300).total_tokens, 15);
        assert_eq!(c.sum(SubjectKey::Tenant(ten), 0, 300).tool_calls, 0);
        c.prune(120);
        assert_eq!(c.sum(SubjectKey::Tenant(ten), 120, 300).total_tokens, 5);
    }

    #[test]
    fn hour_sums_follow_every_replace_and_prune() {
        let (ten, org, u1, u2) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4));
        let row = |minute, user, tokens| ExecRow { minute, tenant_id: ten, organization_id: org, user_id: user, totals: t(tokens) };
        let tool = |minute, calls| ToolRow { minute, tenant_id: ten, organization_id: org, calls };
        let mut c = Counters::default();
        c.replace_minutes(0, 240, &[row(10, u1, 5), row(50, u2, 7), row(130, u1, 1)], &[tool(70, 4)]);
        let theirs = |rows: &[(i64, Totals)]| rows.iter().copied().collect::<BTreeMap<i64, Totals>>();
        let h0 = t(5).plus(t(7));
        let h1 = Totals { tool_calls: 4, ..Totals::default() };
        assert!(c.hours_differing(0, 4, &theirs(&[(0, h0), (1, h1), (2, t(1))])).is_empty());
        // A row ClickHouse has and the counters do not, one they hold and it
        // has no more, a difference outside the hours compared.
        let more = theirs(&[(0, h0.plus(t(1))), (1, h1), (5, t(9))]);
        assert_eq!(c.hours_differing(0, 4, &more), vec![0, 2]);
        // Replacing a minute moves its hour's sums by the difference only.
        c.replace_minutes(50, 51, &[row(50, u2, 8)], &[]);
        assert_eq!(c.hours_differing(0, 3, &theirs(&[(0, t(5).plus(t(8))), (1, h1), (2, t(1))])), Vec::<i64>::new());
        c.prune(120);
        assert_eq!(c.hours_differing(0, 3, &theirs(&[(2, t(1))])), Vec::<i64>::new());
    }

    #[test]
    fn repeated_replaces_equal_the_rows_last_read() {
        // Random re-reads of random ranges, as deltas and reconciles make
        // them: every level's sums and the hour sums must equal those of the
        // rows each minute was last read with.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let ten = Uuid::from_u128(1);
        let org = |i: u64| Uuid::from_u128(u128::from(10 + i));
        let user = |i: u64| Uuid::from_u128(u128::from(20 + i));
        let mut c = Counters::default();
        let mut model: BTreeMap<i64, (Vec<ExecRow>, Vec<ToolRow>)> = BTreeMap::new();
        for _ in 0..300 {
            let from = next(240) as i64;
            let to = from + 1 + next(90) as i64;
            let mut exec = Vec::new();
            let mut tools = Vec::new();
            for _ in 0..next(12) {
                let minute = from + next((to - from) as u64) as i64;
                let totals = Totals { executions: 1, total_tokens: next(50) as i128, cost_micros: next(7) as i128, ..Totals::default() };
                exec.push(ExecRow { minute, tenant_id: ten, organization_id: org(next(3)), user_id: user(next(4)), totals });
            }
            for _ in 0..next(6) {
                let minute = from + next((to - from) as u64) as i64;
                tools.push(ToolRow { minute, tenant_id: ten, organization_id: org(next(3)), calls: 1 + next(5) as i128 });
            }
            c.replace_minutes(from, to, &exec, &tools);
            for m in from..to {
                let e = exec.iter().filter(|r| r.minute == m).copied().collect();
                let t = tools.iter().filter(|r| r.minute == m).copied().collect();
                model.insert(m, (e, t));
            }
        }
        let of = |subject: SubjectKey, from: i64, to: i64| {
            let mut sum = Totals::default();
            for (_, (exec, tools)) in model.range(from..to) {
                for r in exec {
                    let hit = match subject {
                        SubjectKey::Tenant(_) => true,
                        SubjectKey::Organization(_, o) => r.organization_id == o,
                        SubjectKey::User(_, o, u) => r.organization_id == o && r.user_id == u,
                    };
                    if hit {
                        sum = sum.plus(r.totals);
                    }
                }
                for r in tools {
                    if matches!(subject, SubjectKey::Tenant(_)) || subject == SubjectKey::Organization(ten, r.organization_id) {
                        sum.tool_calls += r.calls;
                    }
                }
            }
            sum
        };
        let mut subjects = vec![SubjectKey::Tenant(ten)];
        for o in 0..3 {
            subjects.push(SubjectKey::Organization(ten, org(o)));
            subjects.extend((0..4).map(|u| SubjectKey::User(ten, org(o), user(u))));
        }
        for subject in subjects {
            for (from, to) in [(0, 400), (17, 133), (60, 180), (59, 61), (100, 101)] {
                assert_eq!(c.sum(subject, from, to), of(subject, from, to), "{subject:?} {from}..{to}");
            }
        }
        let hours: BTreeMap<i64, Totals> =
            (0..7).map(|h| (h, of(SubjectKey::Tenant(ten), h * 60, h * 60 + 60))).filter(|(_, t)| !t.is_zero()).collect();
        assert_eq!(c.hours_differing(0, 7, &hours), Vec::<i64>::new());
    }

    #[test]
    fn sums_match_brute_force() {
        let (ten, org, u) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let rows: Vec<ExecRow> = (0..400)
            .filter(|m| m % 7 == 0 || m % 11 == 0)
            .map(|m| ExecRow { minute: m, tenant_id: ten, organization_id: org, user_id: u, totals: t(m as i128) })
            .collect();
        let mut c = Counters::default();
        c.replace_minutes(0, 400, &rows, &[]);
        for from in (0..400).step_by(13) {
            for to in (from..=400).step_by(17) {
                let expect: i128 = rows.iter().filter(|r| r.minute >= from && r.minute < to).map(|r| r.totals.total_tokens).sum();
                assert_eq!(c.sum(SubjectKey::User(ten, org, u), from, to).total_tokens, expect, "{from}..{to}");
            }
        }
    }
}
