//! Orders v2 as the simulator answers it: create (idempotent per `PayPal-Request-Id`, one order
//! per invoice id), look-up, capture (steered by [`CaptureMode`], decided under one lock), and
//! the buyer's approval over HTTP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::api::{api_error, header_str, invalid, not_found, reply, unprocessable};
use super::render::{SimCapture, SimOrder, new_id, now};
use super::state::{CaptureMode, Shared, approve, lock};
use crate::money::Usd;
use crate::paypal::parse_amount;

/// `POST /v2/checkout/orders`.
pub(super) async fn create_order(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let request_id = header_str(&headers, "paypal-request-id");
    let mut st = lock(&s.state);
    st.counts.create_calls += 1;
    if let Some(order) = request_id
        .and_then(|r| st.create_requests.get(r))
        .and_then(|id| st.orders.get(id))
    {
        // PayPal keeps request ids for hours; a retry gets the original order, not a new one.
        return reply(StatusCode::CREATED, order.created_reply(&s.base));
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return invalid(
            "MALFORMED_REQUEST_JSON",
            "The request JSON is not well formed.",
        );
    };
    let order = match validate_create(&req) {
        Ok(o) => o,
        Err((issue, description)) => return invalid(issue, description),
    };
    if let Some(invoice) = &order.invoice_id
        && st.invoices.contains_key(invoice)
    {
        return unprocessable(
            "DUPLICATE_INVOICE_ID",
            "Duplicate Invoice ID detected. To avoid a potential duplicate transaction your account \
             setting requires that Invoice Id be unique for each transaction.",
        );
    }
    let created = order.created_reply(&s.base);
    if let Some(invoice) = &order.invoice_id {
        st.invoices.insert(invoice.clone(), order.id.clone());
    }
    if let Some(r) = request_id {
        st.create_requests.insert(r.to_owned(), order.id.clone());
    }
    st.counts.creates += 1;
    st.orders.insert(order.id.clone(), order);
    reply(StatusCode::CREATED, created)
}

/// `(issue, description)` of a 400 `INVALID_REQUEST`.
type Refusal = (&'static str, &'static str);

/// Check a create body the way PayPal does for what we send; the order it describes.
fn validate_create(req: &Value) -> Result<SimOrder, Refusal> {
    if req.get("intent").and_then(Value::as_str) != Some("CAPTURE") {
        return Err((
            "INVALID_PARAMETER_VALUE",
            "The value of intent must be CAPTURE in this simulator.",
        ));
    }
    let units = req
        .get("purchase_units")
        .and_then(Value::as_array)
        .filter(|u| u.len() == 1)
        .ok_or((
            "MISSING_REQUIRED_PARAMETER",
            "Exactly one purchase unit is required.",
        ))?;
    let unit = &units[0];
    let text = |k: &str| unit.get(k).and_then(Value::as_str).map(str::to_owned);
    let amount = unit.get("amount");
    let currency = amount
        .and_then(|a| a.get("currency_code"))
        .and_then(Value::as_str);
    if currency != Some("USD") {
        return Err((
            "CURRENCY_NOT_SUPPORTED",
            "This simulator only takes USD amounts.",
        ));
    }
    let value = amount.and_then(|a| a.get("value")).and_then(Value::as_str);
    let amount = match value.map(parse_amount) {
        Some(Ok(v)) if v > Usd::ZERO => v,
        Some(Ok(_)) => {
            return Err(("AMOUNT_MISMATCH", "The amount must be greater than zero."));
        }
        Some(Err(_)) => {
            return Err((
                "DECIMAL_PRECISION",
                "If the currency supports decimals, only two decimal place precision is supported.",
            ));
        }
        None => {
            return Err(("MISSING_REQUIRED_PARAMETER", "amount.value is required."));
        }
    };
    // Optional, as at PayPal (an order made in a browser with the JS SDK often has none); one
    // given must be 1 to 127 characters.
    let invoice_id = match text("invoice_id") {
        None => None,
        Some(i) if !i.is_empty() && i.chars().count() <= 127 => Some(i),
        Some(_) => {
            return Err((
                "INVALID_STRING_LENGTH",
                "invoice_id must be 1 to 127 characters.",
            ));
        }
    };
    let time = now();
    Ok(SimOrder {
        id: new_id(17),
        status: "CREATED".to_owned(),
        reference_id: text("reference_id").unwrap_or_else(|| "default".to_owned()),
        custom_id: text("custom_id"),
        invoice_id,
        description: text("description"),
        amount,
        approved: false,
        create_time: time.clone(),
        update_time: time,
        capture: None,
        declined_requests: Vec::new(),
    })
}

/// `GET /v2/checkout/orders/{id}`.
pub(super) async fn get_order(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let mut st = lock(&s.state);
    st.counts.order_reads += 1;
    match st.orders.get(&id) {
        Some(o) => reply(StatusCode::OK, o.to_json(&s.base)),
        None => not_found(&id),
    }
}

