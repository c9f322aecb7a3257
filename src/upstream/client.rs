//! The client: the pool of accounts behind one HTTP client ([`super::http`]), sending with
//! failover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use hyper::body::Incoming;

use super::account::{self, Account, DisabledBy};
use super::error::{self, UpstreamError};
use super::http::{self, BuildError, HttpClient, SendError};
use super::pool::{NoSlot, Pool};
use super::reply::Reply;
use super::watch;
use crate::activity::Activity;
use crate::config::Config;

/// Where one request stands on its way upstream, shared by the request's pending settlement
/// and [`Upstream::send`]: whether DeepSeek may have seen it, and on which account.
#[derive(Debug, Default)]
pub struct Dispatch {
    /// Set once the request is being written to an account's open connection (the upstream
    /// body sets it when hyper takes it); cleared when an attempt fails over, as DeepSeek
    /// bills nothing for a refused one. Until then a client that goes away owes nothing.
    pub sent: Arc<AtomicBool>,
    /// Its client went away (a whole answer read on without it): an attempt that fails is not
    /// tried again elsewhere — that would send a request nobody waits for, and bill it (found
    /// by a review).
    pub abandoned: AtomicBool,
    /// The accounts of the latest attempt and of the latest one that reached its account.
    accounts: std::sync::Mutex<Accounts>,
}

#[derive(Debug, Default)]
struct Accounts {
    attempting: Option<Arc<str>>,
    reached: Option<Arc<str>>,
}

impl Dispatch {
    /// The account the request last reached (its ledger row names it): the latest attempt's
    /// once that attempt is on the wire, else the latest earlier attempt that was (an attempt
    /// still connecting, or refused a connection, reached none).
    pub fn reached(&self) -> Option<Arc<str>> {
        let sent = self.sent.load(Ordering::Acquire);
        let a = self.accounts();
        if sent {
            a.attempting.clone()
        } else {
            a.reached.clone()
        }
    }

    fn attempting(&self, name: &Arc<str>) {
        self.accounts().attempting = Some(name.clone());
    }

    /// The latest attempt failed: the request is back in the queue, not sent.
    fn failed_over(&self) {
        if self.sent.swap(false, Ordering::AcqRel) {
            let mut a = self.accounts();
            a.reached = a.attempting.clone();
        }
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        // A poisoned lock still holds the last names written (plain stores).
        match self.accounts.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        }
    }
}

/// How long an unused connection to upstream stays in a client's pool.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// An upstream API endpoint, relative to an account's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /chat/completions` (the OpenAI format).
    ChatCompletions,
    /// `POST /anthropic/v1/messages` (the Anthropic format).
    Messages,
}

/// The upstream API: the pool and how to reach it.
#[derive(Clone)]
pub struct Upstream {
    /// Sends the API calls (the answer path).
    http: HttpClient,
    /// Reads balances and probes accounts (a request a minute: reqwest's conveniences cost
    /// nothing there).
    pub(super) watch_http: reqwest::Client,
    pub(super) pool: Arc<Pool>,
    /// No data for this long ends a request (a stream's keep-alive comments do not count; a
    /// whole answer's blank lines do, being all it sends until it is done).
    pub idle_timeout: Duration,
    /// A whole request may take this long.
    pub request_timeout: Duration,
    /// Largest event accepted in a stream.
    max_event: usize,
    /// How long a request waits for a slot when every account is at its cap.
    queue_timeout: Duration,
    /// Attempts that failed over to another account.
    failovers: Arc<AtomicU64>,
    /// Where account state changes are announced (the console, the log).
    pub(super) activity: Activity,
    /// Balance readings and probes (see [`watch`]).
    pub(crate) watch: Arc<watch::Watch>,
}

