//! The simulator's shared state, its options, and the few operations on it that several
//! routes share.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::render::{SimOrder, now};

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
    /// Capture `COMPLETED` for a cent less than the order's amount: must not be granted.
    ShortAmount,
    /// The capture refused with 422 `INSTRUMENT_DECLINED` (the buyer's card or balance was
    /// refused): no capture, and the order needs the buyer's approval again (another method).
    InstrumentDeclined,
    /// The capture refused with 422 `ORDER_EXPIRED`: the order can no longer be paid (PayPal
    /// keeps an unpaid order for hours); nothing changed.
    Expired,
    /// The capture answered 503 `SERVICE_UNAVAILABLE` (PayPal overloaded), nothing changed:
    /// the same capture succeeds once the mode is set back.
    Unavailable,
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
    /// Authorized calls to `GET /v2/checkout/orders/{id}`, unknown orders included.
    pub order_reads: u64,
    /// Calls to `/v1/oauth2/token`.
    pub token_requests: u64,
    /// Calls to `verify-webhook-signature`.
    pub verify_calls: u64,
}

/// What was signed for one webhook delivery; verification compares against it.
pub(super) struct Transmission {
    pub(super) auth_algo: String,
    pub(super) cert_url: String,
    pub(super) sig: String,
    pub(super) time: String,
    pub(super) event: Value,
}

/// What every route shares.
pub(super) struct Shared {
    pub(super) opts: SimPaypalOptions,
    pub(super) base: String,
    /// Keys the fake transmission signatures, so they look like signatures and differ per run.
    pub(super) sign_key: [u8; 32],
    pub(super) state: Mutex<SimState>,
}

/// The simulator's state.
#[derive(Default)]
pub(super) struct SimState {
    pub(super) tokens: HashSet<String>,
    pub(super) orders: HashMap<String, SimOrder>,
    /// `PayPal-Request-Id` of a create → the order it created, so a replay answers the same.
    pub(super) create_requests: HashMap<String, String>,
    /// `invoice_id` → order id: PayPal refuses an invoice id twice.
    pub(super) invoices: HashMap<String, String>,
    pub(super) mode: CaptureMode,
    /// How long a capture takes before it is decided (0: at once).
    pub(super) capture_delay: std::time::Duration,
    /// Captures being worked on, by `PayPal-Request-Id`: PayPal processes the first of two
    /// simultaneous requests with the same id "and might fail the second" (its idempotency
    /// guide); this one fails it with a 500.
    pub(super) capturing: HashSet<String>,
    pub(super) counts: SimCounts,
    /// `(event type, order id)` → the event, so redelivery repeats the event id as PayPal does.
    pub(super) events: HashMap<(String, String), Value>,
    pub(super) transmissions: HashMap<String, Transmission>,
}

/// Lock, surviving a poisoned mutex.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the simulator down with it; the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The buyer approved order `id` (false when there is no such order).
pub(super) fn approve(shared: &Shared, id: &str) -> bool {
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
