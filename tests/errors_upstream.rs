//! SPEC §3's error table, upstream side: upstream failures are 502 without upstream's own
//! words, a silent or slow upstream is 504, upstream's 400/422 about the customer's request are
//! passed on, and an operator's mistake is never blamed on the customer.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on purpose

use std::time::Duration;

use modelrelay::money::Usd;
use modelrelay::store::{Finish, Measured};
use modelrelay::upstream::account::AccountState;
use modelrelay::upstream::simulated::{AccountFault, Outcome};
use serde_json::{Value, json};

use crate::common::{SIM_KEY, TestApp, body};
use crate::errors::{FLASH, expect_error};

// ---------------------------------------------------------------------------------------------
// 502 upstream_error, 504 upstream_timeout, upstream 400/422 passed on
// ---------------------------------------------------------------------------------------------

/// Upstream texts that must never reach a customer.
const UPSTREAM_SECRETS: &[&str] = &[
    "Insufficient Balance",
    "Authentication",
    "api key",
    "****",
    "Server error, please retry",
    "Server overloaded",
    "sk-simulated",
];

fn assert_no_upstream_leak(err: &Value) {
    let text = err.to_string();
    for s in UPSTREAM_SECRETS {
        assert!(!text.contains(s), "customer error leaks {s:?}: {text}");
    }
}

#[tokio::test]
async fn upstream_5xx_401_and_402_are_502_without_upstreams_message() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    for (i, status) in [500u16, 503, 401, 402].into_iter().enumerate() {
        let resp = app
            .chat(&key, &body(FLASH, &format!("hi [[sim fail={status}]]")))
            .send()
            .await
            .expect("send");
        let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
        assert!(err["param"].is_null(), "{err}");
        assert_no_upstream_leak(&err);
        // It did reach upstream, which refused it.
        let rec = &app.sim.requests()[i];
        assert_eq!(rec.outcome, Outcome::Failed(status));
        // The one account that DeepSeek refused is disabled; the operator brings it back.
        app.enable_upstream();
    }
    // A stream request failing before its first byte gets a JSON 502 too.
    let mut b = body(FLASH, "hi [[sim fail=402]]");
    b["stream"] = json!(true);
    let resp = app.chat(&key, &b).send().await.expect("send");
    let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
    assert_no_upstream_leak(&err);
    // Failures before any output are not charged, and no hold is left behind.
    let bal = app.key_state(&key).balance();
    assert_eq!(bal.spent, Usd::ZERO);
    assert_eq!(bal.held, Usd::ZERO);
}

#[tokio::test]
async fn upstream_garbage_is_502() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim garbage=1]]"))
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
    assert!(!err.to_string().contains("html"), "{err}");
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port that was just bound and released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let app = TestApp::spawn_with(|c| {
        c.upstream.base_url = format!("http://127.0.0.1:{port}");
        c.upstream.connect_timeout_secs = 2;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "hi"))
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
    assert!(!err.to_string().contains(&port.to_string()), "{err}");
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
}

#[tokio::test]
async fn upstream_400_and_422_are_passed_on_with_their_message() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    for (status, message) in [
        (400u16, "Invalid request format"),
        (422, "Invalid parameters"),
    ] {
        let resp = app
            .chat(&key, &body(FLASH, &format!("hi [[sim fail={status}]]")))
            .send()
            .await
            .expect("send");
        let (_, err) = expect_error(resp, status, "invalid_request", "invalid_request_error").await;
        assert_eq!(err["message"], message, "{err}");
    }
    assert_eq!(app.sim.requests().len(), 2);
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
}

