//! The tracked state itself: pure data, changed event by event (each change stamped with the
//! time it is applied at, so the windows and the UTC day are testable), and by reloads.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{FINISHED_KEPT, HITS_PER_KEY, REFUSALS_KEPT, day_of};
use crate::activity::ActivityEvent;
use crate::activity::protocol::{InFlightView, RateLimitHits, Snapshot, Totals, UpstreamHealth};
use crate::money::Usd;
use crate::store::{Finish, UsageRow};

/// The window of rate-limit hits and refusals.
pub(super) const HOUR_MS: i64 = 3_600_000;

/// What the database says about today, for a reload.
#[derive(Debug, Default)]
pub(super) struct Baseline {
    /// The UTC day (days since the epoch).
    pub(super) day: i64,
    /// Ledger rows of requests started that day.
    pub(super) requests: u64,
    /// Their sum.
    pub(super) spend: Usd,
    /// Orders paid that day.
    pub(super) paid: Vec<(String, Usd)>,
    /// Request ids of rows settled around the reload: their events may still be on the way.
    pub(super) settled: Vec<String>,
    /// The newest ledger rows, newest first.
    pub(super) latest: Vec<UsageRow>,
    /// Until when `settled` is worth keeping.
    pub(super) keep_until_ms: i64,
}

/// One key's rate-limit hits.
#[derive(Debug, Clone)]
struct Hits {
    key_prefix: String,
    limit: u32,
    hits_ms: VecDeque<i64>,
}

/// The tracked state: pure data, every change stamped with the time it is applied at.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// By request id.
    in_flight: HashMap<String, InFlightView>,
    /// `request_finished` events, newest last.
    finished: VecDeque<ActivityEvent>,
    /// By key id.
    rate_limited: HashMap<String, Hits>,
    /// 402/403 `refused` events, newest last.
    refusals: VecDeque<ActivityEvent>,
    /// The UTC day `today` counts.
    day: i64,
    today: Totals,
    /// Orders counted in today's revenue.
    paid_today: HashSet<String>,
    /// Requests the last reload counted, whose events may still come.
    reloaded: HashSet<String>,
    reloaded_until_ms: i64,
    upstream: UpstreamHealth,
    /// No request lasts longer than this.
    pub(super) max_request_ms: i64,
}

/// A ledger row as the event it was settled with.
pub(super) fn finished_event(r: &UsageRow) -> ActivityEvent {
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
        at_ms: r
            .created_at_ms
            .saturating_add(i64::try_from(r.latency_ms).unwrap_or(0)),
    }
}

impl Live {
    /// Nothing tracked yet, for requests that last at most `max_request_ms`.
    pub(super) fn new(max_request_ms: i64) -> Live {
        Live {
            max_request_ms,
            ..Live::default()
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

    pub(super) fn apply(&mut self, e: &ActivityEvent, now_ms: i64) {
        self.roll(day_of(now_ms));
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
                self.in_flight.insert(
                    request_id.clone(),
                    InFlightView {
                        request_id: request_id.clone(),
                        key_id: key_id.clone(),
                        key_prefix: key_prefix.clone(),
                        plan: plan.clone(),
                        model: model.clone(),
                        stream: *stream,
                        client_ip: client_ip.clone(),
                        started_ms: *at_ms,
                        output_tokens: 0,
                    },
                );
            }
            ActivityEvent::RequestProgress {
                request_id,
                output_tokens,
                ..
            } => {
                if let Some(r) = self.in_flight.get_mut(request_id) {
                    r.output_tokens = r.output_tokens.max(*output_tokens);
                }
            }
            ActivityEvent::RequestFinished {
                request_id,
                cost_usd,
                latency_ms,
                at_ms,
                ..
            } => {
                self.in_flight.remove(request_id);
                self.note_upstream(e);
                // Today is the day the request started, as in the ledger.
                let day = day_of(at_ms.saturating_sub(i64::try_from(*latency_ms).unwrap_or(0)));
                if !self.reloaded.remove(request_id) {
                    self.roll(day);
                    if day == self.day {
                        self.today.requests += 1;
                        self.today.spend_usd = self.today.spend_usd.saturating_add(*cost_usd);
                    }
                }
                self.push_finished(e);
            }
            ActivityEvent::RateLimited {
                key_id,
                key_prefix,
                limit,
                at_ms,
            } => {
                let hits = self
                    .rate_limited
                    .entry(key_id.clone())
                    .or_insert_with(|| Hits {
                        key_prefix: key_prefix.clone(),
                        limit: *limit,
                        hits_ms: VecDeque::new(),
                    });
                hits.limit = *limit;
                hits.hits_ms.push_back(*at_ms);
                while hits.hits_ms.len() > HITS_PER_KEY {
                    hits.hits_ms.pop_front();
                }
            }
            ActivityEvent::Refused {
                status: 402 | 403, ..
            } => {
                self.refusals.push_back(e.clone());
                while self.refusals.len() > REFUSALS_KEPT {
                    self.refusals.pop_front();
                }
            }
            ActivityEvent::OrderPaid {
                order_id,
                amount_usd,
                at_ms,
                ..
            } => {
                let day = day_of(*at_ms);
                self.roll(day);
                if day == self.day && self.paid_today.insert(order_id.clone()) {
                    self.today.revenue_usd = self.today.revenue_usd.saturating_add(*amount_usd);
                }
            }
            _ => {}
        }
    }

