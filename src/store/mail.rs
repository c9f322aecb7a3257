//! SQL for the mail of self-service: `key_mail` (per key: the language of its mails, its opt-out
//! token, which notices of the current crossing were queued, the opt-out) and `outbox` (mail
//! queued, sent, or given up on).
//!
//! A message is queued in the transaction of what causes it (a paid order's receipt, a
//! rotation's notice, a crossing's notice), so it is neither lost nor queued twice. The mailer
//! marks it sent right after the SMTP server accepts it.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::StoreError;
use crate::kinds::{MailKind, MailLang, MailStatus};

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its number.
    pub id: i64,
    /// Which mail.
    pub kind: MailKind,
    /// To whom.
    pub recipient: String,
    /// In which language.
    pub lang: MailLang,
    /// The key it is about.
    pub key_id: Option<String>,
    /// The order it is about (receipts).
    pub order_id: Option<String>,
    /// Where it stands.
    pub status: MailStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When it is tried next (while queued).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// Accepted by the SMTP server at.
    pub sent_at: Option<DateTime<Utc>>,
    /// The key's display prefix when it was queued (key mails queued since migration 12).
    pub key_prefix: Option<String>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

const COLUMNS: &str = "id, kind, recipient, lang, key_id, order_id, status, attempts,
    next_attempt_at, last_error, created_at, sent_at, key_prefix";

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let kind: String = r.get(1)?;
    let lang: String = r.get(3)?;
    let status: String = r.get(6)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        // A kind this version does not know is never sent: it reads as a failed receipt.
        kind: MailKind::parse(&kind).unwrap_or(MailKind::Receipt),
        recipient: r.get(2)?,
        lang: MailLang::parse(&lang),
        key_id: r.get(4)?,
        order_id: r.get(5)?,
        status: if MailKind::parse(&kind).is_some() {
            MailStatus::parse(&status)
        } else {
            MailStatus::Failed
        },
        attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        next_attempt_at: time(r.get(8)?),
        last_error: r.get(9)?,
        created_at: time(r.get(10)?),
        sent_at: r.get::<_, Option<i64>>(11)?.map(time),
        key_prefix: r.get(12)?,
    })
}

/// Give a new key its mail row (English until an order says otherwise; a fresh opt-out token
/// from SQLite's CSPRNG).
pub fn add_key(c: &Connection, key_id: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO key_mail (key_id, token) VALUES (?1, lower(hex(randomblob(24))))",
        [key_id],
    )?;
    Ok(())
}

/// Re-arm the notices whose threshold the key is above again (after its budget grew).
pub fn rearm(c: &Connection, key_id: &str) -> Result<(), StoreError> {
    // A notice still waiting to go (its SMTP server down meanwhile) whose crossing the top-up
    // undid would tell the owner of a key with money that it has none, or little: dropped.
    c.execute(
        "UPDATE outbox SET status = 'failed',
                last_error = 'not sent: the key was topped up before it could go'
         WHERE key_id = ?1 AND status = 'queued' AND (
               (kind = 'low_balance' AND (SELECT (budget_nanos - spent_nanos) * 5 >= budget_nanos
                                            FROM keys WHERE id = ?1))
            OR (kind = 'exhausted' AND (SELECT status = 'active' FROM keys WHERE id = ?1)))",
        [key_id],
    )?;
    c.execute(
        "UPDATE key_mail SET
             low_sent = CASE WHEN (SELECT (budget_nanos - spent_nanos) * 5 >= budget_nanos
                                   FROM keys WHERE id = ?1) THEN 0 ELSE low_sent END,
             exhausted_sent = CASE WHEN (SELECT status = 'active' FROM keys WHERE id = ?1)
                                   THEN 0 ELSE exhausted_sent END
         WHERE key_id = ?1",
        [key_id],
    )?;
    Ok(())
}

/// Drop the balance notices (low, exhausted) still waiting to go for `key_id`, saying `why`: a
/// notice queued before its key was revoked (its SMTP server down, or a backlog) told the owner
/// to add credit to a key that can no longer take any (found by an independent check).
pub fn drop_balance_notices(c: &Connection, key_id: &str, why: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE outbox SET status = 'failed', last_error = ?2
         WHERE key_id = ?1 AND status = 'queued' AND kind IN ('low_balance', 'exhausted')",
        params![key_id, why],
    )?;
    Ok(())
}

