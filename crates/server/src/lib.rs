//! Avail's server roles as axum routers, and the process that runs them.
//!
//! Each role (management: the admin API; reporting: MS-VAPR SetReport into the
//! Reporting DB, anonymous as in App-V; publishing: MS-VAPR GetPackage from the
//! catalog in memory; content: the package store over HTTP with byte ranges) has its
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
//!
//! The roles are built and wrapped by one framework (`role`): each role gives
//! its listener, router, readiness check and runtime, and every role gets the
//! same plumbing. `avail server` may listen on port 0; once every listener is
//! bound, the addresses it got are in `<data_dir>/listen.json` ([`LISTEN_FILE`]).
//! Any role can serve HTTPS (`tls`).

mod auth;
mod catalog_sync;
pub mod config;
pub mod content;
mod error;
mod listener;
mod management;
mod metrics;
mod publishing;
mod rejection;
mod reporting;
mod role;
mod service;
mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

use anyhow::Context;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Role};
pub use error::ErrorBody;
pub use management::openapi_document;

/// The file, in the data directory, that holds the bootstrap administrator's token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The file, in the data directory, that names the address each role listens
/// on, as a JSON object (`{"management": "127.0.0.1:8080", …}`), written once
/// every listener is bound and removed at start.
pub const LISTEN_FILE: &str = "listen.json";

/// Open what the roles need, bind every listener, and serve until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles = config.roles().map_err(anyhow::Error::msg)?;
    config.check().map_err(anyhow::Error::msg)?;
    let timeouts = listener::Timeouts::from(&config.http);
    let max_connections = config.http.max_connections;
    let shared = role::Shared::new(config)?;
    let listen_file = shared.config.data_dir.join(LISTEN_FILE);
    match std::fs::remove_file(&listen_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", listen_file.display()));
        }
        _ => {}
    }

    let mut bound = Vec::new();
    let mut addresses = BTreeMap::new();
    for role in roles {
        let spec = role::build(role, &shared).await?;
        let tls = match &spec.tls {
            Some(files) => Some(
                tls::acceptor(files)
                    .with_context(|| format!("cannot set up HTTPS for the {role} role"))?,
            ),
            None => None,
        };
        let connections = listener::Slots::new(max_connections);
        let router = role::plumbing(spec.app, role, connections.clone(), &shared.metrics);
        let std_listener = std::net::TcpListener::bind(spec.listen)
            .with_context(|| format!("cannot listen on {} for the {role} role", spec.listen))?;
        std_listener.set_nonblocking(true)?;
        let address = std_listener.local_addr()?;
        tracing::info!(%role, %address, https = tls.is_some(), max_connections, "listening");
        addresses.insert(role.name(), address.to_string());
        bound.push((role, std_listener, router, connections, tls, spec.runtime));
    }
    let listening = serde_json::to_string_pretty(&addresses)? + "\n";
    write_atomically(&listen_file, &listening, 0o644)
        .with_context(|| format!("cannot write {}", listen_file.display()))?;

    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for (role, std_listener, router, connections, tls, runtime) in bound {
        let (stop, connection_metrics) = (stop.clone(), shared.metrics.connections(role));
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
                tls,
                stop,
            )
            .await;
            Ok::<(), std::io::Error>(())
        };
        servers.push(match runtime {
            role::Runtime::Shared => tokio::spawn(serve),
            role::Runtime::Own(name) => on_own_runtime(name, serve.boxed())?,
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

/// Run a role on a runtime of its own, with threads named `name`. The
/// listener and every connection are registered with that runtime's reactor,
/// because the future is first polled there.
fn on_own_runtime(
    name: &str,
    serve: futures_util::future::BoxFuture<'static, std::io::Result<()>>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .with_context(|| format!("cannot start the runtime {name}"))?;
    let task = runtime.spawn(serve);
    Ok(tokio::spawn(async move {
        let result = task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        runtime.shutdown_background();
        result
    }))
}

/// Replace `path` with `text` (mode `mode`) in one step: readers see the old
/// file or the whole new one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
