//! The Anthropic dialect and money (issue 12): one balance shared with the OpenAI dialect under
//! concurrency, and streams that end early — the client leaving, upstream failing — billed
//! and labelled.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::anthropic::{Auth, FLASH, events, msg, post};
use crate::common::{TestApp, body, expected_cost, request_id};

/// A streamed Messages request for `text` with `max_tokens`, the key as `x-api-key`.
async fn stream_message(
    app: &TestApp,
    key: &str,
    text: &str,
    max_tokens: u64,
) -> reqwest::Response {
    let mut b = msg("claude-sonnet-4", text, max_tokens);
    b["stream"] = true.into();
    post(app, "/v1/messages", key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nearly_empty_key_under_both_dialects_never_overspends() {
    let app = Arc::new(TestApp::spawn().await);
    // Enough for a handful of small requests at most.
    let key = app.create_key("standard", Some("0.00015")).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (app, key) = (app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let resp = if i % 2 == 0 {
                let mut b = msg(
                    "claude-sonnet-4",
                    "[[sim prompt=30 reply=20 delay_ms=5]] go",
                    64,
                );
                b["stream"] = true.into();
                post(&app, "/v1/messages", &key, Auth::ApiKey, &b)
                    .send()
                    .await
                    .unwrap()
            } else {
                let mut b = body(
                    "deepseek-v4-flash",
                    "[[sim prompt=30 reply=20 delay_ms=5]] go",
                );
                b["stream"] = true.into();
                b["max_tokens"] = 64.into();
                app.chat(&key, &b).send().await.unwrap()
            };
            let status = resp.status().as_u16();
            let rid = request_id(&resp);
            let _ = resp.text().await;
            (status, rid)
        }));
    }
    let mut served = Vec::new();
    for t in tasks {
        let (status, rid) = t.await.unwrap();
        // 429: refused while the others held the money (`budget_held`), to be retried.
        assert!([200, 402, 429].contains(&status), "{status}");
        if status == 200 {
            served.push(rid);
        }
    }
    assert!(!served.is_empty());
    let mut reported = 0i64;
    for rid in &served {
        let row = app.wait_ledger_row(rid).await;
        assert_eq!(row.measured.as_str(), "provider");
        reported += expected_cost(
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens,
            FLASH[0],
            FLASH[1],
            FLASH[2],
        );
    }
    let b = app.key_state(&key).balance();
    assert_eq!(b.held.nanos(), 0);
    assert!(b.remaining().nanos() >= 0);
    let (_, ledger) = app.ledger_totals(&key);
    assert_eq!(b.spent, ledger, "spent == sum of the ledger");
    assert_eq!(
        ledger.nanos(),
        reported,
        "== sum of upstream-reported costs"
    );
    assert!(ledger.nanos() <= 150_000);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_billed_for_what_was_relayed() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = stream_message(
        &app,
        &key,
        "[[sim prompt=20 reply=200 delay_ms=20]] go",
        500,
    )
    .await;
    let rid = request_id(&resp);
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let mut seen = 0;
    while let Some(chunk) = stream.next().await {
        seen += String::from_utf8_lossy(&chunk.unwrap())
            .matches("text_delta")
            .count();
        if seen >= 5 {
            break;
        }
    }
    drop(stream);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "client_abort");
    assert_eq!(row.api.as_str(), "anthropic");
    assert!(
        row.completion_tokens >= 5 && row.completion_tokens < 200,
        "{}",
        row.completion_tokens
    );
    assert!(row.cost.nanos() > 0);
    // The gateway hung up on upstream too.
    let outcome = app.sim.wait_outcome(0, Duration::from_secs(5)).await;
    assert!(format!("{outcome:?}").contains("Disconnect"), "{outcome:?}");
}

/// A stream that upstream breaks after `after` tokens with its error event (`directive`:
/// `error_after` or `overloaded_after`): the events relayed, and the error event's `error`
/// object, after checking it is the last event, that `after` deltas came before it, and that
/// the row bills them as a broken stream.
async fn broken_stream(directive: &str, after: u64) -> Value {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let prompt = format!("[[sim prompt=20 reply=50 {directive}={after}]] go");
    let resp = stream_message(&app, &key, &prompt, 100).await;
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let evs = events(resp).await;
    let (name, data) = evs.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["type"], "error");
    let deltas = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .count();
    assert_eq!(deltas as u64, after);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "upstream_error");
    assert_eq!(row.measured.as_str(), "estimated");
    // Billed for the prompt (upstream's message_start gave it) and the tokens relayed.
    assert_eq!(row.completion_tokens, after);
    assert!(row.cost.nanos() > 0);
    data["error"].clone()
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_ends_with_anthropics_error_event() {
    let error = broken_stream("error_after", 4).await;
    assert_eq!(error["type"], "api_error");
}

