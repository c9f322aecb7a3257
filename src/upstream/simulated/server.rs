//! The simulator's HTTP side: its routes (the two formats' handlers are in `openai.rs` and
//! `anthropic.rs`), and the models and balance endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::errors::{authorization, check_auth};
use super::{Shared, anthropic, openai};

/// The simulator's routes, with and without DeepSeek's optional `/v1` prefix.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/chat/completions", post(openai::chat))
        .route("/v1/chat/completions", post(openai::chat))
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