/// Queue the receipt of a paid order, to its buyer, in the order's language.
pub fn queue_receipt(c: &Connection, order_id: &str, at_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO outbox (kind, recipient, lang, key_id, order_id, status, next_attempt_at,
                             created_at)
         SELECT 'receipt', email, lang, COALESCE(key_id, topup_key_id), order_id, 'queued', ?2, ?2
         FROM orders WHERE order_id = ?1",
        params![order_id, at_ms],
    )?;
    Ok(())
}

/// How long after a key's replacement notice was sent the next one waits (folding the
/// replacements made meanwhile into one): a key replaced again and again (each replacement
/// needs the key; a $1 key bought with a stranger's address will do) must not flood an
/// address, nor queue ahead of everyone's receipts.
pub const ROTATED_NOTICE_SPACING_MS: i64 = 60 * 60 * 1000;

/// Replacement notices one address gets in a day, whatever keys they are about: the spacing
/// above is per key, and keys bought with someone else's address ($1 each) each mailed it
/// once an hour (found by an independent re-check). Past it, a replacement is logged, not
/// mailed.
pub const ROTATED_NOTICES_PER_ADDRESS_PER_DAY: i64 = 24;

/// Replacement notices queued in the day before `at_ms` to the address of `key_id`, under any
/// spelling of it ([`crate::mail::comparable_email`]): compared exactly, `Victim@…`,
/// `victim@EXAMPLE.COM` and a fullwidth domain each got a day's worth (found by an
/// independent check).
fn rotated_to_address_today(c: &Connection, key_id: &str, at_ms: i64) -> Result<i64, StoreError> {
    use rusqlite::OptionalExtension;
    let Some(email) = c
        .query_row("SELECT email FROM keys WHERE id = ?1", [key_id], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()?
        .flatten()
    else {
        return Ok(0);
    };
    let address = crate::mail::comparable_email(&email);
    let mut q = c.prepare_cached(
        "SELECT recipient FROM outbox WHERE kind = 'rotated' AND created_at > ?1",
    )?;
    let mut rows = q.query([at_ms.saturating_sub(24 * 60 * 60 * 1000)])?;
    let mut count = 0;
    while let Some(r) = rows.next()? {
        if crate::mail::comparable_email(&r.get::<_, String>(0)?) == address {
            count += 1;
        }
    }
    Ok(count)
}

/// Queue a mail about a key to its owner, if it has an email (and, when `respect_opt_out`,
/// has not opted out of notices). A replacement's notice (`Rotated`) goes at once when the
/// key had none lately; one following another waits [`ROTATED_NOTICE_SPACING_MS`] after it,
/// and the replacements made meanwhile are folded into it (its time and prefix the latest's).
pub fn queue_key_mail(
    c: &Connection,
    key_id: &str,
    kind: MailKind,
    respect_opt_out: bool,
    at_ms: i64,
) -> Result<(), StoreError> {
    let mut due_ms = at_ms;
    if kind == MailKind::Rotated {
        // Only into one not due within the minute: a due one may be in the sender's hands,
        // and would go out naming an older replacement as the latest.
        let now_ms = chrono::Utc::now().timestamp_millis().max(at_ms);
        let folded = c.execute(
            "UPDATE outbox SET created_at = ?2,
                               key_prefix = (SELECT prefix FROM keys WHERE id = ?1)
             WHERE key_id = ?1 AND kind = 'rotated' AND status = 'queued'
                   AND next_attempt_at > ?3",
            params![key_id, at_ms, now_ms.saturating_add(60_000)],
        )?;
        if folded > 0 {
            return Ok(());
        }
        let today = rotated_to_address_today(c, key_id, at_ms)?;
        if today >= ROTATED_NOTICES_PER_ADDRESS_PER_DAY {
            tracing::warn!(
                key_id,
                "key replaced; no notice mailed: its address had {today} replacement notices \
                 in the last day"
            );
            return Ok(());
        }
        let last: Option<i64> = c.query_row(
            "SELECT max(CASE status WHEN 'sent' THEN sent_at ELSE next_attempt_at END)
             FROM outbox
             WHERE key_id = ?1 AND kind = 'rotated' AND status IN ('queued', 'sent')",
            [key_id],
            |r| r.get(0),
        )?;
        if let Some(last) = last {
            // Never further than the spacing (a clock stepped back leaves `last` ahead).
            let spaced = last.saturating_add(ROTATED_NOTICE_SPACING_MS);
            due_ms = spaced.clamp(at_ms, at_ms.saturating_add(ROTATED_NOTICE_SPACING_MS));
        }
    }
    c.execute(
        "INSERT INTO outbox (kind, recipient, lang, key_id, status, next_attempt_at, created_at,
                             key_prefix)
         SELECT ?2, k.email, m.lang, k.id, 'queued', ?5, ?4, k.prefix
         FROM keys k JOIN key_mail m ON m.key_id = k.id
         WHERE k.id = ?1 AND k.email IS NOT NULL AND k.email != ''
               AND (?3 = 0 OR m.opted_out_at IS NULL)",
        params![key_id, kind.as_str(), respect_opt_out, at_ms, due_ms],
    )?;
    Ok(())
}

