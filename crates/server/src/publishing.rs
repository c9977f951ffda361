//! The publishing role: MS-VAPR GetPackage (`GET /?ClientVersion=…&ClientOS=…`)
//! answered from the catalog in memory.
//!
//! A machine authenticates with `Authorization: Bearer <machine credential>`,
//! checked against the catalog's credential hashes (no database on the request
//! path) and receives its groups' entitlements; `Avail-User: NAME` beside it
//! adds the user's (an unknown user adds nothing). No credential is `401`, a
//! malformed `ClientVersion` or `ClientOS` `400`. The answer is the publishing
//! document ([`avail_model::publishing`]) as `text/xml` with `Cache-Control:
//! no-cache`, without the packages whose manifests name operating systems
//! other than the `ClientOS` (and the connection groups that need them; a
//! request without `ClientOS` gets them all). With `Accept: application/json`
//! it is the same answer for Avail clients
//! ([`avail_model::publishing::answer`]: every content URL of each package,
//! the base then each `[publishing] content_mirrors` entry, and the catalog
//! sequence) with an `ETag`, the SHA-256 of the body; a request whose
//! `If-None-Match` names it gets `304` with no body.
//!
//! The configurations the document points to are served beside it, with the
//! same credentials and from the same catalog: `GET
//! /deployment-config/{VersionId}.xml` (a package's deployment configuration)
//! and `GET /user-config/{VersionId}/{group}.xml` (the group's user
//! configuration, the group percent-encoded), both `text/xml`. Each is `404`
//! unless the caller (the machine, with its `Avail-User`) receives that package
//! and, for a user configuration, unless it is the one chosen for that caller
//! (the first of the user's entitled groups by name; see
//! [`avail_model::catalog`]).
//!
//! The catalog is rebuilt only when the Management DB's change sequence moves
//! ([`follow`] reads its change sequence every 100 ms), or, on a node configured with
//! management URLs, when a management server sends a newer one
//! ([`crate::catalog_sync`]); it is never replaced by an older one.
//! Each catalog carries a cache of rendered documents per entitlement set a
//! client is given (its entitlements less what its `ClientOS` does not run),
//! found again by the machine's and user's shared sets and the `ClientOS`
//! ([`RequestKey`]; the `ClientOS` only when some package of the catalog names
//! an operating system), so a refresh costs two lookups and one hash, not a
//! rendering, whatever the directory's size; a new catalog starts with an
//! empty cache. The configurations are not filtered by `ClientOS`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use avail_model::catalog::{Catalog, Entitlements};
use avail_model::publishing::{ClientOs, ClientQuery, answer, compatible, render};
use avail_model::{Principal, VersionId};
use avail_store::{ManagementStore, StoreError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::auth::{Authenticator, CredentialLookup, Machine};
use crate::error::ApiError;

/// Most documents one catalog keeps rendered; past it the cache starts over.
const CACHED_DOCUMENTS: usize = 10_000;

/// The user a machine's request speaks for.
const USER_HEADER: &str = "avail-user";

/// Which entitlement sets a request resolves to: the addresses of the
/// machine's and the user's sets as the catalog shares them between
/// principals (0 for no user). The catalog holds those sets for as long as it
/// is served, so equal keys mean equal answers, and a repeated refresh costs
/// two lookups and the hash of two numbers: no union of sets, no hash of one.
type PrincipalsKey = (usize, usize);

/// What an answer is found again by: the [`PrincipalsKey`] and the client's
/// `ClientOS` (`None` when it sent none, or when no package of the catalog
/// names an operating system, so that every `ClientOS` shares one entry).
type RequestKey = (PrincipalsKey, Option<ClientOs>);

/// A catalog being served, with the documents and JSON answers rendered from
/// it: once per entitlement set a client is given (what
/// [`avail_model::publishing::compatible`] leaves of its entitlements for its
/// `ClientOS`), and found again by the principals and `ClientOS` asking.
struct Published {
    catalog: Catalog,
    /// Whether any package names the operating systems it targets; when none
    /// does, `ClientOS` selects nothing.
    os_matters: bool,
    documents: Mutex<HashMap<Entitlements, Bytes>>,
    answers: Mutex<HashMap<Entitlements, (Bytes, HeaderValue)>>,
    documents_by_request: Mutex<HashMap<RequestKey, Bytes>>,
    answers_by_request: Mutex<HashMap<RequestKey, (Bytes, HeaderValue)>>,
}

/// `cache`'s entry for `key`, made by `make` once; past
/// [`CACHED_DOCUMENTS`] entries the cache starts over.
fn cached<K: std::hash::Hash + Eq + Clone, V: Clone>(
    cache: &Mutex<HashMap<K, V>>,
    key: &K,
    make: impl FnOnce() -> V,
) -> V {
    if let Some(value) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
    {
        return value.clone();
    }
    // Made without the lock: a render does not hold up the hits of others.
    let value = make();
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHED_DOCUMENTS {
        cache.clear();
    }
    cache.insert(key.clone(), value.clone());
    value
}

impl Published {
    fn new(catalog: Catalog) -> Self {
        let os_matters = catalog
            .snapshot()
            .packages
            .iter()
            .any(|p| !p.version.target_oses.is_empty());
        Published {
            catalog,
            os_matters,
            documents: Mutex::default(),
            answers: Mutex::default(),
            documents_by_request: Mutex::default(),
            answers_by_request: Mutex::default(),
        }
    }

    /// The [`RequestKey`] of a machine, the user it speaks for and the
    /// client's parameters.
    fn key(&self, machine: &str, user: Option<&str>, client: &ClientQuery) -> RequestKey {
        let set = |principal| Arc::as_ptr(&self.catalog.entitlements_of(&principal)) as usize;
        (
            (
                set(Principal::Machine(machine.into())),
                user.map_or(0, |u| set(Principal::User(u.into()))),
            ),
            client.os.filter(|_| self.os_matters),
        )
    }

    /// The document for a machine and the user it speaks for.
    fn document_for(
        &self,
        machine: &str,
        user: Option<&str>,
        client: &ClientQuery,
        content_base_url: &str,
    ) -> Bytes {
        cached(
            &self.documents_by_request,
            &self.key(machine, user, client),
            || {
                let receives = self.catalog.receives(Some(machine), user);
                let given = compatible(&self.catalog, &receives, client);
                self.document(&given, content_base_url)
            },
        )
    }

    /// The JSON answer and its ETag for a machine and the user it speaks for.
    fn answer_for(
        &self,
        machine: &str,
        user: Option<&str>,
        client: &ClientQuery,
        content: &ContentUrls,
    ) -> (Bytes, HeaderValue) {
        cached(
            &self.answers_by_request,
            &self.key(machine, user, client),
            || {
                let receives = self.catalog.receives(Some(machine), user);
                let given = compatible(&self.catalog, &receives, client);
                self.answer(&given, content)
            },
        )
    }

    /// The document for a client given `given` (already [`compatible`] with
    /// it, so rendered for any `ClientOS`), rendered once per catalog.
    fn document(&self, given: &Entitlements, content_base_url: &str) -> Bytes {
        cached(&self.documents, given, || {
            Bytes::from(render(
                &self.catalog,
                given,
                &ClientQuery::default(),
                content_base_url,
            ))
        })
    }

    /// The JSON answer for a client given `given` (already [`compatible`]
    /// with it) and its ETag, made once per catalog.
    fn answer(&self, given: &Entitlements, content: &ContentUrls) -> (Bytes, HeaderValue) {
        cached(&self.answers, given, || {
            let value = answer(
                &self.catalog,
                given,
                &ClientQuery::default(),
                &content.base,
                &content.mirrors,
            );
            let body = serde_json::to_vec(&value).expect("an answer always serialises");
            let etag = format!("\"{}\"", hex::encode(Sha256::digest(&body)));
            let etag = HeaderValue::try_from(etag).expect("hex in quotes is a header value");
            (Bytes::from(body), etag)
        })
    }
}

/// Where packages are: the base URL of the `PackageUrl`s, then mirrors.
pub(crate) struct ContentUrls {
    /// `[publishing] content_base_url` or the local content role.
    pub(crate) base: String,
    /// `[publishing] content_mirrors`.
    pub(crate) mirrors: Vec<String>,
}

/// The publishing role's state: the current catalog and where packages are.
#[derive(Clone)]
pub(crate) struct PublishingState {
    current: Arc<RwLock<Arc<Published>>>,
    content: Arc<ContentUrls>,
}

impl PublishingState {
    /// Serve `catalog`, with package URLs under `content`.
    pub(crate) fn new(catalog: Catalog, content: ContentUrls) -> Self {
        PublishingState {
            current: Arc::new(RwLock::new(Arc::new(Published::new(catalog)))),
            content: Arc::new(content),
        }
    }

    fn published(&self) -> Arc<Published> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The change sequence of the catalog being served.
    pub(crate) fn sequence(&self) -> i64 {
        self.published().catalog.sequence()
    }

    /// `f` of the data of the catalog being served (catalog sync applies the
    /// changes it receives to it).
    pub(crate) fn with_snapshot<R>(
        &self,
        f: impl FnOnce(&avail_model::catalog::CatalogSnapshot) -> R,
    ) -> R {
        f(self.published().catalog.snapshot())
    }

    /// Serve `catalog` from now on, unless it is older than the one served.
    pub(crate) fn replace(&self, catalog: Catalog) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if catalog.sequence() > current.catalog.sequence() {
            *current = Arc::new(Published::new(catalog));
        }
    }
}

