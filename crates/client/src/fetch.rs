//! The streaming engine: byte ranges of package files from several content
//! mirrors, and verified 64 KiB blocks built on them.
//!
//! # Where a package lives
//!
//! A package version's file is `<mirror base>/packages/<PackageId>/<VersionId>.appv`
//! ([`package_path`]) on every mirror. A base is `http://`, `https://` (reqwest
//! over rustls, one pooled keep-alive client for every mirror; HTTP/2 when a TLS
//! server offers it by ALPN, HTTP/1.1 otherwise and on cleartext) or `file://`
//! (a mounted share, read with positional reads on a blocking thread).
//! [`split_package_url`] turns a published package URL into a base and a path.
//! [`apply_package_source_root`] implements App-V's `PackageSourceRoot`: the
//! configured root replaces everything in a package URL before its
//! `packages/<PackageId>/<VersionId>.appv` tail (or, for a URL without that
//! tail, before its last path segment); see the function for the exact rule.
//!
//! # Failover (after CVMFS's download manager)
//!
//! [`Fetcher`] keeps the mirror list in preference order and one *current*
//! mirror, the first one at start.
//! - Every attempt (one HTTP request or one file read) has its own timeout,
//!   [`FetchConfig::request_timeout`] (and [`FetchConfig::connect_timeout`] for the
//!   TCP/TLS connect).
//! - An attempt that fails (connection refused or reset, timeout, an HTTP status
//!   other than the expected `206`, a short or overlong body, a file error) moves
//!   on to the next mirror in the list, and the switch is remembered: the next
//!   operation starts from the mirror that last answered.
//! - When every mirror has failed once, that is one round; the fetcher sleeps
//!   (exponential backoff from [`FetchConfig::backoff_initial`], doubled each round,
//!   at most [`FetchConfig::backoff_max`]) and tries another round, up to
//!   [`FetchConfig::retries`] extra rounds; then the operation fails with
//!   [`FetchError::Unavailable`].
//! - After [`FetchConfig::failback_after`] on another mirror, the next operation
//!   starts again from the first one (it may have come back; if not, the first
//!   failure moves on again at the cost of one attempt).
//! - A mirror that serves a block whose SHA-256 does not match the block map is
//!   treated like a failed one (switched away from), and the block is fetched
//!   again from the other mirrors, each at most once; a block is never handed
//!   out unverified, and when every mirror serves bad bytes the read fails with
//!   [`FetchError::Corrupt`].
//!
//! # Bounds
//!
//! Every public operation ([`Fetcher::fetch`], [`RemotePackage::block`],
//! [`RemotePackage::blocks`] including its re-fetches of bad blocks, and each of
//! the few reads [`Package::open_with`] makes while [`RemotePackage::open`]
//! opens a package) is bounded as a whole by [`FetchConfig::read_timeout`]: past it the
//! operation fails with [`FetchError::TimedOut`], whatever the mirrors do (a
//! mirror that accepts and never answers, a hard-mounted share that blocks).
//! Both that and the other failures map to `EIO` ([`FetchError::errno`]). Nothing
//! is poisoned by a failure: the next call tries the mirrors again, so reads work
//! again as soon as one returns. A coalesced read is at most [`MAX_COALESCE`]
//! blocks per request; a response body is never read past the requested length.
//!
//! # Async core, blocking facade
//!
//! Everything is async on tokio. A [`Fetcher`] is created inside a runtime and
//! keeps that runtime's [`Handle`]; the `*_blocking` methods run the async
//! operation on it with [`Handle::block_on`], for FUSE worker threads (any
//! thread that is *not* one of the runtime's own workers: calling them there
//! panics, as `block_on` does). [`Package`] reads its source synchronously, so
//! [`RemotePackage::open`] runs the open on a blocking thread
//! (`spawn_blocking`) over a [`RemoteSource`] whose reads use the blocking facade.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avail_format::{BLOCK_SIZE, FormatError, Limits, Package, ReadAt};
use bytes::{Bytes, BytesMut};
use reqwest::{StatusCode, Url, header};
use tokio::runtime::Handle;
use uuid::Uuid;

/// The most blocks fetched in one coalesced request by [`RemotePackage::blocks`]
/// (4 MiB uncompressed); a longer run is split into several requests.
pub const MAX_COALESCE: usize = 64;

/// Bytes fetched from the end of the file when a package is opened: the
/// end-of-central-directory record and, for most packages, the central
/// directory with it, in one request.
pub const TAIL_FETCH: u64 = 64 * 1024;

/// The unit of [`RemoteSource`]'s read-through buffer for small reads.
const WINDOW: u64 = 64 * 1024;

/// How many read-through windows a [`RemoteSource`] keeps.
const WINDOWS: usize = 8;

/// `EIO`, what the FUSE layer answers for every [`FetchError`].
pub const EIO: i32 = 5;

/// The relative path of a package version's file on a mirror.
pub fn package_path(package_id: Uuid, version_id: Uuid) -> String {
    format!("packages/{package_id}/{version_id}.appv")
}

/// App-V's `PackageSourceRoot`: where the client streams a package from instead
/// of the URL the publishing server gave.
///
/// The rule: the package URL's tail `packages/<PackageId>/<VersionId>.appv`
/// (matched case-insensitively on `packages/`) is kept and appended to `root`,
/// which replaces everything before it (scheme, host, share, any prefix). A URL
/// without that tail keeps only its last path segment (the `.appv` file name),
/// as App-V keeps the package's file under the new root. `root` may be
/// `http(s)://` or `file://` (the protocol follows the root, as in App-V); an
/// empty root leaves the URL unchanged. Trailing `/` on the root are ignored.
///
/// `apply_package_source_root("http://a/content/packages/P/V.appv", "file:///mnt/share")`
/// is `"file:///mnt/share/packages/P/V.appv"`.
pub fn apply_package_source_root(package_url: &str, root: &str) -> String {
    let root = root.trim().trim_end_matches('/');
    if root.is_empty() {
        return package_url.to_owned();
    }
    // Drop a query or fragment: the file is named by the path.
    let url = package_url.split(['?', '#']).next().unwrap_or_default();
    let lower = url.to_ascii_lowercase();
    let tail = match lower.rfind("/packages/") {
        Some(at) if url[at + 1..].matches('/').count() == 2 => &url[at + 1..],
        _ => url.rsplit('/').next().unwrap_or_default(),
    };
    format!("{root}/{tail}")
}

