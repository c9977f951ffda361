//! Desktop integration of published packages: [`sync`] makes an XDG data
//! directory (`~/.local/share` for a user, `/usr/local/share` for the machine)
//! hold exactly the desktop entries, icons and MIME associations of the
//! packages published there. A package's desktop entries come from its mounted
//! `Root` tree (`usr/share/applications` and `usr/local/share/applications`);
//! an entry that runs one of the package's applications is rewritten to start
//! it through Avail (`Exec=avail run APP-ID …`, field codes kept, so `xdg-open`
//! of an associated file type goes through Avail too) and written as
//! `applications/avail-<PackageId>-<app id>[-<n>].desktop`; its icons are
//! copied under `icons/…` and `pixmaps/…` as `avail-<PackageId>-NAME.ext`. An
//! application without a desktop entry gets a minimal generated one. The
//! package's own MIME types (shared-mime-info package files,
//! `usr/share/mime/packages/*.xml`) are copied to
//! `mime/packages/avail-<PackageId>-NAME.xml` and `update-mime-database` run,
//! so that `xdg-mime query filetype` recognizes the package's file types and
//! `xdg-open` of such a file runs the entry that declares the type. The files
//! installed for a package are listed in `applications/.avail/<PackageId>.list`,
//! which is all that unpublishing ever deletes.
//!
//! Package content is untrusted: desktop files and icons are read without
//! following any symbolic link inside the mount (regular files only, opened
//! with `O_NOFOLLOW`), with bounded sizes and counts; every name that ends up
//! in a written path is checked or sanitized, so nothing is written outside
//! the data directory; keys that would run something else than Avail
//! (`TryExec`, `DBusActivatable`, localized `Exec`) or spoof Avail's own keys
//! (`X-Avail-*`) are dropped. A MIME package file is copied as it is (a
//! malformed one is skipped by `update-mime-database`), unless it is not UTF-8,
//! is not a `mime-info` document or declares a DTD or entities, which no
//! shared-mime-info file needs. A list file is trusted no more than a package:
//! an entry that is not a plain path under the data directory named
//! `avail-<PackageId>-…` is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use avail_format::manifest::Application;
use uuid::Uuid;

/// The largest desktop file read from a package, in bytes.
pub const MAX_DESKTOP_FILE: u64 = 64 * 1024;
/// The largest icon file copied from a package, in bytes.
pub const MAX_ICON_FILE: u64 = 1024 * 1024;
/// How many desktop files are considered per applications directory.
pub const MAX_DESKTOP_FILES: usize = 256;
/// How many desktop entries are written for one package.
pub const MAX_ENTRIES: usize = 256;
/// How many icon files are copied for one package.
pub const MAX_ICONS: usize = 512;
/// The largest MIME package file (`usr/share/mime/packages/*.xml`) copied
/// from a package, in bytes.
pub const MAX_MIME_FILE: u64 = 64 * 1024;
/// How many MIME package files are copied for one package.
pub const MAX_MIME_FILES: usize = 32;
/// Where a package's MIME package files are, in its mount.
const MIME_PACKAGES_SOURCE: &str = "usr/share/mime/packages";
/// Where MIME package files are installed, under the data directory.
const MIME_PACKAGES: &str = "mime/packages";
/// How many directory entries are looked at while indexing a package's icons.
const MAX_ICON_SCAN: usize = 20_000;
/// How many actions of one desktop entry are kept.
const MAX_ACTIONS: usize = 32;
/// The longest sanitized application id used in a file name.
const MAX_NAME_PART: usize = 64;
/// The longest icon name accepted.
const MAX_ICON_NAME: usize = 128;
/// Icon file extensions copied, in order of preference.
const ICON_EXTENSIONS: [&str; 3] = ["png", "svg", "xpm"];
/// Where the lists of installed files live, under `applications`.
const LIST_DIR: &str = ".avail";

/// One package published to the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDesktop {
    /// The package's `PackageId`.
    pub package_id: Uuid,
    /// The published version's `VersionId`; a change replaces the package's
    /// files.
    pub version_id: Uuid,
    /// The package's display name, the `Name` of a generated entry.
    pub name: String,
    /// Where the version is mounted: its `Root` tree.
    pub mount: PathBuf,
    /// The manifest's applications.
    pub applications: Vec<Application>,
}

/// What a [`sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files written (created or replaced), absolute.
    pub installed: Vec<PathBuf>,
    /// Files deleted, absolute.
    pub removed: Vec<PathBuf>,
}

