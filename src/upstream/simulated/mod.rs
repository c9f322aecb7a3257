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
//!
//! It also plays DeepSeek's accounts: several keys, each an account with a balance that answers
//! draw down at list prices (402 "Insufficient Balance" once it is gone, `GET /user/balance`),
//! an optional cap on requests in flight (429), faults a test sets per account at run time, and
//! a count of each account's requests in flight (see [`SimAccount`], [`AccountFault`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Uri};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::money::Usd;

pub use recorded::{Endpoint, Outcome, RecordedRequest};

mod accounts;
mod anthropic;
mod anthropic_wire;
mod directives;
mod errors;
mod gate;
mod openai;
mod recorded;
mod server;
mod stream;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_accounts;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_accounts_faults;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_anthropic;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_anthropic_faults;

/// Configuration of a [`SimulatedDeepSeek`] instance.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The default account's key (Bearer, or `x-api-key` on the Anthropic route); a key that is
    /// neither this nor one of `accounts` gets a 401.
    pub api_key: String,
    /// The default account's balance; `None` (the default) never runs out.
    pub balance: Option<SimBalance>,
    /// More accounts besides the default one, each with its own key and balance.
    pub accounts: Vec<SimAccount>,
    /// Charge DeepSeek's peak prices instead of off-peak ones (see also
    /// [`SimulatedDeepSeek::set_peak`]).
    pub peak: bool,
    /// DeepSeek's limit on one account's requests in flight (across models): past it a request
    /// gets 429 "Rate limit reached for requests". `None` (the default): no limit.
    pub concurrency_cap: Option<usize>,
    /// Reply text when a request has no `reply=` directive; `None` uses a built-in canned reply.
    pub default_reply: Option<String>,
    /// Delay between stream chunks unless a `delay_ms=` directive overrides it.
    pub chunk_delay: Duration,
    /// Emulate DeepSeek's context caching (per `user_id` prefix hits in multiples of 64 tokens).
    pub prefix_cache: bool,
    /// Model names accepted in `model`; others get DeepSeek's 400 "Model Not Exist".
    pub models: Vec<String>,
    /// How many of the latest requests [`SimulatedDeepSeek::requests`] keeps; `None` (the
    /// default) keeps them all, as tests want.
    pub keep_requests: Option<usize>,
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
            balance: None,
            accounts: Vec::new(),
            peak: false,
            concurrency_cap: None,
            default_reply: None,
            chunk_delay: Duration::ZERO,
            prefix_cache: false,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            keep_requests: None,
        }
    }
}

/// How many requests the demo's simulator keeps: none, since it reads none of them. A request
/// is kept whole, its parsed body included, and a body may be `server.max_body_bytes` (8 MiB):
/// the latest 100 of a client sending long conversations held ~1 GB for as long as the demo ran.
const DEMO_KEPT_REQUESTS: usize = 0;

impl SimOptions {
    /// What `serve --demo` runs: streams at a readable pace, the prefix cache on, and two
    /// accounts with DeepSeek-like balances — `sk-simulated` (USD 110.00, of which 10.00
    /// granted) and `sk-simulated-2` (USD 25.00, and CNY 50.00).
    pub fn demo() -> SimOptions {
        let first = SimBalance::usd(Usd::from_dollars(100)).with_granted(Usd::from_dollars(10));
        let second = SimBalance::usd(Usd::from_dollars(25)).with_cny(CnyBalance {
            granted_fen: 0,
            topped_up_fen: 5_000,
        });
        SimOptions {
            balance: Some(first),
            accounts: vec![SimAccount::new("sk-simulated-2").with_balance(second)],
            chunk_delay: Duration::from_millis(20),
            prefix_cache: true,
            // A demo may run for days and be sent bodies of megabytes: it keeps no request.
            keep_requests: Some(DEMO_KEPT_REQUESTS),
            ..SimOptions::default()
        }
    }

    /// Every account's key, the default account's first (a key given twice counts once).
    pub fn account_keys(&self) -> Vec<String> {
        let mut keys = vec![self.api_key.clone()];
        for a in &self.accounts {
            if !keys.contains(&a.api_key) {
                keys.push(a.api_key.clone());
            }
        }
        keys
    }
}

/// One more DeepSeek account of the simulator: its key and its balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAccount {
    /// The account's API key.
    pub api_key: String,
    /// Its balance; `None` never runs out.
    pub balance: Option<SimBalance>,
}

impl SimAccount {
    /// An account with this key and no balance limit.
    pub fn new(api_key: impl Into<String>) -> SimAccount {
        SimAccount {
            api_key: api_key.into(),
            balance: None,
        }
    }

    /// The same account with this balance.
    pub fn with_balance(mut self, balance: SimBalance) -> SimAccount {
        self.balance = Some(balance);
        self
    }
}

