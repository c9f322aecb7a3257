//! Whose fault an SMTP server's permanent refusal (5xx) is: the message's own (no such mailbox,
//! a mailbox full, content refused), so it fails for good — or the server's, the account's or
//! the sender address's, so every message gets it alike and each is tried again as after a
//! server that is down. lettre calls every 5xx "permanent"; taken at its word, a minute of a
//! blocked account failed every message due for good (found by independent checks: a 554
//! greeting, 535 at AUTH, 530 at MAIL FROM, then a `from` address refused at MAIL FROM, a
//! sending quota, a paused account).
//!
//! Read in this order: the code itself (530, 534, 535, 538 are about logging in); the enhanced
//! status code most servers put first in their text (RFC 3463: `5.1.1` a mailbox that does not
//! exist is the message's, `5.7.1` a sender refused or `5.4.5` a quota is not); and, for a server
//! that gives none, the same code given for another message since the last one accepted (the
//! sender sees that itself, [`Refusals`]) or a fresh connection that fails (its caller).

use std::sync::Mutex;

use lettre::transport::smtp::Error;

/// What a 5xx says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// About this message: its recipient, its size or its content.
    Message,
    /// About the server, the account or the sender address: any message would get it.
    Everyone,
    /// Not said: the caller decides by what else it sees.
    Unsaid,
}

/// Whose fault the permanent refusal `e` says it is.
pub(super) fn verdict(e: &Error) -> Verdict {
    let Some(code) = e.status().map(|c| c.to_string()) else {
        return Verdict::Unsaid;
    };
    // Authentication wanted (530), or refused (534, 535, 538), whatever the stage it comes at
    // (a 530 at MAIL FROM failed the message for good; found by a re-check).
    if matches!(code.as_str(), "530" | "534" | "535" | "538") {
        return Verdict::Everyone;
    }
    match enhanced(&e.to_string()) {
        Some((subject, detail)) if about_the_message(subject, detail) => Verdict::Message,
        Some(_) => Verdict::Everyone,
        None => Verdict::Unsaid,
    }
}

/// RFC 3463's subjects and details that are about one message: a bad destination mailbox,
/// system, syntax, ambiguity, a mailbox that moved, a domain that takes no mail (X.1.1–4,
/// X.1.6, X.1.10); the mailbox's own state (X.2.1–4: disabled, full, too large for it, a list's
/// expansion); a message too large for the system (X.3.4); its content or media (X.6.*).
/// Everything else — the sender's address (X.1.7, X.1.8), the system, the network and routing
/// (X.3, X.4: quotas are sent as 5.4.5), the protocol (X.5), security and policy (X.7: a sender
/// refused, an account paused) — would refuse any message. So would X.2.0 and the details
/// RFC 3463 does not define: Microsoft's submission servers refuse a `from` address the
/// account may not send as with `554 5.2.0 …SendAsDeniedException` or `5.2.252 SendAsDenied`
/// (found by a re-check: every message failed for good).
fn about_the_message(subject: u16, detail: u16) -> bool {
    match subject {
        1 => matches!(detail, 1..=4 | 6 | 10),
        2 => matches!(detail, 1..=4),
        6 => true,
        3 => detail == 4,
        _ => false,
    }
}

/// The enhanced status code at the start of a refusal's text (`5.1.1 No such user` in lettre's
/// `permanent error (550): 5.1.1 No such user`): its subject and detail.
fn enhanced(text: &str) -> Option<(u16, u16)> {
    let reply = text.split_once("): ").map_or(text, |(_, r)| r);
    let word = reply.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    (matches!(class, "4" | "5") && parts.next().is_none() && subject < 1000 && detail < 1000)
        .then_some((subject, detail))
}

/// Refusals given since the last message the server accepted: a code given to two messages
/// is the server's, the account's or the sender's, not either message's (a `from` address the
/// server will not send as, from a server that gives no enhanced code, refused every message
/// on a working connection and each failed for good; found by an independent check). The
/// first message of such a run still fails for good (`modelrelay mail retry --failed` queues
/// it again); a second bad address right after a first is only tried again, until
/// `max_attempts` or a message accepted in between.
#[derive(Debug, Default)]
pub(super) struct Refusals(Mutex<Vec<(String, i64)>>);

/// Refusals remembered at most (the oldest forgotten first).
const REMEMBERED: usize = 32;

impl Refusals {
    /// The server accepted a message: nothing it refused before says anything now.
    pub(super) fn accepted(&self) {
        if let Ok(mut seen) = self.0.lock() {
            seen.clear();
        }
    }

    /// Message `row` got the 5xx of `e`: whether another message got the same code since the
    /// last one accepted. Remembered for the next.
    pub(super) fn given_to_another(&self, e: &Error, row: i64) -> bool {
        let Some(code) = e.status().map(|c| c.to_string()) else {
            return false;
        };
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        let another = seen.iter().any(|(c, r)| *c == code && *r != row);
        if !seen.iter().any(|(c, r)| *c == code && *r == row) {
            if seen.len() >= REMEMBERED {
                seen.remove(0);
            }
            seen.push((code, row));
        }
        another
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_read_from_the_start_of_the_reply() {
        assert_eq!(
            enhanced("permanent error (550): 5.1.1 No such user here"),
            Some((1, 1))
        );
        assert_eq!(
            enhanced("permanent error (553): 5.7.1 Sender address rejected"),
            Some((7, 1))
        );
        assert_eq!(
            enhanced("5.4.5 Daily user sending quota exceeded"),
            Some((4, 5))
        );
        assert_eq!(enhanced("permanent error (550): No such user here"), None);
        assert_eq!(enhanced("permanent error (550): 5.1 short"), None);
        assert_eq!(enhanced("permanent error (550): 2.1.1 odd class"), None);
        assert_eq!(enhanced("permanent error (550): 5.1.1.1 long"), None);
        assert_eq!(enhanced("permanent error (550): 5.x.1 nan"), None);
        assert_eq!(enhanced(""), None);
    }

    #[test]
    fn a_mailbox_is_the_messages_fault_a_sender_a_quota_or_a_policy_is_not() {
        for (subject, detail) in [
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 6),
            (1, 10),
            (2, 2),
            (3, 4),
            (6, 0),
        ] {
            assert!(about_the_message(subject, detail), "{subject}.{detail}");
        }
        for (subject, detail) in [
            (1, 7),
            (1, 8),
            (1, 0),
            (2, 0),
            (2, 252),
            (3, 0),
            (4, 5),
            (5, 1),
            (7, 0),
            (7, 1),
        ] {
            assert!(!about_the_message(subject, detail), "{subject}.{detail}");
        }
    }
}
