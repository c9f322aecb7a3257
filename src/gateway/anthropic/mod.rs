//! The Anthropic dialect, for coding agents (Claude Code) and the `anthropic` SDKs:
//! `POST /v1/messages` and `/v1/messages/count_tokens`, and both again under `/anthropic`,
//! relayed natively (no translation) to DeepSeek's Anthropic-format endpoint on the same keys,
//! budgets and ledger as the OpenAI dialect. Errors are in Anthropic's shape.

mod answer;
mod events;
mod request;
mod usage;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use events::Events;
pub use request::MessagesRequest;

use super::billing::{Reported, Usage};
use super::dialect::{Answer, Dialect, PromptPieces, PublicModel};
use super::error::GatewayError;
use super::pipeline;
use crate::keys::identify::{self, IdentifyError};
use crate::keys::{KeyState, KeyTable};
use crate::state::AppState;
use crate::status::Api;
use crate::upstream::Endpoint;

/// `POST /v1/messages` (and `/anthropic/v1/messages`).
pub async fn messages(State(state): State<Arc<AppState>>, req: Request) -> Response {
    pipeline::handle::<Anthropic>(state, req).await
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, charged nothing. DeepSeek does not
/// document a token-counting endpoint, so this is the gateway's own estimate (the text's bytes
/// over four, plus a few tokens a message), the same one that bills a request whose usage
/// never came.
pub async fn count_tokens(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match counted(&state, req).await {
        Ok(n) => Json(json!({ "input_tokens": n })).into_response(),
        Err(e) => Anthropic::error_response(e),
    }
}

async fn counted(state: &AppState, req: Request) -> Result<u64, GatewayError> {
    let (parts, body) = req.into_parts();
    let key = Anthropic::authenticate(&state.keys, &parts.headers)?;
    // A limit of its own at the key's RPM: counting costs the customer nothing, and must not
    // use up the requests of the conversation it is for, but it reads bodies up to the body
    // limit, so it is not unlimited either.
    let rate = key.check_count_rate();
    if !rate.allowed {
        crate::gateway::admission::rate_limited(state, &key, &rate);
        return Err(GatewayError::RateLimited(rate));
    }
    let limit = state.config.server.max_body_bytes;
    let raw = crate::gateway::bodies::read(state, &key, &parts.headers, body, limit).await?;
    let (asked, n) = request::count_tokens(&raw)?;
    let Some(model) = state.catalog.model(&asked) else {
        return Err(GatewayError::ModelNotFound(asked));
    };
    let allowed = state
        .catalog
        .plan(&key.plan())
        .is_some_and(|p| p.models.contains(&model.name));
    if !allowed {
        let served = (model.name != asked).then(|| model.name.clone());
        return Err(GatewayError::ModelNotAllowed(asked, served));
    }
    Ok(n)
}

/// Unknown paths under `/anthropic`, in this dialect's shape.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    Anthropic::error_response(GatewayError::NotFound(super::not_offered(uri.path())))
}

/// Wrong method on a Messages route.
pub async fn method_not_allowed() -> Response {
    Anthropic::error_response(GatewayError::MethodNotAllowed)
}

/// The Anthropic Messages dialect.
pub struct Anthropic;

impl Dialect for Anthropic {
    type Request = MessagesRequest;
    type Stream = Events;
    const ENDPOINT: Endpoint = Endpoint::Messages;
    const API: Api = Api::Anthropic;

    /// `x-api-key` or `Authorization: Bearer` (Bearer wins when both are sent).
    fn authenticate(keys: &KeyTable, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
        let token = identify::bearer_or_api_key(headers).map_err(|e| match e {
            IdentifyError::Missing => GatewayError::InvalidApiKey(
                "Missing API key. Send it as `x-api-key: sk-gateway-…` or \
                 `Authorization: Bearer sk-gateway-…`.",
            ),
            other => other.into(),
        })?;
        Ok(identify::authenticate_token(keys, token)?)
    }

    fn parse(raw: &bytes::Bytes) -> Result<MessagesRequest, GatewayError> {
        MessagesRequest::parse(raw)
    }

    fn answer(raw: &[u8], public: &PublicModel) -> Result<Answer, String> {
        answer::read(raw, public)
    }

    fn prompt_pieces(raw: &[u8]) -> Option<PromptPieces<'_>> {
        request::prompt_pieces(raw)
    }

    fn usage_at_end(tail: &[u8]) -> (Option<Usage>, Reported) {
        answer::usage_at_end(tail)
    }

    fn stream(_req: &MessagesRequest, public: PublicModel) -> Events {
        Events::new(public)
    }

    fn error_response(e: GatewayError) -> Response {
        let body = error_body(&e);
        e.respond_with(body)
    }

    fn error_event(e: &GatewayError) -> String {
        format!("event: error\ndata: {}\n\n", error_body(e))
    }
}

/// Anthropic's error type for a status (SPEC §7).
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`.
fn error_body(e: &GatewayError) -> String {
    json!({"type": "error", "error": {"type": error_type(e.status()), "message": e.message()}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn errors_have_anthropics_shape_and_types() {
        for (e, status, kind) in [
            (
                GatewayError::InvalidApiKey("x"),
                401,
                "authentication_error",
            ),
            (
                GatewayError::InsufficientBudget {
                    available: crate::money::Usd::ZERO,
                    held: crate::money::Usd::ZERO,
                    spent: false,
                    needs: None,
                },
                402,
                "billing_error",
            ),
            (
                GatewayError::BudgetHeld {
                    available: crate::money::Usd::ZERO,
                    held: crate::money::Usd::from_nanos(5),
                },
                429,
                "rate_limit_error",
            ),
            (
                GatewayError::ModelNotAllowed("m".into(), None),
                403,
                "permission_error",
            ),
            (
                GatewayError::ModelNotFound("m".into()),
                404,
                "not_found_error",
            ),
            (
                GatewayError::RequestTooLarge { limit: 1 },
                413,
                "request_too_large",
            ),
            (GatewayError::Upstream, 502, "api_error"),
            (GatewayError::ShuttingDown, 503, "overloaded_error"),
            (GatewayError::UpstreamOverloaded, 503, "overloaded_error"),
            (GatewayError::UpstreamTimeout, 504, "timeout_error"),
        ] {
            assert_eq!(e.status().as_u16(), status);
            let v: Value = serde_json::from_str(&error_body(&e)).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}
