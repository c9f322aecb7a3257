//! The simulator's HTTP side: its routes, the models and balance endpoints, the OpenAI-format
//! chat handler, and [`respond`], which both formats' handlers use to hand a recorded request's
//! [`Plan`] to a producer task.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::directives::Plan;
use super::errors::{authorization, check_auth};
use super::openai::{OpenAiWire, plan};
use super::stream::{Chunk, Wire, run};
use super::{Endpoint, Outcome, Shared, anthropic};

/// The simulator's routes, with and without DeepSeek's optional `/v1` prefix.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/chat/completions", post(chat))
        .route("/v1/chat/completions", post(chat))
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route("/anthropic/messages", post(anthropic::messages))
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

async fn chat(
    State(sh): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let recorded = parsed.as_ref().map_or(Value::Null, Clone::clone);
    let index = sh.record(Endpoint::ChatCompletions, path(&uri), &headers, recorded);
    match plan(&sh, authorization(&headers).as_deref(), parsed) {
        Ok(plan) => respond(&sh, index, plan, OpenAiWire),
        Err(e) => {
            sh.set_outcome(index, Outcome::Failed(e.status));
            e.into_response()
        }
    }
}

/// The path and query string a request was sent to, as recorded.
pub(super) fn path(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
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
