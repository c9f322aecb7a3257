//! `POST /api/keys/rotate` with the key as Bearer: the key's text is replaced, keeping its id,
//! plan, budget, spend and history; the answer `{"api_key"}` is the only time the new text is
//! shown, and the old text answers 401 from then on. Limited per IP before the key is even
//! looked at (rotation needs the key, so guessing keys here is as slow as anywhere). A request
//! with an `Idempotency-Key` header, sent again with the same old key and the same header
//! within ten minutes (its answer was lost), gets the text the first one made, not a 401 for a
//! key it can no longer use.
//!
//! The dashboard's "Replace this key" form does the same from a page (`pages/dashboard`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ShopError;
use super::limits::limit_key;
use crate::admin::AdminError;
use crate::keys::identify::{IdentifyError, authenticate_token, bearer_token};
use crate::keys::token::hash_key;
use crate::state::{AppState, ClientIp};

/// Replace the text of key `key_id`, whose text hashes to `presented` (what the customer
/// showed), in a task of its own (a client hanging up must not leave the database and the live
/// table disagreeing), returning the new text. Refused as an unknown key when another rotation
/// replaced that text first.
pub async fn rotate(
    state: &Arc<AppState>,
    key_id: &str,
    presented: [u8; 32],
) -> Result<String, ShopError> {
    let worker = {
        let state = state.clone();
        let id = key_id.to_string();
        tokio::spawn(async move { crate::admin::rotate_key(&state, &id, Some(presented)).await })
    };
    match worker.await {
        Ok(Ok((_, text))) => Ok(text),
        Ok(Err(AdminError::Revoked(_))) => Err(ShopError::InvalidApiKey(IdentifyError::Revoked)),
        Ok(Err(AdminError::TextReplaced(_))) => {
            Err(ShopError::InvalidApiKey(IdentifyError::Unknown))
        }
        Ok(Err(e)) => {
            tracing::error!(key_id, error = %e, "key not rotated");
            Err(ShopError::RotationFailed)
        }
        Err(_) => Err(ShopError::RotationFailed),
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
    let again = idempotency_key(&headers)?;
    if let Some(again) = again
        && let Some(api_key) = state.recent_rotations.recall(token, again)
    {
        return Ok(Json(json!({ "api_key": api_key })));
    }
    let key = authenticate_token(&state.keys, token)?;
    let api_key = rotate(&state, &key.id, hash_key(token)).await?;
    if let Some(again) = again {
        state.recent_rotations.remember(token, again, &api_key);
    }
    Ok(Json(json!({ "api_key": api_key })))
}

/// The request's `Idempotency-Key`, if it has one: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ShopError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k))
        }
        _ => Err(ShopError::BadIdempotencyKey),
    }
}

/// How long the dashboard remembers a replacement it made, for the same form sent again.
const RECENT_TTL: Duration = Duration::from_secs(600);
/// Replacements remembered at most (the oldest go first).
const RECENT_KEPT: usize = 256;

/// New key texts made in the last [`RECENT_TTL`], by who asked: for the dashboard's "Replace
/// this key", its grant and the browser's CSRF token; for the API, the old key and the
/// request's `Idempotency-Key` — two parts hashed together. A form sent twice (a double click:
/// the browser shows only the second answer) gets the text the first one made, instead of "this
/// page is stale" while the key it replaced is dead and the new one was never seen. Only the
/// same browser's same form can ask: a grant is sealed to its CSRF token, and a different page
/// (another browser, or one holding the old text) has a grant of its own. On the API, whoever
/// holds the old key still needs the idempotency key its owner chose.
#[derive(Default)]
pub struct Recent(Mutex<Vec<([u8; 32], String, Instant)>>);

impl Recent {
    fn id(who: &str, asked: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [who.trim(), "\n", asked] {
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Remember that `who` (a form's grant, or the old key) asking with `asked` (the browser's
    /// CSRF token, or the `Idempotency-Key`) made `text`.
    pub fn remember(&self, who: &str, asked: &str, text: &str) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|(_, _, at)| at.elapsed() < RECENT_TTL);
        if all.len() >= RECENT_KEPT {
            all.remove(0);
        }
        all.push((Recent::id(who, asked), text.to_string(), Instant::now()));
    }

    /// The text `who` asking with `asked` made, if it made one in the last [`RECENT_TTL`].
    pub fn recall(&self, who: &str, asked: &str) -> Option<String> {
        let id = Recent::id(who, asked);
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .find(|(i, _, at)| *i == id && at.elapsed() < RECENT_TTL)
            .map(|(_, text, _)| text.clone())
    }
}
