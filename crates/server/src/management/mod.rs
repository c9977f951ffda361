//! The management role: the admin API under `/api/v1`, after App-V's AppvServer
//! cmdlets and management console.
//!
//! Handlers only turn HTTP into calls on the store, or on the service layer
//! (`crate::service`) where an operation spans several store calls or the
//! content store. The role keeps no state of its own beyond those two, so any
//! number of nodes can stand behind a load balancer. Every change to the
//! Management DB is one transaction: all of it or nothing, whatever happens to
//! the request. Package import runs to its end independently of the request,
//! and [`recover`] settles at start what a killed process left behind.
//!
//! One module per noun: `packages`, `connection_groups`, `directory`,
//! `servers` (publishing servers and administrators), `reports` (usage, from
//! the Reporting DB, which the role also opens). Names the API creates
//! are checked by `avail_model::rules` for characters that could make them
//! display as something else; a full disk is a 507 that says which one.

mod connection_groups;
mod directory;
mod packages;
mod reports;
mod servers;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use avail_model::catalog::CatalogSnapshot;
use avail_model::endpoint::{Endpoint, Method};
use avail_store::{ManagementStore, ReportingStore};
use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, get, on};
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::service::Catalog;
use crate::service::import::Recovered;
use avail_model::api::*;
use connection_groups::*;
use directory::*;
use packages::*;
use reports::*;
use servers::*;

/// What every management handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The Management DB.
    pub store: Arc<dyn ManagementStore>,
    /// The Reporting DB, for the usage reports.
    pub reporting: Arc<dyn ReportingStore>,
    /// The content store's root directory.
    pub content_root: PathBuf,
    /// Largest package upload.
    pub max_upload_bytes: u64,
    /// How long a catalog sync may wait for a change, and how many may wait at once.
    pub sync: CatalogWaits,
}

/// The bounds on catalog syncs that wait for a change (long polls): each
/// waits at most `max_wait`, and past `waiters` at once a sync answers without
/// waiting, so that waiting publishing nodes cannot take every request slot.
#[derive(Clone)]
pub struct CatalogWaits {
    /// The longest wait, shorter than the role's request deadline.
    pub max_wait: std::time::Duration,
    /// Permits for waiting syncs.
    pub waiters: Arc<tokio::sync::Semaphore>,
    /// The last catalogs syncs were answered with, for answering the changes
    /// since one of them.
    pub recent: Arc<RecentCatalogs>,
}

/// The last [`RECENT_CATALOGS`] catalog snapshots syncs were answered with,
/// by sequence: a follower that holds one of them gets the changes since
/// (`avail_model::catalog_delta`), any other the whole catalog. In memory
/// only; a management node that restarts answers whole catalogs until its
/// followers hold one it served.
#[derive(Default)]
pub struct RecentCatalogs {
    ring: std::sync::Mutex<std::collections::VecDeque<Arc<CatalogSnapshot>>>,
}

/// How many catalogs [`RecentCatalogs`] keeps.
pub const RECENT_CATALOGS: usize = 16;

impl RecentCatalogs {
    /// The catalog at `sequence`, if it is one of the last ones.
    pub fn get(&self, sequence: i64) -> Option<Arc<CatalogSnapshot>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().find(|s| s.sequence == sequence).cloned()
    }

    /// Keep `snapshot`, dropping the oldest past [`RECENT_CATALOGS`].
    pub fn remember(&self, snapshot: Arc<CatalogSnapshot>) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.iter().any(|s| s.sequence == snapshot.sequence) {
            return;
        }
        let at = ring.partition_point(|s| s.sequence < snapshot.sequence);
        ring.insert(at, snapshot);
        if ring.len() > RECENT_CATALOGS {
            ring.pop_front();
        }
    }
}

impl CatalogWaits {
    /// Waits of at most 30 s and at most half of `request_timeout` (when
    /// there is one), `waiters` of them at once.
    pub fn new(request_timeout: Option<std::time::Duration>, waiters: usize) -> Self {
        let longest = std::time::Duration::from_secs(30);
        CatalogWaits {
            max_wait: request_timeout.map_or(longest, |t| longest.min(t / 2)),
            waiters: Arc::new(tokio::sync::Semaphore::new(waiters)),
            recent: Arc::default(),
        }
    }
}

