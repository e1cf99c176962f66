//! OTLP input end to end: OpenTelemetry GenAI spans built by the official
//! OpenTelemetry Python SDK (`ingest/tests/otlp/make_spans.py`, run with
//! the stack's venv) go through Kafka and a real worker. An agent run with
//! nested tool calls and a completion (current attribute names, protobuf),
//! a second agent with the deprecated token names (OTLP/JSON), a standalone
//! completion priced from the price table, a re-export of the first trace,
//! an agent run split over two messages (its tool spans first, the agent
//! span, of a model without a price, later), a non-GenAI and an embeddings
//! span, two spans that break the contract and a message that is not OTLP
//! at all. Checked: the raw rows field by field, the rollups, the per-tool
//! and per-query figures, unknown costs, the dead letters and the span
//! counters. The API's answers over the same messages (analytics, query
//! traces, cost) are checked in query-api's `otlp` test.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use agentmeter_ingest::otlp::ids::id_for;
use rdkafka::producer::FutureRecord;
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use crate::support::*;

#[path = "../otlp/generated.rs"]
mod generated;
use generated::{unhex, Generated, PRICES};

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
struct CallRow {
    tool_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    organization_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    project_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    query_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    agent_execution_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    agent_id: Uuid,
    call_kind: String,
    server_name: String,
    latency_ms: f64,
    success: bool,
    error_type: String,
    error_message: String,
    occurred_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
struct ExecRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    execution_id: Uuid,
    execution_kind: String,
    #[serde(with = "clickhouse::serde::uuid")]
    tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    agent_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    conversation_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    user_id: Uuid,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cost: String,
    cost_known: bool,
    duration_ms: Option<f64>,
    status: String,
}

