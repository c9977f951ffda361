//! Debian's HAProxy running `deploy/haproxy.cfg` as shipped, on loopback.
//!
//! The shipped file holds addresses in two kinds of line only (its header says
//! so): each frontend's `bind` on the virtual address `10.0.0.10:PORT`, and the
//! `server` lines of the nodes `10.0.0.1x:PORT`. [`Haproxy::start`] rewrites
//! exactly those through an address map (shipped `host:port` to a loopback
//! one), drops the `server` lines of shipped nodes the map does not name (the
//! harness may run fewer nodes than the example lists), moves the statistics
//! page to a free port, sends its log to its standard output instead of
//! syslog, and leaves every other line — timeouts, checks,
//! retries, redispatch, backups — as it ships. It runs in the foreground
//! (`-db`) and is killed when dropped.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Debian's HAProxy binary.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// A running HAProxy (see the module documentation).
pub struct Haproxy {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The frontend addresses it binds, by the shipped address they replace.
    binds: Vec<String>,
}

impl Haproxy {
    /// Rewrite `shipped` (the text of `deploy/haproxy.cfg`) with `map`
    /// (shipped `host:port` → `127.0.0.1:port`) and start it.
    pub fn start(shipped: &str, map: &BTreeMap<String, String>) -> Result<Haproxy> {
        if !Path::new(HAPROXY).exists() {
            bail!("{HAPROXY} is missing: install Debian's haproxy (scripts/ha-validate does)");
        }
        let stats = format!("127.0.0.1:{}", crate::free_port()?);
        let config = rewrite(shipped, map, &stats)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config)?;
        let check = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .context("cannot run haproxy -c")?;
        if !check.status.success() {
            bail!(
                "haproxy -c refused the rewritten configuration: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let binds = config
            .lines()
            .filter_map(|l| l.trim().strip_prefix("bind "))
            .map(|b| b.split_whitespace().next().unwrap_or_default().to_owned())
            .collect();
        let mut haproxy = Haproxy {
            child: None,
            dir,
            binds,
        };
        haproxy.restart()?;
        Ok(haproxy)
    }

    /// Start it (again); returns once every frontend accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let dir = self.dir.path();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdin(Stdio::null())
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("haproxy.log"))?,
            )
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("cannot run haproxy")?;
        let child = self.child.insert(child);
        let started = Instant::now();
        while !self.binds.iter().all(|b| TcpStream::connect(b).is_ok()) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "haproxy exited with {status}: {}",
                    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("haproxy did not bind {:?} within 10 s", self.binds);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kill it and wait for it; nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it logged (one line per request, `option httplog`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// The configuration it runs.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shipped configuration with its addresses mapped (see the module
/// documentation) and the statistics page on `stats`.
fn rewrite(shipped: &str, map: &BTreeMap<String, String>, stats: &str) -> Result<String> {
    let mut out = String::with_capacity(shipped.len());
    let mut binds = 0;
    for line in shipped.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let line = match words.as_slice() {
            ["bind", "127.0.0.1:8404", ..] => line.replace("127.0.0.1:8404", stats),
            // Its log goes to its standard output ([`Haproxy::log`]), not syslog.
            ["log", "/dev/log", ..] => line.replace("/dev/log", "stdout format raw"),
            ["bind", addr, ..] => match map.get(*addr) {
                Some(to) => {
                    binds += 1;
                    line.replace(addr, to)
                }
                None => bail!("deploy/haproxy.cfg binds {addr}, which the harness does not map"),
            },
            ["server", _, addr, ..] => match map.get(*addr) {
                Some(to) => line.replace(addr, to),
                None => continue,
            },
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if binds == 0 {
        bail!("deploy/haproxy.cfg has no frontend bind line");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_maps_binds_and_servers_and_drops_unmapped_nodes() {
        let shipped = "frontend f\n    bind 10.0.0.10:8080\nbackend b\n    retries 3\n    \
                       server a 10.0.0.11:8080 check\n    server b 10.0.0.12:8080 check\n\
                       listen stats\n    bind 127.0.0.1:8404\n";
        let map = BTreeMap::from([
            ("10.0.0.10:8080".to_owned(), "127.0.0.1:1000".to_owned()),
            ("10.0.0.11:8080".to_owned(), "127.0.0.1:1001".to_owned()),
        ]);
        let out = rewrite(shipped, &map, "127.0.0.1:9").unwrap();
        assert!(out.contains("    bind 127.0.0.1:1000\n"), "{out}");
        assert!(out.contains("    server a 127.0.0.1:1001 check\n"), "{out}");
        assert!(!out.contains("10.0.0.12"), "{out}");
        assert!(out.contains("    retries 3\n"), "{out}");
        assert!(out.contains("    bind 127.0.0.1:9\n"), "{out}");
        let unmapped = BTreeMap::new();
        assert!(rewrite(shipped, &unmapped, "127.0.0.1:9").is_err());
    }
}
