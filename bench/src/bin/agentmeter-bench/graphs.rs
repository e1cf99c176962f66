//! Analytics graph latency over a month of data: the API's own query
//! functions (`agentmeter_api::queries::analytics::tool_calls`, which choose the hourly
//! or minute rollup) called in-process, so the time is the bare ClickHouse
//! query of our SQL plus decoding; the same answer computed from the raw
//! `tool_calls` table, asserted equal (counts and distinct queries exactly,
//! p95 within 10 %); and the same graph through `agentmeter-api` over HTTP
//! when its release binary is present (API overhead = HTTP p50 - query p50).
//! Each answer's work inside ClickHouse, ours and raw, is read from the
//! server's counters ([`crate::engine_events`]): statements per answer,
//! their engine time and the part of it spent planning them, which no
//! rollup can remove.
//! Then the shipped Grafana dashboard's panel requests through the same API,
//! one by one and all at once ([`dashboard`]).
//!
//! Data: `--events` tool calls of generated traffic for demo tenant A over
//! the last `--days` days, and the `navigator_query` execution of each of
//! their queries, `--zero-call-percent` of the queries without their tool
//! calls (zero-call queries, which count as queries); written with RowBinary
//! straight into `tool_calls` and `agent_executions` of a fresh database
//! (the materialized views fill the rollups as in production), oldest first
//! by default, each INSERT covering its own slice of the days as live
//! traffic does (`--load-order random` spreads every INSERT over the whole
//! month instead: a backfill in random order, after which every part of
//! every rollup holds almost every key). Targets: p95 < 150 ms from the
//! rollups, and raw / rollup >= 10x.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_api::buckets::Buckets;
use agentmeter_api::db::Db;
use agentmeter_api::queries::analytics::bucket_index::index_sql;
use agentmeter_api::queries::analytics::timeseries::{self, GroupBy, Metric};
use agentmeter_api::queries::analytics::tool_calls::{self, Dim, Need};
use agentmeter_api::queries::Filters;
use agentmeter_api::queries::{CallKinds, Scope};
use agentmeter_api::window::{Span, TimeRange};
use agentmeter_bench::{Generator, Kind, Settings, TENANT_A};
use agentmeter_schema::config::ClickHouseArgs;
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clickhouse::{Client, Row};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::dashboard;
use crate::engine_events::Counters;
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
    /// Percentage of the queries loaded as their execution only (zero tool
    /// calls).
    #[arg(long, default_value_t = 10)]
    pub zero_call_percent: u8,
    /// Rows per INSERT while loading.
    #[arg(long, default_value_t = 500_000)]
    pub load_batch_rows: usize,
    /// Order of the load: `time` writes the month oldest first, each INSERT
    /// covering its own slice of the days (as live traffic arrives, so each
    /// rollup key lands in about one part); `random` spreads every INSERT
    /// over the whole month (a backfill in random order: every part holds
    /// almost every rollup key, and once merges settle several rows per key
    /// remain).
    #[arg(long, value_enum, default_value_t = LoadOrder::Time)]
    pub load_order: LoadOrder,
    /// Random seed of the traffic.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    /// Skip the API even if its binary exists.
    #[arg(long)]
    pub no_api: bool,
    /// Rounds of the shipped Grafana dashboard's panel requests through the
    /// API (one by one, then all at once); 0 skips them.
    #[arg(long, default_value_t = 10)]
    pub dashboard_rounds: usize,
    /// Name of the result file (`<name>.json`).
    #[arg(long, default_value = "graphs")]
    pub result_name: String,
}

/// How the month of events is written; see [`Opts::load_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadOrder {
    Time,
    Random,
}

/// The raw latency sum when `need` asks for it, else 0 (as the API then
/// answers).
fn raw_latency_sum(need: Need) -> &'static str {
    if need.latency_sum {
        "toFloat64(sum(latency_ms))"
    } else {
        "toFloat64(0)"
    }
}

