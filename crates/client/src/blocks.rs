//! The read path of one package version: byte ranges of its files served
//! from the block cache, the missing blocks fetched by the streaming engine.
//!
//! A [`PackageReader`] joins a [`RemotePackage`] (the package's structure and
//! verified, coalesced block fetches, [`crate::fetch`]) and the stores
//! ([`crate::cache`]). It answers what a FUSE read asks — bytes
//! `[offset, offset + len)` of file `F` ([`PackageReader::read`], and
//! [`PackageReader::read_blocking`] for FUSE worker threads):
//!
//! 1. The range becomes blocks ([`blocks_of`]), clipped to the file's end.
//! 2. Each block is looked up by its SHA-256 from the block map, on disk first,
//!    then in the memory cache (Shared Content Store mode). A block is shared
//!    by every file, package and version that has the same bytes, so an
//!    upgrade fetches only the blocks whose hash is not cached.
//! 3. The file's [`ReadAhead`] (one per file, behind a mutex) records the read
//!    and names the blocks to fetch ahead.
//! 4. The missing blocks, read-ahead included, are grouped into runs of
//!    adjacent blocks. A run that holds a block the read needs is fetched now,
//!    in one coalesced request ([`RemotePackage::blocks`]) — read-ahead blocks
//!    adjacent to a missing block ride along in the same request. A run made
//!    only of read-ahead blocks (the read itself was a cache hit) is fetched
//!    in the background on the fetcher's runtime; the read does not wait for
//!    it. Every fetched block goes to the cache; the blocks the read needs are
//!    inserted before it returns, read-ahead blocks on a blocking thread.
//! 5. The answer is sliced out of the blocks.
//!
//! # Read-ahead across files
//!
//! A program that reads a package's files one after the other in package
//! order (the order of their data in the package file) reads the package
//! file front to back, and a request per file would pay a round trip (and
//! the server's end-of-response latency) per file. So a reader also follows
//! *streams* over the package's payload files in package order, counted in
//! uncompressed bytes from the first file's first block:
//!
//! * A file read from its first block that starts right where a stream's
//!   last file ended (or anywhere in what the stream fetched ahead) continues
//!   that stream (the one closest behind it). The first such read confirms
//!   the stream and opens its window at [`CROSS_INITIAL`] bytes; each further
//!   one doubles it, up to [`CROSS_WINDOW_MAX`]. A file read from its first
//!   block that continues no stream starts a new, unconfirmed one (at most
//!   [`STREAMS`] are followed, the least recently used dropped); so several
//!   readers, or one reader walking several directories in turn, each get
//!   their own stream, and a reader that jumps elsewhere leaves its stream
//!   behind (nothing more is fetched for it).
//! * Once less than half a window is fetched ahead of where the stream's
//!   reader is, the blocks up to a window past it are fetched: the blocks of
//!   the following files, not cached and not being fetched, in requests of up
//!   to [`CROSS_CHUNK`] bytes that span file boundaries (a request covers
//!   blocks whose bytes in the package file lie at most [`CROSS_GAP`] apart),
//!   [`CROSS_CONCURRENCY`] requests in flight per reader, so that one
//!   response's latency overlaps the others'. Each block is verified by its
//!   SHA-256 ([`RemotePackage::span`]) and stored like any fetched block.
//! * Bounds: what all of a reader's streams have fetched ahead of their
//!   readers is at most [`CROSS_TOTAL_MAX`] bytes (the least recently used
//!   streams are dropped to make room), and no stream's window nor that total
//!   is more than a quarter of the store the blocks go to: the disk cache's
//!   quota, or in Shared Content Store mode the memory cache's bound. A store
//!   too small for [`CROSS_INITIAL`] turns it off.
//!
//! # One fetch per block
//!
//! A block being fetched is registered by hash (an *in-flight* entry) until
//! it is in the cache. A read that needs a block someone else is fetching
//! (another FUSE thread, a background read-ahead) waits for that fetch and
//! takes the block from the cache; if it is not there afterwards (the fetch
//! failed, or a full store refused it) the read fetches it itself. So
//! concurrent sequential readers do not fetch the same blocks twice.
//!
//! # Bounds
//!
//! A whole read — its waits on other fetches and its own — is bounded by the
//! fetcher's [`FetchConfig::read_timeout`](crate::fetch::FetchConfig::read_timeout),
//! past which it fails with [`FetchError::TimedOut`] (`EIO`). A background
//! read-ahead is bounded the same way by [`RemotePackage::blocks`] and never
//! delays a read beyond that. A store refusing a block (quota full of pins, an
//! I/O error) never fails a read: the read is served from the fetched bytes and
//! the refusal is logged.
//!
//! # Modes
//!
//! * [`CacheMode::Normal`]: every block goes to the disk cache.
//! * [`CacheMode::SharedContentStore`]: only the blocks of the publishing
//!   feature block (the files, or runs of blocks, listed in the stream map's
//!   `PublishingFeatureBlock`) go to disk, pinned with
//!   [`BlockStore::insert_pinned`]; every other block goes to a bounded
//!   [`MemoryCache`](crate::cache::MemoryCache) (shared by every package). A
//!   block is classified by its hash, so a block that is both in the
//!   publishing feature block and elsewhere is on disk once, pinned. Each
//!   reader pins a hash at most once and takes its pins back when it is
//!   released ([`PackageReader::release`], or when the last clone is dropped).
//!
//! [`PackageReader::load_publishing`] loads the publishing feature block when
//! a package is added (and pins it in Shared Content Store mode; call it again
//! after a daemon restart, as pins live in memory only).
//! [`PackageReader::load_all`] streams every block not yet cached, for
//! `AutoLoad` (normal mode).
//!
//! # Cached percentage
//!
//! [`PackageReader::cached`] counts the bytes of the package's blocks present
//! in the disk cache over the package's total, what `avail client package
//! list` shows and reports carry. Both count the payload files a mount shows
//! (every block-map file except the metadata parts read at open:
//! `AppxManifest.xml`, `StreamMap.xml`, `FilesystemMetadata.xml`), each block
//! at its uncompressed length; a block that appears twice counts twice.
//!
//! # Hashing once
//!
//! A block is verified once when fetched. With [`DiskCache::set_memory`]
//! (what the client daemon does) the disk cache keeps the blocks it stored
//! last in memory and serves them without hashing them again; a block read
//! back from its file is verified again (see [`crate::cache`]).
//!
//! [`DiskCache::set_memory`]: crate::cache::DiskCache::set_memory
//!
//! # Async core, blocking facade
//!
//! As in [`crate::fetch`], the `*_blocking` methods run the async ones on the
//! fetcher's runtime with `Handle::block_on`, for threads that are not the
//! runtime's workers. The async [`PackageReader::read`] does the cache I/O of
//! the blocks it returns inline (reads of 64 KiB block files, and writes of
//! the blocks it fetched); read-ahead inserts go to blocking threads.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use avail_format::streammap::{FeatureFile, StreamMap};
use avail_format::{BLOCK_SIZE, FormatError, fsmeta, manifest, names, streammap};
use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::cache::{BlockHash, BlockStore, CacheError};
use crate::fetch::{FetchError, MAX_COALESCE, ReadAhead, RemotePackage, Result, blocks_of};

