//! The upstream pool on the wire: what `upstream_status` answers (the console's Upstream view
//! and `modelrelay upstream status` both read it).

use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// The pool, as the operator sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpstreamView {
    /// Every account, in config order.
    pub accounts: Vec<AccountView>,
    /// USD across the accounts' latest balance readings.
    pub usd_balance: Usd,
    /// What the active keys may still spend.
    pub liability_usd: Usd,
    /// `usd_balance` as a share of `liability_usd`, in percent (none when nothing is owed).
    pub coverage_percent: Option<u64>,
    /// Below this an account's USD balance is low.
    pub low_balance_usd: Usd,
    /// Attempts that failed over to another account since start.
    pub failovers: u64,
    /// What needs the operator's eye, one line each (disabled accounts, low balances, low
    /// coverage); empty when all is well.
    pub warnings: Vec<String>,
}

impl UpstreamView {
    /// Whether an account in service has a balance reading: without one, `usd_balance`'s $0 is
    /// no reading (an upstream without DeepSeek's balance endpoint), not an empty account.
    pub fn balance_read(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| a.state != "disabled" && a.balance.is_some())
    }

    /// The coverage as the operator reads it: whole percent rounded down, but `<1%` while
    /// some balance is there (`$110` against `$20 003` read `0%`); `None` when nothing is owed.
    pub fn coverage_text(&self) -> Option<String> {
        self.coverage_percent.map(|p| {
            if p == 0 && self.usd_balance > Usd::ZERO {
                "<1%".into()
            } else {
                format!("{p}%")
            }
        })
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    /// Its name.
    pub name: String,
    /// `healthy`, `cooling` or `disabled`.
    pub state: String,
    /// While cooling: when it is tried again (unix ms).
    pub cooling_until_ms: Option<i64>,
    /// Its last rest's length (ms) while kept: resting, or `healthy` on probation (a failure
    /// rests it for twice this); 0 once an answer of it ended whole.
    #[serde(default)]
    pub backoff_ms: u64,
    /// Its weight.
    pub weight: u32,
    /// Load per model.
    pub models: Vec<ModelLoadView>,
    /// Its latest DeepSeek balance reading.
    pub balance: Option<BalanceView>,
    /// Turned off by the operator (`upstream disable`) rather than by DeepSeek.
    #[serde(default)]
    pub disabled_by_operator: bool,
    /// The last failure.
    pub last_error: Option<String>,
    /// When (unix ms).
    pub last_error_ms: Option<i64>,
    /// Attempts sent to it since start.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
}

/// In flight against the cap, for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLoadView {
    /// Model id.
    pub model: String,
    /// In flight now.
    pub in_flight: u32,
    /// The cap.
    pub cap: u32,
}

/// A DeepSeek balance reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceView {
    /// DeepSeek says the account may be used.
    pub is_available: bool,
    /// When it was read (unix ms).
    pub at_ms: i64,
    /// Per currency (amounts in that currency, as decimal strings).
    pub currencies: Vec<CurrencyBalance>,
}

/// One currency of a balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrencyBalance {
    /// `USD` or `CNY`.
    pub currency: String,
    /// All of it.
    pub total: Usd,
    /// Granted by DeepSeek.
    pub granted: Usd,
    /// Paid in.
    pub topped_up: Usd,
}
