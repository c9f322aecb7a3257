//! Operations: `/healthz`, `/metrics` (Prometheus text, counters that move with traffic,
//! loopback only), and online backups through the admin socket.

use std::collections::BTreeMap;
use std::time::Duration;

use modelrelay::activity::protocol::{ActivityEvent, Request, Response};
use serde_json::Value;

use crate::common::{TestApp, body, expected_cost, request_id};

const FLASH: &str = "deepseek-v4-flash";
/// Off-peak flash prices, nano-USD per 1M tokens: cache hit, cache miss, output.
const FLASH_OFF_PEAK: [i64; 3] = [3_000_000, 150_000_000, 600_000_000];

/// Parse Prometheus text: every non-comment, non-blank line is `name{labels} value` (labels
/// optional); returns `name{labels}` → value. Panics on anything else.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let parts: Vec<&str> = c.split_whitespace().collect();
            assert!(
                matches!(parts.first(), Some(&"HELP") | Some(&"TYPE")),
                "bad comment line {line:?}"
            );
            assert!(parts.len() >= 3, "bad comment line {line:?}");
            if parts[0] == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&parts[2]),
                    "bad type in {line:?}"
                );
                typed.insert(parts[1].to_string(), parts[2].to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in {line:?}"
            );
            let inner = &labels[1..labels.len() - 1];
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name in {line:?}"
                );
                assert!(!v.contains('\n'), "bad label value in {line:?}");
            }
            assert!(
                inner.is_empty() || inner.ends_with('"'),
                "bad labels in {line:?}"
            );
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("numeric value"),
        };
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family) || typed.contains_key(name),
            "{name} has no # TYPE line"
        );
        assert!(
            out.insert(series.to_string(), v).is_none(),
            "duplicate {series}"
        );
    }
    out
}

pub(super) async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    parse_prometheus(&resp.text().await.expect("body"))
}

