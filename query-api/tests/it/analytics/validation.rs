//! Bad requests get the spec's errors and never a 500: 401 without a
//! valid key, 422 `{detail: [{loc, msg, type}]}` for every invalid
//! parameter (injection attempts included), and the data stays intact.

use chrono::Utc;
use serde_json::Value;

use super::fixture::World;
use super::{App, KEY_A};

fn assert_422(path: &str, status: u16, body: &Value, param: &str) {
    assert_eq!(status, 422, "{path}: {body}");
    let detail = body["detail"].as_array().unwrap_or_else(|| panic!("{path}: detail is not a list: {body}"));
    assert!(!detail.is_empty());
    for d in detail {
        assert!(d["loc"].is_array() && d["msg"].is_string() && d["type"].is_string(), "{path}: {d}");
    }
    assert!(detail.iter().any(|d| d["loc"].as_array().unwrap().iter().any(|l| l == param)), "{path}: no error about {param}: {body}");
    super::schema::assert_valid("HTTPValidationError", body);
}

#[tokio::test]
async fn invalid_requests_are_422_and_unauthenticated_401() {
    let app = App::start("an_validation", &["--max-buckets", "500"]).await;
    let now = Utc::now();
    let a = World::generate(app.tenant_a, 21, 30, now, "alpha");
    app.insert_calls(&a.rows).await;
    let pa = a.projects[0];
    let user = a.users[0].token;

    // Authentication.
    for key in [None, Some(""), Some("am_dev_tenant_a"), Some("am_test_analytics_a ")] {
        let (status, body) = app.get(key, "/api/v1/analytics/tools").await;
        if key == Some("am_test_analytics_a ") {
            // Surrounding whitespace in a header value is not part of the key.
            assert_eq!(status, 200);
            continue;
        }
        assert_eq!(status, 401, "{key:?}: {body}");
        assert!(body["detail"].is_string());
    }
    let resp = app.http.get(format!("{}/api/v1/analytics/tools", app.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "Authorization: Bearer works");

    let injections = ["1h'; DROP TABLE tool_calls; --", "' OR 1=1 --", "1h) UNION SELECT * FROM system.users --", "{tenant:UUID}"];
    let mut cases: Vec<(String, &str)> = vec![
        ("/api/v1/analytics/tools?window=abc".into(), "window"),
        ("/api/v1/analytics/tools?window=0h".into(), "window"),
        ("/api/v1/analytics/tools?window=1y".into(), "window"),
        ("/api/v1/analytics/tools?window=999mon".into(), "window"),
        ("/api/v1/analytics/tools?window=-1h".into(), "window"),
        ("/api/v1/analytics/tools?limit=0".into(), "limit"),
        ("/api/v1/analytics/tools?limit=1001".into(), "limit"),
        ("/api/v1/analytics/tools?limit=ten".into(), "limit"),
        ("/api/v1/analytics/top-servers?limit=101".into(), "limit"),
        ("/api/v1/analytics/servers?sort_order=sideways".into(), "sort_order"),
        ("/api/v1/analytics/tools?tz=Mars/Olympus".into(), "tz"),
        ("/api/v1/analytics/tools?from=yesterday".into(), "from"),
        ("/api/v1/analytics/tools?from=1700000000000&to=1600000000000".into(), "from"),
        ("/api/v1/analytics/error-rate-graph?frequency=1x".into(), "frequency"),
        ("/api/v1/analytics/error-rate-graph?frequency=0d".into(), "frequency"),
        ("/api/v1/analytics/error-rate-graph?frequency=1m".into(), "frequency"),
        ("/api/v1/analytics/error-rate-graph?view=3d".into(), "view"),
        ("/api/v1/analytics/heroes/global/stats?comparison_period=yearly".into(), "comparison_period"),
        ("/api/v1/analytics/tool-calls-processed?project_id=not-a-uuid".into(), "project_id"),
        ("/api/v1/analytics/tool-calls-processed?navigator_instance_id=123".into(), "navigator_instance_id"),
        ("/api/v1/analytics/average-tool-calls-per-query?tool_id=x".into(), "tool_id"),
        ("/api/v1/analytics/tool-calls-processed?tool_name=".into(), "tool_name"),
        (format!("/api/v1/analytics/tool-calls-processed?tool_name={}", "x".repeat(300)), "tool_name"),
        (format!("/api/v1/projects/{pa}/users/{user}/analytics?window=1m"), "window"),
        (format!("/api/v1/projects/{pa}/users/{user}/analytics?frequency=1mo"), "frequency"),
        ("/api/v1/projects/nope/users/summary".into(), "project_id"),
        (format!("/api/v1/projects/{pa}/users/nope/analytics"), "user_id"),
        ("/api/v1/query/timeseries".into(), "metric"),
        ("/api/v1/query/timeseries?metric=bananas".into(), "metric"),
        ("/api/v1/query/timeseries?metric=tokens&group_by=tool".into(), "group_by"),
        ("/api/v1/query/timeseries?metric=tool_calls&group_by=planet".into(), "group_by"),
        ("/api/v1/query/timeseries?metric=tool_calls&step=1s".into(), "step"),
        ("/api/v1/query/timeseries?metric=tool_calls&window=1mon&step=1m".into(), "step"),
        ("/api/v1/query/timeseries?metric=tokens&tool_name=search".into(), "tool_name"),
        ("/api/v1/analytics/tools?window=1h&window=2h".into(), "query"),
    ];
    for inj in injections {
        let e: String = url_escape(inj);
        cases.push((format!("/api/v1/analytics/tools?window={e}"), "window"));
        cases.push((format!("/api/v1/analytics/error-rate-graph?frequency={e}"), "frequency"));
        cases.push((format!("/api/v1/analytics/tools?project_id={e}"), "project_id"));
        cases.push((format!("/api/v1/analytics/tools?tz={e}"), "tz"));
        cases.push((format!("/api/v1/analytics/servers?limit={e}"), "limit"));
        cases.push((format!("/api/v1/analytics/servers?sort_order={e}"), "sort_order"));
        cases.push((format!("/api/v1/query/timeseries?metric={e}"), "metric"));
        cases.push((format!("/api/v1/query/timeseries?metric=tool_calls&group_by={e}"), "group_by"));
    }
    for (path, param) in &cases {
        let (status, body) = app.get(Some(KEY_A), path).await;
        assert_422(path, status, &body, param);
    }
    // Too many buckets names the limit.
    let (status, body) = app.get(Some(KEY_A), "/api/v1/analytics/error-rate-graph?frequency=1m&window=1d").await;
    assert_eq!(status, 422);
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("maximum is 500"), "{body}");

    // Injection strings where a free-text value is legitimate are just values.
    for inj in injections {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/tool-calls-processed?tool_name={}", url_escape(inj))).await;
        assert_eq!(body["data"]["total_tool_calls"], 0);
        assert_eq!(body["data"]["filters"]["tool_name"], inj);
    }
    let n: u64 = app.db.query("SELECT count() FROM tool_calls").fetch_one().await.unwrap();
    assert_eq!(n, a.rows.len() as u64, "the raw table is intact");

    // Unknown routes are 404 in the same shape.
    let (status, body) = app.get(Some(KEY_A), "/api/v1/analytics/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "Not Found");

    app.drop_db().await;
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
