//! The seed's validation procedures as scenarios against a [`Cluster`], each
//! injecting its fault `injections` times while load runs, and each returning
//! a [`Scenario`]: per kind of operation what was attempted, failed, lost and
//! duplicated, the worst stall, and for database failovers the timings.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::cluster::{Cluster, PACKAGE, output_ok, path, psql};
use super::load::{Load, Tally};
use crate::AvailNode;

/// The example SetReport body (MS-VAPR §3.2) every report post sends.
const SET_REPORT: &str = include_str!("../../../server/tests/fixtures/reporting/SetReport.xml");

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct Scenario {
    /// `c-publishing`, `d-database`, …
    pub id: String,
    /// What was done, in a sentence.
    pub what: String,
    /// Faults injected.
    pub injections: usize,
    /// Per kind of operation: its tally, and whether its failures count
    /// against the "0 failed client operations" target.
    pub operations: Vec<Operation>,
    /// Database failovers: one entry per injection.
    pub failovers: Vec<Value>,
}

/// One kind of operation in a scenario.
#[derive(Debug)]
pub struct Operation {
    /// What the operation is (`refresh`, `report`, …).
    pub name: String,
    /// Whether a failure is a client-visible failure the targets forbid.
    pub must_not_fail: bool,
    /// What it saw.
    pub tally: Tally,
    /// Acknowledged writes missing afterwards.
    pub lost: u64,
    /// Acknowledged writes present more than once.
    pub duplicated: u64,
}

impl Scenario {
    fn new(id: &str, what: &str, injections: usize) -> Scenario {
        Scenario {
            id: id.to_owned(),
            what: what.to_owned(),
            injections,
            ..Scenario::default()
        }
    }

    /// Add the tallies of a finished load.
    fn add(&mut self, tallies: Vec<(String, Tally)>, must_not_fail: bool) {
        for (name, tally) in tallies {
            self.operations.push(Operation {
                name,
                must_not_fail,
                tally,
                lost: 0,
                duplicated: 0,
            });
        }
    }

    /// Whether every correctness target holds: no failed client operation
    /// where none may fail, nothing lost or duplicated.
    pub fn passed(&self) -> bool {
        self.operations
            .iter()
            .all(|o| (!o.must_not_fail || o.tally.failed == 0) && o.lost == 0 && o.duplicated == 0)
    }
}

/// A fresh UUID-shaped report id: the run's nonce and a counter.
fn report_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            ^ u64::from(std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        nonce >> 32,
        (nonce >> 16) & 0xffff,
        nonce & 0xfff,
        (n >> 48) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// A report poster for a load thread: POST the example report with a new
/// `Avail-Report-Id` to `addr`; a report that failed is sent again with the
/// same id on the next call, as the Avail client's outbox does. Acknowledged
/// under its id.
fn report_poster(addr: String) -> impl FnMut() -> Result<Option<String>> + Send + 'static {
    let mut pending: Option<String> = None;
    move || {
        let id = pending.take().unwrap_or_else(report_id);
        let headers = [
            ("Content-Type", "text/xml; charset=utf-8"),
            ("Avail-Report-Id", id.as_str()),
        ];
        match super::http(&addr, "POST", "/", &headers, SET_REPORT.as_bytes()) {
            Ok((200, _)) => Ok(Some(id)),
            Ok((status, body)) => {
                pending = Some(id);
                bail!(
                    "report answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )
            }
            Err(e) => {
                pending = Some(id);
                Err(e)
            }
        }
    }
}

/// A client refresh for a load thread.
fn syncer(cluster: &Cluster) -> impl FnMut() -> Result<Option<String>> + Send + 'static {
    let mut command = cluster.client.command(&["sync"]);
    move || output_ok("avail client sync", command.output()).map(|_| None)
}

/// How many acknowledged report ids are missing from the Reporting DB, and
/// how many are there more than once.
fn check_reports(cluster: &Cluster, op: &mut Operation) -> Result<()> {
    let (lost, duplicated) = check_keys(
        cluster,
        "avail_reporting",
        "SELECT report_id::text, count(*) FROM raw_reports GROUP BY 1",
        &op.tally.acked,
    )?;
    op.lost = lost;
    op.duplicated = duplicated;
    Ok(())
}

