//! Avail's server roles as axum routers, and the process that runs them.
//!
//! Each role (management: the admin API; content: the package store over HTTP
//! with byte ranges; publishing and reporting come with their own work) has its
//! own listener, because MS-VAPR puts both the publishing and the reporting
//! resource at `/`. Every role answers `/healthz` (alive), `/readyz` (able to
//! serve) and `/metrics` (Prometheus), outside any request limit so that they
//! answer however busy the role is. Roles keep no state of their own beyond
//! the databases and the content store, so any number of nodes can stand behind
//! a load balancer. [`run`] starts the chosen roles and stops them all on one
//! shutdown signal.
//!
//! Hardening shared by every role: each listener (`listener`) caps its
//! connections and gives every connection header, idle and body-progress
//! deadlines; errors axum makes itself are JSON like all others (`rejection`);
//! metric labels and log fields stay bounded whatever clients send. The
//! management role also limits requests in flight, with uploads counted apart
//! so that slow uploads cannot starve the rest of the API, and bounds password
//! checks (`auth`). `/readyz` answers `503` with the reason while a role is at
//! its connection cap or out of request slots.

pub mod api;
mod auth;
pub mod config;
pub mod content;
mod error;
mod listener;
mod management;
mod metrics;
mod rejection;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::get;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Role};
pub use error::ErrorBody;
pub use management::openapi_document;

/// The file, in the data directory, that holds the bootstrap administrator's token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// How long a management request waits for a free slot before it gets `503`.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// Open what the roles need, bind every listener, and serve until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles().map_err(anyhow::Error::msg)?;
    config.check().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let content_root = config.content_root();
    std::fs::create_dir_all(&content_root)
        .with_context(|| format!("cannot create the content store {}", content_root.display()))?;

    let metrics = metrics::Metrics::new();
    let timeouts = listener::Timeouts::from(&config.http);
    let mut servers = Vec::new();
    let stop = CancellationToken::new();
    for role in roles {
        let connections = listener::Slots::new(config.http.max_connections);
        let (listen, router) = match role {
            Role::Management => {
                let url = config.management_database_url();
                let store = avail_store::open_management(&url).await.with_context(|| {
                    format!("cannot open the Management DB at {}", redact(&url))
                })?;
                bootstrap(&*store, &config.data_dir).await?;
                let state = management::AppState {
                    store: store.clone(),
                    content_root: content_root.clone(),
                    max_upload_bytes: config.management.max_upload_bytes,
                };
                // Settle what a killed import left behind before any role serves.
                management::recover(&state).await?;
                let requests = RequestSlots::new(
                    config.management.max_concurrent_requests,
                    config.management.max_concurrent_uploads,
                );
                let ready = Readiness {
                    check: ReadyCheck::Management(store),
                    connections: connections.clone(),
                    requests: Some(requests.clone()),
                };
                let router = management::router(state)
                    .layer(axum::middleware::from_fn_with_state(
                        requests,
                        limit_requests,
                    ))
                    .layer(axum::Extension(
                        auth::PasswordGuard::new(config.management.password_failures_per_minute)
                            .context("cannot start the password-check threads")?,
                    ));
                (
                    config.management.listen,
                    with_common(
                        router,
                        role,
                        ready,
                        &metrics,
                        config.management.request_timeout_secs,
                    ),
                )
            }
            Role::Content => {
                let ready = Readiness {
                    check: ReadyCheck::Content(content_root.clone()),
                    connections: connections.clone(),
                    requests: None,
                };
                let mut router = content::router(content_root.clone());
                if config.content.require_machine_credential {
                    let url = config.management_database_url();
                    let store = avail_store::open_management(&url).await.with_context(|| {
                        format!("cannot open the Management DB at {}", redact(&url))
                    })?;
                    router =
                        router.layer(axum::middleware::from_fn_with_state(store, require_machine));
                }
                (
                    config.content.listen,
                    with_common(router, role, ready, &metrics, 0),
                )
            }
            Role::Publishing | Role::Reporting => {
                anyhow::bail!("the {role} role is not part of this version of Avail yet")
            }
        };
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} for the {role} role"))?;
        std_listener.set_nonblocking(true)?;
        tracing::info!(%role, address = %std_listener.local_addr()?, max_connections = connections.max(), "listening");
        let (stop, connection_metrics) = (stop.clone(), metrics.connections(role));
        let serve = async move {
            // Registered with the reactor of the runtime that first polls this.
            let std_listener = TcpListener::from_std(std_listener)?;
            listener::serve(
                std_listener,
                router,
                role,
                timeouts,
                connections,
                connection_metrics,
                stop,
            )
            .await;
            Ok::<(), std::io::Error>(())
        };
        servers.push(if role == Role::Content {
            on_own_runtime(serve.boxed())?
        } else {
            tokio::spawn(serve)
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        stop.cancel();
    });
    for server in servers {
        server
            .await
            .context("a listener task failed")?
            .context("a listener failed")?;
    }
    Ok(())
}

