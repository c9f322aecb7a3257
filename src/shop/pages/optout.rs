//! The opt-out link of balance notices (`/mail/opt-out/{token}`): a GET shows what it would
//! stop and a button; only the POST stops the key's low-balance and out-of-credit notices, so
//! a mail scanner that follows links changes nothing. The unguessable token in the path is the
//! credential (there is no CSRF token to check: a cross-site form cannot know the token), and
//! both are limited per IP against guessing.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use super::notice::{message, too_many, unavailable};
use super::view::fill;
use crate::shop::limits::limit_key;
use crate::shop::web::PageCtx;
use crate::state::{AppState, ClientIp};
use crate::store::Write;

#[derive(Template)]
#[template(path = "pages/opt_out.html")]
struct OptOutPage<'a> {
    ctx: &'a PageCtx,
    token: String,
    body: String,
}

/// A token has the shape of ours: 48 lower-case hex digits.
fn well_formed(token: &str) -> bool {
    token.len() == 48
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key a token stands for (`None` when unknown), or the page to answer instead.
async fn key_of(
    state: &AppState,
    ctx: &PageCtx,
    ip: ClientIp,
    token: &str,
) -> Result<Option<String>, Response> {
    if state
        .shop_limits
        .opt_out
        .check_key(&limit_key(ip.0))
        .is_err()
    {
        return Err(too_many(ctx, "/"));
    }
    if !well_formed(token) {
        return Ok(None);
    }
    let t = token.to_string();
    match state
        .store
        .read(move |c| crate::store::mail::by_token(c, &t))
        .await
    {
        Ok(found) => Ok(found.map(|(key_id, _)| key_id)),
        Err(e) => {
            tracing::error!(error = %e, "opt-out look-up failed");
            Err(unavailable(ctx))
        }
    }
}

fn unknown(ctx: &PageCtx) -> Response {
    message(
        ctx,
        StatusCode::NOT_FOUND,
        ctx.s.optout_h,
        ctx.s.optout_unknown,
        None,
    )
}

fn prefix_of(state: &AppState, key_id: &str) -> String {
    state
        .keys
        .by_id(key_id)
        .map(|k| k.prefix())
        .unwrap_or_default()
}

/// `GET /mail/opt-out/{token}`: what the link would stop, and the button that does it.
pub async fn opt_out_page(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Path(token): Path<String>,
    ctx: PageCtx,
) -> Response {
    match key_of(&state, &ctx, ip, &token).await {
        Err(page) => page,
        Ok(None) => unknown(&ctx),
        Ok(Some(key_id)) => {
            let body = fill(
                ctx.s.optout_body,
                &[("prefix", &prefix_of(&state, &key_id))],
            );
            ctx.page(
                OptOutPage {
                    ctx: &ctx,
                    token,
                    body,
                }
                .render(),
            )
        }
    }
}

/// `POST /mail/opt-out/{token}`: stop the key's balance notices (idempotent).
pub async fn opt_out_submit(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    Path(token): Path<String>,
    ctx: PageCtx,
) -> Response {
    let key_id = match key_of(&state, &ctx, ip, &token).await {
        Err(page) => return page,
        Ok(None) => return unknown(&ctx),
        Ok(Some(k)) => k,
    };
    let write = Write::OptOut {
        key_id: key_id.clone(),
        at_ms: Utc::now().timestamp_millis(),
    };
    if let Err(e) = state.store.write(write).await {
        tracing::error!(key_id, error = %e, "opt-out not recorded");
        return unavailable(&ctx);
    }
    tracing::info!(key_id, "balance notices stopped by the key's owner");
    let body = fill(
        ctx.s.optout_done_body,
        &[("prefix", &prefix_of(&state, &key_id))],
    );
    message(
        &ctx,
        StatusCode::OK,
        ctx.s.optout_done_h,
        &body,
        Some(("/dashboard", ctx.t.nav_dashboard)),
    )
}
