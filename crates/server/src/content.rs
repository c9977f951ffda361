//! The content role: serves the content store (a plain directory of `.appv`
//! files) over HTTP, the way the IIS site or file share that holds packages
//! does for App-V, and the way nginx does for an Avail mirror.
//!
//! `GET` and `HEAD` of `/{path}` return the regular file at `path` under the
//! store root. Byte ranges are the point of the role: the client streams a
//! package block by block, so `Range: bytes=…` is honoured with a single part
//! (`206` + `Content-Range`) or, for several ranges, a `multipart/byteranges`
//! body whose parts come in the order asked (RFC 9110 §14). Validators are the
//! ones nginx sends (`ETag: "<mtime hex>-<length hex>"`, `Last-Modified`), so a
//! client that fails over between an Avail node and an nginx mirror of the same
//! share keeps its `If-Range` resumes working. `If-Match`,
//! `If-Unmodified-Since` (→ 412), `If-None-Match`, `If-Modified-Since` (→ 304)
//! and `If-Range` are evaluated in the order of RFC 9110 §13.2.2. Package files
//! (`packages/<PackageId>/<VersionId>.appv`, both GUIDs) are immutable — a
//! VersionId is always the same bytes — and say so (`Cache-Control: public,
//! max-age=31536000, immutable`), so an HTTP cache such as nginx `proxy_cache`
//! or squid can sit between clients and the store; nothing else gets a
//! `Cache-Control`.
//!
//! Policy choices, each one what nginx or Apache also do:
//! * a malformed `Range`, a unit other than `bytes`, more than [`MAX_RANGES`]
//!   ranges, or several ranges that add up to more than the file (overlaps used
//!   to amplify a response) are ignored and the full file is sent with `200`;
//! * a `Range` whose ranges are all unsatisfiable gets `416` with
//!   `Content-Range: bytes */LEN`;
//! * `Range` on `HEAD` is ignored (RFC 9110 §14.2 defines it for `GET` only).
//!
//! Path safety: the raw request path is split on `/` and each segment is
//! percent-decoded on its own, so an encoded slash can never join segments.
//! Dot segments, NUL, backslashes and encoded slashes are refused with `400`;
//! hidden names (a leading `.`: writers stage files there before renaming
//! them into place, as the management role does in `.incoming/`),
//! directories, non-regular files and anything whose opened file does not
//! resolve under the root (a symlink escaping it) get `404`. A path is
//! *checked* by `lstat`ing each component: with no symlink on the way the file
//! is inside the root by construction; through a symlink, the descriptor
//! actually opened is resolved (`/proc/self/fd/N`) and must lie under the
//! root. Either way the opened file's (device, inode) must be the one checked,
//! so a name swapped in between the check and the `open` cannot redirect the
//! read.
//!
//! Zero-copy bodies and the file cache. A checked file is mapped into memory
//! whole (`mmap`, read-only, shared) and kept in a small cache keyed by path,
//! with its identity (device, inode, length, mtime and ctime, to the
//! nanosecond) and its ready-made validators. Every request still `stat`s its
//! path (one syscall) and is served from the cache only if the path leads to
//! the very file cached, unchanged, and the check is less than [`REVALIDATE`]
//! old; otherwise the path is checked and opened again (the mapping is kept
//! when the file turns out to be the same). So a file replaced by `rename`, as
//! the management role installs packages, is served new from the first
//! request after the rename, and its bytes never mix with the old file's: a
//! response's bytes all come from one mapping of one inode. A file that
//! vanished gets `404` at once. What the cache can delay, by at most
//! [`REVALIDATE`], is noticing that a *directory* on the path was swapped for a
//! symlink leading outside the root while the same file, unchanged, is still
//! at its end; the bytes served are then still those of a file that was checked
//! inside the root. On a network file system, where `stat` may answer from
//! the client's attribute cache, a file replaced from another node is seen
//! within [`REVALIDATE`] at the latest (the `open` then revalidates). Entries
//! unused for [`IDLE`] are dropped by a sweeper thread, so a deleted file's
//! disk space is held for at most about that long (a request for it drops it
//! at once); at most [`CACHE_ENTRIES`] files are cached.
//! Touched pages of mapped files count in the process's resident size (as
//! `RssFile`): they are the page cache, shared, not memory of its own.
//!
//! A range is then a slice of the mapping (`Bytes::from_owner`): no `read`
//! into a buffer, no allocation for the body; hyper hands the slice to
//! `writev`, whose copy into the socket is the only one (nginx's `sendfile`
//! has none; zero-copy through hyper's socket would need `sendfile` or `splice`
//! there). Nothing in the process reads the mapped bytes itself; only the
//! kernel does, inside `writev`. That matters because a mapped file that is
//! truncated in place makes a *user-space* read past the new end fatal
//! (`SIGBUS`), while the kernel's copy just fails (`EFAULT`, the connection is
//! dropped, the client sees a short body, as with a failed `pread` before).
//! Files in the store are immutable (per-version names, written to a temporary
//! name and renamed), so this does not arise in normal operation; it does
//! constrain the serving stack: hyper's HTTP/1 must keep its vectored-write
//! ("queue") strategy, which it picks when the connection's I/O type says it
//! writes vectored (a `TcpStream` does; a wrapper must forward
//! `is_write_vectored` and `poll_write_vectored`), and no layer that reads
//! body bytes in user space (TLS, compression) may sit in front of this router
//! without revisiting the mapping. A file that cannot be mapped (a file system
//! without `mmap`, the map count exhausted) is not cached, and is read with
//! `pread` instead: responses of up to [`INLINE_LIMIT`] bytes in one read,
//! larger ones streamed in [`CHUNK`]-byte reads.
//!
//! File-system work runs on the workers of the role's own runtime (see
//! `blocking`).

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    fs::{File, Metadata},
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileExt, MetadataExt},
        io::AsRawFd,
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Once, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
    routing::get,
};
use bytes::Bytes;

