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
use axum::routing::{get, post};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::format_amount;

mod api;
mod orders;
mod render;
#[cfg(test)]
mod tests;
mod webhooks;

use render::{SimOrder, now};
use webhooks::{Transmission, issue_webhook};

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
        let app = router(shared.clone());
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

/// The PayPal routes the storefront calls, plus the buyer's approval from another process.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/oauth2/token", post(api::token))
        .route("/v2/checkout/orders", post(orders::create_order))
        .route("/v2/checkout/orders/{id}", get(orders::get_order))
        .route(
            "/v2/checkout/orders/{id}/capture",
            post(orders::capture_order),
        )
        .route(
            "/v1/notifications/verify-webhook-signature",
            post(webhooks::verify_webhook),
        )
        .route("/_sim/approve/{id}", post(orders::approve_route))
        .with_state(shared)
}
