//! The Upstream view and the header's alert line, at 80×24 and 200×50: each account's state
//! (the cooling countdown), load, balance, errors and requests per minute; the pool's totals and
//! warnings; the first warning on every view; the enable/disable confirmations.

use crossterm::event::KeyCode;

use super::{LARGE, SMALL, assert_has, line_with, screen, view};
use crate::console::app::{App, View};
use crate::console::event::Event;
use crate::console::tests::{NOW, press};

/// The fixture's pool with `f` applied, as the app's latest read at [`NOW`].
fn with_pool(a: &mut App, f: impl FnOnce(&mut crate::activity::protocol::UpstreamView)) {
    let mut v = crate::console::tests::upstream_view();
    f(&mut v);
    a.handle(crate::console::tests::pool_read(v));
}

/// Three warnings: an account the operator disabled, a low balance, low coverage.
fn warnings() -> Vec<String> {
    vec![
        "account primary is disabled by the operator (`modelrelay upstream enable primary`)".into(),
        "account secondary: DeepSeek balance $3.50 is below $10".into(),
        "DeepSeek balance $3.50 covers 7% of what customers may still spend ($49.75)".into(),
    ]
}

#[test]
fn upstream_view_shows_each_account_and_the_pool() {
    for size in [SMALL, LARGE] {
        let lines = screen(&view(View::Upstream), size);
        assert_has(
            &lines,
            &[
                "Upstream accounts (2) read just now",
                "ACCOUNT",
                "IN FLIGHT / CAP",
                "REQ/MIN",
                "ERRORS",
                "USD 25.00 · CNY 50.00",
                "USD balance $135.00  liability $49.75  coverage 271%  failovers 3",
                "no warnings",
            ],
        );
        let primary = line_with(&lines, "primary ");
        for cell in ["healthy", "flash 3/2500 · pro 1/500", " - ", " 2"] {
            assert!(primary.contains(cell), "{cell:?} not in {primary:?}");
        }
        assert!(primary.starts_with("▸primary"), "selected: {primary}");
        let secondary = line_with(&lines, "secondary ");
        for cell in ["cooling 12s", "flash 0/2500 · pro 0/500", " 5"] {
            assert!(secondary.contains(cell), "{cell:?} not in {secondary:?}");
        }
        line_with(&lines, "last error upstream_error 502 · 5m ago");
        line_with(&lines, "last error upstream answered 429 · 3s ago");
    }
    // 80 columns: the balance on a line of its own, with the reading's age and availability.
    let small = screen(&view(View::Upstream), SMALL);
    let balance = line_with(&small, "USD 110.00");
    assert!(
        balance.contains("balance USD 110.00 · read 30s ago · available"),
        "{balance}"
    );
    assert!(line_with(&small, "CNY 50.00").contains("read 45s ago · available"));
    // 200 columns: one line an account.
    let large = screen(&view(View::Upstream), LARGE);
    assert_has(&large, &["BALANCE", "READ", "AVAIL", "LAST ERROR"]);
    let primary = line_with(&large, "primary ");
    for cell in [
        "USD 110.00",
        " 30s ",
        " yes ",
        "upstream_error 502 · 5m ago",
    ] {
        assert!(primary.contains(cell), "{cell:?} not in {primary:?}");
    }
    assert!(line_with(&large, "secondary ").contains("USD 25.00 · CNY 50.00    45s yes"));
}

#[test]
fn upstream_view_counts_cooling_down_and_shows_requests_per_minute() {
    let mut a = view(View::Upstream);
    a.handle(Event::Tick(NOW + 4_500));
    with_pool(&mut a, |v| v.accounts[0].requests = 129);
    for size in [SMALL, LARGE] {
        let lines = screen(&a, size);
        let secondary = line_with(&lines, "secondary ");
        assert!(secondary.contains("cooling 8s "), "rounded up: {secondary}");
        // 9 more requests in 4.5 s.
        assert!(
            line_with(&lines, "primary ").contains(" 120.0 "),
            "{lines:?}"
        );
        assert!(secondary.contains(" 0.0 "), "{secondary}");
    }
    a.handle(Event::Tick(NOW + 70_000));
    assert!(line_with(&screen(&a, SMALL), "secondary ").contains("trial due "));
    // The operator's switch and a disabled account read as such.
    with_pool(&mut a, |v| {
        v.accounts[0].state = "disabled".into();
        v.accounts[0].disabled_by_operator = true;
        v.accounts[1].balance = None;
    });
    let small = screen(&a, SMALL);
    assert!(line_with(&small, "primary ").contains("disabled"));
    line_with(
        &small,
        "disabled by the operator · last error upstream_error 502",
    );
    line_with(&small, "balance not read yet");
}

