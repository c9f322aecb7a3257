//! The pool as the operator sees it: each account's state, load per model against its cap,
//! DeepSeek balance, last error and counts — read from the atomics, without a lock on the
//! request path.

use super::account::AccountState;
use super::balance::Balance;
use crate::money::Usd;

/// One model's load on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLoad {
    /// Model id.
    pub model: String,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Its cap.
    pub cap: u32,
}

/// One account.
#[derive(Debug, Clone)]
pub struct AccountStatus {
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: AccountState,
    /// While cooling: when it is tried again (unix ms).
    pub cooling_until_ms: Option<i64>,
    /// Its last rest's length (ms) while kept: resting, or healthy on probation (a failure
    /// rests it for twice this); 0 once an answer of it ended whole.
    pub backoff_ms: u64,
    /// Its weight.
    pub weight: u32,
    /// Load per model.
    pub models: Vec<ModelLoad>,
    /// The latest balance reading.
    pub balance: Option<Balance>,
    /// Why the balance could not be read lately, and since when (unix ms).
    pub balance_unread: Option<(String, i64)>,
    /// Turned off by the operator (rather than by DeepSeek's refusal).
    pub by_operator: bool,
    /// Its last balance check said its key or `base_url` is wrong, and no answer of it came
    /// since: the storefront counts it out (see `Account::may_serve`).
    pub balance_refused: bool,
    /// The last failure and when (unix ms).
    pub last_error: Option<(String, i64)>,
    /// Attempts sent to it since start.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// An earlier account with the same DeepSeek key, if any: the two are one DeepSeek account
    /// (one balance, one limit).
    pub same_key_as: Option<String>,
}

/// The whole pool.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// Accounts, in config order.
    pub accounts: Vec<AccountStatus>,
    /// Attempts that failed over to another account since start.
    pub failovers: u64,
    /// Below this USD balance an account is low.
    pub low_balance: Usd,
}

impl PoolStatus {
    /// Whether any account that may serve (not disabled) has a balance reading: without one,
    /// [`PoolStatus::usd_balance`]'s $0 is no reading, not an empty account (an upstream
    /// without DeepSeek's balance endpoint showed $0.00 for ever, and a low-balance alert on
    /// the gauge fired for ever; found by a re-check).
    pub fn balance_read(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| a.state != AccountState::Disabled && a.balance.is_some())
    }

    /// The USD held across the latest readings of the accounts that may serve (not disabled):
    /// a revoked key's last reading, or an account the operator turned off, pays for no
    /// request, and counting it made the coverage of what keys may spend look safe.
    /// Accounts with one key are one DeepSeek account: its balance counts once (it counted
    /// once per account; found by an independent check). A reading DeepSeek marks not
    /// available for API calls (`is_available: false`) pays for nothing either, and an
    /// overdrawn account's negative balance counts as nothing, not against the others' money.
    pub fn usd_balance(&self) -> Usd {
        let mut counted: Vec<&str> = Vec::new();
        let mut sum = Usd::ZERO;
        for a in self
            .accounts
            .iter()
            .filter(|a| a.state != AccountState::Disabled)
        {
            let Some(b) = &a.balance else { continue };
            let key = a.same_key_as.as_deref().unwrap_or(&a.name);
            if !counted.contains(&key) {
                counted.push(key);
                if b.is_available {
                    sum = sum.saturating_add(b.usd().max(Usd::ZERO));
                }
            }
        }
        sum
    }

    /// True when no account can take requests now.
    pub fn none_serving(&self) -> bool {
        self.accounts
            .iter()
            .all(|a| a.state == AccountState::Disabled)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::upstream::balance::BalanceInfo;

    /// An account of `state` holding `usd` dollars (read at the epoch), for tests.
    pub(crate) fn account(name: &str, state: AccountState, usd: i64) -> AccountStatus {
        AccountStatus {
            name: name.into(),
            state,
            cooling_until_ms: None,
            backoff_ms: 0,
            weight: 1,
            models: Vec::new(),
            balance: Some(Balance {
                is_available: true,
                infos: vec![BalanceInfo {
                    currency: "USD".into(),
                    total: Usd::from_dollars(usd),
                    granted: Usd::ZERO,
                    topped_up: Usd::from_dollars(usd),
                }],
                at_ms: 0,
            }),
            balance_unread: None,
            by_operator: false,
            balance_refused: false,
            last_error: None,
            requests: 0,
            errors: 0,
            same_key_as: None,
        }
    }

    /// A disabled account's last reading (a key DeepSeek refused since) pays for nothing.
    #[test]
    fn the_balance_counts_the_accounts_that_may_serve() {
        let pool = PoolStatus {
            accounts: vec![
                account("a", AccountState::Healthy, 100),
                account("b", AccountState::Cooling, 20),
                account("c", AccountState::Disabled, 300),
            ],
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        assert_eq!(pool.usd_balance(), Usd::from_dollars(120));
    }

    /// An account DeepSeek says cannot serve (`is_available: false`) holds nothing for the
    /// coverage, and an overdrawn one takes nothing from the others (found by an independent
    /// check: a balance of -0.37 was subtracted from the pool's money).
    #[test]
    fn unavailable_or_overdrawn_accounts_add_nothing() {
        let mut unavailable = account("b", AccountState::Healthy, 30);
        if let Some(b) = unavailable.balance.as_mut() {
            b.is_available = false;
        }
        let mut overdrawn = account("c", AccountState::Healthy, 0);
        if let Some(b) = overdrawn.balance.as_mut() {
            b.infos[0].total = Usd::from_nanos(-370_000_000);
        }
        let pool = PoolStatus {
            accounts: vec![
                account("a", AccountState::Healthy, 100),
                unavailable,
                overdrawn,
            ],
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        assert_eq!(pool.usd_balance(), Usd::from_dollars(100));
    }

    /// Two accounts with one key hold one balance: it counts once, whichever of them serves.
    #[test]
    fn accounts_sharing_a_key_count_their_balance_once() {
        let twin = |name: &str, state, of: &str| AccountStatus {
            same_key_as: Some(of.into()),
            ..account(name, state, 50)
        };
        let pool = PoolStatus {
            accounts: vec![
                account("a", AccountState::Healthy, 50),
                twin("c", AccountState::Healthy, "a"),
                account("d", AccountState::Healthy, 100),
            ],
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        assert_eq!(pool.usd_balance(), Usd::from_dollars(150));
        // The first one disabled by the operator: its twin still holds that balance.
        let pool = PoolStatus {
            accounts: vec![
                account("a", AccountState::Disabled, 50),
                twin("c", AccountState::Healthy, "a"),
            ],
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        assert_eq!(pool.usd_balance(), Usd::from_dollars(50));
    }
}
