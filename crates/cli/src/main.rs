//! `avail`: the one binary of Avail. This crate only parses the command line and
//! wires the library crates together; the work happens in `avail-format`,
//! `avail-store`, `avail-server` and `avail-client`.

mod admin;
mod client;
mod db;
mod ha;
mod logging;
mod package;
mod progress;
mod run;
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
    /// Run the server roles (management, reporting, content) on this machine.
    Server(server::ServerArgs),
    /// Administer a management server: packages, connection groups, directory, servers, usage reports.
    #[command(after_help = admin::HELP)]
    Admin(admin::AdminArgs),
    /// The Linux client: its daemon, publishing servers, refresh, packages and settings.
    #[command(after_help = client::HELP)]
    Client(client::ClientArgs),
    /// High availability: read-only checks of a deployment.
    #[command(subcommand_required = true)]
    Ha(ha::HaArgs),
    /// Run a published application in its virtual environment.
    #[command(after_help = run::HELP)]
    Run(run::RunArgs),
    /// Internal: enter an application's environment and become it (started by `avail run`).
    #[command(hide = true)]
    Enter(run::EnterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server reports where it listens and what it does; other commands stay quiet.
    let daemon = matches!(&cli.command, Command::Client(c) if c.is_daemon());
    let default_level = if matches!(cli.command, Command::Server(_)) || daemon {
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
        Command::Client(args) => client::run(args),
        Command::Ha(args) => ha::run(args),
        Command::Run(args) => run::run(args),
        Command::Enter(args) => run::enter(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // The one place an error is printed: subcommands return theirs.
            eprintln!("error: {}", report(&err));
            ExitCode::from(exit_status(&err))
        }
    }
}

/// The exit status of a failed command: 3 when a package was refused (invalid,
/// corrupt or hostile), here or by the management server; 1 otherwise.
fn exit_status(err: &anyhow::Error) -> u8 {
    let refused_here = matches!(
        err.downcast_ref::<avail_format::FormatError>(),
        Some(e) if !matches!(
            e,
            avail_format::FormatError::Io { .. } | avail_format::FormatError::Invalid(_)
        )
    );
    let refused_by_server = err
        .downcast_ref::<admin::Refused>()
        .is_some_and(admin::Refused::is_invalid_package);
    if refused_here || refused_by_server {
        EXIT_INVALID
    } else {
        1
    }
}

/// An error and its causes on one line, each said once: a cause whose text its
/// parent already quotes (`cannot read X: No such file`) is not repeated.
fn report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out.push_str(&text);
        } else if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
    }
    out
}
