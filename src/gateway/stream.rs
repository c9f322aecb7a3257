//! The stream relay: upstream SSE in, client SSE out, through a task of its own.
//!
//! The task reads upstream, rewrites each chunk (public model name; `usage` hidden from a client
//! that did not ask for it), passes keep-alive comments through, and counts output as it goes.
//! It ends on `[DONE]`, an upstream error, a timeout (idle — comments do not count — or total),
//! or the client going away (the response body is dropped, so the channel closes). Upstream's
//! connection is then dropped, which cancels the request there; billing settles and the ledger
//! row is committed before the final `[DONE]` or error event leaves.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::billing::{Outcome, Pending};
use super::error::GatewayError;
use super::types::Usage;
use crate::activity::ActivityEvent;
use crate::app::AppState;
use crate::store::Finish;
use crate::upstream::sse::{SseDecoder, SseItem};

/// Chunks buffered toward a slow client before upstream reading pauses.
const CHANNEL_DEPTH: usize = 64;
/// Least time between two progress events of one stream.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Start relaying `up` to the client; returns the streaming response at once.
pub fn relay(
    state: Arc<AppState>,
    pending: Pending,
    up: reqwest::Response,
    include_usage: bool,
    deadline: tokio::time::Instant,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    tokio::spawn(pump(state, pending, up, tx, include_usage, deadline));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
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

/// How the relay loop ended.
enum End {
    Done,
    ClientGone,
    Timeout,
    UpstreamBroke(String),
    Shutdown,
}

/// What the relay has seen so far.
struct Tally {
    usage: Option<Usage>,
    chunks_with_text: u64,
    text_bytes: u64,
    first_token: Option<Duration>,
    last_progress: Instant,
}

impl Tally {
    /// DeepSeek streams one token per delta, so the delta count is the estimate; an upstream
    /// that batches (over 12 bytes a delta on average) is estimated at 4 bytes a token instead.
    fn output_estimate(&self) -> u64 {
        if self.text_bytes > 12 * self.chunks_with_text {
            self.text_bytes.div_ceil(4)
        } else {
            self.chunks_with_text
        }
    }
}

async fn pump(
    state: Arc<AppState>,
    pending: Pending,
    up: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
    include_usage: bool,
    deadline: tokio::time::Instant,
) {
    let Some(ctx) = pending.ctx() else { return };
    let started = ctx.started;
    let request_id = ctx.request_id.clone();
    let public_model = ctx.model.name.clone();
    let idle = state.upstream.idle_timeout;
    let mut upstream = up.bytes_stream();
    let mut decoder = SseDecoder::default();
    let mut items = Vec::new();
    let mut last_data = tokio::time::Instant::now();
    let mut tally = Tally {
        usage: None,
        chunks_with_text: 0,
        text_bytes: 0,
        first_token: None,
        last_progress: Instant::now(),
    };
    let end = 'relay: loop {
        let wait = deadline.min(last_data + idle);
        let next = tokio::select! {
            biased;
            _ = tx.closed() => break 'relay End::ClientGone,
            _ = state.cut.cancelled() => break 'relay End::Shutdown,
            r = tokio::time::timeout_at(wait, upstream.next()) => r,
        };
        let eof = match next {
            Err(_) => break 'relay End::Timeout,
            Ok(Some(Err(e))) => break 'relay End::UpstreamBroke(format!("stream cut: {e}")),
            Ok(Some(Ok(bytes))) => {
                if let Err(e) = decoder.feed(&bytes, &mut items) {
                    break 'relay End::UpstreamBroke(e.to_string());
                }
                false
            }
            Ok(None) => {
                decoder.finish(&mut items);
                true
            }
        };
        for item in items.drain(..) {
            let out = match item {
                SseItem::Comment(c) => format!(":{c}\n\n"),
                SseItem::Data(d) if d.trim() == "[DONE]" => break 'relay End::Done,
                SseItem::Data(d) => {
                    last_data = tokio::time::Instant::now();
                    match rewrite_chunk(&d, &public_model, include_usage, &mut tally, started) {
                        Ok(line) => line,
                        Err(why) => break 'relay End::UpstreamBroke(why),
                    }
                }
            };
            let sent = tokio::time::timeout_at(deadline, tx.send(Bytes::from(out))).await;
            match sent {
                Err(_) => break 'relay End::Timeout,
                Ok(Err(_)) => break 'relay End::ClientGone,
                Ok(Ok(())) => {}
            }
            if tally.last_progress.elapsed() >= PROGRESS_EVERY {
                tally.last_progress = Instant::now();
                state.activity.emit(ActivityEvent::RequestProgress {
                    request_id: request_id.clone(),
                    output_tokens: tally.output_estimate(),
                    at_ms: Utc::now().timestamp_millis(),
                });
            }
        }
        if eof {
            // Upstream closed without `[DONE]`: accept it if usage (the last chunk) came.
            break 'relay if tally.usage.is_some() {
                End::Done
            } else {
                End::UpstreamBroke("stream ended without [DONE]".into())
            };
        }
    };
    // Cancel upstream before settling, so it stops generating as soon as possible.
    drop(upstream);
    let (finish, final_event) = match &end {
        End::Done => (Finish::Complete, Some("data: [DONE]\n\n".to_string())),
        End::ClientGone => (Finish::ClientAbort, None),
        End::Timeout => {
            tracing::warn!(request_id, "upstream stream timed out");
            (
                Finish::UpstreamTimeout,
                Some(format!(
                    "data: {}\n\n",
                    GatewayError::UpstreamTimeout.body_json()
                )),
            )
        }
        End::Shutdown => (
            Finish::Shutdown,
            Some(format!(
                "data: {}\n\n",
                GatewayError::ShuttingDown.body_json()
            )),
        ),
        End::UpstreamBroke(why) => {
            tracing::warn!(request_id, why, "upstream stream failed");
            (
                Finish::UpstreamError,
                Some(format!("data: {}\n\n", GatewayError::Upstream.body_json())),
            )
        }
    };
    pending
        .settle(Outcome {
            usage: tally.usage,
            output_estimate: tally.output_estimate(),
            finish,
            status: 200,
            ttft: tally.first_token,
        })
        .await;
    if let Some(ev) = final_event {
        // A slow client still gets its terminator, within the request's own deadline.
        let until = deadline.max(tokio::time::Instant::now() + Duration::from_secs(5));
        let _ = tokio::time::timeout_at(until, tx.send(Bytes::from(ev))).await;
    }
}

