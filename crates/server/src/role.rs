//! The role framework: what each role is, and the plumbing every role gets.
//!
//! A role is built from what the process shares ([`Shared`]: the
//! configuration, the content store's path, the metrics, and the Management
//! and Reporting DBs, each opened at most once whichever roles need it) by a function that gives a
//! [`RoleSpec`]: its listen address and TLS files, its router, its readiness
//! check, whether it limits requests in flight or bounds their time, and the
//! runtime it runs on. [`build`] picks that function; a new role is one more
//! function and one more line there. [`plumbing`] then wraps every role's
//! router the same way: the request limits and deadline it asked for,
//! `/healthz`, `/readyz` and `/metrics` outside those limits, JSON errors,
//! request metrics, a request id (`x-request-id`: the client's, or a new UUID;
//! returned with the response and recorded in the request's log span) and the
//! request's log span.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{OnceCell, Semaphore};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::config::{Config, Role, TlsFiles, redact};
use crate::error::ApiError;
use crate::{
    auth, catalog_sync, content, listener, management, metrics, publishing, rejection, reporting,
};

/// How long a request waits for a free slot before it gets `503`.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// What every role of the process shares.
pub(crate) struct Shared {
    pub config: Config,
    pub content_root: PathBuf,
    pub metrics: metrics::Metrics,
    management_store: OnceCell<Arc<dyn avail_store::ManagementStore>>,
    reporting_store: OnceCell<Arc<dyn avail_store::ReportingStore>>,
}

impl Shared {
    /// For `config`, checked; creates the data directory and the content store.
    pub fn new(config: Config) -> anyhow::Result<Shared> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let content_root = config.content_root();
        std::fs::create_dir_all(&content_root).with_context(|| {
            format!("cannot create the content store {}", content_root.display())
        })?;
        Ok(Shared {
            config,
            content_root,
            metrics: metrics::Metrics::new(),
            management_store: OnceCell::new(),
            reporting_store: OnceCell::new(),
        })
    }

    /// The Management DB, opened on first use and shared from then on.
    pub async fn management_store(&self) -> anyhow::Result<Arc<dyn avail_store::ManagementStore>> {
        self.management_store
            .get_or_try_init(|| async {
                let url = self.config.management_database_url();
                avail_store::open_management(&url)
                    .await
                    .with_context(|| format!("cannot open the Management DB at {}", redact(&url)))
            })
            .await
            .cloned()
    }

    /// The Reporting DB, opened on first use and shared from then on.
    pub async fn reporting_store(&self) -> anyhow::Result<Arc<dyn avail_store::ReportingStore>> {
        self.reporting_store
            .get_or_try_init(|| async {
                let url = self.config.reporting_database_url();
                avail_store::open_reporting(&url)
                    .await
                    .with_context(|| format!("cannot open the Reporting DB at {}", redact(&url)))
            })
            .await
            .cloned()
    }
}

