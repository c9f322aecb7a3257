//! Tests of what a test can do to one account of the simulator — status faults, delays, hangs —
//! and of its in-flight accounting: concurrent streams counted per account and model from their
//! headers to their end, maxima, and DeepSeek's own cap (429).

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::tests_accounts::{
    A, B, chat, chat_body, deepseek_error, get, messages, messages_body, status_and_json,
    two_accounts,
};
use super::*;

const FLASH: &str = "deepseek-v4-flash";

/// Longest a test waits for what happens in its own time (a loaded machine is slow).
const PATIENCE: Duration = Duration::from_secs(60);

/// Wait until `f` holds (polling), or fail after [`PATIENCE`].
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn status_faults_hit_one_account_on_every_route() {
    let s = two_accounts(
        Some(SimBalance::usd(Usd::from_dollars(1))),
        SimAccount::new(B),
    )
    .await;
    let cases = [
        (
            401,
            "Authentication Fails, Your api key: ****xxxx is invalid",
            "authentication_error",
        ),
        (402, "Insufficient Balance", "unknown_error"),
        (403, "Permission denied", "permission_error"),
        (429, "Rate limit reached for requests", "rate_limit_error"),
        (
            500,
            "Server error, please retry your request after a brief wait",
            "server_error",
        ),
        (
            503,
            "Server overloaded, please retry your request after a brief wait",
            "server_error",
        ),
    ];
    for (status, message, kind) in cases {
        assert!(s.set_fault(A, Some(AccountFault::Status(status))));
        let code = if status >= 500 {
            "internal_error"
        } else {
            "invalid_request_error"
        };
        let expected = deepseek_error(message, kind, code);
        let got = status_and_json(chat(&s, A, &chat_body("hi", FLASH, true)).await).await;
        assert_eq!(got, (status, expected.clone()));
        let index = s.requests().len() - 1;
        assert_eq!(
            s.wait_outcome(index, Duration::ZERO).await,
            Outcome::Failed(status)
        );
        assert_eq!(s.requests()[index].account.as_deref(), Some(A));
        assert_eq!(get(&s, "/models", A).await, (status, expected.clone()));
        assert_eq!(get(&s, "/user/balance", A).await, (status, expected));
        let (got, v) =
            status_and_json(messages(&s, A, &messages_body("hi", FLASH, false)).await).await;
        assert_eq!(got, status);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["message"], message);
        // The other account is untouched.
        assert_eq!(
            chat(&s, B, &chat_body("hi", FLASH, false))
                .await
                .status()
                .as_u16(),
            200
        );
    }
    let (_, v) = status_and_json(messages(&s, A, &messages_body("hi", FLASH, false)).await).await;
    assert_eq!(v["error"]["type"], "overloaded_error");
    // Refused requests cost nothing; clearing the fault brings the account back.
    assert_eq!(s.balance(A), Some(Usd::from_dollars(1)));
    assert!(s.set_fault(A, None));
    assert_eq!(
        chat(&s, A, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );
    assert!(s.balance(A) < Some(Usd::from_dollars(1)));
}

