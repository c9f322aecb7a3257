//! The CLI's tables and cards: what `keys`, `orders` and `mail` print for people (with
//! `--json` they print the views themselves).

use std::fmt::Write as _;

use crate::activity::protocol::{KeyView, MailView, MailWithheld, OrderView};
use crate::kinds::OrderKind;
use crate::status::KeyStatus;

// Writing to a String cannot fail: the `fmt::Result`s below are always `Ok`.

pub(super) fn orders_table(orders: &[OrderView]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<20} {:<9} {:<8} {:<10} {:>9}  {:<21} EMAIL",
        "ORDER", "CREATED", "STATUS", "KIND", "PLAN", "AMOUNT", "KEY"
    );
    for o in orders {
        let _ = writeln!(
            s,
            "{:<24} {:<20} {:<9} {:<8} {:<10} {:>9}  {:<21} {}",
            o.order_id,
            o.created_at,
            // Paid, part of it refunded: said, as the console says it (the table showed plain
            // "paid"; found by an independent check). `orders show` has the amount.
            if crate::activity::views::partly_refunded(o) {
                "part-ref"
            } else {
                o.status.as_str()
            },
            kind(o.kind),
            o.plan,
            format!("${}", o.amount_usd),
            o.key_id.as_deref().unwrap_or("-"),
            field(&o.email)
        );
    }
    if orders.is_empty() {
        s.push_str("(no orders yet)\n");
    }
    printable(s)
}

/// `label:      value` lines.
fn card(fields: &[(&str, String)]) -> String {
    let mut s = String::new();
    for (label, value) in fields {
        let _ = writeln!(s, "{:<12}{value}", format!("{label}:"));
    }
    printable(s)
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// An order's kind as the tables show it.
fn kind(k: OrderKind) -> &'static str {
    match k {
        OrderKind::Purchase => "purchase",
        OrderKind::TopUp => "top-up",
    }
}

pub(super) fn order_card(o: &OrderView) -> String {
    card(&[
        ("order", o.order_id.clone()),
        (
            "status",
            if crate::activity::views::partly_refunded(o) {
                "paid (part refunded)".to_string()
            } else {
                o.status.as_str().to_string()
            },
        ),
        ("kind", kind(o.kind).to_string()),
        ("plan", o.plan.clone()),
        ("amount", format!("${}", o.amount_usd)),
        ("refunded", format!("${}", o.refunded_usd)),
        ("email", field(&o.email)),
        (
            if o.kind == OrderKind::TopUp {
                "topped up"
            } else {
                "key"
            },
            or_dash(&o.key_id),
        ),
        ("paypal", or_dash(&o.paypal_order_id)),
        ("made at", or_dash(&o.paypal_app)),
        ("capture", or_dash(&o.paypal_capture_id)),
        ("created", o.created_at.clone()),
        ("paid", or_dash(&o.paid_at)),
    ])
}

pub(super) fn keys_table(keys: &[KeyView]) -> String {
    // The amounts' columns as wide as their widest (at least 12): an amount to the
    // nano-dollar (`$19.994391077`) overflowed a fixed 12 and shifted the columns after it
    // (found by an independent check).
    let money: Vec<[String; 3]> = keys
        .iter()
        .map(|k| {
            [
                format!("${}", k.budget_usd),
                format!("${}", k.spent_usd),
                remaining(k),
            ]
        })
        .collect();
    let w = |i: usize| {
        money
            .iter()
            .map(|m| m[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(12)
    };
    let (bw, sw, rw) = (w(0), w(1), w(2));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<21} {:<20} {:<10} {:<9} {:>bw$} {:>sw$} {:>rw$} {:>8}  CREATED",
        "ID", "PREFIX", "PLAN", "STATUS", "BUDGET", "SPENT", "REMAINING", "REQS"
    );
    for (k, [budget, spent, left]) in keys.iter().zip(&money) {
        let _ = writeln!(
            s,
            "{:<21} {:<20} {:<10} {:<9} {:>bw$} {:>sw$} {:>rw$} {:>8}  {}",
            k.id,
            k.prefix,
            k.plan,
            k.status.as_str(),
            budget,
            spent,
            left,
            k.requests,
            k.created_at
        );
    }
    if keys.is_empty() {
        s.push_str("(no keys yet: `modelrelay keys create --plan trial`)\n");
    }
    printable(s)
}

