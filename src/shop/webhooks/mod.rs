//! `POST /webhooks/paypal`: PayPal's notifications, verified with PayPal's
//! verify-webhook-signature API before anything changes, deduplicated on the event id.
//!
//! `PAYMENT.CAPTURE.COMPLETED` fulfils an order whose buyer never came back from PayPal (and
//! completes a pending one); `PAYMENT.CAPTURE.REFUNDED` / `REVERSED` revoke a purchase's key
//! (a top-up's refund, and that of a purchase whose key was topped up since, takes back what is
//! left of the order's credit instead, and leaves the key working) and mark the order; `PENDING` / `DENIED` record the state. An unverifiable event gets 400 and changes
//! nothing; when PayPal cannot be asked, 503 makes PayPal retry later.
//!
//! Every verification is a call to PayPal, so a delivery earns one only once it could be an
//! event we act on: within the per-IP limit ([`super::limits::WEBHOOKS_PER_MINUTE`]), at most
//! [`MAX_EVENT_BYTES`], a JSON object with a string `id`, a string `event_type` and an object
//! `resource`, of a type we handle. Another type PayPal knows is answered 200 unverified (it
//! changes nothing, and a refusal would only make PayPal deliver it again for days); anything
//! else is refused.
//!
//! Answers are for PayPal, not for people: a short plain-text word with the status that
//! matters (2xx done, anything else delivered again later), in [`WebhookError`].

mod refund;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::fulfil::{Fulfilment, fulfil};
use super::limits::limit_key;
use crate::paypal::{CaptureInfo, PaypalError, parse_amount};
use crate::state::{AppState, ClientIp};
use crate::store::orders::{self as db, OrderRecord};
use crate::store::{StoreError, Write};

/// Why a notification was not taken (PayPal only looks at the status: it delivers an event
/// again until it gets a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// 503: this server has no PayPal configuration.
    #[error("payments not configured")]
    NotConfigured,
    /// 400: PayPal says the signature is not its own.
    #[error("signature not verified")]
    Forged,
    /// 503: PayPal could not be asked about the signature.
    #[error("try again later")]
    CannotVerify,
    /// 400: the body is not JSON.
    #[error("not JSON")]
    NotJson,
    /// 400: JSON without a string `id`, a string `event_type` and an object `resource`.
    #[error("not a PayPal event")]
    NotAnEvent,
    /// 413: a body over [`MAX_EVENT_BYTES`].
    #[error("too large")]
    TooLarge,
    /// 400: an event type PayPal does not send.
    #[error("unknown event type")]
    UnknownType,
    /// 429: over the per-IP limit of deliveries.
    #[error("too many deliveries")]
    Limited,
    /// 400: a capture event without its capture.
    #[error("no capture in the event")]
    NoCapture,
    /// 503: PayPal took the money but fulfilment could not record it yet.
    #[error("retry later")]
    NotRecorded,
    /// 503: the order could not be read or marked.
    #[error("retry")]
    Unavailable,
    /// 500: a key could not be revoked, or the work stopped half-way.
    #[error("retry")]
    Failed,
}

