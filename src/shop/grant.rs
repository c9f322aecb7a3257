//! Dashboard grants: the dashboard never echoes the key it was given, yet its "Add credit" and
//! "Replace this key" forms must say which key they are about. The page carries a grant
//! instead: the key's id, the hash of the text it was issued for, and an expiry, sealed
//! (XChaCha20-Poly1305, the server secret) with this browser's CSRF token and its secret cookie
//! (`web::BROWSER_COOKIE`, which no page prints) as associated data — so a grant is useless in
//! another browser, even one that has the page's HTML, after [`GRANT_TTL_MS`], once the key's text is
//! replaced (whoever held the old text and its page cannot replace the new one), or altered,
//! and reveals nothing about the key.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;

use crate::keys::KeyState;
use crate::state::AppState;

/// How long a dashboard's forms stay usable.
pub const GRANT_TTL_MS: i64 = 30 * 60 * 1000;

fn context(binding: &str) -> String {
    format!("dashboard-grant|{binding}")
}

/// What a grant stands for.
pub struct Granted {
    /// The key.
    pub key: Arc<KeyState>,
    /// The hash of its text, which the grant was issued for and which is still the key's.
    pub hash: [u8; 32],
}

/// A grant for key `key_id`, shown the text that hashes to `hash`, for the browser of `binding`
/// (`PageCtx::grant_binding`); `None` if sealing failed (the forms are then left out).
pub fn issue(state: &AppState, key_id: &str, hash: &[u8; 32], binding: &str) -> Option<String> {
    let expires = Utc::now().timestamp_millis() + GRANT_TTL_MS;
    let sealed = state
        .sealer
        .seal(
            &context(binding),
            &format!("{key_id}|{}|{expires}", hex::encode(hash)),
        )
        .ok()?;
    Some(URL_SAFE_NO_PAD.encode(sealed))
}

/// The key a grant stands for, if the grant is this browser's and unexpired, and the key
/// exists with the text the grant was issued for.
pub fn redeem(state: &AppState, grant: &str, binding: &str) -> Option<Granted> {
    if grant.len() > 512 {
        return None;
    }
    let sealed = URL_SAFE_NO_PAD.decode(grant.trim()).ok()?;
    let text = state.sealer.open(&context(binding), &sealed).ok()?;
    let (rest, expires) = text.rsplit_once('|')?;
    let (key_id, hash) = rest.rsplit_once('|')?;
    if expires.parse::<i64>().ok()? < Utc::now().timestamp_millis() {
        return None;
    }
    let hash: [u8; 32] = hex::decode(hash).ok()?.try_into().ok()?;
    if state.keys.hash_of(key_id)? != hash {
        return None;
    }
    Some(Granted {
        key: state.keys.by_id(key_id)?,
        hash,
    })
}