/// Machine credentials from the catalog being served; it holds no
/// administrators and no publishing servers.
struct CatalogCredentials(PublishingState);

#[async_trait::async_trait]
impl CredentialLookup for CatalogCredentials {
    async fn administrator_by_token(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }

    async fn administrator_password_hash(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }

    async fn machine_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(self
            .0
            .published()
            .catalog
            .machine_by_credential(credential_hash)
            .map(str::to_owned))
    }

    async fn publishing_server_by_credential(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
}

impl FromRef<PublishingState> for Authenticator {
    fn from_ref(state: &PublishingState) -> Self {
        Authenticator::new(Arc::new(CatalogCredentials(state.clone())))
    }
}

/// How often a publishing role on a node with the Management DB checks its
/// change sequence (one single-row read): a change committed on any node over
/// the same database is served within this plus the time to read and index
/// the catalog, well inside the one second the issue allows.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Rebuild the catalog from `store` whenever its change sequence moves,
/// checking every [`FOLLOW_EVERY`]; while the database cannot be read the
/// catalog held is served, and that is logged once per outage.
pub(crate) async fn follow(store: Arc<dyn ManagementStore>, state: PublishingState) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let read = async {
            if store.change_sequence().await? <= state.sequence() {
                return Ok(None);
            }
            store.catalog_snapshot().await.map(Some)
        };
        match read.await {
            Ok(snapshot) => {
                if failing {
                    tracing::info!("the Management DB answers again");
                    failing = false;
                }
                let Some(snapshot) = snapshot else { continue };
                let sequence = snapshot.sequence;
                match tokio::task::spawn_blocking(move || Catalog::new(snapshot)).await {
                    Ok(catalog) => {
                        state.replace(catalog);
                        tracing::info!(sequence, "publishing catalog updated");
                    }
                    Err(e) => tracing::error!("building the catalog failed: {e}"),
                }
            }
            Err(e) if !failing => {
                tracing::warn!("cannot read the catalog; serving the one held: {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// GetPackage's query parameters (MS-VAPR §2.2.3).
#[derive(Deserialize)]
struct GetPackageQuery {
    #[serde(rename = "ClientVersion")]
    client_version: Option<String>,
    #[serde(rename = "ClientOS")]
    client_os: Option<String>,
}

/// The publishing router.
pub(crate) fn router(state: PublishingState) -> Router {
    Router::new()
        .route("/", get(get_package))
        .route("/deployment-config/{file}", get(get_deployment_config))
        .route("/user-config/{version}/{file}", get(get_user_config))
        .with_state(state)
}

/// The user a request speaks for (`Avail-User`), if any.
fn user_of(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(USER_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest("the Avail-User header is not text".into()))
        })
        .transpose()
}

fn not_found(what: &str) -> ApiError {
    ApiError::Store(StoreError::NotFound(what.into()))
}

/// A configuration document as `text/xml`.
fn xml_response(document: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        document.to_owned(),
    )
        .into_response()
}