impl Upstream {
    /// Build the client and the pool of the configured accounts.
    pub fn new(c: &Config, activity: Activity) -> Result<Upstream, BuildError> {
        let u = &c.upstream;
        let http = HttpClient::new(Duration::from_secs(u.connect_timeout_secs), POOL_IDLE)?;
        let watch_http =
            watch::http_client(Duration::from_secs(u.connect_timeout_secs), POOL_IDLE)?;
        let models: Vec<String> = c.models.keys().cloned().collect();
        let accounts =
            u.resolved_accounts()
                .iter()
                .map(|a| {
                    let caps = models
                        .iter()
                        .map(|m| {
                            a.max_in_flight.get(m).copied().unwrap_or_else(|| {
                                c.models.get(m).map_or(500, |mc| mc.max_in_flight)
                            })
                        })
                        .collect();
                    Arc::new(Account::new(a, caps))
                })
                .collect();
        Ok(Upstream {
            http,
            watch_http,
            pool: Arc::new(Pool::new(accounts, models, activity.clone())),
            idle_timeout: Duration::from_secs(u.idle_timeout_secs),
            request_timeout: Duration::from_secs(u.request_timeout_secs),
            max_event: u.max_event_bytes,
            queue_timeout: Duration::from_millis(u.queue_timeout_ms),
            failovers: Arc::new(AtomicU64::new(0)),
            activity,
            watch: Arc::new(watch::Watch::new(u)),
        })
    }

    /// The pool (its accounts, for status views).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// True when no account may serve as far as anyone knows (see [`Account::may_serve`]):
    /// every one disabled, or its key refused at its last balance check. The storefront then
    /// sells no key that could not be used.
    pub fn none_may_serve(&self) -> bool {
        !self.pool.accounts.iter().any(|a| a.may_serve())
    }

