//! The model endpoints, the model name mapping, what the gateway sends upstream on the
//! customer's behalf (SPEC §3, §4: `user_id`, `stream_options.include_usage`, `max_tokens`),
//! and the legacy OpenAI billing endpoints chat front-ends read a balance from.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on purpose

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Days};
use modelrelay::money::Usd;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{TestApp, body, expected_cost, request_id, sse_events};

const FLASH: &str = "deepseek-v4-flash";
const PRO: &str = "deepseek-v4-pro";
/// deepseek-v4-flash off-peak prices, nano-USD per 1M tokens (the tests are always off-peak).
const P_HIT: i64 = 3_000_000;
const P_MISS: i64 = 150_000_000;
const P_OUT: i64 = 600_000_000;

/// Assert status, `x-request-id`, the exact error shape, `code` and `type`; returns `error`.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str, kind: &str) -> Value {
    let got = resp.status().as_u16();
    assert!(!request_id(&resp).is_empty());
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body not JSON ({e}): {text}"));
    let top = v.as_object().expect("object");
    assert_eq!(
        top.keys().map(String::as_str).collect::<Vec<_>>(),
        ["error"],
        "{text}"
    );
    let e = top["error"].as_object().expect("error object");
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["code", "message", "param", "type"]),
        "{text}"
    );
    assert!(
        e["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
        "{text}"
    );
    assert!(e["param"].is_null() || e["param"].is_string(), "{text}");
    assert_eq!(e["code"], code, "{text}");
    assert_eq!(e["type"], kind, "{text}");
    top["error"].clone()
}

/// GET a path with a key, expecting 200 and JSON.
async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    let resp = app.get(key, path).send().await.expect("send");
    let status = resp.status();
    assert!(!request_id(&resp).is_empty());
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} not JSON ({e}): {text}"))
}

/// A model object: `id`, `object: "model"`, `owned_by` (and optionally OpenAI's `created`).
fn assert_model_object(m: &Value, id: &str) {
    let o = m
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {m}"));
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["object"], "model", "{m}");
    assert!(m["owned_by"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    let allowed = BTreeSet::from(["id", "object", "owned_by", "created"]);
    for k in o.keys() {
        assert!(allowed.contains(k.as_str()), "unexpected field {k}: {m}");
    }
}

/// The ids of a `/v1/models` list, checking its shape.
fn model_ids(list: &Value) -> Vec<String> {
    assert_eq!(list["object"], "list", "{list}");
    let data = list["data"].as_array().expect("data array");
    for m in data {
        assert_model_object(m, m["id"].as_str().expect("id"));
    }
    data.iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GET /v1/models, GET /v1/models/{id}
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_trial_key_lists_exactly_flash() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let list = get_json(&app, &key, "/v1/models").await;
    assert_eq!(model_ids(&list), [FLASH]);
}

#[tokio::test]
async fn a_pro_key_lists_both_models() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", None).await;
    let list = get_json(&app, &key, "/v1/models").await;
    let ids: BTreeSet<String> = model_ids(&list).into_iter().collect();
    assert_eq!(ids, BTreeSet::from([FLASH.to_string(), PRO.to_string()]));
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn listing_models_needs_a_key() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .get(format!("{}/v1/models", app.base))
        .send()
        .await
        .expect("send");
    let err = expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
    assert!(err["param"].is_null());
}

#[tokio::test]
async fn one_model_is_200_403_or_404() {
    let app = TestApp::spawn().await;
    let trial = app.create_key("trial", None).await;
    let pro = app.create_key("pro", None).await;
    let m = get_json(&app, &trial, "/v1/models/deepseek-v4-flash").await;
    assert_model_object(&m, FLASH);
    let m = get_json(&app, &pro, "/v1/models/deepseek-v4-pro").await;
    assert_model_object(&m, PRO);
    let m = get_json(&app, &pro, "/v1/models/deepseek-v4-flash").await;
    assert_model_object(&m, FLASH);

    let resp = app
        .get(&trial, "/v1/models/deepseek-v4-pro")
        .send()
        .await
        .expect("send");
    expect_error(resp, 403, "model_not_allowed", "permission_error").await;
    for key in [&trial, &pro] {
        for id in ["gpt-4o", "deepseek-chat", "nope"] {
            let resp = app
                .get(key, &format!("/v1/models/{id}"))
                .send()
                .await
                .expect("send");
            expect_error(resp, 404, "model_not_found", "invalid_request_error").await;
        }
    }
    let resp = app
        .http
        .get(format!("{}/v1/models/deepseek-v4-flash", app.base))
        .send()
        .await
        .expect("send");
    expect_error(resp, 401, "invalid_api_key", "authentication_error").await;
}

