//! Known events for a tenant and the independent computations the tests
//! compare the API with.

use std::collections::{BTreeMap, BTreeSet};

use agentmeter_api::queries::analytics::tool_calls::CallStats;
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Duration, DurationRound, Utc};
use uuid::Uuid;

/// Deterministic pseudo-random numbers (no dependency, reproducible).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
pub struct Nav {
    pub instance: Uuid,
    pub navigator_id: Uuid,
    pub project: Uuid,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub id: Uuid,
    pub name: String,
    pub server_id: Uuid,
    pub server_instance: Uuid,
    pub server_name: String,
}

#[derive(Debug, Clone)]
pub struct User {
    pub token: Uuid,
    pub email: String,
}

/// The entities and events of one tenant.
#[derive(Debug, Clone)]
pub struct World {
    pub projects: Vec<Uuid>,
    pub navs: Vec<Nav>,
    pub tools: Vec<Tool>,
    pub users: Vec<User>,
    pub rows: Vec<ToolCallRow>,
    /// One `navigator_query` execution per query (where queries are
    /// counted), at the query's start: no tokens, no cost, not billable.
    pub executions: Vec<AgentExecutionRow>,
}

const ERROR_TYPES: &[&str] = &["timeout", "authentication", "rate_limit", "upstream", ""];

pub fn blank(tenant: Uuid, at: DateTime<Utc>) -> ToolCallRow {
    ToolCallRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: tenant,
        project_id: Uuid::nil(),
        project_name: String::new(),
        navigator_id: Uuid::nil(),
        navigator_instance_id: Uuid::nil(),
        navigator_name: String::new(),
        query_id: Uuid::nil(),
        call_kind: "tool".into(),
        suggestions_count: 0,
        server_id: Uuid::nil(),
        server_name: String::new(),
        server_instance_id: Uuid::nil(),
        tool_id: Uuid::nil(),
        tool_name: "standalone".into(),
        user_token_id: Uuid::nil(),
        user_email: String::new(),
        organization_id: Uuid::nil(),
        agent_id: Uuid::nil(),
        agent_execution_id: Uuid::nil(),
        latency_ms: 1.0,
        runtime_ms: None,
        success: true,
        error_type: String::new(),
        error_message: String::new(),
    }
}

/// The `navigator_query` execution of query `query` at `at`, with the
/// project and navigator of `call` and nothing billable.
pub fn query_execution(query: Uuid, at: DateTime<Utc>, call: &ToolCallRow) -> AgentExecutionRow {
    AgentExecutionRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: call.tenant_id,
        execution_id: query,
        execution_kind: "navigator_query".into(),
        billable: false,
        organization_id: Uuid::nil(),
        user_id: Uuid::nil(),
        agent_id: Uuid::nil(),
        conversation_id: Uuid::nil(),
        plan_id: Uuid::nil(),
        project_id: call.project_id,
        project_name: call.project_name.clone(),
        navigator_id: call.navigator_id,
        navigator_instance_id: call.navigator_instance_id,
        user_token_id: call.user_token_id,
        user_email: call.user_email.clone(),
        model: String::new(),
        input_tokens: 0,
        output_tokens: 0,
        total_tokens: 0,
        cost_usd: 0,
        cost_known: true,
        messages_count: 0,
        duration_ms: None,
        status: "success".into(),
        error_type: String::new(),
        error_message: String::new(),
        query_text: None,
    }
}

/// Milliseconds-precision instant (what ClickHouse stores).
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

