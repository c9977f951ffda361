//! The read-only FUSE filesystem of one package version (the `fuser` crate).
//!
//! A mount shows the package's `Root\` tree: every payload file (a block-map
//! file named `Root\…`) under its path below `Root\`, `\` becoming `/`, as
//! `avail_format::extract` lays it out; directories implied by those paths;
//! and from `FilesystemMetadata.xml` the permission bits of files and
//! directories, symbolic links with their targets, and empty directories.
//! Sizes are the block map's uncompressed sizes. Reads go through
//! [`PackageReader::read_blocking`]; any error becomes `EIO`.
//!
//! Every time of an entry (access, modification, change) is its modification
//! time from the metadata (`Modified`), the same on every mount; an entry
//! without one (packages made before Avail recorded times) shows the Unix
//! epoch.
//!
//! What the format does not carry, and what the mount shows instead: owners (every
//! entry belongs to the user and group that mounted it), hard links (every
//! file has one link), and special files. Modes are shown as packed except the
//! setuid and setgid bits, which are cleared (the files are not the packager's
//! to run as); a path the metadata does not list gets `0644` (file) or `0755`
//! (directory). The kernel checks modes itself (`default_permissions`).
//!
//! Inode numbers are stable: the root is 1 and every other path is numbered
//! in the sorted order of its package name, so the same version always gets
//! the same numbers. A version never changes, so attributes and entries are
//! given a long TTL ([`TTL`]) and files are opened with `FOPEN_KEEP_CACHE`:
//! the kernel page cache keeps what was read across opens. As root, the
//! mount's read-ahead is raised to [`READ_AHEAD_KB`], so that a sequential
//! read comes to the daemon in 1 MiB requests rather than 128 KiB ones.
//!
//! The mount is read-only (`ro`); an `open` for writing is refused with
//! `EROFS` (the kernel refuses it first, since the mount is `ro`). Requests
//! are served by [`MountOptions::threads`] worker threads (`fuser`'s
//! multi-threaded session loop, each thread with its own cloned `/dev/fuse`
//! descriptor), so one read waiting on a slow block does not stall others.
//!
//! # What mounting needs
//!
//! `/dev/fuse`. `fuser` is built without libfuse (no headers or `libfuse3` at
//! build or run time): as root it mounts with the `mount(2)` system call
//! itself; otherwise it runs the setuid helper `fusermount3` (Debian package
//! `fuse3`), which must then be installed. [`Mount::unmount`], or dropping the
//! [`Mount`], unmounts (`umount2`, or `fusermount3 -u` for a non-root user)
//! and joins the worker threads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avail_format::fsmeta::EntryKind;
use avail_format::names;
use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request, SessionACL,
};

use crate::blocks::PackageReader;

/// The attribute and entry TTL given to the kernel: a version never changes.
pub const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Mode of a path the metadata does not list.
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;
/// `stat`'s block size.
const BLKSIZE: u32 = 64 * 1024;

/// What a node is.
#[derive(Debug, Clone)]
enum Kind {
    /// A directory; its children by name, in name order.
    Dir(BTreeMap<OsString, u64>),
    /// A payload file: its index in the package.
    File(usize),
    /// A symbolic link and its target.
    Symlink(OsString),
}

#[derive(Debug, Clone)]
struct Node {
    parent: u64,
    mode: u32,
    /// Last modification, seconds since the epoch (0 when not recorded).
    mtime: i64,
    size: u64,
    kind: Kind,
}

/// The tree of one package version, built once at mount time.
#[derive(Debug)]
struct Tree {
    /// Node `ino` is `nodes[ino - 1]`.
    nodes: Vec<Node>,
}

/// The path segments of a package name below `Root\`, if it is there.
fn below_root(name: &str) -> Option<Vec<&str>> {
    let mut segments = name.split('\\');
    let first = segments.next()?;
    if !names::same_part(first, "Root") {
        return None;
    }
    let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
    Some(rest)
}

