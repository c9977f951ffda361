//! Package import, the one operation that spans the content store and the
//! Management DB: an upload or a file already in the content store becomes a
//! verified package file under its immutable per-version path and a row (for an
//! upgrade, with App-V's transfer of entitlements and configuration, in the same
//! transaction). From the upload's last byte on, the work runs on a task of its
//! own, so a dropped request cannot stop it halfway; [`recover`] settles at
//! start what a killed process left behind.

use std::future::Future;
use std::path::{Path, PathBuf};

use avail_format::{NoProgress, Package};
use avail_model::rules;
use avail_model::{
    Application, NewPackageVersion, PackageFilter, PackageId, PackageVersion, Transfer, VersionId,
};
use avail_store::StoreError;
use axum::body::Body;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// Where uploads are written before they are verified: inside the content store,
/// so the final rename stays on one file system.
pub(crate) const INCOMING: &str = ".incoming";

// // An import is: receive (the body into `.incoming/*.part`, hashed as it
// arrives) → make it durable → verify every block → rename into
// `packages/<PackageId>/<VersionId>.appv` → the row. Only receiving belongs to
// the request; from its last byte on, the work runs on a task of its own
// (`detached`), so a client that disconnects or a timeout that drops the request
// cannot stop it between the rename and the row. A process killed anywhere in
// between leaves at most a `.part` file or a package file without a row;
// `recover` settles both before the role serves again.

/// A package file written into `.incoming` and made durable, removed on drop unless kept.
pub(crate) struct Incoming {
    path: tempfile::TempPath,
    sha256: String,
    size: u64,
}

/// A request body written into `.incoming`, not yet flushed or synced.
pub(crate) struct Received {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    sha256: String,
    size: u64,
    /// How the content store is named in errors.
    store: String,
}

impl Received {
    /// Flush and sync the file: the upload is durable, or the error says why not.
    async fn durable(mut self) -> ApiResult<Incoming> {
        make_durable(&mut self.file, &self.store).await?;
        Ok(Incoming {
            path: self.path,
            sha256: self.sha256,
            size: self.size,
        })
    }
}

/// Flush `file` and sync it to disk; an I/O error is reported against `what`.
pub(crate) async fn make_durable(file: &mut tokio::fs::File, what: &str) -> ApiResult<()> {
    let io = |e| ApiError::io(what, e);
    // tokio's File writes in the background: the last write's error (a full disk)
    // surfaces only here; `sync_all` would wait for that write and drop its error.
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)
}

/// How the content store is named in messages (a full disk names it).
pub(crate) fn store_name(root: &Path) -> String {
    format!("the content store {}", root.display())
}

/// This host's name, as it goes into `.part` file names: letters, digits and `-`.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// `.part` files are named `<host>.<pid>.<random>.part`, so that the sweep at
/// start can tell the leftovers of a dead process from the uploads of another
/// node that shares the content store.
pub(crate) fn part_prefix() -> String {
    format!("{}.{}.", host_name(), std::process::id())
}

/// The mode a file created with mode 0666 gets in the directory `dir` — `0666 &
/// !umask`, or what a default ACL says — found once per process by creating a
/// probe file (a unique name like a `.part` file's, so a crash leaves nothing
/// the sweep at start does not remove): the standard library has no call that
/// reads the umask without changing it.
fn creation_mode(dir: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(mode) = MODE.get() {
        return Ok(*mode);
    }
    // Unique: concurrent first imports may probe at the same time.
    let probe = dir.join(format!(
        "{}{}.umask.part",
        part_prefix(),
        uuid::Uuid::new_v4().simple()
    ));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|f| f.metadata());
    let removed = std::fs::remove_file(&probe);
    let mode = created?.permissions().mode() & 0o777;
    removed?;
    Ok(*MODE.get_or_init(|| mode))
}