/// Split a package URL (from the publishing document, after
/// [`apply_package_source_root`]) into the mirror base and the path a
/// [`Fetcher`] asks for: `("http://a/content", "packages/P/V.appv")`. `None`
/// when the URL does not end with `packages/<PackageId>/<VersionId>.appv`.
pub fn split_package_url(package_url: &str) -> Option<(&str, &str)> {
    let at = package_url.to_ascii_lowercase().rfind("/packages/")?;
    let path = &package_url[at + 1..];
    let mut parts = path.split('/');
    let (_, id, file) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && !id.is_empty()
        && file.len() > ".appv".len()
        && file.to_ascii_lowercase().ends_with(".appv");
    ok.then_some((&package_url[..at], path))
}

/// How a [`Fetcher`] times out, retries and fails over.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// One attempt on one mirror (a whole HTTP request with its body, or a file read).
    pub request_timeout: Duration,
    /// The TCP (and TLS) connect of an HTTP attempt.
    pub connect_timeout: Duration,
    /// Extra rounds over the mirror list after the first one failed everywhere.
    pub retries: u32,
    /// Sleep after the first failed round; doubled after each further one.
    pub backoff_initial: Duration,
    /// The longest sleep between rounds.
    pub backoff_max: Duration,
    /// The bound of a whole operation (the client's "read timeout"): past it, `TimedOut`.
    pub read_timeout: Duration,
    /// Time on a later mirror after which operations start from the first mirror again.
    pub failback_after: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            retries: 2,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            failback_after: Duration::from_secs(300),
        }
    }
}

/// Why a fetch failed. Every variant is `EIO` to a reader ([`FetchError::errno`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The operation did not complete within [`FetchConfig::read_timeout`].
    #[error("{path}: not served within the read timeout of {bound:?}")]
    TimedOut {
        /// The package path.
        path: String,
        /// The bound that was hit.
        bound: Duration,
    },
    /// Every mirror failed in every round.
    #[error("{path} {what}: every mirror failed (last: {last})")]
    Unavailable {
        /// The package path.
        path: String,
        /// What was asked (a byte range, the tail).
        what: String,
        /// The last mirror's error.
        last: String,
    },
    /// Every mirror served bytes that fail the block's SHA-256 (or do not inflate).
    #[error("{path}: block {block} of file #{file} failed verification on every mirror")]
    Corrupt {
        /// The package path.
        path: String,
        /// File index in the package.
        file: usize,
        /// Block index in the file.
        block: usize,
    },
    /// A mirror base that is not an `http(s)://` or `file://` URL.
    #[error("bad mirror URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same blocks failed moments ago (the kernel retries a failed page
    /// read at once); not fetched again so soon.
    #[error("{path}: these blocks failed {ago:?} ago; not retried yet")]
    RecentlyFailed {
        /// The package path.
        path: String,
        /// How long ago the failure ended.
        ago: Duration,
    },
    /// No mirror was configured.
    #[error("no content mirror configured")]
    NoMirrors,
    /// The fetcher was created outside a tokio runtime.
    #[error("the fetcher must be created inside a tokio runtime")]
    NoRuntime,
    /// The package itself is refused (structure, limits), or a block index is out of range.
    #[error(transparent)]
    Format(FormatError),
}

impl FetchError {
    /// The errno a file-system read answers: always `EIO`.
    pub fn errno(&self) -> i32 {
        EIO
    }

    /// Whether this is the read-timeout bound.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FetchError::TimedOut { .. })
    }
}

impl From<FormatError> for FetchError {
    /// A format error caused by a failed read of a [`RemoteSource`] gives back
    /// the fetch error that caused it (so a timeout stays a timeout).
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Io { context, source } => {
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<FetchError>())
                {
                    let inner = source.into_inner().expect("checked to hold an error");
                    *inner
                        .downcast::<FetchError>()
                        .expect("checked to be a FetchError")
                } else {
                    FetchError::Format(FormatError::Io { context, source })
                }
            }
            other => FetchError::Format(other),
        }
    }
}

/// A result of this module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
enum Mirror {
    Http(String),
    File(PathBuf),
}

impl Mirror {
    fn parse(base: &str) -> Result<Self> {
        let bad = |reason: &str| FetchError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" | "https" => Ok(Mirror::Http(base.trim_end_matches('/').to_owned())),
            "file" => url
                .to_file_path()
                .map(Mirror::File)
                .map_err(|()| bad("not a local path")),
            _ => Err(bad("only http://, https:// and file:// are supported")),
        }
    }
}

/// What one attempt asks for.
#[derive(Debug, Clone)]
enum Ask {
    /// These bytes.
    Range(Range<u64>),
    /// The last `n` bytes (fewer if the file is shorter), with the file's length.
    Tail(u64),
}

impl Ask {
    fn describe(&self) -> String {
        match self {
            Ask::Range(r) => format!("bytes {}..{}", r.start, r.end),
            Ask::Tail(n) => format!("last {n} bytes"),
        }
    }
}

/// What one attempt got: the bytes, and the file's total length when the answer told.
struct Got {
    bytes: Bytes,
    total: Option<u64>,
}

struct Preference {
    current: usize,
    since: Instant,
}

struct Inner {
    mirrors: Vec<Mirror>,
    bases: Vec<String>,
    client: reqwest::Client,
    config: FetchConfig,
    preference: Mutex<Preference>,
    handle: Handle,
}

/// Range fetches over a list of mirrors, with per-request timeouts, retries,
/// remembered failover and a bound on every operation (see the module doc).
/// Cheap to clone: clones share the mirror preference and the connection pool.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("mirrors", &self.inner.bases)
            .field("current", &self.current_mirror())
            .finish()
    }
}