impl Tree {
    fn build(reader: &PackageReader) -> Self {
        let package = reader.remote().package();
        #[derive(Clone)]
        enum Want {
            Dir,
            File(usize, u64),
            Symlink(String),
        }
        // Every path (segments below Root), what it is, and its mode if listed.
        let mut paths: BTreeMap<Vec<String>, (Want, Option<u32>)> = BTreeMap::new();
        let add_parents = |paths: &mut BTreeMap<Vec<String>, (Want, Option<u32>)>,
                           segs: &[&str]| {
            for n in 1..segs.len() {
                let key: Vec<String> = segs[..n].iter().map(|s| s.to_string()).collect();
                paths.entry(key).or_insert((Want::Dir, None));
            }
        };
        for (i, f) in package.files().iter().enumerate() {
            let Some(segs) = below_root(&f.map.name) else {
                continue;
            };
            if segs.is_empty() {
                continue;
            }
            add_parents(&mut paths, &segs);
            let key: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
            paths.insert(key, (Want::File(i, f.map.size), None));
        }
        if let Some(meta) = package.filesystem_metadata() {
            for entry in &meta.entries {
                let Some(segs) = below_root(&entry.name) else {
                    continue;
                };
                let key: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
                match &entry.kind {
                    EntryKind::Directory => {
                        add_parents(&mut paths, &segs);
                        let slot = paths.entry(key).or_insert((Want::Dir, None));
                        if matches!(slot.0, Want::Dir) {
                            slot.1 = Some(entry.mode);
                        }
                    }
                    EntryKind::File => {
                        if let Some(slot) = paths.get_mut(&key)
                            && matches!(slot.0, Want::File(..))
                        {
                            slot.1 = Some(entry.mode);
                        }
                    }
                    EntryKind::Symlink { target } => {
                        if segs.is_empty() || paths.contains_key(&key) {
                            continue;
                        }
                        add_parents(&mut paths, &segs);
                        paths.insert(key, (Want::Symlink(target.clone()), Some(entry.mode)));
                    }
                }
            }
        }
        // The root directory's mode, if the metadata lists `Root` itself.
        let root_entry = package.filesystem_metadata().and_then(|m| {
            m.entries.iter().find(|e| {
                matches!(e.kind, EntryKind::Directory)
                    && below_root(&e.name).is_some_and(|s| s.is_empty())
            })
        });
        let root_mode = root_entry.map(|e| e.mode);
        // Modification times, where the metadata records them.
        let mtimes: HashMap<Vec<String>, i64> = package
            .filesystem_metadata()
            .map(|m| {
                m.entries
                    .iter()
                    .filter_map(|e| {
                        let key = below_root(&e.name)?.iter().map(|s| s.to_string()).collect();
                        Some((key, e.mtime?))
                    })
                    .collect()
            })
            .unwrap_or_default();

        let mut nodes = vec![Node {
            parent: 1,
            mode: clean_mode(root_mode.unwrap_or(DEFAULT_DIR_MODE)),
            mtime: root_entry.and_then(|e| e.mtime).unwrap_or(0),
            size: 0,
            kind: Kind::Dir(BTreeMap::new()),
        }];
        let mut ino_of: HashMap<Vec<String>, u64> = HashMap::new();
        ino_of.insert(Vec::new(), 1);
        // BTreeMap order: a parent sorts before its children.
        for (key, (want, mode)) in paths {
            // `Root` itself is node 1, above.
            if key.is_empty() {
                continue;
            }
            let ino = nodes.len() as u64 + 1;
            let parent_key = &key[..key.len() - 1];
            let Some(&parent) = ino_of.get(parent_key) else {
                continue;
            };
            let (kind, size, default) = match want {
                Want::Dir => (Kind::Dir(BTreeMap::new()), 0, DEFAULT_DIR_MODE),
                Want::File(i, size) => (Kind::File(i), size, DEFAULT_FILE_MODE),
                Want::Symlink(t) => {
                    let len = t.len() as u64;
                    (Kind::Symlink(OsString::from(t)), len, 0o777)
                }
            };
            let name = OsString::from(key[key.len() - 1].clone());
            match &mut nodes[parent as usize - 1].kind {
                Kind::Dir(children) => {
                    children.insert(name, ino);
                }
                // A file with children: the names clash; keep the file.
                _ => continue,
            }
            nodes.push(Node {
                parent,
                mode: clean_mode(mode.unwrap_or(default)),
                mtime: mtimes.get(&key).copied().unwrap_or(0),
                size,
                kind,
            });
            ino_of.insert(key, ino);
        }
        Tree { nodes }
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        let i = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        self.nodes.get(i)
    }
}

