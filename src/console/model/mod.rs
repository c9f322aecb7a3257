//! The console's picture of the daemon: built from a snapshot (when the daemon sends one) and
//! kept current by activity events. Pure data, no I/O.
//!
//! Requests in flight and finished, rate-limit hits, refusals, today's totals and upstream's
//! health are the daemon's own [`Fold`] under [`ConsoleRules`]; keys, orders, requests/s and
//! the upstream pool (read whole every few seconds, [`Pool`]) are the console's.
//!
//! Idempotency: the daemon starts the event stream exactly where its snapshot ends, except on a
//! saturated bus where a few events may repeat; so every event is applied, and a repeat changes
//! nothing: requests are recognised by id, orders by id and status, keys take the absolute
//! values events carry, and a rate-limit hit or refusal stamped no later than the snapshot is
//! recognised by its key and time. Without a snapshot (an older daemon) the keys come from
//! `keys_list`, and key changes stamped before that answer are taken as already in it.

use std::collections::{BTreeMap, VecDeque};

use crate::activity::fold::{Delivery, Fold, Hits, Rules, UpstreamRule};
use crate::activity::protocol::{
    ActivityEvent, InFlightView, KeyView, MailView, OrderView, Snapshot, Totals, UpstreamHealth,
};

mod records;
mod requests;
mod upstream;

pub use crate::activity::fold::{FinishedRow, HOUR_MS, Refusal};
pub use upstream::Pool;

/// Finished requests kept for the Live view.
pub(crate) const FINISHED_KEPT: usize = 200;
/// Request ids remembered to ignore a repeated `request_finished`.
pub(crate) const SEEN_KEPT: usize = 10_000;
/// The window requests/s is computed over.
pub(crate) const RATE_WINDOW_MS: i64 = 60_000;

/// The console's rules: it keeps more finished requests than the daemon sends in a snapshot
/// but the same rate-limit hits and refusals (the newest 1 000 a key, 200: a console attached
/// through a flood counted 5 055 hits of a key, one attached after it "1114+"; found by an
/// independent check), counts a request
/// toward the day it started and a payment toward the day it was made, as the ledger and the
/// daemon's snapshot do (it counted an event toward the day it arrived in, so a request
/// started before midnight and finished after moved to the new day, and left it again at a
/// reconnect; found by an independent check), and shows the last failure it heard of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleRules;

impl Rules for ConsoleRules {
    const FINISHED_KEPT: usize = FINISHED_KEPT;
    const IDS_KEPT: usize = SEEN_KEPT;
    const REFUSALS_KEPT: usize = crate::activity::tracker::REFUSALS_KEPT;
    const HITS_PER_KEY: usize = crate::activity::tracker::HITS_PER_KEY;
    const UPSTREAM: UpstreamRule = UpstreamRule::Received;
}

/// A unix ms as the daemon's RFC 3339 time stamps read (whole seconds, UTC).
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Everything the console knows about the daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Daemon version (snapshot or `ping`).
    pub version: Option<String>,
    /// Uptime in seconds at a unix ms, from the snapshot.
    pub uptime_at: Option<(u64, i64)>,
    /// Requests in flight and finished, rate-limit hits, refusals, today's totals, upstream.
    live: Fold<ConsoleRules>,
    /// When requests finished (unix ms, oldest first), for requests/s.
    finished_times: VecDeque<i64>,
    /// Since when `finished_times` holds every request that finished (unix ms): a snapshot
    /// carries only the latest [`crate::activity::tracker::FINISHED_KEPT`], so on a busy
    /// daemon what came before its oldest is unknown, not zero.
    rate_known_since: i64,
    /// Keys by id.
    pub keys: BTreeMap<String, KeyView>,
    /// Orders, newest first.
    pub orders: Vec<OrderView>,
    /// The outbox, newest first (from `mail_list`, kept current by `mail_changed`).
    pub mail: Vec<MailView>,
    /// The upstream pool (from `upstream_status`, read every few seconds).
    pub upstream_pool: Pool,
    /// When the current snapshot was taken: events up to then are already in it.
    pub baseline_ms: i64,
    /// When the keys were last read whole (snapshot or `keys_list`): key changes up to then
    /// are already in them.
    keys_baseline_ms: i64,
    /// A snapshot arrived on the current connection.
    pub has_snapshot: bool,
}

