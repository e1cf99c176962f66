//! From OpenTelemetry GenAI spans to our events. The table in
//! `docs/ingest.md` ("OTLP spans") is the reference; in short:
//!
//! * `gen_ai.operation.name = execute_tool` → a tool call;
//! * `invoke_agent` / `invoke_workflow` → an agent execution of kind
//!   `navigator_query`: an agent run is a query, so it counts in the query
//!   figures (zero-call runs too) like a navigator's;
//! * `chat` / `text_completion` / `generate_content` → an `ai_completion`
//!   execution, unless an enclosing agent span of the same message reports
//!   token usage itself (then its tokens are already in the agent's row and
//!   counting the completion too would bill them twice);
//! * any other span is skipped (and counted by the caller).
//!
//! A tool call's `query_id` and `agent_execution_id` are the id of its
//! agent span, found by walking the parent links within the message, or,
//! when the walk leaves the message first, derived from the first ancestor
//! the message does not hold ([`Enclosing`]): agent and tool spans need not
//! travel together. A span without a cost (no attribute, no price) becomes
//! an event with `cost_known: false`, never a cost of 0.
//!
//! Each mapped span becomes a JSON event that goes through the very parser
//! JSON events go through (`agentmeter_schema::parse_*`), so an OTLP span
//! is held to the same contract and refused with the same reasons. This
//! module never drops anything silently: every span ends as a row, a
//! counted skip, or a rejection carrying the span's ids.

use std::collections::HashMap;

use agentmeter_schema::event::ErrorType;
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use agentmeter_schema::{parse_agent_execution, parse_tool_call, Rejection};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::attributes::Attributes;
use super::ids::{id_for, span_uuid};
use super::prices::PriceTable;

/// Where our dimensions come from, and how cost is computed.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    pub tenant_attribute: String,
    pub organization_attribute: String,
    pub project_attribute: String,
    pub user_attribute: String,
    /// Every span belongs to this tenant (single-tenant setups); the tenant
    /// attribute is then not read.
    pub fixed_tenant: Option<Uuid>,
    pub prices: PriceTable,
}

/// Span attribute that carries a cost already computed by the producer
/// (decimal string or number, US dollars); it wins over the price table.
pub const COST_ATTRIBUTE: &str = "agentmeter.cost_usd";

/// Why a span produced no row (metric label values of
/// `agentmeter_ingest_otlp_spans_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No `gen_ai.operation.name`.
    NotGenAi,
    /// A GenAI operation we do not meter (`embeddings`, `create_agent`, ...).
    OtherOperation,
    /// A completion whose tokens the enclosing agent span already reports.
    AccountedByAgent,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotGenAi => "skipped_not_genai",
            Skip::OtherOperation => "skipped_other_operation",
            Skip::AccountedByAgent => "skipped_accounted_by_agent",
        }
    }
}

/// A span as an event: the row the parser made of it, and the JSON event
/// it was parsed from (what the worker produces to the event's JSON topic).
#[derive(Debug, Clone)]
pub struct Event<R> {
    pub row: R,
    pub json: Vec<u8>,
}

/// What became of one span.
#[derive(Debug, Clone)]
pub enum Mapped {
    ToolCall(Box<Event<ToolCallRow>>),
    /// An agent execution or a completion (`execution_kind` says which).
    Execution(Box<Event<AgentExecutionRow>>),
    Skipped(Skip),
    /// A GenAI span that breaks the contract: dead-lettered with its ids and
    /// a request holding just this span (with its resource and scope).
    Rejected {
        rejection: Rejection,
        trace_id: String,
        span_id: String,
        request: Box<ExportTraceServiceRequest>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Tool,
    Agent,
    Completion,
    Other,
}

fn operation(span: &Span) -> Option<Operation> {
    let name = span.attributes.iter().find(|kv| kv.key == "gen_ai.operation.name")?;
    let text = match name.value.as_ref()?.value.as_ref()? {
        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => s.as_str(),
        _ => return Some(Operation::Other),
    };
    Some(match text {
        "execute_tool" => Operation::Tool,
        "invoke_agent" | "invoke_workflow" => Operation::Agent,
        "chat" | "text_completion" | "generate_content" => Operation::Completion,
        _ => Operation::Other,
    })
}

const INPUT_TOKENS: [&str; 2] = ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"];
const OUTPUT_TOKENS: [&str; 2] = ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"];

fn reports_usage(span: &Span) -> bool {
    span.attributes.iter().any(|kv| INPUT_TOKENS.contains(&kv.key.as_str()) || OUTPUT_TOKENS.contains(&kv.key.as_str()))
}

/// The spans of one request by (trace id, span id), to find ancestors.
struct Index<'a> {
    spans: HashMap<(&'a [u8], &'a [u8]), &'a Span>,
}

