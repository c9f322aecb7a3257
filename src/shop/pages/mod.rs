//! The storefront pages (askama templates in `templates/`, English and Chinese): home, pricing,
//! docs, checkout with the demo approval step, order look-up and the usage dashboard. Every page
//! is built from the live config and escapes everything it echoes.

mod chart;
mod checkout;
mod dashboard;
mod form;
mod info;
mod notice;
mod optout;
mod order;
mod selfserve;
mod view;

use axum::response::Response;

pub use checkout::{checkout, demo_approve_page, demo_approve_submit};
pub use dashboard::{dashboard, dashboard_form};
pub use info::{docs, home, pricing};
pub use optout::{opt_out_page, opt_out_submit};
pub use order::{order_form, order_lookup};
pub use selfserve::{checkout_topup, rotate};

use super::web::PageCtx;

/// A storefront 404 page in the site's layout, for use as the router's fallback on non-API paths.
pub async fn not_found_page(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    ctx: PageCtx,
) -> Response {
    // An API path written another way (`//v1/chat/completions`, `/V1/…`, `/anthropic/`):
    // an SDK reads the API's error shape, not a page (they got the storefront's HTML 404).
    if crate::gateway::looks_like_api(uri.path()) {
        return crate::gateway::api_not_found(&uri, &headers);
    }
    // The storefront's JSON API (`/api/orders/` with a trailing slash, a mistyped name): its
    // clients read JSON, as a wrong method there already answers (found by an independent
    // check: the HTML page).
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        use axum::response::IntoResponse;
        return crate::shop::error::ShopError::NoSuchEndpoint.into_response();
    }
    notice::not_found(&ctx, ctx.t.notfound_page)
}
