//! API key material: generation from the OS RNG, the SHA-256 used for look-up, display prefixes.

use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "sk-gateway-";
/// Random base62 characters after the prefix (~238 bits).
pub const KEY_RANDOM_CHARS: usize = 40;
/// Characters of the random part shown in a display prefix.
const SHOWN_CHARS: usize = 4;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The OS random number generator failed (practically never; it is reported, not unwrapped).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RngError(String);

/// `n` base62 characters from the OS RNG, without modulo bias (bytes >= 248 are redrawn).
pub fn random_base62(n: usize) -> Result<String, RngError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| RngError(e.to_string()))?;
        for &b in &buf {
            if b < 248 && out.len() < n {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

/// A fresh `sk-gateway-…` key.
pub fn generate_key() -> Result<String, RngError> {
    Ok(format!("{KEY_PREFIX}{}", random_base62(KEY_RANDOM_CHARS)?))
}

/// A fresh key id (`key_` + 16 base62), safe as DeepSeek's `user_id`.
pub fn generate_key_id() -> Result<String, RngError> {
    Ok(format!("key_{}", random_base62(16)?))
}

/// SHA-256 of the whole key string: what the database and the in-memory table index by.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// True when `s` has the shape of one of our keys (prefix + at least 32 base62 characters).
pub fn is_well_formed(s: &str) -> bool {
    s.strip_prefix(KEY_PREFIX).is_some_and(|r| {
        r.len() >= 32 && r.len() <= 128 && r.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A key as a person pasted it into a page: without the whitespace a copy picks up (a line
/// break a narrow window wrapped it at, spaces around it; a key has none), the quotes it was
/// written in, or the `Bearer ` of the header it was copied from (found by an independent
/// check: such a paste was "no key matches"). What is left is looked up as it is.
pub fn as_pasted(s: &str) -> String {
    let quote = |c: char| matches!(c, '"' | '\'' | '`');
    // Whitespace first (a line break or tab after `Bearer`, a space inside the quotes), then
    // the quotes and the word, in either order (found by a review).
    let bare: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let t = bare.trim_matches(quote);
    let t = match t.get(..6) {
        Some(b) if b.eq_ignore_ascii_case("bearer") => &t[6..],
        _ => t,
    };
    t.trim_matches(quote).to_string()
}

/// The part of a key that may be shown: `sk-gateway-AbCd…`.
pub fn display_prefix(key: &str) -> String {
    let shown: String = key.chars().take(KEY_PREFIX.len() + SHOWN_CHARS).collect();
    format!("{shown}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pasted_key_loses_what_a_copy_picked_up() {
        let k = "sk-gateway-AbCdEfGh";
        for pasted in [
            k,
            " sk-gateway-AbCdEfGh\n",
            "sk-gateway-AbCd\nEfGh",
            "sk-gateway-AbCd EfGh",
            "\"sk-gateway-AbCdEfGh\"",
            "Bearer sk-gateway-AbCdEfGh",
            "bearer  sk-gateway-AbCdEfGh",
            "'Bearer sk-gateway-AbCdEfGh'",
            "Bearer\nsk-gateway-AbCdEfGh",
            "Bearer\tsk-gateway-AbCdEfGh",
            "' Bearer sk-gateway-AbCdEfGh '",
            "Bearer \"sk-gateway-AbCdEfGh\"",
        ] {
            assert_eq!(as_pasted(pasted), k, "{pasted:?}");
        }
        assert_eq!(as_pasted("Bear"), "Bear");
        assert_eq!(as_pasted("sk-gateway-é x"), "sk-gateway-éx");
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let k = generate_key().unwrap();
        assert!(k.starts_with(KEY_PREFIX));
        assert_eq!(k.len(), KEY_PREFIX.len() + KEY_RANDOM_CHARS);
        assert!(is_well_formed(&k));
        assert_ne!(k, generate_key().unwrap());
        assert_eq!(display_prefix(&k).chars().count(), KEY_PREFIX.len() + 5);
        assert!(generate_key_id().unwrap().starts_with("key_"));
    }

    #[test]
    fn malformed_keys() {
        assert!(!is_well_formed("sk-gateway-short"));
        assert!(!is_well_formed(
            "sk-other-0123456789012345678901234567890123"
        ));
        assert!(!is_well_formed(
            "sk-gateway-0123456789012345678901234567890!"
        ));
    }

    #[test]
    fn base62_is_roughly_uniform() {
        let s = random_base62(62 * 200).unwrap();
        let mut counts = [0u32; 62];
        for b in s.bytes() {
            counts[BASE62.iter().position(|&c| c == b).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 100 && c < 320), "{counts:?}");
    }
}
