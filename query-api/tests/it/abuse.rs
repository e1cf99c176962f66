//! Hostile requests against a running API (docs/security.md): injection
//! strings in every parameter, absurd limits and ranges, malformed query
//! strings, oversize heads and bodies, slow clients, rate and concurrency
//! limits, ClickHouse resource limits, cross-tenant attempts and key
//! rotation. Every answer must be a 4xx (or a 200 that shows only the
//! caller's own data), never a 5xx, never another tenant's data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agentmeter_api::auth::{hash_key, KeyStore};
use agentmeter_api::{AppState, Args};
use agentmeter_schema::rows::ToolCallRow;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::{App, KEY_A, KEY_B};

/// A tool call of `tenant` with identifiable names (`label` in every
/// string) so a leak shows up in a response body.
fn call(tenant: Uuid, at: DateTime<Utc>, label: &str, project: Uuid, tool: Uuid) -> ToolCallRow {
    ToolCallRow {
        event_id: Uuid::new_v4(),
        occurred_at: at,
        tenant_id: tenant,
        project_id: project,
        project_name: String::new(),
        navigator_id: Uuid::new_v4(),
        navigator_instance_id: Uuid::new_v4(),
        navigator_name: format!("{label}-navigator"),
        query_id: Uuid::new_v4(),
        call_kind: "tool".into(),
        suggestions_count: 0,
        server_id: Uuid::new_v4(),
        server_name: format!("{label}-server"),
        server_instance_id: Uuid::new_v4(),
        tool_id: tool,
        tool_name: format!("{label}_tool"),
        user_token_id: Uuid::new_v4(),
        user_email: format!("someone@{label}.example"),
        organization_id: Uuid::nil(),
        agent_id: Uuid::nil(),
        agent_execution_id: Uuid::nil(),
        latency_ms: 12.5,
        runtime_ms: Some(3.0),
        success: true,
        error_type: String::new(),
        error_message: String::new(),
    }
}

/// Tenant A's secrets: a project, a tool and names that only A has.
struct Seeded {
    project_a: Uuid,
    tool_a: Uuid,
}

async fn seed(app: &App) -> Seeded {
    let now = Utc::now() - chrono::Duration::minutes(5);
    let (project_a, tool_a) = (Uuid::new_v4(), Uuid::new_v4());
    let rows_a: Vec<ToolCallRow> =
        (0..20).map(|i| call(app.tenant_a, now - chrono::Duration::minutes(i * 7), "alphasecret", project_a, tool_a)).collect();
    let (project_b, tool_b) = (Uuid::new_v4(), Uuid::new_v4());
    let rows_b: Vec<ToolCallRow> =
        (0..5).map(|i| call(app.tenant_b, now - chrono::Duration::minutes(i * 11), "betaown", project_b, tool_b)).collect();
    app.insert_calls(&rows_a).await;
    app.insert_calls(&rows_b).await;
    Seeded { project_a, tool_a }
}

/// Representative endpoints: lists, summaries, graphs, per-project paths
/// and the Grafana endpoint.
const ENDPOINTS: &[&str] = &[
    "/api/v1/analytics/tools",
    "/api/v1/analytics/top-servers",
    "/api/v1/analytics/users",
    "/api/v1/analytics/tool-calls-processed",
    "/api/v1/analytics/average-tool-call-latency-graph",
    "/api/v1/analytics/error-types-graph",
    "/api/v1/analytics/navigator-tool-connections",
    "/api/v1/query/timeseries",
];

const PARAMS: &[&str] = &[
    "window",
    "frequency",
    "from",
    "to",
    "tz",
    "project_id",
    "navigator_instance_id",
    "server_instance_id",
    "tool_id",
    "tool_name",
    "sort_order",
    "limit",
    "comparison_period",
    "view",
    "metric",
    "step",
    "max_points",
    "group_by",
    "top",
    "format",
    "model",
    "error_type",
];

