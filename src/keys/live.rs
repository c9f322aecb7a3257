//! A key's live state ([`KeyState`]): its balance as atomics changed by compare-and-swap, its
//! rate limiter, and what self-service may change while requests hold it — the plan (and its
//! limiter), the display prefix, the notice bits — plus the stored record it is built from.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};

use crate::money::Usd;

use crate::status::KeyStatus;

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
    rpm: AtomicU32,
    /// The notices of the current crossing already queued ([`Notice`] bits).
    notices: AtomicU8,
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

/// What one refund is still owed by the holds in flight when it came (see [`KeyState::take_or_owe`]).
#[derive(Debug)]
struct Debt {
    /// The refunded order (its budget-history lines name it).
    order_id: String,
    /// Still owed, in nano-USD.
    amount: i64,
    /// Holds made under an epoch below this one were in flight at the refund.
    epoch: u64,
    /// What those holds held then, less those of them settled since: once that much has
    /// settled, every hold the refund could count on has, and what is still owed is forgiven.
    holds: i64,
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
            rpm: AtomicU32::new(rpm),
            notices: AtomicU8::new(0),
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

    /// Take from `released` (what a settling hold of `hold`, made under `epoch`, gives back)
    /// what the refunds made while it was in flight are owed, oldest first; returns what was
    /// taken for each.
    fn claw(&self, hold: i64, epoch: u64, released: i64) -> Vec<(String, Usd)> {
        // One load when nothing is owed, as almost always: the request path's only cost.
        if self.owed.load(Ordering::Acquire) <= 0 {
            return Vec::new();
        }
        let mut debts = self.owing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut left = released.max(0);
        let mut taken = Vec::new();
        // A hold made after a refund is paid from money that refund never covered.
        for d in debts.iter_mut().filter(|d| epoch < d.epoch) {
            let take = d.amount.min(left);
            if take > 0 {
                d.amount -= take;
                left -= take;
                taken.push((d.order_id.clone(), Usd::from_nanos(take)));
            }
            d.holds -= hold;
            if d.holds <= 0 && d.amount > 0 {
                tracing::info!(
                    key_id = %self.id,
                    order_id = %d.order_id,
                    forgiven = %Usd::from_nanos(d.amount),
                    "the holds in flight at a refund have settled; the rest it was owed is forgiven"
                );
                d.amount = 0;
            }
        }
        debts.retain(|d| d.amount > 0);
        self.owed
            .store(debts.iter().map(|d| d.amount).sum(), Ordering::Release);
        taken
    }

    /// A refund of `order_id` wanting `want` back: what is available is taken now, and the
    /// rest, up to what requests in flight hold (less what earlier refunds are owed by them), is
    /// owed — taken from what those holds give back as they settle (not what they spend), from
    /// theirs only, not from holds made later; once holds worth what they held now have
    /// settled, what is still owed is forgiven. One step under the debts' lock: a request that
    /// settles meanwhile gives its hold back to `available`, where the next look takes it
    /// (taken and owed apart, a settlement between the two let it escape both).
    /// Returns (taken, owed, the debt's epoch for [`KeyState::cancel_debt`]).
    pub fn take_or_owe(&self, want: Usd, order_id: &str) -> (Usd, Usd, u64) {
        let mut debts = self.owing.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let want = want.nanos().max(0);
        let already: i64 = debts.iter().map(|d| d.amount).sum();
        let (mut taken, mut owed, mut held) = (0i64, 0i64, 0i64);
        for _ in 0..4 {
            taken += self.take_back(Usd::from_nanos(want - taken - owed)).nanos();
            if want - taken - owed <= 0 {
                break;
            }
            held = self.balance().held.nanos();
            owed += (want - taken - owed).clamp(0, (held - already - owed).max(0));
            // Short still: only if money moved from held to available in between.
            if want - taken - owed <= 0 || self.available.load(Ordering::Acquire) <= 0 {
                break;
            }
        }
        if owed > 0 {
            debts.push(Debt {
                order_id: order_id.to_string(),
                amount: owed,
                epoch,
                holds: held,
            });
            self.owed.fetch_add(owed, Ordering::AcqRel);
        }
        (Usd::from_nanos(taken), Usd::from_nanos(owed), epoch)
    }

