//! The capture half of the checkout's JSON API: `POST /api/orders/{id}/capture`, its guard,
//! and one capture of an order at PayPal at a time ([`Capturing`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use governor::DefaultKeyedRateLimiter;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::KeyStatus;
use crate::kinds::OrderKind;
use crate::paypal::PaypalError;
use crate::shop::error::ShopError;
use crate::shop::fulfil::{Fulfilment, ensure_installed, fulfil};
use crate::shop::guard::{Guard, Guarded, Refusal};
use crate::shop::limits::ShopLimits;
use crate::shop::orders::made_by_other_paypal;
use crate::shop::web::csrf_header;
use crate::state::AppState;
use crate::store::orders::{Order, OrderRecord, OrderStatus};

use super::{order_cookie_name, refused};

/// `POST /api/orders/{order_id}/capture` behind the guard (each call may reach PayPal).
pub struct CaptureOrder;

impl Guarded for CaptureOrder {
    type Admitted = ();

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<std::net::IpAddr> {
        &limits.capture
    }

    async fn read(req: Request, _: &Arc<AppState>) -> Result<((), Option<String>), Response> {
        Ok(((), csrf_header(req.headers()).map(str::to_owned)))
    }

    fn refuse((): (), why: Refusal) -> Response {
        refused(why, ShopError::TooManyCaptures)
    }
}

/// Does this browser hold the token of the browser that created the order?
fn created_here(headers: &HeaderMap, order: &OrderRecord) -> bool {
    let jar = CookieJar::from_headers(headers);
    match (
        jar.get(&order_cookie_name(&order.order_id)),
        &order.browser_token_hash,
    ) {
        (Some(c), Some(hash)) => {
            let got: [u8; 32] = Sha256::digest(c.value().as_bytes()).into();
            bool::from(got.ct_eq(hash))
        }
        _ => false,
    }
}

/// `POST /api/orders/{order_id}/capture` → `{status, order_id, message, api_key}` (the key only
/// for the browser that created the order); a top-up answers `api_key: null` and
/// `topped_up`, the credited key's display prefix (never the key; also only for that browser).
pub async fn capture(
    State(state): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Guard(()): Guard<CaptureOrder>,
) -> Result<Response, ShopError> {
    let order = crate::shop::orders::try_load_full(&state, &order_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "order query failed");
            ShopError::Internal
        })?
        .ok_or(ShopError::OrderNotFound)?;
    let may_see_key = created_here(&headers, &order.record);
    if order.extra.kind == OrderKind::TopUp {
        // In a task of its own, as `settle`'s capture is: a buyer who hangs up mid-capture
        // must not release the key's turn (below) while the capture goes on without it.
        let state = state.clone();
        let worker = tokio::spawn(async move { capture_top_up(&state, &order, may_see_key).await });
        return worker.await.map_err(|_| ShopError::Internal)?;
    }
    let order = order.record;
    match settle(&state, &order).await? {
        Some(Fulfilment::Failed(_)) => return Err(ShopError::PaymentNotRecorded),
        Some(Fulfilment::Mismatch(_)) => {
            return Ok(Json(json!({
                "status": "review",
                "order_id": order.order_id,
                "message": REVIEW_MESSAGE,
                "api_key": null,
            }))
            .into_response());
        }
        _ => {}
    }
    // Answer from the database: whatever path got it there, this is the order's truth.
    let (full, shown) = crate::shop::orders::load_shown(&state, &order_id)
        .await
        .ok_or(ShopError::Internal)?;
    let view = crate::shop::orders::order_view(&state, &full, &shown);
    let order = full.record;
    let api_key = if may_see_key { view.api_key } else { None };
    let message = match (order.status, &api_key) {
        (OrderStatus::Paid, None) if view.replaced_at.is_some() => {
            "Payment received. This order's key has since been replaced; the new key was shown \
             once, when it was made."
        }
        (OrderStatus::Paid, None) if !may_see_key => {
            "Payment received. The key is shown only in the browser that placed the order."
        }
        (OrderStatus::Paid, None) => {
            "Payment received, but the key cannot be shown right now. Please contact the \
             operator with your order id."
        }
        (OrderStatus::Refunded, _) if order.paid_at.is_none() => REFUNDED_UNGIVEN_MESSAGE,
        (status, _) => capture_message(status),
    };
    Ok(Json(json!({
        "status": order.status,
        "order_id": order.order_id,
        "message": message,
        "api_key": api_key,
        "top_up": false,
        // Said apart, so the page tells it in its own language (it said "shown only in the
        // browser that paid", to that browser; found by an independent check).
        "key_replaced": api_key.is_none() && view.replaced_at.is_some(),
    }))
    .into_response())
}

