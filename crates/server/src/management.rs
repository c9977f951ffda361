//! The management role: the admin API under `/api/v1`, after App-V's AppvServer
//! cmdlets and management console.
//!
//! Handlers only turn HTTP into calls on the Management DB and the content store.
//! The role keeps no state of its own beyond those two, so any number of nodes can
//! stand behind a load balancer. Every change to the Management DB is one store
//! call, hence one transaction: all of it or nothing, whatever happens to the
//! request. Package import is the one operation that spans the content store and
//! the database; it runs to its end independently of the request (`import`), and
//! [`recover`] settles at start what a killed process left behind.
//!
//! Names the API creates are checked for characters that could make them
//! display as something else ([`is_deceptive`]); a full disk is a 507 that says
//! which one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use avail_format::{NoProgress, Package};
use avail_store::ManagementStore;
use avail_store::model::{ConnectionGroupChange, ConnectionGroupMember, PackageFilter, Principal};
use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::api::*;
use crate::auth::{self, Admin};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// What every management handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The Management DB.
    pub store: Arc<dyn ManagementStore>,
    /// The content store's root directory.
    pub content_root: PathBuf,
    /// Largest package upload.
    pub max_upload_bytes: u64,
}

/// Where uploads are written before they are verified: inside the content store,
/// so the final rename stays on one file system.
const INCOMING: &str = ".incoming";
/// Bodies of JSON requests.
const JSON_LIMIT: usize = 1 << 20;

