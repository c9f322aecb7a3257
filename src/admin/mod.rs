//! Key administration: mint, find, revoke, top up, rotate, and what follows a change of a
//! key's balance (exhaustion and its notice). Used by the admin socket and the storefront.
//! Every change is committed to the database before it is reported done. The admin socket's
//! commands themselves are answered in [`socket`].

mod socket;

use std::sync::Arc;

use chrono::Utc;

use crate::activity::ActivityEvent;
use crate::activity::views::key_view;
use crate::clock::now_ms;
use crate::keys::token::{KEY_PREFIX, display_prefix, generate_key, generate_key_id, hash_key};
use crate::keys::{KeyRecord, KeyState, KeyStatus, Notice};
use crate::kinds::MailKind;
use crate::money::{MAX_AMOUNT, MAX_BUDGET, Usd};
use crate::state::AppState;
use crate::store::Write;
use crate::text::{echoed, is_invisible};

pub use socket::{backup, handle_admin, restore_disabled_accounts};

/// Why an admin command failed; the message is shown to the operator as is.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No key matches.
    #[error(
        "no key matches {:?}: give the whole key, its id (key_…) or its prefix as `keys list` \
         shows it (sk-gateway- and four more characters; only those are kept)",
        echoed(.0)
    )]
    NoSuchKey(String),
    /// No order has this id.
    #[error("no order {:?}", echoed(.0))]
    NoSuchOrder(String),
    /// A prefix that matches several keys.
    #[error("{:?} matches {} keys; give the key id", echoed(.0), .1)]
    Ambiguous(String, usize),
    /// Unknown plan.
    #[error("no plan {:?} (plans: {})", echoed(.0), .1)]
    NoSuchPlan(String, String),
    /// A bad amount.
    #[error("{0}")]
    BadAmount(String),
    /// A bad email.
    #[error("{:?} is not an email address", echoed(.0))]
    BadEmail(String),
    /// An operator's note over [`MAX_NOTE`] characters.
    #[error("the note is {0} characters long; at most {MAX_NOTE}")]
    NoteTooLong(usize),
    /// The key is revoked.
    #[error("key {0} is revoked")]
    Revoked(String),
    /// The text a self-service rotation was asked with is no longer the key's: another
    /// rotation replaced it first.
    #[error("key {0}'s text was replaced meanwhile")]
    TextReplaced(String),
    /// A self-service rotation of a key replaced too often lately
    /// ([`crate::shop::limits::ROTATIONS_PER_HOUR`]); the seconds until the next may be.
    #[error("key {0} was replaced too often lately; next in {1} s")]
    TooManyRotations(String, u64),
    /// No message of the outbox has this number, or it was sent already.
    #[error("no mail {0} waiting or failed (a sent message is never sent again)")]
    NoSuchMail(i64),
    /// A balance notice that is not sent whoever asks: its key's owner opted out, or the key
    /// is revoked.
    #[error("{0}")]
    MailWithheld(String),
    /// No request has this id.
    #[error("no request {:?} (its id is the x-request-id header of its answer, req_…)", echoed(.0))]
    NoSuchRequest(String),
    /// No upstream account has this name.
    #[error("no upstream account {:?}", echoed(.0))]
    NoSuchAccount(String),
    /// The database cannot take writes now (a full disk, another program's lock): nothing
    /// was changed; worth trying again shortly.
    #[error("{0} (nothing was changed; try again shortly)")]
    Unavailable(String),
    /// Storage or RNG failure.
    #[error("{0}")]
    Internal(String),
}

/// Most characters of an operator's note on a key (it is shown in every listing).
pub const MAX_NOTE: usize = 500;

/// What a new key is minted with.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Plan id.
    pub plan: String,
    /// Buyer's email.
    pub email: Option<String>,
    /// Budget instead of the plan's.
    pub budget: Option<Usd>,
    /// Operator's note.
    pub note: Option<String>,
    /// The order that paid for it.
    pub order_id: Option<String>,
}

