//! Realistic event traffic for `agentmeter-loadgen`, the benchmarks and the
//! ingest tests.
//!
//! [`Generator`] produces Kafka messages of both kinds for a few tenants:
//! projects, navigators, servers, tools, users and organisations with skewed
//! (Zipf-like) popularity, log-normal latencies, an error mix, and *queries*
//! (agent executions of kind `navigator_query` whose tool calls share their
//! `query_id`). On request it mixes in duplicates (the same bytes sent again,
//! some right away, some much later) and bad messages of every rejection kind.
//!
//! Every valid event is also returned as an [`Expected`] record so that a
//! test can compute the totals it expects without trusting the pipeline.
//! The same seed gives the same traffic (apart from `occurred_at`, which
//! follows the clock passed in).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

/// Demo tenant A (also in `dev/api-keys.toml`).
pub const TENANT_A: Uuid = Uuid::from_u128(0x11111111_1111_4111_8111_111111111111);
/// Demo tenant B.
pub const TENANT_B: Uuid = Uuid::from_u128(0x22222222_2222_4222_8222_222222222222);

/// The two event topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ToolCall,
    AgentExecution,
}

/// The rejection kinds a bad message is built to trigger (the
/// `agentmeter-reason` header the dead-letter copy must carry).
pub const BAD_REASONS: [&str; 5] = ["invalid_json", "wrong_type", "missing_field", "invalid_value", "too_large"];

/// What a valid event contributes to the totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub success: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Decimal,
    pub messages: u64,
}

/// One Kafka message to produce.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// Set for a valid event (also for a duplicate of one).
    pub expected: Option<Expected>,
    /// Set for a bad message: the reason the worker must give.
    pub bad_reason: Option<&'static str>,
    /// Whether this message repeats an earlier one.
    pub duplicate: bool,
}

/// Traffic settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub tenants: Vec<Uuid>,
    /// Fraction of messages that repeat an earlier message.
    pub duplicate_ratio: f64,
    /// Fraction of messages that are bad.
    pub bad_ratio: f64,
    /// Spread `occurred_at` uniformly over this many past hours (0: now).
    pub backfill_hours: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { seed: 1, tenants: vec![TENANT_A, TENANT_B], duplicate_ratio: 0.0, bad_ratio: 0.0, backfill_hours: 0.0 }
    }
}

