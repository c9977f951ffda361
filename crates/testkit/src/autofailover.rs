//! A real pg_auto_failover 2.0 formation for the HA validation harness:
//! [`Formation`].
//!
//! A monitor and two data nodes (a primary and its synchronous secondary),
//! each a `pg_autoctl` service with its own PostgreSQL 15 server, all on
//! 127.0.0.1 on free ports, in one temporary directory: `monitor/`, `node0/`
//! and `node1/` (the data directories), `monitor.log`, `node0.log` and
//! `node1.log` (what each `pg_autoctl` process printed, appended across
//! restarts; PostgreSQL's own logs are in `<data>/log/`), and `xdg/` (the
//! `pg_autoctl` configuration and state files, through `XDG_CONFIG_HOME`,
//! `XDG_DATA_HOME` and `XDG_RUNTIME_DIR`, so that nothing is written to the
//! home directory of `postgres`). Authentication is `trust` without TLS.
//!
//! Each `pg_autoctl` service runs as a long-lived child process in a process
//! group of its own, as the `postgres` user when the tests run as root (like
//! every server program of this crate, see `process::Runner`). The failover
//! timing settings of deploy/README.md ("Failover timing") are applied and
//! checked by [`Formation::start`]: on the monitor
//! `pgautofailover.health_check_period = 1000`, `health_check_retry_delay =
//! 200`, `node_considered_unhealthy_timeout = 2000` and `primary_demote_timeout
//! = 2000`, and on both data nodes `wal_retrieve_retry_interval = 500ms`.
//!
//! [`Formation::kill_node`] makes a data node's host "die": its keeper,
//! PostgreSQL and every backend are stopped with SIGKILL at once.
//! [`Formation::failover_times`] then reads from the monitor's
//! `pgautofailover.event` table how long the monitor took to notice and the
//! other node to be promoted. Dropping the formation kills every process and
//! removes the directory (`AVAIL_TESTKIT_KEEP=1` keeps it).
//!
//! ```no_run
//! let f = avail_testkit::Formation::start()?;
//! f.create_database("avail_management")?;
//! let old = f.primary()?;
//! let killed_at = f.kill_node(old)?;
//! let times = f.failover_times(old, killed_at)?;
//! eprintln!("detected after {:?}, promoted after {:?}", times.detection, times.promotion);
//! f.start_node(old)?;
//! f.wait_healthy(std::time::Duration::from_secs(60))?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::postgres::{encode, ident, literal};
use crate::process::{self, Runner};

/// The `pg_autoctl` program of Debian's `postgresql-15-auto-failover`.
const PG_AUTOCTL: &str = "/usr/bin/pg_autoctl";
/// The PostgreSQL binaries `pg_autoctl` was built for.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long creating a node (`initdb`, or the secondary's base backup) may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the formation may take to become healthy on start.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a `psql` run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a killed process may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the monitor may take to write the events of a failover.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(60);
/// PostgreSQL's default Unix socket directory on Debian.
const SOCKET_DIR: &str = "/var/run/postgresql";
/// Lines of a log quoted in error messages.
const LOG_LINES: usize = 30;

/// The monitor's failover timing settings of deploy/README.md, in milliseconds.
const MONITOR_SETTINGS: [(&str, &str); 4] = [
    ("pgautofailover.health_check_period", "1000"),
    ("pgautofailover.health_check_retry_delay", "200"),
    ("pgautofailover.node_considered_unhealthy_timeout", "2000"),
    ("pgautofailover.primary_demote_timeout", "2000"),
];

/// A running pg_auto_failover formation on 127.0.0.1: a monitor, and data
/// nodes 0 and 1, one the primary and the other its synchronous secondary.
///
/// The methods take `&self`, so a test may share it between threads (a
/// writer thread and the thread that kills nodes, for instance). Dropping it
/// kills every process and removes the directory, also while a failing test
/// unwinds.
#[derive(Debug)]
pub struct Formation {
    runner: &'static Runner,
    root: PathBuf,
    monitor: Service,
    nodes: [Service; 2],
    /// The monitor's startup grace period is known to be over.
    grace_over: AtomicBool,
    /// Dropped last, after [`Drop::drop`] has stopped every process.
    dir: Option<TempDir>,
}

