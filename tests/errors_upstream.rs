//! SPEC §3's error table, upstream side: upstream failures are 502 without upstream's own
//! words, a silent or slow upstream is 504, upstream's 400/422 about the customer's request are
//! passed on, and an operator's mistake is never blamed on the customer.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on purpose

use std::time::Duration;

use modelrelay::money::Usd;
use modelrelay::upstream::simulated::Outcome;
use serde_json::{Value, json};

use crate::common::{TestApp, body};
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

#[tokio::test]
async fn the_total_request_timeout_is_504() {
    let app = TestApp::spawn_with(|c| {
        c.upstream.idle_timeout_secs = 30;
        c.upstream.request_timeout_secs = 1;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(
            &key,
            &body(
                FLASH,
                "hi [[sim first_delay_ms=3000 keepalive_ms=200 reply=2]]",
            ),
        )
        .send()
        .await
        .expect("send");
    expect_error(resp, 504, "upstream_timeout", "server_error").await;
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
