//! The OTLP input: OpenTelemetry GenAI spans, as the OpenTelemetry
//! Collector's Kafka exporter writes them to `agentmeter.otlp-spans`, become
//! tool-call and agent-execution rows (`docs/ingest.md`, "OTLP spans").
//!
//! * [`decode`]: one message → an `ExportTraceServiceRequest` (protobuf or
//!   OTLP/JSON), via the `opentelemetry-proto` crate.
//! * [`mapping`]: spans → events, through the same strict parser as JSON
//!   events; [`ids`] derives `event_id` from the trace and span ids so that a
//!   span exported twice counts once; [`prices`] the optional price table.
//! * This file: what the consumer loop calls. One message may give rows of
//!   both tables, so the OTLP topic has its own batch ([`OtlpRow`]); a batch
//!   is written table by table, then its refused rows and rejected spans are
//!   dead-lettered, and only then does the loop store its offsets — the same
//!   rule as for the JSON topics. Each of the two inserts is deduplicated on
//!   its own (event ids, tokens), so a crash between them is harmless.
//!
//! It never drops a span silently: each one is a row, a counted skip
//! (`agentmeter_ingest_otlp_spans_total{outcome}`), or a dead letter.

pub mod attributes;
pub mod decode;
pub mod ids;
pub mod mapping;
pub mod prices;

use std::sync::Arc;

use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::message::{BorrowedMessage, Message};

use crate::batch::{Batch, Entry, Source};
use crate::dead_letter::{DeadLetters, Rejected};
use crate::metrics::REASON_CLICKHOUSE_REJECTED;
use crate::writer::{Refused, Writer};
pub use decode::Encoding;
pub use mapping::{Mapped, MappingConfig, Skip};

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

/// A row read from the OTLP topic: either table.
#[derive(Debug, Clone)]
pub enum OtlpRow {
    Call(ToolCallRow),
    Execution(AgentExecutionRow),
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

    /// Decodes and maps one message into `batch`: its rows, its dead letters
    /// (the whole message if it does not decode; one per rejected span), and
    /// its offset in any case.
    pub fn accept(&self, m: &BorrowedMessage<'_>, batch: &mut Batch<OtlpRow>, dead_letters: &Arc<DeadLetters>) {
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
        // The message's bytes count once, against its first row or dead letter.
        let mut unaccounted = bytes;
        let mut take = || std::mem::take(&mut unaccounted);
        for mapped in mapping::map_request(&request, &self.mapping, chrono::Utc::now()) {
            let outcome = match mapped {
                Mapped::ToolCall(row) => {
                    batch.push_row(OtlpRow::Call(*row), Source { partition, offset, bytes: take() });
                    "tool_call"
                }
                Mapped::Execution(row) => {
                    let outcome = if row.execution_kind == "ai_completion" { "ai_completion" } else { "agent_execution" };
                    batch.push_row(OtlpRow::Execution(*row), Source { partition, offset, bytes: take() });
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
        // A message without rows or dead letters still moves the offset.
        batch.touch(partition, offset, take());
    }
}

/// Writes the rows of one OTLP batch (tool calls, then executions) and
/// dead-letters the rows ClickHouse refused, each with its whole message
/// read again from the topic. Returns once all of that is acknowledged.
pub async fn write(writer: &Writer, dead_letters: &DeadLetters, topic: &str, entries: Vec<Entry<OtlpRow>>) {
    let mut calls = Vec::new();
    let mut executions = Vec::new();
    for Entry { row, source } in entries {
        match row {
            OtlpRow::Call(row) => calls.push(Entry { row, source }),
            OtlpRow::Execution(row) => executions.push(Entry { row, source }),
        }
    }
    let mut refused = Vec::new();
    if !calls.is_empty() {
        refused.extend(writer.write(calls).await.refused);
    }
    if !executions.is_empty() {
        refused.extend(writer.write(executions).await.refused);
    }
    dead_letter_refused(dead_letters, topic, &refused).await;
}

async fn dead_letter_refused(dead_letters: &DeadLetters, topic: &str, refused: &[Refused]) {
    for r in refused {
        let original = dead_letters.read_original(topic, r.partition, r.offset).await;
        dead_letters
            .deliver(&Rejected {
                kind: KIND,
                reason: REASON_CLICKHOUSE_REJECTED,
                field: String::new(),
                error: r.reason.clone(),
                source_topic: topic.to_owned(),
                partition: r.partition,
                offset: r.offset,
                key: original.key,
                payload: original.payload,
            })
            .await;
    }
}
