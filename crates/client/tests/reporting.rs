//! Usage reporting against a real HTTP server on a socket: the SetReport body,
//! failures that keep everything, crash recovery without loss or duplicates,
//! the cache limit, the block size, unfinished launches, damaged files and
//! the send schedule.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avail_client::reporting::{
    ClientIdentity, Launch, PackageState, ReportQueue, ReportingSettings, SendError, http_client,
    next_send_time,
};
use chrono::{DateTime, FixedOffset, TimeZone, Timelike, Utc};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use uuid::Uuid;

/// How the test server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    Unavailable,
    Redirect,
    /// Accept the request and never answer.
    Hang,
    /// Record the report, then answer 503 (the 200 "lost").
    StoreThenFail,
    /// Answer this request as `Ok`, then `Hang`.
    OkThenHang,
}

#[derive(Debug, Clone)]
struct Received {
    id: String,
    content_type: String,
    body: Vec<u8>,
}

struct Server {
    url: String,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(Answer::Ok));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), received.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (a, r) = (a.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (a, r) = (a.clone(), r.clone());
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            let id = header("avail-report-id");
                            let content_type = header("content-type");
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let mut answer = *a.lock().unwrap();
                            if answer == Answer::OkThenHang {
                                *a.lock().unwrap() = Answer::Hang;
                                answer = Answer::Ok;
                            }
                            let status = match answer {
                                Answer::OkThenHang => unreachable!(),
                                Answer::Ok | Answer::StoreThenFail => {
                                    r.lock().unwrap().push(Received {
                                        id,
                                        content_type,
                                        body: body.to_vec(),
                                    });
                                    if answer == Answer::Ok {
                                        StatusCode::OK
                                    } else {
                                        StatusCode::SERVICE_UNAVAILABLE
                                    }
                                }
                                Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                                Answer::Redirect => StatusCode::TEMPORARY_REDIRECT,
                                Answer::Hang => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    StatusCode::OK
                                }
                            };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = status;
                            if status == StatusCode::TEMPORARY_REDIRECT {
                                response
                                    .headers_mut()
                                    .insert("location", "/elsewhere".parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            url,
            answer,
            received,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn client() -> reqwest::Client {
    http_client(Duration::from_secs(5)).unwrap()
}

fn identity() -> ClientIdentity {
    ClientIdentity {
        host: "pc0042.corp.example.com".into(),
        version: "0.1.0".into(),
        processor_arch: "x64".into(),
        os_version: "6.8".into(),
        os_type: "Client".into(),
    }
}

fn package(percent: u8) -> PackageState {
    PackageState {
        package_id: Uuid::from_u128(1),
        version_id: Uuid::from_u128(2),
        name: "Notepad++ & Friends".into(),
        version: "7.5.1".into(),
        source: "https://content.example.com/np.appv".into(),
        percent_cached: percent,
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_456_819_262 + seconds, 0).unwrap()
}

fn launch(n: u32) -> Launch {
    Launch {
        id: Uuid::new_v4(),
        application: format!("App {n}"),
        application_version: "7.5.1.0".into(),
        package_version_id: Uuid::from_u128(2),
        connection_group_version_id: None,
        server: "pubsvr01".into(),
        user: r"CORP\alice".into(),
        launched: at(i64::from(n) * 10),
        status: "0-0".into(),
    }
}

/// Records `count` launches, each shut down.
fn record(queue: &ReportQueue, from: u32, count: u32) -> Vec<Launch> {
    (from..from + count)
        .map(|n| {
            let l = launch(n);
            queue.record_launch(&l).unwrap();
            assert!(
                queue
                    .record_shutdown(l.id, at(i64::from(n) * 10 + 5))
                    .unwrap()
            );
            l
        })
        .collect()
}

/// A body as text: UTF-16LE, no BOM, no XML declaration.
fn decode(body: &[u8]) -> String {
    assert_eq!(body.len() % 2, 0, "odd UTF-16 body");
    assert!(!body.starts_with(&[0xFF, 0xFE]), "a BOM");
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).unwrap();
    assert!(text.starts_with("<CLIENT_DATA "), "{text}");
    text
}

type Attributes = HashMap<String, String>;

/// The elements of a SetReport, in order, with their attributes; checks that
/// it is well formed and shaped as the schema says.
fn elements(text: &str) -> Vec<(String, Attributes)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    loop {
        let event = reader.read_event().unwrap();
        let (start, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Eof => break,
            Event::Decl(_) => panic!("an XML declaration"),
            other => panic!("unexpected {other:?}"),
        };
        let name = String::from_utf8(start.name().as_ref().to_vec()).unwrap();
        let parent = path.last().map(String::as_str).unwrap_or("");
        let allowed = matches!(
            (parent, name.as_str()),
            ("", "CLIENT_DATA")
                | ("CLIENT_DATA", "PKG_LIST")
                | ("CLIENT_DATA", "APP_RECORDS")
                | ("PKG_LIST", "PKG_DATA")
                | ("APP_RECORDS", "APP_RECORD")
        );
        assert!(allowed, "{name} in {parent:?}");
        let attributes = start
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect();
        out.push((name.clone(), attributes));
        if !empty {
            path.push(name);
        }
    }
    assert!(path.is_empty());
    out
}

