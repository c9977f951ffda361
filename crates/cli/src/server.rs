//! `avail server`: run the chosen roles from a TOML config with `AVAIL_*`
//! overrides, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use avail_server::Config;
use clap::Args;

#[derive(Args)]
pub struct ServerArgs {
    /// TOML configuration file (see deploy/avail.toml); AVAIL_* variables override it.
    #[arg(long, env = "AVAIL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite files, the content store, the bootstrap token [default: ./avail-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Roles to run, comma-separated: management (8080), publishing (8081), reporting (8082),
    /// content (8083) [default: all four]. A publishing role without the management role
    /// follows `[publishing] management_urls`.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
}

pub fn run(args: ServerArgs) -> Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if !args.roles.is_empty() {
        config.roles = args.roles;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(avail_server::run(config, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
