//! The sender: a background task that takes the messages due from the outbox, renders each from
//! what it is about, sends it over SMTP (lettre, rustls) at most `send_per_minute`, and records
//! the outcome: sent right after the server accepted it, or failed with the next attempt due
//! after an exponential backoff (`retry_secs`, doubling, at most an hour), given up after
//! `max_attempts` or a permanent refusal.
//!
//! Nothing waits on it: requests, payments and pages only queue (in the database, in the
//! transaction of what caused the message) and poke it. A message is marked sent in the
//! database right after the SMTP server accepts it; a crash between the two may send that one
//! message once more after a restart (and never one marked sent). A server that takes the whole
//! message but acknowledges it later than the exchange's bound (3 × `timeout_secs`) is taken
//! as not having answered, so the message is tried again and may arrive more than once: a
//! mail that may come twice is preferred to a receipt that never comes from a server that hung.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::{Facts, render};
use super::refusal::{self, Refusals, Verdict};
use crate::activity::ActivityEvent;
use crate::activity::views::mail_view;
use crate::config::EmailConfig;
use crate::kinds::MailKind;
use crate::state::AppState;
use crate::store::Write;
use crate::store::mail::OutboxRow;

/// How often the outbox is looked at when nobody pokes the sender (messages queued by writes
/// that were not followed by a poke, retries coming due).
const POLL: Duration = Duration::from_secs(2);
/// Messages taken per look.
const BATCH: u32 = 20;
/// The longest wait between two attempts at a message.
const MAX_BACKOFF_SECS: u64 = 3600;
/// The longest any queued message waits for its next attempt (the longest backoff, and a
/// minute's slack): one set for later was set before the clock stepped back.
const MAX_WAIT_MS: i64 = (MAX_BACKOFF_SECS as i64 + 60) * 1000;

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Why an attempt failed; `permanent` ones are not tried again.
struct Failure {
    why: String,
    permanent: bool,
}

/// Start the sender when email is configured. A configuration lettre refuses is logged and
/// leaves messages queued (`check-config` validated its shape already).
pub fn start(state: &Arc<AppState>) {
    if !state.mailer.enabled() {
        return;
    }
    let email = &state.config.email;
    let from = match email.from.trim().parse::<Mailbox>() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "email.from is not an address: mail stays queued");
            return;
        }
    };
    // Its domain in ASCII, as recipients' are: `billing@bücher.example` greeted the server in
    // raw UTF-8, asked SMTPUTF8 of it for every mail (failing every one where it is not
    // offered) and put an encoded word in the Message-ID (found by an independent check).
    let from = match ascii_domain(from.email.as_ref()).parse::<lettre::Address>() {
        Ok(address) => Mailbox::new(from.name.clone(), address),
        Err(_) => from,
    };
    // The sender's own domain, not the machine's host name (lettre's default for both the
    // greeting and Message-ID): an internal name such as `vm` is a detail customers need not
    // see, and relays refuse a greeting that is not a domain.
    let domain = from.email.domain().to_string();
    let transport = match Transport::from_url(email.smtp_url.trim()) {
        Ok(b) => b
            .timeout(Some(Duration::from_secs(email.timeout_secs)))
            .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                domain.clone(),
            ))
            .build(),
        Err(e) => {
            tracing::error!(error = %e, "email.smtp_url is not usable: mail stays queued");
            return;
        }
    };
    let sender = Sender {
        state: Arc::downgrade(state),
        transport,
        from,
        domain,
        config: email.clone(),
        refusals: Refusals::default(),
    };
    tokio::spawn(sender.run());
}

struct Sender {
    state: Weak<AppState>,
    transport: Transport,
    from: Mailbox,
    /// `from`'s domain: the SMTP greeting's name and Message-IDs'.
    domain: String,
    config: EmailConfig,
    /// The 5xx refusals since the last message accepted (see [`Refusals`]).
    refusals: Refusals,
}

