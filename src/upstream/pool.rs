//! The pool of accounts and how a request gets a slot on one.
//!
//! Among the accounts that may take a request (healthy, or cooling and due a trial), the one
//! least full for the model — in flight ÷ (cap × weight) — is chosen (among equally full
//! ones, as under light load when all are idle, by smooth weighted round robin, so that
//! weights share light traffic too), and its slot is taken by compare-and-swap under its cap, so an account never carries more than its cap for a model.
//! When every usable account is at its cap, the request waits for a slot to be given back (a
//! per-model `Notify`), up to the queue timeout. When no account is healthy but some are only
//! cooling, the request still goes to the one due back soonest rather than failing untried —
//! with one account, resting it would fail every request for the whole backoff. Disabled
//! accounts are never used. No lock is taken on this path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::account::{Account, mono_ms, now_ms};
use crate::activity::{Activity, ActivityEvent};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Every usable account stayed at its cap for the whole queue timeout.
    Busy,
    /// No account (not already tried) may take requests at all: disabled, or cooling.
    NoneUsable,
}

/// The accounts and the models they serve.
pub struct Pool {
    /// The accounts, in config order.
    pub accounts: Vec<Arc<Account>>,
    /// Model ids, by slot.
    pub models: Vec<String>,
    /// One per model slot: a slot was given back.
    released: Vec<Notify>,
    /// Where an account's change of state is told (the console, the log's readers).
    activity: Activity,
}

/// A request's place on an account; given back when dropped (the stream's end included).
pub struct Slot {
    account: Arc<Account>,
    index: usize,
    model: usize,
    pool: Arc<Pool>,
    /// The slot is a cooling account's trial, not decided yet: dropped undecided, it frees
    /// the trial for the next request.
    trial: bool,
    /// The account was told how its 2xx answer turned out ([`Slot::worked`],
    /// [`Slot::failed`]).
    judged: bool,
    /// The account's epoch when the slot was taken: a verdict from an older one changes no
    /// state (it is about the account as it was).
    epoch: u64,
    /// A request taken early while every account rests, whose stream began: the account
    /// comes back only if it ends whole ([`Slot::finished`]).
    awaiting_end: bool,
}

impl Slot {
    /// The account serving.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// Its index in the pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the account is in the epoch the slot was taken in.
    pub fn current(&self) -> bool {
        self.account.epoch() == self.epoch
    }

    /// A failure that is no verdict on the account (a slow answer outlasting the request's
    /// own limit, a whole answer that kept sending its keep-alives): counted and noted for
    /// the operator, the account's state left as it is.
    pub fn noted(&mut self, why: &str) {
        if std::mem::replace(&mut self.judged, true) {
            return;
        }
        self.account.errors.fetch_add(1, Ordering::Relaxed);
        self.account.note_failure(why);
    }

    /// The attempt's outcome was told to the account (which ends a trial either way).
    pub fn decided(&mut self) {
        self.trial = false;
    }

    /// The account's 2xx answer brought content: it works (a cooling account is healthy
    /// again, its trial decided). Said once; a head alone is no verdict (a 200 followed by
    /// nothing, an error event or a proxy's page brought a cooling account back).
    pub fn worked(&mut self) {
        if std::mem::replace(&mut self.judged, true) {
            return;
        }
        if !self.current() {
            // Sent before the account's last change: about the account as it was then.
            return;
        }
        if self.account.succeeded() {
            tracing::info!(account = %self.account.name, "upstream account healthy again");
            self.pool.announce(&self.account, "answered again");
            // Its own recovery moved the account's epoch on: what this request does next
            // still speaks for it (an answer taken early that ends whole then clears the
            // backoff; left behind, each later failure doubled it — 5 s to 5 min within
            // seconds while every account rested, found by an independent check).
            self.epoch = self.account.epoch();
        }
        self.trial = false;
    }

    /// The account's 2xx answer failed: counted as its error and, when no content had come
    /// yet (it stalled, broke, sent an error or no answer at all), the account rests as for
    /// a failure before the head — it kept its share of requests, each failing, for good.
    pub fn failed(&mut self, why: &str) {
        self.account.errors.fetch_add(1, Ordering::Relaxed);
        if std::mem::replace(&mut self.judged, true) || !self.current() {
            self.account.note_failure(why);
            return;
        }
        if self.account.cool(why) {
            tracing::warn!(account = %self.account.name, error = why, "upstream account cooling");
            self.pool.announce(&self.account, why);
        }
        self.trial = false;
    }
}