    /// Add a finished request to the list, once.
    fn push_finished(&mut self, e: &ActivityEvent) {
        let ActivityEvent::RequestFinished { request_id, .. } = e else {
            return;
        };
        let known = self.finished.iter().any(
            |f| matches!(f, ActivityEvent::RequestFinished { request_id: r, .. } if r == request_id),
        );
        if !known {
            self.finished.push_back(e.clone());
            while self.finished.len() > FINISHED_KEPT {
                self.finished.pop_front();
            }
        }
    }

    /// Upstream's health from a finished request: its failures, and the latency of the
    /// latest complete one.
    fn note_upstream(&mut self, e: &ActivityEvent) {
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
        let newest = self.upstream.last_error_ms.is_none_or(|t| t <= *at_ms);
        match finish {
            Finish::UpstreamError | Finish::UpstreamTimeout if newest => {
                // A stream that failed after its 200 went out has no error status.
                let what = if *status >= 400 {
                    format!("{} {status}", finish.as_str())
                } else {
                    format!("{} mid-stream", finish.as_str())
                };
                self.upstream.last_error = Some(what);
                self.upstream.last_error_ms = Some(*at_ms);
            }
            Finish::Complete => self.upstream.last_latency_ms = Some(*latency_ms),
            _ => {}
        }
    }

    /// Forget what fell out of the windows.
    pub(super) fn prune(&mut self, now_ms: i64) {
        self.roll(day_of(now_ms));
        let hour_ago = now_ms - HOUR_MS;
        for hits in self.rate_limited.values_mut() {
            while hits.hits_ms.front().is_some_and(|t| *t <= hour_ago) {
                hits.hits_ms.pop_front();
            }
        }
        self.rate_limited.retain(|_, h| !h.hits_ms.is_empty());
        while self.refusals.front().is_some_and(
            |r| matches!(r, ActivityEvent::Refused { at_ms, .. } if *at_ms <= hour_ago),
        ) {
            self.refusals.pop_front();
        }
        let too_old = now_ms.saturating_sub(self.max_request_ms);
        let before = self.in_flight.len();
        self.in_flight.retain(|_, r| r.started_ms > too_old);
        if self.in_flight.len() < before {
            tracing::debug!(
                dropped = before - self.in_flight.len(),
                "requests in flight whose end was missed"
            );
        }
        if now_ms > self.reloaded_until_ms && !self.reloaded.is_empty() {
            self.reloaded = HashSet::new();
        }
    }

    /// Replace the day's totals and the finished list with the database's.
    pub(super) fn reload(&mut self, b: Baseline) {
        self.day = b.day;
        let revenue = b
            .paid
            .iter()
            .fold(Usd::ZERO, |sum, (_, amount)| sum.saturating_add(*amount));
        self.today = Totals {
            requests: b.requests,
            spend_usd: b.spend,
            revenue_usd: revenue,
        };
        self.paid_today = b.paid.into_iter().map(|(id, _)| id).collect();
        self.reloaded = b.settled.into_iter().collect();
        self.reloaded_until_ms = b.keep_until_ms;
        for id in &self.reloaded {
            self.in_flight.remove(id);
        }
        self.finished.clear();
        for row in b.latest.iter().rev() {
            let e = finished_event(row);
            self.note_upstream(&e);
            self.push_finished(&e);
        }
    }

    /// The tracked parts of a snapshot (version, uptime, keys and orders are the caller's).
    pub(super) fn view(&mut self, now_ms: i64) -> Snapshot {
        self.prune(now_ms);
        let mut in_flight: Vec<InFlightView> = self.in_flight.values().cloned().collect();
        in_flight.sort_by(|a, b| (a.started_ms, &a.request_id).cmp(&(b.started_ms, &b.request_id)));
        let mut rate_limited: Vec<RateLimitHits> = self
            .rate_limited
            .iter()
            .map(|(key_id, h)| RateLimitHits {
                key_id: key_id.clone(),
                key_prefix: h.key_prefix.clone(),
                limit: h.limit,
                hits_ms: h.hits_ms.iter().copied().collect(),
            })
            .collect();
        rate_limited.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Snapshot {
            in_flight,
            finished: self.finished.iter().cloned().collect(),
            rate_limited,
            refusals: self.refusals.iter().cloned().collect(),
            today: self.today.clone(),
            upstream: self.upstream.clone(),
            ..Snapshot::default()
        }
    }
}
