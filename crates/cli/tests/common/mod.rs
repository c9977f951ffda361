//! The harness shared by the client's end-to-end tests (`client.rs`,
//! `run.rs`): the `avail` binary, root and FUSE checks, bounded polls,
//! reproducible content and packing, a server node, Debian's nginx and the
//! client daemon with its own state directory, socket and mount root.
//! Each test crate uses part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use avail_testkit::AvailNode;
use serde_json::Value;
/// How long any poll may go on before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `MiB`.
pub const MB: u64 = 1 << 20;

/// The group packages are granted to and machines are in.
pub const GROUP: &str = "lab";

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_avail"))
}

/// These tests mount FUSE file systems: they need root and `/dev/fuse`.
pub fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .expect("cannot stat /proc/self")
        .uid();
    assert_eq!(
        uid, 0,
        "the client tests mount FUSE file systems and must run as root (CI runs them as root)"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "the client tests need /dev/fuse (FUSE) on this machine"
    );
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some`, at most [`PATIENCE`]; panic with `what`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Content

/// Write `len` random bytes (from `seed`) to `path`, creating its directory
/// ([`avail_testkit::random_file`]).
pub fn random_file(path: &Path, len: u64, seed: u64) {
    avail_testkit::random_file(path, len, seed).unwrap();
}

/// Pack `tree` into `out` (stored, level 0: the payload is random anyway).
pub fn pack(
    tree: &Path,
    out: &Path,
    name: &str,
    version: &str,
    package_id: &str,
    version_id: &str,
) {
    pack_with(tree, out, name, version, package_id, version_id, &[]);
}

/// [`pack`] with further `avail package pack` arguments.
pub fn pack_with(
    tree: &Path,
    out: &Path,
    name: &str,
    version: &str,
    package_id: &str,
    version_id: &str,
    extra: &[&str],
) {
    let o = Command::new(bin())
        .args(["package", "pack"])
        .arg(tree)
        .arg("-o")
        .arg(out)
        .args(["--name", name, "--version", version])
        .args(["--package-id", package_id, "--version-id", version_id])
        .args(["--level", "0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "avail package pack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
// ---------------------------------------------------------------------------
// Servers

/// A node with every role; its content role on a port chosen here, and the
/// publishing document's package URLs starting with `content_base` (default:
/// the content role).
pub fn start_node(content_base: Option<&str>) -> AvailNode {
    let listen = format!("127.0.0.1:{}", free_port());
    let base = content_base.map_or_else(|| format!("http://{listen}"), str::to_owned);
    AvailNode::start(
        bin(),
        None,
        &[
            ("AVAIL_CONTENT_LISTEN", &listen),
            ("AVAIL_PUBLISHING_CONTENT_BASE_URL", &base),
        ],
    )
    .expect("cannot start avail server")
}

/// Import `appv` and publish `package` (name or VersionId) to [`GROUP`].
pub fn publish(node: &AvailNode, appv: &Path, package: &str) {
    node.admin_ok(&["package", "import", appv.to_str().unwrap()]);
    // The group may exist already (a second version).
    let _ = node.admin(&["group", "create", GROUP]);
    let grant = node.admin(&["package", "grant", package, GROUP]);
    let text = String::from_utf8_lossy(&grant.stderr);
    assert!(
        grant.status.success() || text.contains("already"),
        "avail admin package grant: {text}"
    );
    node.admin_ok(&["package", "publish", package]);
}

/// A machine in [`GROUP`]; its credential.
pub fn machine(node: &AvailNode, name: &str) -> String {
    let _ = node.admin(&["group", "create", GROUP]);
    let out = node.admin_ok(&["--json", "machine", "create", name, "--group", GROUP]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["credential"].as_str().unwrap().to_owned()
}

/// Debian's nginx serving a directory ([`avail_testkit::Nginx::serve`]), in
/// the foreground, logging each request's `$bytes_sent`.
pub struct Nginx(avail_testkit::Nginx);

impl Nginx {
    pub fn start(root: &Path) -> Nginx {
        Nginx(avail_testkit::Nginx::serve(root).expect("cannot start nginx"))
    }

    /// Start it (again) on the same port and configuration.
    pub fn restart(&mut self) {
        self.0.restart().expect("cannot restart nginx");
    }

    pub fn kill(&mut self) {
        self.0.kill();
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The byte ranges (`bytes=A-B`) served with 206 to requests whose URI
    /// contains `needle`.
    pub fn ranges_served(&self, needle: &str) -> Vec<std::ops::RangeInclusive<u64>> {
        self.0
            .access_log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("] 206 "))
            .filter_map(|l| {
                let range = l.split("[bytes=").nth(1)?.split(']').next()?;
                let (a, b) = range.split_once('-')?;
                Some(a.parse().ok()?..=b.parse().ok()?)
            })
            .collect()
    }

    /// `$bytes_sent` summed over the requests whose URI contains `needle`.
    pub fn bytes_sent(&self, needle: &str) -> u64 {
        self.0
            .access_log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

// ---------------------------------------------------------------------------
// The client daemon

/// `avail client daemon` with its own state directory, socket and mount root.
pub struct Client {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Client {
    /// A daemon with `AutoLoad` 0 and the settings in `config` (`config.toml` lines).
    pub fn start(config: &str) -> Client {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::create_dir_all(dir.path().join("mnt")).unwrap();
        std::fs::write(state.join("config.toml"), format!("AutoLoad = 0\n{config}")).unwrap();
        let mut client = Client { child: None, dir };
        client.spawn();
        client
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/client.sock")
    }

    pub fn mount_root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Start the daemon and wait until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["client", "daemon", "--state-dir"])
            .arg(self.state())
            .arg("--mount-root")
            .arg(self.mount_root())
            .arg("--desktop-dir")
            .arg(self.dir.path().join("desktop"))
            .env("AVAIL_CLIENT_SOCKET", self.socket())
            .env_remove("AVAIL_CLIENT_STATE_DIR")
            .env_remove("AVAIL_CLIENT_MOUNT_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run avail client daemon");
        self.child = Some(child);
        wait_for("the client daemon to answer", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("avail client daemon exited with {status}: {}", self.log());
            }
            self.run(&["status"]).status.success().then_some(())
        });
    }

    /// Send `signal` (`TERM`, `KILL`) and wait for the daemon to exit.
    pub fn signal(&mut self, signal: &str) {
        let mut child = self.child.take().expect("the daemon is not running");
        let o = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "kill -{signal}: {o:?}");
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not exit within {PATIENCE:?} of SIG{signal}: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `avail client ARGS…` as root.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("client")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("cannot run avail client")
    }

    /// `avail client ARGS…`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "avail client {args:?} exited with {}: {}{}\ndaemon log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn packages(&self) -> Vec<Value> {
        let out = self.ok(&["--json", "package", "list"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Add a server and sync until `version_id` is mounted; its mount.
    pub fn subscribe(&self, node: &AvailNode, credential: &str, version_id: &str) -> PathBuf {
        self.ok(&[
            "server",
            "add",
            &node.publishing_url,
            "--credential",
            credential,
        ]);
        self.sync_until_mounted(version_id)
    }

    /// `sync` (again) until `version_id` is listed with a live mount.
    pub fn sync_until_mounted(&self, version_id: &str) -> PathBuf {
        wait_for(&format!("{version_id} to be mounted by sync"), || {
            let _ = self.run(&["sync"]);
            self.mounted(version_id)
        })
    }

    /// The mount of `version_id`, when the list shows one and it is mounted.
    pub fn mounted(&self, version_id: &str) -> Option<PathBuf> {
        let p = self
            .packages()
            .into_iter()
            .find(|p| p["version_id"] == version_id)?;
        let mount = PathBuf::from(p["mount"].as_str()?);
        self.mounts().contains(&mount).then_some(mount)
    }

    /// The mount points under the mount root, from the mount table.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let root = self.mount_root();
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|m| {
                PathBuf::from(
                    m.replace("\\040", " ")
                        .replace("\\011", "\t")
                        .replace("\\012", "\n")
                        .replace("\\134", "\\"),
                )
            })
            .filter(|m| m.starts_with(&root) && *m != root)
            .collect()
    }

    /// The bytes of the block files in the disk cache.
    pub fn cache_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.state().join("cache/blocks"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .output();
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && started.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut left = self.mounts();
        left.sort();
        for m in left.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
    }
}
