//! A simulated DeepSeek API: a real HTTP server on loopback that speaks DeepSeek's wire format.
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

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use directives::{Plan, plan};

mod directives;

/// Configuration of a [`SimulatedDeepSeek`] instance.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The only Bearer key accepted; any other (or none) gets DeepSeek's 401.
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
/// Directives `[[sim key=value …]]` anywhere in any message text steer a chat request (several
/// merge, later wins): `reply`, `reasoning`, `prompt`, `hit`, `delay_ms`, `first_delay_ms`,
/// `keepalive_ms`, `fail`, `stall_after`, `drop_after`, `error_after`, `no_usage`, `garbage`.
pub struct SimulatedDeepSeek {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// One chat request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, starting at 0.
    pub index: usize,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The parsed JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
    /// How the request ended so far.
    pub outcome: Outcome,
}

/// How a chat request ended, as observed by the simulator itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    InProgress,
    /// The whole answer (non-stream body, or stream through `[DONE]`) was handed to the connection.
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

type Chunk = io::Result<Bytes>;
type CacheEntries = Vec<(Vec<Value>, u64)>;

const KEEPALIVE: &str = ": keep-alive\n\n";
const DONE: &str = "data: [DONE]\n\n";
const ERROR_EVENT: &str = "data: {\"error\":{\"message\":\"Internal server error\",\"type\":\"server_error\",\
\"param\":null,\"code\":\"internal_error\"}}\n\n";
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
        let app = Router::new()
            .route("/chat/completions", post(chat))
            .route("/v1/chat/completions", post(chat))
            .route("/models", get(models))
            .route("/v1/models", get(models))
            .route("/user/balance", get(balance))
            .route("/v1/user/balance", get(balance))
            // DeepSeek takes 1M-token prompts; axum's 2 MB default would reject them.
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
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

    /// Every chat request received so far, in arrival order.
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
    fn record(&self, authorization: Option<String>, body: Value) -> usize {
        let mut requests = lock(&self.requests);
        let index = requests.len();
        requests.push(RecordedRequest {
            index,
            authorization,
            body,
            outcome: Outcome::InProgress,
        });
        index
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

/// An error answered in DeepSeek's (OpenAI-shaped) body.
struct ApiError {
    status: u16,
    message: String,
    kind: &'static str,
    code: &'static str,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>, kind: &'static str) -> Self {
        let code = if status >= 500 {
            "internal_error"
        } else {
            "invalid_request_error"
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
        }
    }

    /// The canned body DeepSeek sends for each documented status (the `fail=` directive).
    fn canned(status: u16) -> Self {
        let (message, kind) = match status {
            400 => ("Invalid request format", "invalid_request_error"),
            401 => (
                "Authentication Fails, Your api key: ****xxxx is invalid",
                "authentication_error",
            ),
            402 => ("Insufficient Balance", "unknown_error"),
            422 => ("Invalid parameters", "invalid_request_error"),
            429 => ("Rate limit reached for requests", "rate_limit_error"),
            500 => (
                "Server error, please retry your request after a brief wait",
                "server_error",
            ),
            503 => (
                "Server overloaded, please retry your request after a brief wait",
                "server_error",
            ),
            _ => ("Simulated error", "unknown_error"),
        };
        ApiError::new(status, message, kind)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}});
        (status, axum::Json(body)).into_response()
    }
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn check_auth(opts: &SimOptions, auth: Option<&str>) -> Result<(), ApiError> {
    let key = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key == opts.api_key {
        return Ok(());
    }
    let tail_start = key.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    let message = format!(
        "Authentication Fails, Your api key: ****{} is invalid",
        &key[tail_start..]
    );
    Err(ApiError::new(401, message, "authentication_error"))
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&sh.opts, authorization(&headers).as_deref()) {
        return e.into_response();
    }
    let data: Vec<Value> = sh
        .opts
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "deepseek"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn balance(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&sh.opts, authorization(&headers).as_deref()) {
        return e.into_response();
    }
    axum::Json(json!({"is_available": true, "balance_infos": [{"currency": "USD", "total_balance": "100.00",
        "granted_balance": "0.00", "topped_up_balance": "100.00"}]}))
    .into_response()
}

