//! Tenants are walled off: tenant B's key sees none of tenant A's data on
//! any endpoint, and A's filter ids answer B exactly as ids that exist
//! nowhere: 200 with zero figures.

use chrono::Utc;

use super::fixture::{select, Figures, Filt, Kinds, World};
use super::{shape, time_of, App, KEY_A, KEY_B};

/// Every analytics GET endpoint with parameters that reach the most data.
pub const ENDPOINTS: &[&str] = &[
    "/api/v1/analytics/navigator-tool-connections?window=1mon",
    "/api/v1/analytics/average-tool-call-latency?window=1mon",
    "/api/v1/analytics/average-tool-call-latency-graph",
    "/api/v1/analytics/average-tool-calls-per-query?window=1mon",
    "/api/v1/analytics/average-tool-call-runtime?window=1mon",
    "/api/v1/analytics/average-tool-call-runtime-graph",
    "/api/v1/analytics/average-tool-calls-per-query-graph",
    "/api/v1/analytics/error-rate-graph",
    "/api/v1/analytics/error-types-graph",
    "/api/v1/analytics/heroes/global/stats",
    "/api/v1/analytics/queries-processed",
    "/api/v1/analytics/queries-processed-graph",
    "/api/v1/analytics/tool-calls-processed",
    "/api/v1/analytics/tool-calls-processed-graph",
    "/api/v1/analytics/proxy-tools?window=1mon",
    "/api/v1/analytics/proxy-tools/suggest-tools?window=1mon",
    "/api/v1/analytics/tools?window=1mon",
    "/api/v1/analytics/servers?window=1mon",
    "/api/v1/analytics/top-servers?window=1mon&limit=100",
    "/api/v1/analytics/top-projects?window=1mon&limit=100",
    "/api/v1/analytics/top-navigators?window=1mon&limit=100",
    "/api/v1/analytics/users?window=1mon",
    "/api/v1/query/timeseries?metric=tool_calls&group_by=tool&top=100",
    "/api/v1/query/timeseries?metric=latency_p95&group_by=server",
    "/api/v1/query/timeseries?metric=queries&group_by=navigator&format=table",
];

