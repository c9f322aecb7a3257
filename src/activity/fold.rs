//! One fold of activity events into a live view, shared by the daemon's tracker and the
//! console: requests in flight and their output so far, the latest finished requests (a repeat
//! recognised by request id), rate-limit hits per key, 402/403 refusals, today's totals with
//! the UTC-day roll, and upstream's health as finished requests tell it.
//!
//! Both sides apply the same events to the same state. Where they differ (how much they keep,
//! which day a request counts toward, how upstream's health reads) each says so through its
//! [`Rules`]; what only one side has stays with it: the tracker's reloads from the ledger and
//! its pruning of missed ends, the console's keys, orders and requests/s. Pure data: it knows
//! only the wire protocol, money and the shared status enums.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;

use foldhash::{HashMap as FastMap, HashSet as FastSet};

use super::protocol::{ActivityEvent, InFlightView, Snapshot, Totals, UpstreamHealth};
use crate::money::Usd;
use crate::status::Finish;

mod rows;

pub use rows::{FinishedRow, Hits, Refusal};

/// The window of rate-limit hits and refusals.
pub const HOUR_MS: i64 = 3_600_000;
/// A UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since the epoch) of a unix ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// How a finished request reads for upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRule {
    /// The daemon's: the failure stamped latest wins, and every report counts, repeats
    /// included (they restate the request).
    Latest,
    /// The console's: the failure received last wins; a repeat of a finished request changes
    /// nothing.
    Received,
}

impl UpstreamRule {
    /// What a failure is shown as, under either rule: its status, or `… mid-stream` for one
    /// after the 200 went out, which has no error status (the console named it with its 200,
    /// `upstream_error 200`, until a re-attach showed the daemon's `mid-stream`; found by an
    /// independent check).
    fn label(finish: Finish, status: u16) -> String {
        if status < 400 {
            format!("{} mid-stream", finish.as_str())
        } else {
            format!("{} {status}", finish.as_str())
        }
    }

    /// Whether a failure stamped `at_ms` replaces the one known (stamped `last_ms`).
    fn replaces(self, last_ms: Option<i64>, at_ms: i64) -> bool {
        match self {
            UpstreamRule::Latest => last_ms.is_none_or(|t| t <= at_ms),
            UpstreamRule::Received => true,
        }
    }
}

/// What one side keeps, and how it counts: a marker type per side.
pub trait Rules {
    /// Finished requests kept.
    const FINISHED_KEPT: usize;
    /// Finished request ids remembered to recognise a repeated `request_finished` (at least
    /// [`Rules::FINISHED_KEPT`]).
    const IDS_KEPT: usize;
    /// 402/403 refusals kept.
    const REFUSALS_KEPT: usize;
    /// Rate-limit hits kept per key.
    const HITS_PER_KEY: usize;
    /// How upstream's health reads.
    const UPSTREAM: UpstreamRule;
}

/// What the caller knows about an event it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The event may be one the state already reflects (it is stamped no later than the
    /// snapshot the state started from): a rate-limit hit or a refusal already held is then
    /// taken for that one rather than added again.
    pub may_repeat: bool,
    /// Whether it may add to today's totals (false: the caller knows they hold it already).
    pub count: bool,
}

impl Delivery {
    /// An event the state cannot reflect yet.
    pub const FRESH: Delivery = Delivery {
        may_repeat: false,
        count: true,
    };
}

/// Request ids, the oldest forgotten first past a bound.
#[derive(Debug, Clone, Default, PartialEq)]
struct Ids {
    order: VecDeque<String>,
    set: FastSet<String>,
}

impl Ids {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remember `id`; false if it was already remembered.
    fn insert(&mut self, id: &str, kept: usize) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > kept
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    fn clear(&mut self) {
        self.order.clear();
        self.set.clear();
    }
}

/// The live view, folded event by event under the rules `R`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold<R> {
    /// By request id.
    in_flight: FastMap<String, InFlightView>,
    /// Newest first.
    finished: VecDeque<FinishedRow>,
    /// Finished request ids already applied.
    seen: Ids,
    /// By key id.
    rate_limited: BTreeMap<String, Hits>,
    /// Newest first.
    refusals: VecDeque<Refusal>,
    /// The newest refusal of the last hour pushed out of `refusals` by newer ones.
    refusals_pushed_out_ms: Option<i64>,
    /// The UTC day `today` counts.
    day: i64,
    today: Totals,
    /// Orders counted in today's revenue.
    paid_today: FastSet<String>,
    upstream: UpstreamHealth,
    rules: PhantomData<R>,
}

