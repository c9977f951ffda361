//! `avail db install|status` with the real binary, against a throwaway PostgreSQL
//! and against SQLite files, the embedded databases of a data directory, and the
//! logs a command writes (plain text when piped, or JSON lines).

use std::path::Path;
use std::process::{Command, Output};

use avail_testkit::Postgres;

fn avail(args: &[&str]) -> Output {
    avail_with(args, &[])
}

/// `avail ARGS` with the variables `env` set, and none of the caller's `AVAIL_*`.
fn avail_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avail"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("AVAIL_") || name == "NO_COLOR" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied()).output().expect("run avail")
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
        out(&o).contains("Reporting DB: schema version 2 (current)"),
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
    assert_eq!(v["management"]["installed"], 2);
    assert_eq!(v["reporting"]["known"], 2);
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
fn malformed_urls_exit_2_and_install_needs_one() {
    let o = avail(&["db", "install"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("--management-url"), "{}", out(&o));
    for cmd in ["status", "install"] {
        for (flag, url) in [
            ("--management-url", "mysql://x"),
            ("--reporting-url", "/var/lib/avail/reporting.db"),
            ("--management-url", "sqlite:"),
        ] {
            let o = avail(&["db", cmd, flag, url]);
            assert_eq!(o.status.code(), Some(2), "{cmd} {url}: {}", out(&o));
            assert!(out(&o).contains(flag), "{}", out(&o));
        }
    }
    let o = avail(&["db", "status", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The entries of a directory, by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn status_without_a_url_reads_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let data_s = data.to_str().unwrap();

    // Nothing there yet: said, and nothing created.
    let o = avail_with(&["db", "status"], &[("AVAIL_DATA_DIR", data_s)]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let management = data.join("management.db");
    assert!(
        out(&o).contains(&format!(
            "Management DB: {} does not exist yet",
            management.display()
        )),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("Reporting DB: "), "{}", out(&o));
    assert!(entries(&data).is_empty(), "{:?}", entries(&data));

    // The default is ./avail-data, as for `avail server`; still nothing is created.
    let o = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["db", "status"])
        .current_dir(tmp.path())
        .env_remove("AVAIL_DATA_DIR")
        .env_remove("AVAIL_MANAGEMENT_DATABASE_URL")
        .env_remove("AVAIL_REPORTING_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("avail-data/management.db does not exist yet"),
        "{}",
        out(&o)
    );
    assert_eq!(entries(tmp.path()), ["data"]);

    let url = format!("sqlite:{}", management.display());
    let o = avail(&["db", "install", "--management-url", &url]);
    assert!(o.status.success(), "{}", out(&o));
    let o = avail(&["db", "status", "--data-dir", data_s]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the Reporting DB is missing: {}",
        out(&o)
    );
    assert!(
        out(&o).contains(&format!(
            "Management DB: schema version 2 (current) ({url})"
        )),
        "{}",
        out(&o)
    );
    let o = avail(&["db", "status", "--json", "--data-dir", data_s]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["management"]["installed"], 2);
    assert_eq!(v["management"]["exists"], true);
    assert_eq!(v["reporting"]["exists"], false);
    assert_eq!(entries(&data), ["management.db"]);

    let reporting = format!("sqlite:{}", data.join("reporting.db").display());
    let o = avail(&["db", "install", "--reporting-url", &reporting]);
    assert!(o.status.success(), "{}", out(&o));
    let o = avail(&["db", "status", "--data-dir", data_s]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// `avail db install` of a fresh SQLite file logs each script it runs at info.
fn install_logging(env: &[(&str, &str)]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", tmp.path().join("m.db").display());
    let mut env = env.to_vec();
    env.push(("AVAIL_LOG", "info"));
    avail_with(&["db", "install", "--management-url", &url], &env)
}

#[test]
fn logs_are_plain_text_when_piped() {
    for env in [&[][..], &[("AVAIL_LOG_FORMAT", "text")][..]] {
        let o = install_logging(env);
        assert!(o.status.success(), "{}", out(&o));
        let logs = String::from_utf8_lossy(&o.stderr);
        assert!(logs.contains("installed schema script"), "{env:?}: {logs}");
        assert!(!logs.contains('\x1b'), "{env:?}: escape codes in {logs:?}");
    }
}

/// `avail db install` of a fresh SQLite file run on a pseudo-terminal (util-linux's
/// `script`), with `env` set: what the terminal shows.
fn install_on_a_terminal(env: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "env {env} AVAIL_LOG=info {} db install --management-url sqlite:{}",
        env!("CARGO_BIN_EXE_avail"),
        tmp.path().join("m.db").display()
    );
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("AVAIL_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .output()
        .expect("script (util-linux) is installed");
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn logs_are_coloured_only_on_a_terminal() {
    let shown = install_on_a_terminal("");
    assert!(shown.contains("installed schema script"), "{shown}");
    assert!(
        shown.contains("\x1b["),
        "no colours on a terminal: {shown:?}"
    );
    let shown = install_on_a_terminal("NO_COLOR=1");
    assert!(shown.contains("installed schema script"), "{shown}");
    assert!(
        !shown.contains('\x1b'),
        "colours despite NO_COLOR: {shown:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let o = install_logging(&[("AVAIL_LOG_FORMAT", "json")]);
    assert!(o.status.success(), "{}", out(&o));
    let logs = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(
            line["fields"]["message"], "installed schema script",
            "{line}"
        );
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert!(!logs.contains('\x1b'));
    // Stdout stays the command's answer.
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("Management DB: schema version 2"),
        "{}",
        out(&o)
    );
}

#[test]
fn a_malformed_log_filter_is_refused() {
    let o = avail_with(&["db", "install"], &[("AVAIL_LOG", "debug,=[")]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("AVAIL_LOG=\"debug,=[\" is not a log filter"),
        "{}",
        out(&o)
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let o = avail_with(&["db", "install"], &[("AVAIL_LOG_FORMAT", "logfmt")]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("AVAIL_LOG_FORMAT=\"logfmt\"") && err.contains("text, json"),
        "{err}"
    );
}
