//! What an attacker tried (issue 11): each test here failed before its fix.

use std::time::Duration;

use crate::common::*;

/// `GET /metrics` as a client behind the proxy whose `X-Forwarded-For` is `xff`.
async fn metrics_status(app: &TestApp, xff: &str) -> u16 {
    app.http
        .get(format!("{}/metrics", app.base))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_forwarded_for_that_is_not_a_bare_address_cannot_pass_for_loopback() {
    let app = TestApp::spawn_with(|c| c.server.behind_proxy = true).await;
    // The proxy appended the last entry; an entry the client wrote before it must never count,
    // whatever shape the last one has.
    for xff in [
        "127.0.0.1, 203.0.113.9:5555",
        "127.0.0.1, unknown",
        "127.0.0.1, [2001:db8::1]:443",
        "127.0.0.1, _hidden",
        "127.0.0.1,",
    ] {
        assert_eq!(metrics_status(&app, xff).await, 404, "{xff}");
    }
    // A loopback client with no header is the operator on the box.
    let local = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(local.status(), 200);
}

#[tokio::test]
async fn the_forwarded_address_keeps_its_port_off_and_garbage_is_unknown() {
    let app = TestApp::spawn_with(|c| c.server.behind_proxy = true).await;
    let mut sub = subscribe(&app).await;
    let key = app.create_key("trial", None).await;
    for (xff, want) in [
        ("198.51.100.7, 203.0.113.9:5555", "203.0.113.9"),
        ("198.51.100.7, [2001:db8::1]:443", "2001:db8::1"),
        ("198.51.100.7, unknown", "unknown"),
        // Bytes that are not text before the proxy's entry leave the proxy's entry readable;
        // in it, the client is unknown.
        ("\u{ff}, 203.0.113.9", "203.0.113.9"),
        ("198.51.100.7, \u{ff}", "unknown"),
    ] {
        // `\u{ff}` stands for the raw byte 0xff (a header value is bytes, not text).
        let raw: Vec<u8> = xff
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect();
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
            .header(
                "x-forwarded-for",
                reqwest::header::HeaderValue::from_bytes(&raw).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ip = next_started_client_ip(&mut sub).await;
        assert_eq!(ip.as_deref(), Some(want), "{xff}");
    }
}

async fn subscribe(app: &TestApp) -> modelrelay::activity::client::Client {
    let mut sub = modelrelay::activity::client::Client::connect(&app.socket)
        .await
        .unwrap();
    sub.send(&modelrelay::activity::protocol::Request::Subscribe)
        .await
        .unwrap();
    let _ = sub.recv().await.unwrap();
    sub
}

async fn next_started_client_ip(sub: &mut modelrelay::activity::client::Client) -> Option<String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let modelrelay::activity::protocol::Response::Event {
            event: modelrelay::activity::ActivityEvent::RequestStarted { client_ip, .. },
        } = msg
        {
            return client_ip;
        }
    }
}

