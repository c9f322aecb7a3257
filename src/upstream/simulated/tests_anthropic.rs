//! Tests of the simulator's Anthropic-format route through HTTP: usage mapping with cache hits,
//! the stream's event sequence, `claude*` model mapping, auth (Bearer wins), validation, and
//! the failure directives in Anthropic's shapes.

use super::*;
use serde_json::{Value, json};

pub(super) const KEY: &str = "sk-simulated";

pub(super) async fn sim(prefix_cache: bool) -> SimulatedDeepSeek {
    SimulatedDeepSeek::start(SimOptions {
        prefix_cache,
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

pub(super) fn req(text: &str, extra: Value) -> Value {
    let mut body = json!({"model": "deepseek-v4-flash", "max_tokens": 1000,
        "messages": [{"role": "user", "content": text}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// How a test authenticates: `(header name, value)` pairs.
pub(super) type Auth<'a> = &'a [(&'a str, &'a str)];

pub(super) async fn post_to(
    s: &SimulatedDeepSeek,
    path: &str,
    auth: Auth<'_>,
    body: &Value,
) -> reqwest::Response {
    let mut rb = reqwest::Client::new()
        .post(format!("{}{path}", s.base_url()))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(body);
    for (name, value) in auth {
        rb = rb.header(*name, *value);
    }
    rb.send().await.unwrap()
}

pub(super) async fn post(s: &SimulatedDeepSeek, body: &Value) -> reqwest::Response {
    post_to(s, "/anthropic/v1/messages", &[("x-api-key", KEY)], body).await
}

pub(super) async fn post_json(s: &SimulatedDeepSeek, body: Value) -> (u16, Value) {
    let resp = post(s, &body).await;
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(resp.text().await.unwrap().trim_start()).unwrap(),
    )
}

/// `(event name, data)` of each SSE event; comments are skipped, data left raw.
pub(super) fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            Some((name?, data?))
        })
        .collect()
}

pub(super) fn parsed(events: &[(String, String)]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|(n, d)| (n.clone(), serde_json::from_str(d).unwrap()))
        .collect()
}

pub(super) fn prompt_of(texts: &[&str]) -> u64 {
    2 + texts
        .iter()
        .map(|t| 4 + (t.len() as u64).div_ceil(4))
        .sum::<u64>()
}

pub(super) fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[tokio::test]
async fn non_stream_message_and_usage() {
    let s = sim(false).await;
    let text = "[[sim reply=5 reasoning=3]] hello there";
    let (status, v) = post_json(&s, req(text, json!({"system": "be brief"}))).await;
    assert_eq!(status, 200);
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"), "{id}");
    let p = prompt_of(&["be brief", text]);
    let expected = json!({"id": id, "type": "message", "role": "assistant", "model": "deepseek-v4-flash",
        "content": [{"type": "thinking", "thinking": "hmm, let me", "signature": format!("sim-signature-{id}")},
            {"type": "text", "text": "alpha bravo charlie delta echo"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": p, "output_tokens": 8, "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0}});
    assert_eq!(v, expected);
    assert_eq!(
        s.wait_outcome(0, Duration::from_secs(2)).await,
        Outcome::Completed
    );

    // max_tokens caps output, reasoning included; no_usage drops the usage object.
    let body = req("[[sim reasoning=3 reply=10]]", json!({"max_tokens": 5}));
    let (_, v) = post_json(&s, body).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(
        v["content"][1],
        json!({"type": "text", "text": "alpha bravo "})
    );
    assert_eq!(v["usage"]["output_tokens"], 5);
    let (_, v) = post_json(&s, req("[[sim reply=1 no_usage=1]]", json!({}))).await;
    assert!(v.get("usage").is_none());
    assert_eq!(v["content"], json!([{"type": "text", "text": "alpha"}]));
}

#[tokio::test]
async fn cache_hits_are_cache_read_input_tokens() {
    let s = sim(true).await;
    let system = "a".repeat(1000);
    let turn1 = json!({"model": "claude-sonnet-4", "max_tokens": 64, "system": [{"type": "text", "text": system}],
        "metadata": {"user_id": "key-7"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "[[sim reply=2]] hi"}]}]});
    let (_, v) = post_json(&s, turn1.clone()).await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    let mut turn2 = turn1.clone();
    let msgs = turn2["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": "alpha bravo"}));
    msgs.push(json!({"role": "user", "content": "more"}));
    let (_, v) = post_json(&s, turn2.clone()).await;
    // The system prompt is 2 + 4 + 250 = 256 tokens: exactly four 64-token blocks.
    let p = prompt_of(&[&system, "[[sim reply=2]] hi", "alpha bravo", "more"]);
    let expected = json!({"input_tokens": p - 256, "output_tokens": 2, "cache_read_input_tokens": 256,
        "cache_creation_input_tokens": 0});
    assert_eq!(v["usage"], expected);
    turn2["metadata"]["user_id"] = json!("key-8");
    let (_, v) = post_json(&s, turn2).await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(v["usage"]["input_tokens"], p);

    let r = &s.requests()[1];
    assert_eq!(
        (r.endpoint, r.path.as_str()),
        (Endpoint::AnthropicMessages, "/anthropic/v1/messages")
    );
    assert_eq!(r.body["metadata"]["user_id"], "key-7");
    assert_eq!(r.body["max_tokens"], 64);
    assert_eq!(r.x_api_key.as_deref(), Some(KEY));
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.served_model.as_deref(), Some("deepseek-v4-flash"));
}

