//! A simulated PayPal: a real HTTP server on loopback speaking the parts of PayPal's REST API the
//! storefront uses — OAuth2 client credentials, Orders v2 (create, get, capture) and
//! `verify-webhook-signature`.
//!
//! `modelrelay serve --demo` uses it so a purchase works offline, and the tests use it to steer
//! PayPal into the cases that matter for money: idempotent creates and captures
//! (`PayPal-Request-Id`), `DUPLICATE_INVOICE_ID`, `ORDER_NOT_APPROVED`, `ORDER_ALREADY_CAPTURED`,
//! captures that come back `PENDING`, `DECLINED`, with the wrong amount or the wrong currency
//! ([`CaptureMode`]), and signed webhooks that only verify when untouched.
//!
//! What stands in for the buyer: [`SimulatedPaypal::approve`] (or `POST /_sim/approve/{id}` from
//! another process) does what PayPal's popup does. Every capture happens under one lock, so
//! concurrent captures of one order create exactly one capture, as at PayPal.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{format_amount, parse_amount};
use crate::money::Usd;

mod render;
#[cfg(test)]
mod tests;
mod webhooks;

use render::{SimCapture, SimOrder, error_body, now};
use webhooks::{Transmission, issue_webhook, verify_webhook};

/// Credentials and webhook id of a [`SimulatedPaypal`].
#[derive(Clone, Debug)]
pub struct SimPaypalOptions {
    /// Accepted client id (Basic auth user on `/v1/oauth2/token`).
    pub client_id: String,
    /// Accepted secret.
    pub client_secret: String,
    /// The webhook id that `verify-webhook-signature` requires.
    pub webhook_id: String,
}

impl Default for SimPaypalOptions {
    fn default() -> Self {
        SimPaypalOptions {
            client_id: "sim-client-id".to_owned(),
            client_secret: "sim-secret".to_owned(),
            webhook_id: "WH-SIM".to_owned(),
        }
    }
}

/// How the next captures turn out (until changed); the default is [`CaptureMode::Completed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureMode {
    /// Capture `COMPLETED` for the order's amount: the normal case.
    #[default]
    Completed,
    /// Capture `PENDING` (`status_details.reason = PENDING_REVIEW`), order `COMPLETED`; finish it
    /// with [`SimulatedPaypal::complete_pending`].
    Pending,
    /// Capture `DECLINED`, order `COMPLETED`.
    Declined,
    /// Capture `COMPLETED` for the order's amount plus 1.00: must not be granted.
    WrongAmount,
    /// Capture `COMPLETED` in `EUR`: must not be granted.
    WrongCurrency,
}

/// What the simulator has been asked, for assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimCounts {
    /// Orders actually created (an idempotent replay creates none).
    pub creates: u64,
    /// Calls to `POST /v2/checkout/orders`, replays and refusals included.
    pub create_calls: u64,
    /// Calls to the capture endpoint, replays and refusals included.
    pub captures: u64,
    /// Captures that reached `COMPLETED` (at capture time or through `complete_pending`).
    pub completed_captures: u64,
    /// Calls to `/v1/oauth2/token`.
    pub token_requests: u64,
    /// Calls to `verify-webhook-signature`.
    pub verify_calls: u64,
}

