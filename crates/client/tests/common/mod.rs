//! What the client's integration tests share: deterministic bytes and an
//! in-test HTTP mirror (hyper) that serves package files with byte ranges and
//! can be told to fail (503), hang, or flip one byte, while it counts the
//! requests and the body bytes it sent.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avail_client::fetch::FetchConfig;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// `len` deterministic, incompressible bytes (xorshift from `seed`).
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fetch configuration patient enough for a loaded test machine, with no
/// retry rounds.
pub fn config() -> FetchConfig {
    FetchConfig {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retries: 0,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        read_timeout: Duration::from_secs(10),
        failback_after: Duration::from_secs(600),
    }
}

/// How a mirror answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Serve,
    /// 503 to everything.
    Fail,
    /// Accept the request and never answer.
    Hang,
}

struct Knobs {
    files: HashMap<String, Arc<Vec<u8>>>,
    mode: Mutex<Mode>,
    /// A byte offset whose byte is flipped in whatever file is served.
    corrupt_at: Mutex<Option<u64>>,
    requests: AtomicUsize,
    bytes: AtomicU64,
}

/// A running mirror; `base` is its content base URL.
pub struct Mirror {
    pub base: String,
    knobs: Arc<Knobs>,
}

impl Mirror {
    pub fn set(&self, mode: Mode) {
        *self.knobs.mode.lock().unwrap() = mode;
    }
    pub fn corrupt(&self, at: Option<u64>) {
        *self.knobs.corrupt_at.lock().unwrap() = at;
    }
    pub fn requests(&self) -> usize {
        self.knobs.requests.load(Ordering::SeqCst)
    }
    /// Body bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.knobs.bytes.load(Ordering::SeqCst)
    }
}

fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((len - n.min(len), len - 1));
    }
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse().ok()?
    };
    (a <= b && a < len).then_some((a, b.min(len - 1)))
}

async fn answer(
    req: Request<Incoming>,
    knobs: Arc<Knobs>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    knobs.requests.fetch_add(1, Ordering::SeqCst);
    let status = |s: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = s;
        Ok(r)
    };
    let mode = *knobs.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Fail => return status(StatusCode::SERVICE_UNAVAILABLE),
        Mode::Serve => {}
    }
    let path = req.uri().path().trim_start_matches("/content/");
    let Some(data) = knobs.files.get(path) else {
        return status(StatusCode::NOT_FOUND);
    };
    let len = data.len() as u64;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let Some((a, b)) = range else {
        return status(StatusCode::RANGE_NOT_SATISFIABLE);
    };
    let mut body = data[a as usize..=b as usize].to_vec();
    if let Some(at) = *knobs.corrupt_at.lock().unwrap()
        && (a..=b).contains(&at)
    {
        body[(at - a) as usize] ^= 0x5a;
    }
    knobs.bytes.fetch_add(b - a + 1, Ordering::SeqCst);
    let r = Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header("content-range", format!("bytes {a}-{b}/{len}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(r)
}

/// A mirror serving `files` (path below the base, bytes) at
/// `http://127.0.0.1:PORT/content/<path>`.
pub async fn mirror(files: Vec<(String, Vec<u8>)>) -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let knobs = Arc::new(Knobs {
        files: files.into_iter().map(|(p, d)| (p, Arc::new(d))).collect(),
        mode: Mutex::new(Mode::Serve),
        corrupt_at: Mutex::new(None),
        requests: AtomicUsize::new(0),
        bytes: AtomicU64::new(0),
    });
    let k = knobs.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let k = k.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, k.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Mirror {
        base: format!("http://{addr}/content"),
        knobs,
    }
}
