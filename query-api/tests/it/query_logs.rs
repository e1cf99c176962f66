//! Query logs, query details and traces end to end: tool-call and
//! agent-execution events produced to Kafka, carried into ClickHouse by a
//! real ingest worker, answered by the API and validated against the
//! contract's schemas (`Page_QueryLogResponse_`, `GetQueryResponse`,
//! `GetQueryTrace`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A, KEY_B};
use crate::kafka::{Kind, Pipeline};

/// Produces `events` (tool calls and agent executions, told apart by
/// `tool_name`) to their topics.
async fn send(pipe: &Pipeline, events: &[Value]) {
    let (calls, executions): (Vec<Value>, Vec<Value>) = events.iter().cloned().partition(|e| e.get("tool_name").is_some());
    pipe.produce(Kind::ToolCall, &calls).await;
    pipe.produce(Kind::AgentExecution, &executions).await;
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A navigator query (the agent execution that is the query).
fn navigator_query(tenant: Uuid, project: Uuid, query: Uuid, navigator: Uuid, t: DateTime<Utc>, text: Option<&str>) -> Value {
    let mut e = json!({
        "event_id": Uuid::new_v4(), "occurred_at": at(t), "tenant_id": tenant, "execution_id": query,
        "execution_kind": "navigator_query", "project_id": project, "navigator_instance_id": navigator,
        "input_tokens": 10, "output_tokens": 5, "duration_ms": 1500.0,
    });
    if let Some(text) = text {
        e["query_text"] = json!(text);
    }
    e
}

struct Call<'a> {
    kind: &'a str,
    tool: &'a str,
    server: Uuid,
    server_instance: Uuid,
    ok: bool,
    error: Option<&'a str>,
}