/// How long a failover took, from the kill of the primary's host, according
/// to the monitor's `pgautofailover.event` table (see
/// [`Formation::failover_times`] for which event counts as what).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverTimes {
    /// Until the monitor noticed: the earlier of the event marking the killed
    /// node unhealthy and the first failover goal state it assigned.
    pub detection: Duration,
    /// Until the monitor decided the failover: the first failover goal state
    /// (`prepare_promotion` for the other node, `draining` or later for the
    /// killed one).
    pub decision: Duration,
    /// Until the other node reported `wait_primary` (or `primary`): it has
    /// been promoted and accepts writes.
    pub promotion: Duration,
}

/// One `pg_autoctl` service: the monitor or a data node.
#[derive(Debug)]
struct Service {
    /// `monitor`, `node0` or `node1`: the `--name`, and the names of the data
    /// directory and the log file.
    name: String,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    /// The running `pg_autoctl run` (through `runuser` when root); the leader
    /// of its own process group.
    child: Mutex<Option<Child>>,
}

impl Service {
    fn new(root: &Path, name: &str, port: u16) -> Service {
        Service {
            name: name.to_owned(),
            port,
            data: root.join(name),
            log: root.join(format!("{name}.log")),
            child: Mutex::new(None),
        }
    }

    /// The files of running processes a dead host leaves behind:
    /// PostgreSQL's `postmaster.pid`, its Unix socket and the socket's lock
    /// file in [`SOCKET_DIR`], and `pg_autoctl.pid` (under `XDG_RUNTIME_DIR`).
    fn pid_files(&self, root: &Path) -> [PathBuf; 4] {
        let relative = self.data.strip_prefix("/").unwrap_or(&self.data);
        let socket = format!(".s.PGSQL.{}", self.port);
        [
            self.data.join("postmaster.pid"),
            Path::new(SOCKET_DIR).join(format!("{socket}.lock")),
            Path::new(SOCKET_DIR).join(socket),
            root.join("xdg/run/pg_autoctl")
                .join(relative)
                .join("pg_autoctl.pid"),
        ]
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves nothing half done.
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last lines of what `pg_autoctl` printed, for error messages.
    fn log_tail(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                format!(
                    "{} log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    all[all.len().saturating_sub(LOG_LINES)..].join("\n")
                )
            }
            Err(e) => format!("<no {} log at {}: {e}>", self.name, self.log.display()),
        }
    }
}

/// One row of the monitor's `pgautofailover.node` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeRow {
    port: u16,
    reported: String,
    goal: String,
    health: i32,
}

impl Formation {
    /// Creates and runs the monitor (with the tuned settings), then node 0
    /// (which becomes the primary), then node 1 (its secondary, from a base
    /// backup); returns when the monitor shows exactly one `primary` and one
    /// `secondary`, both healthy, the primary replicates synchronously to the
    /// secondary (`synchronous_standby_names` set, the standby `sync` or
    /// `quorum`), and the settings are in effect (checked in `pg_settings`).
    pub fn start() -> Result<Formation> {
        let runner = Runner::get()?;
        for program in [PathBuf::from(PG_AUTOCTL), Path::new(PG_BIN).join("pg_ctl")] {
            if !program.is_file() {
                bail!(
                    "{} not found: the pg_auto_failover formation needs Debian's \
                     postgresql-15-auto-failover package",
                    program.display()
                );
            }
        }
        socket_dir(runner)?;
        let base = match std::env::var_os("AVAIL_TESTKIT_TMPDIR") {
            Some(dir) => PathBuf::from(dir),
            // Every parent must be searchable by postgres; a private TMPDIR may not be.
            None if runner.is_root() => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("avail-paf-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let root = dir.path().to_path_buf();
        runner.give(&root)?;
        for sub in ["xdg", "xdg/config", "xdg/data", "xdg/run"] {
            let path = root.join(sub);
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
            runner.give(&path)?;
        }
        let ports = free_ports(3)?;
        let formation = Formation {
            runner,
            monitor: Service::new(&root, "monitor", ports[0]),
            nodes: [
                Service::new(&root, "node0", ports[1]),
                Service::new(&root, "node1", ports[2]),
            ],
            root,
            grace_over: AtomicBool::new(false),
            dir: Some(dir),
        };
        formation.create_monitor()?;
        formation.create_node(0)?;
        formation.wait_monitor(
            "node 0 to be registered as single",
            HEALTHY_TIMEOUT,
            &formation.nodes[0],
            |rows| {
                rows.iter()
                    .any(|r| r.port == formation.nodes[0].port && r.reported == "single")
            },
        )?;
        // Settings in postgresql.auto.conf travel with the base backup.
        formation.set_node_settings(0)?;
        // Less for the base backup's checkpoint to write.
        formation.psql_port(formation.nodes[0].port, "postgres", "CHECKPOINT")?;
        formation.create_node(1)?;
        formation.wait_healthy(HEALTHY_TIMEOUT)?;
        formation.set_node_settings(1)?;
        for i in 0..2 {
            formation.check_node_settings(i)?;
        }
        Ok(formation)
    }

    /// `postgres://postgres@127.0.0.1:P0,127.0.0.1:P1/DB?target_session_attrs=read-write&connect_timeout=2`:
    /// both data nodes, so that a connection lands on whichever is the primary.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write&connect_timeout=2",
            self.nodes[0].port,
            self.nodes[1].port,
            encode(db)
        )
    }

