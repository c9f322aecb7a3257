//! The simulator's HTTP side: its routes, authentication, DeepSeek's error bodies, the chat
//! handler that records each request and hands its [`Plan`] to a producer task, and the
//! non-stream (single JSON body) answer.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::directives::{Plan, plan};
use super::errors::{authorization, check_auth};
use super::stream::{Chunk, Halt, Out, abort, stream_body};
use super::{Outcome, Shared};

/// The simulator's routes, with and without DeepSeek's optional `/v1` prefix.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/chat/completions", post(chat))
        .route("/v1/chat/completions", post(chat))
        .route("/models", get(models))
        .route("/v1/models", get(models))
        .route("/user/balance", get(balance))
        .route("/v1/user/balance", get(balance))
        // DeepSeek takes 1M-token prompts; axum's 2 MB default would reject them.
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&sh.opts, authorization(&headers).as_deref()) {
        return e.into_response();
    }
    let data: Vec<Value> = sh
        .opts
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "deepseek"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn balance(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&sh.opts, authorization(&headers).as_deref()) {
        return e.into_response();
    }
    axum::Json(json!({"is_available": true, "balance_infos": [{"currency": "USD", "total_balance": "100.00",
        "granted_balance": "0.00", "topped_up_balance": "100.00"}]}))
    .into_response()
}

async fn chat(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = authorization(&headers);
    let parsed = serde_json::from_slice::<Value>(&body);
    let index = sh.record(
        auth.clone(),
        parsed.as_ref().map_or(Value::Null, Clone::clone),
    );
    let plan = match plan(&sh, auth.as_deref(), parsed) {
        Ok(plan) => plan,
        Err(e) => {
            sh.set_outcome(index, Outcome::Failed(e.status));
            return e.into_response();
        }
    };
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
        let outcome = run(plan, tx, producer.stop.clone()).await;
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

/// Produce the answer of `p` into `tx` and say how it ended.
async fn run(p: Plan, tx: mpsc::Sender<Chunk>, stop: watch::Receiver<bool>) -> Outcome {
    let out = Out::new(tx.clone(), stop);
    let result = if p.stream {
        stream_body(&p, out).await
    } else {
        plain_body(&p, out).await
    };
    match result {
        Ok(outcome) => outcome,
        Err(Halt::Gone) => Outcome::ClientDisconnected,
        Err(Halt::Shutdown) => abort(&tx).await,
    }
}

/// Write `p` as one `chat.completion` JSON body, after blank-line keep-alives while queued.
async fn plain_body(p: &Plan, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, "\n").await?;
    if p.d.garbage {
        out.send("<html><body><h1>502 Bad Gateway</h1></body></html>")
            .await?;
        return Ok(Outcome::Completed);
    }
    let mut message = json!({"role": "assistant", "content": p.content.concat()});
    if !p.reasoning.is_empty()
        && let Some(m) = message.as_object_mut()
    {
        m.insert(
            "reasoning_content".to_owned(),
            Value::String(p.reasoning.concat()),
        );
    }
    let mut body = json!({"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": p.finish}]});
    if let (Some(usage), Some(b)) = (&p.usage, body.as_object_mut()) {
        b.insert("usage".to_owned(), usage.clone());
    }
    if let Some(b) = body.as_object_mut() {
        b.insert("system_fingerprint".to_owned(), json!("fp_sim"));
    }
    let text = body.to_string();
    if p.d.drop_after.is_some() {
        out.send(text.as_bytes()[..text.len() / 2].to_vec()).await?;
        return Ok(out.abort().await);
    }
    out.send(text).await?;
    Ok(Outcome::Completed)
}
