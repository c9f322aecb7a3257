//! How numbers, money and times read on the console: short, fixed-ish width, exact where money
//! is concerned (rounding only for display, never floats on the amounts themselves).

use crate::money::{NANOS_PER_USD, Usd};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `$` and the amount rounded half-up to at most `max_dec` decimals, at least two.
fn dollars(u: Usd, max_dec: u32) -> String {
    decimal(u, max_dec, "$")
}

/// `symbol` and the amount rounded half-up to at most `max_dec` decimals, at least two.
fn decimal(u: Usd, max_dec: u32, symbol: &str) -> String {
    let n = u.nanos();
    let unit = 10_i128.pow(9 - max_dec);
    let abs = (n as i128).abs();
    let rounded = (abs + unit / 2) / unit;
    let per_dollar = NANOS_PER_USD as i128 / unit;
    let whole = rounded / per_dollar;
    let mut frac = format!("{:0width$}", rounded % per_dollar, width = max_dec as usize);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    let sign = if n < 0 && rounded != 0 { "-" } else { "" };
    format!("{sign}{symbol}{whole}.{frac}")
}

/// A balance, budget, price or total: cents, with up to four decimals below $10 so that small
/// test budgets stay readable (`$0.99`, `$0.0123`, `$20.00`).
pub fn usd(u: Usd) -> String {
    // A balance left below half a hundredth of a cent is not nothing (it read `$0.00`).
    if u.nanos() > 0 && u.nanos() < NANOS_PER_USD / 20_000 {
        return "<$0.0001".into();
    }
    if u.nanos().abs() >= 10 * NANOS_PER_USD {
        dollars(u, 2)
    } else {
        dollars(u, 4)
    }
}

/// [`usd`] in at most `width` columns: an amount too wide is shortened to thousands, millions
/// or billions (`$100.0k`, `$1.2M`) rather than cut by the table, which dropped its leading
/// digits (`$100002.00` showed as `100002.00`, `$20.00` in a narrow column as `0.00`).
pub fn usd_in(u: Usd, width: usize) -> String {
    let full = usd(u);
    if full.len() <= width {
        return full;
    }
    let n = i128::from(u.nanos());
    let per = i128::from(NANOS_PER_USD);
    for (scale, suffix) in [(1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")] {
        let unit = per * scale;
        if n.abs() >= unit {
            // One decimal, rounded half-up, in tenths of the unit.
            let tenths = (n.abs() * 10 + unit / 2) / unit;
            let sign = if n < 0 { "-" } else { "" };
            let short = format!("{sign}${}.{}{suffix}", tenths / 10, tenths % 10);
            if short.len() <= width {
                return short;
            }
        }
    }
    // Nothing shorter says it truly: a mark that the column is too narrow, never wrong digits.
    "…".repeat(width.min(1))
}

/// The width each column gets when a `Table` lays out `constraints` in `width` cells with
/// `selection` cells for its highlight symbol: ratatui's own layout, as the table makes it (one
/// cell between columns, `Flex::Start`). In a window narrower than the columns ask for, the
/// table shrinks them, and a right-aligned amount written for its asked width loses its first
/// digits (`$20000.00` read `0.00` at 40 columns): an amount is written for the width it gets.
pub fn column_widths(
    constraints: &[ratatui::layout::Constraint],
    width: u16,
    selection: u16,
) -> Vec<u16> {
    use ratatui::layout::{Constraint, Flex, Layout, Rect};
    let [_, columns] = Layout::horizontal([Constraint::Length(selection), Constraint::Fill(0)])
        .areas(Rect::new(0, 0, width, 1));
    Layout::horizontal(constraints)
        .flex(Flex::Start)
        .spacing(1)
        .split(columns)
        .iter()
        .map(|r| r.width)
        .collect()
}

/// `text` if it fits in `width` cells, else the mark of a column too narrow: right-aligned, a
/// cut text loses its start (`never` read `ever`, `32768` read `2768`, `13.2s` read `.2s`).
pub fn whole(text: String, width: usize) -> String {
    if text.chars().count() <= width {
        text
    } else {
        "…".repeat(width.min(1))
    }
}

/// A count in `width` columns: whole when it fits, else shortened to thousands, millions or
/// billions (`469k`, `1.2M`), `…` only when not even that fits. A key's requests reach six
/// digits on a busy key, whose count the column cut to `…` (found by an independent check).
pub fn count_in(n: u64, width: usize) -> String {
    let whole_text = n.to_string();
    if whole_text.len() <= width {
        return whole_text;
    }
    let short = [(1_000_000_000, 'B'), (1_000_000, 'M'), (1_000, 'k')]
        .into_iter()
        .find(|&(unit, _)| n >= unit)
        .map(|(unit, mark)| {
            let tenths = n / (unit / 10);
            if tenths < 100 {
                format!("{}.{}{mark}", tenths / 10, tenths % 10)
            } else {
                format!("{}{mark}", n / unit)
            }
        })
        .unwrap_or(whole_text);
    whole(short, width)
}

/// An amount in a currency DeepSeek reports (`USD 110.00`, `CNY 50.00`): rounded like
/// [`usd`], the currency's code in front (an amount in nano-units of that currency).
pub fn money(currency: &str, amount: Usd) -> String {
    let max_dec = if amount.nanos().abs() >= 10 * NANOS_PER_USD {
        2
    } else {
        4
    };
    format!("{currency} {}", decimal(amount, max_dec, ""))
}

/// The cost of one request: up to six decimals (`$0.000084`).
pub fn cost(u: Usd) -> String {
    if u.nanos() > 0 && u.nanos() < 500 {
        return "<$0.000001".into();
    }
    dollars(u, 6)
}

/// A duration in milliseconds: `840ms`, `12.3s`, `3m05s`, `2h07m`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => secs(ms / 1000),
    }
}