    /// Withdraw the debt [`KeyState::take_or_owe`] made under `epoch` (its refund could not be
    /// recorded); what the debt was already paid stays taken.
    pub fn cancel_debt(&self, epoch: u64) {
        let mut debts = self.owing.lock().unwrap_or_else(PoisonError::into_inner);
        debts.retain(|d| d.epoch != epoch);
        self.owed
            .store(debts.iter().map(|d| d.amount).sum(), Ordering::Release);
    }

    /// What the refund of `order_id` is still owed by holds in flight.
    pub fn owed_to(&self, order_id: &str) -> Usd {
        let debts = self.owing.lock().unwrap_or_else(PoisonError::into_inner);
        Usd::from_nanos(
            debts
                .iter()
                .filter(|d| d.order_id == order_id)
                .map(|d| d.amount)
                .sum(),
        )
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

    /// Add budget; an exhausted key becomes active again. Returns the new status.
    pub fn top_up(&self, amount: Usd) -> KeyStatus {
        // Saturating, never wrapping to a negative balance (callers keep budgets far below).
        let add = |v: i64| Some(v.saturating_add(amount.nanos()));
        let _ = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, add);
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, add);
        let _ = self.status.compare_exchange(
            KeyStatus::Exhausted.to_u8(),
            KeyStatus::Active.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.status()
    }