impl WebhookError {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            WebhookError::Forged
            | WebhookError::NotJson
            | WebhookError::NotAnEvent
            | WebhookError::UnknownType
            | WebhookError::NoCapture => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Limited => StatusCode::TOO_MANY_REQUESTS,
            WebhookError::NotConfigured
            | WebhookError::CannotVerify
            | WebhookError::NotRecorded
            | WebhookError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// The largest body taken as a PayPal event. PayPal's capture and refund events are a few KiB;
/// a bigger body is refused before PayPal is asked about it.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The event types this shop acts on: verified with PayPal, then handled in [`handle`].
const HANDLED: [&str; 5] = [
    "PAYMENT.CAPTURE.COMPLETED",
    "PAYMENT.CAPTURE.PENDING",
    "PAYMENT.CAPTURE.DENIED",
    "PAYMENT.CAPTURE.REFUNDED",
    "PAYMENT.CAPTURE.REVERSED",
];

/// PayPal event types of checkouts and payments that a webhook subscribed to more than the
/// `PAYMENT.CAPTURE.*` events may deliver. Nothing changes for them, so they are answered 200
/// without a verification call.
const KNOWN_IGNORED: [&str; 17] = [
    "CHECKOUT.ORDER.APPROVED",
    "CHECKOUT.ORDER.COMPLETED",
    "CHECKOUT.ORDER.SAVED",
    "CHECKOUT.ORDER.VOIDED",
    "CHECKOUT.PAYMENT-APPROVAL.REVERSED",
    "PAYMENT.CAPTURE.DECLINED",
    "PAYMENT.AUTHORIZATION.CREATED",
    "PAYMENT.AUTHORIZATION.VOIDED",
    "PAYMENT.ORDER.CREATED",
    "PAYMENT.ORDER.CANCELLED",
    "PAYMENT.SALE.COMPLETED",
    "PAYMENT.SALE.DENIED",
    "PAYMENT.SALE.PENDING",
    "PAYMENT.SALE.REFUNDED",
    "PAYMENT.SALE.REVERSED",
    "CUSTOMER.DISPUTE.CREATED",
    "CUSTOMER.DISPUTE.RESOLVED",
];

/// A delivery that has the shape of a PayPal event (not yet verified).
struct Event {
    id: String,
    kind: String,
    resource: Value,
}

/// Read at most [`MAX_EVENT_BYTES`] of the body.
async fn read_body(body: Body) -> Result<Bytes, WebhookError> {
    axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            // A body that breaks off is not an event either.
            if too_large {
                WebhookError::TooLarge
            } else {
                WebhookError::NotAnEvent
            }
        })
}

/// The event a body holds, if it has an event's shape.
fn parse_event(raw: &[u8]) -> Result<Event, WebhookError> {
    let mut event = serde_json::from_slice::<Value>(raw).map_err(|_| WebhookError::NotJson)?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(kind)) = (text(&event, "id"), text(&event, "event_type")) else {
        return Err(WebhookError::NotAnEvent);
    };
    let resource = event
        .get_mut("resource")
        .filter(|r| r.is_object())
        .map(Value::take)
        .ok_or(WebhookError::NotAnEvent)?;
    Ok(Event { id, kind, resource })
}

