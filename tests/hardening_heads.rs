//! Request heads: how much of one an HTTP/1 connection holds before it answers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestApp;

/// Send `head` (a request line and headers, the blank line included) on a new connection and
/// read what comes back until the server closes it or 5 s pass.
async fn answer_to(app: &TestApp, head: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The server may answer and close before the whole head is in: a failed write is fine.
    let _ = s.write_all(head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

/// A head over 32 KiB is refused with 431 (hyper's default let each connection buffer ~408
/// KiB of one that never ended: 1 000 such connections held 400 MiB), and one under it is
/// served; so is a request line over the cap (431, or 414 when hyper sees the URI first).
#[tokio::test]
async fn a_request_head_over_32_kib_is_refused_and_one_under_it_is_served() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let head = |filler: usize| {
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Connection: close\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(filler)
        )
    };
    let served = answer_to(&app, head(24 * 1024).as_bytes()).await;
    assert!(served.starts_with("http/1.1 200"), "{served}");
    assert!(served.contains("deepseek-v4-flash"), "{served}");
    let refused = answer_to(&app, head(40 * 1024).as_bytes()).await;
    assert!(refused.starts_with("http/1.1 431"), "{refused}");
    // Several headers adding up past the cap, none long alone.
    let many: String = (0..60)
        .map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(700)))
        .collect();
    let split = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let refused = answer_to(&app, split.as_bytes()).await;
    assert!(refused.starts_with("http/1.1 431"), "{refused}");
    let line = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "c".repeat(40 * 1024)
    );
    let refused = answer_to(&app, line.as_bytes()).await;
    assert!(
        refused.starts_with("http/1.1 431") || refused.starts_with("http/1.1 414"),
        "{refused}"
    );
    // The server goes on serving.
    let resp = app.get(&key, "/v1/models").send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