/// The management role's request slots: one pool for package uploads, which
/// last as long as the client takes to send, and one for everything else.
#[derive(Clone)]
struct RequestSlots {
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

/// Run a role on a runtime of its own: the content role reads files on its
/// workers (see `content`), so a slow disk must not stall the other roles. The
/// listener and every connection are registered with that runtime's reactor,
/// because the future is first polled there.
fn on_own_runtime(
    serve: futures_util::future::BoxFuture<'static, std::io::Result<()>>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("avail-content")
        .build()
        .context("cannot start the content role's runtime")?;
    let task = runtime.spawn(serve);
    Ok(tokio::spawn(async move {
        let result = task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        runtime.shutdown_background();
        result
    }))
}

/// Hide the password of a database URL in messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
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
    match store.add_administrator(BOOTSTRAP_ADMIN, None).await {
        Ok(()) => {}
        // Another node bootstrapped the same database a moment ago.
        Err(avail_store::StoreError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    store
        .add_api_token(BOOTSTRAP_ADMIN, &auth::hash_secret(&token), "bootstrap")
        .await?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(path = %path.display(), "created the bootstrap administrator {BOOTSTRAP_ADMIN:?}; its API token is in this file");
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(format!("{secret}\n").as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What `/readyz` checks for a role.
#[derive(Clone)]
struct Readiness {
    check: ReadyCheck,
    connections: listener::Slots,
    requests: Option<RequestSlots>,
}

/// The role's own dependency.
#[derive(Clone)]
enum ReadyCheck {
    Management(Arc<dyn avail_store::ManagementStore>),
    Content(std::path::PathBuf),
}

async fn healthz() -> axum::Json<api::Health> {
    axum::Json(api::Health {
        status: "ok".into(),
    })
}

async fn readyz(State(ready): State<Readiness>) -> (StatusCode, axum::Json<api::Health>) {
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
    let problem = match (busy, ready.check) {
        (Some(busy), _) => Some(busy),
        (None, ReadyCheck::Management(store)) => store.change_sequence().await.err().map(|e| {
            tracing::warn!("not ready: {e}");
            "the Management DB is unreachable".to_owned()
        }),
        (None, ReadyCheck::Content(root)) => {
            (!root.is_dir()).then(|| "the content store is missing".to_owned())
        }
    };
    match problem {
        None => (
            StatusCode::OK,
            axum::Json(api::Health {
                status: "ok".into(),
            }),
        ),
        Some(p) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(api::Health { status: p }),
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

/// Health, readiness, metrics, JSON errors, request tracing and timeouts, the
/// same for every role.
fn with_common(
    router: Router,
    role: Role,
    ready: Readiness,
    metrics: &metrics::Metrics,
    timeout_secs: u64,
) -> Router {
    let router = router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(ready))
        .route("/metrics", get(metrics::render).with_state(metrics.clone()));
    let mut router = rejection::fallbacks(router);
    if timeout_secs > 0 {
        // Uploads stream for as long as they need; everything else has a deadline.
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                if is_upload(&req) {
                    return next.run(req).await;
                }
                match tokio::time::timeout(Duration::from_secs(timeout_secs), next.run(req)).await {
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
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(move |req: &axum::http::Request<_>| {
                // Clients choose paths and methods: keep what reaches the logs short.
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(|| bounded(req.uri().path(), 128), |p| p.as_str().into());
                let method = bounded(req.method().as_str(), 16);
                tracing::info_span!("request", role = role.name(), %method, %route, admin = tracing::field::Empty)
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
}

/// The content role's optional guard: only machines with a valid credential read packages.
async fn require_machine(
    State(store): State<Arc<dyn avail_store::ManagementStore>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| auth::hash_secret(t.trim()));
    let allowed = match token {
        Some(hash) => matches!(store.machine_by_credential(&hash).await, Ok(Some(_))),
        None => false,
    };
    if allowed {
        next.run(req).await
    } else {
        axum::response::IntoResponse::into_response(error::ApiError::Unauthorized(
            "this content server requires a machine credential (Authorization: Bearer …)".into(),
        ))
    }
}
