//! Upstream and client faults (SPEC §3–4): for each, what the customer sees and what they pay.
//!
//! Failures before a response started are a JSON error (502 / 504); failures after a stream
//! started end it with one final `data: {"error":…}` event and no `[DONE]`. A customer pays for
//! what reached them (estimated when upstream never reported usage), and nothing when nothing
//! did; a client that goes away pays for the prompt and what was generated, and upstream is
//! cancelled.

use std::time::Duration;

use futures_util::StreamExt;
use modelrelay::store::{Finish, Measured, UsageRow};
use modelrelay::upstream::simulated::Outcome;
use serde_json::{Value, json};

use crate::common::{TestApp, body, data_chunks, read_stream, request_id, sse_events, text_deltas};

const FLASH: &str = "deepseek-v4-flash";
/// Nano-USD per prompt (miss) token and per output token, flash off-peak.
const MISS_NANOS: i64 = 150;
const OUT_NANOS: i64 = 600;
const WAIT: Duration = Duration::from_secs(10);

fn stream_body(text: &str) -> Value {
    let mut b = body(FLASH, text);
    b["stream"] = json!(true);
    b
}

/// The prompt estimate for a one-message request: what the simulator counts as well.
fn prompt_estimate(text: &str) -> u64 {
    2 + 4 + (text.len() as u64).div_ceil(4)
}

/// Bytes of the simulator's first `n` reply tokens ("alpha ", "bravo ", …).
fn reply_bytes(n: usize) -> u64 {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    (0..n).map(|i| words[i % 8].len() as u64 + 1).sum()
}

/// A stream that failed after it started: its last event is one error event with `code`,
/// there is no `[DONE]`, and no earlier event is an error. Returns the chunks before it.
fn assert_ends_with_error(events: &[String], code: &str) -> Vec<Value> {
    assert!(
        !events.iter().any(|e| e == "data: [DONE]"),
        "no [DONE] after a failure: {events:?}"
    );
    let last = events.last().expect("events");
    let payload = last.strip_prefix("data: ").expect("a data event");
    let v: Value = serde_json::from_str(payload).expect("JSON");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"].get("type").is_some() && v["error"].get("param").is_some());
    let chunks = data_chunks(&events[..events.len() - 1]);
    assert!(chunks.iter().all(|c| c.get("error").is_none()));
    chunks
}

/// A JSON error response with `status` and `code`.
async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.expect("JSON error body");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"].get("param").is_some() && v["error"].get("type").is_some());
    v
}

/// Nothing held, budget − remaining == Σ ledger == spent in memory and in the database.
fn assert_books(app: &TestApp, key: &str) -> i64 {
    let state = app.key_state(key);
    let b = state.balance();
    let (rows, sum) = app.ledger_totals(key);
    assert_eq!(b.held.nanos(), 0, "no hold outlives its request");
    assert!(b.remaining().nanos() >= 0);
    assert_eq!(b.budget.nanos() - b.remaining().nanos(), sum.nanos());
    assert_eq!(state.requests(), rows);
    let spent: i64 = app
        .db()
        .query_row(
            "SELECT spent_nanos FROM keys WHERE id = ?1",
            [&state.id],
            |r| r.get(0),
        )
        .expect("key row");
    assert_eq!(spent, sum.nanos(), "keys.spent_nanos == Σ ledger");
    sum.nanos()
}

/// A failed request that cost nothing.
fn assert_free(row: &UsageRow, finish: Finish, status: u16) {
    assert_eq!(row.finish, finish);
    assert_eq!(row.status, status);
    assert_eq!(row.cost.nanos(), 0, "{row:?}");
    assert_eq!(row.completion_tokens, 0);
}

/// An estimated row for `text`'s prompt plus output tokens in `out`, priced exactly.
fn assert_estimated(
    row: &UsageRow,
    text: &str,
    finish: Finish,
    out: std::ops::RangeInclusive<u64>,
) {
    assert_eq!(row.finish, finish);
    assert_eq!(row.measured, Measured::Estimated);
    assert_eq!(
        row.prompt_tokens,
        prompt_estimate(text),
        "prompt from the request text"
    );
    assert_eq!(row.cache_miss_tokens, row.prompt_tokens);
    assert!(
        out.contains(&row.completion_tokens),
        "{} not in {out:?}",
        row.completion_tokens
    );
    let want = row.prompt_tokens as i64 * MISS_NANOS + row.completion_tokens as i64 * OUT_NANOS;
    assert_eq!(row.cost.nanos(), want);
    assert!(want > 0);
}

