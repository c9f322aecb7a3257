//! A key's live state ([`KeyState`]): its balance as atomics changed by compare-and-swap, its
//! rate limiter, and what self-service may change while requests hold it — the plan (and its
//! limiter), the display prefix, the notice bits — plus the stored record it is built from.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};

use crate::money::Usd;

use crate::status::KeyStatus;

mod refunds;
#[cfg(test)]
mod tests;

use refunds::Debt;

/// A key as stored: what is needed to rebuild its in-memory state.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// `key_…`, also sent upstream as `user_id`.
    pub id: String,
    /// SHA-256 of the full key.
    pub hash: [u8; 32],
    /// The key sealed with the server secret.
    pub sealed: Vec<u8>,
    /// `sk-gateway-AbCd…`
    pub prefix: String,
    /// Plan id.
    pub plan: String,
    /// Where it stands.
    pub status: KeyStatus,
    /// Total ever granted (plan budget plus top-ups).
    pub budget: Usd,
    /// Total ever charged.
    pub spent: Usd,
    /// Requests settled.
    pub requests: u64,
    /// Buyer's email, when sold.
    pub email: Option<String>,
    /// Operator's note.
    pub note: Option<String>,
    /// The order that paid for it.
    pub order_id: Option<String>,
    /// Minted at.
    pub created_at: DateTime<Utc>,
    /// Last request settled at.
    pub last_used_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
impl KeyRecord {
    /// An active Trial key `id` holding `budget`, nothing spent (tests).
    pub(crate) fn for_tests(id: &str, budget: Usd) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            hash: [1; 32],
            sealed: vec![],
            prefix: "sk-gateway-Test…".into(),
            plan: "trial".into(),
            status: KeyStatus::Active,
            budget,
            spent: Usd::ZERO,
            requests: 0,
            email: None,
            note: None,
            order_id: None,
            created_at: Utc::now(),
            last_used_at: None,
        }
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A key's live state. Money fields are nano-USD atomics; `available` is what new requests
/// may still hold (budget − spent − held), and it never goes below zero.
pub struct KeyState {
    /// Id.
    pub id: String,
    /// Buyer's email, when sold.
    pub email: Option<String>,
    /// Operator's note.
    pub note: Option<String>,
    /// Paying order.
    pub order_id: Option<String>,
    /// Minted at.
    pub created_at: DateTime<Utc>,
    /// Display prefix (`sk-gateway-AbCd…`); replaced when the key's text is.
    prefix: ArcSwap<String>,
    /// Plan id; a top-up on a dearer plan moves the key to it.
    plan: ArcSwap<String>,
    status: AtomicU8,
    budget: AtomicI64,
    spent: AtomicI64,
    available: AtomicI64,
    requests: AtomicU64,
    last_used_ms: AtomicI64,
    /// The plan's RPM, and its limiter (both replaced with the plan).
    limiter: ArcSwap<Limiter>,
    /// The same RPM for `count_tokens`, apart: counting is free and does not use the key's
    /// requests (as at Anthropic, where it has limits of its own), but it reads bodies of up to
    /// the body limit, so it is not unlimited either.
    count_limiter: ArcSwap<Limiter>,
    /// The same RPM for the usage look-ups by key (`GET /api/usage`, `GET
    /// /v1/dashboard/billing/usage`): free, but each reads the key's ledger on the customers'
    /// read connection, so unlimited they held it for every other customer and `/healthz` (found by
    /// an independent check at a year's scale).
    usage_limiter: ArcSwap<Limiter>,
    /// A usage look-up of this key is running: one at a time (a burst of a minute's allowance
    /// of all-time look-ups, each a scan of a busy key's ledger, held the read connection for
    /// most of a minute; found by a review and a re-check).
    looking: AtomicBool,
    /// Its requests in flight, each counted by a [`super::in_flight::KeySlot`].
    pub(super) in_flight: AtomicU32,
    /// Bytes of its request bodies being read now (see [`crate::gateway::bodies`]).
    pub(crate) reading: std::sync::atomic::AtomicUsize,
    rpm: AtomicU32,
    /// The notices of the current crossing already queued ([`Notice`] bits).
    notices: AtomicU8,
    /// Its streams' recent prompts, for the cache hits of one cut before DeepSeek's usage.
    pub prompts: super::prompts::RecentPrompts,
    /// Budget refunds could not take back at once because requests in flight held it, in all
    /// (the request path reads only this): taken from what those holds give back as they
    /// settle, never from what they spend. What each refund is owed is in `owing`.
    owed: AtomicI64,
    /// Bumped by each refund that leaves something owed: a hold remembers the value it was made
    /// under ([`KeyState::epoch`]), so only holds made before a refund pay it.
    epoch: AtomicU64,
    /// What each refund is owed; changed only under this lock (refunds, and settlements while
    /// something is owed).
    owing: std::sync::Mutex<Vec<Debt>>,
}

