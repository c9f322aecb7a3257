//! Top-ups: a customer adds a plan's budget to the key they have, through the same checkout as
//! a purchase. Here: which key an order may top up ([`key_to_top_up`]), crediting a paid
//! top-up ([`credit`], called by fulfilment under `fulfil_lock`) and taking back what is left
//! of a refunded one ([`refund`], called by the webhook under the same lock).
//!
//! Exactly once, as for purchases: the budget grows in the database write that switches the
//! order to `paid`, which only applies to an unpaid order ([`crate::store::orders::pay_top_up`]),
//! and in memory only after that write committed. The key moves to the order's plan when that
//! plan is dearer (its models and RPM apply from then on); a refund moves it back.

use std::sync::Arc;

use chrono::Utc;

use super::error::ShopError;
use super::fulfil::Fulfilment;
use crate::activity::ActivityEvent;
use crate::activity::views::key_view;
use crate::keys::identify::look_up;
use crate::keys::{KeyState, KeyStatus};
use crate::money::Usd;
use crate::paypal::CaptureInfo;
use crate::state::AppState;
use crate::store::Write;
use crate::store::orders::{Grant, Order, OrderStatus, TopUpGrant};

/// The key a top-up order is for: one of ours, not revoked (an exhausted key is what top-ups
/// are for). Refused before PayPal is asked for anything.
pub fn key_to_top_up(state: &AppState, token: &str) -> Result<Arc<KeyState>, ShopError> {
    let key = look_up(&state.keys, token).map_err(|_| ShopError::UnknownKey)?;
    if key.status() == KeyStatus::Revoked {
        return Err(ShopError::KeyRevoked);
    }
    Ok(key)
}

