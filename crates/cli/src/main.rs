//! `avail`: the one binary of Avail. This crate only parses the command line and
//! wires the library crates together; the work happens in `avail-format`,
//! `avail-store` (and, as they arrive, the server and client crates).

mod db;
mod package;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a package that was refused (invalid, corrupt or hostile).
const EXIT_INVALID: u8 = 3;

/// Avail: App-V-style application delivery for Linux fleets.
#[derive(Parser)]
#[command(name = "avail", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 an error (I/O, bad arguments to the work); \
2 the command line is wrong; 3 the package is invalid, corrupt or hostile.\n\
Logging: set AVAIL_LOG (for example AVAIL_LOG=debug).";

#[derive(Subcommand)]
enum Command {
    /// Build, inspect, verify and extract .appv packages.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Install or check the Management and Reporting DB schemas.
    #[command(subcommand)]
    Db(db::DbCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AVAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Package(cmd) => package::run(cmd),
        Command::Db(cmd) => db::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            match err.downcast_ref::<avail_format::FormatError>() {
                Some(avail_format::FormatError::Io { .. })
                | Some(avail_format::FormatError::Invalid(_))
                | None => ExitCode::FAILURE,
                Some(_) => ExitCode::from(EXIT_INVALID),
            }
        }
    }
}