#[tokio::test]
async fn client_disconnect_mid_stream_bills_the_generated_output_and_cancels_upstream() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=200 delay_ms=20]] tell me a long story";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let mut stream = resp.bytes_stream();
    let mut raw = String::new();
    let mut seen = 0;
    while seen < 3 {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("chunks keep coming")
            .expect("stream open")
            .expect("chunk");
        raw.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        let complete = &raw[..raw.rfind("\n\n").map_or(0, |i| i + 2)];
        seen = text_deltas(&data_chunks(&sse_events(complete)));
    }
    drop(stream);

    assert_eq!(
        app.sim.wait_outcome(0, WAIT).await,
        Outcome::ClientDisconnected,
        "upstream is cancelled"
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_estimated(&row, text, Finish::ClientAbort, seen as u64..=199);
    assert!(row.stream);
    assert_eq!(assert_books(&app, &key), row.cost.nanos());
}

#[tokio::test]
async fn upstream_status_errors_are_502_and_cost_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let mut index = 0;
    for status in [500u16, 503, 401, 402, 429] {
        for stream in [false, true] {
            let text = format!("[[sim fail={status}]] hi");
            let mut b = body(FLASH, &text);
            b["stream"] = json!(stream);
            let resp = app.chat(&key, &b).send().await.expect("send");
            let rid = request_id(&resp);
            let v = assert_error(resp, 502, "upstream_error").await;
            // The operator's account trouble never reaches the customer.
            let msg = v["error"]["message"]
                .as_str()
                .expect("message")
                .to_lowercase();
            for leak in [
                "authentication",
                "api key",
                "insufficient balance",
                "rate limit",
            ] {
                assert!(!msg.contains(leak), "{status}: {msg}");
            }
            assert_eq!(
                app.sim.wait_outcome(index, WAIT).await,
                Outcome::Failed(status)
            );
            index += 1;
            let row = app
                .ledger_row(&rid)
                .expect("row committed before the response");
            assert_free(&row, Finish::UpstreamError, 502);
            assert_eq!(row.stream, stream);
            assert_eq!(app.key_state(&key).balance().held.nanos(), 0);
        }
    }
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn upstream_400_and_422_are_passed_on_and_cost_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    for (status, message) in [
        (400u16, "Invalid request format"),
        (422, "Invalid parameters"),
    ] {
        for stream in [false, true] {
            let mut b = body(FLASH, &format!("[[sim fail={status}]]"));
            b["stream"] = json!(stream);
            let resp = app.chat(&key, &b).send().await.expect("send");
            let rid = request_id(&resp);
            let v = assert_error(resp, status, "invalid_request").await;
            assert_eq!(v["error"]["message"], message);
            let row = app.ledger_row(&rid).expect("row");
            assert_free(&row, Finish::Rejected, status);
        }
    }
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn connection_refused_is_502_and_costs_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app =
        TestApp::spawn_with(|c| c.upstream.base_url = format!("http://127.0.0.1:{port}")).await;
    let key = app.create_key("trial", None).await;
    for stream in [false, true] {
        let mut b = body(FLASH, "[[sim reply=5]] anyone there?");
        b["stream"] = json!(stream);
        let resp = app.chat(&key, &b).send().await.expect("send");
        let rid = request_id(&resp);
        assert_error(resp, 502, "upstream_error").await;
        let row = app.ledger_row(&rid).expect("row");
        assert_free(&row, Finish::UpstreamError, 502);
    }
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn upstream_that_accepts_but_never_answers_is_504_and_costs_nothing() {
    // A black hole: connections are accepted and held open, nothing is ever sent.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let app = TestApp::spawn_with(|c| {
        c.upstream.base_url = format!("http://127.0.0.1:{port}");
        c.upstream.idle_timeout_secs = 1;
    })
    .await;
    let key = app.create_key("trial", None).await;
    for stream in [false, true] {
        let mut b = body(FLASH, "[[sim reply=5]] hello?");
        b["stream"] = json!(stream);
        let resp = app.chat(&key, &b).send().await.expect("send");
        let rid = request_id(&resp);
        assert_error(resp, 504, "upstream_timeout").await;
        let row = app.ledger_row(&rid).expect("row");
        assert_free(&row, Finish::UpstreamTimeout, 504);
    }
    assert_eq!(assert_books(&app, &key), 0);
    holder.abort();
}