/// The APP_RECORDs of a body.
fn records_of(body: &[u8]) -> Vec<Attributes> {
    elements(&decode(body))
        .into_iter()
        .filter(|(n, _)| n == "APP_RECORD")
        .map(|(_, a)| a)
        .collect()
}

/// Each report id's records (a repeated id counted once, as the server does),
/// and the application names across them in the order received.
fn delivered(server: &Server) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by_id = BTreeMap::new();
    let mut names = Vec::new();
    for r in server.received() {
        let records = records_of(&r.body);
        if by_id.insert(r.id.clone(), records.len()).is_none() {
            names.extend(records.into_iter().map(|a| a["Name"].clone()));
        }
    }
    (by_id, names)
}

fn names(from: u32, count: u32) -> Vec<String> {
    (from..from + count).map(|n| format!("App {n}")).collect()
}

#[tokio::test]
async fn launches_and_shutdowns_are_sent_as_one_set_report() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    let mut grouped = launch(1);
    grouped.application = r#"Tricky & <"quoted"> 'app'"#.into();
    grouped.connection_group_version_id = Some(Uuid::from_u128(9));
    grouped.status = "0x80070005-0".into();
    queue.record_launch(&grouped).unwrap();
    queue.record_shutdown(grouped.id, at(100)).unwrap();
    record(&queue, 2, 2);
    let status = queue.pending();
    assert_eq!((status.complete_records, status.running), (3, 0));

    let sent = queue
        .send(&client(), &server.url, &identity(), &[package(37)], 65536)
        .await
        .unwrap();
    assert_eq!((sent.batches, sent.records), (1, 3));

    let received = server.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert!(Uuid::parse_str(&r.id).is_ok(), "report id {:?}", r.id);
    assert_eq!(r.content_type, "text/xml; charset=utf-16");
    assert_eq!(sent.bytes, r.body.len() as u64);
    let all = elements(&decode(&r.body));
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "CLIENT_DATA",
            "PKG_LIST",
            "PKG_DATA",
            "APP_RECORDS",
            "APP_RECORD",
            "APP_RECORD",
            "APP_RECORD"
        ]
    );
    let client_data = &all[0].1;
    assert_eq!(client_data["Host"], "pc0042.corp.example.com");
    assert_eq!(client_data["Ver"], "0.1.0.0");
    assert_eq!(client_data["ProcessorArch"], "x64");
    assert_eq!(client_data["OSVer"], "6.8");
    assert_eq!(client_data["OSServicePack"], "0");
    assert_eq!(client_data["OSType"], "Client");
    let pkg = &all[2].1;
    assert_eq!(pkg["Guid"], format!("{{{}}}", Uuid::from_u128(1)));
    assert_eq!(pkg["VerGuid"], format!("{{{}}}", Uuid::from_u128(2)));
    assert_eq!(pkg["Name"], "Notepad++ & Friends");
    assert_eq!(pkg["Ver"], "7.5.1.0");
    assert_eq!(pkg["Source"], "https://content.example.com/np.appv");
    assert_eq!(pkg["PctCached"], "37");
    let first = &all[4].1;
    assert_eq!(first["Name"], r#"Tricky & <"quoted"> 'app'"#);
    assert_eq!(first["Ver"], "7.5.1.0");
    assert_eq!(first["Server"], "pubsvr01");
    assert_eq!(first["User"], r"CORP\alice");
    assert_eq!(first["PackageVersion"], Uuid::from_u128(2).to_string());
    assert_eq!(
        first["ConnectionGroupVersion"],
        Uuid::from_u128(9).to_string()
    );
    assert_eq!(first["Launched"], "2016-03-01T08:01:12Z");
    assert_eq!(first["LaunchStatus"], "0x80070005-0");
    assert_eq!(first["Shutdown"], "2016-03-01T08:02:42Z");
    assert!(!all[5].1.contains_key("ConnectionGroupVersion"));
    assert_eq!(all[5].1["Name"], "App 2");
    assert_eq!(all[6].1["Name"], "App 3");

    let status = queue.pending();
    assert_eq!(
        (
            status.events,
            status.bytes,
            status.complete_records,
            status.outbox
        ),
        (0, 0, 0, None)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        0
    );

    // Nothing new: one report with the client and its packages, no records.
    let sent = queue
        .send(&client(), &server.url, &identity(), &[package(40)], 65536)
        .await
        .unwrap();
    assert_eq!((sent.batches, sent.records), (1, 0));
    assert!(records_of(&server.received()[1].body).is_empty());
}