/// Is plan `new` dearer than plan `current` (by price)? A key whose plan left the config
/// takes any plan bought for it.
fn is_dearer(state: &AppState, new: &str, current: &str) -> bool {
    let price = |p: &str| state.config.plans.get(p).map(|p| p.price_usd);
    match (price(new), price(current)) {
        (Some(n), Some(c)) => n > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Credit a top-up whose capture checked out: the plan's budget added to the key (and the key
/// moved to a dearer plan) in the write that pays the order, then in memory.
pub async fn credit(
    state: &Arc<AppState>,
    order: &Order,
    capture: &CaptureInfo,
    now_ms: i64,
) -> Fulfilment {
    let order_id = order.record.order_id.as_str();
    let key = match order
        .extra
        .topup_key_id
        .as_deref()
        .map(|id| state.keys.by_id(id))
    {
        Some(Some(k)) if k.status() != KeyStatus::Revoked => k,
        _ => {
            // PayPal holds the money; the key it was for is gone or revoked since the order
            // was made. Nothing is credited: the operator refunds it.
            tracing::error!(
                order_id,
                "TOP-UP PAID FOR A KEY THAT IS REVOKED OR GONE: nothing credited; refund it in PayPal"
            );
            super::fulfil::hold_for_review(state, order_id, capture, now_ms).await;
            return Fulfilment::Mismatch("the key to top up is revoked".into());
        }
    };
    let Some(plan) = state.config.plans.get(&order.record.plan) else {
        tracing::error!(order_id, plan = %order.record.plan, "a paid top-up's plan is not in the config");
        return Fulfilment::Failed(format!("no plan {}", order.record.plan));
    };
    if !crate::money::fits_budget(key.balance().budget, plan.budget_usd) {
        // Checked when the order was made and before its capture, but other top-ups of the
        // key may have been paid in between (found by an independent check: seventeen orders
        // made while the key was small, captured one after another, took its budget past
        // 2^63 nano-dollars, and the daemon would not start again).
        return over_the_cap(state, order_id, capture, now_ms).await;
    }
    let current = key.plan();
    let upgrade = is_dearer(state, &order.record.plan, &current);
    // A bought key none of whose other orders is still paid (all refunded) takes this
    // top-up's plan even when it is cheaper: it kept a refunded plan's models and rate for
    // the price of a trial top-up (found by an independent check).
    let settle_down = !upgrade
        && order.record.plan != current
        && nothing_else_paid(state, &key.id, &order.record.order_id).await;
    let new_plan = (upgrade || settle_down).then(|| order.record.plan.clone());
    let below = state
        .catalog
        .exhausted_below(new_plan.as_deref().unwrap_or(&current));
    let grant = TopUpGrant {
        key_id: key.id.clone(),
        amount: plan.budget_usd,
        new_plan,
        upgraded_from: upgrade.then_some(current),
        below,
    };
    let write = Write::Pay {
        order_id: order_id.to_string(),
        capture_id: capture.id.clone(),
        grant: Grant::TopUp(grant.clone()),
        receipt: state.mailer.enabled(),
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        // Revoked since the check above (the operator's `keys revoke` racing this payment):
        // PayPal holds the money as for a key revoked before, so the order is held for review
        // — left unpaid without its capture, the buyer was told to retry a capture that then
        // refused, as if nothing had been taken (found by an independent check).
        if matches!(e, crate::store::StoreError::Conflict(_)) && revoked_since(state, &key.id).await
        {
            tracing::error!(
                order_id,
                "TOP-UP PAID FOR A KEY REVOKED WHILE IT WAS RECORDED: nothing credited; refund it in PayPal"
            );
            super::fulfil::hold_for_review(state, order_id, capture, now_ms).await;
            return Fulfilment::Mismatch("the key to top up was revoked".into());
        }
        // The operator's top-up of the same key, in between, took it to the cap.
        if matches!(e, crate::store::StoreError::Conflict(_))
            && !crate::money::fits_budget(key.balance().budget, plan.budget_usd)
        {
            return over_the_cap(state, order_id, capture, now_ms).await;
        }
        tracing::warn!(order_id, error = %e, "top-up not paid by this call");
        return Fulfilment::Failed(e.to_string());
    }
    apply_in_memory(state, &key, &grant);
    state.mailer.poke();
    state.activity.emit(ActivityEvent::OrderPaid {
        order_id: order_id.to_string(),
        plan: order.record.plan.clone(),
        amount_usd: order.record.amount,
        key_id: key.id.clone(),
        at_ms: now_ms,
    });
    tracing::info!(order_id, key_id = %key.id, amount = %grant.amount, upgraded = upgrade, "top-up paid; key credited");
    Fulfilment::Paid(key.id.clone())
}

/// A paid top-up that would take its key's budget past [`crate::money::MAX_BUDGET`]: nothing
/// is credited, the order is held for the operator's review (PayPal holds the money).
async fn over_the_cap(
    state: &Arc<AppState>,
    order_id: &str,
    capture: &CaptureInfo,
    now_ms: i64,
) -> Fulfilment {
    tracing::error!(
        order_id,
        cap = %crate::money::MAX_BUDGET,
        "TOP-UP PAID THAT WOULD TAKE ITS KEY PAST THE BUDGET CAP: nothing credited; refund it in PayPal"
    );
    super::fulfil::hold_for_review(state, order_id, capture, now_ms).await;
    Fulfilment::Mismatch("the key's budget would pass its cap".into())
}

/// Whether the database says `key_id` is revoked (or gone); the read waits for the writes
/// queued before it, a revocation's among them. A read that fails answers no.
async fn revoked_since(state: &AppState, key_id: &str) -> bool {
    let id = key_id.to_string();
    state
        .store
        .read(move |c| crate::store::keys::load_one(c, &id))
        .await
        .is_ok_and(|k| k.is_none_or(|k| k.status == KeyStatus::Revoked))
}

/// Whether `key_id` was bought and none of its orders but `this` is paid now. A read that
/// fails answers no (the plan is then left as a plain top-up leaves it).
async fn nothing_else_paid(state: &AppState, key_id: &str, this: &str) -> bool {
    let key_id = key_id.to_string();
    let orders = match state
        .store
        .read(move |c| crate::store::orders::of_key(c, &key_id))
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the key's orders");
            return false;
        }
    };
    let bought = orders
        .iter()
        .any(|o| o.extra.kind == crate::kinds::OrderKind::Purchase && o.record.paid_at.is_some());
    bought
        && !orders
            .iter()
            .any(|o| o.record.order_id != this && o.record.status == OrderStatus::Paid)
}

/// The committed top-up, in the key's live state (its balance, plan, notices), announced.
fn apply_in_memory(state: &AppState, key: &KeyState, g: &TopUpGrant) {
    key.top_up(g.amount, g.below);
    if let Some(plan) = &g.new_plan {
        key.set_plan(plan.clone(), state.catalog.rpm_of(plan));
    }
    // Still too little for one request of its plan: exhausted again, not `active` with every
    // request refused (found by an independent check), and its notice not sent again.
    crate::admin::after_top_up(state, key);
    let now_ms = Utc::now().timestamp_millis();
    state.activity.emit(ActivityEvent::KeyToppedUp {
        key_id: key.id.clone(),
        amount_usd: g.amount,
        budget_usd: key.balance().budget,
        at_ms: now_ms,
    });
    state.activity.emit(ActivityEvent::KeyUpdated {
        key: key_view(key),
        at_ms: now_ms,
    });
}

