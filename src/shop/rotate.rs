//! `POST /api/keys/rotate` with the key as Bearer: the key's text is replaced, keeping its id,
//! plan, budget, spend and history; the answer `{"api_key"}` is the only time the new text is
//! shown, and the old text answers 401 from then on. Limited per IP before the key is even
//! looked at (rotation needs the key, so guessing keys here is as slow as anywhere). A request
//! with an `Idempotency-Key` header, sent again with the same old key and the same header
//! within ten minutes (its answer was lost), gets the text the first one made, not a 401 for a
//! key it can no longer use — also when it comes while the first is still being made, or after
//! the first one's client hung up (the text is recorded by the rotation's own task).
//!
//! The dashboard's "Replace this key" form does the same from a page (`pages/dashboard`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::error::ShopError;
use super::limits::limit_key;
use crate::admin::AdminError;
use crate::keys::identify::{IdentifyError, authenticate_token, bearer_token};
use crate::keys::token::hash_key;
use crate::state::{AppState, ClientIp};

/// Replace the text of key `key_id`, whose text hashes to `presented` (what the customer
/// showed), in a task of its own (a client hanging up must not leave the database and the live
/// table disagreeing), returning the new text. The task also hands the text to `maker` (the
/// request's claim on [`Recent`]), so a request sent again finds it even when this one's client
/// hung up before the answer. Refused as an unknown key when another rotation replaced that
/// text first.
pub async fn rotate(
    state: &Arc<AppState>,
    key_id: &str,
    presented: [u8; 32],
    maker: Option<Maker>,
) -> Result<String, ShopError> {
    let worker = {
        let state = state.clone();
        let id = key_id.to_string();
        tokio::spawn(async move {
            let request = maker.as_ref().map(|m| m.id);
            let made = crate::admin::rotate_key(&state, &id, Some(presented), request).await;
            if let (Ok((_, text)), Some(maker)) = (&made, maker) {
                maker.made(text);
            }
            made
        })
    };
    match worker.await {
        Ok(Ok((_, text))) => Ok(text),
        Ok(Err(AdminError::Revoked(_))) => Err(ShopError::InvalidApiKey(IdentifyError::Revoked)),
        Ok(Err(AdminError::TooManyRotations(_, secs))) => Err(ShopError::TooManyKeyRotations(secs)),
        Ok(Err(AdminError::TextReplaced(_))) => {
            Err(ShopError::InvalidApiKey(IdentifyError::Unknown))
        }
        Ok(Err(e @ AdminError::Unavailable(_))) => {
            tracing::warn!(key_id, error = %e, "key not rotated: the database takes no writes now");
            Err(ShopError::RotationUnavailable)
        }
        Ok(Err(e)) => {
            tracing::error!(key_id, error = %e, "key not rotated");
            Err(ShopError::RotationFailed)
        }
        Err(_) => Err(ShopError::RotationFailed),
    }
}

/// At start: remember the replacements made in the last [`RECENT_TTL`] by requests the
/// database recorded with them, so that one sent again after a restart (its answer lost when
/// the daemon died) still gets its text. Only a key's latest replacement, of a key not revoked.
pub async fn reload(state: &AppState) {
    let now = chrono::Utc::now().timestamp_millis();
    let since = now.saturating_sub(i64::try_from(RECENT_TTL.as_millis()).unwrap_or(i64::MAX));
    let found = state
        .store
        .read(move |c| crate::store::keys::recent_rotations(c, since))
        .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "recent key rotations not read");
            return;
        }
    };
    for (id, key_id, at_ms, sealed) in found {
        match state.sealer.open(&key_id, &sealed) {
            Ok(text) => {
                let age = Duration::from_millis(u64::try_from(now - at_ms).unwrap_or(0));
                state.recent_rotations.remember(id, text, age);
            }
            Err(e) => tracing::warn!(key_id, error = %e, "a rotated key's text cannot be opened"),
        }
    }
}

/// What a request that may have been sent before should do (see [`Recent::claim`]).
pub enum Claimed {
    /// Answer with this text: the same request made it already, and it is the key's text now.
    Made(String),
    /// Make the replacement, handing the text to this claim.
    Mine(Maker),
}