/// Why a role is not ready, if it is not.
pub(crate) type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// Where a role's connections are served.
pub(crate) enum Runtime {
    /// The process's runtime.
    Shared,
    /// A runtime of the role's own, with threads of this name: the content role
    /// reads files on its workers, so a slow disk must not stall the others.
    Own(&'static str),
}

/// A role, built: everything [`plumbing`] and the listener need.
pub(crate) struct RoleSpec {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub runtime: Runtime,
    pub app: App,
}

/// A role's requests: its router and what the plumbing applies to it.
pub(crate) struct App {
    pub router: Router,
    pub ready: ReadyCheck,
    /// Requests in flight, if limited.
    pub requests: Option<RequestSlots>,
    /// The deadline of a request other than an upload, if any.
    pub request_timeout: Option<Duration>,
}

/// Build `role`: each role's own function says all about it.
pub(crate) async fn build(role: Role, shared: &Shared) -> anyhow::Result<RoleSpec> {
    match role {
        Role::Management => management_role(shared).await,
        Role::Content => content_role(shared).await,
        Role::Reporting => reporting_role(shared).await,
        Role::Publishing => publishing_role(shared).await,
    }
}

impl RoleSpec {
    /// `role` serving `app` where the configuration says, on `runtime`.
    fn new(shared: &Shared, role: Role, runtime: Runtime, app: App) -> RoleSpec {
        RoleSpec {
            listen: shared.config.listen(role),
            tls: shared.config.tls(role),
            runtime,
            app,
        }
    }
}

/// The management role: the admin API over the Management DB and the content
/// store. Bootstraps the first administrator and settles what a killed import
/// left behind before it serves.
async fn management_role(shared: &Shared) -> anyhow::Result<RoleSpec> {
    let config = &shared.config;
    let store = shared.management_store().await?;
    bootstrap(&*store, &config.data_dir).await?;
    let state = management::AppState {
        store: store.clone(),
        reporting: shared.reporting_store().await?,
        content_root: shared.content_root.clone(),
        max_upload_bytes: config.management.max_upload_bytes,
        // Waiting syncs may hold at most a quarter of the request slots.
        sync: management::CatalogWaits::new(
            request_timeout(config.management.request_timeout_secs),
            (config.management.max_concurrent_requests / 4).max(1),
        ),
    };
    management::recover(&state).await?;
    let guard = auth::PasswordGuard::new(config.management.password_failures_per_minute)
        .context("cannot start the password-check threads")?;
    let router = management::router(state).layer(axum::Extension(guard));
    let ready: ReadyCheck = Arc::new(move || {
        let store = store.clone();
        async move {
            store.change_sequence().await.err().map(|e| {
                tracing::warn!("not ready: {e}");
                "the Management DB is unreachable".to_owned()
            })
        }
        .boxed()
    });
    let app = App {
        router,
        ready,
        requests: Some(RequestSlots::new(
            config.management.max_concurrent_requests,
            config.management.max_concurrent_uploads,
        )),
        request_timeout: request_timeout(config.management.request_timeout_secs),
    };
    Ok(RoleSpec::new(
        shared,
        Role::Management,
        Runtime::Shared,
        app,
    ))
}

/// A role's request deadline: `secs`, none when 0.
fn request_timeout(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The reporting role: MS-VAPR SetReport into the Reporting DB, anonymous as
/// in App-V (see [`reporting`]); ready while the Reporting DB answers.
async fn reporting_role(shared: &Shared) -> anyhow::Result<RoleSpec> {
    let config = &shared.config.reporting;
    let store = shared.reporting_store().await?;
    let router = reporting::router(store.clone(), config.max_body_bytes);
    let ready: ReadyCheck = Arc::new(move || {
        let store = store.clone();
        async move {
            // A lookup by primary key: cheap, and it needs the database.
            store.raw_report(uuid::Uuid::nil()).await.err().map(|e| {
                tracing::warn!("not ready: {e}");
                "the Reporting DB is unreachable".to_owned()
            })
        }
        .boxed()
    });
    // Reports are no uploads: the upload pool stays unused.
    let app = App {
        router,
        ready,
        requests: Some(RequestSlots::new(config.max_concurrent_requests, 1)),
        request_timeout: request_timeout(config.request_timeout_secs),
    };
    Ok(RoleSpec::new(shared, Role::Reporting, Runtime::Shared, app))
}

/// The publishing role: MS-VAPR GetPackage from the catalog in memory (see
/// [`publishing`]); package URLs point at this node's content role. Without
/// `[publishing] management_urls` the catalog is built from the Management DB
/// at start and rebuilt whenever its change sequence moves, and the role is
/// ready from the start. With them it is synced from those management servers
/// ([`catalog_sync`]), starting from the disk copy, and ready once it holds a
/// catalog. Either way it answers from memory while its source is down.
async fn publishing_role(shared: &Shared) -> anyhow::Result<RoleSpec> {
    let config = &shared.config;
    let content = || publishing::ContentUrls {
        base: config.content_base_url(),
        mirrors: config.publishing.content_mirrors.clone(),
    };
    let urls = &config.publishing.management_urls;
    let (state, ready): (_, ReadyCheck) = if urls.is_empty() {
        let store = shared.management_store().await?;
        let snapshot = store
            .catalog_snapshot()
            .await
            .context("cannot read the publishing catalog from the Management DB")?;
        let state = publishing::PublishingState::new(
            avail_model::catalog::Catalog::new(snapshot),
            content(),
        );
        tokio::spawn(publishing::follow(store, state.clone()));
        (state, Arc::new(|| async { None }.boxed()))
    } else {
        let credential = config.publishing.credential.as_deref().unwrap_or_default();
        let clients = catalog_sync::clients(urls, credential)
            .context("cannot set up the catalog sync's HTTP client")?;
        let copy = config.data_dir.join(catalog_sync::CATALOG_FILE);
        let catalog = catalog_sync::read_copy(&copy).unwrap_or_else(catalog_sync::no_catalog);
        let state = publishing::PublishingState::new(catalog, content());
        tokio::spawn(catalog_sync::follow(
            clients,
            state.clone(),
            config.data_dir.clone(),
        ));
        let held = state.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let empty = held.sequence() < 0;
            async move {
                empty.then(|| {
                    "no catalog yet: no management server has answered and there is no disk copy"
                        .to_owned()
                })
            }
            .boxed()
        });
        (state, ready)
    };
    let app = App {
        router: publishing::router(state),
        ready,
        requests: None,
        request_timeout: None,
    };
    Ok(RoleSpec::new(
        shared,
        Role::Publishing,
        Runtime::Shared,
        app,
    ))
}