    /// Take back up to `amount` of budget (a refunded top-up), never more than is available
    /// now: money held by requests in flight stays theirs, so the balance cannot go below zero
    /// when they settle. Returns what was taken.
    pub fn take_back(&self, amount: Usd) -> Usd {
        let want = amount.nanos().max(0);
        let mut current = self.available.load(Ordering::Acquire);
        loop {
            let take = want.min(current.max(0));
            match self.available.compare_exchange_weak(
                current,
                current - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.budget.fetch_sub(take, Ordering::AcqRel);
                    return Usd::from_nanos(take);
                }
                Err(now) => current = now,
            }
        }
    }

    /// Give back what [`KeyState::take_back`] took (its record could not be written).
    pub fn untake(&self, amount: Usd) {
        self.budget.fetch_add(amount.nanos(), Ordering::AcqRel);
        self.available.fetch_add(amount.nanos(), Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(budget: i64) -> KeyRecord {
        KeyRecord {
            id: "key_test".into(),
            hash: [1; 32],
            sealed: vec![],
            prefix: "sk-gateway-Test…".into(),
            plan: "trial".into(),
            status: KeyStatus::Active,
            budget: Usd::from_nanos(budget),
            spent: Usd::ZERO,
            requests: 0,
            email: None,
            note: None,
            order_id: None,
            created_at: Utc::now(),
            last_used_at: None,
        }
    }

    #[test]
    fn holds_never_exceed_the_balance_under_contention() {
        let k = Arc::new(KeyState::from_record(record(1_000_000), 60));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let k = k.clone();
                std::thread::spawn(move || {
                    let mut got = 0i64;
                    for _ in 0..10_000 {
                        let r: Result<(Usd, ()), ()> = k.try_hold(|avail| {
                            if avail.nanos() >= 7 {
                                Ok((Usd::from_nanos(7), ()))
                            } else {
                                Err(())
                            }
                        });
                        if let Ok((h, ())) = r {
                            got += h.nanos();
                            let charged = k.settle(h, Usd::from_nanos(5), Utc::now()).charged;
                            assert_eq!(charged.nanos(), 5);
                        }
                    }
                    got
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let b = k.balance();
        assert!(b.remaining().nanos() >= 0);
        assert_eq!(b.held, Usd::ZERO);
        assert!(k.available().nanos() >= 0);
        assert_eq!(k.available(), b.remaining());
    }

    #[test]
    fn settle_caps_at_the_hold_and_topup_reactivates() {
        let k = KeyState::from_record(record(1000), 60);
        let (h, ()) = k.try_hold(|a| Ok::<_, ()>((a, ()))).unwrap();
        assert_eq!(h.nanos(), 1000);
        let Settled {
            charged, remaining, ..
        } = k.settle(h, Usd::from_nanos(5000), Utc::now());
        assert_eq!(charged.nanos(), 1000);
        assert_eq!(remaining, Usd::ZERO);
        assert!(k.mark_exhausted_below(Usd::from_nanos(600)));
        assert!(!k.mark_exhausted_below(Usd::from_nanos(600)));
        assert_eq!(k.status(), KeyStatus::Exhausted);
        assert_eq!(k.top_up(Usd::from_nanos(10)), KeyStatus::Active);
        assert_eq!(k.available().nanos(), 10);
        assert!(k.revoke());
        assert_eq!(k.top_up(Usd::from_nanos(10)), KeyStatus::Revoked);
    }

    #[test]
    fn take_back_never_takes_what_requests_hold() {
        let k = KeyState::from_record(record(1000), 60);
        let (h, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(300), ())))
            .unwrap();
        // 700 available, 300 held: a refund of 900 takes the 700 only.
        assert_eq!(k.take_back(Usd::from_nanos(900)).nanos(), 700);
        assert_eq!(k.available(), Usd::ZERO);
        let Settled {
            charged, remaining, ..
        } = k.settle(h, Usd::from_nanos(300), Utc::now());
        assert_eq!((charged.nanos(), remaining.nanos()), (300, 0));
        k.untake(Usd::from_nanos(50));
        assert_eq!(k.balance().remaining().nanos(), 50);
    }

    /// What a refund could not take because requests held it is owed: taken from what those
    /// holds give back, never from what they spend, and never more than was owed.
    #[test]
    fn a_refund_owed_is_taken_from_released_holds_only() {
        let k = KeyState::from_record(record(1000), 60);
        let (a, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(600), ())))
            .unwrap();
        let (b, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(300), ())))
            .unwrap();
        // 100 available, 900 held: a refund of 800 takes 100 now and is owed 700.
        let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(800), "ord_x");
        assert_eq!((taken.nanos(), owed.nanos()), (100, 700));
        // The first request spends 50 of its 600: the 550 it gives back go to the refund.
        let s = k.settle(a, Usd::from_nanos(50), Utc::now());
        assert_eq!((s.charged.nanos(), s.clawed.nanos()), (50, 550));
        assert_eq!(k.available(), Usd::ZERO);
        // The second spends 200 of 300: the 100 it gives back go too (50 left owed).
        let s = k.settle(b, Usd::from_nanos(200), Utc::now());
        assert_eq!((s.charged.nanos(), s.clawed.nanos()), (200, 100));
        let bal = k.balance();
        assert_eq!(
            (bal.budget.nanos(), bal.spent.nanos(), bal.held.nanos()),
            (250, 250, 0)
        );
        assert_eq!(bal.remaining(), Usd::ZERO);
        // Owed no more than what is held: a later hold's release is the customer's again.
        let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(1_000), "ord_x");
        assert_eq!((taken, owed), (Usd::ZERO, Usd::ZERO));
        k.top_up(Usd::from_nanos(100));
        let (c, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(100), ())))
            .unwrap();
        // The 50 left owed died with the holds in flight at the refund (both settled): a hold
        // paid from the new top-up gives back all it did not spend.
        let s = k.settle(c, Usd::ZERO, Utc::now());
        assert_eq!(s.clawed.nanos(), 0);
        assert_eq!(k.available().nanos(), 100);
    }

    /// A refund is owed only by the holds in flight when it came: a hold made after it (from
    /// credit bought since) gives back all it does not spend, holds that spend all they hold
    /// pay nothing back, and once they have settled nothing more is taken. Two refunds owed at
    /// once are each paid under their own order, oldest first.
    #[test]
    fn what_a_refund_is_owed_ends_with_the_holds_in_flight_at_the_refund() {
        let k = KeyState::from_record(record(1000), 60);
        let ea = k.epoch();
        let (a, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(1000), ())))
            .unwrap();
        let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(500), "ord_y");
        assert_eq!((taken.nanos(), owed.nanos()), (0, 500));
        assert_eq!(k.owed_to("ord_y").nanos(), 500);
        // Credit bought since, held and mostly given back: none of it goes to the refund.
        k.top_up(Usd::from_nanos(400));
        let eb = k.epoch();
        let (b, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(400), ())))
            .unwrap();
        let s = k.settle_from(b, eb, Usd::from_nanos(300), Utc::now());
        assert_eq!(s.clawed.nanos(), 0);
        // The first spends everything: nothing to give back, and what is owed is forgiven.
        let s = k.settle_from(a, ea, Usd::from_nanos(1000), Utc::now());
        assert_eq!(s.clawed.nanos(), 0);
        assert_eq!(k.owed_to("ord_y"), Usd::ZERO);
        let bal = k.balance();
        assert_eq!((bal.budget.nanos(), bal.spent.nanos()), (1400, 1300));

        // Two refunds owed at once, by one hold: each gets its share under its own order.
        let k = KeyState::from_record(record(1000), 60);
        let e = k.epoch();
        let (h, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(1000), ())))
            .unwrap();
        assert_eq!(k.take_or_owe(Usd::from_nanos(300), "ord_1").1.nanos(), 300);
        assert_eq!(
            k.take_or_owe(Usd::from_nanos(900), "ord_2").1.nanos(),
            700,
            "at most what is held"
        );
        let s = k.settle_from(h, e, Usd::from_nanos(100), Utc::now());
        assert_eq!(
            s.clawed_for,
            vec![
                ("ord_1".to_string(), Usd::from_nanos(300)),
                ("ord_2".to_string(), Usd::from_nanos(600)),
            ]
        );
        assert_eq!(s.clawed.nanos(), 900);
        assert_eq!(
            k.owed_to("ord_2"),
            Usd::ZERO,
            "the rest forgiven with the hold"
        );
    }

    /// A refund takes what is available and owes the rest of what it wants up to what is
    /// held, in one step; a debt whose refund could not be recorded is withdrawn.
    #[test]
    fn take_or_owe_takes_what_is_available_and_owes_the_rest() {
        let k = KeyState::from_record(record(1000), 60);
        let e = k.epoch();
        let (h, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(700), ())))
            .unwrap();
        let (taken, owed, debt) = k.take_or_owe(Usd::from_nanos(500), "ord_z");
        assert_eq!((taken.nanos(), owed.nanos()), (300, 200));
        assert_eq!(k.owed_to("ord_z").nanos(), 200);
        k.cancel_debt(debt);
        assert_eq!(k.owed_to("ord_z"), Usd::ZERO);
        let (_, owed, _) = k.take_or_owe(Usd::from_nanos(1000), "ord_z");
        assert_eq!(owed.nanos(), 700, "at most what is held");
        let s = k.settle_from(h, e, Usd::from_nanos(100), Utc::now());
        assert_eq!(
            s.clawed_for,
            vec![("ord_z".to_string(), Usd::from_nanos(600))]
        );
        assert_eq!(k.balance().remaining(), Usd::ZERO);
    }

    #[test]
    fn notices_fire_once_per_crossing_and_rearm_above_the_threshold() {
        let k = KeyState::from_record(record(1000), 60);
        assert!(!k.is_low());
        let (h, ()) = k
            .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(900), ())))
            .unwrap();
        k.settle(h, Usd::from_nanos(900), Utc::now());
        assert!(k.is_low());
        assert!(k.first_crossing(Notice::LowBalance));
        assert!(!k.first_crossing(Notice::LowBalance));
        assert!(k.first_crossing(Notice::Exhausted));
        k.rearm_notices();
        assert!(
            !k.first_crossing(Notice::LowBalance),
            "still low: not re-armed"
        );
        k.top_up(Usd::from_nanos(1000));
        k.rearm_notices();
        assert!(k.first_crossing(Notice::LowBalance));
        assert!(k.first_crossing(Notice::Exhausted));
    }

    #[test]
    fn a_plan_change_brings_its_rpm_and_a_rekey_keeps_the_state() {
        let k = Arc::new(KeyState::from_record(record(1000), 1));
        assert!(k.check_rate().allowed);
        assert!(!k.check_rate().allowed);
        k.set_plan("pro".into(), 3);
        assert_eq!(k.plan(), "pro");
        let c = k.check_rate();
        assert!(c.allowed);
        assert_eq!((c.limit, c.remaining), (3, 2));

        let table = crate::keys::KeyTable::new([([1; 32], KeyState::from_record(record(5), 60))]);
        let before = table.by_hash(&[1; 32]).unwrap();
        assert!(table.rekey("key_test", [2; 32]));
        assert!(table.by_hash(&[1; 32]).is_none());
        let after = table.by_hash(&[2; 32]).unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        assert!(!table.rekey("key_none", [3; 32]));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn rate_limit_allows_rpm_then_refuses() {
        let k = KeyState::from_record(record(1000), 3);
        for left in [2, 1, 0] {
            let c = k.check_rate();
            assert!(c.allowed);
            assert_eq!(c.remaining, left);
        }
        let c = k.check_rate();
        assert!(!c.allowed);
        assert!(c.reset > std::time::Duration::from_secs(10));
    }
}