/// A hostile upstream on loopback: every request is answered by `answer` with the request's
/// `Authorization` header in hand.
async fn hostile_upstream(answer: fn(String) -> axum::response::Response) -> String {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        answer(auth)
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_upstream_echoing_the_operators_key_never_shows_it_to_the_customer() {
    use axum::response::IntoResponse;
    for answer in [
        // Plain text echo of the request.
        (|auth: String| {
            (
                axum::http::StatusCode::BAD_REQUEST,
                format!("Bad request\r\nAuthorization: {auth}\r\n"),
            )
                .into_response()
        }) as fn(String) -> axum::response::Response,
        // DeepSeek's JSON shape, with the key inside the message.
        |auth: String| {
            (
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                [("content-type", "application/json")],
                serde_json::json!({"error": {"message": format!("rejected {auth}"),
                    "type": "invalid_request_error"}})
                .to_string(),
            )
                .into_response()
        },
    ] {
        let upstream = hostile_upstream(answer).await;
        let app = TestApp::spawn_with(move |c| c.upstream.base_url = upstream.clone()).await;
        let key = app.create_key("trial", None).await;
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "hi"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(!text.contains(SIM_KEY), "{text}");
        assert!(!text.contains("simulated-test"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // DeepSeek's own refusal is passed on as the request's; a plain-text 400 is not
        // DeepSeek's (a proxy in the way): the account's failure, a 502.
        let code = match status {
            400 | 422 => "invalid_request",
            502 => "upstream_error",
            other => panic!("{other}: {v}"),
        };
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() <= 300, "{v}");
    }
}

/// Read from `s` until the server closes it (EOF or reset); false if it is still open at
/// `until`. Whatever the server sent before closing (an error answer) is ignored.
async fn closed_by(s: &mut tokio::net::TcpStream, until: tokio::time::Instant) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Short timers, so that the test does not wait a minute.
fn short_timers(c: &mut modelrelay::config::Config) {
    c.server.header_timeout_secs = 1;
    c.server.body_timeout_secs = 1;
    c.server.idle_timeout_secs = 1;
}

#[tokio::test]
async fn stalled_connections_are_closed_while_requests_keep_being_served() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(short_timers).await;
    let key = app.create_key("trial", None).await;
    // The stalled bodies use a key of their own: they pass its rate limit before stalling (the
    // first 30; the rest are refused at once), and must not use up the other key's.
    let staller = app.create_key("trial", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match i % 3 {
            // Nothing at all.
            0 => {}
            // Half a header line.
            1 => s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthor").await.unwrap(),
            // Whole headers, a tenth of the body.
            _ => s
                .write_all(
                    format!(
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {staller}\r\n\
                         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
                    )
                    .as_bytes(),
                )
                .await
                .unwrap(),
        }
        stalled.push(s);
    }
    // Normal requests are served meanwhile.
    for _ in 0..5 {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Every stalled connection is closed by the server (1 s timers, checked every second).
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut open = 0;
    for s in &mut stalled {
        if !closed_by(s, until).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 300 stalled connections still open");
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An HTTP/1.1 `GET /v1/models` with `key`, kept alive; the answer read whole (its length
/// from `Content-Length`). Returns the status.
async fn keep_alive_get(s: &mut tokio::net::TcpStream, key: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a length");
            if got.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// An idle HTTP/1.1 connection is kept alive past the header timeout (a reverse proxy's pool
/// reuses it: closed after the header timeout, as hyper's header timer did, a request Caddy
/// sent on it just as it closed was an empty 502; found by an independent check), while a
/// request's head begun on it must still be whole within the header timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_a_slow_head_does_not() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(short_timers).await;
    let key = app.create_key("trial", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(keep_alive_get(&mut s, &key).await, 200);
    // Idle for three header timeouts (and three idle timeouts: the keep-alive is longer).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(keep_alive_get(&mut s, &key).await, 200);
    // Half a head, then nothing: closed within the header timeout (looked at every second).
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthor")
        .await
        .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    assert!(
        closed_by(&mut s, until).await,
        "a slow head kept its connection"
    );
}

#[tokio::test]
async fn a_slow_stream_is_not_cut_by_the_connection_timers() {
    let app = TestApp::spawn_with(short_timers).await;
    let key = app.create_key("trial", None).await;
    // The model "thinks" for 3 s before its first token, then 1.5 s between tokens: far past
    // every 1 s connection timer, and still a request in progress.
    let mut b = body(
        "deepseek-v4-flash",
        "hi [[sim reply=3 first_delay_ms=3000 delay_ms=1500]]",
    );
    b["stream"] = true.into();
    let resp = app.chat(&key, &b).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn over_the_connection_cap_new_clients_wait_and_those_in_progress_go_on() {
    let app = TestApp::spawn_with(|c| {
        short_timers(c);
        c.server.max_connections = 10;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // A stream in progress takes one slot…
    let mut b = body("deepseek-v4-flash", "hi [[sim reply=4 delay_ms=500]]");
    b["stream"] = true.into();
    let stream = app.chat(&key, &b).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    // …silent clients the other nine, and five more wait in the backlog.
    let mut silent = Vec::new();
    for _ in 0..14 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A new client is served once the silent ones time out, not refused.
    let fresh = reqwest::Client::new();
    let resp = fresh
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&key)
        .json(&body("deepseek-v4-flash", "hi [[sim reply=1]]"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = stream.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn every_answer_says_nosniff_and_https_sites_ask_for_hsts() {
    let app = TestApp::spawn().await;
    for path in ["/v1/models", "/v1/nope", "/healthz", "/", "/api/usage"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
        // Plain HTTP: no HSTS (it would be ignored, and wrong for a local demo).
        assert!(
            resp.headers().get("strict-transport-security").is_none(),
            "{path}"
        );
    }
    let tls = TestApp::spawn_with(|c| c.server.public_url = "https://shop.example".into()).await;
    for path in ["/v1/models", "/healthz", "/", "/pricing"] {
        let resp = tls
            .http
            .get(format!("{}{path}", tls.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "{path}"
        );
    }
}

/// An upstream whose every answer reports `usage` as given (non-stream).
fn usage_upstream(
    usage: serde_json::Value,
) -> impl Fn(String) -> axum::response::Response + Clone + Send + Sync + 'static {
    move |_auth: String| {
        use axum::response::IntoResponse;
        (
            [("content-type", "application/json")],
            serde_json::json!({"id": "x", "object": "chat.completion", "model": "deepseek-v4-flash",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop"}],
                "usage": usage.clone()})
            .to_string(),
        )
            .into_response()
    }
}

/// Like [`hostile_upstream`], for a closure.
async fn upstream_with(
    answer: impl Fn(String) -> axum::response::Response + Clone + Send + Sync + 'static,
) -> String {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let answer = answer.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            answer(auth)
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn absurd_token_counts_are_capped_and_nothing_overflows() {
    let max = u64::MAX;
    let upstream = upstream_with(usage_upstream(serde_json::json!({
        "prompt_tokens": max, "completion_tokens": max, "total_tokens": max,
        "prompt_cache_hit_tokens": max, "prompt_cache_miss_tokens": max,
        "completion_tokens_details": {"reasoning_tokens": max}})))
    .await;
    let app = TestApp::spawn_with(move |c| c.upstream.base_url = upstream.clone()).await;
    let key = app.create_key("trial", None).await;
    let before = app.key_state(&key).balance();
    let mut b = body("deepseek-v4-flash", "hi");
    b["max_tokens"] = 100.into();
    for _ in 0..3 {
        let resp = app.chat(&key, &b).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let row = app.wait_ledger_row(&rid).await;
        assert_eq!(row.measured.as_str(), "clamped");
        assert_eq!(row.completion_tokens, 100, "capped at max_tokens");
        assert!(row.prompt_tokens < 1 << 40, "{}", row.prompt_tokens);
    }
    // The key paid at most its holds, and its usage still reads (sums do not overflow).
    let after = app.key_state(&key).balance();
    assert!(after.spent <= before.budget);
    let usage = app.get(&key, "/api/usage").send().await.unwrap();
    assert_eq!(usage.status(), 200);
    let dash = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(dash.status(), 200);
    let text = dash.text().await.unwrap();
    assert!(
        !text.contains("18446744073709551615"),
        "a counter took upstream's figure"
    );
}

/// Counts each within the hold's bounds whose price is not (a prompt of 1 000 tokens reported
/// for a body of a few dozen bytes): the charge is capped at the hold, and the row says
/// `clamped`, so that its counts pricing above its cost is explained.
#[tokio::test]
async fn a_charge_capped_at_the_hold_is_marked_clamped() {
    let upstream = upstream_with(usage_upstream(serde_json::json!({
        "prompt_tokens": 1000, "completion_tokens": 7, "total_tokens": 1007,
        "prompt_cache_hit_tokens": 333, "prompt_cache_miss_tokens": 667})))
    .await;
    let app = TestApp::spawn_with(move |c| c.upstream.base_url = upstream.clone()).await;
    let key = app.create_key("trial", None).await;
    let mut b = body("deepseek-v4-flash", "hi");
    b["max_tokens"] = 10.into();
    let resp = app.chat(&key, &b).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let row = app.wait_ledger_row(&request_id(&resp)).await;
    assert_eq!(row.measured.as_str(), "clamped", "{row:?}");
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (333, 667, 7)
    );
    let prices = match row.period {
        modelrelay::pricing::PricePeriod::Peak => crate::billing::FLASH_PEAK,
        modelrelay::pricing::PricePeriod::OffPeak => crate::billing::FLASH_OFF_PEAK,
    };
    let full = crate::billing::cost(333, 667, 7, prices);
    assert!(row.cost.nanos() < full, "{} < {full}", row.cost.nanos());
    assert_eq!(app.key_state(&key).balance().spent, row.cost);
}

#[tokio::test]
async fn usage_sums_survive_rows_stored_before_the_cap() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    let rid = request_id(&resp);
    app.wait_ledger_row(&rid).await;
    // Two rows as an older version stored them: counts at i64::MAX.
    let db = app.db();
    for n in 0..2 {
        db.execute(
            "INSERT INTO usage (request_id, key_id, model, stream, period, prompt_tokens,
                 cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens,
                 cost_nanos, measured, status, finish, latency_ms, ttft_ms, created_at)
             SELECT ?1, key_id, model, stream, period, ?2, ?2, ?2, ?2, ?2, 0, measured, status,
                 finish, latency_ms, ttft_ms, created_at FROM usage WHERE request_id = ?3",
            rusqlite::params![format!("req_old{n}"), i64::MAX, rid],
        )
        .unwrap();
    }
    let usage = app.get(&key, "/api/usage").send().await.unwrap();
    assert_eq!(usage.status(), 200, "{}", usage.text().await.unwrap());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whatever_the_balance() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024 * 1024).await;
    let poor = app.create_key("trial", Some("0.0001")).await;
    let rich = app.create_key("trial", None).await;
    let big = body("deepseek-v4-flash", &"x".repeat(1_200_000));
    for key in [&poor, &rich] {
        let resp = app.chat(key, &big).send().await.unwrap();
        assert_eq!(resp.status(), 413);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
    }
    // Without a declared length (chunked) too.
    let chunks = futures_util::stream::iter(
        (0..12).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 100_000]))),
    );
    let resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&poor)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(app.sim.requests().len(), 0);
}

/// An upstream that streams two ordinary chunks, then one event of `size` bytes of data.
fn huge_event_upstream(
    size: usize,
) -> impl Fn(String) -> axum::response::Response + Clone + Send + Sync + 'static {
    move |_auth: String| {
        use axum::response::IntoResponse;
        let chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"content": text}}]})
            )
        };
        let mut body = chunk("Hel") + &chunk("lo");
        body.push_str("data: ");
        body.push_str(&"y".repeat(size));
        body.push_str("\n\n");
        ([("content-type", "text/event-stream")], body).into_response()
    }
}