/// A running simulated PayPal; it stops when dropped or on [`SimulatedPaypal::shutdown`].
pub struct SimulatedPaypal {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

struct Shared {
    opts: SimPaypalOptions,
    base: String,
    /// Keys the fake transmission signatures, so they look like signatures and differ per run.
    sign_key: [u8; 32],
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    tokens: HashSet<String>,
    orders: HashMap<String, SimOrder>,
    /// `PayPal-Request-Id` of a create → the order it created, so a replay answers the same.
    create_requests: HashMap<String, String>,
    /// `invoice_id` → order id: PayPal refuses an invoice id twice.
    invoices: HashMap<String, String>,
    mode: CaptureMode,
    counts: SimCounts,
    /// `(event type, order id)` → the event, so redelivery repeats the event id as PayPal does.
    events: HashMap<(String, String), Value>,
    transmissions: HashMap<String, Transmission>,
}

const TOKEN_LIFETIME_SECS: u64 = 32_400;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the simulator down with it; the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimulatedPaypal {
    /// Bind 127.0.0.1:0 and serve in a spawned task until dropped or `shutdown()`.
    pub async fn start(opts: SimPaypalOptions) -> io::Result<SimulatedPaypal> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            opts,
            base: format!("http://{addr}"),
            sign_key: rand::rng().random(),
            state: Mutex::new(SimState::default()),
        });
        let app = Router::new()
            .route("/v1/oauth2/token", post(token))
            .route("/v2/checkout/orders", post(create_order))
            .route("/v2/checkout/orders/{id}", get(get_order))
            .route("/v2/checkout/orders/{id}/capture", post(capture_order))
            .route(
                "/v1/notifications/verify-webhook-signature",
                post(verify_webhook),
            )
            .route("/_sim/approve/{id}", post(approve_route))
            .with_state(shared.clone());
        let mut signal = stop_rx;
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stopped| *stopped).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulated PayPal server ended with an error");
            }
        });
        Ok(SimulatedPaypal { addr, shared, stop })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the `paypal.api_base` that points a gateway here.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// Stop serving (also done on drop).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// The buyer approved the order (what PayPal's popup does). False if the order is unknown;
    /// true and no change for an order already approved or captured.
    pub fn approve(&self, paypal_order_id: &str) -> bool {
        approve(&self.shared, paypal_order_id)
    }

    /// Steer the next captures (until changed).
    pub fn set_capture_mode(&self, m: CaptureMode) {
        lock(&self.shared.state).mode = m;
    }

    /// Make every issued access token invalid, as when PayPal revokes tokens early: the next
    /// API call gets 401 and a client must fetch a new token.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.state).tokens.clear();
    }

    /// The order as `GET /v2/checkout/orders/{id}` would return it.
    pub fn order(&self, paypal_order_id: &str) -> Option<Value> {
        let st = lock(&self.shared.state);
        st.orders
            .get(paypal_order_id)
            .map(|o| o.to_json(&self.shared.base))
    }

    /// Counters of what the simulator was asked.
    pub fn counts(&self) -> SimCounts {
        lock(&self.shared.state).counts
    }

    /// A webhook delivery as PayPal would make it, signed so that `verify-webhook-signature`
    /// answers `SUCCESS`: `(headers, raw JSON body)`. `None` for an unknown order, an unknown
    /// kind, or a kind that does not fit the order's state.
    ///
    /// Kinds: `PAYMENT.CAPTURE.COMPLETED` / `.PENDING` (resource = the capture, with
    /// `supplementary_data.related_ids.order_id`; the capture must be in that state),
    /// `.DENIED` (turns a pending capture `DECLINED`), `.REFUNDED` / `.REVERSED` (refunds a
    /// completed capture; resource = the refund, whose `links` has `rel: "up"` → the capture),
    /// `CHECKOUT.ORDER.APPROVED` (resource = the order). Asking again for the same kind and
    /// order redelivers the same event (same event `id`) in a new transmission.
    pub fn webhook(
        &self,
        kind: &str,
        paypal_order_id: &str,
    ) -> Option<(Vec<(String, String)>, String)> {
        let mut st = lock(&self.shared.state);
        issue_webhook(&self.shared, &mut st, kind, paypal_order_id)
    }

    /// Complete a `PENDING` capture (as PayPal does after review) and return its
    /// `PAYMENT.CAPTURE.COMPLETED` webhook; `None` if the order has no pending capture.
    pub fn complete_pending(
        &self,
        paypal_order_id: &str,
    ) -> Option<(Vec<(String, String)>, String)> {
        let mut st = lock(&self.shared.state);
        let capture = st.orders.get_mut(paypal_order_id)?.capture.as_mut()?;
        if capture.status != "PENDING" {
            return None;
        }
        capture.status = "COMPLETED".to_owned();
        capture.status_details = None;
        capture.update_time = now();
        st.counts.completed_captures += 1;
        issue_webhook(
            &self.shared,
            &mut st,
            "PAYMENT.CAPTURE.COMPLETED",
            paypal_order_id,
        )
    }
}