/// The capture of a top-up: `{status, order_id, message, api_key: null, topped_up}`, the key
/// credited (`topped_up`) named only to the browser that made the order (`created_here`), as a
/// purchase's key is shown: another who learnt the order id learns its status, not which key.
async fn capture_top_up(
    state: &Arc<AppState>,
    order: &Order,
    created_here: bool,
) -> Result<Response, ShopError> {
    let key = order
        .extra
        .topup_key_id
        .as_deref()
        .and_then(|id| state.keys.by_id(id));
    // Never take money for a key that cannot use it. PayPal may have taken it already (a
    // capture whose answer was lost, then the key revoked): asked, such a capture is held for
    // review, and the buyer told so — not that the credit cannot be added, as if nothing had
    // been taken (found by an independent check).
    // One top-up capture of a key at a time, from its check to its credit: captures of two
    // orders sent at once each passed the check below, and the one past the cap was captured
    // and then held for review (found by an independent re-check).
    let _key_turn = match &key {
        Some(k) => Some(state.capturing.turn(&format!("key {}", k.id)).await),
        None => None,
    };
    let unpaid = matches!(
        order.record.status,
        OrderStatus::Created | OrderStatus::Pending | OrderStatus::Failed
    );
    // Nor for a key this credit would take past its budget's cap (other top-ups of it paid
    // since this order was made): checked when the order was made, checked again here.
    let full = || {
        let budget = state
            .config
            .plans
            .get(&order.record.plan)
            .map(|p| p.budget_usd);
        key.as_ref()
            .zip(budget)
            .is_some_and(|(k, b)| !crate::money::fits_budget(k.balance().budget, b))
    };
    let outcome = if unpaid
        && key
            .as_ref()
            .is_none_or(|k| k.status() == KeyStatus::Revoked)
    {
        match captured_before(state, &order.record).await? {
            Some(held) => Some(held),
            None => return Err(ShopError::KeyRevoked),
        }
    } else if unpaid && full() {
        match captured_before(state, &order.record).await? {
            Some(held) => Some(held),
            None => return Err(ShopError::KeyFull),
        }
    } else {
        settle(state, &order.record).await?
    };
    if let Some(Fulfilment::Failed(_)) = outcome {
        return Err(ShopError::PaymentNotRecorded);
    }
    // The key as the order's look-up shows it (not its prefix if it was replaced since the
    // order was made: the order may be anyone's who had the key's text then).
    let (full, shown) = crate::shop::orders::load_shown(state, &order.record.order_id)
        .await
        .ok_or(ShopError::Internal)?;
    let view = crate::shop::orders::order_view(state, &full, &shown);
    let record = full.record;
    let status = match outcome {
        Some(Fulfilment::Mismatch(_)) => "review".to_string(),
        _ => record.status.as_str().to_string(),
    };
    let message = match record.status {
        OrderStatus::Refunded if record.paid_at.is_none() => REFUNDED_UNGIVEN_MESSAGE,
        // Its key revoked since: when PayPal completes it, it is held for review.
        OrderStatus::Pending if view.key_revoked => PENDING_REVOKED_MESSAGE,
        status => top_up_message(status),
    };
    Ok(Json(json!({
        "status": status,
        "order_id": record.order_id,
        "message": message,
        "api_key": null,
        "topped_up": view.topped_up.filter(|_| created_here),
        "top_up": true,
    }))
    .into_response())
}

