//! The client's block cache: verified 64 KiB package blocks kept by their
//! SHA-256, so that every package and every version shares one copy of a
//! block, and upgrading to a new version fetches only the blocks whose hash
//! is not cached yet.
//!
//! Two stores implement one small interface, [`BlockStore`]:
//!
//! * [`DiskCache`] — the normal mode: blocks on disk under a directory with a
//!   hard byte quota and least-recently-used eviction.
//! * [`MemoryCache`] — Shared Content Store mode: a bounded in-memory LRU for
//!   payload blocks (in that mode only the publishing feature block goes to a
//!   [`DiskCache`], pinned; the caller decides which store a block goes to).
//!
//! Callers hand in blocks they have already verified against the block map
//! (at most [`BLOCK_SIZE`] bytes, uncompressed). Neither store re-hashes on
//! insert; the disk cache re-hashes every block it reads back from disk
//! (below), but not one it still holds in memory:
//!
//! # Recent blocks in memory
//!
//! [`DiskCache::set_memory`] (off by default) keeps the most recently
//! inserted blocks in memory as well, up to a byte bound, oldest dropped
//! first: a streaming read stores blocks a moment before it reads them, and
//! [`BlockStore::get`] serves those from memory, without reading the file or
//! hashing the bytes again — they were verified by the caller and never left
//! memory. Only a block the index still holds is served so (a block is named
//! by its hash, so the bytes kept are the block's whatever happened to its
//! file); anything read from disk is verified as below. The memory is lost
//! with the process, so a restart serves only what was complete on disk.
//!
//! # On-disk format
//!
//! ```text
//! DIR/blocks/ab/ab12…ef    one file per block, named by its SHA-256 in 64 lowercase
//!                          hex digits, fanned out by the first two digits (256 dirs)
//! DIR/tmp/…                temporary files being written; anything here at open is
//!                          a crash leftover and is deleted
//! ```
//!
//! `blocks/` carries the "top directory" flag (`chattr +T`) where the file
//! system has it (ext4), so that the fan-out directories, and with them the
//! block files' inodes, are spread over the disk (see `spread_subdirectories`).
//!
//! A block file is an 8-byte header — the magic `AVB1` and the block's length
//! as a little-endian `u32` — followed by the block's bytes. The header makes
//! a truncated file recognisable at open without hashing the whole cache.
//!
//! # Quota
//!
//! The quota counts the length of every block file, header included (block
//! length + 8), plus the length of every temporary file being written: an
//! insert *reserves* its bytes before it writes anything, evicting
//! least-recently-used unpinned blocks (and deleting their files) first, so
//! the bytes of files under `DIR` never exceed the quota, not even between an
//! eviction and the insert that caused it. Not counted: file system
//! allocation rounding, inodes and the 257 directories — size the quota with
//! that margin (a few percent with 4 KiB file system blocks and mostly full
//! 64 KiB blocks). A block that cannot fit because everything else is pinned
//! (or is being written) is refused with [`CacheError::Full`]; the quota is
//! never broken. If the cache already holds more than a lowered quota at
//! open, the oldest blocks are evicted then.
//!
//! # Crash rules
//!
//! * A block is written to a temporary file beside its final name
//!   (`.<hash>.<pid>.<n>.tmp`, so that the rename stays within one
//!   directory), `fsync`ed (unless turned off with
//!   [`DiskCache::set_fsync`]) and renamed to its final name, so a name
//!   never points at a torn write on file systems that order the rename
//!   after the data. The directory is not `fsync`ed: a rename lost in a crash
//!   only loses that block.
//! * Every read re-checks the header and the SHA-256 of the bytes against
//!   the file name; a mismatch deletes the file and the read returns `None`
//!   (the caller fetches the block again). So even a file system that
//!   reorders data and rename never makes the cache serve a torn block.
//! * [`DiskCache::open`] rescans the directory: it deletes everything in
//!   `tmp/` (where older versions wrote), every file in `blocks/` whose name
//!   is not a hash (temporary files included), and every
//!   block file whose size disagrees with its header (a truncated write);
//!   every complete block is kept and counted.
//! * Recency survives a restart only approximately: at open, blocks are
//!   ordered by file modification time. A block's mtime is its insert time,
//!   and a read moves it to "now" when it is more than [`MTIME_REFRESH`] old
//!   (one `futimens` on the already open file, at most once per block per
//!   period, rather than a metadata write per read). `atime` is not used:
//!   `relatime`/`noatime` mounts make it meaningless.
//! * Pins live in memory only: after a restart the daemon pins the
//!   publishing feature blocks of its packages again.
//!
//! One process owns a cache directory (the client daemon); two processes
//! sharing one would each keep their own quota accounting.
//!
//! # Concurrency
//!
//! Both stores are `Send + Sync` and meant to be shared behind an `Arc` by
//! the FUSE worker threads and the streaming engine. One mutex guards the
//! index; reading, hashing, writing and `fsync`ing happen outside it. The
//! lock is held only across metadata operations that must be atomic with the
//! index: the rename that publishes a block and the unlink of an evicted or
//! corrupt block.
//!
//! # Why a hand-written index
//!
//! The LRU order is a `BTreeMap` from a monotonically increasing tick to the
//! hash, beside a `HashMap` from hash to entry (size, tick, pin count). That
//! is about a hundred lines, needs no `unsafe` and no new dependency, and makes
//! the two things a generic LRU crate (`lru`) does not offer straightforward:
//! eviction by bytes rather than by entry count, and pinned entries that are
//! simply kept out of the eviction order. Every operation is `O(log n)`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use avail_format::BLOCK_SIZE;

