//! Price periods: which of a model's two prices (off-peak, peak) applies at a given UTC instant.
//!
//! The period is chosen once, when a request starts, and recorded on its ledger row; a request
//! that crosses a window boundary keeps the price it started with.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::money::{TokenPrices, Usd};

/// Off-peak or peak; `as usize` is the index into a config price pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricePeriod {
    /// The cheaper rate (index 0 of each config price pair).
    OffPeak = 0,
    /// The dearer rate (index 1).
    Peak = 1,
}

impl PricePeriod {
    /// The name used in the ledger and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PricePeriod::OffPeak => "off_peak",
            PricePeriod::Peak => "peak",
        }
    }

    fn index(self) -> usize {
        match self {
            PricePeriod::OffPeak => 0,
            PricePeriod::Peak => 1,
        }
    }
}

/// A day of the week, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekday(chrono::Weekday);

impl FromStr for Weekday {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        use chrono::Weekday::*;
        let d = match s.trim().to_ascii_lowercase().as_str() {
            "mon" | "monday" => Mon,
            "tue" | "tuesday" => Tue,
            "wed" | "wednesday" => Wed,
            "thu" | "thursday" => Thu,
            "fri" | "friday" => Fri,
            "sat" | "saturday" => Sat,
            "sun" | "sunday" => Sun,
            _ => return Err(()),
        };
        Ok(Weekday(d))
    }
}

/// A daily window in minutes since midnight UTC, `start` inclusive, `end` exclusive.
/// A window whose end is before its start wraps past midnight (`22:00-02:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

/// Parse `HH:MM-HH:MM` (`24:00` allowed as an end).
pub fn parse_window(s: &str) -> Result<Window, &'static str> {
    let (a, b) = s
        .split_once('-')
        .ok_or("is not a window such as \"01:00-04:00\"")?;
    let start = parse_hhmm(a.trim()).ok_or("has a malformed start time (want HH:MM)")?;
    let end = parse_hhmm(b.trim()).ok_or("has a malformed end time (want HH:MM)")?;
    if start >= 24 * 60 {
        return Err("starts at 24:00; use 00:00");
    }
    if start == end {
        return Err("is empty (start equals end)");
    }
    Ok(Window { start, end })
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    // Digits only: `u16::from_str` would also take a sign (`+1:00`).
    let digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

impl Window {
    fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// When peak prices apply: inside any window, on any of the days (UTC), except on the
/// off-peak dates (Chinese public holidays, when DeepSeek charges off-peak all day).
#[derive(Debug, Clone, Default)]
pub struct PeakSchedule {
    windows: Vec<Window>,
    days: Vec<Weekday>,
    off_peak_dates: Vec<chrono::NaiveDate>,
}

impl PeakSchedule {
    /// A schedule from parsed parts.
    pub fn new(windows: Vec<Window>, days: Vec<Weekday>) -> Self {
        PeakSchedule {
            windows,
            days,
            off_peak_dates: Vec::new(),
        }
    }

    /// The same schedule with off-peak prices all day on `dates` (every peak window falls
    /// inside one date in UTC and in Beijing time, so a date is unambiguous).
    pub fn with_off_peak_dates(mut self, dates: Vec<chrono::NaiveDate>) -> Self {
        self.off_peak_dates = dates;
        self
    }

    /// Whether every minute of every day is peak: windows covering the whole day, on every
    /// day, and no off-peak dates. Then there is no off-peak price to show.
    pub fn always_peak(&self) -> bool {
        use chrono::Weekday::{Fri, Mon, Sat, Sun, Thu, Tue, Wed};
        self.off_peak_dates.is_empty()
            && [Mon, Tue, Wed, Thu, Fri, Sat, Sun]
                .iter()
                .all(|d| self.days.iter().any(|w| w.0 == *d))
            && (0..24 * 60).all(|m| self.windows.iter().any(|w| w.contains(m)))
    }

