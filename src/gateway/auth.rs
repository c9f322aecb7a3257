//! Authentication: `Authorization: Bearer sk-gateway-…` → SHA-256 → the in-memory key table.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::error::GatewayError;
use crate::keys::token::{hash_key, is_well_formed};
use crate::keys::{KeyState, KeyStatus};
use crate::state::AppState;

/// The key a request presents, if it is one of ours, whatever its status (a revoked key may
/// still read its own usage).
pub fn identify(state: &AppState, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(GatewayError::InvalidApiKey(
            "Missing API key. Send it as `Authorization: Bearer sk-gateway-…`.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(GatewayError::InvalidApiKey(
            "Malformed Authorization header. Send `Authorization: Bearer sk-gateway-…`.",
        ))?;
    if !is_well_formed(token) {
        return Err(GatewayError::InvalidApiKey("Invalid API key."));
    }
    let key = state
        .keys
        .by_hash(&hash_key(token))
        .ok_or(GatewayError::InvalidApiKey("Invalid API key."))?;
    Ok(key)
}

/// The key a request presents, refusing a revoked one (the gateway's check).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
    let key = identify(state, headers)?;
    if key.status() == KeyStatus::Revoked {
        return Err(GatewayError::InvalidApiKey(
            "This API key has been revoked.",
        ));
    }
    Ok(key)
}