impl Sender {
    async fn run(self) {
        let gap = Duration::from_secs(60) / self.config.send_per_minute.max(1);
        let mut pace = tokio::time::interval(gap);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(state) = self.state.upgrade() else {
                return;
            };
            let mailer = state.mailer.clone();
            self.send_due(&state, &mut pace).await;
            drop(state);
            tokio::select! {
                () = mailer.woken() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Send what is due now, in order.
    async fn send_due(&self, state: &AppState, pace: &mut tokio::time::Interval) {
        let now = Utc::now().timestamp_millis();
        let due = match state
            .store
            .read(move |c| crate::store::mail::due(c, now, MAX_WAIT_MS, BATCH))
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return;
            }
        };
        for row in due {
            if state.cut.is_cancelled() {
                return;
            }
            pace.tick().await;
            // Dropped since the batch was read (paced, a batch takes up to ~40 s): not sent.
            let id = row.id;
            match state
                .store
                .read(move |c| crate::store::mail::still_queued(c, id))
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    return;
                }
            }
            let outcome = match self.message(state, &row).await {
                Ok(m) => self.deliver(m, row.id).await,
                Err(f) => Err(f),
            };
            self.record(state, &row, outcome).await;
        }
    }

    /// Render a message and address it.
    async fn message(&self, state: &AppState, row: &OutboxRow) -> Result<Message, Failure> {
        let facts = facts(state, row).await?;
        let r = render(row.kind, row.lang, &facts);
        let to = ascii_domain(&row.recipient)
            .parse::<Mailbox>()
            .map_err(|e| Failure {
                why: format!("recipient: {e}"),
                permanent: true,
            })?;
        Message::builder()
            .message_id(Some(message_id(
                &state.sealer,
                row.id,
                row.created_at.timestamp_millis(),
                &self.domain,
            )))
            .from(self.from.clone())
            .to(to)
            .subject(r.subject)
            .multipart(MultiPart::alternative_plain_html(r.text, r.html))
            .map_err(|e| Failure {
                why: format!("message: {e}"),
                permanent: true,
            })
    }

    /// Hand message `row` to the SMTP server.
    async fn deliver(&self, m: Message, row: i64) -> Result<(), Failure> {
        // lettre's timeout bounds each command; this bounds the whole exchange.
        let limit = Duration::from_secs(self.config.timeout_secs.saturating_mul(3));
        match tokio::time::timeout(limit, self.transport.send(m)).await {
            Ok(Ok(_)) => {
                self.refusals.accepted();
                Ok(())
            }
            Ok(Err(e)) => {
                // Why a 5xx is tried again, for `mail list` (lettre calls every 5xx
                // "permanent": that word showed beside a message still queued; a re-check).
                let retried = if e.is_permanent() {
                    let another = self.refusals.given_to_another(&e, row);
                    match refusal::verdict(&e) {
                        Verdict::Message => None,
                        Verdict::Everyone => Some(
                            "retried: the server's, the account's or the sender's refusal, not \
                             this message's",
                        ),
                        Verdict::Unsaid if another => Some(
                            "retried: another message got the same refusal since the last one \
                             sent, so it seems the server's or the account's",
                        ),
                        Verdict::Unsaid if self.about_this_message(limit).await => None,
                        Verdict::Unsaid => Some("retried: the server refuses a new connection too"),
                    }
                } else {
                    None
                };
                // A non-ASCII address needs SMTPUTF8, which this server does not offer: no
                // later attempt can send it (lettre says so only in its message).
                let permanent = (e.is_permanent() && retried.is_none())
                    || (e.is_client() && e.to_string().contains("SMTPUTF8"));
                let why = match retried {
                    Some(because) => format!("{e} ({because})"),
                    None => e.to_string(),
                };
                Err(Failure { why, permanent })
            }
            Err(_) => Err(Failure {
                why: "the SMTP server did not answer in time".into(),
                permanent: false,
            }),
        }
    }

    /// After a permanent (5xx) refusal that says nothing of whose it is (no enhanced code, see
    /// [`refusal`]): whether it was about this message (its recipient or content), not the
    /// server or the account — a greeting of 554 (the VPS's address blocklisted for a while)
    /// refuses every message alike, and once taken as permanent, one minute of it failed every
    /// message due for good (found by an independent check). A new connection (greeting, EHLO,
    /// STARTTLS, AUTH) that works says the refusal came later, at the message; one that fails
    /// says the server refuses everyone, so the message is tried again as after a temporary
    /// failure.
    async fn about_this_message(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.transport.test_connection()).await,
            Ok(Ok(true))
        )
    }

    /// Record an attempt's outcome, count it, tell the console.
    async fn record(&self, state: &AppState, row: &OutboxRow, outcome: Result<(), Failure>) {
        let now = Utc::now().timestamp_millis();
        let write = match &outcome {
            Ok(()) => {
                state.metrics.mail_sent();
                tracing::info!(id = row.id, kind = row.kind.as_str(), "mail sent");
                Write::MailSent {
                    id: row.id,
                    at_ms: now,
                }
            }
            Err(f) => {
                state.metrics.mail_failed();
                let attempts = row.attempts.saturating_add(1);
                let give_up = f.permanent || attempts >= self.config.max_attempts;
                let wait = backoff(self.config.retry_secs, attempts);
                // `?`: the SMTP server's text, escaped (its control characters would reach the
                // terminal of whoever reads the log; found by an independent check).
                if give_up {
                    tracing::warn!(
                        id = row.id,
                        kind = row.kind.as_str(),
                        attempts,
                        error = ?f.why,
                        "mail given up (if other messages fail alike, mend the SMTP server, the \
                         account or email.from, then `modelrelay mail retry --failed`)"
                    );
                } else {
                    tracing::warn!(id = row.id, kind = row.kind.as_str(), attempts, error = ?f.why, "mail not sent");
                }
                Write::MailFailed {
                    id: row.id,
                    error: f.why.chars().take(500).collect(),
                    next_ms: now
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                    give_up,
                }
            }
        };
        if let Err(e) = state.store.write(write).await {
            tracing::error!(id = row.id, error = %e, "outcome of a mail not recorded");
            return;
        }
        let id = row.id;
        if let Ok(Some(now_row)) = state
            .store
            .read(move |c| crate::store::mail::get(c, id))
            .await
        {
            state.activity.emit(ActivityEvent::MailChanged {
                mail: mail_view(&now_row),
                at_ms: now,
            });
        }
    }
}