/// A duration in seconds: `42s`, `3m05s`, `2h07m`, `3d04h`.
pub fn secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// How long ago, short: `now`, `12s`, `3m`, `2h`, `5d`.
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    let s = ((now_ms - then_ms).max(0) / 1000) as u64;
    match s {
        0..2 => "now".into(),
        2..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Unix ms from an RFC 3339 time.
pub fn parse_ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `HH:MM:SS` (UTC) of a unix ms.
pub fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into())
}

/// `MM-DD HH:MM` (UTC) of an RFC 3339 time; the input when it does not parse.
pub fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// A text gauge `width` cells wide: `████░░░░ 50%` (the share of the budget left).
pub fn gauge(remaining: Usd, budget: Usd, width: usize) -> String {
    let ratio = if budget.nanos() <= 0 {
        0.0
    } else {
        (remaining.nanos().max(0) as f64 / budget.nanos() as f64).clamp(0.0, 1.0)
    };
    let pct = format!("{:>3.0}%", ratio * 100.0);
    let bar = width.saturating_sub(pct.len() + 1);
    let full = (ratio * bar as f64).round() as usize;
    format!("{}{} {pct}", "█".repeat(full), "░".repeat(bar - full))
}

/// Cut `s` to `width` terminal columns, ending with `…` when cut. Columns, not characters: a
/// CJK or emoji character takes two, and a cut by characters let a Chinese address overrun its
/// column with no `…` (found by an independent check).
pub fn clip(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let (start, _) = crate::text::fitting(s, width.saturating_sub(1));
    format!("{start}…")
}

/// A key's display prefix (`sk-gateway-PrOo…`) for a column of `width`: whole when it fits,
/// else without the `sk-gateway-` every key shares, so that a narrow window still tells keys
/// apart (at 50 columns every key read `sk-ga`: found by an independent check).
pub fn key_in(prefix: &str, width: usize) -> String {
    if prefix.chars().count() <= width {
        return prefix.to_string();
    }
    clip(prefix.strip_prefix("sk-gateway-").unwrap_or(prefix), width)
}

