//! `avail ha check`: read-only checks an operator runs against their own
//! deployment, as App-V's high-availability plan asks administrators to
//! validate theirs. Each check prints one line, `ok` or `FAIL`, with what was
//! seen; the command exits 1 when any failed, 0 when all passed.
//!
//! - every role URL given (usually the load balancer's) answers `/readyz`
//!   (a content mirror that is not an Avail node, such as nginx, only has to
//!   answer);
//! - every registered publishing node synced with management within
//!   `--max-sync-age`;
//! - every host of each `--database` URL answers: exactly one primary, and
//!   on the primary each standby streams with a replay lag within `--max-lag`;
//! - every `--content` URL serves the newest package versions with the size
//!   the Management DB recorded, and the same bytes at their start and end.
//!
//! Nothing is written anywhere.

use std::process::ExitCode;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use avail_model::client::ManagementClient;
use avail_model::endpoint::{ListPackages, ListServers};
use clap::{Args, Subcommand};
use sha2::{Digest as _, Sha256};

/// `avail ha`.
#[derive(Args)]
pub struct HaArgs {
    #[command(subcommand)]
    command: HaCommand,
}

#[derive(Subcommand)]
enum HaCommand {
    /// Check a deployment (read-only); exit 1 if any check fails.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The management role (the load balancer's address).
    #[arg(long, env = "AVAIL_SERVER", default_value = "http://127.0.0.1:8080")]
    management: String,
    /// Administrator API token; without one, the bootstrap token in
    /// `$AVAIL_DATA_DIR/admin-token`.
    #[arg(long, env = "AVAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The publishing role's URL (repeatable).
    #[arg(long)]
    publishing: Vec<String>,
    /// The reporting role's URL (repeatable).
    #[arg(long)]
    reporting: Vec<String>,
    /// A content mirror's base URL, the directory holding `packages/` (repeatable).
    #[arg(long)]
    content: Vec<String>,
    /// A PostgreSQL URL whose every host is checked, e.g.
    /// postgres://avail@db1:5432,db2:5432/avail_management (repeatable).
    #[arg(long = "database", value_name = "URL")]
    databases: Vec<String>,
    /// The oldest a publishing node's last sync may be, in seconds.
    #[arg(long, default_value_t = 120)]
    max_sync_age: u64,
    /// The largest replay lag of a standby, in seconds.
    #[arg(long, default_value_t = 10.0)]
    max_lag: f64,
    /// How many of the newest package versions the content check compares.
    #[arg(long, default_value_t = 3)]
    content_samples: usize,
    /// Print one JSON object per check instead of text.
    #[arg(long)]
    json: bool,
}

/// One check's result.
struct Outcome {
    check: String,
    ok: bool,
    detail: String,
}

/// Checks, printed as they finish.
struct Report {
    json: bool,
    failed: usize,
}

impl Report {
    fn add(&mut self, outcome: Outcome) {
        if !outcome.ok {
            self.failed += 1;
        }
        if self.json {
            println!(
                "{}",
                serde_json::json!({"check": outcome.check, "ok": outcome.ok, "detail": outcome.detail})
            );
        } else {
            let status = if outcome.ok { "ok  " } else { "FAIL" };
            println!("{status}  {}: {}", outcome.check, outcome.detail);
        }
    }

    fn ok(&mut self, check: String, detail: String) {
        self.add(Outcome {
            check,
            ok: true,
            detail,
        });
    }

    fn fail(&mut self, check: String, detail: String) {
        self.add(Outcome {
            check,
            ok: false,
            detail,
        });
    }
}

