//! The parser accepts what the contract allows, refuses everything else with
//! the field and the kind of problem, and never panics.

use agentmeter_schema::event::{CallKind, ErrorType, ExecutionKind, ExecutionStatus, MAX_EVENT_BYTES, MAX_QUERY_TEXT_BYTES};
use agentmeter_schema::{parse_agent_execution, parse_tool_call, AgentExecutionEvent, RejectionKind, ToolCallEvent};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::str::FromStr;
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tool_call() -> Value {
    json!({
        "event_id": "0b5c3f0e-5d7a-4b8e-9c1d-2f3a4b5c6d7e",
        "occurred_at": "2026-11-23T11:59:00.123+01:00",
        "tenant_id": "11111111-1111-4111-8111-111111111111",
        "tool_name": "resources_read",
        "latency_ms": 812.5,
        "success": true,
        "some_future_field": {"ignored": true}
    })
}

fn execution() -> Value {
    json!({
        "event_id": "7a1e0c2b-3d4f-4a5b-8c6d-7e8f9a0b1c2d",
        "occurred_at": 1795435200000i64,
        "tenant_id": "11111111-1111-4111-8111-111111111111",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd": "0.012345"
    })
}

fn with(mut v: Value, field: &str, value: Value) -> Vec<u8> {
    v[field] = value;
    serde_json::to_vec(&v).unwrap()
}

