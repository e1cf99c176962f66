//! Ingest throughput: `agentmeter-ingest` (release binary) end to end, from
//! the first message it consumes to the last row visible in ClickHouse,
//! against the ceiling of the same run:
//!
//! * (a) **raw consume**: a bare rdkafka consumer draining the same topics
//!   of the same broker, decoding nothing;
//! * (b) **raw insert**: the same rows (generated from the same seed,
//!   parsed in advance, not timed) inserted into a twin database on the
//!   same ClickHouse with the clickhouse crate, in batches of the worker's
//!   size, one insert at a time per table (as the worker writes);
//! * ceiling = min(a, b). Target: worker >= 60 % of it, peak RSS < 200 MB.
//!
//! (b) and (c) run `--rounds` times (default 3), each round a fresh pair
//! of databases and a fresh consumer group on the same pre-loaded topics,
//! (b) right before (c). The ratio is the median round's (the lower middle
//! for an even count), and every round's is reported: this machine's speed
//! drifts within minutes (single runs of the same binary gave 48 % and
//! 65 %), and a ceiling measured next to each worker phase cancels most of
//! that drift, where one ceiling for the whole run does not.
//!
//! After the rounds, (e) repeats (b) into another database while a busy
//! loop ([`crate::busy`]) takes as much CPU as the worker and the broker
//! took during the median round's (c): the ceiling as it fares when it shares the machine as the
//! worker's phase does. Reported next to the ratio, which keeps the
//! ceiling with the machine to itself.
//!
//! The worker's peak RSS is `VmHWM` and its CPU `utime + stime` from /proc.
//! What ClickHouse did in (b) and in (c) comes from its own counters
//! ([`crate::engine_events`], per 100k events): statements, rows its
//! inserts wrote into the raw tables and the views, rows its background
//! merges read, time spent planning statements. They say where the
//! worker's phase costs ClickHouse more CPU per event than the ceiling's.
//!
//! Then (d), unless `--otlp-traces 0`: the same worker on OpenTelemetry
//! GenAI spans (the OTLP topic, see `otlp.rs`), reported next to (c).

use std::process::Command;
use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Settings, TENANT_A, TENANT_B};
use agentmeter_schema::config::ClickHouseArgs;
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use clickhouse::{Client, Row};
use serde::Serialize;
use serde_json::json;

use crate::engine_events::{self, Counters};
use crate::kafka::{self, Topics};
use crate::otlp;
use crate::process::{self, Proc};
use crate::report::{self, round};
use crate::{busy, env, Common};

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Events to pre-load and ingest.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Partitions of each event topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Rounds of (b) raw insert then (c) worker; the ratio is the median
    /// round's (see the module docs).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Rows per INSERT for the worker and the raw-insert ceiling (the worker's default).
    #[arg(long, default_value_t = 50_000)]
    pub batch_rows: usize,
    /// The worker's Kafka fetch queue bound in KiB (its default); the raw consumer uses the same.
    #[arg(long, default_value_t = 8192)]
    pub fetch_queue_kib: u64,
    /// Random seed of the traffic.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout_s: u64,
    /// Spread `occurred_at` of the pre-loaded events over this many past
    /// hours (0: the time of producing, as live traffic). A wide spread
    /// makes every batch span the whole range: the worst case of the
    /// worker's duplicate look-up (see bench/README.md).
    #[arg(long, default_value_t = 0.0)]
    pub backfill_hours: f64,
    /// Agent traces for the OTLP phase (d) (5 spans, 4 rows each; 0: skip it).
    #[arg(long, default_value_t = 20_000)]
    pub otlp_traces: u64,
    /// Traces per OTLP message (the Collector's batch).
    #[arg(long, default_value_t = 50)]
    pub otlp_traces_per_message: u64,
    /// Name of the result file (`<name>.json`).
    #[arg(long, default_value = "ingest")]
    pub result_name: String,
    /// Directory of the local stack's pid files (`clickhouse.pid`,
    /// `kafka.pid`, written by `./dev/stack`): their processes' CPU during
    /// the worker's run is reported next to the worker's. Missing files
    /// leave those figures out.
    #[arg(long, env = "AGENTMETER_BENCH_STACK_RUN_DIR", default_value = ".stack/run")]
    pub stack_run_dir: String,
}

/// A stack service whose CPU is measured during the worker's run.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
}

/// The CPU seconds each of `services` has used so far (0 for one that is gone).
pub(crate) fn cpu_seconds(services: &[Service]) -> Vec<f64> {
    services.iter().map(|s| process::usage(s.pid).map(|u| u.cpu_s).unwrap_or(0.0)).collect()
}

/// The stack's ClickHouse front and broker, from their pid files.
pub(crate) fn stack_services(run_dir: &str) -> Vec<Service> {
    [("clickhouse", "clickhouse.pid"), ("broker", "kafka.pid")]
        .into_iter()
        .filter_map(|(name, file)| {
            let text = std::fs::read_to_string(std::path::Path::new(run_dir).join(file)).ok()?;
            let pid = text.lines().next()?.trim().parse().ok()?;
            process::usage(pid).ok().map(|_| Service { name, pid })
        })
        .collect()
}

fn settings(seed: u64, backfill_hours: f64) -> Settings {
    Settings { seed, tenants: vec![TENANT_A, TENANT_B], duplicate_ratio: 0.0, bad_ratio: 0.0, backfill_hours }
}

