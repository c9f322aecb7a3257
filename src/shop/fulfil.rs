//! Order fulfilment: a PayPal capture in, exactly one key out (or, for a top-up, exactly one
//! credit to the key it was for, in [`super::topup::credit`]).
//!
//! Called from the capture call, the webhooks and the order look-up's reconciliation, any
//! number of times, concurrently. Exactly-once holds because transitions are serialised by
//! `state.fulfil_lock`, the order is re-read under it, and the database write that mints the
//! key (or adds the budget) also flips the order to `paid` only from an unpaid state — so
//! double clicks, retried captures, webhooks and reloads converge on one key, one credit. A
//! paid order's receipt is queued in that same write when email is on.

use std::sync::Arc;

use chrono::Utc;

use crate::activity::ActivityEvent;
use crate::admin::NewKey;
use crate::kinds::OrderKind;
use crate::paypal::CaptureInfo;
use crate::state::AppState;
use crate::store::Write;
use crate::store::orders::{Grant, Order, OrderRecord, OrderStatus};

/// What fulfilment decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// Paid; the order's key (new or existing).
    Paid(String),
    /// PayPal holds the money; a webhook will complete it.
    Pending,
    /// PayPal declined the payment: nothing granted, the buyer may try again.
    Declined(String),
    /// PayPal captured money that does not match the order (amount, currency, invoice):
    /// nothing granted, the operator must look at it.
    Mismatch(String),
    /// We could not record the payment (database, configuration): retry later.
    Failed(String),
    /// The order is unknown or refunded.
    NotApplicable,
}

/// An order by our id (fulfilment's own read, so that the look-up pages, which call into
/// fulfilment, stay above it).
async fn load(state: &AppState, order_id: &str) -> Option<Order> {
    let id = order_id.to_string();
    match state
        .store
        .read(move |c| crate::store::orders::get_full(c, &id))
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(order_id, error = %e, "order query failed");
            None
        }
    }
}

/// What an order already paid, refunded or held for review is, whatever PayPal says of it now;
/// `None` while it may still be paid.
pub(crate) async fn decided(state: &Arc<AppState>, full: &Order) -> Option<Fulfilment> {
    match full.record.status {
        OrderStatus::Paid => {
            let key_id = full.key_id().unwrap_or_default().to_string();
            // A top-up's credit is in memory from its commit on (and loaded at start-up).
            if full.extra.kind == OrderKind::Purchase {
                ensure_installed(state, &key_id).await;
            }
            Some(Fulfilment::Paid(key_id))
        }
        OrderStatus::Refunded => Some(Fulfilment::NotApplicable),
        // Held for the operator: a later event about the same capture (pending, denied, a
        // resend) does not move it (a late PENDING made it pending, a DENIED failed).
        OrderStatus::Review => Some(Fulfilment::Mismatch("held for review".into())),
        _ => None,
    }
}

/// Grant the order's key if `capture` is `COMPLETED` for exactly the order's amount, in USD,
/// for this order. Safe to call any number of times, concurrently, from capture and webhooks.
pub async fn fulfil(state: &Arc<AppState>, order_id: &str, capture: &CaptureInfo) -> Fulfilment {
    let _serial = state.fulfil_lock.lock().await;
    let Some(full) = load(state, order_id).await else {
        return Fulfilment::NotApplicable;
    };
    if let Some(decided) = decided(state, &full).await {
        return decided;
    }
    let order = &full.record;
    let now_ms = Utc::now().timestamp_millis();
    if let Some(unfinished) = record_unfinished(state, order, capture, now_ms).await {
        return unfinished;
    }
    if let Some(why) = mismatch(order, capture) {
        hold_for_review(state, order_id, capture, now_ms).await;
        tracing::error!(
            order_id,
            why,
            "PAYPAL CAPTURE DOES NOT MATCH THE ORDER: no key issued; check it in PayPal"
        );
        return Fulfilment::Mismatch(why);
    }
    // Captured while the plan was sold, recorded after the operator took it out of the config:
    // PayPal has the money and the order cannot be given as it was (its budget, its models).
    // Held like a mismatch: it was `Failed`, so the payment stayed unrecorded, the buyer was
    // told to reload, and PayPal's webhook was refused for days.
    if !state.config.plans.contains_key(&order.plan) {
        hold_for_review(state, order_id, capture, now_ms).await;
        tracing::error!(
            order_id,
            plan = %order.plan,
            "PAID ORDER OF A PLAN NO LONGER IN THE CONFIG: held for review; refund it in PayPal, or give the buyer a key by hand"
        );
        return Fulfilment::Mismatch(format!("plan {} is not in the config", order.plan));
    }
    match full.extra.kind {
        OrderKind::Purchase => issue_key(state, order, capture, now_ms).await,
        OrderKind::TopUp => super::topup::credit(state, &full, capture, now_ms).await,
    }
}

