//! The background watch over the accounts: each account's DeepSeek balance read every
//! `upstream.balance_poll_secs` (and soon after a 402), and every `upstream.probe_secs` a probe
//! of the accounts DeepSeek refused: when its balance endpoint answers for the key again and
//! says the account is available with money on it, the account is back in service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::account::{Account, DisabledBy, now_ms};
use super::balance::{self, Balance};
use super::pool::Pool;
use crate::activity::{Activity, ActivityEvent};
use crate::config::UpstreamConfig;
use crate::money::Usd;

/// How long a balance request may take.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two polls asked for by 402s.
const SOON: Duration = Duration::from_secs(2);
/// How soon balances are read again while an account's last reading was refused (its key or
/// `base_url` wrong, as far as the check says): the storefront sells nothing while no account
/// may serve, and a passing refusal stopped sales for a whole poll interval, five minutes by
/// default (found by a re-check).
const AGAIN_AFTER_REFUSAL: Duration = Duration::from_secs(30);

/// Balances and the watch's settings.
pub struct Watch {
    /// The latest reading per account name.
    balances: Mutex<HashMap<String, Balance>>,
    /// Accounts whose balance the last read could not get: why, and since when (unix ms) it
    /// has failed (the reading above, if any, is older than that).
    unread: Mutex<HashMap<String, (String, i64)>>,
    poll: Notify,
    balance_every: Duration,
    probe_every: Duration,
    /// Below this an account's USD balance is low.
    pub low_balance: Usd,
}

impl Watch {
    pub(super) fn new(u: &UpstreamConfig) -> Watch {
        Watch {
            balances: Mutex::new(HashMap::new()),
            unread: Mutex::new(HashMap::new()),
            poll: Notify::new(),
            balance_every: Duration::from_secs(u.balance_poll_secs.max(1)),
            probe_every: Duration::from_secs(u.probe_secs.max(1)),
            low_balance: u.low_balance_usd,
        }
    }

    /// Read the balances again soon (after a 402).
    pub fn poll_soon(&self) {
        self.poll.notify_one();
    }

    /// The latest balance reading of an account.
    pub fn balance(&self, account: &str) -> Option<Balance> {
        self.lock().get(account).cloned()
    }

    /// Why an account's balance could not be read, and since when (unix ms); `None` once a
    /// read succeeds.
    pub fn unread(&self, account: &str) -> Option<(String, i64)> {
        self.unread_lock().get(account).cloned()
    }

