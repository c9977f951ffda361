//! The virtual environment an application runs in: a private mount namespace
//! in which each top-level directory a package provides (`/opt`, `/usr`, …)
//! is an overlay of the package's mounted tree over the host's directory,
//! with the user's writes going to a copy-on-write layer of their own.
//!
//! Done directly with the kernel's namespaces (`unshare(2)`, `mount(2)`
//! through `nix`) rather than with bubblewrap: Debian 12's bubblewrap (0.8)
//! has no overlay mounts, and the few steps needed are the ones below.
//!
//! [`enter_and_exec`] is meant for a fresh, single-threaded process (the
//! kernel refuses a user namespace to a threaded one); it never returns on
//! success, since it becomes the application:
//!
//! 1. the lower layers are the package trees, highest priority first (a
//!    connection group's members in order), then the host's directory;
//! 2. for a user other than root, a new user namespace maps the user to
//!    themself (so files they write are theirs on disk, and anything owned by
//!    another user, root included, stays out of reach: no privilege is
//!    gained — set-user-ID bits never apply, the overlays are `nosuid`);
//! 3. a new mount namespace with private propagation, so no mount reaches
//!    the host, and nothing is left mounted there when the application and
//!    its children are gone;
//! 4. per top-level directory `T` of any package: an overlay on `/T` with
//!    `upperdir=STATE/upper/T`, `workdir=STATE/work/T`; a `T` the host does not
//!    have, or one of the kernel's (`proc`, `sys`, `dev`, `run`, `tmp`), is
//!    skipped (and said so);
//! 5. the working directory is entered again (to see the overlays), and the
//!    program is executed with its arguments and environment.
//!
//! As in App-V, a user may write in the package's directories (create,
//! replace and delete files there); those writes land in their layer, seen
//! by them alone. Files the package ships are read-only to them unless the
//! package made them writable for others. Everything else the user may write
//! on the host they still write on the host.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid};

/// Top-level directories never overlaid: the kernel's and the system's
/// runtime state.
const NEVER: [&str; 6] = ["proc", "sys", "dev", "run", "tmp", "boot"];

/// What a launch overlays, and where the user's writes go.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The package trees (mounts), highest priority first.
    pub lowers: Vec<PathBuf>,
    /// The user's copy-on-write state for this package or group (`upper/`
    /// and `work/` inside).
    pub state: PathBuf,
}

/// A top-level directory of a package that is not overlaid, and why.
pub type Skipped = (OsString, String);

/// The top-level directories the overlays cover: each directory at the top
/// of any lower that the host also has and that is not a system directory
/// (`/proc`, `/sys`, `/dev`, `/run`, `/tmp`, `/boot`); the others, with the
/// reason, for the caller to say.
pub fn top_directories(layers: &Layers) -> io::Result<(Vec<OsString>, Vec<Skipped>)> {
    let mut covered = Vec::new();
    let mut skipped = Vec::new();
    for lower in &layers.lowers {
        for entry in std::fs::read_dir(lower)? {
            let entry = entry?;
            let name = entry.file_name();
            if covered.contains(&name) || skipped.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if !entry.file_type()?.is_dir() {
                skipped.push((name, "not a directory".to_owned()));
            } else if NEVER.iter().any(|n| name == *n) {
                skipped.push((name, "the system's own, never overlaid".to_owned()));
            } else if !Path::new("/").join(&name).is_dir() {
                skipped.push((name, "this system has no such directory".to_owned()));
            } else {
                covered.push(name);
            }
        }
    }
    covered.sort();
    Ok((covered, skipped))
}

/// The marker in a layer naming the lowers it was prepared for.
const PREPARED: &str = ".avail-prepared";

/// Prepares a user's layer so that writes work without a copy-up.
///
/// In a user namespace the kernel cannot copy up an entry owned by a user
/// the namespace does not map (root owns every package entry): creating a
/// file in a package directory, or writing to a package file, would fail
/// with `EOVERFLOW`. So before entering, every directory of the packages is
/// made in the layer by the user (with the package's modes plus the owner's
/// `rwx`), and every file that others may write to (mode `o+w`) is copied
/// there; the overlay then finds them in the layer and needs no copy-up.
/// Inside the environment, the package's directories show the user as their
/// owner. Done again only when the lowers change.
fn prepare_layer(layers: &Layers, tops: &[OsString]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let marker = layers.state.join(PREPARED);
    let stamp: String = layers
        .lowers
        .iter()
        .map(|l| format!("{}\n", l.display()))
        .collect();
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == stamp) {
        return Ok(());
    }
    let upper = layers.state.join("upper");
    // Lowest priority first, so that a higher one's modes and files win.
    for lower in layers.lowers.iter().rev() {
        for top in tops {
            let root = lower.join(top);
            if !root.is_dir() {
                continue;
            }
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    let meta = entry.metadata()?;
                    let path = entry.path();
                    let writable = meta.permissions().mode() & 0o002 != 0;
                    let Ok(rel) = path.strip_prefix(lower) else {
                        continue;
                    };
                    if meta.is_dir() {
                        make_dirs(lower, &upper, rel)?;
                        stack.push(path);
                    } else if meta.is_file() && writable {
                        if let Some(parent) = rel.parent() {
                            make_dirs(lower, &upper, parent)?;
                        }
                        let to = upper.join(rel);
                        if !to.exists() {
                            std::fs::copy(&path, &to)?;
                            std::fs::set_permissions(&to, meta.permissions())?;
                        }
                    }
                }
            }
        }
    }
    crate::state::write_atomically(&marker, stamp.as_bytes(), 0o644)
}