/// `s` cut to `width` columns keeping its end, with `…` in front when cut: for ids whose
/// tail tells them apart (a request id starts with the time, and ends with its random part).
pub fn clip_start(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let room = width.saturating_sub(1);
    let mut used = 0;
    let mut tail = Vec::new();
    for c in s.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        used += w;
        tail.push(c);
    }
    let mut out = String::from("…");
    out.extend(tail.into_iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_counts_columns_not_characters() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 3), "abc");
        // Two columns each: "名字" is 4 columns, and the `…` needs one.
        assert_eq!(clip("名字@例子.中国", 6), "名字@…");
        assert_eq!(clip("名字@例子.中国", 5), "名字…");
        assert_eq!(clip("名字@例子.中国", 4), "名…");
        assert_eq!(clip_start("例子.中国", 5), "…中国");
        assert_eq!(clip_start("req_0123", 5), "…0123");
    }

    #[test]
    fn a_key_prefix_too_wide_for_its_column_keeps_what_tells_keys_apart() {
        assert_eq!(key_in("sk-gateway-PrOo…", 16), "sk-gateway-PrOo…");
        assert_eq!(key_in("sk-gateway-PrOo…", 5), "PrOo…");
        assert_eq!(key_in("sk-gateway-PrOo…", 3), "Pr…");
        assert_eq!(key_in("sk-gateway-PrOo…", 0), "…");
        assert_eq!(key_in("other-key-prefix", 6), "other…");
    }

    fn u(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn amounts_too_wide_are_shortened_never_cut() {
        let d = |s: &str| s.parse::<Usd>().unwrap();
        assert_eq!(usd_in(d("20.00"), 9), "$20.00");
        assert_eq!(usd_in(d("100002.000000001"), 9), "$100.0k");
        assert_eq!(usd_in(d("1234567.89"), 9), "$1.2M");
        assert_eq!(usd_in(d("999999999.99"), 9), "$1000.0M");
        assert_eq!(usd_in(d("1000000000"), 9), "$1.0B");
        assert_eq!(usd_in(d("20.00"), 4), "…");
        assert_eq!(usd_in(d("20.00"), 0), "");
    }

    #[test]
    fn counts_too_wide_are_shortened_never_cut() {
        assert_eq!(count_in(21_516, 5), "21516");
        assert_eq!(count_in(469_123, 5), "469k");
        assert_eq!(count_in(100_000, 5), "100k");
        assert_eq!(count_in(1_234_567, 5), "1.2M");
        assert_eq!(count_in(9_999_999, 5), "9.9M");
        assert_eq!(count_in(12_345_678, 5), "12M");
        assert_eq!(count_in(3_000_000_000, 5), "3.0B");
        assert_eq!(count_in(123_456, 3), "…");
        assert_eq!(count_in(7, 0), "");
    }

    #[test]
    fn money() {
        assert_eq!(usd(u("0.99")), "$0.99");
        assert_eq!(usd(u("1")), "$1.00");
        assert_eq!(usd(u("0.98996")), "$0.99");
        assert_eq!(usd(u("0.012345")), "$0.0123");
        assert_eq!(usd(u("20")), "$20.00");
        assert_eq!(usd(u("1234.567")), "$1234.57");
        assert_eq!(usd(u("-0.5")), "-$0.50");
        assert_eq!(usd(u("0.000002")), "<$0.0001");
        assert_eq!(usd(u("0.00005")), "$0.0001");
        assert_eq!(usd(Usd::ZERO), "$0.00");
        assert_eq!(super::money("USD", u("110")), "USD 110.00");
        assert_eq!(super::money("CNY", u("3.14159")), "CNY 3.1416");
        assert_eq!(super::money("USD", u("-2")), "USD -2.00");
        assert_eq!(cost(u("0.000084")), "$0.000084");
        assert_eq!(cost(u("0.00008449")), "$0.000084");
        assert_eq!(cost(u("0.0000845")), "$0.000085");
        assert_eq!(cost(u("0.12")), "$0.12");
        assert_eq!(cost(Usd::ZERO), "$0.00");
        assert_eq!(cost(Usd::from_nanos(3)), "<$0.000001");
    }

    #[test]
    fn times() {
        assert_eq!(millis(840), "840ms");
        assert_eq!(millis(12_340), "12.3s");
        assert_eq!(millis(185_000), "3m05s");
        assert_eq!(secs(7_620), "2h07m");
        assert_eq!(secs(3 * 86_400 + 4 * 3_600), "3d04h");
        assert_eq!(ago(1_000, 1_500), "now");
        assert_eq!(ago(0, 180_000), "3m");
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(short_time("2026-11-03T12:34:56Z"), "11-03 12:34");
        assert_eq!(parse_ms("1970-01-01T00:00:01Z"), Some(1000));
    }

    #[test]
    fn gauges_and_clipping() {
        assert_eq!(gauge(u("5"), u("10"), 12), "████░░░  50%");
        assert_eq!(gauge(u("0"), u("10"), 10), "░░░░░   0%");
        assert_eq!(gauge(u("10"), u("10"), 10), "█████ 100%");
        assert_eq!(gauge(u("1"), Usd::ZERO, 10), "░░░░░   0%");
        assert_eq!(clip("sk-gateway-AbCd…", 8), "sk-gate…");
        assert_eq!(clip("abc", 8), "abc");
        assert_eq!(
            clip_start("req_019abc0d1e2fA7kQ9zXw2mPq", 13),
            "…A7kQ9zXw2mPq"
        );
        assert_eq!(clip_start("req_a", 13), "req_a");
    }
}
