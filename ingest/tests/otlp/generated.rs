//! The OTLP messages `make_spans.py` builds with the official OpenTelemetry
//! Python SDK, read back for the OTLP tests of both crates: ingest's
//! (`ingest/tests/it/otlp.rs`: rows, rollups, dead letters) and
//! query-api's (`query-api/tests/it/otlp.rs`: the API's answers). One
//! copy, included as a module by each test binary (`#[path]`); each uses
//! part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use agentmeter_ingest::otlp::ids::span_uuid;
use serde::Deserialize;
use uuid::Uuid;

/// The price table the tests' workers run with: `gpt-4o` only, so that
/// the split run's model has no price.
pub const PRICES: &str = r#"
[[price]]
model = "gpt-4o"
effective_from = "2024-01-01"
input_usd_per_token = "0.0000025"
output_usd_per_token = "0.00001"
"#;

/// What the script prints: the time its spans start from, the ids of the
/// spans by label, and the messages in the order to produce them.
#[derive(Deserialize)]
pub struct Generated {
    pub base_ms: i64,
    pub spans: HashMap<String, SpanIds>,
    pub messages: Vec<GeneratedMessage>,
}

/// A span's ids, hexadecimal.
#[derive(Deserialize)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
}

/// One Kafka message (an OTLP export request, or not OTLP at all).
#[derive(Deserialize)]
pub struct GeneratedMessage {
    pub label: String,
    pub payload_hex: String,
}

impl GeneratedMessage {
    pub fn payload(&self) -> Vec<u8> {
        unhex(&self.payload_hex)
    }
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

impl Generated {
    /// Runs the SDK script with the stack's venv python (`.stack/venv` at
    /// the root of the repository).
    pub fn run(tenant: Uuid, other: Uuid, org: Uuid, project: Uuid, conversation: Uuid) -> Generated {
        // Both crates sit one level below the root.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let python = root.join(".stack/venv/bin/python");
        let out = std::process::Command::new(&python)
            .arg(root.join("ingest/tests/otlp/make_spans.py"))
            .args([tenant, other, org, project, conversation].map(|u| u.to_string()))
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e} (./dev/test installs dev/requirements-otlp-test.txt)", python.display()));
        assert!(out.status.success(), "make_spans.py failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("make_spans.py prints JSON")
    }

    /// The UUID the worker derives for a span (event id, execution id, and
    /// the query id of the tool calls under an agent span).
    pub fn id(&self, label: &str) -> Uuid {
        let s = &self.spans[label];
        span_uuid(&unhex(&s.trace_id), &unhex(&s.span_id))
    }

    /// The payload of the message `label`.
    pub fn payload(&self, label: &str) -> Vec<u8> {
        self.messages.iter().find(|m| m.label == label).unwrap_or_else(|| panic!("no message {label}")).payload()
    }

    /// `offset_ms` after the spans' base time, as the API answers times.
    pub fn at(&self, offset_ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(self.base_ms + offset_ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}
