//! Publishing servers (`*-AppvPublishingServer`) and administrators
//! (`*-AppvServerAdmin`, API tokens): HTTP translation over the directory services.

use avail_model::*;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;

use super::AppState;
use crate::auth::Admin;
use crate::error::{ApiResult, ErrorBody};
use crate::service::directory;
use avail_model::api::*;

/// Registered publishing servers with their last sync (`Get-AppvPublishingServer`).
#[utoipa::path(get, path = "/api/v1/publishing-servers", tag = "servers", responses((status = 200, body = Vec<PublishingServer>)))]
pub(super) async fn list_servers(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<PublishingServer>>> {
    Ok(Json(state.store.list_publishing_servers().await?))
}

/// Register a publishing server; its credential is returned once (`Add-AppvPublishingServer`).
#[utoipa::path(post, path = "/api/v1/publishing-servers", tag = "servers", request_body = RegisterServerRequest,
    responses((status = 201, body = RegisteredServer), (status = 409, body = ErrorBody)))]
pub(super) async fn register_server(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<RegisterServerRequest>,
) -> ApiResult<(StatusCode, Json<RegisteredServer>)> {
    let registered = directory::register_publishing_server(&state.catalog(), &req.name).await?;
    Ok((StatusCode::CREATED, Json(registered)))
}

/// Unregister a publishing server (`Remove-AppvPublishingServer`).
#[utoipa::path(delete, path = "/api/v1/publishing-servers/{name}", tag = "servers", params(("name" = String, Path)), responses((status = 204)))]
pub(super) async fn unregister_server(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state.store.unregister_publishing_server(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Administrators (`Get-AppvServerAdmin`).
#[utoipa::path(get, path = "/api/v1/administrators", tag = "administrators", responses((status = 200, body = Vec<Administrator>)))]
pub(super) async fn list_admins(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<Administrator>>> {
    Ok(Json(state.store.list_administrators().await?))
}

/// Add an administrator (`Add-AppvServerAdmin`).
#[utoipa::path(post, path = "/api/v1/administrators", tag = "administrators", request_body = AddAdministratorRequest,
    responses((status = 201), (status = 409, body = ErrorBody)))]
pub(super) async fn add_admin(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<AddAdministratorRequest>,
) -> ApiResult<StatusCode> {
    directory::add_administrator(&state.catalog(), &req.name, req.password).await?;
    Ok(StatusCode::CREATED)
}

/// Remove an administrator (`Remove-AppvServerAdmin`); the last one cannot be removed.
#[utoipa::path(delete, path = "/api/v1/administrators/{name}", tag = "administrators", params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_admin(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    directory::remove_administrator(&state.catalog(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API token for an administrator; it is returned once.
#[utoipa::path(post, path = "/api/v1/administrators/{name}/tokens", tag = "administrators", params(("name" = String, Path)),
    request_body = CreateTokenRequest, responses((status = 201, body = CreatedToken)))]
pub(super) async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let token = directory::create_token(&state.catalog(), &name, &req.label).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token })))
}
