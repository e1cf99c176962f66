//! The built-in usage page, end to end in headless Chromium: known events
//! in a fresh database, the API on an ephemeral port with a keys file, the
//! page loaded with the key in the URL fragment, and the numbers the page
//! wrote into its DOM (`data-total` of each chart, the top-N tables, the
//! limit status) compared with figures computed here. A screenshot is saved
//! as `target/usage-page.png` for a human to look at.
//!
//! Chromium is Debian's `chromium` package (`./dev/test` installs it), or
//! the binary named by `AGENTMETER_CHROMIUM`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentmeter_api::auth::hash_key;
use agentmeter_api::{AppState, Args};
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{insert, serve, TestDb};

const READ_KEY: &str = "am_test_ui_read";
const ADMIN_KEY: &str = "am_test_ui_admin";

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("AGENTMETER_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(dir) = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| d.join(name).is_file())) {
            return dir.join(name);
        }
    }
    panic!("Chromium not found: install Debian's `chromium` package (./dev/test does) or set AGENTMETER_CHROMIUM");
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Runs headless Chromium on `url` with `extra` flags (`--dump-dom` or
/// `--screenshot=...`), with a fresh profile; returns stdout.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!("agentmeter-ui-chromium-{}", Uuid::new_v4().simple()));
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.args(extra);
    cmd.arg(url);
    let out = cmd.output().expect("start chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tag of the element whose `id` (or another attribute, given
/// as `attr="value"`) matches.
fn tag_with<'a>(dom: &'a str, needle: &str) -> Option<&'a str> {
    let at = dom.find(needle)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let pat = format!(" {name}=\"");
    let i = tag.find(&pat)? + pat.len();
    let j = tag[i..].find('"')?;
    Some(tag[i..i + j].replace("&amp;", "&"))
}

fn data_attr(dom: &str, id: &str, name: &str) -> Option<String> {
    attr(tag_with(dom, &format!("id=\"{id}\""))?, name)
}

/// `data-value`s of the numeric cells of the table row `data-key="key"`
/// inside the element with id `within`.
fn row_values(dom: &str, within: &str, key: &str) -> Vec<String> {
    let Some(start) = dom.find(&format!("id=\"{within}\"")) else { return vec![] };
    let section = &dom[start..];
    let Some(r) = section.find(&format!("data-key=\"{key}\"")) else { return vec![] };
    let row = &section[r..r + section[r..].find("</tr>").unwrap_or(0)];
    row.match_indices("data-value=\"").map(|(i, m)| row[i + m.len()..].split('"').next().unwrap_or("").to_owned()).collect()
}

struct Fixture {
    tenant: Uuid,
    org: Uuid,
    servers: [Uuid; 3],
    projects: [Uuid; 2],
    navigators: [Uuid; 2],
}

fn tool_call(tenant: Uuid, at: DateTime<Utc>, f: &Fixture, i: usize, query: Uuid) -> ToolCallRow {
    let latency = [60.0, 80.0, 100.0, 120.0, 140.0, 160.0, 180.0, 200.0, 220.0, 240.0][i % 10];
    let tool = if i < 6 {
        "search"
    } else if i < 9 {
        "fetch"
    } else {
        "write"
    };
    let (success, error_type) = match i {
        2 => (false, "timeout"),
        7 => (false, "upstream"),
        _ => (true, ""),
    };
    ToolCallRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: tenant,
        project_id: f.projects[usize::from(i >= 7)],
        navigator_id: f.navigators[usize::from(i >= 6)],
        // One instance per navigator in this fixture.
        navigator_instance_id: f.navigators[usize::from(i >= 6)],
        navigator_name: String::new(),
        query_id: query,
        call_kind: "tool".into(),
        suggestions_count: 0,
        server_id: f.servers[if i < 5 {
            0
        } else if i < 8 {
            1
        } else {
            2
        }],
        server_name: format!(
            "server-{}",
            if i < 5 {
                0
            } else if i < 8 {
                1
            } else {
                2
            }
        ),
        server_instance_id: Uuid::nil(),
        tool_id: Uuid::nil(),
        tool_name: tool.into(),
        user_token_id: Uuid::nil(),
        user_email: if i < 6 { "ana@example.com".into() } else { "bo@example.com".into() },
        organization_id: f.org,
        agent_id: Uuid::nil(),
        agent_execution_id: Uuid::nil(),
        latency_ms: latency,
        runtime_ms: None,
        success,
        error_type: error_type.into(),
        error_message: String::new(),
    }
}

