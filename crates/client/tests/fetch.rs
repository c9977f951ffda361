//! The streaming engine against small in-test HTTP mirrors (hyper) serving a
//! real package with byte ranges, with knobs to fail, hang or corrupt a block,
//! and against a `file://` share.

use std::convert::Infallible;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avail_client::fetch::{
    FetchConfig, FetchError, Fetcher, RemotePackage, apply_package_source_root, package_path,
    split_package_url,
};
use avail_format::{BLOCK_SIZE, Limits, NoProgress, PackOptions, Package, pack};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use uuid::Uuid;

const PKG: Uuid = Uuid::from_u128(0x1111);
const VER: Uuid = Uuid::from_u128(0x2222);
/// The big file: 9 full blocks and a bit.
const BIG_LEN: usize = 9 * BLOCK_SIZE + 1234;

fn fill(seed: u64, len: usize) -> Vec<u8> {
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

/// A packed package, its bytes, and the big file's content.
struct Fixture {
    _dir: tempfile::TempDir,
    bytes: Arc<Vec<u8>>,
    big: Vec<u8>,
    /// Where `packages/<pkg>/<ver>.appv` lives, as a `file://` base.
    share: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("opt/app/bin")).unwrap();
    let big = fill(7, BIG_LEN);
    fs::write(src.join("opt/app/bin/big"), &big).unwrap();
    fs::write(src.join("opt/app/readme"), b"hello").unwrap();
    let share = dir.path().join("share");
    let out = share.join(package_path(PKG, VER));
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let options = PackOptions {
        name: "Fetch Test".into(),
        package_id: Some(PKG),
        version_id: Some(VER),
        ..PackOptions::default()
    };
    pack(&src, &out, &options, &NoProgress).unwrap();
    Fixture {
        bytes: Arc::new(fs::read(&out).unwrap()),
        big,
        share: format!("file://{}", share.display()),
        _dir: dir,
    }
}

fn big_index<R: avail_format::ReadAt>(p: &Package<R>) -> usize {
    p.files()
        .iter()
        .position(|f| f.map.name.ends_with("big"))
        .unwrap()
}

fn expected_block(f: &Fixture, k: usize) -> &[u8] {
    &f.big[k * BLOCK_SIZE..((k + 1) * BLOCK_SIZE).min(BIG_LEN)]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    /// 503 to everything.
    Fail,
    /// Accept the request and never answer.
    Hang,
}

struct Knobs {
    mode: Mutex<Mode>,
    /// A byte of the file served flipped.
    corrupt_at: Mutex<Option<u64>>,
    requests: AtomicUsize,
}

struct Mirror {
    base: String,
    knobs: Arc<Knobs>,
}

impl Mirror {
    fn set(&self, mode: Mode) {
        *self.knobs.mode.lock().unwrap() = mode;
    }
    fn corrupt(&self, at: Option<u64>) {
        *self.knobs.corrupt_at.lock().unwrap() = at;
    }
    fn requests(&self) -> usize {
        self.knobs.requests.load(Ordering::SeqCst)
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
    data: Arc<Vec<u8>>,
    knobs: Arc<Knobs>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    knobs.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *knobs.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Fail => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Ok(r);
        }
        Mode::Serve => {}
    }
    if !req.uri().path().ends_with(".appv") {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    }
    let len = data.len() as u64;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let Some((a, b)) = range else {
        return Ok(Response::new(Full::new(Bytes::from(data.to_vec()))));
    };
    let mut body = data[a as usize..=b as usize].to_vec();
    if let Some(at) = *knobs.corrupt_at.lock().unwrap()
        && (a..=b).contains(&at)
    {
        body[(at - a) as usize] ^= 0x5a;
    }
    let r = Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header("content-range", format!("bytes {a}-{b}/{len}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(r)
}

async fn mirror(data: &Arc<Vec<u8>>) -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let knobs = Arc::new(Knobs {
        mode: Mutex::new(Mode::Serve),
        corrupt_at: Mutex::new(None),
        requests: AtomicUsize::new(0),
    });
    let (data, k) = (data.clone(), knobs.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (data, k) = (data.clone(), k.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, data.clone(), k.clone()));
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

/// A base where nothing listens: connection refused.
async fn dead_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/content")
}

