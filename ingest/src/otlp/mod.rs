//! The OTLP input: OpenTelemetry GenAI spans, as the OpenTelemetry
//! Collector's Kafka exporter writes them to `agentmeter.otlp-spans`, become
//! tool-call and agent-execution events (`docs/ingest.md`, "OTLP spans").
//!
//! * [`decode`]: one message → an `ExportTraceServiceRequest` (protobuf or
//!   OTLP/JSON), via the `opentelemetry-proto` crate.
//! * [`mapping`]: spans → events, through the same strict parser as JSON
//!   events; [`ids`] derives `event_id` from the trace and span ids so that a
//!   span exported twice counts once; [`prices`] the optional price table.
//! * This file: what the consumer loop calls. Nothing read here is inserted
//!   here. Each mapped span is produced, as the JSON event the parser
//!   accepted, to the JSON topic of its kind, keyed by `event_id`, on its
//!   home partition ([`crate::routing`]); the owner of that partition then
//!   inserts it exactly like any JSON event, so every copy of a span (a
//!   Collector retry, a re-export on another partition read by another
//!   worker) goes through the one place that deduplicates it. The OTLP
//!   message's offset is stored only once Kafka acknowledged every event
//!   produced from it and every dead letter of it.
//!
//! It never drops a span silently: each one is a produced event, a counted
//! skip (`agentmeter_ingest_otlp_spans_total{outcome}`), or a dead letter.

pub mod attributes;
pub mod decode;
pub mod ids;
pub mod mapping;
pub mod prices;

use std::sync::Arc;

use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::message::{BorrowedMessage, Message};

use crate::batch::{Batch, IngestRow};
use crate::dead_letter::{DeadLetters, Rejected};
use crate::routing::{home_partition, Forward, Forwarder};
pub use decode::Encoding;
pub use mapping::{Event, Mapped, MappingConfig, Skip};

/// The metric label of the event kind, for dead letters and consumption.
pub const KIND: &str = "otlp_span";

/// Dead-letter reason of a message that is not an OTLP trace request.
pub const REASON_UNDECODABLE: &str = "undecodable";

/// Outcomes of `agentmeter_ingest_otlp_spans_total`, all pre-registered.
pub const OUTCOMES: [&str; 7] = [
    "tool_call",
    "agent_execution",
    "ai_completion",
    "dead_lettered",
    "skipped_not_genai",
    "skipped_other_operation",
    "skipped_accounted_by_agent",
];

/// The OTLP topic's batch holds no rows, only deliveries (events produced
/// to their home partition, dead letters) and offsets.
pub type NoRow = std::convert::Infallible;

/// Where the events of each kind are produced: the JSON topics and their
/// partition counts.
#[derive(Debug, Clone, Copy)]
pub struct Destinations<'a> {
    pub tool_calls: (&'a str, i32),
    pub agent_executions: (&'a str, i32),
}

impl Destinations<'_> {
    fn forward(&self, kind: &'static str, event_id: uuid::Uuid, json: Vec<u8>) -> Forward {
        let (topic, partitions) = if kind == <ToolCallRow as IngestRow>::EVENT_KIND { self.tool_calls } else { self.agent_executions };
        Forward {
            kind,
            topic: topic.to_owned(),
            home: home_partition(event_id, partitions),
            key: Some(event_id.hyphenated().to_string().into_bytes()),
            payload: json,
            headers: None,
        }
    }
}

/// What the loop needs to read the OTLP topic.
pub struct OtlpInput {
    pub topic: String,
    pub encoding: Encoding,
    pub mapping: MappingConfig,
    /// `agentmeter_ingest_otlp_spans_total{outcome}`.
    pub spans: IntCounterVec,
}

impl OtlpInput {
    /// Registers the span counter on the worker's registry.
    pub fn new(topic: &str, encoding: Encoding, mapping: MappingConfig, registry: &Registry) -> Self {
        let spans =
            IntCounterVec::new(Opts::new("agentmeter_ingest_otlp_spans_total", "OTLP spans read, by what became of them"), &["outcome"])
                .expect("valid metric");
        registry.register(Box::new(spans.clone())).expect("registered once");
        for outcome in OUTCOMES {
            spans.with_label_values(&[outcome]);
        }
        Self { topic: topic.to_owned(), encoding, mapping, spans }
    }

    /// Decodes and maps one message into `batch`: the deliveries of its
    /// events (each produced to its home partition of its JSON topic), its
    /// dead letters (the whole message if it does not decode; one per
    /// rejected span), and its offset in any case.
    pub fn accept(
        &self,
        m: &BorrowedMessage<'_>,
        batch: &mut Batch<NoRow>,
        destinations: Destinations<'_>,
        forwarder: &Arc<Forwarder>,
        dead_letters: &Arc<DeadLetters>,
    ) {
        let payload = m.payload().unwrap_or_default();
        let (partition, offset) = (m.partition(), m.offset());
        let bytes = payload.len() + m.key_len();
        let rejected = |reason: &'static str, field: String, error: String, payload: Vec<u8>| Rejected {
            kind: KIND,
            reason,
            field,
            error,
            source_topic: self.topic.clone(),
            partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
            payload,
        };
        let request = match decode::decode(payload, self.encoding) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(topic = %self.topic, partition, offset, %error, "undecodable OTLP message");
                let delivery = dead_letters.spawn(rejected(REASON_UNDECODABLE, String::new(), error, payload.to_vec()));
                batch.push_delivery(partition, offset, bytes, delivery);
                return;
            }
        };
        let encoding = self.encoding.of(payload);
        // The message's bytes count once, against its first delivery.
        let mut unaccounted = bytes;
        let mut take = || std::mem::take(&mut unaccounted);
        for mapped in mapping::map_request(&request, &self.mapping, chrono::Utc::now()) {
            let outcome = match mapped {
                Mapped::ToolCall(event) => {
                    let Event { row, json } = *event;
                    let forward = destinations.forward(<ToolCallRow as IngestRow>::EVENT_KIND, row.event_id, json);
                    batch.push_delivery(partition, offset, take(), forwarder.spawn(forward));
                    "tool_call"
                }
                Mapped::Execution(event) => {
                    let Event { row, json } = *event;
                    let outcome = if row.execution_kind == "ai_completion" { "ai_completion" } else { "agent_execution" };
                    let forward = destinations.forward(<AgentExecutionRow as IngestRow>::EVENT_KIND, row.event_id, json);
                    batch.push_delivery(partition, offset, take(), forwarder.spawn(forward));
                    outcome
                }
                Mapped::Skipped(skip) => skip.as_str(),
                Mapped::Rejected { rejection, trace_id, span_id, request } => {
                    let error = format!("trace_id {trace_id} span_id {span_id}: {}", rejection.message);
                    tracing::debug!(topic = %self.topic, partition, offset, %error, "rejected OTLP span");
                    let one_span = decode::encode(&request, encoding);
                    let delivery = dead_letters.spawn(rejected(rejection.kind.as_str(), rejection.field, error, one_span));
                    batch.push_delivery(partition, offset, take(), delivery);
                    "dead_lettered"
                }
            };
            self.spans.with_label_values(&[outcome]).inc();
        }
        // A message without events or dead letters still moves the offset.
        batch.touch(partition, offset, take());
    }
}
