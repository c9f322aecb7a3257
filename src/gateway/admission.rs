//! Admission: everything a request must pass before it may go upstream, in this order — the
//! key (401), a place among the key's requests in flight (429 `too_many_in_flight`, using none
//! of its RPM), its rate limit (429), a balance that can pay for anything at all (402), the body
//! (413, or 402 when the key could never pay for that many bytes; 429/503 past the bounds of
//! what bodies being sent may hold, `bodies.rs`), the request itself (400),
//! the model (404) and the plan (403), and finally the hold on the key's balance, which may
//! lower `max_tokens` to what the key can pay for (402 below one output token).

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;

use super::billing::{Hold, reserve};
use super::dialect::{ClientRequest, Dialect};
use super::error::{GatewayError, rate_headers};
use crate::activity::ActivityEvent;
use crate::catalog::{Model, Plan};
use crate::keys::{KeySlot, KeyState, KeyStatus, RateCheck};
use crate::money::Usd;
use crate::state::AppState;

/// A request that passed every check and holds money.
pub struct Admitted<R> {
    /// The paying key.
    pub key: Arc<KeyState>,
    /// Its rate check (for the `x-ratelimit-*` headers of the answer).
    pub rate: RateCheck,
    /// The model served.
    pub model: Model,
    /// The money held.
    pub hold: Hold,
    /// Its place among the key's requests in flight, until it settles.
    pub slot: KeySlot,
    /// The parsed request.
    pub request: R,
    /// The body it was parsed from (shared, not copied): a bill without upstream's count of
    /// the prompt counts it again with DeepSeek's tokenizer.
    pub raw: Bytes,
}

/// A request turned away before upstream.
pub struct Refusal {
    error: GatewayError,
    key_id: Option<String>,
    /// Set once the key passed its rate check: the answer carries the `x-ratelimit-*` headers.
    rate: Option<RateCheck>,
}

impl Refusal {
    fn new(error: GatewayError, key: Option<&KeyState>, rate: Option<RateCheck>) -> Refusal {
        Refusal {
            error,
            key_id: key.map(|k| k.id.clone()),
            rate,
        }
    }

    /// The answer in the dialect's shape; refusals about the key, its money (402, and 429
    /// `budget_held`), its requests in flight, its plan or the model are also told to the
    /// console.
    pub fn respond<D: Dialect>(self, state: &AppState) -> Response {
        let status = self.error.status().as_u16();
        let held = matches!(
            self.error,
            GatewayError::BudgetHeld { .. } | GatewayError::TooManyInFlight { .. }
        );
        if matches!(self.error, GatewayError::TooManyInFlight { .. }) {
            state.metrics.rate_limited();
        }
        if matches!(status, 401..=404) || held {
            state.activity.emit(ActivityEvent::Refused {
                key_id: self.key_id,
                status,
                code: self.error.code().to_string(),
                at_ms: crate::clock::now_ms(),
            });
        }
        let mut resp = D::error_response(self.error);
        if let Some(rate) = &self.rate {
            rate_headers(rate, resp.headers_mut());
        }
        resp
    }
}

/// Run every check on a request, in order; on success the hold is taken.
pub async fn admit<D: Dialect>(
    state: &AppState,
    parts: &Parts,
    body: Body,
) -> Result<Admitted<D::Request>, Refusal> {
    // A body left unread by a refusal is read to its end in the background
    // (`server::body::linger`).
    let key =
        D::authenticate(&state.keys, &parts.headers).map_err(|e| Refusal::new(e, None, None))?;
    // Before the rate check: a refusal that is the server's fault uses none of the key's RPM.
    if state.store.cannot_record() {
        return Err(Refusal::new(GatewayError::NotRecording, Some(&key), None));
    }
    // A place among the key's requests in flight before its rate: the refusal is cheap (no
    // body read) and retried by the SDKs (`Retry-After: 2`; Claude Code up to ten times), and
    // each retry used one of the key's RPM, so agents waiting for a place then met 429
    // `rate_limit_exceeded` too (found by an independent check). The place is given back when
    // the request settles, or as soon as a later check refuses it.
    let plan = state.catalog.plan(&key.plan());
    let cap = plan.map_or(crate::config::DEFAULT_KEY_IN_FLIGHT, |p| p.max_in_flight);
    let slot = key.enter(cap).ok_or_else(|| {
        Refusal::new(
            GatewayError::TooManyInFlight { limit: cap },
            Some(&key),
            None,
        )
    })?;
    let rate = key.check_rate();
    if !rate.allowed {
        rate_limited(state, &key, &rate);
        // The error carries its own rate headers (and `retry-after`); no `refused` event.
        return Err(Refusal {
            error: GatewayError::RateLimited(rate),
            key_id: None,
            rate: None,
        });
    }
    let refuse = |e: GatewayError| Refusal::new(e, Some(&key), Some(rate));
    let (request, model, hold, raw) =
        checks::<D>(state, &key, plan, parts, body)
            .await
            .map_err(|e| {
                if let GatewayError::InsufficientBudget { held, .. } = e
                    && held == Usd::ZERO
                {
                    super::billing::refused_for_money(state, &key);
                }
                refuse(e)
            })?;
    Ok(Admitted {
        key,
        rate,
        model,
        hold,
        slot,
        request,
        raw,
    })
}

