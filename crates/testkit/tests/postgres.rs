//! The throwaway PostgreSQL servers really start, answer, replicate
//! synchronously, survive the loss of the primary by promotion, and leave
//! nothing behind.

use std::time::Instant;

use avail_testkit::Postgres;

#[test]
fn start_create_database_and_query() -> anyhow::Result<()> {
    let started = Instant::now();
    let pg = Postgres::start()?;
    eprintln!("start: {:?}", started.elapsed());
    assert_eq!(pg.host(), "127.0.0.1");
    assert_ne!(pg.port(), 0);
    assert_eq!(
        pg.url("avail_management"),
        format!(
            "postgres://postgres@127.0.0.1:{}/avail_management",
            pg.port()
        )
    );

    pg.create_database("avail_management")?;
    assert_eq!(pg.psql("avail_management", "SELECT 1 + 1")?.trim(), "2");
    let out = pg.psql(
        "avail_management",
        "CREATE TABLE t (id int PRIMARY KEY, name text);\n\
         INSERT INTO t VALUES (1, 'one'), (2, 'two');\n\
         SELECT id, name FROM t ORDER BY id;\n\
         SELECT current_database(), current_user, pg_is_in_recovery();",
    )?;
    assert_eq!(out, "1|one\n2|two\navail_management|postgres|f\n");

    // Errors stop the script and are reported.
    let err = pg.psql("avail_management", "SELECT nope;").unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
    assert!(pg.create_database("avail_management").is_err());
    assert!(pg.psql("no_such_database", "SELECT 1").is_err());

    // Kill (a crash) and start again on the same port.
    pg.kill()?;
    assert!(!pg.is_running());
    pg.kill()?; // idempotent
    pg.restart()?;
    assert!(pg.is_running());
    assert_eq!(
        pg.psql("avail_management", "SELECT count(*) FROM t")?
            .trim(),
        "2"
    );
    Ok(())
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let dir = pg
        .data_dir()
        .parent()
        .expect("data dir has a parent")
        .to_path_buf();
    let port = pg.port();
    assert!(dir.exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(pg);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    Ok(())
}

#[test]
fn drop_cleans_up_after_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let pg = Postgres::start().expect("start");
        tx.send(pg.data_dir().parent().unwrap().to_path_buf())
            .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    let dir = rx.recv().expect("the server started");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn several_servers_at_once() -> anyhow::Result<()> {
    let servers: Vec<Postgres> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(Postgres::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect::<anyhow::Result<_>>()
    })?;
    let mut ports: Vec<u16> = servers.iter().map(Postgres::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for pg in &servers {
        assert_eq!(
            pg.psql("postgres", "SHOW port")?.trim(),
            pg.port().to_string()
        );
    }
    Ok(())
}

#[test]
fn primary_standby_failover() -> anyhow::Result<()> {
    let t = Instant::now();
    let primary = Postgres::start_primary()?;
    eprintln!("start_primary: {:?}", t.elapsed());
    // The primary is writable on its own, before any standby exists.
    primary.create_database("avail_management")?;
    primary.psql(
        "avail_management",
        "CREATE TABLE packages (id int PRIMARY KEY, name text NOT NULL);",
    )?;

    let t = Instant::now();
    let standby = primary.start_standby()?;
    eprintln!("start_standby: {:?}", t.elapsed());
    assert_ne!(standby.port(), primary.port());
    assert_eq!(
        primary
            .psql(
                "postgres",
                "SELECT state, sync_state FROM pg_stat_replication"
            )?
            .trim(),
        "streaming|sync"
    );
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")?
            .trim(),
        "t"
    );

    // Synchronous commit: once the primary acknowledges, the standby has it.
    primary.psql(
        "avail_management",
        "INSERT INTO packages VALUES (1, 'word');",
    )?;
    let seen = wait_for_row(
        &standby,
        "avail_management",
        "SELECT name FROM packages WHERE id = 1",
    )?;
    assert_eq!(seen, "word");
    // The standby is read-only.
    let err = standby
        .psql(
            "avail_management",
            "INSERT INTO packages VALUES (2, 'excel');",
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("read-only"), "{err:#}");

    // The primary crashes; the standby takes over and accepts writes.
    primary.kill()?;
    let t = Instant::now();
    standby.promote()?;
    eprintln!("promote: {:?}", t.elapsed());
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")?
            .trim(),
        "f"
    );
    standby.psql(
        "avail_management",
        "INSERT INTO packages VALUES (2, 'excel');",
    )?;
    assert_eq!(
        standby.psql(
            "avail_management",
            "SELECT id, name FROM packages ORDER BY id"
        )?,
        "1|word\n2|excel\n"
    );
    Ok(())
}

#[test]
fn promoted_standby_can_have_a_standby() -> anyhow::Result<()> {
    let primary = Postgres::start_primary()?;
    let first = primary.start_standby()?;
    let second = primary.start_standby()?;
    let states = primary.psql(
        "postgres",
        "SELECT sync_state FROM pg_stat_replication ORDER BY sync_state",
    )?;
    assert_eq!(states, "potential\nsync\n");
    primary.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (7);",
    )?;
    assert_eq!(wait_for_row(&second, "postgres", "SELECT x FROM t")?, "7");

    primary.kill()?;
    second.promote()?;
    // The second standby did not inherit synchronous_standby_names: writes
    // do not wait for a standby it does not have.
    second.psql("postgres", "INSERT INTO t VALUES (8);")?;
    drop(first);

    // The promoted standby can in turn have a standby (asynchronous: it was
    // not started by start_primary).
    let third = second.start_standby()?;
    second.psql("postgres", "INSERT INTO t VALUES (9);")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while third.psql("postgres", "SELECT count(*) FROM t")?.trim() != "3" {
        assert!(
            Instant::now() < deadline,
            "the third server never saw row 9"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// On a synchronous standby a committed row is visible once replayed, which
/// `remote_apply` would guarantee; `on` only guarantees it is flushed, so poll.
fn wait_for_row(pg: &Postgres, db: &str, sql: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = pg.psql(db, sql)?;
        if !out.trim().is_empty() || Instant::now() > deadline {
            return Ok(out.trim().to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
