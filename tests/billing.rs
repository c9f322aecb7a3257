//! Billing end to end (SPEC §4): exact costs in nano-USD on the ledger row, on the key's live
//! balance and in the database, for every way a price is chosen (cache split, reasoning, peak,
//! model, rounding), for holds that lower `max_tokens`, and under concurrency.

use std::time::Duration;

use futures_util::future::join_all;
use modelrelay::activity::protocol::{Request, Response};
use modelrelay::keys::KeyStatus;
use modelrelay::pricing::PricePeriod;
use modelrelay::store::{Finish, Measured, UsageRow};
use serde_json::{Value, json};

use crate::common::{
    TestApp, body, data_chunks, expected_cost, read_stream, request_id, text_deltas,
};

const FLASH: &str = "deepseek-v4-flash";
const PRO: &str = "deepseek-v4-pro";

/// Nano-USD per 1M tokens: cache hit, cache miss, output.
type Prices = [i64; 3];
const FLASH_OFF_PEAK: Prices = [3_000_000, 150_000_000, 600_000_000];
const FLASH_PEAK: Prices = [6_000_000, 300_000_000, 1_200_000_000];
const PRO_OFF_PEAK: Prices = [22_000_000, 660_000_000, 1_980_000_000];

/// Nano-USD per prompt token and per output token at flash off-peak prices (both whole).
const MISS_NANOS: i64 = 150;
const OUT_NANOS: i64 = 600;

fn cost(hit: u64, miss: u64, out: u64, p: Prices) -> i64 {
    expected_cost(hit, miss, out, p[0], p[1], p[2])
}

