//! `avail db install|status` with the real binary, against a throwaway PostgreSQL
//! and against SQLite files.

use std::process::{Command, Output};

use avail_testkit::Postgres;

fn avail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(args)
        .env_remove("AVAIL_MANAGEMENT_DATABASE_URL")
        .env_remove("AVAIL_REPORTING_DATABASE_URL")
        .output()
        .expect("run avail")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install_then_status(m: &str, r: &str) {
    let o = avail(&["db", "status", "--management-url", m, "--reporting-url", r]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("Management DB: not installed (run `avail db install`)"),
        "{}",
        out(&o)
    );

    let o = avail(&["db", "install", "--management-url", m, "--reporting-url", r]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("Reporting DB: schema version 1 (current)"),
        "{}",
        out(&o)
    );

    let o = avail(&[
        "db",
        "status",
        "--json",
        "--management-url",
        m,
        "--reporting-url",
        r,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["management"]["installed"], 1);
    assert_eq!(v["reporting"]["known"], 1);
}

#[test]
fn postgres_install_and_status() {
    let pg = Postgres::start().unwrap();
    pg.create_database("m").unwrap();
    pg.create_database("r").unwrap();
    install_then_status(&pg.url("m"), &pg.url("r"));

    pg.psql(
        "m",
        "INSERT INTO schema_version (version, name) VALUES (42, '042_future')",
    )
    .unwrap();
    for cmd in ["status", "install"] {
        let o = avail(&["db", cmd, "--management-url", &pg.url("m")]);
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(
            out(&o).contains("42") && out(&o).contains("upgrade Avail"),
            "{}",
            out(&o)
        );
    }

    let o = avail(&[
        "db",
        "status",
        "--management-url",
        "postgres://postgres@127.0.0.1:1/nothing?connect_timeout=1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("cannot connect to PostgreSQL"),
        "{}",
        out(&o)
    );
}

#[test]
fn sqlite_install_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let m = format!("sqlite:{}", dir.path().join("m.db").display());
    let r = format!("sqlite:{}", dir.path().join("r.db").display());
    install_then_status(&m, &r);
}

#[test]
fn no_url_is_a_clear_error() {
    let o = avail(&["db", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("--management-url"), "{}", out(&o));
    let o = avail(&["db", "status", "--management-url", "mysql://x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("neither postgres://"), "{}", out(&o));
}
