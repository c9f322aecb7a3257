//! Requests in the model: the finished list (deduplicated by request id), their effect on keys,
//! today's totals and upstream health, and requests/s.

use super::{FINISHED_KEPT, Model, RATE_WINDOW_MS, SEEN_KEPT, rfc3339};
use crate::activity::ActivityEvent;
use crate::money::Usd;
use crate::store::{Finish, Measured};

/// A finished request, as the Live view lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRow {
    /// `x-request-id`.
    pub request_id: String,
    /// Key id.
    pub key_id: String,
    /// Key display prefix (when known).
    pub key_prefix: Option<String>,
    /// Public model name.
    pub model: String,
    /// HTTP status sent.
    pub status: u16,
    /// How it ended.
    pub finish: Finish,
    /// Charged.
    pub cost_usd: Usd,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Provider-measured or estimated.
    pub measured: Measured,
    /// Start to last byte.
    pub latency_ms: u64,
    /// Start to first token.
    pub ttft_ms: Option<u64>,
    /// Unix ms it finished.
    pub at_ms: i64,
}

impl Model {
    /// A `request_finished` after the baseline: the Live lists, the key, the totals, upstream.
    pub(super) fn finish(&mut self, e: &ActivityEvent, key_news: bool) {
        let ActivityEvent::RequestFinished {
            key_id,
            cost_usd,
            status,
            finish,
            latency_ms,
            at_ms,
            ..
        } = e
        else {
            return;
        };
        if !self.record_finished(e) {
            return;
        }
        if let Some(k) = self.keys.get_mut(key_id).filter(|_| key_news) {
            k.spent_usd = k.spent_usd.saturating_add(*cost_usd);
            k.remaining_usd = k.budget_usd.saturating_sub(k.spent_usd);
            k.requests += 1;
            k.last_used_at = Some(rfc3339(*at_ms));
        }
        self.today.requests += 1;
        self.today.spend_usd = self.today.spend_usd.saturating_add(*cost_usd);
        match finish {
            Finish::UpstreamError | Finish::UpstreamTimeout => {
                self.upstream.last_error = Some(format!("{} {status}", finish.as_str()));
                self.upstream.last_error_ms = Some(*at_ms);
            }
            Finish::Complete => self.upstream.last_latency_ms = Some(*latency_ms),
            _ => {}
        }
    }

    /// Add a finished request to the lists (not the balances); false if it was already there.
    pub(super) fn record_finished(&mut self, e: &ActivityEvent) -> bool {
        let ActivityEvent::RequestFinished {
            request_id,
            key_id,
            model,
            status,
            finish,
            cost_usd,
            completion_tokens,
            measured,
            latency_ms,
            ttft_ms,
            at_ms,
            ..
        } = e
        else {
            return false;
        };
        if !self.seen_set.insert(request_id.clone()) {
            return false;
        }
        self.seen.push_back(request_id.clone());
        if self.seen.len() > SEEN_KEPT
            && let Some(old) = self.seen.pop_front()
        {
            self.seen_set.remove(&old);
        }
        let flight = self
            .in_flight
            .iter()
            .position(|r| &r.request_id == request_id)
            .map(|i| self.in_flight.remove(i));
        let key_prefix = flight
            .map(|f| f.key_prefix)
            .or_else(|| self.keys.get(key_id).map(|k| k.prefix.clone()));
        self.finished.push_front(FinishedRow {
            request_id: request_id.clone(),
            key_id: key_id.clone(),
            key_prefix,
            model: model.clone(),
            status: *status,
            finish: *finish,
            cost_usd: *cost_usd,
            completion_tokens: *completion_tokens,
            measured: *measured,
            latency_ms: *latency_ms,
            ttft_ms: *ttft_ms,
            at_ms: *at_ms,
        });
        self.finished.truncate(FINISHED_KEPT);
        let i = self.finished_times.partition_point(|t| t <= at_ms);
        self.finished_times.insert(i, *at_ms);
        true
    }

    /// Requests finished per second over the last 60 s.
    pub fn requests_per_sec(&self, now_ms: i64) -> f64 {
        let n = self
            .finished_times
            .iter()
            .filter(|t| **t > now_ms - RATE_WINDOW_MS && **t <= now_ms)
            .count();
        n as f64 / (RATE_WINDOW_MS as f64 / 1000.0)
    }
}
