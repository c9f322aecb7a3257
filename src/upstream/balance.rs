//! The operator's DeepSeek balance: `GET <base_url>/user/balance` per account, read every
//! `upstream.balance_poll_secs` and right after a 402, and the probe that brings back an
//! account DeepSeek refused once its balance endpoint answers for it again.

use serde::Deserialize;

use crate::money::Usd;

/// One currency of an account's balance (amounts are exact decimals, held as nano-units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceInfo {
    /// `USD` or `CNY`.
    pub currency: String,
    /// All of it.
    pub total: Usd,
    /// Granted by DeepSeek.
    pub granted: Usd,
    /// Paid in.
    pub topped_up: Usd,
}

/// A reading of an account's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// DeepSeek says the account may be used.
    pub is_available: bool,
    /// Per currency.
    pub infos: Vec<BalanceInfo>,
    /// When it was read (unix ms).
    pub at_ms: i64,
}

impl Balance {
    /// The USD total (zero when the account holds no USD).
    pub fn usd(&self) -> Usd {
        self.infos
            .iter()
            .filter(|i| i.currency.eq_ignore_ascii_case("USD"))
            .fold(Usd::ZERO, |sum, i| sum.saturating_add(i.total))
    }
}

#[derive(Deserialize)]
struct Wire {
    is_available: bool,
    #[serde(default)]
    balance_infos: Vec<WireInfo>,
}

#[derive(Deserialize)]
struct WireInfo {
    currency: String,
    total_balance: String,
    #[serde(default)]
    granted_balance: Option<String>,
    #[serde(default)]
    topped_up_balance: Option<String>,
}

/// Parse DeepSeek's answer; `Err` says what is wrong with it.
pub fn parse(body: &[u8], at_ms: i64) -> Result<Balance, String> {
    let w: Wire = serde_json::from_slice(body).map_err(|e| format!("balance answer: {e}"))?;
    let amount = |s: &str| {
        s.parse::<Usd>()
            .map_err(|e| format!("balance amount {s:?}: {e}"))
    };
    let mut infos = Vec::new();
    for i in w.balance_infos {
        infos.push(BalanceInfo {
            total: amount(&i.total_balance)?,
            granted: amount(i.granted_balance.as_deref().unwrap_or("0"))?,
            topped_up: amount(i.topped_up_balance.as_deref().unwrap_or("0"))?,
            currency: i.currency.to_ascii_uppercase(),
        });
    }
    Ok(Balance {
        is_available: w.is_available,
        infos,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseeks_answer() {
        let b = parse(
            br#"{"is_available": true, "balance_infos": [
                {"currency": "USD", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"},
                {"currency": "CNY", "total_balance": "7.5", "granted_balance": "0", "topped_up_balance": "7.5"}]}"#,
            1,
        )
        .unwrap();
        assert!(b.is_available);
        assert_eq!(b.usd(), Usd::from_dollars(110));
        assert_eq!(b.infos[1].currency, "CNY");
        assert_eq!(b.infos[1].total, "7.5".parse().unwrap());
        assert!(parse(b"{}", 1).is_err());
        assert!(
            parse(br#"{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":"x"}]}"#, 1)
                .is_err()
        );
    }
}