    /// The PostgreSQL port of data node `i` (0 or 1).
    ///
    /// # Panics
    ///
    /// When `i` is not 0 or 1.
    pub fn node_port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// The PostgreSQL port of the monitor (database `pg_auto_failover`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor.port
    }

    /// The directory of the formation (data directories and logs).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `CREATE DATABASE` on the current primary.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE {};", ident(name)))
            .map(drop)
            .with_context(|| format!("creating database {name}"))
    }

    /// Runs `sql` with `psql -v ON_ERROR_STOP=1` as `postgres` on database
    /// `db` of the current primary, through [`Formation::url`] (so it lands
    /// on whichever node accepts writes), and returns what it printed: rows
    /// only, unaligned (`-A -t -q`), columns separated by `|`. Fails when no
    /// node accepts writes (within `connect_timeout=2` a node) or when the
    /// statement fails; gives up after 60 s.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql_conn(&self.url(db), sql)
    }

    /// The index (0 or 1) of the data node that is the primary according to
    /// the monitor: the one whose assigned and reported states are both
    /// `single`, `wait_primary`, `primary` or `join_primary`. An error when
    /// there is none (during a failover, for instance) or two.
    pub fn primary(&self) -> Result<usize> {
        let rows = self.node_rows()?;
        let primaries: Vec<&NodeRow> = rows
            .iter()
            .filter(|r| {
                r.reported == r.goal
                    && matches!(
                        r.goal.as_str(),
                        "single" | "wait_primary" | "primary" | "join_primary"
                    )
            })
            .collect();
        match primaries.as_slice() {
            [one] => self.index_of(one.port),
            _ => bail!(
                "the monitor shows {} primaries: {}",
                primaries.len(),
                describe_rows(&rows)
            ),
        }
    }

    /// Makes data node `i`'s host die entirely: its `pg_autoctl` keeper, its
    /// PostgreSQL server and every backend are frozen (SIGSTOP) and then
    /// killed (SIGKILL), all at once; waits until they are gone, and removes
    /// their pid files (as a reboot would). Returns the instant of the
    /// SIGKILL. An error when the node is not running.
    ///
    /// The monitor does not fail over during its
    /// `pgautofailover.startup_grace_period` (10 s from its start); the first
    /// call waits until that is over, so that every failover is like one in
    /// production.
    pub fn kill_node(&self, i: usize) -> Result<Instant> {
        let node = self.node(i)?;
        self.wait_grace_period()?;
        let mut guard = node.child();
        let Some(mut child) = guard.take() else {
            bail!("node {i} is not running");
        };
        let at = kill_tree(&mut child, &node.data, &node.pid_files(&self.root))
            .with_context(|| format!("killing node {i}\n{}", node.log_tail()))?;
        Ok(at)
    }

    /// Runs data node `i`'s keeper (`pg_autoctl run`) again after
    /// [`Formation::kill_node`] or [`Formation::stop_all`]; it rejoins the
    /// formation, with `pg_rewind` when needed, as a secondary (or as the
    /// primary after [`Formation::stop_all`]). Returns at once; see
    /// [`Formation::wait_healthy`].
    pub fn start_node(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let mut guard = node.child();
        if let Some(child) = guard.as_mut() {
            match child.try_wait() {
                Ok(None) => bail!("node {i} is already running"),
                _ => *guard = None,
            }
        }
        let mut cmd = self.autoctl();
        cmd.arg("run").arg("--pgdata").arg(&node.data);
        *guard = Some(self.spawn(cmd, node)?);
        Ok(())
    }

    /// Waits until the monitor shows exactly one `primary` and one
    /// `secondary` (assigned and reported), both healthy, and both servers
    /// agree: the primary accepts writes and streams to the secondary
    /// synchronously (`sync` or `quorum` in `pg_stat_replication`,
    /// `synchronous_standby_names` set), the secondary is in recovery.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(50);
        loop {
            let seen = match self.healthy() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            for node in &self.nodes {
                if node.child().is_none() {
                    bail!(
                        "{} is not running (killed and not started again)",
                        node.name
                    );
                }
                self.check_alive(node)?;
            }
            self.check_alive(&self.monitor)?;
            if Instant::now() >= deadline {
                return Err(seen.context(format!(
                    "the formation did not become healthy within {timeout:?}\n{}\n{}\n{}",
                    self.monitor.log_tail(),
                    self.nodes[0].log_tail(),
                    self.nodes[1].log_tail()
                )));
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(250));
        }
    }

    /// Kills both data nodes' hosts at once, as [`Formation::kill_node`]
    /// does (the database is entirely down); the monitor stays up. Nodes that
    /// are not running are left alone.
    pub fn stop_all(&self) -> Result<()> {
        let mut guards = [self.nodes[0].child(), self.nodes[1].child()];
        // Freeze both first, so that neither sees the other go.
        for guard in &guards {
            if let Some(child) = guard.as_ref() {
                signal(&["-STOP", "--", &format!("-{}", child.id())]);
            }
        }
        for (guard, node) in guards.iter_mut().zip(&self.nodes) {
            if let Some(mut child) = guard.take() {
                kill_tree(&mut child, &node.data, &node.pid_files(&self.root))
                    .with_context(|| format!("killing {}\n{}", node.name, node.log_tail()))?;
            }
        }
        Ok(())
    }

    /// Runs both data nodes' keepers again after [`Formation::stop_all`] and
    /// waits (up to 2 minutes) until the formation is healthy again (see
    /// [`Formation::wait_healthy`]). Either node may be the primary then:
    /// when the monitor had already begun a failover before both died, it
    /// completes it as they come back (no acknowledged write is lost either
    /// way: the secondary was synchronous).
    pub fn start_all(&self) -> Result<()> {
        self.start_node(0)?;
        self.start_node(1)?;
        self.wait_healthy(HEALTHY_TIMEOUT)
    }

    /// How long the failover after [`Formation::kill_node`]`(killed)` at
    /// `killed_at` took, from the monitor's `pgautofailover.event` table;
    /// waits (up to a minute) for the promotion event.
    ///
    /// What pg_auto_failover 2.0 writes when the primary's host dies (with
    /// the tuned settings; each row has the node, its reported and goal state,
    /// and a description):
    ///
    /// 1. killed node, `Node … is marked as unhealthy by the monitor` (about
    ///    0.7 s after the kill): **detection**;
    /// 2. the other node's goal `prepare_promotion` and the killed node's
    ///    goal `draining` (`… after node … became unhealthy`, about 1.8 s):
    ///    **decision** (also counts as detection when it came first);
    /// 3. the other node reports `prepare_promotion`, gets goal
    ///    `stop_replication`, the killed node goal `demote_timeout`;
    /// 4. after `primary_demote_timeout`: the other node's goal `wait_primary`,
    ///    the killed node's `demoted`;
    /// 5. the other node reports `wait_primary` (`New state is reported by
    ///    …`, about 4.2 s): **promotion**: PostgreSQL has been promoted and
    ///    accepts writes (with no synchronous standby until the killed node
    ///    is back).
    ///
    /// Event times are the monitor's `now()`; they are compared with the
    /// wall clock (`SystemTime`) of the kill through
    /// `extract(epoch from eventtime)`.
    pub fn failover_times(&self, killed: usize, killed_at: Instant) -> Result<FailoverTimes> {
        let killed_port = self.node(killed)?.port;
        let other_port = self.nodes[1 - killed].port;
        let kill_epoch = SystemTime::now()
            .checked_sub(killed_at.elapsed())
            .ok_or_else(|| anyhow!("the kill instant is before the epoch"))?
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs_f64();
        // 50 ms for the conversion between the clocks; an event of the
        // healthy formation before the kill cannot match anyway.
        let query = format!(
            "SELECT extract(epoch FROM eventtime), nodeport, reportedstate, goalstate, description \
             FROM pgautofailover.event \
             WHERE extract(epoch FROM eventtime) >= {since} AND nodeport IN ({killed_port}, {other_port}) \
             ORDER BY eventid",
            since = kill_epoch - 0.05
        );
        let deadline = Instant::now() + EVENTS_TIMEOUT;
        loop {
            let out = self.psql_port(self.monitor.port, "pg_auto_failover", &query)?;
            let (mut unhealthy, mut decision, mut promotion) = (None, None, None);
            for line in out.lines() {
                let mut cols = line.splitn(5, '|');
                let (Some(time), Some(port), Some(reported), Some(goal), description) = (
                    cols.next(),
                    cols.next(),
                    cols.next(),
                    cols.next(),
                    cols.next().unwrap_or(""),
                ) else {
                    continue;
                };
                let Ok(time) = time.parse::<f64>() else {
                    continue;
                };
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                let after = Duration::from_secs_f64((time - kill_epoch).max(0.0));
                if port == killed_port {
                    if description.contains("marked as unhealthy") {
                        unhealthy.get_or_insert(after);
                    }
                    if matches!(goal, "draining" | "demote_timeout" | "demoted") {
                        decision.get_or_insert(after);
                    }
                } else {
                    if matches!(
                        goal,
                        "prepare_promotion" | "stop_replication" | "wait_primary" | "primary"
                    ) && reported == "secondary"
                    {
                        decision.get_or_insert(after);
                    }
                    if matches!(reported, "wait_primary" | "primary")
                        && description.starts_with("New state is reported")
                    {
                        promotion.get_or_insert(after);
                    }
                }
            }
            if let (Some(decision), Some(promotion)) = (decision, promotion) {
                let detection = unhealthy.map_or(decision, |u| u.min(decision));
                return Ok(FailoverTimes {
                    detection,
                    decision,
                    promotion,
                });
            }
            if Instant::now() >= deadline {
                bail!(
                    "the monitor wrote no complete failover of node {killed} within \
                     {EVENTS_TIMEOUT:?} of asking (unhealthy {unhealthy:?}, decision {decision:?}, \
                     promotion {promotion:?}); events since the kill:\n{out}\n{}\n{}",
                    self.monitor.log_tail(),
                    self.nodes[1 - killed].log_tail()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the monitor's `pgautofailover.startup_grace_period` (10
    /// s from its start, during which it does not fail over) is over, so that
    /// the failover times are those of a monitor that has been up for a while.
    fn wait_grace_period(&self) -> Result<()> {
        if self.grace_over.load(Ordering::Relaxed) {
            return Ok(());
        }
        let out = self.psql_port(
            self.monitor.port,
            "pg_auto_failover",
            "SELECT greatest(0, (SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'pgautofailover.startup_grace_period') \
             - extract(epoch FROM now() - pg_postmaster_start_time()))",
        )?;
        let left: f64 = out
            .trim()
            .parse()
            .with_context(|| format!("the rest of the grace period: {out:?}"))?;
        if left > 0.0 {
            // Half a second more: the grace period starts with the monitor's
            // background worker, a moment after the server.
            thread::sleep(Duration::from_secs_f64(left.min(60.0) + 0.5));
        }
        self.grace_over.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn node(&self, i: usize) -> Result<&Service> {
        self.nodes
            .get(i)
            .ok_or_else(|| anyhow!("there is no node {i}: a formation has nodes 0 and 1"))
    }

    fn index_of(&self, port: u16) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .ok_or_else(|| anyhow!("the monitor knows a node on port {port} that is not ours"))
    }

    /// `pg_autoctl create monitor`, then `pg_autoctl run` with PostgreSQL on
    /// 127.0.0.1 only, then the tuned settings.
    fn create_monitor(&self) -> Result<()> {
        let m = &self.monitor;
        let mut cmd = self.autoctl();
        cmd.args(["create", "monitor", "--pgdata"])
            .arg(&m.data)
            .args([
                "--pgport",
                &m.port.to_string(),
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
            ]);
        self.check(cmd, CREATE_TIMEOUT, m)?;
        let mut cmd = self.autoctl();
        cmd.args(["config", "set", "--pgdata"])
            .arg(&m.data)
            .args(["postgresql.listen_addresses", "127.0.0.1"]);
        self.check(cmd, CLIENT_TIMEOUT, m)?;
        let mut cmd = self.autoctl();
        cmd.arg("run").arg("--pgdata").arg(&m.data);
        *m.child() = Some(self.spawn(cmd, m)?);
        self.wait_sql(
            m,
            "pg_auto_failover",
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgautofailover'",
            |s| s == "1",
        )?;
        let mut sql: String = MONITOR_SETTINGS
            .iter()
            .map(|(k, v)| format!("ALTER SYSTEM SET {k} = {v};\n"))
            .collect();
        sql.push_str("SELECT pg_reload_conf();\n");
        self.psql_port(m.port, "pg_auto_failover", &sql)?;
        let names: Vec<String> = MONITOR_SETTINGS.iter().map(|(k, _)| literal(k)).collect();
        let expected: String = MONITOR_SETTINGS
            .iter()
            .map(|(k, v)| format!("{k}|{v}\n"))
            .collect();
        self.wait_sql(
            m,
            "pg_auto_failover",
            &format!(
                "SELECT name, setting FROM pg_settings WHERE name IN ({}) ORDER BY name",
                names.join(", ")
            ),
            |s| s == expected.trim(),
        )
        .context("the monitor's failover timing settings did not take effect")
    }

    /// `pg_autoctl create postgres … --run` for data node `i`, left running.
    fn create_node(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let monitor = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor.port
        );
        let mut cmd = self.autoctl();
        cmd.args(["create", "postgres", "--pgdata"])
            .arg(&node.data)
            .args([
                "--pgport",
                &node.port.to_string(),
                "--hostname",
                "127.0.0.1",
                "--listen",
                "127.0.0.1",
                "--name",
                &node.name,
                "--auth",
                "trust",
                "--no-ssl",
                "--monitor",
                &monitor,
                "--run",
            ]);
        *node.child() = Some(self.spawn(cmd, node)?);
        Ok(())
    }

    /// `wal_retrieve_retry_interval = 500ms` on data node `i`.
    fn set_node_settings(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        self.psql_port(
            node.port,
            "postgres",
            "ALTER SYSTEM SET wal_retrieve_retry_interval = '500ms';\nSELECT pg_reload_conf();",
        )
        .map(drop)
        .with_context(|| format!("setting wal_retrieve_retry_interval on {}", node.name))
    }

    fn check_node_settings(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        self.wait_sql(
            node,
            "postgres",
            "SELECT setting || unit FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'",
            |s| s == "500ms",
        )
        .with_context(|| {
            format!(
                "wal_retrieve_retry_interval did not take effect on {}",
                node.name
            )
        })
    }

    /// `Ok` when the formation is healthy (see [`Formation::wait_healthy`]);
    /// otherwise what is not.
    fn healthy(&self) -> Result<()> {
        let rows = self.node_rows()?;
        let state = |reported: &str| rows.iter().filter(|r| r.reported == reported).count();
        if rows.len() != 2
            || state("primary") != 1
            || state("secondary") != 1
            || rows.iter().any(|r| r.goal != r.reported || r.health != 1)
        {
            bail!("monitor: {}", describe_rows(&rows));
        }
        let primary = self.primary()?;
        let secondary = 1 - primary;
        let out = self.psql_port(
            self.nodes[primary].port,
            "postgres",
            "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names') <> '', \
             (SELECT count(*) FROM pg_stat_replication \
              WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))",
        )?;
        if out.trim() != "f|t|1" {
            bail!(
                "node {primary} (primary): in recovery|synchronous_standby_names set|sync standbys = {}",
                out.trim()
            );
        }
        let out = self.psql_port(
            self.nodes[secondary].port,
            "postgres",
            "SELECT pg_is_in_recovery()",
        )?;
        if out.trim() != "t" {
            bail!("node {secondary} (secondary): in recovery = {}", out.trim());
        }
        Ok(())
    }

    /// The monitor's view of the data nodes.
    fn node_rows(&self) -> Result<Vec<NodeRow>> {
        let out = self.psql_port(
            self.monitor.port,
            "pg_auto_failover",
            "SELECT nodeport, reportedstate, goalstate, health FROM pgautofailover.node ORDER BY nodeid",
        )?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let cols: Vec<&str> = line.split('|').collect();
                match cols.as_slice() {
                    [port, reported, goal, health] => Ok(NodeRow {
                        port: port.parse().context("nodeport")?,
                        reported: (*reported).to_owned(),
                        goal: (*goal).to_owned(),
                        health: health.parse().context("health")?,
                    }),
                    _ => bail!("unexpected row of pgautofailover.node: {line:?}"),
                }
            })
            .collect()
    }

    /// Waits until the monitor's node table satisfies `done`.
    fn wait_monitor(
        &self,
        what: &str,
        timeout: Duration,
        service: &Service,
        done: impl Fn(&[NodeRow]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.node_rows() {
                Ok(rows) if done(&rows) => return Ok(()),
                Ok(rows) => describe_rows(&rows),
                Err(e) => format!("{e:#}"),
            };
            self.check_alive(service)?;
            if Instant::now() >= deadline {
                bail!(
                    "waited {timeout:?} for {what}; the monitor shows {seen}\n{}\n{}",
                    service.log_tail(),
                    self.monitor.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `query` on `service`'s server until `done` accepts its trimmed
    /// output; errors count as "not yet" until the deadline.
    fn wait_sql(
        &self,
        service: &Service,
        db: &str,
        query: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let mut nap = Duration::from_millis(20);
        loop {
            let seen = match self.psql_port(service.port, db, query) {
                Ok(out) if done(out.trim()) => return Ok(()),
                Ok(out) => format!("last answer: {:?}", out.trim()),
                Err(e) => format!("last error: {e:#}"),
            };
            self.check_alive(service)?;
            if Instant::now() >= deadline {
                bail!(
                    "`{query}` on {} did not give the expected answer within {CREATE_TIMEOUT:?}; \
                     {seen}\n{}",
                    service.name,
                    service.log_tail()
                );
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(200));
        }
    }

    /// An error when `service`'s `pg_autoctl` has exited.
    fn check_alive(&self, service: &Service) -> Result<()> {
        let mut guard = service.child();
        if let Some(child) = guard.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            *guard = None;
            bail!(
                "pg_autoctl of {} exited ({status})\n{}",
                service.name,
                service.log_tail()
            );
        }
        Ok(())
    }

    /// `psql` on one server, by port.
    fn psql_port(&self, port: u16, db: &str, sql: &str) -> Result<String> {
        self.psql_conn(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={db} connect_timeout=5"),
            sql,
        )
    }

    fn psql_conn(&self, conninfo: &str, sql: &str) -> Result<String> {
        let mut cmd = self
            .runner
            .command(&Path::new(PG_BIN).join("psql"), &self.root);
        cmd.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo)
            .args(["-f", "-"]);
        let out = process::run(cmd, Some(sql), CLIENT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "psql on {conninfo} failed ({}): {}\nSQL:\n{sql}",
                out.status,
                out.printed()
            );
        }
        Ok(out.stdout)
    }

    /// `pg_autoctl` as the server user, with the formation's environment.
    fn autoctl(&self) -> Command {
        let mut cmd = self.runner.command(Path::new(PG_AUTOCTL), &self.root);
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut all = vec![PathBuf::from(PG_BIN)];
                all.extend(std::env::split_paths(&p));
                std::env::join_paths(all).unwrap_or(p)
            }
            None => PG_BIN.into(),
        };
        cmd.env("PATH", path)
            .env("PG_CONFIG", Path::new(PG_BIN).join("pg_config"))
            .env("XDG_CONFIG_HOME", self.root.join("xdg/config"))
            .env("XDG_DATA_HOME", self.root.join("xdg/data"))
            .env("XDG_RUNTIME_DIR", self.root.join("xdg/run"));
        cmd
    }

    /// Runs a `pg_autoctl` command to completion, its output appended to
    /// `service`'s log; fails with the log's tail.
    fn check(&self, mut cmd: Command, timeout: Duration, service: &Service) -> Result<()> {
        let what = process::describe(&cmd);
        cmd.stdin(Stdio::null());
        let out = process::run(cmd, None, timeout)?;
        let mut text = out.stderr.clone();
        text.push_str(&out.stdout);
        append(&service.log, &text)?;
        if !out.status.success() {
            bail!("`{what}` failed ({})\n{}", out.status, service.log_tail());
        }
        Ok(())
    }

    /// Starts a long-lived `pg_autoctl` in a process group of its own,
    /// logging (appending) to `service`'s log.
    fn spawn(&self, mut cmd: Command, service: &Service) -> Result<Child> {
        let what = process::describe(&cmd);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&service.log)
            .with_context(|| format!("opening {}", service.log.display()))?;
        let err = log
            .try_clone()
            .with_context(|| format!("opening {}", service.log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        cmd.spawn().with_context(|| format!("starting `{what}`"))
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        for service in self.nodes.iter().chain([&self.monitor]) {
            if let Some(mut child) = service.child().take()
                && let Err(e) = kill_tree(&mut child, &service.data, &service.pid_files(&self.root))
            {
                eprintln!("avail-testkit: stopping {}: {e:#}", service.name);
            }
        }
        let keep =
            std::env::var_os("AVAIL_TESTKIT_KEEP").is_some_and(|v| v != "0" && !v.is_empty());
        if keep && let Some(dir) = self.dir.take() {
            eprintln!("avail-testkit: keeping {}", dir.path().display());
            std::mem::forget(dir);
        }
    }
}

