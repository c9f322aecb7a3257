//! The real `modelrelay` binary against a running daemon's admin socket (`keys …`), its
//! `check-config`, and the admin socket's wire protocol spoken by hand.
//!
//! The daemon runs inside the test's own async runtime, so the binary is always run with
//! `tokio::process` (a blocking wait would stall the daemon it talks to).

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure with its message"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::common::{TestApp, body, request_id};

const BIN: &str = env!("CARGO_BIN_EXE_modelrelay");
const FLASH: &str = "deepseek-v4-flash";

/// What a run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit 0; returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        &self.stdout
    }

    /// Exit 1 with nothing on stdout and exactly one line on stderr; returns that line.
    fn failed_with_one_line(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected exit code 1: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout when failing: {self:#?}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        lines[0]
    }

    /// stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

/// The binary, run in `cwd` with no `MODELRELAY_*` or `RUST_LOG` from the caller's shell.
async fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("MODELRELAY_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.expect("the modelrelay binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `modelrelay keys ARGS… --socket <app's socket>`.
async fn keys(app: &TestApp, args: &[&str]) -> Run {
    let socket = app.socket.to_str().expect("utf-8 socket path");
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--socket", socket]);
    run_in(app.dir.path(), &all, &[]).await
}

/// Mint a trial key with the CLI; returns the full key.
async fn cli_create(app: &TestApp) -> String {
    let run = keys(app, &["create", "--plan", "trial", "--email", "x@y.z"]).await;
    let out = run.ok();
    assert!(out.ends_with('\n'), "{run:#?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line, the key: {run:#?}");
    lines[0].to_string()
}

fn is_full_key(s: &str) -> bool {
    s.strip_prefix("sk-gateway-")
        .is_some_and(|r| r.len() >= 32 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

async fn chat_status(app: &TestApp, key: &str) -> (u16, Value) {
    let resp = app
        .chat(key, &body(FLASH, "hi [[sim reply=2 prompt=5]]"))
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// The one key in `keys show KEY --json`, looked up by `needle`.
async fn show(app: &TestApp, needle: &str) -> Value {
    let v = keys(app, &["show", needle, "--json"]).await.json();
    assert!(v.is_object(), "keys show --json is one key object: {v:#}");
    v
}

#[tokio::test]
async fn keys_create_prints_only_the_full_key_and_it_works() {
    let app = TestApp::spawn().await;
    let key = cli_create(&app).await;
    assert!(
        is_full_key(&key),
        "sk-gateway- + at least 32 base62: {key:?}"
    );
    let (status, v) = chat_status(&app, &key).await;
    assert_eq!(status, 200, "{v:#}");
    assert_eq!(v["choices"][0]["message"]["content"], "alpha bravo");
    assert_eq!(v["model"], FLASH);

    // Two keys are never the same.
    let other = cli_create(&app).await;
    assert_ne!(key, other);
}

#[tokio::test]
async fn keys_list_json_has_the_documented_fields() {
    let app = TestApp::spawn().await;
    let key = cli_create(&app).await;
    let list = keys(&app, &["list", "--json"]).await.json();
    let arr = list.as_array().expect("keys list --json is an array");
    assert_eq!(arr.len(), 1, "{list:#}");
    let k = &arr[0];
    let id = k["id"].as_str().expect("id");
    assert!(id.starts_with("key_") && id.len() > 4, "{k:#}");
    let prefix = k["prefix"].as_str().expect("prefix");
    assert!(
        prefix.starts_with("sk-gateway-") && prefix.ends_with('…'),
        "prefix like sk-gateway-AbCd…: {k:#}"
    );
    let stem = prefix.trim_end_matches('…');
    assert!(
        stem.len() > "sk-gateway-".len() && key.starts_with(stem),
        "the prefix is the start of the key: {k:#}"
    );
    assert!(
        !list.to_string().contains(&key),
        "the full key is never listed"
    );
    assert_eq!(k["plan"], "trial", "{k:#}");
    assert_eq!(k["status"], "active", "{k:#}");
    assert_eq!(k["budget_usd"], "1.00", "{k:#}");
    assert_eq!(k["spent_usd"], "0.00", "{k:#}");
    assert_eq!(k["remaining_usd"], "1.00", "{k:#}");
    assert_eq!(k["requests"], 0, "{k:#}");
    let created = k["created_at"].as_str().expect("created_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "created_at is RFC 3339: {created:?}"
    );

    // After a request: spent and remaining move, as decimal strings that add up.
    let (status, _) = chat_status(&app, &key).await;
    assert_eq!(status, 200);
    // 5 prompt × $0.15/M + 2 output × $0.60/M = 1950 nano-USD (SPEC §4, off-peak flash).
    let k = show(&app, id).await;
    assert_eq!(k["requests"], 1, "{k:#}");
    assert_eq!(k["spent_usd"], "0.00000195", "{k:#}");
    assert_eq!(k["remaining_usd"], "0.99999805", "{k:#}");

    // The human table shows the key by prefix, never in full.
    let table = keys(&app, &["list"]).await;
    let text = table.ok();
    assert!(
        text.contains(prefix) && text.contains("trial") && !text.contains(&key),
        "{table:#?}"
    );
}

#[tokio::test]
async fn keys_show_finds_a_key_by_full_key_id_and_prefix() {
    let app = TestApp::spawn().await;
    let key = cli_create(&app).await;
    let _other = cli_create(&app).await;
    let by_key = show(&app, &key).await;
    let id = by_key["id"].as_str().expect("id").to_string();
    let prefix = by_key["prefix"].as_str().expect("prefix").to_string();
    assert!(
        !by_key.to_string().contains(&key),
        "show never prints the full key"
    );
    assert_eq!(by_key["plan"], "trial");
    assert_eq!(by_key["status"], "active");
    for needle in [id.as_str(), prefix.as_str(), prefix.trim_end_matches('…')] {
        let v = show(&app, needle).await;
        assert_eq!(v["id"], id.as_str(), "keys show {needle:?}");
    }
    let run = keys(&app, &["show", "key_doesnotexist", "--json"]).await;
    let line = run.failed_with_one_line();
    assert!(line.contains("key_doesnotexist"), "{run:#?}");

    // Without --json: a readable block with the id and prefix.
    let run = keys(&app, &["show", &id]).await;
    let text = run.ok();
    assert!(text.contains(&id) && text.contains(&prefix), "{run:#?}");
}

#[tokio::test]
async fn keys_topup_raises_the_budget() {
    let app = TestApp::spawn().await;
    let key = cli_create(&app).await;
    let id = show(&app, &key).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let run = keys(&app, &["topup", &id, "--usd", "2.50"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let k = show(&app, &id).await;
    assert_eq!(k["budget_usd"], "3.50", "{k:#}");
    assert_eq!(k["remaining_usd"], "3.50", "{k:#}");
    assert_eq!(k["spent_usd"], "0.00", "{k:#}");
    assert_eq!(k["status"], "active", "{k:#}");

    // --json prints the key after the top-up.
    let v = keys(&app, &["topup", &id, "--usd", "0.25", "--json"])
        .await
        .json();
    assert_eq!(v["budget_usd"], "3.75", "{v:#}");

    // Amounts the daemon must refuse: one line, exit 1.
    for bad in ["--usd=0", "--usd=-1", "--usd=0.000000000"] {
        let run = keys(&app, &["topup", &id, bad]).await;
        let line = run.failed_with_one_line();
        assert!(line.contains("greater than 0"), "{run:#?}");
    }
    // Not a number at all: a usage error from the argument parser.
    let run = keys(&app, &["topup", &id, "--usd", "abc"]).await;
    assert!(
        run.code.is_some_and(|c| c != 0) && run.stdout.is_empty(),
        "{run:#?}"
    );
    assert_eq!(show(&app, &id).await["budget_usd"], "3.75");
}

#[tokio::test]
async fn keys_revoke_makes_the_key_fail_with_401() {
    let app = TestApp::spawn().await;
    let key = cli_create(&app).await;
    assert_eq!(chat_status(&app, &key).await.0, 200);
    let id = show(&app, &key).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let run = keys(&app, &["revoke", &id]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let (status, v) = chat_status(&app, &key).await;
    assert_eq!(status, 401, "{v:#}");
    assert_eq!(v["error"]["code"], "invalid_api_key", "{v:#}");
    let k = show(&app, &id).await;
    assert_eq!(k["status"], "revoked", "{k:#}");

    // A revoked key cannot be topped up back to life.
    let run = keys(&app, &["topup", &id, "--usd", "1.00"]).await;
    run.failed_with_one_line();
    assert_eq!(chat_status(&app, &key).await.0, 401);
}

#[tokio::test]
async fn keys_create_with_an_unknown_plan_fails_with_one_line() {
    let app = TestApp::spawn().await;
    let run = keys(&app, &["create", "--plan", "nosuch"]).await;
    let line = run.failed_with_one_line();
    assert!(
        line.contains("nosuch"),
        "the reason names the plan: {run:#?}"
    );
    let list = keys(&app, &["list", "--json"]).await.json();
    assert_eq!(list, json!([]), "no key was minted");
}

#[tokio::test]
async fn keys_create_refuses_a_zero_budget() {
    let app = TestApp::spawn().await;
    let run = keys(&app, &["create", "--plan", "trial", "--budget", "0"]).await;
    let line = run.failed_with_one_line();
    assert!(line.contains("budget"), "{run:#?}");
    let run = keys(&app, &["create", "--plan", "trial", "--budget", "0.00"]).await;
    run.failed_with_one_line();
    assert_eq!(keys(&app, &["list", "--json"]).await.json(), json!([]));

    // A custom budget otherwise replaces the plan's.
    let run = keys(&app, &["create", "--plan", "trial", "--budget", "2.50"]).await;
    let key = run.ok().trim().to_string();
    assert_eq!(show(&app, &key).await["budget_usd"], "2.50");
}

#[tokio::test]
async fn keys_without_a_daemon_fail_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("nobody-listens.sock");
    let socket = socket.to_str().expect("utf-8");
    for args in [
        vec!["keys", "list", "--socket", socket],
        vec!["keys", "list", "--json", "--socket", socket],
        vec!["keys", "create", "--plan", "trial", "--socket", socket],
    ] {
        let run = run_in(dir.path(), &args, &[]).await;
        let line = run.failed_with_one_line();
        assert!(
            line.contains("daemon"),
            "the reason mentions the daemon: {run:#?}"
        );
    }

    // A stale socket file (daemon gone) reads the same.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let run = run_in(
        dir.path(),
        &["keys", "list", "--socket", stale.to_str().expect("utf-8")],
        &[],
    )
    .await;
    let line = run.failed_with_one_line();
    assert!(line.contains("daemon"), "{run:#?}");
}

const SECRET: &str = "sk-upstream-very-secret-1234";
const PAYPAL_SECRET: &str = "paypal-secret-5678";

#[tokio::test]
async fn check_config_prints_the_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("modelrelay.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            r#"
[server]
listen = "127.0.0.1:9999"
data_dir = "{}"

[upstream]
api_key = "{SECRET}"

[paypal]
client_secret = "{PAYPAL_SECRET}"
"#,
            data.display()
        ),
    )
    .expect("write config");
    let run = run_in(
        dir.path(),
        &["check-config", "--config", file.to_str().expect("utf-8")],
        &[],
    )
    .await;
    let out = run.ok();
    assert!(
        !out.contains(SECRET) && !out.contains(PAYPAL_SECRET),
        "no secret printed: {run:#?}"
    );
    let v: toml::Table = toml::from_str(out).unwrap_or_else(|e| panic!("not TOML ({e}): {out}"));
    assert_eq!(
        v["upstream"]["api_key"].as_str(),
        Some("<redacted>"),
        "{out}"
    );
    assert_eq!(
        v["paypal"]["client_secret"].as_str(),
        Some("<redacted>"),
        "{out}"
    );
    assert_eq!(
        v["server"]["listen"].as_str(),
        Some("127.0.0.1:9999"),
        "{out}"
    );
    assert!(v.contains_key("plans") && v.contains_key("models"), "{out}");
    assert!(!data.exists(), "check-config creates nothing");

    // A secret from a file or the environment is redacted just the same.
    let secret_file = dir.path().join("upstream.key");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let file2 = dir.path().join("from-file.toml");
    std::fs::write(
        &file2,
        format!("[upstream]\napi_key_file = \"{}\"\n", secret_file.display()),
    )
    .expect("write config");
    let run = run_in(
        dir.path(),
        &["check-config", "--config", file2.to_str().expect("utf-8")],
        &[],
    )
    .await;
    let out = run.ok();
    assert!(!out.contains(SECRET), "{run:#?}");
    let v: toml::Table = toml::from_str(out).unwrap_or_else(|e| panic!("not TOML ({e}): {out}"));
    assert_eq!(
        v["upstream"]["api_key"].as_str(),
        Some("<redacted>"),
        "{out}"
    );

    let run = run_in(
        dir.path(),
        &["check-config", "--config", file.to_str().expect("utf-8")],
        &[("MODELRELAY_UPSTREAM__API_KEY", "sk-from-the-environment-42")],
    )
    .await;
    let out = run.ok();
    assert!(
        !out.contains("sk-from-the-environment-42") && !out.contains(SECRET),
        "{run:#?}"
    );
}

#[tokio::test]
async fn check_config_rejects_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, must_mention) in [
        (
            "typo.toml",
            "[server]\nlisten = \"127.0.0.1:9999\"\nlisten_adress = \"127.0.0.1:1\"\n",
            "listen_adress",
        ),
        (
            "section.toml",
            "[upstreams]\nbase_url = \"https://api.deepseek.com\"\n",
            "upstreams",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write config");
        let run = run_in(
            dir.path(),
            &["check-config", "--config", file.to_str().expect("utf-8")],
            &[],
        )
        .await;
        assert_eq!(run.code, Some(1), "{name}: {run:#?}");
        assert_eq!(run.stdout, "", "{name}: nothing printed on error: {run:#?}");
        assert!(
            run.stderr.contains(must_mention),
            "{name}: the message names the unknown key {must_mention:?}: {run:#?}"
        );
    }
    let missing = dir.path().join("missing.toml");
    let run = run_in(
        dir.path(),
        &["check-config", "--config", missing.to_str().expect("utf-8")],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("missing.toml"), "{run:#?}");
}

/// The next JSON line from the socket (a stuck daemon fails the test instead of hanging it).
async fn next_line(lines: &mut tokio::io::Lines<BufReader<UnixStream>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the daemon sends a line")
        .expect("readable")
        .expect("the daemon keeps the subscription open");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn admin_socket_subscription_streams_events() {
    let app = TestApp::spawn().await;
    let stream = UnixStream::connect(&app.socket).await.expect("connect");
    let mut lines = BufReader::new(stream).lines();
    lines
        .get_mut()
        .get_mut()
        .write_all(b"{\"cmd\":\"subscribe\"}\n")
        .await
        .expect("send");
    assert_eq!(next_line(&mut lines).await, json!({"type": "subscribed"}));
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

    // A second connection does the work, speaking the same JSON lines by hand.
    let admin = UnixStream::connect(&app.socket).await.expect("connect");
    let mut admin = BufReader::new(admin).lines();
    admin
        .get_mut()
        .get_mut()
        .write_all(b"{\"cmd\":\"keys_create\",\"plan\":\"trial\",\"email\":\"x@y.z\"}\n")
        .await
        .expect("send");
    let created = next_line(&mut admin).await;
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

    admin
        .get_mut()
        .get_mut()
        .write_all(format!("{{\"cmd\":\"keys_revoke\",\"key\":\"{key_id}\"}}\n").as_bytes())
        .await
        .expect("send");
    let revoked = next_line(&mut admin).await;
    assert_eq!(revoked["type"], "key", "{revoked:#}");
    assert_eq!(revoked["key"]["status"], "revoked", "{revoked:#}");

    // Collect events until the revocation; other kinds (progress…) may come in between.
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..200 {
        let line = next_line(&mut lines).await;
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
