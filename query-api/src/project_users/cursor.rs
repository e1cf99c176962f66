//! The opaque `cursor` of the users list: base64url (no padding) of
//! `{"f": <first event, epoch ms>, "u": "<user_token_id>"}`, the position
//! of the last user served (base64 JSON carrying the sort key, like the
//! contract's example and the query logs' cursor). It holds no tenant data;
//! the tenant still comes from the key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::queries::project_users::UserPosition;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    f: i64,
    u: Uuid,
}

/// The cursor that continues after `p`.
pub fn encode(p: UserPosition) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Wire { f: p.first_ms, u: p.user_id }).expect("cursor serialises"))
}

/// The position of a cursor, or why it is not one.
pub fn decode(s: &str) -> Result<UserPosition, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| "Invalid cursor: not base64url")?;
    let w: Wire = serde_json::from_slice(&bytes).map_err(|_| "Invalid cursor: not a cursor of this endpoint")?;
    Ok(UserPosition { first_ms: w.f, user_id: w.u })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_cursors() {
        let p = UserPosition { first_ms: 1_700_000_000_123, user_id: Uuid::new_v4() };
        assert_eq!(decode(&encode(p)), Ok(p));
        assert!(decode("not a cursor!").is_err());
        // A query-log cursor is not a users cursor.
        let q = URL_SAFE_NO_PAD.encode(format!("{{\"t\":1,\"q\":\"{}\"}}", Uuid::new_v4()));
        assert!(decode(&q).is_err());
    }
}