/// The figures of a bucket computed from raw events (the reference): only
/// what the graph shows, so the raw side does no work the graph does not
/// need (distinct queries are counted by [`raw_calls_per_query_sql`]).
fn raw_stats(need: Need) -> String {
    let lat_q = if need.latency_pct {
        "arrayMap(x -> toFloat64(x), quantilesTDigest(0.5, 0.95, 0.99)(latency_ms))"
    } else {
        "CAST([], 'Array(Float64)')"
    };
    let lat_sum = raw_latency_sum(need);
    format!(
        "toUInt64(count()) AS n_calls,
    toUInt64(countIf(NOT success)) AS n_errors,
    {lat_sum} AS lat_sum_ms,
    {lat_q} AS lat_q,
    toUInt64(0) AS n_queries"
    )
}

const RAW_RANGE: &str = "tenant_id = {tenant:UUID} AND occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')";

const RAW_WHERE: &str = "tenant_id = {tenant:UUID} AND occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC') AND call_kind = 'tool'";

/// Calls per query from raw events: calls and errors (and the latency sum
/// when `need` asks for it) per bucket from `tool_calls`, queries per
/// bucket from their executions in `agent_executions` (distinct execution
/// ids), as the API counts them.
fn raw_calls_per_query_sql(index_calls: &str, index_execs: &str, need: Need) -> String {
    let lat_sum = raw_latency_sum(need);
    format!(
        "SELECT bucket, toUInt64(sum(c)) AS n_calls, toUInt64(sum(e)) AS n_errors, toFloat64(sum(l)) AS lat_sum_ms,
                CAST([], 'Array(Float64)') AS lat_q, toUInt64(sum(q)) AS n_queries
         FROM (
           SELECT {index_calls} AS bucket, toUInt64(count()) AS c, toUInt64(countIf(NOT success)) AS e, {lat_sum} AS l, toUInt64(0) AS q
           FROM tool_calls WHERE {RAW_WHERE} GROUP BY bucket
           UNION ALL
           SELECT {index_execs} AS bucket, toUInt64(0), toUInt64(0), toFloat64(0), toUInt64(uniqExact(execution_id))
           FROM agent_executions WHERE {RAW_RANGE} AND execution_kind = 'navigator_query' AND execution_id != {NIL} GROUP BY bucket
         ) GROUP BY bucket ORDER BY bucket"
    )
}

/// One bucket of a series, from raw events.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct RawBucket {
    bucket: u32,
    n_calls: u64,
    n_errors: u64,
    lat_sum_ms: f64,
    lat_q: Vec<f64>,
    n_queries: u64,
}

/// One group of a list, from raw events.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct RawGroup {
    key: String,
    n_calls: u64,
    n_queries: u64,
}

/// What the API computes for a graph, through its own query functions.
#[derive(Debug, Clone, Copy)]
enum Ours {
    /// `tool_calls::series` with this `Need`.
    Series(Need),
    /// `tool_calls::group_counts` by server id, with distinct queries.
    TopServers,
    /// The Grafana endpoint's calls per server name and bucket
    /// (`timeseries::grouped`: one statement, ranked in the API, as the
    /// endpoint reads a count), every server kept (no `other`).
    GrafanaByServer,
}

/// A graph: the API's query (called in-process), its raw-events
/// equivalent, and the HTTP path of the endpoint.
struct Graph {
    name: &'static str,
    ours: Ours,
    scope: Scope,
    buckets: Option<Buckets>,
    raw_sql: String,
    raw_params: Vec<(String, String)>,
    api_path: String,
}