async fn chat(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = authorization(&headers);
    let parsed = serde_json::from_slice::<Value>(&body);
    let index = sh.record(
        auth.clone(),
        parsed.as_ref().map_or(Value::Null, Clone::clone),
    );
    let plan = match plan(&sh, auth.as_deref(), parsed) {
        Ok(plan) => plan,
        Err(e) => {
            sh.set_outcome(index, Outcome::Failed(e.status));
            return e.into_response();
        }
    };
    // The body is fed through a small channel so that a failed send tells us hyper dropped the
    // body, i.e. the client went away; an `Err` item makes hyper cut the connection.
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let content_type = if plan.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let producer = sh.clone();
    tokio::spawn(async move {
        let outcome = run(plan, tx, producer.stop.clone()).await;
        producer.set_outcome(index, outcome);
    });
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Why production of a body stopped early.
enum Halt {
    /// The body channel is closed: the client went away.
    Gone,
    /// The simulator is shutting down.
    Shutdown,
}

/// The producing end of a response body.
struct Out {
    tx: mpsc::Sender<Chunk>,
    stop: watch::Receiver<bool>,
}

impl Out {
    async fn send(&mut self, bytes: impl Into<Bytes>) -> Result<(), Halt> {
        tokio::select! {
            sent = self.tx.send(Ok(bytes.into())) => sent.map_err(|_| Halt::Gone),
            _ = self.stop.wait_for(|s| *s) => Err(Halt::Shutdown),
        }
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), Halt> {
        if d.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Halt::Shutdown),
        }
    }

    /// Wait `total`, sending `beat` every `every` meanwhile, as DeepSeek does while queued.
    async fn idle(
        &mut self,
        total: Duration,
        every: Duration,
        beat: &'static str,
    ) -> Result<(), Halt> {
        // An end beyond what `Instant` can represent means "forever" (how stalls are made).
        let end = Instant::now().checked_add(total);
        loop {
            let left = end.map_or(every, |e| e.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(());
            }
            self.sleep(every.min(left)).await?;
            if end.is_none_or(|e| Instant::now() < e) {
                self.send(beat).await?;
            }
        }
    }

    /// Cut the connection without a clean end.
    async fn abort(self) -> Outcome {
        abort(&self.tx).await
    }
}

async fn abort(tx: &mpsc::Sender<Chunk>) -> Outcome {
    let _ = tx
        .send(Err(io::Error::other("simulated connection drop")))
        .await;
    Outcome::Dropped
}

async fn run(p: Plan, tx: mpsc::Sender<Chunk>, stop: watch::Receiver<bool>) -> Outcome {
    let out = Out {
        tx: tx.clone(),
        stop,
    };
    let result = if p.stream {
        stream_body(&p, out).await
    } else {
        plain_body(&p, out).await
    };
    match result {
        Ok(outcome) => outcome,
        Err(Halt::Gone) => Outcome::ClientDisconnected,
        Err(Halt::Shutdown) => abort(&tx).await,
    }
}

async fn plain_body(p: &Plan, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, "\n").await?;
    if p.d.garbage {
        out.send("<html><body><h1>502 Bad Gateway</h1></body></html>")
            .await?;
        return Ok(Outcome::Completed);
    }
    let mut message = json!({"role": "assistant", "content": p.content.concat()});
    if !p.reasoning.is_empty()
        && let Some(m) = message.as_object_mut()
    {
        m.insert(
            "reasoning_content".to_owned(),
            Value::String(p.reasoning.concat()),
        );
    }
    let mut body = json!({"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": p.finish}]});
    if let (Some(usage), Some(b)) = (&p.usage, body.as_object_mut()) {
        b.insert("usage".to_owned(), usage.clone());
    }
    if let Some(b) = body.as_object_mut() {
        b.insert("system_fingerprint".to_owned(), json!("fp_sim"));
    }
    let text = body.to_string();
    if p.d.drop_after.is_some() {
        out.send(text.as_bytes()[..text.len() / 2].to_vec()).await?;
        return Ok(out.abort().await);
    }
    out.send(text).await?;
    Ok(Outcome::Completed)
}

