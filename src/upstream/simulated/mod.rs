//! A simulated DeepSeek API: a real HTTP server on loopback that speaks DeepSeek's wire formats,
//! OpenAI's `/chat/completions` and Anthropic's `/anthropic/v1/messages`.
//!
//! `modelrelay serve --demo` uses it so the gateway works without a DeepSeek account, and the
//! integration tests use it as a controllable upstream. Because the gateway forwards chat messages
//! unchanged, tests steer the simulator through directives embedded in message text, e.g.
//! `[[sim reply=5 reasoning=3 delay_ms=10 drop_after=2]]` (see [`SimulatedDeepSeek`]).
//!
//! What it reproduces faithfully, because the gateway's accounting depends on it: the `usage`
//! object (cache hit/miss split, reasoning tokens inside `completion_tokens`), usage riding on the
//! last content chunk rather than a separate `choices: []` chunk, `usage: null` on the other chunks
//! only with `stream_options.include_usage`, `: keep-alive` comments while queued (blank lines for
//! non-stream), DeepSeek's error bodies, and the failure modes seen in production (stalls that keep
//! sending keep-alives, connections cut mid-stream, error events mid-stream, non-JSON bodies).
//! The Anthropic route shares all of it (directives, token arithmetic, prefix cache, faults,
//! recording) and differs only in validation, `claude*` model mapping, usage fields (`input_tokens`
//! = cache misses, `cache_read_input_tokens` = hits) and its named SSE events.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Uri};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod anthropic;
mod anthropic_wire;
mod directives;
mod errors;
mod openai;
mod server;
mod stream;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_anthropic;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_anthropic_faults;

/// Configuration of a [`SimulatedDeepSeek`] instance.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The only key accepted (Bearer, or `x-api-key` on the Anthropic route); any other gets a 401.
    pub api_key: String,
    /// Reply text when a request has no `reply=` directive; `None` uses a built-in canned reply.
    pub default_reply: Option<String>,
    /// Delay between stream chunks unless a `delay_ms=` directive overrides it.
    pub chunk_delay: Duration,
    /// Emulate DeepSeek's context caching (per `user_id` prefix hits in multiples of 64 tokens).
    pub prefix_cache: bool,
    /// Model names accepted in `model`; others get DeepSeek's 400 "Model Not Exist".
    pub models: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        let models = [
            "deepseek-v4-flash",
            "deepseek-v4-pro",
            "deepseek-flash",
            "deepseek-chat",
            "deepseek-reasoner",
        ];
        SimOptions {
            api_key: "sk-simulated".to_owned(),
            default_reply: None,
            chunk_delay: Duration::ZERO,
            prefix_cache: false,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

/// A running simulated DeepSeek server; it stops when dropped or on [`SimulatedDeepSeek::shutdown`].
///
/// Directives `[[sim key=value …]]` anywhere in any message text (on the Anthropic route also in
/// `system` and in text, thinking, tool_use and tool_result blocks) steer a request (several merge,
/// later wins): `reply`, `reasoning`, `prompt`, `hit`, `delay_ms`, `first_delay_ms`,
/// `keepalive_ms`, `fail`, `stall_after`, `drop_after`, `error_after`, `no_usage`, `garbage`.
pub struct SimulatedDeepSeek {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// One chat or messages request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, starting at 0 (one sequence across both endpoints).
    pub index: usize,
    /// Which API the request came to.
    pub endpoint: Endpoint,
    /// The path and query string it was sent to, e.g. `/anthropic/v1/messages?beta=true`.
    pub path: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The raw `x-api-key` header, if any.
    pub x_api_key: Option<String>,
    /// Every header as received, so a test can check what was (not) forwarded.
    pub headers: HeaderMap,
    /// The parsed JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
    /// The DeepSeek model that answered (a `claude*` name mapped); `None` when refused.
    pub served_model: Option<String>,
    /// How the request ended so far.
    pub outcome: Outcome,
}

/// The API a recorded request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI's format: `POST /chat/completions` or `/v1/chat/completions`.
    ChatCompletions,
    /// Anthropic's format: `POST /anthropic/v1/messages` or `/anthropic/messages`.
    AnthropicMessages,
}

