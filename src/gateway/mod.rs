//! The customer side of the API under `/v1`: one request pipeline (admission → relay →
//! settlement) shared by the API dialects, which plug in through [`dialect::Dialect`]; the
//! models and balance endpoints; the errors customers see.

pub mod admission;
pub mod anthropic;
pub mod auth;
pub mod billing;
pub mod bodies;
pub mod dialect;
pub mod error;
mod json;
pub mod models;
pub mod openai;
#[cfg(feature = "bench-passthrough")]
pub mod passthrough;
pub mod pieces;
pub mod pipeline;
pub mod stream;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowHeaders, Any, CorsLayer};

use crate::state::AppState;
use error::GatewayError;

/// The `/v1` routes.
pub fn router() -> Router<Arc<AppState>> {
    let router = Router::new();
    #[cfg(feature = "bench-passthrough")]
    let router = router.route(
        "/bench/passthrough/chat/completions",
        post(passthrough::relay),
    );
    router
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", messages())
        .route("/v1/messages/count_tokens", count_tokens())
        .route("/anthropic/v1/messages", messages())
        .route("/anthropic/v1/messages/count_tokens", count_tokens())
        // DeepSeek serves these too: a base URL copied from its docs for a client that adds
        // only /messages (the Vercel AI SDK) reaches them.
        .route("/anthropic/messages", messages())
        .route("/anthropic/messages/count_tokens", count_tokens())
        .route("/anthropic/v1/models", get(models::list_anthropic))
        .route("/anthropic/v1/models/{id}", get(models::get_anthropic))
        .route("/anthropic", axum::routing::any(anthropic::not_found))
        .route(
            "/anthropic/{*rest}",
            axum::routing::any(anthropic::not_found),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route(
            "/v1/dashboard/billing/subscription",
            get(models::subscription),
        )
        .route("/v1/dashboard/billing/usage", get(models::usage))
        // Unknown paths under /v1 (the bare prefix too) answer in the API's error shape.
        .route("/v1", axum::routing::any(not_found))
        .route("/v1/", axum::routing::any(not_found))
        .route("/v1/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        // Browser-based chat front-ends call the API directly; keys travel in a header, never
        // a cookie, so any origin may. The headers a preflight asks for are allowed by name:
        // `Access-Control-Allow-Headers: *` never covers `Authorization` (Fetch standard;
        // Firefox enforces it), so a browser sending `Authorization: Bearer sk-…` would be
        // refused. Responses then vary by the preflight's headers, which the default `Vary`
        // says.
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers(AllowHeaders::mirror_request())
                .expose_headers(Any)
                .max_age(std::time::Duration::from_secs(86400)),
        )
}

/// The `Vary` the [`CorsLayer`] above adds to every answer (its default list).
const CORS_VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// What the [`CorsLayer`] above adds to an answer that is not a preflight's, for the routes
/// answered ahead of the router (`crate::app::shortcut`): the same headers in the same way
/// (`Vary` appended to any the handler set, the others replacing theirs). A test compares the
/// two on every header.
pub fn cors_answer(resp: &mut axum::response::Response) {
    let h = resp.headers_mut();
    h.append(header::VARY, CORS_VARY);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// The Messages route, its wrong methods answered in Anthropic's shape.
fn messages() -> axum::routing::MethodRouter<Arc<AppState>> {
    post(anthropic::messages).fallback(anthropic::method_not_allowed)
}

/// The token-counting route, likewise.
fn count_tokens() -> axum::routing::MethodRouter<Arc<AppState>> {
    post(anthropic::count_tokens).fallback(anthropic::method_not_allowed)
}

/// An unknown path under `/v1`: in Anthropic's error shape for an Anthropic client (it sends
/// `anthropic-version` or `x-api-key` alone, as `/v1/models` tells them apart, or asks for a
/// Messages path such as `/v1/messages/batches` or `/v1/complete`), whose SDK reads that shape
/// only; in the OpenAI shape otherwise.
async fn not_found(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    api_error(
        &uri,
        &headers,
        GatewayError::NotFound(not_offered(uri.path())),
    )
}

/// A wrong method on an API route, in the shape its client reads (as for [`not_found`]).
async fn method_not_allowed(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    api_error(&uri, &headers, GatewayError::MethodNotAllowed)
}

/// An unknown path that looks like the API's (see [`looks_like_api`]), in its client's shape.
pub fn api_not_found(
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> axum::response::Response {
    api_error(
        uri,
        headers,
        GatewayError::NotFound(not_offered(uri.path())),
    )
}

/// The path, when it is under the API's own prefix (`/v1/` or `/anthropic/v1/`, written as
/// the SDKs write it) and so an endpoint this server does not offer rather than a wrong base
/// URL (`/v1/v1/…` is one: an Anthropic client's base URL ending in /v1; so is `/v1//…`).
fn not_offered(path: &str) -> Option<String> {
    // An empty segment is a base URL's trailing slash (`…/v1/` + `/chat/completions`).
    if path.contains("//") {
        return None;
    }
    let rest = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/anthropic/v1/"))?;
    let again = rest.len() >= 2
        && rest.as_bytes()[..2].eq_ignore_ascii_case(b"v1")
        && rest.as_bytes().get(2).is_none_or(|&b| b == b'/');
    (!rest.is_empty() && !again).then(|| path.to_string())
}

/// Whether a path the router does not know is meant for the API: `/v1` or `/anthropic`
/// after any leading slashes, in any case, or an API path without its `/v1` (a base URL
/// copied from DeepSeek's docs, which serve both: the SDK read the storefront's HTML 404).
pub fn looks_like_api(path: &str) -> bool {
    let p = path.trim_start_matches('/').as_bytes();
    let starts = |prefix: &[u8]| {
        p.len() >= prefix.len()
            && p[..prefix.len()].eq_ignore_ascii_case(prefix)
            && p.get(prefix.len()).is_none_or(|&b| b == b'/')
    };
    starts(b"v1")
        || starts(b"anthropic")
        || starts(b"chat")
        || starts(b"completions")
        || starts(b"embeddings")
        || starts(b"messages")
        || starts(b"models")
}

fn api_error(
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    e: GatewayError,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    let anthropic = headers.contains_key("anthropic-version")
        || (headers.contains_key("x-api-key") && !headers.contains_key(header::AUTHORIZATION))
        || path.starts_with("/v1/messages")
        || path.starts_with("/v1/complete")
        || path.trim_start_matches('/').starts_with("anthropic")
        || looks_like_api(path) && path.to_ascii_lowercase().contains("/messages");
    if anthropic {
        use dialect::Dialect;
        anthropic::Anthropic::error_response(e)
    } else {
        e.into_response()
    }
}
