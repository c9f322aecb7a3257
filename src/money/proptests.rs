//! Properties of money's text forms (issue 11): every amount round-trips through its decimal
//! string (and through serde), parsing agrees with exact integer arithmetic on any decimal
//! (no float anywhere), and no string makes the parser panic or accept what is not a decimal.

use proptest::prelude::*;

use super::{ParseUsdError, Usd};

/// Every `i64` of nano-dollars, with the edges the uniform draw would never hit.
fn nanos() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => any::<i64>(),
        2 => -10_000_000_000i64..10_000_000_000,
        1 => prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            0,
            1,
            -1,
            1_000_000_000,
            -1_000_000_000,
        ]),
    ]
}

/// The value of a decimal string by exact arithmetic: `None` when it is not one.
fn reference(s: &str) -> Option<Result<i128, ()>> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return None;
    }
    if frac.len() > 9 {
        return Some(Err(()));
    }
    // Digit by digit in i128, stopping once far beyond any i64 (no overflow, no float).
    let mut n: i128 = 0;
    for b in whole.bytes().chain(format!("{frac:0<9}").bytes()) {
        n = n * 10 + i128::from(b - b'0');
        if n > i128::from(u64::MAX) {
            return Some(Ok(i128::MAX));
        }
    }
    Some(Ok(if neg { -n } else { n }))
}

/// Decimal-looking strings: signs, digits, points, spaces.
fn decimal_ish() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "-", "+", " ", " -", "--", "+-"]),
        "[0-9]{0,13}",
        prop::sample::select(vec!["", ".", "..", ","]),
        "[0-9]{0,11}",
        prop::sample::select(vec!["", " ", "\t", "x", "e3"]),
    )
        .prop_map(|(sign, whole, point, frac, tail)| format!("{sign}{whole}{point}{frac}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Display then parse gives the same amount, for every `i64` of nano-dollars; the text is
    /// `-?digits.digits` with two to nine decimals and no trailing zero past the second.
    #[test]
    fn every_amount_round_trips_through_its_text(n in nanos()) {
        let usd = Usd::from_nanos(n);
        let text = usd.to_string();
        prop_assert_eq!(text.parse::<Usd>(), Ok(usd), "{}", text);
        let (whole, frac) = text.trim_start_matches('-').split_once('.').unwrap();
        prop_assert!(!whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()));
        prop_assert!((2..=9).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()));
        prop_assert!(frac.len() == 2 || !frac.ends_with('0'), "{}", text);
        let json = serde_json::to_string(&usd).unwrap();
        prop_assert_eq!(serde_json::from_str::<Usd>(&json).unwrap(), usd);
    }

    /// Parsing agrees with exact arithmetic on the digits: the amount when it fits, TooPrecise
    /// past nine decimals, TooLarge beyond an `i64`, Malformed for anything else.
    #[test]
    fn parsing_is_exact_decimal_arithmetic(s in decimal_ish()) {
        let got = s.parse::<Usd>();
        match reference(&s) {
            None if s.trim().is_empty() => prop_assert_eq!(got, Err(ParseUsdError::Empty)),
            None => prop_assert_eq!(got, Err(ParseUsdError::Malformed(s.clone()))),
            Some(Err(())) => prop_assert_eq!(got, Err(ParseUsdError::TooPrecise(s.clone()))),
            Some(Ok(n)) => match i64::try_from(n) {
                Ok(n) => prop_assert_eq!(got, Ok(Usd::from_nanos(n))),
                Err(_) => prop_assert_eq!(got, Err(ParseUsdError::TooLarge(s.clone()))),
            },
        }
    }

    /// Any string: no panic, and what is accepted is a decimal with the reference's value; a
    /// JSON string holds the same amount as the bare text.
    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let got = s.parse::<Usd>();
        if let Ok(usd) = &got {
            prop_assert_eq!(reference(&s), Some(Ok(i128::from(usd.nanos()))));
        }
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(serde_json::from_str::<Usd>(&json).ok(), got.ok());
    }
}

/// Found by `every_amount_round_trips_through_its_text`: the most negative amount printed as
/// `-9223372036.854775808` but was refused as too large when read back (its magnitude was
/// built as a positive `i64` before the sign).
#[test]
fn the_most_negative_amount_reads_back() {
    assert_eq!(
        "-9223372036.854775808".parse::<Usd>(),
        Ok(Usd::from_nanos(i64::MIN))
    );
    assert!(matches!(
        "9223372036.854775808".parse::<Usd>(),
        Err(ParseUsdError::TooLarge(_))
    ));
    assert!(matches!(
        "-9223372036.854775809".parse::<Usd>(),
        Err(ParseUsdError::TooLarge(_))
    ));
}
