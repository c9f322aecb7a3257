//! The test harness: a real daemon on 127.0.0.1:0 with a temp data dir, in front of a real
//! simulated DeepSeek on loopback, driven over real HTTP and the real admin socket.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use modelrelay::activity::client;
use modelrelay::activity::protocol::{Request, Response};
use modelrelay::app::Daemon;
use modelrelay::config::Config;
use modelrelay::keys::KeyState;
use modelrelay::keys::token::hash_key;
use modelrelay::money::Usd;
use modelrelay::paypal::simulated::{SimPaypalOptions, SimulatedPaypal};
use modelrelay::store::UsageRow;
use modelrelay::upstream::simulated::{SimOptions, SimulatedDeepSeek};
use serde_json::{Value, json};

/// The simulator's key, configured as the operator's upstream key.
pub const SIM_KEY: &str = "sk-simulated-test";

/// A running daemon and its simulated upstream.
pub struct TestApp {
    /// The daemon (None once shut down).
    pub daemon: Option<Daemon>,
    /// The simulated DeepSeek.
    pub sim: SimulatedDeepSeek,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// The admin socket.
    pub socket: PathBuf,
    /// The database file.
    pub db: PathBuf,
    /// Temp dir holding data (kept alive with the app).
    pub dir: tempfile::TempDir,
    /// The simulated PayPal, when started with [`TestApp::spawn_shop`].
    pub paypal: Option<SimulatedPaypal>,
}

/// The config every test starts from: temp paths, the simulator upstream, always off-peak.
pub fn test_config(dir: &std::path::Path, sim: &SimulatedDeepSeek) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".into();
    c.server.data_dir = dir.to_path_buf();
    c.server.admin_socket = Some(dir.join("admin.sock"));
    c.upstream.base_url = sim.base_url();
    c.upstream.api_key = SIM_KEY.into();
    c.upstream.idle_timeout_secs = 5;
    c.upstream.request_timeout_secs = 30;
    c.pricing.peak_hours_utc = vec![];
    c
}

impl TestApp {
    /// Daemon with the test config.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Daemon with the test config changed by `f`.
    pub async fn spawn_with(f: impl FnOnce(&mut Config)) -> TestApp {
        let sim = SimulatedDeepSeek::start(SimOptions {
            api_key: SIM_KEY.into(),
            ..SimOptions::default()
        })
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path(), &sim);
        f(&mut config);
        TestApp::start(config, sim, dir).await
    }

    /// Start a daemon on an existing data dir and simulator (restarts).
    pub async fn start(config: Config, sim: SimulatedDeepSeek, dir: tempfile::TempDir) -> TestApp {
        let socket = config.admin_socket();
        let db = config.server.data_dir.join("modelrelay.db");
        // A restart in the same test process can find the directory's lock still held for a
        // moment: another test forking a CLI child shares every descriptor until its `exec`
        // closes them (`flock` is let go only when the last one goes). Tried again briefly.
        let mut tries = 0;
        let daemon = loop {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            match Daemon::start(config.clone(), listener).await {
                Err(modelrelay::state::StartError::DataDirBusy(_)) if tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                started => break started.expect("daemon starts"),
            }
        };
        let base = format!("http://{}", daemon.http_addr);
        TestApp {
            daemon: Some(daemon),
            sim,
            base,
            http: reqwest::Client::new(),
            socket,
            db,
            dir,
            paypal: None,
        }
    }

    /// Daemon with a simulated PayPal configured through `paypal.api_base`, config changed by `f`.
    pub async fn spawn_shop_with(f: impl FnOnce(&mut Config)) -> TestApp {
        let pp_opts = SimPaypalOptions::default();
        let paypal = SimulatedPaypal::start(pp_opts.clone())
            .await
            .expect("simulated PayPal starts");
        let base = paypal.base_url();
        let mut app = TestApp::spawn_with(|c| {
            c.paypal.api_base = base;
            c.paypal.client_id = pp_opts.client_id;
            c.paypal.client_secret = pp_opts.client_secret;
            c.paypal.webhook_id = pp_opts.webhook_id;
            f(c);
        })
        .await;
        app.paypal = Some(paypal);
        app
    }

    /// Daemon with a simulated PayPal.
    pub async fn spawn_shop() -> TestApp {
        TestApp::spawn_shop_with(|_| {}).await
    }

    /// The simulated PayPal.
    pub fn pp(&self) -> &SimulatedPaypal {
        self.paypal.as_ref().expect("started with spawn_shop")
    }

    /// Mint a key over the admin socket; `budget` overrides the plan's (decimal USD).
    pub async fn create_key(&self, plan: &str, budget: Option<&str>) -> String {
        let resp = client::call(
            &self.socket,
            &Request::KeysCreate {
                plan: plan.into(),
                email: Some("buyer@example.com".into()),
                budget_usd: budget.map(|b| b.parse().expect("budget")),
                note: None,
            },
        )
        .await
        .expect("admin socket answers");
        match resp {
            Response::Created { api_key, .. } => api_key,
            other => panic!("key not created: {other:?}"),
        }
    }

    /// Send an admin command.
    pub async fn admin(&self, req: Request) -> Response {
        client::call(&self.socket, &req)
            .await
            .expect("admin socket answers")
    }

    /// `POST /v1/chat/completions` with a key and a JSON body.
    pub fn chat(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
    }

    /// `GET` a path with a key.
    pub fn get(&self, key: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    /// Put every upstream account back in service, as `modelrelay upstream enable` does: a
    /// 401/402/403 from DeepSeek disables the account that got it.
    pub fn enable_upstream(&self) {
        let up = &self.daemon.as_ref().expect("running").state.upstream;
        for a in up.pool().accounts.iter() {
            up.set_enabled(&a.name, true);
        }
    }

    /// The live state of a key (balances in memory).
    pub fn key_state(&self, key: &str) -> Arc<KeyState> {
        self.daemon
            .as_ref()
            .expect("running")
            .state
            .keys
            .by_hash(&hash_key(key))
            .expect("key exists")
    }

    /// Read the database directly (a separate connection, as an auditor would), once what the
    /// daemon queued so far is committed: a settled request's row is in the journal first and
    /// committed a few milliseconds behind its answer.
    pub fn db(&self) -> rusqlite::Connection {
        self.settle_ledger();
        rusqlite::Connection::open(&self.db).expect("open db")
    }

    /// Point an order at a PayPal order id the simulated PayPal never made, as if PayPal had
    /// forgotten it (a restarted demo, an old order) or were another PayPal than the one asked.
    pub fn unknown_at_paypal(&self, order_id: &str) {
        let sql = "UPDATE orders SET paypal_order_id = 'NOSUCHORDER00000' WHERE order_id = ?1";
        let changed = self.db().execute(sql, [order_id]).expect("update order");
        assert_eq!(changed, 1, "no order {order_id}");
    }

    /// Wait (blocking) until everything the running daemon queued so far is committed. The
    /// writer is a thread of its own, so blocking this test's runtime does not hold it up.
    pub fn settle_ledger(&self) {
        let Some(d) = &self.daemon else { return };
        let store = d.state.store.clone();
        let settled = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(store.settle())
        })
        .join()
        .expect("settle thread");
        if let Err(e) = settled {
            // A database that refuses writes (a test holding its lock): read what is there.
            eprintln!("ledger not settled: {e}");
        }
    }

    /// The ledger row of a request id.
    pub fn ledger_row(&self, request_id: &str) -> Option<UsageRow> {
        modelrelay::store::usage::by_request_id(&self.db(), request_id).expect("query")
    }

    /// Wait for a ledger row to appear (streams settle after their last byte was queued).
    pub async fn wait_ledger_row(&self, request_id: &str) -> UsageRow {
        // By the clock, and long: each look settles the ledger first, which a loaded machine
        // (the writer runs at nice 19) makes slow; a count of looks gave out early there.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) = self.ledger_row(request_id) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no ledger row for {request_id}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every ledger row of a key: (count, sum of costs).
    pub fn ledger_totals(&self, key: &str) -> (u64, Usd) {
        let id = self.key_state(key).id.clone();
        modelrelay::store::usage::totals(&self.db(), &id).expect("query")
    }

    /// Shut the daemon down cleanly.
    pub async fn shutdown(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
    }
}