fn without(mut v: Value, field: &str) -> Vec<u8> {
    v.as_object_mut().unwrap().remove(field);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn minimal_tool_call_gets_defaults() {
    let e = parse_tool_call(&serde_json::to_vec(&tool_call()).unwrap(), now()).unwrap();
    assert_eq!(e.call_kind, CallKind::Tool);
    assert_eq!(e.occurred_at, Utc.with_ymd_and_hms(2026, 11, 23, 10, 59, 0).unwrap() + chrono::Duration::milliseconds(123));
    assert_eq!(e.tool_name, "resources_read");
    assert_eq!(e.project_id, None);
}

#[test]
fn minimal_execution_gets_defaults() {
    let e = parse_agent_execution(&serde_json::to_vec(&execution()).unwrap(), now()).unwrap();
    assert_eq!(e.execution_id, e.event_id);
    assert_eq!(e.execution_kind, ExecutionKind::AgentChat);
    assert!(e.billable);
    assert_eq!(e.total_tokens, 1500);
    assert_eq!(e.messages_count, 1);
    assert_eq!(e.status, ExecutionStatus::Success);
    assert_eq!(e.cost_usd, Decimal::from_str("0.012345").unwrap());
}

#[test]
fn query_text_is_kept_on_navigator_queries_only_and_cut_at_4_kib() {
    let query = with(execution(), "execution_kind", json!("navigator_query"));
    let query: Value = serde_json::from_slice(&query).unwrap();
    let e = parse_agent_execution(&with(query.clone(), "query_text", json!("Create a GitHub issue")), now()).unwrap();
    assert_eq!(e.query_text.as_deref(), Some("Create a GitHub issue"));
    assert_eq!(parse_agent_execution(&serde_json::to_vec(&query).unwrap(), now()).unwrap().query_text, None);
    assert_eq!(parse_agent_execution(&with(execution(), "query_text", json!("hi")), now()).unwrap().query_text, None);
    // 4095 ASCII bytes then a 3-byte character: the character does not fit and is cut whole.
    let long = format!("{}€ and more", "a".repeat(MAX_QUERY_TEXT_BYTES - 1));
    let e = parse_agent_execution(&with(query.clone(), "query_text", json!(long)), now()).unwrap();
    assert_eq!(e.query_text.as_deref(), Some("a".repeat(MAX_QUERY_TEXT_BYTES - 1).as_str()));
    let exact = "é".repeat(MAX_QUERY_TEXT_BYTES / 2);
    let e = parse_agent_execution(&with(query.clone(), "query_text", json!(exact)), now()).unwrap();
    assert_eq!(e.query_text.as_deref(), Some(exact.as_str()));
    let err = parse_agent_execution(&with(query, "query_text", json!(42)), now()).unwrap_err();
    assert_eq!((err.kind, err.field.as_str()), (RejectionKind::WrongType, "query_text"));
}

#[test]
fn money_as_number_is_exact() {
    let e = parse_agent_execution(&with(execution(), "cost_usd", json!(0.1)), now()).unwrap();
    assert_eq!(e.cost_usd, Decimal::from_str("0.1").unwrap());
    let e = parse_agent_execution(&with(execution(), "cost_usd", json!(123456.654321)), now()).unwrap();
    assert_eq!(e.cost_usd, Decimal::from_str("123456.654321").unwrap());
}

#[test]
fn a_cost_is_known_unless_the_event_says_otherwise() {
    // JSON producers: an absent or null cost is a cost of 0, as always.
    let mut without = execution();
    without.as_object_mut().unwrap().remove("cost_usd");
    let e = parse_agent_execution(&serde_json::to_vec(&without).unwrap(), now()).unwrap();
    assert_eq!((e.cost_usd, e.cost_known), (Decimal::ZERO, true));
    let e = parse_agent_execution(&with(execution(), "cost_usd", Value::Null), now()).unwrap();
    assert_eq!((e.cost_usd, e.cost_known), (Decimal::ZERO, true));
    // `cost_known: false` (what OTLP spans without a price become): no amount.
    without["cost_known"] = json!(false);
    let e = parse_agent_execution(&serde_json::to_vec(&without).unwrap(), now()).unwrap();
    assert_eq!((e.cost_usd, e.cost_known), (Decimal::ZERO, false));
    let row = agentmeter_schema::rows::AgentExecutionRow::from(&e);
    assert_eq!((row.cost_usd, row.cost_known), (0, false));
    for zero in [json!("0"), json!(0), Value::Null] {
        without["cost_usd"] = zero.clone();
        let e = parse_agent_execution(&serde_json::to_vec(&without).unwrap(), now()).unwrap();
        assert!(!e.cost_known, "{zero}");
    }
}

#[test]
fn occurred_at_is_truncated_to_milliseconds() {
    let e = parse_tool_call(&with(tool_call(), "occurred_at", json!("2026-11-23T10:00:00.123456789Z")), now()).unwrap();
    assert_eq!(e.occurred_at.timestamp_subsec_nanos(), 123_000_000);
}

/// Each case: the message, the field named, the kind of rejection.
#[test]
fn every_kind_of_bad_tool_call_is_refused_with_its_reason() {
    let cases: Vec<(Vec<u8>, &str, RejectionKind)> = vec![
        (b"{not json".to_vec(), "", RejectionKind::InvalidJson),
        (b"[1,2,3]".to_vec(), "", RejectionKind::InvalidJson),
        (b"\xff\xfe".to_vec(), "", RejectionKind::InvalidJson),
        (vec![b' '; MAX_EVENT_BYTES + 1], "", RejectionKind::TooLarge),
        (without(tool_call(), "event_id"), "event_id", RejectionKind::MissingField),
        (with(tool_call(), "event_id", Value::Null), "event_id", RejectionKind::MissingField),
        (with(tool_call(), "event_id", json!("not-a-uuid")), "event_id", RejectionKind::InvalidValue),
        (with(tool_call(), "event_id", json!(42)), "event_id", RejectionKind::WrongType),
        (without(tool_call(), "tenant_id"), "tenant_id", RejectionKind::MissingField),
        (without(tool_call(), "occurred_at"), "occurred_at", RejectionKind::MissingField),
        (with(tool_call(), "occurred_at", json!("yesterday")), "occurred_at", RejectionKind::InvalidValue),
        (with(tool_call(), "occurred_at", json!("2026-11-23T10:00:00")), "occurred_at", RejectionKind::InvalidValue),
        (with(tool_call(), "occurred_at", json!("2026-11-23T13:00:01Z")), "occurred_at", RejectionKind::InvalidValue),
        (with(tool_call(), "occurred_at", json!(-5)), "occurred_at", RejectionKind::InvalidValue),
        (with(tool_call(), "occurred_at", json!(1.5)), "occurred_at", RejectionKind::InvalidValue),
        (with(tool_call(), "occurred_at", json!(true)), "occurred_at", RejectionKind::WrongType),
        (without(tool_call(), "tool_name"), "tool_name", RejectionKind::MissingField),
        (with(tool_call(), "tool_name", json!("  ")), "tool_name", RejectionKind::InvalidValue),
        (with(tool_call(), "tool_name", json!("x".repeat(300))), "tool_name", RejectionKind::InvalidValue),
        (with(tool_call(), "tool_name", json!(["a"])), "tool_name", RejectionKind::WrongType),
        (without(tool_call(), "latency_ms"), "latency_ms", RejectionKind::MissingField),
        (with(tool_call(), "latency_ms", json!(-1)), "latency_ms", RejectionKind::InvalidValue),
        (with(tool_call(), "latency_ms", json!("12")), "latency_ms", RejectionKind::WrongType),
        (with(tool_call(), "runtime_ms", json!(-0.5)), "runtime_ms", RejectionKind::InvalidValue),
        (without(tool_call(), "success"), "success", RejectionKind::MissingField),
        (with(tool_call(), "success", json!("true")), "success", RejectionKind::WrongType),
        (with(tool_call(), "call_kind", json!("invoke")), "call_kind", RejectionKind::InvalidValue),
        (with(tool_call(), "error_type", json!("boom")), "error_type", RejectionKind::InvalidValue),
        (with(tool_call(), "suggestions_count", json!(-3)), "suggestions_count", RejectionKind::InvalidValue),
        (with(tool_call(), "suggestions_count", json!(1u64 << 40)), "suggestions_count", RejectionKind::InvalidValue),
        (with(tool_call(), "project_id", json!("p-1")), "project_id", RejectionKind::InvalidValue),
    ];
    for (bytes, field, kind) in cases {
        let err = parse_tool_call(&bytes, now()).expect_err(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)]));
        assert_eq!((err.field.as_str(), err.kind), (field, kind), "{err}");
        assert!(!err.message.is_empty());
    }
}