const STREAM_SEQUENCE: &[&str] = &[
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
];

#[tokio::test]
async fn stream_event_sequence_and_cumulative_output() {
    let s = sim(false).await;
    let text = "[[sim reasoning=2 reply=3 hit=10 prompt=100]]";
    let resp = post_to(
        &s,
        "/anthropic/v1/messages",
        &[("authorization", "Bearer sk-simulated")],
        &req(text, json!({"stream": true})),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let ev = parsed(&events(&resp.text().await.unwrap()));
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, STREAM_SEQUENCE);
    assert!(ev.iter().all(|(n, d)| d["type"] == n.as_str()));
    let start = &ev[0].1["message"];
    let id = start["id"].as_str().unwrap();
    assert_eq!(
        start,
        &json!({"id": id, "type": "message", "role": "assistant", "model": "deepseek-v4-flash",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 90, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0,
            "output_tokens": 1}})
    );
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        ev[3].1["delta"],
        json!({"type": "thinking_delta", "thinking": "hmm, "})
    );
    assert_eq!(
        ev[5].1["delta"],
        json!({"type": "signature_delta", "signature": format!("sim-signature-{id}")})
    );
    assert_eq!(
        (ev[6].1["index"].as_u64(), ev[7].1["index"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        ev[7].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = ev[8..11]
        .iter()
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "alpha bravo charlie");
    assert_eq!(
        ev[12].1,
        json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}})
    );
    assert_eq!(
        s.wait_outcome(0, Duration::from_secs(2)).await,
        Outcome::Completed
    );
}

#[tokio::test]
async fn stream_without_reasoning_truncated_and_without_usage() {
    let s = sim(false).await;
    let body = req(
        "[[sim reply=4 no_usage=1]]",
        json!({"stream": true, "max_tokens": 2}),
    );
    let ev = parsed(&events(&post(&s, &body).await.text().await.unwrap()));
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let expected = [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ];
    assert_eq!(names, expected);
    assert!(ev[0].1["message"].get("usage").is_none());
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        ev[4].1["delta"],
        json!({"type": "text_delta", "text": "bravo "})
    );
    assert_eq!(ev[5].1["index"], 0);
    assert_eq!(
        ev[6].1,
        json!({"type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": null}})
    );
}

#[tokio::test]
async fn claude_names_are_mapped_and_others_refused() {
    let s = sim(false).await;
    for (i, (asked, served)) in [
        ("claude-opus-4", "deepseek-v4-pro"),
        ("claude-sonnet-4", "deepseek-v4-flash"),
        ("claude-3-5-haiku-latest", "deepseek-v4-flash"),
        ("deepseek-v4-pro", "deepseek-v4-pro"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, v) = post_json(&s, req("hi", json!({"model": asked}))).await;
        assert_eq!((status, v["model"].as_str()), (200, Some(asked)));
        assert_eq!(
            s.requests()[i].served_model.as_deref(),
            Some(served),
            "{asked}"
        );
    }
    let (status, v) = post_json(&s, req("hi", json!({"model": "gpt-4"}))).await;
    assert_eq!(
        (status, v),
        (400, error_body("invalid_request_error", "Model Not Exist"))
    );
    assert_eq!(
        s.wait_outcome(4, Duration::ZERO).await,
        Outcome::Failed(400)
    );
    assert_eq!(s.requests()[4].served_model, None);
}

