//! The management service end to end with the real `avail` binary, on SQLite
//! and on PostgreSQL: the App-V lifecycle (import → grant → publish → upgrade
//! with transfer → unpublish → remove; a connection group of two packages with
//! priorities and an optional member), authentication failures, a corrupted
//! upload leaving nothing behind, and concurrent imports of one package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avail_testkit::{AvailNode, Postgres};
use serde_json::Value;

/// A running `avail server`, killed on drop.
type Server = AvailNode;

fn start(database_url: Option<String>) -> Server {
    start_with(database_url, &[])
}

fn start_with(database_url: Option<String>, env: &[(&str, &str)]) -> Server {
    AvailNode::start(
        Path::new(env!("CARGO_BIN_EXE_avail")),
        database_url.as_deref(),
        env,
    )
    .unwrap()
}

/// `avail admin --json …`, which must succeed, parsed.
trait AdminJson {
    fn admin_json(&self, args: &[&str]) -> Value;
}

impl AdminJson for Server {
    fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = self.admin(&all);
        assert!(
            o.status.success(),
            "avail admin {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Status of a GET, through a one-off runtime (the tests themselves are synchronous).
fn reqwest_blocking(url: &str) -> Option<u16> {
    request("GET", url, None, None).map(|(s, _)| s)
}

fn request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
) -> Option<(u16, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut rb = client.request(method.parse().unwrap(), url);
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/octet-stream")
                .body(b);
        }
        let r = rb.send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.bytes().await.ok()?.to_vec()))
    })
}