/// Nano-USD as the decimal USD string the admin socket takes ("0.000025200").
fn usd(nanos: i64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// Bytes the client sends for `b` (reqwest's `.json()` serializes with serde_json too).
fn body_len(b: &Value) -> i64 {
    serde_json::to_vec(b).expect("serialize").len() as i64
}

/// What the gateway holds for the prompt of `b` at flash off-peak prices: (len + 64) tokens at
/// the dearer prompt price.
fn prompt_hold(b: &Value) -> i64 {
    (body_len(b) + 64) * MISS_NANOS
}

fn with(mut b: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// Send a non-stream request; (request id, status, JSON body).
async fn call(app: &TestApp, key: &str, b: &Value) -> (String, u16, Value) {
    let resp = app.chat(key, b).send().await.expect("send");
    let rid = request_id(&resp);
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON body");
    (rid, status, v)
}

/// The sum of the ledger and the key's `spent_nanos`, `requests`, `status` in the database.
fn db_key(app: &TestApp, key: &str) -> (i64, i64, u64, String) {
    let id = app.key_state(key).id.clone();
    app.db()
        .query_row(
            "SELECT budget_nanos, spent_nanos, requests, status FROM keys WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?)),
        )
        .expect("key row")
}

/// The books balance: nothing held, budget − remaining == Σ ledger == spent in memory and in
/// the database, one ledger row per settled request. Returns the sum of the ledger.
fn assert_books(app: &TestApp, key: &str) -> i64 {
    let state = app.key_state(key);
    let b = state.balance();
    let (rows, sum) = app.ledger_totals(key);
    assert_eq!(b.held.nanos(), 0, "no hold outlives its request");
    assert!(b.remaining().nanos() >= 0, "remaining {}", b.remaining());
    assert_eq!(b.budget.nanos() - b.remaining().nanos(), sum.nanos());
    assert_eq!(b.spent, sum, "in-memory spent == Σ ledger");
    assert_eq!(state.available(), b.remaining(), "available == remaining");
    assert_eq!(state.requests(), rows, "one ledger row per settled request");
    let (db_budget, db_spent, db_requests, _) = db_key(app, key);
    assert_eq!(db_budget, b.budget.nanos(), "budget in the database");
    assert_eq!(db_spent, sum.nanos(), "keys.spent_nanos == Σ ledger");
    assert_eq!(db_requests, rows, "keys.requests == ledger rows");
    sum.nanos()
}

/// The stored (text) price period of a ledger row.
fn db_period(app: &TestApp, rid: &str) -> String {
    app.db()
        .query_row(
            "SELECT period FROM usage WHERE request_id = ?1",
            [rid],
            |r| r.get(0),
        )
        .expect("usage row")
}

fn assert_provider_row(row: &UsageRow, model: &str, counts: [u64; 5], cost: i64) {
    let [prompt, hit, miss, completion, reasoning] = counts;
    assert_eq!(row.model, model);
    assert_eq!(row.prompt_tokens, prompt, "prompt_tokens");
    assert_eq!(row.cache_hit_tokens, hit, "cache_hit_tokens");
    assert_eq!(row.cache_miss_tokens, miss, "cache_miss_tokens");
    assert_eq!(row.completion_tokens, completion, "completion_tokens");
    assert_eq!(row.reasoning_tokens, reasoning, "reasoning_tokens");
    assert_eq!(row.cost.nanos(), cost, "cost in nano-USD");
    assert_eq!(row.measured, Measured::Provider);
    assert_eq!(row.finish, Finish::Complete);
    assert_eq!(row.status, 200);
}

#[tokio::test]
async fn cache_hits_and_misses_are_priced_apart() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let (rid, status, v) = call(
        &app,
        &key,
        &body(FLASH, "[[sim prompt=1000 hit=640 reply=50]] hello"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 640);
    assert_eq!(v["usage"]["prompt_cache_miss_tokens"], 360);
    let want = cost(640, 360, 50, FLASH_OFF_PEAK);
    assert_eq!(want, 1_920 + 54_000 + 30_000);
    let row = app
        .ledger_row(&rid)
        .expect("row committed before the response");
    assert_provider_row(&row, FLASH, [1000, 640, 360, 50, 0], want);
    assert_eq!(row.period, PricePeriod::OffPeak);
    assert!(!row.stream);
    assert_eq!(db_period(&app, &rid), "off_peak");
    let b = app.key_state(&key).balance();
    assert_eq!(b.spent.nanos(), want);
    assert_eq!(b.remaining().nanos(), 1_000_000_000 - want);
    assert_eq!(assert_books(&app, &key), want);
}

#[tokio::test]
async fn reasoning_tokens_are_billed_as_output() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let (rid, status, v) = call(
        &app,
        &key,
        &body(FLASH, "[[sim prompt=100 reasoning=30 reply=20]] think"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["completion_tokens"], 50);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        30
    );
    assert!(
        v["choices"][0]["message"]["reasoning_content"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let want = cost(0, 100, 50, FLASH_OFF_PEAK);
    assert_eq!(want, 100 * MISS_NANOS + 50 * OUT_NANOS);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [100, 0, 100, 50, 30], want);
    assert_eq!(app.key_state(&key).balance().spent.nanos(), want);
    assert_eq!(assert_books(&app, &key), want);
}

#[tokio::test]
async fn peak_hours_use_peak_prices() {
    let app = TestApp::spawn_with(|c| {
        c.pricing.peak_hours_utc = vec!["00:00-24:00".into()];
        c.pricing.peak_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec();
    })
    .await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=1000 hit=640 reply=50 reasoning=5]]";
    let (rid, status, _) = call(&app, &key, &body(FLASH, text)).await;
    assert_eq!(status, 200);
    let want = cost(640, 360, 55, FLASH_PEAK);
    assert_eq!(want, 3_840 + 108_000 + 66_000);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [1000, 640, 360, 55, 5], want);
    assert_eq!(row.period, PricePeriod::Peak);
    assert_eq!(db_period(&app, &rid), "peak");

    // Streamed in peak: same period, same price.
    let resp = app
        .chat(&key, &with(body(FLASH, text), json!({"stream": true})))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid2 = request_id(&resp);
    let events = read_stream(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let row2 = app.ledger_row(&rid2).expect("row before [DONE]");
    assert_eq!(row2.period, PricePeriod::Peak);
    assert_eq!(row2.cost.nanos(), want);
    assert_eq!(assert_books(&app, &key), 2 * want);
}