/// Hold an order for the operator's review: PayPal has the money (a completed capture that
/// cannot be given), with the capture's id kept for the refund. A write that fails leaves the
/// order as it was; the next capture, webhook or look-up holds it again.
pub(super) async fn hold_for_review(
    state: &AppState,
    order_id: &str,
    capture: &CaptureInfo,
    now_ms: i64,
) {
    let write = Write::OrderReview {
        order_id: order_id.to_string(),
        capture_id: capture.id.clone(),
        at_ms: now_ms,
    };
    match state.store.write(write).await {
        Ok(()) => announce(state, order_id).await,
        Err(e) => tracing::warn!(order_id, error = %e, "order not held for review by this call"),
    }
}

/// Tell attached consoles an order's new status that no other event tells (pending, failed,
/// held for review): the order as stored now.
pub(super) async fn announce(state: &AppState, order_id: &str) {
    let id = order_id.to_string();
    match state
        .store
        .read(move |c| crate::store::orders::get_full(c, &id))
        .await
    {
        Ok(Some(order)) => state.activity.emit(ActivityEvent::OrderChanged {
            order: crate::activity::views::order_view(&order),
            at_ms: Utc::now().timestamp_millis(),
        }),
        Ok(None) => {}
        Err(e) => tracing::debug!(order_id, error = %e, "order change not announced"),
    }
}

fn set_status(order_id: &str, status: OrderStatus, at_ms: i64) -> Write {
    Write::OrderStatus {
        order_id: order_id.to_string(),
        status,
        at_ms,
    }
}

/// A capture that is not `COMPLETED`: record where the order stands (pending or failed) and
/// say so; `None` for a completed one.
async fn record_unfinished(
    state: &AppState,
    order: &OrderRecord,
    capture: &CaptureInfo,
    now_ms: i64,
) -> Option<Fulfilment> {
    let order_id = order.order_id.as_str();
    match capture.status.as_str() {
        "COMPLETED" => None,
        // A capture PayPal denied is over (`PENDING` ends as `COMPLETED` or `DENIED`): a
        // `PENDING` after that is an old event delivered late, and made a failed order pending.
        "PENDING" if order.status == OrderStatus::Failed => {
            tracing::info!(order_id, "late PENDING event of a failed capture ignored");
            Some(Fulfilment::Declined("capture denied".into()))
        }
        "PENDING" => {
            if order.status != OrderStatus::Pending
                && state
                    .store
                    .write(set_status(order_id, OrderStatus::Pending, now_ms))
                    .await
                    .is_ok()
            {
                announce(state, order_id).await;
            }
            tracing::info!(
                order_id,
                "capture pending at PayPal; waiting for the webhook"
            );
            Some(Fulfilment::Pending)
        }
        // Captured, then (part of it) refunded before we recorded the payment: PayPal took
        // money, so it is not a declined payment (recorded `failed`, its refund was dropped and
        // a late COMPLETED then gave the whole credit; found by an independent check). Held
        // for the operator, who sees what PayPal gave back.
        "REFUNDED" | "PARTIALLY_REFUNDED" => {
            hold_for_review(state, order_id, capture, now_ms).await;
            tracing::error!(
                order_id,
                status = %capture.status,
                "PAYPAL CAPTURE REFUNDED BEFORE THE PAYMENT WAS RECORDED: held for review; check it in PayPal"
            );
            Some(Fulfilment::Mismatch(format!("capture {}", capture.status)))
        }
        other => {
            if state
                .store
                .write(set_status(order_id, OrderStatus::Failed, now_ms))
                .await
                .is_ok()
            {
                announce(state, order_id).await;
            }
            tracing::warn!(
                order_id,
                status = other,
                "capture not completed; nothing granted"
            );
            Some(Fulfilment::Declined(format!("capture {other}")))
        }
    }
}

