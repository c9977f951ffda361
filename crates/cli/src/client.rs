//! `avail client …`: the client daemon and the commands that talk to it, after
//! App-V's AppvClient cmdlets (`Add-AppvPublishingServer`,
//! `Sync-AppvPublishingServer`, `Get-AppvClientPackage`,
//! `Mount-AppvClientPackage`, `Set-AppvClientConfiguration`, …). Each command
//! sends one request over the daemon's Unix socket and prints the answer, as a
//! table or, with `--json`, as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use avail_client::daemon::{self, DaemonOptions};
use avail_client::protocol::{CallError, DEFAULT_SOCKET, Request, call};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::progress::Bar;

/// `avail client` and what comes after it.
#[derive(Args)]
pub struct ClientArgs {
    /// The client daemon's socket.
    #[arg(long, global = true, env = "AVAIL_CLIENT_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

/// Exit statuses of `avail client` commands, for `--help`.
pub const HELP: &str = "Exit codes: 0 success; 1 an error; 2 a wrong command line or value; \
4 no such server, package or setting; 69 a server, mirror or mount could not be reached \
(for sync: some server did not answer or some package could not be added); \
77 only root may do that.";

#[derive(Subcommand)]
enum ClientCommand {
    /// Run the client daemon (as root; see deploy/avail-client.service).
    Daemon(DaemonArgs),
    /// The daemon's state: servers, packages, cache use, the last refresh.
    Status,
    /// Publishing servers (Add-/Get-/Remove-AppvPublishingServer).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Publishing refresh now, for the machine and for you (root: for every
    /// user the daemon knows, or --user).
    Sync {
        /// Refresh this user's publishing (root only, for someone else).
        #[arg(long)]
        user: Option<String>,
    },
    /// Package versions (Get-/Add-/Mount-/Remove-AppvClientPackage).
    #[command(subcommand)]
    Package(PackageCommand),
    /// Settings (Get-/Set-AppvClientConfiguration).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Usage reports: send the queued ones now (Send-AppvClientReport), or
    /// show the queue.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Reset your own changes to an application's or package's files (its
    /// copy-on-write layers, and those of its connection groups), as
    /// Repair-AppvClientPackage does.
    Repair {
        /// Application id, package name, PackageId or VersionId.
        package: String,
    },
}

#[derive(Args)]
struct DaemonArgs {
    /// The state directory: settings, servers, publications, the block cache.
    #[arg(
        long,
        env = "AVAIL_CLIENT_STATE_DIR",
        default_value = "/var/lib/avail-client"
    )]
    state_dir: PathBuf,
    /// Where package versions are mounted (overrides PackageInstallationRoot).
    #[arg(long, env = "AVAIL_CLIENT_MOUNT_ROOT")]
    mount_root: Option<PathBuf>,
    /// The XDG data directory for the desktop entries, icons and MIME types of
    /// packages published to the machine (users' own go under their
    /// ~/.local/share when they sync).
    #[arg(
        long,
        env = "AVAIL_CLIENT_DESKTOP_DIR",
        default_value = "/usr/local/share"
    )]
    desktop_dir: PathBuf,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Add a publishing server: its URLs are the nodes (or load balancers)
    /// of one server, tried in turn.
    Add {
        /// The server's URLs, e.g. http://publishing.example:8081.
        #[arg(required = true)]
        urls: Vec<String>,
        /// The machine credential (`avail admin machine add` prints it).
        #[arg(long, env = "AVAIL_CLIENT_CREDENTIAL", hide_env_values = true)]
        credential: String,
        /// A name for the server (default: the first URL's host and port).
        #[arg(long)]
        name: Option<String>,
    },
    /// The publishing servers and when each last answered.
    List,
    /// Remove a publishing server; what it published is removed.
    Remove {
        /// The server's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// The package versions you may see, with mount path and cached percentage.
    List,
    /// Add a package version from its file's URL, outside any publishing server.
    Add {
        /// http(s)://…/packages/<PackageId>/<VersionId>.appv or file:///…
        url: String,
        /// Another URL of the same file (repeatable).
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
    },
    /// Load every block of a package version into the cache.
    Mount {
        /// Name, PackageId or VersionId.
        package: String,
    },
    /// Unmount a package version (a publishing refresh adds it again while
    /// it is published).
    Remove {
        /// Name, PackageId or VersionId.
        package: String,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Send every complete launch record now to ReportingServerURL.
    Send,
    /// What is queued: records, running launches, records dropped at the cache limit.
    Status,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Show one setting or all of them.
    Get {
        /// SharedContentStoreMode, AutoLoad, PackageInstallationRoot,
        /// PackageSourceRoot, CacheQuota, SharedContentStoreMemory,
        /// RefreshInterval or ReadTimeout.
        name: Option<String>,
    },
    /// Change a setting.
    Set {
        /// The setting's name.
        name: String,
        /// Its new value.
        value: String,
    },
}

impl ClientArgs {
    /// Whether this runs the daemon (which logs at info by default).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, ClientCommand::Daemon(_))
    }
}