impl Slot {
    /// A stream's first content: the account works. A cooling account's trial brings it back
    /// on probation ([`Account::back_on_probation`]): it serves again at once (held out of
    /// service for a long trial, a working account left customers with 503) with its backoff
    /// kept until an answer ends whole, so a break of the trial or of any request it takes
    /// meanwhile rests it for twice as long (brought back for good at the first words, an
    /// account whose streams broke rested 5 s at a time for ever). A request taken early while
    /// every account rests brings it back only once its stream ends whole (it flapped twice a
    /// second). All found by independent re-checks.
    pub fn began(&mut self) {
        if self.account.state() == super::account::AccountState::Healthy && !self.trial {
            self.worked();
        } else if !self.trial {
            self.awaiting_end = true;
        } else if !std::mem::replace(&mut self.judged, true) && self.current() {
            if self.account.back_on_probation() {
                tracing::info!(account = %self.account.name, "upstream account healthy again (on probation)");
                self.pool.announce(&self.account, "answered again");
            }
            self.trial = false;
            // Its own recovery moved the account's epoch on: this stream still speaks for it.
            self.epoch = self.account.epoch();
        }
    }

    /// An answer ended whole (a `stream`, or a whole answer): a request taken early brings
    /// its account back; and the account works, so its next failure rests it from the first
    /// backoff again (a whole answer does not clear a broken stream's: see
    /// [`Account::clear_backoff`]).
    pub fn finished(&mut self, stream: bool) {
        if std::mem::take(&mut self.awaiting_end) {
            self.worked();
        }
        if self.current() {
            self.account.clear_backoff(stream);
        }
    }

    /// Whether the slot is a cooling account's trial, not decided yet.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The account's answer broke after it had begun (an error event, a cut, a stall, an end
    /// before the answer was whole): counted, and the account rests as for a failure before
    /// any answer — one whose every stream broke after its first words stayed healthy, kept
    /// its share of requests, and its errors did not even count (found by an independent
    /// check). A trial's break rests it for longer, as any failed trial. Told once a stream.
    pub fn broke(&mut self, why: &str) {
        self.awaiting_end = false;
        self.account.errors.fetch_add(1, Ordering::Relaxed);
        if !self.current() {
            self.account.note_failure(why);
            return;
        }
        self.account.stream_broke();
        if self.account.cool(why) {
            tracing::warn!(account = %self.account.name, error = why, "upstream account cooling");
            self.pool.announce(&self.account, why);
        }
        self.trial = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.trial {
            self.account.end_trial();
        }
        self.account.give_back(self.model);
        if let Some(n) = self.pool.released.get(self.model) {
            n.notify_waiters();
        }
    }
}

impl Pool {
    /// A pool of `accounts` serving `models`.
    pub fn new(accounts: Vec<Arc<Account>>, models: Vec<String>, activity: Activity) -> Pool {
        let released = models.iter().map(|_| Notify::new()).collect();
        Pool {
            accounts,
            models,
            released,
            activity,
        }
    }

    /// Tell the console that `account` changed state, and why.
    pub fn announce(&self, account: &Account, reason: &str) {
        self.activity.emit(ActivityEvent::AccountChanged {
            account: account.name.clone(),
            state: account.state().as_str().to_string(),
            reason: reason.chars().take(200).collect(),
            at_ms: now_ms(),
        });
    }

    /// The slot of a model id.
    pub fn model_slot(&self, model: &str) -> Option<usize> {
        self.models.iter().position(|m| m == model)
    }

    /// A slot for model slot `m` on the least full usable account not in `tried`, waiting up
    /// to `queue` for one to free up.
    pub async fn acquire(
        self: &Arc<Self>,
        m: usize,
        tried: &[usize],
        queue: Duration,
    ) -> Result<Slot, NoSlot> {
        let until = Instant::now() + queue;
        loop {
            // Registered before looking, so a slot given back meanwhile wakes us.
            let released = self.released.get(m).map(Notify::notified);
            match self.try_acquire(m, tried) {
                Ok(slot) => return Ok(slot),
                Err(NoSlot::NoneUsable) => return Err(NoSlot::NoneUsable),
                Err(NoSlot::Busy) => {}
            }
            // Busy only after a look made once the wait was over: an account disabled while
            // we waited makes it "none usable" (502), not "busy" (503, come back soon).
            if Instant::now() >= until {
                return Err(NoSlot::Busy);
            }
            let Some(released) = released else {
                return Err(NoSlot::NoneUsable);
            };
            // A cooling account's trial time may come while we wait: look again each second.
            let wake = until.min(Instant::now() + Duration::from_secs(1));
            let _ = tokio::time::timeout_at(wake, released).await;
        }
    }

