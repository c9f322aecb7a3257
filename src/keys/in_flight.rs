//! A key's requests in flight, counted against its plan's `max_in_flight`: every upstream
//! account's limit of requests in flight is shared by all keys, and one key holding long
//! streams could otherwise take it all, leaving every other customer a 503.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::KeyState;

/// One request of a key in flight; dropped (the request settled, or refused after admission),
/// it leaves room for the next.
pub struct KeySlot(Arc<KeyState>);

impl KeyState {
    /// Take one of at most `cap` places for a request of this key; `None` when all are taken.
    /// Never more than `cap` at once, whatever the concurrency, and never a refusal while one
    /// is free (a compare-and-swap: adding first and giving back showed the count above the
    /// cap for a moment, and refused a request meanwhile; found by a review).
    pub fn enter(self: &Arc<Self>, cap: u32) -> Option<KeySlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| KeySlot(Arc::clone(self)))
    }

    /// Its requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `cap` places, under any concurrency, each given back when dropped.
    #[test]
    fn a_key_never_has_more_places_than_its_cap() {
        let record = crate::keys::KeyRecord::for_tests("key_a", crate::money::Usd::from_dollars(1));
        let key = Arc::new(KeyState::from_record(record, 60));
        let first = key.enter(2).unwrap();
        let second = key.enter(2).unwrap();
        assert!(key.enter(2).is_none());
        assert_eq!(key.in_flight(), 2);
        drop(first);
        let third = key.enter(2).unwrap();
        assert!(key.enter(2).is_none());
        drop((second, third));
        assert_eq!(key.in_flight(), 0);

        let taken = std::sync::Mutex::new(Vec::new());
        let peak = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        if let Some(slot) = key.enter(3) {
                            peak.fetch_max(key.in_flight(), Ordering::AcqRel);
                            taken.lock().unwrap().push(());
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert!(!taken.lock().unwrap().is_empty());
        assert_eq!(key.in_flight(), 0);
    }
}
