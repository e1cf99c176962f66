//! OpenTelemetry GenAI spans, as the Collector's Kafka exporter writes
//! them, answered by the API: the messages of ingest's OTLP test (built by
//! the official Python SDK, `ingest/tests/otlp/make_spans.py`: protobuf and
//! OTLP/JSON, old and new attribute names, a re-exported trace, an agent
//! run split over two messages, non-GenAI spans, spans that break the
//! contract and a broken message) go through Kafka and a real ingest worker,
//! and the API answers the analytics endpoints, the query logs and traces
//! of the agent runs, the Grafana cost series and the organization's usage
//! (unknown costs left out of the sums and counted). The raw rows, rollups
//! and dead letters of the same messages are checked field by field in
//! ingest's `otlp` test.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A, KEY_B};
use crate::kafka::Pipeline;

/// The SDK's messages, read as ingest's OTLP test reads them.
#[path = "../../../ingest/tests/otlp/generated.rs"]
mod generated;
use generated::{Generated, PRICES};

/// Seconds and ratios are answered rounded to 6 places.
fn close(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what}: {v} is not a number"));
    assert!((got - want).abs() < 1e-6, "{what}: {got} != {want}");
}

/// Names, latencies (s), successes and error messages of a trace's one group.
fn trace_calls(trace: &Value) -> Vec<(String, f64, bool, Value)> {
    let groups = trace["tool_call_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "OTLP tool calls are `tool` calls: one group: {trace}");
    groups[0]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["tool"]["name"].as_str().unwrap().to_owned(),
                c["latency"].as_f64().unwrap(),
                c["success"] == json!(true),
                c["error_message"].clone(),
            )
        })
        .collect()
}

/// Sum of a series' non-null points, and how many points are null.
fn sum_and_nulls(series: &Value) -> (f64, usize) {
    let points = series["points"].as_array().unwrap();
    (points.iter().filter_map(|p| p[1].as_f64()).sum(), points.iter().filter(|p| p[1].is_null()).count())
}

