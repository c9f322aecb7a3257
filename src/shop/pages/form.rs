//! Guarded form posts of the pages (order look-up, dashboard): the token travels in the form's
//! `csrf_token` field, so the form is parsed before the guard checks it, and every refusal is a
//! page in the site's layout linking back to the form.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::Response;
use governor::DefaultKeyedRateLimiter;
use serde::de::DeserializeOwned;

use super::notice::{bad_form, csrf_refused, too_many};
use crate::shop::guard::{Guarded, Refusal};
use crate::shop::limits::ShopLimits;
use crate::shop::web::PageCtx;
use crate::state::AppState;

/// A form whose posts the guard protects.
pub trait GuardedForm: DeserializeOwned + Send + 'static {
    /// The form's page: where refusals link back to.
    const PAGE: &'static str;

    /// The per-IP limiter counting its posts.
    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr>;

    /// The CSRF token it carries.
    fn csrf_token(&self) -> &str;
}

/// The post of form `F`: admitted as the page context and the parsed form.
pub struct FormPost<F>(PhantomData<F>);

impl<F: GuardedForm> Guarded for FormPost<F> {
    type Admitted = (PageCtx, F);

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr> {
        F::limiter(limits)
    }

    async fn read(
        req: Request,
        state: &Arc<AppState>,
    ) -> Result<((PageCtx, F), Option<String>), Response> {
        let (mut parts, body) = req.into_parts();
        let Ok(ctx) = PageCtx::from_request_parts(&mut parts, state).await;
        match Form::<F>::from_request(Request::from_parts(parts, body), state).await {
            Ok(Form(form)) => {
                let token = Some(form.csrf_token().to_owned());
                Ok(((ctx, form), token))
            }
            Err(_) => Err(bad_form(&ctx, F::PAGE)),
        }
    }

    fn refuse((ctx, _): (PageCtx, F), why: Refusal) -> Response {
        match why {
            Refusal::Csrf => csrf_refused(&ctx, F::PAGE),
            Refusal::Limited => too_many(&ctx, F::PAGE),
        }
    }
}