/// How a chat request ended, as observed by the simulator itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    InProgress,
    /// The whole answer (non-stream body, or stream through `[DONE]` / `message_stop`) was handed
    /// to the connection.
    Completed,
    /// The client went away while the answer was being produced normally.
    ClientDisconnected,
    /// Answered with this HTTP error status, or (500) an error event mid-stream.
    Failed(u16),
    /// The simulator cut the connection on purpose (`drop_after`) or because it was shut down.
    Dropped,
    /// The client went away while the simulator was stalling on purpose (`stall_after`).
    Stalled,
}

type CacheEntries = Vec<(Vec<Value>, u64)>;

const CACHE_ENTRIES_PER_USER: usize = 256;

struct Shared {
    opts: SimOptions,
    requests: Mutex<Vec<RecordedRequest>>,
    cache: Mutex<HashMap<String, CacheEntries>>,
    stop: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the simulator down with it; the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimulatedDeepSeek {
    /// Bind 127.0.0.1:0 and serve in a spawned task until dropped or `shutdown()`.
    pub async fn start(opts: SimOptions) -> io::Result<SimulatedDeepSeek> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener, opts).await
    }

    /// Same as [`SimulatedDeepSeek::start`] on a listener the caller bound.
    pub async fn start_on(
        listener: TcpListener,
        opts: SimOptions,
    ) -> io::Result<SimulatedDeepSeek> {
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            opts,
            requests: Mutex::new(Vec::new()),
            cache: Mutex::new(HashMap::new()),
            stop: stop_rx.clone(),
        });
        let app = server::router(shared.clone());
        let mut signal = stop_rx;
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stopped| *stopped).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulated DeepSeek server ended with an error");
            }
        });
        Ok(SimulatedDeepSeek { addr, shared, stop })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (loopback even when the listener was bound to an unspecified address).
    pub fn base_url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Every chat or messages request received so far (both endpoints), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Wait until request `index` (0-based arrival order) has an outcome other than `InProgress`,
    /// or the timeout passes; returns the outcome then (`InProgress` if it never arrived).
    pub async fn wait_outcome(&self, index: usize, timeout: Duration) -> Outcome {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let outcome = lock(&self.shared.requests)
                .get(index)
                .map(|r| r.outcome.clone());
            let outcome = outcome.unwrap_or(Outcome::InProgress);
            if outcome != Outcome::InProgress || deadline.is_some_and(|d| Instant::now() >= d) {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop accepting connections and cut the streams still running (their outcome becomes `Dropped`).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for SimulatedDeepSeek {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn record(&self, endpoint: Endpoint, uri: &Uri, headers: &HeaderMap, body: Value) -> usize {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut requests = lock(&self.requests);
        let index = requests.len();
        requests.push(RecordedRequest {
            index,
            endpoint,
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            authorization: header("authorization"),
            x_api_key: header("x-api-key"),
            headers: headers.clone(),
            body,
            served_model: None,
            outcome: Outcome::InProgress,
        });
        index
    }

    fn set_served(&self, index: usize, model: &str) {
        if let Some(r) = lock(&self.requests).get_mut(index) {
            r.served_model = Some(model.to_owned());
        }
    }

    fn set_outcome(&self, index: usize, outcome: Outcome) {
        if let Some(r) = lock(&self.requests).get_mut(index) {
            r.outcome = outcome;
        }
    }

    /// Longest remembered prefix this prompt starts with, in whole 64-token blocks as DeepSeek bills,
    /// and remember this prompt's own prefix (all but its last message) for later requests.
    fn cache_hit(&self, user: &str, messages: &[Value], counts: &[u64]) -> u64 {
        let mut cache = lock(&self.cache);
        let entries = cache.entry(user.to_owned()).or_default();
        let best = entries
            .iter()
            .filter(|(p, _)| messages.starts_with(p))
            .map(|(_, t)| *t)
            .max();
        if let Some((_, head)) = messages.split_last()
            && !head.is_empty()
            && !entries.iter().any(|(p, _)| p.as_slice() == head)
        {
            entries.push((head.to_vec(), 2 + counts[..head.len()].iter().sum::<u64>()));
            if entries.len() > CACHE_ENTRIES_PER_USER {
                entries.remove(0);
            }
        }
        best.unwrap_or(0) / 64 * 64
    }
}