pub async fn run(common: &Common, o: Opts) -> anyhow::Result<()> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let db = format!("agentmeter_bench_ingest_{run_id}");
    let db_beside = format!("{db}_beside");
    let ch_beside = ClickHouseArgs::new(&common.clickhouse_url, &db_beside);
    let server = ClickHouseArgs::new(&common.clickhouse_url, &db).server_client();
    let machine = env::machine();
    let versions = env::versions(&server).await;
    let topics = Topics::fresh(&run_id);
    topics.create(&common.kafka_brokers, o.partitions).await?;
    let timeout = Duration::from_secs(o.timeout_s);

    eprintln!("ingest: pre-loading {} events into {} / {}", o.events, topics.tool_calls, topics.executions);
    let (brokers, t, n, seed, back) = (common.kafka_brokers.clone(), topics.clone(), o.events, o.seed, o.backfill_hours);
    let produced = tokio::task::spawn_blocking(move || kafka::preload(&brokers, &t, n, settings(seed, back))).await??;
    eprintln!("ingest: produced {} events in {:.1} s", produced.events(), produced.seconds);

    eprintln!("ingest: (a) raw consume");
    let (brokers, t, q) = (common.kafka_brokers.clone(), topics.clone(), o.fetch_queue_kib);
    let consumed = tokio::task::spawn_blocking(move || kafka::raw_consume(&brokers, &t, n, q, timeout)).await??;
    let consume_rate = consumed.messages as f64 / consumed.seconds;
    eprintln!("ingest: raw consume {:.0} events/s", consume_rate);

    let services = stack_services(&o.stack_run_dir);
    let mut rounds = Vec::new();
    let mut databases = vec![db_beside.clone()];
    for i in 1..=o.rounds {
        let round = run_round(common, &o, &format!("{db}_r{i}"), &topics, &produced, consume_rate, &services, timeout).await?;
        eprintln!("ingest: round {i} of {}: (c) / ceiling {:.1} %", o.rounds, round.ratio * 100.0);
        databases.extend([round.db.clone(), round.db_ceiling.clone()]);
        rounds.push(round);
    }
    let ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
    let median = &rounds[median_index(&ratios)];
    let Round { insert, insert_rate, settled_s, loadavg_before_worker, worker, ingest_rate, ceiling, limited_by, ratio, .. } = median;
    let (insert_rate, settled_s, ingest_rate, ceiling, limited_by, ratio) =
        (*insert_rate, *settled_s, *ingest_rate, *ceiling, *limited_by, *ratio);
    let (ratio_min, ratio_max) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(*r), hi.max(*r)));

    // (e) The raw insert again, beside a busy loop holding the cores the
    // worker and the broker used during (c).
    let beside_cores = (worker.cpu_s + cpu_of(&worker.services_cpu_s, "broker").unwrap_or(0.0)) / worker.seconds;
    agentmeter_schema::migrations::migrate(&server, &db_beside).await?;
    wait_for_idle_clickhouse(&services, Duration::from_secs(60)).await;
    eprintln!("ingest: (e) raw insert beside a busy loop of {beside_cores:.2} cores");
    let beside = {
        let _busy = busy::BusyLoop::start(beside_cores);
        raw_insert(&ch_beside.client(), o.events, settings(o.seed, o.backfill_hours), o.batch_rows, &services).await?
    };
    let beside_rate = o.events as f64 / beside.seconds;
    eprintln!("ingest: raw insert beside the busy loop {beside_rate:.0} events/s");
    let otlp = if o.otlp_traces > 0 { Some(run_otlp(common, &o, &run_id, timeout).await?) } else { None };

    // Exactness while we are here: in every round, raw tables and rollups hold every event once.
    let expected = (produced.tool_calls, produced.executions, produced.tool_calls, produced.executions);
    let exact = median.exact;
    let exact_ok = rounds.iter().all(|r| r.exact == expected);
    let rss_mib = worker.peak_rss_kib as f64 / 1024.0;
    let per_100k = |amount: f64| amount / produced.events() as f64 * 100_000.0;
    let cpu_per_100k = per_100k(worker.cpu_s);
    let ch_per_100k = |split: &[(&'static str, f64)]| cpu_of(split, "clickhouse").map(per_100k);
    let engine_per_100k = |c: &Counters, name: &str| per_100k(c.get(name) as f64);
    let engine_json = |c: &Counters| {
        let mut m: serde_json::Map<String, serde_json::Value> =
            engine_events::INGEST.iter().map(|(name, _)| (name.to_string(), json!(round(engine_per_100k(c, name), 1)))).collect();
        m.insert("planning_ms".into(), json!(round(per_100k(c.planning_ms()), 1)));
        serde_json::Value::Object(m)
    };
    let met_throughput = ratio >= 0.6;
    let sustained_ratio = worker.sustained_events_per_s.map(|r| r / ceiling);
    let met_memory = rss_mib < 200.0;

    report::table(&[
        vec!["measure".into(), "events/s".into(), "seconds".into(), "note".into()],
        vec![
            "(a) raw consume".into(),
            format!("{consume_rate:.0}"),
            format!("{:.2}", consumed.seconds),
            format!("{} MiB payload", consumed.bytes / (1 << 20)),
        ],
        vec![
            "(b) raw insert".into(),
            format!("{insert_rate:.0}"),
            format!("{:.2}", insert.seconds),
            format!("{} inserts of <= {} rows", insert.inserts, o.batch_rows),
        ],
        vec!["ceiling min(a,b)".into(), format!("{ceiling:.0}"), "".into(), limited_by.into()],
        vec![
            "(c) agentmeter-ingest".into(),
            format!("{ingest_rate:.0}"),
            format!("{:.2}", worker.seconds),
            format!(
                "{:.1} CPU s / 100k events; {:.0} inserts of {:.0} rows on average",
                cpu_per_100k,
                worker.inserts,
                worker.rows_inserted / worker.inserts.max(1.0)
            ),
        ],
        vec![
            "(e) raw insert, busy loop".into(),
            format!("{beside_rate:.0}"),
            format!("{:.2}", beside.seconds),
            format!(
                "beside a busy loop of {beside_cores:.2} cores (the worker's and the broker's in (c)): (c) is {:.1} % of it",
                ingest_rate / beside_rate * 100.0
            ),
        ],
        vec![
            "(c) its 10-90 % span".into(),
            worker.sustained_events_per_s.map_or("-".into(), |r| format!("{r:.0}")),
            "".into(),
            sustained_ratio
                .map_or("too few polls".into(), |r| format!("{:.1} % of the ceiling (reported, not the target's figure)", r * 100.0)),
        ],
    ]);
    println!();
    let mut per_round = vec![vec![
        "round".into(),
        "(b) events/s".into(),
        "(c) events/s".into(),
        "(c) / ceiling".into(),
        "10-90 % span".into(),
        "CPU s / 100k: worker, ClickHouse (b) / (c)".into(),
    ]];
    for (i, r) in rounds.iter().enumerate() {
        per_round.push(vec![
            format!("{}{}", i + 1, if std::ptr::eq(r, median) { " (median)" } else { "" }),
            format!("{:.0}", r.insert_rate),
            format!("{:.0}", r.ingest_rate),
            format!("{:.1} %", r.ratio * 100.0),
            r.worker.sustained_events_per_s.map_or("-".into(), |v| format!("{:.1} %", v / r.ceiling * 100.0)),
            format!(
                "{:.2}, {} / {}",
                per_100k(r.worker.cpu_s),
                ch_per_100k(&r.insert.services_cpu_s).map_or("-".into(), |v| format!("{v:.2}")),
                ch_per_100k(&r.worker.services_cpu_s).map_or("-".into(), |v| format!("{v:.2}")),
            ),
        ]);
    }
    report::table(&per_round);
    if let Some(r) = &otlp {
        println!();
        report::table(&[
            vec!["measure".into(), "spans/s".into(), "rows/s".into(), "seconds".into(), "note".into()],
            vec![
                "(d) agentmeter-ingest, OTLP".into(),
                format!("{:.0}", r.spans_per_s),
                format!("{:.0}", r.rows_per_s),
                format!("{:.2}", r.seconds),
                format!(
                    "{} traces in {} messages, {:.1} CPU s / 100k spans, peak RSS {:.1} MB; rows/s = {:.2} x JSON (c) {ingest_rate:.0} events/s",
                    r.traces,
                    r.messages,
                    r.cpu_s / (r.traces * otlp::SPANS_PER_TRACE) as f64 * 100_000.0,
                    r.peak_rss_mib,
                    r.rows_per_s / ingest_rate
                ),
            ],
        ]);
    }
    println!();
    let mut split = vec![vec!["CPU during (c)".into(), "CPU s".into(), "cores".into()]];
    split.push(vec!["agentmeter-ingest".into(), format!("{:.2}", worker.cpu_s), format!("{:.2}", worker.cpu_s / worker.seconds)]);
    for (name, cpu_s) in &worker.services_cpu_s {
        split.push(vec![(*name).into(), format!("{cpu_s:.2}"), format!("{:.2}", cpu_s / worker.seconds)]);
    }
    report::table(&split);
    if let (Some(ceiling_ch), Some(worker_ch)) = (ch_per_100k(&insert.services_cpu_s), ch_per_100k(&worker.services_cpu_s)) {
        println!("ClickHouse front CPU s per 100k events: {ceiling_ch:.2} for (b) raw insert, {worker_ch:.2} for (c) agentmeter-ingest");
    }
    println!();
    let (engine_b, engine_c) = (&median.engine_insert, &worker.engine);
    let mut engine_table =
        vec![vec!["ClickHouse per 100k events (system.events)".into(), "(b) raw insert".into(), "(c) agentmeter-ingest".into()]];
    for (name, what) in engine_events::INGEST {
        engine_table.push(vec![
            what.into(),
            format!("{:.1}", engine_per_100k(engine_b, name)),
            format!("{:.1}", engine_per_100k(engine_c, name)),
        ]);
    }
    engine_table.push(vec![
        "ms spent planning statements".into(),
        format!("{:.1}", per_100k(engine_b.planning_ms())),
        format!("{:.1}", per_100k(engine_c.planning_ms())),
    ]);
    report::table(&engine_table);
    println!();
    report::table(&[
        vec!["target".into(), "measured".into(), "goal".into(), "met".into()],
        vec![
            "throughput c / ceiling".into(),
            format!("{:.1} % (median of {}; {:.1}-{:.1} %)", ratio * 100.0, rounds.len(), ratio_min * 100.0, ratio_max * 100.0),
            ">= 60 %".into(),
            report::met(met_throughput),
        ],
        vec!["worker peak RSS".into(), format!("{rss_mib:.1} MB"), "< 200 MB".into(), report::met(met_memory)],
        vec!["exact counts (raw + rollups)".into(), format!("{exact:?}"), "= produced".into(), report::met(exact_ok)],
    ]);

    let doc = json!({
        "benchmark": "ingest",
        "what": "Kafka -> rows visible in ClickHouse: agentmeter-ingest (release) vs min(raw consume, raw insert) of the same run",
        "started_at": chrono::Utc::now().to_rfc3339(),
        "events": {
            "total": produced.events(), "tool_calls": produced.tool_calls, "agent_executions": produced.executions,
            "payload_bytes": produced.bytes, "partitions_per_topic": o.partitions,
        },
        "figures": {
            "raw_consume_events_per_s": round(consume_rate, 0),
            "raw_consume_seconds": round(consumed.seconds, 3),
            "raw_consume_group_join_seconds": round(consumed.join_seconds, 3),
            "raw_insert_events_per_s": round(insert_rate, 0),
            "raw_insert_seconds": round(insert.seconds, 3),
            "raw_insert_batches": insert.inserts,
            "raw_insert_beside_busy_loop_events_per_s": round(beside_rate, 0),
            "raw_insert_beside_busy_loop_cores": round(beside_cores, 2),
            "raw_insert_beside_busy_loop_what": "(b) again, into a third database, while a busy loop takes the cores the worker and the broker used during (c): the ceiling when it shares the machine as the worker's phase does (reported; the ratio keeps the ceiling with the machine to itself)",
            "ingest_vs_raw_insert_beside_busy_loop": round(ingest_rate / beside_rate, 4),
            "clickhouse_cpu_seconds_during_raw_insert_beside_busy_loop": cpu_of(&beside.services_cpu_s, "clickhouse").map(|s| round(s, 2)),
            "ingest_events_per_s": round(ingest_rate, 0),
            "ingest_seconds_first_consumed_to_last_visible": round(worker.seconds, 3),
            "ingest_sustained_events_per_s": worker.sustained_events_per_s.map(|r| round(r, 0)),
            "ingest_sustained_what": "events acknowledged per second between the worker's counters passing 10 % and 90 % of the events (without the first batch's parse and the last batch's flush-interval wait); reported next to the ratio, which stays first consumed -> last visible",
            "ingest_group_join_seconds": round(worker.join_seconds, 3),
            "clickhouse_idle_wait_seconds_before_worker": round(settled_s, 1),
            "worker_peak_rss_mib": round(rss_mib, 1),
            "worker_rss_at_end_mib": round(worker.rss_end_kib as f64 / 1024.0, 1),
            "worker_cpu_seconds": round(worker.cpu_s, 2),
            "worker_cpu_seconds_per_100k_events": round(cpu_per_100k, 3),
            "worker_inserts": worker.inserts,
            "worker_rows_per_insert": round(worker.rows_inserted / worker.inserts.max(1.0), 0),
            "cpu_seconds_during_ingest": worker.services_cpu_s.iter().map(|(n, s)| (n.to_string(), json!(round(*s, 2))))
                .chain([("worker".to_string(), json!(round(worker.cpu_s, 2)))]).collect::<serde_json::Map<_, _>>(),
            "cpu_seconds_during_raw_insert": insert.services_cpu_s.iter().map(|(n, s)| (n.to_string(), json!(round(*s, 2)))).collect::<serde_json::Map<_, _>>(),
            // The ClickHouse front's work per event: what the worker asks of it against what the ceiling's inserts alone cost.
            "clickhouse_cpu_seconds_per_100k_events": {
                "raw_insert": ch_per_100k(&insert.services_cpu_s).map(|v| round(v, 3)),
                "ingest": ch_per_100k(&worker.services_cpu_s).map(|v| round(v, 3)),
            },
            "loadavg_before_ingest": loadavg_before_worker,
            "preload_events_per_s": round(produced.events() as f64 / produced.seconds, 0),
            "counts_raw_and_rollup": {"tool_calls": exact.0, "agent_executions": exact.1, "tool_calls_1m_sum_calls": exact.2, "agent_executions_1m_sum": exact.3},
        },
        "otlp": otlp.as_ref().map(|r| json!({
            "what": "the same worker on OTLP protobuf messages (agent traces: 5 spans, 4 rows each), first consumed -> last row visible",
            "traces": r.traces, "messages": r.messages, "spans": r.traces * otlp::SPANS_PER_TRACE, "rows": r.traces * otlp::ROWS_PER_TRACE,
            "payload_bytes": r.bytes,
            "spans_per_s": round(r.spans_per_s, 0), "rows_per_s": round(r.rows_per_s, 0), "seconds": round(r.seconds, 3),
            "rows_per_s_vs_json_events_per_s": round(r.rows_per_s / ingest_rate, 3),
            "worker_peak_rss_mib": round(r.peak_rss_mib, 1), "exact_rows": r.exact,
            "worker_cpu_seconds": round(r.cpu_s, 2),
            "worker_cpu_seconds_per_100k_spans": round(r.cpu_s / (r.traces * otlp::SPANS_PER_TRACE) as f64 * 100_000.0, 3),
            "rows_per_s_vs_json_ceiling": round(r.rows_per_s / ceiling, 3),
        })),
        "ceiling": {"events_per_s": round(ceiling, 0), "limited_by": limited_by},
        "ratio": round(ratio, 4),
        "ratio_what": "the median round's (c) / ceiling (the lower middle for an even count); each round is (b) raw insert then (c) the worker, into fresh databases, on the same pre-loaded topics",
        "ratio_min": round(ratio_min, 4),
        "ratio_max": round(ratio_max, 4),
        "rounds": rounds.iter().map(|r| json!({
            "raw_insert_events_per_s": round(r.insert_rate, 0),
            "ingest_events_per_s": round(r.ingest_rate, 0),
            "ratio": round(r.ratio, 4),
            "ratio_sustained": r.worker.sustained_events_per_s.map(|v| round(v / r.ceiling, 4)),
            "worker_cpu_seconds_per_100k_events": round(per_100k(r.worker.cpu_s), 3),
            "clickhouse_cpu_seconds_per_100k_events": {
                "raw_insert": ch_per_100k(&r.insert.services_cpu_s).map(|v| round(v, 3)),
                "ingest": ch_per_100k(&r.worker.services_cpu_s).map(|v| round(v, 3)),
            },
            "worker_peak_rss_mib": round(r.worker.peak_rss_kib as f64 / 1024.0, 1),
            "exact_counts": r.exact == expected,
            "clickhouse_events_per_100k_events": {
                "raw_insert": engine_json(&r.engine_insert),
                "ingest": engine_json(&r.worker.engine),
            },
        })).collect::<Vec<_>>(),
        "ratio_sustained": sustained_ratio.map(|r| round(r, 4)),
        "target": {"ratio_min": 0.6, "worker_peak_rss_mib_max": 200},
        "met": {"throughput": met_throughput, "memory": met_memory, "exact_counts": exact_ok, "all": met_throughput && met_memory && exact_ok},
        "settings": {"rounds": o.rounds, "batch_rows": o.batch_rows, "fetch_queue_kib": o.fetch_queue_kib, "seed": o.seed, "occurred_at_backfill_hours": o.backfill_hours},
        "versions": versions,
        "machine": machine,
    });
    report::write(&common.results_dir, &o.result_name, &doc)?;
    if !common.keep {
        for d in &databases {
            server.query(&format!("DROP DATABASE IF EXISTS `{d}`")).execute().await?;
        }
        topics.delete(&common.kafka_brokers).await?;
    }
    Ok(())
}

/// The OTLP phase's figures.
struct OtlpRun {
    traces: u64,
    messages: u64,
    bytes: u64,
    seconds: f64,
    spans_per_s: f64,
    rows_per_s: f64,
    peak_rss_mib: f64,
    cpu_s: f64,
    exact: bool,
}

/// (d): pre-loads agent traces as OTLP messages into a fresh topic and
/// times a worker that reads only that topic into a fresh database.
async fn run_otlp(common: &Common, o: &Opts, run_id: &str, timeout: Duration) -> anyhow::Result<OtlpRun> {
    let db = format!("agentmeter_bench_ingest_{run_id}_otlp");
    let ch = ClickHouseArgs::new(&common.clickhouse_url, &db);
    let server = ch.server_client();
    agentmeter_schema::migrations::migrate(&server, &db).await?;
    let topics = Topics::fresh(&format!("{run_id}-otlp"));
    topics.create(&common.kafka_brokers, o.partitions).await?;
    let otlp_topic = format!("bench.{run_id}.otlp-spans");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &common.kafka_brokers).create()?;
    let new = rdkafka::admin::NewTopic::new(&otlp_topic, o.partitions, rdkafka::admin::TopicReplication::Fixed(1));
    for r in admin.create_topics(&[new], &rdkafka::admin::AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e:?}"))?;
    }
    eprintln!("ingest: (d) pre-loading {} OTLP agent traces into {otlp_topic}", o.otlp_traces);
    let (brokers, topic, n, per, seed) =
        (common.kafka_brokers.clone(), otlp_topic.clone(), o.otlp_traces, o.otlp_traces_per_message, o.seed);
    let produced = tokio::task::spawn_blocking(move || otlp::preload(&brokers, &topic, n, per, seed)).await??;
    eprintln!("ingest: produced {} OTLP messages in {:.1} s", produced.messages, produced.seconds);
    let rows = produced.traces * otlp::ROWS_PER_TRACE;
    let worker = run_worker(common, &ch, &topics, Some(&otlp_topic), o, rows, timeout, &[]).await?;
    let exact = exact_counts(&ch.client()).await?;
    let calls = produced.traces * 3;
    let executions = produced.traces;
    if !common.keep {
        server.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute().await?;
        topics.delete(&common.kafka_brokers).await?;
        for r in admin.delete_topics(&[&otlp_topic], &rdkafka::admin::AdminOptions::new()).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("deleting topic {t}: {e:?}"))?;
        }
    }
    Ok(OtlpRun {
        traces: produced.traces,
        messages: produced.messages,
        bytes: produced.bytes,
        seconds: worker.seconds,
        spans_per_s: (produced.traces * otlp::SPANS_PER_TRACE) as f64 / worker.seconds,
        rows_per_s: rows as f64 / worker.seconds,
        peak_rss_mib: worker.peak_rss_kib as f64 / 1024.0,
        cpu_s: worker.cpu_s,
        exact: exact == (calls, executions, calls, executions),
    })
}