/// Runs of blocks a load (of a feature block, or `AutoLoad`'s) fetches at once.
pub const LOAD_CONCURRENCY: usize = 4;

/// The default largest read-ahead window within a file, in blocks (16 MiB:
/// half a window is asked for at once, as two coalesced requests in flight).
pub const DEFAULT_READ_AHEAD: usize = 4 * MAX_COALESCE;

/// The first window of a confirmed stream across files, in bytes.
pub const CROSS_INITIAL: u64 = 2 << 20;

/// The largest window of one stream across files, in bytes.
pub const CROSS_WINDOW_MAX: u64 = 16 << 20;

/// The most bytes all of a reader's streams fetch ahead of their readers.
pub const CROSS_TOTAL_MAX: u64 = 48 << 20;

/// The most uncompressed bytes one cross-file request asks for.
pub const CROSS_CHUNK: u64 = (MAX_COALESCE * BLOCK_SIZE) as u64;

/// Blocks whose bytes in the package file lie at most this far apart (local
/// headers between files) are asked for in one request.
pub const CROSS_GAP: u64 = 8 * 1024;

/// Cross-file requests in flight at once, per reader.
pub const CROSS_CONCURRENCY: usize = 4;

/// Streams across files a reader follows at once.
pub const STREAMS: usize = 32;

/// Where a reader puts the blocks it fetches.
#[derive(Clone)]
pub enum CacheMode {
    /// Every block to the disk cache.
    Normal,
    /// Shared Content Store mode: publishing feature block blocks to the disk
    /// cache, pinned; every other block to this bounded store (a
    /// [`MemoryCache`](crate::cache::MemoryCache), shared by all packages).
    SharedContentStore {
        /// The memory cache.
        memory: Arc<dyn BlockStore>,
    },
}

impl std::fmt::Debug for CacheMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheMode::Normal => f.write_str("Normal"),
            CacheMode::SharedContentStore { memory } => f
                .debug_struct("SharedContentStore")
                .field("memory_bound", &memory.capacity_bytes())
                .finish(),
        }
    }
}

/// Why loading blocks into the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A block could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The disk cache refused a block of the publishing feature block.
    #[error("cannot keep the publishing feature block: {0}")]
    Cache(#[from] CacheError),
    /// The stream map names a file the block map does not have.
    #[error("the publishing feature block names {0:?}, which is not in the package")]
    UnknownFile(String),
}