/// The most ranges one request may ask for; beyond it the `Range` header is
/// ignored and the whole file is sent (`200`), as nginx's `max_ranges` does.
/// The client asks for a handful of blocks at a time, so 64 is generous while
/// keeping a request from costing thousands of part headers and reads.
pub const MAX_RANGES: usize = 64;

/// For a file that could not be mapped: responses up to this many bytes are
/// read at once while the file is opened, rather than streamed.
pub const INLINE_LIMIT: u64 = 256 * 1024;

/// For a file that could not be mapped: the read size when streaming a larger
/// body.
pub const CHUNK: u64 = 256 * 1024;

/// How long a path's check is trusted while the file at its end stays the
/// same (same device, inode, length, mtime, ctime); after it, the next request
/// checks the path again.
pub const REVALIDATE: Duration = Duration::from_secs(1);

/// A cached file unused for this long is dropped (and unmapped), as nginx's
/// `open_file_cache … inactive=60s` does. Until then a file deleted from the
/// store keeps its disk space, unless a request finds it gone first; a mapping
/// made again costs a page fault per 64 KiB touched.
pub const IDLE: Duration = Duration::from_secs(60);

/// The most files the cache holds; past it, the least recently used goes.
pub const CACHE_ENTRIES: usize = 1024;

#[derive(Clone)]
struct Content {
    /// The root as configured, canonicalized again per request while
    /// `canonical` is `None` (the directory did not exist at start-up).
    root: Arc<Path>,
    canonical: Option<Arc<Path>>,
    /// Checked, mapped files by full path (under `canonical`).
    cache: Arc<Cache>,
}

/// The content router for a store rooted at `root`: `GET` and `HEAD` of
/// `/{*path}`. Other methods get `405`; `/` itself gets `404` (no listings).
pub fn router(root: PathBuf) -> Router {
    // Resolved once, so that per request only the opened file's own path has
    // to be resolved and compared against it.
    let canonical = std::fs::canonicalize(&root).ok().map(Arc::from);
    let state = Content {
        root: Arc::from(root),
        canonical,
        cache: Arc::new(Cache::new()),
    };
    Router::new()
        .route("/{*path}", get(serve).head(serve))
        .with_state(state)
}

// The whole request rather than `Method`, `Uri` and `HeaderMap` extractors:
// axum's `HeaderMap` extractor clones the map.
async fn serve(State(content): State<Content>, request: Request) -> Response {
    // The raw path, not axum's decoded `Path`: decoding must happen per segment
    // so that `%2F` cannot smuggle a separator in.
    let rel = match safe_relative_path(request.uri().path()) {
        Ok(rel) => rel,
        Err(status) => return empty(status),
    };
    let head = request.method() == Method::HEAD;
    let conditions = Conditions::from_headers(request.headers(), head);
    drop(request);
    match blocking(move || respond(&content, &rel, head, &conditions)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "content: file-system task failed");
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Runs a file-system job for a request, right here on the worker.
///
/// The content role runs on its own runtime (see `avail_server::run`), so its
/// workers read files themselves, as nginx does in its event loop: no hop to
/// another thread per request (measured with `bench/content.sh`: tokio's
/// `spawn_blocking` cost 80–110 µs of server CPU per 64 KiB range, a separate
/// read pool 45–60 µs, `block_in_place` ~60 µs). A slow disk or a hung share
/// then stalls content requests only, never the other roles.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    Ok(f())
}

