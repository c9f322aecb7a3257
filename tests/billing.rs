//! Billing end to end (SPEC §4): exact costs in nano-USD on the ledger row, on the key's live
//! balance and in the database, for every way a price is chosen (cache split, reasoning, peak,
//! model, rounding), for holds that lower `max_tokens`, and under concurrency.
//!
//! Here the shared helpers and how a price is chosen; holds and concurrency in `billing_holds`,
//! exhaustion, top-ups and restarts in `billing_balances`.

use modelrelay::pricing::PricePeriod;
use modelrelay::store::{Finish, Measured, UsageRow};
use serde_json::{Value, json};

use crate::common::{
    TestApp, body, data_chunks, expected_cost, read_stream, request_id, text_deltas,
};

/// The model most tests buy.
pub(super) const FLASH: &str = "deepseek-v4-flash";
const PRO: &str = "deepseek-v4-pro";

/// Nano-USD per 1M tokens: cache hit, cache miss, output.
type Prices = [i64; 3];
pub(super) const FLASH_OFF_PEAK: Prices = [3_000_000, 150_000_000, 600_000_000];
pub(super) const FLASH_PEAK: Prices = [6_000_000, 300_000_000, 1_200_000_000];
const PRO_OFF_PEAK: Prices = [22_000_000, 660_000_000, 1_980_000_000];

/// Nano-USD per prompt token and per output token at flash off-peak prices (both whole).
pub(super) const MISS_NANOS: i64 = 150;
/// Nano-USD per output token at flash off-peak prices.
pub(super) const OUT_NANOS: i64 = 600;

/// The exact cost of a request with these token counts at prices `p`.
pub(super) fn cost(hit: u64, miss: u64, out: u64, p: Prices) -> i64 {
    expected_cost(hit, miss, out, p[0], p[1], p[2])
}

/// Nano-USD as the decimal USD string the admin socket takes ("0.000025200").
pub(super) fn usd(nanos: i64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// Bytes the client sends for `b` (reqwest's `.json()` serializes with serde_json too).
fn body_len(b: &Value) -> i64 {
    serde_json::to_vec(b).expect("serialize").len() as i64
}

/// What the gateway holds for the prompt of `b` at flash off-peak prices: (len + 64) tokens at
/// the dearer prompt price.
pub(super) fn prompt_hold(b: &Value) -> i64 {
    (body_len(b) + 64) * MISS_NANOS
}

/// `b` with the keys of `extra` set.
pub(super) fn with(mut b: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// Send a non-stream request; (request id, status, JSON body).
pub(super) async fn call(app: &TestApp, key: &str, b: &Value) -> (String, u16, Value) {
    let resp = app.chat(key, b).send().await.expect("send");
    let rid = request_id(&resp);
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON body");
    (rid, status, v)
}

/// The sum of the ledger and the key's `spent_nanos`, `requests`, `status` in the database.
pub(super) fn db_key(app: &TestApp, key: &str) -> (i64, i64, u64, String) {
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
pub(super) fn assert_books(app: &TestApp, key: &str) -> i64 {
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

pub(super) fn assert_provider_row(row: &UsageRow, model: &str, counts: [u64; 5], cost: i64) {
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

/// The body whose prompt the simulator reports as exactly the gateway's prompt bound
/// (body bytes + 64), so that the cost equals the hold.
pub(super) fn body_priced_at_its_bound() -> (Value, u64) {
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

/// The period is the one of the request's start, once its body is in: a body sent slowly from
/// before a peak window into it was billed off-peak (the period was read before the body;
/// found by an independent check), and its row said off-peak with a peak-time `created_at`.
/// The window here starts at the next whole minute; the body's first half goes before it,
/// the rest after.
#[tokio::test]
async fn a_body_sent_into_a_peak_window_is_billed_at_peak() {
    use chrono::Timelike;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The next minute boundary at least 3 s away.
    let now = chrono::Utc::now();
    let mut boundary = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap()
        + chrono::Duration::minutes(1);
    if boundary - now < chrono::Duration::seconds(3) {
        boundary += chrono::Duration::minutes(1);
    }
    let window = format!(
        "{}-{}",
        boundary.format("%H:%M"),
        (boundary + chrono::Duration::minutes(2)).format("%H:%M")
    );
    let app = TestApp::spawn_with(move |c| {
        c.pricing.peak_hours_utc = vec![window];
        c.pricing.peak_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec();
    })
    .await;
    let key = app.create_key("trial", None).await;
    let payload = serde_json::to_string(&body(FLASH, "[[sim prompt=100 reply=10]] hi")).unwrap();
    let (first, rest) = payload.split_at(payload.len() / 2);
    let addr = app.base.trim_start_matches("http://").to_string();
    let sleep_until = |t: chrono::DateTime<chrono::Utc>| {
        let wait = (t - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait)
    };
    sleep_until(boundary - chrono::Duration::milliseconds(1500)).await;
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    tcp.write_all(format!("{head}{first}").as_bytes())
        .await
        .unwrap();
    sleep_until(boundary + chrono::Duration::milliseconds(500)).await;
    tcp.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let rid = crate::common::raw_request_id(&answer);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.period, PricePeriod::Peak, "{row:?}");
    assert_eq!(row.cost.nanos(), 100 * 300 + 10 * 1200, "{row:?}");
}