/// Bodies of JSON requests.
pub(crate) const JSON_LIMIT: usize = 1 << 20;

/// The management router (everything under `/api/v1`).
pub fn router(state: AppState) -> axum::Router {
    use avail_model::endpoint::*;
    axum::Router::new()
        .route(OPENAPI_PATH, get(openapi))
        .endpoint::<ListPackages, _, _>(list_packages)
        .upload::<UploadPackage, _, _>(upload_package)
        .endpoint::<ImportFromStore, _, _>(import_from_store)
        .endpoint::<ShowPackage, _, _>(show_package)
        .endpoint::<RemovePackage, _, _>(remove_package)
        .endpoint::<PublishPackage, _, _>(publish_package)
        .endpoint::<UnpublishPackage, _, _>(unpublish_package)
        .upload::<UpgradePackage, _, _>(upgrade_package)
        .endpoint::<GetDeploymentConfig, _, _>(get_deployment_config)
        .endpoint::<SetDeploymentConfig, _, _>(set_deployment_config)
        .endpoint::<ClearDeploymentConfig, _, _>(clear_deployment_config)
        .endpoint::<GrantPackage, _, _>(grant_package)
        .endpoint::<RevokePackage, _, _>(revoke_package)
        .endpoint::<ListConnectionGroups, _, _>(list_connection_groups)
        .endpoint::<CreateConnectionGroup, _, _>(create_connection_group)
        .endpoint::<ShowConnectionGroup, _, _>(show_connection_group)
        .endpoint::<UpdateConnectionGroup, _, _>(update_connection_group)
        .endpoint::<DeleteConnectionGroup, _, _>(delete_connection_group)
        .endpoint::<PublishConnectionGroup, _, _>(publish_connection_group)
        .endpoint::<UnpublishConnectionGroup, _, _>(unpublish_connection_group)
        .endpoint::<SetMember, _, _>(set_member)
        .endpoint::<RemoveMember, _, _>(remove_member)
        .endpoint::<GrantConnectionGroup, _, _>(grant_connection_group)
        .endpoint::<RevokeConnectionGroup, _, _>(revoke_connection_group)
        .endpoint::<ReportLaunches, _, _>(report_launches)
        .endpoint::<ReportClients, _, _>(report_clients)
        .endpoint::<ListServers, _, _>(list_servers)
        .endpoint::<RegisterServer, _, _>(register_server)
        .endpoint::<UnregisterServer, _, _>(unregister_server)
        .endpoint::<SyncCatalog, _, _>(sync_catalog)
        .endpoint::<ListAdministrators, _, _>(list_admins)
        .endpoint::<AddAdministrator, _, _>(add_admin)
        .endpoint::<RemoveAdministrator, _, _>(remove_admin)
        .endpoint::<CreateToken, _, _>(create_token)
        .endpoint::<ListUsers, _, _>(list_users)
        .endpoint::<CreateUser, _, _>(create_user)
        .endpoint::<ShowUser, _, _>(show_user)
        .endpoint::<DeleteUser, _, _>(delete_user)
        .endpoint::<ListMachines, _, _>(list_machines)
        .endpoint::<CreateMachine, _, _>(create_machine)
        .endpoint::<ShowMachine, _, _>(show_machine)
        .endpoint::<DeleteMachine, _, _>(delete_machine)
        .endpoint::<ListGroups, _, _>(list_groups)
        .endpoint::<CreateGroup, _, _>(create_group)
        .endpoint::<ShowGroup, _, _>(group_members)
        .endpoint::<DeleteGroup, _, _>(delete_group)
        .endpoint::<AddGroupMember, _, _>(add_member)
        .endpoint::<RemoveGroupMember, _, _>(remove_group_member)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(state)
}

/// Registering a handler under an endpoint's own method and route template
/// (`avail_model::endpoint`), the ones the management client sends to.
trait Routes {
    /// `handler` for endpoint `E`.
    fn endpoint<E: Endpoint, H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self;
    /// `handler` for endpoint `E`, whose body is a package upload: no JSON limit.
    fn upload<E: Endpoint, H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self;
}

