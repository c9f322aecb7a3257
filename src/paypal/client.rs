//! The REST client itself: its OAuth2 token (cached, refreshed early, renewed once on a 401),
//! the one authenticated call every operation goes through, and Orders v2 create, capture and
//! look-up.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::Mutex;

use super::types::format_amount;
use super::types::{CaptureResult, CreatedOrder, NewOrder, OrderInfo, PaypalError, PaypalSettings};
use super::wire::{
    api_error, capture_of, checked_id, first_unit, is_paypal_error, str_at, unreachable,
};
use crate::money::Usd;

/// Refresh a token this long before PayPal says it expires, so no request races the expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// How long to keep a token whose answer did not say (`expires_in` is always sent in practice).
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// PayPal's limit on `description`; longer text is refused, so it is cut instead.
const MAX_DESCRIPTION_CHARS: usize = 127;

/// A PayPal REST client; cheap to share behind an `Arc`.
pub struct PayPal {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    pub(super) webhook_id: String,
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
            // Straight to PayPal, as DeepSeek's calls go: a proxy variable left in the
            // service's environment must not stop every payment (the balance watch's client
            // reads none either).
            .no_proxy()
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

    /// Ask PayPal for an access token (kept for the next call): whether the credentials
    /// work. A refusal is logged where it happens, with what to check.
    pub async fn check_credentials(&self) -> Result<(), PaypalError> {
        self.token(None).await.map(|_| ())
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
                // Keys and tokens redacted: whatever stands between us and PayPal (a proxy at
                // `paypal.api_base`) may echo the credentials back (found by an independent
                // check), as DeepSeek's errors are redacted.
                body = %crate::upstream::redact(&String::from_utf8_lossy(&bytes), 500),
                "PayPal refused the client credentials: check paypal.client_id, \
                 paypal.client_secret and paypal.env (sandbox credentials do not work with live, \
                 nor live ones with sandbox); no payment can be taken until they are right"
            );
            return Err(PaypalError::Auth);
        }
        // Any other refusal of the token is no answer from the API that was to be called: as
        // `Api`, a 404 here (a wrong `paypal.api_base`) read as PayPal not knowing the order
        // and told the buyer that nothing was charged (found by an independent check). No
        // call was made, so trying again later is safe.
        if !status.is_success() {
            if status.as_u16() == 404 {
                tracing::error!(
                    base = %self.base,
                    "PayPal's token endpoint is not at paypal.api_base (404): check the setting"
                );
            }
            return Err(PaypalError::Unreachable(format!(
                "the token endpoint answered {}",
                api_error(status.as_u16(), &bytes)
            )));
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
    pub(super) async fn send(
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
                // PayPal's 404 about an order carries its error body (`RESOURCE_NOT_FOUND`); a
                // 404 without one is from whatever else answers at `paypal.api_base` (a wrong
                // path, a proxy that passes on only part of the API): no answer about the
                // order, which the checkout would tell the buyer as "unknown at PayPal, nothing
                // was charged" (found by an independent check).
                if status == 404 && !is_paypal_error(&bytes) {
                    tracing::error!(
                        base = %self.base,
                        path,
                        "paypal.api_base answered 404 without PayPal's error body: check the \
                         setting (and any proxy at it)"
                    );
                    return Err(PaypalError::Unreachable(format!(
                        "{method} {path} answered 404 without PayPal's error body"
                    )));
                }
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
