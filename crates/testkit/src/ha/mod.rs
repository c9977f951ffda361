//! The HA validation harness behind `scripts/ha-validate OUTDIR`: App-V 5.1's
//! high-availability validation procedures (add a package, refresh and open an
//! application, switch nodes in the middle of a refresh and of streaming, fail
//! the database over, lose the management side entirely, lose a reporting node,
//! restart every node in turn) run automatically against a [`cluster`] of real
//! components, each fault injected a given number of times under load, with
//! `OUTDIR/ha-report.json` and `OUTDIR/ha-report.md` as the result.
//!
//! [`run`] fails (and the script exits non-zero) when a correctness target is
//! missed: a client operation failed where none may (node kills), or an
//! acknowledged write was lost or duplicated. Timings (stalls, failover
//! durations, how soon Avail's writes follow the database's) are measured and
//! reported, never asserted: they depend on the machine.

pub mod cluster;
pub mod load;
pub mod scenarios;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use cluster::Cluster;
use scenarios::Scenario;

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `avail` binary under test.
    pub avail: PathBuf,
    /// Where the reports go.
    pub out: PathBuf,
    /// How many times each fault is injected.
    pub injections: usize,
    /// MiB of random data in the package the client streams.
    pub payload_mb: u64,
    /// Run only the scenarios with these ids (all when empty).
    pub only: Vec<String>,
}

/// Every scenario by id, in the order they run.
pub const SCENARIOS: [&str; 6] = [
    "c-publishing",
    "c-content",
    "d-database",
    "e-management-down",
    "f-reporting",
    "g-rolling-upgrade",
];

/// Set by SIGINT or SIGTERM: the harness stops at the next injection or
/// pause, writes what it has, and stops everything it started.
fn interrupted_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// An error once SIGINT or SIGTERM arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted_flag().load(Ordering::Relaxed) {
        bail!("interrupted (SIGINT or SIGTERM)");
    }
    Ok(())
}

/// Bring the cluster up, run every scenario, write the reports; an error
/// when a correctness target was missed or the harness could not run.
pub fn run(options: &Options) -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted_flag().clone())
            .context("cannot handle SIGINT and SIGTERM")?;
    }
    if let Some(unknown) = options
        .only
        .iter()
        .find(|o| !SCENARIOS.contains(&o.as_str()))
    {
        bail!(
            "no scenario {unknown}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let started = Instant::now();
    let started_at = humantime_now();
    let mut cluster = Cluster::start(&options.avail, options.payload_mb)?;
    let up = started.elapsed();
    eprintln!("ha: avail ha check before the faults");
    let check_before = cluster.ha_check()?;
    let n = options.injections;
    let mut results: Vec<Scenario> = Vec::new();
    type Step = fn(&mut Cluster, usize) -> Result<Scenario>;
    let steps: [Step; 6] = [
        scenarios::publishing_node_killed,
        scenarios::content_node_killed,
        scenarios::database_failover,
        scenarios::management_down,
        scenarios::reporting_node_killed,
        scenarios::rolling_upgrade,
    ];
    let mut error = None;
    for (id, step) in SCENARIOS.iter().zip(steps) {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == id) {
            continue;
        }
        match check_interrupted().and_then(|()| step(&mut cluster, n)) {
            Ok(s) => results.push(s),
            Err(e) => {
                error = Some(e.context(format!("scenario {id}")));
                break;
            }
        }
    }
    let check_after = if error.is_none() {
        eprintln!("ha: avail ha check after the faults");
        // The last restarted nodes need a moment for HAProxy's checks.
        cluster.wait_all_up(Duration::from_secs(60))?;
        Some(cluster.ha_check()?)
    } else {
        None
    };
    let checks = [("before", Some(check_before)), ("after", check_after)];
    let report = report(
        &results,
        &checks,
        n,
        &started_at,
        up,
        started.elapsed(),
        error.as_ref(),
    );
    write_reports(&options.out, &report)?;
    std::fs::write(options.out.join("haproxy.log"), cluster.haproxy.log())?;
    drop(cluster);
    if let Some(e) = error {
        return Err(e.context("a scenario could not run to its end (see ha-report.md)"));
    }
    if report["targets"]["correctness_met"] != json!(true) {
        bail!(
            "a correctness target was missed: see {}",
            options.out.join("ha-report.md").display()
        );
    }
    Ok(())
}

/// The report as JSON (see `ha-report.json`).
fn report(
    results: &[Scenario],
    checks: &[(&str, Option<(bool, String)>)],
    injections: usize,
    started_at: &str,
    up: Duration,
    total: Duration,
    error: Option<&anyhow::Error>,
) -> Value {
    let ms = |d: Duration| d.as_millis() as u64;
    let mut failed = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut scenarios = Vec::new();
    for s in results {
        let mut operations = Vec::new();
        for o in &s.operations {
            if o.must_not_fail {
                failed += o.tally.failed;
            }
            lost += o.lost;
            duplicated += o.duplicated;
            operations.push(json!({
                "name": o.name,
                "failures_count_against_target": o.must_not_fail,
                "attempted": o.tally.attempted,
                "failed": o.tally.failed,
                "acknowledged_writes": o.tally.acked.len(),
                "lost": o.lost,
                "duplicated": o.duplicated,
                "worst_stall_ms": ms(o.tally.worst),
                "first_failures": o.tally.failures,
            }));
        }
        scenarios.push(json!({
            "id": s.id,
            "what": s.what,
            "injections": s.injections,
            "passed": s.passed(),
            "operations": operations,
            "failovers": s.failovers,
        }));
    }
    let after_db: Vec<u64> = results
        .iter()
        .flat_map(|s| &s.failovers)
        .filter_map(|f| f["avail_write_after_database_writable_ms"].as_u64())
        .collect();
    let worst_after_db = after_db.iter().max().copied();
    let checks_passed = checks
        .iter()
        .all(|(_, c)| c.as_ref().is_none_or(|(ok, _)| *ok));
    let ha_check: serde_json::Map<String, Value> = checks
        .iter()
        .filter_map(|(when, c)| {
            let (ok, output) = c.as_ref()?;
            Some((when.to_string(), json!({"passed": ok, "output": output})))
        })
        .collect();
    json!({
        "started_at": started_at,
        "injections_per_fault": injections,
        "cluster_start_s": up.as_secs_f64(),
        "total_s": total.as_secs_f64(),
        "error": error.map(|e| format!("{e:#}")),
        "ha_check": ha_check,
        "scenarios": scenarios,
        "targets": {
            "failed_client_operations": failed,
            "acknowledged_writes_lost": lost,
            "acknowledged_writes_duplicated": duplicated,
            "worst_avail_write_after_database_ms": worst_after_db,
            "avail_writes_within_1s_of_database": worst_after_db.map(|w| w <= 1000),
            "avail_ha_check_passed": checks_passed,
            "correctness_met": error.is_none()
                && checks_passed
                && failed == 0
                && lost == 0
                && duplicated == 0,
        },
    })
}