impl Routes for axum::Router<AppState> {
    fn endpoint<E: Endpoint, H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self {
        // Endpoints that share a route template merge into one method router.
        self.route(E::ROUTE, on(method_filter(E::METHOD), handler))
    }

    fn upload<E: Endpoint, H: Handler<T, AppState>, T: 'static>(self, handler: H) -> Self {
        self.route(
            E::ROUTE,
            on(method_filter(E::METHOD), handler).layer(DefaultBodyLimit::disable()),
        )
    }
}

fn method_filter(method: Method) -> MethodFilter {
    match method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Avail management API", description = "App-V-style package, entitlement, connection group, directory and server administration."),
    paths(
        list_packages, upload_package, import_from_store, show_package, remove_package, publish_package, unpublish_package,
        upgrade_package, get_deployment_config, set_deployment_config, clear_deployment_config, grant_package, revoke_package,
        list_connection_groups, create_connection_group, show_connection_group, update_connection_group,
        delete_connection_group, publish_connection_group, unpublish_connection_group, set_member, remove_member,
        grant_connection_group, revoke_connection_group, report_launches, report_clients, list_servers, register_server, unregister_server, sync_catalog, list_admins,
        add_admin, remove_admin, create_token, list_users, create_user, show_user, delete_user, list_machines, create_machine,
        show_machine, delete_machine, list_groups, create_group, group_members, delete_group, add_member, remove_group_member
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
        // A publishing server's credential, for the catalog sync.
        components.add_security_scheme(
            "credential",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
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

impl AppState {
    /// What the services work on.
    fn catalog(&self) -> Catalog {
        Catalog {
            store: self.store.clone(),
            content_root: self.content_root.clone(),
        }
    }
}

/// Settle what a killed process left in the content store, before the role
/// serves ([`crate::service::import::recover`]).
pub(crate) async fn recover(state: &AppState) -> anyhow::Result<Recovered> {
    crate::service::import::recover(&state.catalog()).await
}

/// `201 Created` for something this request created, `200 OK` for something
/// that existed already (a retry).
fn import_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use axum::response::IntoResponse as _;
    use futures_util::{FutureExt as _, StreamExt as _};

    use std::path::Path;

    use avail_format::NoProgress;
    use avail_model::rules::is_deceptive;
    use uuid::Uuid;

    use super::*;
    use crate::error::ApiError;
    use crate::service::directory::{check_label, check_name};
    use avail_model::{PackageFilter, VersionId};
    use axum::body::Body;
    use axum::extract::State;
    use tokio::io::AsyncWriteExt as _;

    use super::recover;
    use crate::auth::Admin;
    use crate::service::import::*;

    async fn state(dir: &Path) -> AppState {
        let url = format!("sqlite:{}", dir.join("management.db").display());
        let content_root = dir.join("content");
        std::fs::create_dir_all(&content_root).unwrap();
        AppState {
            store: avail_store::open_management(&url).await.unwrap(),
            reporting: avail_store::open_reporting(&format!(
                "sqlite:{}",
                dir.join("reporting.db").display()
            ))
            .await
            .unwrap(),
            content_root,
            max_upload_bytes: 1 << 30,
            sync: CatalogWaits::new(None, 4),
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
    /// The router registers the endpoint table's routes; the OpenAPI document,
    /// whose paths utoipa takes from literals, must describe the same ones.
    #[test]
    fn the_openapi_document_describes_every_endpoint() {
        use avail_model::endpoint::{Method, table};
        let doc = openapi_document();
        for (method, route) in table() {
            let item = doc
                .paths
                .paths
                .get(route)
                .unwrap_or_else(|| panic!("{route} is not in the OpenAPI document"));
            let operation = match method {
                Method::Get => &item.get,
                Method::Post => &item.post,
                Method::Put => &item.put,
                Method::Patch => &item.patch,
                Method::Delete => &item.delete,
            };
            assert!(operation.is_some(), "{method:?} {route} is not documented");
        }
    }

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
            match state.store.package_version(VersionId(version_id)).await {
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
        let adopted = state
            .store
            .package_version(VersionId(orphan))
            .await
            .unwrap();
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
            state.store.package_version(VersionId(misplaced)).await,
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