#[test]
fn the_alert_line_shows_the_first_warning_on_every_view() {
    for v in View::ALL {
        let mut a = view(v);
        with_pool(&mut a, |p| p.warnings = warnings());
        for size in [SMALL, LARGE] {
            let lines = screen(&a, size);
            // The header keeps its two lines; the alert is a third, above the tabs.
            assert_has(&lines[..2], &["modelrelay 0.1.0", "● live", "spend $1.25"]);
            assert!(
                lines[2].starts_with(" ⚠ account primary is disabled"),
                "{}",
                lines[2]
            );
            assert!(lines[2].trim_end().ends_with("(+2 more)"), "{}", lines[2]);
            assert!(lines[3].contains("1 Live") && lines[3].contains("5 Upstream"));
        }
        let wide = screen(&a, LARGE);
        assert!(wide[2].contains("(`modelrelay upstream enable primary`) (+2 more)"));
        // At 80 columns the warning is cut, never the count.
        let small = screen(&a, SMALL);
        assert!(small[2].contains("… (+2 more)"), "{}", small[2]);
    }
    let mut a = view(View::Keys);
    with_pool(&mut a, |p| p.warnings = warnings()[2..].to_vec());
    let lines = screen(&a, SMALL);
    assert_eq!(
        lines[2].trim_end(),
        " ⚠ DeepSeek balance $3.50 covers 7% of what customers may still spend ($49.75)"
    );
    // All well again: no alert, the tabs back on the third line.
    with_pool(&mut a, |_| {});
    let lines = screen(&a, SMALL);
    assert!(lines[2].contains("1 Live"), "{}", lines[2]);
    assert!(!lines.join("\n").contains("DeepSeek balance $3.50"));
}

#[test]
fn upstream_view_lists_the_warnings_under_the_pool() {
    let mut a = view(View::Upstream);
    with_pool(&mut a, |p| {
        p.warnings = warnings();
        p.coverage_percent = Some(7);
    });
    for size in [SMALL, LARGE] {
        let lines = screen(&a, size);
        assert_has(
            &lines,
            &["coverage 7%", "⚠ account secondary: DeepSeek balance $3.50"],
        );
        assert!(!lines.join("\n").contains("no warnings"));
    }
    // Wrapped at 80 columns: the command to run stays readable.
    let text = screen(&a, SMALL).join("\n");
    assert!(text.contains("`modelrelay upstream enable"), "{text}");
}

#[test]
fn upstream_confirmation_dialogs() {
    for size in [SMALL, LARGE] {
        let mut a = view(View::Upstream);
        press(&mut a, KeyCode::Char('d'));
        let lines = screen(&a, size);
        assert_has(
            &lines,
            &[
                "Disable account",
                "Disable upstream account primary?",
                "Requests go to the other accounts until you enable it",
                "y disable · n or Esc cancel",
            ],
        );
        assert!(!lines.join("\n").contains("No other account is in service"));
        press(&mut a, KeyCode::Esc);
        // With the other one disabled, the dialog says what disabling this one means.
        with_pool(&mut a, |v| v.accounts[1].state = "disabled".into());
        press(&mut a, KeyCode::Char('d'));
        assert_has(
            &screen(&a, size),
            &["No other account is in service: every request will fail"],
        );
        press(&mut a, KeyCode::Esc);
        press(&mut a, KeyCode::Char('j'));
        press(&mut a, KeyCode::Char('e'));
        assert_has(
            &screen(&a, size),
            &[
                "Enable account",
                "Put upstream account secondary back in service?",
                "y enable · n or Esc cancel",
            ],
        );
        crate::console::tests::read_the_confirmation(&a);
        press(&mut a, KeyCode::Char('y'));
        assert_has(&screen(&a, size), &["enabling upstream account secondary…"]);
    }
}

/// A healthy account whose last rest is kept (back on probation: a failure rests it for
/// twice as long) reads `probation`, not `healthy`.
#[test]
fn an_account_on_probation_says_so() {
    let mut a = view(View::Upstream);
    with_pool(&mut a, |v| v.accounts[0].backoff_ms = 10_000);
    assert!(line_with(&screen(&a, LARGE), "primary").contains("probation"));
    with_pool(&mut a, |v| v.accounts[0].backoff_ms = 0);
    let lines = screen(&a, LARGE);
    let line = line_with(&lines, "primary");
    assert!(
        line.contains("healthy") && !line.contains("probation"),
        "{line}"
    );
}
