//! The FUSE filesystem (`fs`) against an in-test HTTP mirror (hyper): a
//! packed tree with nested and empty directories, a multi-block file, an
//! executable and a symlink is mounted in a temporary directory and checked
//! with `std::fs` — bytes, listings, modes, symlink targets, writes refused —
//! and the mount is gone after unmount and after drop. Needs `/dev/fuse` and
//! root (or `fusermount3`); without `/dev/fuse` the tests fail, they do not
//! skip.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

use avail_client::blocks::{CacheMode, PackageReader};
use avail_client::cache::DiskCache;
use avail_client::fetch::{Fetcher, RemotePackage, package_path};
use avail_client::fs::{MountOptions, mount};
use avail_format::{BLOCK_SIZE, Limits, NoProgress, PackOptions, pack};
use uuid::Uuid;

mod common;
use common::{Mirror, config, fill, mirror};
const PKG: Uuid = Uuid::from_u128(0x6666);
const VER: Uuid = Uuid::from_u128(0x7777);

/// Regular files of the source tree: path below the package root, content, mode.
fn files() -> Vec<(&'static str, Vec<u8>, u32)> {
    vec![
        ("opt/app/bin/app", fill(1, 5 * BLOCK_SIZE + 321), 0o755),
        (
            "opt/app/lib/deep/nested/data.bin",
            fill(2, 2 * BLOCK_SIZE),
            0o644,
        ),
        ("opt/app/readme.txt", b"hello, avail\n".to_vec(), 0o644),
        ("opt/app/private", fill(3, 100), 0o600),
        ("opt/app/empty-file", Vec::new(), 0o644),
        ("usr/share/doc/copyright", fill(4, 4000), 0o444),
    ]
}

/// Build the source tree in `src`.
fn make_tree(src: &Path) {
    for (path, content, mode) in files() {
        let p = src.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(src.join("opt/app/empty")).unwrap();
    fs::set_permissions(src.join("opt/app/empty"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("bin/app", src.join("opt/app/run")).unwrap();
    // A known modification time, which the mount must show.
    let file = fs::File::options()
        .write(true)
        .open(src.join("opt/app/readme.txt"))
        .unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(README_MTIME))
        .unwrap();
}

/// The modification time `make_tree` gives `opt/app/readme.txt`.
const README_MTIME: u64 = 1_600_000_000;

fn pack_tree(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    make_tree(&src);
    let out = dir.join("out.appv");
    let options = PackOptions {
        name: "FUSE Test".into(),
        package_id: Some(PKG),
        version_id: Some(VER),
        ..PackOptions::default()
    };
    pack(&src, &out, &options, &NoProgress).unwrap();
    fs::read(out).unwrap()
}

/// Whether `dir` is a mount point (listed in `/proc/self/mounts`).
fn is_mounted(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap()))
}

/// The kernel read-ahead (KiB) of the filesystem mounted on `dir`, from its
/// `MAJOR:MINOR` in `/proc/self/mountinfo`.
fn read_ahead_kb(dir: &Path) -> u64 {
    let dir = dir.canonicalize().unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let device = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&dir.to_str().unwrap()))
        .map(|f| f[2].to_owned())
        .expect("the mount is in mountinfo");
    fs::read_to_string(format!("/sys/class/bdi/{device}/read_ahead_kb"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the FUSE tests need it (load the fuse module, or run the \
         container with --device /dev/fuse) and root or fusermount3"
    );
}