/// Makes `data_home` (e.g. `~/.local/share`, or `/usr/local/share` for the
/// machine) hold exactly the desktop integration of `packages`, with entries
/// that run `avail_bin run APP-ID …`.
///
/// A package whose list records the same version and `avail_bin` is left
/// alone, so a second call with the same input installs and removes nothing.
/// A package whose version changed gets its new files written, then the files
/// of the old version it no longer has deleted. The files listed for packages
/// that are not in `packages` are deleted, and their lists. A package whose
/// mount is not a directory is skipped with a warning (its files stay). If
/// anything changed and `update-desktop-database` is on `PATH`, it is run on
/// `data_home/applications` so that `xdg-mime` and `xdg-open` see the
/// entries' `MimeType`s; if a file under `data_home/mime/packages` was written
/// or deleted and `update-mime-database` is on `PATH`, it is run on
/// `data_home/mime` so that the packages' own MIME types are recognized.
///
/// Every file is written atomically (a temporary file renamed over it) with
/// mode 0644; a package's list names a file before the file is created, so a
/// crash never leaves a file that a later sync would not delete.
///
/// # Errors
///
/// `avail_bin` is empty or holds a control character
/// ([`io::ErrorKind::InvalidInput`]); a directory or file under `data_home`
/// cannot be created, written or deleted.
pub fn sync(data_home: &Path, packages: &[PackageDesktop], avail_bin: &str) -> io::Result<Summary> {
    if avail_bin.is_empty() || avail_bin.chars().any(char::is_control) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the avail binary's path is empty or holds a control character",
        ));
    }
    let list_dir = data_home.join("applications").join(LIST_DIR);
    fs::create_dir_all(&list_dir)?;
    let mut summary = Summary::default();

    let mut wanted = HashSet::new();
    for package in packages {
        if !wanted.insert(package.package_id) {
            tracing::warn!(package = %package.package_id, "a package is listed twice: the first one is used");
            continue;
        }
        sync_package(data_home, &list_dir, package, avail_bin, &mut summary)?;
    }

    // Unpublished packages: delete what their lists name.
    let mut stale = Vec::new();
    for entry in fs::read_dir(&list_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".list"))
            .and_then(|n| Uuid::parse_str(n).ok())
        else {
            continue;
        };
        if !wanted.contains(&id) {
            stale.push((id, entry.path()));
        }
    }
    stale.sort();
    for (id, list_path) in stale {
        let old = read_list(data_home, &list_path, id);
        tracing::info!(package = %id, files = old.files.len(), "removing the desktop integration of an unpublished package");
        for rel in &old.files {
            remove_installed(data_home, rel, &mut summary)?;
        }
        match fs::remove_file(&list_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }

    if !summary.installed.is_empty() || !summary.removed.is_empty() {
        update_desktop_database(&data_home.join("applications"));
    }
    let mime_packages = data_home.join(MIME_PACKAGES);
    if summary
        .installed
        .iter()
        .chain(&summary.removed)
        .any(|p| p.parent() == Some(mime_packages.as_path()))
    {
        update_mime_database(&data_home.join("mime"));
    }
    Ok(summary)
}

/// Brings one published package's files up to date.
fn sync_package(
    data_home: &Path,
    list_dir: &Path,
    package: &PackageDesktop,
    avail_bin: &str,
    summary: &mut Summary,
) -> io::Result<()> {
    let id = package.package_id;
    let list_path = list_dir.join(format!("{id}.list"));
    let old = read_list(data_home, &list_path, id);
    if old.version == Some(package.version_id) && old.avail_bin.as_deref() == Some(avail_bin) {
        tracing::debug!(package = %id, "desktop integration is up to date");
        return Ok(());
    }
    match fs::metadata(&package.mount) {
        Ok(m) if m.is_dir() => {}
        _ => {
            tracing::warn!(package = %id, mount = %package.mount.display(), "the package's mount is not a directory: its desktop integration is left as it is");
            return Ok(());
        }
    }
    let files = build_package(data_home, package, avail_bin);
    let new: BTreeSet<PathBuf> = files.keys().cloned().collect();

    // Name every file before creating it, without the version: a crash
    // leaves a list that the next sync redoes and that covers every file.
    let union: BTreeSet<PathBuf> = old
        .files
        .iter()
        .cloned()
        .chain(new.iter().cloned())
        .collect();
    write_list(&list_path, None, avail_bin, &union)?;

    for (rel, bytes) in &files {
        let path = data_home.join(rel);
        write_atomic(&path, bytes)?;
        summary.installed.push(path);
    }
    for rel in old.files.difference(&new) {
        remove_installed(data_home, rel, summary)?;
    }
    write_list(&list_path, Some(package.version_id), avail_bin, &new)?;
    tracing::info!(package = %id, version = %package.version_id, files = new.len(), "installed the package's desktop integration");
    Ok(())
}

// ---------------------------------------------------------------------------
// Lists of installed files.

/// A package's list of installed files.
#[derive(Debug, Default)]
struct List {
    /// The version installed; absent while an install is under way.
    version: Option<Uuid>,
    /// The `avail` binary the entries run.
    avail_bin: Option<String>,
    /// Installed files, relative to the data directory, each checked by
    /// [`checked_list_entry`].
    files: BTreeSet<PathBuf>,
}

