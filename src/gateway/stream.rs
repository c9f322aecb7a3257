//! The stream relay: upstream events in, client SSE out, through a task of its own.
//!
//! The task reads upstream's events, has the dialect rewrite each one (and read what billing
//! needs on the way), passes keep-alive comments through, and counts output as it goes. It
//! ends on the dialect's end marker, an upstream error, a timeout (idle — comments do not
//! count — or total), or the client going away (the response body is dropped, so the channel
//! closes). Upstream's connection is then dropped, which cancels the request there (a client
//! that left first gives upstream a moment to send the usage it owes); billing settles and the
//! ledger row is committed before the final end marker or error event leaves. Upstream is read
//! at its own pace, not the client's: what a slow client has not taken waits in a bounded
//! backlog ([`backlog`]), since DeepSeek writes, and bills, the stream whatever the client
//! does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::WaitForCancellationFutureOwned;

mod backlog;
mod read_on;
#[cfg(test)]
mod tests;

use backlog::Backlog;

use super::billing::{Outcome, Pending};
use super::dialect::{Dialect, Step, StreamRewrite, Tally};
use super::error::GatewayError;
use crate::activity::ActivityEvent;
use crate::state::AppState;
use crate::store::Finish;
use crate::upstream::sse::SseItem;
use crate::upstream::{EventStream, UpstreamError, is_data_event};

/// Chunks buffered toward a slow client before its backlog ([`backlog`]) takes them.
const CHANNEL_DEPTH: usize = 64;
/// Longest a client may take nothing of what is left of its stream once upstream's part is
/// over, before it is taken to have stopped reading.
const BACKLOG_PIECE_WAIT: Duration = Duration::from_secs(60);
/// The slowest reader waited for, in bytes a second (a poor mobile link), for what is left of
/// its stream once upstream's part is over.
const SLOWEST_READER: usize = 16 * 1024;
/// Least time between two progress events of one stream.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// How long a stream the client left goes on reading upstream, relaying nothing, for the
/// usage that may already be on its way (see [`Relay::read_usage`]).
const USAGE_GRACE: Duration = Duration::from_millis(250);
/// Longest a stream whose client left before its opening is read on for the opening's counts
/// (see [`Relay::read_on`]): DeepSeek reads a long prompt in seconds.
const OPENING_WAIT: Duration = Duration::from_secs(10);
/// How long the answer's head waits for the stream's first piece, so that the two leave in one
/// write: upstream often sends its first event with its head, and a head sent alone costs the
/// client's first byte a `write(2)` and a task switch more (bench/PROFILE.md). Past this, the
/// head goes alone and the piece follows when it comes.
const FIRST_PIECE_WAIT: Duration = Duration::from_millis(20);

