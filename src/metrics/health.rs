//! `GET /healthz`: the database answers, and upstream can serve — each account probed with a
//! free `GET <base_url>/models` under its own key (cached 30 s, so probes cannot hammer
//! DeepSeek; 5 s while an account is cooling after a failure), read together with the pool's own view of its accounts. Every account fine
//! (those the operator disabled left out): `ok`; some down but one serving: `degraded` (still
//! 200: customers are served); none can serve: 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{UPSTREAM_CHECK_TTL, UpstreamHealth};
use crate::state::{AppState, ClientIp};
use crate::upstream::account::AccountState;

/// How old a probe may be while an account is cooling: a reading from before it failed said
/// "serving" for up to 30 s of a total outage, every request a 502 meanwhile (found by an
/// independent check).
const COOLING_CHECK_TTL: Duration = Duration::from_secs(5);

/// Each account's reachability, probed at most every `ttl`.
pub async fn upstream_health(state: &AppState, ttl: Duration) -> Vec<(String, UpstreamHealth)> {
    let mut cached = state.metrics.upstream_check.lock().await;
    if let Some((at, h)) = cached.as_ref()
        && at.elapsed() < ttl
    {
        return h.clone();
    }
    let c = &state.config.upstream;
    let probes = c.resolved_accounts().into_iter().map(|a| async move {
        let started = Instant::now();
        let result = probe(&a, c.connect_timeout_secs).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        (a.name, judge(result, latency_ms))
    });
    let h = futures_util::future::join_all(probes).await;
    *cached = Some((Instant::now(), h.clone()));
    h
}

/// What a probe's answer says.
fn judge(result: Result<u16, String>, latency_ms: u64) -> UpstreamHealth {
    match result {
        Ok(status) => {
            let error = match status {
                // Reachable, the key accepted (a 429 is DeepSeek busy, not down).
                200..=299 | 429 => None,
                401 | 403 => Some(format!("upstream rejected the API key ({status})")),
                s if s >= 500 => Some(format!("upstream answered {s}")),
                // A 404 or a redirect: `base_url` leads somewhere that is not DeepSeek's API
                // (found by an independent check: `…/chat/completions` as the base URL, every
                // request a 502, and this said `ok`).
                s => Some(format!(
                    "upstream answered {s} to GET <base_url>/models: upstream.base_url may not \
                     lead to DeepSeek's API"
                )),
            };
            UpstreamHealth {
                ok: error.is_none(),
                status: Some(status),
                latency_ms,
                error,
            }
        }
        Err(e) => UpstreamHealth {
            ok: false,
            status: None,
            latency_ms,
            error: Some(e),
        },
    }
}

/// `GET <base_url>/models` with an account's key and a 5 s limit: the HTTP status, or why
/// there was none (never upstream's address or key).
async fn probe(a: &crate::config::Account, connect_secs: u64) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        // Not followed, as the API calls do not follow one (a redirect is a failure there).
        .redirect(reqwest::redirect::Policy::none())
        // Nor a proxy of the environment, which the API calls do not use either (reqwest reads
        // `HTTP_PROXY` and the like by default: one that could not reach DeepSeek made this
        // say 503 while requests were served).
        .no_proxy()
        .connect_timeout(Duration::from_secs(connect_secs.clamp(1, 5)))
        .timeout(Duration::from_secs(5))
        .user_agent(concat!("modelrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|_| "cannot build the HTTP client".to_string())?;
    let resp = client
        .get(format!("{}/models", a.openai_base))
        .bearer_auth(&a.api_key)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            }
        })?;
    Ok(resp.status().as_u16())
}

/// Why an account the pool does not use is set aside, when its probe cannot say. Not the
/// error's own text (upstream's words, which may quote the key's tail): this page may be
/// public, and `modelrelay upstream status` shows the rest to the operator.
fn why_not(a: &crate::upstream::status::AccountStatus) -> Option<String> {
    match a.state {
        AccountState::Disabled if a.by_operator => Some("disabled by the operator".into()),
        AccountState::Disabled => {
            Some("disabled after an error (see `modelrelay upstream status`)".into())
        }
        AccountState::Cooling => {
            Some("cooling after an error (see `modelrelay upstream status`)".into())
        }
        _ => None,
    }
}