/// Reads a list; a missing or unreadable one is empty, a bad line ignored.
fn read_list(data_home: &Path, path: &Path, id: Uuid) -> List {
    let mut list = List::default();
    let text = match read_bounded_nofollow(path, 16 * 1024 * 1024) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => {
            tracing::warn!(list = %path.display(), "ignoring a list that is not a regular file or too large");
            return list;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return list,
        Err(e) => {
            tracing::warn!(list = %path.display(), error = %e, "cannot read a list of installed files");
            return list;
        }
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version=") {
            list.version = Uuid::parse_str(v).ok();
        } else if let Some(v) = line.strip_prefix("avail-bin=") {
            list.avail_bin = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("file=") {
            match checked_list_entry(data_home, Path::new(v), id) {
                Some(rel) => {
                    list.files.insert(rel);
                }
                None => {
                    tracing::warn!(list = %path.display(), entry = v, "ignoring a list entry that Avail cannot have installed");
                }
            }
        }
    }
    list
}

/// The path relative to `data_home` of a list entry, if it is one that
/// [`sync`] could have installed for package `id`: under `data_home` with no
/// `..`, named `avail-<id>-…`, under `applications`, `icons` or `pixmaps`, or
/// directly in `mime/packages` and ending in `.xml`.
fn checked_list_entry(data_home: &Path, entry: &Path, id: Uuid) -> Option<PathBuf> {
    let rel = if entry.is_absolute() {
        entry.strip_prefix(data_home).ok()?
    } else {
        entry
    };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            _ => return None,
        }
    }
    let name = out.file_name()?.to_str()?;
    if !name.starts_with(&format!("avail-{id}-")) {
        return None;
    }
    // Only where sync writes.
    let top = out.components().next()?.as_os_str().to_str()?;
    match top {
        "applications" | "icons" | "pixmaps" => {}
        "mime" => {
            // Nothing of the generated database, only a package file.
            if out.parent() != Some(Path::new(MIME_PACKAGES)) || !name.ends_with(".xml") {
                return None;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Writes a list atomically.
fn write_list(
    path: &Path,
    version: Option<Uuid>,
    avail_bin: &str,
    files: &BTreeSet<PathBuf>,
) -> io::Result<()> {
    let mut text =
        String::from("# Files installed by Avail for this package's desktop integration.\n");
    if let Some(v) = version {
        text.push_str(&format!("version={v}\n"));
    }
    text.push_str(&format!("avail-bin={avail_bin}\n"));
    for f in files {
        // Names are built from sanitized ASCII parts, so they are UTF-8.
        text.push_str(&format!("file={}\n", f.to_string_lossy()));
    }
    write_atomic(path, text.as_bytes())
}

/// Deletes an installed file (a list entry already checked), if it is there.
fn remove_installed(data_home: &Path, rel: &Path, summary: &mut Summary) -> io::Result<()> {
    let path = data_home.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {
            tracing::warn!(path = %path.display(), "not deleting a directory named in a list");
            Ok(())
        }
        Ok(_) => match fs::remove_file(&path) {
            Ok(()) => {
                summary.removed.push(path);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Building a package's files.

/// Every file of a package's desktop integration: path relative to the data
/// directory → content.
fn build_package(
    data_home: &Path,
    package: &PackageDesktop,
    avail_bin: &str,
) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut b = Builder {
        package,
        data_home: std::path::absolute(data_home).unwrap_or_else(|_| data_home.to_path_buf()),
        prefix: format!("avail-{}-", package.package_id),
        avail_bin,
        icons: IconIndex::scan(&package.mount),
        files: BTreeMap::new(),
        used_names: HashSet::new(),
        absolute_icons: HashMap::new(),
        icon_files: 0,
        entries: 0,
    };
    let mut covered: HashSet<usize> = HashSet::new();
    for dir in ["usr/share/applications", "usr/local/share/applications"] {
        for (name, path) in desktop_files(&package.mount, dir) {
            if b.entries >= MAX_ENTRIES {
                tracing::warn!(package = %package.package_id, "too many desktop entries: the rest are ignored");
                break;
            }
            let bytes = match read_bounded_nofollow(&path, MAX_DESKTOP_FILE) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    tracing::warn!(package = %package.package_id, file = %name, "ignoring a desktop file that is not a regular file or larger than {MAX_DESKTOP_FILE} bytes");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(package = %package.package_id, file = %name, error = %e, "cannot read a desktop file");
                    continue;
                }
            };
            let Ok(text) = String::from_utf8(bytes) else {
                tracing::warn!(package = %package.package_id, file = %name, "ignoring a desktop file that is not UTF-8");
                continue;
            };
            if let Some(app) = b.add_entry(&name, &text) {
                covered.insert(app);
            }
        }
    }
    for (i, app) in package.applications.iter().enumerate() {
        if !covered.contains(&i) && b.entries < MAX_ENTRIES {
            b.add_generated(app);
        }
    }
    b.add_mime_packages();
    b.files
}

/// The regular `*.xml` files of a package's `usr/share/mime/packages`,
/// sorted by name, at most [`MAX_MIME_FILES`].
fn mime_package_files(mount: &Path) -> Vec<(String, PathBuf)> {
    let Some(dir) = package_dir(mount, Path::new(MIME_PACKAGES_SOURCE)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return out;
    };
    for (n, entry) in rd.enumerate() {
        if n >= MAX_MIME_FILES * 4 {
            tracing::warn!(dir = %dir.display(), "too many files in a MIME packages directory: the rest are ignored");
            break;
        }
        let Ok(entry) = entry else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".xml") {
            continue;
        }
        if !ft.is_file() {
            tracing::warn!(file = %entry.path().display(), "ignoring a MIME package file that is not a regular file");
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    if out.len() > MAX_MIME_FILES {
        tracing::warn!(dir = %dir.display(), "too many MIME package files: only the first {MAX_MIME_FILES} are copied");
        out.truncate(MAX_MIME_FILES);
    }
    out
}

/// Whether `text` may be handed to `update-mime-database`: a `mime-info`
/// document without a document type declaration or entity declarations
/// (which a shared-mime-info package never needs, and which could make the
/// XML parser read other files or expand without bound).
fn acceptable_mime_package(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    text.contains("<mime-info") && !upper.contains("<!DOCTYPE") && !upper.contains("<!ENTITY")
}

/// The regular `*.desktop` files of `mount/dir`, sorted by name, bounded.
fn desktop_files(mount: &Path, dir: &str) -> Vec<(String, PathBuf)> {
    let Some(dir) = package_dir(mount, Path::new(dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return out;
    };
    for (n, entry) in rd.enumerate() {
        if n >= MAX_DESKTOP_FILES * 4 || out.len() >= MAX_DESKTOP_FILES {
            tracing::warn!(dir = %dir.display(), "too many files in an applications directory: the rest are ignored");
            break;
        }
        let Ok(entry) = entry else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".desktop") {
            continue;
        }
        if !ft.is_file() {
            tracing::warn!(file = %entry.path().display(), "ignoring a desktop file that is not a regular file");
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    out
}

/// `mount/rel` if every component of `rel` is a plain name and a real
/// directory (no symbolic link) in the mount.
fn package_dir(mount: &Path, rel: &Path) -> Option<PathBuf> {
    let mut path = mount.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => path.push(part),
            Component::RootDir | Component::CurDir => continue,
            _ => return None,
        }
        let m = fs::symlink_metadata(&path).ok()?;
        if !m.is_dir() {
            return None;
        }
    }
    Some(path)
}

/// Reads a regular file without following a symbolic link as its last
/// component: `None` if it is not a regular file or is larger than `max`.
fn read_bounded_nofollow(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        // O_NOFOLLOW on a symbolic link.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = file.metadata()?;
    if !m.is_file() || m.len() > max {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// The icon files of a package: `usr/share/icons/<theme>/<size>/<context>/`
/// and `usr/share/pixmaps/`, by icon name.
#[derive(Debug, Default)]
struct IconIndex {
    /// Icon name → (directory relative to the mount, which is also where it
    /// goes relative to the data directory; extension).
    by_name: HashMap<String, Vec<(PathBuf, &'static str)>>,
}

impl IconIndex {
    /// Indexes a mount's icons, bounded by [`MAX_ICON_SCAN`] entries looked at.
    fn scan(mount: &Path) -> IconIndex {
        let mut index = IconIndex::default();
        let mut budget = MAX_ICON_SCAN;
        if let Some(icons) = package_dir(mount, Path::new("usr/share/icons")) {
            for theme in subdirs(&icons, &mut budget) {
                for size in subdirs(&icons.join(&theme), &mut budget) {
                    for context in subdirs(&icons.join(&theme).join(&size), &mut budget) {
                        let rel: PathBuf = ["icons", &theme, &size, &context].iter().collect();
                        let dir = icons.join(&theme).join(&size).join(&context);
                        index.add_dir(&dir, rel, &mut budget);
                    }
                }
            }
        }
        if let Some(pixmaps) = package_dir(mount, Path::new("usr/share/pixmaps")) {
            index.add_dir(&pixmaps, PathBuf::from("pixmaps"), &mut budget);
        }
        for places in index.by_name.values_mut() {
            places.sort();
        }
        index
    }

    /// Indexes the regular icon files of one directory.
    fn add_dir(&mut self, dir: &Path, rel: PathBuf, budget: &mut usize) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for entry in rd {
            if *budget == 0 {
                tracing::warn!(dir = %dir.display(), "too many icon files: the rest are ignored");
                return;
            }
            *budget -= 1;
            let Ok(entry) = entry else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some((stem, ext)) = file_name.rsplit_once('.') else {
                continue;
            };
            let Some(ext) = ICON_EXTENSIONS.iter().find(|e| **e == ext) else {
                continue;
            };
            if valid_icon_name(stem) {
                self.by_name
                    .entry(stem.to_owned())
                    .or_default()
                    .push((rel.clone(), ext));
            }
        }
    }
}

/// The subdirectories of `dir` (real directories, not links) whose names are
/// safe path components, sorted.
fn subdirs(dir: &Path, budget: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for entry in rd {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && safe_component(name)
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    out
}

/// Whether `s` is a harmless path component: not empty, no leading dot, only
/// ASCII letters, digits and `_ - . @ +`.
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@+".contains(&b))
}

/// Whether `s` is an acceptable icon name (see [`safe_component`]).
fn valid_icon_name(s: &str) -> bool {
    s.len() <= MAX_ICON_NAME && safe_component(s)
}

/// An application id made safe for a file name: ASCII letters, digits,
/// `_ - .` kept, anything else `_`, bounded, never empty and with no dot
/// first, last or after another dot.
fn sanitize_id(id: &str) -> String {
    let mut s = String::new();
    for c in id.chars().take(MAX_NAME_PART) {
        let c = match c {
            '.' if s.is_empty() || s.ends_with('.') => '_',
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' => c,
            _ => '_',
        };
        s.push(c);
    }
    if s.ends_with('.') {
        s.pop();
        s.push('_');
    }
    if s.is_empty() {
        s.push_str("app");
    }
    s
}

/// Builds one package's files.
struct Builder<'a> {
    package: &'a PackageDesktop,
    /// The data directory, absolute.
    data_home: PathBuf,
    /// `avail-<PackageId>-`.
    prefix: String,
    avail_bin: &'a str,
    icons: IconIndex,
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Desktop file names taken.
    used_names: HashSet<String>,
    /// Absolute icon path in the package → its copy's path in the data
    /// directory (relative), or `None` if it could not be copied.
    absolute_icons: HashMap<String, Option<PathBuf>>,
    icon_files: usize,
    entries: usize,
}

impl Builder<'_> {
    /// A free desktop file name for an application: `avail-<PackageId>-<id>`
    /// then `-2`, `-3`…
    fn entry_path(&mut self, app_id: &str) -> PathBuf {
        let base = format!("{}{}", self.prefix, sanitize_id(app_id));
        let mut name = format!("{base}.desktop");
        let mut n = 2;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}-{n}.desktop");
            n += 1;
        }
        Path::new("applications").join(name)
    }

    /// The index of the application an `Exec` runs, if any: its program
    /// equals an application's target or the target's file name (an exact
    /// target first).
    fn application_of(&self, exec: &str) -> Option<usize> {
        let program = parse_exec(exec)?.into_iter().next()?;
        let apps = &self.package.applications;
        apps.iter()
            .position(|a| a.target.as_deref() == Some(program.as_str()))
            .or_else(|| {
                apps.iter().position(|a| {
                    a.target
                        .as_deref()
                        .and_then(|t| Path::new(t).file_name())
                        .and_then(|f| f.to_str())
                        == Some(program.as_str())
                })
            })
    }

    /// The `Exec` value that runs application `app` through Avail with the
    /// original `Exec`'s arguments.
    fn rewrite_exec(&self, app: usize, exec: &str) -> Option<String> {
        let args = parse_exec(exec)?;
        let id = &self.package.applications[app].id;
        let mut out = vec![
            quote_arg(&self.avail_bin.replace('%', "%%")),
            "run".to_owned(),
            quote_arg(&id.replace('%', "%%")),
        ];
        for arg in args.into_iter().skip(1) {
            if DEPRECATED_FIELD_CODES.contains(&arg.as_str()) {
                continue;
            }
            if FIELD_CODES.contains(&arg.as_str()) {
                out.push(arg);
            } else {
                out.push(quote_arg(&arg));
            }
        }
        Some(escape_value(&out.join(" ")))
    }

    /// Rewrites an `Icon` value: a name found in the package becomes
    /// `avail-<PackageId>-NAME` (its files copied), an absolute path in the
    /// package the absolute path of its copy; another valid name is kept (a
    /// theme icon); anything else is dropped.
    fn rewrite_icon(&mut self, value: &str) -> Option<String> {
        if value.starts_with('/') {
            let rel = self.copy_absolute_icon(value)?;
            return Some(escape_value(&self.data_home.join(rel).to_string_lossy()));
        }
        if !valid_icon_name(value) {
            tracing::warn!(package = %self.package.package_id, icon = value, "dropping an invalid Icon");
            return None;
        }
        let Some(places) = self.icons.by_name.get(value).cloned() else {
            return Some(value.to_owned());
        };
        let new_name = format!("{}{value}", self.prefix);
        let mut copied = false;
        for (rel_dir, ext) in places {
            let dest = rel_dir.join(format!("{new_name}.{ext}"));
            if self.files.contains_key(&dest) {
                copied = true;
                continue;
            }
            if self.icon_files >= MAX_ICONS {
                tracing::warn!(package = %self.package.package_id, "too many icon files: the rest are not copied");
                break;
            }
            // rel_dir is `icons/…` or `pixmaps`; the source is under usr/share.
            let src = self
                .package
                .mount
                .join("usr/share")
                .join(&rel_dir)
                .join(format!("{value}.{ext}"));
            if let Some(bytes) = self.read_icon(&src) {
                self.files.insert(dest, bytes);
                self.icon_files += 1;
                copied = true;
            }
        }
        if copied {
            Some(new_name)
        } else {
            Some(value.to_owned())
        }
    }

    /// Reads an icon file of the package, logging why not.
    fn read_icon(&self, src: &Path) -> Option<Vec<u8>> {
        match read_bounded_nofollow(src, MAX_ICON_FILE) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                tracing::warn!(package = %self.package.package_id, icon = %src.display(), "not copying an icon that is not a regular file or larger than {MAX_ICON_FILE} bytes");
                None
            }
            Err(e) => {
                tracing::warn!(package = %self.package.package_id, icon = %src.display(), error = %e, "cannot read an icon");
                None
            }
        }
    }

    /// Copies an icon named by an absolute path in the package to
    /// `pixmaps/avail-<PackageId>-FILE`; its path relative to the data
    /// directory.
    fn copy_absolute_icon(&mut self, value: &str) -> Option<PathBuf> {
        if let Some(done) = self.absolute_icons.get(value) {
            return done.clone();
        }
        let result = self.copy_absolute_icon_uncached(value);
        self.absolute_icons.insert(value.to_owned(), result.clone());
        result
    }

    fn copy_absolute_icon_uncached(&mut self, value: &str) -> Option<PathBuf> {
        let path = Path::new(value);
        let file_name = path.file_name()?.to_str()?;
        let ext = file_name.rsplit_once('.').map(|(_, e)| e)?;
        let (Some(ext), true) = (
            ICON_EXTENSIONS.iter().find(|e| **e == ext),
            valid_icon_name(file_name),
        ) else {
            tracing::warn!(package = %self.package.package_id, icon = value, "dropping an Icon path that is not a png, svg or xpm file");
            return None;
        };
        let parent = path.parent()?;
        let Some(dir) = package_dir(&self.package.mount, parent) else {
            tracing::warn!(package = %self.package.package_id, icon = value, "dropping an Icon path that is not in the package");
            return None;
        };
        if self.icon_files >= MAX_ICONS {
            return None;
        }
        let bytes = self.read_icon(&dir.join(file_name))?;
        let stem = &file_name[..file_name.len() - ext.len() - 1];
        let mut name = format!("{}{stem}.{ext}", self.prefix);
        let mut n = 2;
        while self.files.contains_key(&Path::new("pixmaps").join(&name)) {
            name = format!("{}{stem}-{n}.{ext}", self.prefix);
            n += 1;
        }
        let dest = Path::new("pixmaps").join(name);
        self.files.insert(dest.clone(), bytes);
        self.icon_files += 1;
        Some(dest)
    }

    /// Adds the rewritten entry of one desktop file, if it runs one of the
    /// package's applications; the application's index.
    fn add_entry(&mut self, file_name: &str, text: &str) -> Option<usize> {
        let pkg = self.package.package_id;
        let parsed = parse_desktop(text)?;
        let main = &parsed.main;
        if main.get("Type") != Some("Application") {
            tracing::info!(package = %pkg, file = file_name, "ignoring a desktop file that is not of Type=Application");
            return None;
        }
        if main.get("Hidden") == Some("true") {
            tracing::info!(package = %pkg, file = file_name, "ignoring a hidden (deleted) desktop entry");
            return None;
        }
        let Some(exec) = main.get("Exec") else {
            tracing::info!(package = %pkg, file = file_name, "ignoring a desktop file without Exec");
            return None;
        };
        let Some(app) = self.application_of(exec) else {
            tracing::info!(package = %pkg, file = file_name, exec, "ignoring a desktop entry that runs none of the package's applications");
            return None;
        };
        let new_exec = self.rewrite_exec(app, exec)?;

        let mut out = String::new();
        out.push_str(&format!(
            "# Installed by Avail for package {pkg} from {}; changes are overwritten.\n[Desktop Entry]\n",
            escape_comment(file_name)
        ));
        let mut has_name = false;
        for (key, value) in &main.lines {
            let base = key.split('[').next().unwrap_or(key);
            let localized = base.len() != key.len();
            match base {
                "Exec" if !localized => out.push_str(&format!("Exec={new_exec}\n")),
                "Icon" if !localized => {
                    if let Some(icon) = self.rewrite_icon(value) {
                        out.push_str(&format!("Icon={}\n", icon));
                    }
                }
                "Exec" | "TryExec" | "DBusActivatable" | "Icon" | "Actions" => {}
                b if b.starts_with("X-Avail-") => {}
                _ => {
                    if base == "Name" && !localized {
                        has_name = true;
                    }
                    out.push_str(&format!("{key}={value}\n"));
                }
            }
        }
        if !has_name {
            out.push_str(&format!(
                "Name={}\n",
                escape_value(&self.package.applications[app].id)
            ));
        }

        // Actions that run an application of the package, rewritten the same
        // way; the others are dropped.
        let mut actions = Vec::new();
        if let Some(list) = main.get("Actions") {
            for action in list.split(';').filter(|a| !a.is_empty()).take(MAX_ACTIONS) {
                if !action
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    continue;
                }
                let Some(group) = parsed.actions.get(action) else {
                    continue;
                };
                let Some(exec) = group.get("Exec") else {
                    continue;
                };
                let Some(action_app) = self.application_of(exec) else {
                    tracing::info!(package = %pkg, file = file_name, action, "dropping an action that runs none of the package's applications");
                    continue;
                };
                let Some(exec) = self.rewrite_exec(action_app, exec) else {
                    continue;
                };
                let mut body = format!("[Desktop Action {action}]\n");
                let mut has_name = false;
                for (key, value) in &group.lines {
                    let base = key.split('[').next().unwrap_or(key);
                    let localized = base.len() != key.len();
                    match base {
                        "Name" => {
                            has_name |= !localized;
                            body.push_str(&format!("{key}={value}\n"));
                        }
                        "Icon" if !localized => {
                            if let Some(icon) = self.rewrite_icon(value) {
                                body.push_str(&format!("Icon={icon}\n"));
                            }
                        }
                        "Exec" if !localized => body.push_str(&format!("Exec={exec}\n")),
                        _ => {}
                    }
                }
                if has_name {
                    actions.push((action.to_owned(), body));
                }
            }
        }
        if !actions.is_empty() {
            let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
            out.push_str(&format!("Actions={};\n", names.join(";")));
        }
        out.push_str(&format!(
            "X-Avail-Package={pkg}\nX-Avail-Version={}\n",
            self.package.version_id
        ));
        for (_, body) in actions {
            out.push('\n');
            out.push_str(&body);
        }

        let path = self.entry_path(&self.package.applications[app].id);
        tracing::debug!(package = %pkg, file = file_name, entry = %path.display(), "desktop entry rewritten");
        self.files.insert(path, out.into_bytes());
        self.entries += 1;
        Some(app)
    }

    /// Adds the package's MIME package files as
    /// `mime/packages/avail-<PackageId>-NAME.xml`.
    fn add_mime_packages(&mut self) {
        let pkg = self.package.package_id;
        for (name, path) in mime_package_files(&self.package.mount) {
            let bytes = match read_bounded_nofollow(&path, MAX_MIME_FILE) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    tracing::warn!(package = %pkg, file = %name, "ignoring a MIME package file that is not a regular file or larger than {MAX_MIME_FILE} bytes");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(package = %pkg, file = %name, error = %e, "cannot read a MIME package file");
                    continue;
                }
            };
            match std::str::from_utf8(&bytes) {
                Ok(text) if acceptable_mime_package(text) => {}
                _ => {
                    tracing::warn!(package = %pkg, file = %name, "ignoring a MIME package file that is not a UTF-8 mime-info document without DTD");
                    continue;
                }
            }
            let stem = name.strip_suffix(".xml").unwrap_or(&name);
            let base = format!("{}{}", self.prefix, sanitize_id(stem));
            let mut dest = Path::new(MIME_PACKAGES).join(format!("{base}.xml"));
            let mut n = 2;
            while self.files.contains_key(&dest) {
                dest = Path::new(MIME_PACKAGES).join(format!("{base}-{n}.xml"));
                n += 1;
            }
            tracing::debug!(package = %pkg, file = %name, dest = %dest.display(), "MIME package file copied");
            self.files.insert(dest, bytes);
        }
    }

    /// Adds a minimal entry for an application without a desktop file.
    fn add_generated(&mut self, app: &Application) {
        let pkg = self.package.package_id;
        let name = if self.package.name.trim().is_empty() {
            app.id.clone()
        } else if self.package.applications.len() == 1 {
            self.package.name.clone()
        } else {
            format!("{} ({})", self.package.name, app.id)
        };
        let exec = escape_value(&format!(
            "{} run {}",
            quote_arg(&self.avail_bin.replace('%', "%%")),
            quote_arg(&app.id.replace('%', "%%"))
        ));
        let text = format!(
            "# Generated by Avail for package {pkg}; changes are overwritten.\n\
             [Desktop Entry]\nType=Application\nName={}\nExec={exec}\nNoDisplay=false\n\
             X-Avail-Package={pkg}\nX-Avail-Version={}\n",
            escape_value(&name),
            self.package.version_id
        );
        let path = self.entry_path(&app.id);
        tracing::debug!(package = %pkg, app = %app.id, entry = %path.display(), "generated a desktop entry");
        self.files.insert(path, text.into_bytes());
        self.entries += 1;
    }
}