#[tokio::test]
async fn idle_stall_before_any_token_passes_keep_alives_then_times_out_for_free() {
    let app = TestApp::spawn_with(|c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;

    let resp = app
        .chat(
            &key,
            &stream_body("[[sim stall_after=0 keepalive_ms=100]] hi"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    assert!(
        events.iter().any(|e| e == ": keep-alive"),
        "keep-alives reach the client: {events:?}"
    );
    let chunks = assert_ends_with_error(&events, "upstream_timeout");
    assert_eq!(text_deltas(&chunks), 0);
    assert_eq!(
        app.sim.wait_outcome(0, WAIT).await,
        Outcome::Stalled,
        "upstream is cancelled"
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_free(&row, Finish::UpstreamTimeout, 200);

    // Not streamed: DeepSeek's blank lines while queued do not count as data either.
    let resp = app
        .chat(
            &key,
            &body(FLASH, "[[sim first_delay_ms=60000 keepalive_ms=100]] hi"),
        )
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    assert_error(resp, 504, "upstream_timeout").await;
    assert_eq!(
        app.sim.wait_outcome(1, WAIT).await,
        Outcome::ClientDisconnected
    );
    let row = app.ledger_row(&rid).expect("row");
    assert_free(&row, Finish::UpstreamTimeout, 504);
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn idle_stall_after_some_tokens_bills_what_was_delivered() {
    let app = TestApp::spawn_with(|c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=10 stall_after=3 keepalive_ms=100]] hi";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_timeout");
    assert_eq!(text_deltas(&chunks), 3);
    let keep_alives_after_text = events
        .iter()
        .skip_while(|e| !e.contains("charlie"))
        .filter(|e| *e == ": keep-alive")
        .count();
    assert!(keep_alives_after_text >= 1, "{events:?}");
    assert_eq!(app.sim.wait_outcome(0, WAIT).await, Outcome::Stalled);
    let row = app.wait_ledger_row(&rid).await;
    assert_estimated(
        &row,
        text,
        Finish::UpstreamTimeout,
        3..=reply_bytes(3).div_ceil(4),
    );
    assert_eq!(row.status, 200);
    assert_eq!(assert_books(&app, &key), row.cost.nanos());
}

#[tokio::test]
async fn total_timeout_is_504_before_the_answer_and_an_error_event_during_a_stream() {
    let app = TestApp::spawn_with(|c| c.upstream.request_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;

    // Not streamed, still queued upstream (blank lines) at the deadline.
    let resp = app
        .chat(
            &key,
            &body(FLASH, "[[sim first_delay_ms=60000 keepalive_ms=100]] hi"),
        )
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    assert_error(resp, 504, "upstream_timeout").await;
    assert_eq!(
        app.sim.wait_outcome(0, WAIT).await,
        Outcome::ClientDisconnected
    );
    assert_free(
        &app.ledger_row(&rid).expect("row"),
        Finish::UpstreamTimeout,
        504,
    );

    // Streamed, still queued (keep-alives) at the deadline: nothing delivered, nothing billed.
    let resp = app
        .chat(
            &key,
            &stream_body("[[sim first_delay_ms=60000 keepalive_ms=100]] hi"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_timeout");
    assert_eq!(text_deltas(&chunks), 0);
    assert_eq!(
        app.sim.wait_outcome(1, WAIT).await,
        Outcome::ClientDisconnected
    );
    assert_free(
        &app.wait_ledger_row(&rid).await,
        Finish::UpstreamTimeout,
        200,
    );

    // Streamed, tokens flowing (never idle) when the total deadline passes.
    let text = "[[sim reply=500 delay_ms=20]] a very long answer";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_timeout");
    let delivered = text_deltas(&chunks);
    assert!((1..500).contains(&delivered), "{delivered}");
    assert_eq!(
        app.sim.wait_outcome(2, WAIT).await,
        Outcome::ClientDisconnected
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_estimated(
        &row,
        text,
        Finish::UpstreamTimeout,
        delivered as u64..=reply_bytes(delivered).div_ceil(4),
    );
    assert_eq!(assert_books(&app, &key), row.cost.nanos());
}

#[tokio::test]
async fn stream_dropped_halfway_ends_with_an_error_event_and_bills_the_delivered_tokens() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=10 drop_after=5]] hi";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_error");
    assert_eq!(text_deltas(&chunks), 5);
    assert_eq!(app.sim.wait_outcome(0, WAIT).await, Outcome::Dropped);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.status, 200);
    // Five deltas reached the customer: five tokens, as DeepSeek streams one token per delta.
    assert_estimated(&row, text, Finish::UpstreamError, 5..=5);
    assert_eq!(
        row.cost.nanos(),
        prompt_estimate(text) as i64 * MISS_NANOS + 5 * OUT_NANOS
    );
    assert_eq!(assert_books(&app, &key), row.cost.nanos());
}

#[tokio::test]
async fn non_stream_answer_cut_halfway_is_502_and_costs_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body(FLASH, "[[sim reply=10 drop_after=5]] hi"))
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    assert_error(resp, 502, "upstream_error").await;
    assert_eq!(app.sim.wait_outcome(0, WAIT).await, Outcome::Dropped);
    assert_free(
        &app.ledger_row(&rid).expect("row"),
        Finish::UpstreamError,
        502,
    );
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn upstream_error_event_mid_stream_becomes_our_error_event() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;

    let text = "[[sim reply=10 error_after=4]] hi";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_error");
    assert_eq!(text_deltas(&chunks), 4);
    assert!(
        !events.iter().any(|e| e.contains("internal_error")),
        "upstream's own error event is not relayed: {events:?}"
    );
    assert_eq!(app.sim.wait_outcome(0, WAIT).await, Outcome::Failed(500));
    let row = app.wait_ledger_row(&rid).await;
    assert_estimated(
        &row,
        text,
        Finish::UpstreamError,
        4..=reply_bytes(4).div_ceil(4),
    );
    let billed = row.cost.nanos();

    // Before any token: nothing reached the customer, nothing is billed.
    let resp = app
        .chat(&key, &stream_body("[[sim reply=10 error_after=0]] hi"))
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_error");
    assert_eq!(text_deltas(&chunks), 0);
    assert_free(&app.wait_ledger_row(&rid).await, Finish::UpstreamError, 200);
    assert_eq!(assert_books(&app, &key), billed);
}

