//! Everything about talking to DeepSeek: one pooled `reqwest::Client` with the operator's key,
//! sending a request to an endpoint, reading its answer (a JSON body or an event stream) under
//! the idle and total timers, and classifying every failure as an [`UpstreamError`].
//!
//! The customer side — what a failure means to a customer, billing, the error shapes — is the
//! gateway's; nothing here imports it.

mod error;
mod reply;
pub mod simulated;
pub mod sse;

use std::time::Duration;

use bytes::Bytes;

use crate::config::UpstreamConfig;

pub use error::UpstreamError;
pub use reply::{EventStream, Reply};

/// An upstream API endpoint, relative to `upstream.base_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /chat/completions` (the OpenAI format).
    ChatCompletions,
    /// `POST /anthropic/v1/messages` (the Anthropic format).
    Messages,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Messages => "/anthropic/v1/messages",
        }
    }
}

/// The upstream API.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    chat_url: String,
    messages_url: String,
    auth: String,
    /// No data for this long (keep-alive comments do not count) ends a request.
    pub idle_timeout: Duration,
    /// A whole request may take this long.
    pub request_timeout: Duration,
    /// Largest event accepted in a stream.
    max_event: usize,
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
            chat_url: format!("{}{}", c.base_url, Endpoint::ChatCompletions.path()),
            messages_url: format!("{}{}", c.base_url, Endpoint::Messages.path()),
            auth: format!("Bearer {}", c.api_key),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            request_timeout: Duration::from_secs(c.request_timeout_secs),
            max_event: c.max_event_bytes,
        })
    }

    /// The endpoint's URL, built once at start (not per request).
    fn url(&self, endpoint: Endpoint) -> &str {
        match endpoint {
            Endpoint::ChatCompletions => &self.chat_url,
            Endpoint::Messages => &self.messages_url,
        }
    }

    /// POST a JSON body to `endpoint`; resolves when response headers arrive (or the idle or
    /// total timer runs out first). A non-2xx status becomes [`UpstreamError::Status`] with
    /// upstream's message.
    pub async fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, UpstreamError> {
        let send = self
            .http
            .post(self.url(endpoint))
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
            return Ok(Reply::new(
                resp,
                self.idle_timeout,
                deadline,
                self.max_event,
            ));
        }
        let body = tokio::time::timeout_at(wait, read_limited(resp, 64 * 1024))
            .await
            .unwrap_or_default();
        Err(error::status_error(status, &body))
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
