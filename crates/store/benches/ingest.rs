//! Report ingest into the Reporting DB, in reports per second, on PostgreSQL and
//! on SQLite, beside App-V 5.1's published capacity of one reporting server:
//! "a single reporting server and a single database can process a maximum of
//! 139 requests per second" (one request = one client report; App-V 5.1
//! capacity planning). Each run ingests fresh reports through
//! [`avail_store::ReportingStore::ingest`] with a batch size (1, 100, 1000)
//! from one or more tasks in parallel, into a freshly installed database, and
//! prints reports/s, usage rows/s, batch latency and the ratio against 139/s.
//!
//! The reports follow App-V's own sizes (About App-V 5.1 reporting): a
//! `CLIENT_DATA` for one of 2,000 hosts (~150 bytes), ~20 `APP_RECORD`s of
//! ~0.25 KB (16 to 24, 20 on average), and on one report in ten the host's
//! package list of 30 `PKG_DATA` (~7 KB); the body is the matching XML, as
//! MS-VAPR's `SetReport` carries it. Reports are built before the clock starts;
//! what is timed is the store alone (no HTTP, no XML parsing), so the figure is
//! an upper bound for the reporting service built on it. App-V's 139 requests/s
//! is a published figure for a whole reporting server (IIS, the service and
//! SQL Server) on Microsoft's hardware, not a reference measured here.
//!
//! PostgreSQL is a throwaway `avail-testkit` server with durable defaults
//! (`fsync` and `synchronous_commit` on); SQLite is a file in a temporary
//! directory in WAL mode with `synchronous = FULL`, as the store opens it.
//! Run with `cargo bench -p avail-store --bench ingest` or `bench/reporting.sh`.
//! Environment: `REPORTS` (reports per batched run, default 20000),
//! `REPORTS_UNBATCHED` (per run with batch size 1, default 2000), `MAX_SECS`
//! (a run stops starting batches after this, default 30), `BACKENDS`
//! (`postgres,sqlite`), `ONLY` (run keys as in the SUMMARY line, `pg_b1000,…`),
//! and for experiments `PG_CONF` (`name=value;…` applied with `ALTER SYSTEM`
//! before the runs, restarting the server if need be), `PG_AFTER_INSTALL` (SQL
//! run on each fresh PostgreSQL database once the schema is installed) and
//! `PG_LOG` (copy the server log there at the end).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avail_model::{ApplicationUsage, ClientInformation, ClientReport, PackageInformation};
use avail_store::DatabaseKind;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

/// App-V 5.1: maximum requests per second of one reporting server and one database.
const APPV_REQUESTS_PER_SEC: f64 = 139.0;
/// The goal for PostgreSQL on a 2-core machine.
const GOAL_PG: f64 = 5_000.0;
/// Clients that report.
const HOSTS: usize = 2_000;
/// Users of those clients.
const USERS: usize = 1_500;
/// Packages in the catalog the clients draw from.
const CATALOG: usize = 150;
/// Packages on each client (the package list of one report in ten).
const PACKAGES_PER_HOST: usize = 30;
/// One report in this many carries the package list.
const PACKAGE_LIST_EVERY: u64 = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One measured configuration.
#[derive(Clone, Copy)]
struct Config {
    backend: Backend,
    batch: usize,
    concurrency: usize,
}

