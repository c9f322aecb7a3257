//! The storefront's JSON errors (checkout API, `/api/usage`), in the API's shape:
//! `{"error":{"message","type","param","code"}}`.
//!
//! One variant per outcome a browser or client can see; the `Display` of each is the message
//! it is told. `checkout.js` shows `error.message` to the buyer, so messages are written for
//! people and carry no internal detail (that goes to the log where the error is raised).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keys::identify::IdentifyError;

/// What the storefront's JSON endpoints answer when they refuse or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShopError {
    /// 403: the CSRF header is missing or not this browser's token.
    #[error("Reload the page and try again.")]
    CsrfFailed,
    /// 429: the per-IP limit of order creation.
    #[error("Too many orders from your address. Wait a minute and try again.")]
    TooManyOrders,
    /// 429: the per-IP limit of capture attempts.
    #[error("Too many attempts from your address. Wait a minute and try again.")]
    TooManyCaptures,
    /// 400: the order request is not `{plan, email}` JSON.
    #[error("Send a JSON body {{\"plan\", \"email\"}}.")]
    BadOrderRequest,
    /// 400: the buyer's email does not look like one.
    #[error("Enter a valid email address.")]
    InvalidEmail,
    /// 404: no such plan on sale.
    #[error("No such plan.")]
    PlanNotFound,
    /// 503: this server has no PayPal configuration.
    #[error("Payments are not configured on this server yet.")]
    PaymentsUnavailable,
    /// 404: no such order.
    #[error("No such order.")]
    OrderNotFound,
    /// 404: a path under `/api/` that is none of the storefront's endpoints.
    #[error("There is no such storefront API endpoint.")]
    NoSuchEndpoint,
    /// 409: the buyer has not approved the payment at PayPal yet.
    #[error("The payment has not been approved yet.")]
    NotApproved,
    /// 502: PayPal did not create its order.
    #[error("PayPal is not answering right now. Please try again in a moment.")]
    PaypalCreateFailed,
    /// 409: PayPal no longer knows the order (expired unpaid, or unknown there): nothing was
    /// taken, and the buyer pays again with a new order.
    #[error(
        "This order can no longer be paid at PayPal (it expired or is unknown there); nothing \
         was charged. Please pay again."
    )]
    OrderExpired,
    /// 409: another PayPal made the order (the operator changed `paypal.env` or
    /// `paypal.client_id` since): the PayPal now configured cannot know it, and its "no such
    /// order" must not tell a buyer the other one may have charged that nothing was.
    #[error(
        "This order was made under payment settings this shop no longer uses, so PayPal cannot \
         be asked about it here. If PayPal charged you, write to the shop with your order ID; \
         otherwise place a new order."
    )]
    OrderOfOtherPaypal,
    /// 502: PayPal did not capture (unreachable, or an error other than "not approved").
    #[error("PayPal is not answering right now. Please retry in a moment.")]
    PaypalCaptureFailed,
    /// 402: PayPal declined the buyer's funding source at capture (`INSTRUMENT_DECLINED`):
    /// nothing was taken, and the buyer picks another way to pay in PayPal's window.
    #[error(
        "PayPal declined this payment method; nothing was charged. Choose another way to pay in \
         PayPal and try again."
    )]
    PaymentDeclined,
    /// 502: PayPal's capture answer held no capture.
    #[error("PayPal gave an incomplete answer. Please retry.")]
    PaypalIncomplete,
    /// 409: the order's plan is no longer sold (the operator took it out of the config): it is
    /// not captured, so nothing is charged.
    #[error(
        "This plan is no longer sold, so this order cannot be paid; you have not been charged. \
         Please choose another plan."
    )]
    PlanWithdrawn,
    /// 503: PayPal took the money but we could not record it yet (a retry converges).
    #[error(
        "Your payment went through but could not be recorded yet. Reload this page in a minute; \
         you will not be charged again."
    )]
    PaymentNotRecorded,
    /// 500: our own fault during checkout (database, RNG, a task that died).
    #[error("Please retry.")]
    Internal,
    /// 503: the order could not be recorded now (the database cannot commit: a full disk, a
    /// lock another program holds), before anything was asked of the buyer; nothing charged.
    #[error(
        "Orders cannot be taken right now; nothing has been charged. Please try again in a few \
         minutes."
    )]
    NotRecording,
    /// 503: more new orders came from all addresses together in the last minute than the shop
    /// takes ([`super::limits::ORDERS_PER_MINUTE`]); nothing was asked of PayPal.
    #[error(
        "Orders cannot be taken right now; nothing has been charged. Please try again in a few \
         minutes."
    )]
    OrdersPaused,
    /// 503: no DeepSeek account may serve (every one disabled, or its key refused): a key sold
    /// now could not be used; nothing was asked of PayPal.
    #[error(
        "Orders cannot be taken right now; nothing has been charged. Please try again in a few \
         minutes."
    )]
    NoUpstream,
    /// 401: `/api/usage` without a key of ours.
    #[error(transparent)]
    InvalidApiKey(#[from] IdentifyError),
    /// 500: `/api/usage` could not read the ledger.
    #[error("Internal error. Please retry later.")]
    UsageUnavailable,
    /// 400: a top-up of a key that is not one of ours.
    #[error("That is not one of our API keys. Check the key you want to add credit to.")]
    UnknownKey,
    /// 400: a top-up through a dashboard's grant that no longer holds (expired, the key
    /// replaced since, or another browser's): the page is stale, not the key wrong.
    #[error("This page has expired. Reload the dashboard and try again.")]
    GrantExpired,
    /// 400: a top-up of a revoked key.
    #[error("This API key has been revoked; credit cannot be added to it.")]
    KeyRevoked,
    /// 400: a top-up that would take the key past the largest budget a key may have.
    #[error("This API key cannot take more credit; buy a new key instead.")]
    KeyFull,
    /// 429: the per-IP limit of key rotations.
    #[error("Too many key replacements from your address. Wait a minute and try again.")]
    TooManyRotations,
    /// 429: the key was replaced [`super::limits::ROTATIONS_PER_HOUR`] times lately; the
    /// seconds until it may be again (`Retry-After`).
    #[error("This key has been replaced too many times in the last hour. Try again later.")]
    TooManyKeyRotations(u64),
    /// 500: the key could not be replaced (it still works as before).
    #[error("The key could not be replaced; it still works. Please retry later.")]
    RotationFailed,
    /// 503: the key could not be replaced now, the database taking no writes (a full disk,
    /// another program's lock); it still works (it was a 500, found by an independent check).
    #[error(
        "Your key cannot be replaced right now; it still works. Please try again in a few minutes."
    )]
    RotationUnavailable,

    /// 400: an `Idempotency-Key` that cannot be one.
    #[error(
        "`Idempotency-Key` must be 16 to 255 visible ASCII characters, and hard to guess \
         (a random UUID is fine)."
    )]
    BadIdempotencyKey,
    /// 409: the replacement asked with the same key and `Idempotency-Key` is still being made
    /// (only after waiting for it longer than any replacement takes).
    #[error(
        "A replacement of this key with the same Idempotency-Key is still in progress. Send the \
         same request again in a moment to get its key."
    )]
    RotationInProgress,
    /// 413: a JSON call's body over the storefront's limit.
    #[error("Request body too large.")]
    BodyTooLarge,
    /// 429: the key's own limit of usage look-ups (its plan's RPM).
    #[error(
        "Too many usage look-ups for this key. Try again after the seconds the Retry-After \
         header gives."
    )]
    TooManyUsageReads,
}