/// Why a refund of an order's credit could not be recorded (PayPal delivers the event again).
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// The order or its credit could not be read.
    #[error("cannot read the order's credit: {0}")]
    Read(String),
    /// The refund could not be written.
    #[error("cannot record the refund: {0}")]
    Write(String),
}

/// Take back what is left of a refunded order's budget — at most what it added: what the key
/// has available now, and what its requests in flight hold and then do not spend (owed, taken
/// as they settle) — and, for a top-up that upgraded the key, move it back to its plan before.
/// The key is not revoked. The order is a top-up, or a purchase whose key keeps paid top-ups
/// (revoking it would take credit bought apart). Returns what was taken. Called under
/// `fulfil_lock`, with the order re-read under it and still `paid`.
pub async fn refund(state: &AppState, order: &Order) -> Result<Usd, RefundError> {
    let now_ms = Utc::now().timestamp_millis();
    let order_id = order.record.order_id.clone();
    let key_id = order.key_id().unwrap_or_default().to_string();
    // What partial refunds took back already is not taken again.
    let (_, left) = credit_left(state, &order_id, &key_id).await?;
    let key = state.keys.by_id(&key_id);
    // What is available now is taken; what requests in flight hold is owed, and taken from
    // what they give back unspent as they settle.
    let (take, owed, debt) = key.as_ref().map_or((Usd::ZERO, Usd::ZERO, 0), |k| {
        k.take_or_owe(left, &order_id)
    });
    let restore_plan = match &key {
        Some(k) => plan_without(state, k, order).await?,
        None => None,
    };
    let write = Write::RefundCredit {
        order_id: order_id.clone(),
        key_id: key_id.clone(),
        take,
        restore_plan: restore_plan.clone(),
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        if let Some(k) = &key {
            k.cancel_debt(debt);
            k.untake(take);
        }
        return Err(RefundError::Write(e.to_string()));
    }
    if let Some(k) = &key {
        if owed > Usd::ZERO {
            tracing::info!(order_id, key_id, owed = %owed, "the rest of the refund is owed by requests in flight");
        }
        if let Some(plan) = &restore_plan {
            k.set_plan(plan.clone(), state.catalog.rpm_of(plan));
        }
        crate::admin::mark_if_exhausted(state, k);
        // A cheaper plan's floor the balance clears: usable again.
        crate::admin::reactivate_if_funded(state, k);
        state.activity.emit(ActivityEvent::KeyUpdated {
            key: key_view(k),
            at_ms: now_ms,
        });
    }
    tracing::info!(order_id, key_id, taken = %take, credit_left = %left, "order refunded; its credit taken back");
    Ok(take)
}

/// The plan `key` moves to when `order` is refunded, if another: the plan of its dearest order
/// still paid — its purchase or a top-up, by what was paid for it, not by today's prices —
/// or, when none is, the plan it had before its first upgrading top-up. Not simply this
/// order's plan before: a refund of the upgrade under a later, dearer one put the key on the
/// refunded plan; a refund of one of two top-ups of a plan took the plan the other still paid
/// for; a refunded purchase left a key on its dearer plan with only a cheaper top-up paid
/// (found by independent checks). A key whose plan no order gave (the operator's) keeps it.
async fn plan_without(
    state: &AppState,
    key: &KeyState,
    order: &Order,
) -> Result<Option<String>, RefundError> {
    let key_id = key.id.clone();
    let orders = state
        .store
        .read(move |c| crate::store::orders::of_key(c, &key_id))
        .await
        .map_err(|e| RefundError::Read(e.to_string()))?;
    let first_upgrade = orders
        .iter()
        .filter(|o| o.extra.upgraded_from.is_some())
        .min_by_key(|o| o.record.paid_at);
    let base = first_upgrade.and_then(|o| o.extra.upgraded_from.clone());
    let purchased = orders
        .iter()
        .any(|o| o.extra.kind == crate::kinds::OrderKind::Purchase && o.record.paid_at.is_some());
    if base.is_none() && !purchased {
        // No order ever gave the key its plan: it is the operator's to keep.
        return Ok(None);
    }
    // The dearest still paid; among equals, the latest paid.
    let still_paid = orders
        .iter()
        .filter(|o| {
            o.record.order_id != order.record.order_id && o.record.status == OrderStatus::Paid
        })
        .max_by_key(|o| (o.record.amount, o.record.paid_at));
    let keep = match (still_paid, base) {
        // A key the operator made: its plan before the first upgrade is the operator's to
        // give, and stands beside what is still paid (a refund of the upgrade put an
        // operator's `standard` key on a `trial` top-up's plan).
        (Some(o), Some(base)) if !purchased && is_dearer(state, &base, &o.record.plan) => base,
        (Some(o), _) => o.record.plan.clone(),
        // A bought key with nothing left paid keeps its plan (no credit left; its next
        // top-up sets it); an operator's goes back to the operator's plan.
        (None, _) if purchased => return Ok(None),
        (None, Some(base)) => base,
        // A bought key with nothing left paid and no upgrade: its plan stays (it holds no
        // credit any more).
        (None, None) => return Ok(None),
    };
    Ok((keep != key.plan()).then_some(keep))
}

