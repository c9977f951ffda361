//! The client daemon end to end with the real `avail` binary, as root with
//! FUSE (issue 11, requirement 6). Each test starts its own server node,
//! client daemon (state directory, socket, mount root) and, where it needs
//! one, an nginx (Debian's `/usr/sbin/nginx`) serving the node's content
//! directory or a copy of it, and stops all of them when it ends. It proves:
//!
//! 1. a package imported, granted and published reaches the client by `sync`,
//!    and every file, directory and symlink under its mount has the bytes,
//!    size, mode and target of the tree it was packed from — streamed from the
//!    server's content role, and from nginx as the publishing server's content
//!    base URL;
//! 2. a content server killed in the middle of a 100 MB read, with a second
//!    mirror configured, does not fail the read: it completes with the right
//!    bytes from the other mirror;
//! 3. with every mirror down (refusing connections, then one accepting and
//!    never answering), a read of an uncached block fails with `EIO` within
//!    `ReadTimeout` plus 3 s (one wait, not one per kernel retry), and reads
//!    work again once a mirror is back;
//! 4. a mirror serving a corrupted block is bypassed: the read gets the right
//!    bytes from the other mirror;
//! 5. in Shared Content Store mode a full read leaves only the publishing
//!    feature block's blocks on disk (a 20 MB payload leaves < 1 MiB);
//! 6. the disk cache stays within `CacheQuota` (16 MiB, sampled throughout)
//!    while a 48 MB package is read in full, with the right bytes;
//! 7. an upgrade that changes one 1 MB file of a 100 MB package transfers
//!    less than 2 MB of the new version's file (counted in nginx's log);
//! 8. a publishing server that goes away leaves the client's packages
//!    mounted and readable (`sync` exits 69), also across a daemon restart
//!    while it is still down;
//! 9. an unprivileged user may list packages and sync, but `config set`,
//!    `server add`, `package add` and `package remove` exit 77;
//! 10. SIGTERM unmounts everything; SIGKILL leaves a stale mount that the
//!     next daemon start removes before mounting again.
//!
//! Content is random from a seeded xorshift generator, so a failure is
//! reproducible. Every wait is a bounded poll; the only timing assertion is
//! the `EIO` bound of case 3.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use avail_client::blocks::FAIL_FAST;
use avail_testkit::AvailNode;
use serde_json::Value;

/// How long any poll may go on before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// `MiB`.
const MB: u64 = 1 << 20;

/// The group packages are granted to and machines are in.
const GROUP: &str = "lab";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_avail"))
}

/// These tests mount FUSE file systems: they need root and `/dev/fuse`.
fn require_root() {
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
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some`, at most [`PATIENCE`]; panic with `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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

/// xorshift64: reproducible random bytes without a crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Write `len` random bytes (from `seed`) to `path`, creating its directory.
fn random_file(path: &Path, len: u64, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut rng = Rng::new(seed);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; MB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MB) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
}

/// Pack `tree` into `out` (stored, level 0: the payload is random anyway).
fn pack(tree: &Path, out: &Path, name: &str, version: &str, package_id: &str, version_id: &str) {
    pack_with(tree, out, name, version, package_id, version_id, &[]);
}

