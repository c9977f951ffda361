//! `avail admin …`: the management API from the command line, with nouns and
//! verbs after App-V's AppvServer cmdlets. Every call goes through
//! `avail_model`'s [`ManagementClient`] with the API's own typed endpoints;
//! human output by default, `--json` for scripts: the server's JSON, and for
//! every command that creates something one shape ([`HELP`]: the created
//! thing's fields, `created`, and a secret under `credential` or `token`). A
//! refusal is returned as [`Refused`], which `main` prints once and turns into
//! the exit status (3 for a package the server found invalid). One module per
//! noun.
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
mod report;
mod server;
mod user;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use avail_model::api::EffectivePublishing;
use avail_model::client::{ClientError, ManagementClient};
use avail_model::endpoint::Endpoint;
use avail_model::rules::is_deceptive;
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;

/// What `avail admin --help` says after the options: where the server and the
/// token come from, and the shape of `--json` answers.
pub const HELP: &str = "\
Server: --server or AVAIL_SERVER, a URL (http://host:8080, https://host) or host:port, \
which means http://host:port.

Token: --token, else AVAIL_TOKEN, else the bootstrap token the server wrote to \
<data_dir>/admin-token: $AVAIL_DATA_DIR/admin-token, or ./avail-data/admin-token when \
AVAIL_DATA_DIR is unset.

--json: commands print the server's JSON answer. Commands that create something \
(user create, machine create, group create, connection-group create, server register, \
admin add, admin token) all print one object of the same shape: the created thing's \
own fields at the top level (\"name\", …), \"created\": true when this call created it \
or false when it existed already and the server took the call as a retry, and a secret \
shown only this once under \"credential\" (machine create, server register) or \
\"token\" (admin token).

Exit codes: 0 success; 1 the server or the work refused (its message is printed); \
2 a malformed command line or value; 3 the package is invalid, corrupt or hostile.";

#[derive(Args)]
pub struct AdminArgs {
    /// Management server: a URL, or host:port for http://host:port.
    #[arg(
        long,
        env = "AVAIL_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_server,
        global = true
    )]
    server: String,
    /// Administrator API token; without one, the bootstrap token in
    /// `$AVAIL_DATA_DIR/admin-token` (default ./avail-data/admin-token).
    #[arg(long, env = "AVAIL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of text (`avail admin --help` describes the shapes).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

/// `--server`: a URL, or `host:port` without a scheme, which means `http://`.
fn parse_server(s: &str) -> Result<String, String> {
    let s = s.trim();
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| {
        format!(
            "{s:?} is not a server address ({e}); give http://host:port, https://host or host:port"
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{s:?} is not a server address; give http://host:port, https://host or host:port"
        ));
    }
    Ok(url)
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
    /// Usage reports from the Reporting DB: launches, clients.
    #[command(subcommand)]
    Report(report::ReportCmd),
}

/// The client and how to print what it gets.
struct Admin {
    client: ManagementClient,
    json: bool,
    /// Where the token came from, said when the server refuses it.
    token_source: String,
}

/// The management server refused a call: its status, its error code and its
/// message (printed escaped, like everything a server says).
#[derive(Debug)]
pub struct Refused {
    status: reqwest::StatusCode,
    code: Option<String>,
    message: String,
    /// What to add for a person (where a refused token came from).
    hint: Option<String>,
}

