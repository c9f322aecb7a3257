//! The storefront pages (askama templates in `templates/`, English and Chinese): home, pricing,
//! docs, checkout with the demo approval step, order look-up and the usage dashboard. Every page
//! is built from the live config and escapes everything it echoes.

mod chart;
mod checkout;
mod dashboard;
mod form;
mod info;
mod order;
mod view;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

pub use checkout::{checkout, demo_approve_page, demo_approve_submit};
pub use dashboard::{dashboard, dashboard_form};
pub use info::{docs, home, pricing};
pub use order::{order_form, order_lookup};

use super::web::PageCtx;

#[derive(Template)]
#[template(path = "pages/message.html")]
struct MessagePage<'a> {
    ctx: &'a PageCtx,
    code: u16,
    heading: &'a str,
    body: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// A page in the site's layout that only says something (errors, refusals), with `status`.
fn message(
    ctx: &PageCtx,
    status: StatusCode,
    heading: &str,
    body: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let html = MessagePage {
        ctx,
        code: status.as_u16(),
        heading,
        body,
        link,
    }
    .render();
    let mut resp = ctx.page(html);
    if resp.status().is_success() {
        *resp.status_mut() = status;
    }
    resp
}

/// 404 in the site's layout.
fn not_found(ctx: &PageCtx, body: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::NOT_FOUND,
        t.notfound_h,
        body,
        Some(("/pricing", t.nav_pricing)),
    )
}

/// A storefront 404 page in the site's layout, for use as the router's fallback on non-API paths.
pub async fn not_found_page(ctx: PageCtx) -> Response {
    not_found(&ctx, ctx.t.notfound_page)
}

/// 403 for a form post whose CSRF token does not match this browser's cookie.
fn csrf_refused(ctx: &PageCtx, back: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::FORBIDDEN,
        t.csrf_h,
        t.csrf_body,
        Some((back, t.back_to_form)),
    )
}

/// 429 for a per-IP limit.
fn too_many(ctx: &PageCtx, back: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::TOO_MANY_REQUESTS,
        t.limit_h,
        t.limit_body,
        Some((back, t.back_to_form)),
    )
}

/// 400 for a form that does not parse.
fn bad_form(ctx: &PageCtx, back: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::BAD_REQUEST,
        t.badform_h,
        t.badform_body,
        Some((back, t.back_to_form)),
    )
}

/// 500 when the database cannot answer.
fn unavailable(ctx: &PageCtx) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        t.error_h,
        t.error_body,
        None,
    )
}
