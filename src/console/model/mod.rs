//! The console's picture of the daemon: built from a snapshot (when the daemon sends one) and
//! kept current by activity events. Pure data, no I/O.
//!
//! Idempotency: the daemon starts the event stream exactly where its snapshot ends, except on a
//! saturated bus where a few events may repeat; so every event is applied, and a repeat changes
//! nothing: requests are recognised by id, orders by id and status, keys take the absolute
//! values events carry, and a rate-limit hit or refusal stamped no later than the snapshot is
//! recognised by its key and time. Without a snapshot (an older daemon) the keys come from
//! `keys_list`, and key changes stamped before that answer are taken as already in it.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::activity::ActivityEvent;
use crate::activity::protocol::{
    InFlightView, KeyView, OrderView, RateLimitHits, Snapshot, Totals, UpstreamHealth,
};
use crate::keys::KeyStatus;
use crate::money::Usd;
use crate::store::orders::OrderStatus;

mod requests;

pub use requests::FinishedRow;

/// Finished requests kept for the Live view.
pub(crate) const FINISHED_KEPT: usize = 200;
/// Request ids remembered to ignore a repeated `request_finished`.
pub(crate) const SEEN_KEPT: usize = 10_000;
/// Orders kept for the Orders view.
const ORDERS_KEPT: usize = 500;
/// Refusals kept for the Limits view.
const REFUSALS_KEPT: usize = 500;
/// One hour, the window of the Limits view.
pub const HOUR_MS: i64 = 3_600_000;
/// The window requests/s is computed over.
pub(crate) const RATE_WINDOW_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// A 402/403 refusal, for the Limits view.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Key id, when known.
    pub key_id: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// Error code.
    pub code: String,
    /// Unix ms.
    pub at_ms: i64,
}

/// Everything the console knows about the daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Daemon version (snapshot or `ping`).
    pub version: Option<String>,
    /// Uptime in seconds at a unix ms, from the snapshot.
    pub uptime_at: Option<(u64, i64)>,
    /// Requests in flight, oldest first.
    pub in_flight: Vec<InFlightView>,
    /// Finished requests, newest first.
    pub finished: VecDeque<FinishedRow>,
    /// When requests finished (unix ms, oldest first), for requests/s.
    finished_times: VecDeque<i64>,
    /// Finished request ids already counted, oldest first (bounded).
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
    /// Keys by id.
    pub keys: BTreeMap<String, KeyView>,
    /// Orders, newest first.
    pub orders: Vec<OrderView>,
    /// Rate-limit hits in the last hour, by key id.
    pub rate_limited: BTreeMap<String, RateLimitHits>,
    /// Refusals in the last hour, newest first.
    pub refusals: VecDeque<Refusal>,
    /// Today's totals (UTC day).
    pub today: Totals,
    /// The UTC day (days since the epoch) `today` counts.
    today_day: i64,
    /// Upstream health.
    pub upstream: UpstreamHealth,
    /// When the current snapshot was taken: events up to then are already in it.
    pub baseline_ms: i64,
    /// When the keys were last read whole (snapshot or `keys_list`): key changes up to then
    /// are already in them.
    keys_baseline_ms: i64,
    /// A snapshot arrived on the current connection.
    pub has_snapshot: bool,
    /// Orders whose payment was added to today's revenue since the snapshot.
    revenue_counted: HashSet<String>,
}

/// The fields of an `order_paid` event.
struct PaidOrder {
    order_id: String,
    plan: String,
    amount_usd: Usd,
    key_id: String,
    at_ms: i64,
}

fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Model {
    /// Replace everything with a snapshot (on connect, and after the daemon reported lag).
    pub fn apply_snapshot(&mut self, s: Snapshot) {
        let mut m = Model {
            version: Some(s.version),
            uptime_at: Some((s.uptime_secs, s.at_ms)),
            in_flight: s.in_flight,
            keys: s.keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            orders: s.orders,
            rate_limited: s
                .rate_limited
                .into_iter()
                .map(|r| (r.key_id.clone(), r))
                .collect(),
            today: s.today,
            today_day: day_of(s.at_ms),
            upstream: s.upstream,
            baseline_ms: s.at_ms,
            keys_baseline_ms: s.at_ms,
            has_snapshot: true,
            ..Model::default()
        };
        for e in s.finished {
            m.record_finished(&e);
        }
        for e in s.refusals {
            if let ActivityEvent::Refused {
                key_id,
                status,
                code,
                at_ms,
            } = e
            {
                m.refusals.push_front(Refusal {
                    key_id,
                    status,
                    code,
                    at_ms,
                });
            }
        }
        m.refusals.truncate(REFUSALS_KEPT);
        *self = m;
    }

    /// The connection was lost: requests in flight will never be reported finished on it.
    pub fn connection_lost(&mut self) {
        self.in_flight.clear();
        self.has_snapshot = false;
    }

    /// Keys from `keys_list`, the baseline when the daemon sends no snapshot (a snapshot wins).
    pub fn apply_keys_list(&mut self, keys: Vec<KeyView>, now_ms: i64) {
        if self.has_snapshot {
            return;
        }
        self.keys = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        self.keys_baseline_ms = self.keys_baseline_ms.max(now_ms);
    }

    /// Orders from `orders_list`, the baseline when the daemon sends no snapshot.
    pub fn apply_orders_list(&mut self, orders: Vec<OrderView>) {
        if !self.has_snapshot {
            self.orders = orders;
        }
    }

    /// A key as a command answered it (revoke, top-up, create): the daemon's word is newest.
    pub fn upsert_key(&mut self, key: KeyView) {
        self.keys.insert(key.id.clone(), key);
    }

    /// Apply one event; applying an event already reflected changes nothing.
    pub fn apply_event(&mut self, e: ActivityEvent) {
        let at = event_ms(&e);
        if let Some(at) = at {
            self.roll_day(at);
        }
        // Without a snapshot, key changes up to the last `keys_list` are already in the keys.
        let key_news = self.has_snapshot || at.is_none_or(|at| at > self.keys_baseline_ms);
        // Only something the snapshot reflects can repeat, and it is stamped no later than it.
        let may_repeat = self.has_snapshot && at.is_some_and(|at| at <= self.baseline_ms);
        match e {
            ActivityEvent::RequestStarted {
                request_id,
                key_id,
                key_prefix,
                plan,
                model,
                stream,
                client_ip,
                at_ms,
            } => {
                let known = self.seen_set.contains(&request_id)
                    || self.in_flight.iter().any(|r| r.request_id == request_id);
                if !known {
                    self.in_flight.push(InFlightView {
                        request_id,
                        key_id,
                        key_prefix,
                        plan,
                        model,
                        stream,
                        client_ip,
                        started_ms: at_ms,
                        output_tokens: 0,
                    });
                }
            }
            ActivityEvent::RequestProgress {
                request_id,
                output_tokens,
                ..
            } => {
                if let Some(r) = self
                    .in_flight
                    .iter_mut()
                    .find(|r| r.request_id == request_id)
                {
                    r.output_tokens = r.output_tokens.max(output_tokens);
                }
            }
            ActivityEvent::RequestFinished { .. } => self.finish(&e, key_news),
            ActivityEvent::RateLimited {
                key_id,
                key_prefix,
                limit,
                at_ms,
            } => {
                let hits =
                    self.rate_limited
                        .entry(key_id.clone())
                        .or_insert_with(|| RateLimitHits {
                            key_id,
                            key_prefix,
                            limit,
                            hits_ms: Vec::new(),
                        });
                hits.limit = limit;
                if !(may_repeat && hits.hits_ms.contains(&at_ms)) {
                    hits.hits_ms.push(at_ms);
                }
            }
            // The Limits view lists the refusals for money and plan (402, 403).
            ActivityEvent::Refused {
                key_id,
                status: status @ (402 | 403),
                code,
                at_ms,
            } => {
                let refusal = Refusal {
                    key_id,
                    status,
                    code,
                    at_ms,
                };
                if !(may_repeat && self.refusals.contains(&refusal)) {
                    self.refusals.push_front(refusal);
                    self.refusals.truncate(REFUSALS_KEPT);
                }
            }
            ActivityEvent::Refused { .. } => {}
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
                    k.remaining_usd = budget_usd.saturating_sub(k.spent_usd);
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
            } => {
                if !self.orders.iter().any(|o| o.order_id == order_id) {
                    self.orders.insert(
                        0,
                        OrderView {
                            order_id,
                            status: OrderStatus::Created,
                            plan,
                            amount_usd,
                            email,
                            key_id: None,
                            paypal_order_id: None,
                            paypal_capture_id: None,
                            created_at: rfc3339(at_ms),
                            paid_at: None,
                        },
                    );
                    self.orders.truncate(ORDERS_KEPT);
                }
            }
            ActivityEvent::OrderPaid {
                order_id,
                plan,
                amount_usd,
                key_id,
                at_ms,
            } => {
                let paid = PaidOrder {
                    order_id,
                    plan,
                    amount_usd,
                    key_id,
                    at_ms,
                };
                self.order_paid(paid, may_repeat);
            }
            ActivityEvent::OrderRefunded {
                order_id, key_id, ..
            } => {
                if let Some(o) = self.orders.iter_mut().find(|o| o.order_id == order_id) {
                    o.status = OrderStatus::Refunded;
                }
                if let Some(k) = key_id {
                    self.revoke(&k);
                }
            }
        }
    }

    fn revoke(&mut self, key_id: &str) {
        if let Some(k) = self.keys.get_mut(key_id) {
            k.status = KeyStatus::Revoked;
        }
    }

    /// An order was paid: its row, and today's revenue (counted once per order; a repeat of an
    /// event the snapshot reflects is recognised by the order already being paid).
    fn order_paid(&mut self, paid: PaidOrder, may_repeat: bool) {
        let PaidOrder {
            order_id,
            plan,
            amount_usd,
            key_id,
            at_ms,
        } = paid;
        let paid_at = Some(rfc3339(at_ms));
        let mut already_paid = false;
        match self.orders.iter_mut().find(|o| o.order_id == order_id) {
            Some(o) if matches!(o.status, OrderStatus::Paid | OrderStatus::Refunded) => {
                already_paid = true;
            }
            Some(o) => {
                o.status = OrderStatus::Paid;
                o.key_id = Some(key_id);
                o.paid_at = paid_at;
            }
            None => {
                let row = OrderView {
                    order_id: order_id.clone(),
                    status: OrderStatus::Paid,
                    plan,
                    amount_usd,
                    email: String::new(),
                    key_id: Some(key_id),
                    paypal_order_id: None,
                    paypal_capture_id: None,
                    created_at: rfc3339(at_ms),
                    paid_at,
                };
                self.orders.insert(0, row);
                self.orders.truncate(ORDERS_KEPT);
            }
        }
        // The orders list is read after the snapshot's totals, so "already paid" there only
        // means "counted" for an event that may be a repeat.
        let counted = (may_repeat && already_paid) || !self.revenue_counted.insert(order_id);
        if !counted {
            self.today.revenue_usd = self.today.revenue_usd.saturating_add(amount_usd);
        }
    }

    /// Today's totals restart at UTC midnight.
    fn roll_day(&mut self, now_ms: i64) {
        let day = day_of(now_ms);
        if day > self.today_day {
            self.today = Totals::default();
            self.revenue_counted.clear();
            self.today_day = day;
        }
    }

    /// The clock moved: forget what fell out of the windows, roll the day.
    pub fn tick(&mut self, now_ms: i64) {
        self.roll_day(now_ms);
        while self
            .finished_times
            .front()
            .is_some_and(|t| *t <= now_ms - RATE_WINDOW_MS)
        {
            self.finished_times.pop_front();
        }
        for hits in self.rate_limited.values_mut() {
            hits.hits_ms.retain(|t| *t > now_ms - HOUR_MS);
        }
        self.rate_limited.retain(|_, h| !h.hits_ms.is_empty());
        while self
            .refusals
            .back()
            .is_some_and(|r| r.at_ms <= now_ms - HOUR_MS)
        {
            self.refusals.pop_back();
        }
    }

    /// The daemon's uptime now, when a snapshot told it.
    pub fn uptime_secs(&self, now_ms: i64) -> Option<u64> {
        self.uptime_at
            .map(|(secs, at)| secs + (now_ms - at).max(0) as u64 / 1000)
    }

    /// A key's display prefix, falling back to its id.
    pub fn key_label(&self, key_id: &str) -> String {
        self.keys
            .get(key_id)
            .map(|k| k.prefix.clone())
            .or_else(|| self.rate_limited.get(key_id).map(|r| r.key_prefix.clone()))
            .unwrap_or_else(|| key_id.to_string())
    }
}

/// The unix ms an event is stamped with (a new key has no stamp: applying it twice is harmless,
/// as it is inserted only if absent).
pub fn event_ms(e: &ActivityEvent) -> Option<i64> {
    Some(match e {
        ActivityEvent::RequestStarted { at_ms, .. }
        | ActivityEvent::RequestProgress { at_ms, .. }
        | ActivityEvent::RequestFinished { at_ms, .. }
        | ActivityEvent::RateLimited { at_ms, .. }
        | ActivityEvent::Refused { at_ms, .. }
        | ActivityEvent::KeyExhausted { at_ms, .. }
        | ActivityEvent::KeyRevoked { at_ms, .. }
        | ActivityEvent::OrderCreated { at_ms, .. }
        | ActivityEvent::OrderPaid { at_ms, .. }
        | ActivityEvent::OrderRefunded { at_ms, .. }
        | ActivityEvent::KeyToppedUp { at_ms, .. } => *at_ms,
        ActivityEvent::KeyCreated { .. } => return None,
    })
}
