//! Analytics graph latency over a month of data: the rollup SQL the API
//! runs (copied from `query-api/src/queries/` — same tables, expressions,
//! bucket keys and bound parameters) against the same answer computed from
//! the raw `tool_calls` table, asserting both give the same numbers, and
//! the same graph through `agentmeter-api` over HTTP when its release
//! binary is present.
//!
//! Data: `--events` tool calls of generated traffic for demo tenant A, spread
//! uniformly over the last `--days` days, written with RowBinary straight
//! into `tool_calls` of a fresh database (the materialized view fills
//! `tool_calls_1m` as in production). Targets: p95 < 150 ms from the
//! rollup, and raw / rollup >= 10x.

use std::process::Command;
use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Settings, TENANT_A};
use agentmeter_schema::config::ClickHouseArgs;
use agentmeter_schema::rows::ToolCallRow;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::process::{self, Proc};
use crate::report::{self, percentile, round};
use crate::{env, Common};

/// Read key of tenant A in `dev/api-keys.toml`.
const TENANT_A_KEY: &str = "am_dev_tenant_a";
const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Tool-call events to load.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Days the events are spread over (ending now).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Timed runs of each rollup query and API call (after 2 warm-up runs).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Timed runs of each raw-events query (they are slow; after 1 warm-up run).
    #[arg(long, default_value_t = 5)]
    pub raw_runs: usize,
    /// Rows per INSERT while loading.
    #[arg(long, default_value_t = 500_000)]
    pub load_batch_rows: usize,
    /// Random seed of the traffic.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    /// Skip the API even if its binary exists.
    #[arg(long)]
    pub no_api: bool,
    /// Name of the result file (`<name>.json`).
    #[arg(long, default_value = "graphs")]
    pub result_name: String,
}

/// The rollup aggregate columns of `query-api/src/queries/tool_calls.rs` (`STATS`).
const ROLLUP_STATS: &str = "toUInt64(sum(calls)) AS n_calls,
    toUInt64(sum(errors)) AS n_errors,
    toFloat64(sum(latency_sum_ms)) AS lat_sum_ms,
    arrayMap(x -> toFloat64(x), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest)) AS lat_q,
    toUInt64(uniqExactIfMerge(queries)) AS n_queries,
    toUInt64(sum(suggestions)) AS n_suggestions,
    toFloat64(sum(runtime_sum_ms)) AS rt_sum_ms,
    toUInt64(sum(runtime_count)) AS rt_count";

/// The same figures from raw events.
const RAW_STATS: &str = "toUInt64(count()) AS n_calls,
    toUInt64(countIf(NOT success)) AS n_errors,
    toFloat64(sum(latency_ms)) AS lat_sum_ms,
    arrayMap(x -> toFloat64(x), quantilesTDigest(0.5, 0.95, 0.99)(latency_ms)) AS lat_q,
    toUInt64(uniqExactIf(query_id, query_id != toUUID('00000000-0000-0000-0000-000000000000'))) AS n_queries,
    toUInt64(sum(suggestions_count)) AS n_suggestions,
    toFloat64(sum(ifNull(runtime_ms, 0))) AS rt_sum_ms,
    toUInt64(count(runtime_ms)) AS rt_count";

const ROLLUP_WHERE: &str = "tenant_id = {tenant:UUID} AND minute >= toDateTime({start_s:Int64}, 'UTC') AND minute < toDateTime({end_s:Int64}, 'UTC') AND call_kind = 'tool'";
const RAW_WHERE: &str = "tenant_id = {tenant:UUID} AND occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC') AND call_kind = 'tool'";

/// One row of a bucketed series (`tool_calls::series`).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct BucketStats {
    bucket: u32,
    n_calls: u64,
    n_errors: u64,
    lat_sum_ms: f64,
    lat_q: Vec<f64>,
    n_queries: u64,
    n_suggestions: u64,
    rt_sum_ms: f64,
    rt_count: u64,
}

/// One group of a list (`tool_calls::group_counts`).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct GroupCount {
    key: String,
    n_calls: u64,
    n_queries: u64,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Series,
    Groups,
}