/// The graphs, resolved like the API resolves `window`/`frequency` at `now`;
/// `project` is the busiest project of the traffic (a filtered graph).
fn graphs(now: DateTime<Utc>, project: Uuid) -> anyhow::Result<Vec<Graph>> {
    let series = |name, window: &str, frequency: &str, need: Need, api_path: &str, project: Option<Uuid>| -> anyhow::Result<Graph> {
        let range = TimeRange::resolve(Span::parse_window(window).map_err(anyhow::Error::msg)?, None, None, now, Tz::UTC)
            .map_err(anyhow::Error::msg)?;
        let buckets = Buckets::plan(range, Span::parse_frequency(frequency).map_err(anyhow::Error::msg)?, Tz::UTC, 10_000)
            .map_err(anyhow::Error::msg)?;
        // As the API: the range starts at the first bucket so each is whole.
        let range = TimeRange { start: buckets.first_start(), end: range.end };
        let (index, index_params) = index_sql(&buckets, "occurred_at");
        let mut raw_params = range_params(range);
        raw_params.extend(index_params.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let raw_sql = if need.queries {
            anyhow::ensure!(project.is_none(), "{name}: the raw queries are not filtered by project");
            raw_calls_per_query_sql(&index, &index, need)
        } else {
            let by_project = if project.is_some() { " AND project_id = {project:UUID}" } else { "" };
            format!(
                "SELECT {index} AS bucket, {} FROM tool_calls WHERE {RAW_WHERE}{by_project} GROUP BY bucket ORDER BY bucket",
                raw_stats(need)
            )
        };
        let mut api_path = api_path.to_owned();
        if let Some(p) = project {
            raw_params.push(("project".into(), p.to_string()));
            api_path.push_str(&format!("&project_id={p}"));
        }
        let scope = Scope { filters: Filters { project_id: project, ..Filters::default() }, ..scope(range) };
        Ok(Graph { name, ours: Ours::Series(need), scope, buckets: Some(buckets), raw_sql, raw_params, api_path })
    };
    let week =
        TimeRange::resolve(Span::parse_window("7d").map_err(anyhow::Error::msg)?, None, None, now, Tz::UTC).map_err(anyhow::Error::msg)?;
    let calls_graph = "/api/v1/analytics/tool-calls-processed-graph";
    Ok(vec![
        series("tool calls per day, 30 d", "30d", "1d", Need::CALLS, &format!("{calls_graph}?window=30d&frequency=1d"), None)?,
        series("error rate per day, 30 d", "30d", "1d", Need::CALLS, "/api/v1/analytics/error-rate-graph?window=30d&frequency=1d", None)?,
        series(
            "calls per query per day, 30 d (zero-call queries)",
            "30d",
            "1d",
            Need::CALLS_AND_QUERIES,
            "/api/v1/analytics/average-tool-calls-per-query-graph?window=30d&frequency=1d",
            None,
        )?,
        series(
            "calls per query per 5 min, 1 mon (zero-call queries)",
            "1mon",
            "5m",
            Need::CALLS_AND_QUERIES,
            "/api/v1/analytics/average-tool-calls-per-query-graph?window=1mon&frequency=5m",
            None,
        )?,
        series("tool calls per 5 min, 1 mon", "1mon", "5m", Need::CALLS, &format!("{calls_graph}?window=1mon&frequency=5m"), None)?,
        series(
            "tool calls per day by project, 30 d",
            "30d",
            "1d",
            Need::CALLS,
            &format!("{calls_graph}?window=30d&frequency=1d"),
            Some(project),
        )?,
        {
            let mut g = series("Grafana: tool calls per server per hour, 7 d", "7d", "1h", Need::CALLS, "", None)?;
            let (index, _) = index_sql(g.buckets.as_ref().expect("a series has buckets"), "occurred_at");
            g.ours = Ours::GrafanaByServer;
            g.raw_sql = format!(
                "SELECT concat(toString(server_name), '@', toString({index})) AS key, toUInt64(count()) AS n_calls, toUInt64(0) AS n_queries
                 FROM tool_calls WHERE {RAW_WHERE} GROUP BY key ORDER BY key"
            );
            g.api_path = "/api/v1/query/timeseries?metric=tool_calls&window=7d&step=1h&group_by=server&top=100".into();
            g
        },
        series(
            "latency p50/p95/p99 per hour, 7 d",
            "7d",
            "1h",
            Need::LATENCY,
            "/api/v1/analytics/average-tool-call-latency-graph?window=7d&frequency=1h",
            None,
        )?,
        Graph {
            name: "top servers, 7 d",
            ours: Ours::TopServers,
            scope: scope(week),
            buckets: None,
            raw_sql: format!(
                "SELECT toString(server_id) AS key, toUInt64(count()) AS n_calls, toUInt64(uniqExactIf(query_id, query_id != {NIL})) AS n_queries
                 FROM tool_calls WHERE {RAW_WHERE} AND server_id != {NIL} GROUP BY key ORDER BY key LIMIT 10000"
            ),
            raw_params: range_params(week),
            api_path: "/api/v1/analytics/top-servers?window=7d&limit=10".into(),
        },
    ])
}

fn scope(range: TimeRange) -> Scope {
    Scope { tenant: TENANT_A, range, filters: Filters::default(), kinds: CallKinds::Tool }
}

fn range_params(range: TimeRange) -> Vec<(String, String)> {
    vec![
        ("tenant".into(), TENANT_A.to_string()),
        ("start_ms".into(), range.start.timestamp_millis().to_string()),
        ("end_ms".into(), range.end.timestamp_millis().to_string()),
    ]
}

/// A graph's answer in one shape: per bucket (index, calls, errors,
/// queries, latency sum, p95) or per group (key, calls, queries).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Series(Vec<(u32, u64, u64, u64, f64, Option<f64>)>),
    Groups(Vec<(String, u64, u64)>),
}