/// Turns the raw (still percent-encoded) request path into a relative path of
/// plain names, or the status to refuse it with.
fn safe_relative_path(raw: &str) -> Result<PathBuf, StatusCode> {
    let mut rel = PathBuf::new();
    for segment in raw.split('/') {
        // Empty segments (`//`, the leading `/`) are harmless: `a//b` is `a/b`.
        if segment.is_empty() {
            continue;
        }
        let name = percent_decode(segment).ok_or(StatusCode::BAD_REQUEST)?;
        if name == b"." || name == b".." || name.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if name.first() == Some(&b'.') {
            return Err(StatusCode::NOT_FOUND);
        }
        rel.push(std::ffi::OsStr::from_bytes(&name));
    }
    if rel.as_os_str().is_empty() {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(rel)
}

/// Strict percent-decoding: `None` for a `%` not followed by two hex digits.
/// `percent-encoding` decodes, but passes such a `%` through as it is; a path
/// that carries one is refused here instead, as nginx does.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let malformed = s.match_indices('%').any(|(i, _)| {
        !s.as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    (!malformed).then(|| percent_encoding::percent_decode_str(s).collect())
}

/// The request headers that decide the response, parsed before the blocking
/// task so that it only does file-system work.
struct Conditions {
    if_match: Option<String>,
    if_unmodified_since: Option<u64>,
    if_none_match: Option<String>,
    if_modified_since: Option<u64>,
    if_range: Option<String>,
    /// `None`: no usable `Range` (absent, malformed, too many, or a `HEAD`).
    ranges: Option<Vec<RangeSpec>>,
}

impl Conditions {
    fn from_headers(headers: &HeaderMap, head: bool) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        // Entity-tag lists may come split over several field lines.
        let list = |name| {
            let lines: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!lines.is_empty()).then(|| lines.join(", "))
        };
        // An invalid date makes the precondition absent (RFC 9110 §13.1.3,
        // §13.1.4: "the recipient MUST ignore").
        let date = |name| {
            text(name)
                .and_then(|v| httpdate::parse_http_date(&v).ok())
                .map(unix_secs)
        };
        Conditions {
            if_match: list(header::IF_MATCH),
            if_unmodified_since: date(header::IF_UNMODIFIED_SINCE),
            if_none_match: list(header::IF_NONE_MATCH),
            if_modified_since: date(header::IF_MODIFIED_SINCE),
            if_range: text(header::IF_RANGE),
            ranges: if head {
                None
            } else {
                headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_range)
            },
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One `range-spec` of a `bytes` range set, before the file length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `first-last`
    Closed(u64, u64),
    /// `first-`
    From(u64),
    /// `-suffix`
    Suffix(u64),
}

/// Parses a `Range` field (RFC 9110 §14.1.1). `None` means "ignore the field":
/// malformed syntax, another unit, an empty set, or more than [`MAX_RANGES`].
fn parse_range(value: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // `#range-spec` list syntax allows empty elements, which are skipped.
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        let (first, last) = element.split_once('-')?;
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => RangeSpec::Suffix(digits(last)?),
            (false, true) => RangeSpec::From(digits(first)?),
            (false, false) => {
                let (first, last) = (digits(first)?, digits(last)?);
                if last < first {
                    return None;
                }
                RangeSpec::Closed(first, last)
            }
        };
        specs.push(spec);
    }
    if specs.is_empty() { None } else { Some(specs) }
}

/// A `1*DIGIT`; values past `u64::MAX` saturate, which keeps their meaning
/// (a position past any file, or "the whole file" as a suffix).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// The satisfiable ranges as inclusive `(first, last)` offsets, in the order
/// asked; unsatisfiable ones are dropped (RFC 9110 §14.1.1).
fn resolve(specs: &[RangeSpec], len: u64) -> Vec<(u64, u64)> {
    specs
        .iter()
        .filter_map(|&spec| match spec {
            RangeSpec::Closed(first, last) if first < len => Some((first, last.min(len - 1))),
            RangeSpec::From(first) if first < len => Some((first, len - 1)),
            RangeSpec::Suffix(n) if n > 0 && len > 0 => Some((len - n.min(len), len - 1)),
            _ => None,
        })
        .collect()
}

