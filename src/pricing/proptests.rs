//! Properties of the pricing config values (issue 11): peak windows (`HH:MM-HH:MM`) and
//! weekday names, from arbitrary strings and from generated near-misses: no panic, and exactly
//! the documented forms accepted, with the values they spell.

use proptest::prelude::*;

use super::{Weekday, Window, parse_window};

/// `HH:MM` as minutes if it is exactly two ASCII digits, a colon and two ASCII digits naming
/// a time of day (24:00 included: it may end a window).
fn hhmm(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return None;
    }
    let (h, m) = (u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0'), {
        u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0')
    });
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// What `parse_window` must answer: the window, or that it is refused.
fn expected_window(s: &str) -> Option<Window> {
    let (a, b) = s.split_once('-')?;
    let (start, end) = (hhmm(a.trim())?, hhmm(b.trim())?);
    (start < 24 * 60 && start != end).then_some(Window { start, end })
}

/// Two characters that are usually digits, sometimes a sign, a space or a non-ASCII digit.
fn two(max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..=max).prop_map(|n| format!("{n:02}")),
        1 => (0..10u32).prop_map(|n| format!("+{n}")),
        1 => (0..10u32).prop_map(|n| format!(" {n}")),
        1 => (0..10u32).prop_map(|n| format!("{n}")),
        1 => Just("٠١".to_string()),
        1 => (0..1000u32).prop_map(|n| n.to_string()),
    ]
}

fn window_ish() -> impl Strategy<Value = String> {
    let space = prop::sample::select(vec!["", " ", "  ", "\t"]);
    (
        space.clone(),
        two(26),
        prop::sample::select(vec![":", ":", ":", ".", ""]),
        two(62),
        space.clone(),
        prop::sample::select(vec!["-", "-", "-", "–", "--", ""]),
        space.clone(),
        two(26),
        prop::sample::select(vec![":", ":", ":", "."]),
        two(62),
        space,
    )
        .prop_map(|(s1, h1, c1, m1, s2, dash, s3, h2, c2, m2, s4)| {
            format!("{s1}{h1}{c1}{m1}{s2}{dash}{s3}{h2}{c2}{m2}{s4}")
        })
}

const DAYS: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Generated near-misses: accepted exactly when they are `HH:MM-HH:MM` (spaces around the
    /// dash allowed), with the minutes they spell.
    #[test]
    fn windows_are_exactly_hh_mm_dash_hh_mm(s in window_ish()) {
        prop_assert_eq!(parse_window(&s).ok(), expected_window(&s), "{:?}", s);
    }

    /// Arbitrary strings never panic, and nothing else is accepted.
    #[test]
    fn arbitrary_window_strings_never_panic(s in any::<String>()) {
        prop_assert_eq!(parse_window(&s).ok(), expected_window(&s), "{:?}", s);
    }

    /// A day's short or long name in any case, with spaces around, is that day; arbitrary
    /// strings never panic and are a day only when they are one of the names.
    #[test]
    fn weekdays_by_name_in_any_case(
        day in 0usize..7,
        long in any::<bool>(),
        upper in prop::collection::vec(any::<bool>(), 9),
        pad in prop::sample::select(vec!["", " ", "\t", " \n"]),
        junk in any::<String>(),
    ) {
        let name = if long { DAYS[day].1 } else { DAYS[day].0 };
        let cased: String = name
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        let want: Weekday = DAYS[day].0.parse().unwrap();
        prop_assert_eq!(format!("{pad}{cased}{pad}").parse::<Weekday>(), Ok(want));
        let is_name = DAYS
            .iter()
            .any(|(s, l)| junk.trim().eq_ignore_ascii_case(s) || junk.trim().eq_ignore_ascii_case(l));
        prop_assert_eq!(junk.parse::<Weekday>().is_ok(), is_name, "{:?}", junk);
    }
}

/// Found by `windows_are_exactly_hh_mm_dash_hh_mm`: `u16::from_str` takes a leading `+`, so
/// `+1:00` passed as the hour 01 although the config wants two digits.
#[test]
fn a_sign_is_not_a_digit() {
    for bad in ["+1:00-04:00", "01:00-+4:00", "01:+0-04:00", "01:00-04:+0"] {
        assert!(parse_window(bad).is_err(), "{bad:?} should be refused");
    }
}
