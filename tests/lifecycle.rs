//! The daemon's life cycle as systemd drives it: the real `modelrelay serve` binary as a child
//! process, stopped with SIGTERM (graceful drain, cut after `server.drain_secs` or on a second
//! signal, every request billed) or killed with SIGKILL under load and restarted on the same data
//! dir (every response a client fully received has its ledger row; balances equal budget minus
//! ledger). Each test runs its own simulated DeepSeek in the test process.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use modelrelay::money::Usd;
use modelrelay::upstream::simulated::{SimOptions, SimulatedDeepSeek};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{SIM_KEY, body, request_id};

const BIN: &str = env!("CARGO_BIN_EXE_modelrelay");

/// A generous bound on anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(60);

/// A simulated DeepSeek and a data dir with a config file pointing at it.
struct Setup {
    sim: SimulatedDeepSeek,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(drain_secs: u64) -> Setup {
        Setup::with_sync(drain_secs, "full").await
    }

    /// A setup whose daemon runs with `store.sync = sync`.
    async fn with_sync(drain_secs: u64, sync: &str) -> Setup {
        let sim = SimulatedDeepSeek::start(SimOptions {
            api_key: SIM_KEY.into(),
            ..SimOptions::default()
        })
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let setup = Setup { sim, dir };
        let toml = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = {data:?}
admin_socket = {socket:?}
drain_secs = {drain_secs}
log_level = "info"

[upstream]
base_url = {base:?}
api_key = {key:?}
idle_timeout_secs = 10
request_timeout_secs = 300

[pricing]
peak_hours_utc = []

[store]
sync = {sync:?}

[plans.trial]
rpm = 100000
"#,
            data = setup.dir.path().display().to_string(),
            socket = setup.socket().display().to_string(),
            base = setup.sim.base_url(),
            key = SIM_KEY,
        );
        std::fs::write(setup.config(), toml).expect("write config");
        setup
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("modelrelay.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.dir.path().join("modelrelay.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the database read-only")
    }

    /// Run `modelrelay serve` and wait for its "modelrelay started" log line.
    async fn serve(&self) -> Served {
        self.serve_with(&[]).await
    }

