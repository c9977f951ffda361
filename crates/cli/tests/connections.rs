//! The connection layer of the real `avail server` over real sockets: header
//! and idle timeouts, the connection cap (shedding with `503`, `/readyz`
//! following it, recovery), stalled bodies cut off without leaving partial
//! uploads behind or blocking the rest of the API, request slots and
//! readiness, bounded metric labels and log fields, throttled password
//! guessing beside fast Bearer requests, JSON bodies for the errors axum makes
//! itself, surviving `accept` failures (EMFILE), and the listen file and
//! request ids.
//!
//! Each test starts its own node with small limits through `AVAIL_*`
//! variables, so that nothing waits long. Where a test waits for the server to
//! do something, it waits with a generous bound and asserts the outcome, not
//! the time it took.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avail_testkit::AvailNode;
use serde_json::Value;

/// How long any single wait for the server may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn start(env: &[(&str, &str)]) -> AvailNode {
    AvailNode::start(Path::new(env!("CARGO_BIN_EXE_avail")), None, env).unwrap()
}

/// An HTTP response read off a raw socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// An `ErrorBody`: its `error` code, checked to come with a message.
    fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body["error"].as_str().unwrap().to_owned()
    }
}

/// A raw HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// A request with `Host` and `Content-Length` added, and its response.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: avail\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes)?;
        self.reply()
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The next response on the connection.
    fn reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not a status line: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = reply.header("content-length") {
            let mut body = vec![0; len.parse().unwrap()];
            self.reader.read_exact(&mut body)?;
            reply.body = body;
        } else if reply.header("transfer-encoding") == Some("chunked") {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(io::Error::other)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                reply.body.extend_from_slice(&chunk[..size]);
            }
        } else if status != 304 && status != 204 {
            self.reader.read_to_end(&mut reply.body)?;
        }
        Ok(reply)
    }

    /// Whether the server closes the connection within `limit` (reading and
    /// discarding whatever comes before).
    fn closed_within(&mut self, limit: Duration) -> bool {
        self.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// `GET path` on a fresh connection.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    Conn::open(addr)
        .request("GET", path, headers, b"")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Poll `what` until it returns `Some`, for at most `PATIENCE`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of a metric line `name{labels} value` in a `/metrics` reply.
fn metric(metrics: &Reply, series: &str) -> Option<f64> {
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Files under `<data>/content/.incoming`.
fn incoming(node: &AvailNode) -> Vec<PathBuf> {
    std::fs::read_dir(node.data.join("content/.incoming"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn header_and_idle_timeouts_close_connections() {
    let node = start(&[
        ("AVAIL_HEADER_READ_TIMEOUT_SECS", "1"),
        ("AVAIL_IDLE_TIMEOUT_SECS", "5"),
    ]);
    let addr = node.addr();

    // Half a head, then nothing: closed.
    let mut half = Conn::open(addr);
    half.send(b"GET /healthz HTTP/1.1\r\nHost: avail\r\n")
        .unwrap();
    // Nothing at all: closed too.
    let mut silent = Conn::open(addr);
    // A head dribbled a byte at a time keeps sending, and is closed all the same:
    // the head as a whole has a deadline.
    let mut dribble = Conn::open(addr);
    let writer = {
        let mut stream = dribble.reader.get_ref().try_clone().unwrap();
        std::thread::spawn(move || {
            let head = b"GET /healthz HTTP/1.1\r\nHost: avail\r\nX-Slow: ".iter();
            for byte in head.chain(std::iter::repeat(&b'a')).take(200) {
                if stream.write_all(&[*byte]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    assert!(half.closed_within(PATIENCE), "half a head was left open");
    assert!(
        silent.closed_within(PATIENCE),
        "a silent client was left open"
    );
    assert!(
        dribble.closed_within(PATIENCE),
        "a dribbled head was left open"
    );
    assert!(
        writer.join().unwrap(),
        "the dribbling writer was never cut off"
    );

    // A kept-alive connection outlives the header deadline between requests
    // (idle 5 s, header 1 s) and is closed once idle for longer.
    let mut kept = Conn::open(addr);
    assert_eq!(kept.get("/healthz").status, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kept.get("/healthz").status, 200);
    assert!(
        kept.closed_within(PATIENCE),
        "an idle connection was left open"
    );

    let metrics = get(addr, "/metrics", &[]);
    let header_timeouts = metric(
        &metrics,
        r#"avail_http_connections_timed_out_total{role="management",phase="header"}"#,
    );
    assert!(header_timeouts >= Some(3.0), "{header_timeouts:?}");
    let idle_timeouts = metric(
        &metrics,
        r#"avail_http_connections_timed_out_total{role="management",phase="idle"}"#,
    );
    assert!(idle_timeouts >= Some(1.0), "{idle_timeouts:?}");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_a_slow_reader_is_not() {
    let node = start(&[("AVAIL_IDLE_TIMEOUT_SECS", "2")]);
    // Far more than the socket buffers of both ends hold.
    const LEN: usize = 64 << 20;
    let dir = node.data.join("content/pkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.appv"), vec![7u8; LEN]).unwrap();
    let mut reader = Conn::open(node.content_addr());
    reader
        .send(b"GET /pkg/big.appv HTTP/1.1\r\nHost: avail\r\n\r\n")
        .unwrap();
    // It reads nothing; the server gives up on it.
    eventually("the response timed out", || {
        let metrics = get(node.content_addr(), "/metrics", &[]);
        let series = r#"avail_http_connections_timed_out_total{role="content",phase="response"}"#;
        (metric(&metrics, series) >= Some(1.0)).then_some(())
    });
    let mut received = Vec::new();
    let _ = reader.reader.read_to_end(&mut received);
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(received.len() < LEN, "the whole body arrived");

    // A client that reads slowly, but keeps reading, gets all of it however
    // long that takes in all (here more than twice the idle timeout).
    let mut slow = Conn::open(node.content_addr());
    slow.send(b"GET /pkg/big.appv HTTP/1.1\r\nHost: avail\r\nConnection: close\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let (mut total, mut buf) = (0, vec![0u8; 256 << 10]);
    loop {
        match slow.reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("after {total} bytes: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(total > LEN, "{total} bytes");
    assert!(started.elapsed() > Duration::from_secs(4));
}

#[test]
fn the_connection_cap_sheds_new_connections_and_recovers() {
    let node = start(&[
        ("AVAIL_MAX_CONNECTIONS", "8"),
        ("AVAIL_HEADER_READ_TIMEOUT_SECS", "60"),
    ]);
    let addr = node.addr();
    let open_gauge = r#"avail_http_connections_open{role="management"}"#;
    // A kept-alive probe, like a load balancer's.
    let mut probe = Conn::open(addr);
    assert_eq!(probe.get("/readyz").status, 200);
    let stalled: Vec<Conn> = (0..7).map(|_| Conn::open(addr)).collect();
    eventually("8 connections open", || {
        (metric(&probe.get("/metrics"), open_gauge) == Some(8.0)).then_some(())
    });

    // Full: new connections get 503 at once and are closed, never queued.
    for _ in 0..3 {
        let mut shed = Conn::open(addr);
        let reply = shed.reply().expect("a shed connection is answered");
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.error_code(), "unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(shed.closed_within(PATIENCE));
    }
    // And the role says it is not ready, with the reason.
    let ready = probe.get("/readyz");
    assert_eq!(ready.status, 503);
    let reason = ready.json()["status"].as_str().unwrap().to_owned();
    assert!(reason.contains("connection limit"), "{reason}");
    let metrics = probe.get("/metrics");
    assert!(
        metric(
            &metrics,
            r#"avail_http_connections_shed_total{role="management"}"#
        ) >= Some(3.0)
    );

    // The stalled clients go: ready again, new connections served.
    drop(stalled);
    eventually("ready again", || {
        (probe.get("/readyz").status == 200).then_some(())
    });
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    // The content role has a cap of its own and was never full.
    assert_eq!(get(node.content_addr(), "/readyz", &[]).status, 200);
}

/// A package upload that sends `sent` bytes of a promised megabyte, then stalls.
fn stalled_upload(addr: &str, token: &str) -> Conn {
    let mut conn = Conn::open(addr);
    let head = format!(
        "POST /api/v1/packages HTTP/1.1\r\nHost: avail\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    );
    conn.send(head.as_bytes()).unwrap();
    conn.send(&[0x50; 100]).unwrap();
    conn
}

#[test]
fn stalled_uploads_are_cut_off_and_never_block_the_api() {
    let node = start(&[
        ("AVAIL_BODY_PROGRESS_TIMEOUT_SECS", "2"),
        ("AVAIL_MAX_CONCURRENT_REQUESTS", "16"),
        ("AVAIL_MAX_CONCURRENT_UPLOADS", "4"),
    ]);
    let (addr, token) = (node.addr(), node.token.clone());
    let auth = format!("Bearer {token}");
    let mut uploads: Vec<Conn> = (0..64).map(|_| stalled_upload(addr, &token)).collect();
    // Some are in the handler, writing their partial upload.
    eventually("a partial upload on disk", || {
        incoming(&node)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "part"))
            .then_some(())
    });

    // Meanwhile the rest of the API answers, and the role is ready.
    let list = get(addr, "/api/v1/packages", &[("Authorization", &auth)]);
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(get(addr, "/readyz", &[]).status, 200);

    // Every stalled upload ends: cut off (400, its partial file removed) or,
    // finding no upload slot, turned away (503).
    let (mut cut, mut refused) = (0, 0);
    for conn in &mut uploads {
        let reply = conn.reply().expect("every stalled upload gets an answer");
        match (reply.status, reply.error_code().as_str()) {
            (400, "bad_request") => cut += 1,
            (503, "unavailable") => refused += 1,
            other => panic!("{other:?}: {reply:?}"),
        }
    }
    assert!(
        cut >= 1 && cut + refused == 64,
        "{cut} cut, {refused} refused"
    );
    eventually("no partial uploads left", || {
        incoming(&node).is_empty().then_some(())
    });
    assert!(
        node.content_files().is_empty(),
        "{:?}",
        node.content_files()
    );
}

#[test]
fn exhausted_request_slots_make_the_role_unready_until_they_free() {
    let node = start(&[
        ("AVAIL_BODY_PROGRESS_TIMEOUT_SECS", "3"),
        ("AVAIL_MAX_CONCURRENT_REQUESTS", "4"),
    ]);
    let addr = node.addr();
    let auth = format!("Bearer {}", node.token);
    // Four JSON requests whose bodies stall halfway hold the four slots.
    let mut stalled: Vec<Conn> = (0..4)
        .map(|_| {
            let mut conn = Conn::open(addr);
            let head = format!(
                "POST /api/v1/groups HTTP/1.1\r\nHost: avail\r\nAuthorization: {auth}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
            );
            conn.send(head.as_bytes()).unwrap();
            conn
        })
        .collect();
    let reason = eventually("not ready", || {
        let reply = get(addr, "/readyz", &[]);
        (reply.status == 503).then(|| reply.json()["status"].as_str().unwrap().to_owned())
    });
    assert!(reason.contains("request slot"), "{reason}");
    // Health and metrics stay outside the limit.
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
    assert_eq!(get(addr, "/metrics", &[]).status, 200);

    // The stalled bodies are cut off with a JSON 400, and the slots come back.
    for conn in &mut stalled {
        let reply = conn.reply().unwrap();
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (400, "bad_request")
        );
    }
    eventually("ready again", || {
        (get(addr, "/readyz", &[]).status == 200).then_some(())
    });
    let list = get(addr, "/api/v1/groups", &[("Authorization", &auth)]);
    assert_eq!(list.status, 200);
}

/// Deterministic junk for paths and methods.
fn junk(seed: &mut u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ALPHABET[(*seed % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

#[test]
fn metric_labels_and_log_fields_stay_bounded() {
    let node = start(&[("AVAIL_LOG", "debug")]);
    let addr = node.addr();

    // A 60 KB invented method, on a route and off any.
    let method = "M".repeat(60_000);
    for path in ["/api/v1/packages", "/nowhere"] {
        let reply = Conn::open(addr).request(&method, path, &[], b"").unwrap();
        assert!(
            [404, 405].contains(&reply.status),
            "{path}: {}",
            reply.status
        );
    }
    // A thousand random paths and a hundred invented methods, over one connection.
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut conn = Conn::open(addr);
    for i in 0..1100 {
        let path = format!("/{}", junk(&mut seed, 40));
        let method = if i < 1000 {
            "GET".to_owned()
        } else {
            junk(&mut seed, 12)
                .to_ascii_uppercase()
                .replace(['.', '~', '-'], "X")
        };
        let reply = conn.request(&method, &path, &[], b"").unwrap();
        assert_eq!(reply.status, 404, "{method} {path}");
        assert_eq!(reply.error_code(), "not_found");
    }

    let metrics = String::from_utf8(get(addr, "/metrics", &[]).body).unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("avail_http_requests_total{"))
        .collect();
    assert!(series.len() <= 10, "{series:#?}");
    assert!(
        series
            .iter()
            .any(|l| l.contains(r#"method="OTHER""#) && l.contains(r#"route="unmatched""#)),
        "{series:#?}"
    );
    assert!(
        metrics.len() < 64 * 1024,
        "{} bytes of metrics",
        metrics.len()
    );

    // The log names requests, but never with a client's whole method or path.
    let log = node.log();
    assert!(log.contains("/nowhere"), "requests are logged at debug");
    assert!(
        !log.contains(&"M".repeat(100)),
        "the invented method reached the log"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} bytes");
}

#[test]
fn password_guessing_is_throttled_and_bearer_stays_fast() {
    use base64::Engine as _;
    let node = start(&[]);
    let packages = format!("{}/api/v1/packages", node.url);
    let bearer = format!("Bearer {}", node.token);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let counts: Arc<[AtomicUsize; 4]> = Arc::default();
        let retry_after_seen = Arc::new(AtomicUsize::new(0));
        let until = Instant::now() + Duration::from_secs(3);
        // 300 connections guessing the administrator's password for 3 s.
        let flood: Vec<_> = (0..300)
            .map(|i| {
                let (counts, retry_after_seen, packages) =
                    (counts.clone(), retry_after_seen.clone(), packages.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut n = 0;
                    while Instant::now() < until {
                        let guess = base64::engine::general_purpose::STANDARD
                            .encode(format!("admin:guess-{i}-{n}"));
                        n += 1;
                        let Ok(r) = client
                            .get(&packages)
                            .header("Authorization", format!("Basic {guess}"))
                            .send()
                            .await
                        else {
                            counts[3].fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let slot = match r.status().as_u16() {
                            401 => 0,
                            429 => {
                                if r.headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                                    .is_some_and(|s| s >= 1)
                                {
                                    retry_after_seen.fetch_add(1, Ordering::Relaxed);
                                }
                                1
                            }
                            503 => 2,
                            _ => 3,
                        };
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                        let _ = r.bytes().await;
                    }
                })
            })
            .collect();

        // In the middle of it, an administrator with a token is served.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let list = reqwest::Client::new()
            .get(&packages)
            .header("Authorization", &bearer)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("a Bearer request answers within 10 s during the flood");
        assert_eq!(list.status(), 200);
        eprintln!("Bearer request during the flood: {:?}", started.elapsed());

        for task in flood {
            task.await.unwrap();
        }
        let [unauthorized, throttled, busy, other] =
            counts.each_ref().map(|c| c.load(Ordering::Relaxed));
        eprintln!("{unauthorized} × 401, {throttled} × 429, {busy} × 503, {other} other");
        // Five failures a minute from one address for one name: the rest are
        // refused without a password check.
        assert!(
            (1..=5).contains(&unauthorized),
            "{unauthorized} passwords checked"
        );
        assert!(throttled > 100, "{throttled} throttled");
        assert_eq!(retry_after_seen.load(Ordering::Relaxed), throttled);
        assert_eq!(other, 0);
    });
    // A throttled caller is told so in the common error shape.
    let guess = base64::engine::general_purpose::STANDARD.encode("admin:again");
    let reply = get(
        node.addr(),
        "/api/v1/packages",
        &[("Authorization", &format!("Basic {guess}"))],
    );
    assert_eq!(reply.status, 429);
    assert_eq!(reply.error_code(), "too_many_requests");
}

#[test]
fn errors_made_by_the_framework_are_json() {
    let node = start(&[]);
    let addr = node.addr();
    let auth = format!("Bearer {}", node.token);
    let json = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let only_auth = [("Authorization", auth.as_str())];
    // Method, path, headers, body; the status and error code expected.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [u8],
        u16,
        &'a str,
    );
    let cases: [Case; 7] = [
        (
            "POST",
            "/api/v1/groups",
            &json,
            b"{not json",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/groups",
            &json,
            b"{\"nom\":1}",
            422,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/groups",
            &only_auth,
            b"{\"name\":\"g\"}",
            415,
            "unsupported_media_type",
        ),
        (
            "PATCH",
            "/api/v1/groups",
            &json,
            b"",
            405,
            "method_not_allowed",
        ),
        ("GET", "/api/v1/nothing-here", &json, b"", 404, "not_found"),
        (
            "GET",
            "/api/v1/packages?published=maybe",
            &json,
            b"",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/packages/x/upgrade",
            &json,
            b"",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let reply = Conn::open(addr)
            .request(method, path, headers, body)
            .unwrap();
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(reply.error_code(), code, "{method} {path}");
        if status == 405 {
            assert!(
                reply.header("allow").is_some_and(|a| a.contains("POST")),
                "{reply:?}"
            );
        }
    }
    // Over the 1 MiB JSON limit. The server answers before taking it all, so
    // the body goes from another thread that may find the connection closed.
    let mut conn = Conn::open(addr);
    let mut writer = conn.reader.get_ref().try_clone().unwrap();
    let huge = format!("{{\"name\": \"{}\"}}", "g".repeat(2 << 20));
    let head = format!(
        "POST /api/v1/groups HTTP/1.1\r\nHost: avail\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(huge.as_bytes());
    });
    let reply = conn.reply().unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "too_large")
    );
    drop(conn);
    sending.join().unwrap();

    // The content role: what axum answers is JSON; its file answers stay bare.
    let content = node.content_addr();
    let mut conn = Conn::open(content);
    let reply = conn
        .request("POST", "/some/package.appv", &[], b"x")
        .unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let reply = conn.get("/");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "not_found")
    );
    let reply = conn.get("/missing.appv");
    assert_eq!(reply.status, 404);
    assert!(reply.body.is_empty(), "{reply:?}");
}

#[test]
fn accept_failures_do_not_stop_the_server() {
    // The real binary under a shell that lowers its file-descriptor limit.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("avail-lowfd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -n 64\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_avail")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut node =
        AvailNode::start(&wrapper, None, &[("AVAIL_HEADER_READ_TIMEOUT_SECS", "60")]).unwrap();
    let addr = node.addr().to_owned();

    // More connections than the server has descriptors for.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    eventually("the server runs out of descriptors", || {
        node.log()
            .contains("cannot accept connections")
            .then_some(())
    });
    assert!(node.child().try_wait().unwrap().is_none(), "{}", node.log());

    drop(held);
    eventually("serving again", || {
        (avail_testkit::http_status(&addr, "/readyz") == Some(200)).then_some(())
    });
    assert!(node.child().try_wait().unwrap().is_none());
    eventually("logged the recovery", || {
        node.log()
            .contains("accepting connections again")
            .then_some(())
    });
}

#[test]
fn the_node_listens_where_its_listen_file_says_and_echoes_request_ids() {
    let node = start(&[]);
    // Both roles on ports the server picked, named in <data>/listen.json.
    let bound: Value =
        serde_json::from_str(&std::fs::read_to_string(node.data.join("listen.json")).unwrap())
            .unwrap();
    assert_eq!(bound["management"], node.addr());
    assert_eq!(bound["content"], node.content_addr());
    for addr in [node.addr(), node.content_addr()] {
        assert!(!addr.ends_with(":0"), "{addr}");
        // A client's request id comes back; without one, the server makes one.
        let reply = get(addr, "/healthz", &[("X-Request-Id", "trace-42")]);
        assert_eq!(reply.header("x-request-id"), Some("trace-42"));
        let reply = get(addr, "/healthz", &[]);
        assert_eq!(reply.header("x-request-id").map(str::len), Some(36));
    }
}
