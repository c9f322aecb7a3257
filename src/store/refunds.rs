//! SQL for refunds: a paid order's credit taken back, whole ([`refund_credit`]) or in part
//! ([`partial_refund`], once per PayPal refund id), and what requests in flight owed a refund
//! taken later ([`take_back`]). Each records what PayPal gave back on the order
//! (`refunded_nanos`) and the key's budget-history line in the same transaction.

use rusqlite::{Connection, params};

use super::error::StoreError;
use crate::kinds::BudgetKind;
use crate::money::Usd;

/// Refund a paid order's credit — a top-up, or the purchase of a key that keeps paid top-ups
/// (its key is not revoked): mark the order refunded and take `take` back from the key's budget
/// (and its plan back to `restore_plan`), atomically, only from `paid`.
pub fn refund_credit(
    c: &Connection,
    order_id: &str,
    key_id: &str,
    take: Usd,
    restore_plan: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE orders SET status = 'refunded', refunded_at = ?2, refunded_nanos = amount_nanos
         WHERE order_id = ?1 AND status = 'paid'",
        params![order_id, at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is not a paid order"
        )));
    }
    c.execute(
        "UPDATE keys SET budget_nanos = budget_nanos - ?2, plan = COALESCE(?3, plan) WHERE id = ?1",
        params![key_id, take.nanos(), restore_plan],
    )?;
    super::budget::record(
        c,
        key_id,
        BudgetKind::Refund,
        Usd::from_nanos(-take.nanos()),
        Some(order_id),
        at_ms,
    )
}

/// Whether a key has a top-up that is paid and not refunded: credit its owner bought apart from
/// the key's purchase.
pub fn has_paid_top_ups(c: &Connection, key_id: &str) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM orders
                        WHERE kind = 'top_up' AND status = 'paid' AND topup_key_id = ?1)",
        [key_id],
        |r| r.get(0),
    )?)
}

/// Take `take` more off a key's budget for a refund already recorded (what its requests held
/// then and did not spend), with its line in the budget history.
pub fn take_back(
    c: &Connection,
    order_id: Option<&str>,
    key_id: &str,
    take: Usd,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE keys SET budget_nanos = budget_nanos - ?2 WHERE id = ?1",
        params![key_id, take.nanos()],
    )?;
    if n == 0 {
        return Err(StoreError::NoSuchKey(key_id.to_string()));
    }
    super::budget::record(
        c,
        key_id,
        BudgetKind::Refund,
        Usd::from_nanos(-take.nanos()),
        order_id,
        at_ms,
    )
}

/// The marker of a partial refund applied, among the webhook events.
pub fn partial_refund_marker(refund_id: &str) -> String {
    format!("refund:{refund_id}")
}

/// Apply a partial refund once: its marker (a second time: a conflict, nothing changed), the
/// `amount` PayPal gave back added to the order's refunded total (never past its price), then
/// `take` off the key with its budget-history line when there is anything to take.
pub fn partial_refund(
    c: &Connection,
    refund: (&str, Usd),
    order_id: &str,
    key_id: &str,
    take: Usd,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (refund_id, amount) = refund;
    let n = c.execute(
        "INSERT OR IGNORE INTO webhook_events (event_id, event_type, received_at)
         VALUES (?1, 'PARTIAL_REFUND', ?2)",
        params![partial_refund_marker(refund_id), at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "refund {refund_id} of order {order_id} was applied already"
        )));
    }
    c.execute(
        "UPDATE orders SET refunded_nanos = MIN(amount_nanos, refunded_nanos + ?2)
         WHERE order_id = ?1",
        params![order_id, amount.nanos()],
    )?;
    if take > Usd::ZERO {
        take_back(c, Some(order_id), key_id, take, at_ms)?;
    }
    Ok(())
}
