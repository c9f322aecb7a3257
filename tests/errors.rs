//! SPEC §3's error table, end to end: every refusal has the exact status, `error.code`,
//! `error.type` and the OpenAI shape `{"error":{"message","type","param","code"}}`. Here the
//! refusals made before upstream is asked (400 to 429) and the shared assertions; upstream's
//! failures are in `errors_upstream`, routes and request ids in `errors_routes`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on purpose

use std::collections::BTreeSet;

use modelrelay::activity::protocol::{Request, Response};
use modelrelay::keys::KeyStatus;
use modelrelay::money::Usd;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};

use crate::common::{TestApp, body, request_id};

/// The model every plan sells.
pub(super) const FLASH: &str = "deepseek-v4-flash";
/// The model only the pro plan sells.
pub(super) const PRO: &str = "deepseek-v4-pro";

/// A well-formed key (prefix + 40 base62 characters) that was never issued.
pub(super) const UNKNOWN_KEY: &str = "sk-gateway-AAAAAAAAAAbbbbbbbbbbCCCCCCCCCC0123456789";

/// Assert the exact error shape and return the `error` object.
pub(super) fn check_shape(v: &Value) -> Value {
    let top = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(
        top.keys().map(String::as_str).collect::<Vec<_>>(),
        ["error"],
        "top level must be exactly {{\"error\":…}}: {v}"
    );
    let e = top["error"]
        .as_object()
        .unwrap_or_else(|| panic!("`error` is not an object: {v}"));
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["code", "message", "param", "type"]),
        "error object keys: {v}"
    );
    assert!(
        e["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
        "message must be a non-empty string: {v}"
    );
    assert!(
        e["type"].as_str().is_some_and(|m| !m.is_empty()),
        "type must be a non-empty string: {v}"
    );
    assert!(
        e["code"].as_str().is_some_and(|m| !m.is_empty()),
        "code must be a non-empty string: {v}"
    );
    assert!(
        e["param"].is_null() || e["param"].is_string(),
        "param must be null or a string: {v}"
    );
    top["error"].clone()
}

/// Assert status, `x-request-id`, JSON content type, the exact shape, `code` and `type`.
/// Returns the response headers and the `error` object.
pub(super) async fn expect_error(
    resp: reqwest::Response,
    status: u16,
    code: &str,
    kind: &str,
) -> (HeaderMap, Value) {
    let got = resp.status().as_u16();
    let rid = request_id(&resp);
    assert!(!rid.is_empty(), "empty x-request-id");
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?}; body: {text}"
    );
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body not JSON ({e}): {text}"));
    let err = check_shape(&v);
    assert_eq!(err["code"], code, "code; body: {text}");
    assert_eq!(err["type"], kind, "type; body: {text}");
    (headers, err)
}

/// Raw bytes as a chat request body.
pub(super) fn raw_chat(
    app: &TestApp,
    key: &str,
    raw: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(key)
        .header(CONTENT_TYPE, "application/json")
        .body(raw)
}

/// Nothing reached upstream and nothing was charged.
fn assert_untouched(app: &TestApp, key: &str) {
    assert!(
        app.sim.requests().is_empty(),
        "a refused request reached upstream: {:?}",
        app.sim.requests()
    );
    let b = app.key_state(key).balance();
    assert_eq!(b.spent, Usd::ZERO, "spent");
    assert_eq!(b.held, Usd::ZERO, "held");
}

/// A header as a string (panics when absent).
fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .expect("ascii header")
}

