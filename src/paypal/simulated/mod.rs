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

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod api;
mod orders;
mod render;
mod state;
#[cfg(test)]
mod tests;
mod webhooks;

use render::now;
pub use state::{CaptureMode, SimCounts, SimPaypalOptions};
use state::{Shared, SimState, approve, lock};
use webhooks::issue_webhook;

/// A running simulated PayPal; it stops when dropped or on [`SimulatedPaypal::shutdown`].
pub struct SimulatedPaypal {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
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

    /// Make each capture take `d` before it is decided; a second capture with the same
    /// `PayPal-Request-Id` arriving meanwhile fails with a 500, as PayPal may fail it.
    pub fn set_capture_delay(&self, d: std::time::Duration) {
        lock(&self.shared.state).capture_delay = d;
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

    /// Refund `amount` of an order's completed capture, less than what is left of it (a partial
    /// refund: the capture turns `PARTIALLY_REFUNDED`), and return that refund's
    /// `PAYMENT.CAPTURE.REFUNDED` webhook, whose resource carries the refund's `amount` and, in
    /// `seller_payable_breakdown.total_refunded_amount`, what the capture's refunds gave back in
    /// all. A later [`SimulatedPaypal::webhook`] of `PAYMENT.CAPTURE.REFUNDED` refunds the rest.
    pub fn refund_part(
        &self,
        paypal_order_id: &str,
        amount: crate::money::Usd,
    ) -> Option<(Vec<(String, String)>, String)> {
        let mut st = lock(&self.shared.state);
        webhooks::issue_partial_refund(&self.shared, &mut st, paypal_order_id, amount)
    }

    /// Deliver the event `raw` (a body this simulator issued) again under a new event id, as
    /// PayPal may resend a notification: same resource, new `id`, newly signed.
    pub fn resend_as_new(&self, raw: &str) -> Option<(Vec<(String, String)>, String)> {
        let mut st = lock(&self.shared.state);
        webhooks::resend_as_new(&self.shared, &mut st, raw)
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
