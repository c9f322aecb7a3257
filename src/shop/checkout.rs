//! The checkout's JSON API and order fulfilment.
//!
//! `POST /api/orders` creates our order and PayPal's (the amount comes from the plan in config,
//! never from the browser); `POST /api/orders/{id}/capture` captures it server-side and, when
//! PayPal's capture is `COMPLETED` for exactly the order's amount in USD, fulfils it.
//! Fulfilment is exactly-once: transitions are serialised by one lock, the order is re-read
//! under it, and the database write that mints the key also flips the order to `paid` only
//! from an unpaid state — so double clicks, retried captures, webhooks and reloads converge on
//! one key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::web::{csrf_header, csrf_ok};
use crate::activity::ActivityEvent;
use crate::admin::{NewKey, is_email};
use crate::paypal::{CaptureInfo, NewOrder, PaypalError};
use crate::state::{AppState, ClientIp};
use crate::store::Write;
use crate::store::orders::{OrderRecord, OrderStatus};

/// Cookie proving this browser created the order, so the capture may show it the key at once.
fn order_cookie_name(order_id: &str) -> String {
    format!("mr_order_{order_id}")
}

/// A JSON error in the API's shape.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CreateBody {
    plan: String,
    email: String,
}

/// `POST /api/orders` `{plan, email}` → `{order_id, paypal_order_id}`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !csrf_ok(&headers, csrf_header(&headers)) {
        return error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "Reload the page and try again.",
        );
    }
    if state
        .shop_limits
        .create_order
        .check_key(&super::limit_key(ip))
        .is_err()
    {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Too many orders from your address. Wait a minute and try again.",
        );
    }
    let Ok(req) = serde_json::from_slice::<CreateBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Send a JSON body {\"plan\", \"email\"}.",
        );
    };
    let email = req.email.trim().to_string();
    if !is_email(&email) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_email",
            "Enter a valid email address.",
        );
    }
    let Some(plan) = state.config.plans.get(&req.plan).filter(|p| p.enabled) else {
        return error(StatusCode::NOT_FOUND, "plan_not_found", "No such plan.");
    };
    let Some(paypal) = state.paypal.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "Payments are not configured on this server yet.",
        );
    };
    let (Ok(order_suffix), Ok(browser_token)) = (
        crate::keys::token::random_base62(20),
        crate::keys::token::random_base62(32),
    ) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Please retry.",
        );
    };
    let order_id = format!("ord_{order_suffix}");
    let now = Utc::now();
    let record = OrderRecord {
        order_id: order_id.clone(),
        plan: req.plan.clone(),
        email: email.clone(),
        amount: plan.price_usd,
        currency: "USD".into(),
        status: OrderStatus::Created,
        paypal_order_id: None,
        paypal_capture_id: None,
        key_id: None,
        browser_token_hash: Some(Sha256::digest(browser_token.as_bytes()).into()),
        created_at: now,
        paid_at: None,
        refunded_at: None,
    };
    if let Err(e) = state
        .store
        .write(Write::InsertOrder(Box::new(record)))
        .await
    {
        tracing::error!(error = %e, "order not stored");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Please retry.",
        );
    }
    let new = NewOrder {
        order_id: order_id.clone(),
        amount: plan.price_usd,
        description: format!("{} plan", plan.name),
    };
    let created = match paypal
        .create_order(&new, &format!("create-{order_id}"))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(order_id, error = %e, "PayPal did not create the order");
            state.store.write_later(Write::OrderStatus {
                order_id,
                status: OrderStatus::Failed,
                at_ms: Utc::now().timestamp_millis(),
            });
            return error(
                StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                "PayPal is not answering right now. Please try again in a moment.",
            );
        }
    };
    if let Err(e) = state
        .store
        .write(Write::SetPaypalOrder {
            order_id: order_id.clone(),
            paypal_order_id: created.id.clone(),
        })
        .await
    {
        tracing::error!(error = %e, "PayPal order id not stored");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Please retry.",
        );
    }
    state.activity.emit(ActivityEvent::OrderCreated {
        order_id: order_id.clone(),
        plan: req.plan.clone(),
        amount_usd: plan.price_usd,
        email,
        at_ms: now.timestamp_millis(),
    });
    tracing::info!(order_id, plan = %req.plan, "order created");
    let mut c = Cookie::new(order_cookie_name(&order_id), browser_token);
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Strict);
    c.set_secure(state.config.server.public_url.starts_with("https://"));
    let jar = CookieJar::new().add(c);
    (
        jar,
        Json(json!({"order_id": order_id, "paypal_order_id": created.id})),
    )
        .into_response()
}

/// Does this browser hold the token of the browser that created the order?
fn created_here(headers: &HeaderMap, order: &OrderRecord) -> bool {
    let jar = CookieJar::from_headers(headers);
    match (
        jar.get(&order_cookie_name(&order.order_id)),
        &order.browser_token_hash,
    ) {
        (Some(c), Some(hash)) => {
            let got: [u8; 32] = Sha256::digest(c.value().as_bytes()).into();
            bool::from(got.ct_eq(hash))
        }
        _ => false,
    }
}