/// The checks after the key, its place in flight and its rate: money, body, request, model,
/// plan, hold.
async fn checks<D: Dialect>(
    state: &AppState,
    key: &Arc<KeyState>,
    plan: Option<&Plan>,
    parts: &Parts,
    body: Body,
) -> Result<(D::Request, Model, Hold, Bytes), GatewayError> {
    // A key that cannot pay for the smallest request is told so before its body is read, and
    // a body whose bytes alone (each may be a prompt token) it could not pay for even on the
    // plan's cheapest model, at the cheaper period, is refused without reading it into memory;
    // the model the body names is priced by the hold once it is read, at the period of that
    // moment — the request's start, as its row says (the period read before the body let a
    // body sent slowly from before a peak window be billed off-peak inside it; found by an
    // independent check).
    let floor = plan.map_or(Usd::from_nanos(1), |p| p.exhausted_below);
    // What the key could pay once its requests in flight finish, at most: the early refusals
    // are for requests even that would not pay for (402); one that only the holds stand in
    // the way of goes on to the hold, which tells the two apart exactly (`reserve`: 429
    // `budget_held` or 402).
    let reach = key.available().saturating_add(key.balance().held);
    let spent = key.status() == KeyStatus::Exhausted || reach < floor;
    let refused = || GatewayError::InsufficientBudget {
        available: key.available(),
        held: key.balance().held,
        spent,
        needs: None,
    };
    if spent {
        return Err(refused());
    }
    let affordable = plan.map_or(usize::MAX, |p| {
        let [off_peak, peak] = p.min_prompt_price;
        affordable_bytes(reach, off_peak.min(peak))
    });
    // The body limit is the request's own property, so 413 comes first whatever the
    // balance; then a body the key could never pay for is refused (unread when its length
    // is declared).
    let max_body = state.config.server.max_body_bytes;
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|n| n > max_body) {
        return Err(GatewayError::RequestTooLarge { limit: max_body });
    }
    if declared.is_some_and(|n| n > affordable) {
        return Err(refused());
    }
    let raw = super::bodies::read(state, key, &parts.headers, body, max_body).await?;
    if raw.len() > affordable {
        return Err(refused());
    }
    let req = D::parse(&raw)?;
    let model = state
        .catalog
        .model(req.model())
        .ok_or_else(|| GatewayError::ModelNotFound(req.model().to_string()))?;
    let allowed = plan.is_some_and(|p| p.models.contains(&model.name));
    if !allowed {
        let served = (model.name != req.model()).then(|| model.name.clone());
        return Err(GatewayError::ModelNotAllowed(
            req.model().to_string(),
            served,
        ));
    }
    let hold = reserve(key, model, state.catalog.period_now(), req.hold_needs())?;
    Ok((req, model.clone(), hold, raw))
}

/// How many body bytes `available` can pay for as prompt at `price` per 1M tokens (each byte
/// may be a token), less the template slack.
fn affordable_bytes(available: Usd, price: Usd) -> usize {
    if price.nanos() <= 0 {
        return usize::MAX;
    }
    let tokens = i128::from(available.nanos()) * 1_000_000 / i128::from(price.nanos());
    usize::try_from((tokens - 64).max(0)).unwrap_or(usize::MAX)
}

/// The body length the client declared, if it did.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A key refused by one of its rate limits (its requests, its token counts, its usage
/// look-ups): counted in `/metrics` and told to consoles, which count the same hits (they
/// left out all but the requests'; found by an independent check).
pub fn rate_limited(state: &AppState, key: &KeyState, rate: &crate::keys::RateCheck) {
    state.metrics.rate_limited();
    state.activity.emit(ActivityEvent::RateLimited {
        key_id: key.id.clone(),
        key_prefix: key.prefix(),
        limit: rate.limit,
        at_ms: crate::clock::now_ms(),
    });
}
