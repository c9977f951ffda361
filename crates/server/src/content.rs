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
//! and `If-Range` are evaluated in the order of RFC 9110 §13.2.2.
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
//! resolve under the root (a symlink escaping it) get `404`. Each
//! component is `lstat`ed: with no symlink on the way the file is inside the
//! root by construction; through a symlink, the descriptor actually opened is
//! resolved (`/proc/self/fd/N`) and must lie under the root. Either way the
//! opened file's (device, inode) must be the one checked, so a name swapped
//! in between the check and the `open` cannot redirect the read.
//!
//! File-system work runs on the workers of the role's own runtime (see
//! `blocking`). Bodies are never read whole: a response of up to [`INLINE_LIMIT`]
//! bytes (every single-block read of the client) is read with one `pread` in
//! the same job that opens the file; larger ones are streamed in
//! [`CHUNK`]-byte reads, a job each.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileExt, MetadataExt},
        io::AsRawFd,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::Response,
    routing::get,
};
use bytes::Bytes;

/// The most ranges one request may ask for; beyond it the `Range` header is
/// ignored and the whole file is sent (`200`), as nginx's `max_ranges` does.
/// The client asks for a handful of blocks at a time, so 64 is generous while
/// keeping a request from costing thousands of part headers and reads.
pub const MAX_RANGES: usize = 64;

/// Responses up to this many bytes are read at once while the file is
/// opened, rather than streamed: one hop to the file-system threads instead
/// of two or more.
pub const INLINE_LIMIT: u64 = 256 * 1024;

/// The read size when streaming a larger body.
pub const CHUNK: u64 = 256 * 1024;

#[derive(Clone)]
struct Content {
    /// The root as configured, canonicalized again per request while
    /// `canonical` is `None` (the directory did not exist at start-up).
    root: Arc<Path>,
    canonical: Option<Arc<Path>>,
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
    };
    Router::new()
        .route("/{*path}", get(serve).head(serve))
        .with_state(state)
}

