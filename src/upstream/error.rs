//! How a call to DeepSeek failed, classified once here so that the customer side (the
//! gateway's `From<UpstreamError>`) and the logs agree on what each failure means.

use hyper::StatusCode;

/// Why a call to upstream failed before, or while, a usable answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect or send (why, with its causes, for the log).
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// Nothing arrived in time (the idle timer — a stream's keep-alives do not count — or the
    /// total one).
    #[error("upstream timed out")]
    Timeout,
    /// A non-2xx status.
    #[error("upstream answered {status}: {detail}")]
    Status {
        /// Upstream's status.
        status: StatusCode,
        /// DeepSeek's `error.message`, made safe to show a customer (capped, anything shaped
        /// like a key redacted); empty when the body had none.
        message: String,
        /// An excerpt of the body for the log (keys redacted there too).
        detail: String,
    },
    /// A 2xx whose body is not what DeepSeek sends, or that was cut.
    #[error("upstream answer malformed: {0}")]
    Malformed(String),
    /// Every usable account stayed at its cap for the whole queue timeout.
    #[error("every upstream account is at its cap")]
    Busy,
    /// This machine could not open a connection to DeepSeek (out of file descriptors or socket
    /// memory): not the account's failure; the customer is told to retry, as when busy.
    #[error("cannot open a connection to upstream on this machine: {0}")]
    OutOfResources(String),
    /// No account may take requests (all disabled or cooling).
    #[error("no upstream account can serve (all disabled or cooling)")]
    NoAccount,
}

impl UpstreamError {
    /// Upstream refused the request itself (400/422): its fault is the customer's, and its
    /// message is theirs to read — unless it is about the model name, which is the operator's.
    pub fn rejects_request(&self) -> bool {
        matches!(self, UpstreamError::Status { status, message, .. }
            if ((*status == StatusCode::BAD_REQUEST || *status == StatusCode::UNPROCESSABLE_ENTITY)
                && !message.is_empty())
                // Too large for upstream, whatever its body: the request's size, not the
                // account (it was a 502 the SDKs retried, counted as the account's error).
                || *status == StatusCode::PAYLOAD_TOO_LARGE)
            && !self.is_unknown_model()
    }

    /// An error DeepSeek wrote: a JSON error object with a message.
    pub fn is_deepseeks(&self) -> bool {
        matches!(self, UpstreamError::Status { message, .. } if !message.is_empty())
    }

    /// A 400/422 that is not DeepSeek's: no JSON error object with a message (a proxy's page,
    /// "plain HTTP request was sent to HTTPS port") — the account's address is wrong, not the
    /// request (it passed for the request's fault: never rested, and it ended rests).
    fn is_foreign_rejection(&self) -> bool {
        matches!(self, UpstreamError::Status { status, message, .. }
            if (*status == StatusCode::BAD_REQUEST || *status == StatusCode::UNPROCESSABLE_ENTITY)
                && message.is_empty())
    }

    /// DeepSeek's 400 "Model Not Exist": the request named a model we sell, so the fault is the
    /// operator's `upstream_model`, not the customer's request. The whole message, not a part
    /// of it: DeepSeek's other 400s quote the customer's own values back (a message role named
    /// "Model Not Exist", quoted as an unknown variant, made every account look misconfigured
    /// and each one tried; found by an independent check).
    pub fn is_unknown_model(&self) -> bool {
        matches!(self, UpstreamError::Status { status, message, .. }
            if *status == StatusCode::BAD_REQUEST
                && message.trim().trim_end_matches('.').eq_ignore_ascii_case("model not exist"))
    }