// ---------------------------------------------------------------------------------------------
// Model name mapping
// ---------------------------------------------------------------------------------------------

/// A daemon selling `my-flash` (upstream `deepseek-v4-flash`) on the trial plan.
async fn spawn_with_my_flash() -> TestApp {
    TestApp::spawn_with(|c| {
        let mut m = c.models.get(FLASH).cloned().expect("flash configured");
        m.upstream_model = FLASH.into();
        c.models.insert("my-flash".into(), m);
        c.plans
            .get_mut("trial")
            .expect("trial plan")
            .models
            .push("my-flash".into());
    })
    .await
}

#[tokio::test]
async fn a_public_name_is_mapped_to_the_upstream_model_non_stream() {
    let app = spawn_with_my_flash().await;
    let key = app.create_key("trial", None).await;
    let list = get_json(&app, &key, "/v1/models").await;
    let ids: BTreeSet<String> = model_ids(&list).into_iter().collect();
    assert_eq!(
        ids,
        BTreeSet::from([FLASH.to_string(), "my-flash".to_string()])
    );
    let m = get_json(&app, &key, "/v1/models/my-flash").await;
    assert_model_object(&m, "my-flash");

    let resp = app
        .chat(&key, &body("my-flash", "hi [[sim reply=4 prompt=10]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["model"], "my-flash", "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "alpha bravo charlie delta"
    );
    let recs = app.sim.requests();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].body["model"], FLASH);
    // Billed under the public name, at its prices.
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.model, "my-flash");
    assert_eq!(
        row.cost.nanos(),
        expected_cost(0, 10, 4, P_HIT, P_MISS, P_OUT)
    );
}

#[tokio::test]
async fn a_public_name_is_mapped_in_every_stream_chunk() {
    let app = spawn_with_my_flash().await;
    let key = app.create_key("trial", None).await;
    let mut b = body("my-flash", "hi [[sim reply=4 reasoning=2]]");
    b["stream"] = json!(true);
    let resp = app.chat(&key, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk not JSON ({e}): {d}")))
        .collect();
    // Role chunk, 2 reasoning, 4 content, final chunk.
    assert_eq!(chunks.len(), 8, "{text}");
    for c in &chunks {
        assert_eq!(c["model"], "my-flash", "{c}");
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
    }
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "alpha bravo charlie delta");
    let recs = app.sim.requests();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].body["model"], FLASH);
}

// ---------------------------------------------------------------------------------------------
// What reaches upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_gets_the_key_id_as_user_id_and_every_client_field_unchanged() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let key_id = app.key_state(&key).id.clone();
    // What SillyTavern sends, plus fields the gateway has no reason to know.
    let sent = json!({
        "model": FLASH,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "alice", "content": "hi [[sim reply=3]]"},
            {"role": "assistant", "name": "bot", "content": "hello"},
            {"role": "user", "name": "alice", "content": [{"type": "text", "text": "again"}]}
        ],
        "temperature": 0.7,
        "top_p": 0.9,
        "logit_bias": {},
        "presence_penalty": 0.5,
        "frequency_penalty": 0,
        "stop": ["\n\nUser:"],
        "seed": 42,
        "user": "end-user-7",
        "user_id": "spoofed-by-client",
        "thinking": {"type": "disabled"},
        "response_format": {"type": "text"},
        "x_custom": {"nested": [1, 2.5, null, "s"]}
    });
    let resp = app.chat(&key, &sent).send().await.expect("send");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let recs = app.sim.requests();
    assert_eq!(recs.len(), 1);
    let up = recs[0]
        .body
        .as_object()
        .expect("recorded JSON body")
        .clone();
    assert_eq!(up["user_id"], json!(key_id), "user_id is the key's id");
    assert!(
        up["max_tokens"].as_u64().is_some_and(|n| n >= 1),
        "max_tokens is set upstream: {:?}",
        up.get("max_tokens")
    );
    // Everything else is exactly what the client sent.
    let mut up_rest = up.clone();
    up_rest.remove("user_id");
    up_rest.remove("max_tokens");
    let mut sent_rest = sent.as_object().expect("object").clone();
    sent_rest.remove("user_id");
    assert_eq!(Value::Object(up_rest), Value::Object(sent_rest));
    // The upstream authorization is the operator's key, never the customer's.
    assert_eq!(
        recs[0].authorization.as_deref(),
        Some(format!("Bearer {}", crate::common::SIM_KEY).as_str())
    );
}

