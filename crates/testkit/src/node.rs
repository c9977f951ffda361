//! A real `avail server` process for integration tests: [`AvailNode`].
//!
//! The node runs in a temporary directory of its own (data directory and log
//! file), on ports of 127.0.0.1 that the server picks itself (port 0: no race
//! with other tests for a port found free a moment before) and writes to
//! `<data>/listen.json` once bound, and is killed and removed when dropped.
//! [`AvailNode::restart`] asks for the same ports again. [`AvailNode::start`]
//! returns once that file is there, the management role answers `/readyz` with
//! 200 and the bootstrap administrator's token is on disk;
//! [`AvailNode::start_roles`] runs only the roles it names and, without the
//! management role, waits for every role it runs to answer `/readyz` with 200. Readiness is probed
//! with a plain HTTP/1.0 request over a `TcpStream`, so the fixture needs no
//! HTTP client or async runtime. The HA harness of later work reuses it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `avail server`: every role, or those [`AvailNode::start_roles`] names.
pub struct AvailNode {
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT` of the management role.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the content role.
    pub content_url: String,
    /// `http://127.0.0.1:PORT` of the reporting role (MS-VAPR SetReport at `/`).
    pub reporting_url: String,
    /// `http://127.0.0.1:PORT` of the publishing role (MS-VAPR GetPackage at `/`).
    pub publishing_url: String,
    /// The bootstrap administrator's API token (empty without the management role).
    pub token: String,
    /// The node's data directory (`<data>/content` is the content store).
    pub data: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// The status code of `GET path` on `addr` (`host:port`), or `None` when the
/// server does not answer within two seconds.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The file in the data directory where the server writes the addresses it
/// bound (`avail_server::LISTEN_FILE`).
const LISTEN_FILE: &str = "listen.json";

/// Where a node's roles listen (`host:port`, port 0 for any).
struct Listen<'a> {
    management: &'a str,
    content: &'a str,
    reporting: &'a str,
    publishing: &'a str,
}

/// `host:port` of `url`, or any port when the role does not run (empty `url`).
fn addr_or_any(url: &str) -> &str {
    match url.trim_start_matches("http://") {
        "" => "127.0.0.1:0",
        addr => addr,
    }
}

/// `bin server` on `data` listening where `listen` says, logging (appending)
/// to `dir/server.log`.
fn spawn(
    bin: &Path,
    data: &Path,
    dir: &Path,
    listen: Listen<'_>,
    env: &[(String, String)],
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    // What a killed server left behind must not pass for the new one's.
    match std::fs::remove_file(data.join(LISTEN_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    Command::new(bin)
        .args(["server", "--data-dir"])
        .arg(data)
        .env("AVAIL_MANAGEMENT_LISTEN", listen.management)
        .env("AVAIL_CONTENT_LISTEN", listen.content)
        .env("AVAIL_REPORTING_LISTEN", listen.reporting)
        .env("AVAIL_PUBLISHING_LISTEN", listen.publishing)
        .env_remove("AVAIL_ROLES")
        .env_remove("AVAIL_PUBLISHING_MANAGEMENT_URLS")
        .env_remove("AVAIL_PUBLISHING_CREDENTIAL")
        .env_remove("AVAIL_MANAGEMENT_DATABASE_URL")
        .env_remove("AVAIL_REPORTING_DATABASE_URL")
        .env_remove("AVAIL_TOKEN")
        .env_remove("AVAIL_SERVER")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))
}