/// The management router (everything under `/api/v1`).
pub fn router(state: AppState) -> axum::Router {
    use axum::routing::delete;
    let upload_limit = DefaultBodyLimit::disable();
    axum::Router::new()
        .route(OPENAPI_PATH, get(openapi))
        .route(
            "/api/v1/packages",
            get(list_packages).post(upload_package).layer(upload_limit),
        )
        .route("/api/v1/packages/import", post(import_from_store))
        .route(
            "/api/v1/packages/{pkg}",
            get(show_package).delete(remove_package),
        )
        .route("/api/v1/packages/{pkg}/publish", post(publish_package))
        .route("/api/v1/packages/{pkg}/unpublish", post(unpublish_package))
        .route(
            "/api/v1/packages/{pkg}/upgrade",
            post(upgrade_package).layer(upload_limit),
        )
        .route(
            "/api/v1/packages/{pkg}/deployment-config",
            get(get_deployment_config)
                .put(set_deployment_config)
                .delete(clear_deployment_config),
        )
        .route(
            "/api/v1/packages/{pkg}/entitlements/{group}",
            put(grant_package).delete(revoke_package),
        )
        .route(
            "/api/v1/connection-groups",
            get(list_connection_groups).post(create_connection_group),
        )
        .route(
            "/api/v1/connection-groups/{cg}",
            get(show_connection_group)
                .patch(update_connection_group)
                .delete(delete_connection_group),
        )
        .route(
            "/api/v1/connection-groups/{cg}/publish",
            post(publish_connection_group),
        )
        .route(
            "/api/v1/connection-groups/{cg}/unpublish",
            post(unpublish_connection_group),
        )
        .route(
            "/api/v1/connection-groups/{cg}/members/{pkg}",
            put(set_member).delete(remove_member),
        )
        .route(
            "/api/v1/connection-groups/{cg}/entitlements/{group}",
            put(grant_connection_group).delete(revoke_connection_group),
        )
        .route(
            "/api/v1/publishing-servers",
            get(list_servers).post(register_server),
        )
        .route(
            "/api/v1/publishing-servers/{name}",
            delete(unregister_server),
        )
        .route("/api/v1/administrators", get(list_admins).post(add_admin))
        .route("/api/v1/administrators/{name}", delete(remove_admin))
        .route("/api/v1/administrators/{name}/tokens", post(create_token))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route("/api/v1/machines", get(list_machines).post(create_machine))
        .route("/api/v1/machines/{name}", delete(delete_machine))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route(
            "/api/v1/groups/{name}",
            get(group_members).delete(delete_group),
        )
        .route(
            "/api/v1/groups/{name}/members/{kind}/{member}",
            put(add_member).delete(remove_group_member),
        )
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Avail management API", description = "App-V-style package, entitlement, connection group, directory and server administration."),
    paths(
        list_packages, upload_package, import_from_store, show_package, remove_package, publish_package, unpublish_package,
        upgrade_package, get_deployment_config, set_deployment_config, clear_deployment_config, grant_package, revoke_package,
        list_connection_groups, create_connection_group, show_connection_group, update_connection_group,
        delete_connection_group, publish_connection_group, unpublish_connection_group, set_member, remove_member,
        grant_connection_group, revoke_connection_group, list_servers, register_server, unregister_server, list_admins,
        add_admin, remove_admin, create_token, list_users, create_user, delete_user, list_machines, create_machine,
        delete_machine, list_groups, create_group, group_members, delete_group, add_member, remove_group_member
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("token" = []), ("password" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "password",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The OpenAPI document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

// ---- resolving names ----

/// A package version by VersionId, by PackageId (its newest version) or by name (newest version).
async fn resolve_version(store: &dyn ManagementStore, pkg: &str) -> ApiResult<PackageVersion> {
    if let Ok(id) = Uuid::parse_str(pkg) {
        match store.package_version(id).await {
            Ok(v) => return Ok(v),
            Err(avail_store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let versions = store
            .list_package_versions(&PackageFilter {
                package_id: Some(id),
                ..Default::default()
            })
            .await?;
        return versions.into_iter().next_back().ok_or_else(|| {
            ApiError::Store(avail_store::StoreError::NotFound(format!("package {pkg}")))
        });
    }
    let versions = store
        .list_package_versions(&PackageFilter {
            name_contains: Some(pkg.to_owned()),
            ..Default::default()
        })
        .await?;
    let exact: Vec<PackageVersion> = versions
        .into_iter()
        .filter(|v| v.package.name.eq_ignore_ascii_case(pkg))
        .collect();
    let ids: std::collections::BTreeSet<Uuid> =
        exact.iter().map(|v| v.package.package_id).collect();
    if ids.len() > 1 {
        return Err(ApiError::Store(avail_store::StoreError::Conflict(format!(
            "{} packages are named {pkg}; use a PackageId or VersionId",
            ids.len()
        ))));
    }
    exact
        .into_iter()
        .next_back()
        .ok_or_else(|| ApiError::Store(avail_store::StoreError::NotFound(format!("package {pkg}"))))
}

async fn resolve_connection_group(
    store: &dyn ManagementStore,
    cg: &str,
) -> ApiResult<ConnectionGroup> {
    if let Ok(id) = Uuid::parse_str(cg) {
        return Ok(store.connection_group(id).await?);
    }
    store
        .list_connection_groups()
        .await?
        .into_iter()
        .find(|g| g.name.eq_ignore_ascii_case(cg))
        .ok_or_else(|| {
            ApiError::Store(avail_store::StoreError::NotFound(format!(
                "connection group {cg}"
            )))
        })
}

/// Names and labels may not hide what they are: no control characters, no
/// invisible or reordering Unicode ([`is_deceptive`]), so that no name can make a
/// terminal or a log show something else.
fn check_chars(what: &str, value: &str) -> ApiResult<()> {
    match value.chars().find(|c| is_deceptive(*c)) {
        Some(c) => Err(ApiError::BadRequest(format!(
            "{what} {value:?} contains U+{:04X}, a control or invisible character that would make it display as something else",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// A label (of a token): at most 256 bytes, nothing deceptive.
fn check_label(what: &str, value: &str) -> ApiResult<()> {
    if value.len() > 256 {
        return Err(ApiError::BadRequest(format!(
            "{what} is longer than 256 bytes"
        )));
    }
    check_chars(what, value)
}

/// A name of something the API creates: 1–256 bytes, not blank, nothing
/// deceptive, no `/` (names are path segments of the API).
fn check_name(kind: &str, name: &str) -> ApiResult<()> {
    let what = format!("{kind} name");
    if name.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{what} must not be empty")));
    }
    check_label(&what, name)?;
    if name.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "{what} {name:?} must not contain '/'"
        )));
    }
    Ok(())
}

// ---- import ----
//
// An import is: receive (the body into `.incoming/*.part`, hashed as it
// arrives) → make it durable → verify every block → rename into
// `packages/<PackageId>/<VersionId>.appv` → the row. Only receiving belongs to
// the request; from its last byte on, the work runs on a task of its own
// (`detached`), so a client that disconnects or a timeout that drops the request
// cannot stop it between the rename and the row. A process killed anywhere in
// between leaves at most a `.part` file or a package file without a row;
// `recover` settles both before the role serves again.

/// A package file written into `.incoming` and made durable, removed on drop unless kept.
struct Incoming {
    path: tempfile::TempPath,
    sha256: String,
    size: u64,
}

/// A request body written into `.incoming`, not yet flushed or synced.
struct Received {
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
async fn make_durable(file: &mut tokio::fs::File, what: &str) -> ApiResult<()> {
    let io = |e| ApiError::io(what, e);
    // tokio's File writes in the background: the last write's error (a full disk)
    // surfaces only here; `sync_all` would wait for that write and drop its error.
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)
}

/// How the content store is named in messages (a full disk names it).
fn store_name(root: &Path) -> String {
    format!("the content store {}", root.display())
}

/// This host's name, as it goes into `.part` file names: letters, digits and `-`.
fn host_name() -> String {
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
fn part_prefix() -> String {
    format!("{}.{}.", host_name(), std::process::id())
}

/// A new `.part` file in `.incoming` (created if needed).
fn incoming_file(root: &Path) -> ApiResult<(std::fs::File, tempfile::TempPath)> {
    let dir = root.join(INCOMING);
    let io = |e| ApiError::io(&store_name(root), e);
    std::fs::create_dir_all(&dir).map_err(io)?;
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
async fn receive(state: &AppState, body: Body) -> ApiResult<Received> {
    let root = state.content_root.clone();
    let (file, path) = tokio::task::spawn_blocking(move || incoming_file(&root))
        .await
        .map_err(ApiError::internal)??;
    let mut file = tokio::fs::File::from_std(file);
    let store = store_name(&state.content_root);
    let (sha256, size) = write_body(&mut file, body, state.max_upload_bytes, &store).await?;
    Ok(Received {
        file,
        path,
        sha256,
        size,
        store,
    })
}

/// Write `body` to `file` (at most `limit` bytes); its SHA-256 and size. An I/O
/// error is reported against `what`.
async fn write_body(
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
fn verify_file(path: &Path, sha256: String, size: u64) -> ApiResult<NewPackageVersion> {
    let package = Package::open(std::fs::File::open(path)?)?;
    package.verify(&NoProgress)?;
    let m = package.manifest();
    let (Some(package_id), Some(version_id)) = (m.package_id, m.version_id) else {
        return Err(ApiError::BadRequest(
            "the package's manifest has no appv:PackageId and appv:VersionId (pack it with `avail package pack`)".into(),
        ));
    };
    let name = m.display_name.clone().unwrap_or_else(|| m.name.clone());
    check_chars("the package's name", &name)?;
    check_chars("the package's version", &m.version)?;
    Ok(NewPackageVersion {
        package_id,
        version_id,
        name,
        version: m.version.clone(),
        content_path: format!("packages/{package_id}/{version_id}.appv"),
        size,
        sha256,
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
async fn verify(incoming: &Incoming) -> ApiResult<NewPackageVersion> {
    let path = incoming.path.to_path_buf();
    let (sha256, size) = (incoming.sha256.clone(), incoming.size);
    tokio::task::spawn_blocking(move || verify_file(&path, sha256, size))
        .await
        .map_err(ApiError::internal)?
}

/// Run `work` on a task of its own and wait for it: when the request is dropped
/// (client gone, timeout), the task still runs to its end.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work).await.map_err(ApiError::internal)?
}

/// What an import records.
enum Record {
    /// A new version, on its own.
    Version,
    /// A new version of `previous`'s package, with or without App-V's transfer of
    /// entitlements and configuration.
    Upgrade {
        previous: PackageVersion,
        transfer: bool,
    },
}

/// What an import did.
struct Imported {
    /// Whether the version is new.
    created: bool,
    version: PackageVersion,
    /// For an upgrade: the version upgraded from.
    from: Option<Uuid>,
}

/// Import a verified package: the file lands under its immutable per-version path
/// first (fsync, rename), then the row is written in one transaction (for an
/// upgrade, with the transfer). A failure leaves neither a file nor a row; the
/// same VersionId again returns the existing version; a different file under a
/// known VersionId is a conflict. Run it `detached`.
async fn import(state: AppState, incoming: Incoming, record: Record) -> ApiResult<Imported> {
    let version = verify(&incoming).await?;
    let from = match &record {
        Record::Version => None,
        Record::Upgrade { previous, .. } => Some(upgrade_from(&state, previous, &version).await?),
    };
    match state.store.package_version(version.version_id).await {
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
            return Err(ApiError::Store(avail_store::StoreError::Conflict(format!(
                "version {} is already imported from a different file",
                version.version_id
            ))));
        }
        Err(avail_store::StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let target = state.content_root.join(&version.content_path);
    let dir = target.parent().expect("per-version path has a parent");
    let io = |e| ApiError::io(&store_name(&state.content_root), e);
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
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
                return Err(ApiError::Store(avail_store::StoreError::Conflict(format!(
                    "a different file is already stored for version {}",
                    version.version_id
                ))));
            }
            true
        }
        Err(e) => return Err(io(e.error)),
    };
    let recorded = match (&record, from) {
        (Record::Upgrade { transfer, .. }, Some(from)) => {
            let what = Transfer {
                entitlements: *transfer,
                deployment_config: *transfer,
            };
            state
                .store
                .upgrade_package_version(version.clone(), from, what)
                .await
        }
        _ => state.store.add_package_version(version.clone()).await,
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
async fn upgrade_from(
    state: &AppState,
    previous: &PackageVersion,
    version: &NewPackageVersion,
) -> ApiResult<Uuid> {
    if version.package_id != previous.package.package_id {
        return Err(ApiError::BadRequest(format!(
            "the package's PackageId {} is not {}: an upgrade must be a new version of the same package",
            version.package_id, previous.package.package_id
        )));
    }
    if version.version_id != previous.package.version_id {
        return Ok(previous.package.version_id);
    }
    let versions = state
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

async fn sha256_file(path: &Path) -> ApiResult<String> {
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

fn import_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Import an uploaded package (`Import-AppvServerPackage`): the body is the `.appv` file.
#[utoipa::path(post, path = "/api/v1/packages", tag = "packages",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the .appv file"),
    responses((status = 201, body = ImportResponse, description = "imported"), (status = 200, body = ImportResponse, description = "already imported"),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody, description = "not a valid package"),
              (status = 507, body = ErrorBody, description = "the content store is full")))]
async fn upload_package(
    State(state): State<AppState>,
    _admin: Admin,
    body: Body,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    let received = receive(&state, body).await?;
    let imported = detached(async move {
        let incoming = received.durable().await?;
        import(state, incoming, Record::Version).await
    })
    .await?;
    Ok((
        import_status(imported.created),
        Json(ImportResponse {
            created: imported.created,
            version: imported.version,
        }),
    ))
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
const O_NOFOLLOW: i32 = 0o100000;
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
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(target_os = "linux"))]
const O_NOFOLLOW: i32 = 0x100; // macOS and the BSDs

/// Open the regular file at `rel` inside the content store without following a
/// symbolic link anywhere: each component is `lstat`ed from the root, and a
/// symlink is refused with one message whatever it points to (or whether that
/// exists), so the import cannot be used to probe the rest of the file system.
/// The file is opened with `O_NOFOLLOW` and must be the (device, inode) that was
/// checked, so a name swapped in between cannot redirect the read.
fn open_in_store(root: &Path, rel: &str) -> ApiResult<std::fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let not_found = || {
        ApiError::Store(avail_store::StoreError::NotFound(format!(
            "{rel} in the content store"
        )))
    };
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
fn copy_hashing(mut from: std::fs::File, mut to: std::fs::File) -> std::io::Result<(String, u64)> {
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

/// Import a package already in the content store.
#[utoipa::path(post, path = "/api/v1/packages/import", tag = "packages", request_body = ImportFromStoreRequest,
    responses((status = 201, body = ImportResponse), (status = 200, body = ImportResponse), (status = 400, body = ErrorBody, description = "not a real path inside the content store (a symbolic link on the way)"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn import_from_store(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<ImportFromStoreRequest>,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    if req.path.is_empty()
        || Path::new(&req.path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not a relative path inside the content store",
            req.path
        )));
    }
    let root = state.content_root.clone();
    let incoming = tokio::task::spawn_blocking(move || -> ApiResult<Incoming> {
        let source = open_in_store(&root, &req.path)?;
        let (file, path) = incoming_file(&root)?;
        let (sha256, size) =
            copy_hashing(source, file).map_err(|e| ApiError::io(&store_name(&root), e))?;
        Ok(Incoming { path, sha256, size })
    })
    .await
    .map_err(ApiError::internal)??;
    let imported = detached(import(state, incoming, Record::Version)).await?;
    Ok((
        import_status(imported.created),
        Json(ImportResponse {
            created: imported.created,
            version: imported.version,
        }),
    ))
}

/// Import a new version of a package, optionally transferring entitlements and
/// configuration, in one transaction with the new version. Retrying is safe: the
/// same upload again completes the upgrade rather than fails.
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/upgrade", tag = "packages", params(("pkg" = String, Path), UpgradeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = UpgradeResponse), (status = 200, body = UpgradeResponse, description = "already upgraded (a retry)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn upgrade_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
    Query(q): Query<UpgradeQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UpgradeResponse>)> {
    let previous = resolve_version(&*state.store, &pkg).await?;
    let received = receive(&state, body).await?;
    let record = Record::Upgrade {
        previous,
        transfer: q.transfer,
    };
    let imported = detached(async move {
        let incoming = received.durable().await?;
        import(state, incoming, record).await
    })
    .await?;
    Ok((
        import_status(imported.created),
        Json(UpgradeResponse {
            previous: imported.from.expect("an upgrade has a previous version"),
            version: imported.version,
            transferred: q.transfer,
        }),
    ))
}

// ---- recovery at start ----

/// Where package files the server cannot account for are moved at start.
const QUARANTINE: &str = ".quarantine";
/// A `.part` file of another host untouched this long is a crashed node's leftover.
const STALE_PART: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
pub(crate) async fn recover(state: &AppState) -> anyhow::Result<Recovered> {
    use anyhow::Context as _;
    let root = state.content_root.clone();
    let removed_parts = tokio::task::spawn_blocking(move || sweep_incoming(&root))
        .await?
        .with_context(|| {
            format!(
                "cannot sweep {}",
                state.content_root.join(INCOMING).display()
            )
        })?;
    let mut recovered = Recovered {
        removed_parts,
        ..Default::default()
    };
    let root = state.content_root.clone();
    let files = tokio::task::spawn_blocking(move || package_files(&root))
        .await?
        .with_context(|| {
            format!(
                "cannot list {}",
                state.content_root.join("packages").display()
            )
        })?;
    if files.is_empty() {
        return Ok(recovered);
    }
    let known: std::collections::HashSet<String> = state
        .store
        .list_package_versions(&PackageFilter::default())
        .await?
        .into_iter()
        .map(|v| v.package.content_path)
        .collect();
    // One directory per start: `.quarantine/<UTC time>/packages/…`.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let into = state.content_root.join(QUARANTINE).join(stamp);
    for rel in files.into_iter().filter(|rel| !known.contains(rel)) {
        match adopt(state, &rel).await? {
            Ok(version) => {
                tracing::warn!(path = %rel, version_id = %version.package.version_id,
                    "recorded a package file that had no row (an import was interrupted after storing it)");
                recovered.adopted += 1;
            }
            Err(reason) => {
                let to = quarantine(&state.content_root, &into, &rel)
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
fn sweep_incoming(root: &Path) -> std::io::Result<usize> {
    let dir = root.join(INCOMING);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
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
fn package_files(root: &Path) -> std::io::Result<Vec<String>> {
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
async fn adopt(state: &AppState, rel: &str) -> anyhow::Result<Result<PackageVersion, String>> {
    let path = state.content_root.join(rel);
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
    match state.store.add_package_version(version).await {
        Ok(added) => Ok(Ok(added.value)),
        Err(avail_store::StoreError::Conflict(reason)) => Ok(Err(reason)),
        Err(e) => Err(e.into()),
    }
}

/// Move `rel` to `<into>/<rel>`; where it went.
fn quarantine(root: &Path, into: &Path, rel: &str) -> std::io::Result<PathBuf> {
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

// ---- packages ----

/// List package versions (`Get-AppvServerPackage`).
#[utoipa::path(get, path = "/api/v1/packages", tag = "packages", params(PackageQuery), responses((status = 200, body = Vec<PackageVersion>)))]
async fn list_packages(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<PackageQuery>,
) -> ApiResult<Json<Vec<PackageVersion>>> {
    let filter = PackageFilter {
        name_contains: q.name,
        published: q.published,
        package_id: None,
    };
    Ok(Json(state.store.list_package_versions(&filter).await?))
}

/// One package version with entitlements and configuration; PKG is a VersionId, PackageId or name.
#[utoipa::path(get, path = "/api/v1/packages/{pkg}", tag = "packages", params(("pkg" = String, Path)),
    responses((status = 200, body = PackageDetails), (status = 404, body = ErrorBody)))]
async fn show_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageDetails>> {
    let version = resolve_version(&*state.store, &pkg).await?;
    let id = version.package.version_id;
    Ok(Json(PackageDetails {
        entitlements: state.store.entitlements(id).await?,
        deployment_config: state.store.deployment_config(id).await?,
        version,
    }))
}

/// Remove a package version and its file (`Remove-AppvServerPackage`).
#[utoipa::path(delete, path = "/api/v1/packages/{pkg}", tag = "packages", params(("pkg" = String, Path)),
    responses((status = 200, body = PackageVersion), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    let version = resolve_version(&*state.store, &pkg).await?;
    let removed = state
        .store
        .remove_package_version(version.package.version_id)
        .await?;
    // The row is gone first: a client never sees a version whose file is missing.
    if let Err(e) =
        tokio::fs::remove_file(state.content_root.join(&removed.package.content_path)).await
    {
        tracing::warn!(path = %removed.package.content_path, "could not remove a removed version's file: {e}");
    }
    Ok(Json(removed))
}

async fn set_published(
    state: &AppState,
    pkg: &str,
    published: bool,
) -> ApiResult<Json<PackageVersion>> {
    let version = resolve_version(&*state.store, pkg).await?;
    Ok(Json(
        state
            .store
            .set_published(version.package.version_id, published)
            .await?,
    ))
}

/// Publish a package version (`Publish-AppvServerPackage`).
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/publish", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = PackageVersion)))]
async fn publish_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    set_published(&state, &pkg, true).await
}

/// Unpublish a package version (`Unpublish-AppvServerPackage`).
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/unpublish", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = PackageVersion)))]
async fn unpublish_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    set_published(&state, &pkg, false).await
}

/// The deployment configuration of a version.
#[utoipa::path(get, path = "/api/v1/packages/{pkg}/deployment-config", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = String)))]
async fn get_deployment_config(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<Option<String>>> {
    let version = resolve_version(&*state.store, &pkg).await?;
    Ok(Json(
        state
            .store
            .deployment_config(version.package.version_id)
            .await?,
    ))
}

/// Set the deployment configuration (`Set-AppvServerPackage -DynamicDeploymentConfiguration`).
#[utoipa::path(put, path = "/api/v1/packages/{pkg}/deployment-config", tag = "packages", params(("pkg" = String, Path)),
    request_body = DeploymentConfigRequest, responses((status = 204), (status = 400, body = ErrorBody)))]
async fn set_deployment_config(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
    Json(req): Json<DeploymentConfigRequest>,
) -> ApiResult<StatusCode> {
    check_xml("deployment configuration", &req.config)?;
    let version = resolve_version(&*state.store, &pkg).await?;
    state
        .store
        .set_deployment_config(version.package.version_id, Some(req.config))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the deployment configuration.
#[utoipa::path(delete, path = "/api/v1/packages/{pkg}/deployment-config", tag = "packages", params(("pkg" = String, Path)), responses((status = 204)))]
async fn clear_deployment_config(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let version = resolve_version(&*state.store, &pkg).await?;
    state
        .store
        .set_deployment_config(version.package.version_id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Configuration documents must at least be well-formed XML.
fn check_xml(what: &str, text: &str) -> ApiResult<()> {
    let mut reader = quick_xml_reader(text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => return Ok(()),
            Ok(quick_xml::events::Event::DocType(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "the {what} must not have a DOCTYPE"
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "the {what} is not well-formed XML: {e}"
                )));
            }
        }
    }
}

fn quick_xml_reader(text: &str) -> quick_xml::Reader<&[u8]> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    reader
}

/// Entitle a group to a version (`Grant-AppvServerPackage`), with an optional user configuration.
#[utoipa::path(put, path = "/api/v1/packages/{pkg}/entitlements/{group}", tag = "packages",
    params(("pkg" = String, Path), ("group" = String, Path)), request_body = GrantRequest,
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn grant_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((pkg, group)): UrlPath<(String, String)>,
    body: Option<Json<GrantRequest>>,
) -> ApiResult<StatusCode> {
    let user_config = body.and_then(|Json(b)| b.user_config);
    if let Some(c) = &user_config {
        check_xml("user configuration", c)?;
    }
    let version = resolve_version(&*state.store, &pkg).await?;
    state
        .store
        .grant(version.package.version_id, &group, user_config)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a group's entitlement (`Revoke-AppvServerPackage`).
#[utoipa::path(delete, path = "/api/v1/packages/{pkg}/entitlements/{group}", tag = "packages",
    params(("pkg" = String, Path), ("group" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((pkg, group)): UrlPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let version = resolve_version(&*state.store, &pkg).await?;
    state
        .store
        .revoke(version.package.version_id, &group)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- connection groups ----

/// List connection groups (`Get-AppvServerConnectionGroup`).
#[utoipa::path(get, path = "/api/v1/connection-groups", tag = "connection groups", responses((status = 200, body = Vec<ConnectionGroup>)))]
async fn list_connection_groups(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<ConnectionGroup>>> {
    Ok(Json(state.store.list_connection_groups().await?))
}

/// Create a connection group (`New-AppvServerConnectionGroup`).
#[utoipa::path(post, path = "/api/v1/connection-groups", tag = "connection groups", request_body = CreateConnectionGroupRequest,
    responses((status = 201, body = ConnectionGroup), (status = 409, body = ErrorBody)))]
async fn create_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateConnectionGroupRequest>,
) -> ApiResult<(StatusCode, Json<ConnectionGroup>)> {
    check_name("connection group", &req.name)?;
    Ok((
        StatusCode::CREATED,
        Json(
            state
                .store
                .create_connection_group(&req.name, req.priority)
                .await?,
        ),
    ))
}

/// One connection group, by id or name.
#[utoipa::path(get, path = "/api/v1/connection-groups/{cg}", tag = "connection groups", params(("cg" = String, Path)),
    responses((status = 200, body = ConnectionGroup), (status = 404, body = ErrorBody)))]
async fn show_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    Ok(Json(resolve_connection_group(&*state.store, &cg).await?))
}

/// Rename a connection group or set its priority (`Set-AppvServerConnectionGroup`).
#[utoipa::path(patch, path = "/api/v1/connection-groups/{cg}", tag = "connection groups", params(("cg" = String, Path)),
    request_body = UpdateConnectionGroupRequest, responses((status = 200, body = ConnectionGroup)))]
async fn update_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
    Json(req): Json<UpdateConnectionGroupRequest>,
) -> ApiResult<Json<ConnectionGroup>> {
    if let Some(name) = &req.name {
        check_name("connection group", name)?;
    }
    let group = resolve_connection_group(&*state.store, &cg).await?;
    let changes: Vec<ConnectionGroupChange> = req
        .name
        .map(ConnectionGroupChange::Rename)
        .into_iter()
        .chain(req.priority.map(ConnectionGroupChange::Priority))
        .collect();
    // Both changes in one transaction, as one new version of the group.
    Ok(Json(
        state
            .store
            .update_connection_group(group.id, changes)
            .await?,
    ))
}

/// Delete a connection group (`Remove-AppvServerConnectionGroup`).
#[utoipa::path(delete, path = "/api/v1/connection-groups/{cg}", tag = "connection groups", params(("cg" = String, Path)), responses((status = 204)))]
async fn delete_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let group = resolve_connection_group(&*state.store, &cg).await?;
    state.store.delete_connection_group(group.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_group(
    state: &AppState,
    cg: &str,
    change: ConnectionGroupChange,
) -> ApiResult<Json<ConnectionGroup>> {
    let group = resolve_connection_group(&*state.store, cg).await?;
    Ok(Json(
        state
            .store
            .update_connection_group(group.id, vec![change])
            .await?,
    ))
}

/// Publish a connection group (`Publish-AppvServerConnectionGroup`).
#[utoipa::path(post, path = "/api/v1/connection-groups/{cg}/publish", tag = "connection groups", params(("cg" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
async fn publish_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Publish(true)).await
}

/// Unpublish a connection group.
#[utoipa::path(post, path = "/api/v1/connection-groups/{cg}/unpublish", tag = "connection groups", params(("cg" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
async fn unpublish_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Publish(false)).await
}

