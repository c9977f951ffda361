//! A real pg_auto_failover formation survives the loss of its primary's
//! host, twice (there and back), without losing an acknowledged write, and
//! comes back after the whole database was down; the timings are printed.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use avail_testkit::Formation;

const DB: &str = "avail_failover";
/// How long writes may stay unavailable after the primary's host died.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows written through the multi-host URL: acknowledged ones, and the
/// attempts whose outcome is unknown (they may or may not be there).
#[derive(Default)]
struct Writes {
    next: i64,
    acked: Vec<i64>,
}

impl Writes {
    /// One `INSERT` through [`Formation::psql`] (the multi-host URL with
    /// `target_session_attrs=read-write`); `Ok` only when acknowledged.
    fn write(&mut self, f: &Formation) -> Result<i64> {
        self.next += 1;
        let id = self.next;
        f.psql(DB, &format!("INSERT INTO t (id) VALUES ({id});"))?;
        self.acked.push(id);
        Ok(id)
    }

    /// Writes until one is acknowledged; the instant it was.
    fn write_until_ok(&mut self, f: &Formation, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.write(f) {
                Ok(_) => return Ok(Instant::now()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no write succeeded within {timeout:?}")));
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Every acknowledged row is in the table exactly once.
    fn check(&self, f: &Formation) -> Result<()> {
        let out = f.psql(DB, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id;")?;
        let mut counts = HashMap::new();
        for line in out.lines() {
            let (id, n) = line.split_once('|').context("a row id|count")?;
            counts.insert(id.parse::<i64>()?, n.parse::<i64>()?);
        }
        for id in &self.acked {
            match counts.get(id) {
                Some(1) => {}
                Some(n) => bail!("acknowledged row {id} is there {n} times"),
                None => bail!("acknowledged row {id} is lost"),
            }
        }
        ensure!(
            counts.values().all(|n| *n == 1),
            "a row is there twice: {counts:?}"
        );
        Ok(())
    }
}

/// Waits until the monitor names `expected` as the primary.
fn wait_primary(f: &Formation, expected: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f.primary() {
            Ok(p) if p == expected => return Ok(()),
            seen if Instant::now() >= deadline => {
                bail!("node {expected} is not the primary: {seen:?}")
            }
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Kills the primary's host, waits for writes to work again, checks the data
/// and the failover times, then brings the killed node back as a secondary.
fn fail_over(f: &Formation, writes: &mut Writes, round: usize) -> Result<usize> {
    let old = f.primary()?;
    let new = 1 - old;
    for _ in 0..5 {
        writes.write(f)?;
    }
    let killed_at = f.kill_node(old)?;
    let writable_at = writes.write_until_ok(f, WRITE_TIMEOUT)?;
    let unavailable = writable_at - killed_at;
    for _ in 0..5 {
        writes.write(f)?;
    }
    writes.check(f)?;
    wait_primary(f, new)?;
    let times = f.failover_times(old, killed_at)?;
    eprintln!(
        "failover {round} (node {old} killed): detection {:.2} s, decision {:.2} s, \
         promotion {:.2} s, writes unavailable {:.2} s",
        times.detection.as_secs_f64(),
        times.decision.as_secs_f64(),
        times.promotion.as_secs_f64(),
        unavailable.as_secs_f64()
    );
    assert!(times.detection <= times.decision, "{times:?}");
    assert!(times.detection <= times.promotion, "{times:?}");
    assert!(times.promotion < Duration::from_secs(30), "{times:?}");
    assert!(unavailable < Duration::from_secs(30), "{unavailable:?}");

    let started = Instant::now();
    f.start_node(old)?;
    f.wait_healthy(Duration::from_secs(90))?;
    eprintln!(
        "failover {round}: node {old} rejoined as secondary in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(f.primary()?, new, "the rejoined node must be the secondary");
    writes.write(f)?;
    writes.check(f)?;
    Ok(new)
}

#[test]
fn failover_there_and_back_and_full_restart() -> Result<()> {
    let started = Instant::now();
    let f = Formation::start()?;
    eprintln!(
        "formation started in {:.2} s (monitor port {}, nodes {} and {})",
        started.elapsed().as_secs_f64(),
        f.monitor_port(),
        f.node_port(0),
        f.node_port(1)
    );
    let p0 = f.node_port(0);
    let p1 = f.node_port(1);
    assert_eq!(
        f.url("x"),
        format!(
            "postgres://postgres@127.0.0.1:{p0},127.0.0.1:{p1}/x?target_session_attrs=read-write&connect_timeout=2"
        )
    );
    let first = f.primary()?;
    f.create_database(DB)?;
    f.psql(DB, "CREATE TABLE t (id bigint NOT NULL);")?;
    let mut writes = Writes::default();

    let second = fail_over(&f, &mut writes, 1)?;
    assert_eq!(second, 1 - first);
    let third = fail_over(&f, &mut writes, 2)?;
    assert_eq!(third, first);

    // The database entirely down, then back.
    let down = Instant::now();
    f.stop_all()?;
    assert!(f.psql(DB, "SELECT 1").is_err());
    eprintln!("stop_all took {:.2} s", down.elapsed().as_secs_f64());
    let up = Instant::now();
    f.start_all()?;
    eprintln!("start_all took {:.2} s", up.elapsed().as_secs_f64());
    writes.write(&f)?;
    writes.check(&f)?;
    eprintln!(
        "{} acknowledged writes, all there once; whole test {:.2} s",
        writes.acked.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