impl<'a> Index<'a> {
    fn new(request: &'a ExportTraceServiceRequest) -> Self {
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| ((s.trace_id.as_slice(), s.span_id.as_slice()), s))
            .collect();
        Self { spans }
    }

    /// The agent span a span belongs to (see [`Enclosing`]): walks the
    /// parent links through the spans of the message.
    fn enclosing_agent(&self, span: &'a Span) -> Enclosing<'a> {
        let mut current = span;
        for _ in 0..256 {
            if current.parent_span_id.is_empty() {
                return Enclosing::None;
            }
            let Some(parent) = self.spans.get(&(current.trace_id.as_slice(), current.parent_span_id.as_slice())) else {
                return Enclosing::Beyond(current.parent_span_id.as_slice());
            };
            if operation(parent) == Some(Operation::Agent) {
                return Enclosing::Agent(parent);
            }
            current = parent;
        }
        Enclosing::None
    }
}

/// Which agent span a span belongs to, as far as one message shows it.
///
/// The span id of the agent is all a tool call needs (its `query_id` and
/// `agent_execution_id` are derived from the trace id and that span id, as
/// the agent's own `execution_id` is), so a tool call is linked to its
/// agent even when the agent span arrives in another message (an SDK
/// exports a span when it ends, so the tool spans usually travel before
/// their agent span):
#[derive(Debug, Clone, Copy)]
enum Enclosing<'a> {
    /// The nearest agent ancestor, found in the message with every span
    /// between.
    Agent(&'a Span),
    /// The walk left the message before it met an agent span: this is the
    /// first ancestor the message does not hold, taken to be the agent
    /// span (it is, for a tool span directly under its agent span, the
    /// shape of the GenAI conventions; see docs/ingest.md for the shapes
    /// this gets wrong).
    Beyond(&'a [u8]),
    /// The chain ends at the trace's root without an agent span.
    None,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(unix_nano: u64) -> i64 {
    (unix_nano / 1_000_000) as i64
}

/// Duration in milliseconds; negative when the span ends before it starts
/// (the parser then refuses it as an impossible value).
fn duration_ms(span: &Span) -> f64 {
    (span.end_time_unix_nano as i128 - span.start_time_unix_nano as i128) as f64 / 1e6
}

/// Our error vocabulary for an `error.type` value: our own words as they
/// are, a few well-known classes and HTTP status codes, and `other` for
/// the rest (the caller keeps the original in `error_message`).
pub fn error_type_for(value: &str) -> ErrorType {
    if let Some(t) = ErrorType::parse(value) {
        return t;
    }
    let v = value.to_ascii_lowercase();
    match v.as_str() {
        "408" | "504" => return ErrorType::Timeout,
        "401" | "403" => return ErrorType::Authentication,
        "429" => return ErrorType::RateLimit,
        "400" | "422" => return ErrorType::Validation,
        "502" | "503" => return ErrorType::Upstream,
        "500" => return ErrorType::Internal,
        _ => {}
    }
    if v.contains("timeout") || v.contains("timedout") || v.contains("deadline") {
        ErrorType::Timeout
    } else if v.contains("auth") || v.contains("permission") || v.contains("forbidden") {
        ErrorType::Authentication
    } else if v.contains("ratelimit") || v.contains("rate_limit") || v.contains("too_many_requests") {
        ErrorType::RateLimit
    } else if v.contains("validation") || v.contains("invalid") {
        ErrorType::Validation
    } else {
        ErrorType::Other
    }
}

struct Context<'a> {
    config: &'a MappingConfig,
    attrs: Attributes<'a>,
    span: &'a Span,
}

impl Context<'_> {
    fn failed(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    /// `error_type` and `error_message` of a failed span.
    fn error(&self, event: &mut Map<String, Value>) {
        if !self.failed() {
            return;
        }
        let description = self.span.status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
        let original = self.attrs.text("error.type");
        let error_type = original.as_deref().map_or(ErrorType::Other, error_type_for);
        event.insert("error_type".into(), json!(error_type.as_str()));
        let message = match (original, description.is_empty()) {
            (Some(o), _) if error_type == ErrorType::Other || o != error_type.as_str() => {
                if description.is_empty() {
                    o
                } else {
                    format!("{o}: {description}")
                }
            }
            (_, false) => description,
            _ => return,
        };
        event.insert("error_message".into(), json!(message.chars().take(4096).collect::<String>()));
    }

    /// The fields every event has: ids, time, tenant and organization, project.
    fn common(&self) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("event_id".into(), json!(span_uuid(&self.span.trace_id, &self.span.span_id)));
        event.insert("occurred_at".into(), json!(millis(self.span.start_time_unix_nano)));
        let tenant = match self.config.fixed_tenant {
            Some(t) => Some(json!(t)),
            None => self.attrs.json(&self.config.tenant_attribute),
        };
        let dims = [
            ("tenant_id", tenant),
            ("organization_id", self.attrs.json(&self.config.organization_attribute)),
            ("project_id", self.attrs.json(&self.config.project_attribute)),
        ];
        for (field, value) in dims {
            if let Some(v) = value {
                event.insert(field.into(), v);
            }
        }
        event
    }

    fn id_attribute(&self, event: &mut Map<String, Value>, field: &str, keys: &[&str]) {
        if let Some((key, value)) = keys.iter().find_map(|k| self.attrs.text(k).map(|v| (*k, v))) {
            event.insert(field.into(), json!(id_for(key, &value)));
        }
    }

    fn tool_call(&self, agent: Enclosing<'_>) -> Map<String, Value> {
        let mut e = self.common();
        let agent_span_id = match agent {
            Enclosing::Agent(agent) => {
                let agent_attrs = Attributes { span: &agent.attributes, resource: self.attrs.resource };
                if let Some((key, v)) = ["gen_ai.agent.id", "gen_ai.agent.name"].iter().find_map(|k| agent_attrs.text(k).map(|v| (*k, v))) {
                    e.insert("agent_id".into(), json!(id_for(key, &v)));
                }
                Some(agent.span_id.as_slice())
            }
            Enclosing::Beyond(span_id) => Some(span_id),
            Enclosing::None => None,
        };
        if let Some(agent_span_id) = agent_span_id {
            let id = span_uuid(&self.span.trace_id, agent_span_id);
            e.insert("query_id".into(), json!(id));
            e.insert("agent_execution_id".into(), json!(id));
        }
        if !e.contains_key("agent_id") {
            self.id_attribute(&mut e, "agent_id", &["gen_ai.agent.id", "gen_ai.agent.name"]);
        }
        if let Some(name) = self.attrs.json("gen_ai.tool.name") {
            e.insert("tool_name".into(), name);
        }
        let call_kind = match self.attrs.text("mcp.method.name").as_deref() {
            Some("tools/list") => "get_tool_schemas",
            _ => "tool",
        };
        e.insert("call_kind".into(), json!(call_kind));
        if let Some(server) = self.attrs.first_json(&["mcp.server.name", "server.address"]) {
            e.insert("server_name".into(), server);
        }
        e.insert("latency_ms".into(), json!(duration_ms(self.span)));
        e.insert("success".into(), json!(!self.failed()));
        self.error(&mut e);
        e
    }

    fn execution(&self, kind: &str) -> Map<String, Value> {
        let mut e = self.common();
        e.insert("execution_kind".into(), json!(kind));
        self.id_attribute(&mut e, "agent_id", &["gen_ai.agent.id", "gen_ai.agent.name"]);
        self.id_attribute(&mut e, "conversation_id", &["gen_ai.conversation.id"]);
        self.id_attribute(&mut e, "user_id", &[self.config.user_attribute.as_str()]);
        let model = self.attrs.first_text(&["gen_ai.response.model", "gen_ai.request.model"]);
        if let Some(m) = &model {
            e.insert("model".into(), json!(m));
        }
        let input = self.attrs.first_json(&INPUT_TOKENS);
        let output = self.attrs.first_json(&OUTPUT_TOKENS);
        let count = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
        let cost = self.attrs.json(COST_ATTRIBUTE).or_else(|| {
            let day = DateTime::<Utc>::from_timestamp_millis(millis(self.span.start_time_unix_nano))?.date_naive();
            Some(json!(self.config.prices.cost(model.as_deref()?, day, count(&input), count(&output))?.to_string()))
        });
        for (field, value) in [("input_tokens", input), ("output_tokens", output)] {
            if let Some(v) = value {
                e.insert(field.into(), v);
            }
        }
        // Without a cost attribute or a price the cost is unknown, never 0.
        match cost {
            Some(v) => e.insert("cost_usd".into(), v),
            None => e.insert("cost_known".into(), json!(false)),
        };
        e.insert("duration_ms".into(), json!(duration_ms(self.span)));
        e.insert("status".into(), json!(if self.failed() { "failed" } else { "success" }));
        self.error(&mut e);
        e
    }
}