/// A block's SHA-256, the key of both stores.
pub type BlockHash = [u8; 32];

/// Bytes in front of every block file: `AVB1` and the block length (`u32` LE).
pub const HEADER_LEN: usize = 8;

const MAGIC: &[u8; 4] = b"AVB1";

/// What the client daemon gives [`DiskCache::set_memory`]: more than what
/// read-ahead across files fetches ahead
/// ([`CROSS_TOTAL_MAX`](crate::blocks::CROSS_TOTAL_MAX)).
pub const RECENT_MEMORY: u64 = 64 << 20;

/// How old a block file's mtime must be before a read refreshes it (the
/// recency that survives a restart has this granularity).
pub const MTIME_REFRESH: Duration = Duration::from_secs(600);

/// What a store refuses, or what went wrong underneath it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The block is larger than the format's block size.
    #[error("a block of {len} bytes is larger than the {BLOCK_SIZE}-byte block size")]
    TooLarge {
        /// The refused block's length.
        len: usize,
    },
    /// The block does not fit even after evicting every unpinned block.
    #[error(
        "no room for {needed} bytes in a {capacity}-byte cache \
         ({pinned} bytes pinned, {in_flight} bytes being written)"
    )]
    Full {
        /// Bytes the block would take (with its header, on disk).
        needed: u64,
        /// The store's bound.
        capacity: u64,
        /// Bytes held by pinned blocks.
        pinned: u64,
        /// Bytes reserved by inserts still writing.
        in_flight: u64,
    },
    /// A file operation failed.
    #[error("block cache I/O on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The interface both stores share.
pub trait BlockStore: Send + Sync {
    /// The block with this hash, if stored (and, on disk, intact); makes it
    /// the most recently used.
    fn get(&self, hash: &BlockHash) -> Option<Bytes>;