/// Bytes of generated output in a delta or message: text, reasoning, and tool calls (their
/// names and arguments are output tokens too).
pub fn generated_bytes(m: &Value) -> usize {
    let text: usize = ["content", "reasoning_content"]
        .iter()
        .filter_map(|k| m.get(*k).and_then(Value::as_str))
        .map(str::len)
        .sum();
    let tools: usize = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map_or(0, |calls| {
            calls
                .iter()
                .filter_map(|c| c.get("function"))
                .map(|f| {
                    ["name", "arguments"]
                        .iter()
                        .filter_map(|k| f.get(*k).and_then(Value::as_str))
                        .map(str::len)
                        .sum::<usize>()
                })
                .sum()
        });
    text + tools
}

/// Parse one upstream chunk, update the tally, and render it for the client.
fn rewrite_chunk(
    data: &str,
    public_model: &str,
    include_usage: bool,
    tally: &mut Tally,
    started: Instant,
) -> Result<String, String> {
    let mut chunk: serde_json::Map<String, Value> =
        serde_json::from_str(data).map_err(|e| format!("chunk is not JSON: {e}"))?;
    if chunk.contains_key("error") {
        return Err(format!("upstream error event: {data}"));
    }
    if let Some(Value::Array(choices)) = chunk.get("choices") {
        for c in choices {
            let Some(delta) = c.get("delta") else {
                continue;
            };
            let bytes = generated_bytes(delta);
            if bytes > 0 {
                tally.chunks_with_text += 1;
                tally.text_bytes += bytes as u64;
                tally.first_token.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    if let Some(u) = chunk.get("usage").and_then(Usage::from_json) {
        tally.usage = Some(u);
    }
    if !include_usage {
        chunk.remove("usage");
    }
    if chunk.contains_key("model") {
        chunk.insert("model".into(), Value::String(public_model.to_string()));
    }
    let json = serde_json::to_string(&chunk).map_err(|e| e.to_string())?;
    Ok(format!("data: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_calls_count_as_generated_output() {
        let delta = json!({"content": "ab", "tool_calls": [{"index": 0, "function": {"name": "get", "arguments": "{\"q\":1}"}}]});
        assert_eq!(generated_bytes(&delta), 2 + 3 + 7);
        assert_eq!(
            generated_bytes(&json!({"reasoning_content": "xyz", "content": null})),
            3
        );
        assert_eq!(generated_bytes(&json!({})), 0);
    }
}
