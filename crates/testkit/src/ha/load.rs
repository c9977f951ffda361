//! Load for the HA scenarios: threads that repeat one client operation until
//! told to stop, and what they saw — operations attempted and failed, the
//! slowest one (the worst stall a client saw), when each succeeded, and the
//! keys of the writes that were acknowledged (checked against the databases
//! afterwards for loss and duplication).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

/// How many failure messages a tally keeps (the count goes on).
const KEEP_FAILURES: usize = 10;
/// How much of each failure message it keeps, on one line.
const MAX_FAILURE_TEXT: usize = 300;

/// What one kind of operation saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Operations started and finished.
    pub attempted: u64,
    /// Operations that failed (the client saw an error).
    pub failed: u64,
    /// The slowest operation, failed or not.
    pub worst: Duration,
    /// The first failures: when (since the load started) and what.
    pub failures: Vec<String>,
    /// When each success finished.
    pub ok_at: Vec<Instant>,
    /// When each failure finished.
    pub failed_at: Vec<Instant>,
    /// The keys of acknowledged writes.
    pub acked: Vec<String>,
}

impl Tally {
    /// Count one operation that started at `started` and ended with `result`
    /// (`Ok(Some(key))`: a write acknowledged under `key`).
    pub fn record(&mut self, started: Instant, origin: Instant, result: Result<Option<String>>) {
        let now = Instant::now();
        self.attempted += 1;
        self.worst = self.worst.max(now - started);
        match result {
            Ok(key) => {
                self.ok_at.push(now);
                self.acked.extend(key);
            }
            Err(e) => {
                self.failed += 1;
                self.failed_at.push(now);
                if self.failures.len() < KEEP_FAILURES {
                    let at = started.saturating_duration_since(origin).as_secs_f64();
                    let text = format!("{e:#}")
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    let text: String = text.chars().take(MAX_FAILURE_TEXT).collect();
                    self.failures.push(format!("at {at:.2} s: {text}"));
                }
            }
        }
    }

    /// Fold `other` into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.attempted += other.attempted;
        self.failed += other.failed;
        self.worst = self.worst.max(other.worst);
        for f in &other.failures {
            if self.failures.len() < KEEP_FAILURES {
                self.failures.push(f.clone());
            }
        }
        self.ok_at.extend(&other.ok_at);
        self.failed_at.extend(&other.failed_at);
        self.acked.extend(other.acked.iter().cloned());
    }

    /// The first success at or after `t`.
    pub fn first_ok_after(&self, t: Instant) -> Option<Instant> {
        self.ok_at.iter().copied().filter(|&ok| ok >= t).min()
    }

    /// The end of the first outage after `t`: the first success after the
    /// first failure at or after `t`; `t` itself when nothing failed since,
    /// once something succeeded; `None` while it has not recovered.
    pub fn recovered_after(&self, t: Instant) -> Option<Instant> {
        match self.failed_at.iter().copied().filter(|&f| f >= t).min() {
            Some(failed) => self.first_ok_after(failed),
            None => self.first_ok_after(t).map(|_| t),
        }
    }
}

/// Threads repeating operations; see the module documentation.
pub struct Load {
    stop: Arc<AtomicBool>,
    origin: Instant,
    threads: Vec<(String, JoinHandle<()>, Arc<Mutex<Tally>>)>,
}

impl Default for Load {
    fn default() -> Load {
        Load::new()
    }
}

impl Load {
    /// No threads yet.
    pub fn new() -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            origin: Instant::now(),
            threads: Vec::new(),
        }
    }

    /// Run `op` over and over on a thread of its own, `pause` apart, until
    /// [`Load::finish`]; its results go to the tally named `name`.
    pub fn spawn(
        &mut self,
        name: &str,
        pause: Duration,
        mut op: impl FnMut() -> Result<Option<String>> + Send + 'static,
    ) {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, origin, mine) = (self.stop.clone(), self.origin, tally.clone());
        let handle = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = op();
                if let Ok(mut t) = mine.lock() {
                    t.record(started, origin, result);
                }
                std::thread::sleep(pause);
            }
        });
        self.threads.push((name.to_owned(), handle, tally));
    }

    /// A copy of the tally named `name` so far (all its threads merged).
    pub fn peek(&self, name: &str) -> Tally {
        let mut out = Tally::default();
        for (n, _, t) in &self.threads {
            if n == name
                && let Ok(t) = t.lock()
            {
                out.merge(&t);
            }
        }
        out
    }

    /// Stop every thread (each finishes the operation it is in) and return
    /// the tallies by name, threads of one name merged.
    pub fn finish(mut self) -> Vec<(String, Tally)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out: Vec<(String, Tally)> = Vec::new();
        for (name, handle, tally) in std::mem::take(&mut self.threads) {
            let _ = handle.join();
            let tally = tally.lock().map(|t| t.clone()).unwrap_or_default();
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, t)) => t.merge(&tally),
                None => out.push((name, tally)),
            }
        }
        out
    }
}

impl Drop for Load {
    /// A scenario that fails halfway leaves no thread running.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, handle, _) in std::mem::take(&mut self.threads) {
            let _ = handle.join();
        }
    }
}
