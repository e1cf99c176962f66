//! A query counts once, at its `navigator_query` execution, also where the
//! answer is filtered by user or drawn by the Grafana endpoint: events
//! through Kafka hold queries with zero tool calls (the `navigator_query`
//! execution only, which carries the user), queries with an execution and
//! calls, and queries with calls only (tool calls, not queries).

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::deliver;
use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A};
use crate::kafka::tool_call;

/// The sum of every point of every series of a Grafana answer.
fn series_sum(body: &Value) -> f64 {
    body["series"].as_array().unwrap().iter().flat_map(|s| s["points"].as_array().unwrap()).map(|p| p[1].as_f64().unwrap_or(0.0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_call_queries_count_for_a_user_and_in_grafana_call_only_ones_do_not() {
    let app = App::start("dash_zero_call", &[]).await;
    let tenant = app.tenant_a;
    let now = Utc::now();
    let (project, navigator) = (Uuid::new_v4(), Uuid::new_v4());
    let (user, other_user) = (Uuid::new_v4(), Uuid::new_v4());
    let at = |minutes: i64| (now - Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let email = move |who: Uuid| if who == user { "u@example.com" } else { "other@example.com" };
    let execution = |query: Uuid, who: Uuid, minutes: i64| {
        json!({
            "event_id": Uuid::new_v4(), "occurred_at": at(minutes), "tenant_id": tenant, "execution_id": query,
            "execution_kind": "navigator_query", "project_id": project, "navigator_id": navigator,
            "navigator_instance_id": navigator, "user_id": who, "user_token_id": who, "user_email": email(who),
            "input_tokens": 10, "output_tokens": 0,
        })
    };
    let call = |query: Uuid, who: Uuid, minutes: i64, tool: &str| {
        tool_call(
            tenant,
            now - Duration::minutes(minutes),
            tool,
            json!({
                "query_id": query, "project_id": project, "navigator_id": navigator, "navigator_instance_id": navigator,
                "user_token_id": who, "user_email": email(who),
            }),
        )
    };
    let q: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let executions = vec![
        execution(q[0], user, 300),       // the user's zero-call query
        execution(q[1], user, 200),       // the user's query with calls
        execution(q[3], other_user, 150), // another user's zero-call query
        execution(q[4], user, 100),       // another zero-call query of the user
        // Not a query: another kind of agent run.
        json!({"event_id": Uuid::new_v4(), "occurred_at": at(90), "tenant_id": tenant, "execution_id": q[5],
               "execution_kind": "agent_chat", "project_id": project, "user_token_id": user, "user_email": email(user),
               "input_tokens": 10, "output_tokens": 0}),
    ];
    let calls = vec![
        call(q[1], user, 199, "search"),
        call(q[1], user, 198, "fetch"),
        call(q[2], user, 120, "search"), // calls only, no execution
        call(q[2], user, 119, "search"),
    ];
    deliver(&app, "dash_zero_call", &calls, &executions).await;

    // The user: q0, q1, q4 (two of them without a tool call); q2's calls
    // are the user's tool calls, but q2 sent no execution.
    let body = app.ok(KEY_A, &format!("/api/v1/projects/{project}/users/{user}/analytics?window=1d&frequency=1h")).await;
    assert_valid("UserAnalyticsResponse", &body);
    let d = &body["data"];
    assert_eq!(d["total_queries"], json!(3), "{d}");
    assert_eq!(d["total_tool_calls"], json!(4), "{d}");
    assert!((d["avg_tool_calls_per_query"].as_f64().unwrap() - 4.0 / 3.0).abs() < 1e-9, "{d}");
    let timeline: u64 = d["queries_timeline"].as_array().unwrap().iter().map(|p| p["value"].as_u64().unwrap()).sum();
    assert_eq!(timeline, 3, "{d}");

    // Grafana: every query of the tenant once, at its execution (q0, q1,
    // q3, q4), also per project and navigator; under a tool filter, the
    // queries that called it (q2 too).
    let ts = |extra: &str| format!("/api/v1/query/timeseries?metric=queries&window=24h&step=1h{extra}");
    assert_eq!(series_sum(&app.ok(KEY_A, &ts("")).await), 4.0);
    assert_eq!(series_sum(&app.ok(KEY_A, &ts(&format!("&project_id={project}"))).await), 4.0);
    let grouped = app.ok(KEY_A, &ts("&group_by=navigator")).await;
    assert_eq!(grouped["series"][0]["name"], json!(navigator.to_string()), "{grouped}");
    assert_eq!(series_sum(&grouped), 4.0);
    assert_eq!(series_sum(&app.ok(KEY_A, &ts("&tool_name=search")).await), 2.0);
    assert_eq!(series_sum(&app.ok(KEY_A, &ts("&group_by=tool")).await), 3.0, "q1 under two tools, q2 under one");

    // Filtered by the user's e-mail (the usage page's user filter): the
    // user's queries, zero-call ones included, calls and tokens only.
    let me = "&user_email=u%40example.com";
    assert_eq!(series_sum(&app.ok(KEY_A, &ts(me)).await), 3.0);
    assert_eq!(series_sum(&app.ok(KEY_A, &ts(&format!("{me}&group_by=project"))).await), 3.0);
    let tokens = app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tokens&window=24h&step=1h{me}")).await;
    assert_eq!(series_sum(&tokens), 40.0, "three navigator queries and one agent run of the user");
    for metric in ["input_tokens", "output_tokens", "cost_usd", "unpriced_executions", "messages"] {
        let body = app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric={metric}&window=24h&step=1h{me}")).await;
        let want = match metric {
            "input_tokens" => 40.0,
            "messages" => 4.0,
            _ => 0.0,
        };
        assert_eq!(series_sum(&body), want, "{metric}: {body}");
    }
    let graph = |path: &str| format!("/api/v1/analytics/{path}?window=1d&frequency=1h{me}");
    let body = app.ok(KEY_A, &graph("queries-processed-graph")).await;
    assert_valid("ToolCallsGraphResponse", &body);
    let sum = |b: &Value| b["data"]["data_points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum(&body), 3, "{body}");
    assert_eq!(body["data"]["filters"]["user_email"], json!("u@example.com"), "{body}");
    assert_eq!(sum(&app.ok(KEY_A, &graph("tool-calls-processed-graph")).await), 4);
    let body = app.ok(KEY_A, &format!("/api/v1/analytics/queries-processed?window=1d{me}")).await;
    assert_eq!(body["data"]["total_queries"], json!(3), "{body}");
    let body = app.ok(KEY_A, &format!("/api/v1/analytics/top-projects?window=1d{me}")).await;
    // top-projects takes no filter and counts queries at their execution:
    // q0, q1, q3, q4 (q2 has tool calls only).
    assert_eq!(body["data"]["queries_processed"]["projects"][0]["count"], json!(4), "top-projects takes no filter: {body}");
    let body = app.ok(KEY_A, &format!("/api/v1/analytics/users?window=1d{me}")).await;
    assert_eq!(body["data"]["users"], json!([{"user_email": "u@example.com", "tool_count": 4}]), "{body}");
    app.drop_db().await;
}