/// A new `.part` file in `.incoming` (the directory created private, 0700, if
/// needed). The file itself is private (0600) until it is published under
/// `packages/`, where [`import`] gives it the mode the umask allows.
pub(crate) fn incoming_file(root: &Path) -> ApiResult<(std::fs::File, tempfile::TempPath)> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = root.join(INCOMING);
    let io = |e| ApiError::io(&store_name(root), e);
    std::fs::create_dir_all(root).map_err(io)?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    let tmp = tempfile::Builder::new()
        .prefix(&part_prefix())
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(io)?;
    Ok(tmp.into_parts())
}

/// Stream a request body to disk as it arrives, hashing it, never holding it in
/// memory. Nothing awaits after its last byte: the caller hands the rest to
/// `detached` in the same poll.
pub(crate) async fn receive(root: &Path, body: Body, limit: u64) -> ApiResult<Received> {
    let dir = root.to_owned();
    let (file, path) = tokio::task::spawn_blocking(move || incoming_file(&dir))
        .await
        .map_err(ApiError::internal)??;
    let mut file = tokio::fs::File::from_std(file);
    let store = store_name(root);
    let (sha256, size) = write_body(&mut file, body, limit, &store).await?;
    Ok(Received {
        file,
        path,
        sha256,
        size,
        store,
    })
}

/// Import a received upload: make it durable, then [`import`] it, on a task of
/// its own (`detached`).
pub(crate) async fn import_received(
    catalog: Catalog,
    received: Received,
    record: Record,
) -> ApiResult<Imported> {
    detached(async move {
        let incoming = received.durable().await?;
        import(catalog, incoming, record).await
    })
    .await
}

/// Import a package file already in the content store, at `rel` (a relative
/// path with no `..`, no symbolic link on the way): copied into `.incoming`,
/// then imported like an upload.
pub(crate) async fn import_from_store(catalog: Catalog, rel: String) -> ApiResult<Imported> {
    if rel.is_empty()
        || Path::new(&rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ApiError::BadRequest(format!(
            "{rel:?} is not a relative path inside the content store"
        )));
    }
    let root = catalog.content_root.clone();
    let incoming = tokio::task::spawn_blocking(move || -> ApiResult<Incoming> {
        let source = open_in_store(&root, &rel)?;
        let (file, path) = incoming_file(&root)?;
        let (sha256, size) =
            copy_hashing(source, file).map_err(|e| ApiError::io(&store_name(&root), e))?;
        Ok(Incoming { path, sha256, size })
    })
    .await
    .map_err(ApiError::internal)??;
    detached(import(catalog, incoming, Record::Version)).await
}