/// What settling a request did to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Charged (the cost, capped at the hold).
    pub charged: Usd,
    /// Budget − spent after it.
    pub remaining: Usd,
    /// Taken from the released hold for refunds ([`KeyState::take_or_owe`]), in all: the budget is
    /// that much smaller, and the store must be told.
    pub clawed: Usd,
    /// The same, by refunded order (empty when nothing was taken).
    pub clawed_for: Vec<(String, Usd)>,
}

/// A notice sent once per crossing of its threshold (a top-up re-arms it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Remaining fell below a fifth of the budget.
    LowBalance,
    /// The key ran out of money.
    Exhausted,
}

impl Notice {
    fn bit(self) -> u8 {
        match self {
            Notice::LowBalance => 1,
            Notice::Exhausted => 2,
        }
    }
}

/// Remaining below this share of the budget (as 1/N) is a low balance.
pub const LOW_BALANCE_DIVISOR: i64 = 5;

fn limiter_of(rpm: u32) -> Limiter {
    let quota = Quota::per_minute(NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// A key's running usage look-up ([`KeyState::usage_turn`]); dropped, the next may run.
pub struct UsageTurn<'a>(&'a AtomicBool);

impl Drop for UsageTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A consistent-enough reading of a key's money (each field is read once, atomically).
#[derive(Debug, Clone, Copy)]
pub struct Balance {
    /// Granted in total.
    pub budget: Usd,
    /// Charged in total.
    pub spent: Usd,
    /// Held by requests in flight.
    pub held: Usd,
}

impl Balance {
    /// budget − spent.
    pub fn remaining(&self) -> Usd {
        self.budget.saturating_sub(self.spent)
    }
}

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, Copy)]
pub struct RateCheck {
    /// Allowed?
    pub allowed: bool,
    /// The plan's RPM.
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the window is full again (allowed) or until the next request is allowed (denied).
    pub reset: std::time::Duration,
}