impl Fetcher {
    /// A fetcher over mirror bases in preference order (`http(s)://…` or
    /// `file:///…`, each the directory holding `packages/`). Must be called inside
    /// a tokio runtime, whose handle the blocking facade uses.
    pub fn new<S: AsRef<str>>(mirrors: &[S], config: FetchConfig) -> Result<Self> {
        if mirrors.is_empty() {
            return Err(FetchError::NoMirrors);
        }
        let handle = Handle::try_current().map_err(|_| FetchError::NoRuntime)?;
        let parsed = mirrors
            .iter()
            .map(|m| Mirror::parse(m.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("avail-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::BadUrl {
                url: String::new(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            inner: Arc::new(Inner {
                mirrors: parsed,
                bases: mirrors.iter().map(|m| m.as_ref().to_owned()).collect(),
                client,
                config,
                preference: Mutex::new(Preference {
                    current: 0,
                    since: Instant::now(),
                }),
                handle,
            }),
        })
    }

    /// The mirror bases, in preference order.
    pub fn mirrors(&self) -> &[String] {
        &self.inner.bases
    }

    /// The configuration.
    pub fn config(&self) -> &FetchConfig {
        &self.inner.config
    }

    /// The runtime the blocking facade runs on.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Index of the mirror the next operation starts from (failback applied).
    pub fn current_mirror(&self) -> usize {
        self.start_mirror()
    }

    /// Bytes `range` of the file at `path` (relative to every mirror base, e.g.
    /// [`package_path`]), from the first mirror that serves them.
    pub async fn fetch(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.bounded(path, async {
            let none = vec![false; self.inner.mirrors.len()];
            self.fetch_from(path, Ask::Range(range), &none)
                .await
                .map(|(_, got)| got.bytes)
        })
        .await
    }

    /// The total length of the file at `path` and its last `n` bytes (all of
    /// it when shorter), in one request.
    pub async fn fetch_tail(&self, path: &str, n: u64) -> Result<(u64, Bytes)> {
        self.bounded(path, async {
            let none = vec![false; self.inner.mirrors.len()];
            let (_, got) = self.fetch_from(path, Ask::Tail(n), &none).await?;
            let total = got.total.unwrap_or(got.bytes.len() as u64);
            Ok((total, got.bytes))
        })
        .await
    }

    /// [`Fetcher::fetch`] for a thread outside the runtime (a FUSE worker).
    pub fn fetch_blocking(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.handle.block_on(self.fetch(path, range))
    }

    /// Run `op` under the read-timeout bound.
    async fn bounded<T>(&self, path: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        let bound = self.inner.config.read_timeout;
        match tokio::time::timeout(bound, op).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(path, ?bound, "read timeout: no mirror served in time");
                Err(FetchError::TimedOut {
                    path: path.to_owned(),
                    bound,
                })
            }
        }
    }

    fn start_mirror(&self) -> usize {
        let mut p = self
            .inner
            .preference
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.current != 0 && p.since.elapsed() >= self.inner.config.failback_after {
            tracing::info!(mirror = %self.inner.bases[0], "returning to the first mirror");
            p.current = 0;
            p.since = Instant::now();
        }
        p.current
    }

    /// Mirror `m` answered: remember it.
    fn remember(&self, m: usize) {
        let mut p = self
            .inner
            .preference
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.current != m {
            p.current = m;
            p.since = Instant::now();
        }
    }

    /// Mirror `m` failed: if it is the current one, move to the next.
    fn switch_from(&self, m: usize) {
        let n = self.inner.mirrors.len();
        let mut p = self
            .inner
            .preference
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.current == m && n > 1 {
            p.current = (m + 1) % n;
            p.since = Instant::now();
            tracing::warn!(
                from = %self.inner.bases[m],
                to = %self.inner.bases[p.current],
                "switching mirror"
            );
        }
    }