/// Permission bits shown: setuid and setgid cleared.
fn clean_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// The filesystem of one mounted package version.
struct PackageFs {
    reader: PackageReader,
    tree: Tree,
    uid: u32,
    gid: u32,
    read_seen: Option<Arc<AtomicBool>>,
    read_log: Option<Arc<ReadLog>>,
}

impl PackageFs {
    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let kind = match node.kind {
            Kind::Dir(_) => FileType::Directory,
            Kind::File(_) => FileType::RegularFile,
            Kind::Symlink(_) => FileType::Symlink,
        };
        let nlink = match &node.kind {
            Kind::Dir(children) => {
                2 + children
                    .values()
                    .filter(|c| matches!(self.tree.nodes[**c as usize - 1].kind, Kind::Dir(_)))
                    .count() as u32
            }
            _ => 1,
        };
        let since_epoch = Duration::from_secs(node.mtime.unsigned_abs());
        let t: SystemTime = if node.mtime >= 0 {
            UNIX_EPOCH.checked_add(since_epoch)
        } else {
            UNIX_EPOCH.checked_sub(since_epoch)
        }
        .unwrap_or(UNIX_EPOCH);
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: node.mode as u16,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }
}

impl Filesystem for PackageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(node) = self.tree.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let Kind::Dir(children) = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        match children.get(name) {
            Some(&ino) => {
                let attr = self.attr(ino, &self.tree.nodes[ino as usize - 1]);
                reply.entry(&TTL, &attr, Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.node(ino) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.node(ino).map(|n| &n.kind) {
            Some(Kind::Symlink(target)) => reply.data(target.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc_o_trunc() != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.tree.node(ino).map(|n| &n.kind) {
            Some(Kind::File(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(Kind::Dir(_)) => reply.error(Errno::EISDIR),
            Some(Kind::Symlink(_)) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(node) = self.tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Kind::File(file) = node.kind else {
            return reply.error(Errno::EISDIR);
        };
        if offset >= node.size || size == 0 {
            return reply.data(&[]);
        }
        if let Some(seen) = &self.read_seen {
            seen.store(true, Ordering::Relaxed);
        }
        if let Some(log) = &self.read_log {
            let blocks = crate::fetch::blocks_of(offset, u64::from(size).min(node.size - offset));
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(file)
                .or_default()
                .extend(blocks);
        }
        let len = u64::from(size).min(node.size - offset);
        match self.reader.read_blocking(file, offset, len) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => {
                tracing::warn!(ino = ino.0, offset, len, error = %e, "FUSE read failed");
                reply.error(Errno::EIO);
            }
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.tree.node(ino).map(|n| &n.kind) {
            Some(Kind::Dir(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Kind::Dir(children) = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (node.parent, FileType::Directory, OsStr::new("..")),
        ];
        let entries = dots.into_iter().chain(children.iter().map(|(name, &c)| {
            let kind = match self.tree.nodes[c as usize - 1].kind {
                Kind::Dir(_) => FileType::Directory,
                Kind::File(_) => FileType::RegularFile,
                Kind::Symlink(_) => FileType::Symlink,
            };
            (c, kind, name.as_os_str())
        }));
        // The offset of an entry is its index + 1: the next call resumes after it.
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if self.tree.node(ino).is_none() {
            return reply.error(Errno::ENOENT);
        }
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bytes: u64 = self.tree.nodes.iter().map(|n| n.size).sum();
        let blocks = bytes.div_ceil(u64::from(BLKSIZE));
        reply.statfs(
            blocks,
            0,
            0,
            self.tree.nodes.len() as u64,
            0,
            BLKSIZE,
            255,
            BLKSIZE,
        );
    }
}

/// `O_TRUNC` (Linux, every architecture Avail builds for).
const fn libc_o_trunc() -> i32 {
    0o1000
}

/// How to mount a package version.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Worker threads serving FUSE requests (at least 1).
    pub threads: usize,
    /// Let every user (not only the one mounting) use the mount (`allow_other`;
    /// a non-root user needs `user_allow_other` in `/etc/fuse.conf`).
    pub allow_other: bool,
    /// The source name shown in `/proc/mounts`.
    pub fs_name: String,
    /// Set on the first read of a file's bytes (the daemon's `AutoLoad` 1:
    /// "packages that were used").
    pub read_seen: Option<Arc<AtomicBool>>,
    /// Every block read through the mount, by file index (recording a
    /// launch's primary feature block).
    pub read_log: Option<Arc<ReadLog>>,
}

/// Blocks read, by the package's file index.
pub type ReadLog = Mutex<BTreeMap<usize, BTreeSet<usize>>>;

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            threads: 4,
            allow_other: false,
            fs_name: "avail".into(),
            read_seen: None,
            read_log: None,
        }
    }
}

/// A mounted package version. Dropping it, or [`Mount::unmount`], unmounts.
pub struct Mount {
    session: Option<BackgroundSession>,
    mountpoint: std::path::PathBuf,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl Mount {
    /// The directory the package is mounted on.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmount and wait for the worker threads to finish.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmounting failed");
        }
    }
}

/// Mount the package version `reader` reads read-only on `mountpoint` (an
/// existing directory), served by background worker threads.
pub fn mount(
    reader: PackageReader,
    mountpoint: &Path,
    options: &MountOptions,
) -> io::Result<Mount> {
    if !Path::new("/dev/fuse").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/dev/fuse is missing: load the fuse module (or pass the device to the container)",
        ));
    }
    let tree = Tree::build(&reader);
    let (uid, gid) = effective_ids();
    let fs = PackageFs {
        reader,
        tree,
        uid,
        gid,
        read_seen: options.read_seen.clone(),
        read_log: options.read_log.clone(),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(options.fs_name.clone()),
        MountOption::Subtype("avail".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    raise_read_ahead(mountpoint);
    Ok(Mount {
        session: Some(session),
        mountpoint: mountpoint.to_owned(),
    })
}

/// The kernel's read-ahead on a mount, in KiB: how much one sequential read
/// asks of the filesystem at a time. The kernel offers 128 KiB at `INIT` and
/// a filesystem cannot raise it there; 1 MiB — the largest FUSE read with
/// `max_pages` at its limit of 256 pages, which `fuser` asks for — turns a
/// sequential read's 128 KiB requests into 1 MiB ones, a quarter to an eighth
/// of the round trips through the daemon.
const READ_AHEAD_KB: u64 = 1024;

/// Raises the mount's read-ahead to [`READ_AHEAD_KB`] through its backing
/// device's `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb` (root only; a mount
/// made by another user keeps the kernel's default, logged).
fn raise_read_ahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let result = std::fs::metadata(mountpoint).and_then(|meta| {
        let dev = meta.dev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        std::fs::write(
            format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
            READ_AHEAD_KB.to_string(),
        )
    });
    if let Err(e) = result {
        tracing::debug!(mountpoint = %mountpoint.display(), error = %e, "the kernel's read-ahead stays at its default");
    }
}

/// Unmounts every FUSE filesystem mounted at or under `root` (lazily, so a
/// mount whose daemon was killed goes away even while something holds it
/// open) and returns the mount points it unmounted. A daemon calls this at
/// start: a killed daemon's mounts answer every access with `ENOTCONN`.
pub fn unmount_stale(root: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut gone = Vec::new();
    // Deepest first, so that nested mounts go before the ones holding them.
    let mut stale: Vec<std::path::PathBuf> = table
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = unescape_mountinfo(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?;
            (fstype.starts_with("fuse") && point.starts_with(root)).then_some(point)
        })
        .collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in stale {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => gone.push(point),
            Err(e) => {
                tracing::warn!(mountpoint = %point.display(), error = %e, "cannot unmount a stale mount")
            }
        }
    }
    Ok(gone)
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline and
/// backslash as three octal digits after a backslash.
fn unescape_mountinfo(field: &str) -> std::path::PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(OsString::from_vec(out))
}

/// The process's effective user and group ids: `/proc/self` belongs to them.
fn effective_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped_as_the_kernel_escapes_them() {
        assert_eq!(
            unescape_mountinfo(r"/run/avail/a\040b\011c\134d\012e"),
            std::path::PathBuf::from("/run/avail/a b\tc\\d\ne")
        );
        // Not an escape: kept as it is.
        assert_eq!(
            unescape_mountinfo(r"/x\9y\04"),
            std::path::PathBuf::from(r"/x\9y\04")
        );
    }
}