/// `POST /api/orders/{order_id}/capture` → `{status, order_id, api_key?}`.
pub async fn capture(
    State(state): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    if !csrf_ok(&headers, csrf_header(&headers)) {
        return error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "Reload the page and try again.",
        );
    }
    if state
        .shop_limits
        .capture
        .check_key(&super::limit_key(ip))
        .is_err()
    {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Too many attempts from your address. Wait a minute and try again.",
        );
    }
    let Some((order, _)) = crate::shop::orders::load_order(&state, &order_id).await else {
        return error(StatusCode::NOT_FOUND, "order_not_found", "No such order.");
    };
    let may_see_key = created_here(&headers, &order);
    // In a task of its own: a buyer whose connection drops mid-capture must not leave a
    // payment half-recorded (the handler future would simply stop at its next await).
    let worker = {
        let state = state.clone();
        let order = order.clone();
        tokio::spawn(async move {
            match (order.status, order.key_id.as_deref()) {
                (OrderStatus::Paid, Some(key_id)) => {
                    ensure_installed(&state, key_id).await;
                    Ok(None)
                }
                (OrderStatus::Paid | OrderStatus::Refunded, _) => Ok(None),
                _ => capture_at_paypal(&state, &order).await.map(Some),
            }
        })
    };
    let outcome = match worker.await {
        Ok(Ok(f)) => f,
        Ok(Err(resp)) => return resp,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Please retry.",
            );
        }
    };
    match &outcome {
        Some(Fulfilment::Failed(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment_not_recorded",
                "Your payment went through but could not be recorded yet. Reload this page in a \
                 minute; you will not be charged again.",
            );
        }
        Some(Fulfilment::Mismatch(_)) => {
            return Json(json!({
                "status": "review",
                "order_id": order.order_id,
                "message": "PayPal reported a payment that does not match this order, so it is \
                            held for review. Please contact us with your order id; do not pay again.",
                "api_key": null,
            }))
            .into_response();
        }
        _ => {}
    }
    // Answer from the database: whatever path got it there, this is the order's truth.
    let Some((order, sealed)) = crate::shop::orders::load_order(&state, &order_id).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Please retry.",
        );
    };
    let view = crate::shop::orders::order_view(&state, &order, sealed.as_deref());
    let message = match order.status {
        OrderStatus::Paid => "Payment received. Here is your API key.",
        OrderStatus::Pending => {
            "PayPal is still processing the payment. Your key will be issued when it completes; \
             check the order page with your order id and email."
        }
        OrderStatus::Failed => "The payment did not go through. Nothing was issued.",
        OrderStatus::Refunded => "This order was refunded; its key is revoked.",
        OrderStatus::Created => "The payment has not been approved yet.",
    };
    Json(json!({
        "status": order.status,
        "order_id": order.order_id,
        "message": message,
        "api_key": if may_see_key { view.api_key } else { None },
    }))
    .into_response()
}

/// Capture at PayPal (idempotent on our request id) and fulfil from the answer.
async fn capture_at_paypal(
    state: &Arc<AppState>,
    order: &OrderRecord,
) -> Result<Fulfilment, Response> {
    let (Some(paypal), Some(paypal_id)) = (state.paypal.as_ref(), order.paypal_order_id.as_deref())
    else {
        return Err(error(
            StatusCode::CONFLICT,
            "not_approved",
            "The payment has not been approved yet.",
        ));
    };
    let request_id = format!("capture-{}", order.order_id);
    match paypal.capture_order(paypal_id, &request_id).await {
        Ok(result) => match result.capture {
            Some(c) => Ok(fulfil(state, &order.order_id, &c).await),
            None => {
                tracing::warn!(order_id = %order.order_id, status = %result.order_status, "capture without a capture record");
                Err(error(
                    StatusCode::BAD_GATEWAY,
                    "payment_provider_error",
                    "PayPal gave an incomplete answer. Please retry.",
                ))
            }
        },
        Err(PaypalError::Api { name, .. }) if name == "ORDER_NOT_APPROVED" => Err(error(
            StatusCode::CONFLICT,
            "not_approved",
            "The payment has not been approved yet.",
        )),
        Err(e) => {
            tracing::error!(order_id = %order.order_id, error = %e, "PayPal capture failed");
            Err(error(
                StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                "PayPal is not answering right now. Please retry in a moment.",
            ))
        }
    }
}

/// What fulfilment decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// Paid; the order's key (new or existing).
    Paid(String),
    /// PayPal holds the money; a webhook will complete it.
    Pending,
    /// PayPal declined the payment: nothing granted, the buyer may try again.
    Declined(String),
    /// PayPal captured money that does not match the order (amount, currency, invoice):
    /// nothing granted, the operator must look at it.
    Mismatch(String),
    /// We could not record the payment (database, configuration): retry later.
    Failed(String),
    /// The order is unknown or refunded.
    NotApplicable,
}