/// The API's answer, from its own query functions (no HTTP, no JSON).
async fn ours(db: &Db, g: &Graph) -> anyhow::Result<Answer> {
    Ok(match (g.ours, &g.buckets) {
        (Ours::Series(need), Some(buckets)) => {
            let stats = tool_calls::series(db, &g.scope, buckets, need).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Answer::Series(
                stats
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.calls > 0 || s.queries > 0)
                    .map(|(i, s)| (i as u32, s.calls, s.errors, s.queries, s.latency_sum_ms, need.latency_pct.then(|| s.latency_pct_ms(1))))
                    .collect(),
            )
        }
        (Ours::TopServers, _) => Answer::Groups(
            tool_calls::group_counts(db, &g.scope, Dim::ServerId, true)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .into_iter()
                .map(|r| (r.key, r.calls, r.queries))
                .collect(),
        ),
        (Ours::GrafanaByServer, Some(buckets)) => {
            let fail = |e| anyhow::anyhow!("{e:?}");
            let (_, points) =
                timeseries::grouped(db, &g.scope, Metric::ToolCalls, buckets, GroupBy::Server, 100, timeseries::ONE_READ_MAX_ROWS)
                    .await
                    .map_err(fail)?;
            let mut groups: Vec<(String, u64, u64)> =
                points.into_iter().filter(|p| p.value > 0.0).map(|p| (format!("{}@{}", p.series, p.bucket), p.value as u64, 0)).collect();
            groups.sort();
            Answer::Groups(groups)
        }
        (Ours::Series(_) | Ours::GrafanaByServer, None) => anyhow::bail!("{}: a series needs buckets", g.name),
    })
}

/// The same answer from raw events.
async fn raw(client: &Client, g: &Graph) -> anyhow::Result<Answer> {
    let mut q = client.query(&g.raw_sql);
    for (k, v) in &g.raw_params {
        q = q.param(k, v);
    }
    Ok(match g.ours {
        Ours::Series(need) => Answer::Series(
            q.fetch_all::<RawBucket>()
                .await?
                .into_iter()
                .map(|b| {
                    let queries = if need.queries { b.n_queries } else { 0 };
                    let p95 = need.latency_pct.then(|| b.lat_q.get(1).copied().unwrap_or(0.0));
                    (b.bucket, b.n_calls, b.n_errors, queries, b.lat_sum_ms, p95)
                })
                .collect(),
        ),
        Ours::TopServers | Ours::GrafanaByServer => {
            Answer::Groups(q.fetch_all::<RawGroup>().await?.into_iter().map(|r| (r.key, r.n_calls, r.n_queries)).collect())
        }
    })
}

