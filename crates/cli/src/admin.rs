//! `avail admin …`: the management API from the command line, with nouns and
//! verbs after App-V's AppvServer cmdlets. It sends the server crate's own
//! request and response types; human output by default, `--json` for scripts.
//!
//! Whatever a server says is printed with the characters that could make a
//! terminal show something else ([`is_deceptive`]: control characters, bidi
//! overrides and isolates, zero-width characters) escaped, the way `ls` escapes
//! file names: `\u{202e}` in text, `\u202e` in JSON (the same JSON value).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use avail_server::api::*;
use clap::{Args, Subcommand};
use futures_util::TryStreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    Package(PackageCmd),
    /// Connection groups: packages sharing one virtual environment.
    #[command(subcommand, name = "connection-group")]
    ConnectionGroup(GroupCmd),
    /// Directory groups (entitlements are granted to groups).
    #[command(subcommand)]
    Group(DirGroupCmd),
    /// Directory users.
    #[command(subcommand)]
    User(UserCmd),
    /// Machines (each gets a credential for its client).
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Publishing servers.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Administrators and their API tokens.
    #[command(subcommand)]
    Admin(AdminCmd),
}

/// PKG is a package name, a PackageId or a VersionId.
#[derive(Subcommand)]
enum PackageCmd {
    /// Import an .appv file (uploaded), or one already in the content store (--from-store).
    Import {
        /// The package file to upload.
        #[arg(required_unless_present = "from_store")]
        file: Option<PathBuf>,
        /// A path relative to the content store's root instead of an upload.
        #[arg(long, conflicts_with = "file")]
        from_store: Option<String>,
    },
    /// List package versions.
    List {
        /// Names containing this.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a version with its entitlements and configuration.
    Show { pkg: String },
    /// Publish a version to its entitled groups.
    Publish { pkg: String },
    /// Unpublish a version.
    Unpublish { pkg: String },
    /// Remove a version and its file.
    Remove { pkg: String },
    /// Entitle a group.
    Grant {
        pkg: String,
        group: String,
        /// A UserConfiguration XML file for this group.
        #[arg(long)]
        user_config: Option<PathBuf>,
    },
    /// Remove a group's entitlement.
    Revoke { pkg: String, group: String },
    /// Import a new version of a package.
    Upgrade {
        pkg: String,
        file: PathBuf,
        /// Transfer entitlements and deployment configuration from the current version.
        #[arg(long)]
        transfer: bool,
    },
    /// Set (from a file) or clear the deployment configuration.
    Config {
        pkg: String,
        /// DeploymentConfiguration XML file; without it, the configuration is cleared.
        file: Option<PathBuf>,
    },
}

/// CG is a connection group's name or id.
#[derive(Subcommand)]
enum GroupCmd {
    /// Create an empty connection group.
    Create {
        name: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
    },
    /// List connection groups.
    List,
    /// Show one.
    Show { cg: String },
    /// Rename.
    Rename { cg: String, name: String },
    /// Set the priority (lower wins).
    Priority { cg: String, priority: i32 },
    /// Add a package, or change its version/optional flag/position.
    Add {
        cg: String,
        pkg: String,
        /// Use this VersionId (default: the package's newest version).
        #[arg(long)]
        version: Option<uuid::Uuid>,
        /// Use whatever version the client has.
        #[arg(long, conflicts_with = "version")]
        any_version: bool,
        /// The group works without this package.
        #[arg(long)]
        optional: bool,
        /// Position in the order (0 = highest precedence).
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove a package.
    Remove { cg: String, pkg: String },
    /// Entitle a group.
    Grant { cg: String, group: String },
    /// Remove a group's entitlement.
    Revoke { cg: String, group: String },
    /// Publish.
    Publish { cg: String },
    /// Unpublish.
    Unpublish { cg: String },
    /// Delete.
    Delete { cg: String },
}

#[derive(Subcommand)]
enum DirGroupCmd {
    /// Create a group.
    Create { name: String },
    /// Delete a group.
    Delete { name: String },
    /// List groups.
    List,
    /// Show a group's members.
    Show { name: String },
    /// Put a user, machine or group in a group.
    Add {
        group: String,
        kind: MemberKind,
        name: String,
    },
    /// Take a user, machine or group out of a group.
    Remove {
        group: String,
        kind: MemberKind,
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MemberKind {
    User,
    Machine,
    Group,
}

impl MemberKind {
    fn path(self) -> &'static str {
        match self {
            MemberKind::User => "users",
            MemberKind::Machine => "machines",
            MemberKind::Group => "groups",
        }
    }
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Create {
        name: String,
        /// Groups to put the user in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Remove a user.
    Delete { name: String },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum MachineCmd {
    /// Add a machine; prints its credential once.
    Create {
        name: String,
        /// Groups to put the machine in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Remove a machine.
    Delete { name: String },
    /// List machines.
    List,
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Register a publishing server; prints its credential once.
    Register { name: String },
    /// Unregister a publishing server.
    Unregister { name: String },
    /// List publishing servers with their last sync.
    List,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Add an administrator; with --password-stdin, the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an administrator.
    Remove { name: String },
    /// List administrators.
    List,
    /// Create an API token for an administrator; prints it once.
    Token {
        name: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    json: bool,
}

fn seg(s: &str) -> String {
    // Path segments are names people type: encode what would change the path.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Option<T>)> {
        let response = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the management server at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await.context("the response was cut off")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<avail_server::ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{} ({status})", shown(&message));
        }
        if self.json && !bytes.is_empty() {
            println!("{}", json_shown(&String::from_utf8_lossy(&bytes)));
        }
        if bytes.is_empty() {
            return Ok((status, None));
        }
        Ok((
            status,
            Some(serde_json::from_slice(&bytes).context("unexpected response from the server")?),
        ))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        Ok(self.send(rb).await?.1)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<T>(Method::GET, path, None::<&()>)
            .await?
            .ok_or_else(|| anyhow!("empty response from the server"))
    }

    async fn act(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        done: &str,
    ) -> Result<()> {
        self.call::<serde_json::Value>(method, path, body).await?;
        if !self.json {
            println!("{}", shown(done));
        }
        Ok(())
    }

    /// Upload a file as the request body, with a progress bar on a terminal.
    async fn upload<T: DeserializeOwned>(&self, path_and_query: &str, file: &Path) -> Result<T> {
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
        let rb = self
            .request(Method::POST, path_and_query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        let result = self.send::<T>(rb).await;
        bar.finish_and_clear();
        result?
            .1
            .ok_or_else(|| anyhow!("empty response from the server"))
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

fn print_version(v: &PackageVersion) {
    let p = &v.package;
    println!(
        "{}  {} {}  {}  PackageId {}  VersionId {}",
        if v.published {
            "published  "
        } else {
            "unpublished"
        },
        shown(&p.name),
        shown(&p.version),
        shown(&p.content_path),
        p.package_id,
        p.version_id
    );
}

fn print_group(g: &ConnectionGroup) {
    println!(
        "{} (priority {}, {}) id {} version {}",
        shown(&g.name),
        g.priority,
        if g.published {
            "published"
        } else {
            "unpublished"
        },
        g.id,
        g.version_id
    );
    for (i, m) in g.members.iter().enumerate() {
        let version = m
            .version_id
            .map_or_else(|| "any version".to_owned(), |v| v.to_string());
        println!(
            "  {i}. package {} ({version}){}",
            m.package_id,
            if m.optional { ", optional" } else { "" }
        );
    }
    if !g.entitled_groups.is_empty() {
        println!("  entitled: {}", shown(&g.entitled_groups.join(", ")));
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
    let client = Client {
        http: reqwest::Client::builder().build()?,
        base: args.server.trim_end_matches('/').to_owned(),
        token: args.token.or_else(token_from_data_dir),
        json: args.json,
    };
    runtime.block_on(dispatch(&client, args.command))?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(c: &Client, command: AdminCommand) -> Result<()> {
    let none = None::<&()>;
    match command {
        AdminCommand::Package(cmd) => match cmd {
            PackageCmd::Import { file, from_store } => {
                let r: ImportResponse = match (file, from_store) {
                    (Some(file), _) => c.upload("/api/v1/packages", &file).await?,
                    (None, Some(path)) => c
                        .call(
                            Method::POST,
                            "/api/v1/packages/import",
                            Some(&ImportFromStoreRequest { path }),
                        )
                        .await?
                        .ok_or_else(|| anyhow!("empty response"))?,
                    (None, None) => bail!("give a FILE or --from-store PATH"),
                };
                if !c.json {
                    println!(
                        "{}",
                        if r.created {
                            "imported:"
                        } else {
                            "already imported:"
                        }
                    );
                    print_version(&r.version);
                }
            }
            PackageCmd::List { name } => {
                let path = match name {
                    Some(n) => format!("/api/v1/packages?name={}", seg(&n)),
                    None => "/api/v1/packages".into(),
                };
                let list: Vec<PackageVersion> = c.get(&path).await?;
                if !c.json {
                    list.iter().for_each(print_version);
                }
            }
            PackageCmd::Show { pkg } => {
                let d: PackageDetails = c.get(&format!("/api/v1/packages/{}", seg(&pkg))).await?;
                if !c.json {
                    print_version(&d.version);
                    for a in &d.version.package.applications {
                        println!(
                            "  application {}: {} {}",
                            shown(&a.id),
                            shown(a.target.as_deref().unwrap_or("-")),
                            shown(a.arguments.as_deref().unwrap_or(""))
                        );
                    }
                    for e in &d.entitlements {
                        println!(
                            "  entitled: {}{}",
                            shown(&e.group),
                            if e.user_config.is_some() {
                                " (with user configuration)"
                            } else {
                                ""
                            }
                        );
                    }
                    if d.deployment_config.is_some() {
                        println!("  has a deployment configuration");
                    }
                }
            }
            PackageCmd::Publish { pkg } => {
                c.act(
                    Method::POST,
                    &format!("/api/v1/packages/{}/publish", seg(&pkg)),
                    none,
                    "published",
                )
                .await?
            }
            PackageCmd::Unpublish { pkg } => {
                c.act(
                    Method::POST,
                    &format!("/api/v1/packages/{}/unpublish", seg(&pkg)),
                    none,
                    "unpublished",
                )
                .await?
            }
            PackageCmd::Remove { pkg } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/packages/{}", seg(&pkg)),
                    none,
                    "removed",
                )
                .await?
            }
            PackageCmd::Grant {
                pkg,
                group,
                user_config,
            } => {
                let user_config = user_config
                    .map(|f| {
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))
                    })
                    .transpose()?;
                let path = format!(
                    "/api/v1/packages/{}/entitlements/{}",
                    seg(&pkg),
                    seg(&group)
                );
                c.act(
                    Method::PUT,
                    &path,
                    Some(&GrantRequest { user_config }),
                    &format!("granted to {group}"),
                )
                .await?
            }
            PackageCmd::Revoke { pkg, group } => {
                let path = format!(
                    "/api/v1/packages/{}/entitlements/{}",
                    seg(&pkg),
                    seg(&group)
                );
                c.act(
                    Method::DELETE,
                    &path,
                    none,
                    &format!("revoked from {group}"),
                )
                .await?
            }
            PackageCmd::Upgrade {
                pkg,
                file,
                transfer,
            } => {
                let r: UpgradeResponse = c
                    .upload(
                        &format!("/api/v1/packages/{}/upgrade?transfer={transfer}", seg(&pkg)),
                        &file,
                    )
                    .await?;
                if !c.json {
                    println!(
                        "upgraded from {}{}:",
                        r.previous,
                        if r.transferred {
                            ", entitlements and configuration transferred"
                        } else {
                            ""
                        }
                    );
                    print_version(&r.version);
                }
            }
            PackageCmd::Config { pkg, file } => {
                let path = format!("/api/v1/packages/{}/deployment-config", seg(&pkg));
                match file {
                    Some(f) => {
                        let config = std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))?;
                        c.act(
                            Method::PUT,
                            &path,
                            Some(&DeploymentConfigRequest { config }),
                            "deployment configuration set",
                        )
                        .await?
                    }
                    None => {
                        c.act(
                            Method::DELETE,
                            &path,
                            none,
                            "deployment configuration cleared",
                        )
                        .await?
                    }
                }
            }
        },
        AdminCommand::ConnectionGroup(cmd) => {
            let base = |cg: &str| format!("/api/v1/connection-groups/{}", seg(cg));
            let show = |g: Option<ConnectionGroup>| {
                if let (false, Some(g)) = (c.json, g) {
                    print_group(&g);
                }
            };
            match cmd {
                GroupCmd::Create { name, priority } => show(
                    c.call(
                        Method::POST,
                        "/api/v1/connection-groups",
                        Some(&CreateConnectionGroupRequest { name, priority }),
                    )
                    .await?,
                ),
                GroupCmd::List => {
                    let list: Vec<ConnectionGroup> = c.get("/api/v1/connection-groups").await?;
                    if !c.json {
                        list.iter().for_each(print_group);
                    }
                }
                GroupCmd::Show { cg } => show(Some(c.get(&base(&cg)).await?)),
                GroupCmd::Rename { cg, name } => show(
                    c.call(
                        Method::PATCH,
                        &base(&cg),
                        Some(&UpdateConnectionGroupRequest {
                            name: Some(name),
                            priority: None,
                        }),
                    )
                    .await?,
                ),
                GroupCmd::Priority { cg, priority } => show(
                    c.call(
                        Method::PATCH,
                        &base(&cg),
                        Some(&UpdateConnectionGroupRequest {
                            name: None,
                            priority: Some(priority),
                        }),
                    )
                    .await?,
                ),
                GroupCmd::Add {
                    cg,
                    pkg,
                    version,
                    any_version,
                    optional,
                    position,
                } => {
                    let req = SetMemberRequest {
                        version_id: version,
                        any_version,
                        optional,
                        position,
                    };
                    show(
                        c.call(
                            Method::PUT,
                            &format!("{}/members/{}", base(&cg), seg(&pkg)),
                            Some(&req),
                        )
                        .await?,
                    )
                }
                GroupCmd::Remove { cg, pkg } => show(
                    c.call(
                        Method::DELETE,
                        &format!("{}/members/{}", base(&cg), seg(&pkg)),
                        none,
                    )
                    .await?,
                ),
                GroupCmd::Grant { cg, group } => show(
                    c.call(
                        Method::PUT,
                        &format!("{}/entitlements/{}", base(&cg), seg(&group)),
                        none,
                    )
                    .await?,
                ),
                GroupCmd::Revoke { cg, group } => show(
                    c.call(
                        Method::DELETE,
                        &format!("{}/entitlements/{}", base(&cg), seg(&group)),
                        none,
                    )
                    .await?,
                ),
                GroupCmd::Publish { cg } => show(
                    c.call(Method::POST, &format!("{}/publish", base(&cg)), none)
                        .await?,
                ),
                GroupCmd::Unpublish { cg } => show(
                    c.call(Method::POST, &format!("{}/unpublish", base(&cg)), none)
                        .await?,
                ),
                GroupCmd::Delete { cg } => {
                    c.act(Method::DELETE, &base(&cg), none, "deleted").await?
                }
            }
        }
        AdminCommand::Group(cmd) => match cmd {
            DirGroupCmd::Create { name } => {
                c.act(
                    Method::POST,
                    "/api/v1/groups",
                    Some(&CreateGroupRequest { name: name.clone() }),
                    &format!("created group {name}"),
                )
                .await?
            }
            DirGroupCmd::Delete { name } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/groups/{}", seg(&name)),
                    none,
                    "deleted",
                )
                .await?
            }
            DirGroupCmd::List => {
                let names: Vec<String> = c.get("/api/v1/groups").await?;
                if !c.json {
                    print_names(&names);
                }
            }
            DirGroupCmd::Show { name } => {
                let g: GroupMembers = c.get(&format!("/api/v1/groups/{}", seg(&name))).await?;
                if !c.json {
                    for m in &g.members {
                        match m {
                            Principal::User(n) => println!("user {}", shown(n)),
                            Principal::Machine(n) => println!("machine {}", shown(n)),
                            Principal::Group(n) => println!("group {}", shown(n)),
                        }
                    }
                }
            }
            DirGroupCmd::Add { group, kind, name } => {
                let path = format!(
                    "/api/v1/groups/{}/members/{}/{}",
                    seg(&group),
                    kind.path(),
                    seg(&name)
                );
                c.act(
                    Method::PUT,
                    &path,
                    none,
                    &format!("added {name} to {group}"),
                )
                .await?
            }
            DirGroupCmd::Remove { group, kind, name } => {
                let path = format!(
                    "/api/v1/groups/{}/members/{}/{}",
                    seg(&group),
                    kind.path(),
                    seg(&name)
                );
                c.act(
                    Method::DELETE,
                    &path,
                    none,
                    &format!("removed {name} from {group}"),
                )
                .await?
            }
        },
        AdminCommand::User(cmd) => match cmd {
            UserCmd::Create { name, groups } => {
                let u: Option<CreatedUser> = c
                    .call(
                        Method::POST,
                        "/api/v1/users",
                        Some(&CreateUserRequest { name, groups }),
                    )
                    .await?;
                if let (false, Some(u)) = (c.json, u) {
                    let groups = if u.groups.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", u.groups.join(", "))
                    };
                    let verb = if u.created {
                        "created user"
                    } else {
                        "user already exists:"
                    };
                    println!("{verb} {}{}", shown(&u.name), shown(&groups));
                }
            }
            UserCmd::Delete { name } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/users/{}", seg(&name)),
                    none,
                    "deleted",
                )
                .await?
            }
            UserCmd::List => {
                let names: Vec<String> = c.get("/api/v1/users").await?;
                if !c.json {
                    print_names(&names);
                }
            }
        },
        AdminCommand::Machine(cmd) => match cmd {
            MachineCmd::Create { name, groups } => {
                let m: Option<CreatedMachine> = c
                    .call(
                        Method::POST,
                        "/api/v1/machines",
                        Some(&CreateMachineRequest { name, groups }),
                    )
                    .await?;
                if let (false, Some(m)) = (c.json, m) {
                    println!(
                        "created machine {}; its credential (shown only now):\n{}",
                        shown(&m.name),
                        shown(&m.credential)
                    );
                }
            }
            MachineCmd::Delete { name } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/machines/{}", seg(&name)),
                    none,
                    "deleted",
                )
                .await?
            }
            MachineCmd::List => {
                let names: Vec<String> = c.get("/api/v1/machines").await?;
                if !c.json {
                    print_names(&names);
                }
            }
        },
        AdminCommand::Server(cmd) => match cmd {
            ServerCmd::Register { name } => {
                let r: Option<RegisteredServer> = c
                    .call(
                        Method::POST,
                        "/api/v1/publishing-servers",
                        Some(&RegisterServerRequest { name }),
                    )
                    .await?;
                if let (false, Some(r)) = (c.json, r) {
                    println!(
                        "registered {}; its credential (AVAIL_PUBLISHING_CREDENTIAL, shown only now):\n{}",
                        shown(&r.server.name),
                        shown(&r.credential)
                    );
                }
            }
            ServerCmd::Unregister { name } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/publishing-servers/{}", seg(&name)),
                    none,
                    "unregistered",
                )
                .await?
            }
            ServerCmd::List => {
                let list: Vec<PublishingServer> = c.get("/api/v1/publishing-servers").await?;
                if !c.json {
                    for s in list {
                        let sync = s.last_sync_at.map_or_else(
                            || "never synced".to_owned(),
                            |t| {
                                format!(
                                    "last sync {t} (sequence {})",
                                    s.last_sync_sequence.unwrap_or(0)
                                )
                            },
                        );
                        println!("{}  registered {}  {sync}", shown(&s.name), s.registered_at);
                    }
                }
            }
        },
        AdminCommand::Admin(cmd) => match cmd {
            AdminCmd::Add {
                name,
                password_stdin,
            } => {
                let password = if password_stdin {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    Some(line.trim_end_matches(['\r', '\n']).to_owned())
                } else {
                    None
                };
                c.act(
                    Method::POST,
                    "/api/v1/administrators",
                    Some(&AddAdministratorRequest {
                        name: name.clone(),
                        password,
                    }),
                    &format!("added administrator {name}"),
                )
                .await?
            }
            AdminCmd::Remove { name } => {
                c.act(
                    Method::DELETE,
                    &format!("/api/v1/administrators/{}", seg(&name)),
                    none,
                    "removed",
                )
                .await?
            }
            AdminCmd::List => {
                let list: Vec<Administrator> = c.get("/api/v1/administrators").await?;
                if !c.json {
                    for a in list {
                        println!(
                            "{}{}",
                            shown(&a.name),
                            if a.has_password {
                                " (password)"
                            } else {
                                " (tokens only)"
                            }
                        );
                    }
                }
            }
            AdminCmd::Token { name, label } => {
                let t: Option<CreatedToken> = c
                    .call(
                        Method::POST,
                        &format!("/api/v1/administrators/{}/tokens", seg(&name)),
                        Some(&CreateTokenRequest { label }),
                    )
                    .await?;
                if let (false, Some(t)) = (c.json, t) {
                    println!("{}", shown(&t.token));
                }
            }
        },
    }
    Ok(())
}
