//! The simulated DeepSeek accounts: which keys exist, each account's balance (drawn down at
//! DeepSeek's list prices, in integer nano-USD), its fault set by a test, and how many of its
//! requests are in flight ([`Ticket`]s), overall and per model, with the maximum ever seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::{AccountFault, SimBalance, SimOptions, lock};
use crate::money::{NANOS_PER_USD, Usd};

/// DeepSeek's off-peak list prices in nano-USD per million tokens: cache hit, cache miss, output.
/// Peak prices are twice these (since 2026-08-16 off-peak is half price).
const FLASH_PRICES: [i64; 3] = [3_000_000, 150_000_000, 600_000_000];
const PRO_PRICES: [i64; 3] = [22_000_000, 660_000_000, 1_980_000_000];

/// What `/user/balance` reports for an account without a balance limit (the simulator's answer
/// before balances existed).
const UNLIMITED_REPORT: &str = "100.00";

/// The cost of one answer at DeepSeek's list prices, rounded up to the next nano-dollar.
pub(super) fn list_cost(model: &str, peak: bool, hit: u64, miss: u64, output: u64) -> Usd {
    let prices = if model.contains("pro") {
        PRO_PRICES
    } else {
        FLASH_PRICES
    };
    let factor = if peak { 2 } else { 1 };
    let total: i128 = [hit, miss, output]
        .iter()
        .zip(prices)
        .map(|(tokens, price)| i128::from(*tokens) * i128::from(price) * factor)
        .sum();
    let nanos = (total + 999_999) / 1_000_000;
    Usd::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

/// A count now and the highest it has been since the last reset.
#[derive(Clone, Copy, Debug, Default)]
struct Gauge {
    now: usize,
    max: usize,
}

impl Gauge {
    fn up(&mut self) {
        self.now += 1;
        self.max = self.max.max(self.now);
    }

    fn down(&mut self) {
        self.now = self.now.saturating_sub(1);
    }
}

#[derive(Default)]
struct Account {
    balance: Option<SimBalance>,
    fault: Option<AccountFault>,
    /// Requests from when their headers arrived until their answer ended.
    flight: Gauge,
    /// Admitted requests per served model, from admission until their answer ended.
    models: HashMap<String, Gauge>,
}

#[derive(Default)]
struct Book {
    /// Keys in the order they were configured (the default account first).
    order: Vec<String>,
    by_key: HashMap<String, Account>,
}

/// Every account of one simulator.
pub(super) struct Accounts {
    book: Mutex<Book>,
    peak: AtomicBool,
    cap: Option<usize>,
}

impl Accounts {
    /// The default account (`opts.api_key`) and `opts.accounts`; a key given twice keeps the first.
    pub(super) fn new(opts: &SimOptions) -> Accounts {
        let mut book = Book::default();
        let all = std::iter::once((&opts.api_key, &opts.balance))
            .chain(opts.accounts.iter().map(|a| (&a.api_key, &a.balance)));
        for (key, balance) in all {
            if !book.by_key.contains_key(key) {
                book.order.push(key.clone());
                let account = Account {
                    balance: *balance,
                    ..Account::default()
                };
                book.by_key.insert(key.clone(), account);
            }
        }
        Accounts {
            book: Mutex::new(book),
            peak: AtomicBool::new(opts.peak),
            cap: opts.concurrency_cap,
        }
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Account) -> T) -> Option<T> {
        lock(&self.book).by_key.get_mut(key).map(f)
    }

    /// Whether `key` is one of the accounts' keys.
    pub(super) fn known(&self, key: &str) -> bool {
        lock(&self.book).by_key.contains_key(key)
    }

    /// Every account's key, the default account first.
    pub(super) fn keys(&self) -> Vec<String> {
        lock(&self.book).order.clone()
    }

    /// Charge at peak prices from now on (`false`: off-peak).
    pub(super) fn set_peak(&self, peak: bool) {
        self.peak.store(peak, Ordering::Relaxed);
    }

    /// Replace an account's balance; `false` when the key is unknown.
    pub(super) fn set_balance(&self, key: &str, balance: Option<SimBalance>) -> bool {
        self.with(key, |a| a.balance = balance).is_some()
    }

    /// An account's balance; `None` when it has no limit or the key is unknown.
    pub(super) fn balance(&self, key: &str) -> Option<SimBalance> {
        self.with(key, |a| a.balance).flatten()
    }

    /// Set or clear an account's fault; `false` when the key is unknown.
    pub(super) fn set_fault(&self, key: &str, fault: Option<AccountFault>) -> bool {
        self.with(key, |a| a.fault = fault).is_some()
    }

    /// The fault set for `key`, if any.
    pub(super) fn fault(&self, key: &str) -> Option<AccountFault> {
        self.with(key, |a| a.fault).flatten()
    }

    /// Whether the account may start an answer: it has no limit, or money left above zero.
    pub(super) fn can_pay(&self, key: &str) -> bool {
        self.with(key, |a| {
            a.balance.as_ref().is_none_or(|b| b.total() > Usd::ZERO)
        })
        .unwrap_or(false)
    }

    /// Draw an answer's cost from the account at the current list prices; granted money goes
    /// first, the topped-up part may end below zero (an answer already started is never cut).
    pub(super) fn charge(&self, key: &str, model: &str, hit: u64, miss: u64, output: u64) {
        let cost = list_cost(model, self.peak.load(Ordering::Relaxed), hit, miss, output);
        self.with(key, |a| {
            if let Some(b) = a.balance.as_mut() {
                let from_granted = cost.min(b.granted.max(Usd::ZERO));
                b.granted = b.granted.saturating_sub(from_granted);
                b.topped_up = b
                    .topped_up
                    .saturating_sub(cost.saturating_sub(from_granted));
            }
        });
    }

    /// A ticket counting one more request of `key` in flight; `None` for an unknown key.
    pub(super) fn enter(self: &Arc<Self>, key: &str) -> Option<Ticket> {
        self.with(key, |a| a.flight.up())?;
        Some(Ticket {
            accounts: self.clone(),
            key: key.to_owned(),
            model: OnceLock::new(),
        })
    }

    /// `(now, max)` of the account's requests in flight, or of those admitted for `model`.
    pub(super) fn gauge(&self, key: &str, model: Option<&str>) -> (usize, usize) {
        let gauge = self.with(key, |a| match model {
            None => a.flight,
            Some(m) => a.models.get(m).copied().unwrap_or_default(),
        });
        let g = gauge.unwrap_or_default();
        (g.now, g.max)
    }

    /// Start every maximum again from the current count.
    pub(super) fn reset_max(&self) {
        for a in lock(&self.book).by_key.values_mut() {
            a.flight.max = a.flight.now;
            for g in a.models.values_mut() {
                g.max = g.now;
            }
        }
    }

    /// The `/user/balance` answer for `key`; `None` for an unknown key.
    pub(super) fn balance_report(&self, key: &str) -> Option<Value> {
        let balance = self.with(key, |a| a.balance)?;
        let Some(b) = balance else {
            return Some(
                json!({"is_available": true, "balance_infos": [{"currency": "USD",
                "total_balance": UNLIMITED_REPORT, "granted_balance": "0.00",
                "topped_up_balance": UNLIMITED_REPORT}]}),
            );
        };
        let mut infos = vec![json!({"currency": "USD",
            "total_balance": cents(b.total().nanos(), NANOS_PER_USD / 100),
            "granted_balance": cents(b.granted.nanos(), NANOS_PER_USD / 100),
            "topped_up_balance": cents(b.topped_up.nanos(), NANOS_PER_USD / 100)})];
        if let Some(cny) = b.cny {
            infos.push(json!({"currency": "CNY",
                "total_balance": cents(cny.granted_fen.saturating_add(cny.topped_up_fen), 1),
                "granted_balance": cents(cny.granted_fen, 1),
                "topped_up_balance": cents(cny.topped_up_fen, 1)}));
        }
        Some(json!({"is_available": b.total() > Usd::ZERO, "balance_infos": infos}))
    }
}

