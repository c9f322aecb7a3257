//! The Anthropic dialect end to end (issue 12): routes and auth, the native relay and what the
//! gateway owns in it, aliases, exact billing from Anthropic usage, streams, and every error in
//! Anthropic's shape. Concurrency with the OpenAI dialect, disconnects and failures mid-stream
//! are in `anthropic_money`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{SIM_KEY, TestApp, expected_cost, request_id};

/// Flash off-peak prices (nano-USD per 1M tokens): cache hit, miss, output.
pub(super) const FLASH: [i64; 3] = [3_000_000, 150_000_000, 600_000_000];

/// How a request carries its key.
#[derive(Clone, Copy)]
pub(super) enum Auth {
    ApiKey,
    Bearer,
}

/// A Messages body asking for `text` (sim directives welcome).
pub(super) fn msg(model: &str, text: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}]})
}

/// `POST {path}` with the key sent as `auth`.
pub(super) fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    auth: Auth,
    b: &Value,
) -> reqwest::RequestBuilder {
    let r = app
        .http
        .post(format!("{}{path}", app.base))
        .header("anthropic-version", "2023-06-01")
        .json(b);
    match auth {
        Auth::ApiKey => r.header("x-api-key", key),
        Auth::Bearer => r.bearer_auth(key),
    }
}

/// The events of a Messages stream: (name, data).
pub(super) async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty() && !e.starts_with(':'))
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test]
async fn a_message_with_x_api_key_is_relayed_natively_and_billed_exactly() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let b = msg(
        "claude-sonnet-4-5",
        "[[sim prompt=1000 hit=640 reply=50]] hello",
        2000,
    );
    let resp = post(&app, "/v1/messages", &key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    // Where the anthropic SDKs read it.
    assert_eq!(resp.headers()["request-id"].to_str().unwrap(), rid);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "deepseek-v4-flash");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 640);
    assert_eq!(v["usage"]["input_tokens"], 360);
    assert_eq!(v["usage"]["output_tokens"], 50);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.api.as_str(), "anthropic");
    assert_eq!(row.model, "deepseek-v4-flash");
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (640, 360, 50)
    );
    assert_eq!(row.measured.as_str(), "provider");
    let want = expected_cost(640, 360, 50, FLASH[0], FLASH[1], FLASH[2]);
    assert_eq!(row.cost.nanos(), want);
    assert_eq!(app.key_state(&key).balance().spent.nanos(), want);
    // The customer's usage page names the dialect of each request (SPEC §7), as the ledger does.
    let usage: Value = app
        .get(&key, "/api/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["recent"][0]["request_id"], rid.as_str());
    assert_eq!(usage["recent"][0]["api"], "anthropic");
    // What went upstream: DeepSeek's Anthropic endpoint, the operator's key, the upstream model
    // name, the key's id as the end user; the customer's key never.
    let sent = app.sim.requests().last().cloned().unwrap();
    assert!(
        sent.path.starts_with("/anthropic/v1/messages"),
        "{}",
        sent.path
    );
    assert_eq!(sent.body["model"], "deepseek-v4-flash");
    assert_eq!(sent.body["metadata"]["user_id"], app.key_state(&key).id);
    assert_eq!(sent.body["max_tokens"], 2000);
    assert_eq!(sent.x_api_key, None);
    let auth = sent
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(auth, format!("Bearer {SIM_KEY}"));
    assert!(!format!("{:?}", sent.headers).contains(&key));
}

#[tokio::test]
async fn a_stream_with_bearer_under_anthropic_with_a_beta_query() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let mut b = msg(
        "claude-3-5-haiku",
        "[[sim prompt=40 hit=0 reply=6 reasoning=2]] hi",
        100,
    );
    b["stream"] = true.into();
    let resp = post(
        &app,
        "/anthropic/v1/messages?beta=true",
        &key,
        Auth::Bearer,
        &b,
    )
    .header("anthropic-beta", "interleaved-thinking-2025-05-14")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let rid = request_id(&resp);
    let evs = events(resp).await;
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(
        names.contains(&"ping") && names.contains(&"message_delta"),
        "{names:?}"
    );
    assert_eq!(evs[0].1["message"]["model"], "deepseek-v4-flash");
    for (name, data) in &evs {
        assert_eq!(
            data["type"].as_str(),
            Some(name.as_str()),
            "event name = data type"
        );
    }
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty());
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.api.as_str(), "anthropic");
    assert_eq!((row.prompt_tokens, row.completion_tokens), (40, 8));
    assert_eq!(
        row.cost.nanos(),
        expected_cost(0, 40, 8, FLASH[0], FLASH[1], FLASH[2])
    );
    assert!(row.stream);
    // /metrics counts per dialect.
    let m = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("modelrelay_api_requests_total{api=\"anthropic\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(
        !m.contains("modelrelay_api_requests_total{api=\"openai\""),
        "{m}"
    );
    let spend = modelrelay::money::Usd::from_nanos(row.cost.nanos());
    assert!(
        m.contains(&format!(
            "modelrelay_api_spend_usd_total{{api=\"anthropic\"}} {spend}"
        )),
        "{m}"
    );
}

