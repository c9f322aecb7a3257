//! The upstream pool as the operator sees it (daemon side): the pool's status, the customers'
//! liability, and the warnings worth an alert.

use super::protocol::{AccountView, BalanceView, CurrencyBalance, ModelLoadView, UpstreamView};
use crate::money::Usd;
use crate::state::AppState;
use crate::status::KeyStatus;
use crate::upstream::account::AccountState;
use crate::upstream::status::{AccountStatus, PoolStatus};

/// What the active keys may still spend: what the DeepSeek balance should cover.
pub fn liability(state: &AppState) -> Usd {
    state
        .keys
        .all()
        .iter()
        .filter(|k| k.status() == KeyStatus::Active)
        .fold(Usd::ZERO, |sum, k| {
            sum.saturating_add(k.balance().remaining())
        })
}

/// The pool now.
pub fn upstream_view(state: &AppState) -> UpstreamView {
    let pool = state.upstream.status();
    let liability = liability(state);
    let usd = pool.usd_balance();
    let coverage_percent = (liability > Usd::ZERO).then(|| {
        let pct = i128::from(usd.nanos().max(0)) * 100 / i128::from(liability.nanos());
        u64::try_from(pct).unwrap_or(u64::MAX)
    });
    UpstreamView {
        warnings: warnings(&pool, usd, liability, coverage_percent),
        accounts: pool.accounts.iter().map(account_view).collect(),
        usd_balance: usd,
        liability_usd: liability,
        coverage_percent,
        low_balance_usd: pool.low_balance,
        failovers: pool.failovers,
    }
}

fn account_view(a: &AccountStatus) -> AccountView {
    AccountView {
        name: a.name.clone(),
        state: a.state.as_str().to_string(),
        cooling_until_ms: a.cooling_until_ms,
        backoff_ms: a.backoff_ms,
        weight: a.weight,
        models: a
            .models
            .iter()
            .map(|m| ModelLoadView {
                model: m.model.clone(),
                in_flight: m.in_flight,
                cap: m.cap,
            })
            .collect(),
        balance: a.balance.as_ref().map(|b| BalanceView {
            is_available: b.is_available,
            at_ms: b.at_ms,
            currencies: b
                .infos
                .iter()
                .map(|i| CurrencyBalance {
                    currency: i.currency.clone(),
                    total: i.total,
                    granted: i.granted,
                    topped_up: i.topped_up,
                })
                .collect(),
        }),
        disabled_by_operator: a.by_operator,
        last_error: a.last_error.as_ref().map(|(e, _)| e.clone()),
        last_error_ms: a.last_error.as_ref().map(|(_, at)| *at),
        requests: a.requests,
        errors: a.errors,
    }
}

