//! SQL for `orders` and `webhook_events`.
//!
//! Paying an order and minting its key is one write ([`pay`]): the key row and the order's
//! switch to `paid` commit together or not at all, and the switch only happens from an unpaid
//! status, so however many captures, webhooks and reloads race, an order yields one key.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::StoreError;
use crate::keys::KeyRecord;
use crate::money::Usd;

pub use crate::status::OrderStatus;

/// One order.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    /// Ours (`ord_…`): PayPal's `invoice_id`, shown to the buyer.
    pub order_id: String,
    /// Plan bought.
    pub plan: String,
    /// Buyer's email (as entered, trimmed).
    pub email: String,
    /// Price charged, from config at creation.
    pub amount: Usd,
    /// Always USD.
    pub currency: String,
    /// Where it stands.
    pub status: OrderStatus,
    /// PayPal's order id.
    pub paypal_order_id: Option<String>,
    /// PayPal's capture id, once captured.
    pub paypal_capture_id: Option<String>,
    /// The key it paid for.
    pub key_id: Option<String>,
    /// SHA-256 of the token held by the browser that created the order (shows the key at once).
    pub browser_token_hash: Option<[u8; 32]>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Paid at.
    pub paid_at: Option<DateTime<Utc>>,
    /// Refunded at.
    pub refunded_at: Option<DateTime<Utc>>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

const COLUMNS: &str = "order_id, plan, email, amount_nanos, currency, status, paypal_order_id,
    paypal_capture_id, key_id, browser_token_hash, created_at, paid_at, refunded_at";

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRecord> {
    let status: String = r.get(5)?;
    let token: Option<Vec<u8>> = r.get(9)?;
    Ok(OrderRecord {
        order_id: r.get(0)?,
        plan: r.get(1)?,
        email: r.get(2)?,
        amount: Usd::from_nanos(r.get(3)?),
        currency: r.get(4)?,
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Failed),
        paypal_order_id: r.get(6)?,
        paypal_capture_id: r.get(7)?,
        key_id: r.get(8)?,
        browser_token_hash: token.and_then(|t| t.try_into().ok()),
        created_at: time(r.get(10)?),
        paid_at: r.get::<_, Option<i64>>(11)?.map(time),
        refunded_at: r.get::<_, Option<i64>>(12)?.map(time),
    })
}

/// Insert a new order.
pub fn insert(c: &Connection, o: &OrderRecord) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO orders ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            o.order_id,
            o.plan,
            o.email,
            o.amount.nanos(),
            o.currency,
            o.status.as_str(),
            o.paypal_order_id,
            o.paypal_capture_id,
            o.key_id,
            o.browser_token_hash.as_ref().map(|h| &h[..]),
            o.created_at.timestamp_millis(),
            o.paid_at.map(|t| t.timestamp_millis()),
            o.refunded_at.map(|t| t.timestamp_millis()),
        ],
    )?;
    Ok(())
}

/// Pay an order: insert its key and mark it paid, atomically, only if it is not paid yet.
pub fn pay(
    c: &Connection,
    order_id: &str,
    capture_id: &str,
    key: &KeyRecord,
    at_ms: i64,
) -> Result<(), StoreError> {
    super::keys::insert(c, key)?;
    let n = c.execute(
        "UPDATE orders SET status = 'paid', paypal_capture_id = ?2, key_id = ?3, paid_at = ?4
         WHERE order_id = ?1 AND status IN ('created', 'pending', 'failed') AND key_id IS NULL",
        params![order_id, capture_id, key.id, at_ms],
    )?;
    if n == 0 {
        // The caller's savepoint rolls the key back with this error.
        return Err(StoreError::Conflict(format!(
            "order {order_id} is already paid or unknown"
        )));
    }
    Ok(())
}

/// Change an order's status (pending, failed, refunded); a paid order only moves to refunded.
pub fn set_status(
    c: &Connection,
    order_id: &str,
    status: OrderStatus,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE orders SET status = ?2,
                refunded_at = CASE WHEN ?2 = 'refunded' THEN ?3 ELSE refunded_at END
         WHERE order_id = ?1 AND (status != 'paid' OR ?2 = 'refunded') AND status != 'refunded'",
        params![order_id, status.as_str(), at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "order {order_id} cannot become {}",
            status.as_str()
        )));
    }
    Ok(())
}

/// Record PayPal's order id on an order.
pub fn set_paypal_order(
    c: &Connection,
    order_id: &str,
    paypal_order_id: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE orders SET paypal_order_id = ?2 WHERE order_id = ?1",
        params![order_id, paypal_order_id],
    )?;
    Ok(())
}

/// One order by our id.
pub fn get(c: &Connection, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut stmt =
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM orders WHERE order_id = ?1"))?;
    Ok(stmt.query_row([order_id], row_of).optional()?)
}

/// One order by PayPal's order id.
pub fn by_paypal_order(c: &Connection, id: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders WHERE paypal_order_id = ?1"
    ))?;
    Ok(stmt.query_row([id], row_of).optional()?)
}

/// One order by PayPal's capture id.
pub fn by_capture(c: &Connection, capture_id: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders WHERE paypal_capture_id = ?1"
    ))?;
    Ok(stmt.query_row([capture_id], row_of).optional()?)
}

/// The newest orders.
pub fn recent(c: &Connection, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders ORDER BY created_at DESC, order_id LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], row_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Has this webhook event been processed?
pub fn webhook_seen(c: &Connection, event_id: &str) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE event_id = ?1)",
        [event_id],
        |r| r.get(0),
    )?)
}

/// Remember a processed webhook event (idempotent).
pub fn record_webhook(
    c: &Connection,
    event_id: &str,
    event_type: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO webhook_events (event_id, event_type, received_at) VALUES (?1, ?2, ?3)",
        params![event_id, event_type, at_ms],
    )?;
    Ok(())
}

/// Orders paid in `[from_ms, to_ms)`, refunded since or not: (order id, amount).
pub fn paid_between(
    c: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, Usd)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT order_id, amount_nanos FROM orders
         WHERE paid_at >= ?1 AND paid_at < ?2 AND status IN ('paid', 'refunded')",
    )?;
    let rows = stmt.query_map(params![from_ms, to_ms], |r| {
        Ok((r.get::<_, String>(0)?, Usd::from_nanos(r.get(1)?)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