fn execution(tenant: Uuid, org: Uuid, at: DateTime<Utc>, messages: u32) -> AgentExecutionRow {
    AgentExecutionRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: tenant,
        execution_id: Uuid::new_v4(),
        execution_kind: "agent_chat".into(),
        billable: true,
        organization_id: org,
        user_id: Uuid::nil(),
        agent_id: Uuid::nil(),
        conversation_id: Uuid::nil(),
        plan_id: Uuid::nil(),
        project_id: Uuid::nil(),
        navigator_id: Uuid::nil(),
        navigator_instance_id: Uuid::nil(),
        user_token_id: Uuid::nil(),
        user_email: String::new(),
        model: "m".into(),
        input_tokens: 100,
        output_tokens: 50,
        total_tokens: 150,
        cost_usd: 10_000,
        messages_count: messages,
        duration_ms: Some(10.0),
        status: "success".into(),
        error_type: String::new(),
        error_message: String::new(),
    }
}

/// A fresh database with the fixture's events and the API serving it.
struct Stack {
    base: String,
    f: Fixture,
    test_db: TestDb,
    keys_path: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Stack {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = std::fs::remove_file(&self.keys_path);
        self.test_db.drop().await;
    }
}

async fn start(what: &str) -> Stack {
    let test_db = TestDb::fresh(what).await;
    let (url, db_name) = (test_db.url.clone(), test_db.name.clone());

    let f = Fixture {
        tenant: Uuid::new_v4(),
        org: Uuid::new_v4(),
        servers: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
        projects: [Uuid::new_v4(), Uuid::new_v4()],
        navigators: [Uuid::new_v4(), Uuid::new_v4()],
    };
    let other_tenant = Uuid::new_v4();

    // Ten tool calls in four queries; every call of a query at the same
    // instant, so no query spans two buckets. Plus one call older than the
    // window and one of another tenant, which must not show.
    let now = Utc::now();
    let queries: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let mut calls: Vec<ToolCallRow> = (0..10)
        .map(|i| {
            let q = i / 3;
            let at = now - chrono::Duration::minutes(10 + 20 * q as i64);
            tool_call(f.tenant, at, &f, i, queries[q])
        })
        .collect();
    calls.push(tool_call(f.tenant, now - chrono::Duration::days(3), &f, 0, Uuid::new_v4()));
    calls.push(tool_call(other_tenant, now - chrono::Duration::minutes(5), &f, 9, Uuid::new_v4()));
    insert(&test_db.client, "tool_calls", &calls).await;
    // 30 billable messages this month for the organization.
    let executions: Vec<AgentExecutionRow> = [10, 15, 5].map(|m| execution(f.tenant, f.org, now - chrono::Duration::minutes(2), m)).into();
    insert(&test_db.client, "agent_executions", &executions).await;

    // The API with a keys file, on an ephemeral port.
    let keys_path = std::env::temp_dir().join(format!("agentmeter-ui-keys-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &keys_path,
        format!(
            "[[keys]]\nname = \"ui-read\"\ntenant_id = \"{t}\"\nrole = \"read\"\nsha256 = \"{r}\"\n\n\
             [[keys]]\nname = \"ui-admin\"\ntenant_id = \"{t}\"\nrole = \"admin\"\nsha256 = \"{a}\"\n\n\
             [[keys]]\nname = \"other\"\ntenant_id = \"{o}\"\nrole = \"read\"\nsha256 = \"{x}\"\n",
            t = f.tenant,
            o = other_tenant,
            r = hash_key(READ_KEY),
            a = hash_key(ADMIN_KEY),
            x = hash_key("am_test_ui_other"),
        ),
    )
    .unwrap();
    let keys_arg = keys_path.display().to_string();
    let args = Args::parse_from(["agentmeter-api", "--clickhouse-url", &url, "--clickhouse-database", &db_name, "--api-keys", &keys_arg]);
    let state = AppState::from_args(&args).expect("state");
    state.usage.start();
    let (base, stop) = serve(state).await;
    Stack { base, f, test_db, keys_path, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_page_renders_the_api_numbers_in_headless_chromium() {
    let stack = start("ui").await;
    let (base, f) = (stack.base.clone(), &stack.f);
    let http = reqwest::Client::new();

    // The page and its assets are served with the right types and a CSP.
    let resp = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("connect-src 'self'"));
    for (path, ty) in [("/ui/app.js", "text/javascript"), ("/ui/svgchart.js", "text/javascript"), ("/ui/style.css", "text/css")] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(ty), "{path}");
    }

    // A messages limit of 100 for the organization; wait until the usage
    // counters see the 30 messages.
    let limit = json!({"subject": "organization", "organization_id": f.org, "metric": "messages", "period": "month", "max_value": 100});
    let resp = http.put(format!("{base}/v1/limits/{}", Uuid::new_v4())).header("X-API-Key", ADMIN_KEY).json(&limit).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = http
            .get(format!("{base}/api/organizations/{}/usage", f.org))
            .header("X-API-Key", READ_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["messages"]["utilization"] == json!(30.0) {
            break;
        }
        assert!(Instant::now() < deadline, "usage never reached 30 messages: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Load the page with the key in the fragment; retry while the page has
    // not finished (the first load of a cold profile can be slow).
    let page = format!("{base}/#key={READ_KEY}&window=24h&frequency=1h&tz=UTC&org={}", f.org);
    let mut dom = String::new();
    for _ in 0..3 {
        let p = page.clone();
        dom = tokio::task::spawn_blocking(move || run_chromium(&p, &["--dump-dom".into()])).await.unwrap();
        if attr(tag_with(&dom, "<body").unwrap_or(""), "data-state").as_deref() == Some("ready") {
            break;
        }
    }
    let body = tag_with(&dom, "<body").expect("a body");
    assert_eq!(attr(body, "data-state").as_deref(), Some("ready"), "page did not finish: {dom}");
    assert!(!dom.contains(READ_KEY), "the key must not be written into the page or its URL");

    // Charts: totals computed from the rows above.
    assert_eq!(data_attr(&dom, "chart-tool-calls", "data-total").as_deref(), Some("10"));
    assert_eq!(data_attr(&dom, "chart-queries", "data-total").as_deref(), Some("4"));
    assert_eq!(data_attr(&dom, "chart-error-rate", "data-total").as_deref(), Some("0.2"));
    assert_eq!(data_attr(&dom, "chart-error-rate", "data-errors").as_deref(), Some("2"));
    assert_eq!(data_attr(&dom, "chart-error-rate", "data-calls").as_deref(), Some("10"));
    // (60 + 80 + ... + 240) / 10 ms.
    assert_eq!(data_attr(&dom, "chart-latency", "data-total").as_deref(), Some("150"));
    // Each chart is an image with a text alternative and a data table.
    for id in ["chart-tool-calls", "chart-queries", "chart-error-rate", "chart-latency"] {
        let start = dom.find(&format!("id=\"{id}\"")).unwrap();
        let fig = &dom[start..start + dom[start..].find("</figure>").unwrap()];
        assert!(fig.contains("role=\"img\"") && fig.contains("aria-label=\""), "{id} has no text alternative");
        assert!(fig.contains("class=\"visually-hidden data-table\""), "{id} has no data table");
    }
    assert!(dom.contains("aria-label=\"Tool calls: 10 in the last 24h"), "summary of the tool-calls chart");

    // Top-N tables: [calls, queries].
    assert_eq!(row_values(&dom, "top-servers", &f.servers[0].to_string()), ["5", "2"]);
    assert_eq!(row_values(&dom, "top-servers", &f.servers[1].to_string()), ["3", "2"]);
    assert_eq!(row_values(&dom, "top-servers", &f.servers[2].to_string()), ["2", "2"]);
    assert_eq!(row_values(&dom, "top-projects", &f.projects[0].to_string()), ["7", "3"]);
    assert_eq!(row_values(&dom, "top-projects", &f.projects[1].to_string()), ["3", "2"]);
    assert_eq!(row_values(&dom, "top-navigators", &f.navigators[0].to_string()), ["6", "2"]);
    assert_eq!(row_values(&dom, "top-navigators", &f.navigators[1].to_string()), ["4", "2"]);
    assert_eq!(row_values(&dom, "top-tools", "search"), ["6"]);
    assert_eq!(row_values(&dom, "top-tools", "fetch"), ["3"]);
    assert_eq!(row_values(&dom, "top-tools", "write"), ["1"]);
    assert_eq!(row_values(&dom, "top-users", "ana@example.com"), ["6"]);
    assert_eq!(row_values(&dom, "top-users", "bo@example.com"), ["4"]);
    assert_eq!(data_attr(&dom, "top-servers", "data-rows").as_deref(), Some("3"));

    // Limit status: 30 of 100 messages, with a reset time.
    let limit_row = tag_with(&dom, "data-metric=\"messages\"").expect("a messages limit row");
    assert_eq!(attr(limit_row, "data-utilization").as_deref(), Some("30"));
    assert!(dom.contains("Resets") && dom.contains("UTC</td>"), "reset time shown");

    // A screenshot for people.
    let shot = target_dir().join("usage-page.png");
    let _ = std::fs::remove_file(&shot);
    let (p, s) = (page.clone(), shot.clone());
    tokio::task::spawn_blocking(move || run_chromium(&p, &[format!("--screenshot={}", s.display()), "--window-size=1280,1600".into()]))
        .await
        .unwrap();
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot looks empty ({} bytes)", png.len());

    // A wrong key: the page says so.
    let bad = format!("{base}/#key=am_not_a_key&window=24h");
    let dom = tokio::task::spawn_blocking(move || run_chromium(&bad, &["--dump-dom".into()])).await.unwrap();
    assert_eq!(attr(tag_with(&dom, "<body").unwrap(), "data-state").as_deref(), Some("unauthorized"), "{dom}");
    assert!(dom.contains("Key not accepted"), "{dom}");
    assert!(data_attr(&dom, "chart-tool-calls", "data-total").is_none());

    stack.stop().await;
}

/// Replaces every `${name}` of `url` with `vars[name]`; panics on an unknown
/// variable.
fn interpolate(url: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closed variable") + i;
        let name = &rest[i + 2..end];
        let value = vars.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("unknown variable ${{{name}}} in {url}"));
        out.push_str(&value.1);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every Infinity query of the shipped Grafana dashboards, against the real
/// API: each answers 200 with JSON, with the filter variables on "All" and
/// on a real project / navigator instance. (`dashboards/tests` checks the
/// same URLs statically against the route table.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_answer() {
    let stack = start("ui_grafana").await;
    let http = reqwest::Client::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana/dashboards");
    let now = Utc::now().timestamp_millis();
    let base_vars = |project: &str, navigator: &str| -> Vec<(&'static str, String)> {
        vec![
            ("__from", (now - 86_400_000).to_string()),
            ("__to", now.to_string()),
            ("top", "10".into()),
            ("tz", "Europe/Berlin".into()),
            ("organization_id", stack.f.org.to_string()),
            ("project", project.to_owned()),
            ("navigator", navigator.to_owned()),
        ]
    };
    let variants = [
        base_vars("&", "&"),
        base_vars(&format!("&project_id={}", stack.f.projects[0]), "&"),
        base_vars("&", &format!("&navigator_instance_id={}", stack.f.navigators[1])),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut queries: Vec<(String, String)> = Vec::new();
        let mut panels: Vec<&Value> = Vec::new();
        for p in dash["panels"].as_array().into_iter().flatten() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(url) = t["url"].as_str() {
                    queries.push((format!("{} / {}", p["title"], t["refId"]), url.to_owned()));
                }
            }
        }
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(url) = v["query"]["url"].as_str() {
                queries.push((format!("variable {}", v["name"]), url.to_owned()));
            }
        }
        for (what, url) in queries {
            for vars in &variants {
                let concrete = interpolate(&url, vars);
                let resp = http.get(format!("{}{concrete}", stack.base)).header("X-API-Key", READ_KEY).send().await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                assert_eq!(status, 200, "{}: {what}: GET {concrete} -> {body}", path.display());
                serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} dashboard queries found");
    stack.stop().await;
}