/// The deployment configuration of a package the caller receives.
async fn get_deployment_config(
    machine: Machine,
    State(state): State<PublishingState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let what = "deployment configuration";
    let version: VersionId = file
        .strip_suffix(".xml")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| not_found(what))?;
    let published = state.published();
    let receives = published
        .catalog
        .receives(Some(&machine.name), user_of(&headers)?);
    let config = Some(version)
        .filter(|v| receives.packages.contains(v))
        .and_then(|v| published.catalog.package(v))
        .and_then(|p| p.deployment_config.as_ref())
        .ok_or_else(|| not_found(what))?;
    Ok(xml_response(&config.document))
}

/// A group's user configuration, when it is the one chosen for the caller.
async fn get_user_config(
    machine: Machine,
    State(state): State<PublishingState>,
    Path((version, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let what = "user configuration";
    let version: VersionId = version.parse().map_err(|_| not_found(what))?;
    let group = file.strip_suffix(".xml").ok_or_else(|| not_found(what))?;
    let published = state.published();
    let receives = published
        .catalog
        .receives(Some(&machine.name), user_of(&headers)?);
    let config = receives
        .user_configs
        .get(&version)
        .filter(|choice| choice.group == group)
        .and_then(|_| published.catalog.user_config(version, group))
        .ok_or_else(|| not_found(what))?;
    Ok(xml_response(&config.document))
}

/// The publishing document for the machine, and the user it names if any.
async fn get_package(
    machine: Machine,
    State(state): State<PublishingState>,
    Query(query): Query<GetPackageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let client = ClientQuery::parse(query.client_version.as_deref(), query.client_os.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let user = user_of(&headers)?;
    let published = state.published();
    if !wants_json(&headers) {
        let document = published.document_for(&machine.name, user, &client, &state.content.base);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/xml"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::VARY, "Accept"),
            ],
            document,
        )
            .into_response());
    }
    let (body, etag) = published.answer_for(&machine.name, user, &client, &state.content);
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::VARY, HeaderValue::from_static("Accept")),
        (header::ETAG, etag.clone()),
    ];
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let json = HeaderValue::from_static("application/json");
    Ok((common, [(header::CONTENT_TYPE, json)], body).into_response())
}

