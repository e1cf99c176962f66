//! Freshness: the time from producing an event to seeing it counted by the
//! API, while `agentmeter-ingest` carries background traffic at half the
//! maximum ingest rate measured by the ingest benchmark.
//!
//! Each sample is one tool call with a unique `tool_name` (the marker) for
//! demo tenant A; the clock starts just before the produce call and stops
//! when `GET /api/v1/analytics/tool-calls-processed?window=1h&tool_name=<marker>`
//! reports `total_tool_calls = 1`. Samples start every `--interval-ms` and
//! are polled concurrently every `--poll-ms`, so a slow sample does not
//! delay the next.
//!
//! The same for the plan-limit check: with a limit on a fresh organization,
//! each of `--check-samples` billable agent executions (one after the other)
//! is timed from produce until `POST /v1/usage/check` reports it in
//! `current_usage` (ingest, then the counters' 250 ms refresh).
//!
//! Target for both: p99 < 3 s.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Settings, TENANT_A, TENANT_B};
use agentmeter_schema::config::ClickHouseArgs;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{json, Value};

use crate::kafka::{self, Topics};
use crate::process::{self, Proc};
use crate::report::{self, percentile, round};
use crate::{env, graphs, ingest, Common};

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Background events per second (0: half of `ingest_events_per_s` in
    /// `<results-dir>/ingest.json`, or 5000 without it).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Number of marker events measured.
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// A new sample starts this often.
    #[arg(long, default_value_t = 300)]
    pub interval_ms: u64,
    /// Each sample polls the API this often.
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Plan-limit check samples (sequential), after the analytics samples.
    #[arg(long, default_value_t = 30)]
    pub check_samples: usize,
    /// Background traffic before the first sample.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Partitions of each event topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Name of the result file (`<name>.json`).
    #[arg(long, default_value = "freshness")]
    pub result_name: String,
    /// Folder of the local stack's pid files (`clickhouse.pid`, `kafka.pid`):
    /// their CPU during the measurement is reported next to the worker's,
    /// the API's and this process's (the producer). Missing files leave
    /// those figures out.
    #[arg(long, env = "AGENTMETER_BENCH_STACK_RUN_DIR", default_value = ".stack/run")]
    pub stack_run_dir: String,
}