pub(super) fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// `POST /api/keys/rotate` is counted under its own route, as every route the daemon serves:
/// it was missing from the list, and a long run's 500 refused replacements showed up only as
/// `route="other"`, with the unmatched paths.
#[tokio::test]
async fn key_replacements_are_counted_under_their_route() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth("sk-gateway-not-a-key")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let m = scrape(&app).await;
    assert_eq!(
        get(
            &m,
            "modelrelay_http_requests_total{route=\"/api/keys/rotate\",status=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "modelrelay_http_requests_total{route=\"other\",status=\"401\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn healthz_is_ok_with_database_and_upstream() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("JSON");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["database"], "ok", "{v}");
    assert_eq!(v["upstream"]["status"], "ok", "{v}");
    assert_eq!(v["upstream"]["http_status"], 200, "{v}");
}

/// Every account set aside by the operator: 503, and the reason, which the probe (it
/// answers) cannot give.
#[tokio::test]
async fn healthz_says_why_when_every_account_is_disabled() {
    let app = TestApp::spawn().await;
    let state = &app.daemon.as_ref().expect("running").state;
    assert!(state.upstream.set_enabled("default", false).is_some());
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.expect("JSON");
    assert_eq!(v["upstream"]["status"], "error", "{v}");
    assert_eq!(v["upstream"]["error"], "disabled by the operator", "{v}");
    assert_eq!(
        v["upstream"]["accounts"][0]["error"], "disabled by the operator",
        "{v}"
    );
    assert_eq!(v["upstream"]["accounts"][0]["name"], "default", "{v}");
}

/// The accounts are named only to whom `/metrics` is served: behind the proxy, the public
/// sees them by their place (found by an independent check).
#[tokio::test]
async fn healthz_names_accounts_only_to_loopback() {
    for public in [false, true] {
        let app = TestApp::spawn_with(|c| {
            c.server.behind_proxy = true;
            c.server.metrics_public = public;
        })
        .await;
        let v: Value = app
            .http
            .get(format!("{}/healthz", app.base))
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("JSON");
        let want = if public { "default" } else { "account 1" };
        assert_eq!(v["upstream"]["accounts"][0]["name"], want, "{v}");
        assert_eq!(v["upstream"]["accounts"][0]["state"], "healthy", "{v}");
    }
}

#[tokio::test]
async fn healthz_is_503_when_upstream_is_unreachable() {
    // A port that was just bound and released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let app = TestApp::spawn_with(|c| {
        c.upstream.base_url = format!("http://127.0.0.1:{port}");
        c.upstream.connect_timeout_secs = 2;
    })
    .await;
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.expect("body");
    assert!(
        !text.contains(&port.to_string()),
        "leaks the address: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["database"], "ok", "{v}");
    assert_eq!(v["upstream"]["status"], "error", "{v}");
    assert_ne!(v["status"], "ok", "{v}");
}

/// An account cooling after a failure is probed again within seconds: an upstream that went
/// down turns `/healthz` to 503 soon, not after the 30 s its last good probe was kept (found
/// by an independent check: 200 with the account "serving" while every request got 502).
#[tokio::test]
async fn healthz_turns_503_soon_after_upstream_goes_down() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", None).await;
    let health = || async {
        let r = app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("JSON"))
    };
    assert_eq!(health().await.0, 200);
    app.sim.set_fault(
        crate::common::SIM_KEY,
        Some(modelrelay::upstream::simulated::AccountFault::Status(500)),
    );
    let resp = app
        .chat(&key, &body(FLASH, "hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 502);
    let mut last = health().await;
    for _ in 0..40 {
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = health().await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert_eq!(last.1["upstream"]["status"], "error", "{}", last.1);
}

/// One paid request (10 prompt tokens, 5 output, priced exactly) and one refused with 401;
/// returns the paid one's cache hit and miss tokens and its cost in nano-USD.
async fn one_paid_one_refused(app: &TestApp, key: &str) -> (u64, u64, i64) {
    let resp = app
        .chat(key, &body(FLASH, "[[sim reply=5 prompt=10]] hello"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let v: Value = resp.json().await.expect("JSON");
    let hit = v["usage"]["prompt_cache_hit_tokens"].as_u64().expect("hit");
    let miss = v["usage"]["prompt_cache_miss_tokens"]
        .as_u64()
        .expect("miss");
    assert_eq!(hit + miss, 10);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let row = app.wait_ledger_row(&id).await;
    let want = expected_cost(
        hit,
        miss,
        5,
        FLASH_OFF_PEAK[0],
        FLASH_OFF_PEAK[1],
        FLASH_OFF_PEAK[2],
    );
    assert_eq!(row.cost.nanos(), want);
    // A refused request is counted by route and status too.
    let resp = app
        .chat("sk-gateway-not-a-key", &body(FLASH, "hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    (hit, miss, want)
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let before = scrape(&app).await;
    assert_eq!(get(&before, "modelrelay_keys{status=\"active\"}"), 1.0);
    assert_eq!(get(&before, "modelrelay_requests_in_flight"), 0.0);

    let (hit, miss, want) = one_paid_one_refused(&app, &key).await;

    let after = scrape(&app).await;
    let delta = |s: &str| get(&after, s) - get(&before, s);
    let route = "route=\"/v1/chat/completions\"";
    assert_eq!(
        delta(&format!(
            "modelrelay_http_requests_total{{{route},status=\"200\"}}"
        )),
        1.0
    );
    assert_eq!(
        delta(&format!(
            "modelrelay_http_requests_total{{{route},status=\"401\"}}"
        )),
        1.0
    );
    let model = format!("model=\"{FLASH}\"");
    assert_eq!(
        delta(&format!(
            "modelrelay_chat_requests_total{{{model},status=\"200\"}}"
        )),
        1.0
    );
    for (kind, n) in [
        ("prompt_cache_hit", hit),
        ("prompt_cache_miss", miss),
        ("completion", 5),
        ("reasoning", 0),
    ] {
        assert_eq!(
            delta(&format!(
                "modelrelay_tokens_total{{{model},kind=\"{kind}\"}}"
            )),
            n as f64,
            "{kind}"
        );
    }
    assert_eq!(
        delta(&format!("modelrelay_spend_nanousd_total{{{model}}}")),
        want as f64,
        "spend is exact in nano-USD"
    );
    assert_eq!(
        delta("modelrelay_upstream_latency_seconds_count"),
        1.0,
        "one upstream answer observed"
    );
    assert_eq!(
        get(
            &after,
            "modelrelay_upstream_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        get(&after, "modelrelay_upstream_latency_seconds_count")
    );
    assert_eq!(get(&after, "modelrelay_requests_in_flight"), 0.0);
    // No key material or email in the page.
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    // Money in USD is written from the integer, exactly (never through a float).
    assert!(
        text.contains(&format!(
            "\nmodelrelay_spend_usd {}\n",
            modelrelay::money::Usd::from_nanos(want)
        )),
        "{text}"
    );
    let state = app.key_state(&key);
    assert!(!text.contains(&key) && !text.contains(&state.id) && !text.contains("example.com"));
}

#[tokio::test]
async fn metrics_count_rate_limit_hits() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.rpm = 1;
        }
    })
    .await;
    let key = app.create_key("trial", None).await;
    let (mut console, _) = crate::activity::Sub::connect(&app).await;
    let mut limited = 0;
    for _ in 0..3 {
        let resp = app
            .chat(&key, &body(FLASH, "[[sim reply=1]] hi"))
            .send()
            .await
            .expect("send");
        if resp.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 1);
    // The key's other limits (token counts, usage look-ups) count as hits too, in both.
    let count = serde_json::json!({"model": FLASH, "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        for resp in [
            app.http
                .post(format!("{}/anthropic/v1/messages/count_tokens", app.base))
                .header("x-api-key", &key)
                .json(&count)
                .send(),
            app.get(&key, "/api/usage").send(),
            app.get(&key, "/v1/dashboard/billing/usage").send(),
        ] {
            if resp.await.expect("send").status() == 429 {
                limited += 1;
            }
        }
    }
    assert!(limited >= 4, "{limited}");
    let m = scrape(&app).await;
    assert_eq!(get(&m, "modelrelay_rate_limited_total"), limited as f64);
    // Each one a hit in the console (it heard only the chats'; found by an independent check).
    let mut heard = 0;
    while heard < limited {
        let event = tokio::time::timeout(Duration::from_secs(10), console.event())
            .await
            .unwrap_or_else(|_| panic!("{heard} hits heard of {limited}"));
        if matches!(event, ActivityEvent::RateLimited { .. }) {
            heard += 1;
        }
    }
}

/// A client hammering its limits: the console's snapshot keeps the newest 1 000 hits of a key
/// and 200 refusals, and says that what it shows is a floor (`/metrics` has the totals).
#[tokio::test]
async fn a_snapshot_says_when_hits_and_refusals_fell_out_of_view() {
    let app = TestApp::spawn_with(|c| {
        if let Some(p) = c.plans.get_mut("trial") {
            p.rpm = 1;
        }
        if let Some(p) = c.plans.get_mut("starter") {
            p.rpm = 1_000;
        }
    })
    .await;
    let fast = app.create_key("trial", None).await;
    let broke = app.create_key("starter", Some("0.000000001")).await;
    let mut limited = 0;
    for _ in 0..1_003 {
        let resp = app
            .chat(&fast, &body(FLASH, "[[sim reply=1]] hi"))
            .send()
            .await;
        if resp.expect("send").status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 1_002);
    // A key under the bound: nothing of its fell out.
    let few = app.create_key("trial", None).await;
    for _ in 0..2 {
        let _ = app
            .chat(&few, &body(FLASH, "[[sim reply=1]] hi"))
            .send()
            .await;
    }
    for _ in 0..201 {
        let resp = app.chat(&broke, &body(FLASH, "hi")).send().await;
        assert_eq!(resp.expect("send").status(), 402);
    }
    let m = scrape(&app).await;
    assert_eq!(get(&m, "modelrelay_rate_limited_total"), 1_003.0);
    // The tracker hears the events on a channel: wait for the last of them.
    let mut snap = crate::activity::snapshot(&app).await;
    for _ in 0..100 {
        if snap.refusals.len() == 200 && snap.refusals_pushed_out_ms.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        snap = crate::activity::snapshot(&app).await;
    }
    let fast_id = app.key_state(&fast).id.clone();
    let hits = snap
        .rate_limited
        .iter()
        .find(|h| h.key_id == fast_id)
        .expect("the key's hits");
    assert_eq!(hits.hits_ms.len(), 1_000);
    let pushed_out = hits.pushed_out_ms.expect("hits fell out of view");
    assert!(
        pushed_out <= hits.hits_ms[0],
        "{pushed_out} {:?}",
        &hits.hits_ms[..2]
    );
    assert_eq!(snap.refusals.len(), 200);
    assert!(snap.refusals_pushed_out_ms.is_some());
    let few_id = app.key_state(&few).id.clone();
    let few_hits = snap.rate_limited.iter().find(|h| h.key_id == few_id);
    assert_eq!(
        few_hits.map(|h| (h.hits_ms.len(), h.pushed_out_ms)),
        Some((1, None))
    );
}

#[tokio::test]
async fn metrics_are_loopback_only_unless_public() {
    // Behind a proxy, the forwarded client address decides.
    let app = TestApp::spawn_with(|c| c.server.behind_proxy = true).await;
    let url = format!("{}/metrics", app.base);
    let remote = app
        .http
        .get(&url)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("send");
    assert_eq!(remote.status(), 404);
    let local = app.http.get(&url).send().await.expect("send");
    assert_eq!(local.status(), 200);

    let public = TestApp::spawn_with(|c| {
        c.server.behind_proxy = true;
        c.server.metrics_public = true;
    })
    .await;
    let remote = public
        .http
        .get(format!("{}/metrics", public.base))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("send");
    assert_eq!(remote.status(), 200);
}

/// One task per key sending requests until `stop`; each returns how many were served.
fn start_load(
    app: &std::sync::Arc<TestApp>,
    keys: &[String],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u32>> {
    let mut load = Vec::new();
    for k in keys {
        let (app, stop, k) = (app.clone(), stop.clone(), k.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = app
                    .chat(&k, &body(FLASH, "[[sim reply=3 prompt=10]] load"))
                    .send()
                    .await
                    .expect("send");
                if resp.status() == 429 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await;
                n += 1;
            }
            n
        }));
    }
    load
}

#[tokio::test]
async fn backup_during_load_is_consistent_and_complete() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(app.create_key("trial", None).await);
    }
    // Traffic that keeps committing ledger rows while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(&app, &keys, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Everything committed before the backup starts must be in it.
    let committed_keys: i64 = app
        .db()
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
        .expect("count");
    let committed_rows: Vec<String> = {
        let db = app.db();
        let mut st = db.prepare("SELECT request_id FROM usage").expect("prepare");
        st.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert!(!committed_rows.is_empty(), "load is running");
    let dest = app.dir.path().join("backups-test.db");
    let resp = app.admin(Request::Backup { path: dest.clone() }).await;
    let bytes = match resp {
        Response::BackedUp {
            path,
            bytes,
            behind,
        } => {
            assert_eq!(path, dest);
            assert!(!behind, "every row answered before it is in it");
            bytes
        }
        other => panic!("backup failed: {other:?}"),
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for l in load {
        served += l.await.expect("load task");
    }
    assert!(served > 0);
    assert_eq!(
        std::fs::metadata(&dest).expect("backup exists").len(),
        bytes
    );
    assert!(!app.dir.path().join("backups-test.db.tmp").exists());

    let copy = rusqlite::Connection::open(&dest).expect("backup opens");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let n_keys: i64 = copy
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n_keys, committed_keys);
    assert_eq!(n_keys, keys.len() as i64);
    for k in &keys {
        let id = app.key_state(k).id.clone();
        let found: i64 = copy
            .query_row("SELECT COUNT(*) FROM keys WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .expect("query");
        assert_eq!(found, 1, "key {id} in the backup");
    }
    for rid in &committed_rows {
        let found: i64 = copy
            .query_row(
                "SELECT COUNT(*) FROM usage WHERE request_id = ?1",
                [rid],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(found, 1, "ledger row {rid} in the backup");
    }
    // A standalone file: not in WAL mode, no -wal beside it.
    let mode: String = copy
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "delete");
}

#[tokio::test]
async fn backup_refuses_an_existing_file() {
    let app = TestApp::spawn().await;
    let dest = app.dir.path().join("exists.db");
    std::fs::write(&dest, b"precious").expect("write");
    match app.admin(Request::Backup { path: dest.clone() }).await {
        Response::Error { message } => assert!(message.contains("already exists"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(&dest).expect("read"), b"precious");
    // A relative path is refused (the daemon's working directory is not the caller's).
    match app
        .admin(Request::Backup {
            path: "relative.db".into(),
        })
        .await
    {
        Response::Error { message } => assert!(message.contains("absolute"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn backup_cli_prints_path_and_size_and_refuses_overwrite() {
    let app = TestApp::spawn().await;
    let _key = app.create_key("trial", None).await;
    let dest = app.dir.path().join("cli-backup.db");
    let run_to = |file: &'static str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelrelay"));
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("MODELRELAY_") || n == "RUST_LOG" {
                cmd.env_remove(&name);
            }
        }
        // A relative FILE: the CLI resolves it against its own working directory.
        cmd.args(["backup", file, "--socket"])
            .arg(&app.socket)
            .current_dir(app.dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let run = || run_to("cli-backup.db");
    // A directory is not a file name: said so, not "already exists".
    let dir = run_to(".").output().await.expect("runs");
    assert_eq!(dir.status.code(), Some(1), "{dir:?}");
    assert!(
        String::from_utf8_lossy(&dir.stderr).contains("is a directory"),
        "{dir:?}"
    );
    let out = run().output().await.expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let size = std::fs::metadata(&dest).expect("written").len();
    assert!(stdout.contains(&dest.display().to_string()), "{stdout}");
    assert!(stdout.contains(&format!("{size} bytes")), "{stdout}");
    let copy = rusqlite::Connection::open(&dest).expect("opens");
    let n: i64 = copy
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
    drop(copy);
    let again = run().output().await.expect("runs");
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(again.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );
    assert_eq!(std::fs::metadata(&dest).expect("kept").len(), size);
}