impl World {
    /// `queries` queries (an execution, then 1–4 tool calls, plus proxy
    /// calls) spread over the last 45 days before `now`, and a few calls
    /// without query. A query's events fall in one minute, so a query is
    /// in a (minute-aligned) range whether it is counted at its execution
    /// (as the API does) or from its tool calls (as [`Figures`] does).
    /// `tool_names` are shared between tenants on purpose.
    pub fn generate(tenant: Uuid, seed: u64, queries: usize, now: DateTime<Utc>, label: &str) -> World {
        let mut rng = Rng::new(seed);
        let projects = vec![Uuid::new_v4(), Uuid::new_v4()];
        let navs: Vec<Nav> = (0..3)
            .map(|i| Nav {
                instance: Uuid::new_v4(),
                navigator_id: Uuid::new_v4(),
                project: projects[i % 2],
                name: format!("{label}-navigator-{i}"),
            })
            .collect();
        let servers: Vec<(Uuid, Uuid, String)> = (0..3).map(|i| (Uuid::new_v4(), Uuid::new_v4(), format!("{label}-server-{i}"))).collect();
        let tool_names = ["search", "create_issue", "read_file", &format!("{label}_only_tool"), "send_mail"];
        let tools: Vec<Tool> = tool_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let s = &servers[i % 3];
                Tool { id: Uuid::new_v4(), name: (*n).to_owned(), server_id: s.0, server_instance: s.1, server_name: s.2.clone() }
            })
            .collect();
        let users: Vec<User> = (0..4).map(|i| User { token: Uuid::new_v4(), email: format!("user{i}@{label}.example") }).collect();
        let mut rows = Vec::new();
        let mut executions = Vec::new();
        for _ in 0..queries {
            // Ages: 40 % in the last day, 30 % 2-5 days, 20 % 10-20 days, 10 % 35-45 days.
            let bucket = rng.below(10);
            let (lo, hi) = match bucket {
                0..=3 => (10 * 60, 23 * 3600),
                4..=6 => (2 * 86_400, 5 * 86_400),
                7..=8 => (10 * 86_400, 20 * 86_400),
                _ => (35 * 86_400, 45 * 86_400),
            };
            let age_ms = (lo + rng.below(hi - lo)) as i64 * 1000 + rng.below(1000) as i64;
            let at = now - Duration::milliseconds(age_ms);
            // At most 7 events one second apart: all in the start's minute.
            let start = ms(at.duration_trunc(Duration::minutes(1)).unwrap() + Duration::milliseconds(age_ms % 45_000));
            let start = if start >= now { start - Duration::minutes(1) } else { start };
            let nav = &navs[rng.below(navs.len() as u64) as usize];
            let user = &users[rng.below(users.len() as u64) as usize];
            let query = Uuid::new_v4();
            let base = |at: DateTime<Utc>| {
                let mut r = blank(tenant, at);
                r.project_id = nav.project;
                r.navigator_id = nav.navigator_id;
                r.navigator_instance_id = nav.instance;
                r.navigator_name = nav.name.clone();
                r.query_id = query;
                r.user_token_id = user.token;
                r.user_email = user.email.clone();
                r
            };
            executions.push(query_execution(query, start, &base(start)));
            let mut offset = 0;
            if rng.chance(50) {
                let mut r = base(start);
                r.call_kind = "suggest_tools".into();
                r.tool_name = "suggest_tools".into();
                r.suggestions_count = 1 + rng.below(5) as u32;
                r.latency_ms = 3.0 + rng.below(50) as f64;
                rows.push(r);
                offset += 1;
            }
            if rng.chance(30) {
                let mut r = base(start + Duration::seconds(offset));
                r.call_kind = "get_tool_schemas".into();
                r.tool_name = "get_tool_schemas".into();
                r.latency_ms = 2.0 + rng.below(20) as f64;
                rows.push(r);
                offset += 1;
            }
            let calls = 1 + rng.below(4);
            for _ in 0..calls {
                let tool = &tools[rng.below(tools.len() as u64) as usize];
                let mut r = base(start + Duration::seconds(offset));
                offset += 1;
                r.tool_id = tool.id;
                r.tool_name = tool.name.clone();
                r.server_id = tool.server_id;
                r.server_instance_id = tool.server_instance;
                r.server_name = tool.server_name.clone();
                r.latency_ms = 5.0 + rng.below(2000) as f64 + rng.below(1000) as f64 / 1000.0;
                if rng.chance(50) {
                    r.runtime_ms = Some(r.latency_ms * 1.5 + rng.below(100) as f64);
                }
                if rng.chance(15) {
                    r.success = false;
                    r.error_type = ERROR_TYPES[rng.below(ERROR_TYPES.len() as u64) as usize].to_owned();
                    r.error_message = "failed".into();
                }
                rows.push(r);
            }
            if rng.chance(30) {
                let mut r = base(start + Duration::seconds(offset));
                r.call_kind = "invoke_tools".into();
                r.tool_name = "invoke_tools".into();
                r.latency_ms = 10.0;
                rows.push(r);
            }
        }
        // Calls outside any query, navigator, project or user.
        for i in 0..10 {
            let mut r = blank(tenant, ms(now - Duration::hours(2 + i)));
            r.latency_ms = 100.0 + i as f64;
            rows.push(r);
        }
        World { projects, navs, tools, users, rows, executions }
    }

    /// Every string that identifies this tenant's data and no other's.
    pub fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self.projects.iter().map(|p| p.to_string()).collect();
        for n in &self.navs {
            s.push(n.instance.to_string());
            s.push(n.navigator_id.to_string());
            s.push(n.name.clone());
        }
        for t in &self.tools {
            s.push(t.id.to_string());
            s.push(t.server_id.to_string());
            s.push(t.server_instance.to_string());
            s.push(t.server_name.clone());
        }
        for u in &self.users {
            s.push(u.token.to_string());
            s.push(u.email.clone());
        }
        s.push(self.tools[3].name.clone());
        s
    }
}

/// Filters of an expectation.
#[derive(Debug, Clone, Default)]
pub struct Filt {
    pub project: Option<Uuid>,
    pub nav_instance: Option<Uuid>,
    pub server_instance: Option<Uuid>,
    pub tool_id: Option<Uuid>,
    pub tool_name: Option<String>,
    pub user: Option<Uuid>,
}

