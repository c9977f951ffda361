//! Each role's HTTP listener: the accept loop, the connection cap, and every
//! connection's deadlines, so that a stalled or slow client costs one
//! connection slot for a bounded time and never blocks anyone else.
//!
//! axum's `serve` has no timeouts and no cap, so hyper's HTTP/1.1 server is
//! driven here directly. A connection is always in one of four phases, each
//! with its own deadline:
//!
//! * reading a request head: the whole head must arrive within
//!   `header_read_timeout` of the connection's start, or of the first byte of
//!   the next request on a kept-alive connection (slow-loris);
//! * handling: no connection deadline; a request body must keep coming, though:
//!   [`ProgressBody`] fails a read that waits longer than
//!   `body_progress_timeout` for data, the handler's read of it fails (the
//!   management role answers `400` and drops its partial upload) and the
//!   connection closes after that response;
//! * responding: the client must take some of the response every
//!   `idle_timeout`, including the tail hyper may still be flushing after the
//!   body has ended (a file served from a mapping is one large frame);
//! * idle between requests: `idle_timeout` from the last byte either way.
//!
//! hyper's own `header_read_timeout` is not used: it starts at the end of the
//! previous response, so it would double as the idle timeout and make a
//! keep-alive longer than the header deadline impossible, while a load
//! balancer's connection pool wants exactly that.
//!
//! At most `max_connections` are open per role. One more is answered with a
//! canned `503` (JSON, `Retry-After: 1`) and closed at once, rather than left
//! in the kernel's queue where it would wait unseen, and `/readyz` reports the
//! role as not ready while it is full. A failing `accept` (EMFILE, ENFILE,
//! ENOMEM) is logged once and retried every 100 ms rather than ending the
//! listener. On shutdown the listener stops accepting, idle connections close,
//! and requests in flight finish.
//!
//! A role configured with a certificate speaks HTTPS: the TLS handshake runs
//! on the connection's task after it has taken its slot, so handshakes count
//! against the cap, and it must end within the header-read deadline, which
//! keeps running for the request head that follows. A connection whose first
//! byte is not a TLS handshake record (plain HTTP to an HTTPS port) is answered
//! `400` in plain HTTP and closed.
//!
//! Each request carries its peer's address as axum's `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::future::{Future as _, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::{HttpConfig, Role};
use crate::metrics::ConnectionMetrics;

/// The pause after an `accept` failure that is not the client's doing.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The deadlines of a listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    header_read: Duration,
    idle: Duration,
    body_progress: Duration,
}

impl From<&HttpConfig> for Timeouts {
    fn from(c: &HttpConfig) -> Self {
        Timeouts {
            header_read: Duration::from_secs(c.header_read_timeout_secs),
            idle: Duration::from_secs(c.idle_timeout_secs),
            body_progress: Duration::from_secs(c.body_progress_timeout_secs),
        }
    }
}

