//! The read path (`blocks`) against in-test HTTP mirrors (hyper) that count
//! requests and bytes served: cache hits, coalescing and read-ahead, an
//! upgrade that moves only the changed blocks, Shared Content Store mode, the
//! cached percentage, and reads from the cache with the mirror down.

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use avail_client::blocks::{CacheMode, FAIL_FAST, PackageReader};
use avail_client::cache::{BlockStore, DiskCache, MemoryCache};
use avail_client::fetch::{FetchError, Fetcher, RemotePackage, package_path};
use avail_format::{BLOCK_SIZE, Limits, NoProgress, PackOptions, pack};
use bytes::Bytes;
use uuid::Uuid;

mod common;
use common::{Mirror, Mode, config, fill, mirror};
const PKG: Uuid = Uuid::from_u128(0x3333);
const V1: Uuid = Uuid::from_u128(0x4444);
const V2: Uuid = Uuid::from_u128(0x5555);

/// A source tree: relative path (under the package root) → content.
type Tree = Vec<(&'static str, Vec<u8>)>;

/// Pack `tree` as version `ver` of `PKG`; the package file's bytes.
fn pack_tree(tree: &Tree, ver: Uuid, publishing: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (path, content) in tree {
        let p = src.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let out = dir.path().join("out.appv");
    let options = PackOptions {
        name: "Blocks Test".into(),
        package_id: Some(PKG),
        version_id: Some(ver),
        publishing: publishing.iter().map(|p| format!("/{p}")).collect(),
        ..PackOptions::default()
    };
    pack(&src, &out, &options, &NoProgress).unwrap();
    fs::read(out).unwrap()
}

async fn open(m: &Mirror, ver: Uuid) -> RemotePackage {
    let fetcher = Fetcher::new(std::slice::from_ref(&m.base), config()).unwrap();
    RemotePackage::open(fetcher, package_path(PKG, ver), Limits::default())
        .await
        .unwrap()
}

fn disk(dir: &tempfile::TempDir) -> Arc<DiskCache> {
    let cache = DiskCache::open(dir.path().join("cache"), 1 << 30).unwrap();
    cache.set_fsync(false);
    Arc::new(cache)
}

fn index(reader: &PackageReader, path: &str) -> usize {
    let name = format!("Root\\{}", path.replace('/', "\\"));
    reader.file_index(&name).unwrap_or_else(|| panic!("{name}"))
}

/// Read every file of `tree` whole through `reader` and compare.
async fn read_all(reader: &PackageReader, tree: &Tree) {
    for (path, content) in tree {
        let f = index(reader, path);
        let got = reader.read(f, 0, content.len() as u64 + 10).await.unwrap();
        assert!(got[..] == content[..], "{path}");
    }
}

fn small_tree() -> Tree {
    vec![
        ("opt/app/bin/big", fill(1, 20 * BLOCK_SIZE + 777)),
        ("opt/app/lib/mid", fill(2, 3 * BLOCK_SIZE + 5)),
        ("opt/app/readme", b"hello".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_whole_file_read_then_cache_hit() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    let big = index(&reader, "opt/app/bin/big");
    let before = m.requests();
    let got = reader.read(big, 0, tree[0].1.len() as u64).await.unwrap();
    assert!(got[..] == tree[0].1[..]);
    assert_eq!(
        m.requests(),
        before + 1,
        "21 blocks in one coalesced request"
    );
    let after = m.requests();
    let again = reader.read(big, 0, tree[0].1.len() as u64).await.unwrap();
    assert!(again[..] == tree[0].1[..]);
    // A range inside, across block edges, and past the end.
    let at = BLOCK_SIZE as u64 - 3;
    let part = reader.read(big, at, 10).await.unwrap();
    assert_eq!(&part[..], &tree[0].1[at as usize..at as usize + 10]);
    let end = tree[0].1.len() as u64;
    assert_eq!(
        &reader.read(big, end - 2, 100).await.unwrap()[..],
        &tree[0].1[end as usize - 2..]
    );
    assert!(reader.read(big, end, 100).await.unwrap().is_empty());
    assert_eq!(m.requests(), after, "every later read is a cache hit");
    assert!(reader.read(9999, 0, 1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_sequential_small_reads_are_coalesced_with_read_ahead() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    let big = index(&reader, "opt/app/bin/big");
    let content = &tree[0].1;
    let before = m.requests();
    let mut out = Vec::new();
    let mut at = 0u64;
    while (at as usize) < content.len() {
        let got = reader.read(big, at, 4096).await.unwrap();
        at += got.len() as u64;
        out.extend_from_slice(&got);
    }
    assert!(out == *content);
    let requests = m.requests() - before;
    let blocks = content.len().div_ceil(BLOCK_SIZE);
    eprintln!("sequential 4 KiB reads: {requests} requests for {blocks} blocks");
    assert!(
        requests * 3 <= blocks,
        "{requests} requests for {blocks} blocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_upgrade_fetches_only_the_changed_blocks() {
    const CHANGED: usize = 16 * BLOCK_SIZE + 100;
    let v1: Tree = vec![
        ("opt/app/bin/app", fill(10, CHANGED)),
        ("opt/app/lib/a", fill(11, 24 * BLOCK_SIZE + 9)),
        ("opt/app/lib/b", fill(12, 24 * BLOCK_SIZE + 1)),
        ("opt/app/share/c", fill(13, 16 * BLOCK_SIZE)),
        ("opt/app/share/d", b"unchanged small".to_vec()),
    ];
    let mut v2 = v1.clone();
    v2[0].1 = fill(20, CHANGED);
    let m = mirror(vec![
        (package_path(PKG, V1), pack_tree(&v1, V1, &[])),
        (package_path(PKG, V2), pack_tree(&v2, V2, &[])),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(&dir);
    let r1 = PackageReader::new(open(&m, V1).await, cache.clone(), CacheMode::Normal);
    read_all(&r1, &v1).await;
    assert_eq!(r1.cached().percent(), 100.0);
    let total: usize = v1.iter().map(|(_, c)| c.len()).sum();

    let before_open = m.bytes();
    let r2 = PackageReader::new(open(&m, V2).await, cache.clone(), CacheMode::Normal);
    let before_read = m.bytes();
    let cached = r2.cached();
    assert!(cached.percent() > 70.0, "{cached:?}");
    read_all(&r2, &v2).await;
    let open_bytes = before_read - before_open;
    let block_bytes = m.bytes() - before_read;
    eprintln!(
        "upgrade: package of {total} bytes, changed file {CHANGED} bytes; \
         v2 open {open_bytes} bytes, v2 blocks {block_bytes} bytes"
    );
    assert!(
        block_bytes < 2 * CHANGED as u64,
        "{block_bytes} bytes of blocks"
    );
    assert!(
        block_bytes >= CHANGED as u64 / 2,
        "the changed file was fetched"
    );
    assert!(open_bytes + block_bytes < 2 * CHANGED as u64 + 256 * 1024);
    assert_eq!(r2.cached().percent(), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_shared_content_store_keeps_only_the_publishing_block_on_disk() {
    let tree: Tree = vec![
        ("opt/app/bin/big", fill(1, 20 * BLOCK_SIZE + 777)),
        ("opt/app/share/icons/app.png", fill(3, 2 * BLOCK_SIZE + 17)),
        ("opt/app/fb0/data", fill(4, 3 * BLOCK_SIZE)),
        ("opt/app/lib/mid", fill(2, 5 * BLOCK_SIZE + 5)),
    ];
    let m = mirror(vec![(
        package_path(PKG, V1),
        pack_tree(&tree, V1, &["opt/app/fb0"]),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Room for 16 blocks: the 6 pinned ones and a few more.
    let cache = DiskCache::open(dir.path().join("cache"), 16 * (BLOCK_SIZE as u64 + 8)).unwrap();
    cache.set_fsync(false);
    let cache = Arc::new(cache);
    let bound = 8 * BLOCK_SIZE as u64;
    let memory = Arc::new(MemoryCache::new(bound));
    let reader = PackageReader::new(
        open(&m, V1).await,
        cache.clone(),
        CacheMode::SharedContentStore {
            memory: memory.clone(),
        },
    );
    assert!(reader.is_shared_content_store());
    let fb0_blocks = 3 + 3; // the icon (2 blocks and a bit) and fb0/data
    let loaded = reader.load_publishing().await.unwrap();
    assert_eq!(loaded.blocks, fb0_blocks);
    assert_eq!(loaded.fetched_blocks, fb0_blocks);
    assert_eq!(cache.block_count() as u64, fb0_blocks);
    // Loading again fetches nothing and pins nothing twice.
    let requests = m.requests();
    assert_eq!(reader.load_publishing().await.unwrap().fetched_blocks, 0);
    assert_eq!(m.requests(), requests);

    // Sequential reads too, to exercise read-ahead into the memory cache.
    for (path, content) in &tree {
        let f = index(&reader, path);
        let mut at = 0u64;
        while (at as usize) < content.len() {
            let got = reader.read(f, at, 32 * 1024).await.unwrap();
            assert_eq!(&got[..], &content[at as usize..at as usize + got.len()]);
            at += got.len() as u64;
        }
    }
    read_all(&reader, &tree).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.block_count() as u64, fb0_blocks, "only FB0 on disk");
    let fb0: HashSet<[u8; 32]> = ["opt/app/share/icons/app.png", "opt/app/fb0/data"]
        .iter()
        .flat_map(|p| {
            let f = index(&reader, p);
            reader.remote().package().files()[f]
                .map
                .blocks
                .iter()
                .map(|b| b.hash)
                .collect::<Vec<_>>()
        })
        .collect();
    for h in &fb0 {
        assert!(cache.contains(h));
    }
    assert!(memory.used_bytes() <= bound, "{}", memory.used_bytes());
    assert!(memory.block_count() > 0);
    let pct = reader.cached().percent();
    assert!(pct > 10.0 && pct < 30.0, "only FB0 counts as cached: {pct}");
    // The publishing block is pinned: it stays through a flood of other blocks.
    let flood = |seed: u64| {
        for i in 0..40u64 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(seed + i).to_le_bytes());
            h[31] = 0xee;
            cache
                .insert(&h, Bytes::from(vec![7u8; BLOCK_SIZE]))
                .unwrap();
        }
    };
    flood(1000);
    for h in &fb0 {
        assert!(cache.contains(h), "a pinned block was evicted");
    }
    // The pins go with the reader: then the flood evicts them.
    reader.release();
    flood(2000);
    assert!(
        fb0.iter().all(|h| !cache.contains(h)),
        "unpinned blocks stay"
    );
    let pct = reader.cached().percent();
    assert_eq!(pct, 0.0, "evicted after the release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_cached_percentage_goes_from_0_to_100() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    let c = reader.cached();
    assert_eq!(c.cached_bytes, 0);
    assert_eq!(c.percent(), 0.0);
    let payload: u64 = tree.iter().map(|(_, c)| c.len() as u64).sum();
    assert_eq!(c.total_bytes, payload);
    let big = index(&reader, "opt/app/bin/big");
    reader.read(big, 0, BLOCK_SIZE as u64).await.unwrap();
    let p = reader.cached().percent();
    assert!(p > 0.0 && p < 100.0, "{p}");
    read_all(&reader, &tree).await;
    let c = reader.cached();
    assert_eq!(c.cached_bytes, payload);
    assert_eq!(c.percent(), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_load_all_streams_the_rest() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    let before = m.requests();
    let s = reader.load_all().await.unwrap();
    assert_eq!(s.fetched_blocks, s.blocks);
    assert_eq!(m.requests() - before, 3, "one request per file");
    assert_eq!(reader.cached().percent(), 100.0);
    read_all(&reader, &tree).await;
    assert_eq!(m.requests() - before, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_mirror_down_after_caching_reads_from_the_cache() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    read_all(&reader, &tree).await;
    m.set(Mode::Fail);
    let requests = m.requests();
    read_all(&reader, &tree).await;
    // The blocking facade, from a plain thread (a FUSE worker).
    let r = reader.clone();
    let big = index(&reader, "opt/app/bin/big");
    let expected = tree[0].1.clone();
    let got = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut at = 0;
        while at < expected.len() as u64 {
            let b = r.read_blocking(big, at, 128 * 1024).unwrap();
            at += b.len() as u64;
            out.extend_from_slice(&b);
        }
        out == expected
    })
    .join()
    .unwrap();
    assert!(got);
    assert_eq!(m.requests(), requests, "no request with everything cached");
    // A block not cached fails (EIO) while the mirror is down, works once it is back.
    let other_dir = tempfile::tempdir().unwrap();
    let cold = PackageReader::new(reader.remote().clone(), disk(&other_dir), CacheMode::Normal);
    let err = cold.read(big, 0, 10).await.unwrap_err();
    assert_eq!(err.errno(), 5);
    // The kernel's immediate retry of the same page fails at once, without
    // asking the mirrors again; a read of other blocks is tried.
    let asked = m.requests();
    let again = cold.read(big, 5, 10).await.unwrap_err();
    assert!(
        matches!(again, FetchError::RecentlyFailed { .. }),
        "{again}"
    );
    assert_eq!(again.errno(), 5);
    assert_eq!(m.requests(), asked);
    assert!(cold.read(big, 3 * BLOCK_SIZE as u64, 10).await.is_err());
    assert!(m.requests() > asked);
    // Once the mirror is back (and the failure is older than FAIL_FAST), it reads.
    m.set(Mode::Serve);
    tokio::time::sleep(FAIL_FAST).await;
    assert_eq!(&cold.read(big, 0, 10).await.unwrap()[..], &tree[0].1[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_concurrent_sequential_readers_share_fetches() {
    let tree = small_tree();
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = PackageReader::new(open(&m, V1).await, disk(&dir), CacheMode::Normal);
    let big = index(&reader, "opt/app/bin/big");
    let before = m.requests();
    let served = m.bytes();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let r = reader.clone();
            let expected = tree[0].1.clone();
            std::thread::spawn(move || {
                let mut at = 0u64;
                while at < expected.len() as u64 {
                    let b = r.read_blocking(big, at, 4096).unwrap();
                    assert_eq!(&b[..], &expected[at as usize..at as usize + b.len()]);
                    at += b.len() as u64;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let blocks = tree[0].1.len().div_ceil(BLOCK_SIZE);
    let requests = m.requests() - before;
    let bytes = m.bytes() - served;
    eprintln!("4 concurrent readers: {requests} requests, {bytes} bytes for {blocks} blocks");
    assert!(
        requests <= blocks,
        "{requests} requests for {blocks} blocks"
    );
    // Each block fetched about once, not once per reader.
    assert!(bytes < 2 * tree[0].1.len() as u64, "{bytes} bytes");
}

/// `n` files `opt/app/data/fNN` of three blocks and a bit, in package order.
fn many_files(n: usize) -> Tree {
    let names: Vec<&'static str> = (0..n)
        .map(|i| &*Box::leak(format!("opt/app/data/f{i:02}").into_boxed_str()))
        .collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (name, fill(1000 + 2 * i as u64, 3 * BLOCK_SIZE + 100)))
        .collect()
}

/// Whether every block of `path` is in `store`.
fn all_cached(reader: &PackageReader, store: &dyn BlockStore, path: &str) -> bool {
    let f = index(reader, path);
    reader.remote().package().files()[f]
        .map
        .blocks
        .iter()
        .all(|b| store.contains(&b.hash))
}

/// Whether any block of `path` is in `store`.
fn any_cached(reader: &PackageReader, store: &dyn BlockStore, path: &str) -> bool {
    let f = index(reader, path);
    reader.remote().package().files()[f]
        .map
        .blocks
        .iter()
        .any(|b| store.contains(&b.hash))
}

/// Waits (up to 10 s) for `cond`, then asserts it.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cond(), "{what}");
}

/// Lets background fetches finish (for what must not have happened).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn read_whole(reader: &PackageReader, tree: &Tree, i: usize) {
    let (path, content) = &tree[i];
    let got = reader
        .read(index(reader, path), 0, content.len() as u64)
        .await
        .unwrap();
    assert!(got[..] == content[..], "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_reading_files_in_order_fetches_the_next_files_ahead() {
    let tree = many_files(12);
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(&dir);
    let reader = PackageReader::new(open(&m, V1).await, cache.clone(), CacheMode::Normal);
    let before = m.requests();
    // One file read from its start is no stream yet: nothing else is fetched.
    read_whole(&reader, &tree, 0).await;
    settle().await;
    assert!(!any_cached(&reader, &*cache, tree[1].0));
    assert_eq!(m.requests() - before, 1);
    // The next file in package order confirms it: the files after it come
    // ahead, across file boundaries.
    read_whole(&reader, &tree, 1).await;
    for (path, _) in &tree[2..] {
        eventually(path, || all_cached(&reader, &*cache, path)).await;
    }
    let ahead = m.requests() - before - 2;
    assert!(ahead >= 1);
    assert!(ahead <= 2, "{ahead} requests for 10 files of 4 blocks");
    // The rest reads from the cache.
    let asked = m.requests();
    for i in 2..tree.len() {
        read_whole(&reader, &tree, i).await;
    }
    settle().await;
    assert_eq!(m.requests(), asked, "every later file was fetched ahead");
    // Fetched once each.
    let payload: usize = tree.iter().map(|(_, c)| c.len()).sum();
    assert!(
        m.bytes() < payload as u64 + 256 * 1024,
        "{} bytes",
        m.bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_read_ahead_across_files_stops_when_the_reader_jumps() {
    let tree = many_files(12);
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(&dir);
    let reader = PackageReader::new(open(&m, V1).await, cache.clone(), CacheMode::Normal);
    let before = m.requests();
    for i in [0, 5, 9, 2] {
        read_whole(&reader, &tree, i).await;
    }
    settle().await;
    assert_eq!(m.requests() - before, 4, "one request per file, none ahead");
    for i in [1, 3, 6, 10] {
        assert!(!any_cached(&reader, &*cache, tree[i].0), "{}", tree[i].0);
    }
    // Two readers walking two places in order: each its own stream.
    for i in [6, 10, 7, 11] {
        read_whole(&reader, &tree, i).await;
    }
    eventually("f08 ahead of the first stream", || {
        all_cached(&reader, &*cache, tree[8].0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_read_ahead_across_files_stays_within_a_quarter_of_the_quota() {
    let tree = many_files(40);
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let file = (3 * BLOCK_SIZE + 100) as u64;
    let cached_after = |cache: &DiskCache, reader: &PackageReader, last: usize| -> u64 {
        tree[last + 1..]
            .iter()
            .filter(|(p, _)| any_cached(reader, cache, p))
            .count() as u64
            * file
    };
    // 12 MiB: read-ahead across files fetches at most 3 MiB ahead.
    let dir = tempfile::tempdir().unwrap();
    let quota = 12 << 20;
    let cache = Arc::new(DiskCache::open(dir.path().join("cache"), quota).unwrap());
    cache.set_fsync(false);
    let reader = PackageReader::new(open(&m, V1).await, cache.clone(), CacheMode::Normal);
    for i in 0..6 {
        read_whole(&reader, &tree, i).await;
        settle().await;
        let ahead = cached_after(&cache, &reader, i);
        // Files partly fetched count whole here: one at each end.
        assert!(
            ahead <= quota / 4 + 2 * file,
            "{ahead} bytes ahead after f{i:02}"
        );
        assert!(cache.used_bytes() <= quota);
    }
    assert!(
        all_cached(&reader, &*cache, tree[6].0),
        "it did fetch ahead"
    );
    // 6 MiB: a quarter is less than a first window: none at all.
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(DiskCache::open(dir.path().join("cache"), 6 << 20).unwrap());
    cache.set_fsync(false);
    let reader = PackageReader::new(open(&m, V1).await, cache.clone(), CacheMode::Normal);
    for i in 0..4 {
        read_whole(&reader, &tree, i).await;
    }
    settle().await;
    assert_eq!(cached_after(&cache, &reader, 3), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_read_ahead_across_files_respects_the_shared_content_store_bound() {
    let tree = many_files(40);
    let m = mirror(vec![(package_path(PKG, V1), pack_tree(&tree, V1, &[]))]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = disk(&dir);
    let bound = 8 << 20;
    let memory = Arc::new(MemoryCache::new(bound));
    let reader = PackageReader::new(
        open(&m, V1).await,
        cache.clone(),
        CacheMode::SharedContentStore {
            memory: memory.clone(),
        },
    );
    for i in 0..3 {
        read_whole(&reader, &tree, i).await;
    }
    eventually("the next file ahead, in memory", || {
        all_cached(&reader, &*memory, tree[3].0)
    })
    .await;
    settle().await;
    let file = (3 * BLOCK_SIZE + 100) as u64;
    let ahead = tree[3..]
        .iter()
        .filter(|(p, _)| any_cached(&reader, &*memory, p))
        .count() as u64
        * file;
    assert!(ahead <= bound / 4 + 2 * file, "{ahead} bytes ahead");
    assert!(memory.used_bytes() <= bound);
    assert_eq!(cache.block_count(), 0, "nothing but FB0 (empty) on disk");
    // A memory cache too small for a first window: none at all.
    let small = Arc::new(MemoryCache::new(4 << 20));
    let reader = PackageReader::new(
        open(&m, V1).await,
        disk(&tempfile::tempdir().unwrap()),
        CacheMode::SharedContentStore {
            memory: small.clone(),
        },
    );
    for i in 10..13 {
        read_whole(&reader, &tree, i).await;
    }
    settle().await;
    assert!(!any_cached(&reader, &*small, tree[13].0));
}
