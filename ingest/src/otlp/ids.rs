//! Deterministic UUIDs for OTLP input. A span has no UUID of its own, and
//! the idempotency of the whole pipeline rests on `event_id`: the same span
//! exported twice (a Collector retry, a re-export) must get the same id, so
//! that the writer's duplicate look-up counts it once. Ids are UUIDv8
//! (RFC 9562 "custom") made from the first 16 bytes of a SHA-256 over a
//! domain label and the source bytes, so ids of different kinds never meet.

use sha2::{Digest, Sha256};
use uuid::{Builder, Uuid};

fn derive(domain: &str, parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for part in parts {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Builder::from_custom_bytes(bytes).into_uuid()
}

/// The id of a span: its `event_id`, and for an agent or completion span
/// also its `execution_id` (and so the `query_id` of the tool calls under it).
pub fn span_uuid(trace_id: &[u8], span_id: &[u8]) -> Uuid {
    derive("agentmeter.otlp.span", &[trace_id, span_id])
}

/// A UUID for an attribute value that is meant as an id but is not a UUID
/// (`gen_ai.agent.id = "asst_abc"`, `enduser.id = "alice"`): a value that
/// already is a UUID is kept; anything else is derived from the attribute
/// name and the value, so the same agent or user always gets the same id.
pub fn id_for(attribute: &str, value: &str) -> Uuid {
    Uuid::parse_str(value).unwrap_or_else(|_| derive("agentmeter.otlp.attribute", &[attribute.as_bytes(), value.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_span_gets_the_same_id_and_others_do_not() {
        let (t, s) = ([1u8; 16], [2u8; 8]);
        assert_eq!(span_uuid(&t, &s), span_uuid(&t, &s));
        assert_ne!(span_uuid(&t, &s), span_uuid(&t, &[3u8; 8]));
        assert_ne!(span_uuid(&t, &s), span_uuid(&[9u8; 16], &s));
        assert_eq!(span_uuid(&t, &s).get_version_num(), 8);
    }

    #[test]
    fn uuids_are_kept_and_other_values_derived() {
        let u = Uuid::from_u128(42);
        assert_eq!(id_for("gen_ai.agent.id", &u.to_string()), u);
        assert_eq!(id_for("gen_ai.agent.id", "asst_1"), id_for("gen_ai.agent.id", "asst_1"));
        assert_ne!(id_for("gen_ai.agent.id", "asst_1"), id_for("enduser.id", "asst_1"));
    }
}
