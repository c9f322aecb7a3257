//! A bare relay for the benchmark (`--features bench-passthrough` only, never in a release
//! build): `POST /bench/passthrough/chat/completions` forwards the body to upstream with the
//! same client and streams the answer back — no key, no limit, no hold, no bill, no ledger.
//! Measured beside the real route, it shows what those layers cost.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::GatewayError;
use crate::state::AppState;
use crate::upstream::{Dispatch, Endpoint};

/// The handler.
pub async fn relay(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let deadline = tokio::time::Instant::now() + state.upstream.request_timeout;
    let sent = state
        .upstream
        .send(
            Endpoint::ChatCompletions,
            "",
            body.to_vec(),
            deadline,
            &Dispatch::default(),
        )
        .await;
    match sent {
        Ok(reply) => {
            let resp = reply.into_response();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            (
                status,
                [(header::CONTENT_TYPE, ct)],
                Body::new(resp.into_body()),
            )
                .into_response()
        }
        Err(e) => GatewayError::from(e).into_response(),
    }
}
