//! SQL for `orders` and `webhook_events`.
//!
//! Paying an order and minting its key is one write ([`pay`]): the key row and the order's
//! switch to `paid` commit together or not at all, and the switch only happens from an unpaid
//! status, so however many captures, webhooks and reloads race, an order yields one key. A
//! top-up is paid the same way ([`pay_top_up`]): the key's budget grows in the transaction
//! that switches the order to `paid`, only from an unpaid status, so it grows once. Its refund
//! ([`refund_credit`], in `refunds.rs` with the other refunds) switches the
//! order to `refunded` and takes the budget back together.
//! A paid order's receipt is queued in the same transaction ([`super::mail::queue_receipt`]).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::StoreError;
use crate::keys::KeyRecord;
use crate::kinds::{BudgetKind, MailLang, OrderKind};
use crate::money::Usd;

pub use super::refunds::{
    has_paid_top_ups, partial_refund, partial_refund_marker, refund_credit, take_back,
};
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
    /// Which PayPal made it ([`crate::config::PaypalConfig::app`]), recorded with its id;
    /// `None` before that (or for an order made before this was recorded).
    pub paypal_app: Option<String>,
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

/// What an order is beyond its [`OrderRecord`]: kind, the key a top-up is for, the language
/// of the page it was bought on, the plan a top-up upgraded the key from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderExtra {
    /// Purchase or top-up.
    pub kind: OrderKind,
    /// The key a top-up adds credit to.
    pub topup_key_id: Option<String>,
    /// Its mails' language.
    pub lang: MailLang,
    /// The key's plan before this top-up moved it to the order's (dearer) plan.
    pub upgraded_from: Option<String>,
    /// What PayPal gave back of the price: its partial refunds, or all of it once refunded.
    /// Set by refunds only (a new order's is zero, whatever is given here).
    pub refunded: Usd,
}

/// An order whole: the record and the rest.
#[derive(Debug, Clone)]
pub struct Order {
    /// The original columns.
    pub record: OrderRecord,
    /// Kind, top-up key, language.
    pub extra: OrderExtra,
}

impl Order {
    /// The key the order is about: the one it minted, or the one it topped up.
    pub fn key_id(&self) -> Option<&str> {
        self.record
            .key_id
            .as_deref()
            .or(self.extra.topup_key_id.as_deref())
    }
}

/// What paying an order grants.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A new key (a purchase).
    Key(Box<KeyRecord>),
    /// Budget added to an existing key (a top-up).
    TopUp(TopUpGrant),
}

/// A top-up, as decided by fulfilment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpGrant {
    /// The key.
    pub key_id: String,
    /// Budget added (the plan's budget).
    pub amount: Usd,
    /// The plan the key moves to, when the order's plan is dearer than the key's.
    pub new_plan: Option<String>,
    /// The key's plan before the move.
    pub upgraded_from: Option<String>,
    /// What one request of the key's plan (after the move) needs: an exhausted key is
    /// `active` again only if it then has at least this left.
    pub below: Usd,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

const COLUMNS: &str = "order_id, plan, email, amount_nanos, currency, status, paypal_order_id,
    paypal_capture_id, key_id, browser_token_hash, created_at, paid_at, refunded_at, paypal_app";

/// [`COLUMNS`] and the columns of [`OrderExtra`], for [`full_row`].
const FULL_COLUMNS: &str = "order_id, plan, email, amount_nanos, currency, status, paypal_order_id,
    paypal_capture_id, key_id, browser_token_hash, created_at, paid_at, refunded_at, paypal_app,
    kind, topup_key_id, lang, upgraded_from, refunded_nanos";

fn full_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    let kind: String = r.get(14)?;
    let lang: String = r.get(16)?;
    Ok(Order {
        record: row_of(r)?,
        extra: OrderExtra {
            kind: OrderKind::parse(&kind),
            topup_key_id: r.get(15)?,
            lang: MailLang::parse(&lang),
            upgraded_from: r.get(17)?,
            refunded: Usd::from_nanos(r.get(18)?),
        },
    })
}

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
        paypal_app: r.get(13)?,
    })
}

/// How long an order never paid is kept: PayPal keeps an order payable for 29 days at most, so
/// none older can be captured or come back as a payment.
pub const UNPAID_KEPT_MS: i64 = 30 * 24 * 3600 * 1000;

/// Most unpaid orders forgotten per new order (a first prune after an upgrade stays short; new
/// orders come at most 60 a minute, so it keeps up).
const PRUNED_PER_ORDER: u32 = 100;