impl Model {
    /// Replace everything with a snapshot (on connect, and after the daemon reported lag).
    pub fn apply_snapshot(&mut self, s: Snapshot) {
        let live = Fold::from_snapshot(&s);
        let mut finished_times = VecDeque::new();
        for row in live.finished() {
            requests::note_time(&mut finished_times, row.at_ms);
        }
        let rate_known_since = if finished_times.len() >= crate::activity::tracker::FINISHED_KEPT {
            finished_times.front().copied().unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        *self = Model {
            version: Some(s.version),
            uptime_at: Some((s.uptime_secs, s.at_ms)),
            live,
            finished_times,
            rate_known_since,
            keys: s.keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            orders: s.orders,
            // The snapshot does not carry the outbox; `mail_list` answers keep it.
            mail: std::mem::take(&mut self.mail),
            // Nor the pool: its own reads keep it.
            upstream_pool: std::mem::take(&mut self.upstream_pool),
            baseline_ms: s.at_ms,
            keys_baseline_ms: s.at_ms,
            has_snapshot: true,
        };
    }

    /// The connection was lost: requests in flight will never be reported finished on it.
    pub fn connection_lost(&mut self) {
        self.live.retain_in_flight(|_| false);
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

    /// The outbox from `mail_list` (the daemon's word is newest).
    pub fn apply_mail_list(&mut self, mail: Vec<MailView>) {
        self.mail = mail;
    }

    /// A key as a command answered it (revoke, top-up, create): the daemon's word is newest.
    pub fn upsert_key(&mut self, key: KeyView) {
        self.keys.insert(key.id.clone(), key);
    }

    /// Apply one event; applying an event already reflected changes nothing.
    pub fn apply_event(&mut self, e: ActivityEvent) {
        let at = event_ms(&e);
        if let Some(at) = at {
            self.live.roll_to(at);
        }
        // Without a snapshot, key changes up to the last `keys_list` are already in the keys.
        let key_news = self.has_snapshot || at.is_none_or(|at| at > self.keys_baseline_ms);
        // Only something the snapshot reflects can repeat, and it is stamped no later than it.
        let may_repeat = self.has_snapshot && at.is_some_and(|at| at <= self.baseline_ms);
        let mut delivery = Delivery {
            may_repeat,
            count: true,
        };
        if let ActivityEvent::OrderPaid { .. } = &e {
            // The orders list is read after the snapshot's totals, so "already paid" there
            // only means "counted" for an event that may be a repeat.
            let already_paid = self.order_paid(&e);
            delivery.count = !(may_repeat && already_paid);
        }
        if let Some(row) = self.live.apply(&e, delivery) {
            requests::finished(row, &mut self.keys, &mut self.finished_times, key_news);
        }
        self.apply_to_records(e, key_news);
    }

    /// The clock moved: forget what fell out of the windows, roll the day.
    pub fn tick(&mut self, now_ms: i64) {
        self.live.expire(now_ms);
        while self
            .finished_times
            .front()
            .is_some_and(|t| *t <= now_ms - RATE_WINDOW_MS)
        {
            self.finished_times.pop_front();
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
            .or_else(|| {
                self.live
                    .rate_limited()
                    .get(key_id)
                    .map(|r| r.key_prefix.clone())
            })
            .unwrap_or_else(|| key_id.to_string())
    }

    /// Requests in flight, oldest first.
    pub fn in_flight(&self) -> Vec<&InFlightView> {
        self.live.in_flight()
    }

    /// How many requests are in flight.
    pub fn in_flight_count(&self) -> usize {
        self.live.in_flight_count()
    }

    /// Finished requests, newest first.
    pub fn finished(&self) -> &VecDeque<FinishedRow> {
        self.live.finished()
    }

    /// Rate-limit hits in the last hour, by key id.
    pub fn rate_limited(&self) -> &BTreeMap<String, Hits> {
        self.live.rate_limited()
    }

    /// Refusals in the last hour, newest first.
    pub fn refusals(&self) -> &VecDeque<Refusal> {
        self.live.refusals()
    }

    /// Whether refusals of the last hour fell out of [`Model::refusals`] (counts are a floor).
    pub fn refusals_pushed_out(&self) -> bool {
        self.live.refusals_pushed_out()
    }

    /// Today's totals (UTC day).
    pub fn today(&self) -> &Totals {
        self.live.today()
    }

    /// Upstream health.
    pub fn upstream(&self) -> &UpstreamHealth {
        self.live.upstream()
    }
}

/// The unix ms an event is stamped with (a new key has no stamp: applying it twice is harmless,
/// as it is inserted only if absent).
pub fn event_ms(e: &ActivityEvent) -> Option<i64> {
    Some(match e {
        ActivityEvent::RequestStarted { at_ms, .. }
        | ActivityEvent::RequestProgress { at_ms, .. }
        | ActivityEvent::RequestRouted { at_ms, .. }
        | ActivityEvent::AccountChanged { at_ms, .. }
        | ActivityEvent::RequestFinished { at_ms, .. }
        | ActivityEvent::RateLimited { at_ms, .. }
        | ActivityEvent::Refused { at_ms, .. }
        | ActivityEvent::KeyExhausted { at_ms, .. }
        | ActivityEvent::KeyRevoked { at_ms, .. }
        | ActivityEvent::OrderCreated { at_ms, .. }
        | ActivityEvent::OrderPaid { at_ms, .. }
        | ActivityEvent::OrderRefunded { at_ms, .. }
        | ActivityEvent::KeyToppedUp { at_ms, .. }
        | ActivityEvent::KeyUpdated { at_ms, .. }
        | ActivityEvent::MailChanged { at_ms, .. }
        | ActivityEvent::OrderChanged { at_ms, .. } => *at_ms,
        ActivityEvent::KeyCreated { .. } => return None,
    })
}