    /// Upstream refused the operator's account (401/403 key, 402 balance).
    pub fn refuses_account(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. }
            if *status == StatusCode::UNAUTHORIZED
                || *status == StatusCode::PAYMENT_REQUIRED
                || *status == StatusCode::FORBIDDEN)
    }

    /// A failure of the account, not of the request: unreachable, timed out, rate limited
    /// (429), failing (5xx), or not DeepSeek's API where its base URL says — any status
    /// DeepSeek does not answer a request with (a redirect of `http://` to `https://`, 404,
    /// 405, 408, 409, 410, a proxy's page). The account rests; another may serve. A pool with
    /// one such account in it lost its share of every request for good. Not: what DeepSeek
    /// says of the request (400, 422, with its JSON) or of the account (401, 402, 403: it is
    /// disabled instead), and 413 — a request's own size, which a customer could otherwise
    /// send to rest every account.
    pub fn rests_account(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Timeout => true,
            UpstreamError::Status { status, .. } => {
                self.is_foreign_rejection()
                    || !matches!(
                        status.as_u16(),
                        400 | 401 | 402 | 403 | 413 | 422 | 200..=299
                    )
            }
            _ => false,
        }
    }

    /// Log it at the level the operator needs.
    pub fn log(&self, request_id: &str) {
        match self {
            _ if self.is_unknown_model() => tracing::error!(
                request_id,
                error = %self,
                "UPSTREAM DOES NOT KNOW THE MODEL: check models.<name>.upstream_model in the config"
            ),
            UpstreamError::Status { status, detail, .. } if self.refuses_account() => {
                tracing::error!(
                    request_id,
                    status = status.as_u16(),
                    upstream_message = %detail,
                    "UPSTREAM REFUSED THE OPERATOR'S ACCOUNT: check upstream.api_key and the \
                     DeepSeek balance; every customer request fails until this is fixed"
                );
            }
            UpstreamError::Status { status, .. } if status.is_client_error() => {
                tracing::info!(request_id, error = %self, "upstream refused the request");
            }
            UpstreamError::OutOfResources(_) => {
                // Every request refused meanwhile says the same: once a minute, with a count.
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::error!(
                        request_id,
                        error = %self,
                        since_last_said = held,
                        "OUT OF FILE DESCRIPTORS (or socket memory): raise LimitNOFILE (the unit \
                         sets 65536) or lower server.max_connections and the accounts' \
                         max_in_flight (said at most once a minute)"
                    );
                }
            }
            _ => tracing::warn!(request_id, error = %self, "upstream failed"),
        }
    }
}

/// Longest upstream message passed on to a customer, in characters.
const MESSAGE_CAP: usize = 300;
/// Longest body excerpt logged, in characters.
const DETAIL_CAP: usize = 200;

/// The status error for an error body: DeepSeek's JSON `error.message` (the only text ever
/// passed on to a customer, and only after [`redact`]), and an excerpt for the log.
pub(super) fn status_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_string))
        .map(|m| redact(&m, MESSAGE_CAP))
        .unwrap_or_default();
    let detail = if message.is_empty() {
        redact(&String::from_utf8_lossy(body), DETAIL_CAP)
    } else {
        message.clone()
    };
    UpstreamError::Status {
        status,
        message,
        detail,
    }
}

