//! The admin socket's wire protocol spoken by hand: a subscription streams the daemon's state
//! and then its events in order; bad lines get an error answer; the socket is private.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure with its message"
)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;

use crate::cli::FLASH;
use crate::common::{TestApp, body, request_id};

/// The next JSON line from the socket (a stuck daemon fails the test instead of hanging it).
async fn next_line(lines: &mut Lines<BufReader<UnixStream>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the daemon sends a line")
        .expect("readable")
        .expect("the daemon keeps the subscription open");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Subscribe on a new connection and check the greeting and the daemon's state as it stands
/// (nothing yet); returns the subscription's lines.
async fn subscribe(app: &TestApp) -> Lines<BufReader<UnixStream>> {
    let stream = UnixStream::connect(&app.socket).await.expect("connect");
    let mut lines = BufReader::new(stream).lines();
    let greeting = command(&mut lines, "{\"cmd\":\"subscribe\"}\n").await;
    assert_eq!(greeting, json!({"type": "subscribed"}));
    // Then the daemon's state as it stands (nothing yet), before any event.
    let snap = next_line(&mut lines).await;
    assert_eq!(snap["type"], "snapshot", "{snap:#}");
    let s = &snap["snapshot"];
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{snap:#}");
    for empty in [
        "in_flight",
        "finished",
        "keys",
        "orders",
        "rate_limited",
        "refusals",
    ] {
        assert_eq!(s[empty], json!([]), "{empty}: {snap:#}");
    }
    assert_eq!(
        s["today"],
        json!({"requests": 0, "spend_usd": "0.00", "revenue_usd": "0.00"}),
        "{snap:#}"
    );
    lines
}

/// Send one command line and read its answer.
async fn command(conn: &mut Lines<BufReader<UnixStream>>, line: &str) -> Value {
    conn.get_mut()
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .expect("send");
    next_line(conn).await
}

/// Events until the key's revocation; other kinds (progress…) may come in between.
async fn events_until_revoked(lines: &mut Lines<BufReader<UnixStream>>) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..200 {
        let line = next_line(lines).await;
        assert_eq!(
            line["type"], "event",
            "only events after subscribing: {line:#}"
        );
        let ev = line["event"].clone();
        let done = ev["kind"] == "key_revoked";
        seen.push(ev);
        if done {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn admin_socket_subscription_streams_events() {
    let app = TestApp::spawn().await;
    let mut lines = subscribe(&app).await;

    // A second connection does the work, speaking the same JSON lines by hand.
    let admin = UnixStream::connect(&app.socket).await.expect("connect");
    let mut admin = BufReader::new(admin).lines();
    let created = command(
        &mut admin,
        "{\"cmd\":\"keys_create\",\"plan\":\"trial\",\"email\":\"x@y.z\"}\n",
    )
    .await;
    assert_eq!(created["type"], "created", "{created:#}");
    let key = created["api_key"].as_str().expect("api_key").to_string();
    let key_id = created["key"]["id"].as_str().expect("id").to_string();

    let resp = app
        .chat(&key, &body(FLASH, "hi [[sim reply=3 prompt=7]]"))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let _ = resp.bytes().await;
    app.wait_ledger_row(&rid).await;

    let revoke = format!("{{\"cmd\":\"keys_revoke\",\"key\":\"{key_id}\"}}\n");
    let revoked = command(&mut admin, &revoke).await;
    assert_eq!(revoked["type"], "key", "{revoked:#}");
    assert_eq!(revoked["key"]["status"], "revoked", "{revoked:#}");

    let seen = events_until_revoked(&mut lines).await;
    let kinds: Vec<&str> = seen.iter().filter_map(|e| e["kind"].as_str()).collect();
    let pos = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {kinds:?}"))
    };
    let (c, s, f, r) = (
        pos("key_created"),
        pos("request_started"),
        pos("request_finished"),
        pos("key_revoked"),
    );
    assert!(c < s && s < f && f < r, "events in order: {kinds:?}");

    let kc = &seen[c];
    assert_eq!(kc["key"]["id"], key_id.as_str(), "{kc:#}");
    assert_eq!(kc["key"]["plan"], "trial", "{kc:#}");
    assert_eq!(kc["key"]["budget_usd"], "1.00", "{kc:#}");
    assert!(
        !kc.to_string().contains(&key),
        "events never carry the full key"
    );

    let rs = &seen[s];
    assert_eq!(rs["request_id"], rid.as_str(), "{rs:#}");
    assert_eq!(rs["key_id"], key_id.as_str(), "{rs:#}");
    assert_eq!(rs["plan"], "trial", "{rs:#}");
    assert_eq!(rs["model"], FLASH, "{rs:#}");
    assert_eq!(rs["stream"], false, "{rs:#}");

    let rf = &seen[f];
    assert_eq!(rf["request_id"], rid.as_str(), "{rf:#}");
    assert_eq!(rf["key_id"], key_id.as_str(), "{rf:#}");
    assert_eq!(rf["status"], 200, "{rf:#}");
    assert_eq!(rf["finish"], "complete", "{rf:#}");
    assert_eq!(rf["measured"], "provider", "{rf:#}");
    assert_eq!(rf["prompt_tokens"], 7, "{rf:#}");
    assert_eq!(rf["completion_tokens"], 3, "{rf:#}");
    // 7 × $0.15/M + 3 × $0.60/M = 2850 nano-USD, as a decimal string.
    assert_eq!(rf["cost_usd"], "0.00000285", "{rf:#}");

    assert_eq!(seen[r]["key_id"], key_id.as_str(), "{:#}", seen[r]);
}

#[tokio::test]
async fn admin_socket_answers_bad_lines_and_is_private() {
    let app = TestApp::spawn().await;
    let mode = std::fs::metadata(&app.socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);

    let stream = UnixStream::connect(&app.socket).await.expect("connect");
    let mut lines = BufReader::new(stream).lines();
    for (line, want) in [
        ("{\"cmd\":\"ping\"}\n", "pong"),
        ("this is not json\n", "error"),
        ("{\"cmd\":\"no_such_command\"}\n", "error"),
        ("{\"cmd\":\"keys_list\"}\n", "keys"),
    ] {
        lines
            .get_mut()
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .expect("send");
        let v = next_line(&mut lines).await;
        assert_eq!(v["type"], want, "answer to {line:?}: {v:#}");
        if want == "error" {
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{v:#}"
            );
        }
    }
}
