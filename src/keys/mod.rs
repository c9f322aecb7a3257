//! Keys in memory: the table the request path authenticates against, and each key's balance;
//! key identification (which key a request presents) in [`identify`].
//!
//! The database is the record, this table is the working copy: it is loaded at start-up and
//! every change goes to both (memory first, then the writer). The request path only ever reads
//! this table, with no lock: the maps sit behind an `ArcSwap` (copy on write — keys are created
//! rarely) and each balance is a set of atomics changed by compare-and-swap.

pub mod identify;
pub mod seal;
pub mod token;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};

use crate::money::Usd;

pub use crate::status::KeyStatus;

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
    /// SHA-256 of the full key.
    pub hash: [u8; 32],
    /// Display prefix.
    pub prefix: String,
    /// Plan id.
    pub plan: String,
    /// Buyer's email, when sold.
    pub email: Option<String>,
    /// Operator's note.
    pub note: Option<String>,
    /// Paying order.
    pub order_id: Option<String>,
    /// Minted at.
    pub created_at: DateTime<Utc>,
    status: AtomicU8,
    budget: AtomicI64,
    spent: AtomicI64,
    available: AtomicI64,
    requests: AtomicU64,
    last_used_ms: AtomicI64,
    limiter: Limiter,
    rpm: u32,
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
        let quota = Quota::per_minute(NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN));
        let available = r.budget.saturating_sub(r.spent).nanos().max(0);
        KeyState {
            id: r.id,
            hash: r.hash,
            prefix: r.prefix,
            plan: r.plan,
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
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            rpm,
        }
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
        let per_request = std::time::Duration::from_secs(60) / self.rpm;
        match self.limiter.check() {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                RateCheck {
                    allowed: true,
                    limit: self.rpm,
                    remaining,
                    reset: per_request * self.rpm.saturating_sub(remaining),
                }
            }
            Err(not_until) => RateCheck {
                allowed: false,
                limit: self.rpm,
                remaining: 0,
                reset: not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock())),
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

    /// Settle a request: charge `cost` (capped at `hold`) and release the rest of the hold.
    /// Returns the charge and the remaining balance (budget − spent) after it.
    pub fn settle(&self, hold: Usd, cost: Usd, at: DateTime<Utc>) -> (Usd, Usd) {
        let charge = Usd::from_nanos(cost.nanos().clamp(0, hold.nanos()));
        let spent = self.spent.fetch_add(charge.nanos(), Ordering::AcqRel) + charge.nanos();
        self.available
            .fetch_add(hold.nanos() - charge.nanos(), Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms
            .store(at.timestamp_millis(), Ordering::Relaxed);
        let budget = self.budget.load(Ordering::Acquire);
        (charge, Usd::from_nanos(budget - spent))
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

    /// Revoke for good; true if it was not already revoked.
    pub fn revoke(&self) -> bool {
        self.status
            .swap(KeyStatus::Revoked.to_u8(), Ordering::AcqRel)
            != KeyStatus::Revoked.to_u8()
    }

    /// Add budget; an exhausted key becomes active again. Returns the new status.
    pub fn top_up(&self, amount: Usd) -> KeyStatus {
        self.budget.fetch_add(amount.nanos(), Ordering::AcqRel);
        self.available.fetch_add(amount.nanos(), Ordering::AcqRel);
        let _ = self.status.compare_exchange(
            KeyStatus::Exhausted.to_u8(),
            KeyStatus::Active.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.status()
    }
}

#[derive(Default)]
struct Maps {
    by_hash: HashMap<[u8; 32], Arc<KeyState>>,
    by_id: HashMap<String, Arc<KeyState>>,
}

/// Every key, by hash (the request path) and by id (admin and billing).
#[derive(Default)]
pub struct KeyTable {
    maps: ArcSwap<Maps>,
}

impl KeyTable {
    /// A table holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = KeyState>) -> KeyTable {
        let mut maps = Maps::default();
        for k in keys {
            let k = Arc::new(k);
            maps.by_hash.insert(k.hash, k.clone());
            maps.by_id.insert(k.id.clone(), k);
        }
        KeyTable {
            maps: ArcSwap::from_pointee(maps),
        }
    }

    /// Look a key up by the SHA-256 of its full text.
    pub fn by_hash(&self, hash: &[u8; 32]) -> Option<Arc<KeyState>> {
        self.maps.load().by_hash.get(hash).cloned()
    }

    /// Look a key up by id.
    pub fn by_id(&self, id: &str) -> Option<Arc<KeyState>> {
        self.maps.load().by_id.get(id).cloned()
    }

    /// Add a key (copy on write: keys are minted rarely, read on every request).
    pub fn insert(&self, key: Arc<KeyState>) {
        self.maps.rcu(|old| {
            let mut by_hash = old.by_hash.clone();
            let mut by_id = old.by_id.clone();
            by_hash.insert(key.hash, key.clone());
            by_id.insert(key.id.clone(), key.clone());
            Maps { by_hash, by_id }
        });
    }

    /// Every key, oldest first.
    pub fn all(&self) -> Vec<Arc<KeyState>> {
        let mut v: Vec<_> = self.maps.load().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.maps.load().by_id.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                            let (charged, _) = k.settle(h, Usd::from_nanos(5), Utc::now());
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
        let (charged, remaining) = k.settle(h, Usd::from_nanos(5000), Utc::now());
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