/// A message's Message-ID, the same at every attempt and after a restart: when it does arrive
/// twice (a crash between the server's acceptance and its record, a server slower to
/// acknowledge than the exchange's bound), the recipient's mail provider can see the copies are
/// one message — each attempt had its own random id (found by an independent check). Named
/// after the outbox row and when it was queued (unique to this database's message), through
/// the server secret's [`crate::keys::seal::Sealer::tag`]: the row's number itself told every
/// recipient how many mails the shop had sent (found by an independent check).
pub fn message_id(
    sealer: &crate::keys::seal::Sealer,
    id: i64,
    queued_ms: i64,
    domain: &str,
) -> String {
    let tag = sealer.tag(format!("outbox.{id}.{queued_ms}").as_bytes());
    format!("<mr.{tag}@{domain}>")
}

/// The wait before attempt `attempts + 1`: `first`, doubled per attempt, at most an hour.
pub fn backoff(first_secs: u64, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    Duration::from_secs(
        first_secs
            .saturating_mul(1u64 << doublings)
            .min(MAX_BACKOFF_SECS),
    )
}

/// What a message is about, as things stand now.
async fn facts(state: &AppState, row: &OutboxRow) -> Result<Facts, Failure> {
    let gone = |what: &str| Failure {
        why: format!("{what} no longer exists"),
        permanent: true,
    };
    let mut f = Facts {
        public_url: state.config.server.public_url.clone(),
        at: row
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..Facts::default()
    };
    let key = row.key_id.as_deref().and_then(|id| state.keys.by_id(id));
    if let Some(k) = &key {
        let b = k.balance();
        // The key as it was when the mail was queued: a rotation notice names the text that
        // rotation made, however late it is sent (it named the key's text at sending, so
        // three rotations in a row sent three notices naming the last; found by an
        // independent check).
        f.key_prefix = row.key_prefix.clone().unwrap_or_else(|| k.prefix());
        f.remaining = b.remaining();
        f.budget = b.budget;
    }
    match row.kind {
        MailKind::Receipt => {
            let id = row.order_id.clone().ok_or_else(|| gone("the order"))?;
            let (order, rotated_at) = state
                .store
                .read(move |c| {
                    let Some(o) = crate::store::orders::get_full(c, &id)? else {
                        return Ok(None);
                    };
                    let rotated = match &o.extra.topup_key_id {
                        Some(k) => crate::store::keys::rotated_at(c, k)?,
                        None => None,
                    };
                    Ok(Some((o, rotated)))
                })
                .await
                .map_err(|e| Failure {
                    why: e.to_string(),
                    permanent: false,
                })?
                .ok_or_else(|| gone("the order"))?;
            // A top-up's receipt goes to whoever made the order, who had the key's text then:
            // a text its owner replaced since is none of theirs (the receipt named the new
            // text's prefix; found by an independent check).
            if order.extra.kind == crate::kinds::OrderKind::TopUp
                && rotated_at.is_some_and(|at| at > order.record.created_at)
            {
                f.key_prefix = format!("{}…", crate::keys::token::KEY_PREFIX);
            }
            f.plan_name = state
                .config
                .plans
                .get(&order.record.plan)
                .map_or_else(|| order.record.plan.clone(), |p| p.name.clone());
            f.order_id = order.record.order_id;
            f.amount = order.record.amount;
            f.order_kind = order.extra.kind;
        }
        MailKind::LowBalance | MailKind::Exhausted => {
            let k = key.ok_or_else(|| gone("the key"))?;
            let id = k.id.clone();
            let token = state
                .store
                .read(move |c| crate::store::mail::token_of(c, &id))
                .await
                .map_err(|e| Failure {
                    why: e.to_string(),
                    permanent: false,
                })?
                .ok_or_else(|| gone("the key's opt-out token"))?;
            f.opt_out_url = format!("{}/mail/opt-out/{token}", f.public_url);
        }
        MailKind::Rotated => {
            key.ok_or_else(|| gone("the key"))?;
        }
    }
    Ok(f)
}