/// Write `body` to `file` (at most `limit` bytes); its SHA-256 and size. An I/O
/// error is reported against `what`.
pub(crate) async fn write_body(
    file: &mut tokio::fs::File,
    body: Body,
    limit: u64,
    what: &str,
) -> ApiResult<(String, u64)> {
    let io = |e| ApiError::io(what, e);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?
    {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(format!(
                "the package is larger than the limit of {limit} bytes"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    if size == 0 {
        return Err(ApiError::BadRequest(
            "empty body: send the .appv file as the request body".into(),
        ));
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Verify every block of a package file and read its identity (blocking).
pub(crate) fn verify_file(path: &Path, sha256: String, size: u64) -> ApiResult<NewPackageVersion> {
    let package = Package::open(std::fs::File::open(path)?)?;
    package.verify(&NoProgress)?;
    let m = package.manifest();
    let (Some(package_id), Some(version_id)) = (m.package_id, m.version_id) else {
        return Err(ApiError::BadRequest(
            "the package's manifest has no appv:PackageId and appv:VersionId (pack it with `avail package pack`)".into(),
        ));
    };
    let name = m.display_name.clone().unwrap_or_else(|| m.name.clone());
    rules::check_chars("the package's name", &name).map_err(ApiError::BadRequest)?;
    rules::check_chars("the package's version", &m.version).map_err(ApiError::BadRequest)?;
    // Recorded so that a client can check the block map it fetches.
    let block_map_sha256 = package.block_map_sha256()?;
    Ok(NewPackageVersion {
        package_id: PackageId(package_id),
        version_id: VersionId(version_id),
        name,
        version: m.version.clone(),
        content_path: format!("packages/{package_id}/{version_id}.appv"),
        size,
        sha256,
        block_map_sha256: Some(block_map_sha256),
        target_oses: m.target_oses.clone(),
        applications: m
            .applications
            .iter()
            .map(|a| Application {
                id: a.id.clone(),
                target: a.target.clone(),
                arguments: a.arguments.clone(),
            })
            .collect(),
    })
}

/// Verify every block of an incoming package and read its identity.
pub(crate) async fn verify(incoming: &Incoming) -> ApiResult<NewPackageVersion> {
    let path = incoming.path.to_path_buf();
    let (sha256, size) = (incoming.sha256.clone(), incoming.size);
    tokio::task::spawn_blocking(move || verify_file(&path, sha256, size))
        .await
        .map_err(ApiError::internal)?
}

/// Run `work` on a task of its own and wait for it: when the request is dropped
/// (client gone, timeout), the task still runs to its end.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work).await.map_err(ApiError::internal)?
}

/// What an import records.
// One short-lived value per import: boxing `previous` would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Record {
    /// A new version, on its own.
    Version,
    /// A new version of `previous`'s package, with or without App-V's transfer of
    /// entitlements and configuration, and published (the package's other
    /// versions unpublished) or not.
    Upgrade {
        previous: PackageVersion,
        transfer: bool,
        publish: bool,
    },
}

/// What an import did.
pub(crate) struct Imported {
    /// Whether the version is new.
    pub created: bool,
    /// The version as recorded.
    pub version: PackageVersion,
    /// For an upgrade: the version upgraded from.
    pub from: Option<VersionId>,
}

/// Import a verified package: the file lands under its immutable per-version path
/// first (fsync, rename), then the row is written in one transaction (for an
/// upgrade, with the transfer). A failure leaves neither a file nor a row; the
/// same VersionId again returns the existing version; a different file under a
/// known VersionId is a conflict. Run it `detached`.
pub(crate) async fn import(
    catalog: Catalog,
    incoming: Incoming,
    record: Record,
) -> ApiResult<Imported> {
    let version = verify(&incoming).await?;
    let from = match &record {
        Record::Version => None,
        Record::Upgrade { previous, .. } => Some(upgrade_from(&catalog, previous, &version).await?),
    };
    match catalog.store.package_version(version.version_id).await {
        Ok(existing) if existing.package.sha256 == version.sha256 => {
            if from.is_none() {
                return Ok(Imported {
                    created: false,
                    version: existing,
                    from,
                });
            }
            // An upgrade already recorded (a retry): record it again, which is
            // idempotent, so that its transfer is complete.
        }
        Ok(_) => {
            return Err(ApiError::Store(StoreError::Conflict(format!(
                "version {} is already imported from a different file",
                version.version_id
            ))));
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let target = catalog.content_root.join(&version.content_path);
    let dir = target.parent().expect("per-version path has a parent");
    let io = |e| ApiError::io(&store_name(&catalog.content_root), e);
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    // tempfile made the upload private (0600); a published package file is
    // readable as the umask allows, so that a mirror (nginx as another user) can
    // serve the content store.
    let incoming_dir = catalog.content_root.join(INCOMING);
    let part = incoming.path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = creation_mode(&incoming_dir)?;
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(mode))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(io)?;
    // Never replace a stored file: a version's file is immutable once it exists.
    let existed = match incoming.path.persist_noclobber(&target) {
        Ok(()) => {
            tokio::fs::File::open(dir)
                .await
                .map_err(io)?
                .sync_all()
                .await
                .map_err(io)?;
            false
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another node or request stored this version: it must be the same file.
            if sha256_file(&target).await? != version.sha256 {
                return Err(ApiError::Store(StoreError::Conflict(format!(
                    "a different file is already stored for version {}",
                    version.version_id
                ))));
            }
            true
        }
        Err(e) => return Err(io(e.error)),
    };
    let recorded = match (&record, from) {
        (
            Record::Upgrade {
                transfer, publish, ..
            },
            Some(from),
        ) => {
            let what = Transfer {
                entitlements: *transfer,
                deployment_config: *transfer,
                publish: *publish,
            };
            catalog
                .store
                .upgrade_package_version(version.clone(), from, what)
                .await
        }
        _ => catalog.store.add_package_version(version.clone()).await,
    };
    match recorded {
        Ok(added) => {
            tracing::info!(version_id = %version.version_id, name = %version.name, created = added.created, "package imported");
            Ok(Imported {
                created: added.created,
                version: added.value,
                from,
            })
        }
        Err(e) => {
            if !existed {
                let _ = tokio::fs::remove_file(&target).await;
            }
            Err(e.into())
        }
    }
}

/// The version an upgrade to `version` transfers from: `previous` (what the
/// request named), unless the upload *is* `previous` — then the request is a
/// retry of an upgrade that was recorded (or a plain import followed by an
/// upgrade), and it upgrades from the version before it.
pub(crate) async fn upgrade_from(
    catalog: &Catalog,
    previous: &PackageVersion,
    version: &NewPackageVersion,
) -> ApiResult<VersionId> {
    if version.package_id != previous.package.package_id {
        return Err(ApiError::BadRequest(format!(
            "the upload is not a version of {}, it was packed as a different package (PackageId {}, not {}): make the new version with `avail package pack --update-of OLD.appv`",
            previous.package.name, version.package_id, previous.package.package_id
        )));
    }
    if version.version_id != previous.package.version_id {
        return Ok(previous.package.version_id);
    }
    let versions = catalog
        .store
        .list_package_versions(&PackageFilter {
            package_id: Some(version.package_id),
            ..Default::default()
        })
        .await?;
    let at = versions
        .iter()
        .position(|v| v.package.version_id == version.version_id);
    match at {
        Some(i) if i > 0 => Ok(versions[i - 1].package.version_id),
        _ => Err(ApiError::BadRequest(
            "the upload is the version being upgraded from".into(),
        )),
    }
}

pub(crate) async fn sha256_file(path: &Path) -> ApiResult<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> ApiResult<String> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(ApiError::internal)?
}

/// `O_NOFOLLOW` (the crate does not depend on `libc`): the generic Linux value,
/// and the one of the architectures and systems that define their own.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "m68k"
    )
))]
pub(crate) const O_NOFOLLOW: i32 = 0o100000;
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "m68k"
    ))
))]
pub(crate) const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(target_os = "linux"))]
pub(crate) const O_NOFOLLOW: i32 = 0x100; // macOS and the BSDs