/// The capture carried by a `PAYMENT.CAPTURE.*` event's `resource`.
fn capture_of(resource: &Value) -> Option<CaptureInfo> {
    let s = |path: &[&str]| {
        path.iter()
            .try_fold(resource, |v, k| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(CaptureInfo {
        id: s(&["id"])?,
        status: s(&["status"]).unwrap_or_default(),
        amount: s(&["amount", "value"]).and_then(|v| parse_amount(&v).ok()),
        currency: s(&["amount", "currency_code"]).unwrap_or_default(),
        invoice_id: s(&["invoice_id"]),
        custom_id: s(&["custom_id"]),
    })
}

/// The order a capture event is about, as PayPal binds it: the PayPal order the capture
/// belongs to (`supplementary_data.related_ids.order_id`), else a capture we recorded. Never
/// by the `custom_id` / `invoice_id` the capture carries: anyone can create a PayPal order on
/// the merchant's account with the storefront's public client id, write another order's id
/// there, and pay it (found by an independent check: a foreign $0.01 capture put a buyer's
/// order into review before they paid). A capture of a PayPal order we did not create is not
/// ours, whatever it says.
pub(super) async fn order_of_capture(
    state: &AppState,
    resource: &Value,
    capture_id: String,
) -> Option<OrderRecord> {
    let paypal_order = resource
        .pointer("/supplementary_data/related_ids/order_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    read_order(state, move |c| match &paypal_order {
        Some(id) => db::by_paypal_order(c, id),
        None => db::by_capture(c, &capture_id),
    })
    .await
}

/// The order a refund (or reversal) is about, as PayPal binds it: the one whose capture it
/// refunds (`links[rel=up]`). An order that names itself in the refund's `custom_id` /
/// `invoice_id` but has no capture recorded yet (its payment not recorded when the refund came)
/// is the refund's only if PayPal says that capture is its PayPal order's: anyone can pay a
/// PayPal order of their own making with another order's id in it and have it refunded (found
/// by an independent check: such a refund revoked a customer's key). `Err` when PayPal could
/// not be asked (the delivery is then retried).
pub(super) async fn order_of_refund(
    state: &AppState,
    resource: &Value,
    capture_id: Option<String>,
) -> Result<Option<OrderRecord>, WebhookError> {
    let Some(capture_id) = capture_id else {
        return Ok(None);
    };
    let claimed = resource
        .get("invoice_id")
        .or_else(|| resource.get("custom_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    // Both looked up in one snapshot: read apart, a payment recorded between the two reads
    // (its capture this very one) made the order look paid by another capture, and the refund
    // was dropped while the buyer kept the key (found by an independent check: 8 runs in 100
    // of a capture, its event and its refund's event racing).
    let recorded = capture_id.clone();
    let found = state
        .store
        .read(move |c| -> Result<_, StoreError> {
            let snapshot = c.unchecked_transaction()?;
            if let Some(o) = db::by_capture(&snapshot, &recorded)? {
                return Ok(Bound::Recorded(o));
            }
            Ok(match claimed {
                Some(id) => db::get(&snapshot, &id)?.map_or(Bound::Nothing, Bound::Claimed),
                None => Bound::Nothing,
            })
        })
        .await
        .map_err(|e| {
            // Not "not ours" (a refund answered 200 is never sent again): PayPal retries.
            tracing::error!(error = %e, "cannot read which order a refund is about; PayPal will retry");
            WebhookError::Unavailable
        })?;
    let order = match found {
        Bound::Recorded(o) => return Ok(Some(o)),
        Bound::Claimed(o) => o,
        Bound::Nothing => return Ok(None),
    };
    // One with a capture recorded was paid by that capture, not this one.
    let (Some(paypal_order), None) = (&order.paypal_order_id, &order.paypal_capture_id) else {
        return Ok(None);
    };
    let paypal = state.paypal.as_ref().ok_or(WebhookError::NotConfigured)?;
    match paypal.get_order(paypal_order).await {
        Ok(info) if info.capture.as_ref().is_some_and(|c| c.id == capture_id) => Ok(Some(order)),
        Ok(_) => Ok(None),
        // No such PayPal order (any more): it owns no capture. Retried, such a refund came
        // back for days, an error logged each time (found by an independent re-check).
        Err(PaypalError::Api { status: 404, .. }) => Ok(None),
        Err(e) => {
            tracing::error!(order_id = %order.order_id, error = %e, "cannot ask PayPal whose capture a refund is; PayPal will retry");
            Err(WebhookError::Unavailable)
        }
    }
}

/// The order a refund's capture is bound to, as one read finds it.
enum Bound {
    /// The order that recorded the capture: the refund's.
    Recorded(OrderRecord),
    /// The order the refund names itself, which did not record that capture (yet).
    Claimed(OrderRecord),
    /// Neither.
    Nothing,
}

/// One order, read; `None` when there is none (or it could not be read: logged).
async fn read_order(
    state: &AppState,
    query: impl FnOnce(&rusqlite::Connection) -> Result<Option<OrderRecord>, StoreError>
    + Send
    + 'static,
) -> Option<OrderRecord> {
    state.store.read(query).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "order query failed");
        None
    })
}

