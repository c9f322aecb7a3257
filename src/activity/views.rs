//! The daemon's records as the wire shows them: live keys, stored orders and ledger rows turned
//! into [`protocol`](super::protocol) views. This is daemon-side code (it knows the key table
//! and the store); clients only ever see the views.

use chrono::{DateTime, SecondsFormat, Utc};

use super::protocol::{ActivityEvent, BudgetChange, KeyView, MailView, OrderView};
use crate::keys::KeyState;
use crate::store::UsageRow;
use crate::store::budget::BudgetEntry;
use crate::store::mail::OutboxRow;
use crate::store::orders::Order;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A view of a live key (never the full key).
pub fn key_view(k: &KeyState) -> KeyView {
    let b = k.balance();
    let mut view = KeyView {
        id: k.id.clone(),
        prefix: k.prefix(),
        plan: k.plan(),
        status: k.status(),
        budget_usd: b.budget,
        spent_usd: b.spent,
        // Set below by the one rule for it (a revoked key's is 0).
        remaining_usd: b.remaining(),
        held_usd: b.held,
        requests: k.requests(),
        email: k.email.clone(),
        note: k.note.clone(),
        order_id: k.order_id.clone(),
        created_at: rfc3339(k.created_at),
        last_used_at: k.last_used_at().map(rfc3339),
        budget_history: None,
    };
    recount_remaining(&mut view);
    view
}

/// Paid, with part of its price refunded (the order stays paid): the CLI's tables and the
/// console say so alike (`part-ref`).
pub fn partly_refunded(o: &OrderView) -> bool {
    o.status == crate::status::OrderStatus::Paid && o.refunded_usd > crate::money::Usd::ZERO
}

/// A key view's `remaining_usd` after its budget, spend or status changed: budget − spent, and
/// 0 for a revoked key — nothing of it can be used, as its owner's page and `/metrics`'
/// liability have it (`keys list --json` said budget − spent; found by an independent check).
pub fn recount_remaining(k: &mut KeyView) {
    k.remaining_usd = if k.status == crate::status::KeyStatus::Revoked {
        crate::money::Usd::ZERO
    } else {
        k.budget_usd.saturating_sub(k.spent_usd)
    };
}

/// A view of a live key with its budget history.
pub fn key_view_with_history(k: &KeyState, history: &[BudgetEntry]) -> KeyView {
    KeyView {
        budget_history: Some(history.iter().map(budget_change).collect()),
        ..key_view(k)
    }
}

/// One change of a key's budget as the wire shows it.
pub fn budget_change(e: &BudgetEntry) -> BudgetChange {
    BudgetChange {
        kind: e.kind,
        amount_usd: e.amount,
        order_id: e.order_id.clone(),
        at: rfc3339(e.at),
    }
}

/// A view of a stored order: for a top-up, `key_id` is the key it credits.
pub fn order_view(order: &Order) -> OrderView {
    let o = &order.record;
    OrderView {
        order_id: o.order_id.clone(),
        status: o.status,
        plan: o.plan.clone(),
        amount_usd: o.amount,
        email: o.email.clone(),
        key_id: order.key_id().map(str::to_string),
        paypal_order_id: o.paypal_order_id.clone(),
        paypal_app: o.paypal_app.clone(),
        paypal_capture_id: o.paypal_capture_id.clone(),
        created_at: rfc3339(o.created_at),
        paid_at: o.paid_at.map(rfc3339),
        kind: order.extra.kind,
        topped_up_key_id: order.extra.topup_key_id.clone(),
        refunded_usd: order.extra.refunded,
    }
}

/// A view of a message of the outbox.
pub fn mail_view(m: &OutboxRow) -> MailView {
    MailView {
        id: m.id,
        kind: m.kind,
        recipient: m.recipient.clone(),
        lang: m.lang,
        key_id: m.key_id.clone(),
        order_id: m.order_id.clone(),
        status: m.status,
        attempts: m.attempts,
        last_error: m.last_error.clone(),
        created_at: rfc3339(m.created_at),
        next_attempt_at: (m.status == crate::kinds::MailStatus::Queued)
            .then(|| rfc3339(m.next_attempt_at)),
        sent_at: m.sent_at.map(rfc3339),
    }
}

/// A ledger row as the `request_finished` event it was settled with.
pub fn finished_event(r: &UsageRow) -> ActivityEvent {
    ActivityEvent::RequestFinished {
        request_id: r.request_id.clone(),
        key_id: r.key_id.clone(),
        model: r.model.clone(),
        status: r.status,
        finish: r.finish,
        cost_usd: r.cost,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        measured: r.measured,
        latency_ms: r.latency_ms,
        ttft_ms: r.ttft_ms,
        api: r.api,
        account: r.account.clone(),
        at_ms: r
            .created_at_ms
            .saturating_add(i64::try_from(r.latency_ms).unwrap_or(0)),
    }
}
