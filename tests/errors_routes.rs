//! Errors outside the chat handler and request ids: unknown routes and wrong methods answer in
//! the same JSON error shape, and every response, success or error, carries its own
//! `x-request-id`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on purpose

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{TestApp, body, request_id, sse_events};
use crate::errors::{FLASH, PRO, UNKNOWN_KEY, body_of_len, check_shape, expect_error, raw_chat};

// ---------------------------------------------------------------------------------------------
// x-request-id everywhere; unknown routes and wrong methods in the same shape
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json_errors() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    for path in [
        "/v1/nope",
        "/v1/chat",
        "/v1/chat/completions/extra",
        "/v1/models/",
        "/v1/dashboard",
    ] {
        for k in [Some(key.as_str()), None] {
            let mut req = app.http.get(format!("{}{path}", app.base));
            if let Some(k) = k {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            let rid = request_id(&resp);
            assert!(!rid.is_empty());
            let text = resp.text().await.expect("body");
            assert_eq!(status, 404, "GET {path}: {text}");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text:?}"));
            check_shape(&v);
        }
    }
    let wrong = [
        (reqwest::Method::GET, "/v1/chat/completions"),
        (reqwest::Method::PUT, "/v1/chat/completions"),
        (reqwest::Method::DELETE, "/v1/chat/completions"),
        (reqwest::Method::POST, "/v1/models"),
        (reqwest::Method::POST, "/v1/dashboard/billing/usage"),
    ];
    for (method, path) in wrong {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(&key)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let rid = request_id(&resp);
        assert!(!rid.is_empty());
        let text = resp.text().await.expect("body");
        assert_eq!(status, 405, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        check_shape(&v);
    }
    assert!(app.sim.requests().is_empty());
}

#[tokio::test]
async fn the_bare_v1_prefix_is_a_json_404() {
    // A customer who pastes the base URL itself into curl or a browser.
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    // And an API path written another way: the API's shape, not the storefront's HTML page
    // (found by an independent check).
    for path in [
        "/v1",
        "/v1/",
        "//v1/chat/completions",
        "/V1/chat/completions",
        "/V1",
        // A base URL without its /v1 (DeepSeek's docs give both).
        "/chat/completions",
        "/models",
    ] {
        let resp = app.get(&key, path).send().await.expect("send");
        let status = resp.status().as_u16();
        let rid = request_id(&resp);
        assert!(!rid.is_empty());
        let text = resp.text().await.expect("body");
        assert_eq!(status, 404, "GET {path}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text:?}"));
        check_shape(&v);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/v1/chat/completions"),
            "GET {path}: the message says where the API is: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("without /v1"),
            "GET {path}: and what an Anthropic client's base URL is: {v}"
        );
    }
    // An Anthropic client's base URL ending in /v1 (it adds /v1 itself): a 404 in Anthropic's
    // shape whose message says that base URL goes without /v1.
    let resp = app.get(&key, "/v1/v1/messages").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without /v1"),
        "{v}"
    );
}

#[tokio::test]
async fn every_response_has_a_distinct_request_id() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 4096).await;
    let key = app.create_key("trial", None).await;
    let broke = app.create_key("trial", Some("0.000001")).await;
    let mut ids = Vec::new();

    // Successes: non-stream, stream, models.
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    ids.push(request_id(&resp));
    let mut sb = body(FLASH, "hi [[sim reply=2]]");
    sb["stream"] = json!(true);
    let resp = app.chat(&key, &sb).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    ids.push(request_id(&resp));
    let events = sse_events(&resp.text().await.expect("body"));
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let resp = app.get(&key, "/v1/models").send().await.expect("send");
    assert_eq!(resp.status(), 200);
    ids.push(request_id(&resp));

    // Errors of every kind.
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (raw_chat(&app, &key, "{oops"), 400),
        (app.chat(UNKNOWN_KEY, &body(FLASH, "hi")), 401),
        (app.chat(&broke, &body(FLASH, "hi")), 402),
        (app.chat(&key, &body(PRO, "hi")), 403),
        (app.chat(&key, &body("nope", "hi")), 404),
        (raw_chat(&app, &key, body_of_len(5000)), 413),
        (app.chat(&key, &body(FLASH, "[[sim fail=500]]")), 502),
        (app.chat(&key, &body(FLASH, "[[sim fail=422]]")), 422),
        (app.get(&key, "/v1/nope"), 404),
        (app.get(&key, "/v1/models/nope"), 404),
        (app.get(&key, "/v1/chat/completions"), 405),
    ];
    for (req, status) in cases {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), status);
        ids.push(request_id(&resp));
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "request ids repeat: {ids:?}");
    assert!(ids.iter().all(|i| !i.is_empty()));
}