/// Waits until the query's trace, read through the API, holds its `calls`
/// tool calls.
async fn wait_trace(app: &App, query: Uuid, calls: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = app.get(Some(KEY_A), &format!("/api/v1/queries/query-logs/{query}/trace")).await;
        let have =
            body["tool_call_groups"].as_array().map_or(0, |g| g.iter().map(|g| g["tool_calls"].as_array().map_or(0, Vec::len)).sum());
        if status == 200 && have == calls {
            return;
        }
        assert!(matches!(status, 200 | 404) && std::time::Instant::now() < deadline, "trace of {query}: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otlp_spans_answer_analytics_traces_and_costs() {
    let app = App::start("otlp", &[]).await;
    let pipe = Pipeline::start_otlp("otlp", &app.db_name, Some(PRICES)).await;
    let tenant = app.tenant_a;
    let (other, org, project, conversation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let g = Generated::run(tenant, other, org, project, conversation);
    let payloads: Vec<Vec<u8>> = g.messages.iter().map(|m| m.payload()).collect();
    pipe.produce_otlp(&payloads).await;

    // 6 tool calls and 4 executions, each once (the re-export adds nothing).
    pipe.wait_rows(&app.db, "tool_calls", 6).await;
    pipe.wait_rows(&app.db, "agent_executions", 4).await;
    let (agent_a, planner, researcher) = (g.id("agent_a"), g.id("planner"), g.id("researcher"));
    wait_trace(&app, agent_a, 3).await;
    wait_trace(&app, researcher, 2).await;

    // The trace of the first agent run (one message, protobuf).
    let trace = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{agent_a}/trace")).await;
    assert_valid("GetQueryTrace", &trace);
    assert_eq!(
        trace_calls(&trace),
        [
            ("search_docs".to_owned(), 0.25, true, Value::Null),
            ("fetch_ticket".to_owned(), 1.2, false, json!("deadline exceeded")),
            ("send_mail".to_owned(), 0.04, false, json!("smtplib.SMTPException: relay refused")),
        ]
    );
    let first = &trace["tool_call_groups"][0];
    assert_eq!(first["created_at"], json!(g.at(1000)));
    assert_eq!(first["tool_calls"][0]["tool"]["server"]["name"], json!("docs-mcp"));
    assert_eq!((trace["tool_schemas"].clone(), trace["suggest_tools"].clone()), (json!([]), json!([])));
    assert_eq!(
        (trace["query"]["id"].clone(), trace["query"]["project_id"].clone()),
        (json!(agent_a.to_string()), json!(project.to_string()))
    );

    // The run split over two messages: its tool calls (one under a
    // framework step) arrived before the agent span, and still form its trace.
    let trace = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{researcher}/trace")).await;
    assert_valid("GetQueryTrace", &trace);
    assert_eq!(trace_calls(&trace), [("web_search".to_owned(), 0.3, true, Value::Null), ("summarize".to_owned(), 0.5, true, Value::Null)]);
    assert_eq!(trace["tool_call_groups"][0]["tool_calls"][0]["tool"]["server"]["name"], json!("search-mcp"));
    let detail = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{researcher}")).await;
    assert_valid("GetQueryResponse", &detail);
    // From its agent span's start (the run's execution) to its last tool call.
    assert_eq!((detail["created_at"].clone(), detail["updated_at"].clone()), (json!(g.at(40_000)), json!(g.at(41_100))));
    // Another tenant's key sees none of it.
    let (status, _) = app.get(Some(KEY_B), &format!("/api/v1/queries/query-logs/{researcher}/trace")).await;
    assert_eq!(status, 404);

    // Query logs of the project: the two runs whose resource names it.
    let logs = app.ok(KEY_A, &format!("/api/v1/projects/{project}/query-logs?size=10")).await;
    assert_valid("Page_QueryLogResponse_", &logs);
    let items: Vec<(String, Value, Value)> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["num_tool_calls"].clone(), i["num_errors"].clone()))
        .collect();
    assert_eq!(items, [(researcher.to_string(), json!(2), json!(0)), (agent_a.to_string(), json!(3), json!(2))], "newest first");

    // Analytics answers over the last hour.
    let body = app.ok(KEY_A, "/api/v1/analytics/tool-calls-processed?window=1h").await;
    assert_valid("ToolCallsProcessedResponse", &body);
    assert_eq!(body["data"]["total_tool_calls"], json!(6));
    let body = app.ok(KEY_A, "/api/v1/analytics/queries-processed?window=1h").await;
    assert_valid("QueriesProcessedResponse", &body);
    // An agent run is a `navigator_query` execution: one query each.
    assert_eq!(body["data"]["total_queries"], json!(3), "one query per agent run: {agent_a}, {planner}, {researcher}");
    let body = app.ok(KEY_A, "/api/v1/analytics/average-tool-calls-per-query?window=1h").await;
    assert_valid("ToolCallsPerQueryResponse", &body);
    assert_eq!(body["data"]["total_tool_calls"], json!(6));
    close(&body["data"]["average_tool_calls_per_query"], 2.0, "calls per query");
    let body = app.ok(KEY_A, "/api/v1/analytics/average-tool-call-latency?window=1h").await;
    assert_valid("AverageToolCallLatencyResponse", &body);
    assert_eq!(body["data"]["total_calls"], json!(6));
    close(&body["data"]["average_latency"], (0.25 + 1.2 + 0.04 + 0.1 + 0.3 + 0.5) / 6.0, "average latency (s)");
    let body = app.ok(KEY_B, "/api/v1/analytics/tool-calls-processed?window=1h").await;
    assert_eq!(body["data"]["total_tool_calls"], json!(0), "another tenant: {body}");

    // Tokens and costs (Grafana): known costs summed exactly, the run of a
    // model without a price counted apart and its cost unknown (null).
    let series = |metric: &str, extra: &str| format!("/api/v1/query/timeseries?metric={metric}&window=2h&step=1h{extra}");
    let tokens = app.ok(KEY_A, &series("tokens", "")).await;
    assert_eq!(sum_and_nulls(&tokens["series"][0]), (f64::from(1000 + 400 + 300 + 700 + 200 + 80 + 50 + 90), 0));
    let cost = app.ok(KEY_A, &series("cost_usd", "")).await;
    let (sum, nulls) = sum_and_nulls(&cost["series"][0]);
    assert!((sum - 0.01535).abs() < 1e-12 && nulls == 0, "{cost}");
    let unpriced = app.ok(KEY_A, &series("unpriced_executions", "")).await;
    assert_eq!(sum_and_nulls(&unpriced["series"][0]), (1.0, 0));
    let by_model = app.ok(KEY_A, &series("cost_usd", "&group_by=model")).await;
    let model = |name: &str| by_model["series"].as_array().unwrap().iter().find(|s| s["name"] == json!(name)).cloned().unwrap();
    assert_eq!(sum_and_nulls(&model("claude-unpriced")), (0.0, 1), "unknown, not 0: {by_model}");
    let (gpt, nulls) = sum_and_nulls(&model("gpt-4o"));
    assert!((gpt - (0.0018 + 0.00125)).abs() < 1e-12 && nulls == 0, "{by_model}");

    // The organization's usage: the month, from the rollup ...
    let usage = app.ok(KEY_A, &format!("/v1/organizations/{org}/usage")).await;
    assert_eq!((usage["cost_usd"].clone(), usage["unpriced_executions"].clone()), (json!("0.015350"), json!(1)), "{usage}");
    assert_eq!(usage["tokens_count"], json!(2820));
    // ... and a range holding only the run without a price (from the raw table): unknown.
    let only = format!("period_start={}&period_end={}", g.at(39_000).replace('+', "%2B"), g.at(45_000).replace('+', "%2B"));
    let usage = app.ok(KEY_A, &format!("/v1/organizations/{org}/usage?{only}")).await;
    assert_eq!(
        (usage["cost_usd"].clone(), usage["unpriced_executions"].clone(), usage["tokens_count"].clone()),
        (Value::Null, json!(1), json!(790))
    );

    pipe.stop().await;
    app.drop_db().await;
}
