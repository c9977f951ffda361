//! The management role: the admin API under `/api/v1`, after App-V's AppvServer
//! cmdlets and management console.
//!
//! Handlers only turn HTTP into calls on the Management DB and the content store.
//! The role keeps no state of its own beyond those two, so any number of nodes can
//! stand behind a load balancer. Package import is the one operation with
//! several steps; `import` keeps it all-or-nothing.

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

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty()
        || name.len() > 256
        || name.chars().any(char::is_control)
        || name.contains('/')
    {
        return Err(ApiError::BadRequest(format!(
            "{what} name {name:?} must be 1–256 printable characters without '/'"
        )));
    }
    Ok(())
}

// ---- import ----

/// A package file written into `.incoming`, removed on drop unless kept.
struct Incoming {
    path: tempfile::TempPath,
    sha256: String,
    size: u64,
}

async fn incoming_file(root: &Path) -> ApiResult<(tokio::fs::File, tempfile::TempPath)> {
    let dir = root.join(INCOMING);
    tokio::fs::create_dir_all(&dir).await?;
    let tmp = tempfile::Builder::new().suffix(".part").tempfile_in(&dir)?;
    let (file, path) = tmp.into_parts();
    Ok((tokio::fs::File::from_std(file), path))
}

/// Stream a request body to disk as it arrives, hashing it, never holding it in memory.
async fn receive(state: &AppState, body: Body) -> ApiResult<Incoming> {
    let (mut file, path) = incoming_file(&state.content_root).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?
    {
        size += chunk.len() as u64;
        if size > state.max_upload_bytes {
            return Err(ApiError::TooLarge(format!(
                "the package is larger than the limit of {} bytes",
                state.max_upload_bytes
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    if size == 0 {
        return Err(ApiError::BadRequest(
            "empty body: send the .appv file as the request body".into(),
        ));
    }
    file.sync_all().await?;
    Ok(Incoming {
        path,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Verify every block of an incoming package and read its identity.
async fn verify(incoming: &Incoming) -> ApiResult<NewPackageVersion> {
    let path = incoming.path.to_path_buf();
    let (sha256, size) = (incoming.sha256.clone(), incoming.size);
    tokio::task::spawn_blocking(move || -> ApiResult<NewPackageVersion> {
        let package = Package::open(std::fs::File::open(&path)?)?;
        package.verify(&NoProgress)?;
        let m = package.manifest();
        let (Some(package_id), Some(version_id)) = (m.package_id, m.version_id) else {
            return Err(ApiError::BadRequest(
                "the package's manifest has no appv:PackageId and appv:VersionId (pack it with `avail package pack`)".into(),
            ));
        };
        Ok(NewPackageVersion {
            package_id,
            version_id,
            name: m.display_name.clone().unwrap_or_else(|| m.name.clone()),
            version: m.version.clone(),
            content_path: format!("packages/{package_id}/{version_id}.appv"),
            size,
            sha256,
            applications: m
                .applications
                .iter()
                .map(|a| Application { id: a.id.clone(), target: a.target.clone(), arguments: a.arguments.clone() })
                .collect(),
        })
    })
    .await
    .map_err(ApiError::internal)?
}

/// Import a verified package: the file lands under its immutable per-version path
/// first (fsync, rename), then the row is written in one transaction. A failure
/// leaves neither a file nor a row; the same VersionId again returns the existing
/// version; a different file under a known VersionId is a conflict.
async fn import(
    state: &AppState,
    incoming: Incoming,
    expect_package: Option<Uuid>,
) -> ApiResult<(bool, PackageVersion)> {
    let version = verify(&incoming).await?;
    if let Some(expected) = expect_package.filter(|e| *e != version.package_id) {
        return Err(ApiError::BadRequest(format!(
            "the package's PackageId {} is not {expected}: an upgrade must be a new version of the same package",
            version.package_id
        )));
    }
    match state.store.package_version(version.version_id).await {
        Ok(existing) if existing.package.sha256 == version.sha256 => return Ok((false, existing)),
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
    tokio::fs::create_dir_all(dir).await?;
    // Never replace a stored file: a version's file is immutable once it exists.
    let existed = match incoming.path.persist_noclobber(&target) {
        Ok(()) => {
            tokio::fs::File::open(dir).await?.sync_all().await?;
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
        Err(e) => {
            return Err(ApiError::internal(format!(
                "storing {}: {}",
                target.display(),
                e.error
            )));
        }
    };
    match state.store.add_package_version(version.clone()).await {
        Ok(added) => {
            tracing::info!(version_id = %version.version_id, name = %version.name, created = added.created, "package imported");
            Ok((added.created, added.value))
        }
        Err(e) => {
            if !existed {
                let _ = tokio::fs::remove_file(&target).await;
            }
            Err(e.into())
        }
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
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody, description = "not a valid package")))]
async fn upload_package(
    State(state): State<AppState>,
    _admin: Admin,
    body: Body,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    let incoming = receive(&state, body).await?;
    let (created, version) = import(&state, incoming, None).await?;
    Ok((
        import_status(created),
        Json(ImportResponse { created, version }),
    ))
}

/// Import a package already in the content store.
#[utoipa::path(post, path = "/api/v1/packages/import", tag = "packages", request_body = ImportFromStoreRequest,
    responses((status = 201, body = ImportResponse), (status = 200, body = ImportResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn import_from_store(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<ImportFromStoreRequest>,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    let rel = Path::new(&req.path);
    if req.path.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not a relative path inside the content store",
            req.path
        )));
    }
    let source = state.content_root.join(rel);
    let meta = tokio::fs::symlink_metadata(&source).await.map_err(|_| {
        ApiError::Store(avail_store::StoreError::NotFound(format!(
            "{} in the content store",
            req.path
        )))
    })?;
    if !meta.is_file() {
        return Err(ApiError::BadRequest(format!(
            "{} is not a regular file",
            req.path
        )));
    }
    let (file, path) = incoming_file(&state.content_root).await?;
    drop(file);
    tokio::fs::copy(&source, &path).await?;
    let incoming = Incoming {
        sha256: sha256_file(&path).await?,
        size: meta.len(),
        path,
    };
    let (created, version) = import(&state, incoming, None).await?;
    Ok((
        import_status(created),
        Json(ImportResponse { created, version }),
    ))
}

/// Import a new version of a package, optionally transferring entitlements and configuration.
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/upgrade", tag = "packages", params(("pkg" = String, Path), UpgradeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = UpgradeResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn upgrade_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
    Query(q): Query<UpgradeQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UpgradeResponse>)> {
    let previous = resolve_version(&*state.store, &pkg).await?;
    let incoming = receive(&state, body).await?;
    let (created, version) = import(&state, incoming, Some(previous.package.package_id)).await?;
    if version.package.version_id == previous.package.version_id {
        return Err(ApiError::BadRequest(
            "the upload is the version being upgraded from".into(),
        ));
    }
    if q.transfer {
        state
            .store
            .transfer(
                previous.package.version_id,
                version.package.version_id,
                Transfer {
                    entitlements: true,
                    deployment_config: true,
                },
            )
            .await?;
    }
    Ok((
        import_status(created),
        Json(UpgradeResponse {
            previous: previous.package.version_id,
            version,
            transferred: q.transfer,
        }),
    ))
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
    let mut group = resolve_connection_group(&*state.store, &cg).await?;
    if let Some(name) = req.name {
        check_name("connection group", &name)?;
        group = state
            .store
            .update_connection_group(group.id, ConnectionGroupChange::Rename(name))
            .await?;
    }
    if let Some(priority) = req.priority {
        group = state
            .store
            .update_connection_group(group.id, ConnectionGroupChange::Priority(priority))
            .await?;
    }
    Ok(Json(group))
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
            .update_connection_group(group.id, change)
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
    let mut updated = state
        .store
        .update_connection_group(
            group.id,
            ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id,
                version_id,
                optional: req.optional,
            }),
        )
        .await?;
    if let Some(position) = req.position {
        updated = state
            .store
            .update_connection_group(
                group.id,
                ConnectionGroupChange::MoveMember {
                    package_id,
                    position,
                },
            )
            .await?;
    }
    Ok(Json(updated))
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
    let admins = state.store.list_administrators().await?;
    if admins.len() == 1 && admins[0].name == name {
        return Err(ApiError::Store(avail_store::StoreError::Conflict(
            "the last administrator cannot be removed".into(),
        )));
    }
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

async fn join_groups(state: &AppState, member: &Principal, groups: &[String]) -> ApiResult<()> {
    for g in groups {
        state.store.add_member(g, member).await?;
    }
    Ok(())
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

/// Add a user, optionally into groups.
#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = CreateUserRequest, responses((status = 201), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<StatusCode> {
    check_name("user", &req.name)?;
    for g in &req.groups {
        state.store.members(g).await?;
    }
    state.store.create_user(&req.name).await?;
    join_groups(&state, &Principal::User(req.name), &req.groups).await?;
    Ok(StatusCode::CREATED)
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

/// Add a machine; its credential is returned once.
#[utoipa::path(post, path = "/api/v1/machines", tag = "directory", request_body = CreateMachineRequest, responses((status = 201, body = CreatedMachine)))]
async fn create_machine(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateMachineRequest>,
) -> ApiResult<(StatusCode, Json<CreatedMachine>)> {
    check_name("machine", &req.name)?;
    for g in &req.groups {
        state.store.members(g).await?;
    }
    let credential = auth::new_secret("avail_mch_");
    state
        .store
        .create_machine(&req.name, &auth::hash_secret(&credential))
        .await?;
    join_groups(&state, &Principal::Machine(req.name.clone()), &req.groups).await?;
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
