//! `avail`: the one binary of Avail. This crate only parses the command line and
//! wires the library crates together; the work happens in `avail-format`,
//! `avail-store`, `avail-server` (and, as it arrives, the client crate).

mod admin;
mod db;
mod logging;
mod package;
mod progress;
mod server;

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
    /// Run the server roles (management, content) on this machine.
    Server(server::ServerArgs),
    /// Administer a management server: packages, connection groups, directory, servers.
    Admin(admin::AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server reports where it listens and what it does; other commands stay quiet.
    let default_level = if matches!(cli.command, Command::Server(_)) {
        "info"
    } else {
        "warn"
    };
    if let Err(code) = logging::init(default_level) {
        return code;
    }
    let result = match cli.command {
        Command::Package(cmd) => package::run(cmd),
        Command::Db(cmd) => db::run(cmd),
        Command::Server(args) => server::run(args),
        Command::Admin(args) => admin::run(args),
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