/// The connection slots of one role's listener, shared with its `/readyz`.
#[derive(Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl Slots {
    /// `max` connections at most (at least 1, at most 2^20: see `Config::check`).
    pub fn new(max: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Whether every slot is taken, so that one more connection would be shed.
    pub fn full(&self) -> bool {
        self.semaphore.available_permits() == 0
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Serve `router` on `listener` (HTTPS when `tls` is given) until `stop` is
/// cancelled, then wait until every connection has finished.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    router: Router,
    role: Role,
    timeouts: Timeouts,
    slots: Slots,
    metrics: ConnectionMetrics,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let shed_response = canned(
        "503 Service Unavailable",
        "unavailable",
        "too many connections; try again shortly",
    );
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(%role, "accepting connections again");
                }
                accepted
            }
            // The client gave up before we got to it.
            Err(e) if is_peer_gone(&e) => continue,
            Err(e) => {
                metrics.accept_errors.inc();
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(%role, error = %e, "cannot accept connections; retrying every {} ms", ACCEPT_BACKOFF.as_millis());
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(slot) = slots.semaphore.clone().try_acquire_owned() else {
            metrics.shed.inc();
            tracing::debug!(%role, %peer, "connection cap reached: shedding a connection");
            shed(stream, &shed_response);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            timeouts,
            Open::new(slot, &metrics),
            metrics.clone(),
            tls.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    // Each connection holds its slot until it ends: all slots back means all done.
    let all = u32::try_from(slots.max).unwrap_or(u32::MAX);
    let _ = slots.semaphore.acquire_many(all).await;
}

/// `accept` failures that concern one connection only, not the listener.
fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// A JSON error response written straight to a socket that is then closed:
/// what a shed connection is told, and plain HTTP on an HTTPS port.
fn canned(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::to_string(&crate::error::ErrorBody {
        error: code.into(),
        message: message.into(),
    })
    .unwrap_or_default();
    let retry = if status.starts_with("503") {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{retry}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer `503` and close, without waiting for anything: a fresh socket's send
/// buffer has room for the answer. What the client already sent is read first,
/// so that closing does not reset the connection before it reads the answer.
fn shed(stream: TcpStream, response: &[u8]) {
    use std::io::{Read as _, Write as _};
    if let Ok(mut stream) = stream.into_std() {
        let _ = stream.write(response);
        let _ = stream.read(&mut [0u8; 4096]);
    }
}

/// A connection's slot and its place in the `open` gauge, given back on drop.
struct Open {
    _slot: OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, metrics: &ConnectionMetrics) -> Self {
        metrics.open.inc();
        Open {
            _slot: slot,
            gauge: metrics.open.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A connection's phase (see the module documentation) and when it began,
/// shared by the socket wrapper, the service and the deadline check, which all
/// run on the connection's task.
struct Clock {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds from `start` to the beginning of the phase, or to the last
    /// progress of a response.
    since: AtomicU64,
    /// Whether the last write found the socket full.
    blocked: AtomicBool,
}

const READING_HEAD: u8 = 0;
const HANDLING: u8 = 1;
const RESPONDING: u8 = 2;
const IDLE: u8 = 3;

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            phase: AtomicU8::new(READING_HEAD),
            since: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
        }
    }

    fn enter(&self, phase: u8) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since.store(now, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Bytes came in: on an idle connection, a new request has begun.
    fn read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(READING_HEAD);
        }
    }

    /// A write of response bytes: `Some(n)` bytes went out (the response, or
    /// the tail hyper still flushes after the body ended, is progressing), or
    /// `None`: the socket is full, the client is not reading.
    fn wrote(&self, n: Option<usize>) {
        match n {
            None => self.blocked.store(true, Ordering::Relaxed),
            Some(0) => {}
            Some(_) => {
                self.blocked.store(false, Ordering::Relaxed);
                let phase = self.phase.load(Ordering::Relaxed);
                if phase == RESPONDING || phase == IDLE {
                    self.enter(phase);
                }
            }
        }
    }

    /// When the connection is to be closed, and why, unless a request is
    /// being handled.
    fn deadline(&self, t: &Timeouts) -> Option<(Instant, &'static str)> {
        let (limit, phase) = match self.phase.load(Ordering::Relaxed) {
            READING_HEAD => (t.header_read, "header"),
            HANDLING => return None,
            RESPONDING => (t.idle, "response"),
            // The body has ended but its tail may still wait in hyper's buffer.
            _ if self.blocked.load(Ordering::Relaxed) => (t.idle, "response"),
            _ => (t.idle, "idle"),
        };
        let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
        Some((self.start + since + limit, phase))
    }
}

/// Serve one connection, after its TLS handshake if the role speaks HTTPS,
/// until it ends, a deadline passes, or shutdown.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    open: Open,
    metrics: ConnectionMetrics,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(Clock::new());
    let Some(tls) = tls else {
        return http(stream, peer, router, timeouts, open, metrics, stop, clock).await;
    };
    // The handshake is part of the first request's head, under its deadline.
    let deadline = clock.start + timeouts.header_read;
    let handshake = tokio::select! {
        biased;
        () = stop.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, handshake(stream, &tls)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => http(stream, peer, router, timeouts, open, metrics, stop, clock).await,
        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => {
            metrics.timed_out("handshake");
            tracing::debug!(%peer, "connection closed: handshake timeout");
        }
    }
}

/// A TLS handshake, unless the client speaks plain HTTP: that gets a `400`
/// saying so (as nginx does) instead of a reset it cannot explain.
async fn handshake(
    stream: TcpStream,
    tls: &TlsAcceptor,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    /// The content type of a TLS handshake record, a ClientHello's first byte.
    const HANDSHAKE_RECORD: u8 = 22;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0] != HANDSHAKE_RECORD {
        shed(
            stream,
            &canned(
                "400 Bad Request",
                "bad_request",
                "this port speaks HTTPS; send the request over TLS",
            ),
        );
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain HTTP on an HTTPS port",
        ));
    }
    tls.accept(stream).await
}

