//! The network side of a publishing refresh: asking a publishing server what a
//! machine, or a user on it, is published, as an Avail client asks
//! (`GET /?ClientVersion=5.1.0.0` with `Accept: application/json`, the
//! machine's credential as `Authorization: Bearer`, `Avail-User` for a user and
//! `If-None-Match` with the ETag of the last answer), and getting back either
//! a new [`PublishingAnswer`] or word that nothing changed ([`Outcome`]).
//! No `ClientOS` is sent: this Linux client takes every package.
//!
//! A publishing server may have several URLs (nodes behind no balancer, or a
//! balancer and its nodes); App-V has no failover between them, Avail does.
//! [`Refresher::refresh`] starts at the URL that last answered for that server
//! and then tries the others in the configured order. A connection error, a
//! timeout, `5xx`, `429`, an answer that is not a publishing answer (or is
//! larger than 64 MiB), and `401`/`403` (a node whose catalog is behind may not
//! know a new machine yet) move on to the next URL; any other `4xx` is the
//! request's fault, the same on every node, and ends the refresh
//! ([`RefreshError::Invalid`]). When every URL failed, the error says why:
//! [`RefreshError::Unauthorized`] when each refused the credential,
//! [`RefreshError::Invalid`] when the last one's answer was unusable, and
//! otherwise [`RefreshError::Unreachable`] with one line per URL.
//!
//! One [`reqwest::Client`] serves every refresh (connections are kept alive
//! between them); the timeout covers each request whole, connection to last
//! byte of the body. Redirects are not followed, so the credential goes only to
//! the URLs configured.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avail_model::publishing::PublishingAnswer;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

/// The `ClientVersion` this client sends: App-V 5.1's.
pub const CLIENT_VERSION: &str = "5.1.0.0";

/// The largest answer body read; a larger one is [`RefreshError::Invalid`].
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The header naming the user a machine's request speaks for.
const USER_HEADER: &str = "avail-user";

/// How much of a `4xx` body goes into the error (the server's reason).
const ERROR_BODY_BYTES: usize = 512;

/// A publishing server as the client is configured with it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishingServer {
    /// The name the client knows it by (its publications are kept under it).
    pub name: String,
    /// Its URLs (the publishing role's base URL on each node), tried in this
    /// order after the one that last answered.
    pub urls: Vec<String>,
    /// The machine credential, sent as `Authorization: Bearer`.
    pub credential: String,
}

impl fmt::Debug for PublishingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishingServer")
            .field("name", &self.name)
            .field("urls", &self.urls)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// What a successful refresh learned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new answer (`200`): it replaces what the server published before to
    /// that audience.
    Changed {
        /// The answer.
        answer: PublishingAnswer,
        /// Its `ETag`, to send as `If-None-Match` next time.
        etag: Option<String>,
        /// The URL that answered.
        url: String,
    },
    /// Nothing changed since the ETag sent (`304`).
    Unchanged {
        /// The URL that answered.
        url: String,
    },
}

/// Why a refresh failed. A failed refresh changes nothing the client knows.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Every URL answered `401` or `403`: the machine credential is not (or not
    /// yet) accepted.
    #[error(
        "publishing server {server}: the machine credential was refused by every URL (the last, {url})"
    )]
    Unauthorized {
        /// The server's name.
        server: String,
        /// The last URL that refused it.
        url: String,
    },
    /// No URL answered usefully; one line per URL, `URL: reason`.
    #[error("publishing server {server} is unreachable: {}", errors.join("; "))]
    Unreachable {
        /// The server's name.
        server: String,
        /// Each URL tried with why it failed.
        errors: Vec<String>,
    },
    /// The request was refused as malformed (a `4xx` other than `401`, `403`
    /// and `429`), or the last URL tried answered something that is not a
    /// publishing answer, or the request could not be made at all.
    #[error("publishing server {server}: {url}: {reason}")]
    Invalid {
        /// The server's name.
        server: String,
        /// The URL concerned.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// Why one URL failed.
enum Failure {
    /// `401` or `403`: try the next URL.
    Refused(String),
    /// Not reached, timed out, `5xx` or `429`: try the next URL.
    Down(String),
    /// An answer that is not a publishing answer: try the next URL.
    Unusable(String),
    /// Any other `4xx`: the same everywhere, stop.
    Rejected(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Refused(r)
            | Failure::Down(r)
            | Failure::Unusable(r)
            | Failure::Rejected(r) => r,
        }
    }
}

