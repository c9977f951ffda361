//! The publishing and reporting roles end to end with the real `avail`
//! binary, each case on SQLite and on PostgreSQL (issue 10, items 8 and 9):
//!
//! - users in different nested groups and a machine get different publishing
//!   documents, each valid against MS-VAPR §6.1's schema (`xmllint`);
//! - two nodes over the same databases behave as one: a publish or unpublish
//!   reaches the other node's publishing document within 1 s, and a report
//!   posted to both reporting roles counts once (PostgreSQL; on SQLite, which
//!   one process owns, a publishing-only node follows the management node);
//! - a publishing-only node outlives the management process and its
//!   PostgreSQL, also across its own restart, and syncs again once they are
//!   back;
//! - a management URL list whose first entry is dead still syncs;
//! - a UTF-16 report (with and without a byte order mark) posted twice is one
//!   set of rows;
//! - malformed, oversized and unauthenticated requests get 400/413/401 and
//!   change nothing.
//!
//! Every PostgreSQL case but the one that stops its server shares one
//! throwaway server (a database pair per test). Propagation times are printed
//! (`cargo test -p avail-cli --test roles -- --nocapture`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use avail_testkit::{AvailNode, Postgres};
use serde_json::Value;

/// The MS-VAPR §6.1 publishing schema, extended by the optional `NoGroup`.
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../model/tests/fixtures/publishing/MS-VAPR-publishing.xsd"
);

/// The constructed MS-VAPR SetReport example.
const REPORT: &str = include_str!("../../server/tests/fixtures/reporting/SetReport.xml");

/// The GetPackage query of an App-V 5.1 client on Windows 10.
const QUERY: &str = "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64";

/// The issue's bound on a publish reaching another publishing node.
const PROPAGATION: Duration = Duration::from_secs(1);

/// How long a poll may go on before the test fails (beyond any bound it checks).
const PATIENCE: Duration = Duration::from_secs(15);

/// The packages: (name, PackageId, VersionId).
const P1: (&str, &str, &str) = (
    "One",
    "10000000-0000-4000-8000-000000000001",
    "10000000-0000-4000-8000-0000000000a1",
);
const P2: (&str, &str, &str) = (
    "Two",
    "20000000-0000-4000-8000-000000000002",
    "20000000-0000-4000-8000-0000000000a2",
);
const P3: (&str, &str, &str) = (
    "Three",
    "30000000-0000-4000-8000-000000000003",
    "30000000-0000-4000-8000-0000000000a3",
);
const P4: (&str, &str, &str) = (
    "Four",
    "40000000-0000-4000-8000-000000000004",
    "40000000-0000-4000-8000-0000000000a4",
);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_avail"))
}

// ---- databases ----

/// Where a case's databases live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One throwaway PostgreSQL server shared by the tests of this binary that run
/// while it is up (the last one to finish stops it; see `conformance.rs`).
fn shared_postgres() -> Arc<Postgres> {
    static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(Postgres::start().unwrap());
    *shared = Arc::downgrade(&pg);
    pg
}

/// A case's Management and Reporting DBs: the embedded SQLite files of the
/// node, or a fresh installed pair on PostgreSQL.
struct Dbs {
    pg: Option<Arc<Postgres>>,
    management: Option<String>,
    reporting: Option<String>,
}

impl Dbs {
    /// On the shared PostgreSQL server, or SQLite.
    fn new(backend: Backend) -> Dbs {
        match backend {
            Backend::Sqlite => Dbs {
                pg: None,
                management: None,
                reporting: None,
            },
            Backend::Postgres => Dbs::on(shared_postgres()),
        }
    }

    /// On a PostgreSQL server of the case's own (which it may stop), or SQLite.
    fn own(backend: Backend) -> Dbs {
        match backend {
            Backend::Sqlite => Dbs::new(backend),
            Backend::Postgres => Dbs::on(Arc::new(Postgres::start().unwrap())),
        }
    }

