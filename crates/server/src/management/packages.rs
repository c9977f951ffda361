//! Packages (`*-AppvServerPackage`): import, upgrade, publishing, deployment
//! configuration and entitlements. Import and upgrade run in the import service.

use avail_model::*;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;

use super::AppState;
use super::import_status;
use crate::auth::Admin;
use crate::error::{ApiResult, ErrorBody};
use crate::service::catalog::{self, resolve_version};
use crate::service::configuration::Configuration;
use crate::service::import::{self, Record};
use avail_model::api::*;

/// List package versions (`Get-AppvServerPackage`).
#[utoipa::path(get, path = "/api/v1/packages", tag = "packages", params(PackageQuery), responses((status = 200, body = Vec<PackageVersion>)))]
pub(super) async fn list_packages(
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

/// One package version with entitlements and configuration. PKG, here and in
/// every `/packages/{pkg}…` route: a VersionId; a PackageId or a name (the
/// package's published version, else its newest); or `NAME@VERSION`. A name two
/// packages carry is 409, naming their PackageIds.
#[utoipa::path(get, path = "/api/v1/packages/{pkg}", tag = "packages", params(("pkg" = String, Path)),
    responses((status = 200, body = PackageDetails), (status = 404, body = ErrorBody)))]
pub(super) async fn show_package(
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
pub(super) async fn remove_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    let removed = catalog::remove_package_version(&state.catalog(), &pkg).await?;
    Ok(Json(removed))
}

pub(super) async fn set_published(
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

/// Publish a package version (`Publish-AppvServerPackage`); the package's other
/// versions are unpublished in the same transaction.
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/publish", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = PackageVersion)))]
pub(super) async fn publish_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    set_published(&state, &pkg, true).await
}

/// Unpublish a package version (`Unpublish-AppvServerPackage`).
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/unpublish", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = PackageVersion)))]
pub(super) async fn unpublish_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
) -> ApiResult<Json<PackageVersion>> {
    set_published(&state, &pkg, false).await
}

/// The deployment configuration of a version.
#[utoipa::path(get, path = "/api/v1/packages/{pkg}/deployment-config", tag = "packages", params(("pkg" = String, Path)), responses((status = 200, body = String)))]
pub(super) async fn get_deployment_config(
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
    request_body = DeploymentConfigRequest, responses((status = 204), (status = 400, body = ErrorBody, description = "not a DeploymentConfiguration document")))]
pub(super) async fn set_deployment_config(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
    Json(req): Json<DeploymentConfigRequest>,
) -> ApiResult<StatusCode> {
    Configuration::Deployment.check(&req.config)?;
    let version = resolve_version(&*state.store, &pkg).await?;
    state
        .store
        .set_deployment_config(version.package.version_id, Some(req.config))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the deployment configuration.
#[utoipa::path(delete, path = "/api/v1/packages/{pkg}/deployment-config", tag = "packages", params(("pkg" = String, Path)), responses((status = 204)))]
pub(super) async fn clear_deployment_config(
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

/// Entitle a group to a version (`Grant-AppvServerPackage`), with an optional user configuration.
#[utoipa::path(put, path = "/api/v1/packages/{pkg}/entitlements/{group}", tag = "packages",
    params(("pkg" = String, Path), ("group" = String, Path)), request_body = GrantRequest,
    responses((status = 204), (status = 400, body = ErrorBody, description = "the user configuration is not a UserConfiguration document"), (status = 404, body = ErrorBody)))]
pub(super) async fn grant_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((pkg, group)): UrlPath<(String, String)>,
    body: Option<Json<GrantRequest>>,
) -> ApiResult<StatusCode> {
    let user_config = body.and_then(|Json(b)| b.user_config);
    if let Some(c) = &user_config {
        Configuration::User.check(c)?;
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
pub(super) async fn revoke_package(
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

/// Import an uploaded package (`Import-AppvServerPackage`): the body is the `.appv` file.
#[utoipa::path(post, path = "/api/v1/packages", tag = "packages",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the .appv file"),
    responses((status = 201, body = ImportResponse, description = "imported"), (status = 200, body = ImportResponse, description = "already imported"),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody, description = "not a valid package"),
              (status = 507, body = ErrorBody, description = "the content store is full")))]
pub(super) async fn upload_package(
    State(state): State<AppState>,
    _admin: Admin,
    body: Body,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    let received = import::receive(&state.content_root, body, state.max_upload_bytes).await?;
    let imported = import::import_received(state.catalog(), received, Record::Version).await?;
    Ok((
        import_status(imported.created),
        Json(ImportResponse {
            created: imported.created,
            version: imported.version,
        }),
    ))
}

/// Import a package already in the content store.
#[utoipa::path(post, path = "/api/v1/packages/import", tag = "packages", request_body = ImportFromStoreRequest,
    responses((status = 201, body = ImportResponse), (status = 200, body = ImportResponse), (status = 400, body = ErrorBody, description = "not a real path inside the content store (a symbolic link on the way)"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub(super) async fn import_from_store(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<ImportFromStoreRequest>,
) -> ApiResult<(StatusCode, Json<ImportResponse>)> {
    let imported = import::import_from_store(state.catalog(), req.path).await?;
    Ok((
        import_status(imported.created),
        Json(ImportResponse {
            created: imported.created,
            version: imported.version,
        }),
    ))
}

/// Import a new version of a package, optionally transferring entitlements and
/// configuration and publishing it (unpublishing the package's other versions),
/// in one transaction with the new version. Retrying is safe: the
/// same upload again completes the upgrade rather than fails.
#[utoipa::path(post, path = "/api/v1/packages/{pkg}/upgrade", tag = "packages", params(("pkg" = String, Path), UpgradeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = UpgradeResponse), (status = 200, body = UpgradeResponse, description = "already upgraded (a retry)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub(super) async fn upgrade_package(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(pkg): UrlPath<String>,
    Query(q): Query<UpgradeQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UpgradeResponse>)> {
    let previous = resolve_version(&*state.store, &pkg).await?;
    let received = import::receive(&state.content_root, body, state.max_upload_bytes).await?;
    let record = Record::Upgrade {
        previous,
        transfer: q.transfer,
        publish: q.publish,
    };
    let imported = import::import_received(state.catalog(), received, record).await?;
    Ok((
        import_status(imported.created),
        Json(UpgradeResponse {
            previous: imported.from.expect("an upgrade has a previous version"),
            version: imported.version,
            transferred: q.transfer,
        }),
    ))
}