/// The handler: the checks that cost nothing, PayPal's verification, then the event.
pub async fn paypal(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    let paypal = state.paypal.as_ref().ok_or(WebhookError::NotConfigured)?;
    if state.shop_limits.webhook.check_key(&limit_key(ip)).is_err() {
        // Once a minute with a count, as every line a stranger can ask for: one line per
        // refused delivery let a single address write the log as fast as it could send (found
        // by a long run: 420 lines for 500 deliveries).
        static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
        if let Some(held) = SAID.due() {
            tracing::warn!(
                %ip,
                since_last_said = held,
                "PayPal webhook deliveries over the per-IP limit refused (said at most once a \
                 minute)"
            );
        }
        return Err(WebhookError::Limited);
    }
    let raw = read_body(body).await?;
    let Event { id, kind, resource } = parse_event(&raw)?;
    if !HANDLED.contains(&kind.as_str()) {
        if KNOWN_IGNORED.contains(&kind.as_str()) {
            tracing::debug!(kind, "PayPal event ignored");
            return Ok((StatusCode::OK, "ignored").into_response());
        }
        return Err(WebhookError::UnknownType);
    }
    match paypal.verify_webhook(&headers, &raw).await {
        Ok(true) => {}
        Ok(false) => {
            // Rationed like the line above: forged deliveries from many addresses (each within
            // its own limit) wrote a line apiece.
            static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
            if let Some(held) = SAID.due() {
                tracing::warn!(
                    since_last_said = held,
                    "PayPal webhook with an invalid signature refused (forged — or, if PayPal's \
                     own deliveries are refused, paypal.webhook_id is not the id of this site's \
                     webhook in the PayPal app: then refunds and pending payments are never \
                     seen; said at most once a minute)"
                );
            }
            return Err(WebhookError::Forged);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot verify a PayPal webhook now; PayPal will retry");
            return Err(WebhookError::CannotVerify);
        }
    }
    // Recorded now, the event would be forgotten at the next start, and PayPal, told it was
    // processed, would never send it again: it is asked to, later (see `lost_database`).
    if crate::shop::checkout::lost_database(&state) {
        return Err(WebhookError::NotRecorded);
    }
    let seen_id = id.clone();
    if state
        .store
        .read(move |c| db::webhook_seen(c, &seen_id))
        .await
        .unwrap_or(false)
    {
        return Ok((StatusCode::OK, "already processed").into_response());
    }
    // In a task of its own, so PayPal hanging up cannot interrupt a half-done change.
    let worker = {
        let state = state.clone();
        let kind = kind.clone();
        tokio::spawn(async move { handle(&state, &kind, &resource).await })
    };
    worker.await.map_err(|_| WebhookError::Failed)??;
    state.store.write_later(Write::WebhookSeen {
        event_id: id,
        event_type: kind,
        at_ms: Utc::now().timestamp_millis(),
    });
    Ok((StatusCode::OK, "ok").into_response())
}

async fn handle(state: &Arc<AppState>, kind: &str, resource: &Value) -> Result<(), WebhookError> {
    match kind {
        "PAYMENT.CAPTURE.COMPLETED" | "PAYMENT.CAPTURE.PENDING" | "PAYMENT.CAPTURE.DENIED" => {
            on_capture(state, kind, resource).await
        }
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.CAPTURE.REVERSED" => {
            refund::on_refund(state, kind, resource).await
        }
        _ => {
            tracing::debug!(kind, "PayPal event ignored");
            Ok(())
        }
    }
}

/// A capture changed at PayPal: fulfilment decides from it (a key, a pending or failed order).
async fn on_capture(
    state: &Arc<AppState>,
    kind: &str,
    resource: &Value,
) -> Result<(), WebhookError> {
    let capture = capture_of(resource).ok_or(WebhookError::NoCapture)?;
    let Some(order) = order_of_capture(state, resource, capture.id.clone()).await else {
        tracing::warn!(kind, capture_id = %capture.id, "webhook about an order we do not have (or a PayPal order we did not create)");
        return Ok(());
    };
    let result = fulfil(state, &order.order_id, &capture).await;
    tracing::info!(kind, order_id = %order.order_id, ?result, "webhook processed");
    if let Fulfilment::Failed(why) = result {
        // Not recorded as seen: PayPal delivers it again later.
        tracing::error!(order_id = %order.order_id, why, "paid order not recorded yet; PayPal will retry");
        return Err(WebhookError::NotRecorded);
    }
    Ok(())
}