    /// Stores a verified block, evicting least-recently-used unpinned blocks
    /// first if it would not fit. Storing a block already there only makes it
    /// the most recently used. Refuses with [`CacheError::Full`] rather than
    /// exceed the bound.
    fn insert(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError>;

    /// [`insert`](Self::insert), and pin the block in the same step (so that
    /// no concurrent insert can evict it in between).
    fn insert_pinned(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError>;

    /// Whether the block is stored, without touching its recency (on disk:
    /// per the index; the bytes are checked when read).
    fn contains(&self, hash: &BlockHash) -> bool;

    /// Pins a stored block so it is never evicted; pins nest (one
    /// [`unpin`](Self::unpin) per pin). Returns `false` if it is not stored.
    fn pin(&self, hash: &BlockHash) -> bool;

    /// Takes back one pin. Returns `false` if the block is not stored or
    /// was not pinned.
    fn unpin(&self, hash: &BlockHash) -> bool;

    /// Bytes counted against the bound (see the module doc), including
    /// inserts still being written.
    fn used_bytes(&self) -> u64;

    /// The bound in bytes.
    fn capacity_bytes(&self) -> u64;

    /// Number of stored blocks.
    fn block_count(&self) -> usize;
}

// ---------------------------------------------------------------------------
// The LRU index shared by both stores.

#[derive(Debug)]
struct Entry<V> {
    size: u64,
    tick: u64,
    pins: u32,
    /// Distinguishes this entry from a later one for the same hash.
    generation: u64,
    value: V,
}

#[derive(Debug)]
struct Index<V> {
    map: HashMap<BlockHash, Entry<V>>,
    /// Unpinned entries only, oldest first.
    lru: BTreeMap<u64, BlockHash>,
    next_tick: u64,
    /// Bytes of stored entries.
    used: u64,
    /// Bytes of pinned entries (part of `used`).
    pinned: u64,
    /// Bytes reserved by inserts still writing (not part of `used`).
    reserved: u64,
    capacity: u64,
}

impl<V> Index<V> {
    fn new(capacity: u64) -> Self {
        Index {
            map: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            used: 0,
            pinned: 0,
            reserved: 0,
            capacity,
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// Makes the entry the most recently used; returns it.
    fn touch(&mut self, hash: &BlockHash) -> Option<&Entry<V>> {
        let tick = self.tick();
        let entry = self.map.get_mut(hash)?;
        if entry.pins == 0 {
            self.lru.remove(&entry.tick);
            self.lru.insert(tick, *hash);
        }
        entry.tick = tick;
        Some(entry)
    }

    /// Adds an entry the caller made room for; returns its generation.
    fn add(&mut self, hash: BlockHash, size: u64, value: V, pinned: bool) -> u64 {
        debug_assert!(!self.map.contains_key(&hash));
        let tick = self.tick();
        self.used += size;
        if pinned {
            self.pinned += size;
        } else {
            self.lru.insert(tick, hash);
        }
        self.map.insert(
            hash,
            Entry {
                size,
                tick,
                pins: u32::from(pinned),
                generation: tick,
                value,
            },
        );
        tick
    }

    fn remove(&mut self, hash: &BlockHash) -> Option<Entry<V>> {
        let entry = self.map.remove(hash)?;
        self.used -= entry.size;
        if entry.pins > 0 {
            self.pinned -= entry.size;
        } else {
            self.lru.remove(&entry.tick);
        }
        Some(entry)
    }

    fn pin(&mut self, hash: &BlockHash) -> bool {
        let Some(entry) = self.map.get_mut(hash) else {
            return false;
        };
        if entry.pins == 0 {
            self.lru.remove(&entry.tick);
            self.pinned += entry.size;
        }
        entry.pins = entry.pins.saturating_add(1);
        true
    }

    fn unpin(&mut self, hash: &BlockHash) -> bool {
        let Some(entry) = self.map.get_mut(hash) else {
            return false;
        };
        if entry.pins == 0 {
            return false;
        }
        entry.pins -= 1;
        if entry.pins == 0 {
            self.pinned -= entry.size;
            self.lru.insert(entry.tick, *hash);
        }
        true
    }

    /// Evicts least-recently-used unpinned entries until `size` more bytes
    /// fit beside what is stored and reserved; evicts nothing if they cannot.
    fn evict_for(&mut self, size: u64) -> Result<Vec<(BlockHash, Entry<V>)>, CacheError> {
        if self.pinned + self.reserved + size > self.capacity {
            return Err(CacheError::Full {
                needed: size,
                capacity: self.capacity,
                pinned: self.pinned,
                in_flight: self.reserved,
            });
        }
        let mut evicted = Vec::new();
        while self.used + self.reserved + size > self.capacity {
            let Some((_, hash)) = self.lru.pop_first() else {
                unreachable!("unpinned bytes cover the shortfall");
            };
            let entry = self.map.remove(&hash).expect("lru entries are indexed");
            self.used -= entry.size;
            evicted.push((hash, entry));
        }
        Ok(evicted)
    }

    /// Puts back an entry `evict_for` took out (its file could not be
    /// deleted), where it was in the order (its tick is still unused).
    fn restore(&mut self, hash: BlockHash, entry: Entry<V>) {
        self.used += entry.size;
        self.lru.insert(entry.tick, hash);
        self.map.insert(hash, entry);
    }
}

fn check_len(len: usize) -> Result<(), CacheError> {
    if len > BLOCK_SIZE {
        Err(CacheError::TooLarge { len })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The disk cache.

/// Blocks on disk under a hard quota (see the module doc).
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    index: Mutex<Index<()>>,
    recent: Mutex<Recent>,
    fsync: AtomicBool,
    temp_counter: AtomicU64,
}

/// Why a read of a block file gave nothing.
enum ReadFailure {
    Missing,
    Corrupt(&'static str),
    Io(io::Error),
}

impl DiskCache {
    /// Opens (creating if needed) the cache under `dir` with a quota of
    /// `quota_bytes`, cleaning up after a crash and evicting the oldest
    /// blocks if more than the quota is stored.
    pub fn open(dir: impl AsRef<Path>, quota_bytes: u64) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_owned();
        let tmp = dir.join("tmp");
        let blocks = dir.join("blocks");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            remove_leftover(&path)?;
        }
        fs::create_dir_all(&blocks).map_err(io_err(&blocks))?;
        spread_subdirectories(&blocks);
        let mut found = Vec::new();
        for fan in 0..=255u8 {
            let sub = blocks.join(hex::encode([fan]));
            fs::create_dir_all(&sub).map_err(io_err(&sub))?;
            for entry in fs::read_dir(&sub).map_err(io_err(&sub))? {
                let entry = entry.map_err(io_err(&sub))?;
                let path = entry.path();
                match scan_block(&entry, fan) {
                    Ok(Some(block)) => found.push(block),
                    Ok(None) => {
                        let temporary = entry.file_name().to_string_lossy().ends_with(".tmp");
                        if !temporary {
                            tracing::warn!(path = %path.display(), "dropping an incomplete or stray file from the block cache");
                        }
                        remove_leftover(&path)?;
                    }
                    Err(source) if source.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(CacheError::Io { path, source }),
                }
            }
        }
        // Oldest first, so the first added is the first evicted.
        found.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut index = Index::new(quota_bytes);
        for (_, hash, size) in found {
            index.add(hash, size, (), false);
        }
        let cache = DiskCache {
            dir,
            index: Mutex::new(index),
            recent: Mutex::new(Recent::default()),
            fsync: AtomicBool::new(true),
            temp_counter: AtomicU64::new(0),
        };
        {
            let mut index = cache.lock();
            while index.used > index.capacity {
                let (_, hash) = index.lru.pop_first().expect("nothing is pinned at open");
                let entry = index.map.remove(&hash).expect("lru entries are indexed");
                index.used -= entry.size;
                let path = cache.block_path(&hash);
                remove_leftover(&path)?;
            }
        }
        Ok(cache)
    }

    /// Deletes the unpinned block `hash` (a removed package's), freeing its
    /// bytes; a pinned or absent block is left alone. Whether it was deleted.
    pub fn forget(&self, hash: &BlockHash) -> bool {
        let mut index = self.lock();
        if index.map.get(hash).is_none_or(|e| e.pins > 0) {
            return false;
        }
        // Under the lock, so that no insert of the same hash comes between.
        let path = self.block_path(hash);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a block");
                return false;
            }
        }
        index.remove(hash);
        drop(index);
        self.recent().remove(hash);
        true
    }

    /// The directory the cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether block files are `fsync`ed before the rename that publishes
    /// them (on by default). Turning it off trades durability of recent
    /// blocks for insert speed; a torn block is still never served.
    pub fn set_fsync(&self, on: bool) {
        self.fsync.store(on, Ordering::Relaxed);
    }

    /// Keep up to `bytes` of the most recently inserted blocks in memory too,
    /// served without reading or hashing them again (see the module doc); 0,
    /// the default, turns it off. Lowering it drops the oldest at once.
    pub fn set_memory(&self, bytes: u64) {
        let mut recent = self.recent();
        recent.capacity = bytes;
        recent.shrink();
    }

    /// Bytes of blocks held in memory by [`DiskCache::set_memory`].
    pub fn memory_bytes(&self) -> u64 {
        self.recent().bytes
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file a block lives in.
    pub fn block_path(&self, hash: &BlockHash) -> PathBuf {
        let name = hex::encode(hash);
        self.dir.join("blocks").join(&name[..2]).join(name)
    }

    fn lock(&self) -> MutexGuard<'_, Index<()>> {
        // A panic while holding the lock leaves the index consistent (every
        // mutation is completed before anything can panic), so carry on.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert_impl(&self, hash: &BlockHash, block: &Bytes, pin: bool) -> Result<(), CacheError> {
        check_len(block.len())?;
        let size = (HEADER_LEN + block.len()) as u64;
        // 1. Reserve the bytes, evicting (and deleting) first if needed.
        {
            let mut index = self.lock();
            if index.touch(hash).is_some() {
                if pin {
                    index.pin(hash);
                }
                return Ok(());
            }
            let evicted = index.evict_for(size)?;
            let mut failure = None;
            for (victim, entry) in evicted {
                if failure.is_some() {
                    index.restore(victim, entry);
                    continue;
                }
                let path = self.block_path(&victim);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        index.restore(victim, entry);
                        failure = Some(CacheError::Io { path, source });
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            index.reserved += size;
        }
        // 2. Write the temporary file without the lock.
        // Beside its final name: a rename within one directory (a rename
        // across directories locks both, which serialised writers).
        let final_path = self.block_path(hash);
        let tmp = final_path.with_file_name(format!(
            ".{}.{}.{}.tmp",
            hex::encode(hash),
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = self.write_temp(&tmp, block) {
            let _ = fs::remove_file(&tmp);
            self.lock().reserved -= size;
            return Err(e);
        }
        // 3. Publish it: rename and index under the lock, so an eviction of
        //    the same hash cannot come between them.
        let mut index = self.lock();
        if index.touch(hash).is_some() {
            // Another thread stored it meanwhile.
            if pin {
                index.pin(hash);
            }
            drop(index);
            let _ = fs::remove_file(&tmp);
            self.lock().reserved -= size;
            return Ok(());
        }
        if let Err(source) = fs::rename(&tmp, &final_path) {
            drop(index);
            let _ = fs::remove_file(&tmp);
            self.lock().reserved -= size;
            return Err(CacheError::Io {
                path: final_path,
                source,
            });
        }
        index.reserved -= size;
        index.add(*hash, size, (), pin);
        drop(index);
        self.recent().put(hash, block);
        Ok(())
    }

    fn write_temp(&self, tmp: &Path, block: &[u8]) -> Result<(), CacheError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(io_err(tmp))?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..].copy_from_slice(&(block.len() as u32).to_le_bytes());
        file.write_all(&header).map_err(io_err(tmp))?;
        file.write_all(block).map_err(io_err(tmp))?;
        if self.fsync.load(Ordering::Relaxed) {
            file.sync_data().map_err(io_err(tmp))?;
        }
        Ok(())
    }

    fn read_verified(path: &Path, hash: &BlockHash) -> Result<Bytes, ReadFailure> {
        let mut file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadFailure::Missing,
            _ => ReadFailure::Io(e),
        })?;
        let meta = file.metadata().map_err(ReadFailure::Io)?;
        if meta.len() > (HEADER_LEN + BLOCK_SIZE) as u64 {
            return Err(ReadFailure::Corrupt("longer than a block"));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut buf).map_err(ReadFailure::Io)?;
        if buf.len() < HEADER_LEN || &buf[..4] != MAGIC {
            return Err(ReadFailure::Corrupt("bad header"));
        }
        let len = u32::from_le_bytes(buf[4..HEADER_LEN].try_into().expect("4 bytes")) as usize;
        if buf.len() != HEADER_LEN + len {
            return Err(ReadFailure::Corrupt("length disagrees with header"));
        }
        if Sha256::digest(&buf[HEADER_LEN..]).as_slice() != hash {
            return Err(ReadFailure::Corrupt("SHA-256 mismatch"));
        }
        // Best effort: keep the mtime a coarse "last used" for the next open.
        if let Ok(modified) = meta.modified() {
            let now = SystemTime::now();
            if now.duration_since(modified).unwrap_or_default() > MTIME_REFRESH {
                let _ = file.set_modified(now);
            }
        }
        Ok(Bytes::from(buf).slice(HEADER_LEN..))
    }
}

/// Recently inserted blocks, oldest first, within a byte bound.
#[derive(Debug, Default)]
struct Recent {
    map: HashMap<BlockHash, Bytes>,
    order: VecDeque<BlockHash>,
    bytes: u64,
    capacity: u64,
}

impl Recent {
    fn put(&mut self, hash: &BlockHash, block: &Bytes) {
        if (block.len() as u64) > self.capacity || self.map.contains_key(hash) {
            return;
        }
        self.map.insert(*hash, block.clone());
        self.order.push_back(*hash);
        self.bytes += block.len() as u64;
        self.shrink();
    }

