//! The changes the writer applies ([`Write`]), and how each one is applied in a transaction.

use super::error::StoreError;
use super::{keys, orders, usage};
use crate::keys::{KeyRecord, KeyStatus};
use crate::money::Usd;
use usage::UsageRow;

/// One change for the writer.
#[derive(Debug, Clone)]
pub enum Write {
    /// A newly minted key.
    InsertKey(Box<KeyRecord>),
    /// A settled request: its ledger row, and the key's spent/requests counters.
    Usage(Box<UsageRow>),
    /// A status change (exhausted, revoked, re-activated).
    KeyStatus {
        /// Which key.
        key_id: String,
        /// Its new status.
        status: KeyStatus,
        /// When.
        at_ms: i64,
    },
    /// Mark a key exhausted, if the database agrees: still active and its remaining balance
    /// (budget − spent, as committed so far) below `below`. Deciding at apply time keeps a
    /// top-up committed just before from being overwritten.
    MarkExhausted {
        /// Which key.
        key_id: String,
        /// The plan's exhaustion threshold.
        below: Usd,
    },
    /// A new order.
    InsertOrder(Box<orders::OrderRecord>),
    /// PayPal's order id for an order.
    SetPaypalOrder {
        /// Ours.
        order_id: String,
        /// PayPal's.
        paypal_order_id: String,
    },
    /// Pay an order and mint its key, atomically (see [`orders::pay`]).
    PayOrder {
        /// Ours.
        order_id: String,
        /// PayPal's capture id.
        capture_id: String,
        /// The key it buys.
        key: Box<KeyRecord>,
        /// When.
        at_ms: i64,
    },
    /// An order's status (pending, failed, refunded).
    OrderStatus {
        /// Ours.
        order_id: String,
        /// New status.
        status: orders::OrderStatus,
        /// When.
        at_ms: i64,
    },
    /// A processed webhook event.
    WebhookSeen {
        /// PayPal's event id.
        event_id: String,
        /// Its type.
        event_type: String,
        /// When.
        at_ms: i64,
    },
    /// Budget added to a key.
    TopUp {
        /// Which key.
        key_id: String,
        /// How much.
        amount: Usd,
        /// When.
        at_ms: i64,
    },
    /// Changes nothing: its acknowledgement says that every write queued before it is
    /// committed (the activity tracker waits on one before reading the ledger).
    Barrier,
}

/// Apply one write inside the writer's transaction.
pub(super) fn apply(tx: &rusqlite::Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::InsertKey(k) => keys::insert(tx, k),
        Write::Usage(u) => usage::insert(tx, u),
        Write::KeyStatus {
            key_id,
            status,
            at_ms,
        } => keys::set_status(tx, key_id, *status, *at_ms),
        Write::MarkExhausted { key_id, below } => keys::mark_exhausted(tx, key_id, *below),
        Write::InsertOrder(o) => orders::insert(tx, o),
        Write::SetPaypalOrder {
            order_id,
            paypal_order_id,
        } => orders::set_paypal_order(tx, order_id, paypal_order_id),
        Write::PayOrder {
            order_id,
            capture_id,
            key,
            at_ms,
        } => orders::pay(tx, order_id, capture_id, key, *at_ms),
        Write::OrderStatus {
            order_id,
            status,
            at_ms,
        } => orders::set_status(tx, order_id, *status, *at_ms),
        Write::WebhookSeen {
            event_id,
            event_type,
            at_ms,
        } => orders::record_webhook(tx, event_id, event_type, *at_ms),
        Write::TopUp {
            key_id,
            amount,
            at_ms,
        } => keys::top_up(tx, key_id, *amount, *at_ms),
        Write::Barrier => Ok(()),
    }
}
