//! Key identification: which of our keys a request presents, for the gateway and the storefront
//! alike.
//!
//! Two steps: the token is taken from the headers ([`bearer_token`]), then looked up in the
//! in-memory table and checked ([`look_up`]). Keeping them apart means another way of sending
//! the key (another API dialect's header) only adds an extraction, and the look-up stays one.

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use super::token::{hash_key, is_well_formed};
use super::{KeyState, KeyStatus, KeyTable};

/// Why a request presents no key it may use. The messages are written for customers: callers
/// pass them on as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// No `Authorization` header at all.
    #[error("{}", self.message())]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("{}", self.message())]
    Malformed,
    /// The key's header (`Authorization` or `x-api-key`) sent twice: which is meant is not ours
    /// to guess (a proxy that added one may have meant the other).
    #[error("{}", self.message())]
    Twice,
    /// A token that is not one of our keys (badly shaped or unknown: the same answer, so the
    /// shape of a guess teaches nothing).
    #[error("{}", self.message())]
    Unknown,
    /// One of our keys, turned off for good.
    #[error("{}", self.message())]
    Revoked,
}

impl IdentifyError {
    /// The customer's message (also the `Display`), as a static string: error bodies that hold
    /// one need no copy.
    pub fn message(self) -> &'static str {
        match self {
            IdentifyError::Missing => {
                "Missing API key. Send it as `Authorization: Bearer sk-gateway-…`."
            }
            IdentifyError::Malformed => {
                "Malformed Authorization header. Send `Authorization: Bearer sk-gateway-…`."
            }
            IdentifyError::Twice => {
                "The API key's header (`Authorization` or `x-api-key`) was sent more than once. \
                 Send one key, once."
            }
            IdentifyError::Unknown => "Invalid API key.",
            IdentifyError::Revoked => "This API key has been revoked.",
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, the token trimmed).
/// Two `Authorization` headers are malformed, not the first one's: a proxy that added one may
/// have meant the other (found by an independent check: the first was billed).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, IdentifyError> {
    let value = only(headers, header::AUTHORIZATION.as_str())?.ok_or(IdentifyError::Missing)?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(IdentifyError::Malformed)
}

/// The token of Anthropic's clients: `Authorization: Bearer <token>` when it is there and well
/// formed (Bearer wins when both are sent, as at DeepSeek), else `x-api-key: <token>`.
pub fn bearer_or_api_key(headers: &HeaderMap) -> Result<&str, IdentifyError> {
    let bearer = bearer_token(headers);
    // Two Authorization headers are refused, whatever else is sent.
    if bearer.is_ok()
        || headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
    {
        return bearer;
    }
    match only(headers, "x-api-key")? {
        Some(v) => v
            .to_str()
            .map(str::trim)
            .map_err(|_| IdentifyError::Unknown),
        None => bearer,
    }
}

/// The one value of header `name`, if any; more than one is [`IdentifyError::Twice`].
fn only<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h header::HeaderValue>, IdentifyError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(IdentifyError::Twice);
    }
    Ok(first)
}

/// The key `token` stands for, whatever its status. A token without the shape of our keys is
/// refused before it is hashed.
pub fn look_up(keys: &KeyTable, token: &str) -> Result<Arc<KeyState>, IdentifyError> {
    if !is_well_formed(token) {
        return Err(IdentifyError::Unknown);
    }
    keys.by_hash(&hash_key(token)).ok_or(IdentifyError::Unknown)
}

/// The key a request presents, whatever its status (a revoked key may still read its own
/// usage).
pub fn identify(keys: &KeyTable, headers: &HeaderMap) -> Result<Arc<KeyState>, IdentifyError> {
    look_up(keys, bearer_token(headers)?)
}

/// The key a request presents, refusing a revoked one (what spending requires).
pub fn authenticate(keys: &KeyTable, headers: &HeaderMap) -> Result<Arc<KeyState>, IdentifyError> {
    usable(look_up(keys, bearer_token(headers)?)?)
}

/// The key `token` stands for, refusing a revoked one.
pub fn authenticate_token(keys: &KeyTable, token: &str) -> Result<Arc<KeyState>, IdentifyError> {
    usable(look_up(keys, token)?)
}