#[test]
fn every_kind_of_bad_execution_is_refused_with_its_reason() {
    let cases: Vec<(Vec<u8>, &str, RejectionKind)> = vec![
        (with(execution(), "cost_usd", json!("-1.00")), "cost_usd", RejectionKind::InvalidValue),
        (with(execution(), "cost_usd", json!("0.0000001")), "cost_usd", RejectionKind::InvalidValue),
        (with(execution(), "cost_usd", json!("abc")), "cost_usd", RejectionKind::InvalidValue),
        (with(execution(), "cost_usd", json!("1e13")), "cost_usd", RejectionKind::InvalidValue),
        (with(execution(), "cost_usd", json!(true)), "cost_usd", RejectionKind::WrongType),
        // `execution()` carries a cost: it cannot also be unknown.
        (with(execution(), "cost_known", json!(false)), "cost_usd", RejectionKind::InvalidValue),
        (with(execution(), "cost_known", json!("false")), "cost_known", RejectionKind::WrongType),
        (with(execution(), "input_tokens", json!(-1)), "input_tokens", RejectionKind::InvalidValue),
        (with(execution(), "input_tokens", json!(1.5)), "input_tokens", RejectionKind::InvalidValue),
        (with(execution(), "output_tokens", json!("7")), "output_tokens", RejectionKind::WrongType),
        (with(execution(), "messages_count", json!(1u64 << 33)), "messages_count", RejectionKind::InvalidValue),
        (with(execution(), "billable", json!(1)), "billable", RejectionKind::WrongType),
        (with(execution(), "status", json!("SUCCESS")), "status", RejectionKind::InvalidValue),
        (with(execution(), "execution_kind", json!("chat")), "execution_kind", RejectionKind::InvalidValue),
        (with(execution(), "duration_ms", json!(-2)), "duration_ms", RejectionKind::InvalidValue),
        (with(execution(), "organization_id", json!({})), "organization_id", RejectionKind::WrongType),
        (with(execution(), "input_tokens", json!(u64::MAX)), "output_tokens", RejectionKind::InvalidValue),
    ];
    for (bytes, field, kind) in cases {
        let err = parse_agent_execution(&bytes, now()).expect_err(&String::from_utf8_lossy(&bytes));
        assert_eq!((err.field.as_str(), err.kind), (field, kind), "{err}");
    }
}

fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..=now().timestamp_millis() + 3_600_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn any_name() -> impl Strategy<Value = String> {
    "[\\PC]{1,40}".prop_filter("not blank", |s| !s.trim().is_empty())
}

fn any_ms() -> impl Strategy<Value = f64> {
    prop_oneof![(0u32..10_000_000).prop_map(f64::from), (0.0f64..1e9)]
}