    fn on(pg: Arc<Postgres>) -> Dbs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (m, r) = (format!("roles_m{n}"), format!("roles_r{n}"));
        pg.create_database(&m).unwrap();
        pg.create_database(&r).unwrap();
        let (management, reporting) = (pg.url(&m), pg.url(&r));
        let o = Command::new(bin())
            .args(["db", "install", "--management-url", &management])
            .args(["--reporting-url", &reporting])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Dbs {
            pg: Some(pg),
            management: Some(management),
            reporting: Some(reporting),
        }
    }

    /// `env` with the Reporting DB's URL when it is not the embedded one.
    fn env<'a>(&'a self, env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = env.to_vec();
        if let Some(url) = &self.reporting {
            all.push(("AVAIL_REPORTING_DATABASE_URL", url));
        }
        all
    }

    /// A node with every role over these databases.
    fn node(&self, env: &[(&str, &str)]) -> AvailNode {
        AvailNode::start(bin(), self.management.as_deref(), &self.env(env)).unwrap()
    }

    /// A second node with every role over the same (PostgreSQL) databases.
    fn second_node(&self, first: &AvailNode) -> AvailNode {
        let url = self.management.as_deref().expect("a shared Management DB");
        AvailNode::start_joining(bin(), url, None, &first.token, &self.env(&[])).unwrap()
    }
}

/// A node running only the publishing role, following `urls` (comma-separated).
fn publishing_node(urls: &str, credential: &str) -> AvailNode {
    AvailNode::start_roles(
        bin(),
        None,
        Some("publishing"),
        &[
            ("AVAIL_PUBLISHING_MANAGEMENT_URLS", urls),
            ("AVAIL_PUBLISHING_CREDENTIAL", credential),
        ],
    )
    .unwrap()
}

/// `http://127.0.0.1:PORT` where nothing listens.
fn dead_url() -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", dead.local_addr().unwrap())
}

// ---- HTTP ----

/// `(status, body)` of one request.
fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    })
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// `GET {QUERY}` on `node`'s publishing role with `credential` as Bearer and
/// `user` as `Avail-User`: the status and the body.
fn get_document(
    node: &AvailNode,
    query: &str,
    credential: Option<&str>,
    user: Option<&str>,
) -> (u16, String) {
    let bearer = credential.map(|c| format!("Bearer {c}"));
    let mut headers = Vec::new();
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    if let Some(user) = user {
        headers.push(("Avail-User", user));
    }
    let (status, body) = http(
        "GET",
        &format!("{}{query}", node.publishing_url),
        &headers,
        None,
    );
    (status, String::from_utf8(body).unwrap())
}

/// The publishing document for the machine (and `user`), which must be served.
fn document(node: &AvailNode, machine: &str, user: Option<&str>) -> String {
    let (status, doc) = get_document(node, QUERY, Some(machine), user);
    assert_eq!(status, 200, "{doc}\n{}", node.log());
    doc
}

/// The PackageIds in the machine's (and `user`'s) document, once `node`
/// serves one for this machine (its catalog may not hold the machine yet).
fn listed(node: &AvailNode, machine: &str, user: Option<&str>) -> Option<Vec<String>> {
    match get_document(node, QUERY, Some(machine), user) {
        (200, doc) => Some(package_ids(&doc)),
        _ => None,
    }
}

/// The `PackageId` of each `Packages/Package` of a document, sorted.
fn package_ids(doc: &str) -> Vec<String> {
    let Some(start) = doc.find("<Packages>") else {
        return Vec::new();
    };
    let end = doc.find("</Packages>").expect("Packages is closed");
    attributes(&doc[start..end], "<Package ", "PackageId")
}

/// The `GroupId` of each `Groups/Group` of a document, sorted.
fn group_ids(doc: &str) -> Vec<String> {
    attributes(doc, "<Group ", "GroupId")
}

/// The value of `attribute` in every element that starts with `element`, sorted.
fn attributes(xml: &str, element: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    let mut found: Vec<String> = xml
        .split(element)
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').unwrap()];
            let at = tag.find(&needle).unwrap() + needle.len();
            tag[at..at + tag[at..].find('"').unwrap()].to_owned()
        })
        .collect();
    found.sort();
    found
}

/// Sorted PackageIds.
fn ids(packages: &[(&str, &str, &str)]) -> Vec<String> {
    let mut ids: Vec<String> = packages.iter().map(|p| p.1.to_owned()).collect();
    ids.sort();
    ids
}