/// A minimal chat body; `text` may carry `[[sim …]]` directives.
pub fn body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Parse an SSE body into its `data:` payloads and comments, in order.
pub fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim().to_string())
        .collect()
}

/// The `x-request-id` of a response.
pub fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("x-request-id on every response")
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Expected cost in nano-USD by SPEC §4 (independent of the crate's own function).
pub fn expected_cost(hit: u64, miss: u64, out: u64, p_hit: i64, p_miss: i64, p_out: i64) -> i64 {
    let sum =
        hit as i128 * p_hit as i128 + miss as i128 * p_miss as i128 + out as i128 * p_out as i128;
    ((sum + 999_999) / 1_000_000) as i64
}

/// The `x-request-id` of a raw HTTP/1.1 answer read off a socket.
pub fn raw_request_id(answer: &str) -> String {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .trim()
        .to_string()
}

/// Read a raw chunked answer off `conn` up to its last chunk (the connection is kept alive),
/// waiting `pause` after each read; fails if it is cut or stops for 20 s.
pub async fn read_to_last_chunk(
    conn: &mut tokio::net::TcpStream,
    pause: std::time::Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("the answer goes on")
            .expect("read");
        assert!(n > 0, "cut after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(pause).await;
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Read a whole streamed answer through `bytes_stream()`; fails instead of hanging.
pub async fn read_stream(resp: reqwest::Response) -> Vec<String> {
    let mut stream = resp.bytes_stream();
    let mut raw = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream ends");
        match next {
            Some(chunk) => raw.extend_from_slice(&chunk.expect("chunk")),
            None => break,
        }
    }
    sse_events(&String::from_utf8(raw).expect("UTF-8"))
}

/// The JSON `data:` payloads of a stream (not `[DONE]`).
pub fn data_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("data is JSON"))
        .collect()
}

/// Deltas carrying text (content or reasoning), i.e. tokens in the simulator.
pub fn text_deltas(chunks: &[Value]) -> usize {
    chunks
        .iter()
        .filter(|c| {
            let d = &c["choices"][0]["delta"];
            ["content", "reasoning_content"]
                .iter()
                .any(|k| d[*k].as_str().is_some_and(|s| !s.is_empty()))
        })
        .count()
}

/// A chat request sent by a client that will not read its answer: a raw connection to `base`
/// with a 4 KiB receive buffer, so the gateway's writes soon block on it. The caller reads (or
/// not) from the returned connection.
pub async fn unread_chat(base: &str, key: &str, body: &Value) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_string(body).expect("a body");
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let mut conn = socket.connect(addr).await.expect("connect");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.expect("the request");
    conn
}
