//! The changes the writer applies ([`Write`]), and how each one is applied in a transaction.

use super::error::StoreError;
use super::{accounts, keys, mail, orders, usage};
use crate::keys::{KeyRecord, KeyStatus};
use crate::kinds::MailKind;
use crate::money::Usd;
use orders::{Grant, OrderExtra};
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
    /// An exhausted key whose balance pays for a request again (a charge undone, a cheaper
    /// plan after a refund) is active, on disk too.
    Reactivate {
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
        /// Which PayPal made it ([`crate::config::PaypalConfig::app`]).
        paypal_app: String,
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
    /// A completed capture that cannot be given (it does not match the order, or a top-up's
    /// key was revoked): the order held for review, with the capture's id.
    OrderReview {
        /// Ours.
        order_id: String,
        /// PayPal's capture id (the operator refunds by it).
        capture_id: String,
        /// When.
        at_ms: i64,
    },
    /// A refund of an order nothing was given for (held for review, or not recorded as paid
    /// yet): it becomes refunded with what PayPal gave back; one refunded so already has that
    /// raised to PayPal's running total.
    RefundUngiven {
        /// Ours.
        order_id: String,
        /// What PayPal reports given back of the capture in all, this refund included; the
        /// price when it cannot be read.
        refunded: Option<Usd>,
        /// PayPal's refund id: a refund already counted is not counted again.
        refund_id: Option<String>,
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
        /// An exhausted key is `active` again only if what it has left then is at least this
        /// (what one request of its plan needs).
        below: Usd,
        /// When.
        at_ms: i64,
    },
    /// Changes nothing: its acknowledgement says that every write queued before it is
    /// committed (the activity tracker waits on one before reading the ledger).
    Barrier,
    /// A new order with its kind, top-up key and language.
    InsertOrderWith {
        /// The order.
        order: Box<orders::OrderRecord>,
        /// The rest.
        extra: OrderExtra,
    },
    /// Pay an order and grant what it buys (a key, or a top-up), atomically, with its receipt
    /// queued when `receipt` (see [`orders::pay`], [`orders::pay_top_up`]).
    Pay {
        /// Ours.
        order_id: String,
        /// PayPal's capture id.
        capture_id: String,
        /// What it buys.
        grant: Grant,
        /// Queue the receipt (email is configured).
        receipt: bool,
        /// When.
        at_ms: i64,
    },
    /// More of a refunded top-up taken back, from a hold its request did not spend
    /// ([`crate::keys::KeyState::take_or_owe`]).
    TakeBack {
        /// The refunded top-up.
        order_id: Option<String>,
        /// The key.
        key_id: String,
        /// Budget taken back.
        take: Usd,
        /// When.
        at_ms: i64,
    },
    /// Part of a paid order's price was refunded: `take` of its credit taken back, and the
    /// refund remembered by PayPal's id (as `refund:<id>` among the webhook events), atomically
    /// — the same refund again fails as a conflict.
    PartialRefund {
        /// PayPal's refund id.
        refund_id: String,
        /// What PayPal gave back (added to the order's refunded total).
        amount: Usd,
        /// The order.
        order_id: String,
        /// The key credited.
        key_id: String,
        /// Budget taken back (may be zero: requests in flight hold it all).
        take: Usd,
        /// When.
        at_ms: i64,
    },
    /// A paid order's credit was refunded (a top-up, or the purchase of a key that keeps paid
    /// top-ups): the order refunded and `take` taken back, atomically.
    RefundCredit {
        /// Ours.
        order_id: String,
        /// The key credited.
        key_id: String,
        /// Budget taken back.
        take: Usd,
        /// The plan the key goes back to (the top-up had upgraded it).
        restore_plan: Option<String>,
        /// When.
        at_ms: i64,
    },
    /// A key's text was replaced; its notice queued when `notify`.
    RotateKey {
        /// Which key.
        key_id: String,
        /// SHA-256 of the new text.
        hash: [u8; 32],
        /// The new text, sealed.
        sealed: Vec<u8>,
        /// Its display prefix.
        prefix: String,
        /// Queue the rotation notice (email is configured).
        notify: bool,
        /// The request that asked for it, as `shop::rotate::Recent` knows it (remembered so
        /// the same request sent again after a restart gets the same text).
        request: Option<[u8; 32]>,
        /// When.
        at_ms: i64,
    },
    /// A key crossed a notice threshold (low balance, exhausted): remembered for the crossing,
    /// the notice queued once when `queue`.
    KeyNotice {
        /// Which key.
        key_id: String,
        /// `low_balance` or `exhausted`.
        kind: MailKind,
        /// Queue the mail (email is configured).
        queue: bool,
        /// When.
        at_ms: i64,
    },
    /// The SMTP server accepted a message.
    MailSent {
        /// The message.
        id: i64,
        /// When.
        at_ms: i64,
    },
    /// An attempt to send a message failed.
    MailFailed {
        /// The message.
        id: i64,
        /// Why (for the operator).
        error: String,
        /// The next attempt.
        next_ms: i64,
        /// No more attempts.
        give_up: bool,
    },
    /// Queue a message again now (the operator's `mail retry`).
    MailRetry {
        /// The message.
        id: i64,
        /// When.
        at_ms: i64,
    },
    /// A key's owner opted out of its notices.
    OptOut {
        /// Which key.
        key_id: String,
        /// When.
        at_ms: i64,
    },
    /// A write that changes nothing a reader sees but does write to the database (its header's
    /// `user_version`, set to what it is): the writer's probe, while commits fail, of whether
    /// the database takes writes again.
    Probe,
    /// The operator took an upstream account out of service, or put it back.
    AccountDisabled {
        /// The account's name in the config.
        name: String,
        /// SHA-256 of its DeepSeek key, hex: the flag is for that key.
        key_sha256: String,
        /// Out of service (`true`) or back in.
        disabled: bool,
        /// When.
        at_ms: i64,
    },
    /// A charge was undone (its answer withheld): the key's notices re-armed as a top-up
    /// re-arms them, and those queued for a crossing that no longer holds dropped.
    Rearm {
        /// Which key.
        key_id: String,
    },
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
        Write::Reactivate { key_id, below } => keys::reactivate(tx, key_id, *below),
        Write::InsertOrder(o) => orders::insert(tx, o),
        Write::SetPaypalOrder {
            order_id,
            paypal_order_id,
            paypal_app,
        } => orders::set_paypal_order(tx, order_id, paypal_order_id, paypal_app),
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
        Write::OrderReview {
            order_id,
            capture_id,
            at_ms: _,
        } => orders::hold_for_review(tx, order_id, capture_id),
        Write::RefundUngiven {
            order_id,
            refunded,
            refund_id,
            at_ms,
        } => orders::refund_ungiven(tx, order_id, *refunded, refund_id.as_deref(), *at_ms),
        Write::WebhookSeen {
            event_id,
            event_type,
            at_ms,
        } => orders::record_webhook(tx, event_id, event_type, *at_ms),
        Write::TopUp {
            key_id,
            amount,
            below,
            at_ms,
        } => keys::top_up(tx, key_id, *amount, *below, *at_ms),
        Write::Barrier => Ok(()),
        Write::Probe => {
            let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            tx.execute_batch(&format!("PRAGMA user_version = {v}"))?;
            Ok(())
        }
        Write::AccountDisabled {
            name,
            key_sha256,
            disabled,
            at_ms,
        } => accounts::set_disabled(tx, name, key_sha256, *disabled, *at_ms),
        other => apply_self_service(tx, other),
    }
}