fn tool_call_strategy() -> impl Strategy<Value = ToolCallEvent> {
    (
        (any_uuid(), any_time(), any_uuid(), opt(any_uuid()), opt(any_uuid()), opt(any_uuid()), opt(any_name()), opt(any_name())),
        (
            opt(any_uuid()),
            proptest::sample::select(CallKind::ALL),
            opt(any::<u32>()),
            opt(any_uuid()),
            opt(any_name()),
            opt(any_uuid()),
            opt(any_uuid()),
        ),
        (any_name(), opt(any_uuid()), opt(any_name()), opt(any_uuid()), opt(any_uuid()), opt(any_uuid())),
        (any_ms(), opt(any_ms()), any::<bool>(), opt(proptest::sample::select(ErrorType::ALL)), opt(any_name())),
    )
        .prop_map(|(a, b, c, d)| ToolCallEvent {
            event_id: a.0,
            occurred_at: a.1,
            tenant_id: a.2,
            project_id: a.3,
            navigator_id: a.4,
            navigator_instance_id: a.5,
            navigator_name: a.6,
            project_name: a.7,
            query_id: b.0,
            call_kind: b.1,
            suggestions_count: b.2,
            server_id: b.3,
            server_name: b.4,
            server_instance_id: b.5,
            tool_id: b.6,
            tool_name: c.0,
            user_token_id: c.1,
            user_email: c.2,
            organization_id: c.3,
            agent_id: c.4,
            agent_execution_id: c.5,
            latency_ms: d.0,
            runtime_ms: d.1,
            success: d.2,
            error_type: d.3,
            error_message: d.4,
        })
}

fn execution_strategy() -> impl Strategy<Value = AgentExecutionEvent> {
    (
        (any_uuid(), any_time(), any_uuid(), any_uuid(), proptest::sample::select(ExecutionKind::ALL), any::<bool>()),
        (
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_uuid()),
            opt(any_name()),
        ),
        (opt(any_uuid()), opt(any_name()), opt(any_name()), 0u64..1u64 << 40, 0u64..1u64 << 40, 0u64..1u64 << 41),
        (
            0i64..999_999_999_999_999_999i64,
            any::<u32>(),
            opt(any_ms()),
            proptest::sample::select(ExecutionStatus::ALL),
            opt(proptest::sample::select(ErrorType::ALL)),
            opt(any_name()),
            opt("[\\PC]{0,200}".prop_map(String::from)),
        ),
    )
        .prop_map(|(a, b, c, d)| AgentExecutionEvent {
            event_id: a.0,
            occurred_at: a.1,
            tenant_id: a.2,
            execution_id: a.3,
            execution_kind: a.4,
            billable: a.5,
            organization_id: b.0,
            user_id: b.1,
            agent_id: b.2,
            conversation_id: b.3,
            plan_id: b.4,
            project_id: b.5,
            navigator_id: b.6,
            navigator_instance_id: b.7,
            project_name: b.8,
            user_token_id: c.0,
            user_email: c.1,
            model: c.2,
            input_tokens: c.3,
            output_tokens: c.4,
            total_tokens: c.5,
            // An unknown cost (one in five) is stored as 0.
            cost_usd: if d.0 % 5 == 0 { Decimal::ZERO } else { Decimal::new(d.0, 6) },
            cost_known: d.0 % 5 != 0,
            messages_count: d.1,
            duration_ms: d.2,
            status: d.3,
            error_type: d.4,
            error_message: d.5,
            // Kept on navigator queries only; the parser drops it elsewhere.
            query_text: d.6.filter(|_| a.4 == ExecutionKind::NavigatorQuery),
        })
}

proptest! {
    #[test]
    fn any_valid_tool_call_round_trips(event in tool_call_strategy()) {
        let bytes = serde_json::to_vec(&event).unwrap();
        let parsed = parse_tool_call(&bytes, now()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, event);
    }

    #[test]
    fn any_valid_execution_round_trips(event in execution_strategy()) {
        let bytes = serde_json::to_vec(&event).unwrap();
        let parsed = parse_agent_execution(&bytes, now()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, event);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_tool_call(&bytes, now());
        let _ = parse_agent_execution(&bytes, now());
    }

    #[test]
    fn random_json_objects_never_panic(v in proptest::collection::hash_map("[a-z_]{1,20}", prop_oneof![
        Just(Value::Null), any::<bool>().prop_map(Value::from), any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "[\\PC]{0,30}".prop_map(Value::from)], 0..30)) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let _ = parse_tool_call(&bytes, now());
        let _ = parse_agent_execution(&bytes, now());
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let msg = format!("{{\"x\": {deep}}}");
    // Too large for the size limit and, below it, beyond serde_json's recursion limit.
    assert!(parse_tool_call(msg.as_bytes(), now()).is_err());
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(5_000), "]".repeat(5_000));
    assert_eq!(parse_tool_call(deep.as_bytes(), now()).unwrap_err().kind, RejectionKind::InvalidJson);
}