    fn remove(&mut self, hash: &BlockHash) {
        if let Some(b) = self.map.remove(hash) {
            self.bytes -= b.len() as u64;
            self.order.retain(|h| h != hash);
        }
    }

    fn shrink(&mut self) {
        while self.bytes > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.bytes -= b.len() as u64;
            }
        }
    }
}

/// Checks one file found under `blocks/NN/` at open: `Some((mtime, hash,
/// size))` for a complete block, `None` for something to delete.
fn scan_block(entry: &fs::DirEntry, fan: u8) -> io::Result<Option<(SystemTime, BlockHash, u64)>> {
    let file_type = entry.file_type()?;
    if !file_type.is_file() {
        return Ok(None);
    }
    let name = entry.file_name();
    let Some(hash) = name.to_str().and_then(parse_hash) else {
        return Ok(None);
    };
    if hash[0] != fan {
        return Ok(None);
    }
    let mut file = File::open(entry.path())?;
    let meta = file.metadata()?;
    let size = meta.len();
    if size < HEADER_LEN as u64 || size > (HEADER_LEN + BLOCK_SIZE) as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)?;
    let len = u64::from(u32::from_le_bytes(header[4..].try_into().expect("4 bytes")));
    if &header[..4] != MAGIC || HEADER_LEN as u64 + len != size {
        return Ok(None);
    }
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Some((mtime, hash, size)))
}

