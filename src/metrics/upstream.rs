//! The upstream pool on `/metrics`: each account's state, load against its caps, DeepSeek
//! balance, requests and errors; failovers; and the customers' liability the balance covers.

use std::fmt::Write as _;

use super::{escape, head};
use crate::money::Usd;
use crate::state::AppState;
use crate::upstream::account::AccountState;
use crate::upstream::status::{ModelLoad, PoolStatus};

/// Money as Prometheus wants it: a decimal number (exact: nano-units as a decimal string).
fn number(u: Usd) -> String {
    u.to_string()
}

/// One gauge line per account and model, `value` read from that model's load.
fn per_model(out: &mut String, pool: &PoolStatus, name: &str, value: fn(&ModelLoad) -> u64) {
    for a in &pool.accounts {
        for m in &a.models {
            let _ = writeln!(
                out,
                "{name}{{account=\"{}\",model=\"{}\"}} {}",
                escape(&a.name),
                escape(&m.model),
                value(m)
            );
        }
    }
}

/// Render the pool's families.
pub fn render(out: &mut String, state: &AppState) {
    let pool = state.upstream.status();
    head(
        out,
        "modelrelay_upstream_account_state",
        "gauge",
        "1 for the state each upstream account is in (healthy, cooling, disabled).",
    );
    for a in &pool.accounts {
        for s in [
            AccountState::Healthy,
            AccountState::Cooling,
            AccountState::Disabled,
        ] {
            let on = u8::from(a.state == s);
            let _ = writeln!(
                out,
                "modelrelay_upstream_account_state{{account=\"{}\",state=\"{}\"}} {on}",
                escape(&a.name),
                s.as_str()
            );
        }
    }
    head(
        out,
        "modelrelay_upstream_in_flight",
        "gauge",
        "Requests in flight per upstream account and model.",
    );
    per_model(out, &pool, "modelrelay_upstream_in_flight", |m| {
        u64::from(m.in_flight)
    });
    head(
        out,
        "modelrelay_upstream_max_in_flight",
        "gauge",
        "The cap of requests in flight per upstream account and model.",
    );
    per_model(out, &pool, "modelrelay_upstream_max_in_flight", |m| {
        u64::from(m.cap)
    });
    head(
        out,
        "modelrelay_upstream_balance",
        "gauge",
        "DeepSeek balance per upstream account and currency, at the latest reading.",
    );
    for a in &pool.accounts {
        for b in a.balance.iter().flat_map(|b| b.infos.iter()) {
            let _ = writeln!(
                out,
                "modelrelay_upstream_balance{{account=\"{}\",currency=\"{}\"}} {}",
                escape(&a.name),
                escape(&b.currency),
                number(b.total)
            );
        }
    }
    head(
        out,
        "modelrelay_upstream_requests_total",
        "counter",
        "Attempts sent to each upstream account.",
    );
    for a in &pool.accounts {
        let _ = writeln!(
            out,
            "modelrelay_upstream_requests_total{{account=\"{}\"}} {}",
            escape(&a.name),
            a.requests
        );
    }
    head(
        out,
        "modelrelay_upstream_errors_total",
        "counter",
        "Attempts that failed, per upstream account.",
    );
    for a in &pool.accounts {
        let _ = writeln!(
            out,
            "modelrelay_upstream_errors_total{{account=\"{}\"}} {}",
            escape(&a.name),
            a.errors
        );
    }
    head(
        out,
        "modelrelay_upstream_failovers_total",
        "counter",
        "Attempts that failed over to another upstream account.",
    );
    let _ = writeln!(
        out,
        "modelrelay_upstream_failovers_total {}",
        pool.failovers
    );
    head(
        out,
        "modelrelay_liability_usd",
        "gauge",
        "What the active keys may still spend, USD: the DeepSeek balance should cover it.",
    );
    let _ = writeln!(
        out,
        "modelrelay_liability_usd {}",
        number(crate::activity::upstream_view::liability(state))
    );
    head(
        out,
        "modelrelay_upstream_balance_usd",
        "gauge",
        "USD across the latest balance readings of the upstream accounts not disabled \
         (absent while none of them has a reading).",
    );
    if pool.balance_read() {
        let _ = writeln!(
            out,
            "modelrelay_upstream_balance_usd {}",
            number(pool.usd_balance())
        );
    }
}