impl Drop for SimulatedPaypal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn approve(shared: &Shared, id: &str) -> bool {
    let mut st = lock(&shared.state);
    let Some(order) = st.orders.get_mut(id) else {
        return false;
    };
    if order.status == "CREATED" {
        order.status = "APPROVED".to_owned();
        order.approved = true;
        order.update_time = now();
    }
    true
}

/// `len` random uppercase alphanumerics: the shape of PayPal's order, capture and refund ids.
fn new_id(len: usize) -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn api_error(
    status: StatusCode,
    name: &str,
    message: &str,
    issue: Option<(&str, &str)>,
) -> Response {
    reply(status, error_body(name, message, issue))
}

fn not_found(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "The specified resource does not exist.",
        Some((
            "INVALID_RESOURCE_ID",
            &format!("Specified resource ID {id} does not exist. Please check the resource ID."),
        )),
    )
}

fn unprocessable(issue: &str, description: &str) -> Response {
    api_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business \
         validation.",
        Some((issue, description)),
    )
}

fn invalid(issue: &str, description: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        Some((issue, description)),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Shared {
    /// `None` when the request carries a token this simulator issued; else PayPal's 401.
    fn refuse_unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let token = header_str(headers, header::AUTHORIZATION.as_str())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let known = token.is_some_and(|t| lock(&self.state).tokens.contains(t));
        if known {
            return None;
        }
        let body = match token {
            None => {
                json!({"error": "invalid_token", "error_description": "No permission for the requested operation"})
            }
            Some(_) => {
                json!({"error": "invalid_token", "error_description": "Access Token not found in cache"})
            }
        };
        Some(reply(StatusCode::UNAUTHORIZED, body))
    }
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut st = lock(&s.state);
    st.counts.token_requests += 1;
    let credentials = header_str(&headers, header::AUTHORIZATION.as_str())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| BASE64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{}:{}", s.opts.client_id, s.opts.client_secret);
    if credentials.as_deref() != Some(expected.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
        );
    }
    let form = String::from_utf8_lossy(&body);
    if !form
        .split('&')
        .any(|p| p == "grant_type=client_credentials")
    {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}),
        );
    }
    let access_token = format!("A21AA{}", new_id(40));
    st.tokens.insert(access_token.clone());
    reply(
        StatusCode::OK,
        json!({
            "scope": "https://uri.paypal.com/services/payments/payment \
                https://uri.paypal.com/services/payments/refund",
            "access_token": access_token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": TOKEN_LIFETIME_SECS,
            "nonce": format!("{}{}", now(), new_id(20)),
        }),
    )
}

async fn create_order(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
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
    if st.invoices.contains_key(&order.invoice_id) {
        return unprocessable(
            "DUPLICATE_INVOICE_ID",
            "Duplicate Invoice ID detected. To avoid a potential duplicate transaction your account \
             setting requires that Invoice Id be unique for each transaction.",
        );
    }
    let created = order.created_reply(&s.base);
    st.invoices
        .insert(order.invoice_id.clone(), order.id.clone());
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
    let invoice_id = text("invoice_id")
        .filter(|i| !i.is_empty() && i.chars().count() <= 127)
        .ok_or((
            "MISSING_REQUIRED_PARAMETER",
            "invoice_id (1 to 127 characters) is required.",
        ))?;
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
    })
}

async fn get_order(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let st = lock(&s.state);
    match st.orders.get(&id) {
        Some(o) => reply(StatusCode::OK, o.to_json(&s.base)),
        None => not_found(&id),
    }
}

async fn capture_order(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = s.refuse_unauthorized(&headers) {
        return refused;
    }
    let request_id = header_str(&headers, "paypal-request-id");
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
        refund: None,
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

async fn approve_route(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !approve(&s, &id) {
        return not_found(&id);
    }
    let st = lock(&s.state);
    let status = st.orders.get(&id).map(|o| o.status.clone());
    reply(StatusCode::OK, json!({"id": id, "status": status}))
}
