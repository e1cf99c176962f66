//! `agentmeter-loadgen`: produces realistic tool-call and agent-execution
//! events (see `agentmeter_bench::Generator`) to the agentmeter topics at a
//! given rate, keyed by `event_id` (so duplicates share a partition), with a
//! progress line on stderr.

use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Settings, TENANT_A, TENANT_B};
use agentmeter_schema::config::{TOPIC_AGENT_EXECUTIONS, TOPIC_TOOL_CALLS};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// Produces realistic agentmeter events to Kafka.
#[derive(Debug, Parser)]
#[command(name = "agentmeter-loadgen", version, about = "Produces realistic agentmeter events (tool calls and agent executions) to Kafka")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "AGENTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Topic of tool-call events.
    #[arg(long, env = "AGENTMETER_TOOL_CALLS_TOPIC", default_value = TOPIC_TOOL_CALLS)]
    tool_calls_topic: String,
    /// Topic of agent-execution events.
    #[arg(long, env = "AGENTMETER_AGENT_EXECUTIONS_TOPIC", default_value = TOPIC_AGENT_EXECUTIONS)]
    agent_executions_topic: String,
    /// Messages per second (0: as fast as possible).
    #[arg(long, env = "AGENTMETER_LOADGEN_RATE", default_value_t = 1000)]
    rate: u64,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, env = "AGENTMETER_LOADGEN_DURATION_S", default_value_t = 0)]
    duration_s: u64,
    /// Stop after this many messages (0: no limit).
    #[arg(long, env = "AGENTMETER_LOADGEN_COUNT", default_value_t = 0)]
    count: u64,
    /// Fraction of messages that repeat an earlier one.
    #[arg(long, env = "AGENTMETER_LOADGEN_DUPLICATE_RATIO", default_value_t = 0.0)]
    duplicate_ratio: f64,
    /// Fraction of bad messages (every rejection kind in turn).
    #[arg(long, env = "AGENTMETER_LOADGEN_BAD_RATIO", default_value_t = 0.0)]
    bad_ratio: f64,
    /// Spread occurred_at over this many past hours (0: now).
    #[arg(long, env = "AGENTMETER_LOADGEN_BACKFILL_HOURS", default_value_t = 0.0)]
    backfill_hours: f64,
    /// Random seed.
    #[arg(long, env = "AGENTMETER_LOADGEN_SEED", default_value_t = 1)]
    seed: u64,
    /// API keys file whose tenants receive traffic (falls back to the demo tenants).
    #[arg(long, env = "AGENTMETER_API_KEYS", default_value = "dev/api-keys.toml")]
    api_keys: String,
}

/// Tenant ids of the keys file, or the two demo tenants.
fn tenants(path: &str) -> Vec<Uuid> {
    let mut out: Vec<Uuid> =
        std::fs::read_to_string(path).ok().and_then(|text| text.parse::<toml_lite::Doc>().ok()).map(|d| d.tenant_ids).unwrap_or_default();
    out.sort();
    out.dedup();
    if out.is_empty() {
        vec![TENANT_A, TENANT_B]
    } else {
        out
    }
}

/// Reads `tenant_id = "..."` lines; enough for the keys file without a TOML dependency.
mod toml_lite {
    use uuid::Uuid;
    pub struct Doc {
        pub tenant_ids: Vec<Uuid>,
    }
    impl std::str::FromStr for Doc {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let tenant_ids = s
                .lines()
                .filter_map(|l| l.trim().strip_prefix("tenant_id"))
                .filter_map(|rest| rest.split('"').nth(1))
                .filter_map(|v| v.parse().ok())
                .collect();
            Ok(Doc { tenant_ids })
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("linger.ms", "10")
        .set("message.timeout.ms", "60000")
        .create()?;
    let mut generator = Generator::new(Settings {
        seed: args.seed,
        tenants: tenants(&args.api_keys),
        duplicate_ratio: args.duplicate_ratio,
        bad_ratio: args.bad_ratio,
        backfill_hours: args.backfill_hours,
    });
    let started = Instant::now();
    let deadline = (args.duration_s > 0).then(|| started + Duration::from_secs(args.duration_s));
    let mut sent: u64 = 0;
    let mut failed: u64 = 0;
    let mut last_report = Instant::now();
    let chunk = 200u64;
    let mut inflight = futures_lite::Pending::default();
    loop {
        if (args.count > 0 && sent >= args.count) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = if args.count > 0 { chunk.min(args.count - sent) } else { chunk };
        let now = chrono::Utc::now();
        for _ in 0..n {
            let m = generator.next_message(now);
            let topic = match m.kind {
                Kind::ToolCall => args.tool_calls_topic.clone(),
                Kind::AgentExecution => args.agent_executions_topic.clone(),
            };
            let producer = producer.clone();
            inflight.push(tokio::spawn(async move {
                let record = FutureRecord::to(&topic).key(&m.key).payload(&m.payload);
                producer.send(record, Duration::from_secs(60)).await.is_ok()
            }));
        }
        sent += n;
        failed += inflight.settle(20_000).await;
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!("\r{sent} messages in {secs:.0} s ({:.0}/s), {failed} failed   ", sent as f64 / secs);
        }
    }
    failed += inflight.settle(0).await;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("\r{sent} messages in {secs:.1} s ({:.0}/s), {failed} failed   ", sent as f64 / secs);
    anyhow::ensure!(failed == 0, "{failed} messages were not delivered");
    Ok(())
}

/// Bounded set of pending deliveries.
mod futures_lite {
    use tokio::task::JoinHandle;
    #[derive(Default)]
    pub struct Pending(std::collections::VecDeque<JoinHandle<bool>>);
    impl Pending {
        pub fn push(&mut self, h: JoinHandle<bool>) {
            self.0.push_back(h);
        }
        /// Awaits deliveries until at most `keep` remain; returns the failures.
        pub async fn settle(&mut self, keep: usize) -> u64 {
            let mut failed = 0;
            while self.0.len() > keep {
                let Some(h) = self.0.pop_front() else { break };
                if !h.await.unwrap_or(false) {
                    failed += 1;
                }
            }
            failed
        }
    }
}