#[tokio::test]
async fn peak_prices_apply_to_anthropic_requests_too() {
    let app = TestApp::spawn_with(|c| {
        c.pricing.peak_hours_utc = vec!["00:00-24:00".into()];
        c.pricing.peak_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec();
    })
    .await;
    let key = app.create_key("pro", None).await;
    let b = msg(
        "claude-opus-4-1",
        "[[sim prompt=500 hit=128 reply=40]] x",
        1000,
    );
    let resp = post(&app, "/v1/messages", &key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let row = app.wait_ledger_row(&request_id(&resp)).await;
    assert_eq!(row.model, "deepseek-v4-pro", "claude-opus* is pro");
    assert_eq!(row.period.as_str(), "peak");
    // Pro peak: hit 0.044, miss 1.32, output 3.96 per 1M.
    assert_eq!(
        row.cost.nanos(),
        expected_cost(128, 372, 40, 44_000_000, 1_320_000_000, 3_960_000_000)
    );
}

#[tokio::test]
async fn count_tokens_answers_an_estimate_and_charges_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let b = json!({"model": "claude-sonnet-4", "system": "be brief",
        "messages": [{"role": "user", "content": "x".repeat(400)}]});
    for path in [
        "/v1/messages/count_tokens",
        "/anthropic/v1/messages/count_tokens?beta=true",
    ] {
        let resp = post(&app, path, &key, Auth::ApiKey, &b)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.unwrap();
        // (400 + 8) bytes / 4, plus 4 a message and 2.
        assert_eq!(v, json!({"input_tokens": 102 + 4 + 2}));
    }
    assert_eq!(app.sim.requests().len(), 0, "nothing went upstream");
    assert_eq!(app.key_state(&key).balance().spent.nanos(), 0);
    assert_eq!(app.ledger_totals(&key).0, 0);
    let resp = post(
        &app,
        "/v1/messages/count_tokens",
        "sk-gateway-nope",
        Auth::ApiKey,
        &b,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn aliases_work_in_the_openai_dialect_and_models_lists_real_ids() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(
            &key,
            &crate::common::body("claude-3-haiku", "hi [[sim reply=2]]"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "deepseek-v4-flash");
    let models: Value = app
        .get(&key, "/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["deepseek-v4-flash"]);
    // The list names real ids; asked by a name the chat routes serve, the model is there
    // (a client that checks its model first must not be told no for one that works).
    let alias = app
        .get(&key, "/v1/models/claude-3-haiku")
        .send()
        .await
        .unwrap();
    assert_eq!(alias.status(), 200);
    let v: Value = alias.json().await.unwrap();
    assert_eq!(v["id"], "claude-3-haiku", "{v}");
    let unknown = app.get(&key, "/v1/models/gpt-4o").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// Anthropic's SDKs list models at `/v1/models` with `x-api-key` and `anthropic-version`:
/// they get Anthropic's list (and errors in Anthropic's shape), the plan's models by id.
#[tokio::test]
async fn anthropic_clients_list_models_in_anthropics_shape() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", None).await;
    let get = |path: &str, key: &str| {
        app.http
            .get(format!("{}{path}", app.base))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    };
    let resp = get("/v1/models", &key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The request id where the anthropic SDKs read it (their exceptions had none here).
    assert_eq!(resp.headers()["request-id"], resp.headers()["x-request-id"]);
    let v: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "model", "{m}");
            assert!(
                m["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{m}"
            );
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["deepseek-v4-flash", "deepseek-v4-pro"]);
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "deepseek-v4-flash");
    assert_eq!(v["last_id"], "deepseek-v4-pro");
    let one: Value = get("/v1/models/deepseek-v4-pro", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (one["type"].as_str(), one["id"].as_str()),
        (Some("model"), Some("deepseek-v4-pro"))
    );
    expect_error(
        get("/v1/models", "sk-gateway-nope").send().await.unwrap(),
        401,
        "authentication_error",
    )
    .await;
    expect_error(
        get("/v1/models/nope", &key).send().await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
    // A name the messages route serves (an alias) is a model here too, under that name.
    let alias: Value = get("/v1/models/claude-opus-4-1", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alias["id"], "claude-opus-4-1", "{alias}");
    assert_eq!(alias["type"], "model", "{alias}");
    let trial = app.create_key("trial", None).await;
    expect_error(
        get("/v1/models/claude-opus-4-1", &trial)
            .send()
            .await
            .unwrap(),
        403,
        "permission_error",
    )
    .await;
    // Under /anthropic (the base URL DeepSeek documents for Anthropic clients): always
    // Anthropic's shape, with the key either way.
    let resp = app
        .http
        .get(format!("{}/anthropic/v1/models", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["last_id"], "deepseek-v4-pro", "{v}");
    // Anthropic's paging, as its SDKs page on: `limit`, then `after_id` while `has_more`.
    for (query, first, more) in [
        ("limit=1", "deepseek-v4-flash", true),
        (
            "limit=1&after_id=deepseek-v4-flash",
            "deepseek-v4-pro",
            false,
        ),
    ] {
        let resp = get(&format!("/v1/models?{query}"), &key)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (v["data"][0]["id"].as_str(), v["has_more"].as_bool()),
            (Some(first), Some(more)),
            "{query}: {v}"
        );
    }
    for bad in ["limit=0", "limit=1&limit=2"] {
        expect_error(
            get(&format!("/v1/models?{bad}"), &key)
                .send()
                .await
                .unwrap(),
            400,
            "invalid_request_error",
        )
        .await;
    }
    let resp = app
        .http
        .get(format!("{}/anthropic/v1/models/nope", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "not_found_error").await;
    // Paths and methods the gateway does not serve, asked by an Anthropic client, answer in
    // Anthropic's shape (its SDK reads no other); an OpenAI client's in OpenAI's.
    for (method, path) in [
        (reqwest::Method::POST, "/v1/messages/batches"),
        (reqwest::Method::POST, "/v1/messages/"),
        (reqwest::Method::POST, "/v1/complete"),
    ] {
        let resp = app
            .http
            .request(method, format!("{}{path}", app.base))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        expect_error(resp, 404, "not_found_error").await;
    }
    let resp = app
        .http
        .post(format!("{}/v1/models", app.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    expect_error(resp, 405, "invalid_request_error").await;
    let resp = app
        .http
        .get(format!("{}/v1/nothing", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found", "OpenAI's shape: {v}");
    // Claude Code's way without the version header: x-api-key alone is Anthropic's too.
    let resp = app
        .http
        .get(format!("{}/v1/models", app.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["has_more"], false, "{v}");
}

/// Send `b` to `/v1/messages`, expect `status` and Anthropic's error shape with `kind`.
async fn expect_error(resp: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test]
async fn every_error_in_anthropics_shape() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_body_bytes = 64 * 1024;
        c.upstream.idle_timeout_secs = 1;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let ok = msg("claude-sonnet-4", "hi [[sim reply=1]]", 10);
    let send = |k: &str, b: &Value| post(&app, "/v1/messages", k, Auth::ApiKey, b).send();
    expect_error(
        send(&key, &json!({"model": "claude-sonnet-4"}))
            .await
            .unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    expect_error(
        send(&key, &msg("claude-sonnet-4", "hi", 0)).await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    let missing = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .json(&ok)
        .send()
        .await
        .unwrap();
    let v = expect_error(missing, 401, "authentication_error").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key")
    );
    expect_error(
        send("sk-gateway-unknown", &ok).await.unwrap(),
        401,
        "authentication_error",
    )
    .await;
    let broke = app.create_key("trial", Some("0.000000001")).await;
    expect_error(send(&broke, &ok).await.unwrap(), 402, "billing_error").await;
    let denied = expect_error(
        send(&key, &msg("claude-opus-4", "hi", 10)).await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    // It names the model the client asked for, and what would serve it.
    assert_eq!(
        denied["error"]["message"],
        "The model `claude-opus-4` (served by `deepseek-v4-pro`) is not included in your key's plan."
    );
    expect_error(
        send(&key, &msg("gpt-5", "hi", 10)).await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
    let big = msg("claude-sonnet-4", &"x".repeat(100_000), 10);
    expect_error(send(&key, &big).await.unwrap(), 413, "request_too_large").await;
    expect_error(
        send(&key, &msg("claude-sonnet-4", "hi [[sim fail=500]]", 10))
            .await
            .unwrap(),
        502,
        "api_error",
    )
    .await;
    expect_error(
        send(
            &key,
            &msg(
                "claude-sonnet-4",
                // No blank line before the idle timeout (1 s): they would reset it, and the
                // first, at 1 s, raced it.
                "hi [[sim first_delay_ms=3000 keepalive_ms=5000 reply=2]]",
                10,
            ),
        )
        .await
        .unwrap(),
        504,
        "timeout_error",
    )
    .await;
    // Upstream's own 400 about the request passes on, in this shape.
    expect_error(
        send(&key, &msg("claude-sonnet-4", "hi [[sim fail=400]]", 10))
            .await
            .unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    let unknown = app
        .http
        .get(format!("{}/anthropic/v1/nothing", app.base))
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "not_found_error").await;
    for path in ["/anthropic/", "//anthropic/v1/messages", "/V1/messages"] {
        let unknown = app
            .http
            .post(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        expect_error(unknown, 404, "not_found_error").await;
    }
    let get = app
        .http
        .get(format!("{}/v1/messages", app.base))
        .send()
        .await
        .unwrap();
    expect_error(get, 405, "invalid_request_error").await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.rpm = 2;
        }
    })
    .await;
    let key = app.create_key("trial", None).await;
    let ok = msg("claude-sonnet-4", "hi [[sim reply=1]]", 10);
    for _ in 0..2 {
        let r = post(&app, "/v1/messages", &key, Auth::ApiKey, &ok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = post(&app, "/v1/messages", &key, Auth::ApiKey, &ok)
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("x-ratelimit-limit-requests"));
    expect_error(r, 429, "rate_limit_error").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// `count_tokens` has a limit of its own at the key's RPM: it does not use up the key's
/// requests, and it is not unlimited (it reads bodies up to the body limit for free).
#[tokio::test]
async fn count_tokens_has_a_rate_limit_of_its_own() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.rpm = 2;
        }
    })
    .await;
    let key = app.create_key("trial", None).await;
    let b = json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        let r = post(&app, "/v1/messages/count_tokens", &key, Auth::ApiKey, &b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = post(&app, "/v1/messages/count_tokens", &key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 429, "rate_limit_error").await;
    // The key's requests are untouched by the counting.
    let ok = msg("claude-sonnet-4", "hi [[sim reply=1]]", 10);
    for _ in 0..2 {
        let r = post(&app, "/v1/messages", &key, Auth::ApiKey, &ok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Anthropic's keep-alive is a `ping` event, not an SSE comment: a stream that stalls behind
/// pings times out on the idle timer as one behind comments does (DeepSeek's known fault),
/// instead of running to the request's deadline while holding the key's money.
#[tokio::test]
async fn a_stream_stalled_behind_pings_times_out_on_the_idle_timer() {
    let app = TestApp::spawn_with(|c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;
    let mut b = msg(
        "claude-3-5-haiku",
        "[[sim reply=10 stall_after=3 keepalive_ms=100 ping_keepalive=1]] hi",
        100,
    );
    b["stream"] = true.into();
    let started = std::time::Instant::now();
    let resp = post(&app, "/v1/messages", &key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let evs = events(resp).await;
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    let pings_after_text = names
        .iter()
        .skip_while(|n| **n != "content_block_delta")
        .filter(|n| **n == "ping")
        .count();
    assert!(
        pings_after_text >= 2,
        "pings relayed while stalled: {names:?}"
    );
    let (last, data) = evs.last().expect("events");
    assert_eq!(last, "error", "{names:?}");
    assert_eq!(data["error"]["type"], "timeout_error", "{data}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ended by the idle timer, not the request's deadline"
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish, modelrelay::store::Finish::UpstreamTimeout);
}

/// DeepSeek serves its Messages API at `/anthropic/messages` too, which a client that adds only
/// `/messages` (the Vercel AI SDK) reaches with a base URL copied from DeepSeek's docs: so does
/// the gateway, billed as any Messages request; `count_tokens` beside it as well.
#[tokio::test]
async fn the_messages_api_answers_at_anthropic_messages_as_deepseek_does() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let b = msg(
        "claude-sonnet-4-5",
        "[[sim prompt=100 hit=0 reply=7]] hi",
        50,
    );
    let resp = post(&app, "/anthropic/messages", &key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.api.as_str(), "anthropic");
    assert_eq!((row.cache_miss_tokens, row.completion_tokens), (100, 7));
    assert_eq!(
        row.cost.nanos(),
        expected_cost(0, 100, 7, FLASH[0], FLASH[1], FLASH[2])
    );
    let resp = post(
        &app,
        "/anthropic/messages/count_tokens",
        &key,
        Auth::Bearer,
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
    // Counted under their own routes, not `other`.
    let metrics = crate::ops::scrape(&app).await;
    for route in ["/anthropic/messages", "/anthropic/messages/count_tokens"] {
        let series = format!("modelrelay_http_requests_total{{route=\"{route}\",status=\"200\"}}");
        assert_eq!(crate::ops::get(&metrics, &series), 1.0, "{series}");
    }
}