/// Apply one write of self-service (top-ups, rotation, notices, the outbox).
fn apply_self_service(tx: &rusqlite::Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::InsertOrderWith { order, extra } => orders::insert_with(tx, order, extra),
        Write::Pay {
            order_id,
            capture_id,
            grant,
            receipt,
            at_ms,
        } => {
            match grant {
                Grant::Key(key) => orders::pay(tx, order_id, capture_id, key, *at_ms)?,
                Grant::TopUp(g) => orders::pay_top_up(tx, order_id, capture_id, g, *at_ms)?,
            }
            if *receipt {
                mail::queue_receipt(tx, order_id, *at_ms)?;
            }
            Ok(())
        }
        Write::TakeBack {
            order_id,
            key_id,
            take,
            at_ms,
        } => orders::take_back(tx, order_id.as_deref(), key_id, *take, *at_ms),
        Write::PartialRefund {
            refund_id,
            amount,
            order_id,
            key_id,
            take,
            at_ms,
        } => orders::partial_refund(tx, (refund_id, *amount), order_id, key_id, *take, *at_ms),
        Write::RefundCredit {
            order_id,
            key_id,
            take,
            restore_plan,
            at_ms,
        } => orders::refund_credit(tx, order_id, key_id, *take, restore_plan.as_deref(), *at_ms),
        Write::RotateKey {
            key_id,
            hash,
            sealed,
            prefix,
            notify,
            request,
            at_ms,
        } => {
            let stamped = keys::rotate(tx, key_id, hash, sealed, prefix, *at_ms)?;
            if let Some(id) = request {
                keys::remember_rotation(tx, id, key_id, stamped)?;
            }
            if *notify {
                // A security notice: sent whatever the owner chose for balance notices.
                mail::queue_key_mail(tx, key_id, MailKind::Rotated, false, *at_ms)?;
            }
            Ok(())
        }
        Write::KeyNotice {
            key_id,
            kind,
            queue,
            at_ms,
        } => mail::key_notice(tx, key_id, *kind, *queue, *at_ms),
        Write::MailSent { id, at_ms } => mail::mark_sent(tx, *id, *at_ms),
        Write::MailFailed {
            id,
            error,
            next_ms,
            give_up,
        } => mail::mark_failed(tx, *id, error, *next_ms, *give_up),
        Write::MailRetry { id, at_ms } => mail::retry(tx, *id, *at_ms),
        Write::OptOut { key_id, at_ms } => mail::opt_out(tx, key_id, *at_ms),
        Write::Rearm { key_id } => mail::rearm(tx, key_id),
        // The writes of `apply` itself never reach here.
        _ => Err(StoreError::Conflict("not a self-service write".into())),
    }
}