/// Upstream saying mid-stream that it is overloaded: the client is told `overloaded_error`
/// (found by an independent check: it was `api_error`), in our own words, billed as any
/// broken stream.
#[tokio::test]
async fn an_upstream_overloaded_mid_stream_is_told_as_overloaded() {
    let error = broken_stream("overloaded_after", 3).await;
    assert_eq!(error["type"], "overloaded_error", "{error}");
    // Our own words, about the provider (not "every account is busy": a re-check).
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("The upstream model provider is overloaded"),
        "{error}"
    );
}

/// Upstream overloaded as the stream's very first event (before anything was relayed): a 503
/// `overloaded_error`, which the SDKs retry, free — not a 502 `api_error` (found by a review).
#[tokio::test]
async fn an_upstream_overloaded_at_the_first_event_is_a_503_overloaded_and_free() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = stream_message(&app, &key, "[[sim reply=3 overloaded_after=0]] go", 100).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let rid = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "upstream_error");
    assert_eq!(row.cost.nanos(), 0);
}

/// Upstream's stream failing at its first word (before anything was relayed, the head not
/// sent): a 502 in Anthropic's shape, which the SDKs retry (a 200 whose stream is one error
/// event they never retry; found by an independent check), billed nothing.
#[tokio::test]
async fn an_upstream_stream_failing_at_its_first_word_is_a_502_and_free() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = stream_message(&app, &key, "[[sim reply=3 garbage=1]] go", 100).await;
    assert_eq!(resp.status(), 502);
    let rid = request_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "upstream_error");
    assert_eq!(row.status, 502);
    assert_eq!(row.cost.nanos(), 0);
}

/// Prompt tokens the gateway bills for a one-message request of `text` when upstream never
/// reported them (README: counted by DeepSeek's tokenizer, four a message, two more).
fn prompt_estimate(text: &str) -> u64 {
    // DeepSeek's tokenizer (pinned to the Python package's counts in its own unit tests), and
    // the estimate's few tokens of template for the one message.
    modelrelay::gateway::tokens::count(text).expect("the tokenizer") + 4 + 2
}

/// Send `text` as a Messages request (streamed or not), expect a 200, and return its ledger
/// row, checked to be complete and labelled `estimated`.
async fn estimated_row(
    app: &TestApp,
    key: &str,
    text: &str,
    stream: bool,
) -> modelrelay::store::UsageRow {
    let mut b = msg("claude-sonnet-4", text, 100);
    b["stream"] = stream.into();
    let resp = post(app, "/v1/messages", key, Auth::ApiKey, &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "stream {stream}");
    let rid = request_id(&resp);
    let _ = resp.text().await.unwrap();
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "complete");
    assert_eq!(row.measured.as_str(), "estimated", "stream {stream}");
    row
}

#[tokio::test]
async fn a_usage_with_one_side_bills_that_side_as_reported_and_estimates_the_other() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    // Output count only: reported 20 tokens; the answer's text is ~6 bytes a token, so the
    // estimate from it (text ÷ 4) would say 30.
    for stream in [false, true] {
        let text = "[[sim prompt=900 reply=20 output_usage_only=1]] go";
        let row = estimated_row(&app, &key, text, stream).await;
        let miss = prompt_estimate(text);
        assert_eq!(
            (
                row.cache_hit_tokens,
                row.cache_miss_tokens,
                row.completion_tokens
            ),
            (0, miss, 20),
            "stream {stream}"
        );
        assert_eq!(
            row.cost.nanos(),
            expected_cost(0, miss, 20, FLASH[0], FLASH[1], FLASH[2])
        );
    }
}

/// In a stream too: `message_delta`'s usage of the wrong shape does not break a stream whose
/// content all arrived; the prompt `message_start` reported and the output relayed are billed.
#[tokio::test]
async fn a_stream_with_a_mistyped_final_usage_ends_normally_billed_by_what_was_reported() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = stream_message(
        &app,
        &key,
        "[[sim prompt=60 reply=20 usage_mistyped=1]] go",
        100,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let evs = events(resp).await;
    assert_eq!(evs.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    assert!(evs.iter().all(|(n, _)| n != "error"));
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "complete");
    assert_eq!(row.measured.as_str(), "estimated");
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (0, 60, 20)
    );
    assert_eq!(
        row.cost.nanos(),
        expected_cost(0, 60, 20, FLASH[0], FLASH[1], FLASH[2])
    );
}