/// Claim the replacement asked for by `who` with `asked` under `scope`, waiting while the same
/// request sent before is still being made (a retry that came before its first sending ended,
/// or a double click). A text made before but replaced or revoked since is not given out: the
/// request then goes on as a new one, and the old key's check refuses it.
pub async fn claim(
    state: &AppState,
    scope: Scope,
    who: &str,
    asked: &str,
) -> Result<Claimed, ShopError> {
    let until = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        match state.recent_rotations.claim(scope, who, asked) {
            Claim::Made(text) => {
                if authenticate_token(&state.keys, &text).is_ok() {
                    return Ok(Claimed::Made(text));
                }
                // Dead since: answer as the old key now deserves.
                return Err(ShopError::InvalidApiKey(IdentifyError::Unknown));
            }
            Claim::Mine(maker) => {
                // Not remembered here (forgotten to make room: a flood of other rotations
                // pushed it out, and the request sent again met a 401; found by an
                // independent check): the database has every request of the last ten minutes.
                if let Some(text) = recorded(state, maker.id).await {
                    drop(maker);
                    state.recent_rotations.remember(
                        Recent::id(scope, who, asked),
                        text.clone(),
                        Duration::ZERO,
                    );
                    if authenticate_token(&state.keys, &text).is_ok() {
                        return Ok(Claimed::Made(text));
                    }
                    return Err(ShopError::InvalidApiKey(IdentifyError::Unknown));
                }
                return Ok(Claimed::Mine(maker));
            }
            // Its maker ends one way or the other (it runs in a task of its own); then look
            // again: made, or failed and free to try.
            Claim::Wait(mut made) => {
                if tokio::time::timeout_at(until, made.changed())
                    .await
                    .is_err()
                {
                    return Err(ShopError::RotationInProgress);
                }
            }
        }
    }
}

/// The text made by the request known as `id` in the last [`RECENT_TTL`], as the database
/// recorded it with its rotation (still the key's text, the key not revoked).
async fn recorded(state: &AppState, id: [u8; 32]) -> Option<String> {
    let since = chrono::Utc::now().timestamp_millis()
        - i64::try_from(RECENT_TTL.as_millis()).unwrap_or(i64::MAX);
    let found = state
        .store
        .read(move |c| crate::store::keys::rotation_of_request(c, &id, since))
        .await;
    match found {
        Ok(Some((key_id, sealed))) => match state.sealer.open(&key_id, &sealed) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::warn!(key_id, error = %e, "a rotated key's text cannot be opened");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "recent key rotations not read");
            None
        }
    }
}

/// `POST /api/keys/rotate` (Bearer key) → `{"api_key": "<new key>"}`.
pub async fn api_rotate(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Json<Value>, ShopError> {
    if state.shop_limits.rotate.check_key(&limit_key(ip)).is_err() {
        return Err(ShopError::TooManyRotations);
    }
    let token = bearer_token(&headers)?;
    let maker = match idempotency_key(&headers)? {
        Some(again) => match claim(&state, Scope::Api, token, again).await? {
            Claimed::Made(api_key) => return Ok(Json(json!({ "api_key": api_key }))),
            Claimed::Mine(maker) => Some(maker),
        },
        None => None,
    };
    let key = authenticate_token(&state.keys, token)?;
    let api_key = rotate(&state, &key.id, hash_key(token), maker).await?;
    Ok(Json(json!({ "api_key": api_key })))
}

/// How long an `Idempotency-Key` may be: 16 to 255 visible ASCII characters. With the
/// old key it hands out the new one for ten minutes, and the old key is being replaced because
/// it may have leaked: one short enough to guess (`1`, `retry`) would give a thief holding the
/// old key the new one (found by an independent check). A UUID is 36.
const IDEMPOTENCY_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=255;

/// The request's `Idempotency-Key`, if it has one (see [`IDEMPOTENCY_KEY_LEN`]).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ShopError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k)
            if IDEMPOTENCY_KEY_LEN.contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k))
        }
        _ => Err(ShopError::BadIdempotencyKey),
    }
}

/// How long a replacement made is remembered, for the same request sent again.
const RECENT_TTL: Duration = Duration::from_secs(600);
/// Replacements remembered at most (the oldest go first).
const RECENT_KEPT: usize = 256;
/// How long a request sent again waits for its first sending's replacement to be made: far
/// longer than one takes (a database write), short enough for a client's own timeout.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// Who asks, so that the two ways in never answer each other's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `POST /api/keys/rotate`: the old key and its `Idempotency-Key`.
    Api,
    /// The dashboard's form: its grant and the browser's grant binding (its CSRF token and
    /// secret cookie, `PageCtx::grant_binding`).
    Dashboard,
}

/// New key texts made in the last [`RECENT_TTL`], and those being made, by who asked: for the
/// dashboard's "Replace this key", its grant and the browser's grant binding; for the API, the old
/// key and the request's `Idempotency-Key` — hashed together with the scope. A request sent
/// again (a double click: the browser shows only the second answer; a client whose answer was
/// lost) gets the text the first one made, waiting for it if it is still being made, instead
/// of a refusal while the key it replaced is dead and the new one was never seen. Only the same
/// browser's same form can ask: a grant is sealed to its CSRF token and secret cookie (the
/// page's HTML alone, without the cookie, neither redeems the grant nor gets the text it
/// made), and a different page (another browser, or one holding the old text) has a grant of
/// its own. On the API, whoever
/// holds the old key still needs the idempotency key its owner chose.
#[derive(Default)]
pub struct Recent(Arc<Mutex<Vec<Entry>>>);

