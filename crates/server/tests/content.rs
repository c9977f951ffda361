//! The content role over HTTP: full and partial `GET`, `HEAD`, multipart byte
//! ranges, validators and conditional requests, and every path trick that
//! could reach outside the store. Most tests drive the router directly with
//! `tower::ServiceExt::oneshot`; some go through a real socket so that hyper's
//! framing (Content-Length on `HEAD`, multi-frame bodies) is covered too. The
//! last ones are about the role's cache of mapped files: a file replaced,
//! rewritten, deleted or swapped for a symlink is never served stale, mixed or
//! from outside the store.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use avail_server::content::{self, CHUNK, INLINE_LIMIT, MAX_RANGES};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tempfile::TempDir;
use tower::ServiceExt;

/// Size of `pkg/app.appv`: under the inline limit (of the `pread` fallback).
const SMALL: usize = 200_000;
/// Size of `pkg/big.appv`: several chunks (of the `pread` fallback).
const BIG: usize = 3 * CHUNK as usize + 12_345;

/// Deterministic, position-dependent bytes, so that a range taken from the
/// wrong offset cannot compare equal.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Store {
    _dir: TempDir,
    root: PathBuf,
    small: Vec<u8>,
    big: Vec<u8>,
}

/// `<tmp>/store` is the root; `<tmp>/outside/secret` must never be served.
fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(
        dir.path().join("outside/secret"),
        b"SECRET outside the store",
    )
    .unwrap();

    let small = data(SMALL, 1);
    let big = data(BIG, 2);
    std::fs::write(pkg.join("app.appv"), &small).unwrap();
    std::fs::write(pkg.join("big.appv"), &big).unwrap();
    std::fs::write(pkg.join("notes.txt"), b"plain").unwrap();
    std::fs::write(root.join(".staging"), b"half-written").unwrap();
    // Where the management role stages unverified uploads.
    std::fs::create_dir_all(root.join(".incoming")).unwrap();
    std::fs::write(root.join(".incoming/upload.part"), b"unverified").unwrap();
    std::os::unix::fs::symlink("../outside/secret", root.join("escape")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    std::os::unix::fs::symlink("pkg/app.appv", root.join("alias.appv")).unwrap();
    Store {
        _dir: dir,
        root,
        small,
        big,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

async fn call(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    call(app, Method::GET, uri, headers).await
}

/// A whole-file `200` with the right bytes and headers.
fn assert_full(reply: &Reply, expected: &[u8]) {
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_LENGTH),
        expected.len().to_string()
    );
    assert!(reply.body == expected, "full body differs");
    assert!(!reply.headers.contains_key(header::CONTENT_RANGE));
}

/// A single-part `206` for `first..=last` of `expected`.
fn assert_single(reply: &Reply, expected: &[u8], first: usize, last: usize) {
    assert_eq!(
        reply.status,
        StatusCode::PARTIAL_CONTENT,
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.header(header::CONTENT_RANGE),
        format!("bytes {first}-{last}/{}", expected.len())
    );
    assert_eq!(
        reply.header(header::CONTENT_LENGTH),
        (last - first + 1).to_string()
    );
    assert!(reply.body == expected[first..=last], "range body differs");
}