#[tokio::test]
async fn a_whole_answer_with_a_mistyped_usage_is_relayed_and_billed_by_estimate() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=900 reply=20 usage_mistyped=1]] go";
    let resp = post(
        &app,
        "/v1/messages",
        &key,
        Auth::ApiKey,
        &msg("claude-sonnet-4", text, 100),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["usage"]["output_tokens"], "20",
        "relayed as upstream wrote it"
    );
    let said = answer["content"][0]["text"].as_str().unwrap();
    let out = (said.len() as u64).div_ceil(4);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.measured.as_str(), "estimated");
    let miss = prompt_estimate(text);
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (0, miss, out)
    );
    assert_eq!(
        row.cost.nanos(),
        expected_cost(0, miss, out, FLASH[0], FLASH[1], FLASH[2])
    );
    assert_eq!(
        app.key_state(&key).balance().spent.nanos(),
        row.cost.nanos()
    );
}

/// Zeros in Anthropic's usage (`message_start`'s input, `message_delta`'s output, a whole
/// answer's) are no counts either: both sides estimated, streamed or not.
#[tokio::test]
async fn a_usage_of_zeros_is_estimated_not_free() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim prompt=900 reply=20 zero_usage=1]] go";
    for stream in [false, true] {
        let row = estimated_row(&app, &key, text, stream).await;
        let miss = prompt_estimate(text);
        assert_eq!((row.cache_hit_tokens, row.cache_miss_tokens), (0, miss));
        assert!(row.completion_tokens > 0, "stream {stream}: {row:?}");
        assert_eq!(
            row.cost.nanos(),
            expected_cost(0, miss, row.completion_tokens, FLASH[0], FLASH[1], FLASH[2])
        );
    }
}

/// A client that leaves an Anthropic stream while DeepSeek still queues it (only keep-alives
/// so far: a coding agent's Esc) is billed the prompt `message_start` then reports, cache hits
/// included — not our estimate of it as cache misses — and the gateway hangs up right after.
#[tokio::test]
async fn a_client_leaving_before_the_opening_pays_the_prompt_deepseek_reports() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = stream_message(
        &app,
        &key,
        "[[sim prompt=9000 hit=8000 reply=50 delay_ms=300 first_delay_ms=1500 keepalive_ms=50]] go",
        500,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a keep-alive comes")
        .expect("a chunk")
        .unwrap();
    assert!(!String::from_utf8_lossy(&first).contains("message_start"));
    drop(stream);
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "client_abort");
    assert_eq!((row.cache_hit_tokens, row.cache_miss_tokens), (8000, 1000));
    assert!(row.completion_tokens <= 2, "{row:?}");
    assert_eq!(
        row.cost.nanos(),
        expected_cost(
            8000,
            1000,
            row.completion_tokens,
            FLASH[0],
            FLASH[1],
            FLASH[2]
        )
    );
    let outcome = app.sim.wait_outcome(0, Duration::from_secs(5)).await;
    assert!(format!("{outcome:?}").contains("Disconnect"), "{outcome:?}");
}

/// The opening without counts (or with zeros) ends the wait all the same: the gateway hangs up
/// ~250 ms after it, and the prompt is estimated — it read on, and billed, the whole answer
/// nobody read (found by an independent re-check). A stop does not wait for such a read-on.
#[tokio::test]
async fn an_opening_without_counts_ends_the_read_on_and_a_stop_does_not_wait_for_it() {
    // A stop that waited for the gone client would take the drain (or the request's own
    // timeout): two minutes each, far above what a stop may take here even on a loaded machine.
    let mut app = TestApp::spawn_with(|c| {
        c.server.drain_secs = 120;
        c.upstream.idle_timeout_secs = 120;
        c.upstream.request_timeout_secs = 120;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let leave_early = |text: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let resp = stream_message(app, key, text, 500).await;
            assert_eq!(resp.status(), 200);
            let rid = request_id(&resp);
            let mut stream = resp.bytes_stream();
            use futures_util::StreamExt;
            let _first = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("a keep-alive comes");
            drop(stream);
            rid
        }
    };
    let text = "[[sim prompt=9000 hit=8000 reply=50 delay_ms=100 first_delay_ms=1000 keepalive_ms=50 zero_usage=1]] go";
    let rid = leave_early(text).await;
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "client_abort");
    assert!(
        row.completion_tokens <= 5,
        "read on past the opening: {row:?}"
    );
    assert_eq!(row.cache_hit_tokens, 0, "no counts came: estimated");
    let outcome = app.sim.wait_outcome(0, Duration::from_secs(5)).await;
    assert!(format!("{outcome:?}").contains("Disconnect"), "{outcome:?}");

    // An upstream that never opens: a stop begins, and does not wait the 120 s drain for it.
    let rid = leave_early("[[sim first_delay_ms=600000 keepalive_ms=50]] go").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = std::time::Instant::now();
    app.shutdown().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "the stop waited {:?} for a client that is gone",
        stopped.elapsed()
    );
    let _ = rid;
}