    /// Rounds over the mirrors not `excluded`, starting from the current one.
    async fn fetch_from(&self, path: &str, ask: Ask, excluded: &[bool]) -> Result<(usize, Got)> {
        if let Ask::Range(r) = &ask
            && r.start >= r.end
        {
            return Ok((
                self.start_mirror(),
                Got {
                    bytes: Bytes::new(),
                    total: None,
                },
            ));
        }
        let cfg = &self.inner.config;
        let n = self.inner.mirrors.len();
        let mut backoff = cfg.backoff_initial;
        let mut last = String::from("no mirror left to try");
        for round in 0..=cfg.retries {
            let start = self.start_mirror();
            let mut tried = false;
            for i in 0..n {
                let m = (start + i) % n;
                if excluded.get(m).copied().unwrap_or(false) {
                    continue;
                }
                tried = true;
                let attempt =
                    tokio::time::timeout(cfg.request_timeout, self.attempt(m, path, &ask));
                match attempt.await {
                    Ok(Ok(got)) => {
                        self.remember(m);
                        return Ok((m, got));
                    }
                    Ok(Err(e)) => last = format!("{}: {e}", self.inner.bases[m]),
                    Err(_) => {
                        last = format!(
                            "{}: no answer within {:?}",
                            self.inner.bases[m], cfg.request_timeout
                        )
                    }
                }
                tracing::warn!(path, ask = ask.describe(), error = %last, "mirror failed");
                self.switch_from(m);
            }
            if !tried {
                break;
            }
            if round < cfg.retries {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
        Err(FetchError::Unavailable {
            path: path.to_owned(),
            what: ask.describe(),
            last,
        })
    }

    async fn attempt(&self, m: usize, path: &str, ask: &Ask) -> Result<Got, String> {
        match &self.inner.mirrors[m] {
            Mirror::Http(base) => self.attempt_http(&format!("{base}/{path}"), ask).await,
            Mirror::File(dir) => {
                let file = dir.join(path);
                let ask = ask.clone();
                tokio::task::spawn_blocking(move || read_file(&file, &ask))
                    .await
                    .map_err(|e| format!("file read task failed: {e}"))?
            }
        }
    }

    async fn attempt_http(&self, url: &str, ask: &Ask) -> Result<Got, String> {
        let value = match ask {
            Ask::Range(r) => format!("bytes={}-{}", r.start, r.end - 1),
            Ask::Tail(n) => format!("bytes=-{n}"),
        };
        let mut resp = self
            .inner
            .client
            .get(url)
            .header(header::RANGE, value)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let content_range = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        // What the body must be: its offset in the file and length.
        let (len, total) = match (status, ask) {
            (StatusCode::PARTIAL_CONTENT, _) => {
                let (a, b, total) = content_range.ok_or("206 without a usable Content-Range")?;
                if let Ask::Range(r) = ask
                    && (a != r.start || b + 1 != r.end)
                {
                    return Err(format!("asked {}..{}, got {a}..{}", r.start, r.end, b + 1));
                }
                if let Ask::Tail(n) = ask
                    && (total.is_none_or(|t| b + 1 != t) || b + 1 - a > *n)
                {
                    return Err(format!("asked the last {n} bytes, got {a}..{}", b + 1));
                }
                (b + 1 - a, total)
            }
            // A server that ignores ranges: acceptable only where the prefix is the answer.
            (StatusCode::OK, Ask::Range(r)) if r.start == 0 => (r.end, None),
            (StatusCode::OK, Ask::Tail(n)) => match resp.content_length() {
                Some(total) if total <= *n => (total, Some(total)),
                _ => return Err("200 for a suffix range, longer than asked".into()),
            },
            (s, _) => return Err(format!("HTTP {s}")),
        };
        let want = usize::try_from(len).map_err(|_| "range too large")?;
        let mut body = BytesMut::with_capacity(want.min(16 << 20));
        while body.len() < want {
            match resp.chunk().await.map_err(|e| error_chain(&e))? {
                Some(chunk) => body.extend_from_slice(&chunk[..chunk.len().min(want - body.len())]),
                None => return Err(format!("short body: {} of {want} bytes", body.len())),
            }
        }
        Ok(Got {
            bytes: body.freeze(),
            total,
        })
    }

    /// How many mirrors there are.
    fn mirrors_count(&self) -> usize {
        self.inner.mirrors.len()
    }
}

/// `bytes a-b/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if b < a {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a, b, total))
}

/// An error with its causes on one line (reqwest's own message hides
/// "connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn read_file(file: &std::path::Path, ask: &Ask) -> Result<Got, String> {
    use std::os::unix::fs::FileExt;
    let show = |e: io::Error| format!("{}: {e}", file.display());
    let f = std::fs::File::open(file).map_err(show)?;
    let total = f.metadata().map_err(show)?.len();
    let range = match ask {
        Ask::Range(r) => r.clone(),
        Ask::Tail(n) => total.saturating_sub(*n)..total,
    };
    if range.end > total {
        return Err(format!("{}: shorter than {}", file.display(), range.end));
    }
    let mut buf = vec![0; (range.end - range.start) as usize];
    FileExt::read_exact_at(&f, &mut buf, range.start).map_err(show)?;
    Ok(Got {
        bytes: buf.into(),
        total: Some(total),
    })
}

/// A package file on the mirrors as a [`ReadAt`] source, for [`Package::open_with`].
///
/// Knows the file's length and its last [`TAIL_FETCH`] bytes from the open;
/// small reads (the metadata parts, read in pieces) go through a buffer of the
/// last few 64 KiB-aligned windows, so opening costs a handful of requests.
/// Reads block on the fetcher's runtime: use it from a blocking thread.
pub struct RemoteSource {
    fetcher: Fetcher,
    path: String,
    len: u64,
    tail_start: u64,
    tail: Bytes,
    windows: Mutex<VecDeque<(u64, Bytes)>>,
    /// Ranges known before they were read, by offset: those of a saved
    /// [`OpenedRanges`] and those fetched by [`ReadAt::prefetch`].
    known: Mutex<BTreeMap<u64, Bytes>>,
    /// Every range fetched, while their total stays within [`MAX_OPENED_BYTES`].
    recorded: Mutex<(u64, Vec<(u64, Bytes)>)>,
}

/// Ranges [`ReadAt::prefetch`] is told of that lie at most this far apart
/// are fetched as one (the bytes between them come along).
pub const PREFETCH_GAP: u64 = 4096;

/// Requests [`ReadAt::prefetch`] makes at once.
pub const PREFETCH_CONCURRENCY: usize = 16;

/// The most bytes of a package file an [`OpenedRanges`] keeps.
pub const MAX_OPENED_BYTES: u64 = 64 << 20;

/// The bytes of a package file that opening it read (its tail, central
/// directory and metadata parts) and its length: saved by the client daemon
/// so that a package version it added once opens again with no mirror
/// reachable ([`RemotePackage::open_saved`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenedRanges {
    /// The file's length.
    pub len: u64,
    /// `(offset, bytes)`, sorted by offset.
    pub ranges: Vec<(u64, Bytes)>,
}

const OPENED_MAGIC: &[u8; 8] = b"AVOPEN1\n";

impl OpenedRanges {
    /// The ranges as one byte string: a magic, the length, the count, each
    /// range (offset, length, bytes) and the SHA-256 of all that.
    pub fn encode(&self) -> Vec<u8> {
        use sha2::{Digest as _, Sha256};
        let mut out = Vec::new();
        out.extend_from_slice(OPENED_MAGIC);
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&(self.ranges.len() as u64).to_le_bytes());
        for (offset, bytes) in &self.ranges {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Reads what [`OpenedRanges::encode`] wrote; `None` for anything else
    /// (a torn or altered file): every count and length is checked against
    /// the input before it is used.
    pub fn decode(input: &[u8]) -> Option<OpenedRanges> {
        use sha2::{Digest as _, Sha256};
        let body_len = input.len().checked_sub(32)?;
        let (body, digest) = input.split_at(body_len);
        if Sha256::digest(body).as_slice() != digest || !body.starts_with(OPENED_MAGIC) {
            return None;
        }
        let mut rest = &body[OPENED_MAGIC.len()..];
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            *rest = tail;
            Some(head)
        }
        fn number(rest: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
        }
        let len = number(&mut rest)?;
        let count = number(&mut rest)?;
        let mut ranges = Vec::new();
        for _ in 0..count {
            let offset = number(&mut rest)?;
            let n = usize::try_from(number(&mut rest)?).ok()?;
            let bytes = take(&mut rest, n)?;
            if offset.checked_add(n as u64)? > len {
                return None;
            }
            ranges.push((offset, Bytes::copy_from_slice(bytes)));
        }
        rest.is_empty().then_some(OpenedRanges { len, ranges })
    }
}

