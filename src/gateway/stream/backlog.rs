//! What a stream's client has not taken yet, past the channel's few chunks: upstream is read
//! on meanwhile, so what DeepSeek generates (and bills the operator for) is what the relay
//! reads and bills, whatever the client's pace.
//!
//! Why: paused behind a client that read slowly (a small receive window, a read every 50 s,
//! never idle long enough to be cut), the relay stopped reading upstream while DeepSeek went
//! on generating; at the deadline the client was billed what it had read — 0.57 of what
//! DeepSeek wrote, 0.07 with `top_logprobs` (found by an independent check). Bounded: a
//! client more than [`MAX_BACKLOG`] behind, or one whose backlog would take every lagging
//! stream's together past [`MAX_BACKLOG_TOTAL`], is waited for again (upstream paused) until
//! it takes the oldest piece — a slow reader is not cut for being slow, and one that takes
//! nothing is cut by the request's deadline or the connection's idle timer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Most a stream's client may lag behind upstream, in bytes of relayed events: ~20k tokens of
/// chat chunks, minutes of a slow reader's lag.
pub const MAX_BACKLOG: usize = 4 * 1024 * 1024;
/// Most every stream's backlog may hold together: a memory bound however many clients lag.
pub const MAX_BACKLOG_TOTAL: usize = 256 * 1024 * 1024;

/// What a piece costs beyond its bytes: its slot in the queue, its allocations' headers and
/// size-class rounding (the event is built as text, then made `Bytes`). Counted in the bound
/// on every stream's backlog together, so that it is of memory, not of text: with chat chunks
/// of ~190 bytes, 256 MiB of counted text held ~365 MB (found by an independent check); a
/// re-check measured ~388 bytes of memory for a 226-byte piece, so ~160 over its text. A
/// stream's own bound, [`MAX_BACKLOG`], is of its events' text: how far its client lags.
const PIECE_OVERHEAD: usize = 192;

/// What a piece counts for in [`MAX_BACKLOG_TOTAL`].
fn cost(piece: &Bytes) -> usize {
    piece.len() + PIECE_OVERHEAD
}

/// Memory counted in every stream's backlog (see [`cost`]).
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// One stream's pieces waiting for room in its channel, in order.
#[derive(Default)]
pub struct Backlog {
    items: VecDeque<Bytes>,
    /// The pieces' text.
    bytes: usize,
    /// What they count for in [`TOTAL`].
    cost: usize,
}

impl Backlog {
    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of events waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queue a piece behind the others; given back when the client is too far behind, or
    /// every lagging stream together holds too much.
    pub fn push(&mut self, piece: Bytes) -> Result<(), Bytes> {
        if self.bytes + piece.len() > MAX_BACKLOG {
            return Err(piece);
        }
        let n = cost(&piece);
        let before = TOTAL.fetch_add(n, Ordering::Relaxed);
        if before + n > MAX_BACKLOG_TOTAL {
            TOTAL.fetch_sub(n, Ordering::Relaxed);
            return Err(piece);
        }
        self.bytes += piece.len();
        self.cost += n;
        self.items.push_back(piece);
        Ok(())
    }

    /// The oldest piece waiting.
    pub fn pop(&mut self) -> Option<Bytes> {
        let piece = self.items.pop_front()?;
        self.bytes -= piece.len();
        self.cost -= cost(&piece);
        TOTAL.fetch_sub(cost(&piece), Ordering::Relaxed);
        Some(piece)
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        TOTAL.fetch_sub(self.cost, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_keeps_order_and_its_bound() {
        let mut b = Backlog::default();
        assert!(b.push(Bytes::from_static(b"one")).is_ok());
        assert!(b.push(Bytes::from_static(b"two")).is_ok());
        assert_eq!(b.pop().as_deref(), Some(&b"one"[..]));
        let big = b.push(Bytes::from(vec![0; MAX_BACKLOG]));
        assert_eq!(big.map_err(|p| p.len()), Err(MAX_BACKLOG), "past the bound");
        assert_eq!(b.pop().as_deref(), Some(&b"two"[..]));
        assert!(b.pop().is_none() && b.is_empty());
        assert!(
            b.push(Bytes::from(vec![0; MAX_BACKLOG])).is_ok(),
            "exactly the bound"
        );
        assert!(b.push(Bytes::from_static(b"x")).is_err());
        // Every stream's together count each piece's bookkeeping too.
        assert_eq!(b.cost, MAX_BACKLOG + PIECE_OVERHEAD);
    }
}
