//! Throwaway PostgreSQL servers: a plain server, a synchronous primary and its
//! hot standbys, each in its own temporary directory on a free port of
//! 127.0.0.1, trusted without a password, stopped and removed on drop.
//!
//! Layout of the temporary directory: `data/` (the cluster; our settings are in
//! `data/avail_testkit.conf`, included from `postgresql.conf`), `socket/` (the
//! Unix socket) and `server.log` (the server's log, whose tail is part of every
//! start error). Set `AVAIL_TESTKIT_KEEP=1` to keep the directories of the
//! servers after a run, and `AVAIL_PG_BINDIR` to choose the server binaries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::process::{self, Runner};

/// How long a server may take to start, stop or promote.
const SERVER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a `psql` run or a base backup may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a standby may take to stream and become synchronous.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(90);
/// How many ports are tried when another process takes ours before we bind it.
const PORT_ATTEMPTS: usize = 5;
/// The name of our settings file inside the data directory.
const SETTINGS_FILE: &str = "avail_testkit.conf";

/// A real PostgreSQL server for one test, running as the `postgres` user (when
/// the tests run as root) in a temporary directory, listening only on
/// 127.0.0.1 on a free port, with `trust` authentication for the `postgres`
/// superuser (also for replication connections).
///
/// Dropping it stops the server immediately and removes its directory; that
/// also happens while a failing test unwinds. Any number may run at once.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    /// `cluster_name`, and the `application_name` of a standby's WAL receiver.
    name: String,
    /// Started by [`Postgres::start_primary`]: its standbys are synchronous.
    primary: bool,
    bin: &'static Path,
    runner: &'static Runner,
    root: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Dropped last, after [`Drop::drop`] has stopped the server.
    dir: Option<TempDir>,
}

impl Postgres {
    /// Creates a cluster (`initdb` with trust authentication, UTF8, C locale)
    /// and starts it on a free port; returns once it accepts connections.
    pub fn start() -> Result<Postgres> {
        Postgres::init(false)
    }

    /// Like [`Postgres::start`], but a primary ready for streaming standbys:
    /// `wal_level = replica`, WAL senders, replication trusted from
    /// 127.0.0.1, `synchronous_commit = on`.
    ///
    /// `synchronous_standby_names = '*'` is set (with `ALTER SYSTEM` and a
    /// reload) by [`Postgres::start_standby`] once the first standby streams,
    /// so that from then on every commit waits for a standby, while the
    /// primary alone can still be written to (to create databases and load a
    /// schema before the standby exists). Standbys never inherit the setting,
    /// so a promoted standby accepts writes without a standby of its own.
    pub fn start_primary() -> Result<Postgres> {
        Postgres::init(true)
    }