    /// [`Setup::serve`] with more arguments (`--demo`).
    async fn serve_with(&self, args: &[&str]) -> Served {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("RUST_LOG")
            .env_remove("MODELRELAY_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn modelrelay serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("modelrelay started")
                    && let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("http_addr="))
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match tokio::time::timeout(PATIENCE, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "the daemon did not start; its log:\n{}",
                log.lock().unwrap()
            ),
        };
        let pid = Pid::from_raw(child.id().expect("child pid") as i32);
        Served {
            child,
            pid,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// `modelrelay serve ARGS` expected to give up at start: its exit status and stderr.
    async fn serve_refused(&self, config: &std::path::Path, args: &[&str]) -> (ExitStatus, String) {
        let out = tokio::time::timeout(
            PATIENCE,
            Command::new(BIN)
                .arg("serve")
                .args(args)
                .arg("--config")
                .arg(config)
                .env_remove("RUST_LOG")
                .env_remove("MODELRELAY_CONFIG")
                .env_remove("NOTIFY_SOCKET")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the daemon gives up")
        .expect("run modelrelay serve");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `modelrelay keys …` against the running daemon; its stdout.
    async fn keys(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            PATIENCE,
            Command::new(BIN)
                .arg("keys")
                .args(args)
                .arg("--socket")
                .arg(self.socket())
                .arg("--config")
                .arg(self.config())
                .env_remove("MODELRELAY_CONFIG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("keys command finishes")
        .expect("run modelrelay keys");
        assert!(
            out.status.success(),
            "modelrelay keys {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    async fn create_key(&self) -> String {
        self.keys(&["create", "--plan", "trial"])
            .await
            .trim()
            .to_string()
    }
}

/// A running `modelrelay serve`.
struct Served {
    child: Child,
    pid: Pid,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn signal(&self, sig: Signal) {
        kill(self.pid, sig).expect("send a signal to the daemon");
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log holds `needle`.
    async fn wait_log(&self, needle: &str) {
        let found = tokio::time::timeout(PATIENCE, async {
            while !self.log().contains(needle) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "no {needle:?} in the log:\n{}", self.log());
    }

    async fn exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for the daemon"),
            Err(_) => panic!("the daemon did not exit; its log:\n{}", self.log()),
        }
    }

    fn chat(&self, http: &reqwest::Client, key: &str, body: &Value) -> reqwest::RequestBuilder {
        http.post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
    }
}

/// A streamed request, read until some content has been relayed.
async fn start_stream(
    served: &Served,
    key: &str,
    directive: &str,
) -> (
    String,
    String,
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>,
) {
    let mut b = body("deepseek-v4-flash", &format!("hi {directive}"));
    b["stream"] = json!(true);
    let resp = served
        .chat(&reqwest::Client::new(), key, &b)
        .send()
        .await
        .expect("stream starts");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, async {
        while text.matches("data: {").count() < 3 {
            let chunk = stream.next().await.expect("more stream").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("first chunks arrive");
    (rid, text, stream)
}

/// Read the rest of a stream (until the server closes it).
async fn finish_stream(
    mut text: String,
    stream: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>,
) -> String {
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => break,
            }
        }
    })
    .await
    .expect("the stream ends");
    text
}

/// (finish, cost_nanos) of the ledger row of `rid`, if any.
fn ledger_row(db: &rusqlite::Connection, rid: &str) -> Option<(String, i64)> {
    db.query_row(
        "SELECT finish, cost_nanos FROM usage WHERE request_id = ?1",
        [rid],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

fn spent_total(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT COALESCE(SUM(spent_nanos), 0) FROM keys", [], |r| {
        r.get(0)
    })
    .expect("sum spent")
}

fn last_event(text: &str) -> String {
    text.trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sigterm_lets_a_slow_stream_finish_and_exits_0() {
    let setup = Setup::new(10).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let (rid, text, stream) = start_stream(&served, &key, "[[sim reply=40 delay_ms=50]]").await;
    served.signal(Signal::SIGTERM);
    let text = finish_stream(text, stream).await;
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream completes: {text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    let db = setup.db();
    let (finish, cost) = ledger_row(&db, &rid).expect("ledger row written");
    assert_ne!(finish, "shutdown");
    assert!(cost > 0);
    assert_eq!(spent_total(&db), cost);
}

/// A daemon whose log cannot be written (stderr a file on a full disk) serves and bills as
/// ever, and stops cleanly: the formatter's report of a failed write panicked the thread that
/// logged (the ledger's writer among them), so the daemon served answers it could not bill
/// (found by an independent check; before the fix, `serve 2>/dev/full` exited at once).
#[tokio::test]
async fn a_daemon_whose_log_cannot_be_written_serves_bills_and_stops_cleanly() {
    let setup = Setup::new(5).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let toml = std::fs::read_to_string(setup.config())
        .expect("read config")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    std::fs::write(setup.config(), toml).expect("write config");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(setup.config())
        .env_remove("RUST_LOG")
        .env_remove("MODELRELAY_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn modelrelay serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = child.try_wait().expect("poll the daemon") {
                panic!("the daemon exited at start: {status:?}");
            }
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the daemon serves");
    let key = setup.create_key().await;
    let mut rids = Vec::new();
    for stream in [false, true, false, true] {
        let mut b = body("deepseek-v4-flash", "hi [[sim reply=5]]");
        b["stream"] = json!(stream);
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&b)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        rids.push(request_id(&resp));
        let text = resp.text().await.expect("the whole answer");
        assert!(!text.contains("\"error\""), "{text}");
    }
    // A request refused with a warning in the log, for a line from the request path.
    let refused = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-gateway-nosuchkeynosuchkeynosuchkey00")
        .json(&body("deepseek-v4-flash", "hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);
    kill(
        Pid::from_raw(child.id().expect("child pid") as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the daemon stops")
        .expect("wait for the daemon");
    assert!(status.success(), "exit {status:?}");
    let db = setup.db();
    let mut sum = 0;
    for rid in &rids {
        let (finish, cost) = ledger_row(&db, rid).expect("every answer billed");
        assert_eq!(finish, "complete", "{rid}");
        assert!(cost > 0, "{rid}");
        sum += cost;
    }
    assert_eq!(spent_total(&db), sum);
}

/// The daemon turns transparent huge pages off for itself: with them, the allocator's 2 MiB
/// arenas made RSS per open stream ~50 % larger and stepped a soak's memory up mid-run.
#[tokio::test]
async fn the_daemon_runs_without_transparent_huge_pages() {
    let setup = Setup::new(10).await;
    let mut served = setup.serve().await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", served.pid))
        .expect("read /proc/PID/status");
    // `THP_enabled` is in /proc/PID/status since Linux 5.0; older kernels cannot tell.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    served.signal(Signal::SIGTERM);
    let exit = served.exit().await;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", served.log());
}

#[tokio::test]
async fn sigterm_cuts_a_stream_after_the_drain_time_and_bills_it() {
    let setup = Setup::new(1).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let (rid, text, stream) = start_stream(&served, &key, "[[sim reply=1000 delay_ms=50]]").await;
    served.signal(Signal::SIGTERM);
    let text = finish_stream(text, stream).await;
    let last = last_event(&text);
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(last.contains("service_unavailable"), "{last}");
    assert!(!text.contains("[DONE]"));
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    let db = setup.db();
    let (finish, cost) = ledger_row(&db, &rid).expect("ledger row written");
    assert_eq!(finish, "shutdown");
    assert!(cost > 0);
    assert_eq!(spent_total(&db), cost);
}

/// A database a newer modelrelay migrated (then rolled back to this binary) is refused at
/// start, saying so, instead of being read by a version that does not know what changed.
#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let setup = Setup::new(5).await;
    let mut served = setup.serve().await;
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success());
    {
        let db = rusqlite::Connection::open(setup.dir.path().join("modelrelay.db")).expect("open");
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
            [],
        )
        .expect("insert");
    }
    let (status, stderr) = setup.serve_refused(&setup.config(), &[]).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("newer modelrelay"), "{stderr}");
    assert!(stderr.contains("migration 999"), "{stderr}");
    // Which file, too.
    let db = setup.dir.path().join("modelrelay.db");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
}

/// SIGHUP (an SSH session that dropped, an operator expecting a reload) is logged and
/// ignored: its default action killed the daemon at once, with a stream's delivered output
/// never billed. The stream goes on to its end and is billed; SIGTERM still stops the daemon.
#[tokio::test]
async fn sighup_is_ignored_and_the_stream_goes_on() {
    let setup = Setup::new(30).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let (rid, text, stream) = start_stream(&served, &key, "[[sim reply=20 delay_ms=50]]").await;
    served.signal(Signal::SIGHUP);
    served.wait_log("SIGHUP ignored").await;
    let text = finish_stream(text, stream).await;
    assert!(text.contains("[DONE]"), "{text}");
    served.signal(Signal::SIGTERM);
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    let db = setup.db();
    let (finish, cost) = ledger_row(&db, &rid).expect("ledger row written");
    assert_eq!(finish, "complete");
    assert!(cost > 0);
}

#[tokio::test]
async fn a_second_sigterm_cuts_the_drain_at_once_and_bills() {
    let setup = Setup::new(30).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let (rid, text, stream) = start_stream(&served, &key, "[[sim reply=1000 delay_ms=50]]").await;
    served.signal(Signal::SIGTERM);
    served.wait_log("shutting down").await;
    // While it drains, the admin socket still answers (the operator watches the requests
    // finish, lists keys, takes a backup; it was closed at the signal).
    let listed = setup.keys(&["list", "--json"]).await;
    assert!(
        listed.contains(&key[..15]) || listed.contains("\"plan\""),
        "{listed}"
    );
    served.signal(Signal::SIGTERM);
    // The stream would take 50 s and the drain 30 s; both bounds are far above "at once".
    let text = tokio::time::timeout(Duration::from_secs(20), finish_stream(text, stream))
        .await
        .expect("the second signal cuts the stream");
    let last = last_event(&text);
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(last.contains("service_unavailable"), "{last}");
    let status = tokio::time::timeout(Duration::from_secs(20), served.exit())
        .await
        .expect("exits without waiting out the drain");
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    assert!(served.log().contains("second signal"), "{}", served.log());
    // Said as it happened, never as a drain time that ran out (whether the drain's own line
    // comes at all depends on whether the cut stream settled before the drain looked).
    assert!(
        !served.log().contains("after the drain time"),
        "{}",
        served.log()
    );
    let db = setup.db();
    let (finish, cost) = ledger_row(&db, &rid).expect("ledger row written");
    assert_eq!(finish, "shutdown");
    assert!(cost > 0);
}

/// Twenty workers sending non-stream requests on `keys` in turn until `stop` or the daemon
/// goes away; each fully received 200 adds its request id to `received` and counts in `ok`.
fn spawn_workers(
    base: &str,
    keys: &[String],
    received: &Arc<Mutex<Vec<String>>>,
    stop: &Arc<AtomicBool>,
    ok: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..20usize {
        let (received, stop, ok, http) = (received.clone(), stop.clone(), ok.clone(), http.clone());
        let key = keys[w % keys.len()].clone();
        let url = format!("{base}/v1/chat/completions");
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let b = body(
                    "deepseek-v4-flash",
                    &format!("worker {w} request {i} [[sim reply=12]]"),
                );
                let Ok(resp) = http.post(&url).bearer_auth(&key).json(&b).send().await else {
                    break;
                };
                let status = resp.status();
                let rid = resp
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let Ok(bytes) = resp.bytes().await else { break };
                if status == 200
                    && let Some(rid) = rid
                    && serde_json::from_slice::<Value>(&bytes).is_ok()
                {
                    received.lock().unwrap().push(rid);
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    workers
}

/// Each key's id, budget, spent and the sum of its ledger rows, in nano-USD.
fn key_books(db: &rusqlite::Connection) -> Vec<(String, i64, i64, i64)> {
    let mut q = db
        .prepare(
            "SELECT k.id, k.budget_nanos, k.spent_nanos,
                        (SELECT COALESCE(SUM(u.cost_nanos), 0) FROM usage u WHERE u.key_id = k.id)
                 FROM keys k ORDER BY k.id",
        )
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn kill_9_under_load_loses_no_received_response_and_balances_match_the_ledger() {
    kill_9_under_load("full").await;
}

#[tokio::test]
async fn kill_9_under_load_with_sync_normal_loses_no_received_response_either() {
    // The row is in the OS before the last byte leaves: a killed process loses nothing.
    kill_9_under_load("normal").await;
}

async fn kill_9_under_load(sync: &str) {
    let setup = Setup::with_sync(10, sync).await;
    let mut served = setup.serve().await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(setup.create_key().await);
    }
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let workers = spawn_workers(&served.base, &keys, &received, &stop, &ok);
    // Kill mid-way: once plenty of requests have gone through, while the workers keep going.
    tokio::time::timeout(PATIENCE, async {
        while ok.load(Ordering::Relaxed) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the load gets going");
    served.signal(Signal::SIGKILL);
    let status = served.exit().await;
    assert!(!status.success(), "killed: {status:?}");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(PATIENCE, w)
            .await
            .expect("worker stops")
            .expect("worker");
    }
    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 200);

    let mut restarted = setup.serve().await;
    let db = setup.db();
    let missing: Vec<&String> = received
        .iter()
        .filter(|rid| ledger_row(&db, rid).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} received responses have no ledger row: {:?}",
        missing.len(),
        received.len(),
        &missing[..missing.len().min(5)]
    );
    let rows = key_books(&db);
    assert_eq!(rows.len(), 3);
    for (id, budget, spent, ledger) in rows {
        assert!(ledger > 0, "{id} was used");
        assert_eq!(
            budget - spent,
            budget - ledger,
            "{id}: balance = budget − ledger"
        );
        let shown: Value =
            serde_json::from_str(&setup.keys(&["show", &id, "--json"]).await).expect("json");
        let remaining: Usd = serde_json::from_value(shown["remaining_usd"].clone()).unwrap();
        assert_eq!(
            remaining.nanos(),
            budget - ledger,
            "{id}: the restarted daemon's remaining balance"
        );
    }
    restarted.signal(Signal::SIGTERM);
    let status = restarted.exit().await;
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        restarted.log()
    );
}

/// One data directory, one daemon: a second `serve` on it (another port, another admin
/// socket) is refused before it opens the database — two would each keep their own balances,
/// so a key revoked or spent on one would still pay on the other. After a clean stop the
/// database file alone holds everything (the WAL is checkpointed and emptied), so a cold copy
/// of `modelrelay.db` is a whole copy; and the directory is free for the next start.
#[tokio::test]
async fn one_daemon_per_data_dir_and_a_clean_stop_leaves_the_database_file_whole() {
    let setup = Setup::new(10).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let resp = served
        .chat(
            &reqwest::Client::new(),
            &key,
            &body("deepseek-v4-flash", "hi"),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let _ = resp.text().await;

    let second_socket = setup.dir.path().join("second.sock");
    let second = setup.dir.path().join("second.toml");
    let toml = std::fs::read_to_string(setup.config())
        .expect("read config")
        .replace(
            &format!("admin_socket = {:?}", setup.socket().display().to_string()),
            &format!("admin_socket = {:?}", second_socket.display().to_string()),
        );
    assert!(toml.contains("second.sock"));
    std::fs::write(&second, toml).expect("write config");
    let (status, err) = setup.serve_refused(&second, &[]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("another modelrelay daemon is using the data directory"),
        "{err}"
    );
    assert!(!second_socket.exists());
    // The very same config again (same port): the data directory is named, not only the port.
    let same = setup.dir.path().join("same.toml");
    let addr = served.base.trim_start_matches("http://").to_string();
    let toml = std::fs::read_to_string(&second)
        .expect("read config")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = {addr:?}"));
    assert!(toml.contains(&addr));
    std::fs::write(&same, toml).expect("write config");
    let (status, err) = setup.serve_refused(&same, &[]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("another modelrelay daemon is using the data directory"),
        "{err}"
    );
    // The first daemon is untouched.
    let resp = served
        .chat(
            &reqwest::Client::new(),
            &key,
            &body("deepseek-v4-flash", "hi"),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);

    served.signal(Signal::SIGTERM);
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    let wal = setup.dir.path().join("modelrelay.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL is emptied at a clean stop"
    );
    let copy = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        setup.dir.path().join("modelrelay.db"),
        copy.path().join("copy.db"),
    )
    .expect("cold copy");
    let db = rusqlite::Connection::open(copy.path().join("copy.db")).expect("open the copy");
    let keys: i64 = db
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .expect("keys in the copy");
    assert_eq!(keys, 1);
    assert!(
        ledger_row(&db, &rid).is_some(),
        "the ledger row is in the copy"
    );

    // Free again: the next start takes the directory.
    let mut again = setup.serve().await;
    again.signal(Signal::SIGTERM);
    assert!(again.exit().await.success());
}

/// Demo data and real data never mix: `serve --demo` marks the data directory it makes, a real
/// `serve` refuses a marked one (its keys were sold through the simulated PayPal and would spend
/// the real DeepSeek balance), and `serve --demo` refuses a directory holding a real database.
#[tokio::test]
async fn demo_data_and_real_data_never_share_a_directory() {
    let demo = Setup::new(10).await;
    let mut served = demo.serve_with(&["--demo"]).await;
    let _key = demo.create_key().await;
    // A backup of the demo's database, as README's "Backup" takes one.
    let backup = demo.dir.path().join("demo-backup.db");
    let out = Command::new(BIN)
        .arg("backup")
        .arg(&backup)
        .arg("--socket")
        .arg(demo.socket())
        .env_remove("MODELRELAY_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    assert!(demo.dir.path().join("DEMO").exists());
    let (status, err) = demo.serve_refused(&demo.config(), &[]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("holds demo data"), "{err}");
    // The demo itself starts again on its own directory.
    let mut again = demo.serve_with(&["--demo"]).await;
    again.signal(Signal::SIGTERM);
    assert!(again.exit().await.success(), "{}", again.log());
    // The mark is in the database too: without the `DEMO` file (deleted, or the database
    // copied or restored elsewhere) a real start still refuses it (found by an independent
    // check: a demo's backup restored for real served its keys with the real account).
    std::fs::remove_file(demo.dir.path().join("DEMO")).unwrap();
    let (status, err) = demo.serve_refused(&demo.config(), &[]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("was made by `serve --demo`"), "{err}");
    // And the demo takes its own database again, marking the directory anew.
    let mut again = demo.serve_with(&["--demo"]).await;
    again.signal(Signal::SIGTERM);
    assert!(again.exit().await.success(), "{}", again.log());
    assert!(demo.dir.path().join("DEMO").exists());
    let restored = Setup::new(10).await;
    std::fs::copy(&backup, restored.dir.path().join("modelrelay.db")).unwrap();
    std::fs::copy(
        demo.dir.path().join("secret.key"),
        restored.dir.path().join("secret.key"),
    )
    .unwrap();
    let (status, err) = restored.serve_refused(&restored.config(), &[]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("was made by `serve --demo`"), "{err}");

    let real = Setup::new(10).await;
    let mut served = real.serve().await;
    let _key = real.create_key().await;
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    let (status, err) = real.serve_refused(&real.config(), &["--demo"]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("holds a real database"), "{err}");
    assert!(!real.dir.path().join("DEMO").exists());
}

/// A client that stopped reading (its socket full) when SIGTERM comes: the stream is cut after
/// the drain like any other and billed — it used to wait on the full socket for the request's
/// deadline, so the daemon exited with its request never settled and no ledger row.
#[tokio::test]
async fn sigterm_bills_a_stream_whose_client_stopped_reading() {
    let setup = Setup::new(1).await;
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    let body = json!({"model": "deepseek-v4-flash", "stream": true,
        "messages": [{"role": "user", "content": "[[sim reply=30000 delay_ms=0]] hi"}]});
    let conn = crate::common::unread_chat(&served.base, &key, &body).await;
    // Let the relay fill the socket and block on it, then stop the daemon; read nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    served.signal(Signal::SIGTERM);
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
    assert!(
        !served.log().contains("did not settle"),
        "every request settled: {}",
        served.log()
    );
    let db = setup.db();
    let rows: Vec<(String, i64)> = {
        let mut stmt = db.prepare("SELECT finish, cost_nanos FROM usage").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows.len(), 1, "one row for the stalled stream");
    assert_eq!(rows[0].0, "shutdown");
    assert!(rows[0].1 > 0);
    assert_eq!(spent_total(&db), rows[0].1);
    drop(conn);
}

/// A daemon from before the data directory's lock (it does not take it) answers on the admin
/// socket: a new one started on the same directory is refused before it opens, let alone
/// migrates, the database under it (it migrated, then failed at the socket; found by an
/// independent check of an upgrade from the first release).
#[tokio::test]
async fn a_daemon_answering_on_the_admin_socket_stops_a_start_before_the_database_is_opened() {
    let setup = Setup::new(10).await;
    let older = std::os::unix::net::UnixListener::bind(setup.socket()).expect("bind");
    let (status, err) = setup.serve_refused(&setup.config(), &[]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("another modelrelay daemon is already listening there"),
        "{err}"
    );
    assert!(
        !setup.dir.path().join("modelrelay.db").exists(),
        "the database was opened: {err}"
    );
    // Gone (a socket file left behind by a daemon that died), the start goes on.
    drop(older);
    let mut served = setup.serve().await;
    let key = setup.create_key().await;
    assert!(key.starts_with("sk-gateway-"), "{key}");
    served.signal(Signal::SIGTERM);
    let status = served.exit().await;
    assert!(status.success(), "exit {status:?}; log:\n{}", served.log());
}

/// `serve --demo` logs the configuration's warnings as `serve` does: a demo moved to another
/// port with `public_url` left at its default hands customers `http://127.0.0.1:8080` on every
/// page, and a newcomer who ran no `check-config` is told so in the log.
#[tokio::test]
async fn the_demo_logs_the_configurations_warnings_too() {
    // The setup listens on 127.0.0.1:0 and leaves `public_url` at its default; its PayPal is
    // live, which the demo's simulated PayPal is not.
    let demo = Setup::new(10).await;
    let mut toml = std::fs::read_to_string(demo.config()).expect("read config");
    toml.push_str("\n[paypal]\nenv = \"live\"\n");
    std::fs::write(demo.config(), toml).expect("write config");
    let mut served = demo.serve_with(&["--demo"]).await;
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    let log = served.log();
    assert!(
        log.contains("configuration: server.public_url is still \"http://127.0.0.1:8080\""),
        "{log}"
    );
    // Nothing about the key or PayPal the demo brings itself.
    assert!(!log.contains("no upstream key configured"), "{log}");
    assert!(!log.contains("paypal.client_id is empty"), "{log}");
    assert!(!log.contains("paypal.env = live"), "{log}");
}

/// Refused PayPal webhook deliveries are logged at most once a minute, with a count, as every
/// line a stranger can ask for: a line per delivery (one per forged event, one per delivery
/// over the address's limit) let anyone write the log as fast as they could send (found by a
/// long run: 500 lines for 500 deliveries from one address).
#[tokio::test]
async fn refused_webhook_deliveries_are_logged_once_a_minute() {
    // The demo brings a PayPal with a webhook id; every delivery comes from loopback, one address.
    let demo = Setup::new(10).await;
    let mut served = demo.serve_with(&["--demo"]).await;
    let http = reqwest::Client::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..90 {
        let event = json!({
            "id": format!("WH-FORGED-{i}"),
            "event_type": "PAYMENT.CAPTURE.COMPLETED",
            "resource": {"id": format!("CAPTURE-{i}")},
        });
        let r = http
            .post(format!("{}/webhooks/paypal", served.base))
            .json(&event)
            .send()
            .await
            .expect("deliver");
        *statuses.entry(r.status().as_u16()).or_default() += 1;
    }
    // PayPal confirms none of them (400); past the address's 60 a minute, 429.
    assert!(
        statuses.get(&400).copied().unwrap_or(0) >= 60
            && statuses.get(&429).copied().unwrap_or(0) >= 20,
        "{statuses:?}"
    );
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    let log = served.log();
    let forged = log
        .matches("webhook with an invalid signature refused")
        .count();
    let limited = log
        .matches("webhook deliveries over the per-IP limit refused")
        .count();
    assert_eq!((forged, limited), (1, 1), "{log}");
}

/// Open orders another PayPal made (the operator switched `paypal.env` or the app) are said at
/// the start, with their counts and that PayPal, not only when a buyer comes back: a pending
/// one's money is held there (found by an independent check: nothing told the operator).
#[tokio::test]
async fn open_orders_of_another_paypal_are_said_at_the_start() {
    let setup = Setup::new(10).await;
    let mut served = setup.serve().await;
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    let db = rusqlite::Connection::open(setup.dir.path().join("modelrelay.db")).expect("open");
    for (id, status, app) in [
        ("ord_a", "created", "live:other-app"),
        ("ord_b", "pending", "live:other-app"),
        ("ord_c", "created", "sandbox:"),
        ("ord_d", "paid", "live:other-app"),
    ] {
        db.execute(
            "INSERT INTO orders (order_id, plan, email, amount_nanos, status, paypal_order_id,
                 created_at, paypal_app)
             VALUES (?1, 'trial', 'a@b.co', 1000000000, ?2, 'PP-' || ?1, 0, ?3)",
            [id, status, app],
        )
        .expect("insert order");
    }
    drop(db);
    let mut served = setup.serve().await;
    served
        .wait_log("open orders were made under other PayPal settings")
        .await;
    served.signal(Signal::SIGTERM);
    assert!(served.exit().await.success(), "{}", served.log());
    let log = served.log();
    let line = log
        .lines()
        .find(|l| l.contains("open orders were made under other PayPal settings"))
        .expect("the line");
    for part in [
        "made_by=live:other-app",
        "configured=sandbox:",
        "created=1",
        "pending=1",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert_eq!(
        log.matches("under other PayPal settings").count(),
        1,
        "{log}"
    );
}