/// A threshold was crossed: remember it for the crossing, and queue the notice (when `queue`:
/// email is configured) the first time only.
pub fn key_notice(
    c: &Connection,
    key_id: &str,
    kind: MailKind,
    queue: bool,
    at_ms: i64,
) -> Result<(), StoreError> {
    let sql = match kind {
        MailKind::LowBalance => {
            "UPDATE key_mail SET low_sent = 1 WHERE key_id = ?1 AND low_sent = 0"
        }
        MailKind::Exhausted => {
            "UPDATE key_mail SET exhausted_sent = 1 WHERE key_id = ?1 AND exhausted_sent = 0"
        }
        other => {
            return Err(StoreError::Conflict(format!(
                "{} is not a threshold notice",
                other.as_str()
            )));
        }
    };
    if c.execute(sql, [key_id])? == 1 && queue {
        queue_key_mail(c, key_id, kind, true, at_ms)?;
    }
    Ok(())
}

/// Which notices of the current crossing each key has had: `(key id, low, exhausted)`.
pub fn notice_flags(c: &Connection) -> Result<Vec<(String, bool, bool)>, StoreError> {
    let mut stmt =
        c.prepare("SELECT key_id, low_sent, exhausted_sent FROM key_mail ORDER BY key_id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A key's opt-out token.
pub fn token_of(c: &Connection, key_id: &str) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT token FROM key_mail WHERE key_id = ?1",
        [key_id],
        |r| r.get(0),
    )
    .optional()?)
}

/// The key an opt-out token belongs to, and whether it opted out already.
pub fn by_token(c: &Connection, token: &str) -> Result<Option<(String, bool)>, StoreError> {
    Ok(c.query_row(
        "SELECT key_id, opted_out_at IS NOT NULL FROM key_mail WHERE token = ?1",
        [token],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// Stop a key's low-balance and exhausted notices (idempotent), and drop those still queued.
pub fn opt_out(c: &Connection, key_id: &str, at_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE key_mail SET opted_out_at = COALESCE(opted_out_at, ?2) WHERE key_id = ?1",
        params![key_id, at_ms],
    )?;
    drop_balance_notices(c, key_id, "opted out")
}

/// Messages due for an attempt at `now_ms`, receipts first (a buyer waits for theirs; notices
/// queued in numbers must not hold it up), then oldest first. One set for later than `now_ms` +
/// `max_wait_ms` (no retry waits that long) was set by a clock since stepped back: due too
/// (it waited out the step — a day's — after the SMTP server was back; found by an
/// independent check).
pub fn due(
    c: &Connection,
    now_ms: i64,
    max_wait_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM outbox
         WHERE status = 'queued' AND (next_attempt_at <= ?1 OR next_attempt_at > ?3)
         ORDER BY kind = 'receipt' DESC, next_attempt_at, id LIMIT ?2"
    ))?;
    let latest = now_ms.saturating_add(max_wait_ms);
    let rows = stmt.query_map(params![now_ms, limit, latest], row_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the next queued message is due, if any is queued.
pub fn next_due(c: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT min(next_attempt_at) FROM outbox WHERE status = 'queued'",
        [],
        |r| r.get(0),
    )?)
}