fn usable(key: Arc<KeyState>) -> Result<Arc<KeyState>, IdentifyError> {
    if key.status() == KeyStatus::Revoked {
        return Err(IdentifyError::Revoked);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::keys::KeyRecord;
    use crate::money::Usd;

    const KEY: &str = "sk-gateway-0123456789abcdefghijABCDEFGHIJ0123456789";

    fn table() -> KeyTable {
        let record = KeyRecord {
            hash: hash_key(KEY),
            prefix: "sk-gateway-0123…".into(),
            ..KeyRecord::for_tests("key_test", Usd::from_dollars(1))
        };
        KeyTable::new([(record.hash, KeyState::from_record(record, 60))])
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn each_outcome_has_its_error() {
        let keys = table();
        let cases = [
            (None, Err(IdentifyError::Missing)),
            (Some("Basic abc"), Err(IdentifyError::Malformed)),
            (Some("Bearer"), Err(IdentifyError::Malformed)),
            (Some("Bearer garbage"), Err(IdentifyError::Unknown)),
            (
                Some("Bearer sk-gateway-00000000000000000000000000000000"),
                Err(IdentifyError::Unknown),
            ),
            (Some(&*format!("bearer  {KEY} ")), Ok("key_test")),
        ];
        for (auth, want) in cases {
            let got = identify(&keys, &headers(auth)).map(|k| k.id.clone());
            assert_eq!(got.as_deref().map_err(|e| *e), want, "{auth:?}");
        }
    }

    #[test]
    fn a_revoked_key_is_identified_but_not_authenticated() {
        let keys = table();
        let h = headers(Some(&format!("Bearer {KEY}")));
        assert!(keys.by_hash(&hash_key(KEY)).unwrap().revoke());
        assert!(identify(&keys, &h).is_ok());
        assert_eq!(
            authenticate(&keys, &h).map(|_| ()),
            Err(IdentifyError::Revoked)
        );
    }

    #[test]
    fn messages_are_the_display() {
        for e in [
            IdentifyError::Missing,
            IdentifyError::Malformed,
            IdentifyError::Unknown,
            IdentifyError::Revoked,
        ] {
            assert_eq!(e.to_string(), e.message());
        }
    }

    #[test]
    fn anthropic_clients_send_x_api_key_and_bearer_wins() {
        let keys = table();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(KEY));
        let id = |h: &HeaderMap| bearer_or_api_key(h).and_then(|t| authenticate_token(&keys, t));
        assert_eq!(id(&h).unwrap().id, "key_test");
        // Both: Bearer wins, even when it is the wrong one.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-gateway-00000000000000000000000000000000"),
        );
        assert_eq!(id(&h).err(), Some(IdentifyError::Unknown));
        // A non-Bearer Authorization does not hide the x-api-key.
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(id(&h).unwrap().id, "key_test");
        assert_eq!(
            bearer_or_api_key(&HeaderMap::new()),
            Err(IdentifyError::Missing)
        );
    }

    #[test]
    fn two_keys_in_one_request_are_refused_whichever_comes_first() {
        let keys = table();
        let good = HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap();
        let bad = HeaderValue::from_static("Bearer sk-gateway-00000000000000000000000000000000");
        for pair in [[good.clone(), bad.clone()], [bad.clone(), good.clone()]] {
            let mut h = HeaderMap::new();
            for v in pair {
                h.append(header::AUTHORIZATION, v);
            }
            assert_eq!(identify(&keys, &h).err(), Some(IdentifyError::Twice));
            // An x-api-key beside them does not settle it.
            h.insert("x-api-key", HeaderValue::from_static(KEY));
            assert_eq!(bearer_or_api_key(&h), Err(IdentifyError::Twice));
        }
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static(KEY));
        h.append("x-api-key", HeaderValue::from_static(KEY));
        assert_eq!(bearer_or_api_key(&h), Err(IdentifyError::Twice));
        // Its message names both headers, not only Authorization.
        assert!(IdentifyError::Twice.message().contains("x-api-key"));
    }
}
