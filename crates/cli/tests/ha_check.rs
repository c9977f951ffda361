//! `avail ha check` against real deployments: a node with every role and two
//! content mirrors (its content role and nginx) passes; a publishing node
//! that never synced, a mirror serving other bytes and a dead URL each fail
//! with a line saying so (exit 1); a PostgreSQL primary with a streaming
//! standby passes, and the standby gone fails the check.

use std::path::Path;
use std::process::Output;

use avail_testkit::{AvailNode, Postgres};

mod common;
use common::{Nginx, bin, free_port, require_root, start_node};

fn ha_check(node: &AvailNode, extra: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["ha", "check", "--management", &node.url])
        .args(["--publishing", &node.publishing_url])
        .args(["--reporting", &node.reporting_url])
        .args(extra)
        .env("AVAIL_DATA_DIR", &node.data)
        .env_remove("AVAIL_TOKEN")
        .env_remove("AVAIL_SERVER");
    cmd.output().unwrap()
}

fn lines(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A one-file package imported into `node`; its content path.
fn import(node: &AvailNode, dir: &Path) -> String {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("opt/ha")).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tree.join("opt/ha/data"), data).unwrap();
    let out = dir.join("ha.appv");
    let o = std::process::Command::new(bin())
        .args(["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args(["--name", "HaCheck", "--level", "0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    node.admin_ok(&["package", "import", out.to_str().unwrap()]);
    let listed = node.admin_ok(&["--json", "package", "list"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    v[0]["content_path"].as_str().unwrap().to_owned()
}

#[test]
fn a_healthy_node_passes_and_each_fault_is_named() {
    require_root(); // for nginx
    let node = start_node(None);
    let dir = tempfile::tempdir().unwrap();
    let content_path = import(&node, dir.path());
    let content_dir = node.data.join("content");
    let nginx = Nginx::start(&content_dir);
    let mirrors = ["--content", &node.content_url, "--content", &nginx.url()];

    let o = ha_check(&node, &mirrors);
    let out = lines(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "ok    management at",
        "ok    publishing at",
        "ok    reporting at",
        "ok    content at",
        "ok    HaCheck 1.0.0.0: mirrors serve the same bytes",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");

    // A publishing node registered but never synced.
    node.admin_ok(&["server", "register", "pub-never"]);
    let o = ha_check(&node, &mirrors);
    assert_eq!(o.status.code(), Some(1), "{}", lines(&o));
    assert!(
        lines(&o).contains("FAIL  publishing node pub-never synced: it never synced"),
        "{}",
        lines(&o)
    );
    node.admin_ok(&["server", "unregister", "pub-never"]);

    // A mirror with other bytes: a copy of the content with its last byte flipped.
    let bad = tempfile::tempdir().unwrap();
    let file = bad.path().join(&content_path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(content_dir.join(&content_path)).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let bad_nginx = Nginx::start(bad.path());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = ha_check(
        &node,
        &[
            "--content",
            &node.content_url,
            "--content",
            &bad_nginx.url(),
            "--content",
            &dead,
        ],
    );
    let out = lines(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  HaCheck 1.0.0.0: mirrors serve the same bytes:"),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL  content at {dead} is ready: no answer")),
        "{out}"
    );
}

#[test]
fn database_hosts_are_checked_one_by_one() {
    let primary = Postgres::start_primary().expect("start the primary");
    let standby = primary.start_standby().expect("start the standby");
    let node = start_node(None);
    let url = format!(
        "postgres://postgres@{}:{},{}:{}/postgres",
        primary.host(),
        primary.port(),
        standby.host(),
        standby.port()
    );
    let o = ha_check(&node, &["--database", &url]);
    let out = lines(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!(
            "ok    database host 127.0.0.1:{}: primary",
            primary.port()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ok    database host 127.0.0.1:{}: standby",
            standby.port()
        )),
        "{out}"
    );
    assert!(out.contains("streaming, sync, replay lag"), "{out}");

    // The standby gone: it cannot be reached, and the primary streams to nobody.
    standby.kill().unwrap();
    let o = ha_check(&node, &["--database", &url]);
    let out = lines(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  database host 127.0.0.1:{}: cannot connect",
            standby.port()
        )),
        "{out}"
    );
    assert!(
        out.contains("no standby is streaming from the primary"),
        "{out}"
    );
}