impl Config {
    /// `pg_b100_c4`, for the SUMMARY line.
    fn key(&self) -> String {
        let c = self;
        let prefix = if c.backend == Backend::Postgres {
            "pg"
        } else {
            "sqlite"
        };
        if c.concurrency == 1 {
            format!("{prefix}_b{}", c.batch)
        } else {
            format!("{prefix}_b{}_c{}", c.batch, c.concurrency)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// What one run measured.
struct Outcome {
    config: Config,
    reports: usize,
    usage_rows: usize,
    body_bytes: usize,
    elapsed: Duration,
    /// Per-batch latency, sorted.
    latencies: Vec<Duration>,
    /// CPU time of this process (the store, its driver, tokio) during the run.
    cpu_client: Duration,
    /// CPU time of the PostgreSQL server (all its processes) during the run.
    cpu_server: Option<Duration>,
}

impl Outcome {
    fn per_sec(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
    fn reports_per_sec(&self) -> f64 {
        self.per_sec(self.reports)
    }
    /// CPU microseconds per report.
    fn cpu_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.reports as f64
    }
    /// Cores kept busy on average, this process and the server together.
    fn cores_busy(&self) -> f64 {
        (self.cpu_client + self.cpu_server.unwrap_or_default()).as_secs_f64()
            / self.elapsed.as_secs_f64()
    }
    fn latency_ms(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<(), BoxError> {
    let reports_batched = env_usize("REPORTS", 20_000)?;
    let reports_unbatched = env_usize("REPORTS_UNBATCHED", 2_000)?;
    let max_run = Duration::from_secs(env_usize("MAX_SECS", 30)? as u64);
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    let want = |b: Backend| backends.split(',').any(|s| s.trim() == b.name());

    let mut configs = Vec::new();
    for backend in [Backend::Postgres, Backend::Sqlite] {
        if !want(backend) {
            continue;
        }
        for batch in [1, 100, 1000] {
            configs.push(Config {
                backend,
                batch,
                concurrency: 1,
            });
        }
        if backend == Backend::Postgres {
            // A reporting tier has many requests in flight: unbatched but
            // concurrent (one report per request), batched and concurrent, and
            // large batches on as many connections as there are cores (one
            // PostgreSQL backend uses one core).
            for (batch, concurrency) in [(1, 16), (100, 4), (1000, 2)] {
                configs.push(Config {
                    backend,
                    batch,
                    concurrency,
                });
            }
        }
    }

    if let Ok(only) = std::env::var("ONLY") {
        configs.retain(|c| only.split(',').any(|k| k.trim() == c.key()));
    }

    let world = World::new(0x5eed_a7a1_1ab1_e000);
    let pg = if configs.iter().any(|c| c.backend == Backend::Postgres) {
        let pg = avail_testkit::Postgres::start()?;
        if let Ok(conf) = std::env::var("PG_CONF") {
            let mut sql = String::new();
            for setting in conf.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, value) = setting
                    .split_once('=')
                    .ok_or_else(|| format!("PG_CONF: {setting:?} is not name=value"))?;
                // A module's setting (`auto_explain.log_min_duration`) is known
                // only once the module is loaded.
                if let Some((module, _)) = name.trim().split_once('.') {
                    sql.push_str(&format!("LOAD '{module}';\n"));
                }
                sql.push_str(&format!(
                    "ALTER SYSTEM SET {} = '{}';\n",
                    name.trim(),
                    value.trim().replace('\'', "''")
                ));
            }
            sql.push_str("SELECT pg_reload_conf();");
            pg.psql("postgres", &sql)?;
            // Settings such as shared_buffers take a restart.
            let pending = pg.psql(
                "postgres",
                "SELECT count(*) FROM pg_settings WHERE pending_restart",
            )?;
            if pending.trim() != "0" {
                pg.kill()?;
                pg.restart()?;
            }
            println!("PostgreSQL settings from PG_CONF: {conf}");
        }
        let version = pg.psql("postgres", "SHOW server_version")?;
        let settings = pg.psql(
            "postgres",
            "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings \
             WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level', 'full_page_writes', 'max_wal_size')",
        )?;
        println!("PostgreSQL {} ({})", version.trim(), settings.trim());
        Some(pg)
    } else {
        None
    };
    let tmp = tempfile::tempdir()?;
    // Other work on the machine skews every figure: say how busy it was.
    println!("load average at start: {}", load_average());
    if configs.iter().any(|c| c.backend == Backend::Sqlite) {
        println!(
            "SQLite {} (journal_mode=WAL synchronous=FULL), files in {}",
            rusqlite::version(),
            tmp.path().display()
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    let mut seq = 0u64;
    for (k, config) in configs.iter().copied().enumerate() {
        let url = match config.backend {
            Backend::Postgres => {
                let pg = pg.as_ref().ok_or("no PostgreSQL server")?;
                let db = format!("avail_reporting_{k}");
                pg.create_database(&db)?;
                let url = pg.url(&db);
                if let Ok(sql) = std::env::var("PG_AFTER_INSTALL") {
                    // For experiments on the schema (an index or a constraint less).
                    runtime.block_on(avail_store::install(&url, DatabaseKind::Reporting))?;
                    pg.psql(&db, &sql)?;
                }
                url
            }
            Backend::Sqlite => format!(
                "sqlite:{}",
                tmp.path().join(format!("reporting_{k}.db")).display()
            ),
        };
        let count = if config.batch == 1 {
            reports_unbatched
        } else {
            reports_batched
        };
        let label = format!(
            "{:<8} batch {:>4} x{:<2}",
            config.backend.name(),
            config.batch,
            config.concurrency
        );
        match runtime.block_on(measure(
            &world,
            &url,
            pg.as_ref()
                .filter(|_| config.backend == Backend::Postgres)
                .map(|pg| pg.data_dir()),
            config,
            count,
            &mut seq,
            max_run,
        )) {
            Ok(outcome) => {
                println!(
                    "  {label}: {:>6} reports in {:>6.2} s = {:>8.0} reports/s (batch p50 {:.1} ms)",
                    outcome.reports,
                    outcome.elapsed.as_secs_f64(),
                    outcome.reports_per_sec(),
                    outcome.latency_ms(0.5),
                );
                outcomes.push(Ok(outcome));
            }
            Err(e) => {
                // A failed run is a finding, not a reason to lose the others.
                println!("  {label}: FAILED: {e}");
                if let (Backend::Postgres, Some(pg)) = (config.backend, &pg) {
                    let log = std::fs::read_to_string(pg.log_path()).unwrap_or_default();
                    let db = format!("avail_reporting_{k}");
                    let errors: Vec<&str> = log
                        .lines()
                        .filter(|l| {
                            l.contains("ERROR") || l.contains("DETAIL") || l.contains("STATEMENT")
                        })
                        .collect();
                    println!("    server log ({db} and others), last errors:");
                    for line in &errors[errors.len().saturating_sub(12)..] {
                        println!("    | {}", line.chars().take(300).collect::<String>());
                    }
                }
                outcomes.push(Err((config, e.to_string())));
            }
        }
    }
    drop(runtime);

    print_table(&outcomes);
    println!("load average at end: {}", load_average());
    if let (Some(pg), Ok(path)) = (&pg, std::env::var("PG_LOG")) {
        std::fs::copy(pg.log_path(), &path)?;
        println!("PostgreSQL log copied to {path}");
    }
    Ok(())
}

/// Install a fresh Reporting DB at `url`, warm the store up, then ingest `count`
/// fresh reports in batches of `config.batch` from `config.concurrency` tasks.
async fn measure(
    world: &World,
    url: &str,
    server: Option<&Path>,
    config: Config,
    count: usize,
    seq: &mut u64,
    max_run: Duration,
) -> Result<Outcome, BoxError> {
    avail_store::install(url, DatabaseKind::Reporting).await?;
    let store = avail_store::open_reporting(url).await?;

    // Warm-up, untimed: one small batch per task at once, so the pool holds its
    // connections and the server has seen every statement.
    let warm: Vec<Vec<ClientReport>> = (0..config.concurrency)
        .map(|_| {
            (0..config.batch.min(10))
                .map(|_| world.report(next(seq)))
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for batch in warm {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.ingest(&batch).await }));
    }
    for task in tasks {
        task.await??;
    }

    let reports: Arc<Vec<ClientReport>> =
        Arc::new((0..count).map(|_| world.report(next(seq))).collect());
    let batches = count.div_ceil(config.batch);
    let cursor = Arc::new(AtomicUsize::new(0));
    let cpu_before = (process_cpu(), server.map(server_cpu));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.concurrency {
        let (store, reports, cursor) = (store.clone(), reports.clone(), cursor.clone());
        let batch = config.batch;
        tasks.push(tokio::spawn(async move {
            let mut done = Done::default();
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                if i >= batches || start.elapsed() > max_run {
                    break;
                }
                let chunk = &reports[i * batch..((i + 1) * batch).min(reports.len())];
                let t = Instant::now();
                // A failed batch is counted and the run goes on, so that every
                // task has stopped when `measure` returns and the failure rate shows.
                let problem = match store.ingest(chunk).await {
                    Ok(r) if r.stored == chunk.len() as u64 && r.duplicates == 0 => None,
                    Ok(r) => Some(format!(
                        "batch {i}: stored {} duplicates {} of {} fresh reports",
                        r.stored,
                        r.duplicates,
                        chunk.len()
                    )),
                    Err(e) => Some(format!("batch {i}: {e}")),
                };
                if let Some(problem) = problem {
                    done.failed += 1;
                    done.first_failure.get_or_insert(problem);
                    continue;
                }
                done.latencies.push(t.elapsed());
                done.reports += chunk.len();
                done.usage_rows += chunk.iter().map(|r| r.usage.len()).sum::<usize>();
                done.body_bytes += chunk.iter().map(|r| r.body.len()).sum::<usize>();
            }
            done
        }));
    }
    let mut all = Done::default();
    for task in tasks {
        let done = task.await?;
        all.reports += done.reports;
        all.usage_rows += done.usage_rows;
        all.body_bytes += done.body_bytes;
        all.latencies.extend(done.latencies);
        all.failed += done.failed;
        if all.first_failure.is_none() {
            all.first_failure = done.first_failure;
        }
    }
    if let Some(first) = all.first_failure {
        return Err(format!(
            "{} of {} batches failed; first: {first}",
            all.failed,
            all.failed + all.latencies.len()
        )
        .into());
    }
    let Done {
        reports: n,
        usage_rows: usage,
        body_bytes: bytes,
        mut latencies,
        ..
    } = all;
    let elapsed = start.elapsed();
    let cpu_client = process_cpu().saturating_sub(cpu_before.0);
    let cpu_server = match (server, cpu_before.1) {
        (Some(data), Some(before)) => Some(server_cpu(data).saturating_sub(before)),
        _ => None,
    };
    latencies.sort();

    // Sanity, untimed: the first batch again is all duplicates, and a body reads back.
    let first = &reports[..config.batch.min(n)];
    let again = store.ingest(first).await?;
    if again.stored != 0 || again.duplicates != first.len() as u64 {
        return Err(format!("re-ingest of {} reports gave {again:?}", first.len()).into());
    }
    let raw = store
        .raw_report(first[0].id)
        .await?
        .ok_or("first report not stored")?;
    if raw.body != first[0].body {
        return Err("stored body differs".into());
    }
    Ok(Outcome {
        cpu_client,
        cpu_server,
        config,
        reports: n,
        usage_rows: usage,
        body_bytes: bytes,
        elapsed,
        latencies,
    })
}

/// `utime + stime` and `cutime + cstime` of a process, from `/proc/PID/stat`
/// (in USER_HZ ticks, 100 a second on Linux), with its parent's pid.
fn proc_stat(pid: &str) -> Option<(u32, Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is field 3.
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    let ticks = |t: u64| Duration::from_millis(t * 10);
    Some((
        field(4)? as u32,
        ticks(field(14)? + field(15)?),
        ticks(field(16)? + field(17)?),
    ))
}

/// CPU time of this process so far.
fn process_cpu() -> Duration {
    proc_stat("self").map(|(_, own, _)| own).unwrap_or_default()
}

/// CPU time of a PostgreSQL server so far: the postmaster, the children it
/// reaped (ended backends) and its live children (backends, WAL writer,
/// checkpointer, background writer, autovacuum).
fn server_cpu(data_dir: &Path) -> Duration {
    let Some(postmaster) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return Duration::ZERO;
    };
    let mut total = proc_stat(&postmaster.to_string())
        .map(|(_, own, reaped)| own + reaped)
        .unwrap_or_default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((parent, own, _)) = proc_stat(pid)
            && parent == postmaster
        {
            total += own;
        }
    }
    total
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// What the tasks of a run did.
#[derive(Default)]
struct Done {
    reports: usize,
    usage_rows: usize,
    body_bytes: usize,
    latencies: Vec<Duration>,
    failed: usize,
    first_failure: Option<String>,
}

fn next(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

/// A run that finished, or the configuration of one that failed and why.
type RunResult = Result<Outcome, (Config, String)>;

fn print_table(results: &[RunResult]) {
    println!();
    // CPU µs per report: in this process (store, driver, runtime; for SQLite,
    // everything) and in the PostgreSQL server; cores = both over wall time.
    println!(
        "{:<9} {:>5} {:>4} {:>7} {:>6} {:>9} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>5} {:>9}",
        "backend",
        "batch",
        "conc",
        "reports",
        "secs",
        "reports/s",
        "usage rows/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "cpu avl",
        "cpu pg",
        "cores",
        "vs App-V"
    );
    for result in results {
        match result {
            Ok(o) => println!(
                "{:<9} {:>5} {:>4} {:>7} {:>6.2} {:>9.0} {:>12.0} {:>6.1} {:>8.2} {:>8.2} {:>8.0} {:>8} {:>5.2} {:>8.1}x",
                o.config.backend.name(),
                o.config.batch,
                o.config.concurrency,
                o.reports,
                o.elapsed.as_secs_f64(),
                o.reports_per_sec(),
                o.per_sec(o.usage_rows),
                o.per_sec(o.body_bytes) / 1e6,
                o.latency_ms(0.5),
                o.latency_ms(0.99),
                o.cpu_us(o.cpu_client),
                o.cpu_server
                    .map_or_else(|| "-".to_string(), |c| format!("{:.0}", o.cpu_us(c))),
                o.cores_busy(),
                o.reports_per_sec() / APPV_REQUESTS_PER_SEC,
            ),
            Err((c, e)) => println!(
                "{:<9} {:>5} {:>4} FAILED: {e}",
                c.backend.name(),
                c.batch,
                c.concurrency
            ),
        }
    }
    println!(
        "(cpu avl / cpu pg: CPU µs per report in this process and in the PostgreSQL server; \
         cores: both together over wall time, of {} here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let outcomes: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let reports: usize = outcomes.iter().map(|o| o.reports).sum();
    if reports > 0 {
        let usage: usize = outcomes.iter().map(|o| o.usage_rows).sum();
        let bytes: usize = outcomes.iter().map(|o| o.body_bytes).sum();
        println!(
            "(a report: {:.1} usage rows and {:.1} KB of body on average, the package list on one in {PACKAGE_LIST_EVERY}; \
             App-V 5.1: {APPV_REQUESTS_PER_SEC} requests/s max, 121 average, for one reporting server)",
            usage as f64 / reports as f64,
            bytes as f64 / reports as f64 / 1e3
        );
    }

    let mut summary = String::from("SUMMARY");
    for result in results {
        match result {
            Ok(o) => summary.push_str(&format!(" {}={:.0}", o.config.key(), o.reports_per_sec())),
            Err((c, _)) => summary.push_str(&format!(" {}=FAILED", c.key())),
        }
    }
    summary.push_str(&format!(" appv_reporting_rps={APPV_REQUESTS_PER_SEC}"));
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let best = outcomes
            .iter()
            .filter(|o| o.config.backend == backend)
            .max_by(|a, b| a.reports_per_sec().total_cmp(&b.reports_per_sec()));
        if let Some(best) = best {
            let short = if backend == Backend::Postgres {
                "pg"
            } else {
                "sqlite"
            };
            summary.push_str(&format!(
                " best_{short}={} best_{short}_rps={:.0} ratio_best_{short}_vs_appv={:.1}",
                best.config.key(),
                best.reports_per_sec(),
                best.reports_per_sec() / APPV_REQUESTS_PER_SEC,
            ));
            if backend == Backend::Postgres {
                let met = best.reports_per_sec() >= GOAL_PG;
                summary.push_str(&format!(
                    " pg_goal_{GOAL_PG}={}",
                    if met { "met" } else { "missed" }
                ));
            }
        }
    }
    println!("{summary}");
}

/// SplitMix64: a small deterministic generator, enough to spread reports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn uuid(&mut self) -> Uuid {
        let bytes = ((self.next() as u128) << 64 | self.next() as u128).to_le_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// A package of the catalog.
struct Package {
    id: Uuid,
    version_id: Uuid,
    name: String,
    version: String,
    source: String,
    /// Applications: (name, version).
    apps: Vec<(String, String)>,
}

/// A client machine and what is on it.
struct Host {
    client: ClientInformation,
    /// Indexes into the catalog.
    packages: Vec<usize>,
    /// Indexes into the users.
    users: Vec<usize>,
    /// The version id of a connection group on the client, if it has one.
    group: Option<Uuid>,
}

/// The fixed world the reports describe: catalog, hosts, users.
struct World {
    seed: u64,
    catalog: Vec<Package>,
    hosts: Vec<Host>,
    users: Vec<String>,
    servers: Vec<String>,
    base: DateTime<Utc>,
}

const PRODUCTS: &[&str] = &[
    "Notepad++",
    "7-Zip",
    "Adobe Reader DC",
    "Visual Studio Code",
    "GIMP",
    "LibreOffice",
    "Firefox ESR",
    "Paint.NET",
    "VLC media player",
    "Microsoft Visio Viewer",
    "SAP GUI",
    "Citrix Receiver",
    "Putty",
    "WinSCP",
    "KeePass",
    "Wireshark",
    "Inkscape",
    "Audacity",
    "FileZilla",
    "Java Runtime",
];
const APP_SUFFIXES: &[&str] = &["", " Viewer", " Console", " Help", " Updater"];

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng(seed);
        let catalog: Vec<Package> = (0..CATALOG)
            .map(|i| {
                let product = PRODUCTS[i % PRODUCTS.len()];
                let edition = i / PRODUCTS.len();
                let version = format!(
                    "{}.{}.{}.0",
                    1 + rng.below(12),
                    rng.below(10),
                    rng.below(400)
                );
                let name = if edition == 0 {
                    product.to_string()
                } else {
                    format!("{product} (build {edition})")
                };
                let apps = (0..1 + rng.below(3))
                    .map(|a| {
                        (
                            format!("{product}{}", APP_SUFFIXES[a % APP_SUFFIXES.len()]),
                            version.clone(),
                        )
                    })
                    .collect();
                Package {
                    id: rng.uuid(),
                    version_id: rng.uuid(),
                    source: format!(
                        "\\\\appvcontent01.corp.example.com\\packages\\{}_{version}.appv",
                        name.replace([' ', '(', ')'], "")
                    ),
                    name,
                    version,
                    apps,
                }
            })
            .collect();
        let users = (0..USERS).map(|i| format!("CORP\\user{i:04}")).collect();
        let hosts = (0..HOSTS)
            .map(|i| {
                // One host in twenty is a Remote Desktop server with many users.
                let server = i % 20 == 0;
                let (os_version, sp) = match rng.below(10) {
                    0..=3 => ("6.1", 1),
                    4..=5 => ("6.3", 0),
                    _ => ("10.0", 0),
                };
                let client = ClientInformation {
                    host_name: if server {
                        format!("rds{i:04}.corp.example.com")
                    } else {
                        format!("pc{i:04}.corp.example.com")
                    },
                    client_version: if rng.below(4) == 0 {
                        "5.1.86.0"
                    } else {
                        "5.1.104.0"
                    }
                    .into(),
                    processor_arch: if rng.below(10) == 0 { "x86" } else { "x64" }.into(),
                    os_version: if server {
                        "6.3".into()
                    } else {
                        os_version.into()
                    },
                    os_service_pack: sp,
                    os_type: if server { "Server" } else { "Client" }.into(),
                };
                let mut packages: Vec<usize> = Vec::with_capacity(PACKAGES_PER_HOST);
                while packages.len() < PACKAGES_PER_HOST {
                    let p = rng.below(CATALOG);
                    if !packages.contains(&p) {
                        packages.push(p);
                    }
                }
                let users = (0..if server { 25 } else { 1 + rng.below(2) })
                    .map(|_| rng.below(USERS))
                    .collect();
                let group = (rng.below(10) == 0).then(|| rng.uuid());
                Host {
                    client,
                    packages,
                    users,
                    group,
                }
            })
            .collect();
        World {
            seed,
            catalog,
            hosts,
            users,
            servers: (1..=4).map(|i| format!("pubsvr{i:02}")).collect(),
            base: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        }
    }

    /// Report number `seq`: a fresh random id, one host, 16 to 24 launches,
    /// the package list on one report in ten, and the XML body saying so.
    fn report(&self, seq: u64) -> ClientReport {
        let mut rng = Rng(self.seed ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let host = &self.hosts[rng.below(HOSTS)];
        let received_at = self.base + TimeDelta::milliseconds(seq as i64 * 40);
        let usage: Vec<ApplicationUsage> = (0..16 + rng.below(9))
            .map(|_| {
                let package = &self.catalog[host.packages[rng.below(host.packages.len())]];
                let (application, application_version) =
                    &package.apps[rng.below(package.apps.len())];
                let launched_at = received_at - TimeDelta::seconds(60 + rng.below(86_400) as i64);
                ApplicationUsage {
                    application: application.clone(),
                    application_version: application_version.clone(),
                    server: self.servers[rng.below(self.servers.len())].clone(),
                    user: self.users[host.users[rng.below(host.users.len())]].clone(),
                    package_version_id: package.version_id,
                    connection_group_version_id: host.group.filter(|_| rng.below(3) == 0),
                    launched_at,
                    launch_status: if rng.below(50) == 0 {
                        "1-80070005"
                    } else {
                        "0-0"
                    }
                    .into(),
                    shutdown_at: (rng.below(10) != 0)
                        .then(|| launched_at + TimeDelta::seconds(30 + rng.below(8 * 3600) as i64))
                        .filter(|t| *t <= received_at),
                }
            })
            .collect();
        let packages: Vec<PackageInformation> = if seq.is_multiple_of(PACKAGE_LIST_EVERY) {
            host.packages
                .iter()
                .map(|&p| {
                    let p = &self.catalog[p];
                    PackageInformation {
                        package_id: p.id,
                        version_id: p.version_id,
                        name: p.name.clone(),
                        version: Some(p.version.clone()),
                        source: Some(p.source.clone()),
                        percent_cached: Some(if rng.below(3) == 0 {
                            rng.below(100) as i32
                        } else {
                            100
                        }),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let body = body_xml(&host.client, &packages, &usage);
        ClientReport {
            id: rng.uuid(),
            received_at,
            source_host: format!(
                "10.{}.{}.{}",
                20 + rng.below(4),
                rng.below(256),
                1 + rng.below(254)
            ),
            body,
            client: host.client.clone(),
            packages,
            usage,
        }
    }
}

/// The `SetReport` body (MS-VAPR): `CLIENT_DATA` with `PKG_LIST` and `APP_RECORDS`.
fn body_xml(
    c: &ClientInformation,
    packages: &[PackageInformation],
    usage: &[ApplicationUsage],
) -> String {
    use std::fmt::Write;
    let mut x = String::with_capacity(200 + packages.len() * 240 + usage.len() * 260);
    let _ = write!(
        x,
        "<CLIENT_DATA Host=\"{}\" Ver=\"{}\" ProcessorArch=\"{}\" OSVer=\"{}\" OSServicePack=\"{}\" OSType=\"{}\">\r\n",
        c.host_name, c.client_version, c.processor_arch, c.os_version, c.os_service_pack, c.os_type
    );
    x.push_str("  <PKG_LIST>\r\n");
    for p in packages {
        let _ = write!(
            x,
            "    <PKG_DATA Guid=\"{{{}}}\" VerGuid=\"{{{}}}\" Name=\"{}\" Ver=\"{}\" Source=\"{}\" PctCached=\"{}\"/>\r\n",
            p.package_id,
            p.version_id,
            p.name,
            p.version.as_deref().unwrap_or(""),
            p.source.as_deref().unwrap_or(""),
            p.percent_cached.unwrap_or(0)
        );
    }
    x.push_str("  </PKG_LIST>\r\n  <APP_RECORDS>\r\n");
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for u in usage {
        let _ = write!(
            x,
            "    <APP_RECORD Name=\"{}\" Ver=\"{}\" Server=\"{}\" User=\"{}\" PackageVersion=\"{}\"",
            u.application, u.application_version, u.server, u.user, u.package_version_id
        );
        if let Some(g) = u.connection_group_version_id {
            let _ = write!(x, " ConnectionGroupVersion=\"{g}\"");
        }
        let _ = write!(
            x,
            " Launched=\"{}\" LaunchStatus=\"{}\"",
            time(u.launched_at),
            u.launch_status
        );
        if let Some(s) = u.shutdown_at {
            let _ = write!(x, " Shutdown=\"{}\"", time(s));
        }
        x.push_str("/>\r\n");
    }
    x.push_str("  </APP_RECORDS>\r\n</CLIENT_DATA>\r\n");
    x
}
