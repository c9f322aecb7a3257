//! PayPal REST client: Orders v2 (create, capture, look up) and webhook verification by postback.
//!
//! Written against the REST API with reqwest because no PayPal crate is maintained well enough to
//! trust with money. What the storefront relies on:
//! - one OAuth2 client-credentials token, cached until shortly before it expires and refreshed
//!   once when PayPal answers 401 (tokens can be revoked before their stated expiry);
//! - `PayPal-Request-Id` on create and capture, so a retried call returns the original result
//!   instead of creating a second order or capture;
//! - a capture that PayPal says was already made is looked up and returned, so every retry of a
//!   capture converges on the one capture that exists;
//! - amounts cross the wire as exact two-decimal strings (`"1.00"`), never through floats;
//! - webhooks are verified by PayPal itself (`verify-webhook-signature`), posting the raw body
//!   verbatim so re-serialisation can never change what PayPal checks.
//!
//! [`simulated`] is a loopback PayPal speaking the same API, for `serve --demo` and the tests.

use std::fmt;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::money::Usd;

pub mod simulated;

/// Nano-dollars in one cent: USD amounts at PayPal have exactly two decimals.
const NANOS_PER_CENT: i64 = 10_000_000;
/// Refresh a token this long before PayPal says it expires, so no request races the expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// How long to keep a token whose answer did not say (`expires_in` is always sent in practice).
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// PayPal's limit on `description`; longer text is refused, so it is cut instead.
const MAX_DESCRIPTION_CHARS: usize = 127;

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

/// A PayPal REST client; cheap to share behind an `Arc`.
pub struct PayPal {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    webhook_id: String,
    // A tokio mutex held across the token request, so concurrent callers wait for one request
    // instead of each fetching a token.
    token: Mutex<Option<Token>>,
}

impl fmt::Debug for PayPal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayPal")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// The body of `verify-webhook-signature`; the event is spliced in byte for byte.
#[derive(Serialize)]
struct VerifyRequest<'a> {
    auth_algo: &'a str,
    cert_url: &'a str,
    transmission_id: &'a str,
    transmission_sig: &'a str,
    transmission_time: &'a str,
    webhook_id: &'a str,
    webhook_event: &'a RawValue,
}

impl PayPal {
    /// A client for `s.base_url`; makes no request yet.
    pub fn new(s: PaypalSettings) -> Result<PayPal, PaypalError> {
        let base = s.base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(PaypalError::Malformed(format!(
                "PayPal base URL {base:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("modelrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PaypalError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(PayPal {
            http,
            base,
            client_id: s.client_id,
            client_secret: s.client_secret,
            webhook_id: s.webhook_id,
            token: Mutex::new(None),
        })
    }

    /// The base URL in use, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /v2/checkout/orders` with `PayPal-Request-Id = request_id` (idempotent: the same id
    /// returns the same order).
    pub async fn create_order(
        &self,
        o: &NewOrder,
        request_id: &str,
    ) -> Result<CreatedOrder, PaypalError> {
        if o.amount <= Usd::ZERO {
            return Err(PaypalError::Amount(format!("{} is not positive", o.amount)));
        }
        let value = format_amount(o.amount)?;
        let description: String = o.description.chars().take(MAX_DESCRIPTION_CHARS).collect();
        let body = serde_json::json!({
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": o.order_id,
                "custom_id": o.order_id,
                "invoice_id": o.order_id,
                "description": description,
                "amount": {"currency_code": "USD", "value": value},
            }],
            // A key is a digital good: asking the buyer for a shipping address only loses sales.
            "application_context": {"shipping_preference": "NO_SHIPPING"},
        });
        let v = self
            .send(
                Method::POST,
                "/v2/checkout/orders",
                Some(body.to_string()),
                Some(request_id),
            )
            .await?;
        let id = str_at(&v, &["id"])
            .ok_or_else(|| PaypalError::Malformed("created order has no id".into()))?;
        let approve_url = v
            .get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| {
                matches!(
                    str_at(l, &["rel"]).as_deref(),
                    Some("approve" | "payer-action")
                )
            })
            .and_then(|l| str_at(l, &["href"]));
        Ok(CreatedOrder {
            id,
            status: str_at(&v, &["status"]).unwrap_or_default(),
            approve_url,
        })
    }