/// A graph: its SQL on the rollup and on raw events, parameters, API call.
struct Graph {
    name: &'static str,
    shape: Shape,
    rollup_sql: String,
    raw_sql: String,
    params: Vec<(&'static str, String)>,
    api_path: String,
}

fn graphs(now: DateTime<Utc>) -> Vec<Graph> {
    // Minute-aligned end just after the data, so the rollup (per minute)
    // and raw events (per millisecond) cover exactly the same events.
    let end = now.duration_trunc(TimeDelta::minutes(1)).expect("trunc") + TimeDelta::minutes(1);
    // The API's ranges: `window` back from now, widened to the first bucket's start.
    let day_first = (end - TimeDelta::days(30)).date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let hour_first = (end - TimeDelta::days(7)).duration_trunc(TimeDelta::hours(1)).expect("trunc");
    let week_start = end - TimeDelta::days(7);
    let range = |start: DateTime<Utc>| {
        vec![
            ("tenant", TENANT_A.to_string()),
            ("start_s", start.timestamp().to_string()),
            ("end_s", end.timestamp().to_string()),
            ("start_ms", start.timestamp_millis().to_string()),
            ("end_ms", end.timestamp_millis().to_string()),
        ]
    };
    let day_bucket = |col: &str| format!("toUInt32(intDiv(dateDiff('day', {{b_first:Date}}, toDate({col}, {{b_tz:String}})), {{b_days:Int64}}))");
    let hour_bucket = |col: &str| format!("toUInt32(intDiv(toInt64(toUnixTimestamp({col})) - {{b_origin:Int64}}, {{b_step:Int64}}))");
    let series = |bucket: &dyn Fn(&str) -> String| {
        (
            format!("SELECT {} AS bucket, {ROLLUP_STATS} FROM tool_calls_1m WHERE {ROLLUP_WHERE} GROUP BY bucket ORDER BY bucket", bucket("minute")),
            format!("SELECT {} AS bucket, {RAW_STATS} FROM tool_calls WHERE {RAW_WHERE} GROUP BY bucket ORDER BY bucket", bucket("occurred_at")),
        )
    };
    let mut daily = range(day_first);
    daily.extend([("b_first", day_first.date_naive().to_string()), ("b_tz", "UTC".into()), ("b_days", "1".into())]);
    let mut hourly = range(hour_first);
    hourly.extend([("b_origin", hour_first.timestamp().to_string()), ("b_step", "3600".into())]);
    let (day_rollup, day_raw) = series(&day_bucket);
    let (hour_rollup, hour_raw) = series(&hour_bucket);
    vec![
        Graph {
            name: "tool calls per day, 30 d",
            shape: Shape::Series,
            rollup_sql: day_rollup.clone(),
            raw_sql: day_raw.clone(),
            params: daily.clone(),
            api_path: "/api/v1/analytics/tool-calls-processed-graph?window=30d&frequency=1d".into(),
        },
        Graph {
            name: "error rate per day, 30 d",
            shape: Shape::Series,
            rollup_sql: day_rollup,
            raw_sql: day_raw,
            params: daily,
            api_path: "/api/v1/analytics/error-rate-graph?window=30d&frequency=1d".into(),
        },
        Graph {
            name: "latency p95 per hour, 7 d",
            shape: Shape::Series,
            rollup_sql: hour_rollup,
            raw_sql: hour_raw,
            params: hourly,
            api_path: "/api/v1/analytics/average-tool-call-latency-graph?window=7d&frequency=1h".into(),
        },
        Graph {
            name: "top servers, 7 d",
            shape: Shape::Groups,
            rollup_sql: format!(
                "SELECT toString(server_id) AS key, toUInt64(sum(calls)) AS n_calls, toUInt64(uniqExactIfMerge(queries)) AS n_queries
                 FROM tool_calls_1m WHERE {ROLLUP_WHERE} AND server_id != {NIL} GROUP BY key ORDER BY key LIMIT 10000"
            ),
            raw_sql: format!(
                "SELECT toString(server_id) AS key, toUInt64(count()) AS n_calls, toUInt64(uniqExactIf(query_id, query_id != {NIL})) AS n_queries
                 FROM tool_calls WHERE {RAW_WHERE} AND server_id != {NIL} GROUP BY key ORDER BY key LIMIT 10000"
            ),
            params: range(week_start),
            api_path: "/api/v1/analytics/top-servers?window=7d&limit=10".into(),
        },
    ]
}

fn bind(client: &Client, sql: &str, params: &[(&'static str, String)]) -> clickhouse::query::Query {
    let mut q = client.query(sql);
    for (k, v) in params {
        // Only the parameters the text names (ClickHouse ignores extra ones,
        // but keep the request minimal).
        if sql.contains(&format!("{{{k}:")) {
            q = q.param(k, v);
        }
    }
    q
}

/// The answer of one graph query (for comparison).
#[derive(Debug, Clone)]
enum Answer {
    Series(Vec<BucketStats>),
    Groups(Vec<GroupCount>),
}

async fn answer(client: &Client, shape: Shape, sql: &str, params: &[(&'static str, String)]) -> anyhow::Result<Answer> {
    Ok(match shape {
        Shape::Series => Answer::Series(bind(client, sql, params).fetch_all::<BucketStats>().await?),
        Shape::Groups => Answer::Groups(bind(client, sql, params).fetch_all::<GroupCount>().await?),
    })
}

/// Exact counts must match; latency percentiles (t-digest of per-minute
/// states vs t-digest of raw values) within 10 %. Returns the largest
/// relative p95 deviation.
fn compare(name: &str, rollup: &Answer, raw: &Answer) -> anyhow::Result<f64> {
    let mut worst: f64 = 0.0;
    match (rollup, raw) {
        (Answer::Series(a), Answer::Series(b)) => {
            anyhow::ensure!(a.len() == b.len(), "{name}: {} rollup buckets vs {} raw", a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                let counts = |s: &BucketStats| (s.bucket, s.n_calls, s.n_errors, s.n_queries, s.n_suggestions, s.rt_count);
                anyhow::ensure!(counts(x) == counts(y), "{name}: rollup {:?} != raw {:?}", counts(x), counts(y));
                let rel = |p: f64, q: f64| if q == 0.0 { (p - q).abs() } else { ((p - q) / q).abs() };
                anyhow::ensure!(rel(x.lat_sum_ms, y.lat_sum_ms) < 1e-6, "{name}: latency sums differ in bucket {}", x.bucket);
                if let (Some(p), Some(q)) = (x.lat_q.get(1), y.lat_q.get(1)) {
                    worst = worst.max(rel(*p, *q));
                }
            }
            anyhow::ensure!(worst < 0.10, "{name}: p95 from the rollup is {:.1} % off the raw t-digest", worst * 100.0);
        }
        (Answer::Groups(a), Answer::Groups(b)) => anyhow::ensure!(a == b, "{name}: rollup {a:?} != raw {b:?}"),
        _ => anyhow::bail!("{name}: shapes differ"),
    }
    Ok(worst)
}

fn calls_of(a: &Answer) -> u64 {
    match a {
        Answer::Series(s) => s.iter().map(|b| b.n_calls).sum(),
        Answer::Groups(g) => g.iter().map(|b| b.n_calls).sum(),
    }
}

/// Milliseconds of one run of `sql`.
async fn time_query(client: &Client, g: &Graph, sql: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    answer(client, g.shape, sql, &g.params).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// One API call as tenant A; fails unless it answers 200.
async fn api_get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).header("X-API-Key", TENANT_A_KEY).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url}: API answered {status}: {body}");
    Ok(body)
}

/// Waits (up to `limit`) until ClickHouse has no merge running in `db`, so
/// that timings see the steady state a month of data is in, not the
/// aftermath of the bulk load. Returns the seconds waited.
async fn settle_merges(client: &Client, limit: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let n = client.query("SELECT count() FROM system.merges WHERE database = currentDatabase()").fetch_one::<u64>().await?;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(m) => m.get(key).and_then(Value::as_u64).or_else(|| m.values().find_map(|x| find_u64(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

pub async fn run(common: &Common, o: Opts) -> anyhow::Result<()> {
    let avail = disk_available();
    eprintln!("graphs: disk available here: {avail}");
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let db = format!("agentmeter_bench_graphs_{run_id}");
    let ch = ClickHouseArgs::new(&common.clickhouse_url, &db);
    let server = ch.server_client();
    agentmeter_schema::migrations::migrate(&server, &db).await?;
    let client = ch.client();
    let machine = env::machine();
    let versions = env::versions(&server).await;

    eprintln!("graphs: loading {} tool calls over {} days into {db}", o.events, o.days);
    let now = Utc::now();
    let load = load(&client, &o, now).await?;
    eprintln!("graphs: loaded in {:.1} s ({:.0} rows/s)", load.0, o.events as f64 / load.0);
    let merge_wait = settle_merges(&client, Duration::from_secs(180)).await?;
    // What an hourly rollup over only the graph dimensions would hold.
    let hourly_rows = bind(
        &client,
        "SELECT count() FROM (SELECT 1 FROM tool_calls WHERE tenant_id = {tenant:UUID}
         GROUP BY toStartOfHour(occurred_at), server_id, server_name, tool_id, tool_name, call_kind, error_type)",
        &[("tenant", TENANT_A.to_string())],
    )
    .fetch_one::<u64>()
    .await?;
    let sizes = client
        .query("SELECT toUInt64(assumeNotNull((SELECT count() FROM tool_calls))), toUInt64(assumeNotNull((SELECT count() FROM tool_calls_1m))), toUInt64(assumeNotNull((SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'tool_calls_1m' AND active)))")
        .fetch_one::<(u64, u64, u64)>()
        .await?;
    eprintln!("graphs: raw rows {}, rollup rows {} in {} parts after {merge_wait:.0} s of merges; an hourly rollup of the graph dimensions would hold {hourly_rows} rows", sizes.0, sizes.1, sizes.2);

    let api = if o.no_api { None } else { start_api(common, &db).await? };
    let http = reqwest::Client::new();
    let mut rows = vec![vec![
        "graph".into(),
        "rollup p50".into(),
        "rollup p95".into(),
        "raw p50".into(),
        "raw p95".into(),
        "raw/rollup".into(),
        "API p50".into(),
        "API p95".into(),
        "p95<150".into(),
        ">=10x".into(),
    ]];
    let mut results = Vec::new();
    let mut all_met = true;
    for g in graphs(now) {
        let rollup = answer(&client, g.shape, &g.rollup_sql, &g.params).await?;
        let raw = answer(&client, g.shape, &g.raw_sql, &g.params).await?;
        let p95_dev = compare(g.name, &rollup, &raw)?;
        let calls = calls_of(&rollup);
        // Warm-up, then rollup, raw and API runs interleaved so that any
        // drift (background merges, other load) touches all three alike.
        let api_url = api.as_ref().map(|(_, base)| format!("{base}{}", g.api_path));
        for _ in 0..2 {
            answer(&client, g.shape, &g.rollup_sql, &g.params).await?;
            if let Some(url) = &api_url {
                api_get(&http, url).await?;
            }
        }
        let (mut r_ms, mut w_ms, mut a_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut api_total = None;
        for i in 0..o.runs {
            r_ms.push(time_query(&client, &g, &g.rollup_sql).await?);
            if i < o.raw_runs {
                w_ms.push(time_query(&client, &g, &g.raw_sql).await?);
            }
            if let Some(url) = &api_url {
                let t = Instant::now();
                let body = api_get(&http, url).await?;
                a_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                api_total = find_u64(&body, "total_tool_calls");
            }
        }
        let (r50, r95, w50, w95) = (percentile(&r_ms, 50.0), percentile(&r_ms, 95.0), percentile(&w_ms, 50.0), percentile(&w_ms, 95.0));
        let speedup = w50 / r50;
        let (a50, a95) = (percentile(&a_ms, 50.0), percentile(&a_ms, 95.0));
        let api_json = match &api_url {
            None => Value::Null,
            Some(_) => json!({
                "path": g.api_path, "p50_ms": round(a50, 2), "p95_ms": round(a95, 2),
                "overhead_p50_ms": round(a50 - r50, 2), "total_tool_calls": api_total,
                "total_matches_sql": api_total.map(|t| t == calls),
                "runs": a_ms.len(),
            }),
        };
        let met_p95 = r95 < 150.0;
        let met_speedup = speedup >= 10.0;
        all_met &= met_p95 && met_speedup;
        let f = |v: f64| if v.is_nan() { "-".to_string() } else { format!("{v:.1}") };
        rows.push(vec![g.name.into(), f(r50), f(r95), f(w50), f(w95), format!("{speedup:.1}x"), f(a50), f(a95), report::met(met_p95), report::met(met_speedup)]);
        results.push(json!({
            "graph": g.name,
            "tool_calls_in_answer": calls,
            "same_numbers": true,
            "p95_latency_max_relative_deviation": round(p95_dev, 4),
            "rollup": {"p50_ms": round(r50, 2), "p95_ms": round(r95, 2), "runs": r_ms.len()},
            "raw": {"p50_ms": round(w50, 2), "p95_ms": round(w95, 2), "runs": w_ms.len()},
            "ratio_raw_over_rollup_p50": round(speedup, 2),
            "api": api_json,
            "met": {"p95_below_150ms": met_p95, "speedup_at_least_10x": met_speedup},
        }));
    }
    let api_used = api.is_some();
    drop(api);
    println!("times in ms, {} events over {} days ({} rollup rows in {} parts)", sizes.0, o.days, sizes.1, sizes.2);
    report::table(&rows);
    let doc = json!({
        "benchmark": "graphs",
        "what": "analytics graph queries: rollup SQL of the API vs the same answer from raw events (asserted equal), and through agentmeter-api",
        "started_at": now.to_rfc3339(),
        "events": {"tool_calls": sizes.0, "days": o.days, "tenant": TENANT_A.to_string(), "rollup_rows": sizes.1, "rollup_parts": sizes.2,
                   "rows_of_an_hourly_rollup_of_the_graph_dimensions": hourly_rows, "merge_wait_seconds": round(merge_wait, 1)},
        "load": {"seconds": round(load.0, 2), "rows_per_s": round(o.events as f64 / load.0, 0), "batch_rows": o.load_batch_rows, "disk_available_before": avail},
        "figures": results,
        "ceiling": "the same answer computed from raw events in the same ClickHouse (ratio = raw p50 / rollup p50)",
        "target": {"rollup_p95_ms_max": 150, "ratio_min": 10},
        "met": {"all": all_met},
        "settings": {"runs": o.runs, "raw_runs": o.raw_runs, "seed": o.seed, "api": api_used},
        "versions": versions,
        "machine": machine,
    });
    report::write(&common.results_dir, &o.result_name, &doc)?;
    if !common.keep {
        server.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute().await?;
    }
    Ok(())
}

fn disk_available() -> String {
    Command::new("df")
        .args(["-h", "--output=avail", "."])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// Generates and inserts the tool calls; returns (seconds, rows).
async fn load(client: &Client, o: &Opts, now: DateTime<Utc>) -> anyhow::Result<(f64, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ToolCallRow>>(2);
    let (events, seed, days, batch) = (o.events, o.seed, o.days, o.load_batch_rows);
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut generator = Generator::new(Settings { seed, tenants: vec![TENANT_A], duplicate_ratio: 0.0, bad_ratio: 0.0, backfill_hours: f64::from(days) * 24.0 });
        let mut left = events;
        while left > 0 {
            let n = (batch as u64).min(left) as usize;
            let mut rows = Vec::with_capacity(n);
            while rows.len() < n {
                let m = generator.next_message(now);
                if m.kind == Kind::ToolCall {
                    rows.push(ToolCallRow::from(&agentmeter_schema::parse_tool_call(&m.payload, now)?));
                }
            }
            left -= n as u64;
            if tx.blocking_send(rows).is_err() {
                break;
            }
        }
        Ok(())
    });
    let client = client.clone().with_validation(false);
    let started = Instant::now();
    let mut rows_in = 0u64;
    while let Some(rows) = rx.recv().await {
        let mut insert = client.insert::<ToolCallRow>("tool_calls").await?.with_option("max_insert_block_size", "1000001");
        for r in &rows {
            insert.write(r).await?;
        }
        insert.end().await?;
        rows_in += rows.len() as u64;
        eprint!("\r{rows_in} rows  ");
    }
    eprintln!();
    producer.await??;
    Ok((started.elapsed().as_secs_f64(), rows_in))
}

/// Starts `agentmeter-api` on the bench database if its binary exists.
pub async fn start_api(common: &Common, db: &str) -> anyhow::Result<Option<(Proc, String)>> {
    let bin = format!("{}/agentmeter-api", common.bin_dir);
    if !std::path::Path::new(&bin).exists() {
        eprintln!("{bin} not found; skipping the API figures");
        return Ok(None);
    }
    let port = process::free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.env("AGENTMETER_CLICKHOUSE_URL", &common.clickhouse_url)
        .env("AGENTMETER_CLICKHOUSE_DATABASE", db)
        .env("AGENTMETER_API_ADDR", format!("127.0.0.1:{port}"))
        .env("AGENTMETER_API_KEYS", &common.api_keys)
        .env("RUST_LOG", "warn");
    let log = std::env::temp_dir().join("agentmeter-bench-api.log");
    let mut p = Proc::spawn(cmd, "agentmeter-api", &log.to_string_lossy())?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if p.ensure_running().is_err() {
            eprintln!("agentmeter-api exited at start (log: {}); skipping the API figures", log.display());
            return Ok(None);
        }
        if http.get(format!("{base}/health")).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            return Ok(Some((p, base)));
        }
        anyhow::ensure!(Instant::now() < deadline, "agentmeter-api did not become healthy (log: {})", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
