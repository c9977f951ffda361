//! The reporting role end to end with the real `avail` binary, on SQLite and
//! on PostgreSQL: MS-VAPR SetReport bodies posted to `/` as Windows clients send
//! them (UTF-16 without a processing instruction) and as UTF-8, a report sent
//! twice counted once, and what the role refuses (malformed XML, a missing
//! element, an oversized body) leaving nothing stored. What is stored is read
//! back through `avail admin report`.

use std::path::Path;
use std::process::Command;

use avail_testkit::{AvailNode, Postgres};
use serde_json::Value;

/// The constructed MS-VAPR example (see `crates/server/tests/fixtures/reporting/README.md`).
const EXAMPLE: &str = include_str!("../../server/tests/fixtures/reporting/SetReport.xml");

fn start(database_url: Option<&str>, env: &[(&str, &str)]) -> AvailNode {
    AvailNode::start(Path::new(env!("CARGO_BIN_EXE_avail")), database_url, env).unwrap()
}

/// `text` as UTF-16LE without a byte order mark, as Windows clients send it.
fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// POST `body` to the node's reporting role (with `Avail-Report-Id` if given):
/// the status and the response body.
fn post(node: &AvailNode, body: Vec<u8>, report_id: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new()
            .post(format!("{}/", node.reporting_url))
            .body(body);
        if let Some(id) = report_id {
            request = request.header("Avail-Report-Id", id);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

/// `avail admin --json report ARGS…`, parsed.
fn report(node: &AvailNode, args: &[&str]) -> Value {
    let mut all = vec!["--json", "report"];
    all.extend_from_slice(args);
    serde_json::from_str(&node.admin_ok(&all)).unwrap()
}

/// (key, launches) of each launch count.
fn launches(node: &AvailNode, by: &str) -> Vec<(String, i64)> {
    report(node, &["launches", "--by", by])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["launches"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The example with its launch record renamed to `application` and launched at `launched`.
fn variant(application: &str, launched: &str) -> String {
    EXAMPLE
        .replace(
            r#"Name="Notepad++" Ver="7.5.1.0""#,
            &format!(r#"Name="{application}" Ver="7.5.1.0""#),
        )
        .replace("2016-03-01T08:01:02Z", launched)
}

fn reports_are_stored_once(node: &AvailNode) {
    // Nothing reported yet.
    assert_eq!(report(node, &["clients"]), Value::Array(Vec::new()));

    // A UTF-16 body posted twice (a client retrying) is one set of rows, and
    // the same report in UTF-8 is the same report.
    for body in [utf16(EXAMPLE), utf16(EXAMPLE), EXAMPLE.as_bytes().to_vec()] {
        let (status, _) = post(node, body, None);
        assert_eq!(status, 200, "{}", node.log());
    }
    assert_eq!(launches(node, "day"), [("Notepad++".to_owned(), 1)]);
    let by_day = report(node, &["launches", "--by", "day"]);
    assert_eq!(by_day[0]["day"], "2016-03-01");
    assert_eq!(launches(node, "user"), [(r"CORP\alice".to_owned(), 1)]);
    assert_eq!(
        launches(node, "package"),
        [("5d03c08f-51dc-4026-8cf9-15ebe3d65a72".to_owned(), 1)]
    );
    let clients = report(node, &["clients"]);
    assert_eq!(clients.as_array().unwrap().len(), 1);
    assert_eq!(clients[0]["client"]["host_name"], "pc0042.corp.example.com");
    assert_eq!(clients[0]["packages"][0]["percent_cached"], 37);

    // A different UTF-8 report counts; one sent again under the same
    // Avail-Report-Id does not, even with other bytes.
    let id = "0b9f5a52-6c1f-4d7e-9a55-3c1d2e3f4a5b";
    let (status, _) = post(
        node,
        variant("Editor", "2016-03-02T10:00:00Z").into_bytes(),
        Some(id),
    );
    assert_eq!(status, 200);
    let (status, _) = post(
        node,
        utf16(&variant("Editor", "2016-03-02T11:00:00Z")),
        Some(id),
    );
    assert_eq!(status, 200);
    assert_eq!(
        launches(node, "application"),
        [("Editor".to_owned(), 1), ("Notepad++".to_owned(), 1)]
    );

    // The text table says the same.
    let table = node.admin_ok(&["report", "launches", "--by", "user"]);
    assert!(table.starts_with("LAUNCHES  USER"), "{table}");
    assert!(table.contains(r"2         CORP\alice"), "{table}");
    let table = node.admin_ok(&["report", "clients"]);
    assert!(table.contains("pc0042.corp.example.com"), "{table}");
    assert!(table.contains("37%"), "{table}");
}

/// Many reports at once, as a busy server gets them (the role stores what is
/// queued together in one transaction): each answered 200 once stored, and
/// copies of one report posted at the same time (a client retrying while its
/// first attempt waits) counted once.
fn a_burst_is_stored_whole(node: &AvailNode) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/", node.reporting_url);
        let body = utf16(&variant("Burst", "2016-03-03T10:00:00Z"));
        // 40 distinct reports, then 10 copies of a 41st.
        let tasks: Vec<_> = (0..50u32)
            .map(|i| {
                let id = format!("00000000-0000-4000-8000-{:012x}", i.min(40));
                let request = client
                    .post(&url)
                    .header("Avail-Report-Id", id)
                    .body(body.clone());
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses
    });
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{}",
        node.log()
    );
    let burst = launches(node, "application")
        .into_iter()
        .find(|(key, _)| key == "Burst");
    assert_eq!(burst, Some(("Burst".to_owned(), 41)));
}

fn refusals_store_nothing(node: &AvailNode) {
    let (status, body) = post(node, utf16(&EXAMPLE.replace("</APP_RECORDS>", "")), None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");

    let missing = EXAMPLE.replace("APP_RECORDS", "APP_RECORDZ");
    let (status, body) = post(node, utf16(&missing), None);
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("APP_RECORDS"),
        "{body}"
    );

    let no_user = EXAMPLE.replace(r#"User="CORP\alice""#, "");
    let (status, body) = post(node, no_user.into_bytes(), None);
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "APP_RECORD lacks the required attribute User"
    );

    assert_eq!(report(node, &["clients"]), Value::Array(Vec::new()));
    assert_eq!(report(node, &["launches"]), Value::Array(Vec::new()));
}

#[test]
fn reports_on_sqlite() {
    let node = start(None, &[]);
    reports_are_stored_once(&node);
    a_burst_is_stored_whole(&node);
}

#[test]
fn refusals_on_sqlite() {
    let node = start(None, &[("AVAIL_REPORTING_MAX_BODY_BYTES", "100000")]);
    refusals_store_nothing(&node);
    // Past the configured bound: 413, as JSON.
    let padded = EXAMPLE.replace(
        "<PKG_LIST>",
        &format!("<!--{}--><PKG_LIST>", " ".repeat(60_000)),
    );
    let (status, body) = post(&node, utf16(&padded), None);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large");
    assert_eq!(report(&node, &["clients"]), Value::Array(Vec::new()));
}

#[test]
fn reports_on_postgres() {
    let pg = Postgres::start().unwrap();
    pg.create_database("avail_management").unwrap();
    pg.create_database("avail_reporting").unwrap();
    let management = pg.url("avail_management");
    let reporting = pg.url("avail_reporting");
    let o = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["db", "install", "--management-url", &management])
        .args(["--reporting-url", &reporting])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let node = start(
        Some(&management),
        &[("AVAIL_REPORTING_DATABASE_URL", &reporting)],
    );
    refusals_store_nothing(&node);
    reports_are_stored_once(&node);
    a_burst_is_stored_whole(&node);
}