#[tokio::test]
async fn failed_sends_keep_everything_until_a_200() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    record(&queue, 0, 5);

    let fail = |e: SendError| {
        assert_eq!(e.sent().batches, 0);
        e.to_string()
    };
    server.set(Answer::Unavailable);
    let message = fail(
        queue
            .send(&client(), &server.url, &identity(), &[], 65536)
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("503") && message.contains("kept"),
        "{message}"
    );
    let pending = queue.pending();
    let report = pending.outbox.expect("the batch stays in the outbox");
    assert_eq!(pending.outbox_records, 5);

    server.set(Answer::Redirect);
    let message = fail(
        queue
            .send(&client(), &server.url, &identity(), &[], 65536)
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("307") && message.contains("redirect"),
        "{message}"
    );

    // A reqwest client that does follow redirects gets no success either.
    let following = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let message = fail(
        queue
            .send(&following, &server.url, &identity(), &[], 65536)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("report"), "{message}");

    server.set(Answer::Hang);
    let impatient = http_client(Duration::from_millis(300)).unwrap();
    let message = fail(
        queue
            .send(&impatient, &server.url, &identity(), &[], 65536)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("did not answer"), "{message}");

    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    };
    let message = fail(
        queue
            .send(&client(), &refused, &identity(), &[], 65536)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("did not answer"), "{message}");

    assert_eq!(queue.pending().outbox, Some(report));
    assert!(server.received().is_empty());

    // More launches meanwhile, then the server is back.
    record(&queue, 5, 3);
    server.set(Answer::Ok);
    let sent = queue
        .send(&client(), &server.url, &identity(), &[], 1 << 20)
        .await
        .unwrap();
    assert_eq!((sent.batches, sent.records), (2, 8));
    let received = server.received();
    assert_eq!(received[0].id, report.to_string());
    let (by_id, order) = delivered(&server);
    assert_eq!(by_id.len(), 2);
    assert_eq!(order, names(0, 8));
    let pending = queue.pending();
    assert_eq!((pending.events, pending.outbox), (0, None));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_crash_while_sending_neither_loses_nor_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    record(&queue, 0, 6);
    // The events as they were before the batch was built.
    copy_dir(&dir.path().join("events"), saved.path());

    // The server stores the report but its 200 never arrives.
    server.set(Answer::StoreThenFail);
    let small = 1500; // a few records per batch
    queue
        .send(&client(), &server.url, &identity(), &[], small)
        .await
        .unwrap_err();
    let report = queue.pending().outbox.unwrap();
    let covered = queue.pending().outbox_records;
    assert!(covered > 0 && covered < 6, "{covered}");
    drop(queue);

    // "Crash" between writing the outbox and deleting its events: put the
    // event files back.
    copy_dir(saved.path(), &dir.path().join("events"));
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    let pending = queue.pending();
    assert_eq!(pending.outbox, Some(report));
    assert_eq!(pending.complete_records, 6 - covered);
    assert_eq!(pending.dropped, 0);

    // The retry delivers it (same id); the next batch is built, written to
    // the outbox and posted, and the process "dies" waiting for the answer.
    server.set(Answer::OkThenHang);
    let impatient = http_client(Duration::from_millis(300)).unwrap();
    let error = queue
        .send(&impatient, &server.url, &identity(), &[], small)
        .await
        .unwrap_err();
    assert_eq!(error.sent().batches, 1);
    let second = queue.pending().outbox.unwrap();
    assert_ne!(second, report);
    drop(queue);

    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(queue.pending().outbox, Some(second));
    server.set(Answer::Ok);
    queue
        .send(&client(), &server.url, &identity(), &[], small)
        .await
        .unwrap();
    let received = server.received();
    assert_eq!(received[0].id, report.to_string());
    assert_eq!(received[1].id, report.to_string(), "the retry keeps its id");
    assert_eq!(records_of(&received[0].body), records_of(&received[1].body));
    assert_eq!(received[2].id, second.to_string());
    let (by_id, order) = delivered(&server);
    assert_eq!(by_id.values().sum::<usize>(), 6);
    assert_eq!(order, names(0, 6), "each launch once, in order");
    let pending = queue.pending();
    assert_eq!(
        (pending.events, pending.outbox, pending.dropped),
        (0, None, 0)
    );
}