/// Executions with an unknown cost: `(raw rows, sum of the rollup's count)`.
async fn unpriced(f: &Fixture) -> (u64, u64) {
    f.ch.client()
        .query(
            "SELECT toUInt64(assumeNotNull((SELECT countIf(NOT cost_known) FROM agent_executions))), \
             toUInt64(assumeNotNull((SELECT sum(unpriced_executions) FROM agent_executions_1m)))",
        )
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_spans_from_the_sdk_become_rows_rollups_and_dead_letters() {
    let f = Fixture::new("otlp", 2).await;
    let (tenant, other, org, project, conversation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let g = Generated::run(tenant, other, org, project, conversation);

    // One partition, in order: the re-export (c) comes after the original (a).
    let producer = producer();
    let mut offsets = HashMap::new();
    for m in &g.messages {
        let payload = m.payload();
        let delivery = producer
            .send(FutureRecord::<[u8], [u8]>::to(&f.otlp_spans_topic).partition(0).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
        offsets.insert(m.label.clone(), (delivery.offset, payload));
    }

    let prices = std::env::temp_dir().join(format!("agentmeter-prices-{}.toml", f.name));
    std::fs::write(&prices, PRICES).unwrap();
    let mut config = f.config();
    config.otlp_price_table = Some(prices.clone());
    let (stop, metrics, worker) = spawn_worker(config);

    let expected = Totals {
        calls: 6,
        call_errors: 2,
        executions: 4,
        failed_executions: 0,
        input_tokens: 1000 + 400 + 300 + 700,
        output_tokens: 200 + 80 + 50 + 90,
        // 0.0123 (span attribute) + 0.0018 (400 and 80 tokens priced) + 0.00125
        // (300 and 50 priced); the researcher's model has no price: unknown, not 0.
        cost_usd: Decimal::from_str("0.01535").unwrap(),
        messages: 4,
    };
    wait_for_rows(&f.ch, &expected, Duration::from_secs(120)).await;
    let letters = read_dead_letters_until(&f, Duration::from_secs(60), |l| l.len() >= 3).await;
    // The totals are complete once the originals are in; the re-export's
    // copies, looked up and counted as duplicates, may still be on their
    // way: wait until every message is handled and every copy it forwarded
    // to the JSON topics read. A stray row (a double count) is in by then.
    let sent: Vec<Position> =
        offsets.values().map(|(offset, _)| Position { topic: f.otlp_spans_topic.clone(), partition: 0, offset: *offset }).collect();
    wait_until_committed(&f, &sent, Duration::from_secs(120)).await;
    wait_for_forwarded_copies(&[&metrics], 0, Duration::from_secs(120)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops in time").unwrap();
    let _ = std::fs::remove_file(prices);

    assert_eq!(raw_totals(&f.ch).await, expected, "raw tables");
    assert_eq!(rollup_totals(&f.ch).await, expected, "rollups");
    assert_no_duplicate_rows(&f.ch).await;

    // Tool calls, field by field.
    let db = f.ch.client();
    let calls: Vec<CallRow> = db
        .query(
            "SELECT tool_name, event_id, tenant_id, organization_id, project_id, query_id, agent_execution_id, agent_id, \
             call_kind, server_name, latency_ms, success, error_type, error_message, toUnixTimestamp64Milli(occurred_at) AS occurred_at_ms \
             FROM tool_calls ORDER BY tool_name",
        )
        .fetch_all()
        .await
        .unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c.tool_name.as_str()).collect();
    assert_eq!(names, ["fetch_ticket", "lookup", "search_docs", "send_mail", "summarize", "web_search"]);
    let support_bot = id_for("gen_ai.agent.id", "support-bot");
    let call = |name: &str| calls.iter().find(|c| c.tool_name == name).unwrap();
    for name in ["fetch_ticket", "search_docs", "send_mail"] {
        let c = call(name);
        assert_eq!((c.tenant_id, c.organization_id, c.project_id), (tenant, org, project), "{name}: dimensions from the resource");
        assert_eq!(c.query_id, g.id("agent_a"), "{name}: query_id is the enclosing agent span");
        assert_eq!(c.agent_execution_id, g.id("agent_a"));
        assert_eq!(c.agent_id, support_bot);
        assert_eq!(c.event_id, g.id(name));
    }
    let s = call("search_docs");
    assert_eq!((s.latency_ms, s.success, s.call_kind.as_str(), s.server_name.as_str()), (250.0, true, "tool", "docs-mcp"));
    assert_eq!((s.error_type.as_str(), s.error_message.as_str()), ("", ""));
    assert_eq!(s.occurred_at_ms, g.base_ms + 1000);
    let t = call("fetch_ticket");
    assert_eq!((t.latency_ms, t.success, t.error_type.as_str(), t.error_message.as_str()), (1200.0, false, "timeout", "deadline exceeded"));
    let m = call("send_mail");
    assert_eq!((m.success, m.error_type.as_str(), m.error_message.as_str()), (false, "other", "smtplib.SMTPException: relay refused"));
    let l = call("lookup");
    assert_eq!(l.tenant_id, tenant, "the span's tenant wins over the resource's");
    assert_eq!((l.query_id, l.organization_id, l.project_id), (g.id("planner"), org, Uuid::nil()));
    assert_eq!(l.agent_id, id_for("gen_ai.agent.name", "planner"));
    // The split run: both tool calls carry the agent span's id although it
    // came in the next message (one of them sits under a framework step).
    for name in ["web_search", "summarize"] {
        let c = call(name);
        assert_eq!((c.query_id, c.agent_execution_id), (g.id("researcher"), g.id("researcher")), "{name}: linked across messages");
        assert_eq!((c.tenant_id, c.project_id, c.agent_id), (tenant, project, Uuid::nil()), "{name}");
    }
    assert_eq!(call("web_search").server_name, "search-mcp");

    // Agent executions and the completion.
    let executions: Vec<ExecRow> = db
        .query(
            "SELECT event_id, execution_id, execution_kind, tenant_id, agent_id, conversation_id, user_id, model, \
             input_tokens, output_tokens, total_tokens, toString(cost_usd) AS cost, cost_known, duration_ms, status FROM agent_executions",
        )
        .fetch_all()
        .await
        .unwrap();
    let exec = |label: &str| executions.iter().find(|e| e.event_id == g.id(label)).unwrap_or_else(|| panic!("{label} stored"));
    let a = exec("agent_a");
    assert_eq!((a.execution_id, a.execution_kind.as_str(), a.tenant_id), (g.id("agent_a"), "navigator_query", tenant));
    assert_eq!((a.agent_id, a.conversation_id, a.user_id), (support_bot, conversation, id_for("enduser.id", "alice")));
    assert_eq!((a.model.as_str(), a.input_tokens, a.output_tokens, a.total_tokens), ("gpt-4o-2024-08-06", 1000, 200, 1200));
    assert_eq!((a.cost.as_str(), a.duration_ms, a.status.as_str()), ("0.0123", Some(3000.0), "success"));
    let p = exec("planner");
    assert_eq!(
        (p.model.as_str(), p.input_tokens, p.output_tokens, p.cost.as_str()),
        ("gpt-4o", 400, 80, "0.0018"),
        "deprecated names, priced"
    );
    let c = exec("standalone_chat");
    assert_eq!((c.execution_kind.as_str(), c.input_tokens, c.output_tokens, c.cost.as_str()), ("ai_completion", 300, 50, "0.00125"));
    assert!(a.cost_known && p.cost_known && c.cost_known, "priced or given costs are known");
    let r = exec("researcher");
    assert_eq!((r.execution_id, r.model.as_str(), r.input_tokens, r.output_tokens), (g.id("researcher"), "claude-unpriced", 700, 90));
    assert_eq!((r.cost.as_str(), r.cost_known), ("0", false), "no price: the cost is unknown (stored as 0, never summed as a price)");
    assert_eq!(unpriced(&f).await, (1, 1), "unpriced executions, raw and rollup");
    assert!(!executions.iter().any(|e| e.event_id == g.id("chat_in_agent")), "the agent's own completion is not counted twice");

    // Analytics answers from the rollups: per tool, and per query.
    let per_tool: Vec<(String, u64, u64, u64)> = db
        .query(
            "SELECT tool_name, sum(calls), sum(errors), uniqExactIfMerge(queries) FROM tool_calls_1m \
             WHERE tenant_id = ? GROUP BY tool_name ORDER BY tool_name",
        )
        .bind(tenant)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        per_tool,
        [
            ("fetch_ticket".into(), 1, 1, 1),
            ("lookup".into(), 1, 0, 1),
            ("search_docs".into(), 1, 0, 1),
            ("send_mail".into(), 1, 1, 1),
            ("summarize".into(), 1, 0, 1),
            ("web_search".into(), 1, 0, 1)
        ]
    );
    let mut per_query: Vec<(String, u64)> = db
        .query("SELECT toString(query_id), toUInt64(sum(tool_calls)) FROM queries_1m WHERE tenant_id = ? GROUP BY query_id")
        .bind(tenant)
        .fetch_all()
        .await
        .unwrap();
    per_query.sort();
    let mut want = vec![(g.id("agent_a").to_string(), 3), (g.id("planner").to_string(), 1), (g.id("researcher").to_string(), 2)];
    want.sort();
    assert_eq!(per_query, want, "tool calls per query (agent run)");

    // Dead letters: the broken message verbatim, and each bad span with its ids.
    assert_eq!(letters.len(), 3, "three dead letters: {letters:?}");
    let header = |h: &HashMap<String, String>, k: &str| h.get(k).cloned().unwrap_or_default();
    let (broken_offset, broken_payload) = &offsets["broken"];
    let broken = letters.iter().find(|d| d.reason == "undecodable").expect("undecodable letter");
    assert_eq!(&broken.payload, broken_payload);
    assert_eq!((broken.source.topic.as_str(), broken.source.offset), (f.otlp_spans_topic.as_str(), *broken_offset));
    for (reason, field, label) in [("missing_field", "tenant_id", "no_tenant"), ("invalid_value", "latency_ms", "backwards")] {
        let DeadLetter { headers: h, payload, source, .. } =
            letters.iter().find(|d| d.reason == reason).unwrap_or_else(|| panic!("{reason} letter"));
        let ids = &g.spans[label];
        assert_eq!(header(h, "agentmeter-field"), field);
        let error = header(h, "agentmeter-error");
        assert!(error.contains(&ids.trace_id) && error.contains(&ids.span_id), "{reason}: ids in `{error}`");
        assert_eq!(source.offset, offsets["b"].0);
        // The payload is a request (in the source's encoding, JSON here) with just that span.
        let request = agentmeter_ingest::otlp::decode::decode(payload, agentmeter_ingest::otlp::Encoding::OtlpJson).unwrap();
        let spans: Vec<_> = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].span_id, unhex(&ids.span_id));
    }

    // Every span accounted for (the re-export counts again here; the rows above are unique).
    let outcome = |o: &str| {
        metrics.registry.gather().iter().find(|f| f.name() == "agentmeter_ingest_otlp_spans_total").map_or(0, |f| {
            f.get_metric().iter().find(|m| m.get_label().iter().any(|l| l.value() == o)).map_or(0, |m| m.get_counter().get_value() as u64)
        })
    };
    let got: Vec<(&str, u64)> = agentmeter_ingest::otlp::OUTCOMES.iter().map(|o| (*o, outcome(o))).collect();
    assert_eq!(
        got,
        [
            ("tool_call", 3 + 1 + 3 + 2),
            ("agent_execution", 1 + 1 + 1 + 1),
            ("ai_completion", 1),
            ("dead_lettered", 2),
            ("skipped_not_genai", 1 + 1),
            ("skipped_other_operation", 1),
            ("skipped_accounted_by_agent", 2),
        ]
    );
    assert_eq!(metrics.events_consumed.with_label_values(&["otlp_span"]).get(), 6);
    assert_eq!(metrics.events_deduplicated.with_label_values(&["tool_call"]).get(), 3, "the re-exported tool calls");
    assert_eq!(metrics.events_deduplicated.with_label_values(&["agent_execution"]).get(), 1, "the re-exported agent run");
    f.drop_database().await;
}

