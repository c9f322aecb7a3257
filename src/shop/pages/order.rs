//! Order look-up (`/order`): order id + email, CSRF-checked and limited per IP; an unknown id
//! and a wrong email get the same answer. `GET /order?order_id=…` (the receipt's link) fills
//! the id in. A top-up names the key it credited by its prefix only; a key replaced since is
//! not shown again.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use governor::DefaultKeyedRateLimiter;
use serde::Deserialize;

use super::form::{FormPost, GuardedForm};
use super::view::{clip, display_time, fill};
use crate::money::Usd;
use crate::shop::guard::Guard;
use crate::shop::i18n::{SelfTexts, Texts};
use crate::shop::limits::ShopLimits;
use crate::shop::orders::OrderView;
use crate::shop::web::PageCtx;
use crate::state::AppState;
use crate::store::orders::OrderStatus;

/// What the result column shows.
enum LookupOutcome {
    /// Nothing asked yet.
    Empty,
    /// No order with that id and email (either part wrong).
    NotFound,
    /// The order.
    Found(Box<OrderShown>),
}

/// An order as the look-up page shows it.
struct OrderShown {
    order_id: String,
    status_text: &'static str,
    status_class: &'static str,
    status_note: &'static str,
    plan_name: String,
    amount: Usd,
    /// What was refunded of `amount`, when anything was.
    refunded: Option<Usd>,
    created_at: String,
    paid_at: Option<String>,
    api_key: Option<String>,
    /// A top-up: the credited key's prefix.
    topped_up: Option<String>,
    /// "This key was replaced on …", filled.
    replaced: Option<String>,
}

impl OrderShown {
    fn new(o: OrderView, t: &Texts, s: &SelfTexts) -> OrderShown {
        // A payment PayPal holds and this server could not record yet reads as one pending,
        // not as unpaid or failed.
        let status = match o.status {
            OrderStatus::Created | OrderStatus::Failed if o.unrecorded_payment => {
                OrderStatus::Pending
            }
            status => status,
        };
        let status_class = match status {
            OrderStatus::Paid => "good",
            OrderStatus::Created | OrderStatus::Pending | OrderStatus::Review => "warn",
            OrderStatus::Failed | OrderStatus::Refunded => "bad",
        };
        let partly = o.status == OrderStatus::Paid && o.refunded_usd > Usd::ZERO;
        let status_note = match (o.status, o.api_key.is_some(), &o.topped_up) {
            _ if o.unrecorded_payment => s.order_note_unrecorded,
            // Not asked (another PayPal made it): neither "not paid, wait a minute" nor, for a
            // plan withdrawn or a key revoked since, "nothing was taken" (found by an
            // independent check of the switch to another PayPal).
            (OrderStatus::Created | OrderStatus::Pending, _, _) if o.other_paypal => {
                s.order_note_other_paypal
            }
            (OrderStatus::Paid, _, _) if o.key_revoked => s.order_note_paid_revoked,
            (OrderStatus::Paid, _, _) if partly => s.order_note_partly_refunded,
            (OrderStatus::Refunded, _, _) if o.paid_at.is_none() => s.order_note_refunded_ungiven,
            (OrderStatus::Paid, _, Some(_)) if o.replaced_at.is_some() => {
                s.order_note_paid_topup_replaced
            }
            (OrderStatus::Paid, _, Some(_)) => s.order_note_paid_topup,
            (OrderStatus::Pending, _, Some(_)) if o.key_revoked => s.order_note_pending_revoked,
            // What could still be paid, and no longer can (a capture would be refused); not
            // "wait a minute and look again" (found by an independent check).
            (OrderStatus::Created | OrderStatus::Failed, _, _)
                if o.kind == crate::kinds::OrderKind::TopUp && o.key_revoked =>
            {
                s.order_note_unpaid_revoked
            }
            (OrderStatus::Created | OrderStatus::Failed, _, _) if o.plan_withdrawn => {
                s.order_note_unpaid_withdrawn
            }
            (OrderStatus::Pending, _, Some(_)) => s.order_note_pending_topup,
            (OrderStatus::Refunded, _, Some(_)) if o.key_kept => s.order_note_refunded_topup,
            (OrderStatus::Refunded, _, Some(_)) => s.order_note_refunded_topup_revoked,
            (OrderStatus::Refunded, _, None) if o.key_kept => s.order_note_refunded_kept,
            (OrderStatus::Paid, false, None) if o.replaced_at.is_some() => {
                s.order_note_paid_replaced
            }
            (OrderStatus::Paid, false, None) => t.order_note_paid_nokey,
            (status, _, _) => t.order_status_note(status),
        };
        let replaced = o
            .replaced_at
            .as_deref()
            .map(|at| fill(s.order_replaced, &[("date", &display_time(at))]));
        OrderShown {
            // Neither "awaiting payment" nor "pending" above a note that says it cannot be
            // checked (found by an independent check).
            status_text: match status {
                OrderStatus::Created | OrderStatus::Pending if o.other_paypal => t.order_unchecked,
                status => t.order_status(status),
            },
            status_class,
            status_note,
            order_id: o.order_id,
            plan_name: o.plan_name,
            amount: o.amount_usd,
            refunded: (o.refunded_usd > Usd::ZERO).then_some(o.refunded_usd),
            created_at: display_time(&o.created_at),
            paid_at: o.paid_at.as_deref().map(display_time),
            api_key: o.api_key,
            topped_up: o.topped_up,
            replaced,
        }
    }
}

#[derive(Template)]
#[template(path = "pages/order.html")]
struct OrderPage<'a> {
    ctx: &'a PageCtx,
    outcome: LookupOutcome,
    /// Nothing matched: the fields are marked wrong, and focus starts on them.
    not_found: bool,
    form_order_id: String,
    form_email: String,
}

/// The order id a link may fill in.
#[derive(Debug, Default, Deserialize)]
pub struct OrderQuery {
    #[serde(default)]
    order_id: String,
}

/// `GET /order`: the look-up form (the id filled in from `?order_id=`).
pub async fn order_form(
    ctx: PageCtx,
    query: Result<Query<OrderQuery>, QueryRejection>,
) -> Response {
    let order_id = query.map(|Query(q)| q.order_id).unwrap_or_default();
    let page = OrderPage {
        ctx: &ctx,
        outcome: LookupOutcome::Empty,
        not_found: false,
        form_order_id: clip(order_id.trim(), 64),
        form_email: String::new(),
    };
    ctx.page(page.render())
}

/// The look-up form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct LookupForm {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    csrf_token: String,
}

impl GuardedForm for LookupForm {
    const PAGE: &'static str = "/order";

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr> {
        &limits.order_lookup
    }

    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// `POST /order`: past the guard (CSRF, per-IP limit against order id + email guessing), the
/// look-up.
pub async fn order_lookup(
    State(state): State<Arc<AppState>>,
    Guard((ctx, form)): Guard<FormPost<LookupForm>>,
) -> Response {
    let outcome = match crate::shop::orders::lookup_order(&state, &form.order_id, &form.email).await
    {
        Some(o) => LookupOutcome::Found(Box::new(OrderShown::new(o, ctx.t, ctx.s))),
        None => LookupOutcome::NotFound,
    };
    let found = matches!(outcome, LookupOutcome::Found(_));
    let page = OrderPage {
        ctx: &ctx,
        outcome,
        not_found: !found,
        form_order_id: clip(&form.order_id, 64),
        form_email: clip(&form.email, 254),
    };
    let mut resp = ctx.page(page.render());
    // The page says "no order matches"; its status says so too (it was 200).
    if !found {
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
    }
    resp
}
