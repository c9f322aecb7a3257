//! The wall clock in unix milliseconds, for the timestamps of events and rows. Read without
//! chrono's calendar conversion: `Utc::now()` builds a date and a time (~200 instructions a
//! call under callgrind), and a request read the clock this way some eight times.

use std::sync::OnceLock;
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

    /// Positive from the first reading, and never going back.
    #[test]
    fn the_monotonic_reading_starts_above_zero_and_only_grows() {
        let first = super::mono_ms();
        assert!(first >= 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(super::mono_ms() >= first + 5);
    }
}