impl AvailNode {
    /// Start `bin server` (every role it has) with `database_url` as its
    /// Management DB (`None`: the embedded SQLite file; the Reporting DB is the
    /// embedded one unless `env` sets `AVAIL_REPORTING_DATABASE_URL`) and extra
    /// environment variables.
    pub fn start(
        bin: &Path,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AvailNode> {
        Self::start_roles(bin, database_url, None, env)
    }

    /// Start `bin server` with only `roles` (`AVAIL_ROLES`, e.g. `"publishing"`;
    /// `None`: every role), otherwise as [`AvailNode::start`]. It returns once
    /// ready (see the module documentation); the URLs of roles it does not run
    /// are empty.
    pub fn start_roles(
        bin: &Path,
        database_url: Option<&str>,
        roles: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AvailNode> {
        Self::launch(bin, database_url, roles, env, None)
    }

    /// Start a second node with `roles` (`None`: every role) over the
    /// Management DB another node already bootstrapped (`database_url`),
    /// otherwise as [`AvailNode::start_roles`]. The server writes no bootstrap
    /// token for a database that has an administrator, so `token` (the first
    /// node's) is put in the new node's data directory before it starts, and
    /// is its [`AvailNode::token`].
    pub fn start_joining(
        bin: &Path,
        database_url: &str,
        roles: Option<&str>,
        token: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AvailNode> {
        Self::launch(bin, Some(database_url), roles, env, Some(token))
    }

    fn launch(
        bin: &Path,
        database_url: Option<&str>,
        roles: Option<&str>,
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> anyhow::Result<AvailNode> {
        let dir = tempfile::tempdir()?;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(url) = database_url {
            env.push(("AVAIL_MANAGEMENT_DATABASE_URL".into(), url.to_owned()));
        }
        if let Some(roles) = roles {
            env.push(("AVAIL_ROLES".into(), roles.to_owned()));
        }
        let data = dir.path().join("data");
        if let Some(token) = token {
            std::fs::create_dir_all(&data)?;
            std::fs::write(data.join("admin-token"), format!("{token}\n"))?;
        }
        let any = "127.0.0.1:0";
        let listen = Listen {
            management: any,
            content: any,
            reporting: any,
            publishing: any,
        };
        let child = spawn(bin, &data, dir.path(), listen, &env)?;
        let mut node = AvailNode {
            child,
            bin: bin.to_owned(),
            url: String::new(),
            content_url: String::new(),
            reporting_url: String::new(),
            publishing_url: String::new(),
            token: String::new(),
            data,
            env,
            dir,
        };
        node.wait_ready()?;
        Ok(node)
    }

    /// Kill the process with SIGKILL (no shutdown at all) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop the process as a service manager does (SIGTERM: the server stops
    /// accepting and finishes what it is answering) and wait for it to exit,
    /// at most 30 s (then SIGKILL and an error).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        crate::process::stop(
            &mut self.child,
            "TERM",
            Duration::from_secs(30),
            "avail server",
        )
    }

    /// Start the server again on the same data directory, ports and settings
    /// (after [`AvailNode::kill`] or an exit), and wait until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(
            &self.bin,
            &self.data,
            self.dir.path(),
            Listen {
                management: addr_or_any(&self.url),
                content: addr_or_any(&self.content_url),
                reporting: addr_or_any(&self.reporting_url),
                publishing: addr_or_any(&self.publishing_url),
            },
            &self.env,
        )?;
        self.wait_ready()
    }

    /// Wait for the addresses the server bound, then for it to be ready.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(bound) = self.bound()? {
                let url = |role: &str| {
                    bound
                        .get(role)
                        .map_or_else(String::new, |addr| format!("http://{addr}"))
                };
                self.url = url("management");
                self.content_url = url("content");
                self.reporting_url = url("reporting");
                self.publishing_url = url("publishing");
                let token =
                    std::fs::read_to_string(self.data.join("admin-token")).unwrap_or_default();
                // With the management role, as before: it and the token; without, every role.
                let ready = match bound.get("management") {
                    Some(management) => {
                        !token.trim().is_empty() && http_status(management, "/readyz") == Some(200)
                    }
                    None => bound
                        .values()
                        .all(|addr| http_status(addr, "/readyz") == Some(200)),
                };
                if ready {
                    self.token = token.trim().to_owned();
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("avail server exited with {status}: {}", self.log());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("avail server did not start in 30 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address of each role in the server's listen file, once it has
    /// written it.
    fn bound(&self) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let path = self.data.join(LISTEN_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let bound = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a JSON object of strings: {text}", path.display())
        })?;
        Ok(Some(bound))
    }

    /// `host:port` of the management role.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// `host:port` of the content role.
    pub fn content_addr(&self) -> &str {
        self.content_url.trim_start_matches("http://")
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// `avail admin ARGS…` against this node, as its bootstrap administrator.
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("admin")
            .args(args)
            .env("AVAIL_SERVER", &self.url)
            .env("AVAIL_TOKEN", &self.token)
            .output()
            .expect("cannot run avail admin")
    }

    /// `avail admin ARGS…`, which must succeed; its standard output.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let o = self.admin(args);
        assert!(
            o.status.success(),
            "avail admin {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Every regular file in the content store.
    pub fn content_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path(), out),
                    Ok(t) if t.is_file() => out.push(e.path()),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data.join("content"), &mut out);
        out.sort();
        out
    }
}

impl Drop for AvailNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
