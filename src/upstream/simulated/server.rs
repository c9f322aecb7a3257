//! The simulator's HTTP side: its routes (the two formats' handlers are in `openai.rs` and
//! `anthropic.rs`, the in-flight count around them in `gate.rs`), and the models and balance
//! endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::errors::{ApiError, bearer_key, check_auth};
use super::gate::{count, fault, refuse};
use super::{Shared, anthropic, openai};

/// The simulator's routes, with and without DeepSeek's optional `/v1` prefix.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/chat/completions", post(openai::chat))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route("/anthropic/messages", post(anthropic::messages))
        // Only the chat routes above count as requests in flight.
        .route_layer(middleware::from_fn_with_state(shared.clone(), count))
        .route("/models", get(models))
        .route("/v1/models", get(models))
        .route("/user/balance", get(balance))
        .route("/v1/user/balance", get(balance))
        // DeepSeek takes 1M-token prompts; axum's 2 MB default would reject them.
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

/// The account's fault (it applies to every route), then DeepSeek's key check.
async fn gatekeep(sh: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let key = bearer_key(headers);
    if let Err(refused) = fault(sh, &key, None).await {
        return Err(refuse(sh, None, refused, ApiError::canned));
    }
    check_auth(sh, headers).map_err(IntoResponse::into_response)?;
    Ok(key)
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = gatekeep(&sh, &headers).await {
        return refused;
    }
    let data: Vec<Value> = sh
        .opts
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "deepseek"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /user/balance`: the presenting account's balance in DeepSeek's shape.
async fn balance(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let key = match gatekeep(&sh, &headers).await {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    match sh.accounts.balance_report(&key) {
        Some(report) => axum::Json(report).into_response(),
        // The key was known a moment ago; a report cannot be missing, but never panic.
        None => ApiError::canned(401).into_response(),
    }
}
