//! The cluster the HA scenarios run against, all real processes on loopback:
//! a pg_auto_failover formation (monitor, primary, synchronous secondary)
//! holding the Management and Reporting DBs; two management, two publishing
//! and two reporting nodes (`avail server` with one role each); two content
//! nodes over one shared content directory (Avail's content role and Debian's
//! nginx); HAProxy running `deploy/haproxy.cfg` as shipped in front of every
//! role; an nginx `proxy_cache` as a branch office's cache in front of the
//! content address; and an `avail client daemon` that knows the load-balanced
//! publishing address and, through the publishing document, both content
//! mirrors (the load-balanced content address first, the branch cache second).
//!
//! Everything is started by [`Cluster::start`] and stopped when the value is
//! dropped, also when a scenario fails halfway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::autofailover::Formation;
use crate::haproxy::Haproxy;
use crate::nginx::Nginx;
use crate::node::AvailNode;

/// The HAProxy configuration the project ships.
const SHIPPED_HAPROXY: &str = include_str!("../../../../deploy/haproxy.cfg");
/// The example application whose tree every harness package starts from.
const HELLO_TREE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/hello-avail/tree"
);
/// The application in every harness package.
pub const APP: &str = "hello-avail";
/// The group the client machine is in and packages are granted to.
pub const GROUP: &str = "ha";
/// The name of the package the client streams and runs.
pub const PACKAGE: &str = "HA App";
/// The PostgreSQL client.
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// The addresses (`127.0.0.1:PORT`) of HAProxy's frontends.
#[derive(Debug, Clone)]
pub struct Frontends {
    /// The admin API and the catalog sync.
    pub management: String,
    /// MS-VAPR publishing.
    pub publishing: String,
    /// MS-VAPR reporting.
    pub reporting: String,
    /// Package files.
    pub content: String,
}

/// Every component of the cluster; see the module documentation.
pub struct Cluster {
    avail: PathBuf,
    /// The client daemon. Fields drop in order: the client first (it
    /// unmounts), the database last.
    pub client: ClientDaemon,
    /// HAProxy in front of every role.
    pub haproxy: Haproxy,
    /// The branch office's nginx `proxy_cache` (the client's second mirror).
    pub branch: Nginx,
    /// The two publishing nodes.
    pub publishing: Vec<AvailNode>,
    /// The two reporting nodes.
    pub reporting: Vec<AvailNode>,
    /// The two management nodes.
    pub management: Vec<AvailNode>,
    /// The content node running Avail's content role.
    pub content: AvailNode,
    /// The content node running nginx over the same directory.
    pub nginx: Nginx,
    /// PostgreSQL with pg_auto_failover.
    pub formation: Formation,
    /// HAProxy's frontends.
    pub lb: Frontends,
    /// The administrator's API token.
    pub token: String,
    /// The client machine's credential.
    pub machine_credential: String,
    /// The VersionId of the package the client runs.
    pub version_id: String,
    /// The SHA-256 that `hello-avail` prints for its data (`data: …`).
    pub data_sha256: String,
    /// `HOME` of `avail run` (the user's layers).
    home: tempfile::TempDir,
    /// Packages, trees and the shared content directory.
    pub work: tempfile::TempDir,
}

/// `127.0.0.1:PORT` on a port that was free a moment ago.
fn free_addr() -> Result<String> {
    Ok(format!("127.0.0.1:{}", crate::free_port()?))
}