/// A private-use character: it means what a font makes of it, nothing in an address.
fn is_private_use(c: char) -> bool {
    matches!(u32::from(c), 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}

/// More than four zero-width characters (combining marks) in a row: text piled on one cell
/// ("Zalgo"), which overdraws the rows around it in a terminal (found by an independent
/// check). Written scripts stack up to three or four (Tibetan's subjoined letters and vowel,
/// pointed Hebrew), which a first limit of two refused (found by its re-check).
fn stacks_marks(e: &str) -> bool {
    use unicode_width::UnicodeWidthChar;
    let mut run = 0;
    for c in e.chars() {
        if c.width() == Some(0) {
            run += 1;
            if run > 4 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A plausible email address the mailer can send to: something@something.tld, no spaces, at
/// most 254 bytes, no invisible or direction-changing characters, and an address lettre reads
/// (`a,b@…`, `bcc:…@…` or an over-long user were taken, paid for, and their receipt could
/// never be sent).
pub fn is_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || is_invisible(c))
        && !e.chars().any(is_private_use)
        && !stacks_marks(e)
        && e.parse::<lettre::Address>().is_ok()
        // What the outbox parses the recipient as (a mailbox, its domain in ASCII): an address
        // that passes for an `Address` but not for that (`"a\"b"@…`, `x@[127.0.0.1]`) was
        // taken at checkout and its receipt failed for good after payment.
        && crate::mail::outbox::ascii_domain(e)
            .parse::<lettre::message::Mailbox>()
            .is_ok()
}

fn check_amount(what: &str, a: Usd) -> Result<(), AdminError> {
    if a.nanos() <= 0 {
        return Err(AdminError::BadAmount(format!(
            "{what} must be greater than 0"
        )));
    }
    if a > MAX_AMOUNT {
        return Err(AdminError::BadAmount(format!(
            "{what} must be at most ${MAX_AMOUNT}"
        )));
    }
    Ok(())
}

/// A key by full key, id, or display prefix (with or without the trailing `…`).
pub fn find_key(state: &AppState, needle: &str) -> Result<Arc<KeyState>, AdminError> {
    let needle = needle.trim();
    if needle.starts_with(KEY_PREFIX)
        && let Some(k) = state.keys.by_hash(&hash_key(needle))
    {
        return Ok(k);
    }
    if let Some(k) = state.keys.by_id(needle) {
        return Ok(k);
    }
    let stem = needle.trim_end_matches('…');
    // At least the four characters a prefix shows: one or two matched whichever key had them
    // (`keys revoke sk-gateway-Z`; found by an independent check).
    if stem.len() >= KEY_PREFIX.len() + 4 && stem.starts_with(KEY_PREFIX) {
        let hits: Vec<_> = state
            .keys
            .all()
            .into_iter()
            .filter(|k| k.prefix().trim_end_matches('…').starts_with(stem))
            .collect();
        return match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(AdminError::NoSuchKey(needle.into())),
            n => Err(AdminError::Ambiguous(needle.into(), n)),
        };
    }
    Err(AdminError::NoSuchKey(needle.into()))
}

/// Mint a key; returns it with its full text (shown once).
pub async fn create_key(
    state: &AppState,
    new: NewKey,
) -> Result<(Arc<KeyState>, String), AdminError> {
    let (record, key) = prepare_key(state, new)?;
    state
        .store
        .write(Write::InsertKey(Box::new(record.clone())))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok((install_key(state, record), key))
}

/// A new key's record and full text, not yet stored anywhere.
pub fn prepare_key(state: &AppState, new: NewKey) -> Result<(KeyRecord, String), AdminError> {
    let Some(plan) = state.catalog.plan(&new.plan) else {
        let plans: Vec<_> = state.config.plans.keys().cloned().collect();
        return Err(AdminError::NoSuchPlan(new.plan, plans.join(", ")));
    };
    let budget = match new.budget {
        Some(b) => {
            check_amount("the budget", b)?;
            b
        }
        None => state
            .config
            .plans
            .get(&new.plan)
            .map_or(Usd::ZERO, |p| p.budget_usd),
    };
    let email = match new
        .email
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
    {
        Some(e) if is_email(&e) => Some(e),
        Some(e) => return Err(AdminError::BadEmail(e)),
        None => None,
    };
    // A note of 60 000 characters met the socket's line limit as "request line too long"
    // (found by an independent check); one over this is refused by name.
    let note = new.note.filter(|n| !n.trim().is_empty());
    if let Some(n) = &note
        && n.chars().count() > MAX_NOTE
    {
        return Err(AdminError::NoteTooLong(n.chars().count()));
    }
    let internal = |e: &dyn std::fmt::Display| AdminError::Internal(e.to_string());
    let key = generate_key().map_err(|e| internal(&e))?;
    let id = generate_key_id().map_err(|e| internal(&e))?;
    let sealed = state.sealer.seal(&id, &key).map_err(|e| internal(&e))?;
    let record = KeyRecord {
        id,
        hash: hash_key(&key),
        sealed,
        prefix: display_prefix(&key),
        plan: plan.id.clone(),
        // A budget below what one smallest request of the plan costs (the operator's own
        // figure: a plan's budget is dollars) makes the key exhausted from the start, as
        // settlement would mark it, rather than `active` with every request refused 402.
        status: if budget < plan.exhausted_below {
            KeyStatus::Exhausted
        } else {
            KeyStatus::Active
        },
        budget,
        spent: Usd::ZERO,
        requests: 0,
        email,
        note,
        order_id: new.order_id,
        created_at: Utc::now(),
        last_used_at: None,
    };
    Ok((record, key))
}

/// Put a key whose record is committed into the live table, and announce it.
pub fn install_key(state: &AppState, record: KeyRecord) -> Arc<KeyState> {
    let rpm = state.catalog.rpm_of(&record.plan);
    let budget = record.budget;
    let hash = record.hash;
    let key = Arc::new(KeyState::from_record(record, rpm));
    state.keys.insert(hash, key.clone());
    state.activity.emit(ActivityEvent::KeyCreated {
        key: key_view(&key),
    });
    tracing::info!(key_id = %key.id, plan = %key.plan(), budget = %budget, "key created");
    key
}

/// Revoke a key: it fails with 401 from the next request on.
pub async fn revoke_key(state: &AppState, needle: &str) -> Result<Arc<KeyState>, AdminError> {
    let key = find_key(state, needle)?;
    // The database first: a revocation must survive a restart. It is idempotent, so a
    // retry after a failure (or of an already revoked key) simply writes it again.
    state
        .store
        .write(Write::KeyStatus {
            key_id: key.id.clone(),
            status: KeyStatus::Revoked,
            at_ms: now_ms(),
        })
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    if key.revoke() {
        state.activity.emit(ActivityEvent::KeyRevoked {
            key_id: key.id.clone(),
            at_ms: now_ms(),
        });
        tracing::info!(key_id = %key.id, "key revoked");
    }
    Ok(key)
}

/// Add budget to a key (re-activates an exhausted one).
pub async fn top_up_key(
    state: &AppState,
    needle: &str,
    amount: Usd,
) -> Result<Arc<KeyState>, AdminError> {
    check_amount("the top-up", amount)?;
    let key = find_key(state, needle)?;
    let _serial = state.top_up_lock.lock().await;
    if key.status() == KeyStatus::Revoked {
        return Err(AdminError::Revoked(key.id.clone()));
    }
    if !crate::money::fits_budget(key.balance().budget, amount) {
        return Err(AdminError::BadAmount(format!(
            "the key's budget would pass ${MAX_BUDGET}"
        )));
    }
    let below = state.catalog.exhausted_below(&key.plan());
    // The database first: a top-up that is not recorded must not be spendable.
    state
        .store
        .write(Write::TopUp {
            key_id: key.id.clone(),
            amount,
            below,
            at_ms: now_ms(),
        })
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    key.top_up(amount, below);
    after_top_up(state, &key);
    state.activity.emit(ActivityEvent::KeyToppedUp {
        key_id: key.id.clone(),
        amount_usd: amount,
        budget_usd: key.balance().budget,
        at_ms: now_ms(),
    });
    // The key as it now stands (the console read "topped up" as active).
    state.activity.emit(ActivityEvent::KeyUpdated {
        key: key_view(&key),
        at_ms: now_ms(),
    });
    tracing::info!(key_id = %key.id, amount = %amount, "key topped up");
    Ok(key)
}

/// Replace a key's text: same id, plan, budget, spend, holds and history; the old text answers
/// 401 from the moment this returns. Returns the key and its new text (shown once).
///
/// The key's live state is not replaced: requests in flight hold it and settle on it. Only
/// which hash leads to it changes, after the database holds the new hash and sealed copy.
///
/// `presented` is the hash of the text a customer asked with (self-service; the operator's
/// CLI names the key by id or prefix): the rotation is refused when that is no longer the
/// key's text.
pub async fn rotate_key(
    state: &AppState,
    needle: &str,
    presented: Option<[u8; 32]>,
    request: Option<[u8; 32]>,
) -> Result<(Arc<KeyState>, String), AdminError> {
    let key = find_key(state, needle)?;
    let _serial = state.rotate_lock.lock().await;
    if key.status() == KeyStatus::Revoked {
        return Err(AdminError::Revoked(key.id.clone()));
    }
    // Checked under the lock: of several rotations asked with the same text at once, only
    // the first replaces it; the others find it gone, as a request with it would.
    if presented.is_some_and(|h| state.keys.hash_of(&key.id) != Some(h)) {
        return Err(AdminError::TextReplaced(key.id.clone()));
    }
    // A customer's replacement (with the key's text; the operator's `keys rotate` has none) is
    // counted against the key's own limit — here, so that only one that would be made counts
    // (of simultaneous ones with one text, the losers are told the text is gone, as before).
    if presented.is_some() {
        let limiter = &state.shop_limits.rotate_key;
        if let Err(not_until) = limiter.check_key(&key.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
            tracing::warn!(key_id = %key.id, "key replacement refused: too many for this key lately");
            return Err(AdminError::TooManyRotations(
                key.id.clone(),
                wait.as_secs() + 1,
            ));
        }
    }
    let internal = |e: &dyn std::fmt::Display| AdminError::Internal(e.to_string());
    let text = generate_key().map_err(|e| internal(&e))?;
    let hash = hash_key(&text);
    let sealed = state
        .sealer
        .seal(&key.id, &text)
        .map_err(|e| internal(&e))?;
    let prefix = display_prefix(&text);
    state
        .store
        .write(Write::RotateKey {
            key_id: key.id.clone(),
            hash,
            sealed,
            prefix: prefix.clone(),
            notify: state.mailer.enabled(),
            request,
            at_ms: now_ms(),
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => AdminError::Revoked(key.id.clone()),
            e if e.is_transient() => AdminError::Unavailable(e.to_string()),
            e => internal(&e),
        })?;
    state.keys.rekey(&key.id, hash);
    key.set_prefix(prefix);
    state.mailer.poke();
    state.activity.emit(ActivityEvent::KeyUpdated {
        key: key_view(&key),
        at_ms: now_ms(),
    });
    tracing::info!(key_id = %key.id, "key rotated; the old text no longer works");
    Ok((key, text))
}

/// Mark a key exhausted once its balance is below what one more request of its plan needs
/// (told to the store, the console, the owner and the log once), and queue the owner's
/// low-balance and exhausted notices once per crossing. Settlement calls it after each request
/// (never a read of SQLite: writes for the writer's queue, not awaited); so do changes off the
/// request path (a refunded top-up).
pub fn mark_if_exhausted(state: &AppState, key: &KeyState) {
    // A revoked key gets no notices: a request that settles after the revocation, or a refund
    // taking credit back, would otherwise mail "top up" about a key that cannot be used.
    if key.status() == KeyStatus::Revoked {
        return;
    }
    let threshold = state.catalog.exhausted_below(&key.plan());
    let switched = key.mark_exhausted_below(threshold);
    if key.is_low() {
        // A key that is out is told that, once: its low notice counts as had, without a mail
        // (one step that took a key past both lines mailed "running low, $0.00 left" and
        // "has run out" in the same second; found by an independent check).
        let mail = key.status() != KeyStatus::Exhausted;
        notice_if_first(state, key, Notice::LowBalance, mail);
    }
    if switched {
        state.store.write_later(Write::MarkExhausted {
            key_id: key.id.clone(),
            below: threshold,
        });
        notice_if_first(state, key, Notice::Exhausted, true);
        state.activity.emit(ActivityEvent::KeyExhausted {
            key_id: key.id.clone(),
            at_ms: now_ms(),
        });
        tracing::info!(key_id = %key.id, "key exhausted");
    }
}

/// A top-up's live part, once it is added to the key (which it made `active` only if it pays
/// for a request again: a key active for a moment had its exhausted notice re-armed, and sent
/// again, for a crossing that had not ended; found by an independent check): a key whose new
/// plan needs more than it has is exhausted, and the notices whose line the balance is above
/// again are re-armed.
pub fn after_top_up(state: &AppState, key: &KeyState) {
    mark_if_exhausted(state, key);
    key.rearm_notices();
}

/// An exhausted key whose balance pays for one request of its plan again — a charge undone, a
/// refund that moved it to a cheaper plan, a mark left by a crash — is active again, in memory
/// and on disk (it was in memory only: after a restart it refused, 402, a balance it had).
pub fn reactivate_if_funded(state: &AppState, key: &KeyState) {
    if key.status() != KeyStatus::Exhausted {
        return;
    }
    let threshold = state.catalog.exhausted_below(&key.plan());
    if key.balance().remaining() < threshold {
        return;
    }
    key.reactivate();
    state.store.write_later(Write::Reactivate {
        key_id: key.id.clone(),
        below: threshold,
    });
    state.activity.emit(ActivityEvent::KeyUpdated {
        key: key_view(key),
        at_ms: now_ms(),
    });
}

/// Queue a threshold notice for `key` the first time its current crossing is seen (through
/// the writer, not awaited; the key's notice bits make one settlement of many racing the one
/// that does). Without `mail` the crossing is only remembered as told.
pub fn notice_if_first(state: &AppState, key: &KeyState, notice: Notice, mail: bool) {
    if !key.first_crossing(notice) {
        return;
    }
    let kind = match notice {
        Notice::LowBalance => MailKind::LowBalance,
        Notice::Exhausted => MailKind::Exhausted,
    };
    let queue = mail && state.mailer.enabled();
    state.store.write_later(Write::KeyNotice {
        key_id: key.id.clone(),
        kind,
        queue,
        at_ms: now_ms(),
    });
    if queue {
        state.mailer.poke();
    }
}

#[cfg(test)]
mod tests {
    use super::is_email;

    #[test]
    fn an_email_is_an_address_the_mailer_can_send_to() {
        for ok in [
            "a@b.co",
            "first.last+tag@example.com",
            "名@例子.中国",
            // Decomposed: a letter and two marks (Vietnamese writes as many).
            "nguye\u{302}\u{303}n@example.com",
            // Tibetan's stacks, pointed Hebrew: three or four marks on a letter.
            "སྒྲུབ@example.com",
            "הַשָּׁמַיִם@example.com",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "not-an-email",
            "a,b@example.com",
            "bcc:evil@example.com",
            "a@b.com;c@example.com",
            "a(comment)@example.com",
            "a\\b@example.com",
            "x@example.com\u{202e}",
            "ok@ex\u{200b}ample.com",
            "a@-bad-.com",
            "\"a\\\"b\"@example.com",
            "x@[127.0.0.1]",
            &format!("{}@example.com", "y".repeat(200)),
            "ab\u{fdd0}cd@example.com",
            "ab\u{ffff}cd@example.com",
            "ab\u{e000}cd@example.com",
            "ab\u{1d159}cd@example.com",
            "e\u{301}\u{301}\u{301}\u{301}\u{301}x@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
