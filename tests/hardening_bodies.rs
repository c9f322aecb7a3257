//! Request bodies that trickle in: what they hold while being read is bounded per key and in
//! all (an independent check grew the daemon from 22 to 752 MB in 200 s with one spent Trial
//! key's `count_tokens` uploads, nothing charged), counted as it arrives, and a revoked key's
//! bodies stop being read.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestApp;

/// The body limit of these tests: a key's bodies being read may hold four such bodies at
/// once, all keys' together thirty-two.
const LIMIT: usize = 64 * 1024;

/// A connection that sent a request's head and `first` bytes of its body, and waits.
struct Held(TcpStream);

/// Begin `path` with `key`: a declared body of `declared` bytes (chunked when `None`), of which
/// `first` are sent.
async fn begin(
    app: &TestApp,
    path: &str,
    key: &str,
    declared: Option<usize>,
    first: usize,
) -> Held {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let framing = match declared {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\n{framing}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let data = vec![b' '; first];
    match declared {
        Some(_) => s.write_all(&data).await.unwrap(),
        // No chunk of none: that would end the body.
        None if first == 0 => {}
        None => {
            s.write_all(format!("{first:x}\r\n").as_bytes())
                .await
                .unwrap();
            s.write_all(&data).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
        }
    }
    Held(s)
}

impl Held {
    /// Send `n` more bytes of a declared body.
    async fn send(&mut self, n: usize) {
        self.0.write_all(&vec![b' '; n]).await.unwrap();
    }

    /// The status line and the JSON body of the answer the server sent (a refusal).
    async fn answer(mut self) -> (u16, Value, String) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match self.0.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&got);
                if let Some(at) = text.find("\r\n\r\n")
                    && serde_json::from_str::<Value>(&text[at + 4..]).is_ok()
                {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an answer");
        let text = String::from_utf8_lossy(&got).to_string();
        let status = text[9..12].parse().unwrap();
        let at = text.find("\r\n\r\n").unwrap();
        let body = serde_json::from_str(&text[at + 4..]).unwrap();
        (status, body, text[..at].to_ascii_lowercase())
    }
}

/// Wait until the server counts between `lo` and `hi` bytes of bodies being read (a body
/// is counted as the room it takes, which may be more than what arrived: up to its declared
/// length, or twice what arrived when it declared none).
async fn reading(app: &TestApp, lo: usize, hi: usize) {
    let bodies = &app.daemon.as_ref().unwrap().state.bodies;
    for _ in 0..400 {
        if (lo..=hi).contains(&bodies.in_all()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} bytes being read, not {lo}..={hi}", bodies.in_all());
}

/// `count_tokens` of `body`, sent whole: its answer (a 200).
async fn counted(app: &TestApp, key: &str, body: String) -> Value {
    let resp = app
        .http
        .post(format!("{}{COUNT}", app.base))
        .header("x-api-key", key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

const COUNT: &str = "/v1/messages/count_tokens";
const CHAT: &str = "/v1/chat/completions";
const KIB: usize = 1024;

/// A key whose bodies being read hold four of the largest size has the next one refused as
/// it arrives, on any route, with 429 `too_many_in_flight` and `Retry-After` (`count_tokens`,
/// free and taking no place in flight, included); bodies are counted as they arrive, with or
/// without a declared length (a declared one is not counted whole: it holds only what came);
/// what is read, or refused, is given back.
#[tokio::test]
async fn a_keys_bodies_being_read_hold_four_of_the_largest_at_most() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = LIMIT).await;
    let key = app.create_key("trial", None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(begin(&app, COUNT, &key, Some(63 * KIB), 62 * KIB).await);
    }
    reading(&app, 248 * KIB, 252 * KIB).await;
    // Declared but not sent counts nothing.
    let mut waiting = begin(&app, COUNT, &key, Some(LIMIT), 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    reading(&app, 248 * KIB, 252 * KIB).await;

    waiting.send(10 * KIB).await;
    let (status, body, head) = waiting.answer().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("reached 262144 bytes"), "{message}");
    assert!(head.contains("retry-after: 2"), "{head}");
    // The refused body's bytes were given back at once; the others still count.
    reading(&app, 248 * KIB, 252 * KIB).await;
    // The chat route shares the key's bound, in its shape; a chunked body is counted as its
    // pieces arrive.
    let (status, body, _) = begin(&app, CHAT, &key, None, 20 * KIB).await.answer().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_in_flight", "{body}");
    reading(&app, 248 * KIB, 252 * KIB).await;
    held.pop();
    reading(&app, 186 * KIB, 189 * KIB).await;
    let chunked = begin(&app, CHAT, &key, None, 40 * KIB).await;
    // Its room is up to twice what came (no declared length to stop at).
    reading(&app, 226 * KIB, 256 * KIB).await;
    drop((held, chunked));
    reading(&app, 0, 0).await;

    // With room again, the key's count is answered.
    let body = serde_json::json!({
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": "hello"}],
    });
    let answer = counted(&app, &key, body.to_string()).await;
    assert!(answer["input_tokens"].as_u64().unwrap() > 0);
}

/// A body sent in one-byte chunks is whole when it ends (its pieces copied into one buffer,
/// counted as the room that takes: kept as its pieces, each held hyper's read buffer, and one
/// Trial key took the daemon past 1 GB under its bound; found by a re-check).
#[tokio::test]
async fn a_body_of_one_byte_chunks_is_read_whole_and_counted_as_its_room() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = LIMIT).await;
    let key = app.create_key("trial", None).await;
    let text = "hello ".repeat(500);
    let json = serde_json::json!({
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": text}],
    })
    .to_string();
    let whole = counted(&app, &key, json.clone()).await;
    let mut held = begin(&app, COUNT, &key, None, 0).await;
    let (start, rest) = json.as_bytes().split_at(json.len() - 10);
    let chunked = |bytes: &[u8]| {
        let mut out = Vec::new();
        for b in bytes {
            out.extend_from_slice(b"1\r\n");
            out.push(*b);
            out.extend_from_slice(b"\r\n");
        }
        out
    };
    held.0.write_all(&chunked(start)).await.unwrap();
    reading(&app, start.len(), 2 * start.len()).await;
    held.0.write_all(&chunked(rest)).await.unwrap();
    held.0.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, body, _) = held.answer().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, whole);
    reading(&app, 0, 0).await;
}

