//! The worker encodes rows to `RowBinary` itself when it parses a message
//! (`ingest/src/row_binary.rs`); here those bytes go through the writer into
//! the local ClickHouse and are read back with the `clickhouse` crate's own
//! decoder: every column of both raw tables comes back as it was, edge
//! values included (empty, long and non-ASCII strings, `Nullable` columns
//! both ways, extreme integers), and the query text of a navigator query
//! lands in `query_texts`.

use std::time::Duration;

use agentmeter_ingest::batch::{Encoded, Entry, Source};
use agentmeter_ingest::errors::Backoff;
use agentmeter_ingest::writer::Writer;
use agentmeter_ingest::Metrics;
use agentmeter_schema::rows::{AgentExecutionRow, QueryTextRow, ToolCallRow};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::support::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210 ^ n)
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid time")
}

fn tool_calls() -> Vec<ToolCallRow> {
    let full = ToolCallRow {
        event_id: id(1),
        occurred_at: at(1_790_000_000_123),
        tenant_id: id(2),
        project_id: id(3),
        project_name: "Projet é ✓".into(),
        navigator_id: id(4),
        navigator_instance_id: id(5),
        navigator_name: "n".repeat(300),
        query_id: id(6),
        call_kind: "suggestion".into(),
        suggestions_count: u32::MAX,
        server_id: id(7),
        server_name: "server".into(),
        server_instance_id: id(8),
        tool_id: id(9),
        tool_name: "search".into(),
        user_token_id: id(10),
        user_email: "user@example.com".into(),
        organization_id: id(11),
        agent_id: id(12),
        agent_execution_id: id(13),
        latency_ms: 12.345,
        runtime_ms: Some(0.5),
        success: false,
        error_type: "timeout".into(),
        error_message: "line one\nline two\t\u{0}".into(),
    };
    let sparse = ToolCallRow {
        event_id: id(21),
        occurred_at: at(1_790_000_000_124),
        project_name: String::new(),
        navigator_id: Uuid::nil(),
        navigator_name: String::new(),
        suggestions_count: 0,
        runtime_ms: None,
        success: true,
        error_type: String::new(),
        error_message: String::new(),
        ..full.clone()
    };
    vec![full, sparse]
}

fn executions() -> Vec<AgentExecutionRow> {
    let full = AgentExecutionRow {
        event_id: id(31),
        // Recent: `query_texts` drops a text past its expiry (TTL) as it is written.
        occurred_at: at(chrono::Utc::now().timestamp_millis()),
        tenant_id: id(2),
        execution_id: id(31),
        execution_kind: "navigator_query".into(),
        billable: true,
        organization_id: id(11),
        user_id: id(32),
        agent_id: id(12),
        conversation_id: id(33),
        plan_id: id(34),
        project_id: id(3),
        project_name: "Projet é ✓".into(),
        navigator_id: id(4),
        navigator_instance_id: id(5),
        user_token_id: id(10),
        user_email: "user@example.com".into(),
        model: "m".repeat(200),
        input_tokens: u64::MAX,
        output_tokens: 1,
        total_tokens: 0,
        cost_usd: 999_999_999_999_999_999,
        cost_known: true,
        messages_count: 7,
        duration_ms: Some(2500.125),
        status: "failed".into(),
        error_type: "crash".into(),
        error_message: "it broke".into(),
        query_text: Some("What did we sell in März?".into()),
    };
    let sparse = AgentExecutionRow {
        event_id: id(41),
        execution_id: id(41),
        execution_kind: "agent_chat".into(),
        billable: false,
        cost_usd: 0,
        cost_known: false,
        duration_ms: None,
        status: "success".into(),
        error_type: String::new(),
        error_message: String::new(),
        query_text: None,
        ..full.clone()
    };
    vec![full, sparse]
}

fn entries<R: agentmeter_ingest::batch::IngestRow>(rows: &[R]) -> Vec<Entry<Encoded<R>>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| Entry { row: Encoded::new(r, 30), source: Source { partition: 0, offset: i as i64, bytes: 0 } })
        .collect()
}

#[tokio::test]
async fn rows_decode_as_the_crate_encodes() {
    let f = Fixture::new("row_binary", 1).await;
    let writer = Writer::new(f.ch.client(), Backoff::new(10, 100), Duration::from_secs(30), Metrics::new());
    let client = f.ch.client();

    let written = writer.write(entries(&tool_calls())).await;
    assert_eq!((written.inserted, written.refused.len()), (2, 0));
    let stored: Vec<ToolCallRow> =
        client.query("SELECT ?fields FROM tool_calls ORDER BY occurred_at").fetch_all().await.expect("tool calls read back");
    assert_eq!(stored, tool_calls());

    let executions = executions();
    let written = writer.write(entries(&executions)).await;
    assert_eq!((written.inserted, written.refused.len()), (2, 0));
    let stored: Vec<AgentExecutionRow> =
        client.query("SELECT ?fields FROM agent_executions ORDER BY event_id").fetch_all().await.expect("executions read back");
    // The text is not a column of agent_executions: it goes to query_texts.
    let mut expected: Vec<AgentExecutionRow> = executions.iter().map(|r| AgentExecutionRow { query_text: None, ..r.clone() }).collect();
    expected.sort_by_key(|r| r.event_id);
    assert_eq!(stored, expected);

    let texts: Vec<QueryTextRow> = client.query("SELECT ?fields FROM query_texts").fetch_all().await.expect("query texts read back");
    let text = executions[0].query_text_row(30).expect("a navigator query with a text");
    // `expire_at` is a DateTime (seconds).
    let text = QueryTextRow { expire_at: DateTime::from_timestamp(text.expire_at.timestamp(), 0).expect("valid time"), ..text };
    assert_eq!(texts, vec![text]);
    f.drop_database().await;
}
