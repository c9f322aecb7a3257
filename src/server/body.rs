//! A request body that must arrive in time.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A request body must keep arriving at this many bytes a second, measured over each stretch of
/// the body timer: an honest upload of the largest body allowed is never cut, a trickle is.
pub const MIN_RATE: u64 = 1024;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct TooSlow;

/// A request body with deadlines: each stretch of `grace` must bring `grace` × [`MIN_RATE`]
/// bytes (or the body's end); a stretch that does starts the next. Measured per stretch, not
/// on average since the start: a client that sent most of a large body at once and then
/// trickled (or went quiet) was owed one second per KiB already sent — over two hours for
/// 8 MiB, holding its connection and the buffered body.
pub struct Deadline {
    /// `None` once handed to [`linger`] (on drop).
    inner: Option<hyper::body::Incoming>,
    /// HTTP/1: a body dropped unread is read to its end in the background (see [`linger`]).
    lingers: bool,
    /// The body failed (an error, or too slow): nothing more is read from it.
    failed: bool,
    grace: Duration,
    /// When the current stretch began, and what it brought so far.
    stretch: Instant,
    received: u64,
    sleep: Pin<Box<Sleep>>,
    /// Set once the body was read to its end (or had none).
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Deadline {
    /// Wrap `inner`, starting the clock now; `ended` is set when it has been read whole.
    /// `lingers`: an HTTP/1 body, read to its end in the background if dropped unread.
    pub fn new(
        inner: hyper::body::Incoming,
        grace: Duration,
        ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
        lingers: bool,
    ) -> Deadline {
        let started = Instant::now();
        if http_body::Body::is_end_stream(&inner) {
            ended.store(true, std::sync::atomic::Ordering::Release);
        }
        Deadline {
            inner: Some(inner),
            lingers,
            failed: false,
            grace,
            stretch: started,
            received: 0,
            sleep: Box::pin(tokio::time::sleep_until(started + grace)),
            ended,
        }
    }

    /// `n` bytes arrived: a stretch that brought its share is over, and the next begins now.
    /// Returns when the current stretch must have brought its share.
    fn arrived(&mut self, n: u64) -> Instant {
        self.received = self.received.saturating_add(n);
        if self.received >= MIN_RATE.saturating_mul(self.grace.as_secs().max(1)) {
            self.stretch = Instant::now();
            self.received = 0;
        }
        self.stretch + self.grace
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let deadline = self.arrived(data.len() as u64);
                    self.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.failed = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.ended.store(true, std::sync::atomic::Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.failed = true;
                    Poll::Ready(Some(Err(TooSlow.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let unread =
            self.lingers && !self.failed && !self.ended.load(std::sync::atomic::Ordering::Acquire);
        if unread && let Some(inner) = self.inner.take() {
            linger(inner);
        }
    }
}

/// The most a body dropped unread is read and thrown away for, in time and in bytes.
const LINGER_FOR: Duration = Duration::from_secs(10);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// Read and throw away, in a task of its own, the rest of an HTTP/1 request body its handler
/// dropped unread (a request refused before its body was read: a bad key, the rate limit, no
/// money, too large, an unknown route, a wrong method), up to [`LINGER_BYTES`] and
/// [`LINGER_FOR`]. The answer goes out at once, and the connection closes once the client has
/// sent what it was sending. Dropped unread, the body made hyper close the connection under a
/// client still writing it: the kernel then reset it, and a reverse proxy in front (nginx,
/// Caddy) answered 502 instead of the 401, 402 or 413 — which SDKs and Claude Code retry
/// (found by two independent checks, bodies of 3–19 MB). nginx and Apache do the same
/// ("lingering close"). Past either bound the body is dropped, as before.
fn linger(mut body: hyper::body::Incoming) {
    use http_body_util::BodyExt as _;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut read = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_FOR, drain).await;
    });
}
