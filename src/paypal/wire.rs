//! Reading PayPal's answers: error bodies, the fields of an order or capture, and the ids we
//! accept into a request path.

use serde_json::Value;

use super::types::{CaptureInfo, PaypalError, parse_amount};

/// No answer from PayPal at all (connection, timeout, TLS, a body cut short).
pub(super) fn unreachable(e: reqwest::Error) -> PaypalError {
    PaypalError::Unreachable(e.to_string())
}

/// PayPal ids are short alphanumerics; refusing anything else keeps ids from reshaping the path.
pub(super) fn checked_id(id: &str) -> Result<&str, PaypalError> {
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
pub(super) fn api_error(status: u16, body: &[u8]) -> PaypalError {
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
    // Logged and kept: keys and tokens an echoing proxy (or PayPal) put in it are redacted,
    // as DeepSeek's errors are (an echoed `Authorization: Basic …` reached the journal; found
    // by an independent check).
    PaypalError::Api {
        status,
        name: crate::upstream::redact(&name, 100),
        message: crate::upstream::redact(&message, 400),
    }
}

/// Whether an error body is PayPal's own: a JSON object naming the error (`name`, as every
/// REST error of PayPal's carries), not a proxy's or web server's page.
pub(super) fn is_paypal_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| str_at(&v, &["name"]).is_some_and(|n| !n.is_empty()))
}

/// The string at `path` inside `v`, if every step exists and the end is a string.
pub(super) fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `purchase_units[0]`, where our single purchase unit lives.
pub(super) fn first_unit(order: &Value) -> Option<&Value> {
    order.get("purchase_units").and_then(|u| u.get(0))
}

/// `purchase_units[0].payments.captures[0]` of an order or capture answer.
pub(super) fn capture_of(order: &Value) -> Option<CaptureInfo> {
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