/// Everything after the path check, on the file-system threads: find the
/// file, check the conditions, decide the response.
fn respond(content: &Content, rel: &Path, head: bool, request: &Conditions) -> Response {
    let entry = match lookup(content, rel) {
        Ok(entry) => entry,
        Err(status) => return empty(status),
    };
    let rep = &*entry;

    // RFC 9110 §13.2.2, steps 1–4.
    if let Some(field) = &request.if_match {
        if !etag_list_matches(field, rep.etag(), false) {
            return validators(StatusCode::PRECONDITION_FAILED, rep);
        }
    } else if let Some(since) = request.if_unmodified_since
        && rep.mtime > since
    {
        return validators(StatusCode::PRECONDITION_FAILED, rep);
    }
    if let Some(field) = &request.if_none_match {
        if etag_list_matches(field, rep.etag(), true) {
            return validators(StatusCode::NOT_MODIFIED, rep);
        }
    } else if let Some(since) = request.if_modified_since
        && rep.mtime <= since
    {
        return validators(StatusCode::NOT_MODIFIED, rep);
    }

    // Step 5: the range applies only while `If-Range` (if any) still holds.
    let ranges = match &request.ranges {
        Some(specs)
            if request
                .if_range
                .as_deref()
                .is_none_or(|v| if_range_holds(v, rep)) =>
        {
            Some(resolve(specs, rep.len))
        }
        _ => None,
    };

    match ranges {
        None => full(rep, head),
        Some(ranges) if ranges.is_empty() => {
            let mut response = validators(StatusCode::RANGE_NOT_SATISFIABLE, rep);
            let h = response.headers_mut();
            h.insert(header::CONTENT_RANGE, value(format!("bytes */{}", rep.len)));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Some(ranges) if ranges.len() == 1 => {
            let (first, last) = ranges[0];
            let mut response = body(
                StatusCode::PARTIAL_CONTENT,
                rep,
                HeaderValue::from_static(rep.content_type),
                vec![Part::File(first, last - first + 1)],
            );
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                value(format!("bytes {first}-{last}/{}", rep.len)),
            );
            response
        }
        Some(ranges) => {
            // Overlapping ranges can ask for the same bytes many times over;
            // past the file's own size, the full file is the cheaper answer.
            let total = ranges
                .iter()
                .map(|(f, l)| l - f + 1)
                .fold(0u64, u64::saturating_add);
            if total > rep.len {
                return full(rep, head);
            }
            multipart(rep, &ranges)
        }
    }
}

/// Which file a path leads to, and whether it changed: a file replaced by
/// `rename` has another inode, one rewritten in place another length, mtime
/// or ctime (a `chmod`, a new hard link or a rename of the file itself change
/// the ctime too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A checked, open file and everything a response needs from it.
struct Entry {
    identity: Identity,
    data: Data,
    len: u64,
    mtime: u64,
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: &'static str,
    /// A package file (`packages/<PackageId>/<VersionId>.appv`): immutable,
    /// since a VersionId is always the same bytes, so any HTTP cache may keep
    /// it for good ([`IMMUTABLE`]).
    immutable: bool,
    /// When the path was last checked (`lstat`s, `open`).
    checked: Instant,
    /// When a request last used the entry, in milliseconds since the cache's
    /// epoch (for the sweeper and for eviction).
    used: AtomicU64,
}

/// The file's bytes.
#[derive(Clone)]
enum Data {
    /// The whole file, mapped (empty for an empty file): a range is a slice.
    Mapped(Bytes),
    /// Not mappable: ranges are read with `pread`.
    File(Arc<File>),
}

impl Entry {
    fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

/// The checked files, by full path. Small and short-lived: see the module
/// documentation.
struct Cache {
    entries: Mutex<HashMap<PathBuf, Arc<Entry>>>,
    epoch: Instant,
    sweeper: Once,
}

impl Cache {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            sweeper: Once::new(),
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Entry>>> {
        // The map is consistent after any panic (single inserts and removes).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, path: &Path) -> Option<Arc<Entry>> {
        self.lock().get(path).cloned()
    }

    fn remove(&self, path: &Path) {
        let old = self.lock().remove(path);
        drop(old); // unmapped (if last) outside the lock
    }

    fn insert(self: &Arc<Self>, path: PathBuf, entry: Arc<Entry>) {
        self.sweeper.call_once(|| self.start_sweeper());
        let mut evicted = None;
        let replaced = {
            let mut entries = self.lock();
            if entries.len() >= CACHE_ENTRIES && !entries.contains_key(&path) {
                let lru = entries
                    .iter()
                    .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                    .map(|(p, _)| p.clone());
                evicted = lru.and_then(|p| entries.remove(&p));
            }
            entries.insert(path, entry)
        };
        drop((evicted, replaced));
    }

    /// Drops entries unused for [`IDLE`]; returns how many are left.
    fn sweep(&self, now: Instant) -> usize {
        let idle_ms = u64::try_from(IDLE.as_millis()).unwrap_or(u64::MAX);
        let idle = self.millis(now).saturating_sub(idle_ms);
        let mut dropped = Vec::new();
        let left = {
            let mut entries = self.lock();
            entries.retain(|_, e| {
                let keep = e.used.load(Ordering::Relaxed) >= idle;
                if !keep {
                    dropped.push(Arc::clone(e));
                }
                keep
            });
            entries.len()
        };
        drop(dropped);
        left
    }

    /// A thread that sweeps every quarter of [`IDLE`] while the cache is alive.
    fn start_sweeper(self: &Arc<Self>) {
        let cache: Weak<Cache> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("avail-content-cache".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(IDLE / 4);
                    let Some(cache) = cache.upgrade() else { return };
                    cache.sweep(Instant::now());
                }
            });
        if let Err(e) = spawned {
            // Still correct, only holding unused files until they are evicted.
            tracing::warn!(error = %e, "content: cannot start the cache sweeper");
        }
    }
}