/// Open the regular file at `rel` inside the content store without following a
/// symbolic link anywhere: each component is `lstat`ed from the root, and a
/// symlink is refused with one message whatever it points to (or whether that
/// exists), so the import cannot be used to probe the rest of the file system.
/// The file is opened with `O_NOFOLLOW` and must be the (device, inode) that was
/// checked, so a name swapped in between cannot redirect the read.
pub(crate) fn open_in_store(root: &Path, rel: &str) -> ApiResult<std::fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let not_found = || ApiError::Store(StoreError::NotFound(format!("{rel} in the content store")));
    let symlink = || {
        ApiError::BadRequest(format!(
            "{rel} passes through a symbolic link; import takes real paths inside the content store only"
        ))
    };
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => not_found(),
        _ => ApiError::io(&store_name(root), e),
    };
    let mut at = root.to_path_buf();
    let mut checked = None;
    for component in Path::new(rel).components() {
        at.push(component);
        let meta = std::fs::symlink_metadata(&at).map_err(gone)?;
        if meta.file_type().is_symlink() {
            return Err(symlink());
        }
        checked = Some(meta);
    }
    let checked = checked.ok_or_else(not_found)?;
    if !checked.is_file() {
        return Err(ApiError::BadRequest(format!("{rel} is not a regular file")));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(&at)
        .map_err(|e| match std::fs::symlink_metadata(&at) {
            // ELOOP: the last component became a symlink after the check.
            Ok(now) if now.file_type().is_symlink() => symlink(),
            _ => gone(e),
        })?;
    let opened = file.metadata().map_err(gone)?;
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(ApiError::BadRequest(format!(
            "{rel} changed while it was being opened; try again"
        )));
    }
    Ok(file)
}

