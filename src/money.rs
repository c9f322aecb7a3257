//! `Usd`: money as integer nano-dollars, parsed from and formatted to exact decimal strings.
//!
//! Floats never touch money. Prices, budgets, holds, costs and balances are all `Usd`; the
//! database stores the raw `i64`, JSON and config use decimal strings such as `"0.60"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nano-dollars in one dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// Largest single amount an operator grants, tops up or prices a plan at (a typo guard).
pub const MAX_AMOUNT: Usd = Usd::from_dollars(100_000);

/// Largest budget a key may reach through top-ups: far past any real use, and far below where
/// nano-dollars overflow a 64-bit integer (~$9.2 billion; SQLite would then store the sum as
/// a float, and the daemon would not start again).
pub const MAX_BUDGET: Usd = Usd::from_dollars(1_000_000_000);

/// Whether a key whose budget is `budget` may be given `more` without passing [`MAX_BUDGET`].
pub fn fits_budget(budget: Usd, more: Usd) -> bool {
    budget.checked_add(more).is_some_and(|b| b <= MAX_BUDGET)
}

/// An amount of US dollars, stored as integer nano-dollars (1e-9 USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

/// Why a decimal string is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseUsdError {
    /// Nothing to parse.
    #[error("empty amount")]
    Empty,
    /// Something other than digits, one optional leading `-` and one `.`.
    #[error("`{0}` is not a decimal amount such as \"1.50\"")]
    Malformed(String),
    /// More than nine digits after the point: finer than a nano-dollar.
    #[error("`{0}` has more than 9 decimal places")]
    TooPrecise(String),
    /// Beyond what an `i64` of nano-dollars holds (about 9.2 billion dollars).
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// From a count of nano-dollars.
    pub const fn from_nanos(nanos: i64) -> Usd {
        Usd(nanos)
    }

    /// From whole dollars (for defaults and tests).
    pub const fn from_dollars(dollars: i64) -> Usd {
        Usd(dollars * NANOS_PER_USD)
    }

    /// The amount in nano-dollars.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// True when below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Addition that saturates instead of overflowing.
    pub const fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }

    /// Subtraction that saturates instead of overflowing.
    pub const fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    /// Checked addition.
    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    /// Dollars rounded half-up to the cent (`4.50` for 4.50011475): how a customer's message
    /// shows a balance or a budget, which after a partial refund or a request's charge carry
    /// nano-dollars that read as an error in an email.
    pub fn to_cents(self) -> String {
        let cent = NANOS_PER_USD / 100;
        let n = i128::from(self.0);
        let cents = (n.abs() + i128::from(cent) / 2) / i128::from(cent);
        let sign = if n < 0 && cents != 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", cents / 100, cents % 100)
    }

    /// The amount in US cents as an exact decimal string (legacy OpenAI billing endpoints).
    pub fn cents_string(self) -> String {
        // nanos * 100 nano-cents keep every digit; formatting then reads as cents.
        match self.0.checked_mul(100) {
            Some(n) => Usd(n).to_string(),
            None => format!("{}00", self),
        }
    }
}

impl fmt::Display for Usd {
    /// Decimal dollars with at least two and at most nine decimals: `1.00`, `0.000000123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u64;
        let frac = abs % NANOS_PER_USD as u64;
        let mut digits = format!("{frac:09}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        let sign = if neg { "-" } else { "" };
        // A width (`{:>13}`, the CLI's tables) is honoured: written straight, it was ignored and
        // a long cost pushed the columns after it (found by a newcomer's check).
        if f.width().is_some() {
            return f.pad(&format!("{sign}{whole}.{digits}"));
        }
        write!(f, "{sign}{whole}.{digits}")
    }
}

