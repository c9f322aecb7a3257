//! The simulator's body writer, shared by both wire formats: [`Out`] feeds a response body chunk
//! by chunk (so a failed send reveals a client that went away, and shutdown can cut it), and
//! [`run`] writes a [`Plan`] — whole or as SSE — in the shapes a [`Wire`] gives, with the
//! keep-alives, delays and failure directives; [`respond`] starts it for a recorded request.

use std::io;
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, watch};

use super::directives::Plan;
use super::{Outcome, Shared};

/// One item of a response body; an `Err` makes hyper cut the connection.
pub(super) type Chunk = io::Result<Bytes>;

/// The SSE comment DeepSeek sends while a request waits in its queue.
pub(super) const KEEPALIVE: &str = ": keep-alive\n\n";

/// Why production of a body stopped early.
pub(super) enum Halt {
    /// The body channel is closed: the client went away.
    Gone,
    /// The simulator is shutting down.
    Shutdown,
}

/// The producing end of a response body.
pub(super) struct Out {
    tx: mpsc::Sender<Chunk>,
    stop: watch::Receiver<bool>,
}

impl Out {
    /// A writer into `tx` that gives up when `stop` turns true.
    pub(super) fn new(tx: mpsc::Sender<Chunk>, stop: watch::Receiver<bool>) -> Self {
        Out { tx, stop }
    }

    /// Hand `bytes` to the connection; fails once the client is gone or on shutdown.
    pub(super) async fn send(&mut self, bytes: impl Into<Bytes>) -> Result<(), Halt> {
        tokio::select! {
            sent = self.tx.send(Ok(bytes.into())) => sent.map_err(|_| Halt::Gone),
            _ = self.stop.wait_for(|s| *s) => Err(Halt::Shutdown),
        }
    }

    /// Wait `d`, unless the simulator shuts down first.
    pub(super) async fn sleep(&mut self, d: Duration) -> Result<(), Halt> {
        if d.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Halt::Shutdown),
        }
    }

    /// Wait `total`, sending `beat` every `every` meanwhile, as DeepSeek does while queued.
    pub(super) async fn idle(
        &mut self,
        total: Duration,
        every: Duration,
        beat: &'static str,
    ) -> Result<(), Halt> {
        // An end beyond what `Instant` can represent means "forever" (how stalls are made).
        let end = Instant::now().checked_add(total);
        loop {
            let left = end.map_or(every, |e| e.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(());
            }
            self.sleep(every.min(left)).await?;
            if end.is_none_or(|e| Instant::now() < e) {
                self.send(beat).await?;
            }
        }
    }

    /// Cut the connection without a clean end.
    pub(super) async fn abort(self) -> Outcome {
        abort(&self.tx).await
    }
}

/// Make hyper cut the connection by handing it an error instead of bytes.
pub(super) async fn abort(tx: &mpsc::Sender<Chunk>) -> Outcome {
    let _ = tx
        .send(Err(io::Error::other("simulated connection drop")))
        .await;
    Outcome::Dropped
}

/// How one wire format words an answer; [`run`] handles timing, keep-alives and faults around it.
pub(super) trait Wire: Send + Sync {
    /// The whole non-stream body.
    fn whole(&self, p: &Plan) -> String;
    /// The stream's events before the first token.
    fn opening(&self, p: &Plan) -> String;
    /// The event(s) carrying token `i` (reasoning tokens first, then content).
    fn token(&self, p: &Plan, i: usize) -> String;
    /// The events after the last token: final usage and the format's end marker.
    fn closing(&self, p: &Plan) -> String;
    /// The error event sent mid-stream by `error_after`.
    fn error(&self) -> &'static str;
    /// The error event sent mid-stream by `overloaded_after`: upstream saying it is
    /// overloaded, where the format has words for it.
    fn overloaded(&self) -> &'static str {
        self.error()
    }
    /// Event `i` of a `garbage` stream: SSE framing around a payload that is not JSON.
    fn garbage(&self, i: usize) -> String;
    /// The wire's end marker (`[DONE]`, `message_stop`): after a `garbage` stream's events, and
    /// where `drop_at_end` cuts the connection.
    fn garbage_end(&self) -> &'static str;
    /// What is sent while a stream stalls (`stall_after`): an SSE comment, or (Anthropic's
    /// wire with `ping_keepalive`) `ping` events.
    fn keepalive(&self, _p: &Plan) -> &'static str {
        KEEPALIVE
    }
}