#[tokio::test]
async fn off_peak_is_the_default_test_period() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let (rid, status, _) = call(&app, &key, &body(FLASH, "[[sim prompt=10 reply=5]]")).await;
    assert_eq!(status, 200);
    let row = app.ledger_row(&rid).expect("row");
    assert_eq!(row.period, PricePeriod::OffPeak);
    assert_eq!(db_period(&app, &rid), "off_peak");
    assert_eq!(row.cost.nanos(), 10 * MISS_NANOS + 5 * OUT_NANOS);
    assert_books(&app, &key);
}

#[tokio::test]
async fn cost_rounds_up_per_request_to_the_next_nano() {
    // A cache-hit price of 0.0003 USD per 1M tokens is 0.3 nano-USD per token.
    let app = TestApp::spawn_with(|c| {
        let m = c.models.get_mut(FLASH).expect("flash configured");
        m.input_cache_hit = [
            "0.0003".parse().expect("usd"),
            "0.0006".parse().expect("usd"),
        ];
    })
    .await;
    let prices: Prices = [300_000, 150_000_000, 600_000_000];
    let key = app.create_key("trial", None).await;
    // (prompt, hit, reply) → exact nano-USD.
    // (prompt, hit, reply) → exact nano-USD: one ceil per request, never per token or nearest.
    let cases: [(u64, u64, u64, i64); 6] = [
        (1, 1, 0, 1),        // 0.3 → 1
        (7, 7, 0, 3),        // 2.1 → 3 (nearest would be 2)
        (10, 10, 0, 3),      // 3.0 exactly → 3, not 4
        (11, 11, 0, 4),      // 3.3 → 4 (per-token rounding would be 11)
        (12, 3, 1, 1951),    // 0.9 + 1350 + 600 = 1950.9 → 1951
        (1000, 999, 0, 450), // 299.7 + 150 = 449.7 → 450
    ];
    let mut total = 0;
    for (prompt, hit, reply, want) in cases {
        let text = format!("[[sim prompt={prompt} hit={hit} reply={reply}]]");
        let (rid, status, v) = call(&app, &key, &body(FLASH, &text)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(cost(hit, prompt - hit, reply, prices), want, "{text}");
        let row = app.ledger_row(&rid).expect("row");
        assert_provider_row(&row, FLASH, [prompt, hit, prompt - hit, reply, 0], want);
        total += want;
    }
    assert_eq!(assert_books(&app, &key), total);

    // Default prices: one cache hit at 0.003 USD/1M is exactly 3 nano, not rounded up to 4.
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let (rid, _, _) = call(&app, &key, &body(FLASH, "[[sim prompt=1 hit=1 reply=0]]")).await;
    assert_eq!(app.ledger_row(&rid).expect("row").cost.nanos(), 3);
    assert_eq!(assert_books(&app, &key), 3);
}

#[tokio::test]
async fn streamed_and_not_streamed_cost_exactly_the_same() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=500 hit=128 reply=40 reasoning=7]] same question";
    let want = cost(128, 372, 47, FLASH_OFF_PEAK);

    let (rid_plain, status, _) = call(&app, &key, &body(FLASH, text)).await;
    assert_eq!(status, 200);
    let plain = app.ledger_row(&rid_plain).expect("row");
    assert_provider_row(&plain, FLASH, [500, 128, 372, 47, 7], want);
    assert!(!plain.stream);

    // Streamed without asking for usage: the gateway still asks upstream and bills exactly.
    for extra in [
        json!({"stream": true}),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    ] {
        let resp = app
            .chat(&key, &with(body(FLASH, text), extra))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let events = read_stream(resp).await;
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
        assert_eq!(text_deltas(&data_chunks(&events)), 47);
        let row = app.ledger_row(&rid).expect("row committed before [DONE]");
        assert_provider_row(&row, FLASH, [500, 128, 372, 47, 7], want);
        assert!(row.stream);
    }
    for r in app.sim.requests().iter().skip(1) {
        assert_eq!(r.body["stream_options"]["include_usage"], true);
    }
    assert_eq!(assert_books(&app, &key), 3 * want);
}