/// Parses a `multipart/byteranges` body strictly (framing by the lengths that
/// each part's Content-Range announces) into `(first, last, total, bytes)`.
fn parse_multipart(reply: &Reply) -> Vec<(usize, usize, usize, Vec<u8>)> {
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert!(!reply.headers.contains_key(header::CONTENT_RANGE));
    let content_type = reply.header(header::CONTENT_TYPE);
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content type {content_type}"));
    assert_eq!(
        reply.header(header::CONTENT_LENGTH),
        reply.body.len().to_string()
    );

    let body = &reply.body[..];
    let mut at = 0;
    let mut parts = Vec::new();
    let delimiter = format!("--{boundary}");
    loop {
        let lead = if parts.is_empty() { "" } else { "\r\n" };
        let close = format!("{lead}{delimiter}--\r\n");
        if !parts.is_empty() && body[at..] == *close.as_bytes() {
            return parts;
        }
        let open = format!("{lead}{delimiter}\r\n");
        assert!(
            body[at..].starts_with(open.as_bytes()),
            "bad delimiter at {at}"
        );
        at += open.len();
        let head_len = body[at..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers end");
        let head = std::str::from_utf8(&body[at..at + head_len]).unwrap();
        at += head_len + 4;
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: bytes "))
            .expect("part Content-Range");
        assert!(head.lines().any(|l| l.starts_with("Content-Type: ")));
        let (span, total) = range.split_once('/').unwrap();
        let (first, last) = span.split_once('-').unwrap();
        let (first, last, total): (usize, usize, usize) = (
            first.parse().unwrap(),
            last.parse().unwrap(),
            total.parse().unwrap(),
        );
        let n = last - first + 1;
        parts.push((first, last, total, body[at..at + n].to_vec()));
        at += n;
    }
}

#[tokio::test]
async fn full_get_and_head() {
    let s = store();
    let app = content::router(s.root.clone());

    let reply = get(&app, "/pkg/app.appv", &[]).await;
    assert_full(&reply, &s.small);
    assert_eq!(reply.header(header::ACCEPT_RANGES), "bytes");
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/appv");
    let etag = reply.header(header::ETAG);
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    let modified = httpdate::parse_http_date(reply.header(header::LAST_MODIFIED)).unwrap();
    let mtime = std::fs::metadata(s.root.join("pkg/app.appv"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(mtime.duration_since(modified).unwrap() < Duration::from_secs(1));

    // Streamed (larger than the inline limit) bodies arrive whole too.
    assert!(BIG as u64 > INLINE_LIMIT);
    assert_full(&get(&app, "/pkg/big.appv", &[]).await, &s.big);
    let other = get(&app, "/pkg/notes.txt", &[]).await;
    assert_eq!(
        other.header(header::CONTENT_TYPE),
        "application/octet-stream"
    );

    let head = call(&app, Method::HEAD, "/pkg/big.appv", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header(header::CONTENT_LENGTH), BIG.to_string());
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers.get(header::ETAG),
        get(&app, "/pkg/big.appv", &[])
            .await
            .headers
            .get(header::ETAG)
    );
    // Range means nothing to HEAD (RFC 9110 §14.2).
    let head = call(
        &app,
        Method::HEAD,
        "/pkg/app.appv",
        &[("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header(header::CONTENT_LENGTH), SMALL.to_string());

    let post = call(&app, Method::POST, "/pkg/app.appv", &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    // An empty file: 200 with no bytes; any range of it is unsatisfiable.
    std::fs::write(s.root.join("empty"), b"").unwrap();
    assert_full(&get(&app, "/empty", &[]).await, b"");
    let reply = get(&app, "/empty", &[("range", "bytes=-5")]).await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn single_ranges() {
    let s = store();
    let app = content::router(s.root.clone());
    let small = &s.small;
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=199990-", 199_990, SMALL - 1),
        ("bytes=-100", SMALL - 100, SMALL - 1),
        // Past the end: clamped to the last byte.
        ("bytes=100-999999999", 100, SMALL - 1),
        // A suffix longer than the file is the whole file, still as a 206.
        ("bytes=-999999", 0, SMALL - 1),
        // Case-insensitive unit, optional whitespace around list elements.
        ("Bytes= 5-6 ", 5, 6),
        // Several ranges, only one satisfiable: a single part.
        ("bytes=999999-,7-8", 7, 8),
    ];
    for &(range, first, last) in cases {
        let reply = get(&app, "/pkg/app.appv", &[("range", range)]).await;
        assert_single(&reply, small, first, last);
        assert!(reply.headers.contains_key(header::ETAG), "{range}");
    }

    // Ranges of the streamed file, crossing chunk boundaries.
    let chunk = CHUNK as usize;
    for (first, last) in [(chunk - 10, chunk + 10), (1, BIG - 2), (chunk * 3, BIG - 1)] {
        let reply = get(
            &app,
            "/pkg/big.appv",
            &[("range", &format!("bytes={first}-{last}"))],
        )
        .await;
        assert_single(&reply, &s.big, first, last);
    }
}

#[tokio::test]
async fn multiple_ranges_in_the_order_asked() {
    let s = store();
    let app = content::router(s.root.clone());

    let reply = get(
        &app,
        "/pkg/app.appv",
        &[("range", "bytes=500-599,0-9,-20,1000-")],
    )
    .await;
    let parts = parse_multipart(&reply);
    let expected = [
        (500, 599),
        (0, 9),
        (SMALL - 20, SMALL - 1),
        (1000, SMALL - 1),
    ];
    // 100 + 10 + 20 + 199 000 bytes: under the file size, so not refused.
    assert_eq!(parts.len(), expected.len());
    for ((first, last, total, bytes), (want_first, want_last)) in parts.into_iter().zip(expected) {
        assert_eq!((first, last, total), (want_first, want_last, SMALL));
        assert!(bytes == s.small[first..=last]);
    }

    // Unsatisfiable members are dropped, the rest keep their order.
    let reply = get(
        &app,
        "/pkg/app.appv",
        &[("range", "bytes=30-39,999999-,20-29")],
    )
    .await;
    let parts = parse_multipart(&reply);
    assert_eq!(
        parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        vec![(30, 39), (20, 29)]
    );

    // Big enough to be streamed, crossing chunk boundaries.
    let chunk = CHUNK as usize;
    let asked = [(chunk + 1, 2 * chunk + 100), (5, chunk), (BIG - 1, BIG - 1)];
    let header = format!(
        "bytes={}",
        asked
            .iter()
            .map(|(f, l)| format!("{f}-{l}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let reply = get(&app, "/pkg/big.appv", &[("range", &header)]).await;
    assert!(reply.body.len() as u64 > INLINE_LIMIT);
    let parts = parse_multipart(&reply);
    assert_eq!(parts.len(), asked.len());
    for ((first, last, total, bytes), (want_first, want_last)) in parts.into_iter().zip(asked) {
        assert_eq!((first, last, total), (want_first, want_last, BIG));
        assert!(bytes == s.big[first..=last]);
    }

    // Exactly MAX_RANGES ranges are served...
    let many = (0..MAX_RANGES)
        .map(|i| format!("{}-{}", i * 10, i * 10 + 4))
        .collect::<Vec<_>>();
    let reply = get(
        &app,
        "/pkg/app.appv",
        &[("range", &format!("bytes={}", many.join(",")))],
    )
    .await;
    assert_eq!(parse_multipart(&reply).len(), MAX_RANGES);
}

#[tokio::test]
async fn unsatisfiable_and_ignored_ranges() {
    let s = store();
    let app = content::router(s.root.clone());

    for range in [
        "bytes=200000-",
        "bytes=200000-200010",
        "bytes=-0",
        "bytes=999999-,300000-",
    ] {
        let reply = get(&app, "/pkg/app.appv", &[("range", range)]).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            reply.header(header::CONTENT_RANGE),
            format!("bytes */{SMALL}")
        );
        assert!(reply.body.is_empty());
    }

    // Malformed or foreign Range fields are ignored: the whole file, 200.
    let too_many = format!(
        "bytes={}",
        (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    for range in [
        "bytes=5-1",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes=+1-2",
        "items=0-1",
        "0-1",
        too_many.as_str(),
        // Overlaps adding up to more than the file.
        "bytes=0-,0-",
    ] {
        let reply = get(&app, "/pkg/app.appv", &[("range", range)]).await;
        assert_full(&reply, &s.small);
    }
}

#[tokio::test]
async fn if_range() {
    let s = store();
    let app = content::router(s.root.clone());
    let first = get(&app, "/pkg/app.appv", &[]).await;
    let etag = first.header(header::ETAG).to_owned();
    let modified = first.header(header::LAST_MODIFIED).to_owned();
    let earlier = httpdate::fmt_http_date(
        httpdate::parse_http_date(&modified).unwrap() - Duration::from_secs(3600),
    );

    // The validator still holds: the range is served.
    for validator in [etag.as_str(), modified.as_str()] {
        let reply = get(
            &app,
            "/pkg/app.appv",
            &[("range", "bytes=10-19"), ("if-range", validator)],
        )
        .await;
        assert_single(&reply, &s.small, 10, 19);
    }
    // It does not (another tag, a weak tag, another date, garbage): the whole
    // file instead, so a resuming client never splices two versions.
    let weak = format!("W/{etag}");
    for validator in ["\"0-0\"", weak.as_str(), earlier.as_str(), "yesterday"] {
        let reply = get(
            &app,
            "/pkg/app.appv",
            &[("range", "bytes=10-19"), ("if-range", validator)],
        )
        .await;
        assert_full(&reply, &s.small);
    }

    // The file changes (new content, new mtime): the old tag no longer holds.
    let path = s.root.join("pkg/app.appv");
    std::fs::write(&path, &s.big).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    let reply = get(
        &app,
        "/pkg/app.appv",
        &[("range", "bytes=10-19"), ("if-range", &etag)],
    )
    .await;
    assert_full(&reply, &s.big);
    assert_ne!(reply.header(header::ETAG), etag);
}

#[tokio::test]
async fn conditional_requests() {
    let s = store();
    let app = content::router(s.root.clone());
    let first = get(&app, "/pkg/app.appv", &[]).await;
    let etag = first.header(header::ETAG).to_owned();
    let modified = first.header(header::LAST_MODIFIED).to_owned();
    let mtime = httpdate::parse_http_date(&modified).unwrap();
    let earlier = httpdate::fmt_http_date(mtime - Duration::from_secs(3600));
    let later = httpdate::fmt_http_date(mtime + Duration::from_secs(3600));
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");

    let not_modified: &[&[(&str, &str)]] = &[
        &[("if-none-match", &etag)],
        &[("if-none-match", &weak)],
        &[("if-none-match", &listed)],
        // A list split over two field lines.
        &[("if-none-match", "\"nope\""), ("if-none-match", &etag)],
        &[("if-none-match", "*")],
        &[("if-modified-since", &modified)],
        &[("if-modified-since", &later)],
        // A 304 wins over a Range.
        &[("if-none-match", &etag), ("range", "bytes=0-1")],
    ];
    for headers in not_modified {
        let reply = get(&app, "/pkg/app.appv", headers).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{headers:?}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header(header::ETAG), etag);
        assert_eq!(reply.header(header::LAST_MODIFIED), modified);
    }
    let modified_since: &[&[(&str, &str)]] = &[
        &[("if-none-match", "\"other\"")],
        &[("if-modified-since", &earlier)],
        &[("if-modified-since", "not a date")],
        // If-None-Match is present, so If-Modified-Since is not evaluated.
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &later),
        ],
        &[("if-match", &etag)],
        &[("if-unmodified-since", &modified)],
    ];
    for headers in modified_since {
        assert_full(&get(&app, "/pkg/app.appv", headers).await, &s.small);
    }
    // HEAD follows the same rules.
    let reply = call(
        &app,
        Method::HEAD,
        "/pkg/app.appv",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);

    let failed: &[&[(&str, &str)]] = &[
        &[("if-match", "\"other\"")],
        // If-Match is strong: a weak tag never matches.
        &[("if-match", &weak)],
        &[("if-unmodified-since", &earlier)],
    ];
    for headers in failed {
        let reply = get(&app, "/pkg/app.appv", headers).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{headers:?}");
        assert!(reply.body.is_empty());
    }
}

/// Everything that must not be served, and the status it gets: 400 for a
/// request path no client would produce, 404 for anything else.
const REFUSED: &[(&str, StatusCode)] = &[
    ("/../etc/passwd", StatusCode::BAD_REQUEST),
    ("/../outside/secret", StatusCode::BAD_REQUEST),
    ("/pkg/../../outside/secret", StatusCode::BAD_REQUEST),
    ("/%2e%2e/outside/secret", StatusCode::BAD_REQUEST),
    ("/%2E%2E/%2e%2e/etc/passwd", StatusCode::BAD_REQUEST),
    ("/./pkg/app.appv", StatusCode::BAD_REQUEST),
    ("/pkg%2f..%2f..%2foutside%2fsecret", StatusCode::BAD_REQUEST),
    ("/pkg/..%2f..%2foutside/secret", StatusCode::BAD_REQUEST),
    ("/%2fetc%2fpasswd", StatusCode::BAD_REQUEST),
    ("/pkg%5capp.appv", StatusCode::BAD_REQUEST),
    ("/..%5c..%5coutside%5csecret", StatusCode::BAD_REQUEST),
    ("/pkg/app.appv%00", StatusCode::BAD_REQUEST),
    ("/pkg/app.appv%", StatusCode::BAD_REQUEST),
    ("/pkg/app.appv%g1", StatusCode::BAD_REQUEST),
    // Absolute-looking paths stay under the root.
    ("//etc/passwd", StatusCode::NOT_FOUND),
    ("/etc/passwd", StatusCode::NOT_FOUND),
    // Symlinks resolving outside the root.
    ("/escape", StatusCode::NOT_FOUND),
    ("/escape-dir/secret", StatusCode::NOT_FOUND),
    ("/passwd", StatusCode::NOT_FOUND),
    // No listings, no hidden files, no missing files.
    ("/", StatusCode::NOT_FOUND),
    ("/pkg", StatusCode::NOT_FOUND),
    ("/pkg/", StatusCode::NOT_FOUND),
    ("/.staging", StatusCode::NOT_FOUND),
    ("/.incoming/upload.part", StatusCode::NOT_FOUND),
    ("/%2eincoming/upload.part", StatusCode::NOT_FOUND),
    ("/pkg/missing.appv", StatusCode::NOT_FOUND),
    ("/pkg/app.appv/more", StatusCode::NOT_FOUND),
];

#[tokio::test]
async fn paths_outside_the_store_are_refused() {
    let s = store();
    let app = content::router(s.root.clone());
    for &(path, status) in REFUSED {
        for method in [Method::GET, Method::HEAD] {
            let reply = call(&app, method.clone(), path, &[]).await;
            assert_eq!(reply.status, status, "{method} {path}");
            assert!(reply.body.is_empty(), "{path}");
        }
    }

    // What is allowed: encoded names, repeated slashes, symlinks inside.
    std::fs::write(s.root.join("pkg/with space.appv"), b"spaced").unwrap();
    assert_full(&get(&app, "/pkg/with%20space.appv", &[]).await, b"spaced");
    assert_full(&get(&app, "/pkg//app.appv", &[]).await, &s.small);
    assert_full(
        &get(&app, "/%70kg/app.appv?query=ignored", &[]).await,
        &s.small,
    );
    assert_full(&get(&app, "/alias.appv", &[]).await, &s.small);

    // A root reached through a symlink works as well as the real one.
    let linked = s.root.parent().unwrap().join("store-link");
    std::os::unix::fs::symlink(&s.root, &linked).unwrap();
    let app = content::router(linked);
    assert_full(&get(&app, "/alias.appv", &[]).await, &s.small);
    assert_eq!(
        get(&app, "/escape", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // A root that does not exist yet is looked up again per request.
    let later = s.root.parent().unwrap().join("later");
    let app = content::router(later.clone());
    assert_eq!(get(&app, "/x", &[]).await.status, StatusCode::NOT_FOUND);
    std::fs::create_dir(&later).unwrap();
    std::fs::write(later.join("x"), b"now").unwrap();
    assert_full(&get(&app, "/x", &[]).await, b"now");
}

/// Serves `root` on an ephemeral loopback port.
async fn listen(root: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = content::router(root.to_path_buf());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn over_a_real_socket() {
    let s = store();
    let base = listen(&s.root).await;
    let client = reqwest::Client::new();

    let full = client
        .get(format!("{base}/pkg/big.appv"))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.content_length(), Some(BIG as u64));
    let etag = full.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(full.bytes().await.unwrap() == s.big);

    // HEAD keeps the real Content-Length through hyper.
    let head = client
        .head(format!("{base}/pkg/big.appv"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        BIG.to_string().as_str()
    );

    let range = client
        .get(format!("{base}/pkg/big.appv"))
        .header(header::RANGE, "bytes=65536-131071")
        .header(header::IF_RANGE, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.headers()[header::CONTENT_RANGE],
        format!("bytes 65536-131071/{BIG}").as_str()
    );
    assert!(range.bytes().await.unwrap() == s.big[65536..131072]);

    let multi = client
        .get(format!("{base}/pkg/big.appv"))
        .header(header::RANGE, "bytes=600000-699999,0-299999")
        .send()
        .await
        .unwrap();
    let reply = Reply {
        status: multi.status(),
        headers: multi.headers().clone(),
        body: multi.bytes().await.unwrap(),
    };
    let parts = parse_multipart(&reply);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].0 == 600_000 && parts[0].3 == s.big[600_000..700_000]);
    assert!(parts[1].0 == 0 && parts[1].3 == s.big[..300_000]);

    let not_modified = client
        .get(format!("{base}/pkg/big.appv"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()[header::ETAG], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());

    let unsatisfiable = client
        .get(format!("{base}/pkg/big.appv"))
        .header(header::RANGE, format!("bytes={BIG}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        unsatisfiable.headers()[header::CONTENT_RANGE],
        format!("bytes */{BIG}").as_str()
    );
}

/// reqwest normalises `..` away, so traversal goes over a raw socket.
#[tokio::test]
async fn traversal_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = store();
    let base = listen(&s.root).await;
    let addr = base.trim_start_matches("http://").to_owned();
    for &(path, status) in REFUSED {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
            "{path}: {response}"
        );
        assert!(
            !response.contains("SECRET") && !response.contains("root:"),
            "{path}"
        );
    }
}

/// Writes `bytes` to `path` the way the store installs files: a hidden
/// temporary name in the same directory, then `rename` over the old one.
fn replace(path: &Path, bytes: &[u8], mtime: Option<SystemTime>) {
    let tmp = path.with_file_name(".replacing");
    std::fs::write(&tmp, bytes).unwrap();
    if let Some(mtime) = mtime {
        let file = std::fs::File::options().write(true).open(&tmp).unwrap();
        file.set_modified(mtime).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

fn mtime_of(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The store's files are cached (mapped) between requests. One replaced by
/// `rename` is served new from the next request on, even when the new file has
/// the same length and mtime (so the same ETag) as the old one.
#[tokio::test]
async fn a_file_replaced_by_rename_is_served_new_at_once() {
    let s = store();
    let app = content::router(s.root.clone());
    let path = s.root.join("pkg/app.appv");
    let mtime = mtime_of(&path);
    let versions = [s.small.clone(), data(SMALL, 7), data(SMALL, 8)];
    assert_full(&get(&app, "/pkg/app.appv", &[]).await, &versions[0]);

    for round in 1..=6 {
        let now = &versions[round % 3];
        replace(&path, now, Some(mtime));
        assert_full(&get(&app, "/pkg/app.appv", &[]).await, now);
        let reply = get(&app, "/pkg/app.appv", &[("range", "bytes=65536-131071")]).await;
        assert_single(&reply, now, 65_536, 131_071);
        let parts = parse_multipart(
            &get(
                &app,
                "/pkg/app.appv",
                &[("range", "bytes=9-10,100000-100099")],
            )
            .await,
        );
        assert!(parts[0].3 == now[9..=10] && parts[1].3 == now[100_000..100_100]);
    }

    // Rewritten in place (same inode), longer, with the old mtime put back:
    // the new length is seen, not the one cached.
    let longer = data(SMALL + 5_000, 9);
    std::fs::write(&path, &longer).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(mtime).unwrap();
    assert_full(&get(&app, "/pkg/app.appv", &[]).await, &longer);
    // In place, same length, old mtime: the new bytes too.
    let same_length = data(SMALL + 5_000, 10);
    std::fs::write(&path, &same_length).unwrap();
    file.set_modified(mtime).unwrap();
    assert_full(&get(&app, "/pkg/app.appv", &[]).await, &same_length);
}

/// While one task keeps replacing a file by `rename`, every response is
/// wholly one version, with that version's validators; once the replacing
/// stops, the last version is what is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_under_load_never_mixes_versions() {
    let s = store();
    let app = content::router(s.root.clone());
    let path = s.root.join("pkg/big.appv");
    let base = mtime_of(&path);
    // Versions differ in their bytes and mtime, so in their ETags too.
    let versions: Vec<(Vec<u8>, SystemTime)> = (0..4)
        .map(|i| {
            (
                data(BIG, 20 + i),
                base + Duration::from_secs(60 * (u64::from(i) + 1)),
            )
        })
        .collect();
    replace(&path, &versions[0].0, Some(versions[0].1));
    let first = get(&app, "/pkg/big.appv", &[]).await;
    let etag_of = |reply: &Reply, v: usize| {
        let secs = versions[v]
            .1
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        reply.header(header::ETAG) == format!("\"{secs:x}-{BIG:x}\"")
    };
    assert!(etag_of(&first, 0));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replacer = {
        let (versions, path, done) = (versions.clone(), path.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            for i in 1..=200 {
                let (bytes, mtime) = &versions[i % versions.len()];
                replace(&path, bytes, Some(*mtime));
                std::thread::yield_now();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for reader in 0..2u64 {
        let (app, versions, done) = (app.clone(), versions.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut served = 0;
            let mut offset = reader * 4096;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || served < 20 {
                let first = offset as usize % (BIG - 65_536);
                let last = first + 65_535;
                let range = format!("bytes={first}-{last}");
                let reply = get(&app, "/pkg/big.appv", &[("range", &range)]).await;
                assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
                let v = versions
                    .iter()
                    .position(|(bytes, _)| reply.body == bytes[first..=last])
                    .expect("a range is wholly one version");
                let secs = versions[v]
                    .1
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                assert_eq!(reply.header(header::ETAG), format!("\"{secs:x}-{BIG:x}\""));
                served += 1;
                offset += 65_536 + 4_097;
            }
            served
        }));
    }
    replacer.await.unwrap();
    for reader in readers {
        assert!(reader.await.unwrap() >= 20);
    }
    let last = &versions[200 % versions.len()];
    let reply = get(&app, "/pkg/big.appv", &[]).await;
    assert_full(&reply, &last.0);
    assert!(etag_of(&reply, 200 % versions.len()));
}

/// A cached file that is deleted gets `404` at once, and one put back is
/// served again; a cached path that now leads outside the store is refused.
#[tokio::test]
async fn cached_files_that_vanish_or_escape() {
    let s = store();
    let app = content::router(s.root.clone());
    let path = s.root.join("pkg/app.appv");
    assert_full(&get(&app, "/pkg/app.appv", &[]).await, &s.small);

    std::fs::remove_file(&path).unwrap();
    for method in [Method::GET, Method::HEAD] {
        let reply = call(&app, method, "/pkg/app.appv", &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    std::fs::write(&path, b"back").unwrap();
    assert_full(&get(&app, "/pkg/app.appv", &[]).await, b"back");

    // The file swapped for a symlink out of the store.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("../../outside/secret", &path).unwrap();
    let reply = get(&app, "/pkg/app.appv", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // A directory on the path swapped for a symlink to one outside.
    assert_full(&get(&app, "/pkg/big.appv", &[]).await, &s.big);
    let outside = s.root.parent().unwrap().join("outside/pkg");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("big.appv"), b"SECRET copy").unwrap();
    std::fs::rename(s.root.join("pkg"), s.root.join("pkg-old")).unwrap();
    std::os::unix::fs::symlink(&outside, s.root.join("pkg")).unwrap();
    let reply = get(&app, "/pkg/big.appv", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // ... and back.
    std::fs::remove_file(s.root.join("pkg")).unwrap();
    std::fs::rename(s.root.join("pkg-old"), s.root.join("pkg")).unwrap();
    assert_full(&get(&app, "/pkg/big.appv", &[]).await, &s.big);

    // A file that becomes a directory.
    std::fs::remove_file(s.root.join("pkg/notes.txt")).unwrap();
    std::fs::create_dir(s.root.join("pkg/notes.txt")).unwrap();
    let reply = get(&app, "/pkg/notes.txt", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// More files than the cache holds are all served right, and the first ones
/// again after they were evicted.
#[tokio::test]
async fn more_files_than_the_cache_holds() {
    let s = store();
    let app = content::router(s.root.clone());
    let dir = s.root.join("many");
    std::fs::create_dir(&dir).unwrap();
    let n = content::CACHE_ENTRIES + 50;
    for i in 0..n {
        std::fs::write(dir.join(format!("{i}.bin")), format!("file {i}")).unwrap();
    }
    for round in 0..2 {
        for i in (0..n).step_by(if round == 0 { 1 } else { 97 }) {
            let reply = get(&app, &format!("/many/{i}.bin"), &[]).await;
            assert_full(&reply, format!("file {i}").as_bytes());
        }
    }
}

/// Package files (`packages/<PackageId>/<VersionId>.appv`) never change, so
/// every answer for one — whole, a range, a 304 — tells HTTP caches to keep it;
/// anything else in the store gets no `Cache-Control` at all.
#[tokio::test]
async fn package_files_are_immutable_for_http_caches() {
    let s = store();
    let package =
        "packages/1a2ad958-75d0-440b-9e6b-1d5e119713ee/466ada43-2c70-4757-ae56-9dc9919cf7b2.appv";
    std::fs::create_dir_all(s.root.join(package).parent().unwrap()).unwrap();
    std::fs::write(s.root.join(package), &s.small).unwrap();
    std::fs::create_dir_all(s.root.join("packages/not-a-guid")).unwrap();
    std::fs::write(s.root.join("packages/not-a-guid/x.appv"), b"x").unwrap();
    let app = content::router(s.root.clone());
    let immutable = "public, max-age=31536000, immutable";

    let whole = get(&app, &format!("/{package}"), &[]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header(header::CACHE_CONTROL), immutable);
    let range = get(&app, &format!("/{package}"), &[("range", "bytes=0-99")]).await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.header(header::CACHE_CONTROL), immutable);
    let etag = whole.header(header::ETAG).to_owned();
    let again = get(&app, &format!("/{package}"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header(header::CACHE_CONTROL), immutable);

    for other in [
        "/pkg/app.appv",
        "/pkg/notes.txt",
        "/packages/not-a-guid/x.appv",
    ] {
        let reply = get(&app, other, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{other}");
        assert!(
            !reply.headers.contains_key(header::CACHE_CONTROL),
            "{other}: {:?}",
            reply.headers
        );
    }
}
