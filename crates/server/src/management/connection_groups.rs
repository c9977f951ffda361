//! Connection groups (`*-AppvServerConnectionGroup*`): packages that share one
//! virtual environment, their member order, entitlements and publishing.

use avail_model::ConnectionGroupChange;
use avail_model::*;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;

use super::AppState;
use crate::auth::Admin;
use crate::error::{ApiResult, ErrorBody};
use crate::service::catalog::{self, resolve_connection_group, resolve_version};
use crate::service::directory;
use avail_model::api::*;

/// List connection groups (`Get-AppvServerConnectionGroup`).
#[utoipa::path(get, path = "/api/v1/connection-groups", tag = "connection groups", responses((status = 200, body = Vec<ConnectionGroup>)))]
pub(super) async fn list_connection_groups(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<ConnectionGroup>>> {
    Ok(Json(state.store.list_connection_groups().await?))
}

/// Create a connection group (`New-AppvServerConnectionGroup`).
#[utoipa::path(post, path = "/api/v1/connection-groups", tag = "connection groups", request_body = CreateConnectionGroupRequest,
    responses((status = 201, body = ConnectionGroup), (status = 409, body = ErrorBody)))]
pub(super) async fn create_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateConnectionGroupRequest>,
) -> ApiResult<(StatusCode, Json<ConnectionGroup>)> {
    directory::check_name("connection group", &req.name)?;
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
pub(super) async fn show_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    Ok(Json(resolve_connection_group(&*state.store, &cg).await?))
}

/// Rename a connection group or set its priority (`Set-AppvServerConnectionGroup`).
#[utoipa::path(patch, path = "/api/v1/connection-groups/{cg}", tag = "connection groups", params(("cg" = String, Path)),
    request_body = UpdateConnectionGroupRequest, responses((status = 200, body = ConnectionGroup)))]
pub(super) async fn update_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
    Json(req): Json<UpdateConnectionGroupRequest>,
) -> ApiResult<Json<ConnectionGroup>> {
    if let Some(name) = &req.name {
        directory::check_name("connection group", name)?;
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
pub(super) async fn delete_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let group = resolve_connection_group(&*state.store, &cg).await?;
    state.store.delete_connection_group(group.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn change_group(
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
pub(super) async fn publish_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Publish(true)).await
}

/// Unpublish a connection group.
#[utoipa::path(post, path = "/api/v1/connection-groups/{cg}/unpublish", tag = "connection groups", params(("cg" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
pub(super) async fn unpublish_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(cg): UrlPath<String>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Publish(false)).await
}

/// Add a package to a connection group or change it (`Add-AppvServerConnectionGroupPackage`).
#[utoipa::path(put, path = "/api/v1/connection-groups/{cg}/members/{pkg}", tag = "connection groups",
    params(("cg" = String, Path), ("pkg" = String, Path)), request_body = SetMemberRequest, responses((status = 200, body = ConnectionGroup)))]
pub(super) async fn set_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, pkg)): UrlPath<(String, String)>,
    body: Option<Json<SetMemberRequest>>,
) -> ApiResult<Json<ConnectionGroup>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(
        catalog::set_member(&state.catalog(), &cg, &pkg, req).await?,
    ))
}

/// Remove a package from a connection group (`Remove-AppvServerConnectionGroupPackage`).
#[utoipa::path(delete, path = "/api/v1/connection-groups/{cg}/members/{pkg}", tag = "connection groups",
    params(("cg" = String, Path), ("pkg" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
pub(super) async fn remove_member(
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
pub(super) async fn grant_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, group)): UrlPath<(String, String)>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Grant(group)).await
}

/// Remove a group's entitlement to a connection group (`Revoke-AppvServerConnectionGroup`).
#[utoipa::path(delete, path = "/api/v1/connection-groups/{cg}/entitlements/{group}", tag = "connection groups",
    params(("cg" = String, Path), ("group" = String, Path)), responses((status = 200, body = ConnectionGroup)))]
pub(super) async fn revoke_connection_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((cg, group)): UrlPath<(String, String)>,
) -> ApiResult<Json<ConnectionGroup>> {
    change_group(&state, &cg, ConnectionGroupChange::Revoke(group)).await
}