#[tokio::test]
async fn the_cache_limit_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    record(&queue, 0, 1);
    let per_record = queue.pending().bytes;
    drop(queue);

    let limit = per_record * 5 + per_record / 2;
    let queue = ReportQueue::open(dir.path(), limit).unwrap();
    // Running launches are kept while complete records can go.
    let running = launch(100);
    queue.record_launch(&running).unwrap();
    record(&queue, 1, 19);
    let pending = queue.pending();
    assert!(pending.bytes <= limit, "{} > {limit}", pending.bytes);
    assert_eq!(pending.running, 1);
    let kept = pending.complete_records as u64;
    assert!(kept >= 3, "{kept}");
    assert_eq!(pending.dropped, 20 - kept);
    drop(queue);

    let queue = ReportQueue::open(dir.path(), limit).unwrap();
    assert_eq!(queue.pending().dropped, 20 - kept);
    assert_eq!(queue.pending().complete_records as u64, kept);
    queue
        .send(&client(), &server.url, &identity(), &[], 1 << 20)
        .await
        .unwrap();
    let (_, order) = delivered(&server);
    assert_eq!(
        order,
        names(20 - kept as u32, kept as u32),
        "the newest are kept"
    );

    // A smaller limit applies at once; the counter persists.
    queue.set_cache_limit(0).unwrap();
    assert_eq!(queue.pending().running, 0);
    assert_eq!(queue.pending().dropped, 21 - kept);
    drop(queue);
    assert_eq!(
        ReportQueue::open(dir.path(), 0).unwrap().pending().dropped,
        21 - kept
    );
}

#[tokio::test]
async fn batches_respect_the_block_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    record(&queue, 0, 30);
    let mut huge = launch(30);
    huge.application = "H".repeat(3000);
    queue.record_launch(&huge).unwrap();
    queue.record_shutdown(huge.id, at(400)).unwrap();
    record(&queue, 31, 5);

    let block = 2048;
    let sent = queue
        .send(&client(), &server.url, &identity(), &[package(5)], block)
        .await
        .unwrap();
    assert_eq!(sent.records, 36);
    let received = server.received();
    assert!(received.len() >= 5, "{} batches", received.len());
    assert_eq!(sent.batches, received.len());
    let mut order = Vec::new();
    for r in &received {
        let records = records_of(&r.body);
        assert!(!records.is_empty());
        if r.body.len() as u64 > block {
            assert_eq!(records.len(), 1, "an oversized record goes alone");
            assert_eq!(records[0]["Name"].len(), 3000);
        }
        order.extend(records.into_iter().map(|a| a["Name"].clone()));
    }
    // Packages are listed in the first report only.
    let pkg_count = |body: &[u8]| {
        elements(&decode(body))
            .iter()
            .filter(|(n, _)| n == "PKG_DATA")
            .count()
    };
    assert_eq!(pkg_count(&received[0].body), 1);
    assert_eq!(pkg_count(&received[1].body), 0);
    let mut expected = names(0, 30);
    expected.push("H".repeat(3000));
    expected.extend(names(31, 5));
    assert_eq!(order, expected);
    // Distinct report ids.
    let (by_id, _) = delivered(&server);
    assert_eq!(by_id.len(), received.len());
}