#[tokio::test]
async fn garbage_from_upstream_is_an_error_event_or_502_and_costs_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;

    let resp = app
        .chat(&key, &stream_body("[[sim reply=3 garbage=1]] hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let chunks = assert_ends_with_error(&events, "upstream_error");
    assert!(chunks.is_empty(), "no garbage is relayed: {events:?}");
    assert!(!events.iter().any(|e| e.contains("garbage")));
    assert_free(&app.wait_ledger_row(&rid).await, Finish::UpstreamError, 200);

    let resp = app
        .chat(&key, &body(FLASH, "[[sim reply=3 garbage=1]] hi"))
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    let v = assert_error(resp, 502, "upstream_error").await;
    assert!(!v.to_string().contains("<html>"));
    assert_free(
        &app.ledger_row(&rid).expect("row"),
        Finish::UpstreamError,
        502,
    );
    assert_eq!(assert_books(&app, &key), 0);
}

#[tokio::test]
async fn missing_usage_is_estimated_and_labelled_so() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=5 no_usage=1]] hi";

    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    assert_eq!(text_deltas(&data_chunks(&events)), 5);
    let row = app.ledger_row(&rid).expect("row committed before [DONE]");
    assert_estimated(&row, text, Finish::Complete, 5..=reply_bytes(5).div_ceil(4));
    let streamed = row.cost.nanos();

    let resp = app
        .chat(&key, &body(FLASH, text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let v: Value = resp.json().await.expect("JSON");
    assert!(v.get("usage").is_none());
    let row = app.ledger_row(&rid).expect("row");
    assert_estimated(&row, text, Finish::Complete, 5..=reply_bytes(5).div_ceil(4));
    assert_eq!(assert_books(&app, &key), streamed + row.cost.nanos());
}

#[tokio::test]
async fn usage_is_hidden_from_a_stream_that_did_not_ask_for_it() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=40 reply=6 reasoning=2]] hi";
    for (i, extra) in [
        json!({}),
        json!({"stream_options": {"include_usage": false}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = stream_body(text);
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        let resp = app.chat(&key, &b).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let events = read_stream(resp).await;
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
        let chunks = data_chunks(&events);
        assert!(
            chunks.iter().all(|c| c.get("usage").is_none()),
            "no usage key in any chunk: {events:?}"
        );
        assert!(chunks.iter().all(|c| c["model"] == FLASH));
        let last = chunks.last().expect("chunks");
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(text_deltas(&chunks), 8);
        // Upstream was asked for usage all the same, and the bill is exact.
        assert_eq!(
            app.sim.requests()[i].body["stream_options"]["include_usage"],
            true
        );
        let row = app.ledger_row(&rid).expect("row");
        assert_eq!(row.measured, Measured::Provider);
        assert_eq!((row.prompt_tokens, row.completion_tokens), (40, 8));
        assert_eq!(row.cost.nanos(), 40 * MISS_NANOS + 8 * OUT_NANOS);
    }
    assert_books(&app, &key);
}

#[tokio::test]
async fn usage_rides_on_the_last_chunk_when_asked() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let mut b = stream_body("[[sim prompt=40 hit=20 reply=6 reasoning=2]] hi");
    b["stream_options"] = json!({"include_usage": true});
    let resp = app.chat(&key, &b).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    let chunks = data_chunks(&events);
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(!rest.is_empty());
    for c in rest {
        assert_eq!(c.get("usage"), Some(&Value::Null), "usage: null on {c}");
        assert!(c["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let u = &last["usage"];
    assert_eq!(u["prompt_tokens"], 40);
    assert_eq!(u["prompt_cache_hit_tokens"], 20);
    assert_eq!(u["prompt_cache_miss_tokens"], 20);
    assert_eq!(u["completion_tokens"], 8);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 2);
    let row = app.ledger_row(&rid).expect("row");
    assert_eq!(row.measured, Measured::Provider);
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (20, 20, 8)
    );
    assert_eq!(row.cost.nanos(), 60 + 20 * MISS_NANOS + 8 * OUT_NANOS);
    assert_books(&app, &key);
}

#[tokio::test]
async fn keep_alive_comments_reach_the_client_while_upstream_queues() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=10 reply=3 first_delay_ms=500 keepalive_ms=50]] hi";
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    assert_eq!(events.first().map(String::as_str), Some(": keep-alive"));
    let first_data = events
        .iter()
        .position(|e| e.starts_with("data: "))
        .expect("data");
    assert!(events[..first_data].iter().all(|e| e == ": keep-alive"));
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    assert_eq!(text_deltas(&data_chunks(&events)), 3);
    let row = app.ledger_row(&rid).expect("row");
    assert_eq!(row.finish, Finish::Complete);
    assert_eq!(row.cost.nanos(), 10 * MISS_NANOS + 3 * OUT_NANOS);

    // Not streamed: the blank lines DeepSeek sends while queued do not break the answer.
    let resp = app
        .chat(&key, &body(FLASH, text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("one JSON answer");
    assert_eq!(v["choices"][0]["message"]["content"], "alpha bravo charlie");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_books(&app, &key);
}

#[tokio::test]
async fn client_leaving_while_upstream_queues_cancels_it_and_pays_the_prompt_only() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=5 first_delay_ms=60000 keepalive_ms=50]] hi";

    // Not streamed: the client gives up waiting for the answer.
    let resp = app
        .chat(&key, &body(FLASH, text))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(resp.is_err_and(|e| e.is_timeout()));
    assert_eq!(
        app.sim.wait_outcome(0, WAIT).await,
        Outcome::ClientDisconnected,
        "upstream is cancelled"
    );
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = modelrelay::store::usage::recent(&app.db(), &app.key_state(&key).id, 10)
            .expect("query");
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let row = rows
        .first()
        .expect("a ledger row for the abandoned request");
    assert_estimated(row, text, Finish::ClientAbort, 0..=0);
    assert_eq!(row.status, 499);
    assert!(!row.stream);

    // Streamed: the client leaves after the first keep-alive.
    let resp = app
        .chat(&key, &stream_body(text))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a keep-alive comes")
        .expect("open")
        .expect("chunk");
    assert_eq!(&first[..], b": keep-alive\n\n");
    drop(stream);
    assert_eq!(
        app.sim.wait_outcome(1, WAIT).await,
        Outcome::ClientDisconnected
    );
    let row2 = app.wait_ledger_row(&rid).await;
    assert_estimated(&row2, text, Finish::ClientAbort, 0..=0);
    assert_eq!(
        assert_books(&app, &key),
        row.cost.nanos() + row2.cost.nanos()
    );
}