/// The file at `root/rel`, checked: from the cache while it still holds (see
/// the module documentation), otherwise checked, opened and cached anew.
fn lookup(content: &Content, rel: &Path) -> Result<Arc<Entry>, StatusCode> {
    let Some(root) = &content.canonical else {
        // A root created after start-up: resolved per request, not cached.
        let root = std::fs::canonicalize(&content.root).map_err(|e| {
            tracing::warn!(root = %content.root.display(), error = %e, "content: store root unavailable");
            StatusCode::NOT_FOUND
        })?;
        return open(&root, rel, &root.join(rel), None).map(Arc::new);
    };
    let path = root.join(rel);
    let cache = &content.cache;
    // Which file the path leads to now (following symlinks, as `open` does).
    let now_at = match std::fs::metadata(&path) {
        Ok(meta) => Identity::of(&meta),
        Err(e) => {
            cache.remove(&path);
            return Err(open_error(&e));
        }
    };
    let now = Instant::now();
    let cached = cache.get(&path);
    if let Some(entry) = &cached
        && entry.identity == now_at
        && now.saturating_duration_since(entry.checked) < REVALIDATE
    {
        entry.used.store(cache.millis(now), Ordering::Relaxed);
        return Ok(Arc::clone(entry));
    }
    match open(root, rel, &path, cached.as_deref()) {
        Ok(entry) => {
            entry.used.store(cache.millis(now), Ordering::Relaxed);
            let entry = Arc::new(entry);
            // A file that could not be mapped is not kept: its entry would
            // hold a descriptor, and a thousand of them the process's limit.
            if matches!(entry.data, Data::Mapped(_)) {
                cache.insert(path, Arc::clone(&entry));
            } else {
                cache.remove(&path);
            }
            Ok(entry)
        }
        Err(status) => {
            cache.remove(&path);
            Err(status)
        }
    }
}

/// Checks and opens `path` (`root/rel`): a regular file inside the root. The
/// bytes of `previous` are reused when it is the same file, unchanged.
fn open(
    root: &Path,
    rel: &Path,
    path: &Path,
    previous: Option<&Entry>,
) -> Result<Entry, StatusCode> {
    // A file replaced by `rename` between the check and the `open` (the store's
    // normal way of updating a file) is checked again: a few attempts, since
    // each one needs a replacement to land in a window of a few syscalls.
    let mut attempts = 0;
    let (file, meta) = loop {
        match open_checked(root, rel, path)? {
            Some(opened) => break opened,
            None if attempts < SWAP_RETRIES => attempts += 1,
            None => return Err(StatusCode::NOT_FOUND),
        }
    };
    let identity = Identity::of(&meta);
    let data = match previous {
        Some(previous) if previous.identity == identity => previous.data.clone(),
        _ => match map(&file, identity.len) {
            Ok(bytes) => Data::Mapped(bytes),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "content: not mapped, reading with pread");
                Data::File(Arc::new(file))
            }
        },
    };
    let len = identity.len;
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let content_type = match rel.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("appv") => "application/appv",
        Some(e) if e.eq_ignore_ascii_case("xml") => "application/xml",
        Some(e) if e.eq_ignore_ascii_case("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok(Entry {
        immutable: is_package_file(rel),
        identity,
        data,
        len,
        mtime,
        // nginx's format, so that nodes and nginx mirrors of one share agree.
        etag: value(format!("\"{mtime:x}-{len:x}\"")),
        last_modified: value(httpdate::fmt_http_date(
            UNIX_EPOCH + Duration::from_secs(mtime),
        )),
        content_type,
        checked: Instant::now(),
        used: AtomicU64::new(0),
    })
}

/// How often [`open`] checks a path again whose file was swapped between its
/// check and its `open`.
const SWAP_RETRIES: u32 = 4;

/// Checks `path` (`root/rel`) and opens it: the open file and its metadata, or
/// `None` when the file opened is not the one checked (swapped in between).
fn open_checked(
    root: &Path,
    rel: &Path,
    path: &Path,
) -> Result<Option<(File, Metadata)>, StatusCode> {
    // Every component is looked at with `lstat` before anything is opened.
    // Without a symlink on the way, the file is inside the root by
    // construction (the path has no `..`), and no further check is needed: the
    // common case costs no more than the `stat` we need anyway. A FIFO or a
    // device is refused before `open`, which could block on it or have side
    // effects.
    let mut at = root.to_path_buf();
    let mut checked = None;
    for component in rel.components() {
        at.push(component);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| open_error(&e))?;
        if meta.file_type().is_symlink() {
            checked = None;
            break;
        }
        checked = Some(meta);
    }
    let through_symlink = checked.is_none();
    let before = match checked {
        Some(meta) => meta,
        None => std::fs::metadata(path).map_err(|e| open_error(&e))?,
    };
    if !before.is_file() {
        return Err(StatusCode::NOT_FOUND);
    }
    let file = File::open(path).map_err(|e| open_error(&e))?;
    let meta = file.metadata().map_err(|e| internal(&e))?;
    // The same (device, inode) as checked: whatever was renamed or swapped in
    // between, the file opened is the one that was found inside the root.
    if !meta.is_file() || meta.ino() != before.ino() || meta.dev() != before.dev() {
        return Ok(None);
    }
    // Through a symlink, only where the file really is can tell.
    if through_symlink && !resolves_inside(&file, path, root) {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Some((file, meta)))
}

