//! DeepSeek's error bodies and its key check, shared by the simulator's routes and its
//! request validation.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SimOptions;

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

pub(super) fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// DeepSeek's 401, which echoes the last four characters of the key it refused.
pub(super) fn check_auth(opts: &SimOptions, auth: Option<&str>) -> Result<(), ApiError> {
    let key = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key == opts.api_key {
        return Ok(());
    }
    let tail_start = key.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    let message = format!(
        "Authentication Fails, Your api key: ****{} is invalid",
        &key[tail_start..]
    );
    Err(ApiError::new(401, message, "authentication_error"))
}
