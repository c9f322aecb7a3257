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
use crate::keys::seal::Sealer;
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
    seal_at(
        &state.sealer,
        key_id,
        hash,
        binding,
        Utc::now().timestamp_millis(),
    )
}

/// [`issue`] at `now_ms`.
fn seal_at(
    sealer: &Sealer,
    key_id: &str,
    hash: &[u8; 32],
    binding: &str,
    now_ms: i64,
) -> Option<String> {
    let expires = now_ms + GRANT_TTL_MS;
    let sealed = sealer
        .seal(
            &context(binding),
            &format!("{key_id}|{}|{expires}", hex::encode(hash)),
        )
        .ok()?;
    Some(URL_SAFE_NO_PAD.encode(sealed))
}

/// How far the clock may have been stepped back since a grant was issued for it to stay
/// usable: NTP's small corrections, not a day's step, which made a grant expired for that
/// long usable again (and one issued while the clock ran a month fast usable for a month;
/// found by an independent check).
const CLOCK_SLACK_MS: i64 = 60_000;

/// The key id and text hash a grant stands for at `now_ms`, if it is this browser's and
/// neither expired nor issued for a later time than now (the clock since stepped back).
fn open_at(sealer: &Sealer, grant: &str, binding: &str, now_ms: i64) -> Option<(String, [u8; 32])> {
    if grant.len() > 512 {
        return None;
    }
    let sealed = URL_SAFE_NO_PAD.decode(grant.trim()).ok()?;
    let text = sealer.open(&context(binding), &sealed).ok()?;
    let (rest, expires) = text.rsplit_once('|')?;
    let (key_id, hash) = rest.rsplit_once('|')?;
    let expires = expires.parse::<i64>().ok()?;
    if expires < now_ms || expires > now_ms + GRANT_TTL_MS + CLOCK_SLACK_MS {
        return None;
    }
    let hash: [u8; 32] = hex::decode(hash).ok()?.try_into().ok()?;
    Some((key_id.to_string(), hash))
}

/// The key a grant stands for, if the grant is this browser's and unexpired, and the key
/// exists with the text the grant was issued for.
pub fn redeem(state: &AppState, grant: &str, binding: &str) -> Option<Granted> {
    let now = Utc::now().timestamp_millis();
    let (key_id, hash) = open_at(&state.sealer, grant, binding, now)?;
    if state.keys.hash_of(&key_id)? != hash {
        return None;
    }
    Some(Granted {
        key: state.keys.by_id(&key_id)?,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant opens in its own browser for its 30 minutes, and not before it was issued: a
    /// clock stepped back a minute (NTP) leaves it usable, one stepped back further does not.
    #[test]
    fn a_grant_opens_within_its_window_on_a_clock_that_did_not_step_back_far() {
        let sealer = Sealer::from_secret(&[7; 32]);
        let t = 1_800_000_000_000;
        let grant = seal_at(&sealer, "key_a", &[3; 32], "browser", t).unwrap();
        let at = |now| open_at(&sealer, &grant, "browser", now);
        assert_eq!(at(t), Some(("key_a".to_string(), [3; 32])));
        assert!(at(t + GRANT_TTL_MS).is_some());
        assert!(at(t + GRANT_TTL_MS + 1).is_none(), "expired");
        assert!(at(t - CLOCK_SLACK_MS).is_some(), "a small step back");
        assert!(
            at(t - CLOCK_SLACK_MS - 1).is_none(),
            "issued later than now"
        );
        assert!(at(t - 86_400_000).is_none(), "a day back");
        assert!(open_at(&sealer, &grant, "another", t).is_none());
    }
}