/// Which call kinds an expectation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    Tool,
    Proxy,
}

/// The rows of `rows` in `[from, to)` matching the filters.
pub fn select<'a>(rows: &'a [ToolCallRow], from: DateTime<Utc>, to: DateTime<Utc>, kinds: Kinds, f: &Filt) -> Vec<&'a ToolCallRow> {
    rows.iter()
        .filter(|r| r.occurred_at >= from && r.occurred_at < to)
        .filter(|r| match kinds {
            Kinds::Tool => r.call_kind == "tool",
            Kinds::Proxy => r.call_kind != "tool",
        })
        .filter(|r| f.project.is_none_or(|v| r.project_id == v))
        .filter(|r| f.nav_instance.is_none_or(|v| r.navigator_instance_id == v))
        .filter(|r| f.server_instance.is_none_or(|v| r.server_instance_id == v))
        .filter(|r| f.tool_id.is_none_or(|v| r.tool_id == v))
        .filter(|r| f.tool_name.as_ref().is_none_or(|v| &r.tool_name == v))
        .filter(|r| f.user.is_none_or(|v| r.user_token_id == v))
        .collect()
}

/// Figures of a set of calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub calls: u64,
    pub errors: u64,
    pub queries: u64,
    pub latency_sum_ms: f64,
    pub runtime_count: u64,
    pub runtime_sum_ms: f64,
    pub latencies: Vec<f64>,
}

impl Figures {
    pub fn of(rows: &[&ToolCallRow]) -> Figures {
        let queries: BTreeSet<Uuid> = rows.iter().filter(|r| !r.query_id.is_nil()).map(|r| r.query_id).collect();
        let mut latencies: Vec<f64> = rows.iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Figures {
            calls: rows.len() as u64,
            errors: rows.iter().filter(|r| !r.success).count() as u64,
            queries: queries.len() as u64,
            latency_sum_ms: rows.iter().map(|r| r.latency_ms).sum(),
            runtime_count: rows.iter().filter(|r| r.runtime_ms.is_some()).count() as u64,
            runtime_sum_ms: rows.iter().filter_map(|r| r.runtime_ms).sum(),
            latencies,
        }
    }
    pub fn avg_latency_s(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.latency_sum_ms / self.calls as f64 / 1000.0
        }
    }
    pub fn avg_runtime_s(&self) -> f64 {
        if self.runtime_count == 0 {
            0.0
        } else {
            self.runtime_sum_ms / self.runtime_count as f64 / 1000.0
        }
    }
    /// Exact percentile (nearest rank) in ms.
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let idx = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[idx]
    }
}

/// Count per key, for group-by expectations.
pub fn count_by<K: Ord>(rows: &[&ToolCallRow], key: impl Fn(&ToolCallRow) -> Option<K>) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(k) = key(r) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

/// Distinct non-nil queries per key.
pub fn queries_by<K: Ord + Clone>(rows: &[&ToolCallRow], key: impl Fn(&ToolCallRow) -> Option<K>) -> BTreeMap<K, u64> {
    let mut m: BTreeMap<K, BTreeSet<Uuid>> = BTreeMap::new();
    for r in rows {
        if let Some(k) = key(r) {
            let set = m.entry(k).or_default();
            if !r.query_id.is_nil() {
                set.insert(r.query_id);
            }
        }
    }
    m.into_iter().map(|(k, v)| (k, v.len() as u64)).collect()
}

/// Asserts two floats agree to `eps` (absolute).
#[track_caller]
pub fn close(actual: &serde_json::Value, expected: f64, eps: f64, what: &str) {
    let a = actual.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!((a - expected).abs() <= eps, "{what}: got {a}, expected {expected}");
}

/// Two sets of call statistics of the same events agree: counts exactly,
/// latency and runtime sums to 1e-6, percentiles within 10 % of 3 s (each
/// side merges its own t-digest states).
pub fn assert_same_stats(got: &CallStats, want: &CallStats, what: &str) {
    assert_eq!(
        (got.calls, got.errors, got.queries, got.suggestions, got.runtime_count),
        (want.calls, want.errors, want.queries, want.suggestions, want.runtime_count),
        "{what}"
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
    assert!(close(got.latency_sum_ms, want.latency_sum_ms), "{what}: latency sum {} vs {}", got.latency_sum_ms, want.latency_sum_ms);
    assert!(close(got.runtime_sum_ms, want.runtime_sum_ms), "{what}: runtime sum {} vs {}", got.runtime_sum_ms, want.runtime_sum_ms);
    for i in 0..3 {
        let (a, m) = (got.latency_pct_ms(i), want.latency_pct_ms(i));
        assert!((a - m).abs() <= 0.1 * 3000.0, "{what}: percentile {i}: {a} vs {m}");
    }
}