/// What the buyer is told about a payment PayPal took that is held for the operator's review.
const REVIEW_MESSAGE: &str = "PayPal took the payment, but it cannot be given as ordered (it does \
     not match this order, or what it was for is no longer available), so it is held for review: \
     nothing was issued yet. Please contact us with your order id; do not pay again.";

/// What the capture answer tells the buyer about an order refunded before anything was given
/// for it (held for review, or its payment not recorded yet).
const REFUNDED_UNGIVEN_MESSAGE: &str = "This payment was refunded. Nothing had been issued for it, so no key or credit was taken back.";

/// What the capture answer tells the buyer about a top-up PayPal is still processing whose key
/// was revoked since (it promised the credit; found by an independent re-check).
const PENDING_REVOKED_MESSAGE: &str = "PayPal is still processing the payment, but the key it \
     was for has been revoked since: nothing can be added to it, so once PayPal completes the \
     payment it is held for review. Please contact us with your order id; do not pay again.";

/// What the capture answer tells the buyer about a top-up in `status`.
fn top_up_message(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Paid => "Payment received. The credit was added to your key.",
        OrderStatus::Pending => {
            "PayPal is still processing the payment. The credit is added when it completes."
        }
        OrderStatus::Failed => "The payment did not go through. Nothing was added.",
        OrderStatus::Review => REVIEW_MESSAGE,
        OrderStatus::Refunded => "This top-up was refunded; its credit was taken back.",
        OrderStatus::Created => "The payment has not been approved yet.",
    }
}

/// Bring the order as far as PayPal allows: a paid order only has its key made sure of, an
/// unpaid one is captured. In a task of its own: a buyer whose connection drops mid-capture
/// must not leave a payment half-recorded (the handler future would simply stop at its next
/// await). `None` when nothing was asked of PayPal.
async fn settle(
    state: &Arc<AppState>,
    order: &OrderRecord,
) -> Result<Option<Fulfilment>, ShopError> {
    let state = state.clone();
    let order = order.clone();
    let worker = tokio::spawn(async move {
        match (order.status, order.key_id.as_deref()) {
            (OrderStatus::Paid, Some(key_id)) => {
                ensure_installed(&state, key_id).await;
                Ok(None)
            }
            (OrderStatus::Paid | OrderStatus::Refunded, _) => Ok(None),
            // Held: nothing to ask PayPal (its capture is done), nothing to give.
            (OrderStatus::Review, _) => Ok(Some(Fulfilment::Mismatch("held for review".into()))),
            _ => capture_at_paypal(&state, &order).await.map(Some),
        }
    });
    worker.await.map_err(|_| ShopError::Internal)?
}

/// The fulfilment of a capture PayPal made of `order` already, if it made one (asked, not
/// captured); in a task of its own, as [`settle`].
async fn captured_before(
    state: &Arc<AppState>,
    order: &OrderRecord,
) -> Result<Option<Fulfilment>, ShopError> {
    let (state, order) = (state.clone(), order.clone());
    let worker = tokio::spawn(async move {
        let (Some(paypal), Some(paypal_id)) =
            (state.paypal.as_ref(), order.paypal_order_id.as_deref())
        else {
            return Ok(None);
        };
        if made_by_other_paypal(&state, &order) {
            return Err(ShopError::OrderOfOtherPaypal);
        }
        match paypal.get_order(paypal_id).await {
            Ok(info) => match info.capture {
                Some(c) => Ok(Some(fulfil(&state, &order.order_id, &c).await)),
                None => Ok(None),
            },
            // PayPal no longer knows the order: nothing of it was captured.
            Err(PaypalError::Api { status: 404, .. }) => Ok(None),
            Err(e) => {
                tracing::error!(order_id = %order.order_id, error = %e, "cannot ask PayPal whether it captured a top-up it may not credit");
                Err(ShopError::PaypalCaptureFailed)
            }
        }
    });
    worker.await.map_err(|_| ShopError::Internal)?
}

