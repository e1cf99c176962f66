//! The shape of a query's trace (`GetQueryTrace`) from its tool-call
//! events in time order. The events carry no group number, so groups are
//! derived from the call kinds:
//!
//! * an `invoke_tools` call opens a group (the proxy invoking tools); the
//!   `tool` calls that follow belong to it; a `tool` call with no open
//!   group opens one itself;
//! * a `get_tool_schemas` or `suggest_tools` call closes the open group and
//!   is listed in `tool_schemas` / `suggest_tools`;
//! * an `invoke_tools` group without `tool` calls lists the `invoke_tools`
//!   call itself, so no call of the query is lost.
//!
//! A group's `created_at` is its first call's time. Latency is in seconds,
//! as everywhere in the Caylex API. Beyond the contract, each call also
//! says its `call_kind`, and the schema and suggestion records carry their
//! latency, success, error message (and `suggestions_count`).

use super::responses::{TraceGetSchema, TraceServerMetadata, TraceSuggestTools, TraceTool, TraceToolCall, TraceToolCallGroup};
use crate::queries::query_logs::{from_ms, TraceEvent};

const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// RFC 3339 UTC with milliseconds (`2024-01-15T10:30:00.600Z`).
pub fn ts_ms(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn secs(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1_000_000.0
}

fn or_nil(id: &str) -> String {
    if id.is_empty() {
        NIL.to_owned()
    } else {
        id.to_owned()
    }
}

fn tool(e: &TraceEvent) -> TraceTool {
    TraceTool { server: TraceServerMetadata { id: or_nil(&e.server), name: e.server_name.clone() }, name: e.tool_name.clone() }
}

fn error_message(e: &TraceEvent) -> Option<String> {
    Some(e.error_message.clone()).filter(|m| !m.is_empty())
}

fn call(e: &TraceEvent) -> TraceToolCall {
    TraceToolCall {
        server_instance_id: or_nil(&e.server_instance),
        tool: tool(e),
        latency: Some(secs(e.latency_ms)),
        success: e.success,
        error_message: error_message(e),
        created_at: ts_ms(e.ms),
        call_kind: e.call_kind.clone(),
    }
}

struct Group<'a> {
    opener: &'a TraceEvent,
    calls: Vec<&'a TraceEvent>,
}

/// `tool_call_groups`, `tool_schemas` and `suggest_tools` of a trace.
pub fn shape(events: &[TraceEvent]) -> (Vec<TraceToolCallGroup>, Vec<TraceGetSchema>, Vec<TraceSuggestTools>) {
    let (mut groups, mut schemas, mut suggestions) = (Vec::<Group>::new(), Vec::new(), Vec::new());
    let mut open = false;
    for e in events {
        match e.call_kind.as_str() {
            "invoke_tools" => {
                groups.push(Group { opener: e, calls: Vec::new() });
                open = true;
            }
            "get_tool_schemas" => {
                open = false;
                schemas.push(TraceGetSchema {
                    id: e.event.clone(),
                    tool: tool(e),
                    created_at: ts_ms(e.ms),
                    latency: secs(e.latency_ms),
                    success: e.success,
                    error_message: error_message(e),
                });
            }
            "suggest_tools" => {
                open = false;
                suggestions.push(TraceSuggestTools {
                    id: e.event.clone(),
                    created_at: ts_ms(e.ms),
                    latency: secs(e.latency_ms),
                    success: e.success,
                    error_message: error_message(e),
                    suggestions_count: e.suggestions_count,
                });
            }
            _ => {
                if !open {
                    groups.push(Group { opener: e, calls: Vec::new() });
                    open = true;
                }
                groups.last_mut().expect("a group is open").calls.push(e);
            }
        }
    }
    let groups = groups
        .into_iter()
        .map(|g| {
            let tool_calls = if g.calls.is_empty() { vec![call(g.opener)] } else { g.calls.into_iter().map(call).collect() };
            TraceToolCallGroup { tool_calls, created_at: ts_ms(g.opener.ms) }
        })
        .collect();
    (groups, schemas, suggestions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ev(ms: i64, kind: &str, name: &str) -> TraceEvent {
        TraceEvent {
            event: format!("00000000-0000-0000-0000-{ms:012}"),
            ms,
            call_kind: kind.into(),
            server: String::new(),
            server_name: "GitHub".into(),
            server_instance: String::new(),
            tool_name: name.into(),
            latency_ms: 800.0,
            success: kind != "suggest_tools",
            error_message: if kind == "suggest_tools" { "boom".into() } else { String::new() },
            suggestions_count: 3,
        }
    }

    #[test]
    fn proxy_calls_split_groups_and_are_listed_apart() {
        let events = vec![
            ev(1, "suggest_tools", "suggest_tools"),
            ev(2, "get_tool_schemas", "get_tool_schemas"),
            ev(3, "invoke_tools", "invoke_tools"),
            ev(4, "tool", "create_issue"),
            ev(5, "tool", "add_label"),
            ev(6, "invoke_tools", "invoke_tools"),
            ev(7, "tool", "close_issue"),
            ev(8, "get_tool_schemas", "get_tool_schemas"),
            ev(9, "tool", "comment"),
            ev(10, "invoke_tools", "invoke_tools"),
        ];
        let (groups, schemas, suggestions) = shape(&events);
        let groups: Vec<Value> = groups.iter().map(|g| serde_json::to_value(g).unwrap()).collect();
        let suggestions: Vec<Value> = suggestions.iter().map(|g| serde_json::to_value(g).unwrap()).collect();
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g["tool_calls"].as_array().unwrap().iter().map(|c| c["tool"]["name"].as_str().unwrap()).collect())
            .collect();
        assert_eq!(names, vec![vec!["create_issue", "add_label"], vec!["close_issue"], vec!["comment"], vec!["invoke_tools"]]);
        assert_eq!(groups[0]["created_at"], "1970-01-01T00:00:00.003Z");
        assert_eq!(groups[0]["tool_calls"][0]["latency"], 0.8);
        assert_eq!(groups[0]["tool_calls"][0]["error_message"], Value::Null);
        assert_eq!(groups[0]["tool_calls"][0]["server_instance_id"], NIL);
        assert_eq!(schemas.len(), 2);
        assert_eq!(suggestions.len(), 1);
        assert_eq!(suggestions[0]["error_message"], "boom");
        assert_eq!(suggestions[0]["suggestions_count"], json!(3));
    }
}