/// `amount` (in units of which `per_cent` make a hundredth) as a decimal string with two places,
/// rounded down so that a report never shows money that is not there.
fn cents(amount: i64, per_cent: i64) -> String {
    let c = amount.div_euclid(per_cent.max(1));
    let sign = if c < 0 { "-" } else { "" };
    let abs = c.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// One request of a known account in flight: counted from its headers until this is dropped
/// (with the response body, i.e. when the answer ended or the client went away).
pub(super) struct Ticket {
    accounts: Arc<Accounts>,
    key: String,
    /// The served model, once the request was admitted.
    model: OnceLock<String>,
}

impl Ticket {
    /// Admit the request for `model` unless the account already has `cap` admitted requests in
    /// flight (DeepSeek's per-account limit); from now on it also counts for the model.
    pub(super) fn admit(&self, model: &str) -> bool {
        let cap = self.accounts.cap;
        let admitted = self.accounts.with(&self.key, |a| {
            let busy: usize = a.models.values().map(|g| g.now).sum();
            if cap.is_some_and(|c| busy >= c) {
                return false;
            }
            a.models.entry(model.to_owned()).or_default().up();
            true
        });
        let admitted = admitted.unwrap_or(false);
        if admitted {
            let _ = self.model.set(model.to_owned());
        }
        admitted
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let model = self.model.get();
        self.accounts.with(&self.key, |a| {
            a.flight.down();
            if let Some(g) = model.and_then(|m| a.models.get_mut(m)) {
                g.down();
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn list_prices_per_token() {
        // 1M tokens of each kind cost exactly the list price.
        let m = 1_000_000;
        let flash = list_cost("deepseek-v4-flash", false, m, m, m);
        assert_eq!(flash, "0.753".parse().unwrap());
        let pro_peak = list_cost("deepseek-v4-pro", true, m, m, m);
        assert_eq!(pro_peak, "5.324".parse().unwrap());
        // One token of each: 3 + 150 + 600 nano-USD off-peak on flash.
        assert_eq!(list_cost("deepseek-chat", false, 1, 1, 1).nanos(), 753);
        assert_eq!(list_cost("deepseek-v4-pro", false, 1, 0, 0).nanos(), 22);
    }

    #[test]
    fn cents_round_down() {
        assert_eq!(cents(110 * NANOS_PER_USD, NANOS_PER_USD / 100), "110.00");
        assert_eq!(cents(1_999_999_999, NANOS_PER_USD / 100), "1.99");
        assert_eq!(cents(-1, NANOS_PER_USD / 100), "-0.01");
        assert_eq!(cents(-150, 1), "-1.50");
        assert_eq!(cents(7050, 1), "70.50");
    }
}