    /// Wake every request waiting for a slot, to look again (an account left service).
    pub fn wake_waiters(&self) {
        for r in &self.released {
            r.notify_waiters();
        }
    }

    /// One look: the least full usable account with room.
    fn try_acquire(self: &Arc<Self>, m: usize, tried: &[usize]) -> Result<Slot, NoSlot> {
        let now = mono_ms();
        let mut candidates: Vec<(usize, f64)> = self
            .accounts
            .iter()
            .enumerate()
            .filter(|(i, a)| !tried.contains(i) && a.usable(now))
            .map(|(i, a)| (i, a.load(m)))
            .collect();
        if candidates.is_empty() {
            return self.soonest_cooling(m, tried);
        }
        candidates.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let tied = candidates
            .iter()
            .take_while(|c| c.1 == candidates[0].1)
            .count();
        if tied > 1 {
            let first = self.smooth_turn(&candidates[..tied]);
            candidates[..tied].rotate_left(first);
        }
        for (i, _) in candidates {
            let account = &self.accounts[i];
            if let Some(trial) = account.try_take(m, now) {
                account.requests.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot {
                    account: account.clone(),
                    index: i,
                    model: m,
                    pool: self.clone(),
                    trial,
                    judged: false,
                    epoch: account.epoch(),
                    awaiting_end: false,
                });
            }
        }
        Err(NoSlot::Busy)
    }
}

impl Pool {
    /// Whose turn it is among equally full accounts (all idle, under light load), by smooth
    /// weighted round robin (nginx's): each gains its weight, the one ahead goes and pays the
    /// sum. Weights then share light traffic as they share heavy traffic, and what an account
    /// has saved up stays within the sum of the weights: one back from a rest (or new) is not
    /// handed every request until it catches up. Returns the index in `tied`. Concurrent
    /// looks may interleave their updates; the share stays right on average, and no lock is
    /// taken.
    fn smooth_turn(&self, tied: &[(usize, f64)]) -> usize {
        let total: i64 = tied
            .iter()
            .map(|(i, _)| i64::from(self.accounts[*i].weight))
            .sum();
        let mut best = (0, i64::MIN);
        for (at, (i, _)) in tied.iter().enumerate() {
            let a = &self.accounts[*i];
            let current =
                a.turn.fetch_add(i64::from(a.weight), Ordering::AcqRel) + i64::from(a.weight);
            if current > best.1 {
                best = (at, current);
            }
        }
        self.accounts[tied[best.0].0]
            .turn
            .fetch_sub(total, Ordering::AcqRel);
        best.0
    }

    /// Every account not tried is disabled or resting: the cooling ones take the request
    /// anyway, the one with the fewest requests in flight and of those the one that failed
    /// longest ago first, skipping any at its cap — a single request that failed on every
    /// account (it cools them all) must not leave the pool serving through one account's slots
    /// while the others' stand free.
    fn soonest_cooling(self: &Arc<Self>, m: usize, tried: &[usize]) -> Result<Slot, NoSlot> {
        // The one with the fewest requests in flight first, then the one whose last failure is
        // oldest, then the one due back soonest: each request here is a probe, and in turn they
        // find a recovered account within one request per resting account (by the rest's end
        // alone, an account failing again with a short backoff stayed first in line and took
        // every request — 74 failures in 15 s — while one with a longer rest had recovered; and
        // a burst went whole to one account, each request failing; found by independent
        // re-checks).
        let mut cooling: Vec<(usize, u32, i64, i64)> = self
            .accounts
            .iter()
            .enumerate()
            .filter(|(i, _)| !tried.contains(i))
            .filter_map(|(i, a)| {
                let busy = a.in_flight(m);
                let failed = a.last_error().map_or(0, |(_, at)| at);
                a.cooling_until_ms().map(|until| (i, busy, failed, until))
            })
            .collect();
        if cooling.is_empty() {
            return Err(NoSlot::NoneUsable);
        }
        cooling.sort_by_key(|&(i, busy, failed, until)| (busy, failed, until, i));
        for (i, _, _, _) in cooling {
            let account = &self.accounts[i];
            if account.take_early(m) {
                account.requests.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot {
                    account: account.clone(),
                    index: i,
                    model: m,
                    pool: self.clone(),
                    trial: false,
                    judged: false,
                    epoch: account.epoch(),
                    awaiting_end: false,
                });
            }
        }
        Err(NoSlot::Busy)
    }
}

#[cfg(test)]
mod tests;
