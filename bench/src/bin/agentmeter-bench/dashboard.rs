//! The shipped Grafana dashboard (`dashboards/grafana/dashboards/agent-usage.json`)
//! loaded against the graphs benchmark's month through `agentmeter-api`:
//! every panel's request over the last 7 days, one by one and all at once
//! (as Grafana sends them when the dashboard opens), several rounds.
//!
//! The panels' URLs are read from the dashboard file itself, so the
//! figure follows the dashboard as it changes; the variables take their
//! defaults (every project and navigator, top 10, UTC) and the
//! organization one the first organization of the month. The ceiling of
//! "all at once" is "one by one" in the same run: a dashboard whose panels
//! wait for each other gains nothing from being sent together.

use std::time::Instant;

use chrono::Utc;
use clickhouse::Client;
use serde_json::{json, Value};

use crate::graphs::{api_get, timed};
use crate::report::{percentile, round};

/// Where the dashboard lives, from the repository root (`bench/run` runs there).
const DASHBOARD: &str = "dashboards/grafana/dashboards/agent-usage.json";

/// One panel request.
struct Panel {
    title: String,
    path: String,
}

/// The figures of the dashboard load, as JSON, and the table lines to print.
pub struct Load {
    pub json: Value,
    pub lines: Vec<String>,
}

/// The panel requests of the dashboard, its variables filled in.
fn panels(organization: &str) -> anyhow::Result<Vec<Panel>> {
    let text = std::fs::read_to_string(DASHBOARD).map_err(|e| anyhow::anyhow!("reading {DASHBOARD}: {e}"))?;
    let doc: Value = serde_json::from_str(&text)?;
    let to = Utc::now().timestamp_millis();
    let from = to - 7 * 86_400_000;
    let fill = |url: &str| {
        url.replace("${__from}", &from.to_string())
            .replace("${__to}", &to.to_string())
            .replace("${tz}", "UTC")
            .replace("${top}", "10")
            .replace("${project}", "")
            .replace("${navigator}", "")
            .replace("${organization_id}", organization)
    };
    let mut out = Vec::new();
    for panel in doc["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(url) = target["url"].as_str() {
                out.push(Panel { title: panel["title"].as_str().unwrap_or("").to_owned(), path: fill(url) });
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "{DASHBOARD} has no panel URL");
    anyhow::ensure!(out.iter().all(|p| !p.path.contains("${")), "a dashboard variable is not filled in");
    Ok(out)
}

/// One request as tenant A, its time in ms (the answer decoded, as the
/// graphs' HTTP runs are timed); a non-200 answer is an error.
async fn get(http: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<f64> {
    timed(api_get(http, &format!("{base}{path}"))).await
}

/// Loads the dashboard `rounds` times each way against the API at `base`.
pub async fn run(http: &reqwest::Client, base: &str, client: &Client, rounds: usize) -> anyhow::Result<Load> {
    let organization: String = client
        .query(
            "SELECT toString(organization_id) FROM agent_executions_1h
             WHERE organization_id != toUUID('00000000-0000-0000-0000-000000000000') ORDER BY organization_id LIMIT 1",
        )
        .fetch_optional()
        .await?
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
    let panels = panels(&organization)?;
    // Warm-up: each panel once.
    for p in &panels {
        get(http, base, &p.path).await?;
    }
    let mut per_panel: Vec<Vec<f64>> = vec![Vec::new(); panels.len()];
    let (mut one_by_one, mut at_once) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for (i, p) in panels.iter().enumerate() {
            per_panel[i].push(get(http, base, &p.path).await?);
        }
        one_by_one.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for p in &panels {
            let (http, base, path) = (http.clone(), base.to_owned(), p.path.clone());
            set.spawn(async move { get(&http, &base, &path).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        at_once.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (seq50, seq95, par50, par95) =
        (percentile(&one_by_one, 50.0), percentile(&one_by_one, 95.0), percentile(&at_once, 50.0), percentile(&at_once, 95.0));
    let mut by_panel: Vec<(usize, f64, f64)> =
        per_panel.iter().enumerate().map(|(i, t)| (i, percentile(t, 50.0), percentile(t, 95.0))).collect();
    by_panel.sort_by(|a, b| b.1.total_cmp(&a.1));
    let slowest = &panels[by_panel[0].0];
    let mut lines = vec![
        format!(
            "dashboard ({} panel requests of {DASHBOARD}, 7 d, {rounds} rounds): one by one p50 {seq50:.0} ms, p95 {seq95:.0} ms; \
             all at once p50 {par50:.0} ms, p95 {par95:.0} ms ({:.1}x one by one)",
            panels.len(),
            seq50 / par50
        ),
        "slowest panels, one by one (p50 / p95 ms):".to_owned(),
    ];
    for (i, p50, p95) in by_panel.iter().take(5) {
        lines.push(format!("  {p50:6.1} / {p95:6.1}  {}: {}", panels[*i].title, panels[*i].path));
    }
    let json = json!({
        "what": "every panel request of the shipped Grafana dashboard over the last 7 days through agentmeter-api (per-key limits off), one by one and all at once, after one warm-up of each",
        "dashboard": DASHBOARD,
        "panel_requests": panels.len(),
        "rounds": rounds,
        "one_by_one_ms": {"p50": round(seq50, 1), "p95": round(seq95, 1)},
        "all_at_once_ms": {"p50": round(par50, 1), "p95": round(par95, 1)},
        "one_by_one_over_all_at_once_p50": round(seq50 / par50, 2),
        "slowest_panel": {"title": slowest.title, "path": slowest.path, "p50_ms": round(by_panel[0].1, 1), "p95_ms": round(by_panel[0].2, 1)},
        "panels": by_panel.iter().map(|(i, p50, p95)| json!({
            "title": panels[*i].title, "path": panels[*i].path, "p50_ms": round(*p50, 1), "p95_ms": round(*p95, 1),
        })).collect::<Vec<_>>(),
    });
    Ok(Load { json, lines })
}