/// Of `acked`, how many keys `query` (key, count) lacks and how many it
/// counts more than once.
fn check_keys(cluster: &Cluster, db: &str, query: &str, acked: &[String]) -> Result<(u64, u64)> {
    let rows = cluster.sql(db, query)?;
    let counts: std::collections::HashMap<&str, u64> = rows
        .lines()
        .filter_map(|l| {
            let (k, n) = l.split_once('|')?;
            Some((k, n.trim().parse().ok()?))
        })
        .collect();
    let mut lost = 0;
    let mut duplicated = 0;
    for key in acked {
        match counts.get(key.as_str()) {
            None => lost += 1,
            Some(&n) if n > 1 => duplicated += 1,
            Some(_) => {}
        }
    }
    Ok((lost, duplicated))
}

/// Wait until HAProxy has had time to see a restarted node up again; an
/// error once the harness was interrupted.
fn settle() -> Result<()> {
    std::thread::sleep(Duration::from_millis(2_500));
    super::check_interrupted()
}

/// One injection of a node kill under running load: the load runs 0.7 s,
/// the node is SIGKILLed, restarted 0.5 s later, and the cluster settles.
fn kill_under_load(node: &mut AvailNode) -> Result<()> {
    std::thread::sleep(Duration::from_millis(700));
    node.kill();
    std::thread::sleep(Duration::from_millis(500));
    node.restart()?;
    settle()
}

/// (b) publishing refresh and a launch, then (c) a publishing node killed
/// while refreshes run back to back.
pub fn publishing_node_killed(cluster: &mut Cluster, injections: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "c-publishing",
        "a publishing node killed (SIGKILL) while the client refreshes back to back through \
         HAProxy, restarted, the other one next",
        injections,
    );
    eprintln!("ha: (b) refresh and launch");
    cluster.client.ok(&["sync"])?;
    cluster.run_app()?;
    eprintln!("ha: (c) killing publishing nodes during refreshes");
    let mut load = Load::new();
    load.spawn("refresh", Duration::ZERO, syncer(cluster));
    for i in 0..injections {
        super::check_interrupted()?;
        kill_under_load(&mut cluster.publishing[i % 2])?;
    }
    s.add(load.finish(), true);
    Ok(s)
}

/// (c) a content node killed while the client streams the package cold for
/// a launch, which must print the SHA-256 of every byte of its data.
pub fn content_node_killed(cluster: &mut Cluster, injections: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "c-content",
        "the package's blocks dropped from the client cache, then a content node (the Avail \
         content role or nginx, in turn) killed while `avail run` streams them cold, restarted",
        injections,
    );
    let mut tally = Tally::default();
    let origin = Instant::now();
    let mut missed = 0;
    let mut i = 0;
    while i < injections {
        super::check_interrupted()?;
        eprintln!(
            "ha: (c) content node killed mid-stream, {}/{injections}",
            i + 1
        );
        cluster
            .client
            .ok(&["package", "remove", &cluster.version_id])?;
        cluster.client.ok(&["sync"])?;
        let mut run = cluster.app_runner();
        let launch = std::thread::spawn(move || {
            let started = Instant::now();
            (started, run())
        });
        // Wait until a part of the package is cached, then kill.
        let waited = Instant::now();
        while cached_percent(cluster, &cluster.version_id)? < 5
            && waited.elapsed() < Duration::from_secs(20)
            && !launch.is_finished()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mid_stream = !launch.is_finished();
        let victim = i % 2;
        if victim == 0 {
            cluster.content.kill();
        } else {
            cluster.nginx.kill();
        }
        let (started, result) = launch
            .join()
            .map_err(|_| anyhow::anyhow!("the launch thread panicked"))?;
        tally.record(started, origin, result);
        if victim == 0 {
            cluster.content.restart()?;
        } else {
            cluster.nginx.restart()?;
        }
        settle()?;
        if mid_stream {
            i += 1;
        } else {
            // The launch was done before the kill: not an injection; again.
            missed += 1;
            if missed > 2 * injections {
                bail!(
                    "the cold launch kept finishing before a content node could be killed \
                     ({missed} times): use a larger --payload-mb"
                );
            }
        }
    }
    s.add(vec![("launch (cold stream)".to_owned(), tally)], true);
    Ok(s)
}

