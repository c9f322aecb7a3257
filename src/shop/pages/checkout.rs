//! The checkout page (`/checkout/{plan}`) and, in demo mode, the local stand-in for PayPal's
//! approval popup (`/demo/paypal/approve`). The payment itself goes through the JSON API
//! (`/api/orders`, `/api/orders/{id}/capture`) from `assets/js/checkout.js`.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::notice::{bad_form, csrf_refused, message, not_found};
use super::view::{PlanView, clip, fill, url_encode};
use crate::money::Usd;
use crate::shop::web::{PageCtx, csrf_ok};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "pages/checkout.html")]
pub(super) struct Checkout<'a> {
    pub ctx: &'a PageCtx,
    pub plan: PlanView,
    pub client_id: String,
    pub resuming: bool,
    /// The order come back to (`resuming`), as shown and as a query value.
    pub resume_order: String,
    pub resume_order_q: String,
    /// A top-up instead of a purchase.
    pub topup: Option<TopUpMode>,
}

/// The checkout of a top-up: from the dashboard (a grant for the key, its prefix shown) or from
/// the pricing page (the buyer types the key).
pub(super) struct TopUpMode {
    /// The dashboard's grant; `None`: ask for the key.
    pub grant: Option<String>,
    /// "Adding credit to {prefix}", filled.
    pub for_line: String,
    /// "The plan's budget (${budget}) is added…", filled.
    pub note: String,
}

impl TopUpMode {
    /// The mode for `plan`, for the key `prefix` with `grant` (or asking for the key).
    pub fn new(ctx: &PageCtx, plan: &PlanView, grant: Option<String>, prefix: String) -> TopUpMode {
        TopUpMode {
            grant,
            for_line: fill(ctx.s.checkout_topup_for, &[("prefix", &prefix)]),
            note: fill(
                ctx.s.checkout_topup_note,
                &[("budget", &plan.budget.to_string())],
            ),
        }
    }
}

/// The query of a checkout page the buyer comes back to after approving.
#[derive(Debug, Default, Deserialize)]
pub struct CheckoutQuery {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    approved: String,
    /// `1`: a top-up of a key the buyer types.
    #[serde(default)]
    topup: String,
}

/// `GET /checkout/{plan}`: an unknown or withdrawn plan is a 404 page.
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    plan: Result<Path<String>, PathRejection>,
    query: Result<Query<CheckoutQuery>, QueryRejection>,
    ctx: PageCtx,
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
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let resuming = query.approved == "1" && !query.order_id.trim().is_empty();
    // Come back to a top-up's order (a reload), the page is a top-up's again: it was a
    // purchase's, offering a new key if that order could not be paid (found by an independent
    // check). The dashboard's grant is not in the URL: the key is asked for.
    let resumes_top_up = resuming
        && crate::shop::orders::load_full(&state, &query.order_id)
            .await
            .is_some_and(|o| o.extra.kind == crate::kinds::OrderKind::TopUp);
    let topup = (query.topup == "1" || resumes_top_up)
        .then(|| TopUpMode::new(&ctx, &plan, None, String::new()));
    let page = Checkout {
        ctx: &ctx,
        plan,
        client_id: url_encode(state.config.paypal.client_id.trim()),
        resume_order: clip(&query.order_id, 64),
        resume_order_q: url_encode(&clip(&query.order_id, 64)),
        resuming,
        topup,
    };
    ctx.page(page.render())
}

#[derive(Template)]
#[template(path = "pages/demo_approve.html")]
struct DemoApprove<'a> {
    ctx: &'a PageCtx,
    order_id: String,
    plan_id: String,
    plan_name: String,
    amount: Usd,
    /// A top-up's order: approving adds credit (no key is shown), and cancelling goes back
    /// to the top-up's checkout, not a purchase's.
    topup: bool,
}

/// The order to approve.
#[derive(Debug, Default, Deserialize)]
pub struct ApproveQuery {
    #[serde(default)]
    order_id: String,
}

/// `GET /demo/paypal/approve?order_id=…` (demo only): what PayPal's popup would show.
pub async fn demo_approve_page(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ApproveQuery>, QueryRejection>,
    ctx: PageCtx,
) -> Response {
    let t = ctx.t;
    if !state.demo {
        return not_found(&ctx, t.notfound_page);
    }
    let order_id = query.map(|Query(q)| q.order_id).unwrap_or_default();
    let Some(full) = crate::shop::orders::load_full(&state, order_id.trim()).await else {
        return not_found(&ctx, t.notfound_order);
    };
    let topup = full.extra.kind == crate::kinds::OrderKind::TopUp;
    let order = full.record;
    let page = DemoApprove {
        topup,
        ctx: &ctx,
        plan_name: state
            .config
            .plans
            .get(&order.plan)
            .map_or_else(|| order.plan.clone(), |p| p.name.clone()),
        plan_id: order.plan,
        amount: order.amount,
        order_id: order.order_id,
    };
    ctx.page(page.render())
}

/// The approval form.
#[derive(Debug, Default, Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /demo/paypal/approve` (demo only): approve at the simulated PayPal, then back to the
/// checkout page, which captures.
pub async fn demo_approve_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ctx: PageCtx,
    form: Result<Form<ApproveForm>, FormRejection>,
) -> Response {
    let t = ctx.t;
    if !state.demo {
        return not_found(&ctx, t.notfound_page);
    }
    let Ok(Form(form)) = form else {
        return bad_form(&ctx, "/pricing");
    };
    let order_id = clip(&form.order_id, 64);
    let back = format!("/demo/paypal/approve?order_id={}", url_encode(&order_id));
    if !csrf_ok(&headers, Some(&form.csrf_token)) {
        return csrf_refused(&ctx, &back);
    }
    match crate::shop::orders::demo_approve(&state, &order_id).await {
        Some(plan) => Redirect::to(&format!(
            "/checkout/{}?order_id={}&approved=1",
            url_encode(&plan),
            url_encode(&order_id)
        ))
        .into_response(),
        None => message(
            &ctx,
            StatusCode::CONFLICT,
            t.demo_refused_h,
            t.demo_refused_body,
            Some(("/pricing", t.nav_pricing)),
        ),
    }
}