impl<R> Default for Fold<R> {
    fn default() -> Self {
        Fold {
            in_flight: FastMap::default(),
            finished: VecDeque::new(),
            seen: Ids::default(),
            rate_limited: BTreeMap::new(),
            refusals: VecDeque::new(),
            refusals_pushed_out_ms: None,
            day: 0,
            today: Totals::default(),
            paid_today: FastSet::default(),
            upstream: UpstreamHealth::default(),
            rules: PhantomData,
        }
    }
}

impl<R: Rules> Fold<R> {
    /// The state a snapshot describes (its keys, orders, version and uptime are the caller's).
    /// A finished request's key prefix comes from its entry in flight, else from the
    /// snapshot's keys.
    pub fn from_snapshot(s: &Snapshot) -> Fold<R> {
        let mut f = Fold {
            in_flight: s
                .in_flight
                .iter()
                .map(|r| (r.request_id.clone(), r.clone()))
                .collect(),
            rate_limited: s.rate_limited.iter().map(Hits::of).collect(),
            refusals_pushed_out_ms: s.refusals_pushed_out_ms,
            day: day_of(s.at_ms),
            today: s.today.clone(),
            upstream: s.upstream.clone(),
            ..Fold::default()
        };
        let prefixes: HashMap<&str, &str> = s
            .keys
            .iter()
            .map(|k| (k.id.as_str(), k.prefix.as_str()))
            .collect();
        for e in &s.finished {
            if let ActivityEvent::RequestFinished {
                request_id, key_id, ..
            } = e
            {
                let prefix = f
                    .end(request_id)
                    .map(|r| r.key_prefix)
                    .or_else(|| prefixes.get(key_id.as_str()).map(|p| p.to_string()));
                if let Some(row) = FinishedRow::of(e, prefix) {
                    f.push_finished(row);
                }
            }
        }
        for e in &s.refusals {
            if let Some(r) = Refusal::of(e) {
                f.refusals.push_front(r);
            }
        }
        f.keep_refusals();
        f
    }

    /// The tracked parts of a snapshot: requests in flight oldest first, finished requests
    /// and refusals newest last, hits by key id (version, uptime, time, keys and orders are
    /// the caller's).
    pub fn snapshot(&self) -> Snapshot {
        let rate_limited = self
            .rate_limited
            .iter()
            .map(|(key_id, h)| h.view(key_id))
            .collect();
        Snapshot {
            in_flight: self.in_flight().into_iter().cloned().collect(),
            finished: self
                .finished
                .iter()
                .rev()
                .map(FinishedRow::to_event)
                .collect(),
            rate_limited,
            refusals: self.refusals.iter().rev().map(Refusal::to_event).collect(),
            refusals_pushed_out_ms: self.refusals_pushed_out_ms,
            today: self.today.clone(),
            upstream: self.upstream.clone(),
            ..Snapshot::default()
        }
    }

    /// Requests in flight, oldest first (by start, then id).
    pub fn in_flight(&self) -> Vec<&InFlightView> {
        let mut v: Vec<&InFlightView> = self.in_flight.values().collect();
        v.sort_by(|a, b| (a.started_ms, &a.request_id).cmp(&(b.started_ms, &b.request_id)));
        v
    }

    /// How many requests are in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Finished requests, newest first.
    pub fn finished(&self) -> &VecDeque<FinishedRow> {
        &self.finished
    }

    /// Rate-limit hits by key id.
    pub fn rate_limited(&self) -> &BTreeMap<String, Hits> {
        &self.rate_limited
    }

    /// 402/403 refusals, newest first.
    pub fn refusals(&self) -> &VecDeque<Refusal> {
        &self.refusals
    }

    /// Whether refusals of the last hour were pushed out of [`Fold::refusals`] by newer ones
    /// (its counts are then a floor).
    pub fn refusals_pushed_out(&self) -> bool {
        self.refusals_pushed_out_ms.is_some()
    }

    /// Today's totals.
    pub fn today(&self) -> &Totals {
        &self.today
    }

    /// Upstream's health.
    pub fn upstream(&self) -> &UpstreamHealth {
        &self.upstream
    }