/// Disabled accounts, low balances and low coverage, one line each.
fn warnings(pool: &PoolStatus, usd: Usd, liability: Usd, coverage: Option<u64>) -> Vec<String> {
    let mut w = Vec::new();
    // Said first and plainly: the per-account lines alone did not say that nothing is left
    // (found by an independent check, after disabling the last account).
    if !pool.accounts.is_empty()
        && pool
            .accounts
            .iter()
            .all(|a| a.state == AccountState::Disabled)
    {
        w.push(
            "no account is in service: every request fails (502) until one is enabled \
             (`modelrelay upstream enable NAME`) or fixed"
                .into(),
        );
    } else if !pool.accounts.is_empty()
        && pool
            .accounts
            .iter()
            .all(|a| a.state == AccountState::Disabled || a.balance_refused)
    {
        // The storefront's own view (found by a re-check: it refused orders while every line
        // here said "healthy").
        w.push(
            "no account may serve as far as its balance check says (its key or base_url \
             refused; see each account's last error): the storefront takes no new order until \
             one answers a request or its balance reads again"
                .into(),
        );
    }
    for a in &pool.accounts {
        if let Some(first) = &a.same_key_as {
            w.push(format!(
                "accounts {first} and {} use the same DeepSeek key: one DeepSeek account, one \
                 balance (counted once) and one limit of requests in flight",
                a.name
            ));
        }
        if a.state == AccountState::Disabled && a.by_operator {
            w.push(format!(
                "account {} is disabled by the operator (`modelrelay upstream enable {}`)",
                a.name, a.name
            ));
        } else if a.state == AccountState::Disabled {
            let why = a.last_error.as_ref().map_or("", |(e, _)| e.as_str());
            w.push(format!("account {} is disabled: {why}", a.name));
        }
        if let Some(b) = &a.balance {
            if !b.is_available {
                w.push(format!(
                    "account {}: DeepSeek says it is not available",
                    a.name
                ));
            }
            let holds_usd = b.infos.iter().any(|i| i.currency == "USD");
            if holds_usd && b.usd() < pool.low_balance {
                w.push(format!(
                    "account {}: DeepSeek balance ${} is below ${}",
                    a.name,
                    b.usd(),
                    pool.low_balance
                ));
            }
        }
    }
    for a in &pool.accounts {
        if let Some((why, since)) = &a.balance_unread {
            let kept = a.balance.as_ref().map_or_else(
                || "no reading yet".to_string(),
                |b| format!("the balance shown was read {}", utc(b.at_ms)),
            );
            w.push(format!(
                "account {}: cannot read its DeepSeek balance since {} ({why}); {kept}",
                a.name,
                utc(*since)
            ));
        }
    }
    // An account in service whose balance was never read counts as $0 in the sum: the
    // coverage is not known yet, and is not said as if it were (found by an independent
    // re-check: "$0.00 covers 0%" next to "no reading yet").
    let unread: Vec<&str> = pool
        .accounts
        .iter()
        .filter(|a| a.state != AccountState::Disabled && a.balance.is_none())
        .map(|a| a.name.as_str())
        .collect();
    if !unread.is_empty() {
        if coverage.is_some() {
            w.push(format!(
                "how much of what customers may still spend (${liability}) the DeepSeek balance \
                 covers is not known yet: no balance read yet for {}",
                unread.join(", ")
            ));
        }
    } else if let Some(pct) = coverage.filter(|p| *p < 100) {
        // As the pool line says it: a balance that covers under 1% is not nothing.
        let pct = if pct == 0 && usd > Usd::ZERO {
            "<1".to_string()
        } else {
            pct.to_string()
        };
        w.push(format!(
            "DeepSeek balance ${usd} covers {pct}% of what customers may still spend (${liability})"
        ));
    }
    w
}

/// A moment (unix ms) as the operator reads it in a warning.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, read: bool) -> AccountStatus {
        let mut a = crate::upstream::status::tests::account(name, AccountState::Healthy, 5);
        if !read {
            a.balance = None;
        }
        a
    }

    /// Every account refused at its balance check: said, as the storefront sells nothing.
    #[test]
    fn every_account_refused_at_its_balance_check_is_said() {
        let mut refused = account("a", true);
        refused.balance_refused = true;
        let pool = |accounts| PoolStatus {
            accounts,
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        let said = |p: &PoolStatus| {
            warnings(p, Usd::from_dollars(5), Usd::ZERO, None)
                .iter()
                .any(|w| w.contains("the storefront takes no new order"))
        };
        assert!(said(&pool(vec![refused.clone()])));
        assert!(!said(&pool(vec![refused, account("b", true)])));
    }

    /// An account whose balance was never read makes the coverage unknown, not "$0 covers 0%";
    /// once every one is read, the coverage is said.
    #[test]
    fn coverage_is_not_said_while_a_balance_is_unread() {
        let pool = |read_b: bool| PoolStatus {
            accounts: vec![account("a", true), account("b", read_b)],
            failovers: 0,
            low_balance: Usd::ZERO,
        };
        let liability = Usd::from_dollars(100);
        let w = warnings(&pool(false), Usd::from_dollars(5), liability, Some(5));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("not known yet: no balance read yet for b"),
            "{w:?}"
        );
        let w = warnings(&pool(true), Usd::from_dollars(10), liability, Some(10));
        assert_eq!(
            w,
            ["DeepSeek balance $10.00 covers 10% of what customers may still spend ($100.00)"]
        );
    }
}