/// Marks `dir` as the top of a directory hierarchy (`chattr +T`, ext4's
/// `FS_TOPDIR_FL`), best effort: ext4 then spreads the fan-out directories
/// created in it over its block groups (Orlov) instead of packing them into
/// one, and a block file's inode goes to its directory's group. With every
/// block file in one group, each new inode was found by stepping over that
/// group's recently deleted inodes (which ext4 does not reuse for a while):
/// after a cache of a few thousand blocks was deleted (a removed package, an
/// emptied cache), creating as many again cost seconds of system time.
/// Other file systems refuse or ignore the flag; nothing else depends on it.
#[allow(unsafe_code)]
fn spread_subdirectories(dir: &Path) {
    use nix::libc::{FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, c_int, ioctl};
    use std::os::fd::AsRawFd;
    const FS_TOPDIR_FL: c_int = 0x0002_0000;
    let Ok(file) = File::open(dir) else {
        return;
    };
    let fd = file.as_raw_fd();
    let mut flags: c_int = 0;
    // SAFETY: `fd` is an open descriptor for the whole block; both ioctls
    // read or write one `int` (what the kernel uses for these flags) through
    // a pointer to a live local.
    unsafe {
        if ioctl(fd, FS_IOC_GETFLAGS, &mut flags as *mut c_int) != 0 || flags & FS_TOPDIR_FL != 0 {
            return;
        }
        flags |= FS_TOPDIR_FL;
        let _ = ioctl(fd, FS_IOC_SETFLAGS, &flags as *const c_int);
    }
}

/// A hash from its 64 lowercase hex digits.
fn parse_hash(name: &str) -> Option<BlockHash> {
    if name.len() != 64 || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(name, &mut hash).ok()?;
    Some(hash)
}