impl RemoteSource {
    /// Learn the file's length (one request for its tail).
    pub async fn open(fetcher: Fetcher, path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        let (len, tail) = fetcher.fetch_tail(&path, TAIL_FETCH).await?;
        let tail_start = len - tail.len() as u64;
        Ok(RemoteSource {
            fetcher,
            tail_start,
            path,
            len,
            recorded: Mutex::new((tail.len() as u64, vec![(tail_start, tail.clone())])),
            tail,
            windows: Mutex::new(VecDeque::new()),
            known: Mutex::new(BTreeMap::new()),
        })
    }

    /// A source that answers from `saved` and fetches only what it lacks.
    pub fn from_saved(fetcher: Fetcher, path: impl Into<String>, saved: OpenedRanges) -> Self {
        RemoteSource {
            fetcher,
            path: path.into(),
            len: saved.len,
            tail_start: saved.len,
            tail: Bytes::new(),
            windows: Mutex::new(VecDeque::new()),
            known: Mutex::new(saved.ranges.into_iter().collect()),
            recorded: Mutex::new((0, Vec::new())),
        }
    }

    /// What was read of the file so far: the saved ranges and those fetched.
    pub fn opened_ranges(&self) -> OpenedRanges {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut ranges: Vec<(u64, Bytes)> = known
            .iter()
            .map(|(o, b)| (*o, b.clone()))
            .chain(recorded.1.iter().cloned())
            .collect();
        ranges.sort_by_key(|(offset, bytes)| (*offset, std::cmp::Reverse(bytes.len())));
        // Drop ranges inside an earlier one.
        let mut kept: Vec<(u64, Bytes)> = Vec::with_capacity(ranges.len());
        for (offset, bytes) in ranges {
            let inside = kept
                .last()
                .is_some_and(|(o, b)| offset + bytes.len() as u64 <= o + b.len() as u64);
            if !inside {
                kept.push((offset, bytes));
            }
        }
        OpenedRanges {
            len: self.len,
            ranges: kept,
        }
    }

    fn record(&self, offset: u64, bytes: &Bytes) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.0 + bytes.len() as u64 <= MAX_OPENED_BYTES {
            recorded.0 += bytes.len() as u64;
            recorded.1.push((offset, bytes.clone()));
        }
    }

    /// The path on the mirrors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The fetcher.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    fn cached(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let copy = |start: u64, bytes: &Bytes, buf: &mut [u8]| {
            if offset >= start && end <= start + bytes.len() as u64 {
                let at = (offset - start) as usize;
                buf.copy_from_slice(&bytes[at..at + buf.len()]);
                true
            } else {
                false
            }
        };
        if copy(self.tail_start, &self.tail, buf) {
            return true;
        }
        {
            // The range holding `offset` starts at or before it: one of the
            // last few such (ranges may overlap a little).
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known
                .range(..=offset)
                .rev()
                .take(4)
                .any(|(start, bytes)| copy(*start, bytes, buf))
            {
                return true;
            }
        }
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .iter()
            .any(|(start, bytes)| copy(*start, bytes, buf))
    }
}

impl ReadAt for RemoteSource {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    /// Fetches the ranges not known yet, those at most [`PREFETCH_GAP`] apart as
    /// one, up to [`PREFETCH_CONCURRENCY`] requests at a time; what fails is
    /// left for the read to fetch (and report).
    fn prefetch(&self, ranges: &[(u64, usize)]) {
        let mut runs: Vec<Range<u64>> = Vec::new();
        let mut probe = Vec::new();
        for &(start, len) in ranges {
            let end = start.saturating_add(len as u64).min(self.len);
            if start >= end {
                continue;
            }
            probe.resize((end - start) as usize, 0);
            if self.cached(start, &mut probe) {
                continue;
            }
            match runs.last_mut() {
                Some(run) if start <= run.end.saturating_add(PREFETCH_GAP) => {
                    run.end = run.end.max(end)
                }
                _ => runs.push(start..end),
            }
        }
        if runs.is_empty() {
            return;
        }
        let fetcher = self.fetcher.clone();
        let path = self.path.clone();
        let fetched = self.fetcher.handle().block_on(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
            let mut set = tokio::task::JoinSet::new();
            for run in runs {
                let (fetcher, path, slots) = (fetcher.clone(), path.clone(), slots.clone());
                set.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    fetcher
                        .fetch(&path, run.clone())
                        .await
                        .map(|b| (run.start, b))
                });
            }
            let mut fetched = Vec::new();
            while let Some(done) = set.join_next().await {
                if let Ok(Ok(range)) = done {
                    fetched.push(range);
                }
            }
            fetched
        });
        for (start, bytes) in fetched {
            self.record(start, &bytes);
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(start, bytes);
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the package",
                )
            })?;
        if buf.is_empty() || self.cached(offset, buf) {
            return Ok(());
        }
        let fail = |e: FetchError| io::Error::other(e);
        if buf.len() as u64 >= WINDOW {
            let bytes = self
                .fetcher
                .fetch_blocking(&self.path, offset..end)
                .map_err(fail)?;
            buf.copy_from_slice(&bytes);
            self.record(offset, &bytes);
            return Ok(());
        }
        // A small read: fetch the aligned window around it (two when it straddles).
        let start = offset - offset % WINDOW;
        let stop = (start + 2 * WINDOW).min(self.len).max(end);
        let stop = if end <= start + WINDOW {
            (start + WINDOW).min(self.len)
        } else {
            stop
        };
        let bytes = self
            .fetcher
            .fetch_blocking(&self.path, start..stop)
            .map_err(fail)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        self.record(start, &bytes);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() == WINDOWS {
            windows.pop_front();
        }
        windows.push_back((start, bytes));
        Ok(())
    }
}

