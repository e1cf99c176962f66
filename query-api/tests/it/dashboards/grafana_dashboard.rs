//! The shipped "Agent usage" Grafana dashboard loads cleanly: every panel
//! request of dashboards/grafana/dashboards/agent-usage.json is sent at
//! once with one key, as Grafana's Infinity data source sends them (the
//! dashboard's default time range, its variables at Grafana's defaults:
//! "All" for the filter variables, the saved value of custom and textbox
//! variables, the first option of a query variable), against the API
//! with a day of events delivered through Kafka; each answers 200 with
//! rows and a non-zero figure.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use serde_json::Value;

use super::{deliver, events};
use crate::analytics::{App, KEY_A};

const DASHBOARD: &str = include_str!("../../../../dashboards/grafana/dashboards/agent-usage.json");

/// Replaces `${name}` and `$name` of every known variable.
fn interpolate(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_owned();
    // Longest names first, so `$top` never eats part of `$topology`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out.replace(&format!("${{{name}}}"), &vars[name]).replace(&format!("${name}"), &vars[name]);
    }
    assert!(!out.contains('$'), "a variable is left in {out}");
    out
}

/// The rows an Infinity target reads: the value at `root_selector` (a
/// dotted path; empty: the whole answer), an object being one row.
fn rows<'a>(body: &'a Value, root_selector: &str) -> Vec<&'a Value> {
    let mut at = body;
    for part in root_selector.split('.').filter(|p| !p.is_empty()) {
        at = &at[part];
    }
    match at {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![at],
        _ => vec![],
    }
}

async fn get(app: &App, path: &str) -> (u16, Value) {
    let resp = app.http.get(format!("{}{path}", app.base)).header("X-API-Key", KEY_A).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_of_the_agent_usage_dashboard_loads_with_data() {
    // Every target at once waits for the key's 8 slots: a generous wait
    // bound (10 s by default), so that a busy machine's slow answers are not
    // what decides (as in `bursts.rs`).
    let app = App::start("dash_grafana", &["--analytics-queue-wait-ms", "60000"]).await;
    let (_, calls, execs) = events(app.tenant_a, 160, "graf", Utc::now());
    deliver(&app, "dash_grafana", &calls, &execs).await;
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dash["time"]["from"], "now-24h", "the test assumes the shipped default time range");
    assert_eq!(dash["time"]["to"], "now");
    let now = Utc::now();
    let mut vars = BTreeMap::from([
        ("__from".to_owned(), (now - Duration::hours(24)).timestamp_millis().to_string()),
        ("__to".to_owned(), now.timestamp_millis().to_string()),
    ]);
    // Variables, in order, at Grafana's defaults.
    for v in dash["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_owned();
        let value = match v["type"].as_str().unwrap() {
            "query" if v["current"]["value"] == "$__all" => v["allValue"].as_str().expect("allValue").to_owned(),
            "query" => {
                // Grafana runs the query and selects the first option.
                let q = &v["query"];
                let (status, body) = get(&app, &interpolate(q["url"].as_str().unwrap(), &vars)).await;
                assert_eq!(status, 200, "variable {name}: {body}");
                let column = q["columns"][0]["selector"].as_str().expect("a column");
                let mut options: Vec<String> = rows(&body, q["root_selector"].as_str().unwrap_or(""))
                    .iter()
                    .filter_map(|r| r[column].as_str().map(str::to_owned))
                    .collect();
                options.sort();
                options.dedup();
                options.into_iter().next().unwrap_or_else(|| panic!("variable {name} has no options: {body}"))
            }
            "custom" | "textbox" | "constant" => v["current"]["value"].as_str().unwrap_or_default().to_owned(),
            other => panic!("variable {name}: type {other} not handled"),
        };
        vars.insert(name, value);
    }
    // Every panel target at once.
    let mut targets = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            targets.push((title, interpolate(t["url"].as_str().unwrap(), &vars), t.clone()));
        }
    }
    assert!(targets.len() >= 16, "{} targets", targets.len());
    let answers = futures::future::join_all(targets.iter().map(|(_, url, _)| get(&app, url))).await;
    for ((title, url, t), (status, body)) in targets.iter().zip(answers) {
        assert_eq!(status, 200, "panel {title}: GET {url}: {body}");
        let rows = rows(&body, t["root_selector"].as_str().unwrap_or(""));
        assert!(!rows.is_empty(), "panel {title}: no rows from {url}: {body}");
        let numbers: Vec<&str> =
            t["columns"].as_array().unwrap().iter().filter(|c| c["type"] == "number").map(|c| c["selector"].as_str().unwrap()).collect();
        assert!(!numbers.is_empty(), "panel {title} has no number column");
        let figure = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0);
        assert!(rows.iter().any(|r| numbers.iter().any(|n| figure(&r[*n]) != 0.0)), "panel {title}: only zeros from {url}: {body}");
    }
    app.drop_db().await;
}