/// PayPal's answer to a capture whose funding source was refused.
fn declined() -> Response {
    unprocessable(
        "INSTRUMENT_DECLINED",
        "The instrument presented was either declined by the processor or bank, or it can't be \
         used for this payment.",
    )
}

/// A capture being worked on under its request id (see `SimState::capturing`); done when dropped.
struct Working<'a>(&'a Shared, String);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).capturing.remove(&self.1);
    }
}

/// `POST /v2/checkout/orders/{id}/capture`.
pub(super) async fn capture_order(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let request_id = header_str(&headers, "paypal-request-id");
    let delay = lock(&s.state).capture_delay;
    let _working = match request_id {
        Some(r) if !delay.is_zero() => {
            if !lock(&s.state).capturing.insert(r.to_owned()) {
                lock(&s.state).counts.captures += 1;
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERROR",
                    "An internal server error occurred.",
                    None,
                );
            }
            tokio::time::sleep(delay).await;
            Some(Working(&s, r.to_owned()))
        }
        _ => None,
    };
    // The whole decision happens under one lock: concurrent captures create exactly one capture.
    let mut st = lock(&s.state);
    st.counts.captures += 1;
    if !body.iter().all(u8::is_ascii_whitespace)
        && !serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object())
    {
        return invalid(
            "MALFORMED_REQUEST_JSON",
            "The request JSON is not well formed.",
        );
    }
    let mode = st.mode;
    let Some(order) = st.orders.get_mut(&id) else {
        return not_found(&id);
    };
    if let Some(c) = &order.capture {
        if request_id.is_some() && request_id == c.request_id.as_deref() {
            return reply(StatusCode::CREATED, c.reply.clone());
        }
        return unprocessable(
            "ORDER_ALREADY_CAPTURED",
            "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed.",
        );
    }
    if request_id.is_some_and(|r| order.declined_requests.iter().any(|d| d == r)) {
        return declined();
    }
    if order.status != "APPROVED" {
        return unprocessable(
            "ORDER_NOT_APPROVED",
            "Payer has not yet approved the Order for payment. Please redirect the payer to the \
             'rel':'approve' url returned as part of the HATEOAS links within the Create Order \
             call or provide a valid payment_source in the request.",
        );
    }
    let (status, amount, currency) = match mode {
        CaptureMode::Completed => ("COMPLETED", order.amount, "USD"),
        CaptureMode::Pending => ("PENDING", order.amount, "USD"),
        CaptureMode::Declined => ("DECLINED", order.amount, "USD"),
        CaptureMode::WrongAmount => (
            "COMPLETED",
            order.amount.saturating_add(Usd::from_dollars(1)),
            "USD",
        ),
        CaptureMode::WrongCurrency => ("COMPLETED", order.amount, "EUR"),
        CaptureMode::ShortAmount => (
            "COMPLETED",
            order.amount.saturating_sub(Usd::from_nanos(10_000_000)),
            "USD",
        ),
        CaptureMode::Expired => {
            return unprocessable(
                "ORDER_EXPIRED",
                "The order has expired and can no longer be captured.",
            );
        }
        CaptureMode::Unavailable => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "Service Unavailable.",
                None,
            );
        }
        CaptureMode::InstrumentDeclined => {
            // PayPal's funding failure: the buyer chooses another way to pay and approves again.
            order.status = "CREATED".to_owned();
            if let Some(r) = request_id {
                order.declined_requests.push(r.to_owned());
            }
            return declined();
        }
    };
    let time = now();
    order.status = "COMPLETED".to_owned();
    order.update_time = time.clone();
    order.capture = Some(SimCapture {
        id: new_id(17),
        status: status.to_owned(),
        status_details: (status == "PENDING").then(|| json!({"reason": "PENDING_REVIEW"})),
        amount,
        currency: currency.to_owned(),
        request_id: request_id.map(str::to_owned),
        reply: Value::Null,
        create_time: time.clone(),
        update_time: time,
        refunds: Vec::new(),
    });
    // The reply is rendered once and kept: a replay with the same request id gets it verbatim,
    // even after the capture's state moved on.
    let captured = order.capture_reply(&s.base);
    if let Some(c) = order.capture.as_mut() {
        c.reply = captured.clone();
    }
    if status == "COMPLETED" {
        st.counts.completed_captures += 1;
    }
    reply(StatusCode::CREATED, captured)
}

/// `POST /_sim/approve/{id}`: the buyer approves from another process.
pub(super) async fn approve_route(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    if !approve(&s, &id) {
        return not_found(&id);
    }
    let st = lock(&s.state);
    let status = st.orders.get(&id).map(|o| o.status.clone());
    reply(StatusCode::OK, json!({"id": id, "status": status}))
}