fn tool_call(tenant: Uuid, project: Uuid, query: Uuid, navigator: Uuid, t: DateTime<Utc>, c: Call<'_>) -> Value {
    json!({
        "event_id": Uuid::new_v4(), "occurred_at": at(t), "tenant_id": tenant, "project_id": project,
        "navigator_instance_id": navigator, "navigator_name": "GitHub Assistant", "query_id": query,
        "call_kind": c.kind, "suggestions_count": if c.kind == "suggest_tools" { Some(4) } else { None },
        "server_id": c.server, "server_name": "GitHub API", "server_instance_id": c.server_instance,
        "tool_name": c.tool, "latency_ms": 800.0, "success": c.ok,
        "error_type": if c.ok { None } else { Some("upstream") }, "error_message": c.error,
    })
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

/// Polls `path` until `done` holds (events take a flush to arrive).
async fn wait_for(app: &App, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = app.ok(key, path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting on {path}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_logs_details_and_traces_from_real_events() {
    let app = App::start("query_logs", &[]).await;
    let pipe = Pipeline::start("query_logs", &app.db_name).await;
    let (a, b) = (app.tenant_a, app.tenant_b);
    let (project, navigator, other_navigator) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (server, server_instance, other_instance) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let t0 = Utc::now() - chrono::Duration::minutes(30);
    let s = |secs: i64| t0 + chrono::Duration::seconds(secs);

    // Q0: a navigator query with no tool call at all.
    let q0 = Uuid::new_v4();
    // Q1: a query with every call kind: suggest, schemas, invoke + two tools (one fails).
    let q1 = Uuid::new_v4();
    // Q2: tool calls only (no execution event, so no text), another navigator and server instance.
    let q2 = Uuid::new_v4();
    let call = |kind, tool, ok, error| Call { kind, tool, server, server_instance, ok, error };
    let mut events = vec![
        navigator_query(a, project, q0, navigator, s(0), Some("What changed in the last release?")),
        navigator_query(a, project, q1, navigator, s(10), Some("Create a GitHub issue for bug report")),
        tool_call(a, project, q1, navigator, s(11), call("suggest_tools", "suggest_tools", true, None)),
        tool_call(a, project, q1, navigator, s(12), call("get_tool_schemas", "get_tool_schemas", true, None)),
        tool_call(a, project, q1, navigator, s(13), call("invoke_tools", "invoke_tools", true, None)),
        tool_call(a, project, q1, navigator, s(14), call("tool", "create_issue", true, None)),
        tool_call(a, project, q1, navigator, s(15), call("tool", "add_label", false, Some("label not found"))),
        tool_call(a, project, q2, other_navigator, s(20), Call { server_instance: other_instance, ..call("tool", "search", true, None) }),
        // Tenant B uses the same project id and Q1's id: none of it may show for A, nor A's for B.
        navigator_query(b, project, Uuid::new_v4(), navigator, s(5), Some("tenant b's query")),
        tool_call(b, project, q1, navigator, s(16), call("tool", "b_tool", true, None)),
    ];
    // 37 more queries of tool calls only, one per second, for pagination.
    let fillers: Vec<Uuid> = (0..37).map(|_| Uuid::new_v4()).collect();
    for (i, q) in fillers.iter().enumerate() {
        for k in 0..2 {
            events.push(tool_call(
                a,
                project,
                *q,
                navigator,
                s(100 + i as i64) + chrono::Duration::milliseconds(k * 300),
                call("tool", "list", true, None),
            ));
        }
    }
    send(&pipe, &events).await;
    // Every event stored before the first look: the listing shows a query as
    // soon as either its execution or one of its calls is in, so waiting for
    // 40 queries alone could read Q1 from its calls before its execution.
    let executions = events.iter().filter(|e| e.get("tool_name").is_none()).count() as u64;
    pipe.wait_rows(&app.db, "tool_calls", events.len() as u64 - executions).await;
    pipe.wait_rows(&app.db, "agent_executions", executions).await;
    let list = format!("/api/v1/projects/{project}/query-logs");
    let all = app.ok(KEY_A, &format!("{list}?size=100")).await;
    assert_eq!((all["meta"]["total"].clone(), all["items"].as_array().unwrap().len()), (json!(40), 40));
    assert_valid("Page_QueryLogResponse_", &all);

    // Newest first by the query's first event; every query of A, once.
    let mut expected: Vec<String> = fillers.iter().rev().map(|q| q.to_string()).collect();
    expected.extend([q2.to_string(), q1.to_string(), q0.to_string()]);
    assert_eq!(ids(&all), expected);
    let item = |id: Uuid| all["items"].as_array().unwrap().iter().find(|i| i["id"] == json!(id.to_string())).unwrap().clone();
    let (i0, i1, i2) = (item(q0), item(q1), item(q2));
    assert_eq!((i0["num_tool_calls"].clone(), i0["query"].clone()), (json!(0), json!("What changed in the last release?")));
    assert_eq!(i0["servers_invoked"], json!([]));
    assert_eq!(i1["num_tool_calls"], json!(2), "{i1}");
    assert_eq!(i1["num_errors"], json!(1));
    assert_eq!(i1["servers_invoked"], json!([server.to_string()]));
    assert_eq!(i1["server_logo_urls"], json!([null]));
    assert_eq!(i1["timestamp"], json!(at(s(10))));
    assert_eq!(i1["navigator_name"], json!("GitHub Assistant"));
    assert_eq!(i1["navigator_instance_id"], json!(navigator.to_string()));
    assert_eq!((i2["query"].clone(), i2["navigator_instance_id"].clone()), (json!(""), json!(other_navigator.to_string())));

    // Filters.
    let only = app.ok(KEY_A, &format!("{list}?server_instance_id={other_instance}")).await;
    assert_eq!((ids(&only), only["meta"]["total"].clone()), (vec![q2.to_string()], json!(1)));
    let only = app.ok(KEY_A, &format!("{list}?navigator_instance_id={other_navigator}")).await;
    assert_eq!(ids(&only), vec![q2.to_string()]);
    let range = format!("{list}?timestamp__gte={}&timestamp__lte={}", at(s(10)), at(s(20)));
    let only = app.ok(KEY_A, &range.replace('+', "%2B")).await;
    assert_eq!((ids(&only), only["meta"]["total"].clone()), (vec![q2.to_string(), q1.to_string()], json!(2)));

    // Details and trace.
    let detail = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{q1}")).await;
    assert_valid("GetQueryResponse", &detail);
    assert_eq!(detail["query"], json!("Create a GitHub issue for bug report"));
    assert_eq!(detail["project_id"], json!(project.to_string()));
    assert_eq!((detail["created_at"].clone(), detail["updated_at"].clone()), (json!(at(s(10))), json!(at(s(15)))));
    let trace = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{q1}/trace")).await;
    assert_valid("GetQueryTrace", &trace);
    assert_eq!(trace["query"], detail);
    let groups = trace["tool_call_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{trace}");
    let calls = groups[0]["tool_calls"].as_array().unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c["tool"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["create_issue", "add_label"]);
    assert_eq!(groups[0]["created_at"], json!(at(s(13))));
    assert_eq!((calls[1]["success"].clone(), calls[1]["error_message"].clone()), (json!(false), json!("label not found")));
    assert_eq!((calls[0]["latency"].clone(), calls[0]["error_message"].clone()), (json!(0.8), Value::Null));
    assert_eq!(calls[0]["server_instance_id"], json!(server_instance.to_string()));
    assert_eq!(calls[0]["tool"]["server"], json!({"id": server.to_string(), "name": "GitHub API"}));
    assert_eq!(trace["tool_schemas"].as_array().unwrap().len(), 1);
    assert_eq!(trace["tool_schemas"][0]["created_at"], json!(at(s(12))));
    assert_eq!(trace["suggest_tools"].as_array().unwrap().len(), 1);
    assert_eq!(trace["suggest_tools"][0]["suggestions_count"], json!(4));
    let empty = app.ok(KEY_A, &format!("/api/v1/queries/query-logs/{q0}/trace")).await;
    assert_valid("GetQueryTrace", &empty);
    assert_eq!(
        (empty["tool_call_groups"].clone(), empty["query"]["query"].clone()),
        (json!([]), json!("What changed in the last release?"))
    );

    // Tenancy: another tenant's ids answer exactly like ids nobody uses.
    let (s_b, body_b) = app.get(Some(KEY_A), &format!("/api/v1/queries/query-logs/{}", Uuid::new_v4())).await;
    let b_only = app.ok(KEY_B, &format!("{list}?size=100")).await;
    assert_eq!(b_only["meta"]["total"], json!(2), "{b_only}");
    assert!(!b_only["items"].as_array().unwrap().iter().any(|i| i["query"] == json!("Create a GitHub issue for bug report")));
    let b_q1 = app.ok(KEY_B, &format!("/api/v1/queries/query-logs/{q1}/trace")).await;
    assert_eq!(b_q1["tool_call_groups"][0]["tool_calls"].as_array().unwrap().len(), 1, "B sees only its own call of that id");
    assert_eq!(b_q1["query"]["query"], json!(""));
    let (s0, body0) = app.get(Some(KEY_B), &format!("/api/v1/queries/query-logs/{q0}")).await;
    assert_eq!((s0, body0.clone()), (s_b, body_b.clone()));
    assert_eq!((s_b, body_b), (404, json!({"detail": "Query not found"})));
    let (s0, _) = app.get(Some(KEY_B), &format!("/api/v1/queries/query-logs/{q0}/trace")).await;
    assert_eq!(s0, 404);
    let nobody = app.ok(KEY_A, &format!("/api/v1/projects/{}/query-logs", Uuid::new_v4())).await;
    assert_eq!(nobody, json!({"items": [], "meta": {"size": 20, "total": 0, "next_cursor": null, "has_next": false, "has_prev": false}}));

    // Malformed ids and parameters: 422 naming them.
    for (path, loc) in [
        ("/api/v1/queries/query-logs/not-a-uuid".to_owned(), json!(["path", "query_id"])),
        ("/api/v1/queries/query-logs/not-a-uuid/trace".to_owned(), json!(["path", "query_id"])),
        ("/api/v1/projects/nope/query-logs".to_owned(), json!(["path", "project_id"])),
        (format!("{list}?size=0"), json!(["query", "size"])),
        (format!("{list}?size=101"), json!(["query", "size"])),
        (format!("{list}?cursor=zzz"), json!(["query", "cursor"])),
        (format!("{list}?server_instance_id=x"), json!(["query", "server_instance_id"])),
        (format!("{list}?timestamp__gte=yesterday"), json!(["query", "timestamp__gte"])),
    ] {
        let (status, body) = app.get(Some(KEY_A), &path).await;
        assert_eq!((status, body["detail"][0]["loc"].clone()), (422, loc), "{path}: {body}");
    }

    // Pagination stays exact while new queries arrive between pages: pages
    // of 7, and after each page three newer queries (one with a tool call
    // before its execution event) land before the next page is read.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut landed = 40;
    loop {
        let path = match &cursor {
            Some(c) => format!("{list}?size=7&cursor={c}"),
            None => format!("{list}?size=7"),
        };
        let page = app.ok(KEY_A, &path).await;
        assert_valid("Page_QueryLogResponse_", &page);
        assert_eq!(page["meta"]["has_prev"], json!(pages > 0));
        // The count when the listing began, carried by the cursor, while 3 more land per page.
        assert_eq!(page["meta"]["total"], json!(40), "page {pages}");
        seen.extend(ids(&page));
        pages += 1;
        let newer: Vec<Value> = (0..3)
            .flat_map(|i| {
                let (q, t) = (Uuid::new_v4(), Utc::now() - chrono::Duration::seconds(5 - i));
                vec![
                    navigator_query(a, project, q, navigator, t, Some("new")),
                    tool_call(a, project, q, navigator, t, call("tool", "x", true, None)),
                ]
            })
            .collect();
        send(&pipe, &newer).await;
        landed += 3;
        wait_for(&app, KEY_A, &format!("{list}?size=1"), |v| v["meta"]["total"] == json!(landed)).await;
        if page["meta"]["has_next"] == json!(false) {
            assert_eq!(page["meta"]["next_cursor"], Value::Null);
            break;
        }
        cursor = Some(page["meta"]["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 6);
    assert_eq!(seen, expected, "every query that existed when paging began, once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 40);

    pipe.stop().await;
    app.drop_db().await;
}
