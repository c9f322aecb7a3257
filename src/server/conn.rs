//! One client connection: hyper (HTTP/1.1 or HTTP/2) with the timers of [`super::Limits`], the
//! client's address for the handlers, and a watchdog for connections that idle and for clients
//! that hang up while hyper is not reading.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::body::Deadline;
use super::{App, Limits};

/// How often the watchdog looks at a connection.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The most an HTTP/1 connection buffers while it reads a request's head (request line and
/// headers; longer is answered 431 or 414 and closed), and the size of its reads of a body.
/// hyper's default, ~408 KiB, let a client park that much in every connection it opened and
/// never finished a header of: 1 000 connections held 400 MiB until the header timeout, and the
/// default cap on connections is 10 000 (found by an independent check). nginx's default
/// allows 32 KiB of headers too (`large_client_header_buffers 4 8k`); HTTP/2 heads are held
/// to hyper's 16 KiB.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How long an HTTP/1.1 connection from loopback — where the reverse proxy is — is kept alive
/// with no request (unless `server.idle_timeout_secs` is longer): longer than the pools of
/// idle connections reverse proxies keep (Caddy two minutes, Traefik and cloudflared 90 s,
/// nginx's `keepalive_timeout` 60 s), so that a proxy never sends a request on a connection
/// just as the daemon closes it — it answers its client an empty 502 then. hyper's header
/// timer closed idle connections after `server.header_timeout_secs` (30 s; found by an
/// independent check behind Caddy); the header timeout now runs from a request's first byte
/// (see [`Activity::verdict`]). Other clients keep the shorter of the header and idle
/// timeouts, as before: an idle connection holds a slot, and a client reaching the daemon
/// directly could hold its share of them with a request every 150 s (found by a re-check:
/// with every slot taken, a new client waited 150 s).
const KEEP_ALIVE: Duration = Duration::from_secs(150);

/// A connection to serve.
pub(super) struct Connection {
    pub(super) app: App,
    pub(super) addr: SocketAddr,
    pub(super) limits: Limits,
    pub(super) closing: CancellationToken,
}

