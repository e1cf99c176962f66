//! Operational endpoints: health, readiness, metrics, OpenAPI, docs, and
//! the 503 when ClickHouse is slower than the query budget.

use super::{App, KEY_A};

#[tokio::test]
async fn health_ready_metrics_openapi_docs() {
    let app = App::start("an_ops", &[]).await;
    let (status, body) = app.get(None, "/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get(None, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema_version"], agentmeter_schema::migrations::latest_version());
    let (status, body) = app.get(Some(KEY_A), "/api/v1/analytics/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));

    let _ = app.get(Some(KEY_A), "/api/v1/analytics/tools").await;
    let _ = app.get(Some(KEY_A), &format!("/api/v1/projects/{}/users/{}/analytics", uuid::Uuid::new_v4(), uuid::Uuid::new_v4())).await;
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"agentmeter_api_requests_total{method="GET",route="/api/v1/analytics/tools",status="200"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"route="/api/v1/projects/{project_id}/users/{user_id}/analytics",status="404""#),
        "route templates, not paths"
    );
    assert!(metrics.contains("agentmeter_api_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"agentmeter_api_clickhouse_query_duration_seconds_count{query="tool_calls_groups"}"#));

    let (status, doc) = app.get(None, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/analytics/tools"]["get"].is_object());
    let resp = app.http.get(format!("{}/docs", app.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("/openapi.json"));
    app.drop_db().await;
}

#[tokio::test]
async fn slow_clickhouse_gives_503() {
    // A ClickHouse that takes every connection and never answers (the real
    // one can answer an empty table within any budget short enough to test).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let app = App::start_reading("an_busy", Some(&url), &["--query-timeout-ms", "300"]).await;
    let (status, body) = app.get(Some(KEY_A), "/api/v1/analytics/error-rate-graph").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("busy"), "{body}");
    holder.abort();
    app.drop_db().await;
}