/// Insert a new order (and forget some orders never paid that are older than
/// [`UNPAID_KEPT_MS`]: created or failed, no capture, no key — with their buyers' addresses,
/// which nothing needs any more; anyone could make them, 60 a minute, and they were kept for
/// ever). Not one still `created` that another live PayPal than the new order's made: this
/// shop cannot ask whether that one captured it (its answer lost, its events refused under the
/// new settings), so its record and buyer stay for when that PayPal is configured again (found
/// by an independent check). A sandbox's are forgotten as any: they never held real money, and
/// after the documented switch from the sandbox to live they were kept for good.
pub fn insert(c: &Connection, o: &OrderRecord) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM orders WHERE rowid IN (
             SELECT rowid FROM orders
             WHERE created_at < ?1 AND status IN ('created', 'failed')
               AND key_id IS NULL AND paypal_capture_id IS NULL
               AND (status = 'failed' OR ?3 IS NULL OR paypal_app IS NULL OR paypal_app = ?3
                    OR paypal_app LIKE 'sandbox:%')
             LIMIT ?2)",
        params![
            o.created_at
                .timestamp_millis()
                .saturating_sub(UNPAID_KEPT_MS),
            PRUNED_PER_ORDER,
            o.paypal_app,
        ],
    )?;
    c.execute(
        &format!("INSERT INTO orders ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
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
            o.paypal_app,
        ],
    )?;
    Ok(())
}

/// Insert a new order with its kind, top-up key and language.
pub fn insert_with(c: &Connection, o: &OrderRecord, extra: &OrderExtra) -> Result<(), StoreError> {
    insert(c, o)?;
    c.execute(
        "UPDATE orders SET kind = ?2, topup_key_id = ?3, lang = ?4 WHERE order_id = ?1",
        params![
            o.order_id,
            extra.kind.as_str(),
            extra.topup_key_id,
            extra.lang.as_str()
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
    // The key's mails speak the language the buyer paid in.
    c.execute(
        "UPDATE key_mail SET lang = (SELECT lang FROM orders WHERE order_id = ?1) WHERE key_id = ?2",
        params![order_id, key.id],
    )?;
    Ok(())
}

/// Pay a top-up: mark the order paid and add its budget to the key (moving the key to a
/// dearer plan), atomically, only if the order is an unpaid top-up of that key and the key is
/// not revoked. The notices re-arm when the balance is above their thresholds again.
pub fn pay_top_up(
    c: &Connection,
    order_id: &str,
    capture_id: &str,
    g: &TopUpGrant,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE orders SET status = 'paid', paypal_capture_id = ?2, paid_at = ?3, upgraded_from = ?4
         WHERE order_id = ?1 AND kind = 'top_up' AND topup_key_id = ?5
               AND status IN ('created', 'pending', 'failed')",
        params![order_id, capture_id, at_ms, g.upgraded_from, g.key_id],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is already paid, unknown or not a top-up"
        )));
    }
    // The budget stops at `MAX_BUDGET` here too, whatever was checked before: past 2^63
    // nano-dollars SQLite stores the sum as a float, and the daemon would not start again.
    let n = c.execute(
        "UPDATE keys SET budget_nanos = budget_nanos + ?2,
                status = CASE WHEN status = 'exhausted' AND budget_nanos + ?2 - spent_nanos >= ?5
                              THEN 'active' ELSE status END,
                plan = COALESCE(?3, plan)
         WHERE id = ?1 AND status != 'revoked' AND budget_nanos <= ?4",
        params![
            g.key_id,
            g.amount.nanos(),
            g.new_plan,
            crate::money::MAX_BUDGET.nanos() - g.amount.nanos(),
            g.below.nanos()
        ],
    )?;
    if n == 0 {
        // The caller's savepoint rolls the order back with this error.
        return Err(StoreError::Conflict(format!(
            "key {} is revoked or unknown, or its budget would pass ${}",
            g.key_id,
            crate::money::MAX_BUDGET
        )));
    }
    super::budget::record(
        c,
        &g.key_id,
        BudgetKind::TopUp,
        g.amount,
        Some(order_id),
        at_ms,
    )?;
    c.execute(
        "UPDATE key_mail SET lang = (SELECT lang FROM orders WHERE order_id = ?1) WHERE key_id = ?2",
        params![order_id, g.key_id],
    )?;
    super::mail::rearm(c, &g.key_id)
}