/// [`pack`] with further `avail package pack` arguments.
fn pack_with(
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

/// A one-file package: `TREE/opt/app/payload` of `len` random bytes.
struct OneFile {
    dir: tempfile::TempDir,
    package_id: String,
    version_id: String,
}

impl OneFile {
    fn new(len: u64, seed: u64) -> OneFile {
        OneFile::with_fb0(len, seed, 0)
    }

    /// With a further file, `TREE/opt/app/fb0.bin` of `fb0` bytes (none when
    /// 0), in the publishing feature block.
    fn with_fb0(len: u64, seed: u64, fb0: u64) -> OneFile {
        let dir = tempfile::tempdir().unwrap();
        let package_id = format!("{seed:08x}-0000-4000-8000-000000000001");
        let version_id = format!("{seed:08x}-0000-4000-8000-0000000000a1");
        random_file(&dir.path().join("tree/opt/app/payload"), len, seed);
        let mut extra = Vec::new();
        if fb0 > 0 {
            random_file(&dir.path().join("tree/opt/app/fb0.bin"), fb0, seed + 1);
            extra.extend(["--fb0", "/opt/app/fb0.bin"]);
        }
        pack_with(
            &dir.path().join("tree"),
            &dir.path().join("p.appv"),
            "Payload",
            "1.0",
            &package_id,
            &version_id,
            &extra,
        );
        OneFile {
            dir,
            package_id,
            version_id,
        }
    }

    fn appv(&self) -> PathBuf {
        self.dir.path().join("p.appv")
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("tree/opt/app/payload")
    }

    /// `BASE/packages/P/V.appv`.
    fn url(&self, base: &str) -> String {
        format!(
            "{base}/packages/{}/{}.appv",
            self.package_id, self.version_id
        )
    }
}

/// Read `a` and `b` in full and panic at the first difference.
fn assert_same_file(a: &Path, b: &Path) {
    let mut fa = std::fs::File::open(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let mut fb = std::fs::File::open(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    let (mut ba, mut bb) = (vec![0u8; MB as usize], vec![0u8; MB as usize]);
    let mut at = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
        let nb = read_full(&mut fb, &mut bb).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
        assert!(
            na == nb && ba[..na] == bb[..nb],
            "{} and {} differ in the MiB at {at} ({na} and {nb} bytes read)",
            a.display(),
            b.display()
        );
        if na == 0 {
            return;
        }
        at += na as u64;
    }
}

/// Read until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a tree holds, per relative path.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, size: u64 },
    Link { target: PathBuf },
}

fn entries(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let mode = meta.mode() & 0o7777;
            let entry = if meta.file_type().is_symlink() {
                Entry::Link {
                    target: std::fs::read_link(&path).unwrap(),
                }
            } else if meta.is_dir() {
                walk(root, &path, out);
                Entry::Dir { mode }
            } else {
                Entry::File {
                    mode,
                    size: meta.len(),
                }
            };
            out.insert(rel, entry);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Every entry of `mount` is the source tree's, and every file has its bytes.
fn assert_same_tree(source: &Path, mount: &Path) {
    let want = entries(source);
    let got = entries(mount);
    assert_eq!(got, want, "the mount's tree is not the packed tree");
    for (rel, entry) in &want {
        if matches!(entry, Entry::File { .. }) {
            assert_same_file(&source.join(rel), &mount.join(rel));
        }
    }
}

// ---------------------------------------------------------------------------
// Servers

/// A node with every role; its content role on a port chosen here, and the
/// publishing document's package URLs starting with `content_base` (default:
/// the content role).
fn start_node(content_base: Option<&str>) -> AvailNode {
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
fn publish(node: &AvailNode, appv: &Path, package: &str) {
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
fn machine(node: &AvailNode, name: &str) -> String {
    let _ = node.admin(&["group", "create", GROUP]);
    let out = node.admin_ok(&["--json", "machine", "create", name, "--group", GROUP]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["credential"].as_str().unwrap().to_owned()
}

/// Debian's nginx serving a directory, in the foreground, logging each
/// request's `$bytes_sent`.
struct Nginx {
    child: Option<Child>,
    prefix: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    const BIN: &'static str = "/usr/sbin/nginx";

    fn start(root: &Path) -> Nginx {
        assert!(
            Path::new(Self::BIN).exists(),
            "{} is missing: install Debian's nginx (scripts/test does)",
            Self::BIN
        );
        let prefix = tempfile::tempdir().unwrap();
        let p = prefix.path().display();
        let port = free_port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  default_type application/octet-stream;\n\
             log_format bytes '$request_method $request_uri [$http_range] $status $bytes_sent';\n\
             access_log {p}/access.log bytes;\n\
             client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
            root = root.display()
        );
        std::fs::write(prefix.path().join("nginx.conf"), conf).unwrap();
        let mut nginx = Nginx {
            child: None,
            prefix,
            port,
        };
        nginx.restart();
        nginx
    }

    /// Start it (again) on the same port and configuration.
    fn restart(&mut self) {
        self.kill();
        let p = self.prefix.path();
        let child = Command::new(Self::BIN)
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p.join("stderr.log")).unwrap())
            .spawn()
            .expect("cannot run nginx");
        self.child = Some(child);
        let addr = self.addr();
        wait_for("nginx to listen", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "nginx exited with {status}: {}{}",
                    std::fs::read_to_string(p.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
                );
            }
            TcpStream::connect(&addr).ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The byte ranges (`bytes=A-B`) served with 206 to requests whose URI
    /// contains `needle`.
    fn ranges_served(&self, needle: &str) -> Vec<std::ops::RangeInclusive<u64>> {
        let log =
            std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(needle) && l.contains("] 206 "))
            .filter_map(|l| {
                let range = l.split("[bytes=").nth(1)?.split(']').next()?;
                let (a, b) = range.split_once('-')?;
                Some(a.parse().ok()?..=b.parse().ok()?)
            })
            .collect()
    }

    /// `$bytes_sent` summed over the requests whose URI contains `needle`.
    fn bytes_sent(&self, needle: &str) -> u64 {
        let log =
            std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The client daemon

/// `avail client daemon` with its own state directory, socket and mount root.
struct Client {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Client {
    /// A daemon with `AutoLoad` 0 and the settings in `config` (`config.toml` lines).
    fn start(config: &str) -> Client {
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

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/client.sock")
    }

    fn mount_root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Start the daemon and wait until it answers.
    fn spawn(&mut self) {
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
    fn signal(&mut self, signal: &str) {
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
    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("client")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("cannot run avail client")
    }

    /// `avail client ARGS…`, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
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

    fn packages(&self) -> Vec<Value> {
        let out = self.ok(&["--json", "package", "list"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Add a server and sync until `version_id` is mounted; its mount.
    fn subscribe(&self, node: &AvailNode, credential: &str, version_id: &str) -> PathBuf {
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
    fn sync_until_mounted(&self, version_id: &str) -> PathBuf {
        wait_for(&format!("{version_id} to be mounted by sync"), || {
            let _ = self.run(&["sync"]);
            self.mounted(version_id)
        })
    }

    /// The mount of `version_id`, when the list shows one and it is mounted.
    fn mounted(&self, version_id: &str) -> Option<PathBuf> {
        let p = self
            .packages()
            .into_iter()
            .find(|p| p["version_id"] == version_id)?;
        let mount = PathBuf::from(p["mount"].as_str()?);
        self.mounts().contains(&mount).then_some(mount)
    }

    /// The mount points under the mount root, from the mount table.
    fn mounts(&self) -> Vec<PathBuf> {
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
    fn cache_bytes(&self) -> u64 {
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

// ---------------------------------------------------------------------------
// 1. Published, synced, mounted, read back

/// A tree of files at and around block boundaries, an empty file, a 5 MB
/// file, nested directories, modes and symlinks.
fn varied_tree(root: &Path) {
    let files: [(&str, u64, u32); 8] = [
        ("opt/app/bin/app", 200_000, 0o755),
        ("opt/app/lib/libapp.so", 5 * MB + 12_345, 0o644),
        ("opt/app/share/block", 65_536, 0o644),
        ("opt/app/share/block-plus-one", 65_537, 0o600),
        ("opt/app/share/small.txt", 13, 0o644),
        ("opt/app/share/empty", 0, 0o644),
        ("opt/app/share/deep/er/still/file", 300_001, 0o640),
        ("etc/app/app.conf", 4_000, 0o644),
    ];
    for (i, (path, len, mode)) in files.iter().enumerate() {
        let path = root.join(path);
        random_file(&path, *len, 100 + i as u64);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::os::unix::fs::symlink("app", root.join("opt/app/bin/app-link")).unwrap();
    std::os::unix::fs::symlink("../lib/libapp.so", root.join("opt/app/bin/lib-link")).unwrap();
    std::os::unix::fs::symlink("/opt/app/bin/app", root.join("opt/app/abs-link")).unwrap();
}

fn published_package_reads_back(via_nginx: bool) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    varied_tree(&tree);
    let (pid, vid) = (
        "a1000000-0000-4000-8000-000000000001",
        "a1000000-0000-4000-8000-0000000000a1",
    );
    pack(&tree, &dir.path().join("p.appv"), "Varied", "1.0", pid, vid);

    // nginx serves the node's content directory, and the node says so.
    let nginx_root = dir.path().join("nginx-root");
    let nginx = via_nginx.then(|| Nginx::start(&nginx_root));
    let node = start_node(nginx.as_ref().map(Nginx::url).as_deref());
    if nginx.is_some() {
        std::os::unix::fs::symlink(node.data.join("content"), &nginx_root).unwrap();
    }
    publish(&node, &dir.path().join("p.appv"), "Varied");
    let credential = machine(&node, "m1");

    let client = Client::start("");
    let mount = client.subscribe(&node, &credential, vid);
    assert_eq!(
        mount,
        client.mount_root().join(pid).join(vid),
        "a version is mounted at ROOT/<PackageId>/<VersionId>"
    );
    assert_same_tree(&tree, &mount);
    if let Some(nginx) = &nginx {
        assert!(
            nginx.bytes_sent(vid) > 5 * MB,
            "nginx served the package's blocks"
        );
    }
}

#[test]
fn a_published_package_reads_back_byte_for_byte_from_the_content_role() {
    published_package_reads_back(false);
}

#[test]
fn a_published_package_reads_back_byte_for_byte_from_nginx() {
    published_package_reads_back(true);
}

// ---------------------------------------------------------------------------
// 2–4. Mirrors

/// Read `mounted` in 1 MiB steps comparing with `source`, counting into
/// `done`; at `pause_at` bytes wait until `go` is set.
fn read_and_compare(
    source: PathBuf,
    mounted: PathBuf,
    done: Arc<AtomicU64>,
    pause_at: u64,
    go: Arc<AtomicBool>,
) -> Result<u64, String> {
    let mut s = std::fs::File::open(&source).map_err(|e| e.to_string())?;
    let mut m = std::fs::File::open(&mounted).map_err(|e| format!("open: {e}"))?;
    let (mut bs, mut bm) = (vec![0u8; MB as usize], vec![0u8; MB as usize]);
    let mut at = 0u64;
    loop {
        if at >= pause_at {
            let started = Instant::now();
            while !go.load(Ordering::SeqCst) {
                if started.elapsed() > PATIENCE {
                    return Err("the test never let the read go on".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let ns = read_full(&mut s, &mut bs).map_err(|e| e.to_string())?;
        let nm = read_full(&mut m, &mut bm).map_err(|e| format!("read at {at}: {e}"))?;
        if ns != nm || bs[..ns] != bm[..nm] {
            return Err(format!(
                "the MiB at {at} differs ({ns} source bytes, {nm} read)"
            ));
        }
        if ns == 0 {
            return Ok(at);
        }
        at += ns as u64;
        done.store(at, Ordering::SeqCst);
    }
}

#[test]
fn a_content_server_killed_mid_read_fails_over_to_the_other_mirror() {
    require_root();
    let size = 100 * MB;
    let pkg = OneFile::new(size, 0x2000_0001);
    let mut node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);
    let nginx = Nginx::start(&node.data.join("content"));

    let client = Client::start("ReadTimeout = 20\n");
    client.ok(&[
        "package",
        "add",
        &pkg.url(&node.content_url),
        "--mirror",
        &pkg.url(&nginx.url()),
    ]);
    let mount = client.mounted(&pkg.version_id).expect("package add mounts");
    let mounted = mount.join("opt/app/payload");

    let done = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let reader = {
        let (source, done, go) = (pkg.source(), done.clone(), go.clone());
        std::thread::spawn(move || read_and_compare(source, mounted, done, 20 * MB, go))
    };
    wait_for("the read to pass 20 MB", || {
        (done.load(Ordering::SeqCst) >= 20 * MB || reader.is_finished()).then_some(())
    });
    assert_eq!(
        nginx.bytes_sent(&pkg.version_id),
        0,
        "the second mirror served nothing while the first one was up"
    );
    let killed_at = done.load(Ordering::SeqCst);
    node.kill();
    go.store(true, Ordering::SeqCst);
    let read = reader.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "the read failed after the first mirror was killed: {e}\n{}",
            client.log()
        )
    });
    assert_eq!(read, size);
    eprintln!(
        "failover: the second mirror served {} bytes after the first was killed at {} bytes",
        nginx.bytes_sent(&pkg.version_id),
        killed_at
    );
    assert!(
        nginx.bytes_sent(&pkg.version_id) > 50 * MB,
        "the rest came from the second mirror"
    );
}

#[test]
fn with_every_mirror_down_a_read_fails_with_eio_and_works_once_one_returns() {
    require_root();
    const READ_TIMEOUT: u64 = 5;
    let size = 8 * MB;
    let pkg = OneFile::new(size, 0x3000_0001);
    let mut node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);
    let mut nginx = Nginx::start(&node.data.join("content"));

    let client = Client::start(&format!("ReadTimeout = {READ_TIMEOUT}\n"));
    client.ok(&[
        "package",
        "add",
        &pkg.url(&node.content_url),
        "--mirror",
        &pkg.url(&nginx.url()),
    ]);
    let mount = client.mounted(&pkg.version_id).expect("package add mounts");
    let file = std::fs::File::open(mount.join("opt/app/payload")).unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, 0)
        .expect("the first block reads while the mirrors are up");

    node.kill();
    nginx.kill();
    let started = Instant::now();
    let err = file
        .read_exact_at(&mut buf, size / 2)
        .expect_err("an uncached block read with every mirror down");
    let elapsed = started.elapsed();
    eprintln!("EIO after {elapsed:?} with ReadTimeout {READ_TIMEOUT} s: {err}");
    assert_eq!(err.raw_os_error(), Some(5), "EIO, not {err:?}");
    assert!(
        elapsed < Duration::from_secs(READ_TIMEOUT + 3),
        "the read failed after {elapsed:?}, past ReadTimeout {READ_TIMEOUT} s + 3 s"
    );

    // The first mirror's address now accepts connections (the kernel's
    // backlog) and never answers: ReadTimeout bounds the read all the same.
    let hung = TcpListener::bind(node.content_addr())
        .expect("cannot listen on the killed content role's address");
    let started = Instant::now();
    let err = file
        .read_exact_at(&mut buf, size / 4)
        .expect_err("an uncached block read with one mirror hung and one down");
    let elapsed = started.elapsed();
    eprintln!("EIO after {elapsed:?} with a hung mirror and ReadTimeout {READ_TIMEOUT} s: {err}");
    assert_eq!(err.raw_os_error(), Some(5), "EIO, not {err:?}");
    assert!(
        elapsed < Duration::from_secs(READ_TIMEOUT + 3),
        "the read with a hung mirror failed after {elapsed:?}, past ReadTimeout {READ_TIMEOUT} s + 3 s"
    );
    drop(hung);

    nginx.restart();
    // Blocks that failed less than FAIL_FAST ago fail at once (the kernel's
    // immediate retry of a failed page read): past it, they are fetched.
    std::thread::sleep(FAIL_FAST);
    file.read_exact_at(&mut buf, size / 2)
        .unwrap_or_else(|e| panic!("the read fails after a mirror returned: {e}"));
    let mut want = vec![0u8; 4096];
    std::fs::File::open(pkg.source())
        .unwrap()
        .read_exact_at(&mut want, size / 2)
        .unwrap();
    assert!(
        buf == want,
        "the bytes read after the mirror returned differ"
    );
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
}

#[test]
fn a_mirror_serving_a_corrupted_block_is_bypassed() {
    require_root();
    let size = 8 * MB;
    let pkg = OneFile::new(size, 0x4000_0001);
    let node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);

    // A copy of the package file with one byte in the middle flipped.
    let bad_root = tempfile::tempdir().unwrap();
    let rel = format!("packages/{}/{}.appv", pkg.package_id, pkg.version_id);
    let mut bytes = std::fs::read(node.data.join("content").join(&rel)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::create_dir_all(bad_root.path().join(&rel).parent().unwrap()).unwrap();
    std::fs::write(bad_root.path().join(&rel), &bytes).unwrap();
    let nginx = Nginx::start(bad_root.path());

    let client = Client::start("");
    client.ok(&[
        "package",
        "add",
        &pkg.url(&nginx.url()),
        "--mirror",
        &pkg.url(&node.content_url),
    ]);
    let mount = client.mounted(&pkg.version_id).expect("package add mounts");
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
    let middle = middle as u64;
    assert!(
        nginx
            .ranges_served(&pkg.version_id)
            .iter()
            .any(|r| r.contains(&middle)),
        "the corrupted mirror (the first) served the corrupted byte at {middle}: {:?}",
        nginx.ranges_served(&pkg.version_id)
    );
}

// ---------------------------------------------------------------------------
// 5–6. The cache

#[test]
fn shared_content_store_mode_keeps_only_the_publishing_feature_block_on_disk() {
    require_root();
    let size = 20 * MB;
    let fb0 = 300_000;
    let pkg = OneFile::with_fb0(size, 0x5000_0001, fb0);
    let node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);

    let client = Client::start("");
    client.ok(&["config", "set", "SharedContentStoreMode", "1"]);
    client.ok(&["package", "add", &pkg.url(&node.content_url)]);
    let mount = client.mounted(&pkg.version_id).expect("package add mounts");
    let cached_at_add = client.cache_bytes();
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
    assert_same_file(
        &pkg.dir.path().join("tree/opt/app/fb0.bin"),
        &mount.join("opt/app/fb0.bin"),
    );
    let cached = client.cache_bytes();
    eprintln!(
        "SCS: {cached_at_add} bytes of blocks on disk after the add, {cached} after reading {size} + {fb0}"
    );
    assert!(
        cached_at_add >= fb0,
        "the publishing feature block ({fb0} bytes) is on disk once the package is added: {cached_at_add} bytes"
    );
    assert!(
        cached < fb0 + MB,
        "{cached} bytes of blocks on disk after reading a {size}-byte payload outside FB0 (and {fb0} bytes in FB0) in SCS mode"
    );
}

#[test]
fn the_cache_quota_holds_under_a_read_of_three_times_its_size() {
    require_root();
    let quota = 16 * MB;
    let size = 48 * MB;
    let pkg = OneFile::new(size, 0x6000_0001);
    let node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);

    // CacheQuota takes effect at start: it is in config.toml before it.
    let client = Arc::new(Client::start(&format!("CacheQuota = {quota}\n")));
    client.ok(&["package", "add", &pkg.url(&node.content_url)]);
    let mount = client.mounted(&pkg.version_id).expect("package add mounts");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut max, mut samples) = (0, 0u32);
            while !stop.load(Ordering::SeqCst) {
                max = client.cache_bytes().max(max);
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (max, samples)
        })
    };
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
    stop.store(true, Ordering::SeqCst);
    let (max, samples) = sampler.join().unwrap();
    let after = client.cache_bytes();
    eprintln!("quota {quota}: at most {max} bytes of blocks in {samples} samples, {after} after");
    assert!(
        max <= quota && after <= quota,
        "the cache held {max} bytes of blocks at most ({samples} samples), {after} after the read; the quota is {quota}"
    );
    assert!(samples > 1, "the cache was sampled during the read");
}

// ---------------------------------------------------------------------------
// 7. Upgrades

#[test]
fn an_upgrade_changing_one_file_transfers_little_more_than_that_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (v1_tree, v2_tree) = (dir.path().join("v1"), dir.path().join("v2"));
    // 9 × 11 MB unchanged, one 1 MB file that changes.
    for i in 0..9u64 {
        let rel = format!("opt/big/data-{i}.bin");
        random_file(&v1_tree.join(&rel), 11 * MB, 0x7000_0000 + i);
        std::fs::create_dir_all(v2_tree.join(&rel).parent().unwrap()).unwrap();
        std::fs::hard_link(v1_tree.join(&rel), v2_tree.join(&rel)).unwrap();
    }
    random_file(&v1_tree.join("opt/big/changed.bin"), MB, 0x7000_0100);
    random_file(&v2_tree.join("opt/big/changed.bin"), MB, 0x7000_0200);
    let pid = "a7000000-0000-4000-8000-000000000001";
    let (v1, v2) = (
        "a7000000-0000-4000-8000-0000000000a1",
        "a7000000-0000-4000-8000-0000000000a2",
    );
    pack(&v1_tree, &dir.path().join("v1.appv"), "Big", "1.0", pid, v1);
    pack(&v2_tree, &dir.path().join("v2.appv"), "Big", "2.0", pid, v2);

    let nginx_root = dir.path().join("nginx-root");
    let nginx = Nginx::start(&nginx_root);
    let node = start_node(Some(&nginx.url()));
    std::os::unix::fs::symlink(node.data.join("content"), &nginx_root).unwrap();
    publish(&node, &dir.path().join("v1.appv"), v1);
    let credential = machine(&node, "m1");

    let client = Client::start("");
    let mount1 = client.subscribe(&node, &credential, v1);
    client.ok(&["package", "mount", v1]);
    assert!(
        nginx.bytes_sent(v1) >= 100 * MB,
        "v1 was loaded in full from nginx ({} bytes)",
        nginx.bytes_sent(v1)
    );
    assert_same_tree(&v1_tree, &mount1);

    publish(&node, &dir.path().join("v2.appv"), v2);
    let mount2 = client.sync_until_mounted(v2);
    assert_same_tree(&v2_tree, &mount2);
    let sent = nginx.bytes_sent(v2);
    eprintln!(
        "upgrade: nginx served {} bytes of v1's file, {sent} of v2's",
        nginx.bytes_sent(v1)
    );
    assert!(
        sent < 2 * MB,
        "nginx served {sent} bytes of v2's file for an upgrade that changed 1 MB"
    );
}

// ---------------------------------------------------------------------------
// 8. A publishing server that goes away

#[test]
fn packages_outlive_their_publishing_server_also_across_a_daemon_restart() {
    require_root();
    let pkg = OneFile::new(6 * MB, 0x8000_0001);
    // The node's content is served by nginx, which outlives it.
    let nginx_root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&nginx_root.path().join("content"));
    let mut node = start_node(Some(&nginx.url()));
    std::os::unix::fs::symlink(node.data.join("content"), nginx_root.path().join("content"))
        .unwrap();
    publish(&node, &pkg.appv(), "Payload");
    let credential = machine(&node, "m1");

    let mut client = Client::start("");
    let mount = client.subscribe(&node, &credential, &pkg.version_id);
    let mut head = vec![0u8; 4096];
    std::fs::File::open(mount.join("opt/app/payload"))
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();

    node.kill();
    let o = client.run(&["--json", "sync"]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "sync with the publishing server down: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        client.mounted(&pkg.version_id).as_ref(),
        Some(&mount),
        "the package stays mounted"
    );
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));

    client.signal("TERM");
    client.spawn();
    let again = wait_for(
        "the package to be mounted from the last known state",
        || client.mounted(&pkg.version_id),
    );
    assert_eq!(again, mount);
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
}

// ---------------------------------------------------------------------------
// 9. Who may do what

const USER: &str = "avail-test-user";

#[test]
fn an_unprivileged_user_may_look_and_sync_but_not_change_anything() {
    require_root();
    let exists = Command::new("id").arg(USER).output().unwrap();
    if !exists.status.success() {
        let o = Command::new("useradd").args(["-M", USER]).output().unwrap();
        assert!(
            o.status.success(),
            "useradd -M {USER}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let pkg = OneFile::new(MB, 0x9000_0001);
    let node = start_node(None);
    publish(&node, &pkg.appv(), "Payload");
    let credential = machine(&node, "m1");
    let client = Client::start("");
    client.subscribe(&node, &credential, &pkg.version_id);
    // The user must reach the socket (its directory is the test's).
    std::fs::set_permissions(client.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        client.socket().parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let as_user = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", USER, "--"])
            .arg(bin())
            .arg("client")
            .arg("--socket")
            .arg(client.socket())
            .args(args)
            .current_dir("/")
            .output()
            .expect("cannot run runuser")
    };
    let show = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let list = as_user(&["--json", "package", "list"]);
    assert!(list.status.success(), "package list: {}", show(&list));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&pkg.version_id),
        "the user sees the machine's package: {}",
        show(&list)
    );
    let sync = as_user(&["--json", "sync"]);
    assert!(sync.status.success(), "sync: {}", show(&sync));

    let url = pkg.url(&node.content_url);
    for args in [
        &["config", "set", "AutoLoad", "2"][..],
        &["server", "add", "http://127.0.0.1:9", "--credential", "x"][..],
        &["package", "add", url.as_str()][..],
        &["package", "remove", "Payload"][..],
    ] {
        let o = as_user(args);
        assert_eq!(o.status.code(), Some(77), "{args:?}: {}", show(&o));
    }
    // Nothing changed.
    assert_eq!(
        client.ok(&["config", "get", "AutoLoad"]).trim(),
        "AutoLoad = 0"
    );
    assert!(client.mounted(&pkg.version_id).is_some());
}

// ---------------------------------------------------------------------------
// 10. Signals

#[test]
fn sigterm_unmounts_everything_and_a_sigkill_leaves_a_mount_the_next_start_removes() {
    require_root();
    let pkg = OneFile::new(MB, 0xA000_0001);
    let node = start_node(None);
    publish(&node, &pkg.appv(), "Payload");
    let credential = machine(&node, "m1");
    let mut client = Client::start("");
    let mount = client.subscribe(&node, &credential, &pkg.version_id);

    client.signal("TERM");
    assert_eq!(
        client.mounts(),
        Vec::<PathBuf>::new(),
        "SIGTERM left mounts behind"
    );

    client.spawn();
    let again = wait_for("the package to be mounted after a restart", || {
        client.mounted(&pkg.version_id)
    });
    assert_eq!(again, mount);
    client.signal("KILL");
    assert_eq!(
        client.mounts(),
        vec![mount.clone()],
        "a killed daemon leaves its mount"
    );

    client.spawn();
    wait_for("the package to be mounted after a SIGKILL", || {
        client.mounted(&pkg.version_id)
    });
    assert_eq!(
        client.mounts(),
        vec![mount.clone()],
        "the stale mount was removed before mounting again (not stacked)"
    );
    assert_same_file(&pkg.source(), &mount.join("opt/app/payload"));
}