/// A package served by a mirror, a reader for it, and a mount point.
struct Setup {
    server: Mirror,
    reader: PackageReader,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let package = pack_tree(dir.path());
    let m = mirror(vec![(package_path(PKG, VER), package)]).await;
    let fetcher = Fetcher::new(std::slice::from_ref(&m.base), config()).unwrap();
    let remote = RemotePackage::open(fetcher, package_path(PKG, VER), Limits::default())
        .await
        .unwrap();
    let cache = DiskCache::open(dir.path().join("cache"), 1 << 30).unwrap();
    cache.set_fsync(false);
    let reader = PackageReader::new(remote, Arc::new(cache), CacheMode::Normal);
    fs::create_dir(dir.path().join("mnt")).unwrap();
    Setup {
        server: m,
        reader,
        dir,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_mount_shows_the_tree_and_unmounts() {
    let s = setup().await;
    let mnt = s.dir.path().join("mnt");
    let reader = s.reader.clone();
    let mnt2 = mnt.clone();
    // The checks use blocking std::fs calls served by this runtime's fetcher:
    // run them off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let mount = mount(reader, &mnt2, &MountOptions::default()).expect("mounting");
        assert!(is_mounted(&mnt2));
        let root = mnt2.as_path();

        // Every file's bytes and mode.
        for (path, content, mode) in files() {
            let p = root.join(path);
            let got = fs::read(&p).unwrap_or_else(|e| panic!("reading {path}: {e}"));
            assert!(got == content, "{path}: bytes differ");
            let md = fs::symlink_metadata(&p).unwrap();
            assert!(md.is_file(), "{path}");
            assert_eq!(md.len(), content.len() as u64, "{path}");
            assert_eq!(md.permissions().mode() & 0o7777, mode, "{path}: mode");
        }
        // A read in the middle of the multi-block file, across a block boundary.
        let (_, big, _) = &files()[0];
        let mut f = fs::File::open(root.join("opt/app/bin/app")).unwrap();
        f.seek(SeekFrom::Start(BLOCK_SIZE as u64 - 10)).unwrap();
        let mut buf = vec![0; 100];
        f.read_exact(&mut buf).unwrap();
        assert!(buf[..] == big[BLOCK_SIZE - 10..BLOCK_SIZE + 90]);
        drop(f);
        // The executable bit.
        let exe = fs::metadata(root.join("opt/app/bin/app")).unwrap();
        assert_ne!(exe.permissions().mode() & 0o111, 0);
        // The modification time recorded at pack time.
        let readme = fs::metadata(root.join("opt/app/readme.txt")).unwrap();
        assert_eq!(
            readme.modified().unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(README_MTIME)
        );

        // Listings, with the empty directory and the symlink.
        assert_eq!(names(root), ["opt", "usr"]);
        assert_eq!(
            names(&root.join("opt/app")),
            [
                "bin",
                "empty",
                "empty-file",
                "lib",
                "private",
                "readme.txt",
                "run"
            ]
        );
        assert_eq!(names(&root.join("opt/app/lib/deep/nested")), ["data.bin"]);
        assert!(names(&root.join("opt/app/empty")).is_empty());
        let empty = fs::symlink_metadata(root.join("opt/app/empty")).unwrap();
        assert!(empty.is_dir());
        assert_eq!(empty.permissions().mode() & 0o7777, 0o750);
        assert!(
            fs::symlink_metadata(root.join("opt/app/lib"))
                .unwrap()
                .is_dir()
        );

        // The symlink and reading through it.
        let link = root.join("opt/app/run");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("bin/app"));
        assert!(fs::read(&link).unwrap() == *big);

        // Inode numbers are stable across lookups.
        use std::os::unix::fs::MetadataExt;
        let a = fs::metadata(root.join("opt/app/readme.txt")).unwrap().ino();
        let b = fs::metadata(root.join("opt/app/readme.txt")).unwrap().ino();
        assert_eq!(a, b);
        assert_eq!(fs::metadata(root).unwrap().ino(), 1);

        // Nothing can be written, created or removed.
        let err = fs::OpenOptions::new()
            .write(true)
            .open(root.join("opt/app/readme.txt"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(30), "EROFS expected: {err}");
        assert!(fs::write(root.join("opt/new"), b"x").is_err());
        assert!(fs::create_dir(root.join("opt/newdir")).is_err());
        assert!(fs::remove_file(root.join("opt/app/readme.txt")).is_err());
        assert!(fs::read(root.join("opt/app/missing")).is_err());

        // Several readers at once.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = root.join("opt/app/lib/deep/nested/data.bin");
                std::thread::spawn(move || fs::read(p).unwrap())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap() == files()[1].1);
        }

        mount.unmount().expect("unmounting");
        assert!(!is_mounted(&mnt2), "still mounted after unmount()");
        assert!(
            names(&mnt2).is_empty(),
            "the mount point is not empty after unmount"
        );
    })
    .await
    .unwrap();
    assert!(!is_mounted(&mnt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_drop_unmounts() {
    let s = setup().await;
    let mnt = s.dir.path().join("mnt");
    let reader = s.reader.clone();
    let before = s.server.requests();
    tokio::task::spawn_blocking(move || {
        let mount = mount(reader, &mnt, &MountOptions::default()).expect("mounting");
        assert!(is_mounted(&mnt));
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                read_ahead_kb(&mnt),
                1024,
                "the mount's read-ahead is raised"
            );
        }
        assert_eq!(names(&mnt), ["opt", "usr"]);
        assert_eq!(
            fs::read(mnt.join("opt/app/readme.txt")).unwrap(),
            b"hello, avail\n"
        );
        drop(mount);
        assert!(!is_mounted(&mnt), "still mounted after drop");
        assert!(names(&mnt).is_empty());
    })
    .await
    .unwrap();
    assert!(s.server.requests() > before, "the read went to the mirror");
}