/// Change an order's status (pending, failed, refunded); a paid order, or one held for review,
/// only moves to refunded, and a failed one never back to pending (a denied capture is over).
pub fn set_status(
    c: &Connection,
    order_id: &str,
    status: OrderStatus,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE orders SET status = ?2,
                refunded_at = CASE WHEN ?2 = 'refunded' THEN ?3 ELSE refunded_at END,
                refunded_nanos = CASE WHEN ?2 = 'refunded' THEN amount_nanos ELSE refunded_nanos END
         WHERE order_id = ?1 AND (status NOT IN ('paid', 'review') OR ?2 = 'refunded')
           AND status != 'refunded'
           AND NOT (status = 'failed' AND ?2 = 'pending')",
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

/// A refund of an order nothing was given for (see [`crate::store::Write::RefundUngiven`]):
/// an unpaid or held order becomes refunded with `refunded` (the price when `None`); one
/// refunded so already (never paid) has its figure raised to `refunded`, never lowered. A paid
/// order is refused (its refund takes back credit elsewhere). A refund whose id was counted
/// already changes nothing.
pub fn refund_ungiven(
    c: &Connection,
    order_id: &str,
    refunded: Option<Usd>,
    refund_id: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    if let Some(id) = refund_id {
        let new = c.execute(
            "INSERT OR IGNORE INTO webhook_events (event_id, event_type, received_at)
             VALUES (?1, 'PARTIAL_REFUND', ?2)",
            params![partial_refund_marker(id), at_ms],
        )?;
        if new == 0 {
            // Counted already (the same refund delivered again).
            return Ok(());
        }
    }
    let refunded = refunded.map(|u| u.nanos().max(0));
    let n = c.execute(
        "UPDATE orders SET
                refunded_nanos = CASE WHEN status = 'refunded'
                    THEN MAX(refunded_nanos, COALESCE(?2, refunded_nanos))
                    ELSE COALESCE(?2, amount_nanos) END,
                refunded_at = COALESCE(refunded_at, ?3),
                status = 'refunded'
         WHERE order_id = ?1
           AND (status IN ('created', 'pending', 'failed', 'review')
                OR (status = 'refunded' AND paid_at IS NULL))",
        params![order_id, refunded, at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "order {order_id} was paid; its refund is not one of nothing given"
        )));
    }
    Ok(())
}

/// Hold an order for review (its capture completed but cannot be given), keeping the capture's
/// id unless another order has it; a paid or refunded order is left as it is.
pub fn hold_for_review(c: &Connection, order_id: &str, capture_id: &str) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE orders SET status = 'review',
                paypal_capture_id = CASE
                    WHEN paypal_capture_id IS NOT NULL THEN paypal_capture_id
                    WHEN EXISTS (SELECT 1 FROM orders WHERE paypal_capture_id = ?2) THEN NULL
                    ELSE ?2 END
         WHERE order_id = ?1 AND status NOT IN ('paid', 'refunded')",
        params![order_id, capture_id],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "order {order_id} cannot be held for review"
        )));
    }
    Ok(())
}

/// Orders still open (`created` with a PayPal order, or `pending`) that another live PayPal
/// than `app` made: per PayPal, `(app, created, pending)`. Not a sandbox's: its test money is
/// nothing to settle, and the operator who went live as the README says was told of its
/// abandoned test checkouts at every start for good.
pub fn open_of_other_paypal(
    c: &Connection,
    app: &str,
) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT paypal_app, sum(status = 'created'), sum(status = 'pending') FROM orders
         WHERE status IN ('created', 'pending') AND paypal_order_id IS NOT NULL
           AND paypal_app LIKE 'live:%' AND paypal_app != ?1
         GROUP BY paypal_app ORDER BY paypal_app",
    )?;
    let rows = stmt.query_map([app], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record PayPal's order id on an order, and which PayPal made it.
pub fn set_paypal_order(
    c: &Connection,
    order_id: &str,
    paypal_order_id: &str,
    paypal_app: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE orders SET paypal_order_id = ?2, paypal_app = ?3 WHERE order_id = ?1",
        params![order_id, paypal_order_id, paypal_app],
    )?;
    Ok(())
}

/// One order by our id.
pub fn get(c: &Connection, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut stmt =
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM orders WHERE order_id = ?1"))?;
    Ok(stmt.query_row([order_id], row_of).optional()?)
}

/// One order whole by our id.
pub fn get_full(c: &Connection, order_id: &str) -> Result<Option<Order>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {FULL_COLUMNS} FROM orders WHERE order_id = ?1"
    ))?;
    Ok(stmt.query_row([order_id], full_row).optional()?)
}

/// Every order that credited or made `key_id` (its purchase and its top-ups), oldest first.
pub fn of_key(c: &Connection, key_id: &str) -> Result<Vec<Order>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {FULL_COLUMNS} FROM orders WHERE topup_key_id = ?1 OR key_id = ?1
         ORDER BY created_at, order_id"
    ))?;
    let rows = stmt.query_map([key_id], full_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest orders, whole.
pub fn recent_full(c: &Connection, limit: u32) -> Result<Vec<Order>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {FULL_COLUMNS} FROM orders ORDER BY created_at DESC, order_id LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], full_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
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

/// Orders a stopped daemon left between their two steps: stored, PayPal's order never recorded
/// (killed in between). Nobody can pay one (its buyer never got its id, nor PayPal's), and no
/// path would ever close it: failed, as an order PayPal did not create is (found by an
/// independent check: `created` for ever). Only at start, when no order is being made.
pub fn fail_unopened(c: &Connection) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE orders SET status = 'failed'
         WHERE status = 'created' AND paypal_order_id IS NULL",
        [],
    )?)
}