/// What a load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Blocks it covered.
    pub blocks: u64,
    /// Uncompressed bytes of those blocks.
    pub bytes: u64,
    /// Blocks that had to be fetched (the rest were cached).
    pub fetched_blocks: u64,
}

/// Cached bytes of a package (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CachedSize {
    /// Bytes of the package's blocks present in the disk cache.
    pub cached_bytes: u64,
    /// Bytes of all the package's blocks.
    pub total_bytes: u64,
}

impl CachedSize {
    /// The cached percentage, 0–100 (100 for an empty package).
    pub fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            self.cached_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
}

/// The read path of one package version (see the module doc). Cheap to
/// clone: clones share the read-ahead state, the in-flight fetches and pins.
#[derive(Clone)]
pub struct PackageReader {
    inner: Arc<Inner>,
}

struct Inner {
    remote: RemotePackage,
    disk: Arc<dyn BlockStore>,
    /// The memory store in Shared Content Store mode.
    memory: Option<Arc<dyn BlockStore>>,
    /// Hashes of the publishing feature block's blocks.
    publishing: HashSet<BlockHash>,
    /// One read-ahead state per file.
    read_ahead: Vec<Mutex<ReadAhead>>,
    /// Blocks being fetched, by hash: the receiver sees the sender dropped.
    flights: Mutex<HashMap<BlockHash, watch::Receiver<()>>>,
    /// Hashes this reader pinned on disk (once each).
    pinned: Mutex<HashSet<BlockHash>>,
    /// The last few failed reads: file, its blocks, when the failure ended.
    failures: Mutex<VecDeque<(usize, Range<usize>, Instant)>>,
    /// The payload files in package order.
    order: Order,
    /// Streams across files (see the module doc).
    streams: Mutex<Streams>,
    /// The largest window of one stream, and of all (0: turned off).
    cross_window: u64,
    cross_total: u64,
    /// Cross-file requests in flight.
    cross_slots: Arc<tokio::sync::Semaphore>,
}

/// The payload files in package order, and where each starts in the
/// uncompressed stream over them.
struct Order {
    /// Position → file index.
    files: Vec<usize>,
    /// File index → position (`None` for the metadata parts).
    pos: Vec<Option<usize>>,
    /// Uncompressed bytes before each position; the last is the total.
    cum: Vec<u64>,
}

impl Order {
    fn new(remote: &RemotePackage) -> Self {
        let all = remote.package().files();
        let mut files: Vec<usize> = (0..all.len())
            .filter(|&i| !is_metadata_part(&all[i].map.name))
            .collect();
        files.sort_by_key(|&i| all[i].data_start());
        let mut pos = vec![None; all.len()];
        let mut cum = Vec::with_capacity(files.len() + 1);
        let mut at = 0u64;
        for (p, &i) in files.iter().enumerate() {
            pos[i] = Some(p);
            cum.push(at);
            at += all[i].map.size;
        }
        cum.push(at);
        Order { files, pos, cum }
    }

    /// The position and block at stream offset `v` (the end: `files.len()`).
    fn locate(&self, v: u64) -> (usize, usize) {
        let n = self.files.len();
        if v >= self.cum[n] {
            return (n, 0);
        }
        let p = self.cum.partition_point(|&c| c <= v) - 1;
        (p, ((v - self.cum[p]) / BLOCK_SIZE as u64) as usize)
    }
}

/// One stream across files, in uncompressed stream offsets.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Where the stream's reader is: the end of the last file it started.
    next: u64,
    /// The end of what was asked for ahead.
    issued: u64,
    /// 0 until confirmed.
    window: u64,
    tick: u64,
}

#[derive(Debug, Default)]
struct Streams {
    list: Vec<Stream>,
    tick: u64,
}

/// How long after a read failed a read of the same blocks fails at once.
/// The kernel answers a failed read-ahead by reading the page again straight
/// away; without this, one `read(2)` would wait the read timeout twice.
pub const FAIL_FAST: Duration = Duration::from_secs(1);

/// How many failed reads [`FAIL_FAST`] remembers.
const FAILURES_KEPT: usize = 8;

impl std::fmt::Debug for PackageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageReader")
            .field("files", &self.inner.remote.package().files().len())
            .field("shared_content_store", &self.inner.memory.is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A claim on fetching one block: removes its in-flight entry (waking the
/// waiters) when dropped.
struct Claim {
    inner: Arc<Inner>,
    hash: BlockHash,
    _done: watch::Sender<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.inner.flights).remove(&self.hash);
    }
}

/// One request across files: `(file, blocks)` segments in package order,
/// and the claims on their blocks, in the same order.
type CrossRun = (Vec<(usize, Range<usize>)>, Vec<Claim>);

/// Whether a file is one of the metadata parts a package is opened with.
fn is_metadata_part(name: &str) -> bool {
    [manifest::PART, streammap::PART, fsmeta::PART]
        .iter()
        .any(|part| names::same_part(name, part))
}

