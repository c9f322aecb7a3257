//! Tests of the failure directives on the simulator's Anthropic-format route: the error event
//! mid-stream, canned failures in Anthropic's error shape, keep-alives, drops, garbage, and a
//! client that goes away.

use super::stream::KEEPALIVE;
use super::tests_anthropic::{error_body, events, post, post_json, req, sim};
use super::{Duration, Outcome};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn error_after_sends_an_error_event_and_ends() {
    let s = sim(false).await;
    let text = post(
        &s,
        &req("[[sim reply=5 error_after=2]]", json!({"stream": true})),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = events(&text);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let expected = [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "error",
    ];
    assert_eq!(names, expected);
    let last: Value = serde_json::from_str(&ev[5].1).unwrap();
    assert_eq!(last, error_body("api_error", "Internal server error"));
    assert_eq!(
        s.wait_outcome(0, Duration::from_secs(2)).await,
        Outcome::Failed(500)
    );
}

#[tokio::test]
async fn canned_failures_in_anthropic_shape() {
    let s = sim(false).await;
    let cases = [
        (402, "billing_error", "Insufficient Balance"),
        (429, "rate_limit_error", "Rate limit reached for requests"),
        (
            500,
            "api_error",
            "Server error, please retry your request after a brief wait",
        ),
        (
            503,
            "overloaded_error",
            "Server overloaded, please retry your request after a brief wait",
        ),
        (422, "invalid_request_error", "Invalid request format"),
    ];
    for (i, (code, kind, message)) in cases.into_iter().enumerate() {
        let (status, v) = post_json(
            &s,
            req(&format!("[[sim fail={code}]]"), json!({"stream": true})),
        )
        .await;
        assert_eq!((status, v), (code, error_body(kind, message)));
        assert_eq!(
            s.wait_outcome(i, Duration::ZERO).await,
            Outcome::Failed(code)
        );
    }
}

#[tokio::test]
async fn keepalives_drop_and_garbage() {
    let s = sim(false).await;
    let directive = "[[sim reply=2 first_delay_ms=250 keepalive_ms=40]]";
    let text = post(&s, &req(directive, json!({"stream": true})))
        .await
        .text()
        .await
        .unwrap();
    let first_event = text.find("event: ").unwrap();
    assert!(
        text[..first_event].matches(KEEPALIVE).count() >= 3,
        "{text:?}"
    );

    let resp = post(
        &s,
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
        failed && !seen.contains("message_stop") && !seen.contains("message_delta"),
        "{seen:?}"
    );
    assert_eq!(events(&seen).len(), 3 + 3);
    assert_eq!(
        s.wait_outcome(1, Duration::from_secs(2)).await,
        Outcome::Dropped
    );

    let text = post(
        &s,
        &req("[[sim garbage=1 reply=2]]", json!({"stream": true})),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = events(&text);
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert!(
        ev[..ev.len() - 1]
            .iter()
            .all(|(_, d)| serde_json::from_str::<Value>(d).is_err())
    );
}

#[tokio::test]
async fn client_disconnect_is_recorded() {
    let s = sim(false).await;
    let body = req("[[sim reply=1000 delay_ms=10]]", json!({"stream": true}));
    let mut stream = post(&s, &body).await.bytes_stream();
    let mut seen = String::new();
    while events(&seen).len() < 5 {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    drop(stream);
    assert_eq!(
        s.wait_outcome(0, Duration::from_secs(5)).await,
        Outcome::ClientDisconnected
    );
}