#[tokio::test]
async fn a_running_application_is_sent_after_it_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    let running = launch(0);
    queue.record_launch(&running).unwrap();
    record(&queue, 1, 1);
    assert_eq!(
        queue.record_launch(&running).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    assert!(!queue.record_shutdown(Uuid::new_v4(), at(1)).unwrap());

    let sent = queue
        .send(&client(), &server.url, &identity(), &[], 65536)
        .await
        .unwrap();
    assert_eq!(sent.records, 1);
    assert_eq!(delivered(&server).1, names(1, 1));
    assert_eq!(queue.pending().running, 1);
    drop(queue);

    // It survives a restart and is sent once it has shut down.
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(queue.pending().running, 1);
    assert!(queue.record_shutdown(running.id, at(500)).unwrap());
    assert!(!queue.record_shutdown(running.id, at(501)).unwrap());
    queue
        .send(&client(), &server.url, &identity(), &[], 65536)
        .await
        .unwrap();
    let (_, order) = delivered(&server);
    assert_eq!(order, ["App 1", "App 0"]);
    let last = server.received().last().unwrap().clone();
    assert_eq!(
        records_of(&last.body)[0]["Shutdown"],
        "2016-03-01T08:09:22Z"
    );
    assert_eq!(queue.pending().events, 0);
}

#[tokio::test]
async fn damaged_event_files_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    record(&queue, 0, 3);
    drop(queue);
    let events = dir.path().join("events");
    let mut files: Vec<_> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // The first launch garbled, the third launch far too large.
    std::fs::write(&files[0], b"{\"kind\":\"launch\", garbage").unwrap();
    std::fs::write(&files[4], vec![b' '; 1 << 20]).unwrap();
    // A stray temporary file and a foreign name.
    std::fs::write(events.join(".00000000000000000099.json.1.tmp"), b"x").unwrap();
    std::fs::write(events.join("README"), b"x").unwrap();

    let queue = ReportQueue::open(dir.path(), 1 << 20).unwrap();
    let pending = queue.pending();
    assert_eq!(pending.dropped, 2);
    assert_eq!(pending.complete_records, 1);
    assert_eq!(pending.running, 0, "orphaned shutdowns are not records");
    queue
        .send(&client(), &server.url, &identity(), &[], 65536)
        .await
        .unwrap();
    assert_eq!(delivered(&server).1, names(1, 1));
    drop(queue);
    assert_eq!(
        ReportQueue::open(dir.path(), 1 << 20)
            .unwrap()
            .pending()
            .dropped,
        2
    );
}

#[test]
fn the_send_time_follows_start_hour_interval_and_delay() {
    let defaults = ReportingSettings::default();
    assert!(!defaults.enabled);
    assert_eq!(
        (
            defaults.start_time_hour,
            defaults.interval_days,
            defaults.random_delay_minutes
        ),
        (22, 1, 30)
    );
    assert_eq!(defaults.data_cache_limit_bytes, 20 << 20);
    assert_eq!(defaults.data_block_size_bytes, 65536);
    assert!(defaults.validate().is_ok());
    let bad = ReportingSettings {
        start_time_hour: 24,
        ..defaults.clone()
    };
    assert!(bad.validate().unwrap_err().contains("ReportingStartTime"));

    let zone = FixedOffset::east_opt(2 * 3600).unwrap();
    let now = zone.with_ymd_and_hms(2026, 3, 10, 21, 15, 0).unwrap();
    // Later today, exactly at the hour with no delay.
    let next = next_send_time(&defaults, &now, 0);
    assert_eq!(next, zone.with_ymd_and_hms(2026, 3, 10, 22, 0, 0).unwrap());
    // The largest delay is 30 minutes.
    let next = next_send_time(&defaults, &now, 1800);
    assert_eq!(next, zone.with_ymd_and_hms(2026, 3, 10, 22, 30, 0).unwrap());
    // Past the hour: tomorrow.
    let late = zone.with_ymd_and_hms(2026, 3, 10, 22, 0, 0).unwrap();
    assert_eq!(
        next_send_time(&defaults, &late, 0),
        zone.with_ymd_and_hms(2026, 3, 11, 22, 0, 0).unwrap()
    );

    let every_three = ReportingSettings {
        start_time_hour: 3,
        interval_days: 3,
        random_delay_minutes: 45,
        ..defaults
    };
    let mut previous: Option<DateTime<FixedOffset>> = None;
    let mut now = now;
    for random in (0..40u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
        let next = next_send_time(&every_three, &now, random);
        assert!(next > now);
        let slot = next.with_minute(0).unwrap().with_second(0).unwrap();
        let slot = if next.hour() == 3 {
            slot
        } else {
            panic!("{next} is not in the 03:00 hour")
        };
        assert!(next - slot <= chrono::Duration::minutes(45));
        assert!(slot > now - chrono::Duration::minutes(45));
        if let Some(previous) = previous {
            assert_eq!(
                next.date_naive() - previous.date_naive(),
                chrono::Duration::days(3)
            );
        }
        previous = Some(next);
        now = next + chrono::Duration::minutes(1);
    }
}