    /// The period at an instant. A wrapping window belongs to the day it starts on.
    pub fn period_at(&self, at: DateTime<Utc>) -> PricePeriod {
        let minute = (at.hour() * 60 + at.minute()) as u16;
        let today = at.weekday();
        let yesterday = today.pred();
        let is_day = |d: chrono::Weekday| self.days.iter().any(|w| w.0 == d);
        let date = at.date_naive();
        let holiday = |d: chrono::NaiveDate| self.off_peak_dates.contains(&d);
        let peak = self.windows.iter().any(|w| {
            if !w.contains(minute) {
                return false;
            }
            let starts_yesterday = w.start > w.end && minute < w.end;
            if starts_yesterday {
                is_day(yesterday) && !date.pred_opt().is_some_and(holiday)
            } else {
                is_day(today) && !holiday(date)
            }
        });
        if peak {
            PricePeriod::Peak
        } else {
            PricePeriod::OffPeak
        }
    }
}

/// One model's prices for both periods, in the form billing uses.
#[derive(Debug, Clone, Copy)]
pub struct ModelPrices {
    by_period: [TokenPrices; 2],
}

impl ModelPrices {
    /// From per-1M-token prices as `[off-peak, peak]` (the config's form).
    pub fn new(cache_hit: [Usd; 2], cache_miss: [Usd; 2], output: [Usd; 2]) -> Self {
        let at = |i: usize| TokenPrices {
            cache_hit: cache_hit[i],
            cache_miss: cache_miss[i],
            output: output[i],
        };
        ModelPrices {
            by_period: [at(0), at(1)],
        }
    }

    /// The prices in a period.
    pub fn get(&self, period: PricePeriod) -> &TokenPrices {
        &self.by_period[period.index()]
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sched() -> PeakSchedule {
        let w = ["01:00-04:00", "06:00-10:00"]
            .iter()
            .map(|s| parse_window(s).unwrap())
            .collect();
        let d = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        PeakSchedule::new(w, d)
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn default_schedule() {
        let s = sched();
        // 2026-11-25 is a Wednesday.
        assert_eq!(s.period_at(at(2026, 11, 25, 0, 59)), PricePeriod::OffPeak);
        assert_eq!(s.period_at(at(2026, 11, 25, 1, 0)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 25, 3, 59)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 25, 4, 0)), PricePeriod::OffPeak);
        assert_eq!(s.period_at(at(2026, 11, 25, 9, 30)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 25, 12, 0)), PricePeriod::OffPeak);
        // Saturday 2026-11-28: off-peak all day.
        assert_eq!(s.period_at(at(2026, 11, 28, 2, 0)), PricePeriod::OffPeak);
    }

    #[test]
    fn wrapping_window_belongs_to_its_start_day() {
        let s = PeakSchedule::new(
            vec![parse_window("22:00-02:00").unwrap()],
            vec!["fri".parse().unwrap()],
        );
        // Friday 2026-11-27 23:00 and Saturday 01:00 are peak; Friday 01:00 is not.
        assert_eq!(s.period_at(at(2026, 11, 27, 23, 0)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 28, 1, 0)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 27, 1, 0)), PricePeriod::OffPeak);
    }

    #[test]
    fn all_day_window() {
        let s = PeakSchedule::new(
            vec![parse_window("00:00-24:00").unwrap()],
            vec!["sun".parse().unwrap()],
        );
        assert_eq!(s.period_at(at(2026, 11, 29, 23, 59)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 11, 29, 0, 0)), PricePeriod::Peak);
    }

    #[test]
    fn malformed_windows() {
        for bad in [
            "",
            "1:00-4:00",
            "01:00",
            "01:00-01:00",
            "25:00-26:00",
            "01:60-02:00",
            "24:00-01:00",
            "ab:cd-01:00",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn off_peak_dates_are_off_peak_all_day() {
        let holiday = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let s = sched().with_off_peak_dates(vec![holiday]);
        // Thursday 1 October 2026, 02:00 and 07:00 UTC: peak hours of a weekday.
        assert_eq!(sched().period_at(at(2026, 10, 1, 2, 0)), PricePeriod::Peak);
        assert_eq!(s.period_at(at(2026, 10, 1, 2, 0)), PricePeriod::OffPeak);
        assert_eq!(s.period_at(at(2026, 10, 1, 7, 30)), PricePeriod::OffPeak);
        // The next day is a working day again.
        assert_eq!(s.period_at(at(2026, 10, 2, 2, 0)), PricePeriod::Peak);
        // A window wrapping past midnight belongs to the date it starts on.
        let w = vec![parse_window("22:00-02:00").unwrap()];
        let all = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .map(|d| d.parse().unwrap())
            .collect();
        let night = PeakSchedule::new(w, all).with_off_peak_dates(vec![holiday]);
        assert_eq!(
            night.period_at(at(2026, 10, 1, 23, 0)),
            PricePeriod::OffPeak
        );
        assert_eq!(night.period_at(at(2026, 10, 2, 1, 0)), PricePeriod::OffPeak);
        assert_eq!(night.period_at(at(2026, 10, 2, 23, 0)), PricePeriod::Peak);
    }
}
