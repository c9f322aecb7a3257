//! The tracked state itself: the shared [`Fold`] under the daemon's rules, with what only the
//! daemon does around it: reloads from the ledger (and recognising the events of the rows a
//! reload counted) and dropping requests in flight whose end was missed. Pure data, changed
//! event by event (each change stamped with the time it is applied at, so the windows and the
//! UTC day are testable), and by reloads.

use foldhash::HashSet;

use super::{FINISHED_KEPT, HITS_PER_KEY, REFUSALS_KEPT};
use crate::activity::ActivityEvent;
use crate::activity::fold::{Delivery, FinishedRow, Fold, Rules, UpstreamRule, day_of};
use crate::activity::protocol::{Snapshot, Totals};
use crate::activity::views::finished_event;
use crate::money::Usd;
use crate::store::UsageRow;

/// The daemon's rules: totals as the ledger counts them, upstream's latest failure by time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DaemonRules;

impl Rules for DaemonRules {
    const FINISHED_KEPT: usize = FINISHED_KEPT;
    // A repeat is recognised among the finished requests kept (after a reload, the rows it
    // loaded), the rest by `Live::reloaded`.
    const IDS_KEPT: usize = FINISHED_KEPT;
    const REFUSALS_KEPT: usize = REFUSALS_KEPT;
    const HITS_PER_KEY: usize = HITS_PER_KEY;
    const UPSTREAM: UpstreamRule = UpstreamRule::Latest;
}

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

/// The tracked state: pure data, every change stamped with the time it is applied at.
#[derive(Debug, Default)]
pub(super) struct Live {
    fold: Fold<DaemonRules>,
    /// Requests the last reload counted, whose events may still come.
    reloaded: HashSet<String>,
    reloaded_until_ms: i64,
    /// No request lasts longer than this.
    pub(super) max_request_ms: i64,
    /// The wall clock and the monotonic one at the last look, to notice a step of the first.
    clocks: Option<(i64, i64)>,
}

/// A difference between how far the wall clock and the monotonic clock moved since the last
/// look that counts as a step (NTP slews both alike; only a step moves one alone).
const STEP_MS: i64 = 1_000;

impl Live {
    /// Nothing tracked yet, for requests that last at most `max_request_ms`.
    pub(super) fn new(max_request_ms: i64) -> Live {
        Live {
            max_request_ms,
            ..Live::default()
        }
    }

    pub(super) fn apply(&mut self, e: &ActivityEvent, now_ms: i64) {
        self.fold.roll_to(now_ms);
        let count = match e {
            ActivityEvent::RequestFinished { request_id, .. } => !self.reloaded.remove(request_id),
            _ => true,
        };
        let delivery = Delivery {
            count,
            ..Delivery::FRESH
        };
        self.fold.apply(e, delivery);
    }

    /// Look at both clocks (`wall_ms` unix, `mono_ms` monotonic). When the wall clock stepped
    /// since the last look, the requests in flight — all started before the step, stamped by
    /// the clock before it — have their starts moved by the step: their age on the console
    /// stays true, and a step forward longer than a request can last no longer drops them as
    /// ended unseen (found by an independent check). Returns whether the wall clock now falls
    /// on an earlier UTC day than today's totals count: a step back across midnight, after
    /// which the caller reloads the day from the ledger (the totals only roll forward).
    pub(super) fn observe_clocks(&mut self, wall_ms: i64, mono_ms: i64) -> bool {
        if let Some((wall_was, mono_was)) = self.clocks {
            let step = (wall_ms - wall_was) - (mono_ms - mono_was);
            if step.abs() > STEP_MS {
                self.fold.shift_in_flight(step);
                tracing::info!(
                    step_ms = step,
                    in_flight = self.fold.in_flight_count(),
                    "the wall clock stepped; the starts of the requests in flight follow it"
                );
            }
        }
        self.clocks = Some((wall_ms, mono_ms));
        day_of(wall_ms) < self.fold.day()
    }

    /// Forget what fell out of the windows.
    pub(super) fn prune(&mut self, now_ms: i64) {
        self.fold.expire(now_ms);
        let too_old = now_ms.saturating_sub(self.max_request_ms);
        let dropped = self.fold.retain_in_flight(|r| r.started_ms > too_old);
        if dropped > 0 {
            tracing::debug!(dropped, "requests in flight whose end was missed");
        }
        if now_ms > self.reloaded_until_ms && !self.reloaded.is_empty() {
            self.reloaded = HashSet::default();
        }
    }

    /// Replace the day's totals and the finished list with the database's.
    pub(super) fn reload(&mut self, b: Baseline) {
        let revenue = b
            .paid
            .iter()
            .fold(Usd::ZERO, |sum, (_, amount)| sum.saturating_add(*amount));
        let today = Totals {
            requests: b.requests,
            spend_usd: b.spend,
            revenue_usd: revenue,
        };
        self.fold
            .set_today(b.day, today, b.paid.into_iter().map(|(id, _)| id));
        self.reloaded = b.settled.into_iter().collect();
        self.reloaded_until_ms = b.keep_until_ms;
        for id in &self.reloaded {
            self.fold.end(id);
        }
        self.fold.clear_finished();
        for row in b.latest.iter().rev() {
            let e = finished_event(row);
            self.fold.note_upstream(&e);
            if let Some(row) = FinishedRow::of(&e, None) {
                self.fold.push_finished(row);
            }
        }
    }

    /// The tracked parts of a snapshot (version, uptime, keys and orders are the caller's).
    pub(super) fn view(&mut self, now_ms: i64) -> Snapshot {
        self.prune(now_ms);
        self.fold.snapshot()
    }
}