impl PackageReader {
    /// A reader over `remote` with the default read-ahead
    /// ([`DEFAULT_READ_AHEAD`] blocks at most).
    pub fn new(remote: RemotePackage, disk: Arc<dyn BlockStore>, mode: CacheMode) -> Self {
        Self::with_read_ahead(remote, disk, mode, DEFAULT_READ_AHEAD)
    }

    /// A reader whose read-ahead grows to at most `read_ahead_max` blocks (0
    /// turns it off).
    pub fn with_read_ahead(
        remote: RemotePackage,
        disk: Arc<dyn BlockStore>,
        mode: CacheMode,
        read_ahead_max: usize,
    ) -> Self {
        let package = remote.package();
        let memory = match mode {
            CacheMode::Normal => None,
            CacheMode::SharedContentStore { memory } => Some(memory),
        };
        let mut publishing = HashSet::new();
        for (file, blocks) in publishing_blocks(&remote).unwrap_or_default() {
            let map = &package.files()[file].map;
            publishing.extend(blocks.map(|k| map.blocks[k].hash));
        }
        let read_ahead = package
            .files()
            .iter()
            .map(|_| Mutex::new(ReadAhead::new(read_ahead_max)))
            .collect();
        // A quarter of where the blocks go, at most; off when that is too
        // small for a first window, or read-ahead is off.
        let room = memory.as_ref().unwrap_or(&disk).capacity_bytes() / 4;
        let (cross_window, cross_total) = if room < CROSS_INITIAL || read_ahead_max == 0 {
            (0, 0)
        } else {
            (CROSS_WINDOW_MAX.min(room), CROSS_TOTAL_MAX.min(room))
        };
        let order = Order::new(&remote);
        PackageReader {
            inner: Arc::new(Inner {
                remote,
                disk,
                memory,
                publishing,
                read_ahead,
                flights: Mutex::new(HashMap::new()),
                pinned: Mutex::new(HashSet::new()),
                failures: Mutex::new(VecDeque::new()),
                order,
                streams: Mutex::new(Streams::default()),
                cross_window,
                cross_total,
                cross_slots: Arc::new(tokio::sync::Semaphore::new(CROSS_CONCURRENCY)),
            }),
        }
    }

    /// The package being read.
    pub fn remote(&self) -> &RemotePackage {
        &self.inner.remote
    }

    /// Whether this reader is in Shared Content Store mode.
    pub fn is_shared_content_store(&self) -> bool {
        self.inner.memory.is_some()
    }

    /// Index of a payload file by package name (e.g. `Root\opt\app\bin\app`).
    pub fn file_index(&self, name: &str) -> Option<usize> {
        self.inner.remote.package().file_index(name)
    }