/// Runs one `avail client` command.
pub fn run(args: ClientArgs) -> Result<ExitCode> {
    let request = match args.command {
        ClientCommand::Daemon(d) => return run_daemon(&args.socket, d),
        ClientCommand::Repair { package } => return repair(&args.socket, package, args.json),
        ClientCommand::Status => Request::Status,
        ClientCommand::Server(ServerCommand::Add {
            urls,
            credential,
            name,
        }) => Request::ServerAdd {
            name,
            urls,
            credential,
        },
        ClientCommand::Server(ServerCommand::List) => Request::ServerList,
        ClientCommand::Server(ServerCommand::Remove { name }) => Request::ServerRemove { name },
        ClientCommand::Sync { user } => Request::Sync { user },
        ClientCommand::Package(PackageCommand::List) => Request::PackageList,
        ClientCommand::Package(PackageCommand::Add { url, mirrors }) => {
            Request::PackageAdd { url, mirrors }
        }
        ClientCommand::Package(PackageCommand::Mount { package }) => {
            Request::PackageMount { package }
        }
        ClientCommand::Package(PackageCommand::Remove { package }) => {
            Request::PackageRemove { package }
        }
        ClientCommand::Report(ReportCommand::Send) => Request::ReportSend,
        ClientCommand::Report(ReportCommand::Status) => Request::ReportStatus,
        ClientCommand::Config(ConfigCommand::Get { name }) => Request::ConfigGet { name },
        ClientCommand::Config(ConfigCommand::Set { name, value }) => {
            Request::ConfigSet { name, value }
        }
    };
    let bar = Bar::new("");
    let answer = call(&args.socket, &request, |p| {
        bar.set(p.done, p.total, p.bytes, &p.message)
    });
    bar.finish();
    let value = match answer {
        Ok(v) => v,
        Err(CallError::Failed(f)) => {
            eprintln!("error: {}", f.message);
            return Ok(ExitCode::from(f.kind.exit_status()));
        }
        Err(e @ CallError::Connect { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(69));
        }
        Err(e) => return Err(e.into()),
    };
    let desktop = match request {
        Request::Sync { .. } if !nix::unistd::geteuid().is_root() => {
            Some(user_desktop(&args.socket))
        }
        _ => None,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_human(&request, &value);
    }
    if let Some(Err(e)) = desktop {
        eprintln!("warning: your desktop entries were not updated: {e:#}");
    }
    Ok(match request {
        Request::Sync { .. } if !sync_succeeded(&value) => ExitCode::from(69),
        _ => ExitCode::SUCCESS,
    })
}

/// Makes the caller's own desktop entries (under `$XDG_DATA_HOME`, or
/// `~/.local/share`) match the packages published to them, as App-V
/// publishes a user's shortcuts at their publishing refresh.
fn user_desktop(socket: &std::path::Path) -> Result<avail_client::desktop::Summary> {
    let answer = call(socket, &Request::Desktop, |_| {})?;
    let data_home = crate::run::data_home()?;
    let packages: Vec<avail_client::desktop::PackageDesktop> = answer["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(avail_client::desktop::PackageDesktop {
                package_id: p["package_id"].as_str()?.parse().ok()?,
                version_id: p["version_id"].as_str()?.parse().ok()?,
                name: p["name"].as_str()?.to_owned(),
                mount: PathBuf::from(p["mount"].as_str()?),
                applications: p["applications"]
                    .as_array()?
                    .iter()
                    .filter_map(|a| {
                        Some(avail_format::manifest::Application {
                            id: a["id"].as_str()?.to_owned(),
                            target: a["target"].as_str().map(str::to_owned),
                            arguments: a["arguments"].as_str().map(str::to_owned),
                        })
                    })
                    .collect(),
            })
        })
        .collect();
    let bin = answer["avail"].as_str().unwrap_or("avail").to_owned();
    Ok(avail_client::desktop::sync(&data_home, &packages, &bin)?)
}