/// Whether `Accept` names `application/json`.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let media = media.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/json")
        })
}

/// Whether `If-None-Match` names `etag` (or is `*`), weakly compared.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use avail_model::catalog::{CatalogSnapshot, MachineCredential, Membership, PublishedPackage};
    use avail_model::{Entitlement, NewPackageVersion, PackageId, Principal, VersionId};
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    use uuid::Uuid;

    use avail_model::publishing::{AnswerConnectionGroup, AnswerPackage, PublishingAnswer};

    use super::*;
    use crate::auth::hash_secret;

    fn package(n: u128, group: &str) -> PublishedPackage {
        PublishedPackage {
            version: NewPackageVersion {
                package_id: PackageId(Uuid::from_u128(n)),
                version_id: VersionId(Uuid::from_u128(0x100 + n)),
                name: format!("P{n}"),
                version: "1.0.0.0".into(),
                content_path: String::new(),
                size: 1,
                sha256: "0".repeat(64),
                block_map_sha256: None,
                target_oses: vec![],
                applications: vec![],
            },
            deployment_config: None,
            entitlements: vec![Entitlement {
                group: group.into(),
                user_config: None,
            }],
            user_configs: Default::default(),
        }
    }

    fn catalog(sequence: i64, packages: Vec<PublishedPackage>) -> Catalog {
        Catalog::new(CatalogSnapshot {
            sequence,
            packages,
            connection_groups: vec![],
            groups: vec!["lab".into(), "staff".into()],
            users: vec!["alice".into()],
            machines: vec![MachineCredential {
                name: "pc1".into(),
                credential_hash: hash_secret("secret"),
            }],
            memberships: vec![
                Membership {
                    group: "lab".into(),
                    member: Principal::Machine("pc1".into()),
                },
                Membership {
                    group: "staff".into(),
                    member: Principal::User("alice".into()),
                },
            ],
        })
    }

    async fn get(
        router: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn machines_and_their_users_get_their_documents() {
        let state = PublishingState::new(
            catalog(3, vec![package(1, "lab"), package(2, "staff")]),
            ContentUrls {
                base: "http://content:8083".into(),
                mirrors: vec![],
            },
        );
        let router = router(state.clone());
        let query = "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64";
        let bearer = [("authorization", "Bearer secret")];

        let (status, headers, body) = get(&router, query, &bearer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert!(
            body.contains("http://content:8083/packages/00000000-0000-0000-0000-000000000001/")
        );
        assert!(!body.contains("00000000-0000-0000-0000-000000000002"));

        let with_alice = [bearer[0], ("avail-user", "alice")];
        let (status, _, body) = get(&router, query, &with_alice).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("00000000-0000-0000-0000-000000000002"));
        let with_nobody = [bearer[0], ("avail-user", "mallory")];
        let (status, _, nobody) = get(&router, query, &with_nobody).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!nobody.contains("00000000-0000-0000-0000-000000000002"));

        // No credential, a wrong one, malformed parameters.
        assert_eq!(get(&router, query, &[]).await.0, StatusCode::UNAUTHORIZED);
        let wrong = [("authorization", "Bearer nope")];
        assert_eq!(
            get(&router, query, &wrong).await.0,
            StatusCode::UNAUTHORIZED
        );
        for bad in ["/?ClientVersion=5.1", "/?ClientOS=Linux"] {
            assert_eq!(get(&router, bad, &bearer).await.0, StatusCode::BAD_REQUEST);
        }
        // A plain GET (a browser) is fine.
        assert_eq!(get(&router, "/", &bearer).await.0, StatusCode::OK);

        // A newer catalog replaces it; an older one does not.
        state.replace(catalog(5, vec![package(2, "lab")]));
        let (_, _, body) = get(&router, query, &bearer).await;
        assert!(body.contains("00000000-0000-0000-0000-000000000002"));
        state.replace(catalog(4, vec![]));
        assert_eq!(state.sequence(), 5);
    }

    #[tokio::test]
    async fn two_client_oses_get_two_documents_from_one_machine() {
        // P1 for every OS, P2 for 64-bit Windows 10 clients, P3 for Windows
        // Server 2012 R2 of either bitness; all to pc1's group.
        let mut p2 = package(2, "lab");
        p2.version.target_oses = vec!["WindowsClient_10.0_x64".into()];
        let mut p3 = package(3, "lab");
        p3.version.target_oses = vec!["WindowsServer_6.3".into()];
        let state = PublishingState::new(
            catalog(3, vec![package(1, "lab"), p2, p3]),
            ContentUrls {
                base: "http://content:8083".into(),
                mirrors: vec![],
            },
        );
        let router = router(state.clone());
        let bearer = [("authorization", "Bearer secret")];
        let json = [bearer[0], ("accept", "application/json")];
        let has = |doc: &str, n: u128| doc.contains(&format!("0000-00000000000{n}/"));
        let uri = |os: &str| format!("/?ClientVersion=5.1.0.0&ClientOS={os}");

        let (status, _, client) = get(&router, &uri("WindowsClient_10.0_x64"), &bearer).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            has(&client, 1) && has(&client, 2) && !has(&client, 3),
            "{client}"
        );
        let (status, _, server) = get(&router, &uri("WindowsServer_6.3_x86"), &bearer).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            has(&server, 1) && !has(&server, 2) && has(&server, 3),
            "{server}"
        );
        // Each again, from the caches: the same.
        assert_eq!(
            get(&router, &uri("WindowsClient_10.0_x64"), &bearer)
                .await
                .2,
            client
        );
        assert_eq!(
            get(&router, &uri("WindowsServer_6.3_x86"), &bearer).await.2,
            server
        );
        // A 32-bit Windows 10 gets what every OS gets; no ClientOS, everything.
        let (_, _, x86) = get(&router, &uri("WindowsClient_10.0_x86"), &bearer).await;
        assert!(has(&x86, 1) && !has(&x86, 2) && !has(&x86, 3), "{x86}");
        let (_, _, all) = get(&router, "/?ClientVersion=5.1.0.0", &bearer).await;
        assert!(has(&all, 1) && has(&all, 2) && has(&all, 3), "{all}");

        // The JSON answers (and so their ETags) differ the same way.
        let (_, client_headers, client_json) =
            get(&router, &uri("WindowsClient_10.0_x64"), &json).await;
        let (_, server_headers, server_json) =
            get(&router, &uri("WindowsServer_6.3_x64"), &json).await;
        assert_ne!(client_headers[header::ETAG], server_headers[header::ETAG]);
        let ids = |body: &str| -> Vec<u128> {
            let answer: PublishingAnswer = serde_json::from_str(body).unwrap();
            answer
                .packages
                .iter()
                .map(|p| p.package_id.0.as_u128())
                .collect()
        };
        assert_eq!(ids(&client_json), [1, 2]);
        assert_eq!(ids(&server_json), [1, 3]);
    }

    #[tokio::test]
    async fn configurations_are_served_to_those_who_receive_them() {
        use avail_model::catalog::Configuration;
        let config = |document: &str| Configuration {
            document: document.into(),
            updated_at: chrono::DateTime::UNIX_EPOCH,
            revision: 1,
        };
        // P1 to lab (pc1's group) with a deployment configuration; P2 to staff
        // (alice's) and to "x y", both with a user configuration, and with a
        // deployment configuration; P3 to nobody with one.
        let mut p1 = package(1, "lab");
        p1.deployment_config = Some(config("<DeploymentConfiguration P=\"1\"/>"));
        let mut p2 = package(2, "staff");
        p2.deployment_config = Some(config("<DeploymentConfiguration P=\"2\"/>"));
        for group in ["staff", "x y"] {
            let document = format!("<UserConfiguration G=\"{group}\"/>");
            p2.entitlements.push(Entitlement {
                group: group.into(),
                user_config: Some(document.clone()),
            });
            p2.user_configs.insert(group.into(), config(&document));
        }
        p2.entitlements.remove(0);
        let mut p3 = package(3, "nobody");
        p3.deployment_config = Some(config("<DeploymentConfiguration P=\"3\"/>"));
        let mut snapshot = catalog(9, vec![p1, p2, p3]).snapshot().clone();
        snapshot.groups.push("x y".into());
        let router = router(PublishingState::new(
            Catalog::new(snapshot),
            ContentUrls {
                base: "http://content:8083".into(),
                mirrors: vec![],
            },
        ));
        let bearer = [("authorization", "Bearer secret")];
        let alice = [bearer[0], ("avail-user", "alice")];
        let v = |n: u128| VersionId(Uuid::from_u128(0x100 + n));
        let deployment = |n| format!("/deployment-config/{}.xml", v(n));
        let staff = format!("/user-config/{}/staff.xml", v(2));
        let other = format!("/user-config/{}/x%20y.xml", v(2));

        // The machine: its own package's deployment configuration, no other.
        let (status, headers, body) = get(&router, &deployment(1), &bearer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
        assert_eq!(body, "<DeploymentConfiguration P=\"1\"/>");
        for uri in [&deployment(2), &deployment(3), &staff] {
            assert_eq!(
                get(&router, uri, &bearer).await.0,
                StatusCode::NOT_FOUND,
                "{uri}"
            );
        }
        // With alice: P2's deployment configuration and staff's user
        // configuration (alice's group), not the other group's.
        let (status, _, body) = get(&router, &deployment(2), &alice).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "<DeploymentConfiguration P=\"2\"/>")
        );
        let (status, headers, body) = get(&router, &staff, &alice).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
        assert_eq!(body, "<UserConfiguration G=\"staff\"/>");
        // The document's path is the one served.
        let (_, _, document) = get(&router, "/", &alice).await;
        assert!(
            document.contains(&format!("Path=\"{}\"", &staff[1..])),
            "{document}"
        );
        for uri in [
            other.clone(),
            deployment(3),
            format!("/user-config/{}/staff.xml", v(1)),
            format!("/deployment-config/{}", v(2)),
            "/deployment-config/nonsense.xml".into(),
            "/user-config/nonsense/staff.xml".to_string(),
        ] {
            assert_eq!(
                get(&router, &uri, &alice).await.0,
                StatusCode::NOT_FOUND,
                "{uri}"
            );
        }
        // No credential or a wrong one: 401, whatever the path.
        let wrong = [("authorization", "Bearer nope"), ("avail-user", "alice")];
        for uri in [&deployment(1), &staff] {
            assert_eq!(get(&router, uri, &[]).await.0, StatusCode::UNAUTHORIZED);
            assert_eq!(get(&router, uri, &wrong).await.0, StatusCode::UNAUTHORIZED);
        }
    }

    #[tokio::test]
    async fn avail_clients_get_json_with_an_etag() {
        let mut snapshot = catalog(7, vec![package(1, "lab"), package(2, "staff")])
            .snapshot()
            .clone();
        let group = avail_model::ConnectionGroup {
            id: avail_model::ConnectionGroupId(Uuid::from_u128(0x200)),
            version_id: Uuid::from_u128(0x201),
            name: "G".into(),
            priority: 1,
            members: vec![avail_model::ConnectionGroupMember {
                package_id: PackageId(Uuid::from_u128(1)),
                version_id: None,
                optional: false,
            }],
            entitled_groups: vec!["lab".into()],
            published: true,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        snapshot.connection_groups.push(group.clone());
        snapshot.packages[0].version.block_map_sha256 = Some("ab".repeat(32));
        let state = PublishingState::new(
            Catalog::new(snapshot),
            ContentUrls {
                base: "http://content:8083".into(),
                mirrors: vec!["https://m1".into(), "https://m2/avail".into()],
            },
        );
        let router = router(state.clone());
        let json = [
            ("authorization", "Bearer secret"),
            ("accept", "text/html, application/json;q=0.9"),
        ];

        let (status, headers, body) = get(&router, "/", &json).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let digest = hex::encode(Sha256::digest(body.as_bytes()));
        assert_eq!(etag, format!("\"{digest}\""));
        assert!(body.contains(&format!("\"block_map_sha256\":\"{}\"", "ab".repeat(32))));
        let answer: PublishingAnswer = serde_json::from_str(&body).unwrap();
        let path = "packages/00000000-0000-0000-0000-000000000001/\
                    00000000-0000-0000-0000-000000000101.appv";
        assert_eq!(
            answer,
            PublishingAnswer {
                sequence: 7,
                packages: vec![AnswerPackage {
                    package_id: PackageId(Uuid::from_u128(1)),
                    version_id: VersionId(Uuid::from_u128(0x101)),
                    name: "P1".into(),
                    version: "1.0.0.0".into(),
                    urls: vec![
                        format!("http://content:8083/{path}"),
                        format!("https://m1/{path}"),
                        format!("https://m2/avail/{path}"),
                    ],
                    block_map_sha256: Some("ab".repeat(32)),
                }],
                connection_groups: vec![AnswerConnectionGroup {
                    id: group.id,
                    version_id: group.version_id,
                    name: group.name,
                    priority: 1,
                    members: group.members,
                }],
            }
        );

        // The same ETag again: 304 and no body; another one: the answer.
        let matching = [json[0], json[1], ("if-none-match", etag.as_str())];
        let (status, headers, body) = get(&router, "/", &matching).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[header::ETAG], etag.as_str());
        assert!(body.is_empty());
        let stale = [json[0], json[1], ("if-none-match", "\"0\"")];
        assert_eq!(get(&router, "/", &stale).await.0, StatusCode::OK);

        // A user's packages change the answer and so the ETag.
        let alice = [json[0], json[1], ("avail-user", "alice")];
        let (_, headers, body) = get(&router, "/", &alice).await;
        assert_ne!(headers[header::ETAG], etag.as_str());
        assert!(body.contains("00000000-0000-0000-0000-000000000002"));

        // Without Accept: application/json, the XML document as before.
        let (_, headers, _) = get(&router, "/", &json[..1]).await;
        assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
        assert!(headers.get(header::ETAG).is_none());

        // No credential is still 401.
        assert_eq!(
            get(&router, "/", &json[1..]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}
