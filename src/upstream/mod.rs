//! The DeepSeek client: one pooled `reqwest::Client`, the operator's key, and the mapping of
//! upstream failures to what the customer is told.

pub mod simulated;
pub mod sse;

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::config::UpstreamConfig;
use crate::gateway::error::GatewayError;

/// The upstream API.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    chat_url: String,
    auth: String,
    /// No data for this long (keep-alive comments do not count) ends a request.
    pub idle_timeout: Duration,
    /// A whole request may take this long.
    pub request_timeout: Duration,
}

/// Why a call to upstream failed before a usable response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect or send.
    #[error("upstream unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// Nothing arrived in time.
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
    /// What the customer sees. Upstream's 401/402 concern the operator's account: they become a
    /// 502 for the customer and a loud log line for the operator.
    pub fn to_client(&self) -> GatewayError {
        match self {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout,
            _ if self.is_unknown_model() => GatewayError::Upstream,
            UpstreamError::Status { status, message }
                if *status == StatusCode::BAD_REQUEST
                    || *status == StatusCode::UNPROCESSABLE_ENTITY =>
            {
                GatewayError::UpstreamRejected {
                    status: axum::http::StatusCode::from_u16(status.as_u16())
                        .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                    message: message.clone(),
                }
            }
            _ => GatewayError::Upstream,
        }
    }

    /// DeepSeek's 400 "Model Not Exist": the request named a model we sell, so the fault is the
    /// operator's `upstream_model`, not the customer's request.
    fn is_unknown_model(&self) -> bool {
        matches!(self, UpstreamError::Status { status, message }
            if *status == StatusCode::BAD_REQUEST
                && message.to_ascii_lowercase().contains("model not exist"))
    }

    /// Log it at the level the operator needs.
    pub fn log(&self, request_id: &str) {
        match self {
            _ if self.is_unknown_model() => tracing::error!(
                request_id,
                error = %self,
                "UPSTREAM DOES NOT KNOW THE MODEL: check models.<name>.upstream_model in the config"
            ),
            UpstreamError::Status { status, message }
                if *status == StatusCode::UNAUTHORIZED
                    || *status == StatusCode::PAYMENT_REQUIRED =>
            {
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

impl Upstream {
    /// Build the client.
    pub fn new(c: &UpstreamConfig) -> Result<Upstream, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(c.connect_timeout_secs))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("modelrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Upstream {
            http,
            chat_url: format!("{}/chat/completions", c.base_url),
            auth: format!("Bearer {}", c.api_key),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            request_timeout: Duration::from_secs(c.request_timeout_secs),
        })
    }

    /// POST a chat body; resolves when response headers arrive. A non-2xx status becomes
    /// `UpstreamError::Status` with upstream's message.
    pub async fn chat(
        &self,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let send = self
            .http
            .post(&self.chat_url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let wait = deadline.min(tokio::time::Instant::now() + self.idle_timeout);
        let resp = match tokio::time::timeout_at(wait, send).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = tokio::time::timeout_at(wait, read_limited(resp, 64 * 1024))
            .await
            .unwrap_or_default();
        Err(UpstreamError::Status {
            status,
            message: error_message(&body),
        })
    }
}

/// Read at most `limit` bytes of a body (error bodies only; they are small).
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Bytes {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= limit {
            buf.truncate(limit);
            break;
        }
    }
    Bytes::from(buf)
}

/// `error.message` of an OpenAI-shaped error body, else a short excerpt.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        })
}