/// Start relaying `events` to the client; returns the streaming response once its first piece
/// is queued (or [`FIRST_PIECE_WAIT`] passed, or the stream ended).
pub async fn relay<D: Dialect>(
    state: Arc<AppState>,
    pending: Pending,
    events: EventStream,
    rewrite: D::Stream,
    deadline: tokio::time::Instant,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let ended = Arc::new(AtomicBool::new(false));
    // The relay is assembled here and handed to the task boxed: an async fn keeps its
    // arguments and its own copies of them side by side in its state, so unboxed, the relay
    // and the pending settlement would be held twice for as long as the stream is open.
    if let Some(ctx) = pending.ctx() {
        let state_cut = state.cut.clone().cancelled_owned();
        // A sender of its own, so the future owns what it waits on; it does not keep the
        // channel open for the client (only the receiver's end closes it).
        let watch = tx.clone();
        let gone: Gone = Box::pin(async move { watch.closed().await });
        let mut relay = Box::new(Relay {
            tally: Tally::new(ctx.started),
            request_id: ctx.request_id.clone(),
            state,
            events,
            rewrite,
            tx,
            deadline,
            last_progress: Instant::now(),
            cut: Box::pin(state_cut),
            gone,
            ended: ended.clone(),
            opened: false,
            backlog: Backlog::default(),
        });
        let first = relay.first_piece().await;
        if let Some(End::UpstreamBroke(why)) = first {
            return failed_before_head::<D>(relay, pending, why).await;
        }
        tokio::spawn(pump::<D>(relay, Box::new(pending), first));
    }
    // The body ends cleanly only after the stream's end (its marker or error event) was
    // queued; otherwise (a client too slow to take it, a relay that died) the connection is cut
    // rather than closed with the last chunk, so that no client takes a cut answer for a whole
    // one.
    let body = futures_util::stream::unfold(Some((rx, ended)), |open| async move {
        let (mut rx, ended) = open?;
        match rx.recv().await {
            Some(b) => Some((Ok(b), Some((rx, ended)))),
            None if ended.load(Ordering::Acquire) => None,
            None => Some((
                Err(std::io::Error::other("stream cut before its end")),
                None,
            )),
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Upstream's stream failed before anything of it was relayed (an error event, or a body that
/// is not a stream, as its first word) and the head is not sent yet: the failure is the
/// answer's status, as it is for a whole answer. A 200 whose stream is one error event was
/// an error the SDKs never retry (they retry a 502; found by an independent check).
async fn failed_before_head<D: Dialect>(
    relay: Box<Relay<D::Stream>>,
    pending: Pending,
    why: String,
) -> Response {
    let Relay {
        mut events,
        rewrite,
        tally,
        request_id,
        ..
    } = *relay;
    tracing::warn!(
        request_id,
        why,
        "upstream stream failed before its first event"
    );
    events.broke(&why);
    drop(events);
    // What the dialect read in upstream's own error event (an overloaded DeepSeek as the first
    // event is a 503 `overloaded_error`, not a 502; found by a review).
    let e = rewrite.failure();
    Box::pin(pending.settle(Outcome {
        usage: tally.usage,
        output_estimate: tally.output_estimate(),
        reported: tally.reported,
        finish: Finish::UpstreamError,
        status: e.status().as_u16(),
        ttft: tally.first_token,
    }))
    .await;
    D::error_response(e)
}

/// How the relay loop ended.
enum End {
    /// Complete; the end marker to send once settled.
    Done(String),
    ClientGone,
    /// The client did not take what was relayed before the request's deadline: it is the slow
    /// side, not upstream, and is treated as gone.
    ClientStalled,
    Timeout,
    UpstreamBroke(String),
    Shutdown,
}

/// What one item from upstream makes.
enum Piece {
    /// Text for the client.
    Out(String),
    /// Nothing to send (the dialect drops the event).
    Skip,
    /// The stream is over.
    End(End),
}

/// One relay: the upstream side, the client side, and what it has seen.
struct Relay<S> {
    state: Arc<AppState>,
    events: EventStream,
    rewrite: S,
    tx: mpsc::Sender<Bytes>,
    deadline: tokio::time::Instant,
    tally: Tally,
    request_id: String,
    last_progress: Instant,
    /// The daemon's shutdown cut, waited on for the stream's whole life: made once, because a
    /// fresh `cancelled()` per event joined and left the token's waiter list (shared by every
    /// open stream) each time; polling the one future still takes that list's lock briefly.
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The client went away (the response body, the channel's receiver, was dropped): made
    /// once for the same reason as `cut` — a fresh `tx.closed()` per event joined and left the
    /// channel's waiter list each time (~4k instructions a streamed request).
    gone: Gone,
    /// Set once the stream's end (marker or error event) is queued for the client: the body
    /// then ends cleanly; without it, the connection is cut.
    ended: Arc<AtomicBool>,
    /// A data event (not a keep-alive) has come: the stream has opened.
    opened: bool,
    /// What the client has not taken yet past the channel's depth (see [`backlog`]).
    backlog: Backlog,
}

/// See [`Relay::gone`].
type Gone = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Relay the rest of the stream (`first`: how it ended while the first piece was awaited, if it
/// did), then settle and send the end.
async fn pump<D: Dialect>(
    mut relay: Box<Relay<D::Stream>>,
    pending: Box<Pending>,
    first: Option<End>,
) {
    let end = match first {
        Some(end) => end,
        None => relay.run().await,
    };
    if matches!(end, End::ClientGone | End::ClientStalled) && relay.tally.usage.is_none() {
        relay.read_usage().await;
    }
    // Boxed: the end's state (the relay's parts moved out, the backlog's flush, settlement)
    // is the largest this task ever holds, and unboxed it would size the task of every open
    // stream for its whole life, not just its last moment (the task cell grew past an
    // allocator size class: ~0.5 KiB more a stream at 10 000 streams, bench/PROFILE.md).
    Box::pin(end_stream::<D>(relay, pending, end)).await;
}

/// The end of a stream: upstream's account told, what the client has not taken flushed,
/// the request settled, and the end (marker or error event) sent.
async fn end_stream<D: Dialect>(relay: Box<Relay<D::Stream>>, pending: Box<Pending>, end: End) {
    let Relay {
        mut events,
        rewrite,
        tx,
        tally,
        request_id,
        deadline,
        ended,
        mut backlog,
        mut cut,
        state,
        ..
    } = *relay;
    // The account is told how its answer ended: whole (a trial it was brings it back), or
    // broken after it began (it rests). A client that left, a stop, is no verdict.
    match &end {
        End::Done(_) => events.finished(),
        End::UpstreamBroke(why) => events.broke(why),
        End::Timeout => events.broke("the stream stalled"),
        End::ClientGone | End::ClientStalled | End::Shutdown => {}
    }
    // Cancel upstream before settling, so it stops generating as soon as possible.
    drop(events);
    // What the client has not taken yet goes before the end, which waits for settlement: it
    // is billed, so a client still taking it gets all of it, past the deadline (as long as it
    // takes a piece every [`BACKLOG_PIECE_WAIT`], for what the backlog takes at
    // [`SLOWEST_READER`] or a request timeout, whichever is longer; cut
    // at the deadline, a slow reader paid for all DeepSeek wrote and lost the tail, found by an
    // independent re-check). One that stops taking it is the slow side, and is billed as gone.
    // A stop cuts the wait to a few seconds, but what was relayed still goes first (a stop
    // that dropped it at once billed a customer for up to 4 MiB it never got; found by a
    // review).
    let end = match end {
        // Nothing waits (almost always): no timer is armed.
        End::ClientGone | End::ClientStalled => end,
        end if backlog.is_empty() => end,
        end => {
            let waiting = backlog.bytes();
            let flushed = async {
                while let Some(piece) = backlog.pop() {
                    match tokio::time::timeout(BACKLOG_PIECE_WAIT, tx.send(piece)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(End::ClientGone),
                        Err(_) => return Err(End::ClientStalled),
                    }
                }
                Ok(())
            };
            tokio::pin!(flushed);
            let now = tokio::time::Instant::now();
            let stop_grace = || tokio::time::Instant::now() + Duration::from_secs(5);
            let stopped_already = matches!(end, End::Shutdown);
            let until = if stopped_already {
                stop_grace()
            } else {
                let reading = Duration::from_secs((waiting / SLOWEST_READER) as u64);
                deadline.max(now + state.upstream.request_timeout.max(reading))
            };
            let before_stop = tokio::select! {
                biased;
                r = tokio::time::timeout_at(until, &mut flushed) => Some(r),
                _ = &mut cut, if !stopped_already => None,
            };
            let stopped = stopped_already || before_stop.is_none();
            let flushed = match before_stop {
                Some(r) => r,
                None => tokio::time::timeout_at(stop_grace(), &mut flushed).await,
            };
            match flushed {
                Ok(Ok(())) => end,
                Ok(Err(end)) => end,
                Err(_) if stopped => End::Shutdown,
                Err(_) => End::ClientStalled,
            }
        }
    };
    let (finish, final_event) = match end {
        End::Done(marker) => (Finish::Complete, Some(marker)),
        End::ClientGone => (Finish::ClientAbort, None),
        End::ClientStalled => {
            tracing::info!(
                request_id,
                "the client did not read its stream before the deadline"
            );
            (Finish::ClientAbort, None)
        }
        End::Timeout => {
            tracing::warn!(request_id, "upstream stream timed out");
            let ev = D::error_event(&GatewayError::UpstreamTimeout);
            (Finish::UpstreamTimeout, Some(ev))
        }
        End::Shutdown => (
            Finish::Shutdown,
            Some(D::error_event(&GatewayError::ShuttingDown)),
        ),
        End::UpstreamBroke(why) => {
            tracing::warn!(request_id, why, "upstream stream failed");
            (
                Finish::UpstreamError,
                Some(D::error_event(&rewrite.failure())),
            )
        }
    };
    let billed = pending
        .settle(Outcome {
            usage: tally.usage,
            output_estimate: tally.output_estimate(),
            reported: tally.reported,
            finish,
            status: 200,
            ttft: tally.first_token,
        })
        .await;
    // The bill could not be recorded: the stream does not end as whole (what was relayed is
    // out, but a client is not told the answer completed); it ends with an error event.
    let final_event = match final_event {
        Some(_) if !billed.recorded => Some(D::error_event(&GatewayError::NotRecordedYet)),
        other => other,
    };
    // A slow client still gets its terminator within the request's own deadline (at most a
    // few seconds when the daemon is stopping).
    let grace = tokio::time::Instant::now() + Duration::from_secs(5);
    let until = if matches!(finish, Finish::Shutdown) {
        grace
    } else {
        deadline.max(grace)
    };
    if let Some(ev) = final_event
        && let Ok(Ok(())) = tokio::time::timeout_at(until, tx.send(Bytes::from(ev))).await
    {
        ended.store(true, Ordering::Release);
    }
}

impl<S: StreamRewrite> Relay<S> {
    /// Relay until the stream ends, one way or another.
    async fn run(&mut self) -> End {
        loop {
            // Upstream first: while its events are ready, the two waits below are not polled
            // (each poll takes its waiter list's lock). A client gone meanwhile is found by the
            // next send; a shutdown, here.
            if self.state.cut.is_cancelled() {
                return End::Shutdown;
            }
            let next = if self.backlog.is_empty() {
                tokio::select! {
                    biased;
                    r = self.events.next() => r,
                    () = &mut self.gone => return End::ClientGone,
                    _ = &mut self.cut => return End::Shutdown,
                }
            } else {
                // A client behind: what it can take now goes first, upstream is read on.
                let room = tokio::select! {
                    biased;
                    _ = &mut self.cut => return End::Shutdown,
                    room = self.tx.reserve() => Ok(room),
                    r = self.events.next() => Err(r),
                };
                match room {
                    Ok(Ok(permit)) => {
                        if let Some(piece) = self.backlog.pop() {
                            permit.send(piece);
                        }
                        continue;
                    }
                    Ok(Err(_)) => return End::ClientGone,
                    // The deadline with the client still behind: it is the slow side.
                    Err(Err(UpstreamError::Timeout))
                        if tokio::time::Instant::now() >= self.deadline =>
                    {
                        return End::ClientStalled;
                    }
                    Err(next) => next,
                }
            };
            let out = match self.piece(next) {
                Piece::Out(out) => out,
                Piece::Skip => continue,
                Piece::End(end) => return end,
            };
            if let Some(end) = self.send(out).await {
                return end;
            }
        }
    }

    /// Wait up to [`FIRST_PIECE_WAIT`] for the first piece and queue it: `Some` if the stream
    /// ended meanwhile, `None` if it goes on (with its first piece queued or still to come).
    /// The channel cannot be closed yet (its receiver becomes the answer's body); a client that
    /// leaves meanwhile drops this wait with the handler, and the pending settlement bills it
    /// as a client gone before the answer (nothing was relayed).
    async fn first_piece(&mut self) -> Option<End> {
        let until = tokio::time::Instant::now() + FIRST_PIECE_WAIT;
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut self.cut => return Some(End::Shutdown),
                r = tokio::time::timeout_at(until, self.events.next()) => r.ok()?,
            };
            match self.piece(next) {
                Piece::Out(out) => return self.send(out).await,
                Piece::Skip => {}
                Piece::End(end) => return Some(end),
            }
        }
    }

    /// What one item read from upstream makes: a piece for the client, nothing, or the end.
    fn piece(&mut self, next: Result<Option<SseItem>, UpstreamError>) -> Piece {
        match next {
            // The answer was whole (its usage came, which upstream sends last) before the
            // connection broke or went quiet: it ends as complete — told to retry, a client
            // would pay twice for an answer it has.
            Err(e) => Piece::End(match self.rewrite.end_at_eof(&self.tally) {
                Ok(marker) => End::Done(marker),
                Err(_) if matches!(e, UpstreamError::Timeout) => End::Timeout,
                Err(_) => End::UpstreamBroke(e.to_string()),
            }),
            // Upstream closed without its end marker: the dialect says whether what arrived is
            // complete anyway.
            Ok(None) => Piece::End(match self.rewrite.end_at_eof(&self.tally) {
                Ok(marker) => End::Done(marker),
                Err(why) => End::UpstreamBroke(why),
            }),
            Ok(Some(SseItem::Comment(c))) => Piece::Out(format!(":{c}\n\n")),
            Ok(Some(SseItem::Event(ev))) => {
                if !self.opened && is_data_event(&ev) {
                    self.opened = true;
                }
                match self.rewrite.event(&ev, &mut self.tally) {
                    Ok(Step::Send(out)) => Piece::Out(out),
                    Ok(Step::Skip) => Piece::Skip,
                    Ok(Step::End(marker)) => Piece::End(End::Done(marker)),
                    // An error after the answer was whole (its finish and usage came) ends it as
                    // complete, as a break there does: told to retry, a client would pay twice.
                    Err(why) => Piece::End(match self.rewrite.end_at_eof(&self.tally) {
                        Ok(marker) => End::Done(marker),
                        Err(_) => End::UpstreamBroke(why),
                    }),
                }
            }
        }
    }

    /// Send one piece to the client (behind what it has not taken yet), and a progress event
    /// now and then. A client too far behind is waited for, until the deadline.
    async fn send(&mut self, out: String) -> Option<End> {
        let mut piece = Bytes::from(out);
        if self.backlog.is_empty() {
            // Almost always there is room: no timer is armed for a send that cannot wait.
            match self.tx.try_send(piece) {
                Ok(()) => return self.progress(),
                Err(TrySendError::Closed(_)) => return Some(End::ClientGone),
                Err(TrySendError::Full(p)) => piece = p,
            }
        }
        while let Err(p) = self.backlog.push(piece) {
            piece = p;
            // Too far behind: upstream waits until the client takes the oldest piece, or
            // until the deadline, or until the daemon stops (a stream stuck here must still
            // settle when it is cut).
            let room = tokio::select! {
                biased;
                _ = &mut self.cut => return Some(End::Shutdown),
                r = tokio::time::timeout_at(self.deadline, self.tx.reserve()) => r,
            };
            let permit = match room {
                Err(_) => return Some(End::ClientStalled),
                Ok(Err(_)) => return Some(End::ClientGone),
                Ok(Ok(permit)) => permit,
            };
            match self.backlog.pop() {
                Some(oldest) => permit.send(oldest),
                // A piece larger than any backlog goes as soon as there is room.
                None => {
                    permit.send(piece);
                    break;
                }
            }
        }
        self.progress()
    }

    /// A progress event now and then (never an end).
    fn progress(&mut self) -> Option<End> {
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            self.state.activity.emit(ActivityEvent::RequestProgress {
                request_id: self.request_id.clone(),
                output_tokens: self.tally.output_estimate(),
                at_ms: crate::clock::now_ms(),
            });
        }
        None
    }
}
