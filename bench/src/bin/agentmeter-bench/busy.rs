//! A busy loop that keeps a given share of the CPU taken, for measuring the
//! raw-insert ceiling as it fares next to other work (the ingest
//! benchmark's phase (e)): on a small machine the worker and the broker
//! share the cores with ClickHouse, and what that sharing costs
//! ClickHouse is worth knowing apart from what the worker costs.
//!
//! Each thread spins for `duty x 10 ms`, then sleeps the rest of the 10 ms,
//! so `cores` = 0.6 is one thread busy 60 % of the time; 1.3 is one thread
//! always busy and one busy 30 % of the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_millis(10);

/// Running while it lives; dropping it stops and joins the threads.
pub struct BusyLoop {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Each thread's busy share of its period (every one 1.0 but the last).
fn duties(cores: f64) -> Vec<f64> {
    let cores = cores.max(0.0);
    let mut out = vec![1.0; cores.floor() as usize];
    let rest = cores - cores.floor();
    if rest > 0.005 {
        out.push(rest);
    }
    out
}

impl BusyLoop {
    pub fn start(cores: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = duties(cores)
            .into_iter()
            .map(|duty| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let busy = PERIOD.mul_f64(duty);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        while started.elapsed() < busy {
                            std::hint::spin_loop();
                        }
                        if let Some(rest) = PERIOD.checked_sub(started.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_split_into_whole_threads_and_one_partial() {
        assert_eq!(duties(0.6), vec![0.6]);
        assert_eq!(duties(2.0), vec![1.0, 1.0]);
        let d = duties(1.3);
        assert_eq!(d.len(), 2);
        assert!((d[1] - 0.3).abs() < 1e-9);
        assert!(duties(0.0).is_empty());
        assert!(duties(-1.0).is_empty());
    }
}