/// A request holding only `span`, with its resource and scope.
fn single(resource: &ResourceSpans, scope: &ScopeSpans, span: &Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource.resource.clone(),
            scope_spans: vec![ScopeSpans { scope: scope.scope.clone(), spans: vec![span.clone()], schema_url: scope.schema_url.clone() }],
            schema_url: resource.schema_url.clone(),
        }],
    }
}

/// Maps every span of `request`, in order. `now` bounds `occurred_at` as
/// for JSON events.
pub fn map_request(request: &ExportTraceServiceRequest, config: &MappingConfig, now: DateTime<Utc>) -> Vec<Mapped> {
    let index = Index::new(request);
    let no_attributes: Vec<KeyValue> = Vec::new();
    let mut out = Vec::new();
    for resource in &request.resource_spans {
        let resource_attrs = resource.resource.as_ref().map_or(&no_attributes, |r| &r.attributes);
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                let Some(op) = operation(span) else {
                    out.push(Mapped::Skipped(Skip::NotGenAi));
                    continue;
                };
                let ctx = Context { config, attrs: Attributes { span: &span.attributes, resource: resource_attrs }, span };
                let agent = index.enclosing_agent(span);
                let event = match op {
                    Operation::Other => {
                        out.push(Mapped::Skipped(Skip::OtherOperation));
                        continue;
                    }
                    Operation::Completion if matches!(agent, Enclosing::Agent(a) if reports_usage(a)) => {
                        out.push(Mapped::Skipped(Skip::AccountedByAgent));
                        continue;
                    }
                    Operation::Tool => Value::Object(ctx.tool_call(agent)),
                    Operation::Agent => Value::Object(ctx.execution("navigator_query")),
                    Operation::Completion => Value::Object(ctx.execution("ai_completion")),
                };
                let bytes = serde_json::to_vec(&event).expect("JSON values serialise");
                let parsed = match op {
                    Operation::Tool => parse_tool_call(&bytes, now)
                        .map(ToolCallRow::from)
                        .map(|row| Mapped::ToolCall(Box::new(Event { row, json: bytes }))),
                    _ => parse_agent_execution(&bytes, now)
                        .map(AgentExecutionRow::from)
                        .map(|row| Mapped::Execution(Box::new(Event { row, json: bytes }))),
                };
                out.push(parsed.unwrap_or_else(|rejection| Mapped::Rejected {
                    rejection,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    request: Box::new(single(resource, scope, span)),
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    fn config() -> MappingConfig {
        MappingConfig {
            tenant_attribute: "agentmeter.tenant_id".into(),
            organization_attribute: "agentmeter.organization_id".into(),
            project_attribute: "agentmeter.project_id".into(),
            user_attribute: "enduser.id".into(),
            fixed_tenant: None,
            prices: PriceTable::default(),
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
        }
    }

    fn tool(tenant: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "t"), kv("agentmeter.tenant_id", tenant)],
            status: Some(Status { code: StatusCode::Error as i32, message: "boom".into() }),
            ..Default::default()
        }
    }

    fn child(mut span: Span, id: u8, parent: Option<u8>, attributes: Vec<KeyValue>) -> Span {
        span.span_id = vec![id; 8];
        span.parent_span_id = parent.map(|p| vec![p; 8]).unwrap_or_default();
        span.attributes = attributes;
        span.status = None;
        span
    }

    fn tenant() -> KeyValue {
        kv("agentmeter.tenant_id", &Uuid::from_u128(1).to_string())
    }

    fn query_ids(mapped: &[Mapped]) -> Vec<(Uuid, Uuid)> {
        mapped
            .iter()
            .filter_map(|m| match m {
                Mapped::ToolCall(e) => Some((e.row.query_id, e.row.agent_execution_id)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_tool_call_finds_its_agent_span_in_another_message() {
        let base = tool(&Uuid::from_u128(1).to_string());
        let call = |id, parent| {
            child(base.clone(), id, parent, vec![kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "t"), tenant()])
        };
        let agent = child(base.clone(), 7, None, vec![kv("gen_ai.operation.name", "invoke_agent"), tenant()]);
        let chain = child(base.clone(), 5, Some(7), vec![kv("framework.step", "chain")]);
        let agent_id = span_uuid(&base.trace_id, &[7; 8]);

        // Agent, a tool under it, and a tool under a non-GenAI step: one message or three, same links.
        let together = map_request(&request(vec![agent.clone(), chain.clone(), call(3, Some(7)), call(4, Some(5))]), &config(), Utc::now());
        assert_eq!(query_ids(&together), [(agent_id, agent_id); 2]);
        let tools_first = map_request(&request(vec![chain.clone(), call(3, Some(7)), call(4, Some(5))]), &config(), Utc::now());
        assert_eq!(query_ids(&tools_first), [(agent_id, agent_id); 2]);
        let Mapped::Execution(later) = &map_request(&request(vec![agent]), &config(), Utc::now())[0] else { panic!() };
        assert_eq!(later.row.execution_id, agent_id, "the agent's execution id is what its tool calls carry");

        // Only what the conventions cannot tell: the step alone in another message is taken for the agent.
        let step_elsewhere = map_request(&request(vec![call(4, Some(5))]), &config(), Utc::now());
        assert_eq!(query_ids(&step_elsewhere), [(span_uuid(&base.trace_id, &[5; 8]), span_uuid(&base.trace_id, &[5; 8]))]);
        // A tool span at the root of its trace belongs to no agent run.
        let root = map_request(&request(vec![call(3, None)]), &config(), Utc::now());
        assert_eq!(query_ids(&root), [(Uuid::nil(), Uuid::nil())]);
    }

    #[test]
    fn a_completion_without_a_price_has_an_unknown_cost() {
        let base = tool(&Uuid::from_u128(1).to_string());
        let tokens = KeyValue {
            key: "gen_ai.usage.input_tokens".into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(1000)) }),
            ..Default::default()
        };
        let chat_tokens = |model: &str| {
            child(
                base.clone(),
                3,
                None,
                vec![kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", model), tenant(), tokens.clone()],
            )
        };
        let mut priced = config();
        priced.prices = PriceTable::parse(
            "[[price]]\nmodel = \"m\"\neffective_from = \"2020-01-01\"\ninput_usd_per_token = \"0.000001\"\noutput_usd_per_token = \"0\"",
        )
        .unwrap();
        let row = |mapped: Vec<Mapped>| match mapped.into_iter().next() {
            Some(Mapped::Execution(e)) => (e.row.cost_usd, e.row.cost_known, String::from_utf8(e.json).unwrap()),
            other => panic!("{other:?}"),
        };
        let (cost, known, json) = row(map_request(&request(vec![chat_tokens("other")]), &priced, Utc::now()));
        assert_eq!((cost, known), (0, false));
        assert!(json.contains(r#""cost_known":false"#) && !json.contains("cost_usd"), "{json}");
        let (cost, known, _) = row(map_request(&request(vec![chat_tokens("m")]), &priced, Utc::now()));
        assert_eq!((cost, known), (1000, true), "1000 tokens at 0.000001 = 0.001 USD = 1000 micro-dollars");
    }

    #[test]
    fn error_types_map_onto_our_vocabulary() {
        assert_eq!(error_type_for("rate_limit"), ErrorType::RateLimit);
        assert_eq!(error_type_for("429"), ErrorType::RateLimit);
        assert_eq!(error_type_for("asyncio.TimeoutError"), ErrorType::Timeout);
        assert_eq!(error_type_for("PermissionDenied"), ErrorType::Authentication);
        assert_eq!(error_type_for("java.io.IOException"), ErrorType::Other);
    }

    #[test]
    fn a_failed_tool_span_keeps_the_original_error() {
        let mut span = tool(&Uuid::from_u128(1).to_string());
        span.attributes.push(kv("error.type", "java.io.IOException"));
        let mapped = map_request(&request(vec![span]), &config(), Utc::now());
        let Mapped::ToolCall(event) = &mapped[0] else { panic!("{mapped:?}") };
        let row = &event.row;
        assert_eq!((row.latency_ms, row.success, row.error_type.as_str()), (250.0, false, "other"));
        assert_eq!(row.error_message, "java.io.IOException: boom");
    }

    #[test]
    fn a_tenant_that_is_not_a_uuid_is_rejected_with_the_span_ids() {
        let mapped = map_request(&request(vec![tool("acme")]), &config(), Utc::now());
        let Mapped::Rejected { rejection, trace_id, span_id, .. } = &mapped[0] else { panic!("{mapped:?}") };
        assert_eq!((rejection.kind.as_str(), rejection.field.as_str()), ("invalid_value", "tenant_id"));
        assert_eq!((trace_id.as_str(), span_id.as_str()), ("01010101010101010101010101010101", "0202020202020202"));
        let mut fixed = config();
        fixed.fixed_tenant = Some(Uuid::from_u128(9));
        let mapped = map_request(&request(vec![tool("acme")]), &fixed, Utc::now());
        assert!(matches!(&mapped[0], Mapped::ToolCall(e) if e.row.tenant_id == Uuid::from_u128(9)), "{mapped:?}");
    }
}
