//! Publishing servers (`*-AppvPublishingServer`) and administrators
//! (`*-AppvServerAdmin`, API tokens): HTTP translation over the directory services.

use std::sync::Arc;
use std::time::Duration;

use avail_model::catalog::CatalogSnapshot;
use avail_model::catalog_delta::{CatalogDelta, CatalogUpdate};
use avail_model::*;
use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::auth::{Admin, PublishingServer as SyncingServer};
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

/// How often a waiting catalog sync reads the change sequence.
const SYNC_POLL: Duration = Duration::from_millis(100);

/// A catalog sync's query: the sequence the caller holds and how long it may wait.
#[derive(Deserialize)]
pub(super) struct SyncQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    wait: u64,
    /// Whether the caller takes a delta (`delta=true`); a caller that does not
    /// say so — a publishing node of an older Avail, during a rolling upgrade —
    /// always gets the whole catalog.
    #[serde(default)]
    delta: bool,
}

/// The publishing catalog for a registered publishing server when its
/// sequence is past `since` (at once, or as soon as it moves within `wait`
/// seconds, at most 30 and within the role's deadline), else `204`. The
/// answer is a [`CatalogUpdate`]: the changes since `since` when the caller
/// asks for them (`delta=true`) and `since` is
/// one of the [`RecentCatalogs`](super::RecentCatalogs), else the whole
/// catalog (`since=-1` asks for it). A catalog already read at the current
/// sequence is not read again. Each answer records the server's sync
/// (`avail admin server list`).
#[utoipa::path(get, path = "/api/v1/catalog", tag = "servers",
    params(("since" = Option<i64>, Query), ("wait" = Option<u64>, Query), ("delta" = Option<bool>, Query)),
    security(("credential" = [])),
    responses((status = 200, description = "the catalog: {\"kind\": \"snapshot\", …} or the changes since `since`: {\"kind\": \"delta\", \"from\", \"to\", …}"), (status = 204, description = "nothing newer than since"), (status = 401, body = ErrorBody)))]