/// All keys' bodies being read may hold thirty-two of the largest size: past that any body is
/// refused as it arrives with 503 `service_unavailable` and `Retry-After`, charged nothing,
/// and taken again once room is made.
#[tokio::test]
async fn all_keys_bodies_being_read_hold_thirty_two_of_the_largest_at_most() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = LIMIT).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let key = app.create_key("trial", None).await;
        for _ in 0..4 {
            held.push(begin(&app, COUNT, &key, Some(LIMIT), 63 * KIB).await);
        }
    }
    reading(&app, 32 * 63 * KIB, 32 * 64 * KIB).await;
    let other = app.create_key("starter", None).await;
    let (status, body, head) = begin(&app, CHAT, &other, Some(LIMIT), 33 * KIB)
        .await
        .answer()
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert!(head.contains("retry-after: 2"), "{head}");
    assert_eq!(app.sim.requests().len(), 0, "nothing reached DeepSeek");
    assert_eq!(app.key_state(&other).balance().spent.nanos(), 0);
    reading(&app, 32 * 63 * KIB, 32 * 64 * KIB).await;

    held.pop();
    reading(&app, 31 * 63 * KIB, 31 * 64 * KIB).await;
    let resp = app
        .chat(
            &other,
            &crate::common::body("deepseek-v4-flash", "hi [[sim reply=3]]"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(held);
    reading(&app, 0, 0).await;
}

/// A key revoked while its bodies arrive: each is refused (401) at its next piece and what it
/// held is given back — the revocation that ends a flood of trickled bodies ends them too
/// (they went on for hours at the body timer's rate; found by a re-check).
#[tokio::test]
async fn a_revoked_keys_bodies_stop_being_read_at_their_next_piece() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = LIMIT).await;
    let key = app.create_key("trial", None).await;
    let mut count = begin(&app, COUNT, &key, Some(LIMIT), 30 * KIB).await;
    let mut chat = begin(&app, CHAT, &key, Some(LIMIT), 30 * KIB).await;
    reading(&app, 60 * KIB, 2 * LIMIT).await;
    let id = app.key_state(&key).id.clone();
    app.admin(modelrelay::activity::protocol::Request::KeysRevoke { key: id })
        .await;
    count.send(KIB).await;
    chat.send(KIB).await;
    for held in [count, chat] {
        let (status, body, _) = held.answer().await;
        assert_eq!(status, 401, "{body}");
    }
    reading(&app, 0, 0).await;
}