    /// `POST /v2/checkout/orders/{id}/capture` with `{}` and `PayPal-Request-Id`. When PayPal
    /// answers 422 `ORDER_ALREADY_CAPTURED` (an earlier call with another request id won), the
    /// order is fetched and its existing capture returned, so retries converge.
    pub async fn capture_order(
        &self,
        paypal_order_id: &str,
        request_id: &str,
    ) -> Result<CaptureResult, PaypalError> {
        let path = format!(
            "/v2/checkout/orders/{}/capture",
            checked_id(paypal_order_id)?
        );
        match self
            .send(Method::POST, &path, Some("{}".to_owned()), Some(request_id))
            .await
        {
            Ok(v) => Ok(CaptureResult {
                order_status: str_at(&v, &["status"]).unwrap_or_default(),
                capture: capture_of(&v),
            }),
            Err(PaypalError::Api {
                status: 422, name, ..
            }) if name == "ORDER_ALREADY_CAPTURED" => {
                let order = self.get_order(paypal_order_id).await?;
                Ok(CaptureResult {
                    order_status: order.status,
                    capture: order.capture,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/checkout/orders/{id}`.
    pub async fn get_order(&self, paypal_order_id: &str) -> Result<OrderInfo, PaypalError> {
        let path = format!("/v2/checkout/orders/{}", checked_id(paypal_order_id)?);
        let v = self.send(Method::GET, &path, None, None).await?;
        Ok(OrderInfo {
            id: str_at(&v, &["id"])
                .ok_or_else(|| PaypalError::Malformed("order has no id".into()))?,
            status: str_at(&v, &["status"]).unwrap_or_default(),
            invoice_id: first_unit(&v).and_then(|u| str_at(u, &["invoice_id"])),
            capture: capture_of(&v),
        })
    }

    /// Ask PayPal whether a webhook delivery is genuine (`POST
    /// /v1/notifications/verify-webhook-signature`). `Ok(true)` only for `SUCCESS`.
    ///
    /// `Ok(false)` without calling PayPal when a `PAYPAL-*` header is missing, the body is not a
    /// JSON object, or no webhook id is configured; also `Ok(false)` when PayPal rejects the
    /// verification request itself as invalid (a forgery can cause that). `Err` means PayPal
    /// could not be asked: answer non-2xx so PayPal delivers again later.
    pub async fn verify_webhook(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
    ) -> Result<bool, PaypalError> {
        // HeaderMap lookups are case-insensitive, whatever capitalisation PayPal sent.
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let (Some(auth_algo), Some(cert_url), Some(transmission_id), Some(sig), Some(time)) = (
            header("paypal-auth-algo"),
            header("paypal-cert-url"),
            header("paypal-transmission-id"),
            header("paypal-transmission-sig"),
            header("paypal-transmission-time"),
        ) else {
            return Ok(false);
        };
        if self.webhook_id.is_empty() {
            tracing::warn!(
                "a PayPal webhook arrived but paypal.webhook_id is not set; refusing it"
            );
            return Ok(false);
        }
        let Ok(text) = std::str::from_utf8(raw_body) else {
            return Ok(false);
        };
        // The raw text goes to PayPal unchanged: parsing and re-serialising could reorder keys
        // or rewrite numbers, and PayPal checks the signature against what it sent.
        let event = match serde_json::from_str::<&RawValue>(text) {
            Ok(e) if e.get().starts_with('{') => e,
            _ => return Ok(false),
        };
        let body = serde_json::to_string(&VerifyRequest {
            auth_algo,
            cert_url,
            transmission_id,
            transmission_sig: sig,
            transmission_time: time,
            webhook_id: &self.webhook_id,
            webhook_event: event,
        })
        .map_err(|e| PaypalError::Malformed(format!("verification request: {e}")))?;
        let answer = self
            .send(
                Method::POST,
                "/v1/notifications/verify-webhook-signature",
                Some(body),
                None,
            )
            .await;
        match answer {
            Ok(v) => Ok(str_at(&v, &["verification_status"]).as_deref() == Some("SUCCESS")),
            Err(PaypalError::Api {
                status,
                name,
                message,
            }) if (400..500).contains(&status) && status != 429 => {
                tracing::warn!(status, %name, %message, "PayPal refused to verify a webhook");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// A valid access token: the cached one, or a fresh one when none is cached, it is due for
    /// refresh, or it is `stale` (PayPal just refused it).
    async fn token(&self, stale: Option<&str>) -> Result<String, PaypalError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            // Another caller may have replaced a refused token already; reuse that one.
            if stale != Some(t.value.as_str()) && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        *slot = None;
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, PaypalError> {
        let asked = Instant::now();
        let resp = self
            .http
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if matches!(status.as_u16(), 400 | 401 | 403) {
            tracing::error!(
                status = status.as_u16(),
                body = %String::from_utf8_lossy(&bytes),
                "PayPal refused the client credentials"
            );
            return Err(PaypalError::Auth);
        }
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PaypalError::Malformed(format!("token answer is not JSON: {e}")))?;
        let value = str_at(&v, &["access_token"])
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PaypalError::Malformed("token answer has no access_token".into()))?;
        let lifetime = v
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(TOKEN_DEFAULT_LIFETIME, Duration::from_secs);
        // Counted from when we asked, and refreshed early: a token must not expire in flight.
        let keep = lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2));
        Ok(Token {
            value,
            refresh_at: asked + keep,
        })
    }

    /// One authenticated API call; a 401 drops the token and retries once with a fresh one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        request_id: Option<&str>,
    ) -> Result<Value, PaypalError> {
        let url = format!("{}{}", self.base, path);
        let mut token = self.token(None).await?;
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .header(ACCEPT, "application/json")
                // The full order in capture/get answers, wherever PayPal's default differs.
                .header("Prefer", "return=representation");
            if let Some(id) = request_id {
                req = req.header("PayPal-Request-Id", id);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let resp = req.send().await.map_err(unreachable)?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(unreachable)?;
            if status == 401 {
                if attempt == 0 {
                    token = self.token(Some(&token)).await?;
                    continue;
                }
                return Err(PaypalError::Auth);
            }
            if !(200..300).contains(&status) {
                return Err(api_error(status, &bytes));
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                PaypalError::Malformed(format!("{method} {path} answered non-JSON: {e}"))
            });
        }
        Err(PaypalError::Auth)
    }
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

fn unreachable(e: reqwest::Error) -> PaypalError {
    PaypalError::Unreachable(e.to_string())
}

/// PayPal ids are short alphanumerics; refusing anything else keeps ids from reshaping the path.
fn checked_id(id: &str) -> Result<&str, PaypalError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(PaypalError::Malformed(format!(
            "{id:?} is not a PayPal order id"
        )))
    }
}

/// Turn a PayPal error body into [`PaypalError::Api`], preferring `details[0].issue` over `name`
/// (a 422 is always `UNPROCESSABLE_ENTITY`; the issue says what went wrong).
fn api_error(status: u16, body: &[u8]) -> PaypalError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let detail = v.get("details").and_then(|d| d.get(0));
    let name = detail
        .and_then(|d| str_at(d, &["issue"]))
        .or_else(|| str_at(&v, &["name"]))
        // The OAuth endpoints answer `{"error","error_description"}` instead.
        .or_else(|| str_at(&v, &["error"]))
        .unwrap_or_else(|| format!("HTTP_{status}"));
    let mut message = detail
        .and_then(|d| str_at(d, &["description"]))
        .or_else(|| str_at(&v, &["message"]))
        .or_else(|| str_at(&v, &["error_description"]))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    // PayPal support asks for the debug_id; keep it with the message that gets logged.
    if let Some(debug_id) = str_at(&v, &["debug_id"]) {
        message = format!("{message} (debug_id {debug_id})");
    }
    PaypalError::Api {
        status,
        name,
        message,
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn first_unit(order: &Value) -> Option<&Value> {
    order.get("purchase_units").and_then(|u| u.get(0))
}

/// `purchase_units[0].payments.captures[0]` of an order or capture answer.
fn capture_of(order: &Value) -> Option<CaptureInfo> {
    let c = first_unit(order)?
        .get("payments")?
        .get("captures")?
        .get(0)?;
    Some(CaptureInfo {
        id: str_at(c, &["id"])?,
        status: str_at(c, &["status"]).unwrap_or_default(),
        // A value we cannot read exactly becomes `None`: the capture is still reported (it
        // happened), and the caller refuses to grant on an amount it cannot confirm.
        amount: str_at(c, &["amount", "value"]).and_then(|s| parse_amount(&s).ok()),
        currency: str_at(c, &["amount", "currency_code"]).unwrap_or_default(),
        invoice_id: str_at(c, &["invoice_id"]),
        custom_id: str_at(c, &["custom_id"]),
    })
}

#[cfg(test)]
mod tests;
