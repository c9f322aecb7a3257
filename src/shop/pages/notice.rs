//! Pages that only say something: refusals, errors, "not found" — one template in the site's
//! layout, shared by every page handler.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use crate::shop::web::PageCtx;

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
pub(super) fn message(
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
pub(super) fn not_found(ctx: &PageCtx, body: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::NOT_FOUND,
        t.notfound_h,
        body,
        Some(("/pricing", t.nav_pricing)),
    )
}

/// 403 for a form post whose CSRF token does not match this browser's cookie.
pub(super) fn csrf_refused(ctx: &PageCtx, back: &str) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::FORBIDDEN,
        t.csrf_h,
        t.csrf_body,
        Some((back, t.back_to_form)),
    )
}

/// 429 for a per-IP limit, with `Retry-After` (the limits refill within a minute).
pub(super) fn too_many(ctx: &PageCtx, back: &str) -> Response {
    let t = ctx.t;
    let mut r = message(
        ctx,
        StatusCode::TOO_MANY_REQUESTS,
        t.limit_h,
        t.limit_body,
        Some((back, t.back_to_form)),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("60"),
    );
    r
}

/// 400 for a form that does not parse.
pub(super) fn bad_form(ctx: &PageCtx, back: &str) -> Response {
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
pub(super) fn unavailable(ctx: &PageCtx) -> Response {
    let t = ctx.t;
    message(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        t.error_h,
        t.error_body,
        None,
    )
}