#[tokio::test]
async fn tenant_b_sees_nothing_of_tenant_a() {
    let app = App::start("an_tenancy", &[]).await;
    let now = Utc::now();
    let a = World::generate(app.tenant_a, 11, 120, now, "alpha");
    let b = World::generate(app.tenant_b, 12, 40, now, "beta");
    app.insert_calls(&a.rows).await;
    app.insert_executions(&a.executions).await;
    app.insert_calls(&b.rows).await;
    app.insert_executions(&b.executions).await;
    let secrets_a = a.secrets();
    let secrets_b = b.secrets();

    for path in ENDPOINTS {
        let body_b = app.ok(KEY_B, path).await.to_string();
        for s in &secrets_a {
            assert!(!body_b.contains(s.as_str()), "tenant B sees tenant A's {s} on {path}: {body_b}");
        }
        let body_a = app.ok(KEY_A, path).await.to_string();
        for s in &secrets_b {
            assert!(!body_a.contains(s.as_str()), "tenant A sees tenant B's {s} on {path}");
        }
    }

    // Totals are B's own, exactly.
    let body = app.ok(KEY_B, "/api/v1/analytics/tool-calls-processed").await;
    let d = &body["data"];
    let f = Figures::of(&select(&b.rows, time_of(d, "from"), time_of(d, "to"), Kinds::Tool, &Filt::default()));
    assert_eq!(d["total_tool_calls"], f.calls);
    // A tool name both tenants use counts only B's calls.
    let body = app.ok(KEY_B, "/api/v1/analytics/tool-calls-processed?tool_name=search").await;
    let d = &body["data"];
    let f = Figures::of(&select(
        &b.rows,
        time_of(d, "from"),
        time_of(d, "to"),
        Kinds::Tool,
        &Filt { tool_name: Some("search".into()), ..Filt::default() },
    ));
    assert_eq!(d["total_tool_calls"], f.calls);

    // A's ids are unknown to B: 200 with zero figures, exactly the answer
    // for an id that exists nowhere, on every filter and on the project
    // endpoints; malformed ids stay 422.
    let pa = a.projects[0];
    let stranger = uuid::Uuid::new_v4();
    let cases = [
        ("/api/v1/analytics/tool-calls-processed-graph?window=1d&frequency=1h&project_id=", pa),
        ("/api/v1/analytics/tool-calls-processed?project_id=", pa),
        ("/api/v1/analytics/proxy-tools?navigator_instance_id=", a.navs[0].instance),
        ("/api/v1/analytics/average-tool-call-latency?server_instance_id=", a.tools[0].server_instance),
        ("/api/v1/analytics/average-tool-calls-per-query?tool_id=", a.tools[0].id),
        ("/api/v1/analytics/tools?window=1mon&project_id=", pa),
        ("/api/v1/analytics/top-servers?window=1mon&navigator_instance_id=", a.navs[0].instance),
        ("/api/v1/analytics/error-rate-graph?window=1d&frequency=1h&server_instance_id=", a.tools[0].server_instance),
        ("/api/v1/query/timeseries?metric=errors&project_id=", pa),
        ("/api/v1/query/timeseries?metric=tool_calls&tool_id=", a.tools[0].id),
    ];
    for (prefix, id) in cases {
        let path = format!("{prefix}{id}");
        let elsewhere = app.ok(KEY_B, &path).await;
        let nowhere = app.ok(KEY_B, &format!("{prefix}{stranger}")).await;
        assert_eq!(shape(&elsewhere, id), shape(&nowhere, stranger), "{path}: another tenant's id answers like an unknown one");
        assert_eq!(figures_sum(elsewhere.get("data").unwrap_or(&elsewhere)), 0.0, "{path}: {elsewhere}");
        // The same request with A's key counts A's calls.
        let own = app.ok(KEY_A, &path).await;
        assert!(figures_sum(own.get("data").unwrap_or(&own)) > 0.0, "{path}: {own}");
        // A malformed id is still 422.
        let (status, body) = app.get(Some(KEY_B), &format!("{prefix}not-a-uuid")).await;
        assert_eq!(status, 422, "{prefix}: {body}");
    }
    // Zero-filled buckets: as many as for A, each zero.
    let path = format!("/api/v1/analytics/tool-calls-processed-graph?window=1d&frequency=1h&project_id={pa}");
    let (own, elsewhere) = (app.ok(KEY_A, &path).await, app.ok(KEY_B, &path).await);
    let points = elsewhere["data"]["data_points"].as_array().expect("data_points");
    assert!(points.len() >= 24 && points.len() == own["data"]["data_points"].as_array().unwrap().len(), "{elsewhere}");
    assert!(points.iter().all(|p| p["count"] == 0), "{elsewhere}");
    let summary = app.ok(KEY_B, &format!("/api/v1/projects/{pa}/users/summary")).await;
    assert_eq!(shape(&summary, pa), shape(&app.ok(KEY_B, &format!("/api/v1/projects/{stranger}/users/summary")).await, stranger));
    assert_eq!(summary["data"]["total_users"], 0, "{summary}");
    assert!(app.ok(KEY_A, &format!("/api/v1/projects/{pa}/users/summary")).await["data"]["total_users"].as_u64().unwrap() > 0);
    // A user of A's project asked about under B's key: the user is not
    // found, as under any project B has no such user in.
    let (status, body) = app.get(Some(KEY_B), &format!("/api/v1/projects/{pa}/users/{}/analytics", a.users[0].token)).await;
    assert_eq!((status, body["detail"].as_str()), (404, Some("User not found in this project")), "{body}");
    // A user of B's project asked about under A's key, and an unknown user.
    let pb = b.projects[0];
    let (status, _) = app.get(Some(KEY_A), &format!("/api/v1/projects/{pb}/users/{}/analytics", b.users[0].token)).await;
    assert_eq!(status, 404);
    let (status, body) = app.get(Some(KEY_B), &format!("/api/v1/projects/{pb}/users/{}/analytics", a.users[0].token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "User not found in this project");

    app.drop_db().await;
}

/// The sum of every figure of an answer (numbers other than timestamps and
/// the echoed request).
fn figures_sum(v: &serde_json::Value) -> f64 {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().filter(|x| *x < 1e12).unwrap_or(0.0).abs(),
        Value::Array(a) => a.iter().map(figures_sum).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "limit" | "max_points" | "top" | "step_seconds" | "bucket_count"))
            .map(|(_, x)| figures_sum(x))
            .sum(),
        _ => 0.0,
    }
}
