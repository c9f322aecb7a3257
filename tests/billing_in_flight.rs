//! A key's requests in flight at once are bounded by its plan's `max_in_flight`: every upstream
//! account's limit of requests in flight is shared by all keys, and without a bound of its own
//! one key holding long requests could take it all and leave every other customer a 503.

use std::time::Duration;

use serde_json::{Value, json};

use crate::anthropic::{Auth, msg, post};
use crate::common::{TestApp, body, request_id};

const FLASH: &str = "deepseek-v4-flash";

/// Wait until `key` has `n` requests in flight (their upstream answers are held back): by
/// the clock, up to a minute (a loaded machine is slow).
async fn wait_in_flight(app: &TestApp, key: &str, n: u32) {
    let state = app.key_state(key);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while state.in_flight() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} requests in flight, not {n}",
            state.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A short request of `key`, served (200): its request id.
async fn served(app: &TestApp, key: &str) -> String {
    let resp = app
        .chat(key, &body(FLASH, "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    request_id(&resp)
}

/// At its plan's limit a key's next request is a 429 `too_many_in_flight` in either dialect,
/// retried after `Retry-After: 2` by the SDKs, charged nothing and with no ledger row; another
/// key is not held back by it; the places come back when the requests finish, when a client
/// goes away mid-request, and when a request is refused after taking one.
#[tokio::test]
async fn a_key_at_its_plans_requests_in_flight_gets_429_and_its_places_come_back() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.max_in_flight = 2;
        }
        // The held requests' 5 s without a byte is no upstream timeout.
        c.upstream.idle_timeout_secs = 30;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let other = app.create_key("trial", None).await;
    // Held for 5 s: the refusals and the other key's request below come meanwhile.
    let slow = body(FLASH, "hi [[sim first_delay_ms=5000 reply=3]]");
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.chat(&key, &slow).send()))
        .collect();
    wait_in_flight(&app, &key, 2).await;
    let spent_before = app.key_state(&key).balance().spent;

    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_in_flight", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests in progress"),
        "{v}"
    );
    // The same in Anthropic's shape.
    let resp = post(
        &app,
        "/anthropic/v1/messages",
        &key,
        Auth::ApiKey,
        &msg("claude-sonnet-4", "hi [[sim reply=1]]", 10),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    // Both counted among the keys' limit refusals.
    let metrics = crate::ops::scrape(&app).await;
    assert_eq!(
        crate::ops::get(&metrics, "modelrelay_rate_limited_total"),
        2.0
    );
    // Another key of the same plan is served meanwhile.
    served(&app, &other).await;
    assert_eq!(app.key_state(&key).balance().spent, spent_before);

    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    wait_in_flight(&app, &key, 0).await;
    let last = served(&app, &key).await;
    app.wait_ledger_row(&last).await;
    // The two held and the one after: the refusals left no row.
    assert_eq!(app.ledger_totals(&key).0, 3);

    // Refused after taking a place (a bad body, an unknown model): the place comes back.
    for bad in [json!({"model": FLASH}), body("no-such-model", "hi")] {
        let resp = app.chat(&key, &bad).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    assert_eq!(app.key_state(&key).in_flight(), 0);

    // A client that goes away while its request waits upstream gives its place back.
    let stream = json!({"model": FLASH, "stream": true,
        "messages": [{"role": "user", "content": "hi [[sim first_delay_ms=1500 reply=3]]"}]});
    let gone: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.chat(&key, &stream).send()))
        .collect();
    wait_in_flight(&app, &key, 2).await;
    for g in gone {
        g.abort();
    }
    wait_in_flight(&app, &key, 0).await;
    served(&app, &key).await;
}

/// A refusal for want of a place in flight uses none of the key's RPM: an agent retrying
/// while its requests run (the SDKs retry this 429; Claude Code up to ten times) still has
/// its whole rate left when a place frees. At 3 RPM with one place: one request held, ten
/// refused for the place, then the next two are served and only the third after them meets
/// the rate limit.
#[tokio::test]
async fn refusals_for_a_place_in_flight_use_none_of_the_keys_rpm() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.max_in_flight = 1;
            p.rpm = 3;
        }
        // The held request's 5 s without a byte is no upstream timeout.
        c.upstream.idle_timeout_secs = 30;
    })
    .await;
    let key = app.create_key("trial", None).await;
    // Held for 5 s: the ten refusals come meanwhile.
    let slow = body(FLASH, "hi [[sim first_delay_ms=5000 reply=3]]");
    let held = tokio::spawn(app.chat(&key, &slow).send());
    wait_in_flight(&app, &key, 1).await;
    for _ in 0..10 {
        assert_eq!(refused_429(&app, &key).await, "too_many_in_flight");
    }
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    wait_in_flight(&app, &key, 0).await;
    served(&app, &key).await;
    served(&app, &key).await;
    assert_eq!(refused_429(&app, &key).await, "rate_limit_exceeded");
}

/// A short request of `key`, refused with 429: its error code.
async fn refused_429(app: &TestApp, key: &str) -> String {
    let resp = app
        .chat(key, &body(FLASH, "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}