/// An account's money as `GET /user/balance` reports it. Answers draw the USD part down at
/// DeepSeek's list prices, the granted part first; the CNY part is only reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimBalance {
    /// USD granted by DeepSeek (promotions); spent first.
    pub granted: Usd,
    /// USD the owner paid in; spent once `granted` is gone, and what goes below zero when an
    /// answer costs more than was left.
    pub topped_up: Usd,
    /// A CNY balance reported beside the USD one; `None`: no CNY entry.
    pub cny: Option<CnyBalance>,
}

impl SimBalance {
    /// `amount` of topped-up USD, nothing granted, no CNY.
    pub fn usd(amount: Usd) -> SimBalance {
        SimBalance {
            topped_up: amount,
            ..SimBalance::default()
        }
    }

    /// The same balance with this much granted USD (on top of the topped-up part).
    pub fn with_granted(mut self, granted: Usd) -> SimBalance {
        self.granted = granted;
        self
    }

    /// The same balance with a CNY entry.
    pub fn with_cny(mut self, cny: CnyBalance) -> SimBalance {
        self.cny = Some(cny);
        self
    }

    /// The USD total (`total_balance`): granted plus topped up.
    pub fn total(&self) -> Usd {
        self.granted.saturating_add(self.topped_up)
    }
}

/// A CNY balance in whole fen (1/100 yuan); reported by `/user/balance`, never drawn down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CnyBalance {
    /// Granted yuan, in fen.
    pub granted_fen: i64,
    /// Topped-up yuan, in fen.
    pub topped_up_fen: i64,
}

/// A failure a test imposes on every request made with one account's key (on every route),
/// until cleared with `set_fault(key, None)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountFault {
    /// Answer this status at once with DeepSeek's body for it (e.g. 401, 402, 403, 429, 500,
    /// 503; Anthropic's shape on the Anthropic route).
    Status(u16),
    /// Wait this long before looking at the request, then answer it normally.
    Delay(Duration),
    /// Never answer: send no byte and keep the connection until the client gives up.
    Hang,
}

/// What the simulator charges for one answer at DeepSeek's list prices: `hit`, `miss` and
/// `output` tokens of `model` (`*pro*` names at pro's prices, any other at flash's), at peak or
/// off-peak prices, rounded up to the next nano-dollar (list prices make every token whole).
pub fn list_cost(model: &str, peak: bool, hit: u64, miss: u64, output: u64) -> Usd {
    accounts::list_cost(model, peak, hit, miss, output)
}

/// A running simulated DeepSeek server; it stops when dropped or on [`SimulatedDeepSeek::shutdown`].
///
/// Directives `[[sim key=value …]]` anywhere in any message text (on the Anthropic route also in
/// `system` and in text, thinking, tool_use and tool_result blocks) steer a request (several merge,
/// later wins): `reply`, `reasoning`, `prompt`, `hit`, `delay_ms`, `first_delay_ms`,
/// `keepalive_ms`, `fail`, `stall_after`, `drop_after`, `error_after`, `overloaded_after` (an
/// error event saying upstream is overloaded: Anthropic's `overloaded_error`), `garbage_after` (an
/// event that is not JSON after that many tokens, then the end marker), `no_usage`, `garbage`,
/// `drop_at_end` (the whole answer, usage included, then the connection cut before its end marker),
/// `error_at_end` (the same, then an error event in place of the end marker);
/// on the Anthropic route also `ping_keepalive` (a stall sends `ping` events, not comments),
/// `output_usage_only` (usage without its input counts), `zero_usage` (every count 0, both routes) and
/// `usage_mistyped` (counts written as strings: a whole answer's, a stream's `message_delta`).
///
/// Accounts are steered from the test through methods: [`SimulatedDeepSeek::set_balance`],
/// [`SimulatedDeepSeek::set_fault`], and read with [`SimulatedDeepSeek::balance`],
/// [`SimulatedDeepSeek::in_flight`], [`SimulatedDeepSeek::max_in_flight`].
pub struct SimulatedDeepSeek {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// A user's remembered prefixes: (how many messages, their hash, their prompt tokens). A hash,
/// not the messages, so the cache stays a few KB a user however long the prompts.
type CacheEntries = Vec<(usize, u64, u64)>;

const CACHE_ENTRIES_PER_USER: usize = 256;

struct Shared {
    opts: SimOptions,
    accounts: Arc<accounts::Accounts>,
    requests: Mutex<recorded::Log>,
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
            accounts: Arc::new(accounts::Accounts::new(&opts)),
            requests: Mutex::new(recorded::Log::new(opts.keep_requests)),
            opts,
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

