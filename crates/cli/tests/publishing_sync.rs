//! Catalog sync end to end with the real `avail` binary: a node running only
//! the publishing role follows a management node through a list of management
//! URLs whose first entry is dead, sees a publish and an unpublish, keeps
//! answering with the last catalog once the management node is killed, also
//! after its own restart (from its disk copy), and the management node shows
//! the publishing node's last sync. After the first catalog, the publishing
//! node receives the changes since the catalog it holds, not whole catalogs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use avail_testkit::AvailNode;
use serde_json::Value;

const PKG: &str = "33333333-0000-4000-8000-000000000003";
const V1: &str = "33333333-0000-4000-8000-0000000000c1";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_avail"))
}

/// `avail admin --json ARGS…` on `node`, which must succeed, parsed.
fn admin_json(node: &AvailNode, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&node.admin_ok(&all)).unwrap()
}

/// Pack a one-file application into `dir`.
fn pack(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("opt/app/bin")).unwrap();
    std::fs::write(tree.join("opt/app/bin/app"), b"app").unwrap();
    let out = dir.join("app.appv");
    let o = Command::new(bin())
        .args(["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args(["--name", "App", "--version", "1.0"])
        .args(["--package-id", PKG, "--version-id", V1])
        .args(["--app", "app=/opt/app/bin/app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The publishing document the machine with `credential` gets from `node`.
fn document(node: &AvailNode, credential: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64",
                node.publishing_url
            ))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    })
}

/// `GET /api/v1/catalog?since=SINCE&wait=0` on `node` with `credential`: the
/// status and the catalog's sequence, if one was sent.
fn sync(node: &AvailNode, credential: &str, since: i64) -> (u16, Option<i64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/catalog?since={since}&wait=0", node.url))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Option<Value> = serde_json::from_slice(&response.bytes().await.unwrap()).ok();
        (status, body.and_then(|b| b["sequence"].as_i64()))
    })
}

/// Wait (at most 10 s) until the document on `node` does or does not list the package.
fn wait_for(node: &AvailNode, credential: &str, listed: bool) {
    let started = Instant::now();
    while document(node, credential).contains(V1) != listed {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the package is {} listed after 10 s: {}",
            if listed { "still not" } else { "still" },
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_publishing_node_follows_management_fails_over_and_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut management =
        AvailNode::start_roles(bin(), None, Some("management,content"), &[]).unwrap();
    let server = admin_json(&management, &["server", "register", "pub1"]);
    let server_credential = server["credential"].as_str().unwrap().to_owned();
    admin_json(&management, &["group", "create", "lab"]);
    let machine = admin_json(&management, &["machine", "create", "pc1", "--group", "lab"]);
    let machine_credential = machine["credential"].as_str().unwrap().to_owned();
    let package = pack(dir.path());
    management.admin_ok(&["package", "import", package.to_str().unwrap()]);
    management.admin_ok(&["package", "grant", "App", "lab"]);

    // A management URL nothing listens on comes first.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let urls = format!("{dead_url},{}", management.url);
    let mut publishing = AvailNode::start_roles(
        bin(),
        None,
        Some("publishing"),
        &[
            ("AVAIL_PUBLISHING_MANAGEMENT_URLS", &urls),
            ("AVAIL_PUBLISHING_CREDENTIAL", &server_credential),
        ],
    )
    .unwrap();
    assert!(!document(&publishing, &machine_credential).contains(V1));

    management.admin_ok(&["package", "publish", "App"]);
    wait_for(&publishing, &machine_credential, true);
    // The publish reached it as the changes since the catalog it held.
    let started = Instant::now();
    while !publishing
        .log()
        .contains("publishing catalog synced from a delta")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no catalog delta was applied: {}",
            publishing.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    management.admin_ok(&["package", "unpublish", "App"]);
    wait_for(&publishing, &machine_credential, false);
    management.admin_ok(&["package", "publish", "App"]);
    wait_for(&publishing, &machine_credential, true);

    // The management node shows the publishing node's last sync.
    let servers = admin_json(&management, &["server", "list"]);
    let pub1 = &servers.as_array().unwrap()[0];
    assert_eq!(pub1["name"], "pub1");
    assert!(
        pub1["last_sync_sequence"].as_i64().unwrap() > 0,
        "{servers}"
    );
    let listed = management.admin_ok(&["server", "list"]);
    assert!(
        listed.contains("pub1") && listed.contains("last sync"),
        "{listed}"
    );

    // The sync endpoint: the catalog when newer, 204 when not, only for publishing servers.
    let (status, sequence) = sync(&management, &server_credential, 0);
    assert_eq!(status, 200);
    let sequence = sequence.unwrap();
    assert_eq!(sync(&management, &server_credential, sequence), (204, None));
    assert_eq!(sync(&management, &machine_credential, 0).0, 401);
    assert_eq!(sync(&management, &management.token, 0).0, 401);

    // Management gone: the last catalog is served, also after a restart from disk.
    management.kill();
    assert!(document(&publishing, &machine_credential).contains(V1));
    publishing.restart().unwrap();
    assert!(document(&publishing, &machine_credential).contains(V1));
}