// ---------------------------------------------------------------------------
// Desktop Entry format.

/// Field codes kept in a rewritten `Exec`.
const FIELD_CODES: [&str; 8] = ["%f", "%F", "%u", "%U", "%i", "%c", "%k", "%%"];
/// Deprecated field codes, dropped.
const DEPRECATED_FIELD_CODES: [&str; 6] = ["%d", "%D", "%n", "%N", "%v", "%m"];

/// One group of a desktop file: its valid `key=value` lines in order, the
/// first of each key only.
#[derive(Debug, Default)]
struct Group {
    lines: Vec<(String, String)>,
}

impl Group {
    fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed desktop file: `[Desktop Entry]` and its `[Desktop Action …]`
/// groups.
#[derive(Debug)]
struct DesktopFile {
    main: Group,
    actions: HashMap<String, Group>,
}

/// Parses a desktop file; `None` if it has no `[Desktop Entry]` group. Lines
/// with an invalid key or a control character are dropped, as are duplicate
/// keys and groups.
fn parse_desktop(text: &str) -> Option<DesktopFile> {
    enum Cur {
        None,
        Main,
        Action(String),
        Other,
    }
    let mut main: Option<Group> = None;
    let mut actions: HashMap<String, Group> = HashMap::new();
    let mut cur = Cur::None;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.trim_end().strip_suffix(']') else {
                cur = Cur::Other;
                continue;
            };
            cur = if name == "Desktop Entry" {
                if main.is_some() {
                    Cur::Other
                } else {
                    main = Some(Group::default());
                    Cur::Main
                }
            } else if let Some(action) = name.strip_prefix("Desktop Action ") {
                if actions.contains_key(action) || actions.len() >= MAX_ACTIONS * 2 {
                    Cur::Other
                } else {
                    actions.insert(action.to_owned(), Group::default());
                    Cur::Action(action.to_owned())
                }
            } else {
                Cur::Other
            };
            continue;
        }
        let group = match &cur {
            Cur::Main => main.as_mut(),
            Cur::Action(a) => actions.get_mut(a),
            Cur::None | Cur::Other => None,
        };
        let Some(group) = group else { continue };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim_end();
        let value = value.trim_start();
        if !valid_key(key) || value.chars().any(|c| c.is_control() && c != '\t') {
            continue;
        }
        if group.lines.iter().any(|(k, _)| k == key) {
            continue;
        }
        group.lines.push((key.to_owned(), value.to_owned()));
    }
    Some(DesktopFile {
        main: main?,
        actions,
    })
}

