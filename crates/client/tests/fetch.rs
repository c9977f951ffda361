//! The streaming engine against small in-test HTTP mirrors (hyper) serving a
//! real package with byte ranges, with knobs to fail, hang or corrupt a block,
//! and against a `file://` share.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avail_client::fetch::{
    FetchConfig, FetchError, Fetcher, OpenedRanges, RemotePackage, apply_package_source_root,
    package_path, split_package_url,
};
use avail_format::{BLOCK_SIZE, Limits, NoProgress, PackOptions, Package, pack};
use tokio::net::TcpListener;
use uuid::Uuid;

mod common;
use common::{Mirror, Mode, fill};
const PKG: Uuid = Uuid::from_u128(0x1111);
const VER: Uuid = Uuid::from_u128(0x2222);
/// The big file: 9 full blocks and a bit.
const BIG_LEN: usize = 9 * BLOCK_SIZE + 1234;

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

/// A mirror serving the fixture's package.
async fn mirror(data: &Arc<Vec<u8>>) -> Mirror {
    common::mirror(vec![(package_path(PKG, VER), data.to_vec())]).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_a_package_opened_once_opens_again_with_every_mirror_down() {
    let f = fixture();
    let m = mirror(&f.bytes).await;
    let (fetcher, package) = open(std::slice::from_ref(&m.base), config()).await;
    let saved = package.opened_ranges();
    let kept: usize = saved.ranges.iter().map(|(_, b)| b.len()).sum();
    assert!(
        kept < f.bytes.len(),
        "kept {kept} of {} bytes",
        f.bytes.len()
    );
    let encoded = saved.encode();
    let decoded = OpenedRanges::decode(&encoded).unwrap();
    assert_eq!(decoded, saved);
    // A torn or altered copy is refused, whatever byte changed.
    assert!(OpenedRanges::decode(&encoded[..encoded.len() - 1]).is_none());
    for at in [0, 9, 17, encoded.len() / 2, encoded.len() - 1] {
        let mut bad = encoded.clone();
        bad[at] ^= 1;
        assert!(OpenedRanges::decode(&bad).is_none(), "flipped byte {at}");
    }
    assert!(OpenedRanges::decode(b"").is_none());

    m.set(Mode::Fail);
    let before = m.requests();
    let again =
        RemotePackage::open_saved(fetcher, package_path(PKG, VER), Limits::default(), decoded)
            .await
            .unwrap();
    assert_eq!(
        m.requests(),
        before,
        "opening from the saved ranges asked the mirror"
    );
    assert_eq!(again.package().manifest(), package.package().manifest());
    let names = |p: &RemotePackage| -> Vec<String> {
        p.package()
            .files()
            .iter()
            .map(|f| f.map.name.clone())
            .collect()
    };
    assert_eq!(names(&again), names(&package));
    // Blocks still come from the mirror, once it is back.
    m.set(Mode::Serve);
    check_all_blocks(&f, &again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_opening_a_package_of_many_files_reads_little_of_it() {
    // 40 files of 256 KiB: their local headers lie 256 KiB apart.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("opt/many")).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("opt/many/f{i:02}")), fill(i, 256 * 1024)).unwrap();
    }
    let out = dir.path().join("many.appv");
    let options = PackOptions {
        name: "Many".into(),
        package_id: Some(PKG),
        version_id: Some(VER),
        level: 0,
        ..PackOptions::default()
    };
    pack(&src, &out, &options, &NoProgress).unwrap();
    let bytes = Arc::new(fs::read(&out).unwrap());
    let m = mirror(&bytes).await;
    let (_, package) = open(std::slice::from_ref(&m.base), config()).await;
    assert_eq!(
        package.package().files().len(),
        43,
        "40 files and 3 metadata parts"
    );
    let read = m.bytes();
    eprintln!(
        "opening {} bytes read {read} bytes in {} requests",
        bytes.len(),
        m.requests()
    );
    // The tail, the metadata parts and a small window per local header, not
    // a 64 KiB window per file (which alone would be 2.6 MB).
    assert!(read < 512 * 1024, "opening read {read} bytes");
}