/// A package opened remotely: its structure read through a [`RemoteSource`],
/// its blocks fetched coalesced and verified.
#[derive(Clone)]
pub struct RemotePackage {
    package: Arc<Package<RemoteSource>>,
}

impl RemotePackage {
    /// Open the package at `path` on the mirrors: fetch only its tail, central
    /// directory, block map, manifest, stream map and file-system metadata, and
    /// check its structure. Each read is bounded by the read timeout.
    pub async fn open(fetcher: Fetcher, path: impl Into<String>, limits: Limits) -> Result<Self> {
        let path = path.into();
        let source = RemoteSource::open(fetcher, path.clone()).await?;
        Self::read_structure(source, path, limits).await
    }

    /// Open the package at `path` from the ranges a previous open read
    /// ([`RemotePackage::opened_ranges`]), fetching only what they lack: no
    /// request at all when they are complete, so a package version opens
    /// while every mirror is down.
    pub async fn open_saved(
        fetcher: Fetcher,
        path: impl Into<String>,
        limits: Limits,
        saved: OpenedRanges,
    ) -> Result<Self> {
        let path = path.into();
        let source = RemoteSource::from_saved(fetcher, path.clone(), saved);
        Self::read_structure(source, path, limits).await
    }

    /// Reads and checks the package's structure from `source`, on a blocking
    /// thread (its reads block on the fetcher's runtime).
    async fn read_structure(source: RemoteSource, path: String, limits: Limits) -> Result<Self> {
        let package = tokio::task::spawn_blocking(move || Package::open_with(source, limits))
            .await
            .map_err(|e| FetchError::Unavailable {
                path,
                what: "open".into(),
                last: e.to_string(),
            })??;
        Ok(RemotePackage {
            package: Arc::new(package),
        })
    }

    /// The ranges of the file its open read, to open it again offline.
    pub fn opened_ranges(&self) -> OpenedRanges {
        self.package.source().opened_ranges()
    }

    /// [`RemotePackage::open`] for a thread outside the runtime.
    pub fn open_blocking(
        fetcher: Fetcher,
        path: impl Into<String>,
        limits: Limits,
    ) -> Result<Self> {
        let handle = fetcher.handle().clone();
        handle.block_on(Self::open(fetcher, path, limits))
    }

    /// The opened package (files, manifest, metadata).
    pub fn package(&self) -> &Package<RemoteSource> {
        &self.package
    }

    fn fetcher(&self) -> &Fetcher {
        &self.package.source().fetcher
    }

    fn path(&self) -> &str {
        &self.package.source().path
    }

    /// Block `k` of file `file`, verified.
    pub async fn block(&self, file: usize, k: usize) -> Result<Vec<u8>> {
        let mut blocks = self.blocks(file, k..k + 1).await?;
        Ok(blocks.pop().unwrap_or_default())
    }

    /// Blocks `range` of file `file`, verified, in order: one request per run of
    /// up to [`MAX_COALESCE`] blocks; a block that fails its hash is fetched again
    /// from the other mirrors. The whole call is bounded by the read timeout.
    pub async fn blocks(&self, file: usize, range: Range<usize>) -> Result<Vec<Vec<u8>>> {
        let Some(f) = self.package.files().get(file) else {
            return Err(FetchError::Format(FormatError::NotFound(format!(
                "file #{file}"
            ))));
        };
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        // Refuse an out-of-range block before asking any mirror.
        self.package.block_range(file, range.end - 1)?;
        let path = self.path().to_owned();
        let fetcher = self.fetcher().clone();
        fetcher
            .bounded(&path, async {
                let mut out = Vec::with_capacity(range.len());
                let mut first = range.start;
                while first < range.end {
                    let end = (first + MAX_COALESCE).min(range.end);
                    let whole = f.blocks_range(first, end);
                    let none = vec![false; fetcher.mirrors_count()];
                    let (served_by, got) = fetcher
                        .fetch_from(&path, Ask::Range(whole.clone()), &none)
                        .await?;
                    for k in first..end {
                        let r = self.package.block_range(file, k)?;
                        let raw = &got.bytes
                            [(r.start - whole.start) as usize..(r.end - whole.start) as usize];
                        let block = match self.package.decode_block(file, k, raw) {
                            Ok(block) => block,
                            Err(e) => self.refetch(file, k, r, served_by, e).await?,
                        };
                        out.push(block);
                    }
                    first = end;
                }
                Ok(out)
            })
            .await
    }