/// Answer request `index` with `plan` in format `wire`: the body is produced by a task of its own,
/// which records how it ended.
pub(super) fn respond(
    sh: &Arc<Shared>,
    index: usize,
    plan: Plan,
    wire: impl Wire + 'static,
) -> Response {
    sh.set_served(index, &plan.served);
    // The body is fed through a small channel so that a failed send tells us hyper dropped the
    // body, i.e. the client went away; an `Err` item makes hyper cut the connection.
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let content_type = if plan.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let producer = sh.clone();
    tokio::spawn(async move {
        let outcome = run(plan, wire, tx, producer.stop.clone()).await;
        producer.set_outcome(index, outcome);
    });
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Produce the answer of `p` in format `w` into `tx` and say how it ended.
pub(super) async fn run(
    p: Plan,
    w: impl Wire,
    tx: mpsc::Sender<Chunk>,
    stop: watch::Receiver<bool>,
) -> Outcome {
    let out = Out::new(tx.clone(), stop);
    let result = if p.stream {
        stream_body(&p, &w, out).await
    } else {
        plain_body(&p, &w, out).await
    };
    match result {
        Ok(outcome) => outcome,
        Err(Halt::Gone) => Outcome::ClientDisconnected,
        Err(Halt::Shutdown) => abort(&tx).await,
    }
}

/// Write `p` as one JSON body, after blank-line keep-alives while queued (as DeepSeek does for
/// non-stream requests); `garbage` sends an HTML error page, `drop_after` half the body.
async fn plain_body(p: &Plan, w: &impl Wire, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, "\n").await?;
    if p.d.garbage {
        out.send("<html><body><h1>502 Bad Gateway</h1></body></html>")
            .await?;
        return Ok(Outcome::Completed);
    }
    let text = w.whole(p);
    if p.d.drop_after.is_some() {
        out.send(text.as_bytes()[..text.len() / 2].to_vec()).await?;
        return Ok(out.abort().await);
    }
    out.send(text).await?;
    Ok(Outcome::Completed)
}

/// Write `p` as an SSE stream in format `w`, one token per event, honouring the failure
/// directives (counted in tokens sent).
async fn stream_body(p: &Plan, w: &impl Wire, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, KEEPALIVE).await?;
    let total = p.reasoning.len() + p.content.len();
    if p.d.garbage {
        // Looks like SSE but carries no JSON, to exercise the gateway's parse-failure path.
        for i in 0..=total {
            out.sleep(p.chunk_delay).await?;
            out.send(w.garbage(i)).await?;
        }
        out.send(w.garbage_end()).await?;
        return Ok(Outcome::Completed);
    }
    // `overloaded_after=0`: the error event is the stream's first, before its opening.
    if p.d.overloaded_after == Some(0) {
        out.send(w.overloaded()).await?;
        return Ok(Outcome::Failed(529));
    }
    out.send(w.opening(p)).await?;
    let at = |n: Option<u64>, i: usize| {
        n.is_some_and(|n| usize::try_from(n).unwrap_or(usize::MAX).min(total) == i)
    };
    for i in 0..=total {
        if at(p.d.drop_after, i) {
            return Ok(out.abort().await);
        }
        if at(p.d.garbage_after, i) {
            out.send(w.garbage(i)).await?;
            out.send(w.garbage_end().to_string()).await?;
            return Ok(Outcome::Completed);
        }
        if at(p.d.error_after, i) {
            out.send(w.error()).await?;
            return Ok(Outcome::Failed(500));
        }
        if at(p.d.overloaded_after, i) {
            out.send(w.overloaded()).await?;
            return Ok(Outcome::Failed(529));
        }
        if at(p.d.stall_after, i) {
            // Only keep-alives from now on; they also give the disconnect detection a chance to fire.
            return match out.idle(Duration::MAX, p.keepalive, w.keepalive(p)).await {
                Ok(()) | Err(Halt::Gone) => Ok(Outcome::Stalled),
                Err(halt) => Err(halt),
            };
        }
        if i == total {
            break;
        }
        out.sleep(p.chunk_delay).await?;
        out.send(w.token(p, i)).await?;
    }
    out.sleep(p.chunk_delay).await?;
    let closing = w.closing(p);
    if p.d.drop_at_end || p.d.error_at_end {
        let cut = closing.strip_suffix(w.garbage_end()).unwrap_or(&closing);
        out.send(cut.to_string()).await?;
        if p.d.error_at_end {
            out.send(w.error()).await?;
            return Ok(Outcome::Failed(500));
        }
        return Ok(out.abort().await);
    }
    out.send(closing).await?;
    Ok(Outcome::Completed)
}
