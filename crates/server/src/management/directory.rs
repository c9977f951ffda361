//! The directory: users, machines and groups (App-V takes them from Active
//! Directory; Avail keeps its own), and group membership.

use avail_model::{Principal, PrincipalKind};
use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;

use super::AppState;
use super::import_status;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::service::{directory, publishing_catalog};
use avail_model::api::*;

/// A member named in a path: its kind (`users`, `machines`, `groups`) and name.
fn kind(kind: &str, name: String) -> ApiResult<Principal> {
    PrincipalKind::from_segment(kind)
        .map(|k| k.named(name))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown member kind {kind:?} (users, machines, groups)"
            ))
        })
}

/// Users in the directory.
#[utoipa::path(get, path = "/api/v1/users", tag = "directory", responses((status = 200, body = Vec<String>)))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state.store.list_principals(PrincipalKind::User).await?,
    ))
}

/// Add a user, optionally into groups: all in one transaction, so a missing group
/// (404, named) adds nothing. Retrying is safe: the same user with the same groups
/// again is 200 with `created: false`; with other groups, 409 naming the difference.
#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = CreateUserRequest,
    responses((status = 201, body = CreatedUser), (status = 200, body = CreatedUser, description = "it exists with these groups already"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_user(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let added = directory::create_user(&state.catalog(), &req.name, &req.groups).await?;
    Ok((
        import_status(added.created),
        Json(CreatedUser {
            name: req.name,
            groups: added.value,
            created: added.created,
        }),
    ))
}

/// What a user receives through its groups, nested groups resolved: the
/// publishing catalog's own answer.
#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "directory", params(("name" = String, Path)),
    responses((status = 200, body = EffectivePublishing), (status = 404, body = ErrorBody)))]
pub(super) async fn show_user(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<EffectivePublishing>> {
    let catalog = publishing_catalog::load(state.store.as_ref()).await?;
    Ok(Json(publishing_catalog::effective(
        &catalog,
        &Principal::User(name),
    )?))
}

/// Remove a user.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 204)))]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_principal(&Principal::User(name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Machines in the directory.
#[utoipa::path(get, path = "/api/v1/machines", tag = "directory", responses((status = 200, body = Vec<String>)))]
pub(super) async fn list_machines(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state.store.list_principals(PrincipalKind::Machine).await?,
    ))
}

/// Add a machine, optionally into groups, in one transaction (a missing group: 404,
/// nothing added); its credential is returned once, so a second creation is 409.
#[utoipa::path(post, path = "/api/v1/machines", tag = "directory", request_body = CreateMachineRequest,
    responses((status = 201, body = CreatedMachine), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_machine(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateMachineRequest>,
) -> ApiResult<(StatusCode, Json<CreatedMachine>)> {
    let credential = directory::create_machine(&state.catalog(), &req.name, &req.groups).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedMachine {
            name: req.name,
            credential,
        }),
    ))
}

/// What a machine receives through its groups (App-V's global publishing): the
/// publishing catalog's own answer.
#[utoipa::path(get, path = "/api/v1/machines/{name}", tag = "directory", params(("name" = String, Path)),
    responses((status = 200, body = EffectivePublishing), (status = 404, body = ErrorBody)))]
pub(super) async fn show_machine(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<EffectivePublishing>> {
    let catalog = publishing_catalog::load(state.store.as_ref()).await?;
    Ok(Json(publishing_catalog::effective(
        &catalog,
        &Principal::Machine(name),
    )?))
}

/// Remove a machine.
#[utoipa::path(delete, path = "/api/v1/machines/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 204)))]
pub(super) async fn delete_machine(
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
pub(super) async fn list_groups(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        state.store.list_principals(PrincipalKind::Group).await?,
    ))
}

/// Create a group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "directory", request_body = CreateGroupRequest, responses((status = 201), (status = 409, body = ErrorBody)))]
pub(super) async fn create_group(
    State(state): State<AppState>,
    _admin: Admin,
    Json(req): Json<CreateGroupRequest>,
) -> ApiResult<StatusCode> {
    directory::check_name("group", &req.name)?;
    state.store.create_group(&req.name).await?;
    Ok(StatusCode::CREATED)
}

/// A group's direct members.
#[utoipa::path(get, path = "/api/v1/groups/{name}", tag = "directory", params(("name" = String, Path)), responses((status = 200, body = GroupMembers)))]
pub(super) async fn group_members(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<GroupMembers>> {
    let members = state.store.members(&name).await?;
    Ok(Json(GroupMembers { name, members }))
}

/// Delete a group. Without `force`, a group that holds entitlements or
/// memberships is refused (409 `group_in_use`, naming them); with it, they are
/// revoked with the group.
#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "directory", params(("name" = String, Path), DeleteGroupQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "group_in_use: it holds entitlements or memberships")))]
pub(super) async fn delete_group(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeleteGroupQuery>,
) -> ApiResult<StatusCode> {
    directory::delete_group(&state.catalog(), &name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put a user, machine or group into a group.
#[utoipa::path(put, path = "/api/v1/groups/{name}/members/{kind}/{member}", tag = "directory",
    params(("name" = String, Path), ("kind" = String, Path, description = "users, machines or groups"), ("member" = String, Path)), responses((status = 204)))]
pub(super) async fn add_member(
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
pub(super) async fn remove_group_member(
    State(state): State<AppState>,
    _admin: Admin,
    UrlPath((name, k, member)): UrlPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state.store.remove_member(&name, &kind(&k, member)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