/// `GET /healthz`. The accounts are named, as the operator named them, only to whom
/// `/metrics` is served (loopback, or anyone with `server.metrics_public`); to others, by
/// their place (`account 1`, …): the page is public behind the proxy, and how the operator
/// named its DeepSeek accounts is not the public's (found by an independent check).
pub async fn healthz(State(state): State<Arc<AppState>>, ip: ClientIp) -> Response {
    let named = state.config.server.metrics_public || ip.0.is_loopback();
    let db = state.store.read_committed(|c| {
        // A table, not a bare `SELECT 1`: that opens no read transaction and reads nothing
        // of the file (found by a review).
        let one: i64 = c.query_row("SELECT 1 FROM schema_migrations LIMIT 1", [], |r| r.get(0))?;
        Ok(one)
    });
    let database = match tokio::time::timeout(Duration::from_secs(5), db).await {
        // Reading works, but the ledger cannot be written: answered requests' rows wait in
        // the journal (and answers the journal cannot take either are withheld).
        // Writes succeed into a file no start will open again: nothing from now on is kept.
        Ok(Ok(1)) if state.store.file_gone() => Err(
            "the database file was removed or replaced while the daemon ran: what it records \
             now is lost at the next start (stop it and put the database back: README, \
             \"Backups and restore\")"
                .into(),
        ),
        Ok(Ok(1)) if state.store.commits_failing() => Err(
            "the last commit failed (see the log); rows wait in the ledger's journal until one \
             succeeds"
                .into(),
        ),
        Ok(Ok(1)) => Ok(()),
        Ok(Ok(n)) => Err(format!("SELECT 1 returned {n}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    let pool = state.upstream.status();
    // Probed again sooner while an account rests after a failure: is upstream down, or was
    // it one error?
    let cooling = pool
        .accounts
        .iter()
        .any(|a| a.state == AccountState::Cooling);
    let ttl = if cooling {
        COOLING_CHECK_TTL
    } else {
        UPSTREAM_CHECK_TTL
    };
    let probes = upstream_health(&state, ttl).await;
    let accounts: Vec<Value> = pool
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let probe = probes.iter().find(|(n, _)| *n == a.name).map(|(_, h)| h);
            let serving = a.state != AccountState::Disabled && probe.is_some_and(|h| h.ok);
            let name = if named {
                a.name.clone()
            } else {
                format!("account {}", i + 1)
            };
            json!({
                "name": name,
                "state": a.state.as_str(),
                "serving": serving,
                "http_status": probe.and_then(|h| h.status),
                "error": probe.and_then(|h| h.error.clone()).or_else(|| why_not(a)),
            })
        })
        .collect();
    let serving = accounts.iter().filter(|a| a["serving"] == true).count();
    // An account the operator set aside is a choice, not a fault: the others being fine is
    // `ok` (a monitor would otherwise alert for as long as the choice stands).
    let set_aside = |a: &crate::upstream::status::AccountStatus| {
        a.state == AccountState::Disabled && a.by_operator
    };
    let expected = pool.accounts.iter().filter(|a| !set_aside(a)).count();
    // An account whose rest is over waits for a request to try it: with its probe answering,
    // nothing says it is down — on an idle gateway it stayed `degraded` until a customer came
    // (found by an independent check).
    let now = crate::clock::now_ms();
    let rested = |a: &crate::upstream::status::AccountStatus| {
        a.state == AccountState::Cooling && a.cooling_until_ms.is_some_and(|u| u <= now)
    };
    let all_healthy = pool
        .accounts
        .iter()
        .all(|a| a.state == AccountState::Healthy || rested(a) || set_aside(a));
    let upstream_status = match serving {
        0 => "error",
        n if n == expected && all_healthy => "ok",
        _ => "degraded",
    };
    let ok = database.is_ok() && serving > 0;
    let status = match (ok, upstream_status) {
        (false, _) => "unavailable",
        (true, "ok") => "ok",
        _ => "degraded",
    };
    // The first account's probe, where one-account installs always read it (and why it is
    // not serving when its probe answered but the pool has set it aside).
    let first = probes.first().map(|(_, h)| h);
    let first_error = first
        .and_then(|h| h.error.clone())
        .or_else(|| pool.accounts.first().and_then(why_not));
    let body = json!({
        "status": status,
        "database": match &database {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        },
        "upstream": {
            "status": upstream_status,
            "http_status": first.and_then(|h| h.status),
            "latency_ms": first.map(|h| h.latency_ms),
            // Nothing wrong to report when all is well (an account the operator set aside
            // is named under `accounts`): a monitor reading this field alerted on it.
            "error": if upstream_status == "ok" { None } else { first_error },
            "accounts": accounts,
        },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe goes straight to `base_url` whatever proxy the environment names, as the API
    /// calls do (in a child process whose environment names a proxy nothing listens on).
    #[test]
    fn the_probe_uses_no_proxy_of_the_environment() {
        if crate::test_support::is_proxy_child() {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let sim = crate::upstream::simulated::SimulatedDeepSeek::start(
                    crate::upstream::simulated::SimOptions::default(),
                )
                .await
                .unwrap();
                let a = crate::config::Account {
                    name: "a".into(),
                    api_key: "sk-simulated".into(),
                    base_url: sim.base_url(),
                    openai_base: sim.base_url(),
                    weight: 1,
                    max_in_flight: Default::default(),
                };
                assert_eq!(probe(&a, 5).await, Ok(200));
            });
            return;
        }
        crate::test_support::in_a_child_behind_a_closed_proxy(
            "metrics::health::tests::the_probe_uses_no_proxy_of_the_environment",
        );
    }

    /// Only an answer that shows DeepSeek's API there, with the key accepted, is fine.
    #[test]
    fn a_probe_is_fine_only_where_deepseeks_api_answers() {
        for ok in [200, 204, 429] {
            assert!(judge(Ok(ok), 1).ok, "{ok}");
        }
        for bad in [301, 302, 400, 401, 403, 404, 405, 500, 502] {
            let h = judge(Ok(bad), 1);
            assert!(!h.ok && h.error.is_some(), "{bad}");
        }
        assert!(
            judge(Ok(404), 1)
                .error
                .unwrap()
                .contains("upstream.base_url")
        );
        assert!(!judge(Err("cannot connect".into()), 1).ok);
    }
}