impl KeyState {
    /// Build the live state from a stored record and the plan's RPM.
    pub fn from_record(r: KeyRecord, rpm: u32) -> KeyState {
        let rpm = rpm.max(1);
        let available = r.budget.saturating_sub(r.spent).nanos().max(0);
        KeyState {
            id: r.id,
            prefix: ArcSwap::from_pointee(r.prefix),
            plan: ArcSwap::from_pointee(r.plan),
            email: r.email,
            note: r.note,
            order_id: r.order_id,
            created_at: r.created_at,
            status: AtomicU8::new(r.status.to_u8()),
            budget: AtomicI64::new(r.budget.nanos()),
            spent: AtomicI64::new(r.spent.nanos()),
            available: AtomicI64::new(available),
            requests: AtomicU64::new(r.requests),
            last_used_ms: AtomicI64::new(r.last_used_at.map_or(0, |t| t.timestamp_millis())),
            limiter: ArcSwap::from_pointee(limiter_of(rpm)),
            count_limiter: ArcSwap::from_pointee(limiter_of(rpm)),
            usage_limiter: ArcSwap::from_pointee(limiter_of(rpm)),
            looking: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            reading: std::sync::atomic::AtomicUsize::new(0),
            rpm: AtomicU32::new(rpm),
            notices: AtomicU8::new(0),
            prompts: super::prompts::RecentPrompts::default(),
            owed: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            owing: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Display prefix (`sk-gateway-AbCd…`).
    pub fn prefix(&self) -> String {
        self.prefix.load().as_ref().clone()
    }

    /// Plan id.
    pub fn plan(&self) -> String {
        self.plan.load().as_ref().clone()
    }

    /// The key's text was replaced: its new display prefix.
    pub fn set_prefix(&self, prefix: String) {
        self.prefix.store(Arc::new(prefix));
    }

    /// Move the key to `plan`, whose RPM is `rpm`: its models apply from the next request, and
    /// its rate limiter starts afresh at the new RPM.
    pub fn set_plan(&self, plan: String, rpm: u32) {
        let rpm = rpm.max(1);
        self.limiter.store(Arc::new(limiter_of(rpm)));
        self.count_limiter.store(Arc::new(limiter_of(rpm)));
        self.usage_limiter.store(Arc::new(limiter_of(rpm)));
        self.rpm.store(rpm, Ordering::Release);
        self.plan.store(Arc::new(plan));
    }

    /// Current status.
    pub fn status(&self) -> KeyStatus {
        KeyStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Budget, spent and held now.
    pub fn balance(&self) -> Balance {
        let budget = self.budget.load(Ordering::Acquire);
        let spent = self.spent.load(Ordering::Acquire);
        let available = self.available.load(Ordering::Acquire);
        Balance {
            budget: Usd::from_nanos(budget),
            spent: Usd::from_nanos(spent),
            held: Usd::from_nanos((budget - spent - available).max(0)),
        }
    }

    /// What a new request may still hold.
    pub fn available(&self) -> Usd {
        Usd::from_nanos(self.available.load(Ordering::Acquire))
    }

    /// Requests settled.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Last settled request, if any.
    pub fn last_used_at(&self) -> Option<DateTime<Utc>> {
        match self.last_used_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Take one request from the RPM allowance.
    pub fn check_rate(&self) -> RateCheck {
        self.check(&self.limiter.load())
    }

    /// [`KeyState::check_rate`] for `count_tokens`, which has a limit of its own at the same
    /// RPM.
    pub fn check_count_rate(&self) -> RateCheck {
        self.check(&self.count_limiter.load())
    }

    /// Start a usage look-up of this key (`GET /api/usage`, `/v1/dashboard/billing/usage`):
    /// within its own limit at the key's RPM, and one at a time. Refused, the limit's reading.
    pub fn start_usage_look_up(&self) -> Result<UsageTurn<'_>, RateCheck> {
        let rate = self.check(&self.usage_limiter.load());
        if !rate.allowed {
            return Err(rate);
        }
        self.usage_turn().ok_or(rate)
    }

    /// This key's turn to look its usage up, `None` while another look-up of it runs.
    fn usage_turn(&self) -> Option<UsageTurn<'_>> {
        (!self.looking.swap(true, Ordering::AcqRel)).then_some(UsageTurn(&self.looking))
    }

    fn check(&self, limiter: &Limiter) -> RateCheck {
        let rpm = self.rpm.load(Ordering::Acquire).max(1);
        let per_request = std::time::Duration::from_secs(60) / rpm;
        match limiter.check() {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                RateCheck {
                    allowed: true,
                    limit: rpm,
                    remaining,
                    reset: per_request * rpm.saturating_sub(remaining),
                }
            }
            Err(not_until) => RateCheck {
                allowed: false,
                limit: rpm,
                remaining: 0,
                reset: not_until.wait_time_from(governor::clock::Clock::now(limiter.clock())),
            },
        }
    }

    /// Hold money for a request. `decide` sees what is available and returns the hold (which
    /// must not exceed it) or a refusal; the hold is taken with compare-and-swap, so however
    /// many requests race, the sum of holds never exceeds the balance.
    pub fn try_hold<T, E>(
        &self,
        mut decide: impl FnMut(Usd) -> Result<(Usd, T), E>,
    ) -> Result<(Usd, T), E> {
        let mut current = self.available.load(Ordering::Acquire);
        loop {
            let (hold, extra) = decide(Usd::from_nanos(current))?;
            let hold_n = hold.nanos().clamp(0, current.max(0));
            match self.available.compare_exchange_weak(
                current,
                current - hold_n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((Usd::from_nanos(hold_n), extra)),
                Err(now) => current = now,
            }
        }
    }

    /// The refund epoch a hold made now is made under: read it before [`KeyState::try_hold`],
    /// and give it back to [`KeyState::settle_from`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// [`KeyState::settle_from`] for a hold made before any refund (the tests' shorthand).
    #[cfg(test)]
    pub fn settle(&self, hold: Usd, cost: Usd, at: DateTime<Utc>) -> Settled {
        self.settle_from(hold, 0, cost, at)
    }

    /// Settle a request whose hold was made under `epoch`: charge `cost` (capped at `hold`) and
    /// release the rest of the hold, less what refunds made while it was in flight are still
    /// owed ([`KeyState::take_or_owe`]), which leaves the budget instead.
    pub fn settle_from(&self, hold: Usd, epoch: u64, cost: Usd, at: DateTime<Utc>) -> Settled {
        let charge = Usd::from_nanos(cost.nanos().clamp(0, hold.nanos()));
        let released = hold.nanos() - charge.nanos();
        let clawed_for = self.claw(hold.nanos(), epoch, released);
        let clawed: i64 = clawed_for.iter().map(|(_, t)| t.nanos()).sum();
        if clawed > 0 {
            // Budget first: until `available` grows, nothing can hold the clawed money.
            self.budget.fetch_sub(clawed, Ordering::AcqRel);
        }
        let spent = self.spent.fetch_add(charge.nanos(), Ordering::AcqRel) + charge.nanos();
        self.available
            .fetch_add(released - clawed, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms
            .store(at.timestamp_millis(), Ordering::Relaxed);
        let budget = self.budget.load(Ordering::Acquire);
        Settled {
            charged: charge,
            remaining: Usd::from_nanos(budget - spent),
            clawed: Usd::from_nanos(clawed),
            clawed_for,
        }
    }

    /// Give a hold back untouched (the request never reached upstream).
    pub fn release(&self, hold: Usd) {
        self.available.fetch_add(hold.nanos(), Ordering::AcqRel);
    }

    /// Mark exhausted when the remaining balance is below `threshold`; true if this call did it.
    /// A top-up racing with this is never lost: after the switch the balance is read again, and
    /// the switch is undone if money arrived in between.
    pub fn mark_exhausted_below(&self, threshold: Usd) -> bool {
        if self.balance().remaining() >= threshold {
            return false;
        }
        let switched = self
            .status
            .compare_exchange(
                KeyStatus::Active.to_u8(),
                KeyStatus::Exhausted.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if switched && self.balance().remaining() >= threshold {
            let _ = self.status.compare_exchange(
                KeyStatus::Exhausted.to_u8(),
                KeyStatus::Active.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            return false;
        }
        switched
    }

    /// Undo a settled charge of `charged` whose ledger row could not be recorded (its answer
    /// was withheld): spent and the request count go back, the money is available again.
    pub fn uncharge(&self, charged: Usd) {
        let n = charged.nanos().max(0);
        self.spent.fetch_sub(n, Ordering::AcqRel);
        self.available.fetch_add(n, Ordering::AcqRel);
        let _ = self
            .requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
    }

    /// An exhausted key whose balance came back (a charge undone) is active again; a revoked
    /// one stays revoked.
    pub fn reactivate(&self) {
        let _ = self.status.compare_exchange(
            KeyStatus::Exhausted.to_u8(),
            KeyStatus::Active.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Revoke for good; true if it was not already revoked.
    pub fn revoke(&self) -> bool {
        self.status
            .swap(KeyStatus::Revoked.to_u8(), Ordering::AcqRel)
            != KeyStatus::Revoked.to_u8()
    }

    /// Add budget; an exhausted key that then has at least `below` left (what one request of
    /// its plan needs) becomes active again. Returns the new status.
    pub fn top_up(&self, amount: Usd, below: Usd) -> KeyStatus {
        // Saturating, never wrapping to a negative balance (callers keep budgets far below).
        let add = |v: i64| Some(v.saturating_add(amount.nanos()));
        let _ = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, add);
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, add);
        // Active again only if it pays for a request (as the store decides): a key made active
        // for a moment had its exhausted notice re-armed and sent again.
        if self.balance().remaining() >= below {
            let _ = self.status.compare_exchange(
                KeyStatus::Exhausted.to_u8(),
                KeyStatus::Active.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        self.status()
    }

    /// Is the remaining balance below a fifth of the budget?
    pub fn is_low(&self) -> bool {
        let b = self.balance();
        b.remaining().nanos().saturating_mul(LOW_BALANCE_DIVISOR) < b.budget.nanos()
    }

    /// Note that `notice` is due for the current crossing; true the first time only, so one
    /// crossing queues one notice however many requests settle at once.
    pub fn first_crossing(&self, notice: Notice) -> bool {
        self.notices.fetch_or(notice.bit(), Ordering::AcqRel) & notice.bit() == 0
    }

    /// Re-arm the notices whose threshold the balance is above again (after a top-up).
    pub fn rearm_notices(&self) {
        let mut clear = 0;
        if !self.is_low() {
            clear |= Notice::LowBalance.bit();
        }
        if self.status() == KeyStatus::Active {
            clear |= Notice::Exhausted.bit();
        }
        self.notices.fetch_and(!clear, Ordering::AcqRel);
    }

    /// The notice state loaded from the database at start-up.
    pub fn restore_notices(&self, low_sent: bool, exhausted_sent: bool) {
        let mut bits = 0;
        if low_sent {
            bits |= Notice::LowBalance.bit();
        }
        if exhausted_sent {
            bits |= Notice::Exhausted.bit();
        }
        self.notices.store(bits, Ordering::Release);
    }
}
