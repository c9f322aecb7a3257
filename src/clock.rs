//! The wall clock in unix milliseconds, for the timestamps of events and rows. Read without
//! chrono's calendar conversion: `Utc::now()` builds a date and a time (~200 instructions a
//! call under callgrind), and a request read the clock this way some eight times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (0 for a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
}
