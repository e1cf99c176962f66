//! The opaque `cursor` of the query logs: base64url (no padding) of a small
//! JSON object with the `(timestamp, query_id)` of the last item served,
//! `{"t": <epoch ms>, "q": "<uuid>"}`, like the spec's example (base64 JSON
//! carrying the sort key), plus the listing's `total` as the first page
//! counted it (`"n"`) and a fingerprint of the filters it was counted for
//! (`"f"`), so later pages of the same listing reuse that exact count
//! instead of counting every query of the project again. A cursor without
//! them (or whose fingerprint does not match the request's filters) gets a
//! fresh count. It holds no tenant data beyond that position; the tenant
//! still comes from the key, so a cursor from another tenant's page only
//! positions the caller's own list.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::queries::query_logs::{LogFilter, Position};

#[derive(Serialize, Deserialize)]
struct Wire {
    t: i64,
    q: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<u64>,
}

/// A decoded cursor: where the next page starts and, when the cursor
/// carries one, the listing's total and the filters it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub position: Position,
    total: Option<(u64, u64)>,
}

impl Cursor {
    /// The total this cursor carries, if it was counted for exactly `f`
    /// (same project, instance filters and time bounds).
    pub fn total_for(&self, f: &LogFilter) -> Option<u64> {
        self.total.filter(|&(_, key)| key == fingerprint(f)).map(|(n, _)| n)
    }
}

/// FNV-1a (64 bit) of the filters a total depends on: stable across
/// processes and releases, unlike `std`'s hasher.
fn fingerprint(f: &LogFilter) -> u64 {
    let text = format!("{}|{}|{:?}|{:?}|{:?}|{:?}", f.tenant, f.project, f.navigator_instance, f.server_instance, f.gte_ms, f.lte_ms);
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The cursor that continues after `p`, carrying the listing's `total`
/// counted for the filters `f`.
pub fn encode(p: Position, total: u64, f: &LogFilter) -> String {
    let wire = Wire { t: p.first_ms, q: p.query_id, n: Some(total), f: Some(fingerprint(f)) };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).expect("cursor serialises"))
}

/// The cursor of a string, or why it is not one.
pub fn decode(s: &str) -> Result<Cursor, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| "Invalid cursor: not base64url")?;
    let w: Wire = serde_json::from_slice(&bytes).map_err(|_| "Invalid cursor: not a cursor of this endpoint")?;
    Ok(Cursor { position: Position { first_ms: w.t, query_id: w.q }, total: w.n.zip(w.f) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> LogFilter {
        LogFilter {
            tenant: Uuid::new_v4(),
            project: Uuid::new_v4(),
            navigator_instance: None,
            server_instance: None,
            gte_ms: None,
            lte_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let (p, f) = (Position { first_ms: 1_700_000_000_123, query_id: Uuid::new_v4() }, filter());
        let c = decode(&encode(p, 42, &f)).unwrap();
        assert_eq!((c.position, c.total_for(&f)), (p, Some(42)));
        assert!(decode("not a cursor!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{\"sort\": 1}")).is_err());
    }

    #[test]
    fn total_only_for_the_filters_it_was_counted_for() {
        let (p, f) = (Position { first_ms: 1, query_id: Uuid::new_v4() }, filter());
        let c = decode(&encode(p, 7, &f)).unwrap();
        assert_eq!(c.total_for(&LogFilter { navigator_instance: Some(Uuid::new_v4()), ..f.clone() }), None);
        assert_eq!(c.total_for(&LogFilter { lte_ms: None, ..f.clone() }), None);
        assert_eq!(c.total_for(&LogFilter { project: Uuid::new_v4(), ..f.clone() }), None);
        // A cursor of an earlier release (position only) still positions, and gets a fresh count.
        let old = URL_SAFE_NO_PAD.encode(format!("{{\"t\":1,\"q\":\"{}\"}}", p.query_id));
        let c = decode(&old).unwrap();
        assert_eq!((c.position, c.total_for(&f)), (p, None));
    }
}
