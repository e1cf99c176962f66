//! The built-in usage page, end to end in headless Chromium: known events
//! in a fresh database, the API on an ephemeral port with a keys file, and a
//! real browser driven over the DevTools protocol (`ui/cdp.rs`): the page is
//! loaded, rows are clicked with the mouse, chips removed, links shared and
//! reopened, and what the page shows (the `data-*` figures it writes next
//! to every number) and the requests it makes are compared with figures
//! computed here from the inserted rows. A screenshot is saved as
//! `target/usage-page.png` (the one in `docs/` is taken from it).
//!
//! Chromium is Debian's `chromium` package (`./dev/test` installs it), or
//! the binary named by `AGENTMETER_CHROMIUM`.

mod cdp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentmeter_api::auth::hash_key;
use agentmeter_api::{AppState, Args};
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use clap::Parser;
use serde_json::{json, Value};
use uuid::Uuid;

use self::cdp::Browser;
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

/// Runs headless Chromium on `url` with `extra` flags (`--screenshot=...`),
/// with a fresh profile.
fn run_chromium(url: &str, extra: &[String]) {
    let profile = std::env::temp_dir().join(format!("agentmeter-ui-chromium-{}", Uuid::new_v4().simple()));
    let mut cmd = std::process::Command::new(chromium());
    cmd.args(cdp::HEADLESS).arg("--virtual-time-budget=15000");
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.args(extra);
    cmd.arg(url);
    let out = cmd.output().expect("start chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

struct Fixture {
    tenant: Uuid,
    /// Organization A: every tool call, executions every hour.
    org: Uuid,
    /// Organization B: executions every other hour.
    org_b: Uuid,
    /// Organization C: a limit, no usage.
    org_c: Uuid,
    servers: [Uuid; 3],
    projects: [Uuid; 2],
    navigators: [Uuid; 2],
    executions: Vec<AgentExecutionRow>,
    /// Tool calls (and failures) of the background traffic, hours ago.
    bg_calls: u64,
    bg_errors: u64,
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
    let server = if i < 5 {
        0
    } else if i < 8 {
        1
    } else {
        2
    };
    ToolCallRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: tenant,
        project_id: f.projects[usize::from(i >= 7)],
        // The second project has no name: its id is shown.
        project_name: if i >= 7 { String::new() } else { "Checkout".into() },
        navigator_id: f.navigators[usize::from(i >= 6)],
        // One instance per navigator in this fixture.
        navigator_instance_id: f.navigators[usize::from(i >= 6)],
        navigator_name: if i >= 6 { "Sales bot".into() } else { "Support bot".into() },
        query_id: query,
        call_kind: "tool".into(),
        suggestions_count: 0,
        server_id: f.servers[server],
        server_name: format!("server-{server}"),
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

fn execution(tenant: Uuid, org: Uuid, at: DateTime<Utc>, messages: u32, input: u64, output: u64, cost_micros: i64) -> AgentExecutionRow {
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
        project_name: String::new(),
        navigator_id: Uuid::nil(),
        navigator_instance_id: Uuid::nil(),
        user_token_id: Uuid::nil(),
        user_email: String::new(),
        model: "m".into(),
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cost_usd: cost_micros,
        cost_known: true,
        messages_count: messages,
        duration_ms: Some(10.0),
        status: "success".into(),
        error_type: String::new(),
        error_message: String::new(),
        query_text: None,
    }
}

/// Sums over `f.executions` of organization `org` since `since`:
/// (messages, input tokens, output tokens, cost in micro-dollars).
fn sums(f: &Fixture, org: Uuid, since: DateTime<Utc>) -> (u64, u64, u64, i64) {
    f.executions
        .iter()
        .filter(|e| e.organization_id == org && e.occurred_at >= since)
        .fold((0, 0, 0, 0), |a, e| (a.0 + u64::from(e.messages_count), a.1 + e.input_tokens, a.2 + e.output_tokens, a.3 + e.cost_usd))
}

fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).unwrap()
}

fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0).unwrap()
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

    let mut f = Fixture {
        tenant: Uuid::new_v4(),
        org: Uuid::new_v4(),
        org_b: Uuid::new_v4(),
        org_c: Uuid::new_v4(),
        servers: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
        projects: [Uuid::new_v4(), Uuid::new_v4()],
        navigators: [Uuid::new_v4(), Uuid::new_v4()],
        executions: Vec::new(),
        bg_calls: 0,
        bg_errors: 0,
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
    // Background traffic over the rest of the day (from two hours ago, so
    // the last hour holds only the calls above), in a project, navigator,
    // server and tool of its own: every call its own query, 150 ms each (the
    // average latency stays 150 ms), every ninth failed.
    let (bg_project, bg_navigator, bg_server) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for h in 2..=22i64 {
        for k in 0..2 * [3, 5, 8, 12, 9, 6][h as usize % 6] {
            let mut c = tool_call(f.tenant, now - chrono::Duration::minutes(60 * h - 3 * k), &f, 0, Uuid::new_v4());
            c.project_id = bg_project;
            c.project_name = "Background jobs".into();
            c.navigator_id = bg_navigator;
            c.navigator_instance_id = bg_navigator;
            c.navigator_name = "Batch bot".into();
            c.server_id = bg_server;
            c.server_name = "server-bg".into();
            c.tool_name = "lookup".into();
            c.user_email = "cy@example.com".into();
            c.latency_ms = 150.0;
            f.bg_calls += 1;
            (c.success, c.error_type) = if f.bg_calls.is_multiple_of(9) { (false, "upstream".into()) } else { (true, String::new()) };
            f.bg_errors += u64::from(!c.success);
            calls.push(c);
        }
    }
    insert(&test_db.client, "tool_calls", &calls).await;
    // Each query's navigator_query execution (where queries are counted),
    // at its first call, with that call's tenant, project and navigator;
    // nothing billable, no tokens, no cost.
    let mut seen = std::collections::HashSet::new();
    let query_executions: Vec<AgentExecutionRow> = calls
        .iter()
        .filter(|c| seen.insert(c.query_id))
        .map(|c| AgentExecutionRow {
            execution_id: c.query_id,
            execution_kind: "navigator_query".into(),
            billable: false,
            organization_id: Uuid::nil(),
            project_id: c.project_id,
            navigator_id: c.navigator_id,
            navigator_instance_id: c.navigator_instance_id,
            model: String::new(),
            ..execution(c.tenant_id, Uuid::nil(), c.occurred_at, 0, 0, 0, 0)
        })
        .collect();
    insert(&test_db.client, "agent_executions", &query_executions).await;

    // Agent executions over the last day, like a working day of two
    // organizations: A every hour, B every other hour, plus three of A just
    // now; one of another tenant, which must not show.
    let mut ex: Vec<AgentExecutionRow> =
        [10, 15, 5].map(|m| execution(f.tenant, f.org, now - chrono::Duration::minutes(2), m, 100, 50, 10_000)).into();
    for h in 1..=22u64 {
        let at = now - chrono::Duration::minutes(60 * h as i64 - 7);
        let wave = [3, 5, 8, 12, 9, 6][h as usize % 6];
        ex.push(execution(
            f.tenant,
            f.org,
            at,
            1 + (h % 4) as u32,
            600 * wave + 40 * h,
            220 * wave + 9 * h,
            9_000 * wave as i64 + 700 * h as i64,
        ));
        if h % 2 == 0 {
            ex.push(execution(f.tenant, f.org_b, at, 2, 400 * wave + 25 * h, 150 * wave, 5_500 * wave as i64 + 300 * h as i64));
        }
    }
    let mut all = ex.clone();
    all.push(execution(other_tenant, f.org, now - chrono::Duration::minutes(3), 99, 9_999, 9_999, 9_999_999));
    insert(&test_db.client, "agent_executions", &all).await;
    f.executions = ex;

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

/// Puts three limits in place (messages per month for A, tokens per UTC day
/// for B, cost per month for C) and waits until the usage counters have
/// loaded A's messages.
async fn set_limits(base: &str, f: &Fixture) {
    let http = reqwest::Client::new();
    for (org, metric, period, max) in
        [(f.org, "messages", "month", json!(1000)), (f.org_b, "tokens", "day", json!(200000)), (f.org_c, "cost_usd", "month", json!("100"))]
    {
        let limit = json!({"subject": "organization", "organization_id": org, "metric": metric, "period": period, "max_value": max});
        let resp =
            http.put(format!("{base}/v1/limits/{}", Uuid::new_v4())).header("X-API-Key", ADMIN_KEY).json(&limit).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    let want = sums(f, f.org, month_start(Utc::now())).0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = http
            .post(format!("{base}/v1/usage/check"))
            .header("X-API-Key", READ_KEY)
            .json(&json!({"organization_id": f.org, "usage_type": "messages", "tokens": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["current_usage"] == json!(want) {
            break;
        }
        assert!(Instant::now() < deadline, "usage never reached {want} messages: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `data-value`s of the numeric cells of row `key` in table `within`.
async fn row_values(b: &mut Browser, within: &str, key: &str) -> Vec<String> {
    let sel = serde_json::to_string(&format!("#{within} tr[data-key=\"{key}\"] td.num")).unwrap();
    let v = b.eval(&format!("[...document.querySelectorAll({sel})].map((td) => td.dataset.value)")).await;
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap_or("").to_owned()).collect()
}

async fn data(b: &mut Browser, id: &str, name: &str) -> String {
    b.eval_str(&format!("document.getElementById('{id}').dataset.{name} ?? null")).await
}

/// Waits until the page has finished a refresh started after `refreshes`.
async fn wait_ready(b: &mut Browser, after: u64, what: &str) -> u64 {
    b.wait_until(&format!("document.body.dataset.state === 'ready' && Number(document.body.dataset.refreshes) > {after}"), what).await;
    b.eval("Number(document.body.dataset.refreshes)").await.as_u64().unwrap()
}

fn close(a: &str, b: f64) -> bool {
    a.parse::<f64>().map(|a| (a - b).abs() < 1e-6).unwrap_or(false)
}

/// Opens the page in a fresh browser with `fragment`, waits for the first
/// complete refresh and stops the automatic refresh (so the requests seen
/// afterwards are the ones a click caused).
async fn open(base: &str, fragment: &str) -> (Browser, u64) {
    let mut b = Browser::launch(chromium(), 1280, 1800).await;
    b.goto(&format!("{base}/#{fragment}")).await;
    wait_ready(&mut b, 0, "first load").await;
    b.eval("(() => { const a = document.getElementById('auto'); if (a.checked) a.click(); return a.checked; })()").await;
    // The 10 s timer may have started a refresh between the first load and
    // the click above (a refresh marks the page 'loading' as it starts): let
    // it end, so that its requests and its count are not taken for those of
    // the test's next click.
    b.wait_until("document.body.dataset.state === 'ready'", "the refresh running when the automatic refresh stopped").await;
    let n = b.eval("Number(document.body.dataset.refreshes)").await.as_u64().unwrap();
    (b, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_page_shows_usage_limits_filters_and_shareable_state_in_chromium() {
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
    set_limits(&base, f).await;
    let now = Utc::now();

    // --- A read key: totals, organizations, limit status without an id ---
    let (mut b, mut n) = open(&base, &format!("key={READ_KEY}&window=24h&frequency=1h&tz=UTC")).await;
    let href = b.eval_str("location.href").await;
    assert!(!href.contains(READ_KEY) && !href.contains("key="), "the key must leave the address bar: {href}");
    assert!(!b.eval_str("document.documentElement.outerHTML").await.contains(READ_KEY), "the key must not be written into the page");

    // Tokens, cost and messages over the window, from the rows above.
    let day_ago = now - chrono::Duration::hours(24);
    let (ma, ia, oa, ca) = sums(f, f.org, day_ago);
    let (mb, ib, ob, cb) = sums(f, f.org_b, day_ago);
    assert_eq!(data(&mut b, "card-tokens", "value").await, (ia + oa + ib + ob).to_string());
    assert_eq!(data(&mut b, "card-messages", "value").await, (ma + mb).to_string());
    assert_eq!(data(&mut b, "card-tokens", "input").await, (ia + ib).to_string());
    assert_eq!(data(&mut b, "card-tokens", "output").await, (oa + ob).to_string());
    let cost = data(&mut b, "card-cost", "value").await;
    assert!(close(&cost, (ca + cb) as f64 / 1e6), "cost {cost} != {}", (ca + cb) as f64 / 1e6);
    assert_eq!(data(&mut b, "card-calls", "value").await, (10 + f.bg_calls).to_string());
    assert_eq!(data(&mut b, "chart-tokens", "total").await, (ia + oa + ib + ob).to_string());
    let shown = b.eval_str("document.querySelector('#card-cost [data-role=value]').textContent").await;
    assert!(shown.starts_with('$'), "cost is shown in dollars: {shown}");

    // Per organization: messages, tokens, cost in the window; input and
    // output tokens of the month.
    let month = month_start(now);
    for (org, m, i, o, c) in [(f.org, ma, ia, oa, ca), (f.org_b, mb, ib, ob, cb)] {
        let (_, im, om, _) = sums(f, org, month);
        let row = row_values(&mut b, "orgs", &org.to_string()).await;
        assert_eq!(row.len(), 7, "{org}: {row:?}");
        assert_eq!(row[0], m.to_string(), "messages of {org}");
        assert_eq!(row[1..4], [(i + o).to_string(), i.to_string(), o.to_string()], "tokens, input, output of {org}");
        assert!(close(&row[4], c as f64 / 1e6), "cost of {org}: {row:?}");
        assert_eq!(row[5..], [im.to_string(), om.to_string()], "month input/output tokens of {org}");
    }

    // Limit status of every organization with usage, no id typed; listing
    // all limits needs an admin key, which the page says.
    let limit_row = |org: Uuid, metric: &str| format!("#limits tr[data-org=\"{org}\"][data-metric=\"{metric}\"]");
    let attrs = |sel: String| {
        format!("(() => {{ const r = document.querySelector({}); return r ? [r.dataset.used, r.dataset.max, r.dataset.remaining, r.querySelector('.resets').dataset.resetsAt] : null; }})()", serde_json::to_string(&sel).unwrap())
    };
    let used_a = sums(f, f.org, month).0;
    let next_month = if now.month() == 12 {
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0)
    }
    .unwrap();
    let resets = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        b.eval(&attrs(limit_row(f.org, "messages"))).await,
        json!([used_a.to_string(), "1000", (1000 - used_a).to_string(), resets(next_month)])
    );
    let (_, ib_day, ob_day, _) = sums(f, f.org_b, day_start(now));
    let used_b = ib_day + ob_day;
    assert_eq!(
        b.eval(&attrs(limit_row(f.org_b, "tokens"))).await,
        json!([used_b.to_string(), "200000", (200000 - used_b).to_string(), resets(day_start(now) + chrono::Duration::days(1))])
    );
    assert_eq!(b.eval(&attrs(limit_row(f.org_c, "cost_usd"))).await, Value::Null, "C has no usage; a read key cannot list limits");
    let notice = b.eval_str("document.querySelector('#limits .notice').textContent").await;
    assert!(notice.contains("admin key") && notice.contains("403"), "{notice}");
    let org_cell = b
        .eval(&format!(
            "(() => {{ const c = document.querySelector('{}').cells[0]; return [c.textContent, c.title]; }})()",
            limit_row(f.org, "messages")
        ))
        .await;
    assert_eq!(
        org_cell,
        json!([format!("{}…", &f.org.to_string()[..8]), f.org.to_string()]),
        "a shortened id, the full one in the tooltip"
    );

    // Top tables as before: [calls, queries].
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[0].to_string()).await, ["5", "2"]);
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[1].to_string()).await, ["3", "2"]);
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[2].to_string()).await, ["2", "2"]);
    assert_eq!(row_values(&mut b, "top-projects", &f.projects[0].to_string()).await, ["7", "3"]);
    // Queries counted at their execution: the query whose calls span both
    // projects counts in its first call's.
    assert_eq!(row_values(&mut b, "top-projects", &f.projects[1].to_string()).await, ["3", "1"]);
    assert_eq!(row_values(&mut b, "top-navigators", &f.navigators[0].to_string()).await, ["6"]);
    assert_eq!(row_values(&mut b, "top-navigators", &f.navigators[1].to_string()).await, ["4"]);
    assert_eq!(row_values(&mut b, "top-tools", "search").await, ["6"]);
    assert_eq!(row_values(&mut b, "top-tools", "fetch").await, ["3"]);
    assert_eq!(row_values(&mut b, "top-users", "ana@example.com").await, ["6"]);
    let rate = data(&mut b, "chart-error-rate", "total").await;
    assert!(close(&rate, (2 + f.bg_errors) as f64 / (10 + f.bg_calls) as f64), "error rate {rate}");
    assert_eq!(data(&mut b, "chart-latency", "total").await, "150");
    // Without a `*_name` in the answer a row shows the id shortened, the
    // full id in its tooltip.
    let p1 = f.projects[1].to_string();
    let cell = b.eval(&format!("(() => {{ const e = document.querySelector('#top-projects button[data-value=\"{p1}\"]'); return [e.textContent, e.title]; }})()")).await;
    assert_eq!(cell[0], json!(format!("{}…", &p1[..8])));
    assert!(cell[1].as_str().unwrap().starts_with(&p1));

    // --- A click on a project filters the whole page ---
    b.take_requests().await;
    b.click(&format!("#top-projects button[data-value=\"{p1}\"]")).await;
    n = wait_ready(&mut b, n, "after the project click").await;
    let reqs = b.take_requests().await;
    assert!(reqs.len() >= 10, "{reqs:?}");
    for r in reqs.iter().filter(|r| r.starts_with("/api/v1/") && !r.contains("/top-projects?")) {
        assert!(r.contains(&format!("project_id={p1}")), "request without the filter: {r}");
    }
    assert!(reqs.iter().any(|r| r.starts_with("/api/v1/analytics/tool-calls-processed-graph?")));
    assert_eq!(b.eval_str("document.querySelector('#filters .chip').dataset.filter").await, "project_id");
    assert!(b.eval_str("location.hash").await.contains(&format!("project_id={p1}")));
    assert_eq!(data(&mut b, "card-calls", "value").await, "3");
    assert_eq!(data(&mut b, "chart-tool-calls", "total").await, "3");
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[1].to_string()).await, ["1", "1"]);
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[2].to_string()).await, ["2", "2"]);
    assert_eq!(row_values(&mut b, "top-servers", &f.servers[0].to_string()).await, Vec::<String>::new());
    // The executions carry no project: zero tokens for it.
    assert_eq!(data(&mut b, "card-tokens", "value").await, "0");

    // --- then a tool: both filters; panels that cannot filter by tool say so ---
    b.click("#top-tools button[data-value=\"fetch\"]").await;
    n = wait_ready(&mut b, n, "after the tool click").await;
    let reqs = b.take_requests().await;
    let calls_req =
        reqs.iter().find(|r| r.starts_with("/api/v1/analytics/tool-calls-processed-graph?")).expect("tool-calls graph requested");
    assert!(calls_req.contains("tool_name=fetch") && calls_req.contains(&format!("project_id={p1}")), "{calls_req}");
    for r in reqs.iter().filter(|r| r.contains("metric=tokens") || r.contains("metric=messages") || r.contains("metric=cost_usd")) {
        assert!(!r.contains("tool_name="), "execution metrics take no tool filter: {r}");
    }
    assert_eq!(data(&mut b, "card-calls", "value").await, "2");
    assert_eq!(data(&mut b, "card-tokens", "unfiltered").await, "tool_name");
    assert_eq!(b.eval("document.querySelectorAll('#filters .chip').length").await, json!(2));

    // --- removing the project chip keeps the tool filter ---
    b.click("#filters .chip[data-filter=\"project_id\"] .chip-remove").await;
    n = wait_ready(&mut b, n, "after removing a chip").await;
    let hash = b.eval_str("location.hash").await;
    assert!(hash.contains("tool_name=fetch") && !hash.contains("project_id"), "{hash}");
    assert_eq!(data(&mut b, "card-calls", "value").await, "3");
    let reqs = b.take_requests().await;
    assert!(reqs.iter().all(|r| !r.contains("project_id=")), "{reqs:?}");

    // --- the share link holds the state, never the key ---
    b.click("#share").await;
    let link = b.eval_str("document.getElementById('share-link').value").await;
    assert_eq!(link, format!("{base}/#window=24h&frequency=1h&tz=UTC&tool_name=fetch"));
    let _ = n;
    drop(b);

    // Opened elsewhere, the link shows the same view and asks for a key.
    let mut b = Browser::launch(chromium(), 1280, 1800).await;
    b.goto(&link).await;
    b.wait_until("document.body.dataset.state === 'nokey'", "shared link without key").await;
    assert_eq!(b.eval_str("document.querySelector('#filters .chip').dataset.value").await, "fetch");
    b.eval(&format!("document.getElementById('key').value = '{READ_KEY}'")).await;
    b.click("#controls button[type=submit]").await;
    wait_ready(&mut b, 0, "shared link with key entered").await;
    assert_eq!(data(&mut b, "card-calls", "value").await, "3");
    let reqs = b.take_requests().await;
    assert!(
        reqs.iter().any(|r| r.starts_with("/api/v1/analytics/tool-calls-processed-graph?") && r.contains("tool_name=fetch")),
        "{reqs:?}"
    );
    drop(b);

    // --- a URL with state: the page shows it and asks the API for it ---
    let nav1 = f.navigators[1];
    let (mut b, _) = open(&base, &format!("window=7d&frequency=1d&tz=Europe%2FBerlin&navigator_instance_id={nav1}&key={READ_KEY}")).await;
    assert_eq!(
        b.eval("['window', 'frequency', 'tz'].map((id) => document.getElementById(id).value)").await,
        json!(["7d", "1d", "Europe/Berlin"])
    );
    assert_eq!(b.eval_str("document.querySelector('#filters .chip').dataset.value").await, nav1.to_string());
    assert_eq!(data(&mut b, "card-calls", "value").await, "4");
    b.eval("document.getElementById('share').click()").await;
    let link = b.eval_str("document.getElementById('share-link').value").await;
    assert_eq!(link, format!("{base}/#window=7d&frequency=1d&tz=Europe%2FBerlin&navigator_instance_id={nav1}"));
    // Editing the fragment in the address bar is followed too.
    b.take_requests().await;
    b.goto(&format!("{base}/#window=1h&frequency=5m&tz=UTC")).await;
    b.wait_until("document.getElementById('window').value === '1h' && document.querySelectorAll('#filters .chip').length === 0 && document.body.dataset.state === 'ready'", "hash change").await;
    // The last hour holds the calls of 10, 30 and 50 minutes ago, not 70.
    b.wait_until("document.getElementById('card-calls').dataset.value === '9'", "1h window").await;
    drop(b);

    // --- names beside ids; a click on a server, then on a user, filters the page ---
    let (mut b, mut n) = open(&base, &format!("key={READ_KEY}&window=24h&frequency=1h&tz=UTC")).await;
    let button = |table: &str, value: &str| format!("document.querySelector('#{table} button[data-value=\"{value}\"]').textContent");
    let (s0, p0, nav0) = (f.servers[0].to_string(), f.projects[0].to_string(), f.navigators[0].to_string());
    assert_eq!(b.eval_str(&button("top-servers", &s0)).await, "server-0");
    assert_eq!(b.eval_str(&button("top-projects", &p0)).await, "Checkout");
    assert_eq!(b.eval_str(&button("top-navigators", &nav0)).await, "Support bot");
    b.take_requests().await;
    b.click(&format!("#top-servers button[data-value=\"{s0}\"]")).await;
    n = wait_ready(&mut b, n, "after the server click").await;
    let reqs = b.take_requests().await;
    let calls_req = reqs.iter().find(|r| r.starts_with("/api/v1/analytics/tool-calls-processed-graph?")).expect("tool-calls graph");
    assert!(calls_req.contains(&format!("server_id={s0}")), "{calls_req}");
    assert_eq!(data(&mut b, "card-calls", "value").await, "5");
    assert_eq!(b.eval_str("document.querySelector('#filters .chip').textContent").await, "Server: server-0×");
    assert_eq!(data(&mut b, "top-servers", "unfiltered").await, "server_id", "top-servers takes no server filter");
    b.click("#filters .chip[data-filter=\"server_id\"] .chip-remove").await;
    n = wait_ready(&mut b, n, "after removing the server chip").await;
    b.take_requests().await;
    b.click("#top-users button[data-value=\"ana@example.com\"]").await;
    wait_ready(&mut b, n, "after the user click").await;
    let reqs = b.take_requests().await;
    for r in reqs.iter().filter(|r| r.starts_with("/api/v1/") && !r.contains("/top-projects?")) {
        assert!(r.contains("user_email=ana%40example.com"), "request without the user filter: {r}");
    }
    assert_eq!(data(&mut b, "card-calls", "value").await, "6");
    assert_eq!(row_values(&mut b, "top-users", "ana@example.com").await, ["6"]);
    assert_eq!(row_values(&mut b, "top-users", "bo@example.com").await, Vec::<String>::new());
    // Her calls were in three queries (0-2, 3-5); the executions carry no e-mail.
    assert_eq!(data(&mut b, "card-tokens", "value").await, "0");
    assert!(b.eval_str("location.hash").await.contains("user_email=ana%40example.com"));
    drop(b);

    // --- an admin key: limits listed, including an organization without usage ---
    let (mut b, _) = open(&base, &format!("key={ADMIN_KEY}&window=24h&frequency=1h&tz=UTC")).await;
    assert_eq!(b.eval(&attrs(limit_row(f.org_c, "cost_usd"))).await, json!(["0", "100", "100", resets(next_month)]));
    assert_eq!(b.eval("document.querySelector('#limits .notice')").await, Value::Null);
    assert_eq!(data(&mut b, "limits", "listed").await, "limits");
    drop(b);

    // A screenshot for people (docs/usage-page.png is taken from it).
    let shot = target_dir().join("usage-page.png");
    let _ = std::fs::remove_file(&shot);
    let (p, s) = (format!("{base}/#key={ADMIN_KEY}&window=24h&frequency=1h&tz=UTC"), shot.clone());
    tokio::task::spawn_blocking(move || run_chromium(&p, &[format!("--screenshot={}", s.display()), "--window-size=1280,2160".into()]))
        .await
        .unwrap();
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot looks empty ({} bytes)", png.len());

    // A wrong key: the page says so.
    let mut b = Browser::launch(chromium(), 1280, 1800).await;
    b.goto(&format!("{base}/#key=am_not_a_key&window=24h")).await;
    b.wait_until("document.body.dataset.state === 'unauthorized'", "wrong key").await;
    assert!(b.eval_str("document.getElementById('status').textContent").await.contains("Key not accepted"));
    assert_eq!(b.eval("document.getElementById('card-tokens').dataset.value ?? null").await, Value::Null);
    drop(b);

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
