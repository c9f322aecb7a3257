//! The dashboard's self-service forms: "Add credit to this key" (`POST /checkout/{plan}`, the
//! checkout page in top-up mode) and "Replace this key" (`POST /dashboard/rotate`: a
//! confirmation, then the new key shown once). Both carry the dashboard's grant, never the key
//! ([`crate::shop::grant`]), pass the guard (CSRF, a per-IP limit), and answer with pages.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use governor::DefaultKeyedRateLimiter;
use serde::Deserialize;

use super::checkout::{Checkout, TopUpMode};
use super::form::{FormPost, GuardedForm};
use super::notice::{message, not_found};
use super::view::{PlanView, fill, url_encode};
use crate::keys::KeyStatus;
use crate::shop::error::ShopError;
use crate::shop::grant::Granted;
use crate::shop::guard::Guard;
use crate::shop::limits::ShopLimits;
use crate::shop::rotate::{Claimed, Scope};
use crate::shop::web::PageCtx;
use crate::state::AppState;

/// The fields of both forms.
#[derive(Default, Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    grant: String,
    #[serde(default)]
    csrf_token: String,
    /// `yes` on the confirmation page of a replacement.
    #[serde(default)]
    confirm: String,
}

/// "Add credit" (counted with the dashboard's look-ups).
pub struct TopUpForm(GrantForm);

impl<'de> Deserialize<'de> for TopUpForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GrantForm::deserialize(d).map(TopUpForm)
    }
}

impl GuardedForm for TopUpForm {
    const PAGE: &'static str = "/dashboard";

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr> {
        &limits.dashboard
    }

    fn csrf_token(&self) -> &str {
        &self.0.csrf_token
    }
}

/// "Replace this key" (counted with the API's rotations).
pub struct RotateForm(GrantForm);

impl<'de> Deserialize<'de> for RotateForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GrantForm::deserialize(d).map(RotateForm)
    }
}

impl GuardedForm for RotateForm {
    const PAGE: &'static str = "/dashboard";

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr> {
        &limits.rotate
    }

    fn csrf_token(&self) -> &str {
        &self.0.csrf_token
    }
}

/// Why a form's grant leads to no usable key.
enum Refused {
    /// The key is revoked.
    Revoked,
    /// Expired, another browser's, or altered: the dashboard issues a fresh one.
    Stale,
}

/// Which form a refusal answers: its page names what a revoked key cannot have.
#[derive(Clone, Copy)]
enum Form {
    TopUp,
    Rotate,
}

impl Refused {
    /// The page that says so.
    fn page(self, ctx: &PageCtx, form: Form) -> Response {
        let (heading, body) = match (self, form) {
            (Refused::Revoked, Form::TopUp) => (ctx.s.topup_h, ctx.s.topup_revoked),
            (Refused::Revoked, Form::Rotate) => (ctx.s.rotate_h, ctx.s.rotate_revoked),
            (Refused::Stale, _) => (ctx.t.csrf_h, ctx.t.csrf_body),
        };
        message(
            ctx,
            StatusCode::BAD_REQUEST,
            heading,
            body,
            Some(("/dashboard", ctx.t.nav_dashboard)),
        )
    }
}

/// The key of a form's grant, if it is usable (not revoked).
fn granted_key(state: &AppState, ctx: &PageCtx, grant: &str) -> Result<Granted, Refused> {
    match crate::shop::grant::redeem(state, grant, &ctx.grant_binding()) {
        Some(g) if g.key.status() != KeyStatus::Revoked => Ok(g),
        Some(_) => Err(Refused::Revoked),
        None => Err(Refused::Stale),
    }
}

