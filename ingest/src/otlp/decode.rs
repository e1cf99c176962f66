//! Turns one Kafka message of the OTLP topic into an
//! `ExportTraceServiceRequest`, in either encoding of the OpenTelemetry
//! Collector's Kafka exporter: `otlp_proto` (protobuf, its default) or
//! `otlp_json` (OTLP/JSON: camelCase names, hex trace and span ids).
//!
//! Decoding uses the `opentelemetry-proto` crate's generated prost types
//! and its serde support for OTLP/JSON, never hand-written protobuf. With
//! `auto` the first byte decides: a JSON message starts with `{` (after
//! white space), which can never start a valid protobuf request (it would
//! be field 15 with the deprecated group wire type).

use clap::ValueEnum;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// How the messages of the OTLP topic are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// Detect per message: JSON if it starts with `{`, protobuf otherwise.
    Auto,
    /// Protobuf (the Collector's `encoding: otlp_proto`, its default).
    #[value(name = "otlp_proto")]
    OtlpProto,
    /// OTLP/JSON (the Collector's `encoding: otlp_json`).
    #[value(name = "otlp_json")]
    OtlpJson,
}

impl Encoding {
    /// The encoding of `bytes`: the configured one, or detected.
    pub fn of(self, bytes: &[u8]) -> Encoding {
        match self {
            Encoding::Auto if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Encoding::OtlpJson,
            Encoding::Auto => Encoding::OtlpProto,
            other => other,
        }
    }
}

/// Decodes one message; the error says why it is not an OTLP trace request.
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, String> {
    match encoding.of(bytes) {
        Encoding::OtlpJson => serde_json::from_slice(bytes).map_err(|e| format!("not an OTLP/JSON ExportTraceServiceRequest: {e}")),
        _ => ExportTraceServiceRequest::decode(bytes).map_err(|e| format!("not an OTLP protobuf ExportTraceServiceRequest: {e}")),
    }
}

/// Encodes a request in `encoding` (for dead letters that carry one span).
pub fn encode(request: &ExportTraceServiceRequest, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::OtlpJson => serde_json::to_vec(request).expect("OTLP requests serialise"),
        _ => request.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request() -> ExportTraceServiceRequest {
        let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "chat".into(), ..Default::default() };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn both_encodings_round_trip_and_are_detected() {
        for encoding in [Encoding::OtlpProto, Encoding::OtlpJson] {
            let bytes = encode(&request(), encoding);
            assert_eq!(Encoding::Auto.of(&bytes), encoding);
            assert_eq!(decode(&bytes, Encoding::Auto).unwrap(), request());
        }
    }

    #[test]
    fn json_ids_are_hex() {
        let json = String::from_utf8(encode(&request(), Encoding::OtlpJson)).unwrap();
        assert!(json.contains("\"traceId\":\"01010101010101010101010101010101\""), "{json}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"\xff\xff\xff\x01garbage", Encoding::Auto).is_err());
        assert!(decode(b"{\"resourceSpans\": 3}", Encoding::Auto).is_err());
    }
}
