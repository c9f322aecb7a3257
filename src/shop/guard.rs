//! The guard of the storefront's sensitive posts (checkout API, order look-up, dashboard): the
//! CSRF token checked, then one request taken from the endpoint's per-IP limit.
//!
//! The order is the same everywhere: the request is read first (a form that does not parse is
//! refused before anything else, as it carries the token), then the token, then the limit — so
//! a forged request never uses up a visitor's allowance. What differs per endpoint is where the
//! token travels (the `x-csrf-token` header of a JSON call, the `csrf_token` field of a form),
//! which limiter counts, and what a refusal looks like (a JSON error, a page): [`Guarded`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::response::Response;
use governor::DefaultKeyedRateLimiter;

use super::limits::{ShopLimits, limit_key};
use super::web::csrf_ok;
use crate::state::{AppState, ClientIp};

/// Why the guard turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The CSRF token is missing or not this browser's.
    Csrf,
    /// The endpoint's per-IP limit is used up.
    Limited,
}

/// An endpoint behind the guard: how its requests are read and refused, and which limit counts.
pub trait Guarded: Send + 'static {
    /// What the handler gets once the request is admitted (the body, the parsed form…).
    type Admitted: Send;

    /// This endpoint's per-IP limiter.
    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr>;

    /// Read the request: what the handler will get, and the CSRF token it submitted. A request
    /// that cannot be read is refused here, with the endpoint's own answer.
    fn read(
        req: Request,
        state: &Arc<AppState>,
    ) -> impl Future<Output = Result<(Self::Admitted, Option<String>), Response>> + Send;

    /// The answer to a request the guard refuses.
    fn refuse(admitted: Self::Admitted, why: Refusal) -> Response;
}

/// A request that passed the guard of endpoint `E`: CSRF checked, per-IP limit taken.
pub struct Guard<E: Guarded>(pub E::Admitted);

impl<E: Guarded> FromRequest<Arc<AppState>> for Guard<E> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let ClientIp(ip) = ClientIp::of(state, &parts);
        // The token is compared with the cookie of these headers once the request is read.
        let headers: HeaderMap = parts.headers.clone();
        let (admitted, token) = E::read(Request::from_parts(parts, body), state).await?;
        if !csrf_ok(&headers, token.as_deref()) {
            plain_http_hint(state, &headers);
            return Err(E::refuse(admitted, Refusal::Csrf));
        }
        if E::limiter(&state.shop_limits)
            .check_key(&limit_key(ip))
            .is_err()
        {
            return Err(E::refuse(admitted, Refusal::Limited));
        }
        Ok(Guard(admitted))
    }
}

/// Say (once a minute) why a page opened over plain HTTP can post no form when the site is
/// `https://`: its cookies are `Secure`, so the browser keeps them from an `http://` page, and
/// every post fails the CSRF check — before TLS is set up, through an SSH tunnel, at the bare
/// address — which "reload the page" never mends (found by an independent check: nothing in
/// the log said why). The page's origin is in the post's `Origin` header.
fn plain_http_hint(state: &AppState, headers: &HeaderMap) {
    let public = &state.config.server.public_url;
    let Some(origin) = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return;
    };
    if public.starts_with("https://") && origin.starts_with("http://") {
        static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
        if let Some(held) = SAID.due() {
            tracing::warn!(
                origin = %crate::text::echoed(origin),
                public_url = %public,
                since_last_said = held,
                "a form posted from a page opened over plain http:// was refused: the site's \
                 cookies are Secure (server.public_url is https://), so such a page never has \
                 them; open the site at server.public_url (said at most once a minute)"
            );
        }
    }
}