/// `POST /checkout/{plan}` from the dashboard: the checkout page, adding credit to the key.
pub async fn checkout_topup(
    State(state): State<Arc<AppState>>,
    plan: Result<Path<String>, PathRejection>,
    Guard((ctx, TopUpForm(form))): Guard<FormPost<TopUpForm>>,
) -> Response {
    let plan_id = plan.map(|Path(p)| p).unwrap_or_default();
    let Some(plan) = state
        .config
        .plans
        .get(&plan_id)
        .filter(|p| p.enabled)
        .map(|p| PlanView::new(&plan_id, p))
    else {
        return not_found(&ctx, ctx.t.notfound_plan);
    };
    let key = match granted_key(&state, &ctx, &form.grant) {
        Ok(g) => g.key,
        Err(why) => return why.page(&ctx, Form::TopUp),
    };
    let topup = TopUpMode::new(&ctx, &plan, Some(form.grant), key.prefix());
    let page = Checkout {
        ctx: &ctx,
        plan,
        client_id: url_encode(state.config.paypal.client_id.trim()),
        resuming: false,
        resume_order: String::new(),
        resume_order_q: String::new(),
        topup: Some(topup),
    };
    ctx.page(page.render())
}

#[derive(Template)]
#[template(path = "pages/rotate_confirm.html")]
struct RotateConfirm<'a> {
    ctx: &'a PageCtx,
    grant: String,
    body: String,
}

#[derive(Template)]
#[template(path = "pages/rotate_done.html")]
struct RotateDone<'a> {
    ctx: &'a PageCtx,
    api_key: String,
}

/// `POST /dashboard/rotate`: first the confirmation, then (with `confirm=yes`) the replacement
/// and the new key, shown this once.
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    Guard((ctx, RotateForm(form))): Guard<FormPost<RotateForm>>,
) -> Response {
    // The same confirmed form again (a double click): the text its first sending made, waited
    // for while it is being made.
    let maker = if form.confirm == "yes" {
        match crate::shop::rotate::claim(
            &state,
            Scope::Dashboard,
            &form.grant,
            &ctx.grant_binding(),
        )
        .await
        {
            Ok(Claimed::Made(api_key)) => return rotate_done(ctx, api_key),
            Ok(Claimed::Mine(maker)) => Some(maker),
            Err(ShopError::InvalidApiKey(_)) => return Refused::Stale.page(&ctx, Form::Rotate),
            Err(ShopError::RotationInProgress) => {
                return message(
                    &ctx,
                    StatusCode::CONFLICT,
                    ctx.s.rotate_h,
                    ctx.s.rotate_pending,
                    Some(("/dashboard", ctx.t.nav_dashboard)),
                );
            }
            Err(_) => return rotate_failed(&ctx),
        }
    } else {
        None
    };
    let Granted { key, hash } = match granted_key(&state, &ctx, &form.grant) {
        Ok(g) => g,
        Err(why) => return why.page(&ctx, Form::Rotate),
    };
    let Some(maker) = maker else {
        let body = fill(ctx.s.rotate_confirm_body, &[("prefix", &key.prefix())]);
        let page = RotateConfirm {
            ctx: &ctx,
            grant: form.grant,
            body,
        };
        return ctx.page(page.render());
    };
    match crate::shop::rotate::rotate(&state, &key.id, hash, Some(maker)).await {
        Ok(api_key) => rotate_done(ctx, api_key),
        // Another rotation replaced the text first (another page, or the API).
        Err(ShopError::InvalidApiKey(_)) => Refused::Stale.page(&ctx, Form::Rotate),
        Err(ShopError::TooManyKeyRotations(secs)) => {
            let minutes = secs.div_ceil(60).to_string();
            let body = fill(ctx.s.rotate_too_often, &[("minutes", &minutes)]);
            message(
                &ctx,
                StatusCode::TOO_MANY_REQUESTS,
                ctx.s.rotate_h,
                &body,
                Some(("/dashboard", ctx.t.nav_dashboard)),
            )
        }
        Err(_) => rotate_failed(&ctx),
    }
}

/// The new key, shown this once. The page has no language switch: a click on it would lose
/// the key without a word (it led to `GET /dashboard/rotate`, a bare 405; found by an
/// accessibility audit), and the page is already in the language of the dashboard it came from.
fn rotate_done(mut ctx: PageCtx, api_key: String) -> Response {
    ctx.hide_lang_switch();
    ctx.page(RotateDone { ctx: &ctx, api_key }.render())
}

/// The replacement failed (or its first sending is still being made after a long wait).
fn rotate_failed(ctx: &PageCtx) -> Response {
    message(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        ctx.s.rotate_h,
        ctx.s.rotate_failed,
        Some(("/dashboard", ctx.t.nav_dashboard)),
    )
}