#[tokio::test]
async fn pro_model_uses_pro_prices() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", None).await;
    let (rid, status, v) = call(
        &app,
        &key,
        &body(PRO, "[[sim prompt=1000 hit=640 reply=50 reasoning=10]]"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["model"], PRO);
    assert_eq!(app.sim.requests()[0].body["model"], "deepseek-v4-pro");
    let want = cost(640, 360, 60, PRO_OFF_PEAK);
    assert_eq!(want, 14_080 + 237_600 + 118_800);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, PRO, [1000, 640, 360, 60, 10], want);
    assert_eq!(app.key_state(&key).balance().budget.nanos(), 50_000_000_000);
    assert_eq!(assert_books(&app, &key), want);
}

#[tokio::test]
async fn max_tokens_is_lowered_to_what_the_key_can_pay() {
    const N: i64 = 7;
    let app = TestApp::spawn().await;
    let text = "[[sim reply=50]] write a long answer";
    let prompt = 6 + (text.len() as u64).div_ceil(4); // the simulator's count
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
    ];

    // Not streamed, with max_tokens.
    let b = with(body(FLASH, text), json!({"max_tokens": 100}));
    let budget = prompt_hold(&b) + N * OUT_NANOS;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let (rid, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(app.sim.requests()[0].body["max_tokens"], N);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // Cut after seven words (the simulator puts a space after every word but its last).
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("{} ", words.join(" "))
    );
    assert_eq!(v["usage"]["completion_tokens"], N);
    let want = cost(0, prompt, N as u64, FLASH_OFF_PEAK);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [prompt, 0, prompt, N as u64, 0], want);
    assert!(want <= budget);
    assert_eq!(
        app.key_state(&key).balance().remaining().nanos(),
        budget - want
    );
    assert_eq!(assert_books(&app, &key), want);

    // Streamed, with max_completion_tokens.
    let b = with(
        body(FLASH, text),
        json!({"stream": true, "max_completion_tokens": 100}),
    );
    let budget = prompt_hold(&b) + N * OUT_NANOS;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let resp = app.chat(&key, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let up = &app.sim.requests()[1].body;
    assert_eq!(up["max_tokens"], N);
    assert!(up.get("max_completion_tokens").is_none());
    let chunks = data_chunks(&events);
    assert_eq!(text_deltas(&chunks), N as usize);
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [prompt, 0, prompt, N as u64, 0], want);
    assert_eq!(assert_books(&app, &key), want);
}

#[tokio::test]
async fn without_max_tokens_the_model_cap_is_lowered_to_what_the_key_can_pay() {
    const N: i64 = 9;
    let app = TestApp::spawn().await;
    let text = "[[sim reply=40]] no limit asked";
    let prompt = 6 + (text.len() as u64).div_ceil(4);
    let b = body(FLASH, text);
    let budget = prompt_hold(&b) + N * OUT_NANOS + OUT_NANOS / 2;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let (rid, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(app.sim.requests()[0].body["max_tokens"], N);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let want = cost(0, prompt, N as u64, FLASH_OFF_PEAK);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [prompt, 0, prompt, N as u64, 0], want);
    assert_eq!(assert_books(&app, &key), want);

    // A budget that covers everything sends the model's own cap.
    let key = app.create_key("trial", None).await;
    let (_, status, _) = call(&app, &key, &b).await;
    assert_eq!(status, 200);
    assert_eq!(app.sim.requests()[1].body["max_tokens"], 32768);
}

