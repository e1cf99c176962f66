//! Child processes under measurement (`agentmeter-ingest`, `agentmeter-api`):
//! start, stop with SIGTERM, and read their memory and CPU from /proc.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process that is terminated when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str, log_path: &str) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log_path)?;
        cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Self { child, name: name.into() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited early ({status}); see its log", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Memory and CPU of a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Resident set now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set since start, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// User + system CPU seconds since start.
    pub cpu_s: f64,
}

/// Reads /proc/<pid>/status and /proc/<pid>/stat.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at `)`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(Usage { rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:"), cpu_s: ticks / clock_ticks() })
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