fn remove_leftover(path: &Path) -> Result<(), CacheError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl BlockStore for DiskCache {
    fn get(&self, hash: &BlockHash) -> Option<Bytes> {
        let generation = self.lock().touch(hash)?.generation;
        if let Some(block) = self.recent().map.get(hash) {
            return Some(block.clone());
        }
        let path = self.block_path(hash);
        let failure = match Self::read_verified(&path, hash) {
            Ok(bytes) => return Some(bytes),
            Err(failure) => failure,
        };
        let mut index = self.lock();
        let current = index.map.get(hash).map(|e| e.generation) == Some(generation);
        match failure {
            ReadFailure::Missing => {
                if current {
                    index.remove(hash);
                }
            }
            ReadFailure::Corrupt(why) => {
                tracing::warn!(path = %path.display(), why, "dropping a corrupt block from the cache");
                if current {
                    index.remove(hash);
                    if let Err(e) = fs::remove_file(&path)
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        tracing::warn!(path = %path.display(), error = %e, "cannot delete a corrupt block");
                    }
                }
            }
            ReadFailure::Io(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a cached block");
            }
        }
        None
    }

    fn insert(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError> {
        self.insert_impl(hash, &block, false)
    }

    fn insert_pinned(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError> {
        self.insert_impl(hash, &block, true)
    }

    fn contains(&self, hash: &BlockHash) -> bool {
        self.lock().map.contains_key(hash)
    }

    fn pin(&self, hash: &BlockHash) -> bool {
        self.lock().pin(hash)
    }

    fn unpin(&self, hash: &BlockHash) -> bool {
        self.lock().unpin(hash)
    }

    fn used_bytes(&self) -> u64 {
        let index = self.lock();
        index.used + index.reserved
    }

    fn capacity_bytes(&self) -> u64 {
        self.lock().capacity
    }

    fn block_count(&self) -> usize {
        self.lock().map.len()
    }
}

// ---------------------------------------------------------------------------
// The memory cache.

/// A bounded in-memory LRU of blocks for Shared Content Store mode. The
/// bound counts block bytes only (not the map's per-entry overhead, about a
/// hundred bytes per block, under 0.2 % for full blocks).
#[derive(Debug)]
pub struct MemoryCache {
    index: Mutex<Index<Bytes>>,
}

impl MemoryCache {
    /// An empty cache holding at most `bound_bytes` of blocks.
    pub fn new(bound_bytes: u64) -> Self {
        MemoryCache {
            index: Mutex::new(Index::new(bound_bytes)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index<Bytes>> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert_impl(&self, hash: &BlockHash, block: Bytes, pin: bool) -> Result<(), CacheError> {
        check_len(block.len())?;
        let mut index = self.lock();
        if index.touch(hash).is_some() {
            if pin {
                index.pin(hash);
            }
            return Ok(());
        }
        let evicted = index.evict_for(block.len() as u64)?;
        index.add(*hash, block.len() as u64, block, pin);
        drop(index);
        drop(evicted);
        Ok(())
    }
}

impl BlockStore for MemoryCache {
    fn get(&self, hash: &BlockHash) -> Option<Bytes> {
        self.lock().touch(hash).map(|e| e.value.clone())
    }

    fn insert(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError> {
        self.insert_impl(hash, block, false)
    }

    fn insert_pinned(&self, hash: &BlockHash, block: Bytes) -> Result<(), CacheError> {
        self.insert_impl(hash, block, true)
    }

    fn contains(&self, hash: &BlockHash) -> bool {
        self.lock().map.contains_key(hash)
    }

    fn pin(&self, hash: &BlockHash) -> bool {
        self.lock().pin(hash)
    }

    fn unpin(&self, hash: &BlockHash) -> bool {
        self.lock().unpin(hash)
    }

    fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    fn capacity_bytes(&self) -> u64 {
        self.lock().capacity
    }

    fn block_count(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A block of `len` bytes derived from `seed`, with its hash.
    fn block(seed: u64, len: usize) -> (BlockHash, Bytes) {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        (Sha256::digest(&data).into(), Bytes::from(data))
    }

    /// Bytes of every file under the cache directory.
    fn bytes_on_disk(dir: &Path) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        }
        walk(dir)
    }

    fn files_in(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    const LEN: usize = 4096;
    const CHARGE: u64 = (HEADER_LEN + LEN) as u64;

    #[test]
    fn cache_quota_holds_under_three_times_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let quota = 10 * CHARGE + 100;
        let cache = DiskCache::open(tmp.path(), quota).unwrap();
        for i in 0..30 {
            let (hash, data) = block(i, LEN);
            cache.insert(&hash, data).unwrap();
            assert!(cache.used_bytes() <= quota);
            assert!(bytes_on_disk(tmp.path()) <= quota);
        }
        assert_eq!(cache.block_count(), 10);
        assert_eq!(cache.used_bytes(), 10 * CHARGE);
        assert_eq!(bytes_on_disk(tmp.path()), cache.used_bytes());
        // The last ten are the ones kept, and they read back intact.
        for i in 20..30 {
            let (hash, data) = block(i, LEN);
            assert_eq!(cache.get(&hash), Some(data));
        }
        assert!(!cache.contains(&block(0, LEN).0));
    }

    #[test]
    fn cache_forgets_unpinned_blocks_only() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        let (a, a_data) = block(1, LEN);
        let (b, b_data) = block(2, LEN);
        cache.insert(&a, a_data).unwrap();
        cache.insert_pinned(&b, b_data.clone()).unwrap();
        assert!(cache.forget(&a));
        assert!(!cache.contains(&a) && !cache.block_path(&a).exists());
        assert!(!cache.forget(&a), "already gone");
        assert!(!cache.forget(&b), "pinned");
        assert_eq!(cache.get(&b), Some(b_data));
        assert_eq!(cache.used_bytes(), CHARGE);
        assert_eq!(bytes_on_disk(tmp.path()), CHARGE);
    }

    #[test]
    fn cache_lru_keeps_recently_read_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(tmp.path(), 4 * CHARGE).unwrap();
        let blocks: Vec<_> = (0..6).map(|i| block(i, LEN)).collect();
        for (hash, data) in &blocks[..4] {
            cache.insert(hash, data.clone()).unwrap();
        }
        // Read 0 and 1: 2 and 3 become the least recently used.
        assert!(cache.get(&blocks[0].0).is_some());
        assert!(cache.get(&blocks[1].0).is_some());
        // Re-inserting a stored block only refreshes it.
        cache.insert(&blocks[2].0, blocks[2].1.clone()).unwrap();
        cache.insert(&blocks[4].0, blocks[4].1.clone()).unwrap();
        assert!(!cache.contains(&blocks[3].0));
        cache.insert(&blocks[5].0, blocks[5].1.clone()).unwrap();
        assert!(!cache.contains(&blocks[0].0));
        for i in [1, 2, 4, 5] {
            assert_eq!(
                cache.get(&blocks[i].0),
                Some(blocks[i].1.clone()),
                "block {i}"
            );
        }
    }

    #[test]
    fn cache_pinned_blocks_survive_and_full_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let quota = 3 * CHARGE;
        let cache = DiskCache::open(tmp.path(), quota).unwrap();
        let (feature, feature_data) = block(1000, LEN);
        cache.insert_pinned(&feature, feature_data.clone()).unwrap();
        for i in 0..20 {
            let (hash, data) = block(i, LEN);
            cache.insert(&hash, data).unwrap();
        }
        assert_eq!(cache.get(&feature), Some(feature_data));
        // Pin everything: the next insert cannot fit and is refused.
        let (a, a_data) = block(18, LEN);
        let (b, _) = block(19, LEN);
        assert!(cache.pin(&a) && cache.pin(&b));
        let (c, c_data) = block(500, LEN);
        let err = cache.insert(&c, c_data.clone()).unwrap_err();
        assert!(matches!(err, CacheError::Full { .. }), "{err}");
        assert_eq!(cache.used_bytes(), quota);
        assert_eq!(bytes_on_disk(tmp.path()), quota);
        assert_eq!(cache.block_count(), 3);
        // Pins nest; once a block has no pin left it is evictable again.
        assert!(cache.pin(&a));
        assert!(cache.unpin(&a));
        assert!(cache.insert(&c, c_data.clone()).is_err());
        assert!(cache.unpin(&a));
        assert!(!cache.unpin(&a));
        cache.insert(&c, c_data).unwrap();
        assert!(!cache.contains(&a));
        assert!(cache.contains(&feature) && cache.contains(&b));
        drop(a_data);
        // A block larger than the cache, or than a block, is refused.
        let small = DiskCache::open(tmp.path().join("small"), 100).unwrap();
        assert!(matches!(
            small.insert(&c, block(500, LEN).1),
            Err(CacheError::Full { .. })
        ));
        let (big, big_data) = block(7, BLOCK_SIZE + 1);
        assert!(matches!(
            cache.insert(&big, big_data),
            Err(CacheError::TooLarge { .. })
        ));
    }

    #[test]
    fn cache_corrupted_block_is_never_returned_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        let (hash, data) = block(1, LEN);
        cache.insert(&hash, data.clone()).unwrap();
        let path = cache.block_path(&hash);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 100] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.get(&hash), None);
        assert!(!path.exists());
        assert!(!cache.contains(&hash));
        assert_eq!(cache.used_bytes(), 0);
        // It can be stored again, and then reads back.
        cache.insert(&hash, data.clone()).unwrap();
        assert_eq!(cache.get(&hash), Some(data));
        // A file deleted behind the cache's back is forgotten too.
        fs::remove_file(&path).unwrap();
        assert_eq!(cache.get(&hash), None);
        assert_eq!(cache.block_count(), 0);
        assert_eq!(cache.used_bytes(), 0);
    }

    #[test]
    fn cache_recent_blocks_are_served_from_memory_and_reads_from_disk_are_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, a_data) = block(1, LEN);
        let (b, b_data) = block(2, LEN);
        let (c, c_data) = block(3, LEN);
        let tear = |cache: &DiskCache, hash: &BlockHash| {
            let path = cache.block_path(hash);
            let mut bytes = fs::read(&path).unwrap();
            bytes[HEADER_LEN + 7] ^= 0x55;
            fs::write(&path, &bytes).unwrap();
        };
        {
            let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
            // Room in memory for two blocks: the last two stored.
            cache.set_memory(2 * LEN as u64);
            for (hash, data) in [(&a, &a_data), (&b, &b_data), (&c, &c_data)] {
                cache.insert(hash, data.clone()).unwrap();
            }
            assert_eq!(cache.memory_bytes(), 2 * LEN as u64);
            // Files torn behind the cache's back: b and c come from memory
            // (the bytes that were verified), a from disk is caught.
            for hash in [&a, &b, &c] {
                tear(&cache, hash);
            }
            assert_eq!(cache.get(&b), Some(b_data.clone()));
            assert_eq!(cache.get(&c), Some(c_data.clone()));
            assert_eq!(cache.get(&a), None);
            assert!(!cache.contains(&a));
            // A forgotten block is not served from memory either.
            assert!(cache.forget(&b));
            assert_eq!(cache.get(&b), None);
            assert_eq!(cache.memory_bytes(), LEN as u64);
            // Turning it off drops the memory: c is read from disk, torn.
            cache.set_memory(0);
            assert_eq!(cache.memory_bytes(), 0);
            assert_eq!(cache.get(&c), None);
            cache.set_memory(1 << 20);
            cache.insert(&c, c_data.clone()).unwrap();
            tear(&cache, &c);
        }
        // After a restart nothing is in memory: the torn block is not served.
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        cache.set_memory(1 << 20);
        assert_eq!(cache.get(&c), None);
        assert_eq!(cache.block_count(), 0);
    }

    #[test]
    fn cache_blocks_directory_is_a_top_directory_on_ext4() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        let blocks = cache.dir().join("blocks");
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .arg(&blocks)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        // Only ext4 is promised the flag (`stat -f` calls it ext2/ext3).
        if run("stat", &["-f", "-c", "%T"]).is_none_or(|t| t.trim() != "ext2/ext3") {
            return;
        }
        let attrs = run("lsattr", &["-d"]).expect("lsattr on ext4");
        let flags = attrs.split_whitespace().next().unwrap_or_default();
        assert!(flags.contains('T'), "{attrs}");
    }

    #[test]
    fn cache_reopen_drops_crash_leftovers_and_keeps_complete_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, a_data) = block(1, LEN);
        let (b, b_data) = block(2, LEN);
        let (c, c_data) = block(3, 100);
        {
            let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
            for (hash, data) in [(&a, &a_data), (&b, &b_data), (&c, &c_data)] {
                cache.insert(hash, data.clone()).unwrap();
            }
            // A crash: a half-written temporary file, a truncated block, a
            // stray file in a fan-out directory.
            fs::write(tmp.path().join("tmp").join("x.1.0.tmp"), &a_data[..10]).unwrap();
            let torn = cache
                .block_path(&a)
                .with_file_name(format!(".{}.1.0.tmp", hex::encode(a)));
            fs::write(&torn, &a_data[..10]).unwrap();
            let b_file = OpenOptions::new()
                .write(true)
                .open(cache.block_path(&b))
                .unwrap();
            b_file.set_len(CHARGE - 1000).unwrap();
            fs::write(tmp.path().join("blocks/00/junk"), b"junk").unwrap();
        }
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        assert_eq!(files_in(&tmp.path().join("tmp")), 0);
        assert!(!tmp.path().join("blocks/00/junk").exists());
        let a_dir = cache.block_path(&a).parent().unwrap().to_owned();
        assert_eq!(
            files_in(&a_dir),
            1,
            "only the block, not its torn temporary file"
        );
        assert!(!cache.contains(&b));
        assert!(!cache.block_path(&b).exists());
        assert_eq!(cache.block_count(), 2);
        assert_eq!(cache.used_bytes(), CHARGE + (HEADER_LEN + 100) as u64);
        assert_eq!(bytes_on_disk(tmp.path()), cache.used_bytes());
        assert_eq!(cache.get(&a), Some(a_data));
        assert_eq!(cache.get(&c), Some(c_data));
    }

    #[test]
    fn cache_reopen_keeps_the_byte_count_and_the_age_order() {
        let tmp = tempfile::tempdir().unwrap();
        let blocks: Vec<_> = (0..8).map(|i| block(i, 1000 + 500 * i as usize)).collect();
        let used = {
            let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
            for (hash, data) in &blocks {
                cache.insert(hash, data.clone()).unwrap();
            }
            // Give the files distinct ages against insertion order: block i
            // is i + 1 minutes old, so block 0 is the most recently used.
            let now = SystemTime::now();
            for (i, (hash, _)) in blocks.iter().enumerate() {
                let file = File::options()
                    .write(true)
                    .open(cache.block_path(hash))
                    .unwrap();
                file.set_modified(now - Duration::from_secs(60 * (i as u64 + 1)))
                    .unwrap();
            }
            cache.used_bytes()
        };
        let cache = DiskCache::open(tmp.path(), 1 << 20).unwrap();
        assert_eq!(cache.used_bytes(), used);
        assert_eq!(cache.block_count(), blocks.len());
        drop(cache);
        // Reopening with a smaller quota evicts the oldest (highest i) first.
        let sizes: Vec<u64> = blocks
            .iter()
            .map(|(_, d)| (HEADER_LEN + d.len()) as u64)
            .collect();
        let keep: u64 = sizes[..4].iter().sum();
        let cache = DiskCache::open(tmp.path(), keep).unwrap();
        assert_eq!(cache.used_bytes(), keep);
        assert_eq!(bytes_on_disk(tmp.path()), keep);
        for (i, (hash, data)) in blocks.iter().enumerate() {
            assert_eq!(
                cache.get(hash).as_ref(),
                (i < 4).then_some(data),
                "block {i}"
            );
        }
    }

    #[test]
    fn cache_memory_bound_holds() {
        let bound = 10 * LEN as u64;
        let cache = MemoryCache::new(bound);
        let (pinned, pinned_data) = block(999, LEN);
        cache.insert_pinned(&pinned, pinned_data.clone()).unwrap();
        for i in 0..100 {
            let (hash, data) = block(i, LEN);
            cache.insert(&hash, data).unwrap();
            assert!(cache.used_bytes() <= bound);
            // Keep block 0 recently used throughout.
            assert!(cache.get(&block(0, LEN).0).is_some());
        }
        assert_eq!(cache.used_bytes(), bound);
        assert_eq!(cache.block_count(), 10);
        assert_eq!(cache.get(&pinned), Some(pinned_data));
        assert!(cache.contains(&block(0, LEN).0));
        assert!(cache.contains(&block(99, LEN).0));
        assert!(!cache.contains(&block(50, LEN).0));
        // Everything pinned: refused, bound kept.
        for i in (91..100).chain([0]) {
            cache.pin(&block(i, LEN).0);
        }
        let (x, x_data) = block(5000, LEN);
        assert!(matches!(
            cache.insert(&x, x_data),
            Err(CacheError::Full { .. })
        ));
        assert_eq!(cache.used_bytes(), bound);
    }

    #[test]
    fn cache_concurrent_inserts_and_gets_keep_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let quota = 16 * CHARGE;
        let cache = Arc::new(DiskCache::open(tmp.path(), quota).unwrap());
        cache.set_fsync(false);
        let blocks: Arc<Vec<_>> = Arc::new((0..64).map(|i| block(i, LEN)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let cache = Arc::clone(&cache);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    let index = cache.lock();
                    assert!(index.used + index.reserved <= quota);
                    peak = peak.max(index.used + index.reserved);
                    drop(index);
                    std::thread::yield_now();
                }
                peak
            })
        };
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                let blocks = Arc::clone(&blocks);
                std::thread::spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..400 {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let (hash, data) = &blocks[(x >> 33) as usize % blocks.len()];
                        if x & (1 << 20) == 0 {
                            cache.insert(hash, data.clone()).unwrap();
                        } else if let Some(got) = cache.get(hash) {
                            assert_eq!(&got, data);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let peak = watcher.join().unwrap();
        assert!(peak <= quota);
        assert!(cache.used_bytes() <= quota);
        assert_eq!(bytes_on_disk(tmp.path()), cache.used_bytes());
        assert_eq!(files_in(&tmp.path().join("tmp")), 0);
        assert_eq!(cache.block_count() as u64 * CHARGE, cache.used_bytes());
        for (hash, data) in blocks.iter() {
            if cache.contains(hash) {
                assert_eq!(cache.get(hash).as_ref(), Some(data));
            }
        }
    }
}
