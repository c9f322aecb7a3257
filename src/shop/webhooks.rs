//! `POST /webhooks/paypal`: PayPal's notifications, verified with PayPal's
//! verify-webhook-signature API before anything changes, deduplicated on the event id.
//!
//! `PAYMENT.CAPTURE.COMPLETED` fulfils an order whose buyer never came back from PayPal (and
//! completes a pending one); `PAYMENT.CAPTURE.REFUNDED` / `REVERSED` revoke the key and mark the
//! order; `PENDING` / `DENIED` record the state. An unverifiable event gets 400 and changes
//! nothing; when PayPal cannot be asked, 503 makes PayPal retry later.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::checkout::{Fulfilment, fulfil};
use crate::activity::ActivityEvent;
use crate::paypal::{CaptureInfo, parse_amount};
use crate::state::AppState;
use crate::store::Write;
use crate::store::orders::{self as db, OrderRecord, OrderStatus};

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

/// The capture id a refund or reversal refers to: its `up` link, else the resource itself.
fn refunded_capture_id(resource: &Value) -> Option<String> {
    let up = resource
        .get("links")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("rel").and_then(Value::as_str) == Some("up"))
        })
        .and_then(|l| l.get("href").and_then(Value::as_str))
        .and_then(|href| href.trim_end_matches('/').rsplit('/').next())
        .map(str::to_string);
    up.or_else(|| {
        resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// Find the order an event is about: by our invoice id, PayPal's order id, or the capture id.
async fn find_order(
    state: &AppState,
    resource: &Value,
    capture_id: Option<String>,
) -> Option<OrderRecord> {
    let invoice = resource
        .get("invoice_id")
        .or_else(|| resource.get("custom_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let paypal_order = resource
        .pointer("/supplementary_data/related_ids/order_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let found = state
        .store
        .read(move |c| {
            if let Some(id) = &invoice
                && let Some(o) = db::get(c, id)?
            {
                return Ok(Some(o));
            }
            if let Some(id) = &paypal_order
                && let Some(o) = db::by_paypal_order(c, id)?
            {
                return Ok(Some(o));
            }
            match &capture_id {
                Some(id) => db::by_capture(c, id),
                None => Ok(None),
            }
        })
        .await;
    found.unwrap_or_else(|e| {
        tracing::error!(error = %e, "order query failed");
        None
    })
}

/// The handler.
pub async fn paypal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(paypal) = state.paypal.as_ref() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "payments not configured").into_response();
    };
    match paypal.verify_webhook(&headers, &body).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("PayPal webhook with an invalid signature refused");
            return (StatusCode::BAD_REQUEST, "signature not verified").into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot verify a PayPal webhook now; PayPal will retry");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
        }
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let (Some(event_id), Some(kind)) = (
        event.get("id").and_then(Value::as_str).map(str::to_string),
        event
            .get("event_type")
            .and_then(Value::as_str)
            .map(str::to_string),
    ) else {
        return (StatusCode::BAD_REQUEST, "not a PayPal event").into_response();
    };
    let seen_id = event_id.clone();
    if state
        .store
        .read(move |c| db::webhook_seen(c, &seen_id))
        .await
        .unwrap_or(false)
    {
        return (StatusCode::OK, "already processed").into_response();
    }
    let resource = event.get("resource").cloned().unwrap_or(Value::Null);
    // In a task of its own, so PayPal hanging up cannot interrupt a half-done change.
    let worker = {
        let state = state.clone();
        let kind = kind.clone();
        tokio::spawn(async move { handle(&state, &kind, &resource).await })
    };
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(resp)) => return resp,
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "retry").into_response(),
    }
    state.store.write_later(Write::WebhookSeen {
        event_id,
        event_type: kind,
        at_ms: Utc::now().timestamp_millis(),
    });
    (StatusCode::OK, "ok").into_response()
}

async fn handle(state: &Arc<AppState>, kind: &str, resource: &Value) -> Result<(), Response> {
    let now_ms = Utc::now().timestamp_millis();
    match kind {
        "PAYMENT.CAPTURE.COMPLETED" | "PAYMENT.CAPTURE.PENDING" | "PAYMENT.CAPTURE.DENIED" => {
            let Some(capture) = capture_of(resource) else {
                return Err((StatusCode::BAD_REQUEST, "no capture in the event").into_response());
            };
            let Some(order) = find_order(state, resource, Some(capture.id.clone())).await else {
                tracing::warn!(kind, capture_id = %capture.id, "webhook about an order we do not have");
                return Ok(());
            };
            let result = fulfil(state, &order.order_id, &capture).await;
            tracing::info!(kind, order_id = %order.order_id, ?result, "webhook processed");
            if let Fulfilment::Failed(why) = result {
                // Not recorded as seen: PayPal delivers it again later.
                tracing::error!(order_id = %order.order_id, why, "paid order not recorded yet; PayPal will retry");
                return Err((StatusCode::SERVICE_UNAVAILABLE, "retry later").into_response());
            }
            Ok(())
        }
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.CAPTURE.REVERSED" => {
            let capture_id = refunded_capture_id(resource);
            let Some(found) = find_order(state, resource, capture_id).await else {
                tracing::warn!(kind, "refund of an order we do not have");
                return Ok(());
            };
            // Serialised with fulfilment, and re-read under the lock: a payment being recorded
            // right now is seen, and its key revoked.
            let _serial = state.fulfil_lock.lock().await;
            let Some((order, _)) = crate::shop::orders::load_order(state, &found.order_id).await
            else {
                return Err((StatusCode::SERVICE_UNAVAILABLE, "retry").into_response());
            };
            if order.status == OrderStatus::Refunded {
                return Ok(());
            }
            if let Some(key_id) = &order.key_id
                && let Err(e) = crate::admin::revoke_key(state, key_id).await
            {
                tracing::error!(order_id = %order.order_id, error = %e, "cannot revoke a refunded order's key");
                return Err((StatusCode::INTERNAL_SERVER_ERROR, "retry").into_response());
            }
            let write = Write::OrderStatus {
                order_id: order.order_id.clone(),
                status: OrderStatus::Refunded,
                at_ms: now_ms,
            };
            if let Err(e) = state.store.write(write).await {
                tracing::error!(order_id = %order.order_id, error = %e, "order not marked refunded; PayPal will retry");
                return Err((StatusCode::SERVICE_UNAVAILABLE, "retry").into_response());
            }
            state.activity.emit(ActivityEvent::OrderRefunded {
                order_id: order.order_id.clone(),
                key_id: order.key_id.clone(),
                at_ms: now_ms,
            });
            tracing::info!(kind, order_id = %order.order_id, "order refunded; key revoked");
            Ok(())
        }
        _ => {
            tracing::debug!(kind, "PayPal event ignored");
            Ok(())
        }
    }
}
