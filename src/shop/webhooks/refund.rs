//! Refunds and reversals of a capture (`PAYMENT.CAPTURE.REFUNDED` / `REVERSED`): which order
//! they are about, whether they take back part of its credit or all of it, and whether its key
//! is revoked or kept (a top-up, or a purchase whose key keeps paid top-ups).

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::{WebhookError, order_of_refund};
use crate::activity::ActivityEvent;
use crate::kinds::OrderKind;
use crate::money::Usd;
use crate::paypal::parse_amount;
use crate::state::AppState;
use crate::store::Write;
use crate::store::orders::{self as db, OrderStatus};

/// The capture id a refund or reversal refers to: its `up` link, else the resource itself.
fn refunded_capture_id(resource: &Value) -> Option<String> {
    let up = resource
        .get("links")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("rel").and_then(Value::as_str) == Some("up"))
        })
        .and_then(|l| l.get("href").and_then(Value::as_str))
        .and_then(|href| href.trim_end_matches('/').rsplit('/').next())
        .map(str::to_string);
    up.or_else(|| {
        resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// What a refund gave back when it is only part of `price`: the refund's own `amount`, when
/// what the capture's refunds gave back in all (PayPal's `seller_payable_breakdown.
/// total_refunded_amount`, else this refund's amount — and never less than `before`, what
/// this order's earlier refunds were recorded as, plus this one) is less than the price.
/// `None` for a refund of the whole price or of the rest, and for one whose amounts cannot be
/// read (then it is taken as whole, as before partial refunds were read).
fn partial_refund(resource: &Value, price: Usd, before: Usd) -> Option<Usd> {
    let usd = |m: Option<&Value>| usd_amount(m?);
    let this = usd(resource.get("amount"))?;
    let total = match resource
        .get("seller_payable_breakdown")
        .and_then(|b| b.get("total_refunded_amount"))
    {
        Some(t) => usd(Some(t))?,
        None => this,
    };
    // Without PayPal's running total, partial refunds that add up to the price must still end
    // as a whole refund (the order `refunded`, its key's fate decided), not a paid order
    // with nothing left.
    let total = total.max(before.saturating_add(this));
    (this > Usd::ZERO && total < price).then_some(this)
}

/// What PayPal has given back, after this refund (or reversal), of a capture nothing was given
/// for: its running total (`seller_payable_breakdown.total_refunded_amount`) when it says it,
/// else `before` plus this refund's `amount` — in USD; `before` when the amounts are in
/// another currency (the order's figure is in dollars: a refund in euros was shown as the
/// whole price); `None` when the event gives no amount at all (then the price).
fn given_back(resource: &Value, before: Usd) -> Option<Usd> {
    let total = resource
        .get("seller_payable_breakdown")
        .and_then(|b| b.get("total_refunded_amount"));
    let this = resource.get("amount");
    if let Some(t) = total.and_then(usd_amount) {
        return Some(t.max(before));
    }
    if let Some(a) = this.and_then(usd_amount) {
        return Some(before.saturating_add(a));
    }
    (total.is_some() || this.is_some()).then_some(before)
}

/// A PayPal money object in USD.
fn usd_amount(m: &Value) -> Option<Usd> {
    if m.get("currency_code").and_then(Value::as_str) != Some("USD") {
        return None;
    }
    parse_amount(m.get("value")?.as_str()?).ok()
}

/// The refund of an order nothing was given for (held for review, or its payment not recorded
/// yet), or a later refund of one refunded so: no key to revoke, no credit to take back; the
/// order shows what PayPal gave back (it showed the price, whatever the refund was). Each
/// refund counts once, by PayPal's id.
async fn refund_ungiven(
    state: &AppState,
    kind: &str,
    full: &crate::store::orders::Order,
    resource: &Value,
    now_ms: i64,
) -> Result<(), WebhookError> {
    let order = &full.record;
    let refund_id = resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    let refunded = given_back(resource, full.extra.refunded);
    let write = Write::RefundUngiven {
        order_id: order.order_id.clone(),
        refunded,
        refund_id,
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        tracing::error!(order_id = %order.order_id, error = %e, "order not marked refunded; PayPal will retry");
        return Err(WebhookError::Unavailable);
    }
    // Said once: a later refund of an order refunded so only raises its figure, which the
    // order as stored tells (a console showed the whole price refunded, then no change).
    if order.status != OrderStatus::Refunded {
        state.activity.emit(ActivityEvent::OrderRefunded {
            order_id: order.order_id.clone(),
            key_id: None,
            at_ms: now_ms,
        });
    }
    crate::shop::fulfil::announce(state, &order.order_id).await;
    tracing::info!(kind, order_id = %order.order_id, refunded = ?refunded.map(|u| u.to_string()), "refund of an order nothing was given for");
    Ok(())
}

/// Money went back to the buyer: the order's key is revoked (or, for a top-up or a purchase
/// whose key keeps paid top-ups, the order's credit taken back) and the order marked refunded.
pub(super) async fn on_refund(
    state: &Arc<AppState>,
    kind: &str,
    resource: &Value,
) -> Result<(), WebhookError> {
    let now_ms = Utc::now().timestamp_millis();
    let capture_id = refunded_capture_id(resource);
    let named = capture_id.clone().unwrap_or_default();
    let Some(found) = order_of_refund(state, resource, capture_id).await? else {
        let refund_id = resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        tracing::warn!(kind, capture_id = %named, refund_id, "refund of a capture we do not have");
        return Ok(());
    };
    // Serialised with fulfilment, and re-read under the lock: a payment being recorded right
    // now is seen, and its key revoked.
    let _serial = state.fulfil_lock.lock().await;
    let full = crate::shop::orders::load_full(state, &found.order_id)
        .await
        .ok_or(WebhookError::Unavailable)?;
    let order = &full.record;
    if order.status == OrderStatus::Refunded {
        // Refunded before anything was given for it: a later refund (or reversal) of the same
        // capture raises what it shows as given back.
        if order.paid_at.is_none() {
            return refund_ungiven(state, kind, &full, resource, now_ms).await;
        }
        return Ok(());
    }
    // A held payment (nothing was given for it) is settled by any refund of it: the
    // operator's way to close a review. Its captured amount may be any, so "part of the
    // price" means nothing here (a full refund of an under-amount capture was dropped).
    let held = order.status == OrderStatus::Review;
    // A refund of part of the price (a reversal always takes the whole payment back): the same
    // share of the order's credit goes back, and the order stays paid.
    // Each refund applies once, by PayPal's id (the event's own id may differ on a resend):
    // one applied already is done whatever it would read as now — resent, a partial refund
    // counted in the order's refunded total would read as the rest of the price.
    let refund_id = resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    let seen = match (kind, &refund_id) {
        ("PAYMENT.CAPTURE.REFUNDED", Some(id)) => {
            let marker = db::partial_refund_marker(id);
            state
                .store
                .read(move |c| db::webhook_seen(c, &marker))
                .await
                .map_err(|_| WebhookError::Unavailable)?
        }
        _ => false,
    };
    if seen {
        return Ok(());
    }
    if kind == "PAYMENT.CAPTURE.REFUNDED"
        && !held
        && let Some(part) = partial_refund(resource, order.amount, full.extra.refunded)
        && let Some(refund_id) = refund_id
    {
        match order.status {
            OrderStatus::Paid => {}
            // Paid at PayPal but not recorded here yet (its capture's event is late): refuse,
            // so PayPal sends this again once the payment — and its credit — is ours to share.
            OrderStatus::Created | OrderStatus::Pending => {
                tracing::warn!(order_id = %order.order_id, "partial refund of an order not recorded as paid yet; PayPal will retry");
                return Err(WebhookError::Unavailable);
            }
            _ => return Ok(()),
        }
        return match crate::shop::topup::refund_part(state, &full, &refund_id, part).await {
            Ok(_) => {
                // What was refunded of it, for an attached console's Orders view.
                crate::shop::fulfil::announce(state, &order.order_id).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(order_id = %order.order_id, error = %e, "partial refund not recorded; PayPal will retry");
                Err(WebhookError::Unavailable)
            }
        };
    }
    if order.status != OrderStatus::Paid {
        return refund_ungiven(state, kind, &full, resource, now_ms).await;
    }
    let keep_key = match full.extra.kind {
        OrderKind::TopUp => order.status == OrderStatus::Paid,
        // A purchase whose key was topped up since: the top-ups were paid apart, so only the
        // purchase's own credit goes back, as for a top-up.
        OrderKind::Purchase => match (&order.key_id, order.status) {
            (Some(key_id), OrderStatus::Paid) => {
                let id = key_id.clone();
                state
                    .store
                    .read(move |c| crate::store::orders::has_paid_top_ups(c, &id))
                    .await
                    .map_err(|e| {
                        tracing::error!(order_id = %order.order_id, error = %e, "cannot read the key's top-ups; PayPal will retry");
                        WebhookError::Unavailable
                    })?
            }
            _ => false,
        },
    };
    if keep_key {
        return match crate::shop::topup::refund(state, &full).await {
            Ok(_) => {
                state.activity.emit(ActivityEvent::OrderRefunded {
                    order_id: order.order_id.clone(),
                    // The key is not revoked: only the order's credit is taken back.
                    key_id: None,
                    at_ms: now_ms,
                });
                crate::shop::fulfil::announce(state, &order.order_id).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(order_id = %order.order_id, error = %e, "refund not recorded; PayPal will retry");
                Err(WebhookError::Unavailable)
            }
        };
    }
    if let Some(key_id) = &order.key_id
        && let Err(e) = crate::admin::revoke_key(state, key_id).await
    {
        tracing::error!(order_id = %order.order_id, error = %e, "cannot revoke a refunded order's key");
        return Err(WebhookError::Failed);
    }
    let write = Write::OrderStatus {
        order_id: order.order_id.clone(),
        status: OrderStatus::Refunded,
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        tracing::error!(order_id = %order.order_id, error = %e, "order not marked refunded; PayPal will retry");
        return Err(WebhookError::Unavailable);
    }
    state.activity.emit(ActivityEvent::OrderRefunded {
        order_id: order.order_id.clone(),
        key_id: order.key_id.clone(),
        at_ms: now_ms,
    });
    tracing::info!(kind, order_id = %order.order_id, "order refunded; key revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn partial_refunds_that_add_up_to_the_price_are_whole_even_without_paypals_total() {
        let refund =
            |amount: &str| serde_json::json!({"amount": {"currency_code": "USD", "value": amount}});
        let price = usd("12.34");
        assert_eq!(
            partial_refund(&refund("1.11"), price, Usd::ZERO),
            Some(usd("1.11"))
        );
        assert_eq!(
            partial_refund(&refund("2.22"), price, usd("1.11")),
            Some(usd("2.22"))
        );
        assert_eq!(partial_refund(&refund("9.01"), price, usd("3.33")), None);
        // PayPal's own running total, when it comes, counts too.
        let mut with_total = refund("1.00");
        with_total["seller_payable_breakdown"] = serde_json::json!(
            {"total_refunded_amount": {"currency_code": "USD", "value": "12.34"}}
        );
        assert_eq!(partial_refund(&with_total, price, Usd::ZERO), None);
    }
}
