//! The simulator's body writer: [`Out`] feeds a response body chunk by chunk (so a failed send
//! reveals a client that went away, and shutdown can cut it), and [`stream_body`] writes the SSE
//! stream of a [`Plan`] with DeepSeek's chunk shapes, keep-alives and the failure directives.

use std::io;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::Outcome;
use super::directives::Plan;

/// One item of a response body; an `Err` makes hyper cut the connection.
pub(super) type Chunk = io::Result<Bytes>;

/// The SSE comment DeepSeek sends while a request waits in its queue.
pub(super) const KEEPALIVE: &str = ": keep-alive\n\n";
const DONE: &str = "data: [DONE]\n\n";
const ERROR_EVENT: &str = "data: {\"error\":{\"message\":\"Internal server error\",\"type\":\"server_error\",\
\"param\":null,\"code\":\"internal_error\"}}\n\n";

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

fn chunk(p: &Plan, delta: Value, finish: Option<&str>, usage: Option<Value>) -> String {
    let mut c = json!({"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
        "system_fingerprint": "fp_sim",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    if let (Some(u), Some(obj)) = (usage, c.as_object_mut()) {
        obj.insert("usage".to_owned(), u);
    }
    format!("data: {c}\n\n")
}

/// Write `p` as DeepSeek's SSE stream, honouring the failure directives.
pub(super) async fn stream_body(p: &Plan, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, KEEPALIVE).await?;
    let total = p.reasoning.len() + p.content.len();
    if p.d.garbage {
        // Looks like SSE but carries no JSON, to exercise the gateway's parse-failure path.
        for i in 0..=total {
            out.sleep(p.chunk_delay).await?;
            out.send(format!("data: {{\"id\": garbage chunk {i}\n\n"))
                .await?;
        }
        out.send(DONE).await?;
        return Ok(Outcome::Completed);
    }
    let thinking = !p.reasoning.is_empty();
    let null_usage = || p.include_usage.then_some(Value::Null);
    let first = if thinking {
        json!({"role": "assistant", "content": null, "reasoning_content": ""})
    } else {
        json!({"role": "assistant", "content": ""})
    };
    out.send(chunk(p, first, None, null_usage())).await?;
    let at = |n: Option<u64>, i: usize| {
        n.is_some_and(|n| usize::try_from(n).unwrap_or(usize::MAX).min(total) == i)
    };
    for i in 0..=total {
        if at(p.d.drop_after, i) {
            return Ok(out.abort().await);
        }
        if at(p.d.error_after, i) {
            out.send(ERROR_EVENT).await?;
            return Ok(Outcome::Failed(500));
        }
        if at(p.d.stall_after, i) {
            // Only keep-alives from now on; they also give the disconnect detection a chance to fire.
            return match out.idle(Duration::MAX, p.keepalive, KEEPALIVE).await {
                Ok(()) | Err(Halt::Gone) => Ok(Outcome::Stalled),
                Err(halt) => Err(halt),
            };
        }
        if i == total {
            break;
        }
        out.sleep(p.chunk_delay).await?;
        let delta = match p.reasoning.get(i) {
            Some(word) => json!({"content": null, "reasoning_content": word}),
            None if thinking => {
                json!({"content": p.content[i - p.reasoning.len()], "reasoning_content": null})
            }
            None => json!({"content": p.content[i - p.reasoning.len()]}),
        };
        out.send(chunk(p, delta, None, null_usage())).await?;
    }
    out.sleep(p.chunk_delay).await?;
    out.send(chunk(
        p,
        json!({"content": ""}),
        Some(p.finish),
        p.usage.clone(),
    ))
    .await?;
    out.send(DONE).await?;
    Ok(Outcome::Completed)
}