/// The newest messages.
pub fn list(c: &Connection, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], row_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One message.
pub fn get(c: &Connection, id: i64) -> Result<Option<OutboxRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"))?;
    Ok(stmt.query_row([id], row_of).optional()?)
}

/// The SMTP server accepted the message.
pub fn mark_sent(c: &Connection, id: i64, at_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?2, attempts = attempts + 1,
                last_error = NULL
         WHERE id = ?1 AND status = 'queued'",
        params![id, at_ms],
    )?;
    Ok(())
}

/// Whether message `id` is still waiting to go: the sender reads a batch of due messages and
/// sends them paced, and one dropped meanwhile (its key revoked, topped up or opted out) must
/// not go (three went after a revocation had dropped them, and the outbox said they had not;
/// found by an independent check).
pub fn still_queued(c: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE id = ?1 AND status = 'queued')",
        [id],
        |r| r.get(0),
    )?)
}

/// The numbers of the messages given up (`failed`) after number `after`, oldest first, at
/// most `limit`.
pub fn failed_ids(c: &Connection, after: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM outbox WHERE status = 'failed' AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let ids = stmt.query_map(params![after, limit], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// An attempt failed: try again at `next_ms`, or give up.
pub fn mark_failed(
    c: &Connection,
    id: i64,
    error: &str,
    next_ms: i64,
    give_up: bool,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3,
                status = CASE WHEN ?4 THEN 'failed' ELSE 'queued' END
         WHERE id = ?1 AND status = 'queued'",
        params![id, error, next_ms, give_up],
    )?;
    Ok(())
}

/// Queue a failed (or waiting) message again, due now, with a fresh count of attempts; a sent
/// one is never sent again.
pub fn retry(c: &Connection, id: i64, at_ms: i64) -> Result<(), StoreError> {
    // A balance notice of a key whose owner opted out stays unsent, whoever asks; nor one of a
    // revoked key: it would tell the owner to add credit to a key that takes none (found by an
    // independent check: retried and sent after the revocation dropped it).
    // Nor one whose crossing a top-up undid since (the key above a fifth of its budget again;
    // or topped up since and active again): it would tell the owner of a key with money that
    // it has little or none — the drop at the top-up marks it failed, and `mail retry
    // --failed` takes every failed message (found in review). An exhausted notice of a key
    // still `active` with no top-up since is true (a request refused for want of money while
    // a little is left: found by a re-check, it was withheld as "made untrue").
    let withheld: Option<(bool, bool, bool)> = c
        .query_row(
            "SELECT m.opted_out_at IS NOT NULL, k.status = 'revoked',
                    CASE o.kind WHEN 'low_balance' THEN (k.budget_nanos - k.spent_nanos) * 5 >= k.budget_nanos
                                ELSE k.status = 'active' AND EXISTS (
                                    SELECT 1 FROM budget_history h
                                    WHERE h.key_id = o.key_id AND h.created_at >= o.created_at
                                      AND h.kind IN ('top_up', 'operator_top_up')) END
             FROM outbox o JOIN key_mail m ON m.key_id = o.key_id JOIN keys k ON k.id = o.key_id
             WHERE o.id = ?1 AND o.kind IN ('low_balance', 'exhausted')",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match withheld {
        Some((true, _, _)) => {
            return Err(StoreError::Conflict(format!(
                "mail {id} is a balance notice its key's owner opted out of"
            )));
        }
        Some((_, true, _)) => {
            return Err(StoreError::Conflict(format!(
                "mail {id} is a balance notice of a revoked key"
            )));
        }
        Some((_, _, true)) => {
            return Err(StoreError::Conflict(format!(
                "mail {id} is a balance notice its key's top-up made untrue"
            )));
        }
        _ => {}
    }
    let n = c.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = ?2, attempts = 0
         WHERE id = ?1 AND status != 'sent'",
        params![id, at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "mail {id} does not exist or was sent already"
        )));
    }
    Ok(())
}
