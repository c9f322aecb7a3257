//! The upstream pool in the model: the latest `upstream_status` answer, why the last read
//! failed, and each account's requests per minute.
//!
//! The daemon reports only a running count of attempts per account, so the rate is the
//! console's: the growth of that count across the answers of the last minute.

use std::collections::{BTreeMap, VecDeque};

use super::RATE_WINDOW_MS;
use crate::activity::protocol::UpstreamView;

/// The shortest span of readings a rate is given for (a shorter one would be noise).
const MIN_SPAN_MS: i64 = 1_000;

/// The pool as the console last read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    /// The latest answer (kept while reconnecting: stale, but what is known).
    pub view: Option<UpstreamView>,
    /// When it arrived (console clock, unix ms).
    pub read_ms: i64,
    /// Why the latest read failed, when it did (cleared by the next answer).
    pub error: Option<String>,
    /// Per account, (when, its `requests` count) over the last minute, oldest first.
    samples: BTreeMap<String, VecDeque<(i64, u64)>>,
}

impl Pool {
    /// An answer arrived at `now_ms`.
    pub fn apply(&mut self, view: UpstreamView, now_ms: i64) {
        self.samples
            .retain(|name, _| view.accounts.iter().any(|a| &a.name == name));
        for a in &view.accounts {
            let s = self.samples.entry(a.name.clone()).or_default();
            // A count that went down is a restarted daemon: the old readings say nothing.
            if s.back().is_some_and(|(_, n)| *n > a.requests) {
                s.clear();
            }
            if s.back().is_some_and(|(at, _)| *at >= now_ms) {
                s.pop_back();
            }
            s.push_back((now_ms, a.requests));
            // Readings older than the window go, but two stay: after a gap in the reads (a
            // reconnection) the rate is the one across the gap.
            while s.len() > 2
                && s.front()
                    .is_some_and(|(at, _)| *at < now_ms - RATE_WINDOW_MS)
            {
                s.pop_front();
            }
        }
        self.view = Some(view);
        self.read_ms = now_ms;
        self.error = None;
    }

    /// A read failed.
    pub fn failed(&mut self, why: String) {
        self.error = Some(why);
    }

    /// Attempts per minute sent to `account` over the last minute of readings (`None` until
    /// two readings a second apart exist).
    pub fn requests_per_min(&self, account: &str) -> Option<f64> {
        let s = self.samples.get(account)?;
        let ((t0, n0), (t1, n1)) = (s.front()?, s.back()?);
        let span = t1 - t0;
        if span < MIN_SPAN_MS {
            return None;
        }
        Some(n1.saturating_sub(*n0) as f64 * 60_000.0 / span as f64)
    }

    /// What needs the operator's eye (empty when all is well or nothing was read).
    pub fn warnings(&self) -> &[String] {
        self.view.as_ref().map_or(&[], |v| v.warnings.as_slice())
    }
}
