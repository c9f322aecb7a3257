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
    inner: hyper::body::Incoming,
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
    pub fn new(
        inner: hyper::body::Incoming,
        grace: Duration,
        ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Deadline {
        let started = Instant::now();
        if http_body::Body::is_end_stream(&inner) {
            ended.store(true, std::sync::atomic::Ordering::Release);
        }
        Deadline {
            inner,
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
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let deadline = self.arrived(data.len() as u64);
                    self.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.ended.store(true, std::sync::atomic::Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(TooSlow.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
