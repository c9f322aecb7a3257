//! DeepSeek's error bodies — OpenAI-shaped ([`ApiError`]) and Anthropic-shaped
//! ([`AnthropicError`]) — the key a request presents, and DeepSeek's check of it against the
//! accounts, shared by the simulator's routes and their request validation.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;

/// An error answered in DeepSeek's (OpenAI-shaped) body.
pub(super) struct ApiError {
    /// The HTTP status, also recorded as the request's [`Outcome::Failed`].
    pub(super) status: u16,
    message: String,
    kind: &'static str,
    code: &'static str,
}

impl ApiError {
    /// An error of `kind`; the `code` follows from the status as DeepSeek's does.
    pub(super) fn new(status: u16, message: impl Into<String>, kind: &'static str) -> Self {
        let code = if status >= 500 {
            "internal_error"
        } else {
            "invalid_request_error"
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
        }
    }

    /// The canned body DeepSeek sends for each documented status (the `fail=` directive).
    pub(super) fn canned(status: u16) -> Self {
        let (message, kind) = match status {
            400 => ("Invalid request format", "invalid_request_error"),
            401 => (
                "Authentication Fails, Your api key: ****xxxx is invalid",
                "authentication_error",
            ),
            402 => ("Insufficient Balance", "unknown_error"),
            403 => ("Permission denied", "permission_error"),
            422 => ("Invalid parameters", "invalid_request_error"),
            429 => ("Rate limit reached for requests", "rate_limit_error"),
            500 => (
                "Server error, please retry your request after a brief wait",
                "server_error",
            ),
            503 => (
                "Server overloaded, please retry your request after a brief wait",
                "server_error",
            ),
            _ => ("Simulated error", "unknown_error"),
        };
        ApiError::new(status, message, kind)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}});
        (status, axum::Json(body)).into_response()
    }
}

/// The raw `Authorization` header, if any.
pub(super) fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The key an Anthropic-format request presents: a Bearer token wins over `x-api-key`, as at DeepSeek.
pub(super) fn anthropic_key(headers: &HeaderMap) -> String {
    let bearer = authorization(headers).and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    let x_api_key = || {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    bearer
        .or_else(x_api_key)
        .map(|k| k.trim().to_owned())
        .unwrap_or_default()
}

/// The key an OpenAI-format request presents as `Authorization: Bearer`, or `""`.
pub(super) fn bearer_key(headers: &HeaderMap) -> String {
    authorization(headers)
        .and_then(|a| a.strip_prefix("Bearer ").map(|k| k.trim().to_owned()))
        .unwrap_or_default()
}

/// DeepSeek's 401 unless the Bearer key is one of the accounts' keys.
pub(super) fn check_auth(sh: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    check_key(sh, &bearer_key(headers)).map_err(|m| ApiError::new(401, m, "authentication_error"))
}

/// `Err` with DeepSeek's 401 message, which echoes the last four characters of the key it
/// refused, unless `key` is one of the accounts' keys.
pub(super) fn check_key(sh: &Shared, key: &str) -> Result<(), String> {
    if sh.accounts.known(key) {
        return Ok(());
    }
    let tail_start = key.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    Err(format!(
        "Authentication Fails, Your api key: ****{} is invalid",
        &key[tail_start..]
    ))
}

/// An error answered in Anthropic's body, `{"type":"error","error":{"type","message"}}`.
pub(super) struct AnthropicError {
    /// The HTTP status, also recorded as the request's [`Outcome::Failed`].
    pub(super) status: u16,
    kind: &'static str,
    message: String,
}

impl AnthropicError {
    /// An error with an explicit status and type.
    pub(super) fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        AnthropicError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A 400 `invalid_request_error` about the request.
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    /// The body sent for each status of the `fail=` directive, with Anthropic's error types and
    /// DeepSeek's messages.
    pub(super) fn canned(status: u16) -> Self {
        let (kind, message) = match status {
            400 | 422 => ("invalid_request_error", "Invalid request format"),
            401 => (
                "authentication_error",
                "Authentication Fails, Your api key: ****xxxx is invalid",
            ),
            402 => ("billing_error", "Insufficient Balance"),
            403 => ("permission_error", "Permission denied"),
            404 => ("not_found_error", "Not found"),
            413 => ("request_too_large", "Request too large"),
            429 => ("rate_limit_error", "Rate limit reached for requests"),
            503 | 529 => (
                "overloaded_error",
                "Server overloaded, please retry your request after a brief wait",
            ),
            504 => ("timeout_error", "Request timed out"),
            _ => (
                "api_error",
                "Server error, please retry your request after a brief wait",
            ),
        };
        Self::new(status, kind, message)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"type": "error", "error": {"type": self.kind, "message": self.message}});
        (status, axum::Json(body)).into_response()
    }
}