/// What a key can still spend: nothing once revoked (what it had left is not owed to anyone;
/// `keys list` showed it as if it could be spent, beside the dashboard's $0.00 and the
/// liability that leaves it out; found by independent checks).
fn remaining(k: &KeyView) -> String {
    if k.status == KeyStatus::Revoked {
        "-".into()
    } else {
        format!("${}", k.remaining_usd)
    }
}

pub(super) fn key_card(k: &KeyView) -> String {
    let mut s = card(&[
        ("id", k.id.clone()),
        ("prefix", k.prefix.clone()),
        ("plan", k.plan.clone()),
        ("status", k.status.as_str().to_string()),
        ("budget", format!("${}", k.budget_usd)),
        ("spent", format!("${}", k.spent_usd)),
        (
            "remaining",
            if k.status == KeyStatus::Revoked {
                // What it had when revoked (its JSON's remaining is 0: none of it can be used).
                format!(
                    "- (revoked; ${} was left)",
                    k.budget_usd.saturating_sub(k.spent_usd)
                )
            } else {
                remaining(k)
            },
        ),
        ("held", format!("${}", k.held_usd)),
        ("requests", k.requests.to_string()),
        ("email", field(&or_dash(&k.email))),
        ("note", field(&or_dash(&k.note))),
        ("created", k.created_at.clone()),
        ("last used", or_dash(&k.last_used_at)),
    ]);
    if let Some(history) = &k.budget_history {
        s.push_str("budget history:\n");
        for e in history {
            let _ = writeln!(
                s,
                "  {:<20} {:<16} {:>12}  {}",
                e.at,
                e.kind.as_str(),
                // A refund's is negative: `-$0.40`, not `$-0.40`.
                if e.amount_usd < crate::money::Usd::ZERO {
                    format!("-${}", crate::money::Usd::ZERO.saturating_sub(e.amount_usd))
                } else {
                    format!("${}", e.amount_usd)
                },
                e.order_id.as_deref().unwrap_or("")
            );
        }
    }
    printable(s)
}

/// The outbox for people; `sending`: the daemon sends mail (what an empty outbox means).
/// `mail retry --failed`: the messages queued again, then those left failed and why.
pub(super) fn retried_failed_text(
    queued: &[MailView],
    withheld: &[MailWithheld],
    sending: bool,
) -> String {
    let mut s = if queued.is_empty() {
        "no failed message to queue again\n".to_string()
    } else {
        format!(
            "queued again: {}\n{}",
            queued.len(),
            mail_table(queued, sending)
        )
    };
    if !withheld.is_empty() {
        let _ = writeln!(s, "left failed: {}", withheld.len());
        for w in withheld {
            let _ = writeln!(s, "{:>6}  {}", w.id, field(&w.why));
        }
    }
    printable(s)
}

pub(super) fn mail_table(mail: &[MailView], sending: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:<20} {:<11} {:<7} {:<3} {:>4}  {:<30} ABOUT / LAST ERROR",
        "ID", "QUEUED", "KIND", "STATUS", "LNG", "TRY", "TO"
    );
    for m in mail {
        let about = m.order_id.as_deref().or(m.key_id.as_deref()).unwrap_or("-");
        let error = m
            .last_error
            .as_deref()
            .map(|e| format!(" ({})", field(e)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:>6} {:<20} {:<11} {:<7} {:<3} {:>4}  {} {about}{error}",
            m.id,
            m.created_at,
            m.kind.as_str(),
            m.status.as_str(),
            m.lang.as_str(),
            m.attempts,
            column(&field(&m.recipient), 30),
        );
    }
    if mail.is_empty() && sending {
        s.push_str(
            "(no mail yet: receipts and notices are queued as orders and balances call for them)\n",
        );
    } else if mail.is_empty() {
        s.push_str("(no mail yet: receipts and notices are queued once [email] is configured)\n");
    } else if !sending {
        // Queued while it was on (found by an independent re-check: they looked on their way).
        s.push_str(
            "(mail is off: [email] is not configured, so nothing queued is sent until it is)\n",
        );
    }
    printable(s)
}