    /// Bytes `[offset, offset + len)` of file `file`, fewer at the file's end
    /// (none past it). Fails (always `EIO` to a reader) when a block cannot
    /// be fetched within the read timeout, or `file` does not exist.
    ///
    /// A read of blocks whose read failed less than [`FAIL_FAST`] ago fails
    /// at once.
    pub async fn read(&self, file: usize, offset: u64, len: u64) -> Result<Bytes> {
        let source = self.inner.remote.package().source();
        let bound = source.fetcher().config().read_timeout;
        let blocks = blocks_of(offset, len.max(1));
        let recent = lock(&self.inner.failures)
            .iter()
            .filter(|(f, b, _)| *f == file && b.start < blocks.end && blocks.start < b.end)
            .map(|(_, _, at)| at.elapsed())
            .find(|ago| *ago < FAIL_FAST);
        if let Some(ago) = recent {
            return Err(FetchError::RecentlyFailed {
                path: source.path().to_owned(),
                ago,
            });
        }
        let result = match tokio::time::timeout(bound, self.read_unbounded(file, offset, len)).await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::TimedOut {
                path: source.path().to_owned(),
                bound,
            }),
        };
        if result.is_err() {
            let mut failures = lock(&self.inner.failures);
            if failures.len() == FAILURES_KEPT {
                failures.pop_front();
            }
            failures.push_back((file, blocks, Instant::now()));
        }
        result
    }

    /// [`PackageReader::read`] for a thread outside the runtime (a FUSE worker).
    pub fn read_blocking(&self, file: usize, offset: u64, len: u64) -> Result<Bytes> {
        let handle = self.inner.remote.package().source().fetcher().handle();
        handle.block_on(self.read(file, offset, len))
    }

    async fn read_unbounded(&self, file: usize, offset: u64, len: u64) -> Result<Bytes> {
        let inner = &self.inner;
        let package = inner.remote.package();
        let Some(f) = package.files().get(file) else {
            return Err(FetchError::Format(FormatError::NotFound(format!(
                "file #{file}"
            ))));
        };
        let size = f.map.size;
        if len == 0 || offset >= size {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(len).min(size);
        let wanted = blocks_of(offset, end - offset);
        let file_blocks = f.map.blocks.len();
        let ahead = lock(&inner.read_ahead[file]).on_read(wanted.clone(), file_blocks);
        let hash = |k: usize| f.map.blocks[k].hash;

        let mut slots: Vec<Option<Bytes>> = wanted.clone().map(|k| self.lookup(&hash(k))).collect();
        // Claim what is missing and nobody fetches; note what others fetch.
        let mut claims: Vec<(usize, Claim)> = Vec::new();
        let mut waits: Vec<(usize, watch::Receiver<()>)> = Vec::new();
        {
            let mut flights = lock(&inner.flights);
            let mut claim =
                |k: usize, flights: &mut HashMap<BlockHash, watch::Receiver<()>>| match flights
                    .entry(hash(k))
                {
                    Entry::Occupied(e) => Some(e.get().clone()),
                    Entry::Vacant(e) => {
                        let (tx, rx) = watch::channel(());
                        e.insert(rx);
                        claims.push((
                            k,
                            Claim {
                                inner: inner.clone(),
                                hash: hash(k),
                                _done: tx,
                            },
                        ));
                        None
                    }
                };
            for k in wanted.clone() {
                if slots[k - wanted.start].is_none()
                    && let Some(rx) = claim(k, &mut flights)
                {
                    waits.push((k, rx));
                }
            }
            for k in ahead.clone() {
                if !self.contains(&hash(k)) {
                    // Read-ahead someone else fetches is simply skipped.
                    let _ = claim(k, &mut flights);
                }
            }
        }

        // A file read from its start: the streams across files.
        if wanted.start == 0
            && let Some(ahead) = self.on_file_start(file)
        {
            self.spawn_cross(ahead);
        }

        // Runs of adjacent claimed blocks: fetched now when they hold a block
        // the read needs, else in the background.
        let mut got: HashMap<BlockHash, Bytes> = HashMap::new();
        let mut claims = claims.into_iter().peekable();
        while let Some((first, claim)) = claims.next() {
            let mut run = vec![claim];
            let mut last = first;
            while let Some((k, _)) = claims.peek() {
                if *k != last + 1 || run.len() == MAX_COALESCE {
                    break;
                }
                let (k, c) = claims.next().expect("peeked");
                run.push(c);
                last = k;
            }
            let range = first..last + 1;
            if range.start >= wanted.end {
                self.spawn_read_ahead(file, range, run);
                continue;
            }
            let blocks = inner.remote.blocks(file, range.clone()).await?;
            let mut ahead_blocks = Vec::new();
            for ((k, block), claim) in range.zip(blocks).zip(run) {
                let block = Bytes::from(block);
                if wanted.contains(&k) {
                    self.store(&claim.hash, block.clone());
                    got.insert(claim.hash, block.clone());
                    slots[k - wanted.start] = Some(block);
                    drop(claim);
                } else {
                    ahead_blocks.push((claim, block));
                }
            }
            if !ahead_blocks.is_empty() {
                let reader = self.clone();
                tokio::task::spawn_blocking(move || {
                    for (claim, block) in ahead_blocks {
                        reader.store(&claim.hash, block);
                    }
                });
            }
        }

        // Blocks others were fetching (or that repeat one fetched above).
        let mut again = Vec::new();
        for (k, mut rx) in waits {
            let h = hash(k);
            if let Some(b) = got.get(&h) {
                slots[k - wanted.start] = Some(b.clone());
                continue;
            }
            // Returns once the fetcher's claim is dropped.
            while rx.changed().await.is_ok() {}
            match self.lookup(&h) {
                Some(b) => slots[k - wanted.start] = Some(b),
                None => again.push(k),
            }
        }
        for k in again {
            if let Some(b) = got.get(&hash(k)) {
                slots[k - wanted.start] = Some(b.clone());
                continue;
            }
            let block = Bytes::from(inner.remote.block(file, k).await?);
            self.store(&hash(k), block.clone());
            got.insert(hash(k), block.clone());
            slots[k - wanted.start] = Some(block);
        }

        let skip = (offset - wanted.start as u64 * BLOCK_SIZE as u64) as usize;
        let want = (end - offset) as usize;
        if slots.len() == 1 {
            let b = slots.pop().flatten().expect("every block is filled");
            return Ok(b.slice(skip..skip + want));
        }
        let mut out = BytesMut::with_capacity(want);
        let mut skip = skip;
        for b in slots {
            let b = b.expect("every block is filled");
            let take = (b.len() - skip).min(want - out.len());
            out.extend_from_slice(&b[skip..skip + take]);
            skip = 0;
        }
        Ok(out.freeze())
    }

    /// Fetch a run of read-ahead blocks in the background and cache them.
    fn spawn_read_ahead(&self, file: usize, range: Range<usize>, run: Vec<Claim>) {
        let reader = self.clone();
        let handle = self.inner.remote.package().source().fetcher().handle();
        handle.spawn(async move {
            match reader.inner.remote.blocks(file, range.clone()).await {
                Ok(blocks) => {
                    let _ = tokio::task::spawn_blocking(move || {
                        for (claim, block) in run.into_iter().zip(blocks) {
                            reader.store(&claim.hash, Bytes::from(block));
                        }
                    })
                    .await;
                }
                Err(e) => {
                    tracing::debug!(file, ?range, error = %e, "read-ahead failed");
                }
            }
        });
    }

    /// Record that `file` is read from its start; the stream offsets to
    /// fetch ahead across files, if any (see the module doc).
    fn on_file_start(&self, file: usize) -> Option<Range<u64>> {
        let inner = &self.inner;
        if inner.cross_window == 0 {
            return None;
        }
        let order = &inner.order;
        let p = order.pos[file]?;
        let (start, end) = (order.cum[p], order.cum[p + 1]);
        let total = *order.cum.last().expect("never empty");
        let mut streams = lock(&inner.streams);
        streams.tick += 1;
        let tick = streams.tick;
        let found = streams
            .list
            .iter()
            .enumerate()
            .filter(|(_, s)| s.next <= start && start <= s.next.max(s.issued))
            .max_by_key(|(_, s)| s.next)
            .map(|(i, _)| i);
        let Some(i) = found else {
            if let Some(s) = streams.list.iter_mut().find(|s| s.next == end) {
                s.tick = tick;
                return None;
            }
            if streams.list.len() == STREAMS
                && let Some(oldest) = (0..STREAMS).min_by_key(|&i| streams.list[i].tick)
            {
                streams.list.swap_remove(oldest);
            }
            streams.list.push(Stream {
                next: end,
                issued: end,
                window: 0,
                tick,
            });
            return None;
        };
        let s = &mut streams.list[i];
        s.window = if s.window == 0 {
            CROSS_INITIAL.min(inner.cross_window)
        } else {
            (s.window * 2).min(inner.cross_window)
        };
        s.next = s.next.max(end);
        s.tick = tick;
        let s = *s;
        if s.issued.saturating_sub(s.next) > s.window / 2 {
            return None;
        }
        let from = s.issued.max(s.next);
        let mut to = (s.next + s.window).min(total);
        if from >= to {
            return None;
        }
        // Within the total: drop the least recently used other streams first.
        loop {
            let ahead: u64 = streams
                .list
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| o.issued.saturating_sub(o.next))
                .sum::<u64>()
                + from.saturating_sub(s.next);
            if ahead + (to - from) <= inner.cross_total {
                break;
            }
            let oldest = (0..streams.list.len())
                .filter(|&j| j != i && streams.list[j].issued > streams.list[j].next)
                .min_by_key(|&j| streams.list[j].tick);
            match oldest {
                Some(j) => {
                    // Keep it as a candidate, with nothing counted ahead.
                    let o = &mut streams.list[j];
                    o.issued = o.next;
                    o.window = 0;
                }
                None => {
                    to = from + inner.cross_total.saturating_sub(ahead).min(to - from);
                    break;
                }
            }
        }
        if from >= to {
            return None;
        }
        streams.list[i].issued = to;
        Some(from..to)
    }

    /// Fetch the blocks of stream offsets `ahead` that are neither cached nor
    /// being fetched, in the background, [`CROSS_CHUNK`] bytes per task.
    fn spawn_cross(&self, ahead: Range<u64>) {
        let handle = self.inner.remote.package().source().fetcher().handle();
        let mut at = ahead.start;
        while at < ahead.end {
            let end = (at + CROSS_CHUNK).min(ahead.end);
            let reader = self.clone();
            handle.spawn(async move {
                let Ok(_slot) = reader.inner.cross_slots.clone().acquire_owned().await else {
                    return;
                };
                let runs = reader.claim_cross(at..end);
                for (segments, claims) in runs {
                    let r = reader.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        let remote = &r.inner.remote;
                        let handle = remote.package().source().fetcher().handle();
                        match handle.block_on(remote.span(&segments)) {
                            Ok(blocks) => {
                                for (claim, block) in claims.into_iter().zip(blocks) {
                                    r.store(&claim.hash, Bytes::from(block));
                                }
                            }
                            Err(e) => {
                                tracing::debug!(?segments, error = %e, "read-ahead across files failed");
                            }
                        }
                    });
                    let _ = done.await;
                }
            });
            at = end;
        }
    }

    /// Claim the blocks of stream offsets `range` that are neither cached nor
    /// being fetched; grouped into runs to fetch in one request each.
    fn claim_cross(&self, range: Range<u64>) -> Vec<CrossRun> {
        let inner = &self.inner;
        let order = &inner.order;
        let files = inner.remote.package().files();
        let (mut p, mut k) = order.locate(range.start);
        let mut runs: Vec<CrossRun> = Vec::new();
        // The package-file end of the last claimed block, when the run is open.
        let mut last_end: Option<u64> = None;
        while p < order.files.len() && order.cum[p] + ((k * BLOCK_SIZE) as u64) < range.end {
            let file = order.files[p];
            let f = &files[file];
            if k >= f.map.blocks.len() {
                p += 1;
                k = 0;
                continue;
            }
            let hash = f.map.blocks[k].hash;
            let bytes = f.blocks_range(k, k + 1);
            let claim = if self.contains(&hash) {
                None
            } else {
                match lock(&inner.flights).entry(hash) {
                    Entry::Occupied(_) => None,
                    Entry::Vacant(e) => {
                        let (tx, rx) = watch::channel(());
                        e.insert(rx);
                        Some(Claim {
                            inner: inner.clone(),
                            hash,
                            _done: tx,
                        })
                    }
                }
            };
            match claim {
                None => last_end = None,
                Some(claim) => {
                    let joins =
                        last_end.is_some_and(|e| bytes.start >= e && bytes.start - e <= CROSS_GAP);
                    match runs.last_mut() {
                        Some((segments, claims)) if joins => {
                            match segments.last_mut() {
                                Some((sf, r)) if *sf == file && r.end == k => r.end = k + 1,
                                _ => segments.push((file, k..k + 1)),
                            }
                            claims.push(claim);
                        }
                        _ => runs.push((vec![(file, k..k + 1)], vec![claim])),
                    }
                    last_end = Some(bytes.end);
                }
            }
            k += 1;
        }
        runs
    }

    /// A cached block: on disk, else in memory.
    fn lookup(&self, hash: &BlockHash) -> Option<Bytes> {
        self.inner
            .disk
            .get(hash)
            .or_else(|| self.inner.memory.as_ref().and_then(|m| m.get(hash)))
    }

    fn contains(&self, hash: &BlockHash) -> bool {
        self.inner.disk.contains(hash)
            || self.inner.memory.as_ref().is_some_and(|m| m.contains(hash))
    }

    /// Put a fetched, verified block where the mode says; a refusal is logged.
    fn store(&self, hash: &BlockHash, block: Bytes) {
        if let Err(e) = self.try_store(hash, block) {
            tracing::warn!(hash = %hex::encode(hash), error = %e, "a block was not cached");
        }
    }

    fn try_store(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError> {
        let inner = &self.inner;
        match &inner.memory {
            None => inner.disk.insert(hash, block),
            Some(_) if inner.publishing.contains(hash) => {
                let mut pinned = lock(&inner.pinned);
                if pinned.contains(hash) {
                    inner.disk.insert(hash, block)
                } else {
                    inner.disk.insert_pinned(hash, block)?;
                    pinned.insert(*hash);
                    Ok(())
                }
            }
            Some(memory) => memory.insert(hash, block),
        }
    }

    /// Load the publishing feature block into the disk cache (what adding a
    /// package does), fetching only the blocks not cached, as coalesced runs.
    /// In Shared Content Store mode its blocks are pinned (once per reader).
    pub async fn load_publishing(&self) -> Result<LoadSummary, LoadError> {
        let blocks = publishing_blocks(&self.inner.remote)?;
        self.load(blocks, true).await
    }

    /// [`PackageReader::load_publishing`] for a thread outside the runtime.
    pub fn load_publishing_blocking(&self) -> Result<LoadSummary, LoadError> {
        let handle = self.inner.remote.package().source().fetcher().handle();
        handle.block_on(self.load_publishing())
    }

    /// Load the primary feature block (FB1: what the application reads to
    /// start) where blocks go in this mode, fetching only what is not
    /// cached: what a launch does before it starts the application.
    pub async fn load_primary(&self) -> Result<LoadSummary, LoadError> {
        let blocks = feature_blocks(&self.inner.remote, |map| &map.primary)?;
        self.load(blocks, false).await
    }

    /// Fetch every block of the package's payload files not cached yet, as
    /// coalesced runs (`AutoLoad`; meant for normal mode — in Shared Content
    /// Store mode the blocks go to the bounded memory cache).
    pub async fn load_all(&self) -> Result<LoadSummary, LoadError> {
        let files = self.inner.remote.package().files();
        let blocks = files
            .iter()
            .enumerate()
            .filter(|(_, f)| !is_metadata_part(&f.map.name))
            .map(|(i, f)| (i, 0..f.map.blocks.len()))
            .collect();
        self.load(blocks, false).await
    }

    async fn load(
        &self,
        blocks: Vec<(usize, Range<usize>)>,
        publishing: bool,
    ) -> Result<LoadSummary, LoadError> {
        let inner = &self.inner;
        let package = inner.remote.package();
        let scs_pin = publishing && inner.memory.is_some();
        let mut summary = LoadSummary::default();
        let mut runs = Vec::new();
        for (file, range) in blocks {
            let map = &package.files()[file].map;
            let mut missing = Vec::new();
            for k in range {
                let h = map.blocks[k].hash;
                summary.blocks += 1;
                summary.bytes += map.block_len(k) as u64;
                let have = if scs_pin {
                    let mut pinned = lock(&inner.pinned);
                    pinned.contains(&h) || (inner.disk.pin(&h) && pinned.insert(h))
                } else if publishing {
                    inner.disk.contains(&h)
                } else {
                    self.contains(&h)
                };
                if !have {
                    missing.push(k);
                }
            }
            let mut i = 0;
            while i < missing.len() {
                let start = missing[i];
                let mut end = start + 1;
                while i + 1 < missing.len() && missing[i + 1] == end && end - start < MAX_COALESCE {
                    end += 1;
                    i += 1;
                }
                i += 1;
                runs.push((file, start..end));
            }
        }
        // The runs, LOAD_CONCURRENCY at a time: one request's round trip and
        // its blocks' writes overlap the next ones'.
        let mut runs = runs.into_iter();
        let mut set = tokio::task::JoinSet::new();
        loop {
            while set.len() < LOAD_CONCURRENCY {
                let Some((file, range)) = runs.next() else {
                    break;
                };
                let reader = self.clone();
                set.spawn(async move { reader.load_run(file, range, publishing).await });
            }
            match set.join_next().await {
                None => break,
                Some(Ok(fetched)) => summary.fetched_blocks += fetched?,
                Some(Err(e)) => {
                    return Err(LoadError::Fetch(FetchError::Unavailable {
                        path: self.inner.remote.package().source().path().to_owned(),
                        what: "a load".into(),
                        last: e.to_string(),
                    }));
                }
            }
        }
        Ok(summary)
    }

    /// Fetches one run of blocks of `file` and stores them; how many.
    async fn load_run(
        &self,
        file: usize,
        range: Range<usize>,
        publishing: bool,
    ) -> Result<u64, LoadError> {
        let map = &self.inner.remote.package().files()[file].map;
        let fetched = self.inner.remote.blocks(file, range.clone()).await?;
        let mut count = 0;
        for (k, block) in range.zip(fetched) {
            let h = map.blocks[k].hash;
            count += 1;
            let block = Bytes::from(block);
            if publishing {
                // The publishing feature block must be kept: an error here is an error.
                self.try_store(&h, block)?;
            } else {
                self.store(&h, block);
            }
        }
        Ok(count)
    }

    /// Bytes of the package's payload blocks present in the disk cache, over
    /// its total (see the module doc).
    pub fn cached(&self) -> CachedSize {
        let mut size = CachedSize::default();
        for f in self.inner.remote.package().files() {
            if is_metadata_part(&f.map.name) {
                continue;
            }
            for (k, b) in f.map.blocks.iter().enumerate() {
                let len = f.map.block_len(k) as u64;
                size.total_bytes += len;
                if self.inner.disk.contains(&b.hash) {
                    size.cached_bytes += len;
                }
            }
        }
        size
    }

    /// Take back the pins this reader holds (when its package is removed).
    /// Idempotent; also done when the last clone is dropped.
    pub fn release(&self) {
        self.inner.release();
    }
}