fn half_max_rate(dir: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("{dir}/ingest.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["figures"]["ingest_events_per_s"].as_f64().map(|r| (r / 2.0) as u64)
}

/// Generated messages replayed with a new `event_id` (also their key, as
/// producers key by it) and the current `occurred_at` each time: producing
/// tens of thousands of events a second then costs the machine little
/// (generating each one afresh took most of a core from the system under
/// test on a 2-core machine), and the traffic is live traffic. Replaying
/// the generation's key sent two thirds of the events to another
/// partition than their id's home, so the worker forwarded them (twice
/// the broker's traffic); replaying its time gave every event of the run
/// the same `occurred_at`, so each duplicate look-up's key range held
/// every row stored so far. Either made the worker fall minutes behind.
struct Replay {
    /// Kind, payload, and where its event id and `occurred_at` start.
    messages: Vec<(Kind, Vec<u8>, usize, usize)>,
    id_base: u128,
    sent: u64,
}

impl Replay {
    const SIZE: usize = 20_000;
    const ID_FIELD: &'static [u8] = b"\"event_id\":\"";
    const AT_FIELD: &'static [u8] = b"\"occurred_at\":\"";

    fn new(now: chrono::DateTime<chrono::Utc>) -> Self {
        let mut generator = Generator::new(Settings { seed: 5, tenants: vec![TENANT_A, TENANT_B], ..Settings::default() });
        let after = |payload: &[u8], field: &[u8]| Some(payload.windows(field.len()).position(|w| w == field)? + field.len());
        let messages = (0..Self::SIZE)
            .map(|_| generator.next_message(now))
            .filter_map(|m| {
                let (id_at, time_at) = (after(&m.payload, Self::ID_FIELD)?, after(&m.payload, Self::AT_FIELD)?);
                assert_eq!(m.payload.get(time_at + 23), Some(&b'Z'), "occurred_at as RFC 3339 with milliseconds");
                Some((m.kind, m.payload, id_at, time_at))
            })
            .collect();
        Self { messages, id_base: uuid::Uuid::new_v4().as_u128(), sent: 0 }
    }

    /// The next message: kind, key and payload with a never-used event id
    /// (the key), occurring now.
    fn next(&mut self) -> (Kind, Vec<u8>, Vec<u8>) {
        let (kind, payload, id_at, time_at) = &self.messages[self.sent as usize % self.messages.len()];
        let id = uuid::Builder::from_random_bytes((self.id_base ^ u128::from(self.sent)).to_le_bytes()).into_uuid();
        self.sent += 1;
        let mut payload = payload.clone();
        id.hyphenated().encode_lower(&mut payload[*id_at..*id_at + uuid::fmt::Hyphenated::LENGTH]);
        // The generator writes RFC 3339 with milliseconds and `Z`: 24 bytes.
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        payload[*time_at..*time_at + now.len()].copy_from_slice(now.as_bytes());
        (*kind, id.hyphenated().to_string().into_bytes(), payload)
    }
}

/// Produces generated traffic at `rate` events/s until `stop`. Blocking.
fn background(brokers: String, topics: Topics, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> anyhow::Result<()> {
    let producer = kafka::bulk_producer(&brokers)?;
    let mut replay = Replay::new(chrono::Utc::now());
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..(rate / 100).max(1) {
            let (kind, key, payload) = replay.next();
            kafka::send_blocking(&producer, topics.of(kind), &key, &payload)?;
            n += 1;
        }
        sent.store(n, Ordering::Relaxed);
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

pub async fn run(common: &Common, o: Opts) -> anyhow::Result<()> {
    let rate = if o.rate > 0 { o.rate } else { half_max_rate(&common.results_dir).unwrap_or(5000) };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let db = format!("agentmeter_bench_fresh_{run_id}");
    let ch = ClickHouseArgs::new(&common.clickhouse_url, &db);
    let server = ch.server_client();
    agentmeter_schema::migrations::migrate(&server, &db).await?;
    let machine = env::machine();
    let versions = env::versions(&server).await;
    let topics = Topics::fresh(&run_id);
    topics.create(&common.kafka_brokers, o.partitions).await?;

    let port = process::free_port()?;
    let mut cmd = std::process::Command::new(format!("{}/agentmeter-ingest", common.bin_dir));
    cmd.env("AGENTMETER_KAFKA_BROKERS", &common.kafka_brokers)
        .env("AGENTMETER_KAFKA_GROUP", format!("bench-fresh-{run_id}"))
        .env("AGENTMETER_TOOL_CALLS_TOPIC", &topics.tool_calls)
        .env("AGENTMETER_AGENT_EXECUTIONS_TOPIC", &topics.executions)
        .env("AGENTMETER_DEAD_LETTER_TOPIC", &topics.dead_letter)
        .env("AGENTMETER_CLICKHOUSE_URL", &ch.url)
        .env("AGENTMETER_CLICKHOUSE_DATABASE", &db)
        .env("AGENTMETER_KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("AGENTMETER_INGEST_METRICS_ADDR", format!("127.0.0.1:{port}"))
        // BENCH_WORKER_RUST_LOG=agentmeter_ingest=debug logs every batch's timing.
        .env("RUST_LOG", std::env::var("BENCH_WORKER_RUST_LOG").unwrap_or_else(|_| "warn".into()));
    let log = std::env::temp_dir().join("agentmeter-bench-fresh-worker.log");
    let mut worker = Proc::spawn(cmd, "agentmeter-ingest", &log.to_string_lossy())?;
    let Some((api, base)) = graphs::start_api(common, &db).await? else {
        anyhow::bail!("the freshness benchmark needs {}/agentmeter-api", common.bin_dir);
    };

    eprintln!("freshness: background traffic at {rate} events/s");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let bg = {
        let (b, t, s, n) = (common.kafka_brokers.clone(), topics.clone(), stop.clone(), sent.clone());
        tokio::task::spawn_blocking(move || background(b, t, rate, s, n))
    };
    // Wait for the worker to join and write, then warm up.
    let client = ch.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        worker.ensure_running()?;
        let n = client.query("SELECT count() FROM tool_calls").fetch_one::<u64>().await?;
        if n > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the worker wrote nothing within 60 s (log: {})", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(o.warmup_s)).await;
    let sent_at_start = sent.load(Ordering::Relaxed);
    let measure_start = Instant::now();
    // Who takes the machine while the samples run: the stack's services,
    // the worker, the API, and this process (producer and pollers).
    let mut measured = ingest::stack_services(&o.stack_run_dir);
    measured.push(ingest::Service { name: "worker", pid: worker.pid() });
    measured.push(ingest::Service { name: "api", pid: api.pid() });
    measured.push(ingest::Service { name: "producer", pid: std::process::id() });
    let cpu_at_start = ingest::cpu_seconds(&measured);

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &common.kafka_brokers).set("linger.ms", "0").create()?;
    let http = reqwest::Client::new();
    let mut lanes = Vec::new();
    for i in 0..o.samples {
        let marker = format!("fresh-{run_id}-{i}");
        let (producer, http, base, topic, poll) = (producer.clone(), http.clone(), base.clone(), topics.tool_calls.clone(), o.poll_ms);
        lanes.push(tokio::spawn(async move { sample(producer, http, base, topic, marker, poll).await }));
        tokio::time::sleep(Duration::from_millis(o.interval_ms)).await;
    }
    let mut ms = Vec::new();
    let mut failures = Vec::new();
    for l in lanes {
        match l.await? {
            Ok(v) => ms.push(v),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let check_ms = check_samples(&producer, &http, &base, &topics.executions, o.check_samples, o.poll_ms.min(50)).await;
    let measured_s = measure_start.elapsed().as_secs_f64();
    let achieved = (sent.load(Ordering::Relaxed) - sent_at_start) as f64 / measured_s;
    let cores: Vec<(&str, f64)> = measured
        .iter()
        .zip(cpu_at_start.iter().zip(ingest::cpu_seconds(&measured)))
        .map(|(s, (a, b))| (s.name, (b - a) / measured_s))
        .collect();
    stop.store(true, Ordering::Relaxed);
    bg.await??;
    let usage = process::usage(worker.pid())?;
    worker.stop(Duration::from_secs(20));
    drop(api);
    let clean_up = || async {
        if !common.keep {
            server.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute().await?;
            topics.delete(&common.kafka_brokers).await?;
        }
        anyhow::Ok(())
    };
    // A failed check still deletes the run's topics: the local broker keeps
    // every message in memory, and a few failed runs' topics once filled it.
    let check_ms = match check_ms {
        Ok(v) => v,
        Err(e) => {
            clean_up().await?;
            return Err(e);
        }
    };
    let (p50, p90, p99, max) = (percentile(&ms, 50.0), percentile(&ms, 90.0), percentile(&ms, 99.0), percentile(&ms, 100.0));
    let (c50, c90, c99, cmax) =
        (percentile(&check_ms, 50.0), percentile(&check_ms, 90.0), percentile(&check_ms, 99.0), percentile(&check_ms, 100.0));
    let met_analytics = failures.is_empty() && p99 < 3000.0;
    let met_check = c99 < 3000.0;
    let met = met_analytics && met_check;
    let f = |v: f64| format!("{v:.0}");
    report::table(&[
        vec!["freshness (produce -> visible), ms".into(), "analytics API".into(), "plan-limit check".into()],
        vec!["p50".into(), f(p50), f(c50)],
        vec!["p90".into(), f(p90), f(c90)],
        vec!["p99".into(), f(p99), f(c99)],
        vec!["max".into(), f(max), f(cmax)],
        vec!["samples".into(), format!("{} ({} failed)", ms.len(), failures.len()), format!("{}", check_ms.len())],
        vec!["background events/s (offered / achieved)".into(), format!("{rate} / {achieved:.0}"), String::new()],
        vec!["target p99 < 3000 ms".into(), report::met(met_analytics), report::met(met_check)],
    ]);
    let split = cores.iter().map(|(n, c)| format!("{n} {c:.2}")).collect::<Vec<_>>().join(", ");
    eprintln!("cores used while measuring: {split} (of {})", machine["cores"]);
    let doc = json!({
        "benchmark": "freshness",
        "what": "produce -> counted by GET /api/v1/analytics/tool-calls-processed, and produce -> counted in current_usage of POST /v1/usage/check, with agentmeter-ingest under background load at half its measured max rate",
        "started_at": chrono::Utc::now().to_rfc3339(),
        "events": {"samples": o.samples, "measured": ms.len(), "failed": failures.len(), "background_events_sent": sent.load(Ordering::Relaxed)},
        "figures": {
            "p50_ms": round(p50, 1), "p90_ms": round(p90, 1), "p99_ms": round(p99, 1), "max_ms": round(max, 1),
            "background_rate_offered_per_s": rate, "background_rate_achieved_per_s": round(achieved, 0),
            "worker_peak_rss_mib": round(usage.hwm_kib as f64 / 1024.0, 1),
            "cpu_cores_while_measuring": cores.iter().map(|(n, c)| (n.to_string(), json!(round(*c, 2)))).collect::<serde_json::Map<_, _>>(),
            "failures": failures,
            "check": {"p50_ms": round(c50, 1), "p90_ms": round(c90, 1), "p99_ms": round(c99, 1), "max_ms": round(cmax, 1), "samples": check_ms.len()},
        },
        "ceiling": {"background_rate_is_half_of_ingest_events_per_s": half_max_rate(&common.results_dir).map(|h| h * 2)},
        "ratio": Value::Null,
        "target": {"p99_ms_max": 3000},
        "met": {"all": met, "analytics": met_analytics, "check": met_check},
        "settings": {"interval_ms": o.interval_ms, "poll_ms": o.poll_ms, "worker_flush_interval_ms": 1000, "partitions": o.partitions},
        "versions": versions,
        "machine": machine,
    });
    report::write(&common.results_dir, &o.result_name, &doc)?;
    clean_up().await
}

/// Produces one marker and polls the API until it is counted; milliseconds.
async fn sample(
    producer: FutureProducer,
    http: reqwest::Client,
    base: String,
    topic: String,
    marker: String,
    poll_ms: u64,
) -> anyhow::Result<f64> {
    let id = uuid::Uuid::new_v4();
    let payload = json!({
        "event_id": id, "occurred_at": chrono::Utc::now().timestamp_millis(), "tenant_id": TENANT_A,
        "tool_name": marker, "call_kind": "tool", "latency_ms": 1.0, "success": true,
    })
    .to_string();
    let key = id.to_string();
    let started = Instant::now();
    producer
        .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    let url = format!("{base}/api/v1/analytics/tool-calls-processed?window=1h&tool_name={marker}");
    loop {
        let v: Value = http.get(&url).header("X-API-Key", "am_dev_tenant_a").send().await?.json().await?;
        if v["data"]["total_tool_calls"].as_u64().or_else(|| v["total_tool_calls"].as_u64()) == Some(1) {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{marker} not visible after 30 s (last answer {v})");
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
    }
}

/// Sets a limit on a fresh organization, then produces `n` billable agent
/// executions for it one after the other, each timed until the check's
/// `current_usage` counts it; milliseconds.
async fn check_samples(
    producer: &FutureProducer,
    http: &reqwest::Client,
    base: &str,
    topic: &str,
    n: usize,
    poll_ms: u64,
) -> anyhow::Result<Vec<f64>> {
    let org = uuid::Uuid::new_v4();
    let limit = json!({"subject": "organization", "organization_id": org, "metric": "executions", "period": "rolling_hours", "rolling_hours": 1, "max_value": 1_000_000});
    let resp =
        http.put(format!("{base}/v1/limits/{}", uuid::Uuid::new_v4())).header("X-API-Key", "am_dev_admin").json(&limit).send().await?;
    anyhow::ensure!(resp.status().is_success(), "setting the limit: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    let check = json!({"tokens": 1, "usage_type": "executions", "organization_id": org});
    let mut out = Vec::with_capacity(n);
    for k in 1..=n as u64 {
        let id = uuid::Uuid::new_v4();
        let payload = json!({
            "event_id": id, "occurred_at": chrono::Utc::now().timestamp_millis(), "tenant_id": TENANT_A,
            "execution_id": uuid::Uuid::new_v4(), "execution_kind": "agent_chat", "billable": true,
            "organization_id": org, "input_tokens": 1, "output_tokens": 1, "total_tokens": 2, "status": "success",
        })
        .to_string();
        let key = id.to_string();
        let started = Instant::now();
        producer
            .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        loop {
            let v: Value = http
                .post(format!("{base}/v1/usage/check"))
                .header("X-API-Key", "am_dev_tenant_a")
                .json(&check)
                .send()
                .await?
                .json()
                .await?;
            if v["current_usage"].as_u64() >= Some(k) {
                out.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "execution {k} not in the check after 30 s (last answer {v})");
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        }
    }
    Ok(out)
}