/// Refreshes publications from publishing servers over one HTTP client,
/// remembering per server which URL last answered.
#[derive(Debug)]
pub struct Refresher {
    client: reqwest::Client,
    timeout: Duration,
    /// Server name → the URL that last answered it.
    last: Mutex<HashMap<String, String>>,
    /// [`MAX_ANSWER_BYTES`]; smaller in tests.
    max_body: usize,
}

impl Refresher {
    /// A refresher whose every request (connection, headers and body) must
    /// finish within `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("avail-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Refresher {
            client,
            timeout,
            last: Mutex::new(HashMap::new()),
            max_body: MAX_ANSWER_BYTES,
        })
    }

    /// Asks `server` what its machine is published (`user` `None`) or what
    /// `user` on it is published, sending `etag` (the last answer's) as
    /// `If-None-Match`. Tries the URL that last answered first, then the
    /// others in order (see the module documentation for what moves on to the
    /// next URL).
    pub async fn refresh(
        &self,
        server: &PublishingServer,
        user: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Outcome, RefreshError> {
        let order = self.order(server);
        let headers = headers(server, user, etag).map_err(|reason| RefreshError::Invalid {
            server: server.name.clone(),
            url: order.first().map(|u| u.to_string()).unwrap_or_default(),
            reason,
        })?;
        let mut failures: Vec<(&str, Failure)> = Vec::new();
        for (n, url) in order.iter().enumerate() {
            tracing::debug!(server = %server.name, %url, user, conditional = etag.is_some(),
                "asking the publishing server");
            match self.attempt(url, headers.clone(), etag.is_some()).await {
                Ok(outcome) => {
                    self.last
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(server.name.clone(), url.to_string());
                    return Ok(outcome);
                }
                Err(Failure::Rejected(reason)) => {
                    tracing::warn!(server = %server.name, %url, %reason,
                        "the publishing server rejected the request");
                    return Err(RefreshError::Invalid {
                        server: server.name.clone(),
                        url: url.to_string(),
                        reason,
                    });
                }
                Err(failure) => {
                    let left = order.len() - n - 1;
                    tracing::warn!(server = %server.name, %url, reason = failure.reason(),
                        urls_left = left, "publishing server URL failed");
                    failures.push((url, failure));
                }
            }
        }
        Err(give_up(&server.name, failures))
    }

    /// `server`'s URLs, the one that last answered first.
    fn order<'a>(&self, server: &'a PublishingServer) -> Vec<&'a str> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let first = last
            .get(&server.name)
            .and_then(|l| server.urls.iter().position(|u| u == l));
        first
            .into_iter()
            .chain((0..server.urls.len()).filter(|&i| Some(i) != first))
            .map(|i| server.urls[i].as_str())
            .collect()
    }

    /// One request to one URL.
    async fn attempt(
        &self,
        url: &str,
        headers: HeaderMap,
        conditional: bool,
    ) -> Result<Outcome, Failure> {
        let target = format!(
            "{}/?ClientVersion={CLIENT_VERSION}",
            url.trim_end_matches('/')
        );
        let response = self
            .client
            .get(&target)
            .headers(headers)
            .send()
            .await
            .map_err(|e| Failure::Down(self.describe(&e)))?;
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED if conditional => {
                return Ok(Outcome::Unchanged { url: url.into() });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Failure::Refused(format!("HTTP {status}")));
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(Failure::Down(format!("HTTP {status}")));
            }
            s if s.is_client_error() => {
                let said = match read_capped(response, ERROR_BODY_BYTES).await {
                    Ok((body, _)) if !body.is_empty() => {
                        format!(": {}", String::from_utf8_lossy(&body).trim())
                    }
                    _ => String::new(),
                };
                return Err(Failure::Rejected(format!("HTTP {status}{said}")));
            }
            s => return Err(Failure::Unusable(format!("unexpected HTTP {s}"))),
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(len) = response.content_length()
            && len > self.max_body as u64
        {
            return Err(Failure::Unusable(format!(
                "the answer says it is {len} bytes, more than the {} allowed",
                self.max_body
            )));
        }
        let (body, whole) = read_capped(response, self.max_body)
            .await
            .map_err(|e| Failure::Down(format!("reading the answer: {}", self.describe(&e))))?;
        if !whole {
            return Err(Failure::Unusable(format!(
                "the answer is more than the {} bytes allowed",
                self.max_body
            )));
        }
        let answer = serde_json::from_slice(&body).map_err(|e| {
            Failure::Unusable(format!("the answer is not a publishing answer: {e}"))
        })?;
        Ok(Outcome::Changed {
            answer,
            etag,
            url: url.into(),
        })
    }

    /// `e` with its causes, on one line.
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
        }
        crate::fetch::error_chain(e)
    }
}