#[tokio::test]
async fn an_event_over_the_cap_cuts_the_stream_billed_for_what_was_relayed() {
    let upstream = upstream_with(huge_event_upstream(20 * 1024 * 1024)).await;
    // The smallest cap allowed: the first read from upstream then holds the two small chunks
    // and already more than the cap of the big event, the case where the chunks were once
    // lost (the error was given before the events decoded in the same read).
    let app = TestApp::spawn_with(move |c| {
        c.upstream.base_url = upstream.clone();
        c.upstream.max_event_bytes = 1024;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let mut b = body("deepseek-v4-flash", "hi");
    b["stream"] = true.into();
    let started = std::time::Instant::now();
    let resp = app.chat(&key, &b).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let events = read_stream(resp).await;
    let last = events.last().unwrap();
    assert!(last.contains("upstream_error"), "{events:?}");
    let chunks = data_chunks(&events);
    assert_eq!(
        text_deltas(&chunks),
        2,
        "the two chunks before the big event were relayed"
    );
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.finish.as_str(), "upstream_error");
    assert_eq!(row.measured.as_str(), "estimated");
    assert_eq!(row.completion_tokens, 2);
    assert!(row.cost.nanos() > 0);
    // Cut as it arrived, not after buffering 20 MB: generous bound for a debug build.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_lone_cr_in_a_comment_cannot_smuggle_an_unrewritten_event() {
    let upstream = upstream_with(|_auth: String| {
        use axum::response::IntoResponse;
        let chunk = |model: &str, text: &str| {
            serde_json::json!({"id": "x", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            .to_string()
        };
        let last = serde_json::json!({"id": "x", "object": "chat.completion.chunk",
            "model": "upstream-name", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3}});
        let body = format!(
            "data: {}\n\n: ping\rdata: {}\n\ndata: {}\n\ndata: {last}\n\ndata: [DONE]\n\n",
            chunk("upstream-name", "Hel"),
            chunk("upstream-name", "evil"),
            chunk("upstream-name", "lo"),
        );
        ([("content-type", "text/event-stream")], body).into_response()
    })
    .await;
    let app = TestApp::spawn_with(move |c| c.upstream.base_url = upstream.clone()).await;
    let key = app.create_key("trial", None).await;
    let mut b = body("deepseek-v4-flash", "hi");
    b["stream"] = true.into();
    let resp = app.chat(&key, &b).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let raw = resp.text().await.unwrap();
    assert!(
        !raw.contains('\r'),
        "bytes the relay never parsed reached the client: {raw:?}"
    );
    // Parse as a client must (CR, LF and CRLF all end a line): every event was rewritten.
    let lines: Vec<&str> = raw.split(['\r', '\n']).collect();
    let data: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.len(), 5, "{raw}");
    for d in &data[..4] {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["model"], "deepseek-v4-flash", "{d}");
    }
    assert_eq!(data[4], "[DONE]");
}