/// Add a package to a connection group or change it (`Add-AppvServerConnectionGroupPackage`).
#[utoipa::path(put, path = "/api/v1/connection-groups/{cg}/members/{pkg}", tag = "connection groups",
    params(("cg" = String, Path), ("pkg" = String, Path)), request_body = SetMemberRequest, responses((status = 200, body = ConnectionGroup)))]
async fn set_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, pkg)): UrlPath<(String, String)>,
    body: Option<Json<SetMemberRequest>>,
) -> ApiResult<Json<ConnectionGroup>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let group = resolve_connection_group(&*state.store, &cg).await?;
    let version = resolve_version(&*state.store, &pkg).await?;
    let version_id = match (req.any_version, req.version_id) {
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either version_id or any_version, not both".into(),
            ));
        }
        (true, None) => None,
        (false, Some(v)) => Some(v),
        (false, None) => Some(version.package.version_id),
    };
    let package_id = version.package.package_id;
    let mut changes = vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
        package_id,
        version_id,
        optional: req.optional,
    })];
    if let Some(position) = req.position {
        changes.push(ConnectionGroupChange::MoveMember {
            package_id,
            position,
        });
    }
    // Adding and placing the member in one transaction, as one new version of the group.
    Ok(Json(
        state
            .store
            .update_connection_group(group.id, changes)
            .await?,
    ))
}