/// Exactness without the Collector's `partition_traces_by_id`: a trace and
/// its re-export land on different OTLP partitions, read by two live
/// workers at the same time. Each worker produces its spans to their home
/// partitions of the JSON topics, where one owner inserts each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_export_on_another_partition_read_by_a_second_worker_counts_once() {
    const PARTITIONS: i32 = 2;
    let f = Fixture::new("otlp_two", PARTITIONS).await;
    let (tenant, other, org, project, conversation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let g = Generated::run(tenant, other, org, project, conversation);

    let mut config = f.config();
    // One partition of each topic per worker: the two OTLP messages below
    // are read by different workers.
    config.kafka_assignment_strategy = "range".into();
    let (stop_a, metrics_a, worker_a) = spawn_worker(config.clone());
    let (stop_b, metrics_b, worker_b) = spawn_worker(config);
    wait_for_assignment(&[&metrics_a, &metrics_b], 3 * PARTITIONS as i64, Duration::from_secs(60)).await;

    // Message a (trace one and an unpriced standalone completion) on
    // partition 0, its re-export c (trace one) on partition 1, at once.
    let producer = producer();
    let (a, c) = (g.payload("a"), g.payload("c"));
    let sends = [(0, &a), (1, &c)].map(|(partition, p)| {
        producer
            .send(FutureRecord::<[u8], [u8]>::to(&f.otlp_spans_topic).partition(partition).payload(p.as_slice()), Duration::from_secs(10))
    });
    let mut sent = Vec::new();
    for delivery in futures::future::join_all(sends).await {
        let d = delivery.map_err(|(e, _)| e).expect("produced");
        sent.push(Position { topic: f.otlp_spans_topic.clone(), partition: d.partition, offset: d.offset });
    }

    let expected = Totals {
        calls: 3,
        call_errors: 2,
        executions: 2,
        failed_executions: 0,
        input_tokens: 1000 + 300,
        output_tokens: 200 + 50,
        // The agent's own cost attribute; the standalone completion has no price.
        cost_usd: Decimal::from_str("0.0123").unwrap(),
        messages: 2,
    };
    let found = wait_for_rows(&f.ch, &expected, Duration::from_secs(120)).await;
    // Both messages handled and the copies they forwarded read (the
    // re-export's are counted as duplicates) before the workers stop.
    wait_until_committed(&f, &sent, Duration::from_secs(120)).await;
    wait_for_forwarded_copies(&[&metrics_a, &metrics_b], 0, Duration::from_secs(120)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    for worker in [worker_a, worker_b] {
        tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    }

    assert_eq!(found, expected, "raw tables (as polled)");
    assert_eq!(raw_totals(&f.ch).await, expected, "raw tables");
    assert_eq!(rollup_totals(&f.ch).await, expected, "rollups");
    assert_no_duplicate_rows(&f.ch).await;
    assert_eq!(unpriced(&f).await, (1, 1), "the standalone completion has no price here: unknown, once");
    for (name, m) in [("first", &metrics_a), ("second", &metrics_b)] {
        assert_eq!(m.events_consumed.with_label_values(&["otlp_span"]).get(), 1, "the {name} worker read one OTLP message");
    }
    let sum = |kind: &str, f: fn(&agentmeter_ingest::Metrics, &str) -> u64| f(&metrics_a, kind) + f(&metrics_b, kind);
    let forwarded = |m: &agentmeter_ingest::Metrics, k: &str| m.events_forwarded.with_label_values(&[k]).get();
    let deduplicated = |m: &agentmeter_ingest::Metrics, k: &str| m.events_deduplicated.with_label_values(&[k]).get();
    assert_eq!((sum("tool_call", forwarded), sum("agent_execution", forwarded)), (3 + 3, 2 + 1), "every mapped span produced");
    assert_eq!((sum("tool_call", deduplicated), sum("agent_execution", deduplicated)), (3, 1), "the re-export found stored");
    f.drop_database().await;
}