fn config() -> FetchConfig {
    FetchConfig {
        request_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(500),
        retries: 1,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        read_timeout: Duration::from_secs(5),
        failback_after: Duration::from_secs(600),
    }
}

async fn open(bases: &[String], config: FetchConfig) -> (Fetcher, RemotePackage) {
    let fetcher = Fetcher::new(bases, config).unwrap();
    let package = RemotePackage::open(fetcher.clone(), package_path(PKG, VER), Limits::default())
        .await
        .unwrap();
    (fetcher, package)
}

async fn check_all_blocks(f: &Fixture, package: &RemotePackage) {
    let big = big_index(package.package());
    let blocks = package.blocks(big, 0..10).await.unwrap();
    assert_eq!(blocks.len(), 10);
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(b.as_slice(), expected_block(f, k), "block {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_blocks_verified_from_a_good_mirror() {
    let f = fixture();
    let m = mirror(&f.bytes).await;
    let (_, package) = open(std::slice::from_ref(&m.base), config()).await;
    assert_eq!(package.package().manifest().package_id, Some(PKG));
    // Opening fetched only the structure, in a few requests.
    assert!(m.requests() <= 6, "{} requests to open", m.requests());
    check_all_blocks(&f, &package).await;
    let big = big_index(package.package());
    assert_eq!(package.block(big, 9).await.unwrap(), expected_block(&f, 9));
    assert!(package.block(big, 10).await.is_err());
    // The blocking facade, from a thread outside the runtime.
    let p = package.clone();
    let b = std::thread::spawn(move || p.block_blocking(big, 4).unwrap())
        .join()
        .unwrap();
    assert_eq!(b, expected_block(&f, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_refused_first_mirror_fails_over_and_is_remembered() {
    let f = fixture();
    let good = mirror(&f.bytes).await;
    let (fetcher, package) = open(&[dead_base().await, good.base.clone()], config()).await;
    check_all_blocks(&f, &package).await;
    assert_eq!(fetcher.current_mirror(), 1);
    // The next fetch goes to the second mirror first: it takes one request there.
    let before = good.requests();
    let raw = fetcher.fetch(&package_path(PKG, VER), 0..4).await.unwrap();
    assert_eq!(&raw[..], &f.bytes[..4]);
    assert_eq!(good.requests(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_failing_mirror_is_not_asked_again_until_failback() {
    let f = fixture();
    let first = mirror(&f.bytes).await;
    let second = mirror(&f.bytes).await;
    first.set(Mode::Fail);
    // Long enough that the checks below finish inside it on a loaded machine.
    let cfg = FetchConfig {
        failback_after: Duration::from_secs(5),
        ..config()
    };
    let (fetcher, package) = open(&[first.base.clone(), second.base.clone()], cfg).await;
    let asked = first.requests();
    assert_eq!(asked, 1, "the failed first mirror is asked once");
    check_all_blocks(&f, &package).await;
    assert_eq!(first.requests(), asked, "the switch is remembered");
    // After a while the first mirror, back now, is tried first again.
    first.set(Mode::Serve);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(fetcher.current_mirror(), 0);
    let big = big_index(package.package());
    let before = second.requests();
    assert_eq!(package.block(big, 2).await.unwrap(), expected_block(&f, 2));
    assert_eq!(first.requests(), asked + 1);
    assert_eq!(second.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_hanging_first_mirror_times_out_then_second_serves() {
    let f = fixture();
    let hung = mirror(&f.bytes).await;
    let good = mirror(&f.bytes).await;
    hung.set(Mode::Hang);
    let started = Instant::now();
    let (fetcher, package) = open(&[hung.base.clone(), good.base.clone()], config()).await;
    check_all_blocks(&f, &package).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        hung.requests(),
        1,
        "the hung mirror is asked once, then skipped"
    );
    assert_eq!(fetcher.current_mirror(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_corrupted_block_comes_from_the_other_mirror() {
    let f = fixture();
    let bad = mirror(&f.bytes).await;
    let good = mirror(&f.bytes).await;
    let local = Package::open(f.bytes.as_slice()).unwrap();
    let big = big_index(&local);
    let r = local.block_range(big, 3).unwrap();
    let at = r.start + (r.end - r.start) / 2;
    bad.corrupt(Some(at));
    let (fetcher, package) = open(&[bad.base.clone(), good.base.clone()], config()).await;
    check_all_blocks(&f, &package).await;
    assert!(good.requests() >= 1, "block 3 came from the good mirror");
    assert_eq!(
        fetcher.current_mirror(),
        1,
        "the bad mirror is switched away from"
    );
    // Every mirror corrupt: an error, never the bad bytes.
    good.corrupt(Some(at));
    let err = package.block(big, 3).await.unwrap_err();
    assert!(matches!(err, FetchError::Corrupt { block: 3, .. }), "{err}");
    assert_eq!(err.errno(), 5);
    // Other blocks are still fine.
    assert_eq!(package.block(big, 2).await.unwrap(), expected_block(&f, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_every_mirror_dead_fails_within_the_bound_then_recovers() {
    let f = fixture();
    let a = mirror(&f.bytes).await;
    let b = mirror(&f.bytes).await;
    let cfg = FetchConfig {
        read_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(700),
        retries: 100,
        ..config()
    };
    let (fetcher, package) = open(&[a.base.clone(), b.base.clone()], cfg).await;
    let big = big_index(package.package());
    // Both hang: the bound, with its own error.
    a.set(Mode::Hang);
    b.set(Mode::Hang);
    let started = Instant::now();
    let err = package.blocks(big, 0..4).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.errno(), 5);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Both fail fast: still within the bound.
    a.set(Mode::Fail);
    b.set(Mode::Fail);
    let started = Instant::now();
    let err = fetcher
        .fetch(&package_path(PKG, VER), 0..10)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    // A mirror returns: reads work again.
    b.set(Mode::Serve);
    check_all_blocks(&f, &package).await;
    a.set(Mode::Serve);
    b.set(Mode::Hang);
    check_all_blocks(&f, &package).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_file_mirror_works() {
    let f = fixture();
    let (_, package) = open(std::slice::from_ref(&f.share), config()).await;
    check_all_blocks(&f, &package).await;
    // And behind a dead HTTP mirror.
    let (fetcher, package) = open(&[dead_base().await, f.share.clone()], config()).await;
    check_all_blocks(&f, &package).await;
    assert_eq!(fetcher.current_mirror(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_adjacent_blocks_are_one_request() {
    let f = fixture();
    let m = mirror(&f.bytes).await;
    let (_, package) = open(std::slice::from_ref(&m.base), config()).await;
    let big = big_index(package.package());
    let before = m.requests();
    let blocks = package.blocks(big, 0..8).await.unwrap();
    assert_eq!(m.requests(), before + 1);
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(b.as_slice(), expected_block(&f, k));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_package_source_root_redirects_to_a_share() {
    let f = fixture();
    let published = format!(
        "http://publishing.invalid/content/{}",
        package_path(PKG, VER)
    );
    let url = apply_package_source_root(&published, &f.share);
    assert_eq!(url, format!("{}/{}", f.share, package_path(PKG, VER)));
    let (base, path) = split_package_url(&url).unwrap();
    assert_eq!(path, package_path(PKG, VER));
    let fetcher = Fetcher::new(&[base], config()).unwrap();
    let package = RemotePackage::open(fetcher, path, Limits::default())
        .await
        .unwrap();
    check_all_blocks(&f, &package).await;
}

#[test]
fn fetch_the_blocking_facade_opens_from_a_plain_thread() {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = rt
        .block_on(async { Fetcher::new(std::slice::from_ref(&f.share), config()) })
        .unwrap();
    let package =
        RemotePackage::open_blocking(fetcher, package_path(PKG, VER), Limits::default()).unwrap();
    let big = big_index(package.package());
    let blocks = package.blocks_blocking(big, 5..10).unwrap();
    assert_eq!(blocks[4], expected_block(&f, 9));
    assert!(Path::new(&f.share["file://".len()..]).is_dir());
}