/// Remove a package from a connection group (`Remove-AppvServerConnectionGroupPackage`).
#[utoipa::path(delete, path = "/api/v1/connection-groups/{cg}/members/{pkg}", tag = "connection groups",
    params(("cg" = String, Path), ("pkg" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
async fn remove_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, pkg)): UrlPath<(String, String)>,
) -> ApiResult<Json<ConnectionGroup>> {
    let version = resolve_version(&*state.store, &pkg).await?;
    change_group(
        &state,
        &cg,
        ConnectionGroupChange::RemoveMember(version.package.package_id),
    )
    .await
}

/// Entitle a group to a connection group (`Grant-AppvServerConnectionGroup`).
#[utoipa::path(put, path = "/api/v1/connection-groups/{cg}/entitlements/{group}", tag = "connection groups",
    params(("cg" = String, Path), ("group" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
async fn grant_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, group)): UrlPath<(String, String)>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Grant(group)).await
}

/// Remove a group's entitlement to a connection group (`Revoke-AppvServerConnectionGroup`).
#[utoipa::path(delete, path = "/api/v1/connection-groups/{cg}/entitlements/{group}", tag = "connection groups",
    params(("cg" = String, Path), ("group" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
async fn revoke_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, group)): UrlPath<(String, String)>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Revoke(group)).await
}