#[tokio::test]
async fn a_stream_always_asks_upstream_for_usage() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let key_id = app.key_state(&key).id.clone();
    let variants = [
        None,
        Some(json!({"include_usage": false})),
        Some(json!({})),
        Some(json!({"include_usage": true})),
    ];
    for (i, opts) in variants.iter().enumerate() {
        let mut b = body(FLASH, "hi [[sim reply=3 prompt=10]]");
        b["stream"] = json!(true);
        b["temperature"] = json!(1);
        if let Some(o) = opts {
            b["stream_options"] = o.clone();
        }
        let resp = app.chat(&key, &b).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let text = resp.text().await.expect("body");
        let up = &app.sim.requests()[i].body;
        assert_eq!(up["stream"], true);
        assert_eq!(
            up["stream_options"]["include_usage"], true,
            "{opts:?}: {up}"
        );
        assert_eq!(up["user_id"], json!(key_id));
        assert_eq!(up["temperature"], 1);
        assert!(up["max_tokens"].as_u64().is_some_and(|n| n >= 1), "{up}");
        // The client sees usage only when it asked for it.
        let asked = opts
            .as_ref()
            .is_some_and(|o| o["include_usage"] == json!(true));
        let with_usage = sse_events(&text)
            .iter()
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
            .count();
        assert_eq!(with_usage, usize::from(asked), "{opts:?}: {text}");
        // Billed from upstream's usage either way.
        let row = app.wait_ledger_row(&rid).await;
        assert_eq!(
            row.cost.nanos(),
            expected_cost(0, 10, 3, P_HIT, P_MISS, P_OUT)
        );
    }
}

#[tokio::test]
async fn max_tokens_is_always_set_upstream() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let cap = 32768u64; // deepseek-v4-flash's max_output_tokens in the default config
    let cases = [
        (json!({}), cap),
        (json!({"max_tokens": 300}), 300),
        (json!({"max_tokens": 1}), 1),
        (json!({"max_tokens": 1_000_000}), cap),
        (json!({"max_completion_tokens": 50}), 50),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let mut b = body(FLASH, "hi [[sim reply=1]]");
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        let resp = app.chat(&key, &b).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{extra}");
        let up = &app.sim.requests()[i].body;
        assert_eq!(up["max_tokens"], json!(want), "{extra}: {up}");
    }
}