/// Write `ha-report.json` and its Markdown rendering `ha-report.md`.
fn write_reports(out: &Path, report: &Value) -> Result<()> {
    std::fs::write(
        out.join("ha-report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let mut md = String::new();
    let t = &report["targets"];
    md.push_str(&format!(
        "# Avail HA validation\n\nStarted {}; each fault injected {} times; cluster up in {:.1} s; \
         {:.0} s in all.\n\n",
        report["started_at"].as_str().unwrap_or(""),
        report["injections_per_fault"],
        report["cluster_start_s"].as_f64().unwrap_or(0.0),
        report["total_s"].as_f64().unwrap_or(0.0),
    ));
    if let Some(e) = report["error"].as_str() {
        md.push_str(&format!("**The run stopped early:** {e}\n\n"));
    }
    md.push_str(&format!(
        "| target | measured |\n|---|---|\n\
         | 0 failed client operations across node kills | {} |\n\
         | 0 acknowledged writes lost | {} |\n\
         | 0 acknowledged writes duplicated | {} |\n\
         | Avail's writes within 1 s of the database's | {} |\n\n",
        t["failed_client_operations"],
        t["acknowledged_writes_lost"],
        t["acknowledged_writes_duplicated"],
        match t["worst_avail_write_after_database_ms"].as_u64() {
            Some(ms) => format!("worst {ms} ms"),
            None => "not measured (no database failover ran)".to_owned(),
        },
    ));
    for when in ["before", "after"] {
        let check = &report["ha_check"][when];
        if check.is_null() {
            continue;
        }
        md.push_str(&format!(
            "`avail ha check` {when} the faults: {}\n\n```\n{}```\n\n",
            if check["passed"] == json!(true) {
                "passed"
            } else {
                "FAILED"
            },
            check["output"].as_str().unwrap_or("")
        ));
    }
    md.push_str(
        "\"slowest\" is the longest single operation (for a launch, the whole launch): an upper \
         bound on the worst stall a client saw.\n\n",
    );
    for s in report["scenarios"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "## {} ({} injections){}\n\n{}\n\n\
             | operation | attempted | failed | acknowledged | lost | duplicated | slowest |\n\
             |---|---|---|---|---|---|---|\n",
            s["id"].as_str().unwrap_or(""),
            s["injections"],
            if s["passed"] == json!(true) {
                ""
            } else {
                " — MISSED"
            },
            s["what"].as_str().unwrap_or(""),
        ));
        for o in s["operations"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {}{} | {} | {} | {} | {} | {} | {} ms |\n",
                o["name"].as_str().unwrap_or(""),
                if o["failures_count_against_target"] == json!(true) {
                    ""
                } else {
                    " (may fail while the database is down)"
                },
                o["attempted"],
                o["failed"],
                o["acknowledged_writes"],
                o["lost"],
                o["duplicated"],
                o["worst_stall_ms"],
            ));
        }
        let failovers = s["failovers"].as_array().into_iter().flatten();
        let mut first = true;
        for f in failovers {
            if first {
                md.push_str(
                    "\n| failover | detected | promoted | database writable again | first Avail write after promotion | Avail write after database writable |\n\
                     |---|---|---|---|---|---|\n",
                );
                first = false;
            }
            md.push_str(&format!(
                "| node {} killed | {} ms | {} ms | {} ms | {} ms | {} ms |\n",
                f["killed_node"],
                f["detection_ms"],
                f["promotion_ms"],
                f["database_writable_ms"],
                f["first_avail_write_after_promotion_ms"],
                f["avail_write_after_database_writable_ms"],
            ));
        }
        for o in s["operations"].as_array().into_iter().flatten() {
            for failure in o["first_failures"].as_array().into_iter().flatten() {
                md.push_str(&format!(
                    "\n- {}: {}",
                    o["name"].as_str().unwrap_or(""),
                    failure.as_str().unwrap_or("")
                ));
            }
        }
        md.push_str("\n\n");
    }
    std::fs::write(out.join("ha-report.md"), md)?;
    Ok(())
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC` (from `date`, to need no
/// time crate here).
fn humantime_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One HTTP/1.0 request to `addr` (`host:port`), at most 30 s: the status and
/// the body (HTTP/1.0, so the body is neither chunked nor kept alive).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .with_context(|| format!("{method} {addr}{path}: reading the answer"))?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "{method} {addr}{path}: no complete answer ({} bytes)",
                answer.len()
            )
        })?;
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {addr}{path}: no status line"))?;
    Ok((status, answer.split_off(end + 4)))
}
