//! `POST /api/keys/rotate` with the key as Bearer: the key's text is replaced, keeping its id,
//! plan, budget, spend and history; the answer `{"api_key"}` is the only time the new text is
//! shown, and the old text answers 401 from then on. Limited per IP before the key is even
//! looked at (rotation needs the key, so guessing keys here is as slow as anywhere).
//!
//! The dashboard's "Replace this key" form does the same from a page (`pages/dashboard`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

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
    let key = authenticate_token(&state.keys, token)?;
    let api_key = rotate(&state, &key.id, hash_key(token)).await?;
    Ok(Json(json!({ "api_key": api_key })))
}
