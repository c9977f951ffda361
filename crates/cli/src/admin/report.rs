//! `avail admin report …`: usage from the Reporting DB, as App-V's reporting
//! database reports give it: launch counts and the clients with their cached
//! packages. A text table by default, the server's JSON with `--json`.

use anyhow::Result;
use avail_model::api::{LaunchesBy, LaunchesQuery};
use avail_model::endpoint::*;
use clap::{Subcommand, ValueEnum};

use super::{Admin, shown};

#[derive(Subcommand)]
pub(super) enum ReportCmd {
    /// Launch counts, most launches first.
    Launches {
        /// Group per application and day, per user, per package version, or per application.
        #[arg(long, value_enum, default_value_t = By::Day)]
        by: By,
    },
    /// Every client that reported, with its packages and how much of each it has cached.
    Clients,
}

/// `--by`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum By {
    /// Per application and day (UTC).
    Day,
    /// Per user.
    User,
    /// Per package version.
    Package,
    /// Per application.
    Application,
}

impl From<By> for LaunchesBy {
    fn from(by: By) -> Self {
        match by {
            By::Day => LaunchesBy::Day,
            By::User => LaunchesBy::User,
            By::Package => LaunchesBy::Package,
            By::Application => LaunchesBy::Application,
        }
    }
}

/// Rows as columns padded to their widest cell, the last column unpadded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", padded.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(super) async fn run(c: &Admin, cmd: ReportCmd) -> Result<()> {
    match cmd {
        ReportCmd::Launches { by } => {
            let by = LaunchesBy::from(by);
            let counts = c
                .get(&ReportLaunches {
                    query: LaunchesQuery { by },
                })
                .await?;
            if c.json {
                return Ok(());
            }
            let what = match by {
                LaunchesBy::Day | LaunchesBy::Application => "APPLICATION",
                LaunchesBy::User => "USER",
                LaunchesBy::Package => "PACKAGE VERSION",
            };
            let rows: Vec<Vec<String>> = counts
                .iter()
                .map(|count| {
                    let mut row = Vec::new();
                    if by == LaunchesBy::Day {
                        row.push(count.day.map(|d| d.to_string()).unwrap_or_default());
                    }
                    row.push(count.launches.to_string());
                    row.push(shown(&count.key).into_owned());
                    row
                })
                .collect();
            if by == LaunchesBy::Day {
                print_table(&["DAY", "LAUNCHES", what], &rows);
            } else {
                print_table(&["LAUNCHES", what], &rows);
            }
        }
        ReportCmd::Clients => {
            let clients = c.get(&ReportClients {}).await?;
            if c.json {
                return Ok(());
            }
            let mut rows = Vec::new();
            for client in &clients {
                let info = &client.client;
                let host = shown(&info.host_name).into_owned();
                let last = client.last_report_at.to_rfc3339();
                let os = format!(
                    "{} {} SP{} {}",
                    shown(&info.os_type),
                    shown(&info.os_version),
                    info.os_service_pack,
                    shown(&info.processor_arch)
                );
                let row = |cached: String, package: String| {
                    vec![host.clone(), last.clone(), os.clone(), cached, package]
                };
                if client.packages.is_empty() {
                    rows.push(row(String::new(), String::new()));
                }
                for package in &client.packages {
                    let cached = package
                        .percent_cached
                        .map_or_else(|| "-".to_owned(), |p| format!("{p}%"));
                    rows.push(row(cached, shown(&package.name).into_owned()));
                }
            }
            print_table(&["CLIENT", "LAST REPORT", "OS", "CACHED", "PACKAGE"], &rows);
        }
    }
    Ok(())
}