/// Freezes and kills `child` (the leader of its own process group), every
/// process descending from it, and the postmaster of `data` with its
/// children (each PostgreSQL child is in a process group of its own); waits
/// until they are gone (or zombies of another parent), then removes
/// `pid_files`, as a reboot of the host would: PostgreSQL and `pg_autoctl`
/// take a zombie that is not reaped yet (the orphans go to PID 1, which may
/// be slow to reap them or never do) for a running process and would refuse
/// to start. Returns the instant of the SIGKILL.
fn kill_tree(child: &mut Child, data: &Path, pid_files: &[PathBuf]) -> Result<Instant> {
    let leader = child.id();
    signal(&["-STOP", "--", &format!("-{leader}")]);
    let table = process_table();
    let mut pids = descendants(&table, leader);
    let postmaster = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        // A stale file may name another process by now.
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(data.to_string_lossy().as_ref()))
                .unwrap_or(false)
        });
    if let Some(pm) = postmaster {
        signal(&["-STOP", &pm.to_string()]);
        pids.extend(descendants(&process_table(), pm));
    }
    let mut args = vec!["-KILL".to_owned(), "--".to_owned(), format!("-{leader}")];
    args.extend(pids.iter().map(u32::to_string));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = Instant::now();
    signal(&arg_refs);
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if exited && left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "processes still running {KILL_TIMEOUT:?} after SIGKILL: {left:?}{}",
                if exited {
                    ""
                } else {
                    " and the pg_autoctl leader"
                }
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    for file in pid_files {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    Ok(at)
}