/// Copy `from` into `to`, hashing it on the way, and make `to` durable; the
/// SHA-256 and size.
pub(crate) fn copy_hashing(
    mut from: std::fs::File,
    mut to: std::fs::File,
) -> std::io::Result<(String, u64)> {
    use std::io::{Read as _, Write as _};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    to.sync_all()?;
    Ok((hex::encode(hasher.finalize()), size))
}

// ---- recovery at start ----

/// Where package files the server cannot account for are moved at start.
pub(crate) const QUARANTINE: &str = ".quarantine";
/// A `.part` file of another host untouched this long is a crashed node's leftover.
pub(crate) const STALE_PART: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What [`recover`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Stale `.part` files removed from `.incoming`.
    pub removed_parts: usize,
    /// Package files without a row that verified and were recorded.
    pub adopted: usize,
    /// Package files without a row that did not, moved to `.quarantine`.
    pub quarantined: usize,
}

/// Settle what a killed process left in the content store, before the management
/// role serves: remove stale `.part` files from `.incoming`, and give every file
/// under `packages/` a row — recorded if it verifies completely and its manifest's
/// PackageId and VersionId are the ones of its path (the process died between
/// the rename and the row), otherwise moved to `.quarantine/` with a warning, so
/// the content role no longer serves it.
pub(crate) async fn recover(catalog: &Catalog) -> anyhow::Result<Recovered> {
    use anyhow::Context as _;
    let root = catalog.content_root.clone();
    let removed_parts = tokio::task::spawn_blocking(move || sweep_incoming(&root))
        .await?
        .with_context(|| {
            format!(
                "cannot sweep {}",
                catalog.content_root.join(INCOMING).display()
            )
        })?;
    let mut recovered = Recovered {
        removed_parts,
        ..Default::default()
    };
    let root = catalog.content_root.clone();
    let files = tokio::task::spawn_blocking(move || package_files(&root))
        .await?
        .with_context(|| {
            format!(
                "cannot list {}",
                catalog.content_root.join("packages").display()
            )
        })?;
    if files.is_empty() {
        return Ok(recovered);
    }
    let known: std::collections::HashSet<String> = catalog
        .store
        .list_package_versions(&PackageFilter::default())
        .await?
        .into_iter()
        .map(|v| v.package.content_path)
        .collect();
    // One directory per start: `.quarantine/<UTC time>/packages/…`.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let into = catalog.content_root.join(QUARANTINE).join(stamp);
    for rel in files.into_iter().filter(|rel| !known.contains(rel)) {
        match adopt(catalog, &rel).await? {
            Ok(version) => {
                tracing::warn!(path = %rel, version_id = %version.package.version_id,
                    "recorded a package file that had no row (an import was interrupted after storing it)");
                recovered.adopted += 1;
            }
            Err(reason) => {
                let to = quarantine(&catalog.content_root, &into, &rel)
                    .with_context(|| format!("cannot move {rel} to {QUARANTINE}"))?;
                tracing::warn!(path = %rel, quarantined = %to.display(), %reason,
                    "moved aside a package file that has no row and cannot be recorded");
                recovered.quarantined += 1;
            }
        }
    }
    if recovered != Recovered::default() {
        tracing::info!(?recovered, "content store recovered");
    }
    Ok(recovered)
}

/// Remove the `.part` files in `.incoming` that no live upload writes: this
/// host's files whose process is gone (or was this process's predecessor under
/// the same pid), and anybody's untouched for [`STALE_PART`].
pub(crate) fn sweep_incoming(root: &Path) -> std::io::Result<usize> {
    let dir = root.join(INCOMING);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    // Uploads are private until they are published; an older Avail created the
    // directory with the umask's mode.
    if let Err(e) =
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
    {
        tracing::warn!(dir = %dir.display(), "cannot make the upload directory private: {e}");
    }
    let host = host_name();
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".part") {
            continue;
        }
        let mut parts = name.split('.');
        let owner = (
            parts.next(),
            parts.next().and_then(|p| p.parse::<u32>().ok()),
        );
        let dead = match owner {
            (Some(h), Some(pid)) if h == host => {
                pid == me || !Path::new("/proc").join(pid.to_string()).exists()
            }
            _ => false,
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_PART);
        if dead || old {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed an upload a stopped process left");
                    removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Every regular file under `packages/`, as a path relative to the root.
/// Symbolic links are not followed.
pub(crate) fn package_files(root: &Path) -> std::io::Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), &path, out)?;
            } else if kind.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&root.join("packages"), "packages", &mut out)?;
    out.sort();
    Ok(out)
}