    /// Apply one event; returns the row it added when it is a `request_finished` not applied
    /// before (for the caller's own bookkeeping: key balances, requests/s).
    pub fn apply(&mut self, e: &ActivityEvent, d: Delivery) -> Option<&mut FinishedRow> {
        match e {
            ActivityEvent::RequestStarted { .. } => self.start(e),
            ActivityEvent::RequestProgress {
                request_id,
                output_tokens,
                ..
            } => {
                if let Some(r) = self.in_flight.get_mut(request_id) {
                    r.output_tokens = r.output_tokens.max(*output_tokens);
                }
            }
            ActivityEvent::RequestRouted {
                request_id,
                account,
                ..
            } => {
                if let Some(r) = self.in_flight.get_mut(request_id) {
                    r.account.clone_from(account);
                }
            }
            ActivityEvent::RequestFinished { .. } => return self.finish(e, d),
            ActivityEvent::RateLimited {
                key_id,
                key_prefix,
                limit,
                at_ms,
            } => self.hit(key_id, key_prefix, *limit, *at_ms, d.may_repeat),
            // Only the refusals for money and plan are shown.
            ActivityEvent::Refused {
                // 429 here is `budget_held` or `too_many_in_flight` (a rate-limit hit is its own
                // event).
                status: 402 | 403 | 429,
                ..
            } => self.refuse(e, d.may_repeat),
            ActivityEvent::OrderPaid {
                order_id,
                amount_usd,
                at_ms,
                ..
            } if d.count => self.count_payment(order_id, *amount_usd, *at_ms),
            _ => {}
        }
        None
    }

    fn start(&mut self, e: &ActivityEvent) {
        let ActivityEvent::RequestStarted {
            request_id,
            key_id,
            key_prefix,
            plan,
            model,
            stream,
            client_ip,
            api,
            at_ms,
        } = e
        else {
            return;
        };
        if self.seen.contains(request_id) || self.in_flight.contains_key(request_id) {
            return;
        }
        let view = InFlightView {
            request_id: request_id.clone(),
            key_id: key_id.clone(),
            key_prefix: key_prefix.clone(),
            plan: plan.clone(),
            model: model.clone(),
            stream: *stream,
            client_ip: client_ip.clone(),
            api: *api,
            account: String::new(),
            started_ms: *at_ms,
            output_tokens: 0,
        };
        self.in_flight.insert(request_id.clone(), view);
    }

    /// A `request_finished`: out of flight, upstream's health, today's totals, the list.
    fn finish(&mut self, e: &ActivityEvent, d: Delivery) -> Option<&mut FinishedRow> {
        let ActivityEvent::RequestFinished {
            request_id,
            cost_usd,
            latency_ms,
            at_ms,
            ..
        } = e
        else {
            return None;
        };
        let flight = self.end(request_id);
        let new = !self.seen.contains(request_id);
        if new || R::UPSTREAM == UpstreamRule::Latest {
            self.note_upstream(e);
        }
        if !new {
            return None;
        }
        if d.count {
            self.count_request(*cost_usd, *at_ms, *latency_ms);
        }
        let row = FinishedRow::of(e, flight.map(|r| r.key_prefix))?;
        self.push_finished(row)
    }

    fn hit(&mut self, key_id: &str, key_prefix: &str, limit: u32, at_ms: i64, may_repeat: bool) {
        let hits = self
            .rate_limited
            .entry(key_id.to_string())
            .or_insert_with(|| Hits {
                key_prefix: key_prefix.to_string(),
                limit,
                hits_ms: VecDeque::new(),
                pushed_out_ms: None,
            });
        hits.limit = limit;
        if may_repeat && hits.hits_ms.contains(&at_ms) {
            return;
        }
        hits.hits_ms.push_back(at_ms);
        // A client hammering a 429 only pushes the oldest hits out of view.
        // A client hammering a 429 only pushes the oldest hits out of view; the newest one
        // pushed out is kept so that the view says its count is a floor.
        while hits.hits_ms.len() > R::HITS_PER_KEY {
            let out = hits.hits_ms.pop_front();
            hits.pushed_out_ms = hits.pushed_out_ms.max(out);
        }
    }

    fn refuse(&mut self, e: &ActivityEvent, may_repeat: bool) {
        let Some(refusal) = Refusal::of(e) else {
            return;
        };
        if may_repeat && self.refusals.contains(&refusal) {
            return;
        }
        self.refusals.push_front(refusal);
        self.keep_refusals();
    }

    /// Cut the refusals to the newest [`Rules::REFUSALS_KEPT`], remembering the newest one
    /// cut so that the view says its counts are a floor.
    fn keep_refusals(&mut self) {
        while self.refusals.len() > R::REFUSALS_KEPT {
            let out = self.refusals.pop_back().map(|r| r.at_ms);
            self.refusals_pushed_out_ms = self.refusals_pushed_out_ms.max(out);
        }
    }

    /// Start a new day's totals when `day` is later than the one counted.
    fn roll(&mut self, day: i64) {
        if day > self.day {
            self.day = day;
            self.today = Totals::default();
            self.paid_today.clear();
        }
    }