    fn unread_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, i64)>> {
        self.unread.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Balance>> {
        self.balances.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an account in service had its key (or `base_url`) refused at its last balance
/// reading: then the next reading comes after [`AGAIN_AFTER_REFUSAL`], to sell again soon once
/// it is mended. An account the operator turned off is not waited for (one whose key was
/// revoked, disabled for it, had the pool read every 30 s for ever, an error line each time;
/// found by an independent check).
fn awaits_its_key(accounts: &[Arc<Account>]) -> bool {
    accounts
        .iter()
        .any(|a| a.balance_refused() && !a.disabled_by_operator())
}

/// Start the watch; it ends when the pool is gone (the daemon stopped).
pub fn start(http: reqwest::Client, pool: Weak<Pool>, watch: Arc<Watch>, activity: Activity) {
    tokio::spawn(async move {
        let mut next_balance = tokio::time::Instant::now();
        let mut next_probe = tokio::time::Instant::now() + watch.probe_every;
        loop {
            let Some(p) = pool.upgrade() else { return };
            let now = tokio::time::Instant::now();
            if now >= next_balance {
                read_balances(&http, &p, &watch).await;
                let refused = awaits_its_key(&p.accounts);
                next_balance = now
                    + if refused {
                        watch.balance_every.min(AGAIN_AFTER_REFUSAL)
                    } else {
                        watch.balance_every
                    };
            }
            if now >= next_probe {
                probe(&http, &p, &watch, &activity).await;
                next_probe = now + watch.probe_every;
            }
            drop(p);
            let wake = next_balance.min(next_probe);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = watch.poll.notified() => {
                    tokio::time::sleep(SOON).await;
                    next_balance = tokio::time::Instant::now();
                }
            }
            if pool.strong_count() == 0 {
                return;
            }
        }
    });
}

/// The client of the balance readings and probes. A redirect is not followed, as the API calls
/// do not follow one: followed, a `base_url` that redirects (http:// to an https:// API) read
/// balances and passed probes while every request failed (found by a re-check). Nor is a proxy
/// of the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) used, as the API calls use
/// none (README says they are not read): reqwest reads them by default, and a proxy there that
/// could not reach DeepSeek made every balance check fail while requests were served — which,
/// at start, refuses the account and stops the storefront's sales.
pub(super) fn http_client(connect: Duration, idle: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(idle)
        .user_agent(concat!("modelrelay/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why a balance read failed: "timed out" said as such (reqwest's text for it reads like a
/// refused connection).
fn failed(what: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("{what}: timed out after {}s", BALANCE_TIMEOUT.as_secs());
    }
    // reqwest's own text names only the URL ("error sending request for url (…)"): the
    // innermost cause says what happened (a refused connection, a name that does not resolve).
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) {
        format!("{what}: {e}")
    } else {
        format!("{what}: {e}: {cause}")
    }
}

async fn fetch(http: &reqwest::Client, a: &Account) -> Result<Balance, String> {
    let resp = match http
        .get(&a.balance_url)
        .header(reqwest::header::AUTHORIZATION, &a.auth)
        .timeout(BALANCE_TIMEOUT)
        .send()
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let why = failed("balance request failed", &e);
            // Nothing has ever answered there and no connection could be made (a name that
            // does not resolve, a refused port, a TLS failure): a mistyped host or port, not an
            // outage — the storefront sells no key that could only get 502s (see
            // `Account::answered`). A server that takes the connection and is slow is not
            // refused for it (found by a re-check).
            if !a.ever_answered() && e.is_connect() {
                a.balance_checked(Some(&format!(
                    "the balance check: nothing has answered at upstream.base_url since the \
                     start ({why})"
                )));
            }
            return Err(why);
        }
    };
    a.heard();
    let status = resp.status();
    crate::clock::check_against_upstream(
        resp.headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok()),
    );
    let body = resp
        .bytes()
        .await
        .map_err(|e| failed("balance answer cut", &e))?;
    // Where DeepSeek's balance is not (a `base_url` that is not its API: a 404, a redirect),
    // no request can be served either: the storefront stops selling as for a refused key —
    // unless the API answers there all the same (a proxy that forwards the API and not the
    // balance made sales stop and start with every request served; found by an independent
    // check).
    if status.is_redirection() || status == reqwest::StatusCode::NOT_FOUND {
        if api_answers(http, a).await {
            a.balance_checked(None);
            return Err(format!(
                "balance request answered {status}, while GET <base_url>/models answers: this \
                 upstream has no DeepSeek balance endpoint"
            ));
        }
        a.balance_checked(Some(&format!(
            "the balance check: answered {status}, so upstream.base_url does not lead to \
             DeepSeek's API"
        )));
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        a.balance_checked(Some(
            "the balance check: DeepSeek refuses this account's API key (401)",
        ));
        // Said loudly (a mistyped key otherwise showed as healthy until a customer's 502; found
        // by an independent check), but not acted on: a balance endpoint's passing 401 took a
        // working account out of service until the next probe, minutes of 502s with one
        // account (a re-check). A chat request's 401 disables the account, as before.
        tracing::error!(
            account = %a.name,
            "DeepSeek refuses this account's API key at the balance check (401): check the key; \
             requests to the account will fail and take it out of service"
        );
    }
    if !status.is_success() {
        return Err(format!("balance request answered {status}"));
    }
    match balance::parse(&body, now_ms()) {
        Ok(b) => {
            a.balance_checked(None);
            Ok(b)
        }
        Err(why) => {
            // A success that is no balance, where the API does not answer either: a web server
            // that answers every path with a page (a mistyped host that is someone's site, a
            // parked domain) — the storefront sold keys that could only get 502s, `/healthz`
            // saying ok (found by a re-check). One whose API answers only reads oddly.
            if api_answers(http, a).await {
                a.balance_checked(None);
            } else {
                a.balance_checked(Some(&format!(
                    "the balance check: answered {status} with no DeepSeek balance ({why}), and \
                     GET <base_url>/models no model list, so upstream.base_url does not lead to \
                     DeepSeek's API"
                )));
            }
            Err(why)
        }
    }
}