#[tokio::test]
async fn the_database_and_its_companions_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(|c| {
        c.server.data_dir = c.server.data_dir.join("state");
        c.server.secret_file = None;
    })
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    app.wait_ledger_row(&request_id(&resp)).await;
    let dir = app.dir.path().join("state");
    let backup = app.dir.path().join("copy.db");
    let answer = app
        .admin(modelrelay::activity::protocol::Request::Backup {
            path: backup.clone(),
        })
        .await;
    assert!(
        matches!(
            answer,
            modelrelay::activity::protocol::Response::BackedUp { .. }
        ),
        "{answer:?}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data dir");
    for name in [
        "modelrelay.db",
        "modelrelay.db-wal",
        "modelrelay.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&backup), 0o600, "backup");
}

#[tokio::test]
async fn a_refusal_before_the_body_was_read_says_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024).await;
    let key = app.create_key("trial", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = "x".repeat(4096);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // A request whose body was read keeps its connection alive.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let ok = serde_json::to_string(&body_of("hi [[sim reply=1]]")).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{ok}",
        ok.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
}

fn body_of(text: &str) -> serde_json::Value {
    body("deepseek-v4-flash", text)
}

/// A dual-stack listener (`listen = "[::]:…"`) sees an IPv4 peer as `::ffff:127.0.0.1`: that is
/// still the local proxy, so its `X-Forwarded-For` names the client, and a local scraper gets
/// `/metrics`.
#[tokio::test]
async fn an_ipv4_proxy_on_a_dual_stack_listener_is_local() {
    let sim = modelrelay::upstream::simulated::SimulatedDeepSeek::start(
        modelrelay::upstream::simulated::SimOptions {
            api_key: SIM_KEY.into(),
            ..Default::default()
        },
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path(), &sim);
    c.server.behind_proxy = true;
    let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("no IPv6 on this machine: nothing to check");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let socket = c.admin_socket();
    let daemon = modelrelay::app::Daemon::start(c, listener).await.unwrap();
    let app = TestApp {
        daemon: Some(daemon),
        sim,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        socket,
        db: dir.path().join("modelrelay.db"),
        dir,
        paypal: None,
    };
    let local = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200, "the operator on the box");
    let mut sub = subscribe(&app).await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        next_started_client_ip(&mut sub).await.as_deref(),
        Some("203.0.113.9")
    );
}

