//! Upstream and client faults (SPEC §3–4): for each, what the customer sees and what they pay.
//!
//! Failures before a response started are a JSON error (502 / 504); failures after a stream
//! started end it with one final `data: {"error":…}` event and no `[DONE]`. A customer pays for
//! what reached them (estimated when upstream never reported usage), and nothing when nothing
//! did; a client that goes away pays for the prompt and what was generated, and upstream is
//! cancelled.
//!
//! Here the shared assertions and the failures before a response started; the rest in
//! `faults_streams`, `faults_usage` and `faults_clients`.

use std::time::Duration;

use modelrelay::store::{Finish, Measured, UsageRow};
use modelrelay::upstream::simulated::Outcome;
use serde_json::{Value, json};

use crate::common::{TestApp, body, data_chunks, request_id};

/// The model of every request here.
pub(super) const FLASH: &str = "deepseek-v4-flash";
/// Nano-USD per prompt (miss) token and per output token, flash off-peak.
pub(super) const MISS_NANOS: i64 = 150;
/// Nano-USD per output token, flash off-peak.
pub(super) const OUT_NANOS: i64 = 600;
/// How long to wait for an outcome or a ledger row before failing.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A streaming chat body for `text`.
pub(super) fn stream_body(text: &str) -> Value {
    let mut b = body(FLASH, text);
    b["stream"] = json!(true);
    b
}

/// The prompt a one-message request is billed when upstream never reported it: DeepSeek's
/// tokenizer's count of its text, and a few tokens of template.
pub(super) fn prompt_estimate(text: &str) -> u64 {
    // DeepSeek's tokenizer (pinned to the Python package's counts in its own unit tests), and
    // the estimate's few tokens of template for the one message.
    modelrelay::gateway::tokens::count(text).expect("the tokenizer") + 4 + 2
}

/// Bytes of the simulator's first `n` reply tokens ("alpha ", "bravo ", …).
pub(super) fn reply_bytes(n: usize) -> u64 {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    (0..n).map(|i| words[i % 8].len() as u64 + 1).sum()
}

/// A stream that failed after it started: its last event is one error event with `code`,
/// there is no `[DONE]`, and no earlier event is an error. Returns the chunks before it.
pub(super) fn assert_ends_with_error(events: &[String], code: &str) -> Vec<Value> {
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
pub(super) async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.expect("JSON error body");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"].get("param").is_some() && v["error"].get("type").is_some());
    v
}

/// Nothing held, budget − remaining == Σ ledger == spent in memory and in the database.
pub(super) fn assert_books(app: &TestApp, key: &str) -> i64 {
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
pub(super) fn assert_free(row: &UsageRow, finish: Finish, status: u16) {
    assert_eq!(row.finish, finish);
    assert_eq!(row.status, status);
    assert_eq!(row.cost.nanos(), 0, "{row:?}");
    assert_eq!(row.completion_tokens, 0);
}

/// An estimated row for `text`'s prompt plus output tokens in `out`, priced exactly.
pub(super) fn assert_estimated(
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
async fn upstream_status_errors_are_502_or_busy_and_cost_nothing() {
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
            // DeepSeek's 429 (the operator's account at its limit) is busy: 503 with the
            // Retry-After to wait, not a failure to retry at once.
            let (code, http) = if status == 429 {
                ("upstream_busy", 503)
            } else {
                ("upstream_error", 502)
            };
            if status == 429 {
                assert_eq!(resp.headers()["retry-after"], "2");
            }
            let v = assert_error(resp, http, code).await;
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
            app.enable_upstream();
            let row = app
                .ledger_row(&rid)
                .expect("row committed before the response");
            assert_free(&row, Finish::UpstreamError, http);
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
        assert_eq!(row.account, "", "no account was reached");
    }
    assert_eq!(assert_books(&app, &key), 0);
}

/// A black hole upstream: connections are accepted and held open, nothing is ever sent. Its
/// port, and the task holding them (abort it when done).
pub(super) async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
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
    (port, holder)
}

#[tokio::test]
async fn upstream_that_accepts_but_never_answers_is_504_and_costs_nothing() {
    let (port, holder) = black_hole().await;
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
        assert_eq!(row.account, "default", "the request reached it");
    }
    assert_eq!(assert_books(&app, &key), 0);
    holder.abort();
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

/// Garbage as upstream's first word, streamed or not: a 502 (nothing relayed yet, the head not
/// sent: a 200 whose stream is one error event was an error the SDKs never retry), free.
#[tokio::test]
async fn garbage_from_upstream_is_a_502_and_costs_nothing() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;

    let resp = app
        .chat(&key, &stream_body("[[sim reply=3 garbage=1]] hi"))
        .send()
        .await
        .expect("send");
    let rid = request_id(&resp);
    let v = assert_error(resp, 502, "upstream_error").await;
    assert!(!v.to_string().contains("garbage"), "{v}");
    assert_free(&app.wait_ledger_row(&rid).await, Finish::UpstreamError, 502);

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
