//! How a call to DeepSeek failed, classified once here so that the customer side (the
//! gateway's `From<UpstreamError>`) and the logs agree on what each failure means.

use reqwest::StatusCode;

/// Why a call to upstream failed before, or while, a usable answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect or send.
    #[error("upstream unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// Nothing arrived in time (the idle timer — keep-alives do not count — or the total one).
    #[error("upstream timed out")]
    Timeout,
    /// A non-2xx status.
    #[error("upstream answered {status}: {message}")]
    Status {
        /// Upstream's status.
        status: StatusCode,
        /// Upstream's error message (or body excerpt).
        message: String,
    },
    /// A 2xx whose body is not what DeepSeek sends, or that was cut.
    #[error("upstream answer malformed: {0}")]
    Malformed(String),
}

impl UpstreamError {
    /// Upstream refused the request itself (400/422): its fault is the customer's, and its
    /// message is theirs to read — unless it is about the model name, which is the operator's.
    pub fn rejects_request(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. }
            if *status == StatusCode::BAD_REQUEST || *status == StatusCode::UNPROCESSABLE_ENTITY)
            && !self.is_unknown_model()
    }

    /// DeepSeek's 400 "Model Not Exist": the request named a model we sell, so the fault is the
    /// operator's `upstream_model`, not the customer's request.
    pub fn is_unknown_model(&self) -> bool {
        matches!(self, UpstreamError::Status { status, message }
            if *status == StatusCode::BAD_REQUEST
                && message.to_ascii_lowercase().contains("model not exist"))
    }

    /// Upstream refused the operator's account (401 key, 402 balance).
    pub fn refuses_account(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. }
            if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::PAYMENT_REQUIRED)
    }

    /// Log it at the level the operator needs.
    pub fn log(&self, request_id: &str) {
        match self {
            _ if self.is_unknown_model() => tracing::error!(
                request_id,
                error = %self,
                "UPSTREAM DOES NOT KNOW THE MODEL: check models.<name>.upstream_model in the config"
            ),
            UpstreamError::Status { status, message } if self.refuses_account() => {
                tracing::error!(
                    request_id,
                    status = status.as_u16(),
                    upstream_message = %message,
                    "UPSTREAM REFUSED THE OPERATOR'S ACCOUNT: check upstream.api_key and the \
                     DeepSeek balance; every customer request fails until this is fixed"
                );
            }
            UpstreamError::Status { status, .. } if status.is_client_error() => {
                tracing::info!(request_id, error = %self, "upstream refused the request");
            }
            _ => tracing::warn!(request_id, error = %self, "upstream failed"),
        }
    }
}

/// `error.message` of an OpenAI-shaped error body, else a short excerpt.
pub(super) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        })
}
