//! Avail's server roles as axum routers, and the process that runs them.
//!
//! Each role (management: the admin API; content: the package store over HTTP
//! with byte ranges; publishing and reporting come with their own work) has its
//! own listener, because MS-VAPR puts both the publishing and the reporting
//! resource at `/`. Every role answers `/healthz` (alive), `/readyz` (able to
//! serve) and `/metrics` (Prometheus). Roles keep no state of their own beyond
//! the databases and the content store, so any number of nodes can stand behind
//! a load balancer. [`run`] starts the chosen roles and stops them all on one
//! shutdown signal.

pub mod api;
mod auth;
pub mod config;
pub mod content;
mod error;
mod management;
mod metrics;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;

pub use config::{Config, Role};
pub use error::ErrorBody;
pub use management::openapi_document;

/// The file, in the data directory, that holds the bootstrap administrator's token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// Open what the roles need, bind every listener, and serve until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles().map_err(anyhow::Error::msg)?;
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
    let mut servers = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for role in roles {
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
                let ready = Readiness::Management(store);
                let router = management::router(state).layer(
                    tower::limit::GlobalConcurrencyLimitLayer::new(
                        config.management.max_concurrent_requests,
                    ),
                );
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
                let ready = Readiness::Content(content_root.clone());
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
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} for the {role} role"))?;
        listener.set_nonblocking(true)?;
        tracing::info!(%role, address = %listener.local_addr()?, "listening");
        let mut stop = stop_rx.clone();
        let serve = async move {
            axum::serve(TcpListener::from_std(listener)?, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
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
        let _ = stop_tx.send(true);
    });
    for server in servers {
        server
            .await
            .context("a listener task failed")?
            .context("a listener failed")?;
    }
    Ok(())
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
enum Readiness {
    Management(Arc<dyn avail_store::ManagementStore>),
    Content(std::path::PathBuf),
}

async fn healthz() -> axum::Json<api::Health> {
    axum::Json(api::Health {
        status: "ok".into(),
    })
}

async fn readyz(State(ready): State<Readiness>) -> (StatusCode, axum::Json<api::Health>) {
    let problem = match ready {
        Readiness::Management(store) => store.change_sequence().await.err().map(|e| {
            tracing::warn!("not ready: {e}");
            "the Management DB is unreachable".to_owned()
        }),
        Readiness::Content(root) => {
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

/// Health, readiness, metrics, request tracing and timeouts, the same for every role.
fn with_common(
    router: Router,
    role: Role,
    ready: Readiness,
    metrics: &metrics::Metrics,
    timeout_secs: u64,
) -> Router {
    let mut router = router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(ready))
        .route("/metrics", get(metrics::render).with_state(metrics.clone()));
    if timeout_secs > 0 {
        // Uploads stream for as long as they need; everything else has a deadline.
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let upload = req.method() == axum::http::Method::POST
                    && (req.uri().path() == "/api/v1/packages"
                        || req.uri().path().ends_with("/upgrade"));
                if upload {
                    return next.run(req).await;
                }
                match tokio::time::timeout(Duration::from_secs(timeout_secs), next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => axum::response::IntoResponse::into_response((
                        StatusCode::GATEWAY_TIMEOUT,
                        axum::Json(ErrorBody {
                            error: "timeout".into(),
                            message: "the request took too long".into(),
                        }),
                    )),
                }
            },
        ));
    }
    router
        .layer(axum::middleware::from_fn_with_state((metrics.clone(), role), metrics::track))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(move |req: &axum::http::Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
                tracing::info_span!("request", role = role.name(), method = %req.method(), route, admin = tracing::field::Empty)
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
        .get(axum::http::header::AUTHORIZATION)
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