    /// Start a new day's totals when `ms` falls on a later UTC day than the one counted.
    pub fn roll_to(&mut self, ms: i64) {
        self.roll(day_of(ms));
    }

    /// Whether something of `day` counts today (rolling to it first), as the ledger counts it:
    /// a request toward the UTC day it started, a payment toward the day it was made, and
    /// either only while that day is today — under every rule, so the daemon's totals match
    /// the ledger's after a reload and a console's match the daemon's (a console counted an
    /// event toward the day it arrived in; found by an independent check).
    fn counts_on(&mut self, day: i64) -> bool {
        self.roll(day);
        day == self.day
    }

    fn count_request(&mut self, cost: Usd, at_ms: i64, latency_ms: u64) {
        let started = at_ms.saturating_sub(i64::try_from(latency_ms).unwrap_or(0));
        if self.counts_on(day_of(started)) {
            self.today.requests += 1;
            self.today.spend_usd = self.today.spend_usd.saturating_add(cost);
        }
    }

    /// An order's payment counts once a day, however many times it is reported.
    fn count_payment(&mut self, order_id: &str, amount: Usd, at_ms: i64) {
        if self.counts_on(day_of(at_ms)) && self.paid_today.insert(order_id.to_string()) {
            self.today.revenue_usd = self.today.revenue_usd.saturating_add(amount);
        }
    }

    /// Upstream's health from a finished request: its failures, and the latency of the latest
    /// complete one.
    pub fn note_upstream(&mut self, e: &ActivityEvent) {
        let ActivityEvent::RequestFinished {
            finish,
            status,
            latency_ms,
            at_ms,
            ..
        } = e
        else {
            return;
        };
        match finish {
            Finish::UpstreamError | Finish::UpstreamTimeout
                if R::UPSTREAM.replaces(self.upstream.last_error_ms, *at_ms) =>
            {
                self.upstream.last_error = Some(UpstreamRule::label(*finish, *status));
                self.upstream.last_error_ms = Some(*at_ms);
            }
            Finish::Complete => self.upstream.last_latency_ms = Some(*latency_ms),
            _ => {}
        }
    }

    /// Add a finished request to the list (nothing else), unless its id was seen; returns
    /// the row added.
    pub fn push_finished(&mut self, row: FinishedRow) -> Option<&mut FinishedRow> {
        if !self.seen.insert(&row.request_id, R::IDS_KEPT) {
            return None;
        }
        self.finished.push_front(row);
        self.finished.truncate(R::FINISHED_KEPT);
        self.finished.front_mut()
    }

    /// Forget the finished list and the ids seen (before loading another).
    pub fn clear_finished(&mut self) {
        self.finished.clear();
        self.seen.clear();
    }

    /// A request is no longer in flight; returns what was known of it.
    pub fn end(&mut self, request_id: &str) -> Option<InFlightView> {
        self.in_flight.remove(request_id)
    }

    /// Keep only the requests in flight `keep` accepts; returns how many were dropped.
    pub fn retain_in_flight(&mut self, mut keep: impl FnMut(&InFlightView) -> bool) -> usize {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, r| keep(r));
        before - self.in_flight.len()
    }

    /// Move the start of every request in flight by `by_ms`: they all started before a step of
    /// the wall clock of that size, and their stamps are of the clock before it.
    pub fn shift_in_flight(&mut self, by_ms: i64) {
        for r in self.in_flight.values_mut() {
            r.started_ms = r.started_ms.saturating_add(by_ms);
        }
    }

    /// The UTC day (days since the epoch) that today's totals count.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// Replace today's totals (the UTC `day`'s) and the orders counted in its revenue.
    pub fn set_today(&mut self, day: i64, today: Totals, paid: impl IntoIterator<Item = String>) {
        self.day = day;
        self.today = today;
        self.paid_today = paid.into_iter().collect();
    }

    /// The clock moved to `now_ms`: roll the day, and forget the hits and refusals that fell
    /// out of the last hour.
    pub fn expire(&mut self, now_ms: i64) {
        self.roll_to(now_ms);
        let hour_ago = now_ms - HOUR_MS;
        let within = |t: Option<i64>| t.filter(|t| *t > hour_ago);
        for hits in self.rate_limited.values_mut() {
            hits.hits_ms.retain(|t| *t > hour_ago);
            hits.pushed_out_ms = within(hits.pushed_out_ms);
        }
        self.rate_limited.retain(|_, h| !h.hits_ms.is_empty());
        while self.refusals.back().is_some_and(|r| r.at_ms <= hour_ago) {
            self.refusals.pop_back();
        }
        self.refusals_pushed_out_ms = within(self.refusals_pushed_out_ms);
    }
}

#[cfg(test)]
mod tests;