/// Most of a large body sent at once, then silence: the body's average-rate allowance (a
/// second per KiB received) does not keep the connection, a gap past the body timer ends it.
#[tokio::test]
async fn a_body_that_goes_quiet_after_a_burst_is_cut_at_the_body_timer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(short_timers).await;
    let key = app.create_key("pro", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // 190 000 bytes earned 185 s at an average rate; the stretch after them is what counts.
    s.write_all(&vec![b' '; 190_000]).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    assert!(
        closed_by(&mut s, until).await,
        "still open 5 s after going quiet"
    );
    // The same burst, then a byte every 300 ms: far below the rate, cut as well.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; 190_000]).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(6) {
        if s.write_all(b" ").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 1024];
        // Anything read (the 408/400 answer) or the close ends the body.
        if tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_ok()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickle after a burst kept the body open 6 s");
}

/// An HTTP/2 connection kept busy with PING frames (a keep-alive that no request needs) is
/// still idle: closed at the idle timer. Before, every PING counted as traffic, and a client
/// with no key could hold every connection slot that way.
#[tokio::test]
async fn http2_pings_do_not_keep_an_idle_connection_open() {
    use crate::hardening_stalls::{frame, h2_get, pinging};
    let app = TestApp::spawn_with(short_timers).await;
    // One request, so the connection is past its "no request yet" timer: GET /healthz; then a
    // PING every 300 ms for up to 6 s (the idle timer is 1 s, looked at every second).
    let mut hello = frame(4, 0, 0, &[]);
    hello.extend(h2_get(1, "/healthz"));
    let got = pinging(&app, &hello, 20)
        .await
        .expect("closed within 6 s of PINGs with nothing in progress");
    assert!(!got.is_empty(), "answered, then closed");
}