/// Runs `avail ha …`.
pub fn run(args: HaArgs) -> Result<ExitCode> {
    let HaCommand::Check(args) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(check(args))?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(args: CheckArgs) -> Result<usize> {
    let mut report = Report {
        json: args.json,
        failed: 0,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let management = args.management.trim_end_matches('/').to_owned();
    let roles = std::iter::once(("management", &management))
        .chain(args.publishing.iter().map(|u| ("publishing", u)))
        .chain(args.reporting.iter().map(|u| ("reporting", u)))
        .chain(args.content.iter().map(|u| ("content", u)));
    for (role, url) in roles {
        readyz(&http, &mut report, role, url).await;
    }

    let token = crate::admin::find_token(args.token.clone())
        .map(|(token, _)| token)
        .ok();
    let client = ManagementClient::with_http(http.clone(), &management, token);
    match client.call(&ListServers {}).await {
        Ok(servers) if servers.is_empty() => report.ok(
            "publishing nodes synced".into(),
            "no publishing node is registered (a node that follows the Management DB itself needs none)".into(),
        ),
        Ok(servers) => {
            for s in servers {
                let check = format!("publishing node {} synced", s.name);
                match s.last_sync_at {
                    None => report.fail(check, "it never synced".into()),
                    Some(at) => {
                        let age = (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3;
                        let detail = format!(
                            "last sync {age:.1} s ago (sequence {}), limit {} s",
                            s.last_sync_sequence.unwrap_or_default(),
                            args.max_sync_age
                        );
                        if age <= args.max_sync_age as f64 {
                            report.ok(check, detail);
                        } else {
                            report.fail(check, detail);
                        }
                    }
                }
            }
        }
        Err(e) => report.fail(
            "publishing nodes synced".into(),
            format!("cannot list them from {management}: {e}"),
        ),
    }

    for url in &args.databases {
        databases(&mut report, url, args.max_lag).await;
    }
    if !args.content.is_empty() {
        content(
            &http,
            &client,
            &mut report,
            &args.content,
            args.content_samples,
        )
        .await;
    }
    Ok(report.failed)
}

async fn readyz(http: &reqwest::Client, report: &mut Report, role: &str, url: &str) {
    let check = format!("{role} at {url} is ready");
    let target = format!("{}/readyz", url.trim_end_matches('/'));
    match http.get(&target).send().await {
        Ok(r) if r.status().is_success() => report.ok(check, format!("{} {}", r.status(), target)),
        // A mirror that is not an Avail node (nginx, a file server) has no
        // /readyz: it answered, and its files are checked below.
        Ok(r) if role == "content" && r.status() == reqwest::StatusCode::NOT_FOUND => report.ok(
            check,
            "it answers, with no /readyz (not an Avail node): its files are checked below".into(),
        ),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            report.fail(check, format!("{status}: {}", body.trim()))
        }
        Err(e) => report.fail(check, format!("no answer: {}", chain(&e))),
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The hosts of `url`, each as a connection of its own.
fn hosts(url: &str) -> Result<Vec<(String, tokio_postgres::Config)>> {
    use tokio_postgres::config::Host;
    let config = tokio_postgres::Config::from_str(url).context("not a PostgreSQL URL")?;
    let ports = config.get_ports();
    let mut out = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let mut one = tokio_postgres::Config::new();
        let name = match host {
            Host::Tcp(h) => {
                one.host(h);
                format!("{h}:{port}")
            }
            Host::Unix(p) => {
                one.host_path(p);
                format!("{}:{port}", p.display())
            }
        };
        one.port(port);
        if let Some(user) = config.get_user() {
            one.user(user);
        }
        if let Some(password) = config.get_password() {
            one.password(password);
        }
        if let Some(db) = config.get_dbname() {
            one.dbname(db);
        }
        one.connect_timeout(Duration::from_secs(3));
        one.application_name("avail-ha-check");
        out.push((name, one));
    }
    Ok(out)
}

async fn databases(report: &mut Report, url: &str, max_lag: f64) {
    let shown = url.split('@').next_back().unwrap_or(url);
    let hosts = match hosts(url) {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => return report.fail(format!("database {shown}"), "the URL names no host".into()),
        Err(e) => return report.fail(format!("database {shown}"), format!("{e:#}")),
    };
    let mut primaries = Vec::new();
    for (name, config) in hosts {
        let check = format!("database host {name}");
        let client = match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) => {
                report.fail(check, format!("cannot connect: {}", chain(&e)));
                continue;
            }
        };
        match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
            Ok(row) if !row.get::<_, bool>(0) => {
                report.ok(check, "primary (accepts writes)".into());
                primaries.push((name, client));
            }
            Ok(_) => {
                let lag = client
                    .query_one(
                        "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8",
                        &[],
                    )
                    .await
                    .map(|r| r.get::<_, f64>(0));
                match lag {
                    Ok(bytes) => report.ok(
                        check,
                        format!("standby, {bytes:.0} bytes received and not yet replayed"),
                    ),
                    Err(e) => report.fail(check, format!("standby, but: {}", chain(&e))),
                }
            }
            Err(e) => report.fail(check, format!("cannot ask its role: {}", chain(&e))),
        }
    }
    let check = format!("database {shown} has one primary");
    match primaries.len() {
        1 => report.ok(check, primaries[0].0.clone()),
        0 => report.fail(check, "no host accepts writes".into()),
        n => report.fail(
            check,
            format!(
                "{n} hosts accept writes ({}): a split brain",
                primaries
                    .iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    for (name, client) in primaries {
        let rows = client
            .query(
                "SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'), state, sync_state, \
                 coalesce(extract(epoch FROM replay_lag), 0)::float8 FROM pg_stat_replication",
                &[],
            )
            .await;
        let check = format!("standbys of {name}");
        match rows {
            Ok(rows) if rows.is_empty() => {
                report.fail(check, "no standby is streaming from the primary".into())
            }
            Ok(rows) => {
                for r in rows {
                    let (app, addr, state, sync, lag): (String, String, String, String, f64) =
                        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                    let check = format!("standby {app}@{addr} of {name}");
                    let detail =
                        format!("{state}, {sync}, replay lag {lag:.3} s (limit {max_lag} s)");
                    if state == "streaming" && lag <= max_lag {
                        report.ok(check, detail);
                    } else {
                        report.fail(check, detail);
                    }
                }
            }
            Err(e) => report.fail(
                check,
                format!("cannot read pg_stat_replication: {}", chain(&e)),
            ),
        }
    }
}

async fn content(
    http: &reqwest::Client,
    client: &ManagementClient,
    report: &mut Report,
    mirrors: &[String],
    samples: usize,
) {
    let versions = match client.call(&ListPackages::default()).await {
        Ok(v) => v,
        Err(e) => {
            return report.fail(
                "content mirrors agree".into(),
                format!("cannot list the package versions: {e}"),
            );
        }
    };
    if versions.is_empty() {
        return report.ok(
            "content mirrors agree".into(),
            "no package is imported".into(),
        );
    }
    // Oldest first: the newest `samples`.
    for v in versions.iter().rev().take(samples.max(1)) {
        let p = &v.package;
        let mut seen: Vec<(String, String)> = Vec::new();
        for mirror in mirrors {
            let url = format!("{}/{}", mirror.trim_end_matches('/'), p.content_path);
            let check = format!("{} {} on {mirror}", p.name, p.version);
            match ends(http, &url, p.size).await {
                Ok(digest) => {
                    report.ok(check, format!("{} bytes, as recorded", p.size));
                    seen.push((mirror.clone(), digest));
                }
                Err(e) => report.fail(check, e),
            }
        }
        if seen.len() > 1 {
            let check = format!("{} {}: mirrors serve the same bytes", p.name, p.version);
            let first = &seen[0].1;
            let differ: Vec<&str> = seen
                .iter()
                .filter(|(_, d)| d != first)
                .map(|(m, _)| m.as_str())
                .collect();
            if differ.is_empty() {
                report.ok(
                    check,
                    format!("first and last 64 KiB agree on {} mirrors", seen.len()),
                );
            } else {
                report.fail(
                    check,
                    format!("{} differ(s) from {}", differ.join(", "), seen[0].0),
                );
            }
        }
    }
}

/// The SHA-256 of the first and last 64 KiB of `url`, whose length must be `size`.
async fn ends(http: &reqwest::Client, url: &str, size: u64) -> Result<String, String> {
    const PART: u64 = 64 * 1024;
    let mut digest = Sha256::new();
    for range in [
        format!("bytes=0-{}", PART.min(size).saturating_sub(1)),
        format!("bytes=-{}", PART.min(size)),
    ] {
        let r = http
            .get(url)
            .header(reqwest::header::RANGE, &range)
            .send()
            .await
            .map_err(|e| format!("no answer: {}", chain(&e)))?;
        if r.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(format!("{} for {range}", r.status()));
        }
        let total = r
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        if total != Some(size) {
            return Err(format!(
                "the file is {} bytes, the Management DB recorded {size}",
                total.map_or("an unknown number of".into(), |t| t.to_string())
            ));
        }
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("the body broke off: {e}"))?;
        digest.update(&body);
    }
    Ok(hex::encode(digest.finalize()))
}
