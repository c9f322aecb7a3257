//! Usage when upstream leaves it out or the client did not ask for it (SPEC §4): a missing
//! `usage` is estimated and labelled so; a stream carries `usage` only when asked, on its last
//! content chunk.

use modelrelay::store::{Finish, Measured};
use serde_json::{Value, json};

use crate::common::{TestApp, body, data_chunks, read_stream, request_id, text_deltas};
use crate::faults::{
    FLASH, MISS_NANOS, OUT_NANOS, assert_books, assert_estimated, reply_bytes, stream_body,
};

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

/// A usage of zeros (every request has a prompt; an answer that brought text has output) is no
/// count: the answer is billed by estimate, as without a usage, streamed or not — it was served
/// free, labelled `provider`.
#[tokio::test]
async fn a_usage_of_zeros_is_estimated_not_free() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let text = "[[sim reply=5 zero_usage=1]] hi";
    let mut total = 0;
    for stream in [true, false] {
        let b = if stream {
            stream_body(text)
        } else {
            body(FLASH, text)
        };
        let resp = app.chat(&key, &b).send().await.expect("send");
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let _ = resp.bytes().await.expect("body");
        let row = app.wait_ledger_row(&rid).await;
        assert_estimated(&row, text, Finish::Complete, 5..=reply_bytes(5).div_ceil(4));
        total += row.cost.nanos();
    }
    assert_eq!(assert_books(&app, &key), total);
}