/// A body that stops arriving is told so (it was "could not be read"), on both dialects and
/// on `count_tokens` (which answered 413); a body in a content coding the gateway does not
/// take is refused, not read (a gzipped body was "not valid JSON", and a plain one labelled
/// `br` went through as if unlabelled; both found by an independent check).
#[tokio::test]
async fn a_stalled_or_encoded_body_is_refused_with_a_clear_message() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(short_timers).await;
    let key = app.create_key("trial", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("did not arrive in time"),
            "{path}: {answer}"
        );
    }
    let json = serde_json::to_vec(&body("deepseek-v4-flash", "hi [[sim reply=2]]")).unwrap();
    for coding in ["gzip", "br", "deflate"] {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "unused"))
            .header("content-encoding", coding)
            .body(json.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{coding}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("uncompressed"),
            "{v}"
        );
    }
    assert!(app.sim.requests().is_empty(), "nothing reached upstream");
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
        .header("content-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A start whose secret file is gone while the database holds keys sealed with it refuses,
/// naming the file and what to do: it made a new secret silently, keys sold after a restore
/// that forgot the file were sealed with that one, and the old one put back would not open
/// them (found by an independent check). The old secret put back, it starts.
#[tokio::test]
async fn a_start_without_the_secret_its_keys_were_sealed_with_refuses() {
    let mut app = TestApp::spawn_with(|c| c.server.secret_file = None).await;
    app.create_key("trial", None).await;
    app.shutdown().await;
    let secret = app.dir.path().join("secret.key");
    let kept = std::fs::read(&secret).unwrap();
    std::fs::remove_file(&secret).unwrap();
    let config = || {
        let mut c = test_config(app.dir.path(), &app.sim);
        c.server.secret_file = None;
        c
    };
    let err = match modelrelay::state::AppState::open(config(), false).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without its secret"),
    };
    assert!(
        err.contains("secret.key") && err.contains("is missing") && err.contains("1 key sealed"),
        "{err}"
    );
    assert!(!secret.exists(), "no new secret made");
    assert!(!err.contains("server.secret_file"), "{err}");
    std::fs::write(&secret, &kept).unwrap();
    // A mistyped `server.secret_file` beside the data directory's own secret: the message
    // points at the one that is there, not only at making a new one.
    let typo = app.dir.path().join("secret-key");
    let mut c = config();
    c.server.secret_file = Some(typo.clone());
    let err = match modelrelay::state::AppState::open(c, false).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without its secret"),
    };
    assert!(
        err.contains(&format!(
            "if it is the one at {} (the data directory's own",
            secret.display()
        )) && err.contains("set `server.secret_file` to that path or remove the setting"),
        "{err}"
    );
    assert!(!typo.exists(), "no new secret made");
    let state = modelrelay::state::AppState::open(config(), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.keys.len(), 1);
}