    /// Starts a hot standby of this server: `pg_basebackup -R` into a new
    /// temporary directory, started on its own free port. Returns once the
    /// standby accepts connections and this server's `pg_stat_replication`
    /// shows it `streaming`; for a server from [`Postgres::start_primary`],
    /// also once it is synchronous (`sync_state` is `sync`, or `potential`
    /// when another standby already is the synchronous one).
    pub fn start_standby(&self) -> Result<Postgres> {
        let mut standby = Postgres::create_dir()?;
        let conninfo = format!(
            "host={} port={} user=postgres application_name={}",
            self.host(),
            self.port,
            standby.name
        );
        let mut cmd = standby.command("pg_basebackup");
        cmd.arg("-D")
            .arg(&standby.data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-d"])
            .arg(&conninfo);
        standby.check(cmd, CLIENT_TIMEOUT)?;
        // `pg_basebackup` copies `postgresql.auto.conf`, so a second standby
        // would inherit the primary's synchronous_standby_names; a promoted
        // standby with it would wait forever on every commit.
        let auto = standby.data.join("postgresql.auto.conf");
        if let Ok(text) = std::fs::read_to_string(&auto) {
            let kept: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("synchronous_standby_names"))
                .fold(String::new(), |mut s, l| {
                    let _ = writeln!(s, "{l}");
                    s
                });
            std::fs::write(&auto, kept).with_context(|| format!("writing {}", auto.display()))?;
        }
        standby.boot()?;

        let query = format!(
            "SELECT state || ' ' || sync_state FROM pg_stat_replication \
             WHERE application_name = {}",
            literal(&standby.name)
        );
        self.wait_for(&query, REPLICATION_TIMEOUT, |s| s.starts_with("streaming "))
            .with_context(|| format!("standby on port {} did not start streaming", standby.port))?;
        if self.primary {
            self.psql(
                "postgres",
                "ALTER SYSTEM SET synchronous_standby_names = '*';\nSELECT pg_reload_conf();",
            )?;
            self.wait_for(&query, REPLICATION_TIMEOUT, |s| {
                matches!(
                    s,
                    "streaming sync" | "streaming potential" | "streaming quorum"
                )
            })
            .with_context(|| {
                format!(
                    "standby on port {} did not become synchronous",
                    standby.port
                )
            })?;
        }
        Ok(standby)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (no password needed).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@{}:{}/{}",
            self.host(),
            self.port,
            encode(db)
        )
    }

    /// The data directory of the cluster.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("<no server log at {}: {e}>", self.log.display()),
        }
    }

    /// `CREATE DATABASE` on this server.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE {};", ident(name)))
            .map(drop)
            .with_context(|| format!("creating database {name}"))
    }

    /// Runs `sql` (one or more statements, each in its own transaction unless
    /// the script says otherwise) with `psql -v ON_ERROR_STOP=1` as `postgres`
    /// against database `db`, and returns what it printed: rows only, unaligned
    /// (`-A -t -q`), columns separated by `|`, one row a line.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.host())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-f",
                "-",
            ])
            .env("PGCONNECT_TIMEOUT", "10");
        let what = process::describe(&cmd);
        let out = process::run(cmd, Some(sql), CLIENT_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "psql on database {db} of the server on port {} failed ({}): {}\nSQL:\n{sql}\n(`{what}`)",
                self.port,
                out.status,
                out.printed()
            );
        }
        Ok(out.stdout)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash
    /// would; the data directory stays until drop. Stopping a stopped server
    /// does nothing.
    pub fn kill(&self) -> Result<()> {
        if !self.pid_file().exists() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl("stop");
        cmd.args(["-m", "immediate"]);
        self.check(cmd, SERVER_TIMEOUT)
            .with_context(|| format!("stopping the server on port {}", self.port))
    }

    /// Starts a stopped server again, on the same port and data directory
    /// (for instance an old primary after a failover).
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
            .with_context(|| format!("restarting the server on port {}", self.port))
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        process::run(self.pg_ctl("status"), None, SERVER_TIMEOUT)
            .map(|out| out.status.success())
            .unwrap_or(false)
    }

    /// Promotes a standby (`pg_ctl promote -w`); returns once it accepts
    /// writes (`pg_is_in_recovery()` is false).
    pub fn promote(&self) -> Result<()> {
        self.check(self.pg_ctl("promote"), SERVER_TIMEOUT)
            .with_context(|| format!("promoting the server on port {}", self.port))?;
        self.wait_for("SELECT pg_is_in_recovery()", SERVER_TIMEOUT, |s| s == "f")
            .with_context(|| format!("the server on port {} is still in recovery", self.port))
    }

    fn init(primary: bool) -> Result<Postgres> {
        let mut pg = Postgres::create_dir()?;
        pg.primary = primary;
        let mut cmd = pg.command("initdb");
        cmd.arg("-D").arg(&pg.data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        pg.check(cmd, SERVER_TIMEOUT)?;
        let hba = pg.data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# written by avail-testkit\n\
             local all         all              trust\n\
             host  all         all 127.0.0.1/32 trust\n\
             local replication all              trust\n\
             host  replication all 127.0.0.1/32 trust\n",
        )
        .with_context(|| format!("writing {}", hba.display()))?;
        let conf = pg.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        let _ = write!(
            text,
            "\n# added by avail-testkit\ninclude '{SETTINGS_FILE}'\n"
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        pg.boot()?;
        Ok(pg)
    }

    /// A new temporary directory owned by the server user, with no cluster.
    fn create_dir() -> Result<Postgres> {
        let bin = bin_dir()?;
        let runner = Runner::get()?;
        let base = match std::env::var_os("AVAIL_TESTKIT_TMPDIR") {
            Some(dir) => PathBuf::from(dir),
            // Every parent must be searchable by postgres; a private TMPDIR may not be.
            None if runner.is_root() => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("avail-pg-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let root = dir.path().to_path_buf();
        let socket = root.join("socket");
        std::fs::create_dir(&socket).with_context(|| format!("creating {}", socket.display()))?;
        runner.give(&root)?;
        runner.give(&socket)?;
        let name: String = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Postgres {
            port: 0,
            name,
            primary: false,
            bin,
            runner,
            data: root.join("data"),
            log: root.join("server.log"),
            socket,
            root,
            dir: Some(dir),
        })
    }

    /// Picks a free port, writes our settings and starts the server; tries
    /// another port when someone else took this one in the meantime.
    fn boot(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = crate::free_port()?;
            self.write_settings()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = self.log_tail(20);
                    if !(log.contains("could not bind") || log.contains("already in use")) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no free port")))
            .context(format!("no free port after {PORT_ATTEMPTS} attempts"))
    }

    fn write_settings(&self) -> Result<()> {
        let path = self.data.join(SETTINGS_FILE);
        let socket = self.socket.to_string_lossy();
        let text = format!(
            "# written by avail-testkit; included from postgresql.conf\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket}\n\
             cluster_name = {name}\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             wal_keep_size = 128MB\n\
             hot_standby = on\n\
             synchronous_commit = on\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%a '\n",
            port = self.port,
            socket = literal(&socket),
            name = literal(&self.name),
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        self.runner.give(&path)
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut cmd = self.pg_ctl("start");
        cmd.arg("-l").arg(&self.log);
        let what = process::describe(&cmd);
        let out = process::run(cmd, None, SERVER_TIMEOUT + Duration::from_secs(10)).with_context(
            || {
                format!(
                    "server log ({}):\n{}",
                    self.log.display(),
                    self.log_tail(30)
                )
            },
        )?;
        if !out.status.success() {
            bail!(
                "PostgreSQL did not start on port {} ({}): {}\n(`{what}`)\nserver log ({}):\n{}",
                self.port,
                out.status,
                out.printed(),
                self.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// `pg_ctl ACTION -D data -w -t SECONDS`.
    fn pg_ctl(&self, action: &str) -> std::process::Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg(action).arg("-D").arg(&self.data);
        if action != "status" {
            cmd.args(["-w", "-t", &SERVER_TIMEOUT.as_secs().to_string()]);
        }
        cmd
    }

    fn command(&self, program: &str) -> std::process::Command {
        self.runner.command(&self.bin.join(program), &self.root)
    }

    /// Runs `cmd` and fails with its output when it fails.
    fn check(&self, cmd: std::process::Command, timeout: Duration) -> Result<()> {
        let what = process::describe(&cmd);
        let out = process::run(cmd, None, timeout)?;
        if !out.status.success() {
            bail!("`{what}` failed ({}): {}", out.status, out.printed());
        }
        Ok(())
    }

    /// Runs `query` on database `postgres` until `done` accepts its trimmed
    /// output; errors count as "not yet" until the deadline.
    fn wait_for(&self, query: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(20);
        loop {
            let seen = match self.psql("postgres", query) {
                Ok(out) if done(out.trim()) => return Ok(()),
                Ok(out) => format!("last answer: {:?}", out.trim()),
                Err(e) => format!("last error: {e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "`{query}` on port {} did not give the expected answer within {timeout:?}; \
                     {seen}\nserver log ({}):\n{}",
                    self.port,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(200));
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.data.join("postmaster.pid")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.pid_file().exists() {
            let mut cmd = self.pg_ctl("stop");
            cmd.args(["-m", "immediate"]);
            if let Err(e) = self.check(cmd, SERVER_TIMEOUT) {
                eprintln!(
                    "avail-testkit: stopping PostgreSQL on port {}: {e:#}",
                    self.port
                );
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

/// The directory of the PostgreSQL server binaries: `$AVAIL_PG_BINDIR`, else
/// the highest version in `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
pub fn bin_dir() -> Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_bin_dir)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow!("{e}"))
}

fn find_bin_dir() -> Result<PathBuf, String> {
    let usable = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("AVAIL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if usable(&dir) {
            return Ok(dir);
        }
        return Err(format!(
            "AVAIL_PG_BINDIR={} has no initdb, pg_ctl and postgres",
            dir.display()
        ));
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            usable(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, dir)) = found.pop() {
        return Ok(dir);
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && usable(&dir) {
            return Ok(dir);
        }
    }
    Err(
        "PostgreSQL server binaries not found (no initdb, pg_ctl and postgres in \
         /usr/lib/postgresql/*/bin or `pg_config --bindir`); scripts/test installs the \
         postgresql package"
            .to_owned(),
    )
}

/// An SQL string literal (also the quoting of a value in postgresql.conf).
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An SQL quoted identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Percent-encodes a database name for the path of a URL.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(encode("avail_management"), "avail_management");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