/// Removes a layer, whose overlay work directory the kernel leaves with
/// mode 000: directories are opened up to their owner first.
fn remove_layer(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        if meta.permissions().mode() & 0o700 != 0o700 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut stack = vec![path.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    let p = entry.path();
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
                    stack.push(p);
                }
            }
        }
    }
    std::fs::remove_dir_all(path)
}

/// Deletes the caller's copy-on-write layers of `package`.
fn repair(socket: &std::path::Path, package: String, json: bool) -> Result<ExitCode> {
    let answer = match crate::run::ask(socket, &Request::Layers { package })? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let dir = crate::run::layers_dir()?;
    let mut removed = Vec::new();
    for layer in answer["layers"].as_array().into_iter().flatten() {
        let Some(id) = layer
            .as_str()
            .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        else {
            continue;
        };
        let path = dir.join(id);
        match remove_layer(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot remove {}: {e}", path.display()),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "package": answer["package"], "removed": removed })
        );
    } else if removed.is_empty() {
        println!("{}: nothing to reset", text(&answer["package"]));
    } else {
        for path in &removed {
            println!("removed {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(socket: &std::path::Path, args: DaemonArgs) -> Result<ExitCode> {
    let options = DaemonOptions {
        socket: socket.to_owned(),
        state_dir: args.state_dir,
        mount_root: args.mount_root,
        desktop_dir: args.desktop_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(options, crate::server::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Whether every server answered and every wanted package was added.
fn sync_succeeded(value: &Value) -> bool {
    let servers_ok = value["servers"]
        .as_array()
        .is_some_and(|s| s.iter().all(|r| r["result"] != "failed"));
    let packages_ok = value["packages"]["failed"]
        .as_array()
        .is_none_or(Vec::is_empty);
    servers_ok && packages_ok
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

fn print_human(request: &Request, value: &Value) {
    match request {
        Request::PackageList => {
            let rows = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let cached = p["cached_percent"]
                        .as_f64()
                        .map_or("-".into(), |c| format!("{c:.1}%"));
                    let mount = match (&p["mount"], &p["error"]) {
                        (Value::String(m), _) => m.clone(),
                        (_, Value::String(e)) => format!("not added: {e}"),
                        _ => "-".into(),
                    };
                    vec![
                        text(&p["name"]),
                        text(&p["version"]),
                        text(&p["version_id"]),
                        cached,
                        mount,
                    ]
                })
                .collect();
            print_table(&["NAME", "VERSION", "VERSION ID", "CACHED", "MOUNT"], rows);
        }
        Request::ServerList => {
            let rows = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let urls = s["urls"]
                        .as_array()
                        .map(|u| u.iter().map(text).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    vec![text(&s["name"]), text(&s["last_refresh_unix"]), urls]
                })
                .collect();
            print_table(&["NAME", "LAST REFRESH (UNIX)", "URLS"], rows);
        }
        Request::Sync { .. } => {
            for r in value["servers"].as_array().into_iter().flatten() {
                let detail = match &r["error"] {
                    Value::String(e) => e.clone(),
                    _ => text(&r["url"]),
                };
                println!(
                    "{} ({}): {} — {detail}",
                    text(&r["server"]),
                    text(&r["audience"]),
                    text(&r["result"])
                );
            }
            let p = &value["packages"];
            for (what, key) in [("added", "added"), ("removed", "removed")] {
                for name in p[key].as_array().into_iter().flatten() {
                    println!("{what}: {}", text(name));
                }
            }
            for f in p["failed"].as_array().into_iter().flatten() {
                println!("not added: {} — {}", text(&f["package"]), text(&f["error"]));
            }
        }
        Request::ConfigGet { .. } => {
            for (k, v) in value.as_object().into_iter().flatten() {
                println!("{k} = {}", text(v));
            }
        }
        Request::ConfigSet { .. } => println!(
            "{} = {} (takes effect {})",
            text(&value["name"]),
            text(&value["value"]),
            text(&value["takes_effect"])
        ),
        _ => match value {
            Value::Object(map) => {
                for (k, v) in map {
                    println!("{k}: {}", text(v));
                }
            }
            other => println!("{other}"),
        },
    }
}