/// Serve HTTP/1.1 on one connection's (plain or TLS) stream.
#[allow(clippy::too_many_arguments)]
async fn http<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    _open: Open,
    metrics: ConnectionMetrics,
    stop: CancellationToken,
    clock: Arc<Clock>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req| {
            handle(
                req,
                peer,
                router.clone(),
                timeouts.body_progress,
                clock.clone(),
            )
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        clock: clock.clone(),
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut timer = pin!(tokio::time::sleep(timeouts.header_read));
    let mut stopping = pin!(stop.cancelled_owned());
    let mut draining = false;
    let end = poll_fn(|cx| {
        if !draining && stopping.as_mut().poll(cx).is_ready() {
            // Idle connections close now; a request in flight finishes first.
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result.err().map(|e| e.to_string()));
        }
        if let Some((at, phase)) = clock.deadline(&timeouts) {
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_ready() {
                metrics.timed_out(phase);
                return Poll::Ready(Some(format!("{phase} timeout")));
            }
        }
        Poll::Pending
    })
    .await;
    if let Some(reason) = end {
        tracing::debug!(%peer, reason, "connection closed");
    }
}

/// The service of one request: the peer's address and the body deadline go
/// in, the connection's phase follows the request.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    body_progress: Duration,
    clock: Arc<Clock>,
) -> Result<Response<Responding>, Infallible> {
    clock.enter(HANDLING);
    let mut req = req.map(|body| Body::new(ProgressBody::new(body, body_progress)));
    req.extensions_mut().insert(ConnectInfo(peer));
    let response = router.oneshot(req).await?;
    clock.enter(RESPONDING);
    Ok(response.map(|body| Responding { body, clock }))
}

/// A response body that marks the connection idle once hyper is done with it.
struct Responding {
    body: Body,
    clock: Arc<Clock>,
}

impl HttpBody for Responding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Responding {
    fn drop(&mut self) {
        self.clock.enter(IDLE);
    }
}

/// The stream, telling the clock about every byte in and out.
struct Watched<S> {
    stream: S,
    clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.clock.wrote(written(&result));
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.clock.wrote(written(&result));
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a write did, for [`Clock::wrote`]: bytes out, or `None` when the
/// socket is full. Errors end the connection anyway.
fn written(result: &Poll<io::Result<usize>>) -> Option<usize> {
    match result {
        Poll::Ready(Ok(n)) => Some(*n),
        Poll::Ready(Err(_)) => Some(0),
        Poll::Pending => None,
    }
}

/// A request body that fails when the client sends nothing for `limit`: the
/// clock runs only while the handler waits for data, and restarts with every
/// frame.
pub struct ProgressBody<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> ProgressBody<B> {
    /// `inner`, cut off after `limit` without data.
    pub fn new(inner: B, limit: Duration) -> Self {
        ProgressBody {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }
}

impl<B> HttpBody for ProgressBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !std::mem::replace(&mut this.waiting, true) {
            timer.as_mut().reset(Instant::now() + limit);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client sent no data for {} s", limit.as_secs()),
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use http_body_util::{BodyExt as _, StreamBody};

    /// A body fed by hand, frame by frame.
    fn channel() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        impl HttpBody<Data = Bytes, Error = Infallible> + Unpin,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        })
        .boxed();
        (tx, StreamBody::new(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_is_cut_off() {
        let (tx, body) = channel();
        let mut body = ProgressBody::new(body, Duration::from_secs(30));
        // Data every 20 s keeps it going, however long in all.
        for _ in 0..5 {
            let sender = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = sender.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            });
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        // Then 30 s of nothing: an error, not an end.
        let started = Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31));
        assert!(e.to_string().contains("no data for 30 s"), "{e}");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_body_ends_normally() {
        let (tx, body) = channel();
        let body = ProgressBody::new(body, Duration::from_secs(1));
        tx.send(Ok(Frame::data(Bytes::from_static(b"all"))))
            .await
            .unwrap();
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all, "all");
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let t = Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body_progress: Duration::from_secs(30),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = Clock::new();
            let start = clock.start;
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(10), "header"))
            );
            clock.enter(HANDLING);
            assert_eq!(clock.deadline(&t), None);
            // A byte of body while handling changes nothing.
            clock.read();
            assert_eq!(clock.deadline(&t), None);
            tokio::time::advance(Duration::from_secs(5)).await;
            clock.enter(RESPONDING);
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(65), "response"))
            );
            tokio::time::advance(Duration::from_secs(5)).await;
            clock.wrote(Some(100));
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(70), "response"))
            );
            // The body ends with its tail still unsent, then the tail goes out
            // slowly: each write counts as progress.
            clock.wrote(None);
            clock.enter(IDLE);
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(70), "response"))
            );
            tokio::time::advance(Duration::from_secs(5)).await;
            clock.wrote(Some(100));
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(75), "idle"))
            );
            tokio::time::advance(Duration::from_secs(25)).await;
            // The next request's first byte starts the header deadline.
            clock.read();
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(50), "header"))
            );
            clock.read();
            assert_eq!(
                clock.deadline(&t),
                Some((start + Duration::from_secs(50), "header"))
            );
        });
    }
}