/// Maps the first `len` bytes of `file` (its length when checked), read-only
/// and shared; empty for an empty file (which `mmap` refuses).
#[allow(unsafe_code)]
fn map(file: &File, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: the mapping is only ever read, and only by the kernel (`writev`
    // copies a slice of it into the socket; nothing in this process
    // dereferences it), so the two hazards of a file mapping cannot corrupt
    // memory here: a write to the file by another process changes bytes under
    // us, which `writev` then sends (the same as `pread` would have read), and
    // a truncation makes the kernel's copy fail with `EFAULT` rather than
    // raising `SIGBUS` in user space. Store files are immutable anyway (written
    // under a temporary name, then renamed into place). The mapping lives as
    // long as the `Bytes` that own it, so no slice outlives it.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

/// Whether the opened file's real path lies under `root`. The kernel's own
/// record of the descriptor is asked first, which is exact for the file we
/// will read; without `/proc`, the path is resolved again instead.
fn resolves_inside(file: &File, path: &Path, root: &Path) -> bool {
    let fd_link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let real = std::fs::read_link(fd_link).or_else(|_| std::fs::canonicalize(path));
    match real {
        Ok(real) => real.starts_with(root) && real != root,
        Err(_) => false,
    }
}

fn open_error(e: &io::Error) -> StatusCode {
    match e.kind() {
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            StatusCode::NOT_FOUND
        }
        // ELOOP (a symlink loop) is still an unstable `ErrorKind`; it is a bad
        // name, not a server fault.
        _ if e.raw_os_error() == Some(40) => StatusCode::NOT_FOUND,
        _ => internal(e),
    }
}

fn internal(e: &io::Error) -> StatusCode {
    tracing::warn!(error = %e, "content: file-system error");
    StatusCode::INTERNAL_SERVER_ERROR
}

/// `If-Match` / `If-None-Match`: `*` or a list of entity tags. Strong
/// comparison for `If-Match`, weak for `If-None-Match` (RFC 9110 §8.8.3.2).
/// A malformed list matches nothing.
fn etag_list_matches(field: &str, etag: &str, weak: bool) -> bool {
    if field.trim() == "*" {
        return true;
    }
    let mut rest = field;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let is_weak = rest.starts_with("W/");
        if is_weak {
            rest = &rest[2..];
        }
        let Some(body) = rest.strip_prefix('"') else {
            return false;
        };
        let Some(end) = body.find('"') else {
            return false;
        };
        let tag = &rest[..end + 2];
        if tag == etag && (weak || !is_weak) {
            return true;
        }
        rest = &body[end + 1..];
    }
}

/// `If-Range`: a strong entity-tag match, or a date equal to Last-Modified
/// (RFC 9110 §13.1.5). Anything else, a weak tag included, fails.
fn if_range_holds(field: &str, rep: &Entry) -> bool {
    let field = field.trim();
    if field.starts_with('"') {
        field == rep.etag()
    } else if field.starts_with("W/") {
        false
    } else {
        httpdate::parse_http_date(field).is_ok_and(|d| unix_secs(d) == rep.mtime)
    }
}

/// A piece of a response body.
enum Part {
    Static(Bytes),
    /// `(offset, length)` in the file.
    File(u64, u64),
}