/// Pack a small application tree into a package with the given ids.
fn pack(
    dir: &Path,
    name: &str,
    package_id: &str,
    version_id: &str,
    version: &str,
    content: &str,
) -> PathBuf {
    let tree = dir.join(format!("tree-{version_id}"));
    std::fs::create_dir_all(tree.join("opt/app/bin")).unwrap();
    std::fs::write(tree.join("opt/app/bin/app"), content.repeat(5000)).unwrap();
    let out = dir.join(format!("{version_id}.appv"));
    let o = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args([
            "--name",
            name,
            "--version",
            version,
            "--package-id",
            package_id,
            "--version-id",
            version_id,
        ])
        .args(["--app", "app=/opt/app/bin/app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    out
}

const PKG_A: &str = "11111111-0000-4000-8000-000000000001";
const A1: &str = "11111111-0000-4000-8000-0000000000a1";
const A2: &str = "11111111-0000-4000-8000-0000000000a2";
const PKG_B: &str = "22222222-0000-4000-8000-000000000002";
const B1: &str = "22222222-0000-4000-8000-0000000000b1";

fn lifecycle(server: &Server) {
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    let a2 = pack(tmp.path(), "Editor", PKG_A, A2, "2.0", "version two\n");
    let b1 = pack(tmp.path(), "Viewer", PKG_B, B1, "1.0", "viewer\n");

    let imported = server.admin_json(&["package", "import", a1.to_str().unwrap()]);
    assert_eq!(imported["created"], true);
    assert_eq!(imported["version"]["version_id"], A1);
    assert_eq!(imported["version"]["published"], false);
    assert_eq!(
        imported["version"]["applications"][0]["target"],
        "/opt/app/bin/app"
    );
    // The file is in the content store under its immutable per-version path, served by the content role.
    let path = imported["version"]["content_path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(path, format!("packages/{PKG_A}/{A1}.appv"));
    assert_eq!(
        std::fs::read(server.data.join("content").join(&path)).unwrap(),
        std::fs::read(&a1).unwrap()
    );
    let (status, body) =
        request("GET", &format!("{}/{path}", server.content_url), None, None).unwrap();
    assert_eq!(
        (status, body.len() as u64),
        (200, std::fs::metadata(&a1).unwrap().len())
    );

    server.admin_ok(&["group", "create", "staff"]);
    server.admin_ok(&["group", "create", "labs"]);
    server.admin_ok(&["user", "create", "alice", "--group", "staff"]);
    let cfg = tmp.path().join("deploy.xml");
    std::fs::write(
        &cfg,
        "<DeploymentConfiguration PackageId=\"x\"><UserConfiguration/></DeploymentConfiguration>",
    )
    .unwrap();
    server.admin_ok(&["package", "config", "Editor", cfg.to_str().unwrap()]);
    server.admin_ok(&["package", "grant", "Editor", "staff"]);
    server.admin_ok(&["package", "publish", A1]);
    let shown = server.admin_json(&["package", "show", "Editor"]);
    assert_eq!(shown["version"]["published"], true);
    assert_eq!(shown["entitlements"][0]["group"], "staff");

    // Upgrade: a new VersionId of the same PackageId, with entitlements and configuration transferred.
    let upgraded = server.admin_json(&[
        "package",
        "upgrade",
        "Editor",
        a2.to_str().unwrap(),
        "--transfer",
    ]);
    assert_eq!(upgraded["previous"], A1);
    assert_eq!(upgraded["version"]["version_id"], A2);
    let shown2 = server.admin_json(&["package", "show", A2]);
    assert_eq!(shown2["entitlements"][0]["group"], "staff");
    assert!(
        shown2["deployment_config"]
            .as_str()
            .unwrap()
            .contains("DeploymentConfiguration")
    );
    // By name, PKG is the published version while there is one.
    assert_eq!(
        server.admin_json(&["package", "show", "Editor"])["version"]["version_id"],
        A1
    );
    // A different package is not an upgrade of Editor; the message says how to make one.
    let o = server.admin(&["package", "upgrade", "Editor", b1.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("--update-of OLD.appv"),
        "{}",
        text(&o.stderr)
    );

    server.admin_ok(&["package", "publish", A2]);
    assert_eq!(
        server.admin_json(&["package", "show", "Editor"])["version"]["version_id"],
        A2
    );
    server.admin_ok(&["package", "unpublish", A1]);
    server.admin_ok(&["package", "remove", A1]);
    assert!(
        !server.data.join("content").join(&path).exists(),
        "a removed version's file goes too"
    );
    let list = server.admin_json(&["package", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A connection group of two packages, the optional one first.
    server.admin_ok(&["package", "import", b1.to_str().unwrap()]);
    server.admin_ok(&["package", "publish", "Viewer"]);
    server.admin_ok(&["connection-group", "create", "Suite", "--priority", "3"]);
    server.admin_ok(&["connection-group", "add", "Suite", "Editor"]);
    server.admin_ok(&[
        "connection-group",
        "add",
        "Suite",
        "Viewer",
        "--optional",
        "--any-version",
        "--position",
        "0",
    ]);
    server.admin_ok(&["connection-group", "priority", "Suite", "1"]);
    server.admin_ok(&["connection-group", "grant", "Suite", "labs"]);
    let published = server.admin_json(&["connection-group", "publish", "Suite"]);
    assert_eq!(published["published"], true);
    assert_eq!(published["priority"], 1);
    assert_eq!(published["members"][0]["package_id"], PKG_B);
    assert_eq!(published["members"][0]["optional"], true);
    assert_eq!(
        published["members"][0]["version_id"],
        Value::Null,
        "any version"
    );
    assert_eq!(published["members"][1]["package_id"], PKG_A);
    assert_eq!(published["members"][1]["version_id"], A2);
    assert_eq!(published["entitled_groups"][0], "labs");
    // A version a connection group names cannot be removed; the message says why.
    let o = server.admin(&["package", "remove", A2]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("connection group Suite"),
        "{}",
        text(&o.stderr)
    );
    server.admin_ok(&["connection-group", "remove", "Suite", "Editor"]);
    server.admin_ok(&["connection-group", "delete", "Suite"]);

    // Publishing servers, machines and administrators.
    let registered = server.admin_json(&["server", "register", "pub1"]);
    assert!(
        registered["credential"]
            .as_str()
            .unwrap()
            .starts_with("avail_pub_")
    );
    assert_eq!(server.admin_json(&["server", "list"])[0]["name"], "pub1");
    let machine = server.admin_json(&["machine", "create", "pc1", "--group", "labs"]);
    assert!(
        machine["credential"]
            .as_str()
            .unwrap()
            .starts_with("avail_mch_")
    );
    assert_eq!(
        server.admin_json(&["group", "show", "labs"])["members"][0],
        serde_json::json!({"kind": "machine", "name": "pc1"})
    );
    let admins = server.admin_json(&["admin", "list"]);
    assert_eq!(admins[0]["name"], "admin");
}

#[test]
fn lifecycle_on_sqlite() {
    let server = start(None);
    lifecycle(&server);
}

#[test]
fn lifecycle_on_postgres() {
    let pg = Postgres::start().unwrap();
    pg.create_database("avail_management").unwrap();
    let url = pg.url("avail_management");
    let o = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["db", "install", "--management-url", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let server = start(Some(url));
    lifecycle(&server);
}

#[test]
fn authentication_is_required_and_checked() {
    let server = start(None);
    let packages = format!("{}/api/v1/packages", server.url);
    let error = |auth: Option<&str>| {
        let (status, body) = request("GET", &packages, auth, None).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        (
            status,
            body["error"].as_str().unwrap().to_owned(),
            body["message"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(error(None).0, 401);
    assert_eq!(error(Some("Bearer avail_adm_wrong")).0, 401);
    assert_eq!(error(Some("Basic !!!")).0, 401);
    assert_eq!(error(Some("Digest x")).0, 401);
    let (status, code, _) = error(Some("Bearer avail_adm_wrong"));
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    // Machines and publishing servers authenticate but may change nothing.
    server.admin_ok(&["group", "create", "g"]);
    let machine = server.admin_json(&["machine", "create", "pc1"]);
    let credential = format!("Bearer {}", machine["credential"].as_str().unwrap());
    assert_eq!(error(Some(&credential)).0, 403);
    let (status, _) = request(
        "DELETE",
        &format!("{}/api/v1/groups/g", server.url),
        Some(&credential),
        None,
    )
    .unwrap();
    assert_eq!(status, 403);
    let publishing = server.admin_json(&["server", "register", "pub1"]);
    assert_eq!(
        error(Some(&format!(
            "Bearer {}",
            publishing["credential"].as_str().unwrap()
        )))
        .0,
        403
    );

    // An administrator with a password (argon2) signs in with Basic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["admin", "admin", "add", "carol", "--password-stdin"])
        .env("AVAIL_SERVER", &server.url)
        .env("AVAIL_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    use base64::Engine as _;
    let basic = |p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("carol:{p}"))
        )
    };
    assert_eq!(
        request(
            "GET",
            &packages,
            Some(&basic("correct horse battery")),
            None
        )
        .unwrap()
        .0,
        200
    );
    assert_eq!(error(Some(&basic("wrong"))).0, 401);

    // Health, readiness and metrics need no credentials; the OpenAPI document does.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            reqwest_blocking(&format!("{}{path}", server.url)),
            Some(200),
            "{path}"
        );
    }
    assert_eq!(
        reqwest_blocking(&format!("{}/api/v1/openapi.json", server.url)),
        Some(200)
    );
    let (_, doc) = request(
        "GET",
        &format!("{}/api/v1/openapi.json", server.url),
        None,
        None,
    )
    .unwrap();
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"]["/api/v1/packages/{pkg}/upgrade"]["post"].is_object());
    assert!(doc["components"]["schemas"]["PackageVersion"].is_object());
}

#[test]
fn a_corrupted_upload_leaves_nothing_behind() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let good = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "some content\n");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 200;
    bytes[at] ^= 0xFF;
    let auth = format!("Bearer {}", server.token);
    let (status, body) = request(
        "POST",
        &format!("{}/api/v1/packages", server.url),
        Some(&auth),
        Some(bytes),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "invalid_package");
    assert!(
        body["message"].as_str().unwrap().contains("block 0"),
        "{body}"
    );
    // Not a zip at all, and an empty body.
    let (status, _) = request(
        "POST",
        &format!("{}/api/v1/packages", server.url),
        Some(&auth),
        Some(b"hello".to_vec()),
    )
    .unwrap();
    assert_eq!(status, 422);
    let (status, _) = request(
        "POST",
        &format!("{}/api/v1/packages", server.url),
        Some(&auth),
        Some(Vec::new()),
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        server.content_files().is_empty(),
        "{:?}",
        server.content_files()
    );
    assert_eq!(
        server.admin_json(&["package", "list"]),
        serde_json::json!([])
    );

    // A different file under a VersionId already imported is a conflict, and changes nothing.
    server.admin_ok(&["package", "import", good.to_str().unwrap()]);
    let other = pack(
        &tmp.path().join("other"),
        "Editor",
        PKG_A,
        A1,
        "1.0",
        "other content\n",
    );
    let o = server.admin(&["package", "import", other.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("409"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(server.content_files().len(), 1);
    let stored = server
        .data
        .join("content")
        .join(format!("packages/{PKG_A}/{A1}.appv"));
    assert_eq!(
        std::fs::read(stored).unwrap(),
        std::fs::read(&good).unwrap()
    );
}

#[test]
fn concurrent_imports_of_one_package_give_one_version() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let package = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "concurrent\n");
    let bytes = std::fs::read(&package).unwrap();
    let auth = format!("Bearer {}", server.token);
    let url = format!("{}/api/v1/packages", server.url);
    let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| request("POST", &url, Some(&auth), Some(bytes.clone())).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let existing = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        (created, existing),
        (1, 3),
        "{:?}",
        results
            .iter()
            .map(|(s, b)| (s, text(b)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        server
            .admin_json(&["package", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(server.content_files().len(), 1);
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut server = start(None);
    assert!(server.log().contains("listening"), "{}", server.log());
    let kill = Command::new("kill")
        .args(["-TERM", &server.child().id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", server.log());
    assert!(server.log().contains("shutting down"));
    // The bootstrap token is readable by its owner only.
    let token_file = server.data.join("admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("avail_adm_"));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn oversized_bodies_are_refused() {
    let server = start_with(None, &[("AVAIL_MAX_UPLOAD_BYTES", "50000")]);
    let auth = format!("Bearer {}", server.token);
    let (status, body) = request(
        "POST",
        &format!("{}/api/v1/packages", server.url),
        Some(&auth),
        Some(vec![7u8; 60_000]),
    )
    .unwrap();
    assert_eq!(status, 413, "{}", text(&body));
    assert!(server.content_files().is_empty());
    // JSON bodies are limited to 1 MiB.
    let huge = format!("{{\"name\": \"{}\"}}", "g".repeat(2 << 20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/v1/groups", server.url))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 413);
}

/// `(status, JSON body)` of a request with a JSON body, as the bootstrap administrator.
fn request_json(server: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .bearer_auth(&server.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

#[test]
fn directory_changes_are_whole_and_retries_are_safe() {
    let server = start(None);
    server.admin_ok(&["group", "create", "staff"]);
    server.admin_ok(&["group", "create", "labs"]);
    let users = |server: &Server| server.admin_json(&["user", "list"]);

    // A missing group: 404 naming it, and no user, no membership.
    let (status, body) = request_json(
        &server,
        "POST",
        "/api/v1/users",
        serde_json::json!({"name": "alice", "groups": ["staff", "ghosts", "labs"]}),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("group ghosts"),
        "{body}"
    );
    assert_eq!(users(&server), serde_json::json!([]));
    assert_eq!(
        server.admin_json(&["group", "show", "staff"])["members"],
        serde_json::json!([])
    );

    // Created whole; the same request again (a retry) is 200, not 409.
    let create = serde_json::json!({"name": "alice", "groups": ["staff", "labs"]});
    let (status, body) = request_json(&server, "POST", "/api/v1/users", create.clone());
    assert_eq!(
        (status, body["created"].clone()),
        (201, Value::Bool(true)),
        "{body}"
    );
    assert_eq!(body["groups"], serde_json::json!(["labs", "staff"]));
    let (status, body) = request_json(&server, "POST", "/api/v1/users", create);
    assert_eq!(
        (status, body["created"].clone()),
        (200, Value::Bool(false)),
        "{body}"
    );
    let out = server.admin_ok(&[
        "user", "create", "alice", "--group", "labs", "--group", "staff",
    ]);
    assert!(out.contains("already exists"), "{out}");
    // Other groups: 409 naming the difference.
    let (status, body) = request_json(
        &server,
        "POST",
        "/api/v1/users",
        serde_json::json!({"name": "alice", "groups": ["staff"]}),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("also in labs"),
        "{body}"
    );

    // A machine with a missing group: nothing.
    let (status, _) = request_json(
        &server,
        "POST",
        "/api/v1/machines",
        serde_json::json!({"name": "pc1", "groups": ["labs", "ghosts"]}),
    );
    assert_eq!(status, 404);
    assert_eq!(
        server.admin_json(&["machine", "list"]),
        serde_json::json!([])
    );
    assert_eq!(
        server.admin_json(&["group", "show", "labs"])["members"],
        serde_json::json!([{"kind": "user", "name": "alice"}])
    );

    // The last administrator stays.
    let o = server.admin(&["admin", "remove", "admin"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("last administrator"),
        "{}",
        text(&o.stderr)
    );
}

/// An upgrade whose answer was lost is retried: the retry completes it (200,
/// the same previous version, the transfer applied) instead of failing.
#[test]
fn a_retried_upgrade_completes_rather_than_fails() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    let a2 = pack(tmp.path(), "Editor", PKG_A, A2, "2.0", "version two\n");
    server.admin_ok(&["package", "import", a1.to_str().unwrap()]);
    server.admin_ok(&["group", "create", "staff"]);
    server.admin_ok(&["package", "grant", A1, "staff"]);
    let upgrade = || {
        let url = format!(
            "{}/api/v1/packages/Editor/upgrade?transfer=true",
            server.url
        );
        let auth = format!("Bearer {}", server.token);
        let (status, body) =
            request("POST", &url, Some(&auth), Some(std::fs::read(&a2).unwrap())).unwrap();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    let (status, first) = upgrade();
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["previous"], A1);
    // As if the transfer had been lost with the answer.
    server.admin_ok(&["package", "revoke", A2, "staff"]);
    let (status, again) = upgrade();
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["previous"].as_str(), again["transferred"].as_bool()),
        (Some(A1), Some(true))
    );
    assert_eq!(
        server.admin_json(&["package", "show", A2])["entitlements"][0]["group"],
        "staff"
    );
}

/// Names with control characters or invisible/reordering Unicode are refused
/// everywhere the API takes a name, and `avail admin` escapes them when a
/// database already holds one.
#[test]
fn names_that_could_spoof_a_terminal_are_refused_and_escaped() {
    let server = start(None);
    server.admin_ok(&["connection-group", "create", "Suite"]);
    let evil = "invoice\u{202e}gpj.exe";
    for name in [
        evil,
        "a\u{2067}b",
        "zero\u{200b}width",
        "\u{feff}admin",
        "clear\u{1b}[2J",
        "mark\u{200f}",
    ] {
        for (method, path, body) in [
            ("POST", "/api/v1/users", serde_json::json!({"name": name})),
            (
                "POST",
                "/api/v1/machines",
                serde_json::json!({"name": name}),
            ),
            ("POST", "/api/v1/groups", serde_json::json!({"name": name})),
            (
                "POST",
                "/api/v1/administrators",
                serde_json::json!({"name": name}),
            ),
            (
                "POST",
                "/api/v1/connection-groups",
                serde_json::json!({"name": name}),
            ),
            (
                "PATCH",
                "/api/v1/connection-groups/Suite",
                serde_json::json!({"name": name}),
            ),
            (
                "POST",
                "/api/v1/publishing-servers",
                serde_json::json!({"name": name}),
            ),
            (
                "POST",
                "/api/v1/administrators/admin/tokens",
                serde_json::json!({"label": name}),
            ),
        ] {
            let (status, answer) = request_json(&server, method, path, body);
            assert_eq!(status, 400, "{method} {path} {name:?}: {answer}");
            assert!(
                answer["message"].as_str().unwrap().contains("U+"),
                "{answer}"
            );
        }
    }
    assert_eq!(server.admin_json(&["user", "list"]), serde_json::json!([]));

    // A hostile name that is in the database already (written there directly).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", server.data.join("management.db").display());
        let store = avail_store::open_management(&url).await.unwrap();
        store.create_group(evil).await.unwrap();
    });
    let out = server.admin_ok(&["group", "list"]);
    assert!(!out.contains('\u{202e}'), "{out:?}");
    assert!(out.contains("invoice\\u{202e}gpj.exe"), "{out}");
    let o = server.admin(&["--json", "group", "list"]);
    let raw = text(&o.stdout);
    assert!(
        !raw.contains('\u{202e}') && raw.contains("\\u202e"),
        "{raw:?}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        serde_json::json!([evil])
    );
    // An error that repeats the name is escaped too.
    let o = server.admin(&["group", "show", "ghost\u{202e}x"]);
    assert!(!o.status.success());
    assert!(
        !text(&o.stderr).contains('\u{202e}') && text(&o.stderr).contains("\\u{202e}"),
        "{:?}",
        text(&o.stderr)
    );
}

/// `(status, JSON body)` of a request without a body, as the bootstrap administrator.
fn request_empty(server: &Server, method: &str, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", server.token);
    let (status, body) =
        request(method, &format!("{}{path}", server.url), Some(&auth), None).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A package has one published version; publishing another (on its own or
/// with `upgrade?publish=true`) switches; PKG is a VersionId, a PackageId, a
/// name (the published version, else the newest) or NAME@VERSION, and a name
/// two packages carry is a conflict naming both.
#[test]
fn one_published_version_per_package_and_every_way_to_name_it() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    let a2 = pack(tmp.path(), "Editor", PKG_A, A2, "2.0", "version two\n");
    const A3: &str = "11111111-0000-4000-8000-0000000000a3";
    let a3 = pack(tmp.path(), "Editor", PKG_A, A3, "3.0", "version three\n");
    let b1 = pack(tmp.path(), "Viewer", PKG_B, B1, "1.0", "viewer\n");
    for file in [&a1, &a2, &b1] {
        server.admin_ok(&["package", "import", file.to_str().unwrap()]);
    }
    server.admin_ok(&["group", "create", "staff"]);
    let shown = |pkg: &str| {
        let (status, body) = request_empty(&server, "GET", &format!("/api/v1/packages/{pkg}"));
        assert_eq!(status, 200, "{pkg}: {body}");
        body["version"]["version_id"].as_str().unwrap().to_owned()
    };
    let published = || -> Vec<String> {
        let (_, list) = request_empty(&server, "GET", "/api/v1/packages?published=true");
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v["version_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Nothing published: a name or a PackageId is the newest version.
    assert_eq!(shown("Editor"), A2);
    assert_eq!(shown("editor"), A2);
    assert_eq!(shown(PKG_A), A2);
    assert_eq!(shown(A1), A1);
    assert_eq!(shown("Editor@1.0"), A1);
    assert_eq!(shown("Editor@1.0.0.0"), A1);
    let (status, _) = request_empty(&server, "GET", "/api/v1/packages/Editor@9.9");
    assert_eq!(status, 404);

    // Published: the name and the PackageId are the published version.
    let (status, body) = request_empty(&server, "POST", "/api/v1/packages/Editor@1.0/publish");
    assert_eq!(status, 200, "{body}");
    server.admin_ok(&["package", "publish", "Viewer"]);
    assert_eq!(shown("Editor"), A1);
    assert_eq!(shown(PKG_A), A1);
    assert_eq!(published(), [A1, B1]);
    // Publishing another version switches, and leaves other packages alone.
    let (status, _) = request_empty(&server, "POST", &format!("/api/v1/packages/{A2}/publish"));
    assert_eq!(status, 200);
    assert_eq!(published(), [A2, B1]);
    assert_eq!(shown("Editor"), A2);

    // Upgrade, transfer and switch in one step.
    server.admin_ok(&["package", "grant", "Editor", "staff"]);
    let auth = format!("Bearer {}", server.token);
    let (status, body) = request(
        "POST",
        &format!(
            "{}/api/v1/packages/Editor/upgrade?transfer=true&publish=true",
            server.url
        ),
        Some(&auth),
        Some(std::fs::read(&a3).unwrap()),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["previous"], A2);
    assert_eq!(body["version"]["published"], true);
    assert_eq!(published(), [B1, A3]);
    assert_eq!(shown("Editor"), A3);
    let (_, details) = request_empty(&server, "GET", "/api/v1/packages/Editor");
    assert_eq!(details["entitlements"][0]["group"], "staff");

    // Another package with the same name: the name alone is ambiguous.
    const PKG_C: &str = "33333333-0000-4000-8000-000000000003";
    let c1 = pack(
        tmp.path(),
        "Editor",
        PKG_C,
        "33333333-0000-4000-8000-0000000000c1",
        "1.0",
        "another editor\n",
    );
    server.admin_ok(&["package", "import", c1.to_str().unwrap()]);
    for pkg in ["Editor", "Editor@1.0"] {
        let (status, body) = request_empty(&server, "GET", &format!("/api/v1/packages/{pkg}"));
        assert_eq!(status, 409, "{pkg}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(PKG_A) && message.contains(PKG_C),
            "{message}"
        );
    }
    assert_eq!(shown("Editor@3.0"), A3);
    assert_eq!(shown(PKG_C), "33333333-0000-4000-8000-0000000000c1");
}

/// Configuration documents are XML with App-V's root elements, checked before
/// they are stored.
#[test]
fn configurations_need_app_v_root_elements() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    server.admin_ok(&["package", "import", a1.to_str().unwrap()]);
    server.admin_ok(&["group", "create", "staff"]);
    let config = "/api/v1/packages/Editor/deployment-config";
    for (bad, root) in [
        ("<UserConfiguration/>", "DeploymentConfiguration"),
        ("<DeploymentConfiguration>", "DeploymentConfiguration"),
        ("not xml", "DeploymentConfiguration"),
    ] {
        let (status, body) =
            request_json(&server, "PUT", config, serde_json::json!({ "config": bad }));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(root),
            "{bad}: {body}"
        );
    }
    let (status, body) = request_json(
        &server,
        "PUT",
        "/api/v1/packages/Editor/entitlements/staff",
        serde_json::json!({ "user_config": "<DeploymentConfiguration/>" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("UserConfiguration"),
        "{body}"
    );
    let (_, details) = request_empty(&server, "GET", "/api/v1/packages/Editor");
    assert_eq!(details["entitlements"], serde_json::json!([]));
    assert_eq!(details["deployment_config"], Value::Null);

    let good = "<DeploymentConfiguration xmlns=\"http://schemas.microsoft.com/appv/2010/deploymentconfiguration\"/>";
    let (status, body) = request_json(
        &server,
        "PUT",
        config,
        serde_json::json!({ "config": good }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = request_json(
        &server,
        "PUT",
        "/api/v1/packages/Editor/entitlements/staff",
        serde_json::json!({ "user_config": "<UserConfiguration/>" }),
    );
    assert_eq!(status, 204, "{body}");
}

/// Deleting a group that holds entitlements or memberships is refused, naming
/// them, unless forced; a forced deletion gives the connection groups it was
/// entitled to a new version.
#[test]
fn deleting_a_group_in_use_needs_force() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    server.admin_ok(&["package", "import", a1.to_str().unwrap()]);
    for group in ["staff", "labs", "empty"] {
        server.admin_ok(&["group", "create", group]);
    }
    server.admin_ok(&["user", "create", "alice", "--group", "staff"]);
    server.admin_ok(&["machine", "create", "pc1", "--group", "staff"]);
    server.admin_ok(&["package", "grant", "Editor", "staff"]);
    server.admin_ok(&["connection-group", "create", "Suite"]);
    let granted = server.admin_json(&["connection-group", "grant", "Suite", "staff"]);
    let (status, _) = request_empty(&server, "PUT", "/api/v1/groups/labs/members/groups/staff");
    assert_eq!(status, 204);

    let (status, body) = request_empty(&server, "DELETE", "/api/v1/groups/staff");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "group_in_use");
    assert_eq!(
        body["message"],
        "group staff is entitled to Editor 1.0.0.0 and connection group Suite, has 2 members \
         (alice, pc1), and is a member of group labs; delete it with --force to revoke them"
    );
    assert_eq!(
        server.admin_json(&["group", "show", "staff"])["members"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing was revoked"
    );

    let (status, body) = request_empty(&server, "DELETE", "/api/v1/groups/staff?force=true");
    assert_eq!(status, 204, "{body}");
    let suite = server.admin_json(&["connection-group", "show", "Suite"]);
    assert_eq!(suite["entitled_groups"], serde_json::json!([]));
    assert_ne!(suite["version_id"], granted["version_id"]);
    let (_, details) = request_empty(&server, "GET", "/api/v1/packages/Editor");
    assert_eq!(details["entitlements"], serde_json::json!([]));
    assert_eq!(
        server.admin_json(&["group", "show", "labs"])["members"],
        serde_json::json!([])
    );

    // A group that holds nothing goes without force; a missing one is 404.
    let (status, _) = request_empty(&server, "DELETE", "/api/v1/groups/empty");
    assert_eq!(status, 204);
    let (status, _) = request_empty(&server, "DELETE", "/api/v1/groups/empty");
    assert_eq!(status, 404);
}

/// Files Avail creates follow the umask where others must read them (a package
/// file, for a mirror such as nginx running as another user) and stay private
/// where they hold secrets (the token file, the SQLite database), whatever the
/// umask; the upload directory stays private.
#[test]
fn package_files_follow_the_umask_and_secrets_stay_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    // The server under umask 022, through a shell that sets it.
    let wrapper = tmp.path().join("avail-umask-022");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\numask 022\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_avail")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = AvailNode::start(&wrapper, None, &[]).unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    let imported = server.admin_json(&["package", "import", a1.to_str().unwrap()]);
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let content = server.data.join("content");
    let file = content.join(imported["version"]["content_path"].as_str().unwrap());
    assert_eq!(mode(&file), 0o644, "{}", file.display());
    assert_eq!(mode(file.parent().unwrap()), 0o755);
    assert_eq!(mode(&content.join(".incoming")), 0o700);
    assert_eq!(mode(&server.data.join("management.db")), 0o600);
    assert_eq!(mode(&server.data.join("admin-token")), 0o600);
}

/// `user show` and `machine show` answer with the publishing catalog's own
/// resolution: nested groups, only published versions, connection groups only
/// with their required members, an unknown user not found.
#[test]
fn users_and_machines_show_what_they_receive() {
    let server = start(None);
    let tmp = tempfile::tempdir().unwrap();
    let a1 = pack(tmp.path(), "Editor", PKG_A, A1, "1.0", "version one\n");
    let b1 = pack(tmp.path(), "Viewer", PKG_B, B1, "1.0", "viewer\n");
    for p in [&a1, &b1] {
        server.admin_ok(&["package", "import", p.to_str().unwrap()]);
    }
    for group in ["staff", "devs", "lab"] {
        server.admin_ok(&["group", "create", group]);
    }
    server.admin_ok(&["group", "add", "staff", "group", "devs"]);
    server.admin_ok(&["user", "create", "alice", "--group", "devs"]);
    server.admin_ok(&["machine", "create", "pc1", "--group", "lab"]);
    server.admin_ok(&["package", "grant", "Editor", "staff"]);
    server.admin_ok(&["package", "grant", "Viewer", "lab"]);
    server.admin_ok(&["package", "publish", "Editor"]);
    server.admin_ok(&["connection-group", "create", "Suite"]);
    server.admin_ok(&["connection-group", "add", "Suite", "Editor"]);
    server.admin_ok(&["connection-group", "grant", "Suite", "devs"]);
    server.admin_ok(&["connection-group", "publish", "Suite"]);

    let alice = server.admin_json(&["user", "show", "alice"]);
    assert_eq!(alice["kind"], "user");
    assert_eq!(alice["groups"], serde_json::json!(["devs", "staff"]));
    assert_eq!(alice["packages"].as_array().unwrap().len(), 1);
    assert_eq!(alice["packages"][0]["version_id"], A1);
    assert_eq!(alice["connection_groups"][0]["name"], "Suite");
    let shown = server.admin_ok(&["user", "show", "alice"]);
    assert!(shown.contains("groups: devs, staff"), "{shown}");
    assert!(
        shown.contains(&format!("package Editor 1.0.0.0 {A1}")),
        "{shown}"
    );
    assert!(shown.contains("connection-group Suite"), "{shown}");

    // Viewer is granted to lab but not published: the machine receives nothing.
    let pc1 = server.admin_json(&["machine", "show", "pc1"]);
    assert_eq!(pc1["groups"], serde_json::json!(["lab"]));
    assert_eq!(pc1["packages"], serde_json::json!([]));
    server.admin_ok(&["package", "publish", "Viewer"]);
    let pc1 = server.admin_json(&["machine", "show", "pc1"]);
    assert_eq!(pc1["packages"][0]["version_id"], B1);

    let o = server.admin(&["user", "show", "mallory"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
}
