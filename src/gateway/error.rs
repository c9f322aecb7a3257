//! The gateway's errors, in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
//!
//! One variant per outcome a client can see. Messages are written for customers and carry no
//! internal detail; the detail goes to the log where the error is raised.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keys::RateCheck;
use crate::keys::identify::IdentifyError;
use crate::money::Usd;
// A name the client sent is repeated clipped (a megabyte of model name came back whole in a
// 404: found by an independent check).
use crate::text::echoed;
use crate::upstream::UpstreamError;

/// `Retry-After` of a 503 `upstream_busy` and a 429 `budget_held`: slots and holds free up as
/// requests finish, within seconds.
const BUSY_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` of a 503 cut by a shutdown: a restart (an upgrade, systemd's) takes seconds.
const RESTART_RETRY_AFTER_SECS: u64 = 5;
/// `Retry-After` of a 503 refused while no ledger row can be recorded (a full disk).
const NOT_RECORDING_RETRY_AFTER_SECS: u64 = 30;

/// What a 402 says a request holds before it is sent, so that a refusal with money left reads
/// as what it is.
const HOLD_RULE: &str = "Before it is sent, a request holds the most it could cost: its prompt \
     counted as one token per byte of the body at the uncached price, and at least one output \
     token; so a long conversation or a large attachment needs more than it will be charged.";

/// What a 402's message adds when the hold refused the request: how much it needed.
fn needing(needs: Option<Usd>) -> String {
    needs.map_or_else(String::new, |n| {
        format!(", which needs ${n} held before it is sent")
    })
}

/// What a client is told went wrong.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 400: the request itself is wrong.
    #[error("{message}")]
    InvalidRequest {
        /// For the client.
        message: String,
        /// The offending field.
        param: Option<&'static str>,
    },
    /// 400/422 from upstream about the request, passed on with its message.
    #[error("{message}")]
    UpstreamRejected {
        /// 400, 413 or 422.
        status: StatusCode,
        /// Upstream's message.
        message: String,
    },
    /// 401: missing, malformed, unknown or revoked key.
    #[error("{0}")]
    InvalidApiKey(&'static str),
    /// 402: the balance cannot pay for one more output token.
    #[error("insufficient budget")]
    InsufficientBudget {
        /// What the key could still hold.
        available: Usd,
        /// What its requests in flight hold now (it comes back as they finish, less what they
        /// spend): the balance a dashboard shows includes it.
        held: Usd,
        /// The key cannot pay for the smallest request (it is `exhausted`): no request, however
        /// short, goes through, which the message then says instead of what a request holds.
        spent: bool,
        /// The least this request would hold (its prompt's bound and one output token), when
        /// the hold was what refused it: told to the customer, who otherwise cannot tell a
        /// cent short from dollars short.
        needs: Option<Usd>,
    },
    /// 429: the key's remaining budget would pay for the request, but its own requests in
    /// flight hold part of it until they finish: a wait, not a want of money (a 402 is fatal
    /// to the SDKs and to Claude Code, a 429 is retried; found by an independent check with
    /// parallel agents on a key with money left).
    #[error("budget held by requests in flight")]
    BudgetHeld {
        /// What the key could still hold.
        available: Usd,
        /// What its requests in flight hold now.
        held: Usd,
    },
    /// 429: the key has its plan's `max_in_flight` requests in progress (the upstream
    /// accounts' limits of requests in flight are shared by every key).
    #[error("too many requests in flight")]
    TooManyInFlight {
        /// The plan's limit.
        limit: u32,
    },
    /// 429: the key is sending as many bytes of request bodies at once as it may
    /// ([`super::bodies`]).
    #[error("too many request bodies being sent")]
    TooMuchUploading {
        /// The key's bound, in bytes.
        limit: usize,
    },
    /// 503: all keys together are sending as many bytes of request bodies at once as the
    /// server holds ([`super::bodies`]).
    #[error("too many request bodies being read")]
    UploadsFull,
    /// 403: the plan does not include the model: the name the client sent, and the model
    /// that serves it when that is another (an alias such as `claude-opus-4-1`).
    #[error("model {0} not in plan")]
    ModelNotAllowed(String, Option<String>),
    /// 404: no such model.
    #[error("no model {0}")]
    ModelNotFound(String),
    /// 404: no such route. With the path when it is under the API's own prefix (`/v1/…`, the
    /// base URL right): an endpoint this server does not offer, such as OpenAI's Responses
    /// API; without, a path that points at a wrong base URL.
    #[error("not found")]
    NotFound(Option<String>),
    /// 405: wrong method on a known route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: body over `server.max_body_bytes`.
    #[error("request too large")]
    RequestTooLarge {
        /// The limit.
        limit: usize,
    },
    /// 429: over the plan's RPM.
    #[error("rate limited")]
    RateLimited(RateCheck),
    /// 502: upstream unreachable, malformed, 5xx, or refusing the operator's account.
    #[error("upstream error")]
    Upstream,
    /// 504: upstream idle or total timeout.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// 502: a whole answer too large to relay (over 64 MiB): DeepSeek wrote it, and it is
    /// billed; the client is told to ask for it as a stream, and not to send it again as it is
    /// (`x-should-retry: false`: the SDKs would retry a 502 twice, each paid).
    #[error("answer too large")]
    AnswerTooLarge,
    /// 503: every upstream account stayed at its cap for the whole queue timeout.
    #[error("upstream busy")]
    UpstreamBusy,
    /// 503: DeepSeek said, in its own error event, that it is overloaded (a stream broken
    /// after it began: Anthropic's `overloaded_error`).
    #[error("upstream overloaded")]
    UpstreamOverloaded,
    /// 500: our own fault (the database); details are in the log.
    #[error("internal error")]
    Internal,
    /// 503: the server is restarting and cut the request.
    #[error("shutting down")]
    ShuttingDown,
    /// 503: the answer's ledger row could not be recorded (the database cannot commit: a full
    /// disk, a lock another program holds), so the answer is withheld — nothing leaves
    /// unbilled.
    #[error("ledger row not recorded")]
    NotRecorded,
    /// 503, as the error event that ends a stream whose content went out but whose ledger row
    /// could not be recorded yet: the row is kept and committed once the database takes
    /// writes again, so the customer is told not to send it again (they would pay twice).
    #[error("ledger row not recorded yet")]
    NotRecordedYet,
    /// 503: no request's ledger row can be recorded now (see `Store::cannot_record`), so the
    /// request is refused before DeepSeek is asked for an answer that would be withheld.
    #[error("not recording")]
    NotRecording,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorObject<'a>,
}

/// The error object, also sent as the last event of a failed stream.
#[derive(Serialize)]
pub struct ErrorObject<'a> {
    /// For humans.
    pub message: String,
    /// OpenAI-style category.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Offending field.
    pub param: Option<&'a str>,
    /// Stable machine code (SPEC §3).
    pub code: &'a str,
}

impl GatewayError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::UpstreamRejected { status, .. } => *status,
            GatewayError::InvalidApiKey(_) => StatusCode::UNAUTHORIZED,
            GatewayError::InsufficientBudget { .. } => StatusCode::PAYMENT_REQUIRED,
            GatewayError::ModelNotAllowed(..) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RateLimited(_)
            | GatewayError::BudgetHeld { .. }
            | GatewayError::TooManyInFlight { .. }
            | GatewayError::TooMuchUploading { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Upstream | GatewayError::AnswerTooLarge => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamBusy
            | GatewayError::UpstreamOverloaded
            | GatewayError::UploadsFull => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::ShuttingDown
            | GatewayError::NotRecorded
            | GatewayError::NotRecordedYet
            | GatewayError::NotRecording => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::UpstreamRejected { status, .. } if status.as_u16() == 413 => {
                "request_too_large"
            }
            GatewayError::InvalidRequest { .. } | GatewayError::UpstreamRejected { .. } => {
                "invalid_request"
            }
            GatewayError::InvalidApiKey(_) => "invalid_api_key",
            GatewayError::InsufficientBudget { .. } => "insufficient_budget",
            GatewayError::ModelNotAllowed(..) => "model_not_allowed",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::RequestTooLarge { .. } => "request_too_large",
            GatewayError::RateLimited(_) => "rate_limit_exceeded",
            GatewayError::BudgetHeld { .. } => "budget_held",
            GatewayError::TooManyInFlight { .. } | GatewayError::TooMuchUploading { .. } => {
                "too_many_in_flight"
            }
            GatewayError::Upstream | GatewayError::AnswerTooLarge => "upstream_error",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamBusy | GatewayError::UpstreamOverloaded => "upstream_busy",
            GatewayError::Internal => "internal_error",
            GatewayError::ShuttingDown
            | GatewayError::NotRecorded
            | GatewayError::NotRecordedYet
            | GatewayError::NotRecording
            | GatewayError::UploadsFull => "service_unavailable",
        }
    }

    /// `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::InvalidApiKey(_) => "authentication_error",
            GatewayError::InsufficientBudget { .. } => "insufficient_quota",
            GatewayError::ModelNotAllowed(..) => "permission_error",
            GatewayError::RateLimited(_)
            | GatewayError::BudgetHeld { .. }
            | GatewayError::TooManyInFlight { .. }
            | GatewayError::TooMuchUploading { .. } => "rate_limit_error",
            GatewayError::Upstream
            | GatewayError::AnswerTooLarge
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamBusy
            | GatewayError::UpstreamOverloaded
            | GatewayError::Internal
            | GatewayError::ShuttingDown
            | GatewayError::NotRecorded
            | GatewayError::NotRecordedYet
            | GatewayError::NotRecording
            | GatewayError::UploadsFull => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The customer's message.
    pub fn message(&self) -> String {
        match self {
            GatewayError::InvalidRequest { message, .. }
            | GatewayError::UpstreamRejected { message, .. } => message.clone(),
            GatewayError::InvalidApiKey(why) => (*why).to_string(),
            GatewayError::InsufficientBudget {
                available,
                spent: true,
                ..
            } => format!(
                "Your key's budget is used up (${available} available): it cannot pay for even \
                 the smallest request. Top up or buy a new plan."
            ),
            GatewayError::InsufficientBudget {
                available,
                held,
                needs,
                ..
            } if *held > Usd::ZERO => format!(
                "Your key's remaining budget (${available} available, and ${held} held by your \
                 requests in progress until they finish) cannot pay for this request{}. \
                 {HOLD_RULE} Top up or buy a new plan.",
                needing(*needs)
            ),
            // Whole answers whose client left count until they end (they are read on).
            GatewayError::TooManyInFlight { limit } => format!(
                "Your key has {limit} request{} in progress, as many as its plan allows at once. \
                 Retry when one of them has finished.",
                if *limit == 1 { "" } else { "s" }
            ),
            GatewayError::TooMuchUploading { limit } => format!(
                "Your key's request bodies being sent at once have reached {limit} bytes, as \
                 much as they may hold. Retry when they have arrived."
            ),
            GatewayError::BudgetHeld { available, held } => format!(
                "Your requests in progress hold ${held} of your key's budget until they finish, \
                 leaving ${available}: not enough for this request. Retry in a few seconds, or \
                 send fewer requests at once or a smaller max_tokens."
            ),
            // What the hold counts is said: a coding agent's long conversation was refused with
            // cents left, and nothing told its user why (found by an independent check).
            GatewayError::InsufficientBudget {
                available, needs, ..
            } => format!(
                "Your key's remaining budget (${available} available) cannot pay for this \
                 request{}. {HOLD_RULE} Top up or buy a new plan.",
                needing(*needs)
            ),
            GatewayError::ModelNotAllowed(m, None) => {
                format!(
                    "The model `{}` is not included in your key's plan.",
                    echoed(m)
                )
            }
            GatewayError::ModelNotAllowed(m, Some(served)) => format!(
                "The model `{}` (served by `{served}`) is not included in your key's plan.",
                echoed(m)
            ),
            GatewayError::ModelNotFound(m) => {
                format!(
                    "The model `{}` does not exist or you do not have access to it.",
                    echoed(m)
                )
            }
            // The base URL was right and the endpoint is not one of ours: said so, with what is
            // (the Vercel AI SDK and LangChain call OpenAI's Responses API by default or for
            // reasoning, and were told to fix a base URL that was right; found by an
            // independent check).
            GatewayError::NotFound(Some(path)) => format!(
                "This server does not offer `{}`. It serves OpenAI's Chat Completions (POST \
                 /v1/chat/completions) and model list (GET /v1/models), and Anthropic's Messages \
                 (POST /v1/messages and /v1/messages/count_tokens). A client calling OpenAI's \
                 Responses API must be set to Chat Completions (the Vercel AI SDK: \
                 openai.chat(…); LangChain: without use_responses_api or reasoning).",
                echoed(path)
            ),
            GatewayError::NotFound(None) => {
                // Both kinds of client: an OpenAI SDK's base URL ends in /v1, an Anthropic
                // one's does not (it adds /v1 itself: a base URL ending in /v1 asked for
                // /v1/v1/messages, and was told to end it in /v1; found by an independent check)
                // — unless it adds only /messages, as the Vercel AI SDK's does.
                "Unknown endpoint. OpenAI clients: set the base URL to this server's address \
                 followed by /v1 (requests go to /v1/chat/completions). Anthropic clients such as \
                 Claude Code and the anthropic SDKs: set the base URL to this server's address, \
                 without /v1 (requests go to /v1/messages); a client that adds only /messages \
                 (the Vercel AI SDK) needs it with /v1."
                    .into()
            }
            GatewayError::MethodNotAllowed => "Method not allowed on this endpoint.".into(),
            GatewayError::RequestTooLarge { limit } => {
                format!("Request body is larger than the limit of {limit} bytes.")
            }
            GatewayError::RateLimited(c) => format!(
                "Rate limit reached: {} requests per minute for your plan. Retry in {}.",
                c.limit,
                reset_string(c.reset)
            ),
            GatewayError::Upstream => {
                "The upstream model provider failed to answer. Please retry.".into()
            }
            GatewayError::UpstreamTimeout => {
                "The upstream model provider did not answer in time. Please retry.".into()
            }
            GatewayError::AnswerTooLarge => "The answer is too large to send as one response \
                 (over 64 MiB), and was billed as the upstream provider wrote it. Do not send \
                 the same request again: ask for it with \"stream\": true, or with a lower \
                 max_tokens, fewer choices (n) or fewer top_logprobs."
                .into(),
            GatewayError::UpstreamBusy => {
                "Every upstream account is busy right now. Please retry in a few seconds.".into()
            }
            GatewayError::UpstreamOverloaded => "The upstream model provider is overloaded and \
                 stopped this answer. Please retry in a few seconds."
                .into(),
            GatewayError::Internal => "Internal error. Please retry later.".into(),
            GatewayError::NotRecorded => "The server could not record this request's bill, so \
                 its answer was withheld. Please retry later."
                .into(),
            GatewayError::NotRecordedYet => "The server could not record this answer's bill \
                 yet. What was sent is all there is, and it is billed once recording resumes: \
                 do not send the request again for it."
                .into(),
            GatewayError::ShuttingDown => {
                "The server is restarting. Please retry in a few seconds.".into()
            }
            GatewayError::UploadsFull => "The server is receiving as many request bodies at \
                 once as it holds. Please retry in a few seconds."
                .into(),
            GatewayError::NotRecording => "The server cannot record bills right now, so it \
                 takes no requests. Nothing was charged. Please retry in a minute."
                .into(),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::ModelNotAllowed(..) | GatewayError::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// The JSON body, as bytes (also used for the final event of a failed stream).
    pub fn body_json(&self) -> String {
        let body = Body {
            error: ErrorObject {
                message: self.message(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// What the customer is told about an upstream failure. Upstream's 401/402 concern the
/// operator's account, and a "model not exist" the operator's config: both are a plain 502
/// for the customer (the operator reads the log). Only a 400/422 about the request itself is
/// passed on with upstream's message.
impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> GatewayError {
        let rejects = e.rejects_request();
        match e {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout,
            UpstreamError::Busy | UpstreamError::OutOfResources(_) => GatewayError::UpstreamBusy,
            // DeepSeek's 429 is the operator's account at its limit (requests in flight): busy,
            // with the Retry-After a client should wait, not a failure it retries at once.
            UpstreamError::Status { status, .. } if status.as_u16() == 429 => {
                GatewayError::UpstreamBusy
            }
            UpstreamError::Status {
                status, message, ..
            } if rejects => GatewayError::UpstreamRejected {
                status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                // Only DeepSeek's own JSON message, made safe; for anything else, ours.
                message: if message.is_empty() && status.as_u16() == 413 {
                    "The upstream provider rejected the request as too large.".into()
                } else if message.is_empty() {
                    "The upstream provider rejected the request as invalid.".into()
                } else {
                    message
                },
            },
            _ => GatewayError::Upstream,
        }
    }
}

/// A request without a key it may use is a 401, with identification's message.
impl From<IdentifyError> for GatewayError {
    fn from(e: IdentifyError) -> Self {
        GatewayError::InvalidApiKey(e.message())
    }
}

/// OpenAI's reset format: `1s`, `6m0s`, `0.5s`.
pub fn reset_string(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{}s", (ms as f64 / 100.0).ceil() / 10.0);
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// The `x-ratelimit-*` headers for a rate check.
pub fn rate_headers(c: &RateCheck, headers: &mut HeaderMap) {
    headers.insert(LIMIT_REQUESTS, HeaderValue::from(c.limit));
    headers.insert(REMAINING_REQUESTS, HeaderValue::from(c.remaining));
    if let Ok(v) = HeaderValue::from_str(&reset_string(c.reset)) {
        headers.insert(RESET_REQUESTS, v);
    }
}

// Names built once: a `&str` name is checked byte by byte on every insert (callgrind: ~2k
// instructions per answer for these three).
const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");

impl GatewayError {
    /// The answer with `body` in some dialect's shape, and the headers that go with the error
    /// whatever the shape (`retry-after` and the rate headers of a 429).
    pub fn respond_with(&self, body: String) -> Response {
        let mut resp = (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let GatewayError::RateLimited(c) = self {
            let h = resp.headers_mut();
            rate_headers(c, h);
            let secs = c.reset.as_secs() + u64::from(c.reset.subsec_nanos() > 0);
            h.insert("retry-after", HeaderValue::from(secs.max(1)));
        }
        if matches!(
            self,
            GatewayError::UpstreamBusy
                | GatewayError::UpstreamOverloaded
                | GatewayError::BudgetHeld { .. }
                | GatewayError::TooManyInFlight { .. }
                | GatewayError::TooMuchUploading { .. }
                | GatewayError::UploadsFull
        ) {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(BUSY_RETRY_AFTER_SECS));
        }
        // Its message says to retry in a few seconds; the SDKs read when from here (found by
        // an independent check: none was sent).
        if matches!(self, GatewayError::ShuttingDown) {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(RESTART_RETRY_AFTER_SECS));
        }
        if matches!(self, GatewayError::AnswerTooLarge) {
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        // An operator freeing disk space takes a while; an SDK retrying at once only adds
        // refusals. A withheld answer's 503 says the same (it had none; found by a re-check).
        if matches!(self, GatewayError::NotRecording | GatewayError::NotRecorded) {
            resp.headers_mut().insert(
                "retry-after",
                HeaderValue::from(NOT_RECORDING_RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.respond_with(self.body_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_strings() {
        assert_eq!(reset_string(Duration::from_millis(500)), "0.5s");
        assert_eq!(reset_string(Duration::from_millis(1)), "0.1s");
        assert_eq!(reset_string(Duration::from_secs(2)), "2s");
        assert_eq!(reset_string(Duration::from_millis(2001)), "3s");
        assert_eq!(reset_string(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn body_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&GatewayError::InvalidApiKey("Invalid API key.").body_json())
                .unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(v["error"]["message"], "Invalid API key.");
    }

    #[test]
    fn a_402_says_whether_the_key_is_spent_or_what_a_request_holds() {
        let m = |held: i64, spent: bool| {
            GatewayError::InsufficientBudget {
                available: Usd::from_nanos(70_000_000),
                held: Usd::from_nanos(held),
                spent,
                needs: (!spent).then(|| Usd::from_nanos(412_345_678)),
            }
            .message()
        };
        assert!(m(0, true).contains("used up"), "{}", m(0, true));
        assert!(!m(0, true).contains("holds the most"), "{}", m(0, true));
        for held in [0, 5_000_000] {
            let text = m(held, false);
            assert!(text.contains("$0.07 available"), "{text}");
            assert!(text.contains("holds the most it could cost"), "{text}");
            assert!(
                text.contains("cannot pay for this request, which needs $0.412345678 held"),
                "{text}"
            );
        }
        assert!(!m(0, true).contains("needs"), "{}", m(0, true));
        assert!(
            m(5_000_000, false).contains("$0.005 held"),
            "{}",
            m(5_000_000, false)
        );
    }

    #[test]
    fn the_refusals_of_a_ledger_that_cannot_record_say_when_to_retry() {
        for (what, e) in [
            ("refused", GatewayError::NotRecording),
            ("withheld", GatewayError::NotRecorded),
        ] {
            let resp = e.into_response();
            assert_eq!(resp.status(), 503, "{what}");
            assert_eq!(resp.headers()["retry-after"], "30", "{what}");
        }
    }

    #[test]
    fn a_long_model_name_is_echoed_cut() {
        let long = "é".repeat(1000);
        let msg = GatewayError::ModelNotFound(long).message();
        assert!(msg.chars().count() < 200, "{msg}");
        assert!(msg.contains(&format!("`{}…`", "é".repeat(100))), "{msg}");
        let short = GatewayError::ModelNotFound("gpt-4".into()).message();
        assert!(short.contains("`gpt-4`"), "{short}");
    }
}