/// Spawn with a high RPM so that tests sending many requests never meet the rate limit.
async fn spawn_unlimited() -> TestApp {
    TestApp::spawn_with(|c| {
        for p in c.plans.values_mut() {
            p.rpm = 10_000;
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 400 invalid_request
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_without_param() {
    let app = spawn_unlimited().await;
    let key = app.create_key("trial", None).await;
    for raw in [
        "{not json",
        "",
        "{\"model\":\"deepseek-v4-flash\",\"messages\":[",
        "[1,2]",
        "\"a string\"",
    ] {
        let resp = raw_chat(&app, &key, raw).send().await.expect("send");
        let (_, err) = expect_error(resp, 400, "invalid_request", "invalid_request_error").await;
        assert!(err["param"].is_null(), "{raw:?}: {err}");
    }
    assert_untouched(&app, &key);
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_400_naming_the_field() {
    let app = spawn_unlimited().await;
    let key = app.create_key("trial", None).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"messages": msgs}), "model"),
        (json!({"model": null, "messages": msgs}), "model"),
        (json!({"model": 42, "messages": msgs}), "model"),
        (json!({"model": "", "messages": msgs}), "model"),
        (json!({"model": FLASH}), "messages"),
        (json!({"model": FLASH, "messages": null}), "messages"),
        (json!({"model": FLASH, "messages": "hi"}), "messages"),
        (json!({"model": FLASH, "messages": []}), "messages"),
        (json!({"model": FLASH, "messages": [1]}), "messages"),
        (
            json!({"model": FLASH, "messages": [{"content": "no role"}]}),
            "messages",
        ),
        (
            json!({"model": FLASH, "messages": [{"role": "user", "content": 5}]}),
            "messages",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "stream": 1}),
            "stream",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "max_tokens": "100"}),
            "max_tokens",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "max_tokens": 1.5}),
            "max_tokens",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "stream_options": 1}),
            "stream_options",
        ),
        (
            json!({"model": FLASH, "messages": msgs, "stream": true,
                   "stream_options": {"include_usage": "yes"}}),
            "stream_options",
        ),
    ];
    for (b, param) in cases {
        let resp = app.chat(&key, &b).send().await.expect("send");
        let (_, err) = expect_error(resp, 400, "invalid_request", "invalid_request_error").await;
        assert_eq!(err["param"], param, "body {b}: {err}");
    }
    assert_untouched(&app, &key);
}

#[tokio::test]
async fn a_stream_request_with_a_bad_body_gets_a_json_400_not_a_stream() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &json!({"model": FLASH, "stream": true}))
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 400, "invalid_request", "invalid_request_error").await;
    assert_eq!(err["param"], "messages");
}