impl FromStr for Usd {
    type Err = ParseUsdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseUsdError::Empty);
        }
        let (neg, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(ParseUsdError::Malformed(s.to_string()));
        }
        if frac.len() > 9 {
            return Err(ParseUsdError::TooPrecise(s.to_string()));
        }
        let too_large = || ParseUsdError::TooLarge(s.to_string());
        let whole_n: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut frac_n: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_n += i64::from(b - b'0') * 10_i64.pow(8 - i as u32);
        }
        // Signed in i128, so the most negative amount (which `Display` prints) reads back.
        let nanos = i128::from(whole_n) * i128::from(NANOS_PER_USD) + i128::from(frac_n);
        i64::try_from(if neg { -nanos } else { nanos })
            .map(Usd)
            .map_err(|_| too_large())
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    /// Accepts decimal strings (the documented form), integers, and floats read back as the
    /// shortest decimal that names them.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"1.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Usd, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Usd, E> {
                v.checked_mul(NANOS_PER_USD)
                    .map(Usd)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Usd, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(|v| v.checked_mul(NANOS_PER_USD))
                    .map(Usd)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Usd, E> {
                // Environment overrides arrive as floats (figment parses `2.50`). Rust prints
                // an f64 as the shortest decimal that reads back to it, which is the text the
                // operator wrote whenever that had at most 15 significant digits; anything
                // finer than a nano-dollar is refused by the exact parser below.
                if !v.is_finite() {
                    return Err(E::custom("amount is not a number"));
                }
                v.to_string().parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Cost of a request in nano-USD: `ceil((hit·P_hit + miss·P_miss + out·P_out) / 1e6)` where the
/// prices are nano-USD per million tokens. Computed in `i128` so no product overflows.
pub fn cost_of(hit: u64, miss: u64, out: u64, prices: &TokenPrices) -> Usd {
    let sum = i128::from(hit) * i128::from(prices.cache_hit.nanos())
        + i128::from(miss) * i128::from(prices.cache_miss.nanos())
        + i128::from(out) * i128::from(prices.output.nanos());
    let nanos = div_ceil_i128(sum, 1_000_000);
    Usd(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn div_ceil_i128(a: i128, b: i128) -> i128 {
    // Prices are validated non-negative, so a >= 0 here; keep it correct for negatives anyway.
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// Prices of one model in one price period, each in USD per one million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPrices {
    /// Prompt tokens served from DeepSeek's context cache.
    pub cache_hit: Usd,
    /// Prompt tokens not in the cache.
    pub cache_miss: Usd,
    /// Completion tokens, reasoning included.
    pub output: Usd,
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(usd("1").nanos(), 1_000_000_000);
        assert_eq!(usd("0.60").nanos(), 600_000_000);
        assert_eq!(usd("0.003").nanos(), 3_000_000);
        assert_eq!(usd(".5").nanos(), 500_000_000);
        assert_eq!(usd("5.").nanos(), 5_000_000_000);
        assert_eq!(usd("0.000000001").nanos(), 1);
        assert_eq!(usd("-2.25").nanos(), -2_250_000_000);
        assert_eq!(usd(" 3.10 ").nanos(), 3_100_000_000);
    }

    #[test]
    fn cents_for_people_round_half_up() {
        assert_eq!(usd("4.50011475").to_cents(), "4.50");
        assert_eq!(usd("0.005").to_cents(), "0.01");
        assert_eq!(usd("0.004999999").to_cents(), "0.00");
        assert_eq!(usd("12").to_cents(), "12.00");
        assert_eq!(usd("-1.235").to_cents(), "-1.24");
        assert_eq!(usd("-0.001").to_cents(), "0.00");
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!("".parse::<Usd>(), Err(ParseUsdError::Empty));
        assert!(matches!(
            "abc".parse::<Usd>(),
            Err(ParseUsdError::Malformed(_))
        ));
        assert!(matches!(
            "1.2.3".parse::<Usd>(),
            Err(ParseUsdError::Malformed(_))
        ));
        assert!(matches!(
            ".".parse::<Usd>(),
            Err(ParseUsdError::Malformed(_))
        ));
        assert!(matches!(
            "1e3".parse::<Usd>(),
            Err(ParseUsdError::Malformed(_))
        ));
        assert!(matches!(
            "0.0000000001".parse::<Usd>(),
            Err(ParseUsdError::TooPrecise(_))
        ));
        assert!(matches!(
            "99999999999".parse::<Usd>(),
            Err(ParseUsdError::TooLarge(_))
        ));
    }

    /// A width pads it, as the CLI's tables ask (`{:>13}`); none leaves it as it was.
    #[test]
    fn a_width_pads_it() {
        assert_eq!(format!("[{:>13}]", usd("0.00001545")), "[   0.00001545]");
        assert_eq!(format!("[{:<8}]", usd("1.5")), "[1.50    ]");
        assert_eq!(format!("[{}]", usd("-2.25")), "[-2.25]");
    }

    #[test]
    fn formats_round_trip() {
        for s in [
            "1.00",
            "0.60",
            "0.003",
            "0.000000001",
            "-2.25",
            "123.456789",
        ] {
            assert_eq!(usd(s).to_string(), s);
        }
        assert_eq!(Usd::ZERO.to_string(), "0.00");
        assert_eq!(
            Usd::from_nanos(i64::MIN).to_string(),
            "-9223372036.854775808"
        );
        assert_eq!(usd("1.5").cents_string(), "150.00");
        assert_eq!(Usd::from_nanos(123).cents_string(), "0.0000123");
    }

    #[test]
    fn serde_uses_strings_and_refuses_floats() {
        assert_eq!(serde_json::to_string(&usd("0.6")).unwrap(), "\"0.60\"");
        assert_eq!(
            serde_json::from_str::<Usd>("\"0.15\"").unwrap(),
            usd("0.15")
        );
        assert_eq!(serde_json::from_str::<Usd>("2").unwrap(), usd("2"));
        assert_eq!(serde_json::from_str::<Usd>("2.50").unwrap(), usd("2.5"));
        assert_eq!(serde_json::from_str::<Usd>("0.1").unwrap(), usd("0.10"));
        assert!(serde_json::from_str::<Usd>("1e-12").is_err());
    }

    #[test]
    fn cost_rounds_up_to_the_nano() {
        let p = TokenPrices {
            cache_hit: usd("0.003"),
            cache_miss: usd("0.15"),
            output: usd("0.60"),
        };
        // 1 output token = 0.60 USD / 1M = 600 nano exactly.
        assert_eq!(cost_of(0, 0, 1, &p).nanos(), 600);
        // 1 hit token = 3 nano exactly; 1 miss = 150.
        assert_eq!(cost_of(1, 1, 0, &p).nanos(), 153);
        // A price that does not divide: 1 token at 0.0000015 USD/M = 0.0015 nano -> 1 nano.
        let tiny = TokenPrices {
            cache_hit: usd("0.0000015"),
            cache_miss: Usd::ZERO,
            output: Usd::ZERO,
        };
        assert_eq!(cost_of(1, 0, 0, &tiny).nanos(), 1);
        assert_eq!(cost_of(0, 0, 0, &tiny).nanos(), 0);
        // Big counts stay exact.
        assert_eq!(cost_of(0, 0, 1_000_000, &p), usd("0.60"));
    }
}
