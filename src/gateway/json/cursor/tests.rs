//! The cursor's string scan and number range against serde_json's, exhaustively at the
//! edges: every byte pair in the word test, strings of every length with each special
//! character at every place, numbers around `f64`'s limit.

use super::{Cursor, ends_run};

/// Numbers at the edge of `f64`'s range: where the cursor takes one, serde_json does (it
/// refuses what overflows); plain ones in range are taken.
#[test]
fn numbers_serde_refuses_are_not_taken() {
    let big = format!("1{}", "0".repeat(308));
    let bigger = format!("{big}0");
    let edge = [
        "1e307",
        "9.9e307",
        "1e308",
        "1.7e308",
        "1.8e308",
        "1e309",
        "1E510",
        "-1e400",
        "0.001e311",
        "0.001e310",
        "100e306",
        "10e307",
        "0e999999",
        "0.0e999",
        "1e-400",
        "1e-99999999999999999999",
        "1e99999999999999999999",
        "0.0000e400",
        &big,
        &bigger,
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "1.797693134862316e308",
        "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791.9999",
    ];
    for t in edge {
        let walked = Cursor::new(t).skip_value().is_some();
        let serde = serde_json::from_str::<serde_json::Value>(t).is_ok();
        assert!(!walked || serde, "{t}: the cursor took what serde refuses");
    }
    for t in [
        "1e307",
        "9.9e307",
        "-1e307",
        "0e999999",
        "1e-400",
        "0.001e310",
        "0.0000e400",
        "1e308",
        "1.7976931348623157e308",
        "-1.25e308",
    ] {
        assert!(Cursor::new(t).skip_value().is_some(), "{t}");
    }
}

fn ends(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Every pair of byte values at several pairs of places in a word: the word test finds the
/// first byte a byte-by-byte test would (one it missed would skip a string's end).
/// Strings of every length up to 120 bytes (short ones scanned by words, long ones handed
/// to `long_run`) with one character of each kind that matters at every place: the
/// cursor's decoded length, or its refusal, is serde_json's.
#[test]
fn strings_of_any_length_read_as_serde_reads_them() {
    let specials: Vec<String> = [
        "\"", "\\\\", "\\n", "\\u00e9", "\u{7f}", "é", "中", "😀", "\\",
    ]
    .into_iter()
    .map(String::from)
    .chain((0u8..0x20).map(|c| char::from(c).to_string()))
    .collect();
    for len in 0..120 {
        for at in 0..=len {
            for special in &specials {
                let body: String = (0..len)
                    .map(|i| if i == at { special.as_str() } else { "a" })
                    .collect();
                let text = format!("\"{body}\"");
                let mut c = Cursor::new(&text);
                let walked = c.text().filter(|_| c.at_end());
                let serde = serde_json::from_str::<String>(&text).ok().map(|s| s.len());
                assert_eq!(walked, serde, "{text:?}");
            }
        }
    }
}

#[test]
fn the_word_test_is_the_byte_test() {
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for (p, q) in [(0, 7), (3, 4), (7, 0), (5, 5)] {
                let mut w = [b'a'; 8];
                w[p] = a;
                w[q] = b;
                let first = w.iter().position(|&c| ends(c));
                let found = ends_run(u64::from_le_bytes(w));
                let got = (found != 0).then(|| (found.trailing_zeros() / 8) as usize);
                assert_eq!(got, first, "{w:?}");
            }
        }
    }
}
