//! `agentmeter-bench`: the benchmarks of DESIGN.md, each compared with a
//! ceiling measured in the same run on the same stack (see bench/README.md).
//!
//! Every benchmark prints a table and writes `bench/results/<name>.json`
//! ([`report`]) with its figures, the ceiling, the ratio, the target, whether
//! the target was met, event counts, versions and the machine. Each run uses
//! a fresh ClickHouse database and fresh Kafka topics, dropped at the end
//! unless `--keep` is given.

mod busy;
mod dashboard;
mod engine_events;
mod env;
mod freshness;
mod graphs;
mod ingest;
mod kafka;
mod otlp;
mod process;
mod querylogs;
mod report;

use clap::{Parser, Subcommand};

/// Where the stack and the other binaries are.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Kafka bootstrap servers.
    #[arg(long, env = "AGENTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    pub kafka_brokers: String,
    /// ClickHouse HTTP interface URL.
    #[arg(long, env = "AGENTMETER_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123", global = true)]
    pub clickhouse_url: String,
    /// Folder of the release binaries (`agentmeter-ingest`, `agentmeter-api`).
    #[arg(long, env = "AGENTMETER_BENCH_BIN_DIR", default_value = "target/release", global = true)]
    pub bin_dir: String,
    /// API keys file for `agentmeter-api` (read key `am_dev_tenant_a`).
    #[arg(long, env = "AGENTMETER_API_KEYS", default_value = "dev/api-keys.toml", global = true)]
    pub api_keys: String,
    /// Folder the JSON results are written to.
    #[arg(long, env = "AGENTMETER_BENCH_RESULTS_DIR", default_value = "bench/results", global = true)]
    pub results_dir: String,
    /// Keep the benchmark database (for inspection) instead of dropping it.
    #[arg(long, global = true)]
    pub keep: bool,
}

#[derive(Debug, Parser)]
#[command(name = "agentmeter-bench", version, about = "agentmeter benchmarks against same-run ceilings")]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Kafka -> ClickHouse throughput of agentmeter-ingest vs raw consume and raw insert (and the raw insert again beside a busy loop taking the cores the worker and the broker used).
    Ingest(ingest::Opts),
    /// Analytics graph latency from the rollups vs from raw events (and through the API).
    Graphs(graphs::Opts),
    /// Produce -> visible in the API at half the max ingest rate.
    Freshness(freshness::Opts),
    /// First page of a big project's query logs vs aggregating every query.
    Querylogs(querylogs::Opts),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.bench {
        Bench::Ingest(o) => ingest::run(&args.common, o).await,
        Bench::Graphs(o) => graphs::run(&args.common, o).await,
        Bench::Freshness(o) => freshness::run(&args.common, o).await,
        Bench::Querylogs(o) => querylogs::run(&args.common, o).await,
    }
}
