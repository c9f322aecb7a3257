//! `modelrelay upstream status [--json]`, `upstream enable|disable NAME`: the pool of DeepSeek
//! accounts on the running daemon.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::out::{fail, output, print_json};
use super::tables::field;
use crate::activity::client;
use crate::activity::protocol::{Request, Response, UpstreamView};

/// `upstream …`
#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// Admin socket (default: from config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: UpstreamCommand,
}

/// `upstream` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Accounts, their state, load per model, DeepSeek balance, and coverage of the customers'
    /// remaining budgets.
    Status,
    /// Put an account back in service.
    Enable {
        /// The account's name.
        name: String,
    },
    /// Take an account out of service until enabled.
    Disable {
        /// The account's name.
        name: String,
    },
}

/// Run an `upstream` command against the daemon at `path`.
pub(super) async fn upstream(path: &Path, args: UpstreamArgs) -> ExitCode {
    let req = match &args.command {
        UpstreamCommand::Status => Request::UpstreamStatus,
        UpstreamCommand::Enable { name } => Request::UpstreamEnable { name: name.clone() },
        UpstreamCommand::Disable { name } => Request::UpstreamDisable { name: name.clone() },
    };
    match client::call(path, &req).await {
        Err(e) => fail(e),
        Ok(Response::Error { message }) => fail(message),
        Ok(Response::Upstream { upstream }) if args.json => print_json(&upstream),
        Ok(Response::Upstream { upstream }) => output(&table(&upstream)),
        Ok(other) => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}

/// The pool for people. What DeepSeek (or whatever answers at an account's `base_url`) wrote
/// — a balance's currency and amount, an error's text — is escaped like every field written
/// by someone else: raw, a currency could set the terminal's title or clear it (found by an
/// independent check).
fn table(u: &UpstreamView) -> String {
    let now = crate::clock::now_ms();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<12} {:>7} {:>7}  {:<28} {:<26} LAST ERROR",
        "ACCOUNT", "STATE", "REQS", "ERRORS", "IN FLIGHT / CAP", "BALANCE"
    );
    for a in &u.accounts {
        let load: Vec<String> = a
            .models
            .iter()
            .map(|m| format!("{} {}/{}", short(&m.model), m.in_flight, m.cap))
            .collect();
        let balance = match &a.balance {
            Some(b) => b
                .currencies
                .iter()
                .map(|c| format!("{} {}", field(&c.currency), c.total))
                .collect::<Vec<_>>()
                .join(", "),
            None => "not read yet".into(),
        };
        let _ = writeln!(
            s,
            "{:<16} {:<12} {:>7} {:>7}  {:<28} {:<26} {}",
            field(&a.name),
            state_word(a, now),
            a.requests,
            a.errors,
            load.join(", "),
            balance,
            field(a.last_error.as_deref().unwrap_or("-"))
        );
    }
    let coverage = u
        .coverage_text()
        .map_or_else(|| "nothing owed".to_string(), |p| format!("coverage {p}"));
    // No reading is not an empty account (an upstream without DeepSeek's balance endpoint).
    let (balance, coverage) = if u.balance_read() {
        (
            format!("${} (accounts in service)", u.usd_balance),
            coverage,
        )
    } else {
        (
            "unknown (no reading of the accounts in service)".to_string(),
            "coverage unknown".to_string(),
        )
    };
    let _ = writeln!(
        s,
        "\nUSD balance {balance}, customers may still spend ${} ({coverage}); failovers {}",
        u.liability_usd, u.failovers
    );
    for w in &u.warnings {
        let _ = writeln!(s, "warning: {}", field(w));
    }
    s
}

/// `deepseek-v4-flash` → `flash`.
fn short(model: &str) -> &str {
    model.rsplit('-').next().unwrap_or(model)
}

/// The state column: `probation` for a healthy account whose last rest is kept (a failure
/// rests it for twice as long), `cooling 12s` with the seconds until its trial request, `trial
/// due` once its rest is over (it stayed `cooling` for as long as no request came; found by an
/// independent check), else the state as it is.
fn state_word(a: &crate::activity::protocol::AccountView, now_ms: i64) -> String {
    match a.state.as_str() {
        "healthy" if a.backoff_ms > 0 => "probation".into(),
        "cooling" => {
            let left = a
                .cooling_until_ms
                .map_or(0, |until| (until - now_ms).max(0));
            match u64::try_from(left).unwrap_or(0).div_ceil(1000) {
                0 => "trial due".into(),
                secs => format!("cooling {secs}s"),
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::activity::protocol::{AccountView, BalanceView, CurrencyBalance, UpstreamView};
    use crate::money::Usd;

    /// What DeepSeek wrote (a currency, an error) reaches the terminal escaped: no escape
    /// sequence, no forged line.
    #[test]
    fn what_upstream_wrote_is_escaped_in_the_table() {
        let hostile = "X\u{1b}]0;TITLE\u{7}\u{1b}[2J\nforged line\u{202e}\u{3164}";
        let account = AccountView {
            name: "a".into(),
            state: "healthy".into(),
            cooling_until_ms: None,
            backoff_ms: 0,
            weight: 1,
            models: vec![],
            balance: Some(BalanceView {
                is_available: true,
                at_ms: 0,
                currencies: vec![CurrencyBalance {
                    currency: hostile.into(),
                    total: Usd::from_dollars(1),
                    granted: Usd::ZERO,
                    topped_up: Usd::ZERO,
                }],
            }),
            disabled_by_operator: false,
            last_error: Some(hostile.into()),
            last_error_ms: None,
            requests: 0,
            errors: 0,
        };
        let view = UpstreamView {
            accounts: vec![account],
            usd_balance: Usd::ZERO,
            liability_usd: Usd::ZERO,
            coverage_percent: None,
            low_balance_usd: Usd::ZERO,
            failovers: 0,
            warnings: vec![hostile.into()],
        };
        let text = super::table(&view);
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || crate::text::is_invisible(c)),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
        assert!(text.contains("X\\u{1b}]0;TITLE\\u{7}"), "{text}");
    }

    /// A rest's seconds left, rounded up, then `trial due`.
    #[test]
    fn a_cooling_account_shows_its_rest_then_trial_due() {
        let a = |state: &str, until: Option<i64>, backoff_ms: u64| AccountView {
            name: "a".into(),
            state: state.into(),
            cooling_until_ms: until,
            backoff_ms,
            weight: 1,
            models: vec![],
            balance: None,
            disabled_by_operator: false,
            last_error: None,
            last_error_ms: None,
            requests: 0,
            errors: 0,
        };
        assert_eq!(
            super::state_word(&a("cooling", Some(12_500), 5_000), 1_000),
            "cooling 12s"
        );
        assert_eq!(
            super::state_word(&a("cooling", Some(1_000), 5_000), 1_000),
            "trial due"
        );
        assert_eq!(
            super::state_word(&a("cooling", Some(500), 5_000), 1_000),
            "trial due"
        );
        assert_eq!(
            super::state_word(&a("healthy", None, 5_000), 1_000),
            "probation"
        );
        assert_eq!(super::state_word(&a("healthy", None, 0), 1_000), "healthy");
        assert_eq!(
            super::state_word(&a("disabled", None, 0), 1_000),
            "disabled"
        );
    }
}