/// The index of the median of `values` (not empty); the lower middle for
/// an even count, so two rounds report the worse one.
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    order[(order.len() - 1) / 2]
}

/// One round: (b) the raw insert into a fresh ceiling database, then (c)
/// the worker into another fresh database, from the same topics.
struct Round {
    db: String,
    db_ceiling: String,
    insert: Inserted,
    insert_rate: f64,
    settled_s: f64,
    loadavg_before_worker: String,
    worker: WorkerRun,
    ingest_rate: f64,
    ceiling: f64,
    limited_by: &'static str,
    ratio: f64,
    /// Raw and rollup counts of the worker's database ([`exact_counts`]).
    exact: (u64, u64, u64, u64),
    /// ClickHouse's counters' gains during (b) (those of (c) are the worker's).
    engine_insert: Counters,
}

#[allow(clippy::too_many_arguments)]
async fn run_round(
    common: &Common,
    o: &Opts,
    db: &str,
    topics: &Topics,
    produced: &kafka::Produced,
    consume_rate: f64,
    services: &[Service],
    timeout: Duration,
) -> anyhow::Result<Round> {
    let db_ceiling = format!("{db}_ceiling");
    let ch = ClickHouseArgs::new(&common.clickhouse_url, db);
    let ch_ceiling = ClickHouseArgs::new(&common.clickhouse_url, &db_ceiling);
    let server = ch.server_client();
    agentmeter_schema::migrations::migrate(&server, db).await?;
    agentmeter_schema::migrations::migrate(&server, &db_ceiling).await?;
    wait_for_idle_clickhouse(services, Duration::from_secs(60)).await;

    eprintln!("ingest: (b) raw insert");
    let engine_before = Counters::read(&server).await?;
    let insert = raw_insert(&ch_ceiling.client(), o.events, settings(o.seed, o.backfill_hours), o.batch_rows, services).await?;
    let engine_insert = Counters::read(&server).await?.since(&engine_before);
    let insert_rate = o.events as f64 / insert.seconds;
    eprintln!("ingest: raw insert {:.0} events/s", insert_rate);

    // The ceiling's INSERTs leave background merges behind (its phase
    // ends when the last INSERT returns); let them finish before the
    // worker's phase, so that each phase has the machine without the
    // other's leftovers.
    let settled_s = wait_for_idle_clickhouse(services, Duration::from_secs(60)).await;
    eprintln!("ingest: ClickHouse idle again {settled_s:.1} s after the raw insert");

    eprintln!("ingest: (c) agentmeter-ingest");
    let loadavg_before_worker = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned();
    let worker = run_worker(common, &ch, topics, None, o, produced.events(), timeout, services).await?;
    let ingest_rate = produced.events() as f64 / worker.seconds;
    let (ceiling, limited_by) = if consume_rate <= insert_rate { (consume_rate, "raw consume") } else { (insert_rate, "raw insert") };
    let exact = exact_counts(&ch.client()).await?;
    Ok(Round {
        db: db.to_owned(),
        db_ceiling,
        insert,
        insert_rate,
        settled_s,
        loadavg_before_worker,
        worker,
        ingest_rate,
        ceiling,
        limited_by,
        ratio: ingest_rate / ceiling,
        exact,
        engine_insert,
    })
}

