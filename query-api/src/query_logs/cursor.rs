//! The opaque `cursor` of the query logs: base64url (no padding) of a small
//! JSON object with the `(timestamp, query_id)` of the last item served,
//! `{"t": <epoch ms>, "q": "<uuid>"}`, like the spec's example (base64 JSON
//! carrying the sort key). It holds no tenant data beyond that position;
//! the tenant still comes from the key, so a cursor from another tenant's
//! page only positions the caller's own list.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::queries::query_logs::Position;

#[derive(Serialize, Deserialize)]
struct Wire {
    t: i64,
    q: Uuid,
}

/// The cursor that continues after `p`.
pub fn encode(p: Position) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Wire { t: p.first_ms, q: p.query_id }).expect("cursor serialises"))
}

/// The position of a cursor, or why it is not one.
pub fn decode(s: &str) -> Result<Position, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| "Invalid cursor: not base64url")?;
    let w: Wire = serde_json::from_slice(&bytes).map_err(|_| "Invalid cursor: not a cursor of this endpoint")?;
    Ok(Position { first_ms: w.t, query_id: w.q })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let p = Position { first_ms: 1_700_000_000_123, query_id: Uuid::new_v4() };
        assert_eq!(decode(&encode(p)), Ok(p));
        assert!(decode("not a cursor!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{\"sort\": 1}")).is_err());
    }
}
