//! OTLP ingest throughput, next to the JSON figure of the same run: agent
//! traces as the OpenTelemetry Collector's Kafka exporter writes them
//! (protobuf `ExportTraceServiceRequest`s of many traces each) go through
//! `agentmeter-ingest`, timed from the first message consumed to the last
//! row visible. Each trace is one `invoke_agent` span with three
//! `execute_tool` spans and one `chat` span under it (the chat's tokens are
//! the agent's, so it is skipped): five spans, four rows.

use std::time::{Duration, Instant};

use agentmeter_bench::TENANT_A;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::{Rng, SeedableRng};

use crate::kafka::{bulk_producer, send_blocking};

/// Spans and rows per trace.
pub const SPANS_PER_TRACE: u64 = 5;
pub const ROWS_PER_TRACE: u64 = 4;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

fn span(trace: [u8; 16], id: u64, parent: Option<u64>, start_ns: u64, ms: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "span".into(),
        kind: 1,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + ms * 1_000_000,
        attributes,
        ..Default::default()
    }
}

/// One agent trace starting at `start_ns`.
fn trace(rng: &mut impl Rng, start_ns: u64) -> Vec<Span> {
    let t: [u8; 16] = rng.random();
    let agent: u64 = rng.random();
    let mut spans = vec![span(
        t,
        agent,
        None,
        start_ns,
        2000,
        vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.name", ["support", "planner", "coder"][rng.random_range(0..3)]),
            text("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.usage.input_tokens", Value::IntValue(rng.random_range(100..5000))),
            kv("gen_ai.usage.output_tokens", Value::IntValue(rng.random_range(10..1000))),
        ],
    )];
    spans.push(span(
        t,
        agent ^ 1,
        Some(agent),
        start_ns + 1_000_000,
        800,
        vec![text("gen_ai.operation.name", "chat"), kv("gen_ai.usage.input_tokens", Value::IntValue(50))],
    ));
    for i in 0..3u64 {
        let mut attributes = vec![
            text("gen_ai.operation.name", "execute_tool"),
            text("gen_ai.tool.name", ["search", "fetch", "write", "lookup"][rng.random_range(0..4)]),
            text("mcp.method.name", "tools/call"),
            text("server.address", "mcp-1"),
        ];
        if rng.random_ratio(1, 20) {
            attributes.push(text("error.type", "timeout"));
        }
        spans.push(span(t, agent ^ (2 + i), Some(agent), start_ns + (900 + i * 300) * 1_000_000, rng.random_range(5..500), attributes));
    }
    spans
}

/// What was produced.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub traces: u64,
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Produces `traces` agent traces, `per_message` to a message (a Collector
/// batch), keyed by the first trace id. Blocking.
pub fn preload(brokers: &str, topic: &str, traces: u64, per_message: u64, seed: u64) -> anyhow::Result<Produced> {
    let producer = bulk_producer(brokers)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let resource = Resource {
        attributes: vec![text("service.name", "bench-agents"), text("agentmeter.tenant_id", &TENANT_A.to_string())],
        ..Default::default()
    };
    let started = Instant::now();
    let mut out = Produced { traces: 0, messages: 0, bytes: 0, seconds: 0.0 };
    while out.traces < traces {
        let n = per_message.min(traces - out.traces);
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64 - 60_000_000_000;
        let spans: Vec<Span> = (0..n).flat_map(|_| trace(&mut rng, now_ns)).collect();
        let key = spans[0].trace_id.clone();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let payload = request.encode_to_vec();
        send_blocking(&producer, topic, &key, &payload)?;
        out.traces += n;
        out.messages += 1;
        out.bytes += payload.len() as u64;
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(120))?;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