struct Inserted {
    seconds: f64,
    inserts: u64,
    /// CPU seconds of each stack service while the inserts ran.
    services_cpu_s: Vec<(&'static str, f64)>,
}

/// The CPU seconds of the service `name` in `split`, if it was measured.
fn cpu_of(split: &[(&'static str, f64)], name: &str) -> Option<f64> {
    split.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Rows of up to this many events are materialised at a time (bounded memory).
const CHUNK_EVENTS: u64 = 1_000_000;

/// Generates the same traffic as the pre-load, parses it into rows (not
/// timed) and inserts the rows chunk by chunk (timed).
async fn raw_insert(client: &Client, events: u64, settings: Settings, batch_rows: usize, services: &[Service]) -> anyhow::Result<Inserted> {
    let client = client.clone().with_validation(false);
    let mut generator = Generator::new(settings);
    let mut done = 0u64;
    let mut out = Inserted { seconds: 0.0, inserts: 0, services_cpu_s: services.iter().map(|s| (s.name, 0.0)).collect() };
    while done < events {
        let n = CHUNK_EVENTS.min(events - done);
        let (mut calls, mut execs) = (Vec::new(), Vec::new());
        let mut now = chrono::Utc::now();
        for i in 0..n {
            if i % 1000 == 0 {
                now = chrono::Utc::now();
            }
            let m = generator.next_message(now);
            match m.kind {
                Kind::ToolCall => calls.push(ToolCallRow::from(&agentmeter_schema::parse_tool_call(&m.payload, now)?)),
                Kind::AgentExecution => execs.push(AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(&m.payload, now)?)),
            }
        }
        done += n;
        let started = Instant::now();
        let cpu_before = cpu_seconds(services);
        let (a, b) = tokio::try_join!(
            insert_all(&client, "tool_calls", &calls, batch_rows),
            insert_all(&client, "agent_executions", &execs, batch_rows)
        )?;
        out.seconds += started.elapsed().as_secs_f64();
        for ((_, total), (before, after)) in out.services_cpu_s.iter_mut().zip(cpu_before.iter().zip(cpu_seconds(services))) {
            *total += after - before;
        }
        out.inserts += a + b;
    }
    Ok(out)
}

/// Sequential INSERTs of `batch_rows` rows, as one worker table writer does.
async fn insert_all<R>(client: &Client, table: &str, rows: &[R], batch_rows: usize) -> anyhow::Result<u64>
where
    R: Serialize + Send + Sync + for<'a> Row<Value<'a> = R>,
{
    let mut n = 0;
    for chunk in rows.chunks(batch_rows) {
        let mut insert = client.insert::<R>(table).await?.with_option("max_insert_block_size", "1000001");
        for r in chunk {
            insert.write(r).await?;
        }
        insert.end().await?;
        n += 1;
    }
    Ok(n)
}

struct WorkerRun {
    seconds: f64,
    /// Events acknowledged per second between the polls where the worker's
    /// counters first passed 10 % and 90 % of the events: the rate of the
    /// stream's middle, without the first batch's parse (nothing is
    /// inserted before it) and the last batch's wait for its flush
    /// interval, which a continuous stream does not pay. `None` if fewer
    /// than two distinct polls fell in that span.
    sustained_events_per_s: Option<f64>,
    join_seconds: f64,
    peak_rss_kib: u64,
    rss_end_kib: u64,
    cpu_s: f64,
    /// CPU seconds of each stack service over the same interval.
    services_cpu_s: Vec<(&'static str, f64)>,
    /// The worker's INSERTs and the rows they carried (its
    /// `agentmeter_ingest_batch_rows` histogram), to set against the
    /// ceiling's inserts: each INSERT runs every view over its block.
    inserts: f64,
    rows_inserted: f64,
    /// ClickHouse's counters' gains over the same interval.
    engine: Counters,
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    let mut total = 0.0;
    let mut seen = false;
    for line in text.lines().filter(|l| l.starts_with(name)) {
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            total += v;
            seen = true;
        }
    }
    seen.then_some(total)
}

async fn visible(client: &Client) -> anyhow::Result<u64> {
    Ok(client
        .query("SELECT toUInt64(sum(c)) FROM (SELECT count() AS c FROM tool_calls UNION ALL SELECT count() AS c FROM agent_executions)")
        .fetch_one::<u64>()
        .await?)
}

/// Waits (up to `limit`) until the stack's ClickHouse front uses less than
/// a tenth of a core over two half-second samples in a row (background
/// merges done); returns the seconds waited. Without the front's pid it
/// returns at once.
async fn wait_for_idle_clickhouse(services: &[Service], limit: Duration) -> f64 {
    let started = Instant::now();
    let Some(pid) = services.iter().find(|s| s.name == "clickhouse").map(|s| s.pid) else { return 0.0 };
    let cpu = || process::usage(pid).map(|u| u.cpu_s).unwrap_or(0.0);
    let (mut last, mut quiet) = (cpu(), 0);
    while started.elapsed() < limit && quiet < 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu();
        quiet = if now - last < 0.05 { quiet + 1 } else { 0 };
        last = now;
    }
    started.elapsed().as_secs_f64()
}

/// The rate between the first poll at or past 10 % of `expected` and the
/// first at or past 90 % (see [`WorkerRun::sustained_events_per_s`]).
fn sustained_rate(acks: &[(f64, f64)], expected: f64) -> Option<f64> {
    let at = |share: f64| acks.iter().find(|(_, n)| *n >= share * expected).copied();
    let ((t0, n0), (t1, n1)) = (at(0.1)?, at(0.9)?);
    (t1 > t0 && n1 > n0).then(|| (n1 - n0) / (t1 - t0))
}

/// Starts the worker on the pre-loaded topics and times it, with the CPU
/// of `services` over the same interval.
#[allow(clippy::too_many_arguments)]
async fn run_worker(
    common: &Common,
    ch: &ClickHouseArgs,
    topics: &Topics,
    otlp_topic: Option<&str>,
    o: &Opts,
    expected: u64,
    timeout: Duration,
    services: &[Service],
) -> anyhow::Result<WorkerRun> {
    let port = process::free_port()?;
    let mut cmd = Command::new(format!("{}/agentmeter-ingest", common.bin_dir));
    cmd.env("AGENTMETER_KAFKA_BROKERS", &common.kafka_brokers)
        .env("AGENTMETER_KAFKA_GROUP", format!("bench-ingest-{}", uuid::Uuid::new_v4().simple()))
        .env("AGENTMETER_TOOL_CALLS_TOPIC", &topics.tool_calls)
        .env("AGENTMETER_AGENT_EXECUTIONS_TOPIC", &topics.executions)
        .env("AGENTMETER_DEAD_LETTER_TOPIC", &topics.dead_letter)
        // Empty: the JSON phase reads no OTLP topic.
        .env("AGENTMETER_OTLP_SPANS_TOPIC", otlp_topic.unwrap_or_default())
        .env("AGENTMETER_CLICKHOUSE_URL", &ch.url)
        .env("AGENTMETER_CLICKHOUSE_DATABASE", &ch.database)
        .env("AGENTMETER_KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("AGENTMETER_INGEST_MAX_BATCH_ROWS", o.batch_rows.to_string())
        .env("AGENTMETER_KAFKA_FETCH_QUEUE_KIB", o.fetch_queue_kib.to_string())
        .env("AGENTMETER_INGEST_METRICS_ADDR", format!("127.0.0.1:{port}"))
        // BENCH_WORKER_RUST_LOG=agentmeter_ingest=debug logs every batch's timing.
        .env("RUST_LOG", std::env::var("BENCH_WORKER_RUST_LOG").unwrap_or_else(|_| "warn".into()));
    let log = std::env::temp_dir().join("agentmeter-bench-ingest-worker.log");
    let mut worker = Proc::spawn(cmd, "agentmeter-ingest", &log.to_string_lossy())?;
    let started = Instant::now();
    let http = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let client = ch.client();

    // First message consumed (the worker's counter), polled finely.
    let (first, cpu_at_first, services_at_first, engine_at_first) = loop {
        worker.ensure_running()?;
        anyhow::ensure!(started.elapsed() < timeout, "the worker consumed nothing before the timeout");
        if metric(&http, &metrics_url, "agentmeter_ingest_events_consumed_total").await.unwrap_or(0.0) > 0.0 {
            break (Instant::now(), process::usage(worker.pid())?.cpu_s, cpu_seconds(services), Counters::read(&client).await?);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Last row visible. ClickHouse is asked (`count()`) once the worker's
    // own counters say every row was acknowledged, and otherwise only once a
    // second: a `count()` every 50 ms cost the ClickHouse front about as
    // much CPU as the look-ups, charged to the worker it measures (the
    // ceiling's inserts are not polled at all).
    let mut peak_rss = 0;
    let mut polls = 0u64;
    // (seconds since the first message, events acknowledged) at every poll.
    let mut acks: Vec<(f64, f64)> = Vec::new();
    let last = loop {
        worker.ensure_running()?;
        let u = process::usage(worker.pid())?;
        peak_rss = peak_rss.max(u.rss_kib);
        let acknowledged = metric(&http, &metrics_url, "agentmeter_ingest_events_inserted_total").await.unwrap_or(0.0)
            + metric(&http, &metrics_url, "agentmeter_ingest_events_deduplicated_total").await.unwrap_or(0.0);
        acks.push((first.elapsed().as_secs_f64(), acknowledged));
        if acknowledged >= expected as f64 || polls.is_multiple_of(20) {
            let n = visible(&client).await?;
            if n >= expected {
                break Instant::now();
            }
            anyhow::ensure!(started.elapsed() < timeout, "only {n} of {expected} rows visible before the timeout (log: {})", log.display());
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let u = process::usage(worker.pid())?;
    let services_at_last = cpu_seconds(services);
    let engine = Counters::read(&client).await?.since(&engine_at_first);
    let inserts = metric(&http, &metrics_url, "agentmeter_ingest_batch_rows_count").await.unwrap_or(0.0);
    let rows_inserted = metric(&http, &metrics_url, "agentmeter_ingest_batch_rows_sum").await.unwrap_or(0.0);
    worker.stop(Duration::from_secs(20));
    Ok(WorkerRun {
        seconds: (last - first).as_secs_f64(),
        sustained_events_per_s: sustained_rate(&acks, expected as f64),
        join_seconds: (first - started).as_secs_f64(),
        peak_rss_kib: u.hwm_kib.max(peak_rss),
        rss_end_kib: u.rss_kib,
        cpu_s: u.cpu_s - cpu_at_first,
        services_cpu_s: services.iter().zip(services_at_first.iter().zip(&services_at_last)).map(|(s, (a, b))| (s.name, b - a)).collect(),
        inserts,
        rows_inserted,
        engine,
    })
}

async fn exact_counts(client: &Client) -> anyhow::Result<(u64, u64, u64, u64)> {
    Ok(client
        .query(
            "SELECT toUInt64(assumeNotNull((SELECT count() FROM tool_calls))), toUInt64(assumeNotNull((SELECT count() FROM agent_executions))),
                    toUInt64(assumeNotNull((SELECT sum(calls) FROM tool_calls_1m))), toUInt64(assumeNotNull((SELECT sum(executions) FROM agent_executions_1m)))",
        )
        .fetch_one::<(u64, u64, u64, u64)>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::{median_index, sustained_rate};

    #[test]
    fn the_median_round_is_the_middle_one_or_the_lower_middle() {
        assert_eq!(median_index(&[0.52]), 0);
        assert_eq!(median_index(&[0.66, 0.48, 0.57]), 2);
        assert_eq!(median_index(&[0.48, 0.57, 0.66]), 1);
        assert_eq!(median_index(&[0.60, 0.55]), 1);
        assert_eq!(median_index(&[0.55, 0.60, 0.50, 0.70]), 0);
    }

    #[test]
    fn sustained_rate_spans_the_polls_past_ten_and_ninety_percent() {
        // 1,000 events: acknowledged in steps; 10 % first reached at 1 s
        // (150 acknowledged), 90 % at 3 s (950).
        let acks = [(0.5, 0.0), (1.0, 150.0), (2.0, 500.0), (3.0, 950.0), (4.5, 1000.0)];
        assert_eq!(sustained_rate(&acks, 1000.0), Some(400.0));
        // One poll past both marks: no span to measure.
        assert_eq!(sustained_rate(&[(0.2, 0.0), (1.0, 1000.0)], 1000.0), None);
        assert_eq!(sustained_rate(&[], 1000.0), None);
    }
}