/// What the capture answer tells the buyer about an order in `status`.
fn capture_message(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Paid => "Payment received. Here is your API key.",
        OrderStatus::Pending => {
            "PayPal is still processing the payment. Your key will be issued when it completes; \
             check the order page with your order id and email."
        }
        OrderStatus::Failed => "The payment did not go through. Nothing was issued.",
        OrderStatus::Review => REVIEW_MESSAGE,
        OrderStatus::Refunded => {
            "This order was refunded. Its key is revoked, unless it was topped up since; the order \
             page says which."
        }
        OrderStatus::Created => "The payment has not been approved yet.",
    }
}

/// The declined captures per order ([`AppState::capture_declines`]).
fn declines(state: &AppState) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
    state
        .capture_declines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per order, the lock its capture holds while at PayPal (an entry lives while someone holds or
/// waits for it).
#[derive(Default)]
pub struct Capturing(
    std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
);

/// This order's turn to capture: dropped, the next capture of the same order goes.
pub(crate) struct CaptureTurn<'a> {
    all: &'a Capturing,
    order_id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Capturing {
    /// Wait until no other capture of `order_id` is at PayPal from here.
    pub(crate) async fn turn(&self, order_id: &str) -> CaptureTurn<'_> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(order_id.to_string())
            .or_default()
            .clone();
        CaptureTurn {
            all: self,
            order_id: order_id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for CaptureTurn<'_> {
    fn drop(&mut self) {
        let mut all = self
            .all
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's handle and our guard's: nobody else waits, the entry goes.
        if let Some(guard) = self.guard.take()
            && Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&guard)) <= 2
        {
            drop(guard);
            all.remove(&self.order_id);
        }
    }
}