/// The credit a paid order added to its key, and what is left of it: what it granted, less
/// what its refunds took back so far and what requests in flight still owe them.
async fn credit_left(
    state: &AppState,
    order_id: &str,
    key_id: &str,
) -> Result<(Usd, Usd), RefundError> {
    // What is owed first, then every line queued so far committed, then the lines: a debt a
    // settling request pays meanwhile is then counted twice at worst (a refund short by that
    // much, in the customer's favour), never in neither place (one taken twice).
    let owed = state
        .keys
        .by_id(key_id)
        .map_or(Usd::ZERO, |k| k.owed_to(order_id));
    state
        .store
        .write(Write::Barrier)
        .await
        .map_err(|e| RefundError::Read(e.to_string()))?;
    let id = order_id.to_string();
    let (granted, taken) = state
        .store
        .read(move |c| {
            let granted = crate::store::budget::granted_by(c, &id)?.unwrap_or(Usd::ZERO);
            Ok((granted, crate::store::budget::taken_back_for(c, &id)?))
        })
        .await
        .map_err(|e| RefundError::Read(e.to_string()))?;
    let left = granted.saturating_sub(taken).saturating_sub(owed);
    Ok((granted, left.max(Usd::ZERO)))
}

/// A partial refund of a paid order (`paid_back` of its price): the same share of the credit
/// it added is taken back from its key (rounded down, so the customer keeps any fraction), at
/// most what is left of that credit, on the same terms as a whole refund (what requests in
/// flight hold stays theirs; what they give back unspent goes to it). The order stays paid and
/// its key is neither revoked nor moved off its plan: only the refund of the rest does that.
/// Returns what was taken at once.
pub async fn refund_part(
    state: &AppState,
    order: &Order,
    refund_id: &str,
    paid_back: Usd,
) -> Result<Usd, RefundError> {
    let now_ms = Utc::now().timestamp_millis();
    let order_id = order.record.order_id.clone();
    let key_id = order.key_id().unwrap_or_default().to_string();
    let (granted, left) = credit_left(state, &order_id, &key_id).await?;
    let price = order.record.amount.nanos();
    let share = if price > 0 {
        let n =
            i128::from(granted.nanos()) * i128::from(paid_back.nanos().max(0)) / i128::from(price);
        Usd::from_nanos(i64::try_from(n).unwrap_or(i64::MAX))
    } else {
        Usd::ZERO
    };
    let want = share.min(left);
    let Some(key) = state.keys.by_id(&key_id) else {
        return Ok(Usd::ZERO);
    };
    let (take, owed, debt) = key.take_or_owe(want, &order_id);
    let write = Write::PartialRefund {
        refund_id: refund_id.to_string(),
        amount: paid_back,
        order_id: order_id.clone(),
        key_id: key_id.clone(),
        take,
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        key.cancel_debt(debt);
        key.untake(take);
        return Err(RefundError::Write(e.to_string()));
    }
    crate::admin::mark_if_exhausted(state, &key);
    state.activity.emit(ActivityEvent::KeyUpdated {
        key: key_view(&key),
        at_ms: now_ms,
    });
    tracing::info!(order_id, key_id, paid_back = %paid_back, taken = %take, owed = %owed, "order partly refunded; that share of its credit taken back");
    Ok(take)
}
