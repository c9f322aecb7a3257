//! Webhooks of the simulated PayPal: building and signing deliveries, and answering
//! `verify-webhook-signature` for them.
//!
//! A delivery verifies only when every header PayPal would check (algorithm, cert URL,
//! transmission id, signature, time), the webhook id and the event itself are exactly what was
//! issued, so the gateway's handling of forged or altered webhooks can be tested for real.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::money::Usd;

use super::api::{api_error, invalid, reply};
use super::render::{Refund, SimOrder, event, new_id, now, transmission_id};
use super::state::{Shared, SimState, Transmission, lock};

const AUTH_ALGO: &str = "SHA256withRSA";
/// The event types [`super::SimulatedPaypal::webhook`] can produce.
const KINDS: [&str; 6] = [
    "CHECKOUT.ORDER.APPROVED",
    "PAYMENT.CAPTURE.COMPLETED",
    "PAYMENT.CAPTURE.PENDING",
    "PAYMENT.CAPTURE.DENIED",
    "PAYMENT.CAPTURE.REFUNDED",
    "PAYMENT.CAPTURE.REVERSED",
];

/// `POST /v1/notifications/verify-webhook-signature`: `SUCCESS` only for an issued, untouched
/// delivery.
pub(super) async fn verify_webhook(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let mut st = lock(&s.state);
    st.counts.verify_calls += 1;
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return invalid(
            "MALFORMED_REQUEST_JSON",
            "The request JSON is not well formed.",
        );
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str);
    let names = [
        "auth_algo",
        "cert_url",
        "transmission_id",
        "transmission_sig",
        "transmission_time",
        "webhook_id",
    ];
    let event = req.get("webhook_event").filter(|e| e.is_object());
    if let Some(missing) = names
        .iter()
        .find(|k| field(k).is_none())
        .copied()
        .or(event.is_none().then_some("webhook_event"))
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid request - see details",
            Some((
                "MISSING_REQUIRED_PARAMETER",
                &format!("{missing} is required"),
            )),
        );
    }
    let ok = field("transmission_id")
        .and_then(|t| st.transmissions.get(t))
        .is_some_and(|t| {
            field("auth_algo") == Some(t.auth_algo.as_str())
                && field("cert_url") == Some(t.cert_url.as_str())
                && field("transmission_sig") == Some(t.sig.as_str())
                && field("transmission_time") == Some(t.time.as_str())
                && field("webhook_id") == Some(s.opts.webhook_id.as_str())
                && event == Some(&t.event)
        });
    let status = if ok { "SUCCESS" } else { "FAILURE" };
    reply(StatusCode::OK, json!({"verification_status": status}))
}

/// Build (or reuse) the event for `kind` on the order, apply its state change, and sign a new
/// transmission of it.
pub(super) fn issue_webhook(
    s: &Shared,
    st: &mut SimState,
    kind: &str,
    order_id: &str,
) -> Option<(Vec<(String, String)>, String)> {
    if !KINDS.contains(&kind) {
        return None;
    }
    let key = (kind.to_owned(), order_id.to_owned());
    let event = match st.events.get(&key) {
        Some(e) => e.clone(),
        None => {
            let order = st.orders.get_mut(order_id)?;
            let resource = webhook_resource(&s.base, order, kind)?;
            let event = event(&s.base, kind, resource, order);
            st.events.insert(key, event.clone());
            event
        }
    };
    Some(signed(s, st, event))
}

/// Refund `amount` of a completed capture (less than what is left of it: a partial refund) and
/// return its `PAYMENT.CAPTURE.REFUNDED` webhook; `None` when the order has no such capture or
/// `amount` is not less than what is left (the full refund is [`issue_webhook`]'s).
pub(super) fn issue_partial_refund(
    s: &Shared,
    st: &mut SimState,
    order_id: &str,
    amount: Usd,
) -> Option<(Vec<(String, String)>, String)> {
    let order = st.orders.get_mut(order_id)?;
    let capture = order.capture.as_mut()?;
    let rest = capture.amount.saturating_sub(capture.refunded());
    if !matches!(capture.status.as_str(), "COMPLETED" | "PARTIALLY_REFUNDED")
        || amount <= Usd::ZERO
        || amount >= rest
    {
        return None;
    }
    let time = now();
    let id = new_id(17);
    capture.refunds.push(Refund {
        id: id.clone(),
        create_time: time.clone(),
        amount,
    });
    capture.status = "PARTIALLY_REFUNDED".to_owned();
    capture.update_time = time;
    let resource = order.refund_json(&s.base)?;
    let kind = "PAYMENT.CAPTURE.REFUNDED";
    let event = event(&s.base, kind, resource, order);
    st.events
        .insert((kind.to_owned(), format!("{order_id}/{id}")), event.clone());
    Some(signed(s, st, event))
}