/// Standard output of a command that must succeed; its error output otherwise.
pub fn output_ok(what: &str, out: std::io::Result<Output>) -> Result<String> {
    let out = out.with_context(|| format!("cannot run {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what}: {} {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

impl Cluster {
    /// Start everything (see the module documentation) with a package of
    /// `payload_mb` MiB of random data published to the client's machine.
    pub fn start(avail: &Path, payload_mb: u64) -> Result<Cluster> {
        let work = tempfile::tempdir()?;
        let shared = work.path().join("content");
        std::fs::create_dir_all(&shared)?;
        let shared_env = shared.display().to_string();

        eprintln!("ha: starting the pg_auto_failover formation");
        let formation = Formation::start().context("pg_auto_failover formation")?;
        formation.create_database("avail_management")?;
        formation.create_database("avail_reporting")?;
        formation.create_database("ha_probe")?;
        formation.psql("ha_probe", "CREATE TABLE probe (id bigserial PRIMARY KEY)")?;
        let management_db = formation.url("avail_management");
        let reporting_db = formation.url("avail_reporting");
        output_ok(
            "avail db install",
            Command::new(avail)
                .args(["db", "install", "--management-url", &management_db])
                .args(["--reporting-url", &reporting_db])
                .output(),
        )?;

        let lb = Frontends {
            management: free_addr()?,
            publishing: free_addr()?,
            reporting: free_addr()?,
            content: free_addr()?,
        };
        eprintln!("ha: starting two management nodes");
        let content_env = [("AVAIL_CONTENT_ROOT", shared_env.as_str())];
        let first = AvailNode::start_roles(
            avail,
            Some(&management_db),
            Some("management"),
            &content_env,
        )?;
        let token = first.token.clone();
        let second = AvailNode::start_joining(
            avail,
            &management_db,
            Some("management"),
            &token,
            &content_env,
        )?;
        let management = vec![first, second];

        eprintln!("ha: starting the content nodes, the branch cache and two reporting nodes");
        let content = AvailNode::start_roles(avail, None, Some("content"), &content_env)?;
        let nginx = Nginx::serve(&shared)?;
        let branch = Nginx::proxy_cache(&format!("http://{}", lb.content))?;
        let reporting = (0..2)
            .map(|_| {
                AvailNode::start_roles(
                    avail,
                    None,
                    Some("reporting"),
                    &[("AVAIL_REPORTING_DATABASE_URL", reporting_db.as_str())],
                )
            })
            .collect::<Result<Vec<_>>>()?;

        let admin_direct = |args: &[&str]| -> Result<String> {
            output_ok(
                &format!("avail admin {}", args.join(" ")),
                Command::new(avail)
                    .arg("admin")
                    .args(args)
                    .env("AVAIL_SERVER", &management[0].url)
                    .env("AVAIL_TOKEN", &token)
                    .output(),
            )
        };
        eprintln!("ha: starting two publishing nodes");
        let management_urls = format!("{},{}", management[0].url, management[1].url);
        let content_base = format!("http://{}", lb.content);
        let mut publishing = Vec::new();
        for i in 1..=2 {
            let registered: Value = serde_json::from_str(&admin_direct(&[
                "--json",
                "server",
                "register",
                &format!("pub{i}"),
            ])?)?;
            let credential = registered["credential"]
                .as_str()
                .context("server register: no credential")?
                .to_owned();
            publishing.push(AvailNode::start_roles(
                avail,
                None,
                Some("publishing"),
                &[
                    ("AVAIL_PUBLISHING_MANAGEMENT_URLS", management_urls.as_str()),
                    ("AVAIL_PUBLISHING_CREDENTIAL", credential.as_str()),
                    ("AVAIL_PUBLISHING_CONTENT_BASE_URL", content_base.as_str()),
                    ("AVAIL_CONTENT_MIRRORS", branch.url().as_str()),
                ],
            )?);
        }

        eprintln!("ha: starting HAProxy with deploy/haproxy.cfg");
        let strip = |url: &str| url.trim_start_matches("http://").to_owned();
        let map: BTreeMap<String, String> = [
            ("10.0.0.10:8080", lb.management.clone()),
            ("10.0.0.10:8081", lb.publishing.clone()),
            ("10.0.0.10:8082", lb.reporting.clone()),
            ("10.0.0.10:8083", lb.content.clone()),
            ("10.0.0.11:8080", strip(&management[0].url)),
            ("10.0.0.12:8080", strip(&management[1].url)),
            ("10.0.0.11:8081", strip(&publishing[0].publishing_url)),
            ("10.0.0.12:8081", strip(&publishing[1].publishing_url)),
            ("10.0.0.11:8082", strip(&reporting[0].reporting_url)),
            ("10.0.0.12:8082", strip(&reporting[1].reporting_url)),
            ("10.0.0.11:8083", strip(&content.content_url)),
            ("10.0.0.13:8083", nginx.addr()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let haproxy = Haproxy::start(SHIPPED_HAPROXY, &map)?;

        eprintln!("ha: starting the client daemon");
        let client = ClientDaemon::start(avail)?;
        let home = tempfile::tempdir()?;
        let mut cluster = Cluster {
            avail: avail.to_owned(),
            client,
            haproxy,
            branch,
            publishing,
            reporting,
            management,
            content,
            nginx,
            formation,
            lb,
            token,
            machine_credential: String::new(),
            version_id: String::new(),
            data_sha256: String::new(),
            home,
            work,
        };
        cluster.wait_all_up(Duration::from_secs(30))?;
        cluster.setup_package(payload_mb)?;
        Ok(cluster)
    }

    /// (a) of the seed's procedures: a package added through the management
    /// API on the load-balanced address, granted to the client's machine and
    /// published; the client added as a machine and pointed at the
    /// load-balanced publishing address.
    fn setup_package(&mut self, payload_mb: u64) -> Result<()> {
        let tree = self.work.path().join("tree");
        output_ok(
            "cp -a",
            Command::new("cp")
                .arg("-a")
                .arg(HELLO_TREE)
                .arg(&tree)
                .output(),
        )?;
        let data = tree.join("opt/hello-avail/data");
        crate::random_file(&data.join("payload.bin"), payload_mb << 20, 13)?;
        let sum = output_ok(
            "sha256sum",
            Command::new("sh")
                .arg("-c")
                .arg("cat \"$1\"/* | sha256sum")
                .arg("sh")
                .arg(&data)
                .output(),
        )?;
        self.data_sha256 = sum.split_whitespace().next().unwrap_or_default().to_owned();
        let appv = self.work.path().join("ha-app.appv");
        let app = format!("{APP}=/opt/hello-avail/bin/{APP}");
        self.packer()
            .pack(&tree, &appv, PACKAGE, &["--app", &app])?;
        eprintln!("ha: (a) importing the package through the load balancer");
        let imported: Value =
            serde_json::from_str(&self.admin(&["--json", "package", "import", path(&appv)?])?)?;
        self.version_id = imported["version"]["version_id"]
            .as_str()
            .with_context(|| format!("package import: no version_id in {imported}"))?
            .to_owned();
        self.admin(&["group", "create", GROUP])?;
        let machine: Value = serde_json::from_str(&self.admin(&[
            "--json",
            "machine",
            "create",
            "ha-client",
            "--group",
            GROUP,
        ])?)?;
        self.machine_credential = machine["credential"]
            .as_str()
            .context("machine create: no credential")?
            .to_owned();
        self.admin(&["package", "grant", PACKAGE, GROUP])?;
        self.admin(&["package", "publish", PACKAGE])?;
        let publishing = format!("http://{}", self.lb.publishing);
        self.client.ok(&[
            "server",
            "add",
            &publishing,
            "--credential",
            &self.machine_credential,
        ])?;
        // The publishing nodes follow the catalog within a second.
        let started = Instant::now();
        loop {
            let synced = self.client.ok(&["sync"]);
            let listed = self.client.ok(&["--json", "package", "list"])?;
            if synced.is_ok() && listed.contains(&self.version_id) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "the client does not list the published package after 20 s: {listed} {:?}",
                    synced.err()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `avail package pack`, for a load thread too.
    pub fn packer(&self) -> Packer {
        Packer {
            avail: self.avail.clone(),
        }
    }

    /// `avail admin ARGS…` through the load-balanced management address.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let out = self.admin_client().output(args);
        output_ok(&format!("avail admin {}", args.join(" ")), out)
    }

    /// `avail admin` through the load-balanced management address, for a
    /// load thread.
    pub fn admin_client(&self) -> Admin {
        Admin {
            avail: self.avail.clone(),
            server: format!("http://{}", self.lb.management),
            token: self.token.clone(),
        }
    }

    /// `avail ha check` against the whole cluster — the load-balanced address
    /// of each role and every node behind it, all four content addresses,
    /// both databases — as an operator validates a deployment: whether every
    /// check passed, and its output (one line per check).
    pub fn ha_check(&self) -> Result<(bool, String)> {
        let mut command = Command::new(&self.avail);
        command
            .args(["ha", "check", "--management"])
            .arg(format!("http://{}", self.lb.management))
            .args(["--token", &self.token]);
        let publishing = self.publishing.iter().map(|n| n.publishing_url.clone());
        for url in std::iter::once(format!("http://{}", self.lb.publishing)).chain(publishing) {
            command.args(["--publishing", &url]);
        }
        let reporting = self.reporting.iter().map(|n| n.reporting_url.clone());
        for url in std::iter::once(format!("http://{}", self.lb.reporting)).chain(reporting) {
            command.args(["--reporting", &url]);
        }
        for url in [
            format!("http://{}", self.lb.content),
            self.content.content_url.clone(),
            self.nginx.url(),
            self.branch.url(),
        ] {
            command.args(["--content", &url]);
        }
        for db in ["avail_management", "avail_reporting"] {
            command.args(["--database", &self.formation.url(db)]);
        }
        let out = command.output().context("cannot run avail ha check")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// `avail run hello-avail` through the client daemon, as root with its own
    /// `HOME`; fails unless the application printed the SHA-256 of every
    /// byte of its data.
    pub fn run_app(&self) -> Result<()> {
        run_app(
            &self.avail,
            &self.client.socket(),
            self.home.path(),
            &self.data_sha256,
        )
    }

    /// What [`Cluster::run_app`] needs, for a load thread.
    pub fn app_runner(&self) -> impl FnMut() -> Result<Option<String>> + Send + 'static {
        let (avail, socket) = (self.avail.clone(), self.client.socket());
        let (home, sha) = (self.home.path().to_owned(), self.data_sha256.clone());
        move || run_app(&avail, &socket, &home, &sha).map(|()| None)
    }

    /// `psql` on `db` through the multi-host URL (so on the primary):
    /// tuples only, unaligned.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        psql(&self.formation.url(db), sql)
    }

    /// Wait until every Avail node answers `/readyz` with 200 and HAProxy has
    /// had time to mark it up again (2 good checks a second apart).
    pub fn wait_all_up(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let nodes = self
            .management
            .iter()
            .map(|n| n.url.clone())
            .chain(self.publishing.iter().map(|n| n.publishing_url.clone()))
            .chain(self.reporting.iter().map(|n| n.reporting_url.clone()))
            .chain([self.content.content_url.clone(), self.nginx.url()]);
        for url in nodes {
            let addr = url.trim_start_matches("http://").to_owned();
            while crate::http_status(&addr, "/readyz") != Some(200) {
                if started.elapsed() > timeout {
                    bail!("{url} is not ready after {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(2_500));
        Ok(())
    }
}

/// `avail package pack` of one `avail` binary.
#[derive(Clone)]
pub struct Packer {
    avail: PathBuf,
}

impl Packer {
    /// `avail package pack TREE -o OUT --name NAME EXTRA…`.
    pub fn pack(&self, tree: &Path, out: &Path, name: &str, extra: &[&str]) -> Result<()> {
        output_ok(
            "avail package pack",
            Command::new(&self.avail)
                .args(["package", "pack"])
                .arg(tree)
                .arg("-o")
                .arg(out)
                .args(["--name", name, "--level", "0"])
                .args(extra)
                .output(),
        )
        .map(drop)
    }
}

/// `avail admin` as the administrator against one management address.
#[derive(Clone)]
pub struct Admin {
    avail: PathBuf,
    server: String,
    token: String,
}

impl Admin {
    /// `avail admin ARGS…`, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(&self.avail)
            .arg("admin")
            .args(args)
            .env("AVAIL_SERVER", &self.server)
            .env("AVAIL_TOKEN", &self.token)
            .output()
    }
}

/// `path` as UTF-8.
pub fn path(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// See [`Cluster::run_app`].
fn run_app(avail: &Path, socket: &Path, home: &Path, sha256: &str) -> Result<()> {
    let out = output_ok(
        "avail run",
        Command::new(avail)
            .args(["run", APP])
            .env("AVAIL_CLIENT_SOCKET", socket)
            .env("HOME", home)
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null())
            .output(),
    )?;
    if !out.contains(&format!("data: {sha256}")) {
        bail!("avail run {APP}: the data's SHA-256 is not {sha256}: {out}");
    }
    Ok(())
}

/// `psql URL -c SQL`, tuples only and unaligned; fails on any error.
pub fn psql(url: &str, sql: &str) -> Result<String> {
    output_ok(
        "psql",
        Command::new(PSQL)
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "2")
            .output(),
    )
}

/// `avail client daemon` as root with its own state directory, socket and
/// mount root under a temporary directory; stopped with SIGTERM (it unmounts
/// what it mounted) when dropped, its mounts detached if it does not exit.
pub struct ClientDaemon {
    child: Option<Child>,
    avail: PathBuf,
    dir: tempfile::TempDir,
}

impl ClientDaemon {
    /// Start it (`AutoLoad` 0: blocks are streamed as read) and wait until it
    /// answers.
    pub fn start(avail: &Path) -> Result<ClientDaemon> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        for sub in ["state", "run", "mnt", "desktop"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        std::fs::write(state.join("config.toml"), "AutoLoad = 0\n")?;
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let child = Command::new(avail)
            .args(["client", "daemon", "--state-dir"])
            .arg(&state)
            .arg("--mount-root")
            .arg(dir.path().join("mnt"))
            .arg("--desktop-dir")
            .arg(dir.path().join("desktop"))
            .env("AVAIL_CLIENT_SOCKET", dir.path().join("run/client.sock"))
            .env_remove("AVAIL_CLIENT_STATE_DIR")
            .env_remove("AVAIL_CLIENT_MOUNT_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot run avail client daemon")?;
        let mut daemon = ClientDaemon {
            child: Some(child),
            avail: avail.to_owned(),
            dir,
        };
        let started = Instant::now();
        while daemon.ok(&["status"]).is_err() {
            if let Some(child) = daemon.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("avail client daemon exited with {status}: {}", daemon.log());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("avail client daemon does not answer: {}", daemon.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/client.sock")
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `avail client ARGS…`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        output_ok(
            &format!("avail client {}", args.join(" ")),
            self.command(args).output(),
        )
    }

    /// The `avail client ARGS…` command.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.avail);
        command
            .arg("client")
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        command
    }
}

impl Drop for ClientDaemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = crate::process::stop(
            &mut child,
            "TERM",
            Duration::from_secs(20),
            "avail client daemon",
        );
        // Whatever is still mounted under the mount root is detached, so the
        // temporary directory can go.
        let root = self.dir.path().join("mnt");
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for mount in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if Path::new(mount).starts_with(&root) {
                let _ = Command::new("umount").arg("-l").arg(mount).status();
            }
        }
    }
}