// ---- publishing servers ----

/// Registered publishing servers with their last sync (`Get-AppvPublishingServer`).
#[utoipa::path(get, path = "/api/v1/publishing-servers", tag = "servers", responses((status = 200, body = Vec<PublishingServer>)))]
async fn list_servers(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<PublishingServer>>> {
    Ok(Json(state.store.list_publishing_servers().await?))
}

/// Register a publishing server; its credential is returned once (`Add-AppvPublishingServer`).
#[utoipa::path(post, path = "/api/v1/publishing-servers", tag = "servers", request_body = RegisterServerRequest,
    responses((status = 201, body = RegisteredServer), (status = 409, body = ErrorBody)))]
async fn register_server(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<RegisterServerRequest>,
) -> ApiResult<(StatusCode, Json<RegisteredServer>)> {
    check_name("publishing server", &req.name)?;
    let credential = auth::new_secret("avail_pub_");
    let server = state
        .store
        .register_publishing_server(&req.name, &auth::hash_secret(&credential))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredServer { server, credential }),
    ))
}

/// Unregister a publishing server (`Remove-AppvPublishingServer`).
#[utoipa::path(delete, path = "/api/v1/publishing-servers/{name}", tag = "servers", params(("name" = String, Path)), responses((status = 204)))]
async fn unregister_server(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state.store.unregister_publishing_server(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- administrators ----

/// Administrators (`Get-AppvServerAdmin`).
#[utoipa::path(get, path = "/api/v1/administrators", tag = "administrators", responses((status = 200, body = Vec<Administrator>)))]
async fn list_admins(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<Administrator>>> {
    Ok(Json(state.store.list_administrators().await?))
}

/// Add an administrator (`Add-AppvServerAdmin`).
#[utoipa::path(post, path = "/api/v1/administrators", tag = "administrators", request_body = AddAdministratorRequest,
    responses((status = 201), (status = 409, body = ErrorBody)))]
async fn add_admin(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<AddAdministratorRequest>,
) -> ApiResult<StatusCode> {
    check_name("administrator", &req.name)?;
    let hash = match req.password {
        Some(p) if p.len() < 8 => {
            return Err(ApiError::BadRequest(
                "a password needs at least 8 characters".into(),
            ));
        }
        Some(p) => Some(
            tokio::task::spawn_blocking(move || auth::hash_password(&p))
                .await
                .map_err(ApiError::internal)??,
        ),
        None => None,
    };
    state
        .store
        .add_administrator(&req.name, hash.as_deref())
        .await?;
    Ok(StatusCode::CREATED)
}

/// Remove an administrator (`Remove-AppvServerAdmin`); the last one cannot be removed.
#[utoipa::path(delete, path = "/api/v1/administrators/{name}", tag = "administrators", params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn remove_admin(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    // The store refuses the last one inside its transaction, so concurrent removals cannot race past it.
    state.store.remove_administrator(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API token for an administrator; it is returned once.
#[utoipa::path(post, path = "/api/v1/administrators/{name}/tokens", tag = "administrators", params(("name" = String, Path)),
    request_body = CreateTokenRequest, responses((status = 201, body = CreatedToken)))]