/// Makes sure of PostgreSQL's default socket directory, where `pg_autoctl`
/// connects to its local server: Debian's postgresql-common creates it at
/// boot, a container may lack it; created (as postgresql-common would) when
/// root.
fn socket_dir(runner: &Runner) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Path::new(SOCKET_DIR);
    if dir.is_dir() {
        return Ok(());
    }
    if !runner.is_root() {
        bail!(
            "{SOCKET_DIR} does not exist; pg_autoctl needs it (PostgreSQL's default socket \
             directory): create it, owned by the user running the tests"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {SOCKET_DIR}"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2775))
        .with_context(|| format!("chmod {SOCKET_DIR}"))?;
    runner.give(dir)
}

/// `kill ARGS`; failures (a process already gone) do not matter.
fn signal(args: &[&str]) {
    let _ = Command::new("kill")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every process: pid → parent pid, from `/proc/*/stat`.
fn process_table() -> HashMap<u32, u32> {
    let mut table = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((_, ppid)) = stat(pid) {
            table.insert(pid, ppid);
        }
    }
    table
}

/// The state letter and the parent pid of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": comm may contain anything, up to the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// `root` and every process below it in `table`.
fn descendants(table: &HashMap<u32, u32>, root: u32) -> HashSet<u32> {
    let mut found = HashSet::from([root]);
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in table {
            if found.contains(ppid) && found.insert(*pid) {
                grew = true;
            }
        }
    }
    found
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `count` distinct free ports of 127.0.0.1 (bound together, then let go).
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The monitor's node rows, for error messages.
fn describe_rows(rows: &[NodeRow]) -> String {
    if rows.is_empty() {
        return "no nodes".to_owned();
    }
    rows.iter()
        .map(|r| {
            format!(
                "port {} reported {} assigned {} health {}",
                r.port, r.reported, r.goal, r.health
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_parents() {
        let table = HashMap::from([(2, 1), (3, 2), (4, 3), (5, 1), (6, 9)]);
        assert_eq!(descendants(&table, 2), HashSet::from([2, 3, 4]));
        assert_eq!(descendants(&table, 7), HashSet::from([7]));
    }

    #[test]
    fn formation_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Formation>();
    }

    #[test]
    fn own_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(stat(std::process::id()).is_some());
    }
}
