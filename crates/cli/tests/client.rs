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
use std::io::{ErrorKind, Read as _};
use std::net::TcpListener;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use avail_client::blocks::FAIL_FAST;

mod common;

use common::*;

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
    // A sample walks 256 directories while blocks come and go: it can count a
    // block evicted behind it and one added ahead of it in the same walk. So
    // a sample taken during the read may exceed the quota by the blocks that
    // changed during one walk (a few, bounded here by 8); once the read is
    // over, the walk is exact and must be within the quota. (The cache's own
    // tests check the quota at every instant under concurrent inserts.)
    const WALK_SLACK: u64 = 8 * (64 * 1024 + 8);
    assert!(
        max <= quota + WALK_SLACK && after <= quota,
        "the cache held {max} bytes of blocks at most ({samples} samples), {after} after the read; the quota is {quota}"
    );
    assert!(samples > 1, "the cache was sampled during the read");
    // Removing the package frees its blocks (App-V's Remove-AppvClientPackage).
    assert!(after > 0);
    client.ok(&["package", "remove", &pkg.version_id]);
    assert_eq!(
        client.cache_bytes(),
        0,
        "the removed package's blocks are still in the cache"
    );
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