/// The request headers, or why they cannot be sent (a value that is not
/// visible ASCII).
fn headers(
    server: &PublishingServer,
    user: Option<&str>,
    etag: Option<&str>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    map.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let mut bearer = HeaderValue::from_str(&format!("Bearer {}", server.credential))
        .map_err(|_| "the machine credential is not a valid header value".to_string())?;
    bearer.set_sensitive(true);
    map.insert(header::AUTHORIZATION, bearer);
    if let Some(user) = user {
        let value = HeaderValue::from_str(user)
            .map_err(|_| format!("the user name {user:?} cannot be sent as Avail-User"))?;
        map.insert(USER_HEADER, value);
    }
    if let Some(etag) = etag {
        let value = HeaderValue::from_str(etag)
            .map_err(|_| format!("the ETag {etag:?} is not a valid header value"))?;
        map.insert(header::IF_NONE_MATCH, value);
    }
    Ok(map)
}

/// The body, read chunk by chunk up to `cap` bytes, and whether that was all
/// of it (reading stops at the first chunk past `cap`).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            let room = cap - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// The error for a refresh of `server` every URL of which failed as
/// `failures` says, in the order tried.
fn give_up(server: &str, mut failures: Vec<(&str, Failure)>) -> RefreshError {
    let server = server.to_string();
    if !failures.is_empty()
        && failures
            .iter()
            .all(|(_, f)| matches!(f, Failure::Refused(_)))
    {
        let url = failures
            .last()
            .map(|(u, _)| u.to_string())
            .unwrap_or_default();
        return RefreshError::Unauthorized { server, url };
    }
    if matches!(failures.last(), Some((_, Failure::Unusable(_))))
        && let Some((url, Failure::Unusable(reason))) = failures.pop()
    {
        return RefreshError::Invalid {
            server,
            url: url.to_string(),
            reason,
        };
    }
    let mut errors: Vec<String> = failures
        .iter()
        .map(|(url, f)| format!("{url}: {}", f.reason()))
        .collect();
    if errors.is_empty() {
        errors.push("no URL is configured".into());
    }
    RefreshError::Unreachable { server, errors }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use avail_model::publishing::AnswerPackage;
    use avail_model::{PackageId, VersionId};
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use uuid::Uuid;

    use super::*;

    /// How a test publishing server answers.
    #[derive(Clone)]
    enum Mode {
        /// 200 with this answer and ETag; 304 when `If-None-Match` names it.
        Json(PublishingAnswer, &'static str),
        /// This status, empty body.
        Status(u16),
        /// Accept the request and never answer.
        Hang,
        /// 200 with these bytes; chunked (no `Content-Length`) when `true`.
        Body(Vec<u8>, bool),
    }

    struct Knobs {
        mode: Mutex<Mode>,
        requests: AtomicUsize,
        /// Each request's path and query and headers.
        seen: Mutex<Vec<(String, HeaderMap)>>,
    }

    struct TestServer {
        url: String,
        knobs: Arc<Knobs>,
    }

    impl TestServer {
        fn set(&self, mode: Mode) {
            *self.knobs.mode.lock().unwrap() = mode;
        }
        fn requests(&self) -> usize {
            self.knobs.requests.load(Ordering::SeqCst)
        }
        fn last(&self) -> (String, HeaderMap) {
            self.knobs.seen.lock().unwrap().last().unwrap().clone()
        }
    }

    async fn respond(
        req: Request<Incoming>,
        knobs: Arc<Knobs>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        knobs.requests.fetch_add(1, Ordering::SeqCst);
        let path = req.uri().path_and_query().unwrap().to_string();
        knobs
            .seen
            .lock()
            .unwrap()
            .push((path, req.headers().clone()));
        let mode = knobs.mode.lock().unwrap().clone();
        let builder = Response::builder();
        let response = match mode {
            Mode::Hang => std::future::pending().await,
            Mode::Status(s) => builder.status(s).body(Full::default()),
            Mode::Body(bytes, chunked) => {
                let builder = if chunked {
                    builder.header("transfer-encoding", "chunked")
                } else {
                    builder
                };
                builder.body(Full::new(Bytes::from(bytes)))
            }
            Mode::Json(answer, etag) => {
                let matches = req
                    .headers()
                    .get("if-none-match")
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes());
                let builder = builder.header("etag", etag);
                if matches {
                    builder.status(304).body(Full::default())
                } else {
                    builder
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
                }
            }
        };
        Ok(response.unwrap())
    }

    async fn serve(mode: Mode) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let knobs = Arc::new(Knobs {
            mode: Mutex::new(mode),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let k = knobs.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let k = k.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(req, k.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            url: format!("http://{addr}"),
            knobs,
        }
    }

    /// A URL nothing listens on (bound, then let go).
    async fn dead_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn sample(n: u128) -> PublishingAnswer {
        PublishingAnswer {
            sequence: n as i64,
            packages: vec![AnswerPackage {
                package_id: PackageId(Uuid::from_u128(n)),
                version_id: VersionId(Uuid::from_u128(0x100 + n)),
                name: format!("Package {n}"),
                version: "1.0.0.0".into(),
                urls: vec![format!("http://content.example/{n}.appv")],
                block_map_sha256: None,
            }],
            connection_groups: Vec::new(),
        }
    }

    fn server(urls: Vec<String>) -> PublishingServer {
        PublishingServer {
            name: "pub".into(),
            urls,
            credential: "s3cret".into(),
        }
    }

    fn refresher() -> Refresher {
        Refresher::new(Duration::from_millis(500)).unwrap()
    }

    #[tokio::test]
    async fn sends_the_credential_the_user_and_the_etag_and_304_is_unchanged() {
        let good = serve(Mode::Json(sample(1), "\"e1\"")).await;
        let r = refresher();
        // A trailing slash or none: the same request.
        let s = server(vec![format!("{}/", good.url)]);
        let outcome = r.refresh(&s, Some("alice"), None).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Changed {
                answer: sample(1),
                etag: Some("\"e1\"".into()),
                url: format!("{}/", good.url),
            }
        );
        let (path, headers) = good.last();
        assert_eq!(path, "/?ClientVersion=5.1.0.0");
        assert_eq!(headers["authorization"], "Bearer s3cret");
        assert_eq!(headers["avail-user"], "alice");
        assert_eq!(headers["accept"], "application/json");
        assert!(headers.get("if-none-match").is_none());

        let s = server(vec![good.url.clone()]);
        let outcome = r.refresh(&s, None, Some("\"e1\"")).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Unchanged {
                url: good.url.clone()
            }
        );
        let (path, headers) = good.last();
        assert_eq!(path, "/?ClientVersion=5.1.0.0");
        assert_eq!(headers["if-none-match"], "\"e1\"");
        assert!(headers.get("avail-user").is_none());

        // A stale ETag gets the answer again.
        let outcome = r.refresh(&s, None, Some("\"e0\"")).await.unwrap();
        assert!(matches!(outcome, Outcome::Changed { .. }));
        assert_eq!(good.requests(), 3);
    }

    #[tokio::test]
    async fn fails_over_from_dead_and_hanging_urls_and_starts_at_the_good_one_next() {
        let dead = dead_url().await;
        let hang = serve(Mode::Hang).await;
        let good = serve(Mode::Json(sample(2), "\"e2\"")).await;
        let s = server(vec![dead.clone(), hang.url.clone(), good.url.clone()]);
        let r = refresher();

        let Outcome::Changed { url, answer, .. } = r.refresh(&s, None, None).await.unwrap() else {
            panic!("expected an answer");
        };
        assert_eq!((url.as_str(), answer), (good.url.as_str(), sample(2)));
        assert_eq!((hang.requests(), good.requests()), (1, 1));

        // The next refresh starts where the last one ended.
        r.refresh(&s, None, None).await.unwrap();
        assert_eq!((hang.requests(), good.requests()), (1, 2));

        // The good one fails: every URL is tried, each with its reason.
        good.set(Mode::Status(503));
        let err = r.refresh(&s, None, None).await.unwrap_err();
        let RefreshError::Unreachable { server, errors } = &err else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert_eq!(server, "pub");
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with(&good.url) && errors[0].contains("503"));
        assert!(errors[1].starts_with(&dead));
        assert!(errors[2].starts_with(&hang.url) && errors[2].contains("no answer within"));
        assert_eq!((hang.requests(), good.requests()), (2, 3));

        // 429 moves on too, and the good one stays first.
        good.set(Mode::Status(429));
        hang.set(Mode::Json(sample(3), "\"e3\""));
        let Outcome::Changed { url, .. } = r.refresh(&s, None, None).await.unwrap() else {
            panic!("expected an answer");
        };
        assert_eq!(url, hang.url);
        assert_eq!(good.requests(), 4);
    }

    #[tokio::test]
    async fn refused_credentials_fail_over_and_all_refused_is_unauthorized() {
        let a = serve(Mode::Status(401)).await;
        let b = serve(Mode::Status(403)).await;
        let r = refresher();
        let err = r
            .refresh(&server(vec![a.url.clone(), b.url.clone()]), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RefreshError::Unauthorized { server, url } if server == "pub" && *url == b.url),
            "{err:?}"
        );

        // A node that does not know the machine yet, then one that does.
        let good = serve(Mode::Json(sample(1), "\"e1\"")).await;
        let outcome = r
            .refresh(&server(vec![a.url.clone(), good.url.clone()]), None, None)
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Changed { url, .. } if url == good.url));

        // Refused by one, down on the other: unreachable, both listed.
        let down = serve(Mode::Status(500)).await;
        let err = r
            .refresh(&server(vec![a.url.clone(), down.url.clone()]), None, None)
            .await
            .unwrap_err();
        let RefreshError::Unreachable { errors, .. } = &err else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert!(errors[0].starts_with(&a.url) && errors[0].contains("401"));
        assert!(errors[1].starts_with(&down.url) && errors[1].contains("500"));
    }

    #[tokio::test]
    async fn unusable_answers_fail_over_and_are_invalid_when_last() {
        let garbage = serve(Mode::Body(b"<Publishing/>".to_vec(), false)).await;
        let good = serve(Mode::Json(sample(1), "\"e1\"")).await;
        let r = refresher();
        let outcome = r
            .refresh(
                &server(vec![garbage.url.clone(), good.url.clone()]),
                None,
                None,
            )
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Changed { url, .. } if url == good.url));

        let err = r
            .refresh(&server(vec![garbage.url.clone()]), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RefreshError::Invalid { url, reason, .. }
                if *url == garbage.url && reason.contains("not a publishing answer")),
            "{err:?}"
        );

        // Past the cap, with a Content-Length and without one.
        let mut r = refresher();
        r.max_body = 1024;
        let big = serde_json::to_vec(&PublishingAnswer {
            packages: (0..64).flat_map(|n| sample(n).packages).collect(),
            ..sample(0)
        })
        .unwrap();
        assert!(big.len() > 1024);
        for (chunked, says) in [(false, "says it is"), (true, "more than the 1024")] {
            let large = serve(Mode::Body(big.clone(), chunked)).await;
            let err = r
                .refresh(&server(vec![large.url.clone()]), None, None)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, RefreshError::Invalid { reason, .. } if reason.contains(says)),
                "{err:?}"
            );
        }
        // Under the cap, the same body is fine.
        r.max_body = big.len();
        let large = serve(Mode::Body(big, true)).await;
        let outcome = r
            .refresh(&server(vec![large.url.clone()]), None, None)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Changed { answer, etag: None, .. } if answer.packages.len() == 64)
        );
    }

    #[tokio::test]
    async fn other_client_errors_end_the_refresh_without_failover() {
        let bad = serve(Mode::Status(400)).await;
        let good = serve(Mode::Json(sample(1), "\"e1\"")).await;
        let err = refresher()
            .refresh(&server(vec![bad.url.clone(), good.url.clone()]), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RefreshError::Invalid { url, reason, .. } if *url == bad.url && reason.contains("400")),
            "{err:?}"
        );
        assert_eq!(good.requests(), 0);

        // A user name that cannot be a header is refused before any request.
        let err = refresher()
            .refresh(&server(vec![good.url.clone()]), Some("bad\nname"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RefreshError::Invalid { .. }), "{err:?}");
        assert_eq!(good.requests(), 0);

        // No URL at all.
        let err = refresher()
            .refresh(&server(Vec::new()), None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, RefreshError::Unreachable { errors, .. } if errors.len() == 1));
    }

    #[test]
    fn debug_does_not_show_the_credential() {
        let s = server(vec!["http://pub.example".into()]);
        let shown = format!("{s:?}");
        assert!(
            shown.contains("pub.example") && !shown.contains("s3cret"),
            "{shown}"
        );
        let back: PublishingServer =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
