//! What every response passes on its way out: the request id (assigned here, handed to the
//! handler as [`RequestId`], returned as `x-request-id`), the `/metrics` count, and the
//! headers every answer carries.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The request id's headers, named once (a `&str` name is checked on every insert).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
/// The `x-request-id` of the request being handled.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A new request id: `req_`, the time in milliseconds (12 hex digits), then 12 random
/// alphanumerics. Ids only need to be unique, not secret, so the thread-local generator spares
/// the hot path a system call; the time prefix makes ids arrive in order, so the ledger's
/// unique index on them is appended to rather than written at random pages (which is what
/// slows an index down once the ledger holds millions of rows).
pub fn new_request_id() -> String {
    use rand::Rng;
    use std::fmt::Write as _;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    let _ = write!(id, "{:012x}", ms & 0xffff_ffff_ffff);
    id.extend(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(12)
            .map(char::from),
    );
    id
}

/// The one middleware every response from the router passes (one layer, not three: each
/// `from_fn` layer boxes the route's service and future per request, which showed in the
/// profile); its work is [`around`], which the chat routes answered ahead of the router
/// (`crate::app::shortcut`) run too:
/// - every response gets an `x-request-id` (and handlers the same id, as [`RequestId`]);
///   Anthropic's routes (and `/v1/models` asked by an Anthropic client) also as `request-id`,
///   where the `anthropic` SDKs read it (`message._request_id`);
/// - it is counted by route template and status for `/metrics`;
/// - headers every response carries, API and storefront alike: `X-Content-Type-Options:
///   nosniff` (a JSON error must never be sniffed into HTML), and — when `server.public_url` is
///   https — `Strict-Transport-Security`, so a browser that once reached the shop over TLS never
///   falls back to plain HTTP, where a key or a payment could be read on the way.
pub async fn edge(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = crate::metrics::route_slot(
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str),
    );
    around(&state, route, req, |req| next.run(req)).await
}

/// What [`edge`] does around a handler, for a request routed to the metrics slot `route`:
/// also run by the routes answered ahead of the router (`crate::app::shortcut`), so both ways
/// in give the same headers, ids and counts.
pub async fn around<F: Future<Output = Response>>(
    state: &AppState,
    route: usize,
    mut req: Request,
    handler: impl FnOnce(Request) -> F,
) -> Response {
    let id = new_request_id();
    let path = req.uri().path();
    // Anthropic's SDKs list and look models up on `/v1/models` too (their exceptions carried
    // no request id there).
    let anthropic = path.starts_with("/v1/messages")
        || path.starts_with("/anthropic")
        || (path.starts_with("/v1/models")
            && (req.headers().contains_key("anthropic-version")
                || req.headers().contains_key("x-api-key")));
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = handler(req).await;
    state.metrics.http_response(route, resp.status().as_u16());
    let h = resp.headers_mut();
    if let Some(v) = header {
        if anthropic {
            h.insert(ANTHROPIC_REQUEST_ID, v.clone());
        }
        h.insert(X_REQUEST_ID, v);
    }
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if state.config.server.public_url.starts_with("https://") {
        h.insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_unique_and_time_ordered() {
        let a = super::new_request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_request_id();
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("req_") && a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(a[..16] < b[..16], "{a} then {b}");
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_request_id()).collect();
        assert_eq!(many.len(), 10_000);
    }
}
