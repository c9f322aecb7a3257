//! PayPal's settings, errors, the order and capture types, and amounts in PayPal's form.

use std::fmt;

use crate::money::Usd;

/// Nano-dollars in one cent: USD amounts at PayPal have exactly two decimals.
pub(crate) const NANOS_PER_CENT: i64 = 10_000_000;

/// Where and as whom to talk to PayPal (from `[paypal]`, with the env resolved to a base URL).
#[derive(Clone)]
pub struct PaypalSettings {
    /// `https://api-m.sandbox.paypal.com`, `https://api-m.paypal.com`, or a simulator's URL.
    pub base_url: String,
    /// REST app client id.
    pub client_id: String,
    /// REST app secret.
    pub client_secret: String,
    /// The id PayPal assigned to our webhook; verification fails without it.
    pub webhook_id: String,
}

impl fmt::Debug for PaypalSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret must never reach a log through a `{:?}`.
        f.debug_struct("PaypalSettings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("webhook_id", &self.webhook_id)
            .finish()
    }
}

/// Why a PayPal call failed.
#[derive(Debug, thiserror::Error)]
pub enum PaypalError {
    /// No answer: connection refused, timeout, TLS, or a body cut short. The call may or may not
    /// have taken effect; retrying with the same request id is safe.
    #[error("PayPal is unreachable: {0}")]
    Unreachable(String),
    /// PayPal refused the client id / secret, or kept refusing a fresh token.
    #[error("PayPal refused the API credentials")]
    Auth,
    /// PayPal answered with an error. `name` is the most specific code PayPal gave: the first
    /// `details[].issue` when present (`ORDER_NOT_APPROVED`, `ORDER_ALREADY_CAPTURED`,
    /// `DUPLICATE_INVOICE_ID`, …), else the top-level `name` (`RESOURCE_NOT_FOUND`, …).
    #[error("PayPal answered {status} {name}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The issue or error name.
        name: String,
        /// PayPal's human-readable explanation (with its `debug_id` when given).
        message: String,
    },
    /// A success answer that lacks what it must contain, or settings that cannot work.
    #[error("unexpected PayPal answer: {0}")]
    Malformed(String),
    /// An amount that is not a USD value with exactly two decimals.
    #[error("not a two-decimal USD amount: {0}")]
    Amount(String),
}

impl PaypalError {
    /// The PayPal issue/name of an [`PaypalError::Api`] error, e.g. `ORDER_NOT_APPROVED`.
    pub fn api_name(&self) -> Option<&str> {
        match self {
            PaypalError::Api { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// An order to create; the amount comes from the plan in config, never from the browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// Our order id; sent as `invoice_id`, `custom_id` and `reference_id`.
    pub order_id: String,
    /// The price, in whole cents.
    pub amount: Usd,
    /// Shown to the buyer at PayPal (cut to 127 characters).
    pub description: String,
}

/// PayPal's answer to a create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedOrder {
    /// PayPal's order id (what the JS SDK's `createOrder` must return).
    pub id: String,
    /// `CREATED` normally.
    pub status: String,
    /// Where the buyer approves (`approve` or `payer-action` link), when PayPal gave one.
    pub approve_url: Option<String>,
}

/// The outcome of a capture call (or of the look-up it converged to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureResult {
    /// The order's status, `COMPLETED` once captured. Not a reason to grant anything by itself:
    /// only a `COMPLETED` capture with the right amount and currency is.
    pub order_status: String,
    /// `purchase_units[0].payments.captures[0]`, when present.
    pub capture: Option<CaptureInfo>,
}

/// One capture, as PayPal reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureInfo {
    /// The capture id (what refund webhooks point back to).
    pub id: String,
    /// `COMPLETED`, `PENDING`, `DECLINED`, `REFUNDED`, `PARTIALLY_REFUNDED`, `FAILED`.
    pub status: String,
    /// The captured amount; `None` when PayPal's value is not a two-decimal amount, which the
    /// caller must treat as a mismatch rather than guess.
    pub amount: Option<Usd>,
    /// `USD` expected; anything else is a mismatch.
    pub currency: String,
    /// Our order id, echoed.
    pub invoice_id: Option<String>,
    /// Our order id, echoed.
    pub custom_id: Option<String>,
}

/// An order as `GET /v2/checkout/orders/{id}` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderInfo {
    /// PayPal's order id.
    pub id: String,
    /// `CREATED`, `APPROVED`, `COMPLETED`, `VOIDED`, …
    pub status: String,
    /// `purchase_units[0].invoice_id`: our order id.
    pub invoice_id: Option<String>,
    /// The first capture, once captured.
    pub capture: Option<CaptureInfo>,
}

/// USD amount as PayPal wants it: exactly two decimals (`"1.00"`). Sub-cent amounts and negative
/// amounts are errors, never rounded.
pub fn format_amount(u: Usd) -> Result<String, PaypalError> {
    let n = u.nanos();
    if n < 0 {
        return Err(PaypalError::Amount(format!("{u} is negative")));
    }
    if n % NANOS_PER_CENT != 0 {
        return Err(PaypalError::Amount(format!("{u} has a fraction of a cent")));
    }
    let cents = n / NANOS_PER_CENT;
    Ok(format!("{}.{:02}", cents / 100, cents % 100))
}

/// Parse a PayPal USD value: digits, a point, exactly two digits (`"10.00"`). Anything else —
/// sub-cent digits, signs, exponents, commas, spaces, bare integers — is an error, because the
/// caller compares it with a price and must not accept a value it had to interpret.
pub fn parse_amount(s: &str) -> Result<Usd, PaypalError> {
    let bad = || PaypalError::Amount(format!("{s:?}"));
    let (whole, cents) = s.split_once('.').ok_or_else(bad)?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(cents) || cents.len() != 2 {
        return Err(bad());
    }
    s.parse::<Usd>().map_err(|_| bad())
}