/// One request's replacement.
struct Entry {
    id: [u8; 32],
    made: Made,
    at: Instant,
}

enum Made {
    /// Being made: its maker holds the sender, whose drop wakes those waiting.
    Making(watch::Receiver<()>),
    Done(String),
}

/// What [`Recent::claim`] found.
pub enum Claim {
    /// Made already: the text.
    Made(String),
    /// Being made by the same request sent before: wait for this to change (its maker is
    /// dropped), then claim again.
    Wait(watch::Receiver<()>),
    /// Nobody made it: this request makes it, and hands the text to the maker.
    Mine(Maker),
}

/// A claim on making a replacement: [`Maker::made`] records the text; dropped without it (the
/// rotation failed), the claim is withdrawn and a request sent again may try.
pub struct Maker {
    all: Arc<Mutex<Vec<Entry>>>,
    id: [u8; 32],
    /// Dropped last: those waiting wake to find the entry made or gone.
    _wake: watch::Sender<()>,
}

impl Maker {
    /// The replacement was made: remember its text.
    pub fn made(self, text: &str) {
        let mut all = lock(&self.all);
        if let Some(e) = all.iter_mut().find(|e| e.id == self.id) {
            e.made = Made::Done(text.to_string());
            e.at = Instant::now();
        }
    }
}

impl Drop for Maker {
    fn drop(&mut self) {
        // Still making: the rotation failed; withdraw the claim.
        lock(&self.all).retain(|e| e.id != self.id || matches!(e.made, Made::Done(_)));
    }
}

fn lock(all: &Mutex<Vec<Entry>>) -> std::sync::MutexGuard<'_, Vec<Entry>> {
    all.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recent {
    /// Remember a replacement made `age` ago by the request known as `id` (read back from the
    /// database at start: `rotation_requests`).
    pub fn remember(&self, id: [u8; 32], text: String, age: Duration) {
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let mut all = lock(&self.0);
        all.retain(|e| e.id != id);
        all.push(Entry {
            id,
            made: Made::Done(text),
            at,
        });
    }

    fn id(scope: Scope, who: &str, asked: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        let scope = match scope {
            Scope::Api => "api",
            Scope::Dashboard => "dashboard",
        };
        for part in [scope, "\n", who.trim(), "\n", asked] {
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// What is known of the replacement `who` asked for with `asked` (a form's grant and the
    /// browser's grant binding, or the old key and the `Idempotency-Key`): made, being made, or
    /// not at all — then it is this caller's to make.
    pub fn claim(&self, scope: Scope, who: &str, asked: &str) -> Claim {
        let id = Recent::id(scope, who, asked);
        let mut all = lock(&self.0);
        all.retain(|e| matches!(e.made, Made::Making(_)) || e.at.elapsed() < RECENT_TTL);
        if let Some(e) = all.iter().find(|e| e.id == id) {
            return match &e.made {
                Made::Done(text) => Claim::Made(text.clone()),
                Made::Making(wake) => Claim::Wait(wake.clone()),
            };
        }
        if all.len() >= RECENT_KEPT
            && let Some(oldest) = all.iter().position(|e| matches!(e.made, Made::Done(_)))
        {
            all.remove(oldest);
        }
        let (wake, waiting) = watch::channel(());
        all.push(Entry {
            id,
            made: Made::Making(waiting),
            at: Instant::now(),
        });
        Claim::Mine(Maker {
            all: self.0.clone(),
            id,
            _wake: wake,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_made_waited_for_withdrawn_and_kept_apart_by_scope() {
        let recent = Recent::default();
        let Claim::Mine(maker) = recent.claim(Scope::Api, "sk-old", "k1") else {
            panic!("the first claim makes it");
        };
        // The same request again waits; the dashboard's form with the same parts does not.
        let Claim::Wait(waiting) = recent.claim(Scope::Api, " sk-old ", "k1") else {
            panic!("the same request waits while it is being made");
        };
        let Claim::Mine(other) = recent.claim(Scope::Dashboard, "sk-old", "k1") else {
            panic!("another scope is another request");
        };
        drop(other);
        maker.made("sk-new");
        assert!(waiting.has_changed().is_err(), "the waiting one is woken");
        assert!(matches!(
            recent.claim(Scope::Api, "sk-old", "k1"),
            Claim::Made(t) if t == "sk-new"
        ));
        // A maker dropped without a text (the rotation failed) withdraws its claim.
        let Claim::Mine(failed) = recent.claim(Scope::Api, "sk-old", "k2") else {
            panic!("a new request");
        };
        drop(failed);
        assert!(matches!(
            recent.claim(Scope::Api, "sk-old", "k2"),
            Claim::Mine(_)
        ));
    }
}