impl Inner {
    fn release(&self) {
        let pinned: Vec<_> = lock(&self.pinned).drain().collect();
        for h in pinned {
            self.disk.unpin(&h);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.release();
    }
}

/// The blocks of the publishing feature block: (file, block range) pairs.
fn publishing_blocks(remote: &RemotePackage) -> Result<Vec<(usize, Range<usize>)>, LoadError> {
    feature_blocks(remote, |map| &map.publishing)
}

/// The blocks of a feature block of the stream map, per file.
fn feature_blocks(
    remote: &RemotePackage,
    which: impl Fn(&StreamMap) -> &Vec<FeatureFile>,
) -> Result<Vec<(usize, Range<usize>)>, LoadError> {
    let package = remote.package();
    let Some(map) = package.stream_map() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ff in which(map) {
        let file = package
            .file_index(&ff.name)
            .or_else(|| {
                package
                    .files()
                    .iter()
                    .position(|f| names::same_part(&f.map.name, &ff.name))
            })
            .ok_or_else(|| LoadError::UnknownFile(ff.name.clone()))?;
        let n = package.files()[file].map.blocks.len();
        if ff.runs.is_empty() {
            out.push((file, 0..n));
        }
        for &(index, count) in &ff.runs {
            let start = usize::try_from(index).unwrap_or(usize::MAX).min(n);
            let end = start.saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
            out.push((file, start..end.min(n)));
        }
    }
    Ok(out)
}