/// `s` in a column `width` terminal cells wide: padded, or cut with `…`. Cells, not characters:
/// a CJK address takes two a character, and padded by characters it pushed the rest of its row
/// out of line (found by an independent check).
fn column(s: &str, width: usize) -> String {
    let (whole, w) = crate::text::fitting(s, width);
    if whole.len() == s.len() {
        return format!("{s}{}", " ".repeat(width - w));
    }
    let (start, used) = crate::text::fitting(s, width.saturating_sub(1));
    format!("{start}…{}", " ".repeat(width.saturating_sub(1 + used)))
}

/// What the operator's terminal may be sent: a customer's email, an operator's note or an SMTP
/// server's error text could carry escape sequences (a window title, a cleared screen, a
/// clipboard write) or characters that reverse or hide text; each such character shows as
/// `\u{…}` instead. Line breaks of the table itself stay.
fn printable(s: String) -> String {
    escaped(s, true)
}

/// One field written by someone else (an email, a note, an SMTP server's error): on one line,
/// its own line breaks escaped too, so it cannot forge lines of the card around it.
pub(super) fn field(s: &str) -> String {
    escaped(s.to_string(), false)
}

fn escaped(s: String, keep_newlines: bool) -> String {
    let hidden =
        |c: char| (c.is_control() && !(keep_newlines && c == '\n')) || crate::text::is_invisible(c);
    if !s.chars().any(hidden) {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Amounts to the nano-dollar keep the columns after them in line.
    #[test]
    fn the_keys_table_stays_aligned_with_long_amounts() {
        use crate::console::tests::key;
        let keys = [
            key("key_a", "sk-gateway-AaAa…", "pro", "20", "0.005608923"),
            key("key_b", "sk-gateway-BbBb…", "trial", "1", "0"),
        ];
        let table = keys_table(&keys);
        assert!(table.contains("$19.994391077"), "{table}");
        // Where each line's REQS column ends, in characters (the prefixes' `…` is one).
        let ends: Vec<usize> = table
            .lines()
            .map(|l| {
                let at = l
                    .find("REQS")
                    .map(|i| i + 4)
                    .or_else(|| l.find(" 3  ").map(|i| i + 2));
                l[..at.unwrap()].chars().count()
            })
            .collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    /// The outbox says what its state means: nothing due yet, or mail off (then also beside
    /// messages queued while it was on).
    #[test]
    fn the_outbox_says_whether_mail_goes_out() {
        use crate::kinds::{MailKind, MailLang, MailStatus};
        let queued = MailView {
            id: 1,
            kind: MailKind::LowBalance,
            recipient: "a@b.co".into(),
            lang: MailLang::En,
            key_id: None,
            order_id: None,
            status: MailStatus::Queued,
            attempts: 0,
            last_error: None,
            created_at: "2026-12-05T12:00:00Z".into(),
            next_attempt_at: None,
            sent_at: None,
        };
        let off = "mail is off";
        assert!(mail_table(std::slice::from_ref(&queued), false).contains(off));
        assert!(!mail_table(std::slice::from_ref(&queued), true).contains(off));
        assert_eq!(column("ab", 4), "ab  ");
        assert_eq!(column("すずき@example.com", 8), "すずき@…");
        assert_eq!(column("すずき@example.com", 7), "すずき…");
        // A wide character that does not fit leaves a cell of padding.
        assert_eq!(column("すずき@example.com", 6), "すず… ");
        assert!(mail_table(&[], false).contains("once [email] is configured"));
        assert!(!mail_table(&[], true).contains("[email]"));
    }

    #[test]
    fn escapes_and_invisible_characters_never_reach_the_terminal() {
        let hostile = "550 \u{1b}]0;PWNED\u{7}\u{1b}[2J evil\u{202e}txt\u{200b}.";
        assert_eq!(
            printable(format!("{hostile}\nnext line\n")),
            "550 \\u{1b}]0;PWNED\\u{7}\\u{1b}[2J evil\\u{202e}txt\\u{200b}.\nnext line\n"
        );
        assert_eq!(printable("plain 中文 é\n".into()), "plain 中文 é\n");
        // A field's own line breaks cannot forge lines of the card around it.
        assert_eq!(
            field("hi\nstatus:     revoked\u{2028}x"),
            "hi\\u{a}status:     revoked\\u{2028}x"
        );
    }
}