#[tokio::test]
async fn rate_limited_and_timed_out_responses_have_a_request_id() {
    // 429 and 504 are covered by `expect_error` in their own tests too; here both at once,
    // and the ledger row of a successful request is found under the id its response carried.
    let app = TestApp::spawn_with(|c| {
        c.plans.get_mut("trial").expect("trial plan").rpm = 2;
        c.upstream.idle_timeout_secs = 1;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2 prompt=10]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.request_id, rid);
    let resp = app
        .chat(
            &key,
            &body(FLASH, "[[sim first_delay_ms=3000 keepalive_ms=60000]]"),
        )
        .send()
        .await
        .expect("send");
    let timeout_id = request_id(&resp);
    expect_error(resp, 504, "upstream_timeout", "server_error").await;
    let resp = app
        .chat(&key, &body(FLASH, "hi"))
        .send()
        .await
        .expect("send");
    let limited_id = request_id(&resp);
    expect_error(resp, 429, "rate_limit_exceeded", "rate_limit_error").await;
    assert_ne!(timeout_id, limited_id);
    assert_ne!(rid, limited_id);
}

/// A wrong method on the storefront's JSON API, `/healthz` or `/metrics` is a 405 in the
/// JSON error shape (it was an empty body), with `Allow`; on a page, a line of text.
#[tokio::test]
async fn wrong_methods_off_the_api_say_so_in_a_body() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/orders", "POST"),
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::DELETE, "/metrics", "GET"),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let allowed = resp.headers()["allow"].to_str().unwrap().to_string();
        assert!(allowed.contains(allow), "{method} {path}: Allow {allowed}");
        let v: Value = resp.json().await.unwrap();
        check_shape(&v);
        assert_eq!(v["error"]["code"], "method_not_allowed", "{method} {path}");
    }
    let resp = app
        .http
        .delete(format!("{}/pricing", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
    assert_eq!(resp.text().await.unwrap(), "Method not allowed.\n");
}

/// A path under the storefront's `/api/` that is none of its endpoints (a trailing slash, a
/// mistyped name) answers in its JSON error shape, not the HTML page (found by an independent
/// check).
#[tokio::test]
async fn an_unknown_storefront_api_path_is_a_json_404() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (reqwest::Method::POST, "/api/orders/"),
        (reqwest::Method::GET, "/api/nothing"),
        (reqwest::Method::GET, "/api"),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        assert!(!request_id(&resp).is_empty());
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}: {v}");
        assert_eq!(
            v["error"]["message"], "There is no such storefront API endpoint.",
            "{v}"
        );
    }
}

/// A path under the API's own prefix that is not one of its endpoints (OpenAI's Responses API,
/// which the Vercel AI SDK and LangChain call by default or for reasoning; embeddings; the
/// Anthropic batches and files APIs) is told as not offered, in its client's shape, naming the
/// path and what is served — not as a wrong base URL, which it is not. A path that does point
/// at a wrong base URL (the root's `/messages`, as the Vercel AI SDK's Anthropic client asks
/// for with the bare address) keeps the base URL advice, for that client too.
#[tokio::test]
async fn an_endpoint_not_offered_is_named_and_not_blamed_on_the_base_url() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    for (path, anthropic) in [
        ("/v1/responses", false),
        ("/v1/embeddings", false),
        ("/v1/messages/batches", true),
        ("/anthropic/v1/files", true),
    ] {
        let mut req = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&key)
            .json(&json!({"model": FLASH, "input": "hi"}));
        if anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let v: Value = resp.json().await.unwrap();
        if anthropic {
            assert_eq!(v["type"], "error", "{path}: {v}");
            assert_eq!(v["error"]["type"], "not_found_error", "{path}: {v}");
        } else {
            check_shape(&v);
            assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
        }
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(&format!("does not offer `{path}`")), "{m}");
        assert!(m.contains("POST /v1/chat/completions"), "{m}");
        assert!(m.contains("openai.chat(…)"), "{m}");
        assert!(!m.contains("base URL"), "{m}");
    }
    let resp = app
        .http
        .post(format!("{}/messages", app.base))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", &key)
        .json(&json!({"model": FLASH, "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("base URL"), "{m}");
    assert!(m.contains("adds only /messages"), "{m}");
    // A base URL with a trailing slash (`…/v1/` + `/chat/completions`): base URL advice.
    let resp = app.get(&key, "/v1//chat/completions").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("base URL") && !m.contains("does not offer"),
        "{m}"
    );
    assert!(app.sim.requests().is_empty());
}