fn full(rep: &Entry, head: bool) -> Response {
    let len = rep.len;
    let parts = if head || len == 0 {
        Vec::new()
    } else {
        vec![Part::File(0, len)]
    };
    // For HEAD the body is empty but the length (set by `body`) is the file's.
    let mut response = body(
        StatusCode::OK,
        rep,
        HeaderValue::from_static(rep.content_type),
        parts,
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

fn multipart(rep: &Entry, ranges: &[(u64, u64)]) -> Response {
    let boundary = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, &(first, last)) in ranges.iter().enumerate() {
        // The delimiter is CRLF "--" boundary; the first one needs no CRLF.
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {first}-{last}/{}\r\n\r\n",
            rep.content_type, rep.len
        );
        parts.push(Part::Static(Bytes::from(head)));
        parts.push(Part::File(first, last - first + 1));
    }
    parts.push(Part::Static(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    let content_type = value(format!("multipart/byteranges; boundary={boundary}"));
    body(StatusCode::PARTIAL_CONTENT, rep, content_type, parts)
}

/// A response with the file's validators, `content_type` and `parts` as body:
/// slices of the mapping, or for a file that is not mapped, read now if small
/// and streamed otherwise.
fn body(status: StatusCode, rep: &Entry, content_type: HeaderValue, parts: Vec<Part>) -> Response {
    let len: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Static(b) => b.len() as u64,
            Part::File(_, n) => *n,
        })
        .sum();
    let body = match &rep.data {
        Data::Mapped(map) => mapped(map, parts),
        Data::File(file) if len <= INLINE_LIMIT => match read_inline(file, &parts, len) {
            Ok(bytes) => Body::from(bytes),
            Err(e) => return empty(internal(&e)),
        },
        Data::File(file) => stream(Arc::clone(file), parts),
    };
    let mut response = validators(status, rep);
    *response.body_mut() = body;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// The parts as slices of the mapped file, without copying: one frame per
/// part, which hyper queues for `writev` as they are.
fn mapped(map: &Bytes, parts: Vec<Part>) -> Body {
    // Ranges were resolved against the length that was mapped, so they fit.
    let slice = |part| match part {
        Part::Static(bytes) => bytes,
        Part::File(offset, n) => map.slice(offset as usize..(offset + n) as usize),
    };
    let mut frames: Vec<Bytes> = parts.into_iter().map(slice).collect();
    match frames.len() {
        0 => Body::empty(),
        1 => Body::from(frames.remove(0)),
        _ => Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        )),
    }
}

fn read_inline(file: &File, parts: &[Part], len: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    for part in parts {
        match part {
            Part::Static(b) => buf.extend_from_slice(b),
            &Part::File(offset, n) => read_range(file, offset, n, &mut buf)?,
        }
    }
    Ok(Bytes::from(buf))
}

/// Appends bytes `offset..offset + n` of `file` to `buf` with one `pread`.
fn read_range(file: &File, offset: u64, n: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.resize(start + usize::try_from(n).map_err(io::Error::other)?, 0);
    // A file truncated under us fails here (UnexpectedEof) rather than
    // sending fewer bytes than Content-Length promises.
    file.read_exact_at(&mut buf[start..], offset)
}

/// A body that reads the file parts in [`CHUNK`]s on the file-system threads. A read
/// error ends the stream with an error, which makes hyper drop the connection:
/// the client sees a short body, never wrong bytes under a good status.
fn stream(file: Arc<File>, parts: Vec<Part>) -> Body {
    let state = (file, VecDeque::from(parts));
    let chunks = futures_util::stream::try_unfold(state, |(file, mut parts)| async move {
        let Some(part) = parts.pop_front() else {
            return Ok::<_, io::Error>(None);
        };
        let bytes = match part {
            Part::Static(bytes) => bytes,
            Part::File(offset, len) => {
                let n = len.min(CHUNK);
                if len > n {
                    parts.push_front(Part::File(offset + n, len - n));
                }
                let reader = Arc::clone(&file);
                blocking(move || {
                    let mut buf = Vec::with_capacity(n as usize);
                    read_range(&reader, offset, n, &mut buf).map(|()| Bytes::from(buf))
                })
                .await??
            }
        };
        Ok(Some((bytes, (file, parts))))
    });
    Body::from_stream(chunks)
}

/// `Cache-Control` of package files: a VersionId is always the same file, so
/// an HTTP cache between clients and the store (nginx `proxy_cache`, squid)
/// may keep it a year without asking again.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Whether `rel` is where the management role stores a package version:
/// `packages/<PackageId>/<VersionId>.appv`.
fn is_package_file(rel: &Path) -> bool {
    let mut parts = rel.components().map(|c| c.as_os_str().to_str());
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(Some("packages")), Some(Some(package)), Some(Some(file)), None)
            if uuid::Uuid::parse_str(package).is_ok()
                && file
                    .strip_suffix(".appv")
                    .is_some_and(|version| uuid::Uuid::parse_str(version).is_ok())
    )
}