/// `xmllint --noout --schema` the publishing schema on `doc`.
fn assert_valid(doc: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("publishing.xml");
    std::fs::write(&file, doc).unwrap();
    let o = Command::new("xmllint")
        .args(["--noout", "--schema", SCHEMA])
        .arg(&file)
        .output()
        .expect("xmllint is installed");
    assert!(
        o.status.success(),
        "{what}: the document does not validate: {}\n{doc}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Poll `done` every 50 ms until it holds (at most [`PATIENCE`]); the time it took.
fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

// ---- the directory ----

/// `avail admin --json ARGS…` on `node`, which must succeed, parsed.
fn admin_json(node: &AvailNode, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&node.admin_ok(&all)).unwrap()
}

/// Pack a one-file application `(name, PackageId, VersionId)` into `dir`,
/// with `payload` as its file.
fn pack(dir: &Path, package: (&str, &str, &str), payload: &[u8]) -> PathBuf {
    let (name, package_id, version_id) = package;
    let tree = dir.join(name).join("tree");
    std::fs::create_dir_all(tree.join("opt/app/bin")).unwrap();
    std::fs::write(tree.join("opt/app/bin/app"), payload).unwrap();
    let out = dir.join(format!("{name}.appv"));
    let o = Command::new(bin())
        .args(["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args(["--name", name, "--version", "1.0"])
        .args(["--package-id", package_id, "--version-id", version_id])
        .args(["--app", "app=/opt/app/bin/app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Import `package` into `node`.
fn import(node: &AvailNode, dir: &Path, package: (&str, &str, &str)) {
    let file = pack(dir, package, package.0.as_bytes());
    node.admin_ok(&["package", "import", file.to_str().unwrap()]);
}

/// The directory every case starts from, through `node`'s management role:
///
/// - user `a` in `g1`, `g1` in `g2`, which is entitled to `P2`;
/// - user `b` in `g3`, entitled to `P1` and to the connection group `cg`
///   (`P1` required, `P2` optional);
/// - machine `m` in `gm`, entitled to `P3` and (unpublished) `P4`;
/// - `P1`, `P2`, `P3` and `cg` published.
///
/// The machine's credential.
fn directory(node: &AvailNode, dir: &Path) -> String {
    for group in ["g1", "g2", "g3", "gm"] {
        node.admin_ok(&["group", "create", group]);
    }
    node.admin_ok(&["group", "add", "g2", "group", "g1"]);
    node.admin_ok(&["user", "create", "a", "--group", "g1"]);
    node.admin_ok(&["user", "create", "b", "--group", "g3"]);
    let machine = admin_json(node, &["machine", "create", "m", "--group", "gm"]);
    for package in [P1, P2, P3, P4] {
        import(node, dir, package);
    }
    node.admin_ok(&["package", "grant", P1.0, "g3"]);
    node.admin_ok(&["package", "grant", P2.0, "g2"]);
    node.admin_ok(&["package", "grant", P3.0, "gm"]);
    node.admin_ok(&["package", "grant", P4.0, "gm"]);
    node.admin_ok(&["connection-group", "create", "cg"]);
    node.admin_ok(&["connection-group", "add", "cg", P1.0]);
    node.admin_ok(&["connection-group", "add", "cg", P2.0, "--optional"]);
    node.admin_ok(&["connection-group", "grant", "cg", "g3"]);
    for package in [P1, P2, P3] {
        node.admin_ok(&["package", "publish", package.0]);
    }
    node.admin_ok(&["connection-group", "publish", "cg"]);
    let credential = machine["credential"].as_str().unwrap().to_owned();
    // The connection group is published last: once b's document on this node
    // has it, the node's publishing role serves the whole setup (before that,
    // the machine may even be unknown to it: 401).
    until("the whole directory on the node's publishing role", || {
        let (status, doc) = get_document(node, QUERY, Some(&credential), Some("b"));
        status == 200 && doc.contains("<Groups>")
    });
    credential
}

/// The connection group's GroupId.
fn cg_id(node: &AvailNode) -> String {
    let cg = admin_json(node, &["connection-group", "show", "cg"]);
    cg["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {cg}"))
        .to_owned()
}

/// POST `/api/v1/packages/{PackageId}/{action}` as the administrator: a
/// publish or an unpublish, timed from just before it is sent.
fn package_action(node: &AvailNode, package: (&str, &str, &str), action: &str) -> Instant {
    let started = Instant::now();
    let bearer = format!("Bearer {}", node.token);
    let (status, body) = http(
        "POST",
        &format!("{}/api/v1/packages/{}/{action}", node.url, package.1),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    started
}

/// A node whose publishing document a change should reach: a label, the node,
/// and whether it is a separate node, held to [`PROPAGATION`] (the node the
/// change was made through is only measured).
type Target<'a> = (&'a str, &'a AvailNode, bool);

/// Wait until the machine's document on each of `nodes` does (or does not)
/// list `package`, polling them all every 50 ms; print the time each took
/// since `started` and assert no separate node took more than [`PROPAGATION`].
fn reaches(
    what: &str,
    nodes: &[Target<'_>],
    machine: &str,
    package: (&str, &str, &str),
    present: bool,
    started: Instant,
) {
    let mut took: Vec<Option<Duration>> = vec![None; nodes.len()];
    while took.iter().any(Option::is_none) {
        for ((_, node, _), took) in nodes.iter().zip(&mut took) {
            if took.is_none()
                && listed(node, machine, None)
                    .is_some_and(|ids| ids.contains(&package.1.to_owned()) == present)
            {
                *took = Some(started.elapsed());
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not everywhere within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut late = Vec::new();
    for ((label, _, separate), took) in nodes.iter().zip(took.into_iter().flatten()) {
        println!("{what} -> {label}: {} ms", took.as_millis());
        if *separate && took > PROPAGATION {
            late.push(format!("{label} took {took:?}"));
        }
    }
    assert!(
        late.is_empty(),
        "{what}: more than {PROPAGATION:?}: {}",
        late.join(", ")
    );
}

// ---- reports ----

/// `text` as UTF-16LE, with a byte order mark or without (as Windows clients send it).
fn utf16(text: &str, bom: bool) -> Vec<u8> {
    let bom = bom.then_some(0xFEFF_u16);
    bom.into_iter()
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The example report with its launch record renamed to `application`.
fn report_of(application: &str) -> String {
    REPORT.replace(
        r#"Name="Notepad++" Ver="7.5.1.0""#,
        &format!(r#"Name="{application}" Ver="7.5.1.0""#),
    )
}

/// POST a SetReport body to `node`'s reporting role: the status and body.
fn post_report(node: &AvailNode, body: Vec<u8>, report_id: Option<&str>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = report_id
        .map(|id| ("Avail-Report-Id", id))
        .into_iter()
        .collect();
    let (status, body) = http(
        "POST",
        &format!("{}/", node.reporting_url),
        &headers,
        Some(body),
    );
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// (application, launches) of every launch count, through `avail admin report`.
fn launches(node: &AvailNode) -> Vec<(String, i64)> {
    let counts = admin_json(node, &["report", "launches", "--by", "application"]);
    let mut counts: Vec<(String, i64)> = counts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["launches"].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    counts
}

/// How many clients reported, through `avail admin report clients`.
fn clients(node: &AvailNode) -> usize {
    admin_json(node, &["report", "clients"])
        .as_array()
        .unwrap()
        .len()
}

// ---- the cases ----

/// Users in different nested groups and a machine get different documents,
/// each valid against the schema and listing exactly what they receive.
fn documents_per_principal(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Dbs::new(backend);
    let node = dbs.node(&[]);
    let machine = directory(&node, dir.path());
    let cg = cg_id(&node);

    // Published through the management role; the publishing role follows its
    // database within a second or so.
    until("the machine's document", || {
        listed(&node, &machine, None) == Some(ids(&[P3]))
    });
    let cases: [(Option<&str>, Vec<String>, Vec<String>); 4] = [
        (None, ids(&[P3]), vec![]),
        (Some("a"), ids(&[P2, P3]), vec![]),
        (Some("b"), ids(&[P1, P3]), vec![cg.clone()]),
        // An unknown user adds nothing: the machine's document, not an error.
        (Some("nobody"), ids(&[P3]), vec![]),
    ];
    let mut seen = Vec::new();
    for (user, packages, groups) in cases {
        let what = format!("machine m with user {user:?}");
        until(&what, || {
            listed(&node, &machine, user) == Some(packages.clone())
        });
        let doc = document(&node, &machine, user);
        assert_eq!(package_ids(&doc), packages, "{what}: {doc}");
        assert_eq!(group_ids(&doc), groups, "{what}: {doc}");
        assert!(
            doc.contains("<Publishing Protocol=\"1.0\">"),
            "{what}: {doc}"
        );
        assert_valid(&doc, &what);
        seen.push(doc);
    }
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[0], seen[2]);
    assert_ne!(seen[1], seen[2]);
    assert_eq!(seen[0], seen[3]);

    // The document's headers (MS-VAPR: text/xml, not cached).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let headers = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}{QUERY}", node.publishing_url))
            .bearer_auth(&machine)
            .send()
            .await
            .unwrap()
            .headers()
            .clone()
    });
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert!(
        header("content-type").is_some_and(|t| t.starts_with("text/xml")),
        "{headers:?}"
    );
    assert_eq!(header("cache-control"), Some("no-cache"), "{headers:?}");

    // The management API's view of the same users.
    let a = admin_json(&node, &["user", "show", "a"]);
    assert!(a.to_string().contains(P2.2), "{a}");
    assert!(!a.to_string().contains(P1.2), "{a}");
    let b = admin_json(&node, &["user", "show", "b"]);
    assert!(b.to_string().contains(P1.2), "{b}");
    assert!(!b.to_string().contains(P2.2), "{b}");
}

/// Two nodes over the same databases behave as one.
///
/// PostgreSQL: two nodes with every role; a publish through one reaches the
/// other's publishing document within 1 s and an unpublish through the other
/// leaves the first's likewise; a publishing-only node following the second
/// management role sees a publish made through the first; the same reports
/// posted to both reporting roles at once count once. SQLite (one process owns
/// the file): a publishing-only node following the management node.
fn two_nodes_behave_as_one(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Dbs::new(backend);
    let a = dbs.node(&[]);
    let machine = directory(&a, dir.path());
    let server = admin_json(&a, &["server", "register", "pub1"]);
    let credential = server["credential"].as_str().unwrap();

    match backend {
        Backend::Sqlite => {
            let follower = publishing_node(&a.url, credential);
            until("the follower's first catalog", || {
                listed(&follower, &machine, None) == Some(ids(&[P3]))
            });
            for round in 0..3 {
                let targets = [
                    ("node A's own publishing role", &a, false),
                    ("publishing-only node following A", &follower, true),
                ];
                let started = package_action(&a, P4, "publish");
                reaches(
                    &format!("sqlite round {round}: publish via A"),
                    &targets,
                    &machine,
                    P4,
                    true,
                    started,
                );
                let started = package_action(&a, P4, "unpublish");
                reaches(
                    &format!("sqlite round {round}: unpublish via A"),
                    &targets,
                    &machine,
                    P4,
                    false,
                    started,
                );
            }
        }
        Backend::Postgres => {
            let b = dbs.second_node(&a);
            // B's management role sees what A made, with A's token.
            let groups = b.admin_ok(&["group", "list"]);
            assert!(groups.contains("gm"), "{groups}");
            let follower = publishing_node(&b.url, credential);
            for node in [&a, &b, &follower] {
                until("every node's first catalog", || {
                    listed(node, &machine, None) == Some(ids(&[P3]))
                });
            }
            let through_a = [
                ("node A's own publishing role", &a, false),
                ("node B", &b, true),
                ("publishing-only node following B", &follower, true),
            ];
            let through_b = [
                ("node A", &a, true),
                ("node B's own publishing role", &b, false),
                ("publishing-only node following B", &follower, true),
            ];
            for round in 0..3 {
                let started = package_action(&a, P4, "publish");
                reaches(
                    &format!("postgres round {round}: publish via A"),
                    &through_a,
                    &machine,
                    P4,
                    true,
                    started,
                );
                let started = package_action(&b, P4, "unpublish");
                reaches(
                    &format!("postgres round {round}: unpublish via B"),
                    &through_b,
                    &machine,
                    P4,
                    false,
                    started,
                );
            }
            // The same documents from both nodes.
            for user in [None, Some("a"), Some("b")] {
                assert_eq!(
                    package_ids(&document(&a, &machine, user)),
                    package_ids(&document(&b, &machine, user))
                );
            }

            // Reports: each posted to both reporting roles at once counts once.
            assert_eq!(launches(&a), []);
            for i in 0..4 {
                let body = utf16(&report_of(&format!("App{i}")), false);
                let posts: Vec<_> = [&a, &b]
                    .map(|node| {
                        let (url, body) = (node.reporting_url.clone(), body.clone());
                        std::thread::spawn(move || {
                            http("POST", &format!("{url}/"), &[], Some(body)).0
                        })
                    })
                    .into_iter()
                    .collect();
                for post in posts {
                    assert_eq!(post.join().unwrap(), 200);
                }
            }
            // The same report id with other bytes, once through each node.
            let id = "0b9f5a52-6c1f-4d7e-9a55-3c1d2e3f4a5b";
            assert_eq!(
                post_report(&a, report_of("Tagged").into_bytes(), Some(id)).0,
                200
            );
            assert_eq!(
                post_report(&b, utf16(&report_of("Tagged"), true), Some(id)).0,
                200
            );
            let expected: Vec<(String, i64)> = ["App0", "App1", "App2", "App3", "Tagged"]
                .iter()
                .map(|app| ((*app).to_owned(), 1))
                .collect();
            assert_eq!(launches(&a), expected);
            assert_eq!(launches(&b), expected);
        }
    }
}

/// A publishing-only node keeps answering with the last catalog while the
/// management process (and its PostgreSQL) is down, also after it restarts,
/// and syncs again once they are back.
fn publishing_outlives_management(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Dbs::own(backend);
    let mut management = dbs.node(&[]);
    let machine = directory(&management, dir.path());
    let server = admin_json(&management, &["server", "register", "pub1"]);
    let credential = server["credential"].as_str().unwrap();
    let mut follower = publishing_node(&management.url, credential);
    until("the follower's first catalog", || {
        listed(&follower, &machine, None) == Some(ids(&[P3]))
    });
    let before: Vec<String> = [None, Some("a"), Some("b")]
        .map(|user| document(&follower, &machine, user))
        .into();
    let unchanged = |follower: &AvailNode, when: &str| {
        for (user, doc) in [None, Some("a"), Some("b")].iter().zip(&before) {
            assert_eq!(
                &document(follower, &machine, *user),
                doc,
                "{when}, user {user:?}"
            );
        }
        let addr = follower.publishing_url.trim_start_matches("http://");
        assert_eq!(
            avail_testkit::http_status(addr, "/readyz"),
            Some(200),
            "{when}"
        );
    };

    if let Some(pg) = &dbs.pg {
        // The database first: the management role answers, but with errors,
        // and the management node's own publishing role serves what it holds.
        until("the management node's own catalog", || {
            listed(&management, &machine, Some("b")) == Some(ids(&[P1, P3]))
        });
        let own = document(&management, &machine, Some("b"));
        pg.kill().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        unchanged(&follower, "PostgreSQL stopped");
        assert_eq!(
            document(&management, &machine, Some("b")),
            own,
            "the management node's own publishing role with PostgreSQL stopped"
        );
    }
    management.kill();
    std::thread::sleep(Duration::from_millis(1500));
    unchanged(&follower, "management killed");
    follower.restart().unwrap();
    unchanged(&follower, "the follower restarted from its disk copy");

    // Everything back: a new publish reaches the follower again.
    if let Some(pg) = &dbs.pg {
        pg.restart().unwrap();
    }
    management.restart().unwrap();
    let started = package_action(&management, P4, "publish");
    let took = until("a publish after the outage", || {
        listed(&follower, &machine, None) == Some(ids(&[P3, P4]))
    });
    println!(
        "{backend:?}: publish after the outage reached the follower in {} ms ({} ms since sent)",
        took.as_millis(),
        started.elapsed().as_millis()
    );
}

/// A management URL list whose first entry is dead still syncs, at start and
/// after a change.
fn a_dead_first_url_still_syncs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Dbs::new(backend);
    let management = dbs.node(&[]);
    let machine = directory(&management, dir.path());
    let server = admin_json(&management, &["server", "register", "pub1"]);
    let credential = server["credential"].as_str().unwrap();
    let urls = format!("{},{}", dead_url(), management.url);
    let follower = publishing_node(&urls, credential);
    // Ready means it holds a catalog: the one from the live URL.
    assert_eq!(
        package_ids(&document(&follower, &machine, None)),
        ids(&[P3])
    );
    let started = package_action(&management, P4, "publish");
    let took = until("a publish through the second URL", || {
        listed(&follower, &machine, None) == Some(ids(&[P3, P4]))
    });
    println!(
        "{backend:?}: dead first URL: publish reached the follower in {} ms ({} ms since sent)",
        took.as_millis(),
        started.elapsed().as_millis()
    );

    // The management node shows the publishing node's last sync.
    let servers = admin_json(&management, &["server", "list"]);
    assert_eq!(servers[0]["name"], "pub1", "{servers}");
    assert!(
        servers[0]["last_sync_sequence"].as_i64().unwrap_or(0) > 0,
        "{servers}"
    );
    let table = management.admin_ok(&["server", "list"]);
    assert!(
        table.contains("pub1") && table.contains("last sync"),
        "{table}"
    );

    // The sync endpoint: the catalog when newer, 204 when not, only for
    // publishing servers.
    let sync = |credential: &str, since: i64| {
        let bearer = format!("Bearer {credential}");
        let (status, body) = http(
            "GET",
            &format!("{}/api/v1/catalog?since={since}&wait=0", management.url),
            &[("Authorization", &bearer)],
            None,
        );
        let sequence = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| b["sequence"].as_i64());
        (status, sequence)
    };
    let (status, sequence) = sync(credential, 0);
    assert_eq!(status, 200);
    let sequence = sequence.unwrap();
    assert_eq!(sync(credential, sequence), (204, None));
    assert_eq!(sync(&machine, 0).0, 401);
    assert_eq!(sync(&management.token, 0).0, 401);
}

/// A UTF-16LE report, without and with a byte order mark, each posted twice,
/// is one set of rows, and so is the same report in UTF-8.
fn a_report_posted_twice_counts_once(backend: Backend) {
    let dbs = Dbs::new(backend);
    let node = dbs.node(&[]);
    assert_eq!(clients(&node), 0);
    let bodies = [
        ("UTF-16LE", utf16(REPORT, false)),
        ("UTF-16LE again", utf16(REPORT, false)),
        ("UTF-16LE with a BOM", utf16(REPORT, true)),
        ("UTF-16LE with a BOM again", utf16(REPORT, true)),
        ("UTF-8", REPORT.as_bytes().to_vec()),
    ];
    for (what, body) in bodies {
        let (status, answer) = post_report(&node, body, None);
        assert_eq!(status, 200, "{what}: {answer}\n{}", node.log());
        assert_eq!(launches(&node), [("Notepad++".to_owned(), 1)], "{what}");
    }
    assert_eq!(launches(&node), [("Notepad++".to_owned(), 1)]);
    assert_eq!(clients(&node), 1);
    // The same through the API.
    let bearer = format!("Bearer {}", node.token);
    let (status, body) = http(
        "GET",
        &format!("{}/api/v1/reports/launches?by=user", node.url),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(status, 200);
    let counts = json(&body);
    assert_eq!(counts.as_array().unwrap().len(), 1, "{counts}");
    assert_eq!(counts[0]["key"], r"CORP\alice");
    assert_eq!(counts[0]["launches"], 1);
}

/// Malformed, oversized and unauthenticated requests get 400, 413 and 401 and
/// change nothing: the documents, the catalog's sequence, the packages and the
/// reports are as before.
fn bad_requests_change_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Dbs::new(backend);
    let node = dbs.node(&[
        ("AVAIL_REPORTING_MAX_BODY_BYTES", "100000"),
        ("AVAIL_MAX_UPLOAD_BYTES", "300000"),
    ]);
    let machine = directory(&node, dir.path());
    let server = admin_json(&node, &["server", "register", "probe"]);
    let probe = format!("Bearer {}", server["credential"].as_str().unwrap());
    let admin = format!("Bearer {}", node.token);
    let sequence = || {
        let (status, body) = http(
            "GET",
            &format!("{}/api/v1/catalog?since=0&wait=0", node.url),
            &[("Authorization", &probe)],
            None,
        );
        assert_eq!(status, 200);
        json(&body)["sequence"].as_i64().unwrap()
    };
    // The connection group is published last: once b's document has it, the
    // publishing role serves the whole setup.
    until("the machine's document", || {
        listed(&node, &machine, Some("b")) == Some(ids(&[P1, P3]))
            && document(&node, &machine, Some("b")).contains("<Groups>")
    });
    let seq_before = sequence();
    let docs_before: Vec<String> = [None, Some("a"), Some("b")]
        .map(|user| document(&node, &machine, user))
        .into();
    let packages_before = admin_json(&node, &["package", "list"]);
    let files_before = node.content_files();

    let expect = |what: &str, (status, body): (u16, Vec<u8>), want: u16| {
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&body));
    };

    // Publishing: malformed parameters, no or a wrong credential.
    let publishing = |query: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        http(
            "GET",
            &format!("{}{query}", node.publishing_url),
            &headers,
            None,
        )
    };
    let machine_bearer = format!("Bearer {machine}");
    for bad in [
        "/?ClientVersion=5.1&ClientOS=WindowsClient_10.0_x64",
        "/?ClientVersion=5.1.0.x&ClientOS=WindowsClient_10.0_x64",
        "/?ClientVersion=5.1.0.70000&ClientOS=WindowsClient_10.0_x64",
        "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient/10.0",
        "/?ClientVersion=5.1.0.0&ClientOS=Linux_6.1_x64",
    ] {
        expect(bad, publishing(bad, Some(&machine_bearer)), 400);
    }
    // An unknown, newer OS is accepted.
    expect(
        "a newer OS",
        publishing(
            "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_99.1_x64",
            Some(&machine_bearer),
        ),
        200,
    );
    expect("no credential", publishing(QUERY, None), 401);
    expect(
        "a wrong credential",
        publishing(QUERY, Some("Bearer avail_mch_not-a-credential")),
        401,
    );
    expect("the admin token", publishing(QUERY, Some(&admin)), 401);
    expect(
        "the server credential",
        publishing(QUERY, Some(&probe)),
        401,
    );

    // Management: a wrong or no admin token, a malformed configuration, an
    // upload past the limit.
    let publish_p4 = format!("{}/api/v1/packages/{}/publish", node.url, P4.1);
    expect(
        "publish with a wrong token",
        http(
            "POST",
            &publish_p4,
            &[("Authorization", "Bearer avail_adm_wrong")],
            None,
        ),
        401,
    );
    expect(
        "publish without a token",
        http("POST", &publish_p4, &[], None),
        401,
    );
    expect(
        "reports with a wrong token",
        http(
            "GET",
            &format!("{}/api/v1/reports/launches", node.url),
            &[("Authorization", "Bearer avail_adm_wrong")],
            None,
        ),
        401,
    );
    let config = dir.path().join("broken.xml");
    std::fs::write(&config, "<DeploymentConfiguration><Unclosed>").unwrap();
    let o = node.admin(&["package", "config", P3.0, config.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "a malformed deployment configuration was taken"
    );
    let put = http(
        "PUT",
        &format!("{}/api/v1/packages/{}/deployment-config", node.url, P3.1),
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        Some(
            serde_json::json!({ "config": "<DeploymentConfiguration><Unclosed>" })
                .to_string()
                .into_bytes(),
        ),
    );
    expect("a malformed configuration", put, 400);
    // A real package, bigger than the upload limit.
    let mut noise = Vec::with_capacity(600_000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < 600_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let big = pack(
        dir.path(),
        (
            "Big",
            "50000000-0000-4000-8000-000000000005",
            "50000000-0000-4000-8000-0000000000a5",
        ),
        &noise,
    );
    assert!(std::fs::metadata(&big).unwrap().len() > 300_000);
    expect(
        "an upload past the limit",
        http(
            "POST",
            &format!("{}/api/v1/packages", node.url),
            &[("Authorization", &admin)],
            Some(std::fs::read(&big).unwrap()),
        ),
        413,
    );
    let o = node.admin(&["package", "import", big.to_str().unwrap()]);
    assert!(!o.status.success(), "an upload past the limit was taken");

    // Reporting: malformed XML and bodies, a body past the limit.
    let bad_reports: [(&str, Vec<u8>, u16, &str); 7] = [
        (
            "unclosed element",
            utf16(&REPORT.replace("</APP_RECORDS>", ""), false),
            400,
            "",
        ),
        (
            "a missing element",
            utf16(&REPORT.replace("APP_RECORDS", "APP_RECORDZ"), false),
            400,
            "APP_RECORDS",
        ),
        (
            "a missing attribute",
            REPORT.replace(r#"User="CORP\alice""#, "").into_bytes(),
            400,
            "APP_RECORD lacks the required attribute User",
        ),
        ("not XML", utf16("hello, reporting", false), 400, ""),
        ("an odd number of bytes", vec![0x3C, 0x00, 0x43], 400, ""),
        ("empty", Vec::new(), 400, ""),
        (
            "past max_body_bytes",
            utf16(
                &REPORT.replace(
                    "<PKG_LIST>",
                    &format!("<!--{}--><PKG_LIST>", " ".repeat(60_000)),
                ),
                false,
            ),
            413,
            "",
        ),
    ];
    for (what, body, want, message) in bad_reports {
        let (status, answer) = post_report(&node, body, None);
        assert_eq!(status, want, "{what}: {answer}");
        let code = if want == 413 {
            "too_large"
        } else {
            "bad_request"
        };
        assert_eq!(answer["error"], code, "{what}: {answer}");
        assert!(
            answer["message"].as_str().unwrap_or("").contains(message),
            "{what}: {answer}"
        );
    }

    // Nothing changed.
    assert_eq!(
        sequence(),
        seq_before,
        "the catalog's change sequence moved"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let docs_after: Vec<String> = [None, Some("a"), Some("b")]
        .map(|user| document(&node, &machine, user))
        .into();
    assert_eq!(docs_after, docs_before);
    assert_eq!(admin_json(&node, &["package", "list"]), packages_before);
    assert_eq!(node.content_files(), files_before);
    assert_eq!(launches(&node), []);
    assert_eq!(clients(&node), 0);
}

/// `sqlite::<case>` and `postgres::<case>` for every case.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::Sqlite);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::Postgres);
                }
            )*
        }
    };
}

on_both_backends! {
    documents_per_principal,
    two_nodes_behave_as_one,
    publishing_outlives_management,
    a_dead_first_url_still_syncs,
    a_report_posted_twice_counts_once,
    bad_requests_change_nothing,
}
