//! What refunds take back from a live key: at once what is available, and what requests in
//! flight hold as a debt those holds pay as they settle ([`KeyState::take_or_owe`]).

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::KeyState;
use crate::money::Usd;

/// What one refund is still owed by the holds in flight when it came (see [`KeyState::take_or_owe`]).
#[derive(Debug)]
pub(super) struct Debt {
    /// The refunded order (its budget-history lines name it).
    pub(super) order_id: String,
    /// Still owed, in nano-USD.
    pub(super) amount: i64,
    /// Holds made under an epoch below this one were in flight at the refund.
    pub(super) epoch: u64,
    /// What those holds held then, less those of them settled since: once that much has
    /// settled, every hold the refund could count on has, and what is still owed is forgiven.
    pub(super) holds: i64,
}

impl KeyState {
    /// Take from `released` (what a settling hold of `hold`, made under `epoch`, gives back)
    /// what the refunds made while it was in flight are owed, oldest first; returns what was
    /// taken for each.
    pub(super) fn claw(&self, hold: i64, epoch: u64, released: i64) -> Vec<(String, Usd)> {
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
}
