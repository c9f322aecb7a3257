//! The wall clock in unix milliseconds, for the timestamps of events and rows. Read without
//! chrono's calendar conversion: `Utc::now()` builds a date and a time (~200 instructions a
//! call under callgrind), and a request read the clock this way some eight times.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// How far apart the machine's clock and DeepSeek's may be before the log says so: a `Date`
/// header is to the second and written before the answer travels, so a few seconds apart is
/// nothing; a minute is a clock that is not kept in time.
const SKEW_TOLERATED_MS: i64 = 60_000;

/// How far the machine's clock is ahead of the one that wrote `date` (an HTTP `Date` header,
/// read at `now_ms`), in ms (behind: negative), when more than [`SKEW_TOLERATED_MS`]; `None`
/// when they agree or the header cannot be read.
pub fn skew_beyond_tolerance(date: &str, now_ms: i64) -> Option<i64> {
    skew_of(date, now_ms).filter(|skew| !tolerated(*skew))
}

/// How far the machine's clock (at `now_ms`) is ahead of the one that wrote `date`, in ms;
/// `None` when the header cannot be read.
fn skew_of(date: &str, now_ms: i64) -> Option<i64> {
    let theirs = httpdate::parse_http_date(date.trim()).ok()?;
    let theirs_ms = i64::try_from(theirs.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(now_ms.saturating_sub(theirs_ms))
}

/// Whether a skew is within [`SKEW_TOLERATED_MS`]. Their header drops the milliseconds: up to
/// a second of ours is theirs rounded down.
fn tolerated(skew: i64) -> bool {
    skew.saturating_sub(999).abs() <= SKEW_TOLERATED_MS || skew.abs() <= SKEW_TOLERATED_MS
}

/// The machine's clock checked against DeepSeek's `Date` header (with each balance reading).
/// Peak and off-peak prices, day totals, usage dates and order times all follow the machine's
/// clock, and a VPS whose time is not synchronised (or whose hardware clock is kept in local
/// time) bills every request of the hours it is off at the other period's price, silently
/// (found by an independent check). Said at error level when first seen and then once an
/// hour while it lasts, and once when the clocks agree again.
pub fn check_against_upstream(date: Option<&str>) {
    static OFF: AtomicBool = AtomicBool::new(false);
    /// When last said ([`mono_ms`]).
    static SAID_MS: AtomicI64 = AtomicI64::new(0);
    let Some(date) = date else { return };
    let Some(skew_ms) = skew_of(date, now_ms()) else {
        return;
    };
    if tolerated(skew_ms) {
        if OFF.swap(false, Ordering::AcqRel) {
            tracing::warn!("this machine's clock agrees with DeepSeek's again");
        }
        return;
    }
    let first = !OFF.swap(true, Ordering::AcqRel);
    let now = mono_ms();
    if first || now.saturating_sub(SAID_MS.load(Ordering::Acquire)) >= 3_600_000 {
        SAID_MS.store(now, Ordering::Release);
        tracing::error!(
            ahead_secs = skew_ms / 1000,
            deepseek_date = date,
            "this machine's clock is off DeepSeek's by more than a minute (ahead_secs < 0: \
             behind): peak and off-peak prices are chosen by it, so a request made within that \
             much of a period's start or end is billed at the other period's price; turn on \
             time sync (`timedatectl set-ntp true`) and check `timedatectl` says the clock is \
             synchronised"
        );
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

    /// A clock a minute or less from DeepSeek's `Date` passes (the header's second rounded
    /// down); more, either way, is told with how far ahead; an unreadable header says nothing.
    #[test]
    fn a_clock_more_than_a_minute_off_the_upstream_date_is_told() {
        // Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let theirs = 784_111_777_000;
        let skew = |ms: i64| super::skew_beyond_tolerance(date, theirs + ms);
        assert_eq!(skew(0), None);
        assert_eq!(skew(999), None);
        assert_eq!(skew(60_999), None);
        assert_eq!(skew(-60_000), None);
        assert_eq!(skew(61_000), Some(61_000));
        assert_eq!(skew(-60_001), Some(-60_001));
        assert_eq!(skew(8 * 3_600_000), Some(8 * 3_600_000));
        assert_eq!(super::skew_beyond_tolerance("yesterday", theirs), None);
        assert_eq!(super::skew_beyond_tolerance("", theirs), None);
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
