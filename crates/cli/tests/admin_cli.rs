//! `avail admin` as a person and a script meet it, with the real binary against
//! a real server: exit codes (3 for an invalid package, 2 for a malformed
//! argument), where a missing token was looked for, server addresses without a
//! scheme, connection-group members by name, every error said once, one JSON
//! shape for every create command, `upgrade --publish` and `group delete --force`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use avail_testkit::AvailNode;
use serde_json::Value;

fn start() -> AvailNode {
    AvailNode::start(Path::new(env!("CARGO_BIN_EXE_avail")), None, &[]).unwrap()
}

/// `avail ARGS…` with no server or token in the environment.
fn avail(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avail"));
    cmd.args(args)
        .env_remove("AVAIL_SERVER")
        .env_remove("AVAIL_TOKEN")
        .env_remove("AVAIL_DATA_DIR");
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shown(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", text(&o.stdout), text(&o.stderr))
}

/// `avail admin --json ARGS…`, which must succeed, parsed.
fn admin_json(node: &AvailNode, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = node.admin(&all);
    assert!(o.status.success(), "{args:?}: {}", shown(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", shown(&o)))
}

/// The one line of stderr, which starts with `error: ` (an error said once).
fn one_error(o: &Output) -> String {
    let stderr = text(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of error expected: {}", shown(o));
    assert!(lines[0].starts_with("error: "), "{}", shown(o));
    lines[0].to_owned()
}

/// Pack a one-file application into `dir` with the given ids.
fn pack(dir: &Path, name: &str, package_id: &str, version_id: &str, version: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{version_id}"));
    std::fs::create_dir_all(tree.join("opt/app/bin")).unwrap();
    std::fs::write(tree.join("opt/app/bin/app"), version.repeat(20_000)).unwrap();
    let out = dir.join(format!("{version_id}.appv"));
    let o = avail(&["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args(["--name", name, "--version", version])
        .args(["--package-id", package_id, "--version-id", version_id])
        .args(["--app", "app=/opt/app/bin/app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    out
}

const PKG_A: &str = "11111111-0000-4000-8000-000000000001";
const A1: &str = "11111111-0000-4000-8000-0000000000a1";
const A2: &str = "11111111-0000-4000-8000-0000000000a2";
const PKG_B: &str = "22222222-0000-4000-8000-000000000002";
const B1: &str = "22222222-0000-4000-8000-0000000000b1";

#[test]
fn importing_an_invalid_package_exits_3_and_says_so_once() {
    let node = start();
    let tmp = tempfile::tempdir().unwrap();
    let good = pack(tmp.path(), "Editor", PKG_A, A1, "1.0");

    // A flipped byte in the payload's data: the directory and metadata read
    // well, so it is sent, and the server's verification refuses it (422 invalid_package).
    let mut bytes = std::fs::read(&good).unwrap();
    let name = b"Root/opt/app/bin/app";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    let header = at - 30;
    let extra = u16::from_le_bytes([bytes[header + 28], bytes[header + 29]]) as usize;
    bytes[at + name.len() + extra + 5] ^= 0xFF;
    let corrupt = tmp.path().join("corrupt.appv");
    std::fs::write(&corrupt, &bytes).unwrap();
    let o = node.admin(&["package", "import", corrupt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", shown(&o));
    let line = one_error(&o);
    assert!(line.contains(corrupt.to_str().unwrap()), "{line}");
    assert!(line.contains("(422 Unprocessable Entity)"), "{line}");

    // Not a package at all: refused before it is sent.
    let junk = tmp.path().join("junk.appv");
    std::fs::write(&junk, b"not a zip file at all").unwrap();
    let o = node.admin(&["package", "import", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", shown(&o));
    let line = one_error(&o);
    assert!(line.contains(junk.to_str().unwrap()), "{line}");
    assert!(line.contains("end-of-central-directory"), "{line}");

    // An upgrade to an invalid version too.
    node.admin_ok(&["package", "import", good.to_str().unwrap()]);
    let o = node.admin(&["package", "upgrade", "Editor", corrupt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", shown(&o));
    one_error(&o);

    // A file that cannot be read is not an invalid package: 1.
    let o = node.admin(&["package", "import", "/nonexistent/x.appv"]);
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    one_error(&o);
    assert_eq!(node.admin_ok(&["package", "list"]).lines().count(), 1);
}

#[test]
fn malformed_arguments_exit_2() {
    for args in [
        &["admin", "--server", "ftp://host", "group", "list"][..],
        &["admin", "--server", "http://", "group", "list"],
        &["admin", "--server", "host:notaport", "group", "list"],
        &[
            "admin",
            "connection-group",
            "add",
            "CG",
            "Editor",
            "--version",
            "1.0",
        ],
        &[
            "admin",
            "connection-group",
            "add",
            "CG",
            "Editor",
            "--position",
            "-1",
        ],
        &[
            "admin",
            "connection-group",
            "add",
            "CG",
            "Editor",
            "--position",
            "x",
        ],
        &[
            "admin",
            "connection-group",
            "create",
            "CG",
            "--priority",
            "high",
        ],
        &["admin", "connection-group", "priority", "CG", "1.5"],
        &["admin", "group", "add", "staff", "printer", "x"],
        &["admin", "package", "upgrade", "Editor"],
        &["admin", "nonsense"],
    ] {
        let o = avail(args).env("AVAIL_TOKEN", "t").output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", shown(&o));
        let errors = text(&o.stderr).matches("error:").count();
        assert_eq!(errors, 1, "{args:?}: {}", shown(&o));
    }
    // The same check for AVAIL_SERVER.
    let o = avail(&["admin", "group", "list"])
        .env("AVAIL_SERVER", "gopher://host:70")
        .env("AVAIL_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
}

#[test]
fn a_missing_token_names_where_it_was_looked_for() {
    let tmp = tempfile::tempdir().unwrap();

    // AVAIL_DATA_DIR names a directory without a token.
    let data = tmp.path().join("data");
    let o = avail(&["admin", "group", "list"])
        .env("AVAIL_DATA_DIR", &data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let line = one_error(&o);
    for words in [
        "--token",
        "AVAIL_TOKEN",
        "AVAIL_DATA_DIR",
        &data.join("admin-token").display().to_string(),
        "No such file",
    ] {
        assert!(line.contains(words), "{words:?} in {line}");
    }

    // No AVAIL_DATA_DIR: ./avail-data/admin-token, and where that is.
    let o = avail(&["admin", "group", "list"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let line = one_error(&o);
    assert!(line.contains("./avail-data/admin-token"), "{line}");
    assert!(
        line.contains(
            &tmp.path()
                .join("avail-data/admin-token")
                .display()
                .to_string()
        ),
        "{line}"
    );
    assert!(line.contains("AVAIL_DATA_DIR is not set"), "{line}");

    // A token file that cannot be read (a directory) or is empty.
    std::fs::create_dir_all(data.join("admin-token")).unwrap();
    let o = avail(&["admin", "group", "list"])
        .env("AVAIL_DATA_DIR", &data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    assert!(one_error(&o).contains("directory"), "{}", shown(&o));
    std::fs::remove_dir(data.join("admin-token")).unwrap();
    std::fs::write(data.join("admin-token"), "\n").unwrap();
    let o = avail(&["admin", "group", "list"])
        .env("AVAIL_DATA_DIR", &data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    assert!(one_error(&o).contains("empty"), "{}", shown(&o));

    // The server's own data directory gives its bootstrap token.
    let node = start();
    let o = avail(&["admin", "group", "create", "staff"])
        .env("AVAIL_SERVER", &node.url)
        .env("AVAIL_DATA_DIR", &node.data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));

    // A token the server refuses: its answer once, and where the token came from.
    let o = avail(&["admin", "group", "list"])
        .env("AVAIL_SERVER", &node.url)
        .env("AVAIL_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let line = one_error(&o);
    assert!(
        line.contains("401") && line.contains("AVAIL_TOKEN"),
        "{line}"
    );
}

#[test]
fn a_server_address_without_a_scheme_is_http() {
    let node = start();
    let o = avail(&["admin", "group", "create", "staff"])
        .env("AVAIL_SERVER", node.addr())
        .env("AVAIL_TOKEN", &node.token)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    let o = avail(&["admin", "--server", node.addr(), "group", "list"])
        .env("AVAIL_TOKEN", &node.token)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    assert_eq!(text(&o.stdout), "staff\n");
}

#[test]
fn connection_group_show_names_its_members() {
    let node = start();
    let tmp = tempfile::tempdir().unwrap();
    for (name, pid, vid) in [("Editor", PKG_A, A1), ("Viewer", PKG_B, B1)] {
        let file = pack(tmp.path(), name, pid, vid, "1.0");
        node.admin_ok(&["package", "import", file.to_str().unwrap()]);
    }
    node.admin_ok(&["connection-group", "create", "Suite", "--priority", "-1"]);
    node.admin_ok(&["connection-group", "add", "Suite", "Editor"]);
    node.admin_ok(&[
        "connection-group",
        "add",
        "Suite",
        "Viewer",
        "--any-version",
        "--optional",
    ]);
    let out = node.admin_ok(&["connection-group", "show", "Suite"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Suite (priority -1"), "{out}");
    assert_eq!(lines[1], "  0. Editor 1.0.0.0", "{out}");
    assert_eq!(lines[2], "  1. Viewer (any version), optional", "{out}");
    assert!(!out.contains(PKG_A) && !out.contains(B1), "{out}");
    // The list names them too; the JSON keeps the ids for scripts.
    let list = node.admin_ok(&["connection-group", "list"]);
    assert!(list.contains("  0. Editor 1.0.0.0"), "{list}");
    let json = admin_json(&node, &["connection-group", "show", "Suite"]);
    assert_eq!(json["members"][0]["package_id"], PKG_A);
    assert_eq!(json["members"][0]["version_id"], A1);
}

#[test]
fn errors_are_said_once() {
    let node = start();
    for args in [
        &["group", "delete", "nobody"][..],
        &["user", "create", "alice", "--group", "missing"],
        &["package", "show", "Nothing"],
        &["connection-group", "show", "Nothing"],
    ] {
        let o = node.admin(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", shown(&o));
        let line = one_error(&o);
        // The server's message, then its status, once.
        let message = line.trim_start_matches("error: ");
        let (said, status) = message.rsplit_once(" (").unwrap();
        assert!(
            status.starts_with("404") || status.starts_with("409"),
            "{line}"
        );
        assert_eq!(line.matches(said).count(), 1, "{line}");
    }
    // An unreachable server.
    let o = avail(&["admin", "--server", "127.0.0.1:1", "group", "list"])
        .env("AVAIL_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    assert!(one_error(&o).contains("cannot reach the management server at http://127.0.0.1:1"));
    // A cause its context already quotes is not repeated (I/O errors name theirs).
    let tmp = tempfile::tempdir().unwrap();
    let o = avail(&["package", "inspect", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    assert_eq!(
        one_error(&o).matches("Is a directory").count(),
        1,
        "{}",
        shown(&o)
    );
}

#[test]
fn every_create_answers_json_of_one_shape() {
    let node = start();
    let group = admin_json(&node, &["group", "create", "staff"]);
    assert_eq!(group, serde_json::json!({"name": "staff", "created": true}));

    let user = admin_json(&node, &["user", "create", "alice", "--group", "staff"]);
    assert_eq!(
        user,
        serde_json::json!({"name": "alice", "groups": ["staff"], "created": true})
    );
    // A retry the server takes as one: the same shape, created false.
    let again = admin_json(&node, &["user", "create", "alice", "--group", "staff"]);
    assert_eq!(
        again,
        serde_json::json!({"name": "alice", "groups": ["staff"], "created": false})
    );

    let machine = admin_json(&node, &["machine", "create", "pc1", "--group", "staff"]);
    assert_eq!(machine["name"], "pc1");
    assert_eq!(machine["groups"], serde_json::json!(["staff"]));
    assert_eq!(machine["created"], true);
    assert!(machine["credential"].as_str().unwrap().len() >= 20);

    let server = admin_json(&node, &["server", "register", "pub1"]);
    assert_eq!(server["name"], "pub1");
    assert_eq!(server["created"], true);
    assert!(server["registered_at"].is_string(), "{server}");
    assert!(server["credential"].as_str().unwrap().len() >= 20);

    let admin = admin_json(&node, &["admin", "add", "bob"]);
    assert_eq!(
        admin,
        serde_json::json!({"name": "bob", "has_password": false, "created": true})
    );
    let token = admin_json(&node, &["admin", "token", "bob", "--label", "ci"]);
    assert_eq!(token["administrator"], "bob");
    assert_eq!(token["label"], "ci");
    assert_eq!(token["created"], true);
    let bob = token["token"].as_str().unwrap();
    let o = avail(&["admin", "user", "list"])
        .env("AVAIL_SERVER", &node.url)
        .env("AVAIL_TOKEN", bob)
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "alice\n", "{}", shown(&o));

    let cg = admin_json(&node, &["connection-group", "create", "Suite"]);
    assert_eq!(cg["name"], "Suite");
    assert_eq!(cg["created"], true);
    assert!(cg["members"].is_array() && cg["id"].is_string(), "{cg}");

    // Nothing nests the created thing: every answer is flat at the top.
    for answer in [group, user, machine, server, admin, token, cg] {
        let object = answer.as_object().unwrap();
        assert!(object.values().all(|v| !v.is_object()), "{answer}");
    }
}

#[test]
fn every_package_command_says_what_pkg_may_be() {
    for verb in [
        "show",
        "publish",
        "unpublish",
        "remove",
        "grant",
        "revoke",
        "upgrade",
        "config",
    ] {
        let o = avail(&["admin", "package", verb, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{verb}: {}", shown(&o));
        assert!(
            text(&o.stdout).contains("a package name, PackageId, VersionId or NAME@VERSION"),
            "{verb}: {}",
            shown(&o)
        );
    }
    let o = avail(&["admin", "--help"]).output().unwrap();
    let help = text(&o.stdout);
    for words in [
        "\"created\"",
        "\"credential\"",
        "\"token\"",
        "AVAIL_DATA_DIR",
        "host:port",
    ] {
        assert!(help.contains(words), "{words} in {help}");
    }
}

#[test]
fn upgrade_with_publish_leaves_one_published_version() {
    let node = start();
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0");
    let a2 = pack(tmp.path(), "Editor", PKG_A, A2, "2.0");
    node.admin_ok(&["package", "import", a1.to_str().unwrap()]);
    node.admin_ok(&["group", "create", "staff"]);
    node.admin_ok(&["package", "grant", "Editor", "staff"]);
    node.admin_ok(&["package", "publish", "Editor"]);

    let upgraded = admin_json(
        &node,
        &[
            "package",
            "upgrade",
            "Editor@1.0.0.0",
            a2.to_str().unwrap(),
            "--transfer",
            "--publish",
        ],
    );
    assert_eq!(upgraded["version"]["version_id"], A2);
    assert_eq!(upgraded["version"]["published"], true);
    let list = admin_json(&node, &["package", "list"]);
    let published: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["published"] == true)
        .map(|v| &v["version_id"])
        .collect();
    assert_eq!(published, [A2], "{list}");
    assert_eq!(
        admin_json(&node, &["package", "show", A2])["entitlements"][0]["group"],
        "staff"
    );
}

#[test]
fn deleting_a_group_in_use_needs_force() {
    let node = start();
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0");
    node.admin_ok(&["package", "import", a1.to_str().unwrap()]);
    node.admin_ok(&["group", "create", "staff"]);
    node.admin_ok(&["user", "create", "alice", "--group", "staff"]);
    node.admin_ok(&["package", "grant", "Editor", "staff"]);

    let o = node.admin(&["group", "delete", "staff"]);
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let line = one_error(&o);
    assert!(line.contains("409"), "{line}");
    assert!(line.contains("Editor") && line.contains("alice"), "{line}");
    assert!(line.contains("--force") || line.contains("force"), "{line}");
    assert_eq!(node.admin_ok(&["group", "list"]), "staff\n");

    let out = node.admin_ok(&["group", "delete", "staff", "--force"]);
    assert_eq!(out, "deleted\n");
    assert_eq!(node.admin_ok(&["group", "list"]), "");
    assert_eq!(
        admin_json(&node, &["package", "show", "Editor"])["entitlements"],
        serde_json::json!([])
    );
}