#[tokio::test]
async fn auth_by_x_api_key_or_bearer_and_bearer_wins() {
    let s = sim(false).await;
    let wrong = error_body(
        "authentication_error",
        "Authentication Fails, Your api key: ****1234 is invalid",
    );
    let cases: &[(Auth<'_>, u16)] = &[
        (&[("x-api-key", KEY)], 200),
        (&[("authorization", "Bearer sk-simulated")], 200),
        (
            &[
                ("authorization", "Bearer sk-simulated"),
                ("x-api-key", "sk-wrong-1234"),
            ],
            200,
        ),
        (
            &[
                ("authorization", "Bearer sk-wrong-1234"),
                ("x-api-key", KEY),
            ],
            401,
        ),
        (&[("x-api-key", "sk-wrong-1234")], 401),
        (&[], 401),
    ];
    for (i, (auth, expected)) in cases.iter().enumerate() {
        let resp = post_to(
            &s,
            "/anthropic/messages?beta=true",
            auth,
            &req("hi", json!({})),
        )
        .await;
        assert_eq!(resp.status().as_u16(), *expected, "case {i}");
        let v: Value = resp.json().await.unwrap();
        if *expected == 401 && i != 5 {
            assert_eq!(v, wrong);
        } else if *expected == 200 {
            assert_eq!(v["type"], "message");
        }
    }
    assert_eq!(
        s.wait_outcome(3, Duration::ZERO).await,
        Outcome::Failed(401)
    );
    let r = &s.requests()[2];
    assert_eq!(r.path, "/anthropic/messages?beta=true");
    assert_eq!(r.authorization.as_deref(), Some("Bearer sk-simulated"));
    assert_eq!(r.x_api_key.as_deref(), Some("sk-wrong-1234"));
}

#[tokio::test]
async fn validation_as_deepseek_does_it() {
    let s = sim(false).await;
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    let cases = [
        (json!({"max_tokens": null}), "max_tokens: Field required"),
        (
            json!({"max_tokens": 0}),
            "max_tokens: Input should be a positive integer",
        ),
        (
            json!({"max_tokens": "5"}),
            "max_tokens: Input should be a positive integer",
        ),
        (
            json!({"messages": []}),
            "messages: at least one message is required",
        ),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"messages": user(json!(5))}),
            "messages.0.content: Input should be a valid string or list of content blocks",
        ),
        (
            json!({"messages": user(json!([{"type": "text"}]))}),
            "messages.0.content.0.text: Field required",
        ),
        (
            json!({"system": 5}),
            "system: Input should be a valid string or list of text blocks",
        ),
        (
            json!({"metadata": {"user_id": 7}}),
            "metadata.user_id: Input should be a valid string",
        ),
        (
            json!({"stream": "yes"}),
            "stream: Input should be a valid boolean",
        ),
        (
            json!({"tool_choice": {"type": "tool"}}),
            "tool_choice: Input should be an object of type auto, any, tool or none",
        ),
        (json!({"model": null}), "model: Field required"),
    ];
    for (i, (extra, message)) in cases.into_iter().enumerate() {
        let mut body = req("hi", extra);
        body.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        let (status, v) = post_json(&s, body).await;
        assert_eq!(
            (status, v),
            (400, error_body("invalid_request_error", message)),
            "case {i}"
        );
        assert_eq!(
            s.wait_outcome(i, Duration::ZERO).await,
            Outcome::Failed(400)
        );
    }
    let resp = post_to(
        &s,
        "/anthropic/v1/messages",
        &[("x-api-key", KEY)],
        &json!("not an object"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn blocks_count_toward_the_prompt() {
    let s = sim(false).await;
    let messages = json!([
        {"role": "user", "content": [{"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "pondering", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "ls", "input": {"d": "."}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [{"type": "text", "text": "a.txt"}]}, {"type": "text", "text": "[[sim reply=1]]"}]},
    ]);
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 10, "messages": messages,
        "tools": [{"name": "ls", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 0.5, "top_p": 1,
        "top_k": 5, "stop_sequences": ["END"], "metadata": {"user_id": "anyone at all"}});
    let (status, v) = post_json(&s, body).await;
    assert_eq!(status, 200, "{v}");
    // An image adds nothing; a thinking block its text; a tool call its name and input; a tool
    // result its content.
    let assistant = format!("pondering{}", r#"ls {"d":"."}"#);
    let p = prompt_of(&["look", &assistant, "a.txt[[sim reply=1]]"]);
    assert_eq!(v["usage"]["input_tokens"], p);
    assert_eq!(v["model"], "claude-opus-4-1");
    assert_eq!(
        s.requests()[0].served_model.as_deref(),
        Some("deepseek-v4-pro")
    );
}