#[tokio::test]
async fn delay_fault_answers_late_and_counts_meanwhile() {
    let s = two_accounts(None, SimAccount::new(B)).await;
    // Long enough that A's answer comes while B's is still held, however loaded the machine.
    let delay = Duration::from_secs(5);
    s.set_fault(B, Some(AccountFault::Delay(delay)));
    let started = Instant::now();
    let slow = tokio::spawn({
        let url = format!("{}/v1/chat/completions", s.base_url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(B)
                .json(&chat_body("hi", FLASH, false));
            resp.send().await.unwrap().status().as_u16()
        }
    });
    eventually("the delayed request is in flight", || s.in_flight(B) == 1).await;
    // Not admitted for a model yet: it has not been looked at.
    assert_eq!(s.in_flight_for(B, FLASH), 0);
    assert_eq!(
        chat(&s, A, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        s.in_flight(B),
        1,
        "A is not delayed: B's answer is still held"
    );
    assert!(started.elapsed() < delay, "A is not delayed");
    assert_eq!(slow.await.unwrap(), 200);
    assert!(started.elapsed() >= delay);
    let (status, _) = get(&s, "/user/balance", B).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn hang_fault_keeps_the_connection_until_the_client_gives_up() {
    let s = two_accounts(None, SimAccount::new(B)).await;
    s.set_fault(A, Some(AccountFault::Hang));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", s.base_url());
    let started = Instant::now();
    let err = client
        .post(&url)
        .bearer_auth(A)
        .json(&chat_body("hi", FLASH, true))
        .send()
        .await;
    assert!(err.unwrap_err().is_timeout(), "no byte came back");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(s.wait_outcome(0, PATIENCE).await, Outcome::Stalled);
    eventually("the abandoned request leaves", || s.in_flight(A) == 0).await;
    assert_eq!(s.max_in_flight(A), 1);
    // Meanwhile the other account answers, and a cleared fault answers again.
    assert_eq!(
        chat(&s, B, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );
    s.set_fault(A, None);
    assert_eq!(
        chat(&s, A, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );

    // Shutdown cuts a hung request instead of waiting for it forever.
    s.set_fault(A, Some(AccountFault::Hang));
    let pending = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .bearer_auth(A)
            .json(&chat_body("hi", FLASH, false))
            .send(),
    );
    eventually("the hung request is in flight", || s.in_flight(A) == 1).await;
    s.shutdown();
    let outcome = pending.await.unwrap();
    let cut = match outcome {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(cut);
    let index = s.requests().len() - 1;
    assert_eq!(s.wait_outcome(index, PATIENCE).await, Outcome::Dropped);
}

#[tokio::test]
async fn concurrent_streams_are_counted_per_account_and_model() {
    let s = two_accounts(None, SimAccount::new(B)).await;
    // Each lasts 4 s: all are still running once the seven have started, however loaded the
    // machine.
    let slow = "[[sim reply=4 delay_ms=1000]]";
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(chat(&s, A, &chat_body(slow, FLASH, true)).await);
    }
    streams.push(messages(&s, A, &messages_body(slow, "claude-opus-4", true)).await);
    // A whole (non-stream) answer counts until its body is out, keep-alives first.
    let late = "[[sim reply=4 first_delay_ms=4000 keepalive_ms=50]]";
    streams.push(chat(&s, B, &chat_body(late, "deepseek-v4-pro", false)).await);
    assert_eq!(s.in_flight(A), 6);
    assert_eq!(s.in_flight_for(A, FLASH), 5);
    assert_eq!(s.in_flight_for(A, "deepseek-v4-pro"), 1);
    assert_eq!(s.in_flight(B), 1);
    let bodies =
        futures_util::future::join_all(streams.into_iter().map(reqwest::Response::text)).await;
    assert!(bodies.iter().all(Result::is_ok));
    eventually("every answer ended", || {
        s.in_flight(A) + s.in_flight(B) == 0
    })
    .await;
    assert_eq!(s.in_flight_for(A, FLASH), 0);
    assert_eq!((s.max_in_flight(A), s.max_in_flight_for(A, FLASH)), (6, 5));
    assert_eq!(s.max_in_flight(B), 1);
    s.reset_max_in_flight();
    assert_eq!((s.max_in_flight(A), s.max_in_flight_for(A, FLASH)), (0, 0));

    // A client that walks away from a stream takes it out of the count.
    let resp = chat(
        &s,
        A,
        &chat_body("[[sim reply=1000 delay_ms=10]]", FLASH, true),
    )
    .await;
    let mut body = resp.bytes_stream();
    assert!(body.next().await.unwrap().is_ok());
    assert_eq!(s.in_flight(A), 1);
    drop(body);
    eventually("the abandoned stream leaves", || s.in_flight(A) == 0).await;
    assert_eq!(s.in_flight_for(A, FLASH), 0);
    assert_eq!(s.max_in_flight(A), 1);
}

#[tokio::test]
async fn a_request_counts_from_its_headers() {
    let s = two_accounts(None, SimAccount::new(B)).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let head = format!(
        "POST /chat/completions HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {B}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    eventually("headers without the whole body count", || {
        s.in_flight(B) == 1
    })
    .await;
    assert!(s.requests().is_empty(), "the body has not been read");
    drop(tcp);
    eventually("the request leaves with its client", || s.in_flight(B) == 0).await;
}

#[tokio::test]
async fn deepseek_cap_answers_429_past_it() {
    let s = SimulatedDeepSeek::start(SimOptions {
        api_key: A.to_owned(),
        accounts: vec![SimAccount::new(B)],
        concurrency_cap: Some(2),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let stall = "[[sim reply=5 stall_after=1 keepalive_ms=20]]";
    let first = chat(&s, A, &chat_body(stall, FLASH, true)).await;
    let second = messages(&s, A, &messages_body(stall, "deepseek-v4-pro", true)).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let got = status_and_json(chat(&s, A, &chat_body("hi", FLASH, false)).await).await;
    let expected = deepseek_error(
        "Rate limit reached for requests",
        "rate_limit_error",
        "invalid_request_error",
    );
    assert_eq!(got, (429, expected));
    let (status, v) =
        status_and_json(messages(&s, A, &messages_body("hi", FLASH, false)).await).await;
    assert_eq!(
        (status, &v["error"]["type"]),
        (429, &json!("rate_limit_error"))
    );
    // The cap is per account: B is free.
    assert_eq!(
        chat(&s, B, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );
    // A refused request is never admitted for a model.
    assert_eq!(s.max_in_flight_for(A, FLASH), 1);
    drop(first);
    eventually("the first stream leaves", || s.in_flight_for(A, FLASH) == 0).await;
    assert_eq!(
        chat(&s, A, &chat_body("hi", FLASH, false))
            .await
            .status()
            .as_u16(),
        200
    );
    drop(second);
}