impl ShopError {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ShopError::CsrfFailed => StatusCode::FORBIDDEN,
            ShopError::TooManyOrders | ShopError::TooManyCaptures => StatusCode::TOO_MANY_REQUESTS,
            ShopError::BadOrderRequest
            | ShopError::InvalidEmail
            | ShopError::UnknownKey
            | ShopError::GrantExpired
            | ShopError::KeyRevoked
            | ShopError::KeyFull
            | ShopError::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            ShopError::TooManyRotations
            | ShopError::TooManyKeyRotations(_)
            | ShopError::TooManyUsageReads => StatusCode::TOO_MANY_REQUESTS,
            ShopError::RotationInProgress => StatusCode::CONFLICT,
            ShopError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ShopError::RotationFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ShopError::RotationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ShopError::PlanNotFound | ShopError::OrderNotFound | ShopError::NoSuchEndpoint => {
                StatusCode::NOT_FOUND
            }
            ShopError::PaymentsUnavailable
            | ShopError::PaymentNotRecorded
            | ShopError::NotRecording
            | ShopError::OrdersPaused
            | ShopError::NoUpstream => StatusCode::SERVICE_UNAVAILABLE,
            ShopError::NotApproved
            | ShopError::PlanWithdrawn
            | ShopError::OrderExpired
            | ShopError::OrderOfOtherPaypal => StatusCode::CONFLICT,
            ShopError::PaymentDeclined => StatusCode::PAYMENT_REQUIRED,
            ShopError::PaypalCreateFailed
            | ShopError::PaypalCaptureFailed
            | ShopError::PaypalIncomplete => StatusCode::BAD_GATEWAY,
            ShopError::Internal | ShopError::UsageUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
            ShopError::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// `error.code`, stable for programs.
    pub fn code(self) -> &'static str {
        match self {
            ShopError::CsrfFailed => "csrf_failed",
            ShopError::TooManyOrders | ShopError::TooManyCaptures => "rate_limit_exceeded",
            ShopError::BadOrderRequest | ShopError::BadIdempotencyKey => "invalid_request",
            ShopError::InvalidEmail => "invalid_email",
            ShopError::PlanNotFound => "plan_not_found",
            ShopError::PaymentsUnavailable => "payments_unavailable",
            ShopError::OrderNotFound => "order_not_found",
            ShopError::NoSuchEndpoint => "not_found",
            ShopError::NotApproved => "not_approved",
            ShopError::OrderExpired => "order_expired",
            ShopError::OrderOfOtherPaypal => "order_of_other_paypal",
            ShopError::PlanWithdrawn => "plan_withdrawn",
            ShopError::PaymentDeclined => "payment_declined",
            ShopError::PaypalCreateFailed
            | ShopError::PaypalCaptureFailed
            | ShopError::PaypalIncomplete => "payment_provider_error",
            ShopError::PaymentNotRecorded => "payment_not_recorded",
            ShopError::NotRecording | ShopError::OrdersPaused | ShopError::NoUpstream => {
                "service_unavailable"
            }
            ShopError::Internal | ShopError::UsageUnavailable => "internal_error",
            ShopError::InvalidApiKey(_) => "invalid_api_key",
            ShopError::UnknownKey => "unknown_key",
            ShopError::GrantExpired => "grant_expired",
            ShopError::KeyRevoked => "key_revoked",
            ShopError::KeyFull => "key_budget_full",
            ShopError::TooManyRotations
            | ShopError::TooManyKeyRotations(_)
            | ShopError::TooManyUsageReads => "rate_limit_exceeded",
            ShopError::RotationFailed => "internal_error",
            ShopError::RotationUnavailable => "service_unavailable",
            ShopError::RotationInProgress => "idempotency_key_in_use",
            ShopError::BodyTooLarge => "request_too_large",
        }
    }

    /// `error.type`: the API's categories (a key refusal reads like the gateway's own).
    pub fn kind(self) -> &'static str {
        match self {
            ShopError::InvalidApiKey(_) => "authentication_error",
            // As the gateway's own 429s (a look-up refused read like a malformed request).
            e if e.status() == StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            e if e.status().is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

#[derive(Serialize)]
struct Body {
    error: ErrorObject,
}

/// The field order is the wire order (`message`, `type`, `param`, `code`).
#[derive(Serialize)]
struct ErrorObject {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: &'static str,
}

impl ShopError {
    fn body(self) -> Body {
        Body {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.kind(),
                param: None,
                code: self.code(),
            },
        }
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (status, Json(self.body())).into_response();
        // The message says "wait a minute"; clients that retry read it here (the per-address
        // limits refill within a minute; a key's replacements, when its next one is allowed).
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = match self {
                ShopError::TooManyKeyRotations(secs) => secs.max(1),
                _ => 60,
            };
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, wait.into());
        }
        // As the gateway's refusals while nothing can be recorded (a full disk is freed by
        // hand, so soon is the best guess).
        let wait = match self {
            ShopError::NotRecording | ShopError::RotationUnavailable => Some(30),
            // The shared allowance gives one order back a second; a minute is what the text says.
            ShopError::OrdersPaused | ShopError::NoUpstream => Some(60),
            _ => None,
        };
        if let Some(wait) = wait {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, wait.into());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_and_order() {
        let body = |e: ShopError| serde_json::to_string(&e.body()).unwrap();
        assert_eq!(
            body(ShopError::CsrfFailed),
            r#"{"error":{"message":"Reload the page and try again.","type":"invalid_request_error","param":null,"code":"csrf_failed"}}"#
        );
        assert_eq!(
            body(ShopError::BadOrderRequest),
            r#"{"error":{"message":"Send a JSON body {\"plan\", \"email\"}.","type":"invalid_request_error","param":null,"code":"invalid_request"}}"#
        );
        assert_eq!(
            body(ShopError::InvalidApiKey(IdentifyError::Unknown)),
            r#"{"error":{"message":"Invalid API key.","type":"authentication_error","param":null,"code":"invalid_api_key"}}"#
        );
        assert_eq!(ShopError::PaypalIncomplete.kind(), "server_error");
    }

    /// Every error the checkout's calls (order creation, capture) can answer has the page's
    /// own wording in checkout.js, so a Chinese page never shows the server's English.
    #[test]
    fn checkout_page_words_every_error_of_its_calls() {
        let js = include_str!("../../assets/js/checkout.js");
        let start = js.find("var CODES = {").unwrap();
        let codes = &js[start..start + js[start..].find("};").unwrap()];
        use ShopError::*;
        for e in [
            CsrfFailed,
            TooManyOrders,
            TooManyCaptures,
            BadOrderRequest,
            BadIdempotencyKey,
            InvalidEmail,
            PlanNotFound,
            PaymentsUnavailable,
            OrderNotFound,
            NoSuchEndpoint,
            NotApproved,
            PaypalCreateFailed,
            OrderExpired,
            OrderOfOtherPaypal,
            PaypalCaptureFailed,
            PaymentDeclined,
            PaypalIncomplete,
            PlanWithdrawn,
            PaymentNotRecorded,
            Internal,
            NotRecording,
            RotationUnavailable,
            OrdersPaused,
            NoUpstream,
            UnknownKey,
            GrantExpired,
            KeyRevoked,
            KeyFull,
            BodyTooLarge,
        ] {
            assert!(
                codes.contains(&format!("{}:", e.code())),
                "{e:?} ({})",
                e.code()
            );
        }
    }
}
