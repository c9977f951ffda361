//! Extracting a package to a directory, every byte verified, nothing written outside it.
//!
//! Files are written into a fresh temporary directory beside the target while the
//! package is verified; modes, empty directories and symlinks from
//! `FilesystemMetadata.xml` are applied after every file checked; only then is
//! the temporary directory renamed to the target. A package that fails
//! verification leaves nothing behind. Names were checked when the package was
//! opened; symlinks are created last, and never through another symlink, so no
//! path in the package can reach outside the target.
//!
//! Modes are applied with care by default ([`ExtractOptions`]): setuid and
//! setgid bits are cleared (and the sticky bit on files), and every directory
//! keeps at least `u+rx`, so that whoever extracts a package can enter and
//! read all it made. While extracting, every directory is `u+rwx`.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};
use crate::fsmeta::EntryKind;
use crate::reader::{Package, VerifyReport};
use crate::source::ReadAt;
use crate::{Progress, names};

/// How [`extract_with`] applies the modes of `FilesystemMetadata.xml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Apply every mode exactly as packed: setuid, setgid and sticky bits kept,
    /// directories without `u+rx` left so. Only for a caller running as root that
    /// means it (the files belong to whoever extracts them); off by default.
    pub preserve_modes: bool,
}

impl ExtractOptions {
    /// The mode to give an entry of the given kind.
    fn mode(&self, mode: u32, directory: bool) -> u32 {
        if self.preserve_modes {
            mode
        } else if directory {
            // No setuid/setgid; the sticky bit is harmless on a directory.
            (mode & 0o1777) | 0o500
        } else {
            mode & 0o777
        }
    }
}

/// Extract `package` into `dir`, which must not exist or be an empty directory,
/// with the default [`ExtractOptions`] (special mode bits cleared).
pub fn extract<R: ReadAt>(
    package: &Package<R>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    extract_with(package, dir, &ExtractOptions::default(), progress)
}

/// Extract `package` into `dir`, which must not exist or be an empty directory.
pub fn extract_with<R: ReadAt>(
    package: &Package<R>,
    dir: &Path,
    options: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(FormatError::Invalid(format!(
                    "{} is not empty; extract into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FormatError::io(format!("reading {}", dir.display()), e)),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".avail-extract-")
        .tempdir_in(&parent)
        .map_err(|e| {
            FormatError::io(
                format!("creating a temporary directory in {}", parent.display()),
                e,
            )
        })?;
    let root = tmp.path();

    let paths: Vec<PathBuf> = package
        .files()
        .iter()
        .map(|f| root.join(names::to_relative_path(&f.map.name)))
        .collect();
    for path in &paths {
        if let Some(p) = path.parent() {
            create_dirs(root, p)?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| FormatError::io(format!("creating {}", path.display()), e))?;
    }
    let write = |i: usize, offset: u64, data: &[u8]| -> Result<()> {
        let path = &paths[i];
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| FormatError::io(format!("opening {}", path.display()), e))?;
        file.write_all_at(data, offset)
            .map_err(|e| FormatError::io(format!("writing {}", path.display()), e))
    };
    let report = package.verify_into(progress, Some(&write))?;

    if let Some(meta) = package.filesystem_metadata() {
        let mut modes = Vec::new();
        for entry in &meta.entries {
            let path = root.join(names::to_relative_path(&entry.name));
            match &entry.kind {
                EntryKind::Directory => {
                    create_dirs(root, &path)?;
                    modes.push((path, options.mode(entry.mode, true)));
                }
                EntryKind::File => {
                    if !path.is_file() {
                        return Err(FormatError::xml(
                            crate::fsmeta::PART,
                            format!(
                                "{} is listed as a file but the package holds no such file",
                                entry.name
                            ),
                        ));
                    }
                    modes.push((path, options.mode(entry.mode, false)));
                }
                EntryKind::Symlink { .. } => {}
            }
        }
        for entry in &meta.entries {
            if let EntryKind::Symlink { target } = &entry.kind {
                let rel = names::to_relative_path(&entry.name);
                check_real_parents(root, &rel, &entry.name)?;
                let path = root.join(&rel);
                std::os::unix::fs::symlink(target, &path).map_err(|e| {
                    FormatError::io(format!("creating the symlink {}", path.display()), e)
                })?;
            }
        }
        // Children before parents, so that a read-only directory is closed last.
        for (path, mode) in modes.iter().rev() {
            fs::set_permissions(path, Permissions::from_mode(*mode)).map_err(|e| {
                FormatError::io(format!("setting the mode of {}", path.display()), e)
            })?;
        }
    }
    fs::set_permissions(root, Permissions::from_mode(0o755))?;
    if dir.exists() {
        fs::remove_dir(dir)
            .map_err(|e| FormatError::io(format!("replacing {}", dir.display()), e))?;
    }
    let kept = tmp.keep();
    fs::rename(&kept, dir).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        FormatError::io(format!("moving the extracted tree to {}", dir.display()), e)
    })?;
    Ok(report)
}

/// Create `path` (under `root`) and its missing parents, each `u+rwx` whatever
/// the umask, so that extraction can always enter and write them.
fn create_dirs(root: &Path, path: &Path) -> Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| *p != root && !p.is_dir())
        .collect();
    for dir in missing.into_iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => continue,
            Err(e) => return Err(FormatError::io(format!("creating {}", dir.display()), e)),
        }
        let mode = fs::symlink_metadata(dir)
            .map_err(|e| FormatError::io(format!("checking {}", dir.display()), e))?
            .permissions()
            .mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(dir, Permissions::from_mode(mode | 0o700)).map_err(|e| {
                FormatError::io(format!("setting the mode of {}", dir.display()), e)
            })?;
        }
    }
    Ok(())
}

/// Every directory between `root` and `rel` must be a real directory, not a symlink.
fn check_real_parents(root: &Path, rel: &Path, name: &str) -> Result<()> {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for component in &parents[..parents.len().saturating_sub(1)] {
        at.push(component);
        let md = fs::symlink_metadata(&at)
            .map_err(|e| FormatError::io(format!("checking {}", at.display()), e))?;
        if !md.is_dir() {
            return Err(FormatError::HostileName {
                name: name.to_owned(),
                reason: "a symlink inside a symlinked or missing directory",
            });
        }
    }
    Ok(())
}
