//! Keys, orders and the outbox in the model: what key, order and mail events change in the
//! lists the console got whole (from a snapshot, or `keys_list`, `orders_list`, `mail_list`).

use super::{Model, rfc3339};
use crate::activity::protocol::{ActivityEvent, MailView, OrderView};
use crate::kinds::OrderKind;
use crate::money::Usd;
use crate::status::{KeyStatus, OrderStatus};

/// Orders kept for the Orders view.
const ORDERS_KEPT: usize = 500;
/// Messages of the outbox kept for the Orders view.
const MAIL_KEPT: usize = 200;

impl Model {
    /// What an event changes in the keys and orders (`order_paid` excepted: see
    /// [`Model::order_paid`]). `key_news`: the keys do not reflect the event yet.
    pub(super) fn apply_to_records(&mut self, e: ActivityEvent, key_news: bool) {
        match e {
            ActivityEvent::KeyCreated { key } => {
                self.keys.entry(key.id.clone()).or_insert(key);
            }
            ActivityEvent::KeyExhausted { key_id, .. } => {
                if let Some(k) = self.keys.get_mut(&key_id)
                    && key_news
                    && k.status == KeyStatus::Active
                {
                    k.status = KeyStatus::Exhausted;
                }
            }
            ActivityEvent::KeyRevoked { key_id, .. } => self.revoke(&key_id),
            ActivityEvent::KeyToppedUp {
                key_id, budget_usd, ..
            } => {
                if let Some(k) = self.keys.get_mut(&key_id).filter(|_| key_news) {
                    k.budget_usd = budget_usd;
                    crate::activity::views::recount_remaining(k);
                    if k.status == KeyStatus::Exhausted {
                        k.status = KeyStatus::Active;
                    }
                }
            }
            ActivityEvent::OrderCreated {
                order_id,
                plan,
                amount_usd,
                email,
                at_ms,
                order_kind,
                key_id,
            } if !self.orders.iter().any(|o| o.order_id == order_id) => {
                let topped_up = (order_kind == OrderKind::TopUp).then_some(key_id).flatten();
                let row = OrderView {
                    order_id,
                    status: OrderStatus::Created,
                    plan,
                    amount_usd,
                    email,
                    key_id: topped_up.clone(),
                    paypal_order_id: None,
                    paypal_app: None,
                    paypal_capture_id: None,
                    created_at: rfc3339(at_ms),
                    paid_at: None,
                    kind: order_kind,
                    topped_up_key_id: topped_up,
                    refunded_usd: Usd::ZERO,
                };
                self.orders.insert(0, row);
                self.orders.truncate(ORDERS_KEPT);
            }
            ActivityEvent::OrderRefunded {
                order_id, key_id, ..
            } => {
                if let Some(o) = self.orders.iter_mut().find(|o| o.order_id == order_id) {
                    o.status = OrderStatus::Refunded;
                    o.refunded_usd = o.amount_usd;
                }
                if let Some(k) = key_id {
                    self.revoke(&k);
                }
            }
            // The key's view when the event was sent (a plan upgrade, a new prefix, a refund).
            ActivityEvent::KeyUpdated { key, .. } => {
                self.keys.insert(key.id.clone(), key);
            }
            ActivityEvent::MailChanged { mail, .. } => self.upsert_mail(mail),
            ActivityEvent::OrderChanged { order, .. } => {
                match self
                    .orders
                    .iter_mut()
                    .find(|o| o.order_id == order.order_id)
                {
                    Some(o) => *o = order,
                    None => {
                        self.orders.insert(0, order);
                        self.orders.truncate(ORDERS_KEPT);
                    }
                }
            }
            _ => {}
        }
    }

    /// A message as the daemon reports it now.
    pub fn upsert_mail(&mut self, mail: MailView) {
        match self.mail.iter_mut().find(|m| m.id == mail.id) {
            Some(m) => *m = mail,
            None => {
                let at = self.mail.partition_point(|m| m.id > mail.id);
                self.mail.insert(at, mail);
                self.mail.truncate(MAIL_KEPT);
            }
        }
    }

    fn revoke(&mut self, key_id: &str) {
        if let Some(k) = self.keys.get_mut(key_id) {
            k.status = KeyStatus::Revoked;
            crate::activity::views::recount_remaining(k);
        }
    }

    /// An `order_paid`: its order's row. Returns whether the order was already paid (or
    /// refunded since), which tells a repeat of an event the snapshot reflects; today's
    /// revenue is the fold's.
    pub(super) fn order_paid(&mut self, e: &ActivityEvent) -> bool {
        let ActivityEvent::OrderPaid {
            order_id,
            plan,
            amount_usd,
            key_id,
            at_ms,
        } = e
        else {
            return false;
        };
        let paid_at = Some(rfc3339(*at_ms));
        match self.orders.iter_mut().find(|o| &o.order_id == order_id) {
            Some(o) if matches!(o.status, OrderStatus::Paid | OrderStatus::Refunded) => {
                return true;
            }
            Some(o) => {
                o.status = OrderStatus::Paid;
                o.key_id = Some(key_id.clone());
                o.paid_at = paid_at;
            }
            None => {
                let row = OrderView {
                    order_id: order_id.clone(),
                    status: OrderStatus::Paid,
                    plan: plan.clone(),
                    amount_usd: *amount_usd,
                    email: String::new(),
                    key_id: Some(key_id.clone()),
                    paypal_order_id: None,
                    paypal_app: None,
                    paypal_capture_id: None,
                    created_at: rfc3339(*at_ms),
                    paid_at,
                    kind: OrderKind::Purchase,
                    topped_up_key_id: None,
                    refunded_usd: Usd::ZERO,
                };
                self.orders.insert(0, row);
                self.orders.truncate(ORDERS_KEPT);
            }
        }
        false
    }
}