/// The address with its domain in ASCII (IDNA, `bücher.example` → `xn--bcher-kva.example`):
/// an ASCII name at such a domain can then go to a server without SMTPUTF8, as mail clients
/// send it. An address that does not convert is left as it is (the server decides).
pub(crate) fn ascii_domain(address: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Cow::Borrowed(address);
    };
    if domain.is_ascii() {
        return Cow::Borrowed(address);
    }
    match idna::domain_to_ascii(domain) {
        Ok(ascii) => Cow::Owned(format!("{local}@{ascii}")),
        Err(_) => Cow::Borrowed(address),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let s = |a| super::backoff(60, a).as_secs();
        assert_eq!([s(1), s(2), s(3), s(7), s(30)], [60, 120, 240, 3600, 3600]);
        assert_eq!(super::backoff(1, 0).as_secs(), 1);
    }

    /// An ASCII name at an internationalized domain goes out in the domain's ASCII form (found
    /// by an independent check: `joerg@bücher.example` failed for good on a server without
    /// SMTPUTF8).
    #[test]
    fn internationalized_domains_go_out_in_ascii() {
        assert_eq!(
            super::ascii_domain("joerg@bücher.example"),
            "joerg@xn--bcher-kva.example"
        );
        assert_eq!(super::ascii_domain("a@b.co"), "a@b.co");
        assert_eq!(super::ascii_domain("ü@example.com"), "ü@example.com");
        assert_eq!(
            super::ascii_domain("名@例子.中国"),
            "名@xn--fsqu00a.xn--fiqs8s"
        );
    }
}