    /// Every chat or messages request received so far (both endpoints), in arrival order (only
    /// the latest ones under [`SimOptions::keep_requests`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    /// Wait until request `index` (0-based arrival order) has an outcome other than `InProgress`,
    /// or the timeout passes; returns the outcome then (`InProgress` if it never arrived or is
    /// no longer kept).
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

    /// Every account's key, the default account's first.
    pub fn account_keys(&self) -> Vec<String> {
        self.shared.accounts.keys()
    }

    /// The requests made with `key`'s account, in arrival order.
    pub fn requests_of(&self, key: &str) -> Vec<RecordedRequest> {
        let requests = lock(&self.shared.requests);
        let of_key = |r: &&RecordedRequest| r.account.as_deref() == Some(key);
        requests.iter().filter(of_key).cloned().collect()
    }

    /// Replace an account's balance (`None`: never runs out); `false` when `key` is no account.
    pub fn set_balance(&self, key: &str, balance: Option<SimBalance>) -> bool {
        self.shared.accounts.set_balance(key, balance)
    }

    /// An account's USD total (`total_balance`, exact to the nano-dollar); `None` when it has
    /// no limit or `key` is no account.
    pub fn balance(&self, key: &str) -> Option<Usd> {
        self.shared.accounts.balance(key).map(|b| b.total())
    }

    /// An account's whole balance (granted, topped up, CNY); `None` as for [`Self::balance`].
    pub fn funds(&self, key: &str) -> Option<SimBalance> {
        self.shared.accounts.balance(key)
    }

    /// Impose a fault on every request made with `key` from now on, or clear it with `None`;
    /// `false` when `key` is no account. Requests already being answered are not affected.
    pub fn set_fault(&self, key: &str, fault: Option<AccountFault>) -> bool {
        self.shared.accounts.set_fault(key, fault)
    }

    /// Charge peak (`true`) or off-peak list prices from now on.
    pub fn set_peak(&self, peak: bool) {
        self.shared.accounts.set_peak(peak);
    }

    /// How many chat or messages requests of `key` are in flight now: counted from when their
    /// headers arrived until their answer (stream included) ended or the client went away.
    pub fn in_flight(&self, key: &str) -> usize {
        self.shared.accounts.gauge(key, None).0
    }

    /// The highest [`Self::in_flight`] of `key` since the start or the last
    /// [`Self::reset_max_in_flight`].
    pub fn max_in_flight(&self, key: &str) -> usize {
        self.shared.accounts.gauge(key, None).1
    }

    /// How many requests of `key` for the DeepSeek model `model` (a `claude*` name counts as
    /// the model it maps to) are in flight now, counted from their admission (valid, paid for,
    /// under the cap) until their answer ended.
    pub fn in_flight_for(&self, key: &str, model: &str) -> usize {
        self.shared.accounts.gauge(key, Some(model)).0
    }

    /// The highest [`Self::in_flight_for`] of `key` and `model` since the start or the last reset.
    pub fn max_in_flight_for(&self, key: &str, model: &str) -> usize {
        self.shared.accounts.gauge(key, Some(model)).1
    }

    /// Start every account's maxima again from its current counts.
    pub fn reset_max_in_flight(&self) {
        self.shared.accounts.reset_max();
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
    fn record(
        &self,
        endpoint: Endpoint,
        uri: &Uri,
        headers: &HeaderMap,
        body: Value,
        key: &str,
    ) -> usize {
        let account = self.accounts.known(key).then(|| key.to_owned());
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        lock(&self.requests).push(|index| RecordedRequest {
            index,
            endpoint,
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            authorization: header("authorization"),
            x_api_key: header("x-api-key"),
            account,
            headers: headers.clone(),
            body,
            served_model: None,
            outcome: Outcome::InProgress,
        })
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
        // prefixes[i]: the hash of messages[..=i] (JSON equality: an object's key order aside).
        let mut hasher = DefaultHasher::new();
        let prefixes: Vec<u64> = messages
            .iter()
            .map(|m| {
                m.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let is_prefix = |len: usize, hash: u64| {
            len.checked_sub(1)
                .and_then(|last| prefixes.get(last))
                .is_some_and(|h| *h == hash)
        };
        let mut cache = lock(&self.cache);
        let entries = cache.entry(user.to_owned()).or_default();
        let best = entries
            .iter()
            .filter(|(len, hash, _)| is_prefix(*len, *hash))
            .map(|(_, _, tokens)| *tokens)
            .max();
        let head = messages.len().saturating_sub(1);
        if let Some(hash) = head.checked_sub(1).and_then(|last| prefixes.get(last))
            && !entries.iter().any(|(len, h, _)| *len == head && h == hash)
        {
            entries.push((head, *hash, 2 + counts[..head].iter().sum::<u64>()));
            if entries.len() > CACHE_ENTRIES_PER_USER {
                entries.remove(0);
            }
        }
        best.unwrap_or(0) / 64 * 64
    }
}