#[tokio::test]
async fn a_small_budget_lowers_max_tokens_upstream() {
    let app = TestApp::spawn().await;
    // $0.0001 = 100_000 nano-USD: the prompt bound plus at most ~160 output tokens at 600 nano.
    let key = app.create_key("trial", Some("0.0001")).await;
    let mut b = body(FLASH, "hi [[sim reply=1]]");
    b["max_tokens"] = json!(1000);
    let resp = app.chat(&key, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let up = &app.sim.requests()[0].body;
    let mt = up["max_tokens"].as_u64().expect("max_tokens upstream");
    assert!((1..1000).contains(&mt), "lowered max_tokens {mt}");
    assert!(mt * 600 <= 100_000, "output alone could overspend: {mt}");
}

// ---------------------------------------------------------------------------------------------
// Legacy billing endpoints
// ---------------------------------------------------------------------------------------------

/// A JSON number literal as an exact integer of 10^-`scale` units (no floats).
fn scaled(literal: &str, scale: u32) -> i128 {
    assert!(
        !literal.contains(['e', 'E']),
        "exponent in money literal {literal}"
    );
    let (neg, digits) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(frac.len() <= scale as usize, "too precise: {literal}");
    let frac_padded = format!("{frac:0<width$}", width = scale as usize);
    let n: i128 = format!("{whole}{frac_padded}")
        .parse()
        .unwrap_or_else(|e| panic!("not a decimal ({e}): {literal}"));
    if neg { -n } else { n }
}

/// The raw JSON text of each top-level field of a body.
async fn raw_fields(resp: reqwest::Response) -> HashMap<String, Box<RawValue>> {
    assert_eq!(resp.status(), 200);
    assert!(!request_id(&resp).is_empty());
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"))
}

#[tokio::test]
async fn subscription_shows_the_budget_as_the_hard_limit() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", Some("2.50")).await;
    let path = "/v1/dashboard/billing/subscription";
    // A key's balance is never kept by a cache on the way, nor its spending.
    for p in [
        path,
        "/v1/dashboard/billing/usage?start_date=2026-01-01&end_date=2026-02-01",
    ] {
        let resp = app.get(&key, p).send().await.expect("send");
        assert_eq!(resp.status(), 200, "{p}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{p}");
    }
    let v = get_json(&app, &key, path).await;
    for field in ["hard_limit_usd", "system_hard_limit_usd"] {
        assert!(v[field].is_number(), "{field} must be a JSON number: {v}");
        assert_eq!(v[field].as_f64(), Some(2.5), "{field}: {v}");
    }
    let raw = raw_fields(app.get(&key, path).send().await.expect("send")).await;
    for field in ["hard_limit_usd", "system_hard_limit_usd"] {
        let lit = raw.get(field).expect(field).get();
        assert_eq!(scaled(lit, 9), 2_500_000_000, "{field} = {lit}");
        // The exact decimal as written, not a float's `2.5`.
        assert_eq!(lit, "2.50", "{field}");
    }
    // Spending does not move the hard limit.
    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=5 prompt=10]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v = get_json(&app, &key, path).await;
    assert_eq!(v["hard_limit_usd"].as_f64(), Some(2.5), "{v}");
    assert_eq!(v["system_hard_limit_usd"].as_f64(), Some(2.5), "{v}");
    // A budget that is not a round number comes through exactly.
    let odd = app.create_key("trial", Some("0.123456789")).await;
    let raw = raw_fields(app.get(&odd, path).send().await.expect("send")).await;
    let lit = raw.get("hard_limit_usd").expect("hard_limit_usd").get();
    assert_eq!(scaled(lit, 9), 123_456_789, "hard_limit_usd = {lit}");
}

/// One day of `daily_costs`.
#[derive(serde::Deserialize)]
struct Day {
    timestamp: i64,
    line_items: Vec<Line>,
}

/// One model's spend that day, in cents (read as written, not as a float).
#[derive(serde::Deserialize)]
struct Line {
    name: String,
    cost: Box<RawValue>,
}