/// Capture at PayPal (idempotent on our request id) and fulfil from the answer.
///
/// One capture of an order at a time from here: a reload of the return page while the first
/// is at PayPal, the order look-up or a webhook's recovery would send PayPal the same request
/// id at once, and PayPal "processes the first request and might fail the second" (its
/// idempotency guide; the buyer read "PayPal is not answering" while the first went through;
/// found by an independent check). The second waits, then gets the first's answer again.
pub(crate) async fn capture_at_paypal(
    state: &Arc<AppState>,
    order: &OrderRecord,
) -> Result<Fulfilment, ShopError> {
    let _turn = state.capturing.turn(&order.order_id).await;
    // A capture of this order that went first while this one waited for its turn decided it:
    // that is the answer, and PayPal is not asked again (every waiter captured again, under
    // the same PayPal-Request-Id: harmless, but a call to PayPal each; found by an independent
    // check). The order as it is now, not as it was before the wait.
    let now = crate::shop::orders::load_full(state, &order.order_id).await;
    if let Some(now) = &now
        && let Some(decided) = crate::shop::fulfil::decided(state, now).await
    {
        return Ok(decided);
    }
    let order = now.as_ref().map_or(order, |o| &o.record);
    // No money taken for what the next start would forget (see `lost_database`).
    if super::lost_database(state) {
        return Err(ShopError::NotRecording);
    }
    let (Some(paypal), Some(paypal_id)) = (state.paypal.as_ref(), order.paypal_order_id.as_deref())
    else {
        return Err(ShopError::NotApproved);
    };
    if made_by_other_paypal(state, order) {
        return Err(ShopError::OrderOfOtherPaypal);
    }
    // Never take money for what can no longer be given or is no longer sold: a plan the
    // operator took out of the config (its capture went through and was then never recorded,
    // the buyer told to reload while PayPal held the money) or withdrew from sale
    // (`enabled = false`) since the order was made (found by independent checks). A capture
    // made before, whose answer was lost, is PayPal's to tell: fulfilment decides from it (a
    // removed plan's payment is held for review). A pending capture has been taken already:
    // asked again, PayPal says how it ended.
    let withdrawn = state
        .config
        .plans
        .get(&order.plan)
        .is_none_or(|p| !p.enabled);
    if matches!(order.status, OrderStatus::Created | OrderStatus::Failed) && withdrawn {
        return match paypal.get_order(paypal_id).await {
            Ok(info) => match info.capture {
                Some(c) => Ok(fulfil(state, &order.order_id, &c).await),
                None => {
                    tracing::warn!(order_id = %order.order_id, plan = %order.plan, "order of a plan no longer sold: not captured");
                    Err(ShopError::PlanWithdrawn)
                }
            },
            // PayPal does not know the order (its 404): nothing was ever captured, and the
            // plan is not sold — the buyer is told so rather than to retry for ever.
            Err(PaypalError::Api { status: 404, .. }) => {
                tracing::warn!(order_id = %order.order_id, plan = %order.plan, "order of a plan no longer sold, unknown at PayPal: not captured");
                Err(ShopError::PlanWithdrawn)
            }
            Err(e) => {
                tracing::error!(order_id = %order.order_id, error = %e, "cannot ask PayPal about an order of a plan no longer sold");
                Err(ShopError::PaypalCaptureFailed)
            }
        };
    }
    let retry = declines(state).get(&order.order_id).copied();
    let request_id = match retry {
        None => format!("capture-{}", order.order_id),
        Some(nonce) => format!("capture-{}-{nonce:016x}", order.order_id),
    };
    match paypal.capture_order(paypal_id, &request_id).await {
        Ok(result) => match result.capture {
            Some(c) => {
                declines(state).remove(&order.order_id);
                Ok(fulfil(state, &order.order_id, &c).await)
            }
            None => {
                tracing::warn!(order_id = %order.order_id, status = %result.order_status, "capture without a capture record");
                Err(ShopError::PaypalIncomplete)
            }
        },
        Err(PaypalError::Api { name, .. }) if name == "ORDER_NOT_APPROVED" => {
            Err(ShopError::NotApproved)
        }
        // Expired unpaid (PayPal keeps an unapproved order ~3 hours) or unknown there: no
        // capture can ever follow, so the buyer is not offered to try this one again (it was
        // "PayPal is not answering" for ever; found by an independent check). PayPal's 404 for
        // an unknown order is `RESOURCE_NOT_FOUND` with the issue `INVALID_RESOURCE_ID`, and
        // the error's name is the issue when there is one: matched by its status, whatever
        // name it carries.
        // Not for an order whose pending capture we recorded: PayPal took that money, so its
        // "unknown order" says only that the PayPal asked is not the one that took it (its
        // settings changed since: another app, paypal.env, a wrong api_base), and the buyer
        // must not read "nothing was charged, pay again" (found by an independent check).
        Err(PaypalError::Api { status, name, .. })
            if order.status == OrderStatus::Pending
                && (status == 404 || name == "ORDER_EXPIRED" || name == "RESOURCE_NOT_FOUND") =>
        {
            tracing::error!(
                order_id = %order.order_id,
                paypal_order_id = %paypal_id,
                %name,
                "PayPal does not know an order whose pending capture it reported: are paypal.env, \
                 paypal.client_id and paypal.api_base those the order was made with?"
            );
            Err(ShopError::PaypalCaptureFailed)
        }
        Err(PaypalError::Api { status, name, .. })
            if status == 404 || name == "ORDER_EXPIRED" || name == "RESOURCE_NOT_FOUND" =>
        {
            tracing::info!(order_id = %order.order_id, %name, "PayPal no longer knows the order");
            Err(ShopError::OrderExpired)
        }
        // PayPal's "funding failure": the buyer's card or balance was refused. Retrying the
        // same capture can never work; PayPal's window is restarted for another method.
        Err(PaypalError::Api { name, .. }) if name == "INSTRUMENT_DECLINED" => {
            tracing::info!(order_id = %order.order_id, "PayPal declined the buyer's payment method");
            let mut m = declines(state);
            // Bounded, and forgotten once the order is captured: full, it starts afresh (an
            // order declined before then may meet its old decline once more, and counts it).
            if m.len() >= 10_000 && !m.contains_key(&order.order_id) {
                m.clear();
            }
            m.insert(order.order_id.clone(), rand::random::<u64>());
            Err(ShopError::PaymentDeclined)
        }
        Err(e) => {
            tracing::error!(order_id = %order.order_id, error = %e, "PayPal capture failed");
            Err(ShopError::PaypalCaptureFailed)
        }
    }
}