/// A whole answer is written only when done; the blank lines DeepSeek sends until then are its
/// only sign of life, so they keep the request waiting past the idle timer (a thinking model's
/// long answer was cut at it, paid to DeepSeek and never delivered), and the answer is billed.
#[tokio::test]
async fn blank_lines_keep_a_whole_answer_waiting_past_the_idle_timer() {
    let app = TestApp::spawn_with(|c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(
            &key,
            &body(
                FLASH,
                "hi [[sim first_delay_ms=3000 keepalive_ms=200 prompt=7 reply=2]]",
            ),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    let outcome = app.sim.wait_outcome(0, Duration::from_secs(5)).await;
    assert_eq!(outcome, Outcome::Completed);
    let n = |f: &str| {
        v["usage"][f]
            .as_u64()
            .unwrap_or_else(|| panic!("{f} in {v}"))
    };
    let want = crate::common::expected_cost(
        n("prompt_cache_hit_tokens"),
        n("prompt_cache_miss_tokens"),
        2,
        3_000_000,
        150_000_000,
        600_000_000,
    );
    assert_eq!(n("prompt_tokens"), 7, "{v}");
    let b = app.key_state(&key).balance();
    assert_eq!(b.spent.nanos(), want, "the answer is billed at its usage");
    assert_eq!(b.held, Usd::ZERO);
}

/// Silence after the head, not even a blank line, for the idle timeout: a hung path, 504, free.
#[tokio::test]
async fn a_whole_answer_silent_for_the_idle_timeout_is_504() {
    let app = TestApp::spawn_with(|c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(
            &key,
            &body(
                FLASH,
                "hi [[sim first_delay_ms=3000 keepalive_ms=60000 reply=2]]",
            ),
        )
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 504, "upstream_timeout", "server_error").await;
    assert!(err["param"].is_null(), "{err}");
    // The gateway hung up on upstream rather than waiting for the answer.
    let outcome = app.sim.wait_outcome(0, Duration::from_secs(5)).await;
    assert_eq!(outcome, Outcome::ClientDisconnected);
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
    assert_eq!(app.key_state(&key).balance().held, Usd::ZERO);
}

/// No answer at all (not even its head) by the request's deadline: 504, free. (Once DeepSeek
/// answered a whole request's head and keeps it alive, it is waited for past the deadline:
/// `faults_streams`.)
#[tokio::test]
async fn the_total_request_timeout_is_504() {
    let app = TestApp::spawn_with(|c| {
        c.upstream.idle_timeout_secs = 30;
        c.upstream.request_timeout_secs = 1;
    })
    .await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Hang));
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    expect_error(resp, 504, "upstream_timeout", "server_error").await;
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
    assert_eq!(app.key_state(&key).balance().held, Usd::ZERO);
}

#[tokio::test]
async fn a_misconfigured_upstream_model_is_502_not_the_customers_400() {
    // The operator mapped a public model to a name DeepSeek does not know: DeepSeek answers
    // 400 "Model Not Exist", which is not about the customer's request.
    let app = TestApp::spawn_with(|c| {
        let mut m = c.models["deepseek-v4-flash"].clone();
        m.upstream_model = "deepseek-nope".into();
        c.models.insert("my-broken".into(), m);
        c.plans
            .get_mut("trial")
            .unwrap()
            .models
            .push("my-broken".into());
    })
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("my-broken", "hi"))
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
    assert!(!err.to_string().contains("Not Exist"), "{err}");
    assert_eq!(app.sim.requests()[0].body["model"], "deepseek-nope");
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
}

/// A whole answer over 64 MiB (`top_logprobs` on a long answer makes one) cannot be relayed:
/// DeepSeek wrote it and bills it, so it is read to its end and billed at its usage (free, it
/// cost the operator its output for nothing, and the SDKs asked for it three times: found by
/// an independent check); the client gets a 502 that says why and not to retry it, and the
/// account that wrote it is not rested for the size the customer asked for.
#[tokio::test]
async fn a_whole_answer_over_64_mib_is_billed_and_refused_without_a_retry() {
    let app = TestApp::spawn_with(|c| {
        if let Some(m) = c.models.get_mut(FLASH) {
            m.max_output_tokens = 200_000;
        }
    })
    .await;
    let key = app.create_key("trial", Some("5")).await;
    let mut b = body(FLASH, "list [[sim prompt=100 reply=100000]]");
    b["logprobs"] = true.into();
    b["top_logprobs"] = 20.into();
    let resp = app.chat(&key, &b).send().await.expect("send");
    let rid = crate::common::request_id(&resp);
    assert_eq!(
        resp.headers()
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok()),
        Some("false")
    );
    let (_, err) = expect_error(resp, 502, "upstream_error", "server_error").await;
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("64 MiB") && message.contains("stream"),
        "{err}"
    );
    assert_eq!(
        app.sim.wait_outcome(0, Duration::from_secs(30)).await,
        Outcome::Completed
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(
        (row.finish, row.measured, row.status),
        (Finish::UpstreamError, Measured::Provider, 502)
    );
    assert_eq!(
        (
            row.prompt_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (100, 100, 100_000)
    );
    let want = crate::common::expected_cost(0, 100, 100_000, 3_000_000, 150_000_000, 600_000_000);
    assert_eq!(row.cost.nanos(), want);
    let b = app.key_state(&key).balance();
    assert_eq!((b.spent.nanos(), b.held), (want, Usd::ZERO));
    // The account served it well: it is not resting, and the next request goes through.
    let state = &app.daemon.as_ref().expect("running").state;
    let account = &state.upstream.status().accounts[0];
    assert_eq!(account.state, AccountState::Healthy, "{account:?}");
    let resp = app
        .chat(&key, &body(FLASH, "hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}