const PAYLOADS: &[&str] = &[
    "' OR 1=1 --",
    "{tenant_id:UUID}",
    "x'); DROP TABLE tool_calls; --",
    "file('/etc/passwd')",
    "1h) UNION ALL SELECT * FROM system.tables --",
    "\\' OR ''='",
];

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn assert_no_leak(body: &str, what: &str) {
    assert!(!body.contains("alphasecret"), "tenant A's data leaked to B on {what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_strings_in_every_parameter_are_rejected_or_inert() {
    let app = App::start("abuse_inject", &["--analytics-rate-per-s", "0", "--analytics-concurrency-per-key", "0"]).await;
    let seeded = seed(&app).await;
    let mut urls = Vec::new();
    for ep in ENDPOINTS {
        for p in PARAMS {
            for payload in PAYLOADS {
                urls.push(format!("{ep}?{p}={}", enc(payload)));
            }
        }
    }
    // Path parameters too.
    for payload in PAYLOADS {
        urls.push(format!("/api/v1/projects/{}/users/summary", enc(payload)));
        urls.push(format!("/api/v1/projects/{}/users/{}/analytics", seeded.project_a, enc(payload)));
    }
    let total = urls.len();
    let results: Vec<(String, u16, String)> = futures::stream::iter(urls)
        .map(|u| {
            let app = &app;
            async move {
                let resp = app.http.get(format!("{}{}", app.base, u)).header("X-API-Key", KEY_B).send().await.unwrap();
                let status = resp.status().as_u16();
                (u, status, resp.text().await.unwrap())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert_eq!(results.len(), total);
    let mut ok = 0;
    for (u, status, body) in &results {
        assert!(*status < 500, "GET {u} gave {status}: {body}");
        assert_no_leak(body, u);
        assert!(!body.contains("DB::Exception") && !body.contains("Code: "), "ClickHouse internals in {u}: {body}");
        if *status == 200 {
            ok += 1;
        } else {
            assert!([404, 422].contains(status), "GET {u} gave {status}");
        }
    }
    // Names are free text: the injection strings are looked up as names and find nothing.
    assert!(ok > 0, "some free-text parameters are accepted as plain values");
    let tools = app.ok(KEY_B, &format!("/api/v1/analytics/tool-calls-processed?window=1d&tool_name={}", enc(PAYLOADS[0]))).await;
    assert_eq!(tools["data"]["total_tool_calls"], 0, "{tools}");

    // The tables are intact: A still sees its 20 calls.
    let count: u64 = app.db.query("SELECT count() FROM tool_calls").fetch_one().await.unwrap();
    assert_eq!(count, 25);
    app.drop_db().await;
}

#[tokio::test]
async fn absurd_limits_ranges_and_bucket_counts_are_422() {
    let app = App::start("abuse_ranges", &["--analytics-rate-per-s", "0"]).await;
    let cases: &[(&str, &str)] = &[
        ("/api/v1/analytics/top-servers?limit=-1", "limit"),
        ("/api/v1/analytics/top-servers?limit=99999999999999999999999", "limit"),
        ("/api/v1/analytics/top-servers?limit=1e9", "limit"),
        ("/api/v1/analytics/top-servers?limit=2147483648", "limit"),
        ("/api/v1/analytics/tool-calls-processed?window=100y", "window"),
        ("/api/v1/analytics/tool-calls-processed?window=36500d", "window"),
        ("/api/v1/analytics/tool-calls-processed?window=5200w", "window"),
        ("/api/v1/analytics/tool-calls-processed?window=1200mon", "window"),
        ("/api/v1/analytics/tool-calls-processed?window=-1h", "window"),
        ("/api/v1/analytics/tool-calls-processed?window=4294967296h", "window"),
        ("/api/v1/analytics/tool-calls-processed?from=1926-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("/api/v1/analytics/tool-calls-processed?from=0", "from"),
        ("/api/v1/analytics/tool-calls-processed?from=9999999999999999", "from"),
        ("/api/v1/analytics/tool-calls-processed?to=-5", "to"),
        ("/api/v1/analytics/tool-calls-processed-graph?window=52w&frequency=1m", "frequency"),
        ("/api/v1/analytics/error-rate-graph?window=1mon&frequency=1m", "frequency"),
        ("/api/v1/query/timeseries?metric=tool_calls&window=52w&step=1m", "step"),
        ("/api/v1/analytics/tool-calls-processed?tz=Mars/Olympus", "tz"),
        ("/api/v1/analytics/tool-calls-processed?tz=../../etc/passwd", "tz"),
    ];
    for (url, param) in cases {
        let (status, body) = app.get(Some(KEY_A), url).await;
        assert_eq!(status, 422, "GET {url}: {body}");
        let locs: Vec<String> = body["detail"].as_array().unwrap().iter().map(|d| d["loc"].to_string()).collect();
        assert!(locs.iter().any(|l| l.contains(param)), "GET {url}: expected an error on {param}, got {body}");
    }
    app.drop_db().await;
}

/// Sends raw bytes and returns the status code (0 when the server closed
/// the connection without an answer) and the whole response.
fn raw(base: &str, request: &[u8]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn malformed_query_strings_and_duplicates_are_4xx() {
    let app = App::start("abuse_malformed", &["--analytics-rate-per-s", "0"]).await;
    for url in [
        "/api/v1/analytics/tools?window=%FF%FE",
        "/api/v1/analytics/tools?window=%ZZ",
        "/api/v1/analytics/tools?window=%",
        "/api/v1/analytics/tools?window=1h&window=2h",
        "/api/v1/analytics/tools?tool_name=a&tool_name=b",
        "/api/v1/analytics/tools?window=1h%00",
        "/api/v1/analytics/tools?project_id=%FF",
        "/api/v1/projects/%FF%FE/users/summary",
        "/api/v1/projects/..%2F..%2Fetc/users/summary",
    ] {
        let (status, body) = app.get(Some(KEY_A), url).await;
        assert!((400..500).contains(&status), "GET {url}: {status} {body}");
    }
    // Bytes that are not valid in a URI at all, sent raw.
    let base = app.base.clone();
    let (status, text) = tokio::task::spawn_blocking(move || {
        raw(&base, b"GET /api/v1/analytics/tools?window=\xff\xfe HTTP/1.1\r\nHost: x\r\nX-API-Key: am_test_analytics_a\r\nConnection: close\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(status == 0 || (400..500).contains(&status), "{text}");
    app.drop_db().await;
}

#[tokio::test]
async fn oversize_heads_and_bodies_are_431_and_413() {
    let app = App::start("abuse_size", &["--max-header-bytes", "16384", "--max-body-bytes", "4096"]).await;
    let big = "a".repeat(64 * 1024);
    let resp =
        app.http.get(format!("{}/api/v1/analytics/health", app.base)).header("X-API-Key", KEY_A).header("X-Padding", &big).send().await;
    match resp {
        Ok(r) => assert_eq!(r.status().as_u16(), 431),
        // hyper may close the connection before the client finished writing.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.to_string().contains("connection"), "{e}"),
    }
    let long_url = format!("{}/api/v1/analytics/tools?tool_name={}", app.base, "b".repeat(40 * 1024));
    let r = app.http.get(long_url).header("X-API-Key", KEY_A).send().await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 431);
    }
    // Body over the limit on the one endpoint family that reads bodies.
    let body = format!(
        "{{\"tokens\": 1, \"usage_type\": \"tokens\", \"organization_id\": \"{}\", \"pad\": \"{}\"}}",
        Uuid::new_v4(),
        "p".repeat(8192)
    );
    let r = app
        .http
        .post(format!("{}/v1/usage/check", app.base))
        .header("X-API-Key", KEY_A)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let detail: serde_json::Value = r.json().await.expect("413 in the API's JSON error shape");
    assert_eq!(detail["detail"], "Request body larger than 4096 bytes");
    // A chunked body (no Content-Length) is limited too.
    let base = app.base.clone();
    let (status, text) = tokio::task::spawn_blocking(move || {
        let mut req = b"POST /v1/usage/check HTTP/1.1\r\nHost: x\r\nX-API-Key: am_test_analytics_a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..16 {
            req.extend_from_slice(b"400\r\n");
            req.extend_from_slice(&[b' '; 1024]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        raw(&base, &req)
    })
    .await
    .unwrap();
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(r#"{"detail":"Request body larger than 4096 bytes"}"#), "{text}");
    // The server is still healthy.
    assert_eq!(app.get(None, "/health").await.0, 200);
    app.drop_db().await;
}

#[tokio::test]
async fn slow_clients_are_disconnected_after_the_header_timeout() {
    let app = App::start("abuse_slow", &["--header-read-timeout-ms", "500"]).await;
    let base = app.base.clone();
    let (elapsed, status, text) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        // Half a request head, then silence.
        let (status, text) = raw(&base, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        (started.elapsed(), status, text)
    })
    .await
    .unwrap();
    assert!(elapsed < Duration::from_secs(5), "connection held for {elapsed:?}");
    assert!(status == 0 || status == 408, "{text}");
    // Idle connections that never send a byte are closed too.
    let base = app.base.clone();
    let elapsed = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        raw(&base, b"");
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(elapsed < Duration::from_secs(5), "idle connection held for {elapsed:?}");
    assert_eq!(app.get(None, "/health").await.0, 200);
    app.drop_db().await;
}

async fn metric(app: &App, name_and_labels: &str) -> f64 {
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn per_key_rate_limit_gives_429_with_retry_after_and_spares_others() {
    // One token per 10 s: the three requests of the burst and the fourth
    // fit well inside it even on a busy machine (at 0.5 per s, three slow
    // answers could refill a token and the fourth would pass).
    let app = App::start("abuse_rate", &["--analytics-rate-per-s", "0.1", "--analytics-burst", "3"]).await;
    let url = "/api/v1/analytics/tools?window=1h";
    for i in 0..3 {
        let (s, body) = app.get(Some(KEY_A), url).await;
        assert_eq!(s, 200, "request {i}: {body}");
    }
    let resp = app.http.get(format!("{}{url}", app.base)).header("X-API-Key", KEY_A).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}: at most one token's refill time");
    let body: Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Too many requests"));
    // Another key of another tenant is not affected.
    assert_eq!(app.get(Some(KEY_B), url).await.0, 200);
    // A bad key is 401, not 429, and does not spend A's budget.
    assert_eq!(app.get(Some("am_wrong"), url).await.0, 401);
    // The plan-limit check has its own, separate budget. (This harness does
    // not start the usage counters, so the check itself answers 503 "not
    // ready"; what matters here is that it is not refused with 429.)
    let check = json!({"tokens": 1, "usage_type": "tokens", "organization_id": Uuid::new_v4()});
    for _ in 0..10 {
        let r = app.http.post(format!("{}/v1/usage/check", app.base)).header("X-API-Key", KEY_A).json(&check).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 429);
    }
    // Health and metrics are never limited.
    for _ in 0..10 {
        assert_eq!(app.get(None, "/health").await.0, 200);
    }
    assert_eq!(metric(&app, "agentmeter_api_rate_limited_total{class=\"analytics\",reason=\"rate\"}").await, 1.0);
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(&app.tenant_a.to_string()) && !text.contains(&hash_key(KEY_A)), "no tenant or key in metrics");
    // After the Retry-After delay the key is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.get(Some(KEY_A), url).await.0, 200);
    app.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_concurrency_cap_gives_429() {
    let app = App::start(
        "abuse_conc",
        &["--analytics-rate-per-s", "0", "--analytics-concurrency-per-key", "1", "--analytics-queue-per-key", "2"],
    )
    .await;
    seed(&app).await;
    let statuses: Vec<u16> = futures::future::join_all((0..24).map(|_| {
        let app = &app;
        async move {
            app.http
                .get(format!("{}/api/v1/analytics/average-tool-call-latency-graph?window=1mon&frequency=1d", app.base))
                .header("X-API-Key", KEY_A)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    let refused = statuses.iter().filter(|s| **s == 429).count() as f64;
    assert_eq!(metric(&app, "agentmeter_api_rate_limited_total{class=\"analytics\",reason=\"concurrency\"}").await, refused);
    app.drop_db().await;
}

/// A key flooding the API with 300 concurrent heavy requests is limited
/// (8 in flight, 64 waiting, the rest 429) while another key's requests
/// sent at the same time are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_key_does_not_hold_back_another() {
    let app = App::start("abuse_flood", &["--analytics-rate-per-s", "0"]).await;
    seed(&app).await;
    let send = |key: &'static str| {
        let app = &app;
        async move {
            app.http
                .get(format!("{}/api/v1/analytics/tool-calls-processed-graph?window=1mon&frequency=5m", app.base))
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let flood = futures::future::join_all((0..300).map(|_| send(KEY_A)));
    let other = futures::future::join_all((0..6).map(|_| send(KEY_B)));
    let (flood, other) = tokio::join!(flood, other);
    assert!(other.iter().all(|s| *s == 200), "the other key: {other:?}");
    assert!(flood.iter().all(|s| *s == 200 || *s == 429), "{flood:?}");
    let refused = flood.iter().filter(|s| **s == 429).count();
    assert!(refused > 0, "the flooding key was not limited");
    assert_eq!(metric(&app, "agentmeter_api_rate_limited_total{class=\"analytics\",reason=\"concurrency\"}").await, refused as f64);
    app.drop_db().await;
}

#[tokio::test]
async fn clickhouse_row_limit_is_a_422_not_a_500() {
    let app = App::start("abuse_chlimit", &["--clickhouse-max-rows-to-read", "3"]).await;
    seed(&app).await;
    let (status, body) = app.get(Some(KEY_A), "/api/v1/analytics/users?window=1d").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["type"], "too_expensive");
    assert!(!body.to_string().contains("max_rows_to_read"), "no ClickHouse internals: {body}");
    assert!(metric(&app, "agentmeter_api_clickhouse_query_errors_total{kind=\"limit\"").await >= 1.0);
    app.drop_db().await;
}

#[tokio::test]
async fn cross_tenant_attempts_find_nothing() {
    let app = App::start("abuse_tenant", &["--analytics-rate-per-s", "0"]).await;
    let s = seed(&app).await;
    // A's ids used by B: zeros, as for any unknown id.
    for url in [
        format!("/api/v1/analytics/tools?project_id={}", s.project_a),
        format!("/api/v1/analytics/average-tool-calls-per-query?tool_id={}", s.tool_a),
        format!("/api/v1/analytics/tool-calls-processed?project_id={}", s.project_a),
        format!("/api/v1/projects/{}/users/summary", s.project_a),
    ] {
        let (status, body) = app.get(Some(KEY_B), &url).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        assert_no_leak(&body.to_string(), &url);
    }
    // Headers naming a tenant are ignored; B's key sees B's data only.
    let resp = app
        .http
        .get(format!("{}/api/v1/analytics/tools?window=1d", app.base))
        .header("X-API-Key", KEY_B)
        .header("X-Tenant-Id", app.tenant_a.to_string())
        .header("X-Forwarded-User", app.tenant_a.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert_no_leak(&text, "X-Tenant-Id");
    assert!(text.contains("betaown_tool"), "{text}");
    // Two keys at once: X-API-Key wins; the other is not consulted.
    let resp = app
        .http
        .get(format!("{}/api/v1/analytics/tools?window=1d", app.base))
        .header("X-API-Key", KEY_B)
        .header("Authorization", format!("Bearer {KEY_A}"))
        .send()
        .await
        .unwrap();
    assert_no_leak(&resp.text().await.unwrap(), "two keys");
    // A tenant id in the query string is not a parameter at all.
    let (_, body) = app.get(Some(KEY_B), &format!("/api/v1/analytics/tools?window=1d&tenant_id={}", app.tenant_a)).await;
    assert_no_leak(&body.to_string(), "tenant_id parameter");
    // Without or with a malformed key: 401.
    for key in [None, Some(""), Some("Bearer"), Some("am_test_analytics_ax"), Some("am_test_analytics_"), Some("' OR 1=1 --")] {
        let (status, _) = app.get(key, "/api/v1/analytics/tools").await;
        assert!(status == 401, "key {key:?}: {status}");
    }
    app.drop_db().await;
}

fn write_keys(path: &std::path::Path, tenant: Uuid, keys: &[&str], age_s: u64) {
    let mut text = String::new();
    for (i, k) in keys.iter().enumerate() {
        text.push_str(&format!(
            "[[keys]]\nname = \"key-{i}\"\ntenant_id = \"{tenant}\"\nrole = \"read\"\nsha256 = \"{}\"\n\n",
            hash_key(k)
        ));
    }
    std::fs::write(path, text).unwrap();
    // Distinct modification times even on coarse-grained file systems.
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
}

#[tokio::test]
async fn keys_rotate_and_revoke_without_restart() {
    let url = std::env::var("AGENTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let db_name = format!("agentmeter_test_abuse_rotate_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let server = agentmeter_schema::config::ClickHouseArgs::new(&url, &db_name).server_client();
    agentmeter_schema::migrations::migrate(&server, &db_name).await.unwrap();
    let dir = std::env::temp_dir().join(format!("agentmeter-rotate-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_path = dir.join("keys.toml");
    let tenant = Uuid::new_v4();
    let (old, new) = ("am_rotate_old", "am_rotate_new");
    write_keys(&keys_path, tenant, &[old], 300);

    let keys_arg = keys_path.to_string_lossy().into_owned();
    let args = Args::parse_from([
        "agentmeter-api",
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        &db_name,
        "--api-keys",
        &keys_arg,
        "--api-keys-reload-ms",
        "0",
    ]);
    let keys = KeyStore::load(&args.api_keys, Duration::ZERO).unwrap();
    let state = AppState::new(args.clickhouse.client(), Arc::new(keys), &args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(agentmeter_api::serve(listener, state, async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::new();
    let status = |key: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/api/v1/analytics/tools?window=1h")).header("X-API-Key", key).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(old).await, 200);
    assert_eq!(status(new).await, 401);
    // Rotation: both keys valid at once.
    write_keys(&keys_path, tenant, &[old, new], 200);
    assert_eq!(status(new).await, 200);
    assert_eq!(status(old).await, 200);
    // Revocation of the old key.
    write_keys(&keys_path, tenant, &[new], 100);
    assert_eq!(status(old).await, 401);
    assert_eq!(status(new).await, 200);
    // A broken file keeps the keys in force.
    std::fs::write(&keys_path, "[[keys]\nbroken").unwrap();
    assert_eq!(status(new).await, 200);
    assert_eq!(status(old).await, 401);

    let _ = tx.send(());
    server_task.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    server.query(&format!("DROP DATABASE IF EXISTS `{db_name}`")).execute().await.unwrap();
}