/// A bodiless response carrying the file's validators and `Accept-Ranges`
/// (and, for a package file, its [`IMMUTABLE`] `Cache-Control`).
fn validators(status: StatusCode, rep: &Entry) -> Response {
    let mut response = empty(status);
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, rep.etag.clone());
    h.insert(header::LAST_MODIFIED, rep.last_modified.clone());
    if rep.immutable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    response
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Header values built here are ASCII by construction.
fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9"), Some(vec![Closed(0, 9)]));
        assert_eq!(parse_range("bytes=5-"), Some(vec![From(5)]));
        assert_eq!(parse_range("bytes=-5"), Some(vec![Suffix(5)]));
        assert_eq!(
            parse_range("Bytes=1-2, ,3-4"),
            Some(vec![Closed(1, 2), Closed(3, 4)])
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999999-"),
            Some(vec![From(u64::MAX)])
        );
        for bad in [
            "bytes=",
            "bytes=5-4",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "items=0-1",
            "bytes 0-1",
            "bytes=0-1-2",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse_range(&many), None);
        let max = format!("bytes={}", vec!["0-0"; MAX_RANGES].join(","));
        assert_eq!(parse_range(&max).map(|v| v.len()), Some(MAX_RANGES));
    }

    #[test]
    fn range_resolution() {
        use RangeSpec::*;
        assert_eq!(resolve(&[Closed(0, 99)], 10), vec![(0, 9)]);
        assert_eq!(resolve(&[Suffix(99)], 10), vec![(0, 9)]);
        assert_eq!(
            resolve(&[Suffix(0), From(10), Closed(3, 3)], 10),
            vec![(3, 3)]
        );
        assert!(resolve(&[Suffix(1)], 0).is_empty());
    }

    #[test]
    fn paths() {
        assert_eq!(
            safe_relative_path("/a//b%20c.appv"),
            Ok(PathBuf::from("a/b c.appv"))
        );
        assert_eq!(
            safe_relative_path("/a/%2e%2e/b"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(safe_relative_path("/a%2fb"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(safe_relative_path("/a%5cb"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(safe_relative_path("/a%00"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(safe_relative_path("/a%zz"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(safe_relative_path("/.hidden"), Err(StatusCode::NOT_FOUND));
        assert_eq!(safe_relative_path("/"), Err(StatusCode::NOT_FOUND));
    }

    /// Bodies come out the same whether the file is mapped or (when it could
    /// not be) read with `pread`, inline or streamed.
    #[tokio::test]
    async fn mapped_and_read_bodies_agree() {
        use http_body_util::BodyExt;

        let dir = tempfile::tempdir().unwrap();
        let len = 3 * CHUNK as usize + 7;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f.appv");
        std::fs::write(&path, &bytes).unwrap();
        let mapped = open(dir.path(), Path::new("f.appv"), &path, None).unwrap();
        assert!(matches!(mapped.data, Data::Mapped(_)));
        let read = Entry {
            data: Data::File(Arc::new(File::open(&path).unwrap())),
            ..open(dir.path(), Path::new("f.appv"), &path, None).unwrap()
        };
        let small = (10, 100);
        let large = (CHUNK - 3, 2 * CHUNK + 1);
        for entry in [&mapped, &read] {
            let whole = full(entry, false).into_body().collect().await.unwrap();
            assert!(whole.to_bytes() == bytes);
            for (first, last) in [small, large] {
                let parts = vec![Part::File(first, last - first + 1)];
                let reply = body(StatusCode::PARTIAL_CONTENT, entry, value("x".into()), parts);
                let got = reply.into_body().collect().await.unwrap().to_bytes();
                assert!(got == bytes[first as usize..=last as usize]);
            }
            let parts = vec![
                Part::Static(Bytes::from_static(b"<")),
                Part::File(large.0, large.1 - large.0 + 1),
                Part::Static(Bytes::from_static(b"|")),
                Part::File(small.0, small.1 - small.0 + 1),
            ];
            let reply = body(StatusCode::PARTIAL_CONTENT, entry, value("x".into()), parts);
            let got = reply.into_body().collect().await.unwrap().to_bytes();
            let mut want = b"<".to_vec();
            want.extend_from_slice(&bytes[large.0 as usize..=large.1 as usize]);
            want.push(b'|');
            want.extend_from_slice(&bytes[small.0 as usize..=small.1 as usize]);
            assert!(got == want);
        }
    }

    /// Unused entries are swept; the cache never holds more than its cap.
    #[test]
    fn cache_sweep_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let entry = Arc::new(open(dir.path(), Path::new("f"), &path, None).unwrap());
        let cache = Arc::new(Cache::new());
        let now = Instant::now();
        entry.used.store(cache.millis(now), Ordering::Relaxed);
        for i in 0..CACHE_ENTRIES + 3 {
            cache.insert(PathBuf::from(i.to_string()), Arc::clone(&entry));
        }
        assert_eq!(cache.lock().len(), CACHE_ENTRIES);
        assert_eq!(cache.sweep(now + IDLE / 2), CACHE_ENTRIES);
        assert_eq!(cache.sweep(now + IDLE + Duration::from_secs(1)), 0);
    }

    #[test]
    fn etag_lists() {
        let tag = "\"5f-10\"";
        assert!(etag_list_matches("\"x\", \"5f-10\"", tag, false));
        assert!(etag_list_matches("W/\"5f-10\"", tag, true));
        assert!(!etag_list_matches("W/\"5f-10\"", tag, false));
        assert!(etag_list_matches("*", tag, false));
        assert!(!etag_list_matches("5f-10", tag, true));
        assert!(!etag_list_matches("\"a,b\"", tag, true));
    }
}