struct Dimensions {
    projects: Vec<Uuid>,
    navigators: Vec<(Uuid, Uuid, String)>,
    servers: Vec<(Uuid, Uuid, String)>,
    tools: Vec<(Uuid, String, usize)>,
    users: Vec<(Uuid, String)>,
    orgs: Vec<Uuid>,
    models: Vec<(&'static str, Decimal, Decimal)>,
}

fn seeded_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

impl Dimensions {
    fn new(rng: &mut StdRng) -> Self {
        let projects = (0..4).map(|_| seeded_uuid(rng)).collect();
        let navigators = (0..6).map(|i| (seeded_uuid(rng), seeded_uuid(rng), format!("navigator-{i}"))).collect();
        let server_names = ["github", "slack", "jira", "postgres", "search", "calendar", "drive", "crm"];
        let servers: Vec<(Uuid, Uuid, String)> = server_names.iter().map(|n| (seeded_uuid(rng), seeded_uuid(rng), n.to_string())).collect();
        let verbs = ["list", "get", "create", "update", "search", "delete"];
        let mut tools = Vec::new();
        for (s, (_, _, name)) in servers.iter().enumerate() {
            for v in verbs.iter().take(2 + s % 4) {
                tools.push((seeded_uuid(rng), format!("{name}_{v}"), s));
            }
        }
        let users = (0..40).map(|i| (seeded_uuid(rng), format!("user{i}@example.com"))).collect();
        let orgs = (0..5).map(|_| seeded_uuid(rng)).collect();
        let models = vec![
            ("gpt-4o", Decimal::new(25, 7), Decimal::new(10, 6)),
            ("gpt-4o-mini", Decimal::new(15, 8), Decimal::new(6, 7)),
            ("claude-sonnet", Decimal::new(3, 6), Decimal::new(15, 6)),
        ];
        Self { projects, navigators, servers, tools, users, orgs, models }
    }
}

/// The traffic generator.
pub struct Generator {
    rng: StdRng,
    settings: Settings,
    dims: Dimensions,
    /// Messages waiting to be returned (the tool calls of a query).
    queue: std::collections::VecDeque<Message>,
    /// Recently produced valid messages, for far-apart duplicates.
    history: Vec<Message>,
    bad_counter: usize,
}

/// Index with a skewed (roughly Zipf) popularity: low indexes are common.
fn skewed(rng: &mut StdRng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((u * u * u) * n as f64) as usize % n
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    (median.ln() + sigma * normal(rng)).exp()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const ERROR_TYPES: [&str; 7] = ["timeout", "authentication", "rate_limit", "validation", "upstream", "internal", "other"];

impl Generator {
    pub fn new(settings: Settings) -> Self {
        assert!(!settings.tenants.is_empty(), "at least one tenant");
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let dims = Dimensions::new(&mut rng);
        Self { rng, settings, dims, queue: Default::default(), history: Vec::new(), bad_counter: 0 }
    }

    /// The projects of the traffic, most used first (the skew favours low
    /// indexes).
    pub fn projects(&self) -> &[Uuid] {
        &self.dims.projects
    }

    /// The next message, with `occurred_at` relative to `now`.
    pub fn next_message(&mut self, now: DateTime<Utc>) -> Message {
        let roll: f64 = self.rng.random();
        if roll < self.settings.bad_ratio {
            return self.bad(now);
        }
        if roll < self.settings.bad_ratio + self.settings.duplicate_ratio && !self.history.is_empty() {
            // Half right after the original, half from anywhere earlier.
            let n = self.history.len();
            let i = if self.rng.random_bool(0.5) { n - 1 - self.rng.random_range(0..n.min(20)) } else { self.rng.random_range(0..n) };
            let mut m = self.history[i].clone();
            m.duplicate = true;
            return m;
        }
        let m = match self.queue.pop_front() {
            Some(m) => m,
            None => self.fresh(now),
        };
        if self.settings.duplicate_ratio <= 0.0 {
            // No duplicates asked for: keep no history (a clone per event).
        } else if self.history.len() < 200_000 {
            self.history.push(m.clone());
        } else {
            let i = self.rng.random_range(0..self.history.len());
            self.history[i] = m.clone();
        }
        m
    }

    fn occurred_at(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.settings.backfill_hours <= 0.0 {
            return now;
        }
        let back_ms = (self.rng.random::<f64>() * self.settings.backfill_hours * 3_600_000.0) as i64;
        now - Duration::milliseconds(back_ms)
    }

    /// A new valid event; queries queue their tool calls behind the execution.
    fn fresh(&mut self, now: DateTime<Utc>) -> Message {
        let tenant = self.settings.tenants[skewed(&mut self.rng, self.settings.tenants.len())];
        let at = self.occurred_at(now);
        let (user_id, email) = self.dims.users[skewed(&mut self.rng, self.dims.users.len())].clone();
        let org = self.dims.orgs[skewed(&mut self.rng, self.dims.orgs.len())];
        let project = self.dims.projects[skewed(&mut self.rng, self.dims.projects.len())];
        let (nav_id, nav_instance, nav_name) = self.dims.navigators[skewed(&mut self.rng, self.dims.navigators.len())].clone();
        let kind_roll: f64 = self.rng.random();
        let execution_kind = match kind_roll {
            r if r < 0.45 => "navigator_query",
            r if r < 0.75 => "agent_chat",
            r if r < 0.9 => "ai_completion",
            _ => "external_agent_call",
        };
        let event_id = seeded_uuid(&mut self.rng);
        let (model, in_price, out_price) = self.dims.models[skewed(&mut self.rng, self.dims.models.len())];
        let input_tokens = log_normal(&mut self.rng, 800.0, 1.0).round() as u64;
        let output_tokens = log_normal(&mut self.rng, 300.0, 0.9).round() as u64;
        let cost = (in_price * Decimal::from(input_tokens) + out_price * Decimal::from(output_tokens)).round_dp(6);
        let failed = self.rng.random_bool(0.04);
        let messages = 1 + skewed(&mut self.rng, 6) as u64;
        let mut exec = json!({
            "event_id": event_id, "occurred_at": rfc3339(at), "tenant_id": tenant,
            "execution_id": event_id, "execution_kind": execution_kind, "billable": true,
            "organization_id": org, "user_id": user_id, "user_email": email, "project_id": project,
            "model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cost_usd": cost.to_string(), "messages_count": messages,
            "duration_ms": (log_normal(&mut self.rng, 2500.0, 0.8) * 1000.0).round() / 1000.0,
            "status": if failed { "failed" } else { "success" },
        });
        if failed {
            exec["error_type"] = json!(ERROR_TYPES[skewed(&mut self.rng, ERROR_TYPES.len())]);
            exec["error_message"] = json!("the agent run failed");
        }
        if execution_kind == "navigator_query" {
            exec["navigator_id"] = json!(nav_id);
            exec["navigator_instance_id"] = json!(nav_instance);
            let calls = 1 + skewed(&mut self.rng, 5);
            for i in 0..calls {
                let call_at = at + Duration::milliseconds(50 * i as i64);
                let tc = self.tool_call(tenant, call_at, Some(event_id), &user_id, &email, org, project, (nav_id, nav_instance, &nav_name));
                self.queue.push_back(tc);
            }
        }
        Message {
            kind: Kind::AgentExecution,
            key: event_id.to_string().into_bytes(),
            payload: serde_json::to_vec(&exec).expect("json"),
            expected: Some(Expected {
                event_id,
                tenant_id: tenant,
                success: !failed,
                input_tokens,
                output_tokens,
                cost_usd: cost,
                messages,
            }),
            bad_reason: None,
            duplicate: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tool_call(
        &mut self,
        tenant: Uuid,
        at: DateTime<Utc>,
        query_id: Option<Uuid>,
        user_token: &Uuid,
        email: &str,
        org: Uuid,
        project: Uuid,
        nav: (Uuid, Uuid, &str),
    ) -> Message {
        let event_id = seeded_uuid(&mut self.rng);
        let (tool_id, tool_name, server) = self.dims.tools[skewed(&mut self.rng, self.dims.tools.len())].clone();
        let (server_id, server_instance, server_name) = self.dims.servers[server].clone();
        let success = !self.rng.random_bool(0.06);
        let call_kind = match self.rng.random_range(0..20) {
            0 => "suggest_tools",
            1 => "get_tool_schemas",
            2 => "invoke_tools",
            _ => "tool",
        };
        let latency = (log_normal(&mut self.rng, 180.0, 0.9) * 1000.0).round() / 1000.0;
        let mut v = json!({
            "event_id": event_id, "occurred_at": rfc3339(at), "tenant_id": tenant,
            "project_id": project, "navigator_id": nav.0, "navigator_instance_id": nav.1, "navigator_name": nav.2,
            "call_kind": call_kind, "server_id": server_id, "server_instance_id": server_instance,
            "server_name": server_name, "tool_id": tool_id, "tool_name": tool_name,
            "user_token_id": user_token, "user_email": email, "organization_id": org,
            "latency_ms": latency, "runtime_ms": (latency * 0.8 * 1000.0).round() / 1000.0, "success": success,
        });
        if let Some(q) = query_id {
            v["query_id"] = json!(q);
            v["agent_execution_id"] = json!(q);
        }
        if call_kind == "suggest_tools" {
            v["suggestions_count"] = json!(self.rng.random_range(1..10));
        }
        if !success {
            v["error_type"] = json!(ERROR_TYPES[skewed(&mut self.rng, ERROR_TYPES.len())]);
            v["error_message"] = json!("upstream said no");
        }
        Message {
            kind: Kind::ToolCall,
            key: event_id.to_string().into_bytes(),
            payload: serde_json::to_vec(&v).expect("json"),
            expected: Some(Expected {
                event_id,
                tenant_id: tenant,
                success,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: Decimal::ZERO,
                messages: 0,
            }),
            bad_reason: None,
            duplicate: false,
        }
    }

    /// A bad message; the kinds rotate so every kind appears.
    fn bad(&mut self, now: DateTime<Utc>) -> Message {
        let reason = BAD_REASONS[self.bad_counter % BAD_REASONS.len()];
        self.bad_counter += 1;
        let kind = if self.rng.random_bool(0.5) { Kind::ToolCall } else { Kind::AgentExecution };
        let id = seeded_uuid(&mut self.rng);
        let tenant = self.settings.tenants[0];
        let base: Value = match kind {
            Kind::ToolCall => json!({"event_id": id, "occurred_at": rfc3339(now), "tenant_id": tenant,
                                     "tool_name": "search", "latency_ms": 12.5, "success": true}),
            Kind::AgentExecution => json!({"event_id": id, "occurred_at": rfc3339(now), "tenant_id": tenant,
                                           "input_tokens": 10, "cost_usd": "0.01"}),
        };
        let payload = match reason {
            "invalid_json" => b"{\"event_id\": \"not closed".to_vec(),
            "wrong_type" => {
                let mut v = base;
                v["tenant_id"] = json!(12345);
                serde_json::to_vec(&v).expect("json")
            }
            "missing_field" => {
                let mut v = base;
                v.as_object_mut().expect("object").remove("event_id");
                serde_json::to_vec(&v).expect("json")
            }
            "invalid_value" => {
                let mut v = base;
                v["occurred_at"] = json!(rfc3339(now + Duration::hours(3)));
                serde_json::to_vec(&v).expect("json")
            }
            _ => {
                let mut v = base;
                v["padding"] = json!("x".repeat(70 * 1024));
                serde_json::to_vec(&v).expect("json")
            }
        };
        Message { kind, key: id.to_string().into_bytes(), payload, expected: None, bad_reason: Some(reason), duplicate: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_what_it_claims() {
        let now = Utc::now();
        let mut g = Generator::new(Settings { duplicate_ratio: 0.05, bad_ratio: 0.05, backfill_hours: 2.0, ..Settings::default() });
        let mut reasons = std::collections::HashSet::new();
        let mut queries = 0;
        for _ in 0..5_000 {
            let m = g.next_message(now);
            match (m.kind, &m.expected, m.bad_reason) {
                (Kind::ToolCall, Some(e), None) => {
                    let ev = agentmeter_schema::parse_tool_call(&m.payload, now).expect("valid tool call");
                    assert_eq!(ev.event_id, e.event_id);
                    assert_eq!(ev.success, e.success);
                    if ev.query_id.is_some() {
                        queries += 1;
                    }
                }
                (Kind::AgentExecution, Some(e), None) => {
                    let ev = agentmeter_schema::parse_agent_execution(&m.payload, now).expect("valid execution");
                    assert_eq!((ev.event_id, ev.cost_usd, ev.input_tokens), (e.event_id, e.cost_usd, e.input_tokens));
                    assert_eq!(u64::from(ev.messages_count), e.messages);
                }
                (kind, None, Some(reason)) => {
                    let r = match kind {
                        Kind::ToolCall => agentmeter_schema::parse_tool_call(&m.payload, now).unwrap_err(),
                        Kind::AgentExecution => agentmeter_schema::parse_agent_execution(&m.payload, now).unwrap_err(),
                    };
                    assert_eq!(r.kind.as_str(), reason);
                    reasons.insert(reason);
                }
                other => panic!("inconsistent message {other:?}"),
            }
        }
        assert_eq!(reasons.len(), BAD_REASONS.len());
        assert!(queries > 100);
    }
}
