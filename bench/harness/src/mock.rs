//! A minimal, instant DeepSeek: `POST /chat/completions` answers at once with a DeepSeek-shaped
//! JSON body, or an SSE stream whose last content chunk carries `usage` (as DeepSeek does);
//! `POST …/v1/messages` (DeepSeek's Anthropic-format endpoint) answers with a Messages body or
//! Messages events, usage in `message_start` and `message_delta`.
//!
//! It must never be the bottleneck, so the answers are rendered once and the request body is only
//! skimmed for what changes the answer: `"stream": true`, and a slow-stream order in the last
//! message, `slow:<chunks>:<interval_ms>`, which spaces the content chunks out in time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// The usage the mock reports: 12 prompt tokens (8 from cache), 8 output tokens.
const USAGE: &str = r#"{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":8},"prompt_cache_hit_tokens":8,"prompt_cache_miss_tokens":4}"#;

/// Content deltas of a stream that is not slowed down.
const FAST_CHUNKS: usize = 8;

#[derive(Deserialize)]
struct Skim {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Msg>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Msg {
    #[serde(default)]
    content: serde_json::Value,
}

struct Rendered {
    json: Bytes,
    /// The Messages answer (Anthropic's format).
    message: Bytes,
}

/// The Messages usage: 4 cache misses, 8 hits, 8 output tokens (the same request as `USAGE`).
const MESSAGES_USAGE: &str = r#"{"input_tokens":4,"cache_read_input_tokens":8,"cache_creation_input_tokens":0,"output_tokens":8}"#;

/// Serve until the process is killed.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("mock listening on {}", listener.local_addr()?);
    let rendered = Arc::new(Rendered {
        json: Bytes::from(format!(
            r#"{{"id":"mock-1","object":"chat.completion","created":1764000000,"model":"deepseek-v4-flash","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from the mock upstream."}},"logprobs":null,"finish_reason":"stop"}}],"usage":{USAGE},"system_fingerprint":"fp_mock"}}"#
        )),
        message: Bytes::from(format!(
            r#"{{"id":"msg_mock","type":"message","role":"assistant","model":"deepseek-v4-flash","content":[{{"type":"text","text":"Hello from the mock upstream."}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{MESSAGES_USAGE}}}"#
        )),
    });
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors under the stream test: wait instead of spinning.
                eprintln!("mock accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let rendered = rendered.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, rendered.clone()));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, r: Arc<Rendered>) -> Result<Response<Body>, Infallible> {
    let messages = req.uri().path().ends_with("/v1/messages");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let Ok(skim) = serde_json::from_slice::<Skim>(&body) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    if !skim.stream {
        let json = if messages { &r.message } else { &r.json };
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(json.clone()).boxed())
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR)));
    }
    let (chunks, interval) = slow_order(&skim).unwrap_or((FAST_CHUNKS, 0));
    let model = if skim.model.is_empty() {
        "deepseek-v4-flash".to_owned()
    } else {
        skim.model
    };
    // As DeepSeek: with include_usage, every chunk but the last has `"usage": null`.
    let null_usage = if skim.stream_options.is_some_and(|o| o.include_usage) {
        ",\"usage\":null"
    } else {
        ""
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let pieces = if messages {
        message_events(&model, chunks)
    } else {
        chat_chunks(&model, chunks, null_usage)
    };
    tokio::spawn(async move {
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            // The role chunk goes out at once; content chunks are spaced `interval` apart.
            if interval > 0 && i > 0 && i < last {
                tokio::time::sleep(Duration::from_millis(interval)).await;
            }
            if tx.send(Ok(Frame::data(Bytes::from(piece)))).await.is_err() {
                return;
            }
        }
    });
    let stream = StreamBody::new(tokio_stream(rx));
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR)))
}

/// A chat stream: the role chunk, `chunks` content chunks, the last with usage, `[DONE]`.
fn chat_chunks(model: &str, chunks: usize, null_usage: &str) -> Vec<String> {
    let head = |s: &str| {
        format!(
            r#"{{"id":"mock-1","object":"chat.completion.chunk","created":1764000000,"model":"{model}","system_fingerprint":"fp_mock","choices":[{s}]"#
        )
    };
    let mut out = Vec::with_capacity(chunks + 2);
    out.push(format!(
        "data: {}{null_usage}}}\n\n",
        head(r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#)
    ));
    for i in 0..chunks {
        out.push(format!(
            "data: {}{null_usage}}}\n\n",
            head(&format!(
                r#"{{"index":0,"delta":{{"content":"tok{i} "}},"logprobs":null,"finish_reason":null}}"#
            ))
        ));
    }
    out.push(format!(
        "data: {},\"usage\":{USAGE}}}\n\ndata: [DONE]\n\n",
        head(r#"{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop"}"#)
    ));
    out
}

/// A Messages stream: `message_start` (input usage), a text block of `chunks` deltas, then
/// `message_delta` (output usage) and `message_stop`, one piece per event as DeepSeek sends.
fn message_events(model: &str, chunks: usize) -> Vec<String> {
    let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
    let mut out = Vec::with_capacity(chunks + 4);
    out.push(format!(
        "{}{}{}",
        ev(
            "message_start",
            &format!(
                r#"{{"type":"message_start","message":{{"id":"msg_mock","type":"message","role":"assistant","model":"{model}","content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":4,"cache_read_input_tokens":8,"cache_creation_input_tokens":0,"output_tokens":1}}}}}}"#
            )
        ),
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
        ),
        ev("ping", r#"{"type":"ping"}"#)
    ));
    for i in 0..chunks {
        out.push(ev(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"tok{i} "}}}}"#
            ),
        ));
    }
    out.push(format!(
        "{}{}{}",
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":8}}"#
        ),
        ev("message_stop", r#"{"type":"message_stop"}"#)
    ));
    out
}

/// `slow:<chunks>:<interval_ms>` in the last message's text.
fn slow_order(s: &Skim) -> Option<(usize, u64)> {
    let text = s.messages.last()?.content.as_str()?;
    let rest = text.strip_prefix("slow:")?;
    let (n, ms) = rest.split_once(':')?;
    Some((n.trim().parse().ok()?, ms.trim().parse().ok()?))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = code;
    r
}

/// An mpsc receiver as a `Stream` (without pulling in tokio-stream).
fn tokio_stream<T>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
{
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
