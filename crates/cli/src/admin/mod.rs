//! `avail admin …`: the management API from the command line, with nouns and
//! verbs after App-V's AppvServer cmdlets. Every call goes through
//! `avail_model`'s [`ManagementClient`] with the API's own typed endpoints;
//! human output by default, `--json` for scripts. One module per noun.
//!
//! Whatever a server says is printed with the characters that could make a
//! terminal show something else ([`is_deceptive`]: control characters, bidi
//! overrides and isolates, zero-width characters) escaped, the way `ls` escapes
//! file names: `\u{202e}` in text, `\u202e` in JSON (the same JSON value).

mod administrator;
mod connection_group;
mod group;
mod machine;
mod package;
mod server;
mod user;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use avail_model::client::{ClientError, ManagementClient};
use avail_model::endpoint::Endpoint;
use avail_model::rules::is_deceptive;
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;

#[derive(Args)]
pub struct AdminArgs {
    /// Management server URL.
    #[arg(
        long,
        env = "AVAIL_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Administrator API token; without one, the bootstrap token in
    /// `$AVAIL_DATA_DIR/admin-token` (default ./avail-data/admin-token) is used when readable.
    #[arg(long, env = "AVAIL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Packages: import, list, show, publish, grant, upgrade, remove.
    #[command(subcommand)]
    Package(package::PackageCmd),
    /// Connection groups: packages sharing one virtual environment.
    #[command(subcommand, name = "connection-group")]
    ConnectionGroup(connection_group::ConnectionGroupCmd),
    /// Directory groups (entitlements are granted to groups).
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Directory users.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Machines (each gets a credential for its client).
    #[command(subcommand)]
    Machine(machine::MachineCmd),
    /// Publishing servers.
    #[command(subcommand)]
    Server(server::ServerCmd),
    /// Administrators and their API tokens.
    #[command(subcommand)]
    Admin(administrator::AdministratorCmd),
}

/// The client and how to print what it gets.
struct Admin {
    client: ManagementClient,
    json: bool,
}

impl Admin {
    /// Send `endpoint`; in `--json` mode, print the body the server sent.
    async fn send<E: Endpoint>(&self, endpoint: &E) -> Result<Option<E::Response>> {
        let reply = self.client.send(endpoint).await.map_err(failure)?;
        self.echo(&reply.raw);
        Ok(reply.value)
    }

    /// Send `endpoint` and get the body it always answers with.
    async fn get<E: Endpoint>(&self, endpoint: &E) -> Result<E::Response> {
        self.send(endpoint)
            .await?
            .ok_or_else(|| anyhow!("empty response from the server"))
    }

    /// Send `endpoint` and say `done` (not in `--json` mode).
    async fn act<E: Endpoint>(&self, endpoint: &E, done: &str) -> Result<()> {
        self.send(endpoint).await?;
        if !self.json {
            println!("{}", shown(done));
        }
        Ok(())
    }

    /// Upload `file` as the body of `endpoint`, with a progress bar on a terminal.
    async fn upload<E: Endpoint>(&self, endpoint: &E, file: &Path) -> Result<E::Response> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let len = f.metadata().await?.len();
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("upload");
        let progress = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(f)
            .inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
        let reply = self
            .client
            .upload(endpoint, reqwest::Body::wrap_stream(stream), len)
            .await;
        bar.finish_and_clear();
        let reply = reply.map_err(failure)?;
        self.echo(&reply.raw);
        reply
            .value
            .ok_or_else(|| anyhow!("empty response from the server"))
    }

    fn echo(&self, raw: &[u8]) {
        if self.json && !raw.is_empty() {
            println!("{}", json_shown(&String::from_utf8_lossy(raw)));
        }
    }
}

/// A failed call as the error `avail admin` prints: the server's message
/// escaped like everything else it says.
fn failure(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused {
            status, message, ..
        } => anyhow!("{} ({status})", shown(&message)),
        other => other.into(),
    }
}

fn token_from_data_dir() -> Option<String> {
    let dir = std::env::var_os("AVAIL_DATA_DIR")
        .map_or_else(|| PathBuf::from("./avail-data"), PathBuf::from);
    std::fs::read_to_string(dir.join(avail_server::ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Text for a terminal: each deceptive character as `\u{…}`.
fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_deceptive) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_deceptive(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// JSON for a terminal: each deceptive character (they occur only inside
/// strings, bar the whitespace between tokens) as a `\uXXXX` escape, which
/// leaves the value the same.
fn json_shown(json: &str) -> Cow<'_, str> {
    let escape = |c: char| is_deceptive(c) && !matches!(c, '\t' | '\n' | '\r');
    if !json.chars().any(escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escape(c) {
            // Every deceptive character is in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn print_names(names: &[String]) {
    for n in names {
        println!("{}", shown(n));
    }
}

pub fn run(args: AdminArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = Admin {
        client: ManagementClient::new(&args.server, args.token.or_else(token_from_data_dir))?,
        json: args.json,
    };
    runtime.block_on(async {
        match args.command {
            AdminCommand::Package(cmd) => package::run(&admin, cmd).await,
            AdminCommand::ConnectionGroup(cmd) => connection_group::run(&admin, cmd).await,
            AdminCommand::Group(cmd) => group::run(&admin, cmd).await,
            AdminCommand::User(cmd) => user::run(&admin, cmd).await,
            AdminCommand::Machine(cmd) => machine::run(&admin, cmd).await,
            AdminCommand::Server(cmd) => server::run(&admin, cmd).await,
            AdminCommand::Admin(cmd) => administrator::run(&admin, cmd).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