/// Record a package file that has no row: `Ok(Ok(version))` when it verified,
/// matched its path and was recorded; `Ok(Err(reason))` when it must go to
/// quarantine; `Err` when the database failed (start-up stops).
pub(crate) async fn adopt(
    catalog: &Catalog,
    rel: &str,
) -> anyhow::Result<Result<PackageVersion, String>> {
    let path = catalog.content_root.join(rel);
    let (rel_owned, checked) = (rel.to_owned(), path.clone());
    let verified = tokio::task::spawn_blocking(move || -> ApiResult<NewPackageVersion> {
        let size = std::fs::metadata(&checked)?.len();
        let mut file = std::fs::File::open(&checked)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        let version = verify_file(&checked, hex::encode(hasher.finalize()), size)?;
        if version.content_path != rel_owned {
            return Err(ApiError::BadRequest(format!(
                "its manifest says PackageId {} and VersionId {}, which belong at {}",
                version.package_id, version.version_id, version.content_path
            )));
        }
        Ok(version)
    })
    .await?;
    let version = match verified {
        Ok(version) => version,
        Err(e) => return Ok(Err(e.to_string())),
    };
    match catalog.store.add_package_version(version).await {
        Ok(added) => Ok(Ok(added.value)),
        Err(StoreError::Conflict(reason)) => Ok(Err(reason)),
        Err(e) => Err(e.into()),
    }
}

/// Move `rel` to `<into>/<rel>`; where it went.
pub(crate) fn quarantine(root: &Path, into: &Path, rel: &str) -> std::io::Result<PathBuf> {
    let to = into.join(rel);
    std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
    let from = root.join(rel);
    std::fs::rename(&from, &to)?;
    // The version's directory, if now empty (an error means it is not).
    if let Some(dir) = from.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An import records the operating systems the manifest targets, as
    /// written (one no server knows too), and none for a package without.
    #[test]
    fn an_import_records_the_target_oses() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("opt/x")).unwrap();
        std::fs::write(tree.join("opt/x/data"), b"x").unwrap();
        for targets in [
            vec![],
            vec![
                "WindowsClient_10.0_x64".to_owned(),
                "Windows_Next".to_owned(),
            ],
        ] {
            let file = dir.path().join("x.appv");
            let options = avail_format::PackOptions {
                target_oses: targets.clone(),
                ..Default::default()
            };
            avail_format::pack(&tree, &file, &options, &NoProgress).unwrap();
            let version = verify_file(&file, "0".repeat(64), 1).unwrap();
            assert_eq!(version.target_oses, targets);
        }
    }

    /// An import records the SHA-256 of the uncompressed `AppxBlockMap.xml`,
    /// the same as `unzip` gives for that part.
    #[test]
    fn an_import_records_the_block_maps_digest() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("opt/x")).unwrap();
        std::fs::write(tree.join("opt/x/data"), vec![7u8; 200_000]).unwrap();
        let file = dir.path().join("x.appv");
        avail_format::pack(
            &tree,
            &file,
            &avail_format::PackOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let version = verify_file(&file, "0".repeat(64), 1).unwrap();
        let out = std::process::Command::new("unzip")
            .arg("-p")
            .arg(&file)
            .arg("AppxBlockMap.xml")
            .output()
            .expect("unzip must be installed");
        assert!(out.status.success() && !out.stdout.is_empty());
        assert_eq!(
            version.block_map_sha256,
            Some(hex::encode(Sha256::digest(&out.stdout)))
        );
    }
}
