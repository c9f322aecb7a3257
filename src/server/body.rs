//! A request body that must arrive in time.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// After the grace time, a request body must keep arriving at this many bytes a second on
/// average: an honest upload of the largest body allowed is never cut, a trickle is.
pub const MIN_RATE: u64 = 1024;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct TooSlow;

/// A request body with a deadline: `grace`, plus one second per [`MIN_RATE`] bytes received —
/// and never more than `grace` after the last bytes came. Without that second bound, a client
/// that sent most of a large body at once and then went quiet was owed one second per KiB
/// already sent (over two hours for 8 MiB), holding its connection and the buffered body.
pub struct Deadline {
    inner: hyper::body::Incoming,
    started: Instant,
    grace: Duration,
    received: u64,
    last_data: Instant,
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
            started,
            grace,
            received: 0,
            last_data: started,
            sleep: Box::pin(tokio::time::sleep_until(started + grace)),
            ended,
        }
    }

    fn deadline(&self) -> Instant {
        let average = self.started + self.grace + Duration::from_secs(self.received / MIN_RATE);
        average.min(self.last_data + self.grace)
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
                    self.received += data.len() as u64;
                    self.last_data = Instant::now();
                    let deadline = self.deadline();
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