async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    check_label("token label", &req.label)?;
    let token = auth::new_secret("avail_adm_");
    state
        .store
        .add_api_token(&name, &auth::hash_secret(&token), &req.label)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token })))
}

// ---- directory ----

fn kind(kind: &str, name: String) -> ApiResult<Principal> {
    match kind {
        "users" | "user" => Ok(Principal::User(name)),
        "machines" | "machine" => Ok(Principal::Machine(name)),
        "groups" | "group" => Ok(Principal::Group(name)),
        other => Err(ApiError::BadRequest(format!(
            "unknown member kind {other:?} (users, machines, groups)"
        ))),
    }
}

/// Users in the directory.
#[utoipa::path(get, path = "/api/v1/users", tag = "directory", responses((status = 200, body = Vec<String>)))]
async fn list_users(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state
            .store
            .list_principals(&Principal::User(String::new()))
            .await?,
    ))
}

/// Add a user, optionally into groups: all in one transaction, so a missing group
/// (404, named) adds nothing. Retrying is safe: the same user with the same groups
/// again is 200 with `created: false`; with other groups, 409 naming the difference.
#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = CreateUserRequest,
    responses((status = 201, body = CreatedUser), (status = 200, body = CreatedUser, description = "it exists with these groups already"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    check_name("user", &req.name)?;
    let added = state.store.create_user(&req.name, &req.groups).await?;
    Ok((
        import_status(added.created),
        Json(CreatedUser {
            name: req.name,
            groups: added.value,
            created: added.created,
        }),
    ))
}

/// Remove a user.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 204)))]
async fn delete_user(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_principal(&Principal::User(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Machines in the directory.
#[utoipa::path(get, path = "/api/v1/machines", tag = "directory", responses((status = 200, body = Vec<String>)))]
async fn list_machines(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state
            .store
            .list_principals(&Principal::Machine(String::new()))
            .await?,
    ))
}

/// Add a machine, optionally into groups, in one transaction (a missing group: 404,
/// nothing added); its credential is returned once, so a second creation is 409.
#[utoipa::path(post, path = "/api/v1/machines", tag = "directory", request_body = CreateMachineRequest,
    responses((status = 201, body = CreatedMachine), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_machine(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateMachineRequest>,
) -> ApiResult<(StatusCode, Json<CreatedMachine>)> {
    check_name("machine", &req.name)?;
    let credential = auth::new_secret("avail_mch_");
    state
        .store
        .create_machine(&req.name, &auth::hash_secret(&credential), &req.groups)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedMachine {
            name: req.name,
            credential,
        }),
    ))
}