/// `text` cut to `cap` characters, with control and invisible characters (`text::is_invisible`:
/// direction overrides, zero-width ones) turned into spaces and every word
/// that looks like a credential replaced by `[redacted]`: an upstream (or a proxy in front of
/// it) that echoes the request's headers must not hand the operator's key to a customer.
pub fn redact(text: &str, cap: usize) -> String {
    let clean: String = text
        .chars()
        .take(cap)
        .map(|c| {
            if c.is_control() || crate::text::is_invisible(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut out = String::with_capacity(clean.len());
    let mut word = String::new();
    let mut after_bearer = false;
    let flush = |word: &mut String, out: &mut String, after_bearer: &mut bool| {
        if !word.is_empty() {
            let secret = *after_bearer || looks_like_key(word);
            *after_bearer =
                word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic");
            out.push_str(if secret { "[redacted]" } else { word });
            word.clear();
        }
    };
    for c in clean.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '=') {
            word.push(c);
        } else {
            flush(&mut word, &mut out, &mut after_bearer);
            out.push(c);
        }
    }
    flush(&mut word, &mut out, &mut after_bearer);
    out
}

/// `sk-…` keys (DeepSeek's, OpenAI's, ours), and any long run of letters and digits mixed, as
/// API keys and tokens are.
fn looks_like_key(word: &str) -> bool {
    let w = word.trim_matches(|c: char| matches!(c, '.' | '/' | '='));
    if w.len() >= 8 && w.to_ascii_lowercase().starts_with("sk-") {
        return true;
    }
    w.len() >= 24
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 400 that is DeepSeek's (a JSON error with a message) is the request's fault; one that
    /// is a proxy's page is the account's address being wrong: it rests the account (it passed
    /// for the request's fault, so the account was never rested and its 400s ended rests).
    #[test]
    fn a_400_that_is_not_deepseeks_rests_the_account() {
        let ours = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"Invalid request format","type":"invalid_request_error"}}"#,
        );
        assert!(ours.rejects_request() && !ours.rests_account());
        let page = status_error(
            StatusCode::BAD_REQUEST,
            b"<html><body>The plain HTTP request was sent to HTTPS port</body></html>",
        );
        assert!(!page.rejects_request() && page.rests_account());
    }

    /// DeepSeek's "Model Not Exist" is the operator's model name, in either dialect's shape;
    /// a 400 that only quotes the customer's text saying so is the request's own (a role named
    /// so set off every account's alarm and was tried on each; found by an independent check).
    #[test]
    fn only_deepseeks_whole_message_says_the_model_is_unknown() {
        for body in [
            &br#"{"error":{"message":"Model Not Exist","type":"invalid_request_error"}}"#[..],
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"Model Not Exist"}}"#,
        ] {
            let e = status_error(StatusCode::BAD_REQUEST, body);
            assert!(e.is_unknown_model() && !e.rejects_request(), "{e}");
        }
        for body in [
            &br#"{"error":{"message":"Failed to deserialize the JSON body into the target type: messages[0].role: unknown variant `Model Not Exist`, expected one of `system`, `user`, `assistant`, `tool`","type":"invalid_request_error"}}"#[..],
            br#"{"error":{"message":"tools[0]: unknown variant `MODEL NOT EXIST`","type":"invalid_request_error"}}"#,
            b"<html>Model Not Exist</html>",
        ] {
            let e = status_error(StatusCode::BAD_REQUEST, body);
            assert!(!e.is_unknown_model(), "{e}");
        }
        let quoted = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"unknown variant `Model Not Exist`"}}"#,
        );
        assert!(quoted.rejects_request(), "the customer's to read");
    }

    /// Any status DeepSeek does not answer a request with rests the account (a 301 from an
    /// `http://` base URL, 408, 409 were relayed as 502 with the account kept in the pool;
    /// found by an independent check); what DeepSeek says of the request or the account, and
    /// a request's own size, do not.
    #[test]
    fn a_status_deepseek_never_sends_rests_the_account() {
        let json = br#"{"error":{"message":"x","type":"invalid_request_error"}}"#;
        for code in [
            301, 302, 307, 404, 405, 408, 409, 410, 421, 429, 500, 502, 503, 504,
        ] {
            let e = status_error(StatusCode::from_u16(code).unwrap(), json);
            assert!(e.rests_account(), "{code}");
        }
        for code in [400, 401, 402, 403, 413, 422] {
            let e = status_error(StatusCode::from_u16(code).unwrap(), json);
            assert!(!e.rests_account(), "{code}");
        }
    }

    #[test]
    fn keys_are_redacted_from_messages() {
        assert_eq!(
            redact(
                "Authorization: Bearer sk-abc123def456ghi789 was rejected",
                300
            ),
            "Authorization: Bearer [redacted] was rejected"
        );
        assert_eq!(
            redact("bad key sk-gateway-AbCdEfGhIjKlMnOpQrStUvWxYz012345.", 300),
            "bad key [redacted]"
        );
        assert_eq!(
            redact("token=eyJhbGciOiJIUzI1NiJ9abcdef0123456789", 300),
            "[redacted]"
        );
        assert_eq!(
            redact("Invalid request format", 300),
            "Invalid request format"
        );
        assert_eq!(redact("a\nb\u{0}c", 300), "a b c");
        assert_eq!(redact("a\u{202e}b\u{2028}c\u{200b}d", 300), "a b c d");
        assert_eq!(redact("x".repeat(500).as_str(), 300).len(), 300);
    }

    #[test]
    fn only_json_messages_reach_customers() {
        let e = status_error(
            StatusCode::BAD_REQUEST,
            b"POST /chat/completions\r\nAuthorization: Bearer sk-operator-secret-key-1234\r\n",
        );
        let UpstreamError::Status {
            message, detail, ..
        } = e
        else {
            panic!()
        };
        assert_eq!(message, "");
        assert!(!detail.contains("sk-operator"), "{detail}");
        let e = status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"message":"max_tokens too large for key sk-operator-secret-key-1234"}}"#,
        );
        let UpstreamError::Status { message, .. } = e else {
            panic!()
        };
        assert_eq!(message, "max_tokens too large for key [redacted]");
    }
}
