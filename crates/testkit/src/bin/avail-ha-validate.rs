//! `avail-ha-validate OUTDIR`: the HA validation harness (`avail_testkit::ha`),
//! run by `scripts/ha-validate`. Exits 0 when every correctness target held,
//! 1 when one was missed or the harness could not run; the figures are in
//! `OUTDIR/ha-report.json` and `OUTDIR/ha-report.md` either way.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Bring up a whole Avail cluster on this machine (pg_auto_failover, two nodes
/// of each role, HAProxy with deploy/haproxy.cfg, nginx content and branch
/// cache, a client daemon), inject each fault of App-V's HA validation
/// procedures under load, and write what happened to OUTDIR. Needs root (FUSE,
/// PostgreSQL as the postgres user) and about 1 GB of memory.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where ha-report.json and ha-report.md go (created if missing).
    out: PathBuf,
    /// How many times each fault is injected (the issue asks for at least 5;
    /// CI runs 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    injections: u64,
    /// MiB of random data in the package the client streams (larger: a
    /// content node is more surely killed mid-stream, the run is slower).
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(u64).range(1..=4096))]
    payload_mb: u64,
    /// Run only these scenarios (comma-separated): c-publishing, c-content,
    /// d-database, e-management-down, f-reporting, g-rolling-upgrade.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The `avail` binary under test.
    #[arg(long, env = "AVAIL_BIN", default_value = "target/debug/avail")]
    avail: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = avail_testkit::ha::Options {
        avail: args.avail,
        out: args.out,
        injections: args.injections as usize,
        payload_mb: args.payload_mb,
        only: args.only,
    };
    match avail_testkit::ha::run(&options) {
        Ok(()) => {
            eprintln!(
                "ha: every correctness target held; see {}",
                options.out.join("ha-report.md").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