/// Counts and distinct queries must match exactly, latency sums to 1e-6,
/// p95 (t-digest of merged states vs t-digest of raw values) within 10 %.
/// Returns the largest relative p95 deviation.
fn compare(name: &str, ours: &Answer, raw: &Answer) -> anyhow::Result<f64> {
    let mut worst: f64 = 0.0;
    match (ours, raw) {
        (Answer::Series(a), Answer::Series(b)) => {
            anyhow::ensure!(a.len() == b.len(), "{name}: {} buckets from the API's query vs {} from raw events", a.len(), b.len());
            let rel = |p: f64, q: f64| if q == 0.0 { (p - q).abs() } else { ((p - q) / q).abs() };
            for (x, y) in a.iter().zip(b) {
                anyhow::ensure!((x.0, x.1, x.2, x.3) == (y.0, y.1, y.2, y.3), "{name}: ours {x:?} != raw {y:?}");
                anyhow::ensure!(rel(x.4, y.4) < 1e-6, "{name}: latency sums differ in bucket {}", x.0);
                if let (Some(p), Some(q)) = (x.5, y.5) {
                    worst = worst.max(rel(p, q));
                }
            }
            anyhow::ensure!(worst < 0.10, "{name}: p95 from the rollup is {:.1} % off the raw t-digest", worst * 100.0);
        }
        (Answer::Groups(a), Answer::Groups(b)) => anyhow::ensure!(a == b, "{name}: ours {a:?} != raw {b:?}"),
        _ => anyhow::bail!("{name}: shapes differ"),
    }
    Ok(worst)
}

fn calls_of(a: &Answer) -> u64 {
    match a {
        Answer::Series(s) => s.iter().map(|b| b.1).sum(),
        Answer::Groups(g) => g.iter().map(|b| b.1).sum(),
    }
}

/// Extra runs of each answer read between two readings of ClickHouse's
/// counters.
const ENGINE_RUNS: u32 = 3;

/// ClickHouse's work for one answer, the mean of `runs` runs of `answer`.
#[derive(Debug, Clone, Copy)]
struct EnginePerAnswer {
    statements: f64,
    query_ms: f64,
    planning_ms: f64,
}

impl EnginePerAnswer {
    fn json(&self) -> Value {
        json!({"statements": round(self.statements, 2), "query_ms": round(self.query_ms, 2), "planning_ms": round(self.planning_ms, 2)})
    }
}

async fn engine_per_answer<T, F, Fut>(client: &Client, runs: u32, answer: F) -> anyhow::Result<EnginePerAnswer>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let before = Counters::read(client).await?;
    for _ in 0..runs {
        answer().await?;
    }
    // The reading itself is one statement, counted in `after`.
    let d = Counters::read(client).await?.since(&before);
    let n = f64::from(runs);
    Ok(EnginePerAnswer {
        statements: (d.statements().saturating_sub(1)) as f64 / n,
        query_ms: d.query_ms() / n,
        planning_ms: d.planning_ms() / n,
    })
}

/// Milliseconds of one run of `f`.
pub(crate) async fn timed<T, F: std::future::Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<f64> {
    let t = Instant::now();
    f.await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// One API call as tenant A; fails unless it answers 200.
pub(crate) async fn api_get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).header("X-API-Key", TENANT_A_KEY).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url}: API answered {status}: {body}");
    Ok(body)
}