async fn daily_costs(app: &TestApp, key: &str, path: &str) -> Vec<Day> {
    #[derive(serde::Deserialize)]
    struct Doc {
        daily_costs: Vec<Day>,
    }
    let resp = app.get(key, path).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    serde_json::from_str::<Doc>(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        .daily_costs
}

#[tokio::test]
async fn usage_is_the_spend_in_cents() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let path = "/v1/dashboard/billing/usage";
    // Nothing spent yet.
    let raw = raw_fields(app.get(&key, path).send().await.expect("send")).await;
    assert_eq!(
        scaled(raw.get("total_usage").expect("total_usage").get(), 9),
        0
    );
    // Written from the exact decimal, never through a float (which would write `0.0`).
    assert_eq!(raw.get("total_usage").expect("total_usage").get(), "0.00");
    // An end before 1970 alone is a range with nothing in it, not an error about a start
    // date that was not given.
    let raw = raw_fields(
        app.get(&key, &format!("{path}?end_date=1969-12-31"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(raw.get("total_usage").expect("total_usage").get(), "0.00");

    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=5 prompt=10 hit=0]]"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let row = app.wait_ledger_row(&rid).await;
    let cost = expected_cost(0, 10, 5, P_HIT, P_MISS, P_OUT);
    assert_eq!(row.cost.nanos(), cost);
    assert_eq!(app.key_state(&key).balance().spent, Usd::from_nanos(cost));
    assert_eq!(app.ledger_totals(&key), (1, Usd::from_nanos(cost)));
    // Cents with 9 decimals = nano-USD × 100.
    let want = i128::from(cost) * 100;

    let day = DateTime::from_timestamp_millis(row.created_at_ms)
        .expect("timestamp")
        .date_naive();
    let next = day.checked_add_days(Days::new(1)).expect("date");
    let month_start = day.format("%Y-%m-01").to_string();
    let queries = [
        path.to_string(),
        format!("{path}?start_date={day}&end_date={next}"),
        format!("{path}?start_date={month_start}&end_date={next}"),
        format!("{path}?start_date={day}"),
        format!("{path}?end_date={next}"),
    ];
    for q in &queries {
        let raw = raw_fields(app.get(&key, q).send().await.expect("send")).await;
        let lit = raw.get("total_usage").expect("total_usage").get();
        assert_eq!(scaled(lit, 9), want, "{q}: total_usage = {lit}");
        assert_eq!(lit, Usd::from_nanos(cost).cents_string(), "{q}");
    }
    let v = get_json(&app, &key, &queries[1]).await;
    assert!(v["total_usage"].is_number(), "{v}");
    // Day by day and model by model, in cents, as OpenAI's endpoint gives them: one line for
    // the one request, on the UTC day it was made (the day's start in seconds).
    let day_start = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp();
    for q in &queries {
        let days = daily_costs(&app, &key, q).await;
        assert_eq!(days.len(), 1, "{q}");
        assert_eq!(days[0].timestamp, day_start, "{q}");
        assert_eq!(days[0].line_items.len(), 1, "{q}");
        assert_eq!(days[0].line_items[0].name, FLASH);
        assert_eq!(scaled(days[0].line_items[0].cost.get(), 9), want, "{q}");
    }
    // A range without the request is zero.
    let raw = raw_fields(
        app.get(
            &key,
            &format!("{path}?start_date=2020-01-01&end_date=2020-02-01"),
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(
        scaled(raw.get("total_usage").expect("total_usage").get(), 9),
        0
    );
    let empty = format!("{path}?start_date=2020-01-01&end_date=2020-02-01");
    assert!(daily_costs(&app, &key, &empty).await.is_empty());
    // A second request, a second model, the same day: a line each, by name; the first line
    // sums both of its requests.
    let pro = app.create_key("pro", None).await;
    let mut costs = [0i64; 2];
    for (i, model) in [FLASH, PRO, FLASH].into_iter().enumerate() {
        let resp = app
            .chat(&pro, &body(model, "hi [[sim reply=3 prompt=7 hit=0]]"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "{i}");
        let row = app.wait_ledger_row(&request_id(&resp)).await;
        costs[usize::from(model == PRO)] += row.cost.nanos();
    }
    let days = daily_costs(&app, &pro, &queries[1]).await;
    assert_eq!(days.len(), 1);
    let lines: Vec<(&str, i128)> = days[0]
        .line_items
        .iter()
        .map(|l| (l.name.as_str(), scaled(l.cost.get(), 9)))
        .collect();
    assert_eq!(
        lines,
        [
            (FLASH, i128::from(costs[0]) * 100),
            (PRO, i128::from(costs[1]) * 100)
        ]
    );
    // Another key's spend is not included.
    let other = app.create_key("trial", None).await;
    let raw = raw_fields(app.get(&other, path).send().await.expect("send")).await;
    assert_eq!(
        scaled(raw.get("total_usage").expect("total_usage").get(), 9),
        0
    );
}

#[tokio::test]
async fn usage_with_a_bad_date_is_400() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let path = "/v1/dashboard/billing/usage";
    let cases = [
        ("start_date=2026-13-01", "start_date"),
        ("start_date=yesterday", "start_date"),
        ("start_date=2026-02-30&end_date=2026-03-01", "start_date"),
        ("start_date=2026-01-01&end_date=2026/02/01", "end_date"),
        ("end_date=", "end_date"),
        ("start_date=2026-1-1", "start_date"),
        ("start_date=%202026-12-01", "start_date"),
        ("start_date=2026-12-04&end_date=2026-12-03", "end_date"),
    ];
    for (q, param) in cases {
        let resp = app
            .get(&key, &format!("{path}?{q}"))
            .send()
            .await
            .expect("send");
        let err = expect_error(resp, 400, "invalid_request", "invalid_request_error").await;
        assert_eq!(err["param"], param, "{q}: {err}");
    }
}