// ---------------------------------------------------------------------------------------------
// 401 invalid_api_key
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_malformed_and_unknown_keys_are_401() {
    let app = spawn_unlimited().await;
    let good = app.create_key("trial", None).await;
    let b = body(FLASH, "hi");
    let url = format!("{}/v1/chat/completions", app.base);
    let short = "sk-gateway-tooShort123";
    let bad_chars = format!("sk-gateway-{}!", "a".repeat(40));
    // The real key with a character changed: well-formed, unknown.
    let mut altered = good.clone();
    let last = altered.pop().expect("non-empty");
    altered.push(if last == 'a' { 'b' } else { 'a' });
    let auths: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Basic {good}")),
        Some(good.clone()),
        Some(format!("Token {good}")),
        Some(format!("Bearer {short}")),
        Some(format!("Bearer {bad_chars}")),
        Some("Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD".into()),
        Some(format!("Bearer {UNKNOWN_KEY}")),
        Some(format!("Bearer {altered}")),
    ];
    for auth in auths {
        let mut req = app.http.post(&url).json(&b);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("send");
        let (_, err) = expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
        assert!(err["param"].is_null(), "{auth:?}: {err}");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(
            !msg.contains(&good),
            "an error message must not echo a key: {msg}"
        );
    }
    // The other endpoints refuse the same way.
    for path in [
        "/v1/models",
        "/v1/models/deepseek-v4-flash",
        "/v1/dashboard/billing/subscription",
        "/v1/dashboard/billing/usage",
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("send");
        expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
        let resp = app.get(UNKNOWN_KEY, path).send().await.expect("send");
        expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
    }
    // The good key still works, and the refusals reached nothing upstream.
    assert!(app.sim.requests().is_empty());
    let resp = app.chat(&good, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn auth_is_checked_before_the_body() {
    let app = TestApp::spawn().await;
    let resp = raw_chat(&app, UNKNOWN_KEY, "{not json")
        .send()
        .await
        .expect("send");
    expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
    let resp = app
        .chat(UNKNOWN_KEY, &body("no-such-model", "hi"))
        .send()
        .await
        .expect("send");
    expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let other = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { key: view } => assert_eq!(view.status, KeyStatus::Revoked),
        other => panic!("revoke failed: {other:?}"),
    }
    let upstream_before = app.sim.requests().len();
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    let (_, err) = expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
    assert!(err["param"].is_null());
    let resp = app.get(&key, "/v1/models").send().await.expect("send");
    expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
    assert_eq!(app.sim.requests().len(), upstream_before);
    // Another key of the same plan is unaffected.
    let resp = app
        .chat(&other, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// 402, 403, 404
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_that_cannot_pay_one_token_is_402_insufficient_quota() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", Some("0.000001")).await;
    for stream in [false, true] {
        let mut b = body(FLASH, "hi [[sim reply=2]]");
        b["stream"] = json!(stream);
        let resp = app.chat(&key, &b).send().await.expect("send");
        let (_, err) = expect_error(resp, 402, "insufficient_budget", "insufficient_quota").await;
        assert!(err["param"].is_null(), "{err}");
    }
    assert_untouched(&app, &key);
    assert_eq!(app.ledger_totals(&key), (0, Usd::ZERO));
}

#[tokio::test]
async fn a_model_outside_the_plan_is_403() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app.chat(&key, &body(PRO, "hi")).send().await.expect("send");
    let (_, err) = expect_error(resp, 403, "model_not_allowed", "permission_error").await;
    assert!(err["param"].is_null() || err["param"] == "model", "{err}");
    assert!(
        err["message"].as_str().unwrap_or_default().contains(PRO),
        "the message names the model: {err}"
    );
    assert_untouched(&app, &key);
    // The same model is fine on a plan that includes it.
    let pro = app.create_key("pro", None).await;
    let resp = app
        .chat(&pro, &body(PRO, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_unknown_model_is_404() {
    let app = TestApp::spawn().await;
    for plan in ["trial", "pro"] {
        let key = app.create_key(plan, None).await;
        for model in ["gpt-4o", "deepseek-chat", "DEEPSEEK-V4-FLASH"] {
            let resp = app
                .chat(&key, &body(model, "hi"))
                .send()
                .await
                .expect("send");
            let (_, err) =
                expect_error(resp, 404, "model_not_found", "invalid_request_error").await;
            assert!(err["param"].is_null() || err["param"] == "model", "{err}");
        }
        assert_untouched(&app, &key);
    }
}

// ---------------------------------------------------------------------------------------------
// 413 request_too_large
// ---------------------------------------------------------------------------------------------

/// A chat body serialized to exactly `len` bytes (padding the message text).
pub(super) fn body_of_len(len: usize) -> Vec<u8> {
    let base = serde_json::to_vec(&body(FLASH, "[[sim reply=1]]")).expect("json");
    let pad = len.checked_sub(base.len()).expect("len too small");
    let b = serde_json::to_vec(&body(FLASH, &format!("[[sim reply=1]]{}", "x".repeat(pad))))
        .expect("json");
    assert_eq!(b.len(), len);
    b
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024).await;
    let key = app.create_key("trial", None).await;
    // Over the limit with a Content-Length.
    for len in [1025, 4096, 16 * 1024] {
        let resp = raw_chat(&app, &key, body_of_len(len))
            .send()
            .await
            .expect("send");
        let (_, err) = expect_error(resp, 413, "request_too_large", "invalid_request_error").await;
        assert!(err["param"].is_null(), "{err}");
    }
    // Over the limit, chunked (no Content-Length): the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body_of_len(3000)
        .chunks(500)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = raw_chat(
        &app,
        &key,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .send()
    .await
    .expect("send");
    expect_error(resp, 413, "request_too_large", "invalid_request_error").await;
    assert_untouched(&app, &key);
    // Exactly at the limit is accepted.
    let resp = raw_chat(&app, &key, body_of_len(1024))
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert_eq!(app.sim.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 429 rate_limit_exceeded
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn over_the_plans_rpm_is_429_with_rate_headers() {
    let app = TestApp::spawn_with(|c| {
        c.plans.get_mut("trial").expect("trial plan").rpm = 3;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let other = app.create_key("trial", None).await;
    let b = body(FLASH, "hi [[sim reply=1]]");
    for remaining in ["2", "1", "0"] {
        let resp = app.chat(&key, &b).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(header(h, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(h, "x-ratelimit-remaining-requests"), remaining);
        assert!(!header(h, "x-ratelimit-reset-requests").is_empty());
    }
    let resp = app.chat(&key, &b).send().await.expect("send");
    let (h, err) = expect_error(resp, 429, "rate_limit_exceeded", "rate_limit_error").await;
    assert!(err["param"].is_null(), "{err}");
    let retry: u64 = header(&h, "retry-after")
        .parse()
        .expect("Retry-After is integer seconds");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    assert!(!header(&h, "x-ratelimit-reset-requests").is_empty());
    // The refused request never reached upstream and was not billed.
    assert_eq!(app.sim.requests().len(), 3);
    assert_eq!(app.ledger_totals(&key).0, 3);
    // A stream request is refused the same way (a JSON 429, not a stream).
    let mut sb = b.clone();
    sb["stream"] = json!(true);
    let resp = app.chat(&key, &sb).send().await.expect("send");
    expect_error(resp, 429, "rate_limit_exceeded", "rate_limit_error").await;
    // Another key of the same plan has its own allowance.
    let resp = app.chat(&other, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "x-ratelimit-remaining-requests"),
        "2"
    );
    assert_eq!(header(resp.headers(), "x-ratelimit-limit-requests"), "3");
}
