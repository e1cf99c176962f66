//! Tenants are walled off: tenant B's key sees none of tenant A's data on
//! any endpoint, and A's filter ids are "not found" for B (and vice versa).

use chrono::Utc;

use super::fixture::{select, Figures, Filt, Kinds, World};
use super::{time_of, App, KEY_A, KEY_B};

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
    app.insert_calls(&b.rows).await;
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

    // A's ids are not found for B, on every filter and on the user endpoints.
    let pa = a.projects[0];
    let cases = [
        (
            format!("/api/v1/analytics/tool-calls-processed?project_id={pa}"),
            format!("Project {pa} not found or does not belong to this tenant"),
        ),
        (
            format!("/api/v1/analytics/proxy-tools?navigator_instance_id={}", a.navs[0].instance),
            format!("Navigator instance {} not found or does not belong to this tenant", a.navs[0].instance),
        ),
        (
            format!("/api/v1/analytics/average-tool-call-latency?server_instance_id={}", a.tools[0].server_instance),
            format!("Server instance {} not found or does not belong to this tenant", a.tools[0].server_instance),
        ),
        (
            format!("/api/v1/analytics/average-tool-calls-per-query?tool_id={}", a.tools[0].id),
            format!("Tool {} not found or does not belong to this tenant", a.tools[0].id),
        ),
        (format!("/api/v1/projects/{pa}/users/summary"), format!("Project {pa} not found or does not belong to this tenant")),
        (
            format!("/api/v1/projects/{pa}/users/{}/analytics", a.users[0].token),
            format!("Project {pa} not found or does not belong to this tenant"),
        ),
        (
            format!("/api/v1/query/timeseries?metric=errors&project_id={pa}"),
            format!("Project {pa} not found or does not belong to this tenant"),
        ),
    ];
    for (path, detail) in &cases {
        let (status, body) = app.get(Some(KEY_B), path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["detail"], detail.as_str());
        // The same request with A's key works.
        let (status, body) = app.get(Some(KEY_A), path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // A user of B's project asked about under A's key, and an unknown user.
    let pb = b.projects[0];
    let (status, _) = app.get(Some(KEY_A), &format!("/api/v1/projects/{pb}/users/{}/analytics", b.users[0].token)).await;
    assert_eq!(status, 404);
    let (status, body) = app.get(Some(KEY_B), &format!("/api/v1/projects/{pb}/users/{}/analytics", a.users[0].token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "User not found in this project");

    app.drop_db().await;
}