/// What the watchdog needs to know: requests in progress, and when bytes last moved.
pub(super) struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` when bytes were last read or written.
    last_io_ms: AtomicU64,
    in_progress: AtomicUsize,
    requests: AtomicU64,
    /// Answers in progress whose next bytes wait for the client to take them (see
    /// [`Finished`]): handed to hyper and not asked for since.
    on_client: AtomicUsize,
    /// Milliseconds after `opened` when an answer last moved on (a piece of it taken).
    progress_ms: AtomicU64,
    /// The connection speaks HTTP/2 (its writes are not all answers: PING acknowledgements,
    /// SETTINGS, window updates).
    http2: AtomicBool,
    /// Each answer's own clock (see [`Finished`]): since when (ms after `opened`) it has
    /// waited on the client, `u64::MAX` while it does not. Registered once per answer.
    waits: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    /// HTTP/1: when (ms after `opened`) the first byte of the next request's head was read
    /// with no request in progress, `u64::MAX` until then; the head must be whole within the
    /// header timeout from there.
    head_since_ms: AtomicU64,
    /// HTTP/1: an answer said `Connection: close` (its request's body was not read). hyper,
    /// left with the unread body, may wait for it rather than close: the connection is then
    /// idle for the header timeout at most, not for the keep-alive.
    ends_after_answer: AtomicBool,
    /// The peer is loopback (a reverse proxy): HTTP/1 keep-alive for [`KEEP_ALIVE`].
    loopback: bool,
    /// HTTP/2: the connection takes no new requests (a GOAWAY went: the daemon is stopping,
    /// or an answer of it was left untaken, see [`Activity::stalled_answer`]); it closes once
    /// what it still has in progress is answered or left untaken.
    draining: AtomicBool,
}

impl Activity {
    fn new(loopback: bool) -> Activity {
        Activity {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            on_client: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            waits: std::sync::Mutex::new(Vec::new()),
            head_since_ms: AtomicU64::new(u64::MAX),
            ends_after_answer: AtomicBool::new(false),
            loopback,
            draining: AtomicBool::new(false),
        }
    }

    /// Bytes were read: with no request in progress they begin the next request's head.
    fn read(&self) {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            self.mark();
        } else {
            let _ = self.head_since_ms.compare_exchange(
                u64::MAX,
                self.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Milliseconds since the connection opened.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes moved: activity only while a request is in progress. Between requests, what a
    /// client sends or is sent is not a request — an HTTP/2 client's PING frames (and the
    /// server's answers to them) kept a connection with nothing to do open for ever, and with
    /// enough of them, every slot; an HTTP/1.1 request still being received is the header
    /// timer's.
    fn touch(&self) {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            self.mark();
        }
    }

    fn mark(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// An answer moved on: a piece of it was taken (or it was handed over).
    fn progressed(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes were written to the socket. On HTTP/1 they are all the answer's: the client took
    /// some, so its answer moved on — hyper asks for an answer's next piece only once the
    /// socket has room again, which with the kernel's buffers (MiBs on loopback, where a proxy
    /// sits) could be minutes for a slow but steady reader, and one was cut (found by an
    /// independent check). On HTTP/2 the server also writes frames of its own (a PING's
    /// answer kept a connection of unread answers alive), so there only the answers count.
    fn wrote(&self) {
        self.touch();
        if !self.http2.load(Ordering::Relaxed) {
            self.progressed();
        }
    }

    /// How many answers have waited on the client longer than `limit` (answers gone are
    /// forgotten here).
    fn untaken_longer_than(&self, limit: Duration) -> usize {
        let now = self.now_ms();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let Ok(mut waits) = self.waits.lock() else {
            return 0;
        };
        waits.retain(|w| w.strong_count() > 0);
        waits
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|since| since.load(Ordering::Relaxed))
            .filter(|&since| since != u64::MAX && now.saturating_sub(since) > limit)
            .count()
    }

    /// HTTP/2, not draining yet: an answer has waited on the client longer than the idle
    /// timeout. The connection then takes no new request (GOAWAY) and closes once the rest
    /// of what it has in progress is answered — rather than at once, which cut every other
    /// answer on it: behind a proxy that speaks HTTP/2 to the daemon, other customers'
    /// streams, billed as their aborts (found by an independent check). A client sending a
    /// cheap request now and then can no longer keep a connection of answers it never takes
    /// (its window shut) open, as it could before the watchdog closed it.
    fn stalled_answer(&self, limits: &Limits) -> bool {
        self.http2.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.in_progress.load(Ordering::Acquire) > 0
            && self.untaken_longer_than(limits.idle_timeout) > 0
    }

    /// A request began; it is in progress until the returned guard is dropped (with the
    /// response body, once sent).
    pub(super) fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(u64::MAX, Ordering::Relaxed);
        self.mark();
        InProgress(self.clone())
    }

    /// Whether a request is in progress.
    fn busy(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) > 0
    }

    /// Why the connection should be closed now, if it should.
    fn verdict(&self, limits: &Limits) -> Option<&'static str> {
        // Looked at every tick on HTTP/2 (it also forgets the answers gone since).
        let untaken = if self.http2.load(Ordering::Relaxed) {
            self.untaken_longer_than(limits.idle_timeout)
        } else {
            0
        };
        let in_progress = self.in_progress.load(Ordering::Acquire);
        if in_progress > 0 {
            // Every request in progress has its answer ready and waiting for the client, and
            // the client took none of any of them for the idle timeout: an HTTP/2 client that
            // keeps its flow-control window shut (answering PINGs meanwhile) held a slot and
            // its answers' memory for ever, unauthenticated (found by an independent check:
            // ~6 MiB a connection); an HTTP/1 client that stopped reading likewise. A request
            // still being handled, or a stream waiting for DeepSeek's next words, is ours to
            // wait for, and keeps the connection.
            let on_client = self.on_client.load(Ordering::Acquire);
            let still = Duration::from_millis(
                self.now_ms()
                    .saturating_sub(self.progress_ms.load(Ordering::Relaxed)),
            );
            if on_client >= in_progress && still > limits.idle_timeout {
                return Some("the client took none of its answers within the idle timeout");
            }
            // HTTP/2 once draining (see [`Activity::stalled_answer`]): everything still in
            // progress is an answer left untaken that long.
            if self.draining.load(Ordering::Relaxed) && untaken >= in_progress {
                return Some(
                    "the client took none of its remaining answers within the idle timeout",
                );
            }
            return None;
        }
        let now = self.opened.elapsed();
        if self.requests.load(Ordering::Relaxed) == 0 && now > limits.header_timeout {
            return Some("no request within the header timeout");
        }
        let http2 = self.http2.load(Ordering::Relaxed);
        // HTTP/1: a head begun must be whole within the header timeout (hyper's own timer is
        // off: it also closed idle keep-alive connections after that time, see [`KEEP_ALIVE`]).
        // On HTTP/2 what comes between requests is frames, never a head (hyper bounds those).
        let head_since = self.head_since_ms.load(Ordering::Relaxed);
        if !http2
            && head_since != u64::MAX
            && now.saturating_sub(Duration::from_millis(head_since)) > limits.header_timeout
        {
            return Some("a request's headers did not arrive within the header timeout");
        }
        let idle = if http2 {
            limits.idle_timeout
        } else if self.ends_after_answer.load(Ordering::Relaxed) {
            limits.header_timeout
        } else if self.loopback {
            limits.idle_timeout.max(KEEP_ALIVE)
        } else {
            limits.idle_timeout.min(limits.header_timeout)
        };
        let last_io = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        (now.saturating_sub(last_io) > idle).then_some("idle")
    }
}

/// A request in progress on its connection.
pub(super) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.mark();
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connection {
    /// Serve until the client or hyper closes the connection, the watchdog closes it, or the
    /// daemon stops (then gracefully: requests in progress finish).
    pub(super) async fn serve(self, tcp: TcpStream) {
        // A second handle on the socket, to see the client hang up while hyper does not read:
        // an HTTP/1 connection holding bytes past the request's body (a pipelined request, or
        // a mere CRLF) is not read again until the answer is sent, so a client that left was
        // never noticed — its whole answer ran to its end upstream and was billed as
        // delivered (found by an independent check).
        let peer = tcp.as_fd().try_clone_to_owned().ok();
        // A client that gave up while its connection waited in the listen backlog (every slot
        // taken) has its hang-up in already: its request is not served — sent upstream, a
        // whole answer was billed in full to a client long gone (found by an independent
        // check). One `poll` a connection.
        if peer.as_ref().is_some_and(hung_up) {
            tracing::debug!(addr = %self.addr, "client hung up before its connection was served");
            return;
        }
        let activity = Arc::new(Activity::new(self.addr.ip().to_canonical().is_loopback()));
        let io = TokioIo::new(Watched {
            inner: tcp,
            activity: activity.clone(),
        });
        let (app, addr, limits) = (self.app, self.addr, self.limits);
        let watched = activity.clone();
        let service = tower::service_fn(move |req: axum::http::Request<Incoming>| {
            let in_progress = watched.begin();
            let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let http1 = req.version() < axum::http::Version::HTTP_2;
            if !http1 {
                watched.http2.store(true, Ordering::Relaxed);
            }
            let mut req =
                req.map(|b| Body::new(Deadline::new(b, limits.body_timeout, ended.clone(), http1)));
            req.extensions_mut().insert(ConnectInfo(addr));
            let routed = match (app.shortcut)(req) {
                Ok(answer) => Ok(answer),
                Err(req) => Err((app.router.clone(), req)),
            };
            async move {
                let mut resp = match routed {
                    Ok(answer) => answer.await,
                    Err((router, req)) => router
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|e: Infallible| match e {}),
                };
                // A request refused before its body was read (too large, no key, no money)
                // leaves bytes on the connection that hyper will not read: it closes the
                // connection after the answer, so say so, or a keep-alive client sends its next
                // request into a closed socket.
                if http1 && !ended.load(Ordering::Acquire) {
                    in_progress
                        .0
                        .ends_after_answer
                        .store(true, Ordering::Relaxed);
                    resp.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(resp.map(|b| Body::new(Finished::new(b, in_progress))))
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(MAX_HEAD_BYTES)
            .timer(TokioTimer::new())
            // The watchdog times heads (from their first byte) and idle connections apart.
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.idle_timeout)
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
        let mut conn = std::pin::pin!(conn);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let mut stopping = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%addr, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.closing.cancelled(), if !stopping => {
                    stopping = true;
                    activity.draining.store(true, Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                }
                _ = watch.tick() => {
                    if let Some(why) = activity.verdict(&limits) {
                        tracing::debug!(%addr, why, "closing connection");
                        return;
                    }
                    if !stopping && activity.stalled_answer(&limits) {
                        tracing::debug!(%addr, "an answer left untaken within the idle timeout: no new requests on this connection, closed once the others end");
                        stopping = true;
                        activity.draining.store(true, Ordering::Relaxed);
                        conn.as_mut().graceful_shutdown();
                    }
                    // Dropping the connection drops its requests in progress: each ends as its
                    // client's abort, as when hyper sees the hang-up itself.
                    if activity.busy() && peer.as_ref().is_some_and(hung_up) {
                        tracing::debug!(%addr, "client hung up with a request in progress");
                        return;
                    }
                }
            }
        }
    }
}

/// Whether the client closed its side of the connection (or it broke): `poll` with
/// `POLLRDHUP`, which the kernel reports once the client's FIN is in, whatever unread bytes
/// come before it. Half-closing and waiting for the answer is not supported, as in hyper,
/// which also ends a request whose client it sees half-close.
fn hung_up(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
}

/// The TCP stream, noting when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that holds its request "in progress" until it is sent or dropped.
struct Finished {
    inner: Body,
    in_progress: Option<InProgress>,
    /// Counted in the connection's `on_client`: handed to hyper, or a piece of it given, and
    /// not asked for again since (hyper asks for the next piece once the client has room for
    /// it). A poll that finds nothing ready yet (a stream waiting for DeepSeek) clears it.
    on_client: bool,
    /// This answer's own clock, in the connection's `waits`: since when it has waited on the
    /// client, `u64::MAX` while it does not.
    since: Arc<AtomicU64>,
    /// HTTP/2: what is left of a data frame given in pieces of [`H2_PIECE`] (see there).
    rest: Option<Bytes>,
    /// The connection speaks HTTP/2.
    http2: bool,
}

/// The most of an answer handed to hyper at once on HTTP/2. hyper takes a whole frame from the
/// body as soon as its stream has one byte of window, and drops the body once the last frame
/// is taken: an answer given whole left the body — and the watchdog's view of it — while its
/// bytes waited in the connection for a client that never took them. Held back to one piece at
/// a time, the rest stays here, waiting on the client where the watchdog sees it (found by an
/// independent re-check: streams given a one-byte window each, and a cheap request now and then,
/// held ~6.7 MiB a connection for ever, unauthenticated).
const H2_PIECE: usize = 16 * 1024;

impl Finished {
    /// Wrap `inner`, the answer to the request `in_progress`, now handed to hyper.
    fn new(inner: Body, in_progress: InProgress) -> Finished {
        let since = Arc::new(AtomicU64::new(u64::MAX));
        // HTTP/2 only (one answer at a time on HTTP/1: the connection's clock is the answer's).
        if in_progress.0.http2.load(Ordering::Relaxed)
            && let Ok(mut waits) = in_progress.0.waits.lock()
        {
            // Bounded between the watchdog's looks, whatever the request rate.
            if waits.len() >= 1024 {
                waits.retain(|w| w.strong_count() > 0);
            }
            waits.push(Arc::downgrade(&since));
        }
        let http2 = in_progress.0.http2.load(Ordering::Relaxed);
        let mut f = Finished {
            inner,
            in_progress: Some(in_progress),
            on_client: false,
            since,
            rest: None,
            http2,
        };
        f.wait_on_client(true);
        f
    }

    /// Whether the answer's next bytes now wait for the client.
    fn wait_on_client(&mut self, waits: bool) {
        let Some(InProgress(activity)) = &self.in_progress else {
            return;
        };
        if waits {
            activity.progressed();
            self.since.store(activity.now_ms(), Ordering::Relaxed);
        } else {
            self.since.store(u64::MAX, Ordering::Relaxed);
        }
        if waits != self.on_client {
            if waits {
                activity.on_client.fetch_add(1, Ordering::AcqRel);
            } else {
                activity.on_client.fetch_sub(1, Ordering::AcqRel);
            }
            self.on_client = waits;
        }
    }

    /// The first [`H2_PIECE`] of `data`, keeping the rest for the next poll — and of an
    /// answer's last piece, all but its last byte. hyper hands a piece to h2 once the stream
    /// has a byte of window and asks for the next one at once, but keeps the next one until
    /// the stream has window again: so an answer's last byte, kept for a piece of its own,
    /// keeps the answer here, in the watchdog's view, until the client has taken the rest
    /// (found by a re-check: an answer of 16 KiB or less went to h2 whole with its end and
    /// left at once, and one byte of window per stream held a connection for ever).
    fn piece_of(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > H2_PIECE {
            self.rest = Some(data.split_off(H2_PIECE));
        } else if data.len() > 1 && http_body::Body::is_end_stream(&self.inner) {
            self.rest = Some(data.split_off(data.len() - 1));
        }
        data
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.wait_on_client(false);
    }
}

impl http_body::Body for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(rest) = self.rest.take() {
            let piece = self.piece_of(rest);
            self.wait_on_client(true);
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if self.http2 => {
                Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(data) => Frame::data(self.piece_of(data)),
                    Err(frame) => frame,
                })))
            }
            polled => polled,
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.wait_on_client(true),
            Poll::Pending | Poll::Ready(Some(Err(_))) => self.wait_on_client(false),
            Poll::Ready(None) => {
                self.wait_on_client(false);
                self.in_progress = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