    /// Attempts that failed over to another account since start.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// POST a JSON body for `model` (a model id) to `endpoint` on the least busy healthy
    /// account; resolves when response headers arrive. An attempt that fails before any byte
    /// came back — unreachable, timed out, 429, 5xx, the account refused (401/403/402), or
    /// DeepSeek's "Model Not Exist" (the account's, not the request's) — is tried again on
    /// another account, at most once per account; upstream's 400/422 (the request's own
    /// fault) is not. Every account at its cap for the whole queue timeout is
    /// [`UpstreamError::Busy`]. `dispatch` tells the caller whether the request may have
    /// reached DeepSeek (a client that goes away before then owes nothing: queued, or
    /// connecting) and on which account.
    pub async fn send(
        &self,
        endpoint: Endpoint,
        model: &str,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
        dispatch: &Dispatch,
    ) -> Result<Reply, UpstreamError> {
        let m = self.pool.model_slot(model).unwrap_or(0);
        let body = Bytes::from(body);
        let mut tried = Vec::new();
        let mut last: Option<UpstreamError> = None;
        loop {
            let mut slot = match self.pool.acquire(m, &tried, self.queue_timeout).await {
                Ok(s) => s,
                // The others stayed full for the whole queue timeout: busy (503 with
                // Retry-After), which is what a retry should wait for, even after a failure
                // on one account (its error is in the log and `upstream status`).
                Err(NoSlot::Busy) => return Err(UpstreamError::Busy),
                Err(NoSlot::NoneUsable) => return Err(last.unwrap_or(UpstreamError::NoAccount)),
            };
            // (The pool counted the attempt in `account.requests` when it gave the slot.)
            let account = slot.account().clone();
            // Out of the queue; `dispatch.sent` is set once the request is on the wire (from
            // then on DeepSeek may see, and charge for, the prompt).
            dispatch.attempting(&account.label);
            match self
                .attempt(&account, endpoint, body.clone(), deadline, &dispatch.sent)
                .await
            {
                Ok(resp) => {
                    // No verdict on the account yet: a head is not an answer. The reply tells
                    // the slot once content comes, or how it failed (`Slot::worked`/`failed`).
                    return Ok(Reply::new(
                        resp,
                        self.idle_timeout,
                        deadline,
                        self.max_event,
                        slot,
                    ));
                }
                Err(e) => {
                    // The request's own time ran out: no verdict on the account (it rested an
                    // account that would have answered within its idle timeout).
                    if matches!(e, UpstreamError::Timeout)
                        && tokio::time::Instant::now() >= deadline
                    {
                        return Err(e);
                    }
                    let rests = self.blame(&account, &e, slot.current());
                    // DeepSeek's "Model Not Exist" from one account: an account with a base URL
                    // of its own (a proxy) may not serve a model the others do, so another is
                    // tried — without resting this one, which may serve the other models (it
                    // failed its whole share of the model's requests, 502, while `/healthz`
                    // and `upstream status` said all was well; found by an independent check).
                    let unknown_model = !rests && e.is_unknown_model();
                    if !rests && !unknown_model {
                        if e.rejects_request() && e.is_deepseeks() {
                            // The request's own fault (400, 413, 422, in DeepSeek's words): the
                            // account answered it, so it serves again — on probation, its backoff
                            // kept until an answer of it ends whole (a customer's 400 wiped it,
                            // and an account whose streams broke rested 5 s at a time again;
                            // found by an independent re-check). An answer to a request sent
                            // before its last change says nothing about it now.
                            // A trial's only: a request taken early while every account rests
                            // brings its account back only by an answer that ends whole (a
                            // 400 brought it back, and its next failure doubled the rest;
                            // found by an independent check).
                            if slot.current() && slot.is_trial() && account.back_on_probation() {
                                tracing::info!(account = %account.name, "upstream account healthy again (on probation)");
                                self.announce(&account, "answered again");
                            }
                            slot.decided();
                        } else if e.rejects_request() {
                            // Too large for whatever answered (a 413 that is not DeepSeek's
                            // JSON, a proxy's page): the customer's, but no sign the account
                            // works (it ended rests; found by an independent re-check) — no
                            // verdict, a trial this was is freed with the slot.
                        } else if matches!(e, UpstreamError::OutOfResources(_)) {
                            // This machine's failure, not the account's: nothing counted
                            // against it (the log says it loudly).
                        } else {
                            // Any other failure that neither rests the account nor is the
                            // request's (none today: "Model Not Exist", the last, now moves
                            // on above): no verdict on the account — a trial this was is freed
                            // when the slot goes — and the operator's to see, in its errors
                            // and last error.
                            account.errors.fetch_add(1, Ordering::Relaxed);
                            account.note_failure(&e.to_string());
                        }
                        return Err(e);
                    }
                    if unknown_model {
                        // No verdict on the account (a trial this was is freed with the slot);
                        // its last error says which model it does not know.
                        account.note_failure(&e.to_string());
                        tracing::error!(account = %account.name, model, error = %e, "UPSTREAM ACCOUNT DOES NOT KNOW THE MODEL: check models.<name>.upstream_model and the account's base_url; trying another account");
                    } else {
                        slot.decided();
                    }
                    // The account's failure (a request's own 400 is not one).
                    account.errors.fetch_add(1, Ordering::Relaxed);
                    tried.push(slot.index());
                    drop(slot);
                    // Back to the queue: this attempt was refused or never answered, and
                    // DeepSeek bills nothing for it.
                    dispatch.failed_over();
                    // Every account tried (one alone, always): there is nothing to fail over to,
                    // and the log and `upstream status` should not say there was. Nor to an
                    // account that rests: while all do, one request is one attempt (each went
                    // to every resting account in turn, multiplying a 429 storm by the pool's
                    // size; found by an independent check) — but one whose rest is over takes
                    // it as its trial.
                    if dispatch.abandoned.load(Ordering::Acquire) {
                        return Err(e);
                    }
                    // After "Model Not Exist" the request has not had its attempt at an account
                    // that serves the model: one that rests takes it, as while every account
                    // rests (the model failed, 502, while the one account serving it rested;
                    // found by an independent check).
                    let now = account::mono_ms();
                    let may_take = |a: &Account| {
                        a.usable(now) || (unknown_model && a.cooling_until_ms().is_some())
                    };
                    let untried_usable = self
                        .pool
                        .accounts
                        .iter()
                        .enumerate()
                        .any(|(i, a)| !tried.contains(&i) && may_take(a));
                    if tokio::time::Instant::now() >= deadline || !untried_usable {
                        return Err(e);
                    }
                    tracing::info!(account = %account.name, error = %e, "failing over to another upstream account");
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
    }

    /// One attempt on one account: the response with a 2xx status, or why not.
    async fn attempt(
        &self,
        account: &Account,
        endpoint: Endpoint,
        body: Bytes,
        deadline: tokio::time::Instant,
        sent: &Arc<AtomicBool>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = match endpoint {
            Endpoint::ChatCompletions => &account.chat_url,
            Endpoint::Messages => &account.messages_url,
        };
        let uri = url.uri().map_err(UpstreamError::Unreachable)?;
        let auth = account.auth_header.as_ref().ok_or_else(|| {
            UpstreamError::Unreachable("the upstream key holds bytes an HTTP header cannot".into())
        })?;
        let wait = deadline.min(tokio::time::Instant::now() + self.idle_timeout);
        let resp =
            match tokio::time::timeout_at(wait, self.http.post_json(uri, auth, body, sent.clone()))
                .await
            {
                Err(_) | Ok(Err(SendError::ConnectTimeout)) => return Err(UpstreamError::Timeout),
                Ok(Err(SendError::Failed(why))) => return Err(UpstreamError::Unreachable(why)),
                Ok(Err(SendError::OutOfResources(why))) => {
                    return Err(UpstreamError::OutOfResources(why));
                }
                Ok(Ok(r)) => r,
            };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = tokio::time::timeout_at(wait, read_limited(resp.into_body(), 64 * 1024))
            .await
            .unwrap_or_default();
        Err(error::status_error(status, &body))
    }

    /// What a failed attempt says about its account: true when another account should be
    /// tried (the account was disabled or rests now), false when the failure is the
    /// request's own.
    /// `current`: the attempt began in the account's present epoch; an older one's failure
    /// (sent before the account's last rest or recovery) does not rest it again, though the
    /// request still goes elsewhere.
    fn blame(&self, account: &Account, e: &UpstreamError, current: bool) -> bool {
        if e.refuses_account() && !current {
            // Sent before the account's last change (an operator's enable since): noted, the
            // request goes elsewhere, the account is left as it is now.
            account.note_failure(&e.to_string());
            return true;
        }
        if e.refuses_account() {
            if account.disable(DisabledBy::Upstream, &e.to_string()) {
                tracing::error!(
                    account = %account.name,
                    error = %e,
                    "UPSTREAM ACCOUNT DISABLED: DeepSeek refused it (key or balance); it comes \
                     back when `modelrelay upstream enable` is run or a probe finds it working"
                );
                self.announce(account, &e.to_string());
            }
            self.watch.poll_soon();
            return true;
        }
        if e.rests_account() {
            if !current {
                account.note_failure(&e.to_string());
                return true;
            }
            if account.cool(&e.to_string()) {
                tracing::warn!(account = %account.name, error = %e, "upstream account cooling");
                self.announce(account, &e.to_string());
            }
            return true;
        }
        false
    }

    /// Tell the console (and the log) that an account changed state.
    fn announce(&self, account: &Account, reason: &str) {
        self.pool.announce(account, reason);
    }

    /// Start watching the accounts' balances and probing the refused ones (ends with the
    /// pool).
    pub fn start_watch(&self) {
        watch::start(
            self.watch_http.clone(),
            Arc::downgrade(&self.pool),
            self.watch.clone(),
            self.activity.clone(),
        );
    }

    /// The account named `name` in the config.
    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        self.pool.accounts.iter().find(|a| a.name == name).cloned()
    }

    /// The operator turns an account on or off. `None` when there is no such account.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Option<Arc<Account>> {
        let account = self.pool.accounts.iter().find(|a| a.name == name)?.clone();
        let changed = if enabled {
            account.enable(DisabledBy::Operator)
        } else {
            account.disable(DisabledBy::Operator, "disabled by the operator")
        };
        if changed {
            let why = if enabled {
                "enabled by the operator"
            } else {
                "disabled by the operator"
            };
            tracing::warn!(account = %account.name, why, "upstream account changed");
            self.announce(&account, why);
            // Requests queued for a slot see the change now, not at their next look.
            self.pool.wake_waiters();
        }
        // Refused at its last balance check: read again soon, as for any refused account in
        // service. While it was off, nothing waited for its key, and the next reading was a
        // whole poll interval away (five minutes by default): the storefront took no order
        // meanwhile, the account back in service and answering (found by a re-check).
        if enabled && account.balance_refused() {
            self.watch.poll_soon();
        }
        Some(account)
    }
}

/// Read at most `limit` bytes of a body (error bodies only; they are small).
async fn read_limited(mut body: Incoming, limit: usize) -> Bytes {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = http::chunk(&mut body).await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= limit {
            buf.truncate(limit);
            break;
        }
    }
    Bytes::from(buf)
}

