//! Names beside ids, with events through Kafka: a renamed server, project
//! and navigator show their latest name (by event time: an older event
//! that arrives late does not undo a rename), in top-N lists, the
//! connection matrix and the Grafana groups; two tenants that use the same
//! ids each see their own names. Answers stay valid Caylex shapes.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A, KEY_B};
use crate::kafka::{tool_call, Kind, Pipeline};

/// The shared ids.
struct World {
    server: Uuid,
    server_instance: Uuid,
    project: Uuid,
    navigator: Uuid,
    navigator_instance: Uuid,
    tool: Uuid,
}

fn call(tenant: Uuid, w: &World, at: DateTime<Utc>, server: &str, project: &str, navigator: &str, tool: &str) -> Value {
    tool_call(
        tenant,
        at,
        tool,
        json!({
            "server_id": w.server, "server_instance_id": w.server_instance, "server_name": server,
            "project_id": w.project, "project_name": project, "navigator_id": w.navigator,
            "navigator_instance_id": w.navigator_instance, "navigator_name": navigator, "tool_id": w.tool,
            "query_id": Uuid::new_v4(),
        }),
    )
}

/// The one entry of a top-N list (`list` under `tool_calls`), as `(id, name)`.
fn top_entry(body: &Value, list: &str, id: &str, name: &str) -> (String, Value) {
    let items = body["data"]["tool_calls"][list].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(items.len(), 1, "{body}");
    (items[0][id].as_str().unwrap().to_owned(), items[0][name].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renamed_dimensions_show_their_latest_name_per_tenant() {
    let app = App::start("dash_names", &[]).await;
    let (a, b) = (app.tenant_a, app.tenant_b);
    let now = Utc::now();
    let w = World {
        server: Uuid::new_v4(),
        server_instance: Uuid::new_v4(),
        project: Uuid::new_v4(),
        navigator: Uuid::new_v4(),
        navigator_instance: Uuid::new_v4(),
        tool: Uuid::new_v4(),
    };
    let m = |n: i64| now - Duration::minutes(n);
    // Tenant A renames everything; tenant B uses the same ids with its own names.
    let calls = vec![
        call(a, &w, m(50), "github-v1", "Alpha v1", "Helper v1", "search_v1"),
        call(a, &w, m(20), "github", "Alpha", "Helper", "search"),
        call(b, &w, m(30), "b-server", "Beta", "B helper", "b_search"),
    ];
    // The project is renamed once more by an agent execution.
    let executions = vec![json!({
        "event_id": Uuid::new_v4(), "occurred_at": m(10).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenant_id": a, "project_id": w.project, "project_name": "Alpha (renamed)", "execution_kind": "agent_chat",
    })];
    let pipeline = Pipeline::start("dash_names", &app.db_name).await;
    pipeline.produce(Kind::ToolCall, &calls).await;
    pipeline.produce(Kind::AgentExecution, &executions).await;
    pipeline.wait_rows(&app.db, "tool_calls", 3).await;
    pipeline.wait_rows(&app.db, "agent_executions", 1).await;
    // An older event with an older name, arriving after the rename.
    let late = vec![call(a, &w, m(40), "github-late", "Alpha late", "Helper late", "search_late")];
    pipeline.produce(Kind::ToolCall, &late).await;
    pipeline.wait_rows(&app.db, "tool_calls", 4).await;

    let (sid, pid, nid) = (w.server.to_string(), w.project.to_string(), w.navigator.to_string());
    for (key, server, project, navigator, tool) in
        [(KEY_A, "github", "Alpha (renamed)", "Helper", "search"), (KEY_B, "b-server", "Beta", "B helper", "b_search")]
    {
        let body = app.ok(key, "/api/v1/analytics/top-servers?window=24h").await;
        assert_valid("TopServersActivityResponse", &body);
        assert_eq!(top_entry(&body, "servers", "server_id", "server_name"), (sid.clone(), json!(server)), "{key}");
        assert_eq!(body["data"]["queries_processed"]["servers"][0]["server_name"], json!(server), "{key}");

        let body = app.ok(key, "/api/v1/analytics/top-projects?window=24h").await;
        assert_valid("TopProjectsActivityResponse", &body);
        assert_eq!(top_entry(&body, "projects", "project_id", "project_name"), (pid.clone(), json!(project)), "{key}");

        let body = app.ok(key, "/api/v1/analytics/top-navigators?window=24h").await;
        assert_valid("TopNavigatorsActivityResponse", &body);
        assert_eq!(top_entry(&body, "navigators", "navigator_id", "navigator_name"), (nid.clone(), json!(navigator)), "{key}");

        let body = app.ok(key, "/api/v1/analytics/navigator-tool-connections?window=24h").await;
        assert_valid("NavigatorToolConnectionsResponse", &body);
        let item = &body["data"][0];
        assert_eq!(item["navigator_instance_id"], json!(w.navigator_instance.to_string()), "{body}");
        assert_eq!((&item["navigator_name"], &item["tool_name"]), (&json!(navigator), &json!(tool)), "{key}: {body}");

        for (group, name) in [("navigator", navigator), ("project", project)] {
            let body = app.ok(key, &format!("/api/v1/query/timeseries?metric=tool_calls&group_by={group}&window=24h&step=1h")).await;
            let series = body["series"].as_array().unwrap();
            assert_eq!(series.len(), 1, "{body}");
            assert_eq!(series[0]["label"], json!(name), "{key} group_by={group}: {body}");
        }
    }
    // A server no event named: null, not another tenant's name.
    let unnamed = tool_call(a, m(5), "plain", json!({ "server_id": Uuid::new_v4() }));
    pipeline.produce(Kind::ToolCall, std::slice::from_ref(&unnamed)).await;
    pipeline.wait_rows(&app.db, "tool_calls", 5).await;
    pipeline.stop().await;
    let body = app.ok(KEY_A, "/api/v1/analytics/top-servers?window=24h&limit=10").await;
    assert_valid("TopServersActivityResponse", &body);
    let plain = body["data"]["tool_calls"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_id"] == unnamed["server_id"])
        .cloned()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(plain["server_name"], Value::Null, "{body}");
    app.drop_db().await;
}
