//! `avail db install|status`: install or check the Management and Reporting DB
//! schemas with the same numbered scripts a DBA runs by hand (`sql/`).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use avail_store::DatabaseKind;
use avail_store::model::SchemaStatus;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schemas: runs the scripts a database lacks, each in
    /// its own transaction, and records the schema version. Refuses a database
    /// newer than this Avail.
    Install(Urls),
    /// Show each database's schema version; exits 1 unless all are current.
    Status {
        #[command(flatten)]
        urls: Urls,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct Urls {
    /// Management DB: postgres://USER@HOST:PORT[,HOST2:PORT2]/DB?target_session_attrs=read-write, or sqlite:PATH.
    #[arg(long, env = "AVAIL_MANAGEMENT_DATABASE_URL", value_name = "URL")]
    management_url: Option<String>,
    /// Reporting DB, in the same forms.
    #[arg(long, env = "AVAIL_REPORTING_DATABASE_URL", value_name = "URL")]
    reporting_url: Option<String>,
}

impl Urls {
    fn targets(&self) -> Result<Vec<(DatabaseKind, &str)>> {
        let targets: Vec<_> = [
            (DatabaseKind::Management, self.management_url.as_deref()),
            (DatabaseKind::Reporting, self.reporting_url.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, url)| url.map(|u| (kind, u)))
        .collect();
        if targets.is_empty() {
            bail!(
                "give --management-url and/or --reporting-url (or AVAIL_MANAGEMENT_DATABASE_URL / AVAIL_REPORTING_DATABASE_URL)"
            );
        }
        Ok(targets)
    }
}

fn describe(status: &SchemaStatus) -> String {
    match status.installed {
        0 => "not installed (run `avail db install`)".into(),
        v if v == status.known => format!("schema version {v} (current)"),
        v if v < status.known => format!(
            "schema version {v}, older than {} (run `avail db install`)",
            status.known
        ),
        v => format!(
            "schema version {v}, newer than the {} this Avail knows (upgrade Avail)",
            status.known
        ),
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
                    let status = avail_store::install(url, kind)
                        .await
                        .with_context(|| format!("installing the {kind} failed"))?;
                    println!("{kind}: {}", describe(&status));
                }
                Ok(ExitCode::SUCCESS)
            }
            DbCommand::Status { urls, json } => {
                let mut all_current = true;
                let mut out = serde_json::Map::new();
                for (kind, url) in urls.targets()? {
                    let status = avail_store::status(url, kind)
                        .await
                        .with_context(|| format!("reading the {kind} schema version failed"))?;
                    all_current &= status.is_current();
                    if json {
                        out.insert(
                            match kind {
                                DatabaseKind::Management => "management".into(),
                                DatabaseKind::Reporting => "reporting".into(),
                            },
                            serde_json::to_value(&status)?,
                        );
                    } else {
                        println!("{kind}: {}", describe(&status));
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
