//! `avail db install|status`: install or check the Management and Reporting DB
//! schemas with the same numbered scripts a DBA runs by hand (`sql/`). Without a
//! URL, `status` reads the embedded SQLite databases of the data directory, as
//! `avail server` would open them, and never creates them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use avail_store::DatabaseKind;
use clap::{Args, Subcommand};

/// The Reporting DB's file in the data directory, beside the Management DB's.
const REPORTING_FILE: &str = "reporting.db";

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schemas: runs the scripts a database lacks, each in
    /// its own transaction, and records the schema version. Refuses a database
    /// newer than this Avail.
    Install(Urls),
    /// Show each database's schema version; exits 1 unless all are current. Without
    /// a URL, reads the embedded SQLite databases of the data directory (and says
    /// when they do not exist yet, without creating them).
    Status {
        #[command(flatten)]
        urls: Urls,
        /// Data directory whose embedded databases to read when no URL is given
        /// [default: ./avail-data, as `avail server`].
        #[arg(long, env = "AVAIL_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct Urls {
    /// Management DB: postgres://USER@HOST:PORT[,HOST2:PORT2]/DB?target_session_attrs=read-write, or sqlite:PATH.
    #[arg(long, env = "AVAIL_MANAGEMENT_DATABASE_URL", value_name = "URL", value_parser = parse_url)]
    management_url: Option<String>,
    /// Reporting DB, in the same forms.
    #[arg(long, env = "AVAIL_REPORTING_DATABASE_URL", value_name = "URL", value_parser = parse_url)]
    reporting_url: Option<String>,
}

fn parse_url(s: &str) -> Result<String, String> {
    let sqlite = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"));
    let postgres = s.starts_with("postgres://") || s.starts_with("postgresql://");
    match sqlite {
        Some("") => Err(format!("{s:?} names no file: sqlite:PATH")),
        Some(_) => Ok(s.to_owned()),
        None if postgres => Ok(s.to_owned()),
        None => Err(format!("{s:?} is neither postgres://… nor sqlite:PATH")),
    }
}

impl Urls {
    fn given(&self) -> Vec<(DatabaseKind, String)> {
        [
            (DatabaseKind::Management, &self.management_url),
            (DatabaseKind::Reporting, &self.reporting_url),
        ]
        .into_iter()
        .filter_map(|(kind, url)| url.clone().map(|u| (kind, u)))
        .collect()
    }

    fn targets(&self) -> Result<Vec<(DatabaseKind, String)>> {
        let targets = self.given();
        if targets.is_empty() {
            bail!(
                "give --management-url and/or --reporting-url (or AVAIL_MANAGEMENT_DATABASE_URL / AVAIL_REPORTING_DATABASE_URL)"
            );
        }
        Ok(targets)
    }
}

/// The embedded databases of a data directory, as `avail server` uses them.
fn embedded(data_dir: Option<PathBuf>) -> Vec<(DatabaseKind, String)> {
    let mut config = avail_server::Config::default();
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    let reporting = config.data_dir.join(REPORTING_FILE);
    vec![
        (DatabaseKind::Management, config.management_database_url()),
        (
            DatabaseKind::Reporting,
            format!("sqlite:{}", reporting.display()),
        ),
    ]
}

/// The file a SQLite URL names that is not there: reading its status would create it.
fn missing_file(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = PathBuf::from(path);
    (!path.exists()).then_some(path)
}

fn describe(installed: i32, known: i32) -> String {
    match installed {
        0 => "not installed (run `avail db install`)".into(),
        v if v == known => format!("schema version {v} (current)"),
        v if v < known => {
            format!("schema version {v}, older than {known} (run `avail db install`)")
        }
        v => format!("schema version {v}, newer than the {known} this Avail knows (upgrade Avail)"),
    }
}

fn key(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Management => "management",
        DatabaseKind::Reporting => "reporting",
    }
}

pub fn run(cmd: DbCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            DbCommand::Install(urls) => {
                for (kind, url) in urls.targets()? {
                    let status = avail_store::install(&url, kind)
                        .await
                        .with_context(|| format!("installing the {kind} failed"))?;
                    println!("{kind}: {}", describe(status.installed, status.known));
                }
                Ok(ExitCode::SUCCESS)
            }
            DbCommand::Status {
                urls,
                data_dir,
                json,
            } => {
                let mut targets = urls.given();
                let from_data_dir = targets.is_empty();
                if from_data_dir {
                    targets = embedded(data_dir);
                }
                let mut all_current = true;
                let mut out = serde_json::Map::new();
                for (kind, url) in targets {
                    if from_data_dir && let Some(path) = missing_file(&url) {
                        all_current = false;
                        if json {
                            out.insert(
                                key(kind).into(),
                                serde_json::json!({ "url": url, "exists": false }),
                            );
                        } else {
                            let server = match kind {
                                DatabaseKind::Management => {
                                    "`avail server` creates it at its first start, or "
                                }
                                DatabaseKind::Reporting => "",
                            };
                            println!(
                                "{kind}: {} does not exist yet ({server}`avail db install \
                                 --{}-url {url}` now)",
                                path.display(),
                                key(kind),
                            );
                        }
                        continue;
                    }
                    let status = avail_store::status(&url, kind)
                        .await
                        .with_context(|| format!("reading the {kind} schema version failed"))?;
                    all_current &= status.is_current();
                    if json {
                        let mut v = serde_json::to_value(&status)?;
                        if from_data_dir {
                            v["url"] = url.into();
                            v["exists"] = true.into();
                        }
                        out.insert(key(kind).into(), v);
                    } else if from_data_dir {
                        println!(
                            "{kind}: {} ({url})",
                            describe(status.installed, status.known)
                        );
                    } else {
                        println!("{kind}: {}", describe(status.installed, status.known));
                    }
                }
                if json {
                    println!("{}", serde_json::Value::Object(out));
                }
                Ok(if all_current {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    })
}