fn chunk(p: &Plan, delta: Value, finish: Option<&str>, usage: Option<Value>) -> String {
    let mut c = json!({"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
        "system_fingerprint": "fp_sim",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    if let (Some(u), Some(obj)) = (usage, c.as_object_mut()) {
        obj.insert("usage".to_owned(), u);
    }
    format!("data: {c}\n\n")
}

async fn stream_body(p: &Plan, mut out: Out) -> Result<Outcome, Halt> {
    out.idle(p.first_delay, p.keepalive, KEEPALIVE).await?;
    let total = p.reasoning.len() + p.content.len();
    if p.d.garbage {
        // Looks like SSE but carries no JSON, to exercise the gateway's parse-failure path.
        for i in 0..=total {
            out.sleep(p.chunk_delay).await?;
            out.send(format!("data: {{\"id\": garbage chunk {i}\n\n"))
                .await?;
        }
        out.send(DONE).await?;
        return Ok(Outcome::Completed);
    }
    let thinking = !p.reasoning.is_empty();
    let null_usage = || p.include_usage.then_some(Value::Null);
    let first = if thinking {
        json!({"role": "assistant", "content": null, "reasoning_content": ""})
    } else {
        json!({"role": "assistant", "content": ""})
    };
    out.send(chunk(p, first, None, null_usage())).await?;
    let at = |n: Option<u64>, i: usize| {
        n.is_some_and(|n| usize::try_from(n).unwrap_or(usize::MAX).min(total) == i)
    };
    for i in 0..=total {
        if at(p.d.drop_after, i) {
            return Ok(out.abort().await);
        }
        if at(p.d.error_after, i) {
            out.send(ERROR_EVENT).await?;
            return Ok(Outcome::Failed(500));
        }
        if at(p.d.stall_after, i) {
            // Only keep-alives from now on; they also give the disconnect detection a chance to fire.
            return match out.idle(Duration::MAX, p.keepalive, KEEPALIVE).await {
                Ok(()) | Err(Halt::Gone) => Ok(Outcome::Stalled),
                Err(halt) => Err(halt),
            };
        }
        if i == total {
            break;
        }
        out.sleep(p.chunk_delay).await?;
        let delta = match p.reasoning.get(i) {
            Some(word) => json!({"content": null, "reasoning_content": word}),
            None if thinking => {
                json!({"content": p.content[i - p.reasoning.len()], "reasoning_content": null})
            }
            None => json!({"content": p.content[i - p.reasoning.len()]}),
        };
        out.send(chunk(p, delta, None, null_usage())).await?;
    }
    out.sleep(p.chunk_delay).await?;
    out.send(chunk(
        p,
        json!({"content": ""}),
        Some(p.finish),
        p.usage.clone(),
    ))
    .await?;
    out.send(DONE).await?;
    Ok(Outcome::Completed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const KEY: &str = "sk-simulated";

    async fn sim(prefix_cache: bool) -> SimulatedDeepSeek {
        SimulatedDeepSeek::start(SimOptions {
            prefix_cache,
            ..SimOptions::default()
        })
        .await
        .unwrap()
    }

    fn req(text: &str, extra: Value) -> Value {
        let mut body =
            json!({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": text}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    }

    async fn post(s: &SimulatedDeepSeek, key: &str, body: &Value) -> reqwest::Response {
        let url = format!("{}/v1/chat/completions", s.base_url());
        reqwest::Client::new()
            .post(url)
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_json(s: &SimulatedDeepSeek, body: Value) -> (u16, Value) {
        let resp = post(s, KEY, &body).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(text.trim_start()).unwrap())
    }

    /// The `data:` payloads of an SSE body, in order.
    fn events(text: &str) -> Vec<String> {
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    fn prompt_of(text: &str) -> u64 {
        2 + 4 + (text.len() as u64).div_ceil(4)
    }

    #[tokio::test]
    async fn non_stream_usage_and_counts() {
        let s = sim(false).await;
        let text = "[[sim reply=5 reasoning=3]] hello there";
        let (status, v) = post_json(&s, req(text, json!({}))).await;
        assert_eq!(status, 200);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "deepseek-v4-flash");
        assert_eq!(v["system_fingerprint"], "fp_sim");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(
            choice["message"]["content"],
            "alpha bravo charlie delta echo"
        );
        assert_eq!(choice["message"]["reasoning_content"], "hmm, let me");
        let p = prompt_of(text);
        let expected = json!({"prompt_tokens": p, "completion_tokens": 8, "total_tokens": p + 8,
            "prompt_tokens_details": {"cached_tokens": 0}, "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": p, "completion_tokens_details": {"reasoning_tokens": 3}});
        assert_eq!(v["usage"], expected);
        assert_eq!(
            s.wait_outcome(0, Duration::from_secs(2)).await,
            Outcome::Completed
        );
        let recorded = s.requests();
        assert_eq!(
            recorded[0].authorization.as_deref(),
            Some("Bearer sk-simulated")
        );
        assert_eq!(recorded[0].body["messages"][0]["content"], text);

        // Default reply, content parts, no reasoning key.
        let body = json!({"model": "deepseek-chat", "messages": [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "abcde"}, {"type": "text", "text": "fgh"}]}]});
        let (_, v) = post_json(&s, body).await;
        assert!(
            v["choices"][0]["message"]
                .get("reasoning_content")
                .is_none()
        );
        assert!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("simulated DeepSeek")
        );
        assert_eq!(v["usage"]["prompt_tokens"], 2 + (4 + 1) + (4 + 2));
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            0
        );
    }

    #[tokio::test]
    async fn max_tokens_caps_with_length_and_hit_is_clamped() {
        let s = sim(false).await;
        let (_, v) = post_json(
            &s,
            req("[[sim reasoning=3 reply=10]]", json!({"max_tokens": 5})),
        )
        .await;
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["choices"][0]["message"]["content"], "alpha bravo ");
        assert_eq!(v["usage"]["completion_tokens"], 5);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            3
        );

        let (_, v) = post_json(
            &s,
            req("[[sim prompt=1000 hit=5000]] [[sim reply=1]]", json!({})),
        )
        .await;
        let u = &v["usage"];
        assert_eq!(
            (
                u["prompt_tokens"].as_u64(),
                u["prompt_cache_hit_tokens"].as_u64()
            ),
            (Some(1000), Some(1000))
        );
        assert_eq!(
            (
                u["prompt_cache_miss_tokens"].as_u64(),
                u["total_tokens"].as_u64()
            ),
            (Some(0), Some(1001))
        );
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 1000);
    }

    #[tokio::test]
    async fn stream_chunks_with_and_without_include_usage() {
        let s = sim(false).await;
        for include in [true, false] {
            let body = req(
                "[[sim reasoning=2 reply=3]]",
                json!({"stream": true, "stream_options": {"include_usage": include}}),
            );
            let resp = post(&s, KEY, &body).await;
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            let ev = events(&resp.text().await.unwrap());
            assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
            let chunks: Vec<Value> = ev[..ev.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert_eq!(chunks.len(), 1 + 5 + 1);
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(chunks[0]["choices"][0]["delta"]["reasoning_content"], "");
            let reasoning: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
                .collect();
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(
                (reasoning.as_str(), content.as_str()),
                ("hmm, let", "alpha bravo charlie")
            );
            let (last, rest) = chunks.split_last().unwrap();
            assert_eq!(last["choices"][0]["finish_reason"], "stop");
            assert_eq!(last["choices"][0]["delta"], json!({"content": ""}));
            assert_eq!(last["usage"]["completion_tokens"], 5);
            assert_eq!(
                last["usage"]["completion_tokens_details"]["reasoning_tokens"],
                2
            );
            for c in rest {
                assert!(c["choices"][0]["finish_reason"].is_null());
                assert_eq!(c["object"], "chat.completion.chunk");
                assert_eq!(c.get("usage"), include.then_some(&Value::Null));
            }
        }
        assert_eq!(
            s.wait_outcome(1, Duration::from_secs(2)).await,
            Outcome::Completed
        );
    }

    #[tokio::test]
    async fn auth_validation_and_canned_failures() {
        let s = sim(false).await;
        let resp = post(&s, "sk-wrong-key-1234", &req("hi", json!({}))).await;
        assert_eq!(resp.status().as_u16(), 401);
        let expected = json!({"error": {"message": "Authentication Fails, Your api key: ****1234 is invalid",
            "type": "authentication_error", "param": null, "code": "invalid_request_error"}});
        assert_eq!(resp.json::<Value>().await.unwrap(), expected);
        assert_eq!(
            s.wait_outcome(0, Duration::ZERO).await,
            Outcome::Failed(401)
        );
        let models = reqwest::Client::new()
            .get(format!("{}/models", s.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(models.status().as_u16(), 401);

        let (status, v) = post_json(&s, req("[[sim fail=402]]", json!({}))).await;
        assert_eq!(status, 402);
        let expected = json!({"error": {"message": "Insufficient Balance", "type": "unknown_error", "param": null,
            "code": "invalid_request_error"}});
        assert_eq!(v, expected);
        assert_eq!(
            s.wait_outcome(1, Duration::ZERO).await,
            Outcome::Failed(402)
        );

        let (status, v) = post_json(
            &s,
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(
            (status, v["error"]["message"].as_str()),
            (400, Some("Model Not Exist"))
        );
        let (status, _) = post_json(&s, json!({"model": "deepseek-v4-pro", "messages": []})).await;
        assert_eq!(status, 422);
        let (status, _) = post_json(&s, req("x", json!({"user_id": "bad id!"}))).await;
        assert_eq!(status, 400);
        let (status, _) = post_json(&s, req("x", json!({"max_tokens": 0}))).await;
        assert_eq!(status, 422);
        let url = format!("{}/chat/completions", s.base_url());
        let resp = reqwest::Client::new()
            .post(url)
            .bearer_auth(KEY)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Failed to deserialize the JSON body")
        );

        let client = reqwest::Client::new();
        let m: Value = client
            .get(format!("{}/v1/models", s.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            m["data"][0],
            json!({"id": "deepseek-v4-flash", "object": "model", "owned_by": "deepseek"})
        );
        let b: Value = client
            .get(format!("{}/user/balance", s.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(b["balance_infos"][0]["total_balance"], "100.00");
    }

    #[tokio::test]
    async fn keepalives_while_waiting_for_first_token() {
        let s = sim(false).await;
        let directive = "[[sim reply=2 first_delay_ms=250 keepalive_ms=40]]";
        let text = post(&s, KEY, &req(directive, json!({"stream": true})))
            .await
            .text()
            .await
            .unwrap();
        let first_data = text.find("data: ").unwrap();
        assert!(
            text[..first_data].matches(KEEPALIVE).count() >= 3,
            "{text:?}"
        );

        let text = post(&s, KEY, &req(directive, json!({})))
            .await
            .text()
            .await
            .unwrap();
        assert!(text.starts_with("\n\n\n"), "{text:?}");
        let v: Value = serde_json::from_str(text.trim_start()).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 2);
    }

    #[tokio::test]
    async fn drop_error_and_garbage() {
        let s = sim(false).await;
        let resp = post(
            &s,
            KEY,
            &req("[[sim reply=10 drop_after=3]]", json!({"stream": true})),
        )
        .await;
        let mut body = resp.bytes_stream();
        let (mut seen, mut failed) = (String::new(), false);
        while let Some(item) = body.next().await {
            match item {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => failed = true,
            }
        }
        assert!(
            failed && !seen.contains("[DONE]") && !seen.contains("usage"),
            "{seen:?}"
        );
        assert_eq!(events(&seen).len(), 4);
        assert_eq!(
            s.wait_outcome(0, Duration::from_secs(2)).await,
            Outcome::Dropped
        );

        assert!(
            post(&s, KEY, &req("[[sim drop_after=0]]", json!({})))
                .await
                .text()
                .await
                .is_err()
        );
        assert_eq!(
            s.wait_outcome(1, Duration::from_secs(2)).await,
            Outcome::Dropped
        );

        let text = post(
            &s,
            KEY,
            &req("[[sim reply=5 error_after=2]]", json!({"stream": true})),
        )
        .await
        .text()
        .await
        .unwrap();
        let ev = events(&text);
        let last: Value = serde_json::from_str(ev.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "internal_error");
        assert_eq!(ev.len(), 4);
        assert_eq!(
            s.wait_outcome(2, Duration::from_secs(2)).await,
            Outcome::Failed(500)
        );

        let text = post(&s, KEY, &req("[[sim garbage=1]]", json!({})))
            .await
            .text()
            .await
            .unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err());
        let text = post(
            &s,
            KEY,
            &req("[[sim garbage=1 reply=2]]", json!({"stream": true})),
        )
        .await
        .text()
        .await
        .unwrap();
        let ev = events(&text);
        assert!(
            ev[..ev.len() - 1]
                .iter()
                .all(|e| serde_json::from_str::<Value>(e).is_err())
        );

        let (_, v) = post_json(&s, req("[[sim reply=1 no_usage=1]]", json!({}))).await;
        assert!(v.get("usage").is_none());
    }

    #[tokio::test]
    async fn client_disconnect_and_stall_are_detected() {
        let s = sim(false).await;
        for (directive, expected) in [
            (
                "[[sim reply=1000 delay_ms=10]]",
                Outcome::ClientDisconnected,
            ),
            (
                "[[sim reply=1000 stall_after=2 keepalive_ms=10]]",
                Outcome::Stalled,
            ),
        ] {
            let resp = post(&s, KEY, &req(directive, json!({"stream": true}))).await;
            let mut body = resp.bytes_stream();
            let mut seen = String::new();
            while events(&seen).len() < 3 {
                seen.push_str(&String::from_utf8_lossy(
                    &body.next().await.unwrap().unwrap(),
                ));
            }
            drop(body);
            let index = s.requests().len() - 1;
            assert_eq!(
                s.wait_outcome(index, Duration::from_secs(5)).await,
                expected
            );
        }
    }

    #[tokio::test]
    async fn shutdown_cuts_running_streams() {
        let s = sim(false).await;
        let body = req(
            "[[sim reply=5 stall_after=1 keepalive_ms=10]]",
            json!({"stream": true}),
        );
        let mut body = post(&s, KEY, &body).await.bytes_stream();
        assert!(body.next().await.unwrap().is_ok());
        s.shutdown();
        let mut failed = false;
        while let Some(item) = body.next().await {
            failed |= item.is_err();
        }
        assert!(failed);
        assert_eq!(
            s.wait_outcome(0, Duration::from_secs(2)).await,
            Outcome::Dropped
        );
    }

    #[tokio::test]
    async fn prefix_cache_per_user() {
        let s = sim(true).await;
        let system = json!({"role": "system", "content": "a".repeat(1000)});
        let turn1 = json!({"model": "deepseek-v4-pro", "user_id": "u-1",
            "messages": [system, {"role": "user", "content": "[[sim reply=2]] hi"}]});
        let (_, v) = post_json(&s, turn1.clone()).await;
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 0);
        let mut turn2 = turn1.clone();
        let msgs = turn2["messages"].as_array_mut().unwrap();
        msgs.push(json!({"role": "assistant", "content": "alpha bravo"}));
        msgs.push(json!({"role": "user", "content": "more"}));
        let (_, v) = post_json(&s, turn2.clone()).await;
        // The system message is 2 + 4 + 250 = 256 tokens: exactly four 64-token blocks.
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 256);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 256);
        let p = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            v["usage"]["prompt_cache_miss_tokens"].as_u64(),
            Some(p - 256)
        );
        turn2["user_id"] = json!("someone-else");
        let (_, v) = post_json(&s, turn2).await;
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 0);
    }
}