/// The content role: the content store over HTTP, open to all or to machines
/// with a credential, on a runtime of its own (see [`Runtime::Own`]).
async fn content_role(shared: &Shared) -> anyhow::Result<RoleSpec> {
    let root = shared.content_root.clone();
    let mut router = content::router(root.clone());
    if shared.config.content.require_machine_credential {
        let authenticator = auth::Authenticator::from_store(shared.management_store().await?);
        router = router.layer(axum::middleware::from_fn_with_state(
            authenticator,
            require_machine,
        ));
    }
    let ready: ReadyCheck = Arc::new(move || {
        let missing = !root.is_dir();
        async move { missing.then(|| "the content store is missing".to_owned()) }.boxed()
    });
    let app = App {
        router,
        ready,
        requests: None,
        request_timeout: None,
    };
    Ok(RoleSpec::new(
        shared,
        Role::Content,
        Runtime::Own("avail-content"),
        app,
    ))
}

/// The content role's optional guard: only machines with a valid credential read packages.
async fn require_machine(
    machine: Result<auth::Machine, auth::Rejection>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match machine {
        Ok(machine) => {
            tracing::trace!(machine = %machine.name, "a machine reads content");
            next.run(req).await
        }
        Err(auth::Rejection::Api(ApiError::Unauthorized(_))) => ApiError::Unauthorized(
            "this content server requires a machine credential (Authorization: Bearer …)".into(),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// On first start (no administrator yet) create one with an API token, written
/// to `<data-dir>/admin-token` with mode 0600.
async fn bootstrap(
    store: &dyn avail_store::ManagementStore,
    data_dir: &Path,
) -> anyhow::Result<()> {
    if !store.list_administrators().await?.is_empty() {
        return Ok(());
    }
    let token = auth::new_secret("avail_adm_");
    match store.add_administrator(crate::BOOTSTRAP_ADMIN, None).await {
        Ok(()) => {}
        // Another node bootstrapped the same database a moment ago.
        Err(avail_store::StoreError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    store
        .add_api_token(
            crate::BOOTSTRAP_ADMIN,
            &auth::hash_secret(&token),
            "bootstrap",
        )
        .await?;
    let path = data_dir.join(crate::ADMIN_TOKEN_FILE);
    crate::write_atomically(&path, &format!("{token}\n"), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(path = %path.display(), "created the bootstrap administrator {:?}; its API token is in this file", crate::BOOTSTRAP_ADMIN);
    Ok(())
}

/// A role's request slots: one pool for package uploads, which last as long
/// as the client takes to send, and one for everything else.
#[derive(Clone)]
pub(crate) struct RequestSlots {
    requests: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
}

impl RequestSlots {
    fn new(requests: usize, uploads: usize) -> Self {
        RequestSlots {
            requests: Arc::new(Semaphore::new(requests)),
            uploads: Arc::new(Semaphore::new(uploads)),
        }
    }
}

/// Package uploads: the requests whose bodies stream for as long as they need.
fn is_upload(req: &axum::extract::Request) -> bool {
    req.method() == axum::http::Method::POST
        && (req.uri().path() == "/api/v1/packages" || req.uri().path().ends_with("/upgrade"))
}

/// Middleware: a request runs once it has a slot of its pool; after waiting
/// `SLOT_WAIT` for one it gets `503` with `Retry-After`.
async fn limit_requests(
    State(slots): State<RequestSlots>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (pool, what) = if is_upload(&req) {
        (&slots.uploads, "uploads")
    } else {
        (&slots.requests, "requests")
    };
    match tokio::time::timeout(SLOT_WAIT, pool.clone().acquire_owned()).await {
        Ok(Ok(_slot)) => next.run(req).await,
        _ => {
            let mut response = rejection::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("too many {what} at once; try again shortly"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// What `/readyz` checks for a role.
#[derive(Clone)]
struct Readiness {
    check: ReadyCheck,
    connections: listener::Slots,
    requests: Option<RequestSlots>,
}

async fn healthz() -> axum::Json<avail_model::api::Health> {
    axum::Json(avail_model::api::Health {
        status: "ok".into(),
    })
}

async fn readyz(
    State(ready): State<Readiness>,
) -> (StatusCode, axum::Json<avail_model::api::Health>) {
    let busy = if ready.connections.full() {
        Some(format!(
            "the connection limit ({}) is reached",
            ready.connections.max()
        ))
    } else if ready
        .requests
        .as_ref()
        .is_some_and(|r| r.requests.available_permits() == 0)
    {
        Some("every request slot is in use".to_owned())
    } else {
        None
    };
    let problem = match busy {
        Some(busy) => Some(busy),
        None => (ready.check)().await,
    };
    match problem {
        None => (
            StatusCode::OK,
            axum::Json(avail_model::api::Health {
                status: "ok".into(),
            }),
        ),
        Some(p) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(avail_model::api::Health { status: p }),
        ),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, marked when cut:
/// for log fields taken from the request.
fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// The plumbing every role gets, the same way (see the module documentation);
/// `connections` are the slots of the role's listener, for `/readyz`.
pub(crate) fn plumbing(
    app: App,
    role: Role,
    connections: listener::Slots,
    metrics: &metrics::Metrics,
) -> Router {
    let mut router = app.router;
    if let Some(requests) = &app.requests {
        router = router.layer(axum::middleware::from_fn_with_state(
            requests.clone(),
            limit_requests,
        ));
    }
    let ready = Readiness {
        check: app.ready,
        connections,
        requests: app.requests,
    };
    // Added after the request limit, so that they answer however busy the role is.
    let router = router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(ready))
        .route("/metrics", get(metrics::render).with_state(metrics.clone()));
    let mut router = rejection::fallbacks(router);
    if let Some(timeout) = app.request_timeout {
        // Uploads stream for as long as they need; everything else has a deadline.
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                if is_upload(&req) {
                    return next.run(req).await;
                }
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => rejection::json_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "the request took too long",
                    ),
                }
            },
        ));
    }
    router
        .layer(axum::middleware::from_fn(rejection::json_errors))
        .layer(axum::middleware::from_fn_with_state((metrics.clone(), role), metrics::track))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(move |req: &axum::http::Request<_>| {
                // Clients choose paths, methods and request ids: keep what reaches the logs short.
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(|| bounded(req.uri().path(), 128), |p| p.as_str().into());
                let method = bounded(req.method().as_str(), 16);
                let id = req
                    .headers()
                    .get("x-request-id")
                    .map(|id| bounded(&String::from_utf8_lossy(id.as_bytes()), 64).into_owned())
                    .unwrap_or_default();
                tracing::info_span!("request", role = role.name(), %method, %route, request_id = %id, admin = tracing::field::Empty, machine = tracing::field::Empty)
            })
            // 500s are logged with their cause where they arise; a flood of 503s
            // (shed, busy) must not flood the log.
            .on_failure(|class: tower_http::classify::ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                match class {
                    tower_http::classify::ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
                        tracing::debug!(?latency, "unavailable")
                    }
                    class => tracing::warn!(?latency, "request failed: {class}"),
                }
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
}

/// Request ids for requests that bring none: UUIDs (version 8, "custom") made
/// of a random number drawn once per role and a counter, so unique across
/// processes and requests without asking the kernel for randomness per request
/// (a version 4 UUID per request was a `getrandom` call each: ~2 % of the
/// publishing role's CPU under load).
#[derive(Clone)]
struct RequestIds {
    prefix: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        let id = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        let value = HeaderValue::from_str(id.hyphenated().encode_lower(&mut [0; 36]))
            .expect("a UUID is a header value");
        Some(RequestId::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// A role of a process on `data_dir`, as `run` wraps it, without a socket.
    async fn router(shared: &Shared, role: Role) -> Router {
        let spec = build(role, shared).await.unwrap();
        plumbing(spec.app, role, listener::Slots::new(8), &shared.metrics)
    }

    fn shared(dir: &Path, require_machine_credential: bool) -> Shared {
        let mut config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        config.content.require_machine_credential = require_machine_credential;
        Shared::new(config).unwrap()
    }

    /// `GET path` with `headers`: the status, the response's headers and its
    /// error code (or body, on success).
    async fn get(
        router: &Router,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut request = axum::http::Request::get(path);
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
        let text = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(json) if !parts.status.is_success() => json["error"].as_str().unwrap().to_owned(),
            _ => String::from_utf8_lossy(&body).into_owned(),
        };
        (parts.status, parts.headers, text)
    }

    fn basic(user_password: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[tokio::test]
    async fn the_management_router_authenticates_every_way() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), false);
        let api = router(&shared, Role::Management).await;
        let token = std::fs::read_to_string(dir.path().join(crate::ADMIN_TOKEN_FILE)).unwrap();
        let bearer = format!("Bearer {}", token.trim());
        let store = shared.management_store().await.unwrap();
        let hash = auth::hash_password("carol's password").unwrap();
        store.add_administrator("carol", Some(&hash)).await.unwrap();
        store
            .create_machine("pc1", &auth::hash_secret("pc1-credential"), &[])
            .await
            .unwrap();

        let status = |path: &'static str, authorization: Option<String>| {
            let api = api.clone();
            async move {
                let headers: Vec<(&str, &str)> = authorization
                    .as_deref()
                    .map(|a| vec![("authorization", a)])
                    .unwrap_or_default();
                let (status, _, code) = get(&api, path, &headers).await;
                (status, code)
            }
        };
        let packages = "/api/v1/packages";
        let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized".to_owned());
        assert_eq!(status(packages, None).await, unauthorized);
        assert_eq!(
            status(packages, Some("Bearer avail_adm_0000".into())).await,
            unauthorized
        );
        assert_eq!(
            status(packages, Some("Token abc".into())).await,
            unauthorized
        );
        assert_eq!(
            status(packages, Some(bearer.clone())).await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(packages, Some("Bearer pc1-credential".into())).await,
            (StatusCode::FORBIDDEN, "forbidden".to_owned())
        );
        assert_eq!(
            status(packages, Some(basic("carol:carol's password")))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            status(packages, Some(basic("carol:guess"))).await,
            unauthorized
        );
        assert_eq!(
            status(packages, Some(basic("mallory:guess"))).await,
            unauthorized
        );
        // Health needs no credentials.
        assert_eq!(status("/healthz", None).await.0, StatusCode::OK);
        assert_eq!(status("/readyz", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), false);
        for role in [Role::Management, Role::Content] {
            let router = router(&shared, role).await;
            // The client's own id comes back; without one, a fresh one each time.
            let (_, headers, _) = get(&router, "/healthz", &[("x-request-id", "abc-123")]).await;
            assert_eq!(headers["x-request-id"], "abc-123");
            let (status, first, _) = get(&router, "/nowhere/at/all", &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let (_, second, _) = get(&router, "/healthz", &[]).await;
            let (first, second) = (&first["x-request-id"], &second["x-request-id"]);
            assert_eq!(first.len(), 36, "{first:?}");
            assert_ne!(first, second);
        }
    }

    #[tokio::test]
    async fn content_can_require_a_machine_credential_from_the_shared_database() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), true);
        let _management = router(&shared, Role::Management).await;
        let content = router(&shared, Role::Content).await;
        // One Management DB for both roles.
        let store = shared.management_store().await.unwrap();
        assert!(Arc::ptr_eq(
            &store,
            &shared.management_store().await.unwrap()
        ));
        store
            .create_machine("pc1", &auth::hash_secret("pc1-credential"), &[])
            .await
            .unwrap();
        std::fs::write(shared.content_root.join("a.appv"), b"package").unwrap();
        let token = std::fs::read_to_string(dir.path().join(crate::ADMIN_TOKEN_FILE)).unwrap();

        let (status, _, body) = get(
            &content,
            "/a.appv",
            &[("authorization", "Bearer pc1-credential")],
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "package"));
        for authorization in [
            None,
            Some("Bearer wrong".to_owned()),
            Some(format!("Bearer {}", token.trim())),
            Some(basic("admin:x")),
        ] {
            let headers: Vec<(&str, &str)> = authorization
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            let (status, _, code) = get(&content, "/a.appv", &headers).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{authorization:?}"
            );
        }
        // Health stays open.
        assert_eq!(get(&content, "/healthz", &[]).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn publishing_authenticates_machines_from_the_catalog_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), false);
        let store = shared.management_store().await.unwrap();
        store
            .create_machine("pc1", &auth::hash_secret("pc1-credential"), &[])
            .await
            .unwrap();
        let publishing = router(&shared, Role::Publishing).await;
        let (status, headers, body) = get(
            &publishing,
            "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64",
            &[("authorization", "Bearer pc1-credential")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
        assert!(body.contains("<Publishing Protocol=\"1.0\">"));
        let (status, _, code) = get(&publishing, "/", &[]).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        assert_eq!(get(&publishing, "/readyz", &[]).await.0, StatusCode::OK);
    }
}