/// Makes `rel` and its parents under `upper` with the modes they have under
/// `lower` (set-id bits dropped).
fn make_dirs(lower: &Path, upper: &Path, rel: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut at = PathBuf::new();
    for part in rel.components() {
        at.push(part);
        let made = upper.join(&at);
        if made.is_dir() {
            continue;
        }
        std::fs::create_dir(&made)?;
        let mode = std::fs::metadata(lower.join(&at))?.permissions().mode() & 0o1777;
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(mode | 0o700))?;
    }
    Ok(())
}

/// A path as an overlayfs option value: `\`, `:` and `,` escaped.
fn option_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Enters the environment and executes `program` with `args` and this
/// process's environment variables (see the module doc). Returns only on
/// failure, with what failed.
pub fn enter_and_exec(layers: &Layers, program: &str, args: &[String]) -> io::Error {
    match enter(layers) {
        Ok(()) => Command::new(program).args(args).exec(),
        Err(e) => e,
    }
}

fn enter(layers: &Layers) -> io::Result<()> {
    let context = |what: String| move |e: nix::Error| io::Error::other(format!("{what}: {e}"));
    let (tops, skipped) = top_directories(layers)?;
    for (name, why) in &skipped {
        tracing::warn!(directory = %Path::new("/").join(name).display(), reason = %why, "not overlaid");
    }
    for top in &tops {
        for part in ["upper", "work"] {
            std::fs::create_dir_all(layers.state.join(part).join(top))?;
        }
    }
    let cwd = std::env::current_dir().ok();
    let (uid, gid) = (Uid::current(), Gid::current());
    if !uid.is_root() {
        prepare_layer(layers, &tops)?;
    }
    if uid.is_root() {
        unshare(CloneFlags::CLONE_NEWNS).map_err(context("unshare(CLONE_NEWNS)".into()))?;
    } else {
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(context(
            "unshare(CLONE_NEWUSER | CLONE_NEWNS) (are unprivileged user namespaces enabled? \
             sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces)"
                .into(),
        ))?;
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(context("making / private".into()))?;
    for top in &tops {
        let target = Path::new("/").join(top);
        let mut lowerdir: Vec<String> = layers
            .lowers
            .iter()
            .map(|l| l.join(top))
            .filter(|p| p.is_dir())
            .map(|p| option_path(&p))
            .collect();
        lowerdir.push(option_path(&target));
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            option_path(&layers.state.join("upper").join(top)),
            option_path(&layers.state.join("work").join(top)),
        );
        if !uid.is_root() {
            // In a user namespace overlayfs may not set trusted.* attributes:
            // whiteouts and renamed directories are recorded in user.* ones.
            options.push_str(",userxattr");
        }
        mount(
            Some("avail"),
            &target,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(context(format!("overlay on {}", target.display())))?;
    }
    if let Some(cwd) = cwd {
        // Enter it again, through the overlays; a directory gone is no error.
        let _ = std::env::set_current_dir(cwd);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_option_paths_are_escaped() {
        assert_eq!(option_path(Path::new("/a:b,c\\d")), r"/a\:b\,c\\d");
        assert_eq!(option_path(Path::new("/run/avail/x")), "/run/avail/x");
    }

    #[test]
    fn only_directories_the_host_has_are_overlaid() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("pkg");
        for d in ["opt/app", "usr/share", "proc", "no-such-top-directory-here"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("file-at-top"), b"x").unwrap();
        let layers = Layers {
            lowers: vec![lower],
            state: dir.path().join("state"),
        };
        let (covered, skipped) = top_directories(&layers).unwrap();
        assert_eq!(covered, [OsString::from("opt"), OsString::from("usr")]);
        let mut names: Vec<_> = skipped.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            ["file-at-top", "no-such-top-directory-here", "proc"].map(OsString::from)
        );
    }
}