/// The cached percentage the client lists for `version_id`.
fn cached_percent(cluster: &Cluster, version_id: &str) -> Result<u64> {
    let listed: Value = serde_json::from_str(&cluster.client.ok(&["--json", "package", "list"])?)?;
    let packages = listed
        .as_array()
        .or_else(|| listed["packages"].as_array())
        .context("package list: not an array")?;
    Ok(packages
        .iter()
        .find(|p| p["version_id"].as_str() == Some(version_id))
        .and_then(|p| p["cached_percent"].as_f64())
        .unwrap_or(0.0) as u64)
}

/// (d) the database primary killed while management writes and report posts
/// run; pg_auto_failover promotes the secondary, the killed node rejoins.
pub fn database_failover(cluster: &mut Cluster, injections: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "d-database",
        "the PostgreSQL primary's node killed (keeper and postgres, SIGKILL) while management \
         writes (group creates, grants, imports) and report posts run through HAProxy; \
         pg_auto_failover promotes the secondary; the old primary rejoins as secondary",
        injections,
    );
    let mut load = Load::new();
    // Grants and group creates: a write that failed is made again under the
    // same name until acknowledged, as an administrator would; "already"
    // on a retry means the failed attempt had been committed.
    let mut pending: Option<(u64, usize)> = None;
    let mut n = 0u64;
    let write_admin = cluster.admin_client();
    load.spawn("management write", Duration::from_millis(20), move || {
        let (i, step) = pending.take().unwrap_or_else(|| {
            n += 1;
            (n, 0)
        });
        let group = format!("ha-w-{i}");
        let args: Vec<&str> = if step == 0 {
            vec!["group", "create", &group]
        } else {
            vec!["package", "grant", PACKAGE, &group]
        };
        let out = write_admin.output(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        // A retry of a write that was committed before its answer was lost.
        if out.status.success() || err.contains("already") {
            if step == 0 {
                pending = Some((i, 1));
            }
            return Ok(Some(format!("{}:{group}", ["group", "grant"][step])));
        }
        pending = Some((i, step));
        bail!("avail admin {}: {}", args.join(" "), err.trim())
    });
    // Imports of small packages, each packed just before its first attempt
    // and imported again until acknowledged.
    let import_admin = cluster.admin_client();
    let small = cluster.work.path().join("small");
    let packer = cluster.packer();
    let mut pending_import: Option<(std::path::PathBuf, String)> = None;
    let mut packed = 0u64;
    load.spawn("management import", Duration::from_millis(50), move || {
        let (appv, version_id) = match pending_import.take() {
            Some(p) => p,
            None => {
                packed += 1;
                pack_small(&packer, &small, packed)?
            }
        };
        let out = import_admin.output(&["package", "import", path(&appv)?])?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("already") {
            return Ok(Some(format!("import:{version_id}")));
        }
        pending_import = Some((appv, version_id));
        bail!("avail admin package import: {}", err.trim())
    });
    for _ in 0..2 {
        load.spawn(
            "report",
            Duration::from_millis(20),
            report_poster(cluster.lb.reporting.clone()),
        );
    }
    let probe_url = cluster.formation.url("ha_probe");
    load.spawn("database probe", Duration::from_millis(20), move || {
        psql(&probe_url, "INSERT INTO probe DEFAULT VALUES").map(|_| None)
    });
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..injections {
        super::check_interrupted()?;
        let primary = cluster.formation.primary()?;
        eprintln!(
            "ha: (d) killing the database primary (node {primary}), {}/{injections}",
            i + 1
        );
        let killed_at = cluster.formation.kill_node(primary)?;
        // Until both the bare writer and Avail's writes went through again
        // after their outage (the first of each that failed after the kill).
        let started = Instant::now();
        let (db_back, avail_back) = loop {
            let db = load.peek("database probe").recovered_after(killed_at);
            let avail = db.and_then(|db| load.peek("management write").first_ok_after(db));
            if let (Some(db), Some(avail)) = (db, avail)
                && started.elapsed() > Duration::from_secs(1)
            {
                break (db, avail);
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("writes did not resume within 90 s of killing the primary");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let times = cluster
            .formation
            .failover_times(primary, killed_at)
            .context("failover times from the monitor")?;
        let ms = |d: Duration| d.as_millis() as u64;
        let writes = load.peek("management write");
        let first_after_promotion = writes
            .first_ok_after(killed_at + times.promotion)
            .map(|t| ms(t - killed_at));
        s.failovers.push(json!({
            "killed_node": primary,
            "detection_ms": ms(times.detection),
            "promotion_ms": ms(times.promotion),
            "database_writable_ms": ms(db_back - killed_at),
            "first_avail_write_after_promotion_ms": first_after_promotion,
            "avail_write_after_database_writable_ms": ms(avail_back - db_back),
        }));
        eprintln!(
            "ha: (d) {}",
            s.failovers.last().map(Value::to_string).unwrap_or_default()
        );
        cluster.formation.start_node(primary)?;
        cluster.formation.wait_healthy(Duration::from_secs(120))?;
        std::thread::sleep(Duration::from_secs(2));
    }
    // Let what was retried settle before counting.
    std::thread::sleep(Duration::from_secs(1));
    s.add(load.finish(), false);
    for op in &mut s.operations {
        match op.name.as_str() {
            "report" => check_reports(cluster, op)?,
            "management write" => {
                let (l1, d1) = check_keys(
                    cluster,
                    "avail_management",
                    "SELECT 'group:' || name, count(*) FROM groups GROUP BY 1 \
                     UNION ALL SELECT 'grant:' || group_name, count(*) FROM entitlements e \
                     JOIN package_versions v USING (version_id) WHERE v.name = 'HA App' GROUP BY 1",
                    &op.tally.acked,
                )?;
                (op.lost, op.duplicated) = (l1, d1);
            }
            "management import" => {
                let (l, d) = check_keys(
                    cluster,
                    "avail_management",
                    "SELECT 'import:' || version_id::text, count(*) FROM package_versions GROUP BY 1",
                    &op.tally.acked,
                )?;
                (op.lost, op.duplicated) = (l, d);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Small package number `i` ("HA Write i") packed under `dir`: its path
/// and VersionId.
fn pack_small(
    packer: &super::cluster::Packer,
    dir: &std::path::Path,
    i: u64,
) -> Result<(std::path::PathBuf, String)> {
    let tree = dir.join(format!("tree-{i}"));
    std::fs::create_dir_all(tree.join("opt/small"))?;
    std::fs::write(
        tree.join("opt/small/file.txt"),
        format!("small package {i}\n"),
    )?;
    let appv = dir.join(format!("small-{i}.appv"));
    let version_id = report_id();
    packer.pack(
        &tree,
        &appv,
        &format!("HA Write {i}"),
        &["--version-id", &version_id],
    )?;
    Ok((appv, version_id))
}

/// (e) every management node and the database down: refreshes and launches
/// go on, and a publishing node restarted meanwhile serves its last catalog.
pub fn management_down(cluster: &mut Cluster, injections: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "e-management-down",
        "both management nodes killed and both database nodes stopped; then client refreshes, \
         a launch, and a publishing node restarted (it must serve its last catalog from disk); \
         then everything back",
        injections,
    );
    let mut tally = Tally::default();
    let origin = Instant::now();
    for i in 0..injections {
        super::check_interrupted()?;
        eprintln!(
            "ha: (e) management and database down, {}/{injections}",
            i + 1
        );
        for node in &mut cluster.management {
            node.kill();
        }
        cluster.formation.stop_all()?;
        for _ in 0..3 {
            let started = Instant::now();
            let r = cluster.client.ok(&["sync"]).map(|_| None);
            tally.record(started, origin, r);
        }
        let started = Instant::now();
        tally.record(started, origin, cluster.run_app().map(|()| None));
        let node = &mut cluster.publishing[i % 2];
        node.kill();
        let started = Instant::now();
        let served = node.restart().and_then(|()| {
            let addr = node.publishing_url.trim_start_matches("http://").to_owned();
            let bearer = format!("Bearer {}", cluster.machine_credential);
            let (status, body) = super::http(
                &addr,
                "GET",
                "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64",
                &[("Authorization", bearer.as_str())],
                b"",
            )?;
            let body = String::from_utf8_lossy(&body);
            if status != 200 || !body.contains(&cluster.version_id) {
                bail!(
                    "the restarted publishing node answered {status} without the package: {body}"
                );
            }
            Ok(None)
        });
        tally.record(started, origin, served);
        settle()?;
        let started = Instant::now();
        let r = cluster.client.ok(&["sync"]).map(|_| None);
        tally.record(started, origin, r);
        cluster.formation.start_all()?;
        for node in &mut cluster.management {
            node.restart()?;
        }
        cluster.wait_all_up(Duration::from_secs(60))?;
    }
    s.add(
        vec![("refresh, launch, restarted node".to_owned(), tally)],
        true,
    );
    Ok(s)
}

/// (f) a reporting node killed while clients post reports.
pub fn reporting_node_killed(cluster: &mut Cluster, injections: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "f-reporting",
        "a reporting node killed (SIGKILL) while four clients post reports through HAProxy \
         (each retried with its id until answered 200), restarted, the other one next",
        injections,
    );
    let mut load = Load::new();
    for _ in 0..4 {
        load.spawn(
            "report",
            Duration::ZERO,
            report_poster(cluster.lb.reporting.clone()),
        );
    }
    for i in 0..injections {
        super::check_interrupted()?;
        eprintln!("ha: (f) reporting node killed, {}/{injections}", i + 1);
        kill_under_load(&mut cluster.reporting[i % 2])?;
    }
    s.add(load.finish(), true);
    if let Some(op) = s.operations.iter_mut().find(|o| o.name == "report") {
        check_reports(cluster, op)?;
    }
    Ok(s)
}

/// (g) a rolling upgrade: every node stopped (SIGTERM) and started again in
/// turn while refreshes, launches, report posts and management reads run.
pub fn rolling_upgrade(cluster: &mut Cluster, passes: usize) -> Result<Scenario> {
    let mut s = Scenario::new(
        "g-rolling-upgrade",
        "each node in turn (two management, two publishing, two reporting, the content role: \
         SIGTERM; the nginx content node: SIGQUIT) stopped gracefully and started again, \
         HAProxy given 2.5 s to see it back, while refreshes, launches, report posts and \
         management reads run",
        passes,
    );
    let mut load = Load::new();
    load.spawn("refresh", Duration::from_millis(50), syncer(cluster));
    load.spawn("launch", Duration::from_millis(50), cluster.app_runner());
    load.spawn(
        "report",
        Duration::from_millis(20),
        report_poster(cluster.lb.reporting.clone()),
    );
    let list = cluster.admin_client();
    load.spawn("management read", Duration::from_millis(50), move || {
        output_ok(
            "avail admin package list",
            list.output(&["package", "list"]),
        )
        .map(|_| None)
    });
    for pass in 0..passes {
        eprintln!("ha: (g) rolling restart, pass {}/{passes}", pass + 1);
        let nodes = cluster
            .management
            .iter_mut()
            .chain(cluster.publishing.iter_mut())
            .chain(cluster.reporting.iter_mut())
            .chain(std::iter::once(&mut cluster.content));
        for node in nodes {
            node.terminate()?;
            node.restart()?;
            settle()?;
        }
        cluster.nginx.quit()?;
        cluster.nginx.restart()?;
        settle()?;
    }
    s.add(load.finish(), true);
    if let Some(op) = s.operations.iter_mut().find(|o| o.name == "report") {
        check_reports(cluster, op)?;
    }
    Ok(s)
}