/// Grant the order's key if `capture` is `COMPLETED` for exactly the order's amount, in USD,
/// for this order. Safe to call any number of times, concurrently, from capture and webhooks.
pub async fn fulfil(state: &Arc<AppState>, order_id: &str, capture: &CaptureInfo) -> Fulfilment {
    let _serial = state.fulfil_lock.lock().await;
    let Some((order, _)) = crate::shop::orders::load_order(state, order_id).await else {
        return Fulfilment::NotApplicable;
    };
    match order.status {
        OrderStatus::Paid => {
            let key_id = order.key_id.unwrap_or_default();
            ensure_installed(state, &key_id).await;
            return Fulfilment::Paid(key_id);
        }
        OrderStatus::Refunded => return Fulfilment::NotApplicable,
        _ => {}
    }
    let now_ms = Utc::now().timestamp_millis();
    let set_status = |status| Write::OrderStatus {
        order_id: order_id.to_string(),
        status,
        at_ms: now_ms,
    };
    match capture.status.as_str() {
        "COMPLETED" => {}
        "PENDING" => {
            if order.status != OrderStatus::Pending {
                let _ = state.store.write(set_status(OrderStatus::Pending)).await;
            }
            tracing::info!(
                order_id,
                "capture pending at PayPal; waiting for the webhook"
            );
            return Fulfilment::Pending;
        }
        other => {
            let _ = state.store.write(set_status(OrderStatus::Failed)).await;
            tracing::warn!(
                order_id,
                status = other,
                "capture not completed; nothing granted"
            );
            return Fulfilment::Declined(format!("capture {other}"));
        }
    }
    let mismatch = if capture.amount != Some(order.amount) {
        Some(format!(
            "amount {:?} instead of {}",
            capture.amount.map(|a| a.to_string()),
            order.amount
        ))
    } else if capture.currency != order.currency {
        Some(format!(
            "currency {} instead of {}",
            capture.currency, order.currency
        ))
    } else if capture
        .invoice_id
        .as_deref()
        .is_some_and(|i| i != order.order_id)
    {
        Some(format!(
            "invoice {:?} is another order's",
            capture.invoice_id
        ))
    } else {
        None
    };
    if let Some(why) = mismatch {
        let _ = state.store.write(set_status(OrderStatus::Failed)).await;
        tracing::error!(
            order_id,
            why,
            "PAYPAL CAPTURE DOES NOT MATCH THE ORDER: no key issued; check it in PayPal"
        );
        return Fulfilment::Mismatch(why);
    }
    let (record, _key) = match crate::admin::prepare_key(
        state,
        NewKey {
            plan: order.plan.clone(),
            email: Some(order.email.clone()),
            budget: None,
            note: None,
            order_id: Some(order.order_id.clone()),
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(order_id, error = %e, "cannot mint the key of a paid order");
            return Fulfilment::Failed(e.to_string());
        }
    };
    let write = Write::PayOrder {
        order_id: order.order_id.clone(),
        capture_id: capture.id.clone(),
        key: Box::new(record.clone()),
        at_ms: now_ms,
    };
    if let Err(e) = state.store.write(write).await {
        // The database refused to pay it twice (or failed): report what it holds.
        tracing::warn!(order_id, error = %e, "order not paid by this call");
        return match crate::shop::orders::load_order(state, order_id).await {
            Some((o, _)) if o.status == OrderStatus::Paid => {
                let key_id = o.key_id.unwrap_or_default();
                ensure_installed(state, &key_id).await;
                Fulfilment::Paid(key_id)
            }
            _ => Fulfilment::Failed(e.to_string()),
        };
    }
    let key = crate::admin::install_key(state, record);
    state.activity.emit(ActivityEvent::OrderPaid {
        order_id: order.order_id.clone(),
        plan: order.plan.clone(),
        amount_usd: order.amount,
        key_id: key.id.clone(),
        at_ms: now_ms,
    });
    tracing::info!(order_id, key_id = %key.id, "order paid; key issued");
    Fulfilment::Paid(key.id.clone())
}

/// Make sure a paid order's committed key is in the live table (its installation may have been
/// interrupted after the commit): load it from the database if it is missing.
async fn ensure_installed(state: &Arc<AppState>, key_id: &str) {
    if key_id.is_empty() || state.keys.by_id(key_id).is_some() {
        return;
    }
    let id = key_id.to_string();
    match state
        .store
        .read(move |c| crate::store::keys::load_one(c, &id))
        .await
    {
        Ok(Some(record)) => {
            tracing::warn!(
                key_id,
                "a paid order's key was missing from memory; installed it now"
            );
            crate::admin::install_key(state, record);
        }
        Ok(None) => tracing::error!(key_id, "a paid order's key is not in the database"),
        Err(e) => tracing::error!(key_id, error = %e, "cannot load a paid order's key"),
    }
}