impl Upstream {
    /// The pool now.
    pub fn status(&self) -> super::status::PoolStatus {
        let pool = &self.pool;
        let accounts = pool
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| super::status::AccountStatus {
                name: a.name.clone(),
                state: a.state(),
                cooling_until_ms: a.cooling_until_ms(),
                backoff_ms: a.backoff_ms(),
                weight: a.weight,
                models: pool
                    .models
                    .iter()
                    .enumerate()
                    .map(|(i, m)| super::status::ModelLoad {
                        model: m.clone(),
                        in_flight: a.in_flight(i),
                        cap: a.caps.get(i).copied().unwrap_or(0),
                    })
                    .collect(),
                balance: self.watch.balance(&a.name),
                balance_unread: self.watch.unread(&a.name),
                by_operator: a.disabled_by_operator(),
                balance_refused: a.balance_refused(),
                last_error: a.last_error(),
                requests: a.requests.load(Ordering::Relaxed),
                errors: a.errors.load(Ordering::Relaxed),
                same_key_as: pool.accounts[..i]
                    .iter()
                    .find(|b| b.auth_header.is_some() && b.auth_header == a.auth_header)
                    .map(|b| b.name.clone()),
            })
            .collect();
        super::status::PoolStatus {
            accounts,
            failovers: self.failovers(),
            low_balance: self.watch.low_balance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account refused at its balance check, which the operator turns off and on again, has
    /// its balance read soon, not at the next poll: the storefront sells again.
    #[tokio::test]
    async fn an_account_the_operator_turns_on_again_is_read_soon() {
        let sim = super::super::simulated::SimulatedDeepSeek::start(
            super::super::simulated::SimOptions::default(),
        )
        .await
        .unwrap();
        let mut c = Config::default();
        c.upstream.base_url = sim.base_url();
        c.upstream.api_key = "sk-simulated".into();
        let up = Upstream::new(&c, Activity::new()).unwrap();
        up.start_watch();
        let a = up.account("default").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while up.watch.balance("default").is_none() {
            assert!(std::time::Instant::now() < until, "no first reading");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        up.set_enabled("default", false);
        // Its next check (while off) cannot connect, as if nothing had answered.
        a.balance_checked(Some("the balance check: nothing has answered"));
        up.set_enabled("default", true);
        assert!(up.none_may_serve());
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while a.balance_refused() {
            assert!(
                std::time::Instant::now() < until,
                "still refused: the next reading is a poll interval away"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!up.none_may_serve());
    }
}
