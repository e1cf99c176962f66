//! Any bytes given to either event parser give an event or a rejection,
//! never a panic; an accepted event serialises to JSON that parses back to
//! the same event.
#![no_main]

use agentmeter_schema::{parse_agent_execution, parse_tool_call};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    if let Ok(event) = parse_tool_call(data, now) {
        let again = parse_tool_call(&serde_json_bytes(&event), now).expect("a serialised event parses");
        assert_eq!(again, event);
    }
    if let Ok(event) = parse_agent_execution(data, now) {
        let again = parse_agent_execution(&serde_json_bytes(&event), now).expect("a serialised event parses");
        assert_eq!(again, event);
    }
});

fn serde_json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("events serialise")
}