/// Whether `key` is `[A-Za-z0-9-]+` optionally followed by `[locale]`.
fn valid_key(key: &str) -> bool {
    let (base, locale) = match key.split_once('[') {
        Some((b, rest)) => match rest.strip_suffix(']') {
            Some(l) => (b, Some(l)),
            None => return false,
        },
        None => (key, None),
    };
    !base.is_empty()
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && locale.is_none_or(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_@.-".contains(&b))
        })
}

/// Undoes the escapes of a string value (`\s \n \t \r \\`).
fn unescape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Escapes a string value: backslashes and control characters.
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A file name made harmless for a comment line.
fn escape_comment(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// Splits an `Exec` value into its arguments (string escapes undone, quotes
/// removed); `None` if it is empty or a quote is not closed. `%` sequences
/// are left as they are.
fn parse_exec(exec: &str) -> Option<Vec<String>> {
    let s = unescape_value(exec);
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            '"' => {
                in_arg = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            e @ ('"' | '`' | '$' | '\\') => cur.push(e),
                            other => {
                                cur.push('\\');
                                cur.push(other);
                            }
                        },
                        other => cur.push(other),
                    }
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    if args.is_empty() { None } else { Some(args) }
}

/// Quotes one `Exec` argument if it holds a reserved character (before the
/// string escaping of the whole value).
fn quote_arg(arg: &str) -> String {
    const RESERVED: &str = " \t\n\r\"'\\><~|&;$*?#()`";
    if !arg.is_empty() && !arg.chars().any(|c| RESERVED.contains(c)) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Writing.

/// Writes one installed file (mode 0644), making its directory first.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a path without a directory"))?;
    fs::create_dir_all(dir)?;
    crate::state::write_atomically(path, bytes, 0o644)
}

/// Runs `update-desktop-database` on `dir` if it is on `PATH`.
fn update_desktop_database(dir: &Path) {
    run_updater(
        "update-desktop-database",
        dir,
        "MIME associations are not cached",
    );
}

/// Runs `update-mime-database` on `dir` (`DATA_HOME/mime`) if it is on
/// `PATH`.
fn update_mime_database(dir: &Path) {
    run_updater(
        "update-mime-database",
        dir,
        "the packages' MIME types are not recognized",
    );
}

/// Runs a cache updater on `dir`: its absence logged at debug, its failure
/// at warn.
fn run_updater(tool: &str, dir: &Path, without: &str) {
    match Command::new(tool)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => {
            tracing::debug!(dir = %dir.display(), "{tool} ran");
        }
        Ok(out) => {
            tracing::warn!(dir = %dir.display(), status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "{tool} failed");
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!("{tool} is not installed: {without}");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot run {tool}");
        }
    }
}