/// Whether DeepSeek's API answers at the account's `base_url` (`GET <base_url>/models` under its
/// key, as `/healthz` asks it): a 429, or a success with a model list (`{"data": [...]}`) —
/// not any page a web server answers every path with.
async fn api_answers(http: &reqwest::Client, a: &Account) -> bool {
    let Ok(r) = http
        .get(&a.models_url)
        .header(reqwest::header::AUTHORIZATION, &a.auth)
        .timeout(BALANCE_TIMEOUT)
        .send()
        .await
    else {
        return false;
    };
    if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    if !r.status().is_success() {
        return false;
    }
    r.bytes().await.is_ok_and(|b| {
        serde_json::from_slice::<serde_json::Value>(&b)
            .is_ok_and(|v| v.get("data").is_some_and(serde_json::Value::is_array))
    })
}

/// Every account's balance, asked of all at once: one account whose endpoint hangs (up to the
/// balance timeout) no longer delays the others' readings and probes by that much each round.
async fn read_balances(http: &reqwest::Client, pool: &Pool, watch: &Watch) {
    let readings = futures_util::future::join_all(
        pool.accounts
            .iter()
            .map(|a| async move { (a, fetch(http, a).await) }),
    )
    .await;
    for (a, reading) in readings {
        match reading {
            Ok(b) => {
                if b.usd() < watch.low_balance && b.infos.iter().any(|i| i.currency == "USD") {
                    tracing::warn!(account = %a.name, usd = %b.usd(), "DeepSeek balance is low");
                }
                watch.lock().insert(a.name.clone(), b);
                watch.unread_lock().remove(&a.name);
            }
            Err(e) => {
                tracing::warn!(account = %a.name, error = %e, "cannot read the DeepSeek balance");
                // The operator sees it in `upstream status`, not only in the log: a reading
                // kept from before would otherwise pass for today's.
                let mut unread = watch.unread_lock();
                let since = unread.get(&a.name).map_or_else(now_ms, |(_, since)| *since);
                unread.insert(a.name.clone(), (e.to_string(), since));
            }
        }
    }
}