/// A data directory that is a file is refused as such (it was warned about as a directory open
/// to every user, then failed with "Not a directory"; found by an independent check).
#[tokio::test]
async fn a_data_dir_that_is_a_file_is_refused_as_such() {
    let app = TestApp::spawn().await;
    let file = app.dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut c = test_config(app.dir.path(), &app.sim);
    c.server.data_dir = file;
    let err = match modelrelay::state::AppState::open(c, false).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started"),
    };
    assert!(
        err.contains("not-a-dir") && err.contains("it is a file, not a directory"),
        "{err}"
    );
}

/// A request refused before its body is read (a bad key, no money, too large, an unknown route)
/// still has its body read and thrown away while the client sends it, as a reverse proxy does —
/// it writes the whole body before it reads the answer. Dropped unread, the body made the
/// connection close under the client's writes: the proxy's write failed (broken pipe) and it
/// answered 502 instead of the 401, 402, 413 or 404, which SDKs and Claude Code retry (found by
/// two independent checks through nginx and Caddy).
#[tokio::test]
async fn a_refused_request_is_answered_after_the_client_sends_its_whole_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let poor = app.create_key("trial", Some("0.0000001")).await;
    let rich = app.create_key("pro", None).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Bodies near the body limit (8 MiB): more than loopback's buffers hold unread.
    let (under, over) = (8 * 1024 * 1024 - 4096, 12 * 1024 * 1024);
    let nobody = "sk-gateway-nosuchkey";
    for (path, key, n, status, code) in [
        (
            "/v1/chat/completions",
            nobody,
            under,
            "401",
            "invalid_api_key",
        ),
        (
            "/v1/chat/completions",
            &poor,
            under,
            "402",
            "insufficient_budget",
        ),
        (
            "/v1/chat/completions",
            &rich,
            over,
            "413",
            "request_too_large",
        ),
        (
            "/v1/messages/count_tokens",
            nobody,
            under,
            "401",
            "authentication_error",
        ),
        ("/v1/embeddings", &rich, under, "404", "not_found"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let body = vec![b' '; n];
        let sent = tokio::time::timeout(Duration::from_secs(30), s.write_all(&body)).await;
        assert!(
            matches!(sent, Ok(Ok(()))),
            "the whole body could be sent ({path} {status}): {sent:?}"
        );
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
            .await
            .expect("the answer in time")
            .expect("read the answer, not a reset");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")) && text.contains(code),
            "{path}: {text}"
        );
    }
}

/// The usage look-ups by key (`GET /api/usage`, `GET /v1/dashboard/billing/usage`) share a
/// limit of their own at the key's RPM: each reads the key's ledger on the one read
/// connection, and unlimited, a busy key's look-ups held it for every other customer and
/// `/healthz` (found by an independent check). The key's requests are untouched by them, and
/// the balance from memory (`billing/subscription`) is not limited.
#[tokio::test]
async fn usage_look_ups_by_key_have_a_rate_limit_of_their_own() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.rpm = 2;
        }
    })
    .await;
    let key = app.create_key("trial", None).await;
    for path in ["/api/usage", "/v1/dashboard/billing/usage"] {
        let r = app.get(&key, path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/api/usage", "/v1/dashboard/billing/usage"] {
        let r = app.get(&key, path).send().await.unwrap();
        assert_eq!(r.status(), 429, "{path}");
        // The limit's own headers, as the API's 429s carry them, and a Retry-After of when
        // the next look-up is let through: at 2 a minute, within 30 s (not a flat minute).
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
        };
        let retry: u64 = header("retry-after").parse().unwrap();
        assert!((1..=30).contains(&retry), "{path}: retry-after {retry}");
        assert_eq!(header("x-ratelimit-limit-requests"), "2", "{path}");
        assert_eq!(header("x-ratelimit-remaining-requests"), "0", "{path}");
        assert!(
            header("x-ratelimit-reset-requests").ends_with('s'),
            "{path}"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{path}: {v}");
        assert_eq!(v["error"]["type"], "rate_limit_error", "{path}: {v}");
    }
    let r = app
        .get(&key, "/v1/dashboard/billing/subscription")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}