    /// Blocks of several files in one request: `segments` are `(file, block
    /// range)` pairs in package-file order whose bytes lie close together in
    /// the package file (the caller keeps the gaps small: the bytes between
    /// them, local headers or other blocks, are fetched and dropped; and to
    /// [`MAX_COALESCE`] blocks, as [`RemotePackage::blocks`] does). Every
    /// block is verified as by [`RemotePackage::blocks`] (a bad one is fetched
    /// again from the other mirrors); returned in order, flattened. Bounded by
    /// the read timeout as a whole.
    pub async fn span(&self, segments: &[(usize, Range<usize>)]) -> Result<Vec<Vec<u8>>> {
        let mut whole: Option<Range<u64>> = None;
        for (file, range) in segments {
            let Some(f) = self.package.files().get(*file) else {
                return Err(FetchError::Format(FormatError::NotFound(format!(
                    "file #{file}"
                ))));
            };
            if range.start >= range.end {
                continue;
            }
            self.package.block_range(*file, range.end - 1)?;
            let r = f.blocks_range(range.start, range.end);
            whole = Some(match whole {
                None => r,
                Some(w) => w.start.min(r.start)..w.end.max(r.end),
            });
        }
        let Some(whole) = whole else {
            return Ok(Vec::new());
        };
        let path = self.path().to_owned();
        let fetcher = self.fetcher().clone();
        fetcher
            .bounded(&path, async {
                let none = vec![false; fetcher.mirrors_count()];
                let (served_by, got) = fetcher
                    .fetch_from(&path, Ask::Range(whole.clone()), &none)
                    .await?;
                let mut out = Vec::new();
                for (file, range) in segments {
                    for k in range.clone() {
                        let r = self.package.block_range(*file, k)?;
                        let raw = &got.bytes
                            [(r.start - whole.start) as usize..(r.end - whole.start) as usize];
                        let block = match self.package.decode_block(*file, k, raw) {
                            Ok(block) => block,
                            Err(e) => self.refetch(*file, k, r, served_by, e).await?,
                        };
                        out.push(block);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Fetch a block that failed verification from every other mirror in turn.
    async fn refetch(
        &self,
        file: usize,
        k: usize,
        range: Range<u64>,
        bad: usize,
        error: FormatError,
    ) -> Result<Vec<u8>> {
        let fetcher = self.fetcher();
        let path = self.path();
        let mut excluded = vec![false; fetcher.mirrors_count()];
        let mut bad = bad;
        let mut error = error;
        loop {
            tracing::warn!(
                path,
                file,
                block = k,
                mirror = %fetcher.mirrors()[bad],
                %error,
                "a mirror served a bad block"
            );
            excluded[bad] = true;
            fetcher.switch_from(bad);
            if excluded.iter().all(|&x| x) {
                return Err(FetchError::Corrupt {
                    path: path.to_owned(),
                    file,
                    block: k,
                });
            }
            let (m, got) = match fetcher
                .fetch_from(path, Ask::Range(range.clone()), &excluded)
                .await
            {
                Ok(ok) => ok,
                // The other mirrors are down: what we have is a bad block.
                Err(FetchError::Unavailable { .. }) => {
                    return Err(FetchError::Corrupt {
                        path: path.to_owned(),
                        file,
                        block: k,
                    });
                }
                Err(e) => return Err(e),
            };
            match self.package.decode_block(file, k, &got.bytes) {
                Ok(block) => return Ok(block),
                Err(e) => {
                    bad = m;
                    error = e;
                }
            }
        }
    }

    /// [`RemotePackage::block`] for a thread outside the runtime (a FUSE worker).
    pub fn block_blocking(&self, file: usize, k: usize) -> Result<Vec<u8>> {
        self.fetcher().handle().block_on(self.block(file, k))
    }

    /// [`RemotePackage::blocks`] for a thread outside the runtime (a FUSE worker).
    pub fn blocks_blocking(&self, file: usize, range: Range<usize>) -> Result<Vec<Vec<u8>>> {
        self.fetcher().handle().block_on(self.blocks(file, range))
    }
}

/// Read-ahead for one open file, in blocks.
///
/// The policy (Linux's and CVMFS's, reduced to blocks, and made to tolerate
/// the kernel's read-ahead, which sends several reads of one file at once on
/// several FUSE threads, so that they arrive slightly out of order): a read
/// is sequential when it starts at block 0 with nothing read before, or near
/// the stream's frontier (the furthest block read so far) — at most the
/// window, and at least [`ReadAhead::NEAR`] blocks, before or after it. The
/// window then starts at [`ReadAhead::INITIAL`] blocks and doubles on every
/// further sequential read up to `max` blocks. Any other read is random: the
/// window drops to nothing and the frontier moves to it. A read of the same
/// blocks again keeps the window as it is. The blocks to fetch ahead are the
/// `window` blocks after the frontier, clipped to the file's end, less what
/// was asked for already, and only once half of what was asked for has been
/// read (the caller skips those it already has or is fetching).
///
/// A file read from its first block is most likely read whole: that first
/// read opens a window of the whole file when it fits in `max` blocks and in
/// [`ReadAhead::WHOLE`] (small files, most of a package, then cost one
/// request), else of [`ReadAhead::FIRST`] blocks.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    last: Option<Range<usize>>,
    frontier: usize,
    /// The end of the blocks already asked for ahead.
    issued: usize,
    window: usize,
    max: usize,
}

impl ReadAhead {
    /// The first window of a sequential read, in blocks (128 KiB).
    pub const INITIAL: usize = 2;

    /// The first window of a file read from its first block, when the file
    /// is larger than the largest window (1 MiB).
    pub const FIRST: usize = 16;

    /// The largest file a first read at its start fetches whole, in blocks
    /// (4 MiB: one coalesced request).
    pub const WHOLE: usize = MAX_COALESCE;

    /// How far from the frontier a read still counts as sequential, at least
    /// (the kernel's concurrent reads of 128 KiB each, a few in flight).
    pub const NEAR: usize = 8;

    /// Read-ahead growing to at most `max` blocks (0 disables it).
    pub fn new(max: usize) -> Self {
        ReadAhead {
            last: None,
            frontier: 0,
            issued: 0,
            window: 0,
            max,
        }
    }

    /// The current window, in blocks.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Record a read of blocks `read` of a file of `file_blocks` blocks, and
    /// return the blocks to fetch ahead (possibly empty).
    pub fn on_read(&mut self, read: Range<usize>, file_blocks: usize) -> Range<usize> {
        if self.last.as_ref() == Some(&read) {
            return self.ahead(file_blocks);
        }
        let near = self.window.max(Self::NEAR);
        let sequential = match self.last {
            None => read.start == 0,
            Some(_) => {
                read.start <= self.frontier.saturating_add(near)
                    && read.start.saturating_add(near) >= self.frontier
            }
        };
        if sequential {
            self.window = if self.last.is_none() {
                if file_blocks <= self.max.min(Self::WHOLE) {
                    file_blocks
                } else {
                    Self::FIRST.min(self.max)
                }
            } else if self.window == 0 {
                Self::INITIAL.min(self.max)
            } else {
                (self.window * 2).min(self.max)
            };
            self.frontier = self.frontier.max(read.end);
        } else {
            self.window = 0;
            self.frontier = read.end;
            self.issued = read.end;
        }
        self.last = Some(read);
        self.ahead(file_blocks)
    }

    /// The next blocks to ask for: none while more than half a window asked
    /// for is still ahead of the frontier (as Linux's asynchronous read-ahead
    /// marker), else from what was asked for up to a window past the
    /// frontier — one large request per half window, not one per read.
    fn ahead(&mut self, file_blocks: usize) -> Range<usize> {
        let end = (self.frontier + self.window).min(file_blocks);
        let outstanding = self.issued.saturating_sub(self.frontier);
        if self.window == 0 || outstanding > self.window / 2 {
            let at = self.issued.max(self.frontier).min(file_blocks);
            return at..at;
        }
        let start = self.issued.max(self.frontier).min(end);
        self.issued = end;
        start..end
    }
}

/// Blocks of a file that a byte range covers.
pub fn blocks_of(offset: u64, len: u64) -> Range<usize> {
    let b = BLOCK_SIZE as u64;
    if len == 0 {
        let k = (offset / b) as usize;
        return k..k;
    }
    (offset / b) as usize..offset.saturating_add(len).div_ceil(b) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_grows_on_sequential_reads() {
        let mut ra = ReadAhead::new(64);
        // A large file read from its start: a window of FIRST blocks, doubling.
        assert_eq!(ra.on_read(0..1, 1000), 1..17);
        assert_eq!(ra.on_read(1..2, 1000), 17..34);
        assert_eq!(ra.on_read(2..4, 1000), 34..68);
        // More than half a window is asked for ahead: nothing more yet.
        assert!(ra.on_read(4..6, 1000).is_empty());
        assert_eq!(ra.window(), 64);
        // Past the half: the next window-ahead in one piece.
        assert!(ra.on_read(6..30, 1000).is_empty());
        assert_eq!(ra.on_read(30..38, 1000), 68..102);
        // A small file read from its start: all of it at once.
        let mut ra = ReadAhead::new(64);
        assert_eq!(ra.on_read(0..2, 40), 2..40);
        // Whole only up to WHOLE blocks, however large the window may grow.
        let mut ra = ReadAhead::new(256);
        assert_eq!(ra.on_read(0..1, 64), 1..64);
        let mut ra = ReadAhead::new(256);
        assert_eq!(ra.on_read(0..1, 128), 1..17);
        // After a random read, a sequential run starts small again.
        let mut ra = ReadAhead::new(16);
        assert_eq!(ra.on_read(50..51, 100), 51..51);
        assert_eq!(ra.on_read(51..52, 100), 52..54);
        assert_eq!(ra.on_read(52..54, 100), 54..58);
        assert_eq!(ra.window(), 4);
    }

    #[test]
    fn read_ahead_keeps_growing_when_concurrent_reads_arrive_out_of_order() {
        // The kernel reads 0..2, then 2..4 and 4..6 at once; 4..6 arrives first.
        let mut ra = ReadAhead::new(64);
        assert_eq!(ra.on_read(0..2, 1000), 2..18);
        assert_eq!(ra.on_read(4..6, 1000), 18..38);
        assert_eq!(ra.on_read(2..4, 1000), 38..70);
        assert!(ra.on_read(8..10, 1000).is_empty());
        assert_eq!(ra.window(), 64);
    }

    #[test]
    fn read_ahead_resets_on_random_reads_and_clips() {
        let mut ra = ReadAhead::new(8);
        assert_eq!(ra.on_read(0..2, 100), 2..10);
        assert!(ra.on_read(2..4, 100).is_empty());
        // Far from the frontier: random.
        assert!(ra.on_read(40..41, 100).is_empty());
        assert_eq!(ra.window(), 0);
        assert_eq!(ra.on_read(41..42, 100), 42..44);
        // The same blocks again: same window, no growth, nothing new.
        assert!(ra.on_read(41..42, 100).is_empty());
        assert_eq!(ra.window(), ReadAhead::INITIAL);
        // Clipped at the file's end.
        assert_eq!(ra.on_read(42..44, 46), 44..46);
        // A first read in the middle of a file is random.
        let mut ra = ReadAhead::new(8);
        assert_eq!(ra.on_read(5..6, 10), 6..6);
        assert_eq!(ReadAhead::new(0).on_read(0..1, 10), 1..1);
    }

    #[test]
    fn blocks_of_ranges() {
        let b = BLOCK_SIZE as u64;
        assert_eq!(blocks_of(0, 1), 0..1);
        assert_eq!(blocks_of(b - 1, 2), 0..2);
        assert_eq!(blocks_of(b, b), 1..2);
        assert_eq!(blocks_of(3 * b, 0), 3..3);
    }

    #[test]
    fn package_source_root_rewrites() {
        let p = "packages/8c1e/4d2f.appv";
        assert_eq!(
            apply_package_source_root(&format!("http://a:8080/content/{p}"), "file:///mnt/share/"),
            format!("file:///mnt/share/{p}")
        );
        assert_eq!(
            apply_package_source_root(&format!("https://a/{p}?x=1"), "http://branch"),
            format!("http://branch/{p}")
        );
        assert_eq!(
            apply_package_source_root("http://a/apps/foo/Foo.appv", "http://branch/c"),
            "http://branch/c/Foo.appv"
        );
        assert_eq!(
            apply_package_source_root("http://a/x.appv", " "),
            "http://a/x.appv"
        );
    }

    #[test]
    fn package_urls_split() {
        assert_eq!(
            split_package_url("http://a/c/packages/P/V.appv"),
            Some(("http://a/c", "packages/P/V.appv"))
        );
        assert_eq!(
            split_package_url("file:///mnt/Packages/P/V.APPV"),
            Some(("file:///mnt", "Packages/P/V.APPV"))
        );
        assert_eq!(split_package_url("http://a/c/packages/V.appv"), None);
        assert_eq!(split_package_url("http://a/c/x/V.appv"), None);
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn errors_map_to_eio_and_keep_timeouts() {
        let t = FetchError::TimedOut {
            path: "p".into(),
            bound: Duration::from_secs(1),
        };
        let through = FormatError::Io {
            context: "reading".into(),
            source: io::Error::other(t),
        };
        let back = FetchError::from(through);
        assert!(back.is_timeout(), "{back}");
        assert_eq!(back.errno(), EIO);
    }
}