/// Waits (up to `limit`) until ClickHouse has no merge running in `db`, so
/// that timings see the steady state a month of data is in, not the
/// aftermath of the bulk load. Returns the seconds waited.
pub async fn settle_merges(client: &Client, limit: Duration) -> anyhow::Result<f64> {
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
    eprintln!("graphs: loaded {} tool calls and {} query executions in {:.1} s", load.1, load.2, load.0);
    let merge_wait = settle_merges(&client, Duration::from_secs(180)).await?;
    // Rows of every table (rollups: rows in their parts after the merges).
    let table_rows: Vec<(String, u64)> = client
        .query(
            "SELECT name, toUInt64(ifNull(total_rows, 0)) FROM system.tables
             WHERE database = currentDatabase() AND engine LIKE '%MergeTree' ORDER BY name",
        )
        .fetch_all()
        .await?;
    let rows_of = |t: &str| table_rows.iter().find(|(n, _)| n == t).map(|r| r.1).unwrap_or(0);
    let sizes = (rows_of("tool_calls"), rows_of("tool_calls_1m"), rows_of("tool_calls_1h"), rows_of("agent_executions"));
    eprintln!("graphs: rows per table after {merge_wait:.0} s of merges: {table_rows:?}");

    let api_db = Db::new(client.clone(), 4, Duration::from_secs(120), Arc::new(agentmeter_api::metrics::Metrics::new()));
    let project = Generator::new(Settings { seed: o.seed, tenants: vec![TENANT_A], ..Settings::default() }).projects()[0];
    let graph_list = graphs(Utc::now(), project)?;
    // ClickHouse's account of one answer each way (runs apart from the
    // timed ones, after a warm-up): statements, their time, and how much
    // of it went to planning them. Read before the API starts, whose
    // background reads the server-wide counters would count too.
    let mut engine = Vec::new();
    for g in &graph_list {
        ours(&api_db, g).await?;
        raw(&client, g).await?;
        engine.push((
            engine_per_answer(&client, ENGINE_RUNS, || ours(&api_db, g)).await?,
            engine_per_answer(&client, ENGINE_RUNS, || raw(&client, g)).await?,
        ));
    }

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
    let mut engine_rows = vec![vec![
        "engine time per answer (system.events, ms)".into(),
        "statements".into(),
        "planning".into(),
        "engine".into(),
        "raw planning".into(),
        "raw engine".into(),
    ]];
    let mut results = Vec::new();
    let mut all_met = true;
    // The request floor: what the cheapest statement costs over the same
    // client, so that each ratio can be read against what no rollup can
    // remove (a graph whose raw answer costs a few floors cannot be 10x).
    let mut floor_ms = Vec::new();
    for i in 0..o.runs + 2 {
        let t = Instant::now();
        client.query("SELECT 1").fetch_one::<u8>().await?;
        if i >= 2 {
            floor_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let (floor50, floor95) = (percentile(&floor_ms, 50.0), percentile(&floor_ms, 95.0));
    // The same floor again, one request after every timed run of every
    // graph: what the cheapest request cost while the graphs ran.
    let mut during_ms = Vec::new();
    for (g, (ours_engine, raw_engine)) in graph_list.into_iter().zip(engine) {
        let mine = ours(&api_db, &g).await?;
        let reference = raw(&client, &g).await?;
        let p95_dev = compare(g.name, &mine, &reference)?;
        let calls = calls_of(&mine);
        // Warm-up, then ours, raw and API runs interleaved so that any
        // drift (background merges, other load) touches all three alike.
        let api_url = api.as_ref().map(|(_, base)| format!("{base}{}", g.api_path));
        for _ in 0..2 {
            ours(&api_db, &g).await?;
            if let Some(url) = &api_url {
                api_get(&http, url).await?;
            }
        }
        let (mut r_ms, mut w_ms, mut a_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut api_total = None;
        for i in 0..o.runs {
            r_ms.push(timed(ours(&api_db, &g)).await?);
            during_ms.push(timed(async { Ok(client.query("SELECT 1").fetch_one::<u8>().await?) }).await?);
            if i < o.raw_runs {
                w_ms.push(timed(raw(&client, &g)).await?);
            }
            if let Some(url) = &api_url {
                let t = Instant::now();
                let body = api_get(&http, url).await?;
                a_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                api_total = find_u64(&body, "total_tool_calls");
            }
        }
        engine_rows.push(vec![
            g.name.into(),
            format!("{:.1}", ours_engine.statements),
            format!("{:.1}", ours_engine.planning_ms),
            format!("{:.1}", ours_engine.query_ms),
            format!("{:.1}", raw_engine.planning_ms),
            format!("{:.1}", raw_engine.query_ms),
        ]);
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
        rows.push(vec![
            g.name.into(),
            f(r50),
            f(r95),
            f(w50),
            f(w95),
            format!("{speedup:.1}x"),
            f(a50),
            f(a95),
            report::met(met_p95),
            report::met(met_speedup),
        ]);
        results.push(json!({
            "graph": g.name,
            "tool_calls_in_answer": calls,
            "same_numbers": true,
            "p95_latency_max_relative_deviation": round(p95_dev, 4),
            "rollup": {"p50_ms": round(r50, 2), "p95_ms": round(r95, 2), "runs": r_ms.len()},
            "raw": {"p50_ms": round(w50, 2), "p95_ms": round(w95, 2), "runs": w_ms.len()},
            "ratio_raw_over_rollup_p50": round(speedup, 2),
            "api": api_json,
            "engine_per_answer": {"ours": ours_engine.json(), "raw": raw_engine.json()},
            "met": {"p95_below_150ms": met_p95, "speedup_at_least_10x": met_speedup},
        }));
    }
    let dashboard = match &api {
        Some((_, base)) if o.dashboard_rounds > 0 => Some(dashboard::run(&http, base, &client, o.dashboard_rounds).await?),
        _ => None,
    };
    let api_used = api.is_some();
    drop(api);
    println!("times in ms, {} events over {} days (rollup rows: {} per minute, {} per hour)", sizes.0, o.days, sizes.1, sizes.2);
    report::table(&rows);
    println!();
    report::table(&engine_rows);
    println!(
        "(engine: the statements' time inside ClickHouse, planning included; planning: parsing, analysis, plan and pipeline; \
         what an answer costs beyond the engine is the request floor below)"
    );
    let (during50, during95) = (percentile(&during_ms, 50.0), percentile(&during_ms, 95.0));
    println!(
        "request floor (SELECT 1 over the same client): before the graphs p50 {floor50:.1} ms, p95 {floor95:.1} ms; \
         between their runs p50 {during50:.1} ms, p95 {during95:.1} ms"
    );
    for line in dashboard.iter().flat_map(|d| &d.lines) {
        println!("{line}");
    }
    let doc = json!({
        "benchmark": "graphs",
        "what": "analytics graph queries: the API's query functions on the rollups (in-process) vs the same answer from raw events (asserted equal), and through agentmeter-api over HTTP",
        "started_at": now.to_rfc3339(),
        "events": {"tool_calls": sizes.0, "query_executions": sizes.3, "zero_call_percent": o.zero_call_percent, "days": o.days,
                   "tenant": TENANT_A.to_string(), "rollup_rows": sizes.1, "hourly_rollup_rows": sizes.2,
                   "table_rows": table_rows.iter().cloned().collect::<std::collections::BTreeMap<String, u64>>(),
                   "merge_wait_seconds": round(merge_wait, 1)},
        "load": {"seconds": round(load.0, 2), "rows_per_s": round((load.1 + load.2) as f64 / load.0, 0), "batch_rows": o.load_batch_rows,
                 "order": format!("{:?}", o.load_order).to_lowercase(), "disk_available_before": avail},
        "figures": results,
        "request_floor": {"what": "SELECT 1 over the same client, before the graphs", "p50_ms": round(floor50, 2), "p95_ms": round(floor95, 2), "runs": floor_ms.len(),
                          "between_runs": {"what": "the same after every timed run of every graph", "p50_ms": round(during50, 2), "p95_ms": round(during95, 2), "runs": during_ms.len()}},
        "dashboard": dashboard.map(|d| d.json),
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

/// Generates and inserts the tool calls and the executions of their
/// queries (`--zero-call-percent` of the queries without their calls);
/// returns (seconds, tool calls, executions).
async fn load(client: &Client, o: &Opts, now: DateTime<Utc>) -> anyhow::Result<(f64, u64, u64)> {
    type Batch = (Vec<ToolCallRow>, Vec<AgentExecutionRow>);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let (events, seed, days, batch, zero_call) = (o.events, o.seed, o.days, o.load_batch_rows, u128::from(o.zero_call_percent));
    // In time order, INSERT `i` of `inserts` covers the `i`-th slice of the
    // days: the generator spreads each query over the slice hours before the
    // `now` it is given (a query's tool calls keep its time even when they
    // spill into the next INSERT).
    let inserts = events.div_ceil(batch.max(1) as u64).max(1);
    let month_hours = f64::from(days) * 24.0;
    let time_order = o.load_order == LoadOrder::Time;
    let slice_hours = if time_order { month_hours / inserts as f64 } else { month_hours };
    let insert_now = move |i: u64| -> DateTime<Utc> {
        if !time_order {
            return now;
        }
        let back_slices = inserts.saturating_sub(i + 1) as f64;
        now - chrono::Duration::milliseconds((back_slices * slice_hours * 3_600_000.0) as i64)
    };
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut generator =
            Generator::new(Settings { seed, tenants: vec![TENANT_A], duplicate_ratio: 0.0, bad_ratio: 0.0, backfill_hours: slice_hours });
        let mut left = events;
        let mut insert = 0u64;
        // The query whose tool calls are left out (a zero-call query).
        let mut without_calls = uuid::Uuid::nil();
        while left > 0 {
            let n = (batch as u64).min(left) as usize;
            let (mut rows, mut executions) = (Vec::with_capacity(n), Vec::new());
            let slice_end = insert_now(insert);
            insert += 1;
            while rows.len() < n {
                let m = generator.next_message(slice_end);
                match m.kind {
                    Kind::ToolCall => {
                        let row = ToolCallRow::from(&agentmeter_schema::parse_tool_call(&m.payload, now)?);
                        if without_calls.is_nil() || row.query_id != without_calls {
                            rows.push(row);
                        }
                    }
                    Kind::AgentExecution => {
                        let row = AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(&m.payload, now)?);
                        if row.execution_kind == "navigator_query" {
                            // The generator's ids are seeded random: their low bits pick the zero-call queries.
                            without_calls = if row.execution_id.as_u128() % 100 < zero_call { row.execution_id } else { uuid::Uuid::nil() };
                            executions.push(row);
                        }
                    }
                }
            }
            left -= n as u64;
            if tx.blocking_send((rows, executions)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let client = client.clone().with_validation(false);
    let started = Instant::now();
    let (mut calls_in, mut executions_in) = (0u64, 0u64);
    while let Some((rows, executions)) = rx.recv().await {
        let mut insert = client.insert::<ToolCallRow>("tool_calls").await?.with_option("max_insert_block_size", "1000001");
        for r in &rows {
            insert.write(r).await?;
        }
        insert.end().await?;
        let mut insert = client.insert::<AgentExecutionRow>("agent_executions").await?.with_option("max_insert_block_size", "1000001");
        for r in &executions {
            insert.write(r).await?;
        }
        insert.end().await?;
        calls_in += rows.len() as u64;
        executions_in += executions.len() as u64;
        eprint!("\r{calls_in} tool calls, {executions_in} query executions  ");
    }
    eprintln!();
    producer.await??;
    Ok((started.elapsed().as_secs_f64(), calls_in, executions_in))
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
        // One key asks as fast as it can: the per-key abuse limits are off.
        .env("AGENTMETER_API_ANALYTICS_RATE_PER_S", "0")
        .env("AGENTMETER_API_ANALYTICS_CONCURRENCY_PER_KEY", "0")
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