/// The event of `raw` delivered again under a new event id, as PayPal may resend a
/// notification (same resource, new `id`); `None` when `raw` is not an event.
pub(super) fn resend_as_new(
    s: &Shared,
    st: &mut SimState,
    raw: &str,
) -> Option<(Vec<(String, String)>, String)> {
    let mut event: Value = serde_json::from_str(raw).ok()?;
    event.get("id")?;
    event["id"] = Value::String(format!("WH-{}", super::render::new_id(17)));
    Some(signed(s, st, event))
}

/// A transmission of `event`: its headers (signed) and body.
fn signed(s: &Shared, st: &mut SimState, event: Value) -> (Vec<(String, String)>, String) {
    let raw = event.to_string();
    let transmission_id = transmission_id();
    let time = now();
    let cert_url = format!(
        "{}/v1/notifications/certs/CERT-360caa42-fca2a594-{}",
        s.base,
        hex::encode(&Sha256::digest(s.sign_key)[..4])
    );
    let body_digest = hex::encode(Sha256::digest(raw.as_bytes()));
    let sig = sign(
        s,
        &[&transmission_id, &time, &s.opts.webhook_id, &body_digest],
    );
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("PAYPAL-AUTH-ALGO".to_owned(), AUTH_ALGO.to_owned()),
        ("PAYPAL-AUTH-VERSION".to_owned(), "v2".to_owned()),
        ("PAYPAL-CERT-URL".to_owned(), cert_url.clone()),
        ("PAYPAL-TRANSMISSION-ID".to_owned(), transmission_id.clone()),
        ("PAYPAL-TRANSMISSION-SIG".to_owned(), sig.clone()),
        ("PAYPAL-TRANSMISSION-TIME".to_owned(), time.clone()),
    ];
    st.transmissions.insert(
        transmission_id,
        Transmission {
            auth_algo: AUTH_ALGO.to_owned(),
            cert_url,
            sig,
            time,
            event,
        },
    );
    (headers, raw)
}

/// The resource of a `kind` event, after applying the state change the event reports; `None`
/// when the order's state does not allow that event.
fn webhook_resource(base: &str, order: &mut SimOrder, kind: &str) -> Option<Value> {
    if kind == "CHECKOUT.ORDER.APPROVED" {
        return (order.status == "APPROVED").then(|| order.to_json(base));
    }
    let capture = order.capture.as_mut()?;
    match kind {
        "PAYMENT.CAPTURE.COMPLETED" if capture.status == "COMPLETED" => {}
        "PAYMENT.CAPTURE.PENDING" if capture.status == "PENDING" => {}
        "PAYMENT.CAPTURE.DENIED" if matches!(capture.status.as_str(), "PENDING" | "DECLINED") => {
            capture.status = "DECLINED".to_owned();
            capture.status_details = None;
            capture.update_time = now();
        }
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.CAPTURE.REVERSED"
            if matches!(
                capture.status.as_str(),
                "COMPLETED" | "PARTIALLY_REFUNDED" | "REFUNDED"
            ) =>
        {
            // Whatever earlier (partial) refunds left is refunded now.
            let rest = capture.amount.saturating_sub(capture.refunded());
            if capture.status != "REFUNDED" && rest > Usd::ZERO {
                let time = now();
                capture.refunds.push(Refund {
                    id: new_id(17),
                    create_time: time.clone(),
                    amount: rest,
                });
                capture.status = "REFUNDED".to_owned();
                capture.update_time = time;
            }
            return order.refund_json(base);
        }
        _ => return None,
    }
    Some(order.capture_resource(base))
}

/// A signature-shaped digest of a transmission, keyed per simulator run.
fn sign(s: &Shared, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(s.sign_key);
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"|");
    }
    BASE64.encode(h.finalize())
}
