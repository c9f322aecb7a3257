//! Tests of the simulated DeepSeek through its HTTP interface: usage accounting, stream shape,
//! authentication and canned failures, keep-alives, and the failure directives.

use super::stream::KEEPALIVE;
use super::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

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
}

#[tokio::test]
async fn models_and_balance_answer_the_right_key() {
    let s = sim(false).await;
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
}

#[tokio::test]
async fn garbage_bodies_and_missing_usage() {
    let s = sim(false).await;
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
    // Remembered by hash: a message's key order does not matter, its text does.
    let mut reordered = turn2.clone();
    reordered["messages"][0] = json!({"content": "a".repeat(1000), "role": "system"});
    let (_, v) = post_json(&s, reordered).await;
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 256);
    let mut changed = turn2.clone();
    changed["messages"][0]["content"] = json!("b".repeat(1000));
    let (_, v) = post_json(&s, changed).await;
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 0);
    turn2["user_id"] = json!("someone-else");
    let (_, v) = post_json(&s, turn2).await;
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 0);
}

#[tokio::test]
async fn keeps_only_the_latest_requests_when_told() {
    let s = SimulatedDeepSeek::start(SimOptions {
        keep_requests: Some(2),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for n in 0..3 {
        let (status, _) = post_json(&s, req(&format!("[[sim reply=1]] n{n}"), json!({}))).await;
        assert_eq!(status, 200);
    }
    let kept = s.requests();
    let indexes: Vec<usize> = kept.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [1, 2]);
    assert_eq!(kept[1].body["messages"][0]["content"], "[[sim reply=1]] n2");
    let outcome = |i| s.wait_outcome(i, Duration::from_millis(50));
    assert_eq!(outcome(2).await, Outcome::Completed);
    assert_eq!(outcome(0).await, Outcome::InProgress);
    assert_eq!(s.requests_of(KEY).len(), 2);
    assert_eq!(SimOptions::demo().keep_requests, Some(DEMO_KEPT_REQUESTS));
}

/// The demo's simulator keeps no request: one is kept whole, its parsed body included, and a
/// demo sent long conversations (bodies of up to 8 MiB) held ~1 GB in the latest 100. Its
/// prefix cache, which holds hashes, still answers.
#[tokio::test]
async fn the_demo_keeps_no_request_body() {
    let s = SimulatedDeepSeek::start(SimOptions {
        chunk_delay: Duration::ZERO,
        ..SimOptions::demo()
    })
    .await
    .unwrap();
    let long = "a".repeat(1 << 20);
    let mut body = req("[[sim reply=1]] next", json!({}));
    body["messages"] = json!([
        {"role": "system", "content": long},
        {"role": "user", "content": "[[sim reply=1]] first"},
    ]);
    for _ in 0..2 {
        let (status, _) = post_json(&s, body.clone()).await;
        assert_eq!(status, 200);
    }
    body["messages"][1]["content"] = json!("[[sim reply=1]] second");
    let (status, v) = post_json(&s, body).await;
    assert_eq!(status, 200);
    assert!(v["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap() >= 1 << 18);
    let kept: usize = s.requests().iter().map(|r| r.body.to_string().len()).sum();
    assert_eq!(kept, 0, "bytes of request bodies the demo still holds");
    let outcome = s.wait_outcome(2, Duration::from_millis(50)).await;
    assert_eq!(outcome, Outcome::InProgress);
}
