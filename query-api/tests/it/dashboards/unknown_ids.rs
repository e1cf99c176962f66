//! Ids a tenant has no data for answer 200 with zero figures, whether they
//! exist in another tenant or nowhere; both tenants have real events, and
//! no figure of one is ever counted for the other.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{deliver, events};
use crate::analytics::{shape, App, KEY_A, KEY_B};

/// The figures of an answer: its envelope's `data`, or the whole answer
/// (the Grafana endpoint has no envelope).
fn data(v: &Value) -> &Value {
    v.get("data").unwrap_or(v)
}

/// Every number of an answer that is a figure (not an instant or an echo).
fn figures(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().filter(|x| *x < 1e12).unwrap_or(0.0).abs(),
        Value::Array(a) => a.iter().map(figures).sum(),
        Value::Object(o) => {
            o.iter().filter(|(k, _)| !matches!(k.as_str(), "limit" | "top" | "bucket_count")).map(|(_, x)| figures(x)).sum()
        }
        _ => 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_without_data_answer_zeros_on_both_tenants() {
    let app = App::start("dash_unknown", &[]).await;
    let now = Utc::now();
    let (a, calls_a, execs_a) = events(app.tenant_a, 80, "alpha", now);
    let (b, calls_b, execs_b) = events(app.tenant_b, 40, "beta", now);
    let calls: Vec<Value> = calls_a.iter().chain(&calls_b).cloned().collect();
    let execs: Vec<Value> = execs_a.iter().chain(&execs_b).cloned().collect();
    deliver(&app, "dash_unknown", &calls, &execs).await;
    let nowhere = Uuid::new_v4();
    let endpoints = [
        ("/api/v1/analytics/tool-calls-processed?window=1d&project_id=", "project"),
        ("/api/v1/analytics/tool-calls-processed-graph?window=1d&frequency=1h&navigator_instance_id=", "navigator"),
        ("/api/v1/analytics/error-rate-graph?window=1d&frequency=1h&server_instance_id=", "server"),
        ("/api/v1/analytics/average-tool-calls-per-query?window=1d&tool_id=", "tool"),
        ("/api/v1/analytics/heroes/global/stats?project_id=", "project"),
        ("/api/v1/analytics/tools?window=1d&server_instance_id=", "server"),
        ("/api/v1/analytics/top-navigators?window=1d&project_id=", "project"),
        ("/api/v1/query/timeseries?metric=tokens&navigator_instance_id=", "navigator"),
    ];
    for (me, key, other, mine) in [("A", KEY_A, &b, &a), ("B", KEY_B, &a, &b)] {
        for (prefix, kind) in endpoints {
            let pick = |ids: &super::Ids| match kind {
                "project" => ids.projects[0],
                "navigator" => ids.navigators[0],
                "server" => ids.servers[0],
                _ => ids.tools[0],
            };
            let theirs = app.ok(key, &format!("{prefix}{}", pick(other))).await;
            let unknown = app.ok(key, &format!("{prefix}{nowhere}")).await;
            assert_eq!(
                shape(&theirs, pick(other)),
                shape(&unknown, nowhere),
                "{me} {prefix}: the other tenant's id must answer like an unknown one"
            );
            assert_eq!(figures(data(&theirs)), 0.0, "{me} {prefix}: {theirs}");
            let own = app.ok(key, &format!("{prefix}{}", pick(mine))).await;
            assert!(figures(data(&own)) > 0.0, "{me} {prefix}: own id counts nothing: {own}");
            let (status, body) = app.get(Some(key), &format!("{prefix}0000-not-an-id")).await;
            assert_eq!(status, 422, "{me} {prefix}: {body}");
        }
    }
    // The project endpoints too.
    let summary = app.ok(KEY_B, &format!("/api/v1/projects/{}/users/summary", a.projects[0])).await;
    assert_eq!(summary["data"]["total_users"], 0, "{summary}");
    assert_eq!(summary["data"]["weekly_active_users"], 0, "{summary}");
    app.drop_db().await;
}