#[tokio::test]
async fn a_request_that_cannot_pay_one_output_token_gets_402() {
    let app = TestApp::spawn().await;
    let b = with(body(FLASH, "[[sim reply=5]]"), json!({"max_tokens": 5}));
    // One nano short of the prompt hold plus a single output token.
    let key = app
        .create_key("trial", Some(&usd(prompt_hold(&b) + OUT_NANOS - 1)))
        .await;
    let (rid, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_budget");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(
        app.ledger_row(&rid).is_none(),
        "a refusal is not a ledger row"
    );
    assert!(app.sim.requests().is_empty(), "nothing went upstream");
    assert_eq!(assert_books(&app, &key), 0);

    // Exactly enough: one token.
    let key = app
        .create_key("trial", Some(&usd(prompt_hold(&b) + OUT_NANOS)))
        .await;
    let (_, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(app.sim.requests()[0].body["max_tokens"], 1);
    assert_eq!(v["usage"]["completion_tokens"], 1);
    assert_books(&app, &key);
}

/// Fire `n` identical streaming requests at once; (status, request id, events or error body).
async fn stream_storm(
    app: &TestApp,
    key: &str,
    b: &Value,
    n: usize,
) -> Vec<(u16, String, Vec<String>)> {
    let one = || async {
        let resp = app.chat(key, b).send().await.expect("send");
        let status = resp.status().as_u16();
        let rid = request_id(&resp);
        let events = if status == 200 {
            read_stream(resp).await
        } else {
            vec![resp.text().await.expect("body")]
        };
        (status, rid, events)
    };
    join_all((0..n).map(|_| one())).await
}

/// Check a storm's outcome: every request is a 402 or a clean stream billed exactly.
fn check_storm(
    app: &TestApp,
    key: &str,
    results: &[(u16, String, Vec<String>)],
    max_tokens: u64,
) -> usize {
    let mut ok = 0;
    for (status, rid, events) in results {
        match status {
            402 => {
                let v: Value = serde_json::from_str(&events[0]).expect("error JSON");
                assert_eq!(v["error"]["code"], "insufficient_budget");
                assert!(app.ledger_row(rid).is_none());
            }
            200 => {
                ok += 1;
                assert_eq!(
                    events.last().map(String::as_str),
                    Some("data: [DONE]"),
                    "a 200 stream ends cleanly"
                );
                let chunks = data_chunks(events);
                assert!(chunks.iter().all(|c| c.get("error").is_none()));
                let delivered = text_deltas(&chunks) as u64;
                assert!((1..=max_tokens).contains(&delivered), "{delivered}");
                let finish = &chunks.last().expect("chunks")["choices"][0]["finish_reason"];
                let expect_finish = if delivered < max_tokens {
                    "length"
                } else {
                    "stop"
                };
                assert_eq!(finish, expect_finish);
                let row = app.ledger_row(rid).expect("row committed before [DONE]");
                assert_eq!(row.completion_tokens, delivered);
                assert_eq!(row.measured, Measured::Provider);
                assert_eq!(row.finish, Finish::Complete);
                assert_eq!(
                    row.cost.nanos(),
                    cost(0, row.prompt_tokens, delivered, FLASH_OFF_PEAK)
                );
            }
            other => panic!("unexpected status {other}: {events:?}"),
        }
    }
    assert_eq!(
        app.sim.requests().len(),
        ok,
        "only paid requests reach upstream"
    );
    for r in app.sim.requests() {
        let m = r.body["max_tokens"].as_u64().expect("max_tokens sent");
        assert!((1..=max_tokens).contains(&m));
    }
    let (rows, _) = app.ledger_totals(key);
    assert_eq!(rows, ok as u64, "one ledger row per 200");
    assert_books(app, key);
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_streams_never_overspend() {
    let app = TestApp::spawn_with(|c| {
        c.plans.get_mut("trial").expect("trial plan").rpm = 10_000;
    })
    .await;
    let b = with(
        body(FLASH, "[[sim reply=100 delay_ms=2]] race"),
        json!({"stream": true, "max_tokens": 100}),
    );
    let budget = prompt_hold(&b) + 20 * OUT_NANOS;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let results = stream_storm(&app, &key, &b, 50).await;
    let ok = check_storm(&app, &key, &results, 100);
    // After the one paid request, what is left cannot cover another prompt hold.
    assert_eq!(ok, 1, "the budget pays for exactly one request");
    let b = app.key_state(&key).balance();
    assert_eq!(b.budget.nanos(), budget);
    assert!(b.remaining().nanos() >= 0);
    // The first request to hold got max_tokens lowered to 20.
    assert!(
        app.sim
            .requests()
            .iter()
            .any(|r| r.body["max_tokens"] == 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_share_a_budget_of_a_few_requests_exactly() {
    let app = TestApp::spawn_with(|c| {
        c.plans.get_mut("trial").expect("trial plan").rpm = 10_000;
    })
    .await;
    let b = with(
        body(FLASH, "[[sim reply=100 delay_ms=1]] race again"),
        json!({"stream": true, "max_tokens": 100}),
    );
    // Holds for three whole requests and part of a fourth (plus change that buys no token).
    let budget = 3 * (prompt_hold(&b) + 100 * OUT_NANOS) + prompt_hold(&b) + 37 * OUT_NANOS + 123;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let results = stream_storm(&app, &key, &b, 50).await;
    let ok = check_storm(&app, &key, &results, 100);
    assert!(
        ok >= 4,
        "three whole requests and a truncated one fit: {ok}"
    );
    let b = app.key_state(&key).balance();
    assert!(b.remaining().nanos() >= 0);
    assert!(b.spent.nanos() <= budget);
}

#[tokio::test]
async fn a_charge_never_exceeds_its_hold() {
    let app = TestApp::spawn().await;
    // Upstream claims a prompt far beyond the bound the gateway held for.
    let b = with(
        body(FLASH, "[[sim prompt=5000 reply=10]]"),
        json!({"max_tokens": 10}),
    );
    let hold = prompt_hold(&b) + 10 * OUT_NANOS;
    let key = app.create_key("trial", Some(&usd(hold))).await;
    let (rid, status, _) = call(&app, &key, &b).await;
    assert_eq!(status, 200);
    assert!(cost(0, 5000, 10, FLASH_OFF_PEAK) > hold);
    let row = app.ledger_row(&rid).expect("row");
    assert_eq!(row.prompt_tokens, 5000);
    assert_eq!(row.cost.nanos(), hold, "charged the hold, no more");
    let bal = app.key_state(&key).balance();
    assert_eq!(bal.remaining().nanos(), 0);
    assert_eq!(app.key_state(&key).status(), KeyStatus::Exhausted);
    assert_eq!(assert_books(&app, &key), hold);
}

/// The body whose prompt the simulator reports as exactly the gateway's prompt bound
/// (body bytes + 64), so that the cost equals the hold.
fn body_priced_at_its_bound() -> (Value, u64) {
    for p in 100u64..1000 {
        let b = with(
            body(FLASH, &format!("[[sim prompt={p} reply=5]]")),
            json!({"max_tokens": 5}),
        );
        if body_len(&b) as u64 + 64 == p {
            return (b, p);
        }
    }
    panic!("no fixed point");
}

#[tokio::test]
async fn a_key_is_exhausted_when_it_cannot_pay_a_token_and_a_top_up_revives_it() {
    let app = TestApp::spawn().await;
    let (b, prompt) = body_priced_at_its_bound();
    let hold = prompt_hold(&b) + 5 * OUT_NANOS;
    // After the first request, 300 nano are left: less than one output token (600).
    let budget = hold + 300;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let id = app.key_state(&key).id.clone();

    let (rid, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 200, "{v}");
    let want = cost(0, prompt, 5, FLASH_OFF_PEAK);
    assert_eq!(want, hold);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [prompt, 0, prompt, 5, 0], want);
    let state = app.key_state(&key);
    assert_eq!(state.balance().remaining().nanos(), 300);
    assert_eq!(state.status(), KeyStatus::Exhausted);
    match app.admin(Request::KeysShow { key: id.clone() }).await {
        Response::Key { key: view } => {
            assert_eq!(view.status, KeyStatus::Exhausted);
            assert_eq!(view.remaining_usd.nanos(), 300);
            assert_eq!(view.spent_usd.nanos(), want);
        }
        other => panic!("{other:?}"),
    }
    let mut persisted = String::new();
    for _ in 0..200 {
        persisted = db_key(&app, &key).3;
        if persisted == "exhausted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(persisted, "exhausted", "the status reaches the database");

    // A later request is refused, whatever it asks, and never reaches upstream.
    let (rid2, status, v) = call(&app, &key, &body(FLASH, "[[sim reply=1]] hi")).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_budget");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(app.ledger_row(&rid2).is_none());
    assert_eq!(app.sim.requests().len(), 1);

    // Top-up: active again, budget and remaining move by exactly the amount.
    let top = 10_000_000; // $0.01
    match app
        .admin(Request::KeysTopup {
            key: id.clone(),
            usd: usd(top).parse().expect("usd"),
        })
        .await
    {
        Response::Key { key: view } => {
            assert_eq!(view.status, KeyStatus::Active);
            assert_eq!(view.budget_usd.nanos(), budget + top);
            assert_eq!(view.remaining_usd.nanos(), 300 + top);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.status(), KeyStatus::Active);
    assert_eq!(
        db_key(&app, &key).3,
        "active",
        "the top-up is persisted with its status"
    );
    let (rid3, status, v) = call(&app, &key, &body(FLASH, "[[sim prompt=10 reply=1]] hi")).await;
    assert_eq!(status, 200, "{v}");
    let row3 = app.ledger_row(&rid3).expect("row");
    assert_eq!(row3.cost.nanos(), 10 * MISS_NANOS + OUT_NANOS);
    assert_eq!(assert_books(&app, &key), want + row3.cost.nanos());
    assert_eq!(
        state.balance().remaining().nanos(),
        300 + top - row3.cost.nanos()
    );
}

#[tokio::test]
async fn balances_and_status_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let (b, prompt) = body_priced_at_its_bound();
    let hold = prompt_hold(&b) + 5 * OUT_NANOS;
    let spender = app.create_key("trial", None).await;
    let exhausted = app.create_key("trial", Some(&usd(hold + 300))).await;
    let revived = app.create_key("trial", Some(&usd(hold + 300))).await;
    for text in [
        "[[sim prompt=300 hit=64 reply=12]]",
        "[[sim prompt=7 reply=3 reasoning=2]]",
    ] {
        let (_, status, _) = call(&app, &spender, &body(FLASH, text)).await;
        assert_eq!(status, 200);
    }
    let spent = cost(64, 236, 12, FLASH_OFF_PEAK) + cost(0, 7, 5, FLASH_OFF_PEAK);
    assert_eq!(assert_books(&app, &spender), spent);
    for k in [&exhausted, &revived] {
        let (_, status, _) = call(&app, k, &b).await;
        assert_eq!(status, 200);
        assert_eq!(app.key_state(k).status(), KeyStatus::Exhausted);
    }
    let revived_id = app.key_state(&revived).id.clone();
    match app
        .admin(Request::KeysTopup {
            key: revived_id,
            usd: "0.5".parse().expect("usd"),
        })
        .await
    {
        Response::Key { key } => assert_eq!(key.status, KeyStatus::Active),
        other => panic!("{other:?}"),
    }
    let before: Vec<_> = [&spender, &exhausted, &revived]
        .iter()
        .map(|k| {
            let s = app.key_state(k);
            let b = s.balance();
            (b.budget, b.spent, s.status(), s.requests())
        })
        .collect();

    app.shutdown().await;
    let TestApp { sim, dir, .. } = app;
    let config = crate::common::test_config(dir.path(), &sim);
    let app = TestApp::start(config, sim, dir).await;
    let after: Vec<_> = [&spender, &exhausted, &revived]
        .iter()
        .map(|k| {
            let s = app.key_state(k);
            let b = s.balance();
            (b.budget, b.spent, s.status(), s.requests())
        })
        .collect();
    assert_eq!(
        before, after,
        "(budget, spent, status, requests) after a restart"
    );
    for k in [&spender, &exhausted, &revived] {
        assert_books(&app, k);
    }
    assert_eq!(
        app.key_state(&exhausted).balance().spent.nanos(),
        cost(0, prompt, 5, FLASH_OFF_PEAK)
    );
    let (_, status, _) = call(&app, &exhausted, &body(FLASH, "[[sim reply=1]]")).await;
    assert_eq!(status, 402);
    let (_, status, _) = call(&app, &revived, &body(FLASH, "[[sim reply=1]]")).await;
    assert_eq!(status, 200);
}