/// The parser reads the fields straight from the bytes; these are the
/// outcomes it keeps from reading a whole `serde_json::Value` first.
#[test]
fn reading_from_the_bytes_keeps_the_json_semantics() {
    let base = String::from_utf8(serde_json::to_vec(&tool_call()).unwrap()).unwrap();
    let extend = |extra: &str| format!("{},{extra}}}", &base[..base.len() - 1]);

    // A repeated key keeps its last value, also when that is null.
    let e = parse_tool_call(extend(r#""tool_name":"second""#).as_bytes(), now()).unwrap();
    assert_eq!(e.tool_name, "second");
    let err = parse_tool_call(extend(r#""tool_name":null"#).as_bytes(), now()).unwrap_err();
    assert_eq!((err.field.as_str(), err.kind), ("tool_name", RejectionKind::MissingField));

    // Escaped keys and values are decoded.
    let e = parse_tool_call(extend(r#""tool\u005fname":"a\"b\u00e9""#).as_bytes(), now()).unwrap();
    assert_eq!(e.tool_name, "a\"bé");

    // Unknown fields are still checked as JSON: a number out of range or
    // nesting beyond the recursion limit refuses the message.
    for extra in [r#""later":1e400"#.to_owned(), format!(r#""later":{}{}"#, "[".repeat(200), "]".repeat(200))] {
        let err = parse_tool_call(extend(&extra).as_bytes(), now()).unwrap_err();
        assert_eq!(err.kind, RejectionKind::InvalidJson, "{err}");
    }
    let e = parse_tool_call(extend(&format!(r#""later":{}{}"#, "[".repeat(100), "]".repeat(100))).as_bytes(), now()).unwrap();
    assert_eq!(e.tool_name, "resources_read");

    // Containers in known fields are the wrong type, named as such.
    let err = parse_tool_call(&with(tool_call(), "tool_name", json!({"a": [1]})), now()).unwrap_err();
    assert_eq!(err.to_string(), "wrong_type: field `tool_name`: expected a string, got an object");

    // Trailing data after the object, and non-objects, are invalid JSON.
    for bytes in [format!("{base} x"), "\"s\"".into(), "null".into(), "1.5".into()] {
        assert_eq!(parse_tool_call(bytes.as_bytes(), now()).unwrap_err().kind, RejectionKind::InvalidJson, "{bytes}");
    }
    assert_eq!(parse_tool_call(b"[]", now()).unwrap_err().message, "expected a JSON object, got an array");
    assert!(parse_tool_call(format!("{base}\n").as_bytes(), now()).is_ok());
}

/// Messages that are valid UTF-8 are read as text, the others as bytes:
/// either way a refusal carries serde_json's own message for those bytes,
/// with its line and column.
#[test]
fn malformed_json_is_refused_with_serde_jsons_message_whichever_reader() {
    let base = serde_json::to_vec(&tool_call()).unwrap();
    let extend = |extra: &[u8]| [&base[..base.len() - 1], b",", extra, b"}"].concat();
    let cases: Vec<Vec<u8>> = vec![
        // Not UTF-8: in a value, in a key, in an unknown field's array.
        extend(b"\"later\":\"a\xff\""),
        extend(b"\"lat\xc3er\":1"),
        extend(b"\"later\":[\"\xed\xa0\x80\"]"),
        // UTF-8, but not JSON: a lone surrogate escape, a trailing comma,
        // a control character in a string, trailing data.
        extend(br#""later":"\ud800""#),
        extend(b"\"later\":1,"),
        extend(b"\"later\":\"a\x01\""),
        [&base[..], b" x"].concat(),
    ];
    for bytes in cases {
        let expected = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_err();
        let err = parse_tool_call(&bytes, now()).unwrap_err();
        assert_eq!(err.kind, RejectionKind::InvalidJson, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(err.message, format!("not valid JSON: {expected}"), "{}", String::from_utf8_lossy(&bytes));
    }
}
