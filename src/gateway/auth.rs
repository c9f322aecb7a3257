//! Authentication for the API: the key identification of [`crate::keys::identify`], its
//! refusals in the API's error shape (401 `invalid_api_key`).

use std::sync::Arc;

use axum::http::HeaderMap;

use super::error::GatewayError;
use crate::keys::KeyState;
use crate::keys::identify;
use crate::state::AppState;

/// The key a request presents, if it is one of ours, whatever its status (a revoked key may
/// still read its own usage).
pub fn identify(state: &AppState, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
    Ok(identify::identify(&state.keys, headers)?)
}

/// The key a request presents, refusing a revoked one (the gateway's check).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
    Ok(identify::authenticate(&state.keys, headers)?)
}
