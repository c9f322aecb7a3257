//! The wall clock in unix milliseconds, for the timestamps of events and rows. Read without
//! chrono's calendar conversion: `Utc::now()` builds a date and a time (~200 instructions a
//! call under callgrind), and a request read the clock this way some eight times.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (0 for a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds on the monotonic clock since the process first asked (at least 1), for
/// deadlines kept in an atomic: unlike [`now_ms`], a step of the wall clock (NTP, an operator's
/// `date -s`) does not move it — an account's rest kept on the wall clock lasted as long as a
/// step back (found by an independent check).
pub fn mono_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis())
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1)
}

/// A log line that may repeat many times a second (an accept failing while descriptors are
/// exhausted, a file that cannot be renamed every tick) said at most once a minute, with how
/// many times it was held back: 39 lines a second filled the journal while the daemon was out
/// of descriptors (found by an independent check).
pub struct Rationed {
    /// When last said ([`mono_ms`]; 0: never).
    said_ms: AtomicI64,
    held: AtomicU64,
}

impl Rationed {
    /// Never said yet.
    pub const fn new() -> Rationed {
        Rationed {
            said_ms: AtomicI64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether to say it now (`Some`: how many times it was held back since last said).
    pub fn due(&self) -> Option<u64> {
        self.due_at(mono_ms())
    }

    fn due_at(&self, now: i64) -> Option<u64> {
        let last = self.said_ms.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < 60_000
            || self
                .said_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.held.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        Some(self.held.swap(0, Ordering::AcqRel))
    }
}

impl Default for Rationed {
    fn default() -> Rationed {
        Rationed::new()
    }
}

#[cfg(test)]
mod tests {
    /// The same moment as chrono's reading, to the millisecond (a few apart at most: two
    /// readings).
    #[test]
    fn agrees_with_chrono() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = super::now_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    /// Said the first time, then once a minute with the count held back meanwhile.
    #[test]
    fn a_rationed_line_is_said_once_a_minute_with_what_was_held_back() {
        let r = super::Rationed::new();
        assert_eq!(r.due_at(1_000), Some(0));
        assert_eq!(r.due_at(1_001), None);
        assert_eq!(r.due_at(60_999), None);
        assert_eq!(r.due_at(61_000), Some(2));
        assert_eq!(r.due_at(61_001), None);
        assert_eq!(r.due_at(200_000), Some(1));
    }

    /// Positive from the first reading, and never going back.
    #[test]
    fn the_monotonic_reading_starts_above_zero_and_only_grows() {
        let first = super::mono_ms();
        assert!(first >= 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(super::mono_ms() >= first + 5);
    }
}
