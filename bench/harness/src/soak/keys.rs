//! The customers' keys as the soak knows them: each key's current text (rotations change it),
//! what kind of customer uses it, and the budget it must have at the end by the soak's own
//! account (its first budget plus every top-up the soak completed), to compare with the
//! daemon's figures.

use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::Rng;
use rand::seq::IndexedRandom;

/// What a key is for in the load, which decides the refusals it may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// A large budget on the `pro` plan: never out of money, never rate-limited; rotated now
    /// and then.
    Big,
    /// A `trial` key with a tiny budget (bought, or made by the operator): runs dry (402) and
    /// is topped up; never rotated.
    Small,
    /// The `starter` key that one task sends too fast on purpose (429).
    Limited,
}

/// One key.
#[derive(Clone, Debug)]
pub struct Slot {
    /// `key_…`
    pub id: String,
    /// The text that works now.
    pub text: String,
    /// Changes when a rotation starts and when it ends.
    pub generation: u64,
    /// Being rotated: its old text may already be refused.
    pub rotating: bool,
    /// What it is for.
    pub tier: Tier,
    /// The budget it must end with, in nano-USD.
    pub budget_nanos: i64,
}

/// A key taken for one request: which, and as it was then.
#[derive(Clone, Debug)]
pub struct Pick {
    /// Its place in the pool.
    pub index: usize,
    /// The text sent.
    pub text: String,
    /// Its generation then.
    pub generation: u64,
    /// It was being rotated then.
    pub rotating: bool,
    /// What it is for.
    pub tier: Tier,
}

/// Every key of the run.
#[derive(Default)]
pub struct KeyPool {
    slots: Mutex<Vec<Slot>>,
}

impl KeyPool {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panicking request task must not take the books down with it.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a key; its index.
    pub fn add(&self, id: String, text: String, tier: Tier, budget_nanos: i64) -> usize {
        let mut slots = self.lock();
        slots.push(Slot {
            id,
            text,
            generation: 0,
            rotating: false,
            tier,
            budget_nanos,
        });
        slots.len() - 1
    }

    /// A key of `tier`, chosen at random.
    pub fn pick(&self, tier: Tier, rng: &mut impl Rng) -> Option<Pick> {
        let slots = self.lock();
        let of_tier: Vec<usize> = (0..slots.len())
            .filter(|i| slots[*i].tier == tier)
            .collect();
        let index = *of_tier.choose(rng)?;
        let s = &slots[index];
        Some(Pick {
            index,
            text: s.text.clone(),
            generation: s.generation,
            rotating: s.rotating,
            tier: s.tier,
        })
    }

    /// Whether the key's text may have changed since `p` was taken (a 401 is then expected).
    pub fn rotated_since(&self, p: &Pick) -> bool {
        p.rotating
            || self
                .lock()
                .get(p.index)
                .is_some_and(|s| s.generation != p.generation)
    }

    /// A rotation of key `index` is about to be asked for: its text now, or `None` when
    /// another rotation of it is under way (two at once would each see the other's result as
    /// an unknown key).
    pub fn begin_rotation(&self, index: usize) -> Option<String> {
        let mut slots = self.lock();
        let s = slots.get_mut(index).filter(|s| !s.rotating)?;
        s.rotating = true;
        s.generation += 1;
        Some(s.text.clone())
    }

    /// The rotation ended: the new text (or `None` if it failed, and the old text stays).
    pub fn end_rotation(&self, index: usize, text: Option<String>) {
        if let Some(s) = self.lock().get_mut(index) {
            if let Some(t) = text {
                s.text = t;
            }
            s.rotating = false;
            s.generation += 1;
        }
    }

    /// The soak completed a top-up of `nanos` on key `index`.
    pub fn credit(&self, index: usize, nanos: i64) {
        if let Some(s) = self.lock().get_mut(index) {
            s.budget_nanos += nanos;
        }
    }

    /// Every key as it is now.
    pub fn all(&self) -> Vec<Slot> {
        self.lock().clone()
    }
}