async fn serve(
    State(content): State<Content>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // The raw path, not axum's decoded `Path`: decoding must happen per segment
    // so that `%2F` cannot smuggle a separator in.
    let rel = match safe_relative_path(uri.path()) {
        Ok(rel) => rel,
        Err(status) => return empty(status),
    };
    let head = method == Method::HEAD;
    let request = Conditions::from_headers(&headers, head);
    match blocking(move || respond(&content, &rel, head, &request)).await {
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
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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

/// What is known about the file once it is open.
struct Representation {
    file: File,
    len: u64,
    mtime: u64,
    etag: String,
    last_modified: String,
    content_type: &'static str,
}

/// Everything after the path check, on the file-system threads: open, check,
/// decide, and for a small body read it.
fn respond(content: &Content, rel: &Path, head: bool, request: &Conditions) -> Response {
    let rep = match open(content, rel) {
        Ok(rep) => rep,
        Err(status) => return empty(status),
    };

    // RFC 9110 §13.2.2, steps 1–4.
    if let Some(field) = &request.if_match {
        if !etag_list_matches(field, &rep.etag, false) {
            return validators(StatusCode::PRECONDITION_FAILED, &rep);
        }
    } else if let Some(since) = request.if_unmodified_since
        && rep.mtime > since
    {
        return validators(StatusCode::PRECONDITION_FAILED, &rep);
    }
    if let Some(field) = &request.if_none_match {
        if etag_list_matches(field, &rep.etag, true) {
            return validators(StatusCode::NOT_MODIFIED, &rep);
        }
    } else if let Some(since) = request.if_modified_since
        && rep.mtime <= since
    {
        return validators(StatusCode::NOT_MODIFIED, &rep);
    }

    // Step 5: the range applies only while `If-Range` (if any) still holds.
    let ranges = match &request.ranges {
        Some(specs)
            if request
                .if_range
                .as_deref()
                .is_none_or(|v| if_range_holds(v, &rep)) =>
        {
            Some(resolve(specs, rep.len))
        }
        _ => None,
    };

    match ranges {
        None => full(rep, head),
        Some(ranges) if ranges.is_empty() => {
            let mut response = validators(StatusCode::RANGE_NOT_SATISFIABLE, &rep);
            let h = response.headers_mut();
            h.insert(header::CONTENT_RANGE, value(format!("bytes */{}", rep.len)));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Some(ranges) if ranges.len() == 1 => {
            let (first, last) = ranges[0];
            let mut response = body(
                StatusCode::PARTIAL_CONTENT,
                &rep,
                rep.content_type,
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

/// Opens `root/rel` and checks that it is a regular file inside the root.
fn open(content: &Content, rel: &Path) -> Result<Representation, StatusCode> {
    let canonical_root;
    let root: &Path = match &content.canonical {
        Some(root) => root,
        None => {
            canonical_root = std::fs::canonicalize(&content.root).map_err(|e| {
                tracing::warn!(root = %content.root.display(), error = %e, "content: store root unavailable");
                StatusCode::NOT_FOUND
            })?;
            &canonical_root
        }
    };
    let path = root.join(rel);

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
        None => std::fs::metadata(&path).map_err(|e| open_error(&e))?,
    };
    if !before.is_file() {
        return Err(StatusCode::NOT_FOUND);
    }
    let file = File::open(&path).map_err(|e| open_error(&e))?;
    let meta = file.metadata().map_err(|e| internal(&e))?;
    // The same (device, inode) as checked: whatever was renamed or swapped in
    // between, the file opened is the one that was found inside the root.
    if !meta.is_file() || meta.ino() != before.ino() || meta.dev() != before.dev() {
        return Err(StatusCode::NOT_FOUND);
    }
    // Through a symlink, only where the file really is can tell.
    if through_symlink && !resolves_inside(&file, &path, root) {
        return Err(StatusCode::NOT_FOUND);
    }

    let len = meta.len();
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let content_type = match rel.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("appv") => "application/appv",
        Some(e) if e.eq_ignore_ascii_case("xml") => "application/xml",
        Some(e) if e.eq_ignore_ascii_case("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok(Representation {
        file,
        len,
        mtime,
        // nginx's format, so that nodes and nginx mirrors of one share agree.
        etag: format!("\"{mtime:x}-{len:x}\""),
        last_modified: httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime)),
        content_type,
    })
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
fn if_range_holds(field: &str, rep: &Representation) -> bool {
    let field = field.trim();
    if field.starts_with('"') {
        field == rep.etag
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

fn full(rep: Representation, head: bool) -> Response {
    let len = rep.len;
    let parts = if head {
        Vec::new()
    } else {
        vec![Part::File(0, len)]
    };
    let mut response = body(StatusCode::OK, &rep, rep.content_type, parts);
    // For HEAD the body is empty but the length is the file's.
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, value(len.to_string()));
    response
}

fn multipart(rep: Representation, ranges: &[(u64, u64)]) -> Response {
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
    let content_type = format!("multipart/byteranges; boundary={boundary}");
    body(StatusCode::PARTIAL_CONTENT, &rep, &content_type, parts)
}

/// A response with the file's validators, `content_type` and `parts` as body
/// (read now if small, streamed otherwise).
fn body(
    status: StatusCode,
    rep: &Representation,
    content_type: &str,
    parts: Vec<Part>,
) -> Response {
    let len: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Static(b) => b.len() as u64,
            Part::File(_, n) => *n,
        })
        .sum();
    let body = if len <= INLINE_LIMIT {
        match read_inline(&rep.file, &parts, len) {
            Ok(bytes) => Body::from(bytes),
            Err(e) => return empty(internal(&e)),
        }
    } else {
        match rep.file.try_clone() {
            Ok(file) => stream(Arc::new(file), parts),
            Err(e) => return empty(internal(&e)),
        }
    };
    let mut response = validators(status, rep);
    *response.body_mut() = body;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, value(content_type.to_owned()));
    h.insert(header::CONTENT_LENGTH, value(len.to_string()));
    response
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
/// (`seek` + `take(n).read_to_end` would skip zeroing the buffer, but std
/// reads in growing 8, 16, 32 KiB steps: four syscalls for 64 KiB instead of
/// one; measured, the two cost the same, and this one is simpler.)
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

/// A bodiless response carrying the file's validators and `Accept-Ranges`.
fn validators(status: StatusCode, rep: &Representation) -> Response {
    let mut response = empty(status);
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(rep.etag.clone()));
    h.insert(header::LAST_MODIFIED, value(rep.last_modified.clone()));
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
