//! Webhook verification by postback: PayPal itself checks a delivery's signature, given the
//! `PAYPAL-*` headers and the raw body spliced in byte for byte.

use axum::http::HeaderMap;
use reqwest::Method;
use serde::Serialize;
use serde_json::value::RawValue;

use super::client::PayPal;
use super::types::PaypalError;
use super::wire::str_at;

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
            // Once a minute: anyone can send a delivery with these headers.
            static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
            if let Some(held) = SAID.due() {
                tracing::warn!(
                    since_last_said = held,
                    "a PayPal webhook arrived but paypal.webhook_id is not set; refusing it (said \
                     at most once a minute)"
                );
            }
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
                // Not a field named `message`: it would stand in for the line's own words.
                tracing::warn!(
                    status,
                    %name,
                    paypal_message = %message,
                    "PayPal refused to verify a webhook"
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