pub(super) async fn sync_catalog(
    State(state): State<AppState>,
    server: SyncingServer,
    Query(query): Query<SyncQuery>,
) -> ApiResult<Response> {
    let mut sequence = state.store.change_sequence().await?;
    let wait = Duration::from_secs(query.wait).min(state.sync.max_wait);
    if sequence <= query.since && !wait.is_zero() {
        // Past the bound on waiters, answer at once: the caller asks again.
        if let Ok(_permit) = state.sync.waiters.clone().try_acquire_owned() {
            let deadline = tokio::time::Instant::now() + wait;
            while sequence <= query.since && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(SYNC_POLL).await;
                sequence = state.store.change_sequence().await?;
            }
        }
    }
    if sequence <= query.since {
        state.store.record_sync(&server.name, sequence).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let recent = &state.sync.recent;
    let snapshot = match recent.get(sequence) {
        Some(snapshot) => snapshot,
        None => {
            let snapshot = Arc::new(state.store.catalog_snapshot().await?);
            recent.remember(Arc::clone(&snapshot));
            snapshot
        }
    };
    state
        .store
        .record_sync(&server.name, snapshot.sequence)
        .await?;
    let update = match recent.get(query.since).filter(|_| query.delta) {
        Some(held) if held.sequence < snapshot.sequence => {
            CatalogUpdate::Delta(Box::new(CatalogDelta::between(&held, &snapshot)))
        }
        _ => CatalogUpdate::Snapshot(CatalogSnapshot::clone(&snapshot)),
    };
    Ok(Json(update).into_response())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::management::CatalogWaits;

    async fn state(dir: &std::path::Path, waiters: usize) -> AppState {
        let sqlite = |name: &str| format!("sqlite:{}", dir.join(name).display());
        AppState {
            store: avail_store::open_management(&sqlite("management.db"))
                .await
                .unwrap(),
            reporting: avail_store::open_reporting(&sqlite("reporting.db"))
                .await
                .unwrap(),
            content_root: dir.to_owned(),
            max_upload_bytes: 1,
            sync: CatalogWaits::new(Some(Duration::from_secs(4)), waiters),
        }
    }

    async fn ask(state: &AppState, since: i64, wait: u64) -> (StatusCode, Option<i64>) {
        let server = SyncingServer {
            name: "pub1".into(),
        };
        let response = sync_catalog(
            State(state.clone()),
            server,
            Query(SyncQuery {
                since,
                wait,
                delta: true,
            }),
        )
        .await
        .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        // A snapshot's sequence, or the one a delta leads to.
        let sequence = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["sequence"].as_i64().or(v["to"].as_i64()));
        (status, sequence)
    }

    /// The answer to a sync from `since` that does not wait.
    async fn update(state: &AppState, since: i64) -> CatalogUpdate {
        update_as(state, since, true).await
    }

    /// The same, from a caller that takes deltas or not.
    async fn update_as(state: &AppState, since: i64, delta: bool) -> CatalogUpdate {
        let server = SyncingServer {
            name: "pub1".into(),
        };
        let query = Query(SyncQuery {
            since,
            wait: 0,
            delta,
        });
        let response = sync_catalog(State(state.clone()), server, query)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_follower_gets_the_changes_a_stranger_the_whole_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), 1).await;
        state
            .store
            .register_publishing_server("pub1", "hash")
            .await
            .unwrap();
        let CatalogUpdate::Snapshot(held) = update(&state, -1).await else {
            panic!("a node holding nothing gets the whole catalog");
        };

        state.store.create_group("lab").await.unwrap();
        let CatalogUpdate::Delta(delta) = update(&state, held.sequence).await else {
            panic!("a node holding a catalog served lately gets the changes");
        };
        let now = state.store.catalog_snapshot().await.unwrap();
        assert_eq!((delta.from, delta.to), (held.sequence, now.sequence));
        assert_eq!(delta.groups.changed, ["lab"]);
        assert!(delta.packages.is_empty() && delta.users.is_empty());
        assert_eq!(delta.apply(&held).unwrap(), now);
        // A caller that does not take deltas (an older Avail) gets the whole catalog.
        assert_eq!(
            update_as(&state, held.sequence, false).await,
            CatalogUpdate::Snapshot(now.clone())
        );

        // A sequence this node never served, or none: the whole catalog.
        for since in [held.sequence - 1, -1] {
            assert_eq!(
                update(&state, since).await,
                CatalogUpdate::Snapshot(now.clone())
            );
        }
        let servers = state.store.list_publishing_servers().await.unwrap();
        assert_eq!(servers[0].last_sync_sequence, Some(now.sequence));
    }

    #[test]
    fn the_recent_catalogs_keep_the_newest() {
        let recent = crate::management::RecentCatalogs::default();
        // 38, 36, …, 0 (the oldest are dropped), then two older than all kept.
        for sequence in (0..20).rev().map(|i| i * 2).chain(1..3) {
            recent.remember(Arc::new(CatalogSnapshot {
                sequence,
                ..CatalogSnapshot::default()
            }));
        }
        let kept: Vec<i64> = (0..40).filter(|s| recent.get(*s).is_some()).collect();
        assert_eq!(kept, (8..40).step_by(2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_sync_waits_for_a_change_within_its_bounds_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), 1).await;
        // Half the request deadline, never more than 30 s.
        assert_eq!(state.sync.max_wait, Duration::from_secs(2));
        state
            .store
            .register_publishing_server("pub1", "hash")
            .await
            .unwrap();
        let (status, sequence) = ask(&state, 0, 0).await;
        assert_eq!(status, StatusCode::OK);
        let sequence = sequence.unwrap();

        // A change while a sync waits ends the wait with the new catalog.
        let waiting = tokio::spawn({
            let state = state.clone();
            async move { ask(&state, sequence, 30).await }
        });
        tokio::time::sleep(SYNC_POLL).await;
        state.store.create_group("lab").await.unwrap();
        let (status, newer) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(newer.unwrap() > sequence);

        // Nothing newer: 204, after the capped wait; recorded either way.
        let newer = newer.unwrap();
        assert_eq!(ask(&state, newer, 30).await, (StatusCode::NO_CONTENT, None));
        let servers = state.store.list_publishing_servers().await.unwrap();
        assert_eq!(servers[0].last_sync_sequence, Some(newer));

        // With every waiter taken, a sync answers at once.
        let _held = Arc::clone(&state.sync.waiters)
            .acquire_owned()
            .await
            .unwrap();
        assert_eq!(ask(&state, newer, 30).await, (StatusCode::NO_CONTENT, None));
    }
}
