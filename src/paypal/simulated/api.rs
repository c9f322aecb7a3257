//! The simulator's PayPal-shaped answers: JSON replies, PayPal's error bodies, bearer-token
//! checks, and the OAuth2 client-credentials endpoint that issues those tokens.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::render::{error_body, new_id, now};
use super::state::{Shared, lock};

/// What PayPal's sandbox says a token lives, in seconds (nine hours).
const TOKEN_LIFETIME_SECS: u64 = 32_400;

/// `body` as JSON with `status`.
pub(super) fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// PayPal's error body (`name`, `message`, optional `details[0]` issue) with `status`.
pub(super) fn api_error(
    status: StatusCode,
    name: &str,
    message: &str,
    issue: Option<(&str, &str)>,
) -> Response {
    reply(status, error_body(name, message, issue))
}

/// PayPal's 404 for an unknown order id.
pub(super) fn not_found(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "The specified resource does not exist.",
        Some((
            "INVALID_RESOURCE_ID",
            &format!("Specified resource ID {id} does not exist. Please check the resource ID."),
        )),
    )
}

/// PayPal's 422 with the business-rule `issue` that refused the call.
pub(super) fn unprocessable(issue: &str, description: &str) -> Response {
    api_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business \
         validation.",
        Some((issue, description)),
    )
}

/// PayPal's 400 with the schema `issue` that refused the request.
pub(super) fn invalid(issue: &str, description: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        Some((issue, description)),
    )
}

/// A header's trimmed text; `None` when missing, empty or not text.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Shared {
    /// `None` when the request carries a token this simulator issued; else PayPal's 401.
    pub(super) fn refuse_unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let token = header_str(headers, header::AUTHORIZATION.as_str())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let known = token.is_some_and(|t| lock(&self.state).tokens.contains(t));
        if known {
            return None;
        }
        let body = match token {
            None => {
                json!({"error": "invalid_token", "error_description": "No permission for the requested operation"})
            }
            Some(_) => {
                json!({"error": "invalid_token", "error_description": "Access Token not found in cache"})
            }
        };
        Some(reply(StatusCode::UNAUTHORIZED, body))
    }
}

/// `POST /v1/oauth2/token`: a fresh bearer token for the right client credentials.
pub(super) async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s.state);
    st.counts.token_requests += 1;
    let credentials = header_str(&headers, header::AUTHORIZATION.as_str())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| BASE64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{}:{}", s.opts.client_id, s.opts.client_secret);
    if credentials.as_deref() != Some(expected.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
        );
    }
    let form = String::from_utf8_lossy(&body);
    if !form
        .split('&')
        .any(|p| p == "grant_type=client_credentials")
    {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}),
        );
    }
    let access_token = format!("A21AA{}", new_id(40));
    st.tokens.insert(access_token.clone());
    reply(
        StatusCode::OK,
        json!({
            "scope": "https://uri.paypal.com/services/payments/payment \
                https://uri.paypal.com/services/payments/refund",
            "access_token": access_token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": TOKEN_LIFETIME_SECS,
            "nonce": format!("{}{}", now(), new_id(20)),
        }),
    )
}