impl Refused {
    /// Whether the server refused a package as invalid, corrupt or hostile.
    pub fn is_invalid_package(&self) -> bool {
        self.code.as_deref() == Some("invalid_package")
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", shown(&self.message), self.status)?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

impl Admin {
    /// Send `endpoint`; in `--json` mode, print the body the server sent.
    async fn send<E: Endpoint>(&self, endpoint: &E) -> Result<Option<E::Response>> {
        let reply = self
            .client
            .send(endpoint)
            .await
            .map_err(|e| self.failure(e))?;
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
    /// What the server would refuse from the package's directory and metadata
    /// alone (the same reader with the same bounds) is refused before a byte
    /// is sent; the server still verifies every block.
    async fn upload<E: Endpoint>(&self, endpoint: &E, file: &Path) -> Result<E::Response> {
        avail_format::Package::open(std::fs::File::open(file)?)?;
        let f = tokio::fs::File::open(file).await?;
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
        let reply = reply.map_err(|e| self.failure(e))?;
        self.echo(&reply.raw);
        reply
            .value
            .ok_or_else(|| anyhow!("empty response from the server"))
    }

    /// Send an endpoint that creates something, printing nothing: whether
    /// this call created it (`201`, not `200` for a retry) and the answer.
    async fn create<E: Endpoint>(&self, endpoint: &E) -> Result<(bool, Option<E::Response>)> {
        let reply = self
            .client
            .send(endpoint)
            .await
            .map_err(|e| self.failure(e))?;
        Ok((reply.status == reqwest::StatusCode::CREATED, reply.value))
    }

    /// In `--json` mode, print what a create command made, in the one shape of
    /// [`HELP`]: `fields` (an object) with `created` added.
    fn print_created(&self, mut fields: serde_json::Value, created: bool) {
        if self.json {
            fields["created"] = created.into();
            println!("{}", json_shown(&fields.to_string()));
        }
    }

    /// A failed call as the error `avail admin` prints.
    fn failure(&self, e: ClientError) -> anyhow::Error {
        match e {
            ClientError::Refused {
                status,
                code,
                message,
            } => {
                let hint = (status == reqwest::StatusCode::UNAUTHORIZED)
                    .then(|| format!("the token from {} was not accepted", self.token_source));
                Refused {
                    status,
                    code,
                    message,
                    hint,
                }
                .into()
            }
            other => other.into(),
        }
    }

    fn echo(&self, raw: &[u8]) {
        if self.json && !raw.is_empty() {
            println!("{}", json_shown(&String::from_utf8_lossy(raw)));
        }
    }
}

/// The administrator token and where it came from: `--token` or `AVAIL_TOKEN`,
/// else `<data_dir>/admin-token`. Without one, the error names every place
/// looked at and how to give a token.
pub(crate) fn find_token(given: Option<String>) -> Result<(String, String)> {
    if let Some(token) = given.filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_owned(), "--token or AVAIL_TOKEN".to_owned()));
    }
    let (dir, why) = match std::env::var_os("AVAIL_DATA_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => (PathBuf::from(dir), "from AVAIL_DATA_DIR"),
        None => (PathBuf::from("./avail-data"), "AVAIL_DATA_DIR is not set"),
    };
    let path = dir.join(avail_server::ADMIN_TOKEN_FILE);
    let looked_at = match std::path::absolute(&path) {
        Ok(abs) if abs != path => format!("{} (= {}, {why})", path.display(), abs.display()),
        _ => format!("{} ({why})", path.display()),
    };
    let problem = match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            return Ok((token.trim().to_owned(), path.display().to_string()));
        }
        Ok(_) => "the file is empty".to_owned(),
        Err(e) => e.to_string(),
    };
    bail!(
        "no administrator token. Looked at: --token (not given), AVAIL_TOKEN (not set), \
         {looked_at}: {problem}. Give a token with --token TOKEN or AVAIL_TOKEN=TOKEN, or set \
         AVAIL_DATA_DIR to the server's data directory (the server writes its bootstrap \
         token to <data_dir>/admin-token on first start)"
    )
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

/// What a user or machine receives (`user show`, `machine show`): its groups,
/// then one line per package version and per connection group.
fn print_effective(e: &EffectivePublishing) {
    let groups: Vec<Cow<'_, str>> = e.groups.iter().map(|g| shown(g)).collect();
    println!("groups: {}", groups.join(", "));
    for p in &e.packages {
        println!(
            "package {} {} {}",
            shown(&p.name),
            shown(&p.version),
            p.version_id
        );
    }
    for g in &e.connection_groups {
        println!(
            "connection-group {} priority {} {}",
            shown(&g.name),
            g.priority,
            g.id
        );
    }
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
    let (token, token_source) = find_token(args.token)?;
    let admin = Admin {
        client: ManagementClient::new(&args.server, Some(token))?,
        json: args.json,
        token_source,
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
            AdminCommand::Report(cmd) => report::run(&admin, cmd).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