/// How a completed capture differs from the order it claims to pay, if it does.
fn mismatch(order: &OrderRecord, capture: &CaptureInfo) -> Option<String> {
    if capture.amount != Some(order.amount) {
        Some(format!(
            "amount {:?} instead of {}",
            capture.amount.map(|a| a.to_string()),
            order.amount
        ))
    } else if capture.currency != order.currency {
        Some(format!(
            "currency {} instead of {}",
            capture.currency, order.currency
        ))
    } else if capture
        .invoice_id
        .as_deref()
        .is_some_and(|i| i != order.order_id)
    {
        Some(format!(
            "invoice {:?} is another order's",
            capture.invoice_id
        ))
    } else {
        None
    }
}

/// Mint the key of an order whose capture checked out, and pay the order in the same write.
async fn issue_key(
    state: &Arc<AppState>,
    order: &OrderRecord,
    capture: &CaptureInfo,
    now_ms: i64,
) -> Fulfilment {
    let order_id = order.order_id.as_str();
    let new_key = |email: Option<String>| NewKey {
        plan: order.plan.clone(),
        email,
        budget: None,
        note: None,
        order_id: Some(order.order_id.clone()),
    };
    let prepared = match crate::admin::prepare_key(state, new_key(Some(order.email.clone()))) {
        // An address taken at checkout that today's rules refuse (an order placed before
        // they tightened): the key is made without it rather than never (PayPal has the
        // money). The order keeps the address for its look-up; no mail can go to it anyway.
        Err(crate::admin::AdminError::BadEmail(_)) => {
            tracing::warn!(
                order_id,
                "the order's address cannot be mailed; the key is made without it"
            );
            crate::admin::prepare_key(state, new_key(None))
        }
        other => other,
    };
    let (record, _key) = match prepared {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(order_id, error = %e, "cannot mint the key of a paid order");
            return Fulfilment::Failed(e.to_string());
        }
    };
    let write = Write::Pay {
        order_id: order.order_id.clone(),
        capture_id: capture.id.clone(),
        grant: Grant::Key(Box::new(record.clone())),
        receipt: state.mailer.enabled(),
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        // The database refused to pay it twice (or failed): report what it holds.
        tracing::warn!(order_id, error = %e, "order not paid by this call");
        return match load(state, order_id).await.map(|o| o.record) {
            Some(o) if o.status == OrderStatus::Paid => {
                let key_id = o.key_id.unwrap_or_default();
                ensure_installed(state, &key_id).await;
                Fulfilment::Paid(key_id)
            }
            _ => Fulfilment::Failed(e.to_string()),
        };
    }
    let key = crate::admin::install_key(state, record);
    state.mailer.poke();
    state.activity.emit(ActivityEvent::OrderPaid {
        order_id: order.order_id.clone(),
        plan: order.plan.clone(),
        amount_usd: order.amount,
        key_id: key.id.clone(),
        at_ms: now_ms,
    });
    tracing::info!(order_id, key_id = %key.id, "order paid; key issued");
    Fulfilment::Paid(key.id.clone())
}

/// Make sure a paid order's committed key is in the live table (its installation may have been
/// interrupted after the commit): load it from the database if it is missing.
pub async fn ensure_installed(state: &Arc<AppState>, key_id: &str) {
    if key_id.is_empty() || state.keys.by_id(key_id).is_some() {
        return;
    }
    let id = key_id.to_string();
    match state
        .store
        .read(move |c| crate::store::keys::load_one(c, &id))
        .await
    {
        Ok(Some(record)) => {
            tracing::warn!(
                key_id,
                "a paid order's key was missing from memory; installed it now"
            );
            crate::admin::install_key(state, record);
        }
        Ok(None) => tracing::error!(key_id, "a paid order's key is not in the database"),
        Err(e) => tracing::error!(key_id, error = %e, "cannot load a paid order's key"),
    }
}