/// Remove a machine.
#[utoipa::path(delete, path = "/api/v1/machines/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 204)))]
async fn delete_machine(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_principal(&Principal::Machine(name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Groups in the directory.
#[utoipa::path(get, path = "/api/v1/groups", tag = "directory", responses((status = 200, body = Vec<String>)))]
async fn list_groups(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state
            .store
            .list_principals(&Principal::Group(String::new()))
            .await?,
    ))
}

/// Create a group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "directory", request_body = CreateGroupRequest, responses((status = 201), (status = 409, body = ErrorBody)))]
async fn create_group(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateGroupRequest>,
) -> ApiResult<StatusCode> {
    check_name("group", &req.name)?;
    state.store.create_group(&req.name).await?;
    Ok(StatusCode::CREATED)
}

/// A group's direct members.
#[utoipa::path(get, path = "/api/v1/groups/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 200, body = GroupMembers)))]
async fn group_members(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<GroupMembers>> {
    let members = state.store.members(&name).await?;
    Ok(Json(GroupMembers { name, members }))
}

/// Delete a group (its entitlements go with it).
#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 204)))]
async fn delete_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_principal(&Principal::Group(name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put a user, machine or group into a group.
#[utoipa::path(put, path = "/api/v1/groups/{name}/members/{kind}/{member}", tag = "directory",
    params(("name" = String, Path), ("kind" = String, Path, description = "users, machines or groups"), ("member" = String, Path)), responses((status = 204)))]
async fn add_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((name, k, member)): UrlPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state.store.add_member(&name, &kind(&k, member)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take a user, machine or group out of a group.
#[utoipa::path(delete, path = "/api/v1/groups/{name}/members/{kind}/{member}", tag = "directory",
    params(("name" = String, Path), ("kind" = String, Path), ("member" = String, Path)), responses((status = 204)))]
async fn remove_group_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((name, k, member)): UrlPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state.store.remove_member(&name, &kind(&k, member)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use axum::response::IntoResponse as _;
    use futures_util::{FutureExt as _, StreamExt as _};

    use super::*;

    async fn state(dir: &Path) -> AppState {
        let url = format!("sqlite:{}", dir.join("management.db").display());
        let content_root = dir.join("content");
        std::fs::create_dir_all(&content_root).unwrap();
        AppState {
            store: avail_store::open_management(&url).await.unwrap(),
            content_root,
            max_upload_bytes: 1 << 30,
        }
    }

    /// A small package with the given ids and display name.
    fn package(dir: &Path, name: &str, package_id: Uuid, version_id: Uuid) -> PathBuf {
        let tree = dir.join(format!("tree-{version_id}"));
        std::fs::create_dir_all(tree.join("opt/tool/bin")).unwrap();
        std::fs::write(tree.join("opt/tool/bin/tool"), name.repeat(20_000)).unwrap();
        let out = dir.join(format!("{version_id}.appv"));
        let options = avail_format::PackOptions {
            name: name.into(),
            package_id: Some(package_id),
            version_id: Some(version_id),
            ..Default::default()
        };
        avail_format::pack(&tree, &out, &options, &NoProgress).unwrap();
        out
    }

    fn status(e: ApiError) -> (StatusCode, String) {
        let response = e.into_response();
        let status = response.status();
        // A JSON error body is in memory: ready at once.
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .now_or_never()
            .expect("an in-memory body")
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        (status, body.message)
    }

    /// tokio's `File` reports a failed background write only to the next
    /// operation: a full disk on the last write must still fail the upload as
    /// such (`/dev/full` fails every write with ENOSPC).
    #[tokio::test]
    async fn the_last_writes_error_is_not_lost() {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .unwrap();
        file.write_all(b"the last chunk").await.unwrap();
        let e = make_durable(&mut file, "the content store /srv")
            .await
            .unwrap_err();
        let (code, message) = status(e);
        assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE, "{message}");
        assert!(
            message.contains("no space left in the content store /srv"),
            "{message}"
        );
    }

    #[test]
    fn a_full_disk_is_507_and_says_what_filled_up() {
        for e in [
            std::io::Error::from_raw_os_error(28),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
            std::io::Error::from(std::io::ErrorKind::QuotaExceeded),
        ] {
            let (code, message) = status(ApiError::io("the content store /data/content", e));
            assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE);
            assert!(
                message.contains("the content store /data/content"),
                "{message}"
            );
        }
        let (code, message) = status(ApiError::Store(avail_store::StoreError::Full(
            "no space left for the SQLite database /data/management.db".into(),
        )));
        assert_eq!(code, StatusCode::INSUFFICIENT_STORAGE);
        assert!(message.contains("/data/management.db"), "{message}");
        // Other I/O errors stay internal, their detail in the log only.
        let (code, message) = status(ApiError::io(
            "the content store /data/content",
            std::io::Error::from_raw_os_error(5),
        ));
        assert_eq!(
            (code, message.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        );
    }

    #[test]
    fn o_nofollow_is_the_one_of_this_system() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(O_NOFOLLOW)
                .open(dir.path().join(name))
        };
        let mut content = String::new();
        std::io::Read::read_to_string(&mut open("file").unwrap(), &mut content).unwrap();
        assert_eq!(content, "x");
        assert!(open("link").is_err(), "a symlink was followed");
    }

    /// Import from the store takes real paths only, and what a symlink points to
    /// (or whether that exists) never shows in the answer.
    #[test]
    fn import_from_the_store_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("content");
        std::fs::create_dir_all(root.join("drop/sub")).unwrap();
        std::fs::write(root.join("drop/sub/pkg.appv"), b"package").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("drop/out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("drop/file-link")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("drop/inside")).unwrap();

        let mut read = String::new();
        std::io::Read::read_to_string(
            &mut open_in_store(&root, "drop/sub/pkg.appv").unwrap(),
            &mut read,
        )
        .unwrap();
        assert_eq!(read, "package");

        let refused = |rel: &str| match open_in_store(&root, rel) {
            Err(ApiError::BadRequest(m)) => m.replace(rel, "PATH"),
            other => panic!("{rel}: {:?}", other.map(|_| ())),
        };
        let existing = refused("drop/out/secret");
        assert!(existing.contains("symbolic link"), "{existing}");
        assert_eq!(refused("drop/out/nothing-here"), existing);
        assert_eq!(refused("drop/file-link"), existing);
        // Even a symlink that stays inside the store.
        assert_eq!(refused("drop/inside/pkg.appv"), existing);
        assert!(matches!(
            open_in_store(&root, "drop/sub"),
            Err(ApiError::BadRequest(_))
        ));
        for missing in ["drop/none.appv", "drop/sub/pkg.appv/below"] {
            assert!(
                matches!(
                    open_in_store(&root, missing),
                    Err(ApiError::Store(avail_store::StoreError::NotFound(_)))
                ),
                "{missing}"
            );
        }
    }

    #[test]
    fn names_that_could_display_as_something_else_are_refused() {
        for bad in [
            "evil\u{202e}gpj.exe",
            "a\u{2066}b",
            "a\u{2069}",
            "a\u{200e}",
            "a\u{200f}",
            "a\u{200b}b",
            "a\u{200d}",
            "\u{feff}admin",
            "a\u{061c}",
            "line\nbreak",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "c1\u{9b}",
        ] {
            match check_name("user", bad) {
                Err(ApiError::BadRequest(m)) => {
                    assert!(m.contains("U+"), "{m}");
                    assert!(
                        !m.chars().any(is_deceptive),
                        "the message repeats it: {m:?}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(check_label("token label", bad).is_err(), "{bad:?}");
        }
        for good in [
            "alice",
            "Zoë Müller",
            "日本語",
            "عربي",
            "o'brien",
            "pc-01.corp",
        ] {
            check_name("user", good).unwrap();
        }
        assert!(check_name("group", "a/b").is_err());
        assert!(check_name("group", "  ").is_err());
        check_label("token label", "ci/cd pipeline").unwrap();
    }

    #[test]
    fn a_package_whose_name_could_display_as_something_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = package(
            dir.path(),
            "Invoice\u{202e}fdp.exe",
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        match verify_file(&file, String::new(), 0) {
            Err(ApiError::BadRequest(m)) => assert!(m.contains("U+202E"), "{m}"),
            other => panic!("{:?}", other.map(|v| v.name)),
        }
    }

    /// Once the last byte of the body is in, the request may go away (client
    /// gone, timeout): the import still completes, file and row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_dropped_after_its_last_byte_is_still_imported() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let (package_id, version_id) = (Uuid::new_v4(), Uuid::new_v4());
        let bytes = std::fs::read(package(dir.path(), "Tool", package_id, version_id)).unwrap();
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
            .chunks(16 << 10)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let ended = Arc::new(AtomicBool::new(false));
        let end = ended.clone();
        let body = Body::from_stream(futures_util::stream::iter(chunks).chain(
            futures_util::stream::poll_fn(move |_| {
                end.store(true, Ordering::SeqCst);
                std::task::Poll::Ready(None)
            }),
        ));
        let mut request = Box::pin(upload_package(State(state.clone()), Admin, body));
        while !ended.load(Ordering::SeqCst) {
            tokio::select! {
                biased;
                done = &mut request => panic!("finished before it could be dropped: {:?}", done.map(|(s, _)| s)),
                () = tokio::task::yield_now() => {}
            }
        }
        drop(request);
        let deadline = Instant::now() + Duration::from_secs(60);
        let version = loop {
            match state.store.package_version(version_id).await {
                Ok(v) => break v,
                Err(avail_store::StoreError::NotFound(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("the dropped upload was not imported: {other:?}"),
            }
        };
        assert_eq!(
            std::fs::read(state.content_root.join(&version.package.content_path)).unwrap(),
            bytes
        );
        assert_eq!(
            std::fs::read_dir(state.content_root.join(INCOMING))
                .unwrap()
                .count(),
            0
        );
    }

    /// What a killed process leaves: `.part` files and package files without a
    /// row. At start, stale `.part` files go, a package file that verifies and
    /// sits at its own path is recorded, anything else is moved to quarantine.
    #[tokio::test]
    async fn recover_settles_what_a_killed_import_left() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let root = state.content_root.clone();
        let incoming = root.join(INCOMING);
        std::fs::create_dir_all(&incoming).unwrap();
        let host = host_name();
        let stale = [
            format!("{host}.{}.abc123.part", std::process::id()),
            format!("{host}.4194999.def456.part"),
        ];
        // Pid 1 lives, and another host's upload may be in progress.
        let live = [
            format!("{host}.1.ghi789.part"),
            "other-node.77.jkl012.part".into(),
        ];
        for name in stale.iter().chain(&live) {
            std::fs::write(incoming.join(name), b"half an upload").unwrap();
        }

        let pkg = Uuid::new_v4();
        let (orphan, recorded, misplaced) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let at = |version: Uuid| format!("packages/{pkg}/{version}.appv");
        for (version, rel) in [
            (orphan, at(orphan)),
            (recorded, at(recorded)),
            (misplaced, at(Uuid::new_v4())),
        ] {
            let file = package(dir.path(), "Tool", pkg, version);
            std::fs::create_dir_all(root.join(&rel).parent().unwrap()).unwrap();
            std::fs::copy(file, root.join(rel)).unwrap();
        }
        let corrupt = format!("packages/{pkg}/{}.appv", Uuid::new_v4());
        std::fs::write(root.join(&corrupt), b"PK\x03\x04 not really").unwrap();
        let already = verify_file(
            &root.join(at(recorded)),
            sha256_file(&root.join(at(recorded))).await.unwrap(),
            std::fs::metadata(root.join(at(recorded))).unwrap().len(),
        )
        .unwrap();
        state.store.add_package_version(already).await.unwrap();

        let recovered = recover(&state).await.unwrap();
        assert_eq!(
            recovered,
            Recovered {
                removed_parts: 2,
                adopted: 1,
                quarantined: 2
            }
        );
        let mut left: Vec<String> = std::fs::read_dir(&incoming)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = live.to_vec();
        expected.sort();
        assert_eq!(left, expected);
        let adopted = state.store.package_version(orphan).await.unwrap();
        assert_eq!(adopted.package.content_path, at(orphan));
        assert!(!adopted.published);
        // Every file under packages/ has its row now.
        let rows: Vec<String> = state
            .store
            .list_package_versions(&PackageFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.package.content_path)
            .collect();
        assert_eq!(package_files(&root).unwrap(), {
            let mut r = rows.clone();
            r.sort();
            r
        });
        assert!(matches!(
            state.store.package_version(misplaced).await,
            Err(avail_store::StoreError::NotFound(_))
        ));
        let quarantined: Vec<String> = package_files(
            &root
                .join(QUARANTINE)
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap();
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        // A second start finds nothing to do.
        assert_eq!(recover(&state).await.unwrap(), Recovered::default());
    }
}