/// Bring back the accounts DeepSeek refused once their balance endpoint accepts the key and
/// says they are available with money on them.
async fn probe(http: &reqwest::Client, pool: &Pool, watch: &Watch, activity: &Activity) {
    let readings = futures_util::future::join_all(
        pool.accounts
            .iter()
            .filter(|a| a.disabled_by_upstream())
            .map(|a| async move { (a, fetch(http, a).await) }),
    )
    .await;
    for (a, reading) in readings {
        let Ok(b) = reading else {
            continue;
        };
        let funded = b.infos.iter().any(|i| i.total > Usd::ZERO);
        watch.lock().insert(a.name.clone(), b.clone());
        // A good reading here ends a "cannot read" warning as the poll's would.
        watch.unread_lock().remove(&a.name);
        if b.is_available && funded && a.enable(DisabledBy::Upstream) {
            tracing::warn!(account = %a.name, "upstream account back in service (probe)");
            activity.emit(ActivityEvent::AccountChanged {
                account: a.name.clone(),
                state: a.state().as_str().to_string(),
                reason: "a probe found it working".into(),
                at_ms: now_ms(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_account_is_waited_for_unless_the_operator_turned_it_off() {
        let account = |name: &str| {
            let cfg = crate::config::Account {
                name: name.into(),
                api_key: "k".into(),
                base_url: "http://x".into(),
                openai_base: "http://x".into(),
                weight: 1,
                max_in_flight: Default::default(),
            };
            Arc::new(Account::new(&cfg, vec![1]))
        };
        let (good, old) = (account("good"), account("old"));
        let pool = [good.clone(), old.clone()];
        assert!(!awaits_its_key(&pool));
        old.balance_checked(Some("DeepSeek refuses this account's API key (401)"));
        assert!(awaits_its_key(&pool), "read again soon: it may be mended");
        assert!(old.disable(DisabledBy::Operator, "revoked"));
        assert!(!awaits_its_key(&pool), "turned off: not waited for");
        good.balance_checked(Some("404"));
        assert!(awaits_its_key(&pool));
    }

    /// The balance check goes straight to `base_url` whatever proxy the environment names, as
    /// the API calls do. Run in a child process of its own, whose environment names a proxy
    /// nothing listens on (setting it here would reach the other tests' clients).
    #[test]
    fn the_balance_check_uses_no_proxy_of_the_environment() {
        if crate::test_support::is_proxy_child() {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let sim = crate::upstream::simulated::SimulatedDeepSeek::start(
                    crate::upstream::simulated::SimOptions::default(),
                )
                .await
                .unwrap();
                let cfg = crate::config::Account {
                    name: "a".into(),
                    api_key: "sk-simulated".into(),
                    base_url: sim.base_url(),
                    openai_base: sim.base_url(),
                    weight: 1,
                    max_in_flight: Default::default(),
                };
                let a = Account::new(&cfg, vec![1]);
                let http = http_client(Duration::from_secs(5), Duration::from_secs(5)).unwrap();
                fetch(&http, &a).await.expect("read straight from base_url");
                assert!(!a.balance_refused());
            });
            return;
        }
        crate::test_support::in_a_child_behind_a_closed_proxy(
            "upstream::watch::tests::the_balance_check_uses_no_proxy_of_the_environment",
        );
    }

    /// A `base_url` where a web server answers every path with a page (a mistyped host that is
    /// someone's site, a parked domain) is refused as a 404 is: no balance, no model list.
    #[tokio::test]
    async fn a_host_answering_every_path_with_a_page_is_refused() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let page = "<html><body>This domain is for sale</body></html>";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        let cfg = crate::config::Account {
            name: "parked".into(),
            api_key: "k".into(),
            base_url: url.clone(),
            openai_base: url,
            weight: 1,
            max_in_flight: Default::default(),
        };
        let a = Account::new(&cfg, vec![1]);
        let http = reqwest::Client::new();
        assert!(fetch(&http, &a).await.is_err());
        assert!(a.balance_refused(), "a page is no balance");
        assert!(!a.may_serve());
    }

    /// A balance check that cannot connect refuses an account nothing has answered for since
    /// the start (a mistyped host or port: the storefront stops selling), not one that has
    /// answered before (an outage: it may be back any moment).
    #[tokio::test]
    async fn an_account_never_reached_is_refused_and_one_reached_before_is_not() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let account = |name: &str| {
            let cfg = crate::config::Account {
                name: name.into(),
                api_key: "k".into(),
                base_url: url.clone(),
                openai_base: url.clone(),
                weight: 1,
                max_in_flight: Default::default(),
            };
            Account::new(&cfg, vec![1])
        };
        let http = reqwest::Client::new();
        let (never, before) = (account("never"), account("before"));
        before.heard();
        let why = fetch(&http, &never).await.expect_err("nothing listens");
        // What happened, not only reqwest's "error sending request for url (…)".
        assert!(why.contains("Connection refused"), "{why}");
        assert!(never.balance_refused(), "nothing ever answered there");
        assert!(!never.may_serve());
        assert!(fetch(&http, &before).await.is_err());
        assert!(
            !before.balance_refused(),
            "it answered before: down for now"
        );
        assert!(before.may_serve());
        // An answer (a request's) ends the refusal.
        never.succeeded();
        assert!(never.may_serve());

        // A server that takes the connection and never answers is slow, not a mistyped
        // address: not refused for it (the 10 s timeout of the check).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let cfg = crate::config::Account {
            name: "slow".into(),
            api_key: "k".into(),
            base_url: url.clone(),
            openai_base: url,
            weight: 1,
            max_in_flight: Default::default(),
        };
        let slow = Account::new(&cfg, vec![1]);
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap();
        assert!(fetch(&http, &slow).await.is_err());
        assert!(!slow.balance_refused(), "a timeout is no mistyped address");
        drop(silent);
    }
}
