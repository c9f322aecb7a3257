//! A real third-party client against the gateway: the official `openai` Python SDK
//! (tests/python/openai_checks.py), in a venv this test builds itself so a clean machine passes.
//! The venv is shared with the `anthropic` SDK tests (`python_anthropic`), which use
//! [`venv_python`], [`python_command`] and [`describe_output`] from here.
//!
//! The venv lives at `<target dir>/pyvenv` and is (re)built with `python3 -m venv` and
//! `pip install -r tests/python/requirements.txt` only when the requirements (or the Python
//! version) changed since the last build, as recorded in a stamp file. Without `python3` the
//! tests fail with a clear message: they never pass silently.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure with its message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::TestApp;

const FLASH: &str = "deepseek-v4-flash";

pub(super) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("tests/python/openai_checks.py")
}

pub(super) fn requirements() -> PathBuf {
    repo().join("tests/python/requirements.txt")
}

/// `<CARGO_TARGET_DIR or target>/pyvenv` (CARGO_TARGET_TMPDIR is `<target dir>/tmp`).
fn venv_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("pyvenv")
}

/// A command with a clean environment for Python: no proxies for loopback, no bytecode
/// written into the repo, no OpenAI or Anthropic settings leaking in from the developer's shell.
pub(crate) fn python_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy().to_ascii_uppercase();
        if n.ends_with("_PROXY")
            || n.starts_with("OPENAI_")
            || n.starts_with("ANTHROPIC_")
            || n.starts_with("PYTHON")
        {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    cmd
}

pub(super) fn describe_output(what: &str, out: &std::process::Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Build the venv if its stamp does not match; returns its python.
fn prepare_venv() -> Result<PathBuf, String> {
    let reqs = std::fs::read(requirements())
        .map_err(|e| format!("cannot read {}: {e}", requirements().display()))?;
    let version = match python_command(Path::new("python3"))
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => {
            let mut v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if v.is_empty() {
                v = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
            v
        }
        Ok(out) => return Err(describe_output("`python3 --version`", &out)),
        Err(e) => {
            return Err(format!(
                "python3 is required by the Python SDK tests but could not be run ({e}); \
                 install Python 3 with its venv module (e.g. `apt-get install python3 python3-venv`)"
            ));
        }
    };
    let stamp = format!("{}\n{version}\n", hex::encode(Sha256::digest(&reqs)));
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let stamp_file = venv.join(".requirements.stamp");
    if python.exists() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(python);
    }
    match std::fs::remove_dir_all(&venv) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove the old venv {}: {e}",
                venv.display()
            ));
        }
    }
    let out = python_command(Path::new("python3"))
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("cannot run `python3 -m venv`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{}\n(on Debian/Ubuntu the venv module is in the python3-venv package)",
            describe_output("`python3 -m venv`", &out)
        ));
    }
    let out = python_command(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(requirements())
        .output()
        .map_err(|e| format!("cannot run pip in {}: {e}", venv.display()))?;
    if !out.status.success() {
        return Err(describe_output(
            "`pip install -r tests/python/requirements.txt`",
            &out,
        ));
    }
    std::fs::write(&stamp_file, &stamp)
        .map_err(|e| format!("cannot write {}: {e}", stamp_file.display()))?;
    Ok(python)
}

/// The venv's python, built once per test process (other tests wait for the first).
pub(crate) async fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| VENV.get_or_init(prepare_venv).clone())
        .await
        .expect("venv preparation did not panic");
    match result {
        Ok(p) => p,
        Err(e) => panic!("cannot prepare the Python environment for the SDK tests: {e}"),
    }
}

/// Run the named checks of openai_checks.py against `app`; returns `{check: result}`.
async fn run_checks(python: &Path, app: &TestApp, keys: &Value, checks: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::from(python_command(python));
    cmd.arg(script())
        .arg(&app.base)
        .arg(keys.to_string())
        .args(checks)
        .kill_on_drop(true);
    let out = cmd.output().await.expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        describe_output("openai_checks.py", &out)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "openai_checks.py printed no JSON ({e})\n{}",
            describe_output("openai_checks.py", &out)
        )
    });
    let reqs = std::fs::read_to_string(requirements()).expect("requirements.txt");
    let pinned = reqs
        .lines()
        .find_map(|l| l.trim().strip_prefix("openai=="))
        .expect("requirements.txt pins openai==VERSION");
    assert_eq!(
        results["openai_version"], pinned,
        "the venv holds another openai than requirements.txt pins"
    );
    for name in checks {
        let r = &results[*name];
        assert!(
            r.is_object() && r.get("unexpected").is_none(),
            "check {name} failed inside Python: {}\n{}",
            r.get("unexpected").unwrap_or(r),
            r.get("traceback").and_then(Value::as_str).unwrap_or("")
        );
    }
    results
}

/// Assert the SDK raised `class` for a gateway error with `status` and `code`.
fn assert_sdk_error(what: &str, e: &Value, class: &str, status: u64, code: &str, kind: &str) {
    assert_eq!(e["class"], class, "{what}: exception class; got {e:#}");
    assert_eq!(e["status"], status, "{what}: status_code; got {e:#}");
    assert_eq!(e["code"], code, "{what}: e.code; got {e:#}");
    assert_eq!(e["type"], kind, "{what}: e.type; got {e:#}");
    assert_eq!(e["is_status_error"], true, "{what}: {e:#}");
    let message = e["body"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{what}: error.message; got {e:#}");
    let rid = e["headers"]["x-request-id"].as_str().unwrap_or("");
    assert!(
        !rid.is_empty(),
        "{what}: x-request-id on the error; got {e:#}"
    );
}

/// The SDK's non-stream answer, as billed from upstream usage.
async fn assert_chat(app: &TestApp, chat: &Value) {
    assert_eq!(chat["object"], "chat.completion", "{chat:#}");
    assert_eq!(chat["model"], FLASH, "{chat:#}");
    assert_eq!(chat["n_choices"], 1, "{chat:#}");
    assert_eq!(
        chat["content"], "alpha bravo charlie delta echo",
        "{chat:#}"
    );
    assert_eq!(chat["role"], "assistant", "{chat:#}");
    assert_eq!(chat["finish_reason"], "stop", "{chat:#}");
    assert_eq!(chat["prompt_tokens"], 10, "{chat:#}");
    assert_eq!(chat["completion_tokens"], 5, "{chat:#}");
    assert_eq!(chat["total_tokens"], 15, "{chat:#}");
    let rid = chat["request_id"]
        .as_str()
        .expect("x-request-id seen by the SDK");
    let row = app.wait_ledger_row(rid).await;
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens, row.cost.nanos()),
        (10, 5, 10 * 150 + 5 * 600),
        "the SDK's request is billed from upstream usage"
    );
}

/// The SDK's streams: `stream` without usage, `su` with `include_usage`.
fn assert_streams(stream: &Value, su: &Value) {
    // Without stream_options the SDK sees the text and no usage anywhere.
    assert_eq!(
        stream["text"], "alpha bravo charlie delta echo foxtrot golf",
        "{stream:#}"
    );
    assert_eq!(stream["models"], json!([FLASH]), "{stream:#}");
    assert_eq!(stream["finish_reason"], "stop", "{stream:#}");
    assert_eq!(stream["usages"], json!([]), "{stream:#}");
    // Role chunk, 7 content chunks, the final chunk with finish_reason.
    assert_eq!(stream["chunks"], 9, "{stream:#}");

    // With include_usage: the same text, and usage exactly once, on the last chunk.
    assert_eq!(su["text"], "alpha bravo charlie delta echo", "{su:#}");
    assert_eq!(su["models"], json!([FLASH]), "{su:#}");
    assert_eq!(su["finish_reason"], "stop", "{su:#}");
    let last = su["chunks"].as_u64().expect("chunk count") - 1;
    assert_eq!(
        su["usages"],
        json!([{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "chunk_index": last}]),
        "{su:#}"
    );
}

/// The SDK's `models.list` and `models.retrieve`, allowed and refused.
fn assert_models(models: &Value) {
    assert_eq!(
        models["ids"],
        json!([FLASH]),
        "a trial key sees its plan's models"
    );
    assert_eq!(models["objects"], json!(["model"]), "{models:#}");
    assert_eq!(models["retrieve_id"], FLASH, "{models:#}");
    assert_sdk_error(
        "models.retrieve(pro) on a trial key",
        &models["retrieve_pro"],
        "PermissionDeniedError",
        403,
        "model_not_allowed",
        "permission_error",
    );
    assert_sdk_error(
        "models.retrieve(unknown)",
        &models["retrieve_unknown"],
        "NotFoundError",
        404,
        "model_not_found",
        "invalid_request_error",
    );
}

#[tokio::test]
async fn openai_sdk_chat_stream_and_models() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let keys = json!({"main": key});
    let r = run_checks(
        &python,
        &app,
        &keys,
        &["chat", "stream", "stream_usage", "models"],
    )
    .await;

    assert_chat(&app, &r["chat"]).await;

    assert_streams(&r["stream"], &r["stream_usage"]);

    assert_models(&r["models"]);
}

/// Out of money: `nb` the refusal, `nr` two calls of the SDK with its default retries.
fn assert_no_budget(nb: &Value, nr: &Value) {
    // Out of money must be 402 (a plain APIStatusError the SDK never retries), not a 429.
    assert_sdk_error(
        "exhausted budget",
        nb,
        "APIStatusError",
        402,
        "insufficient_budget",
        "insufficient_quota",
    );
    assert_eq!(nb["is_rate_limit_error"], false, "{nb:#}");
    // …so the SDK with its default retries sends it once: the 2 RPM key's counter (refilled
    // only every 30 s) drops by one per call, not by three.
    assert_eq!(nr["sdk_max_retries"], 2, "{nr:#}");
    let remaining = |e: &Value| -> u64 {
        assert_eq!(e["status"], 402, "{e:#}");
        e["headers"]["x-ratelimit-remaining-requests"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("x-ratelimit-remaining-requests on a 402; got {e:#}"))
    };
    assert_eq!(
        (remaining(&nr["first"]), remaining(&nr["second"])),
        (1, 0),
        "a 402 must not be retried by the SDK: {nr:#}"
    );
}

/// Two calls of a 2 RPM key pass and the third is refused with the rate headers.
fn assert_rate_limited(rl: &Value) {
    assert_eq!(rl["first_two"], json!(["alpha", "alpha"]), "{rl:#}");
    let third = &rl["third"];
    assert_sdk_error(
        "third request of a 2 RPM key",
        third,
        "RateLimitError",
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    );
    let h = &third["headers"];
    assert_eq!(h["x-ratelimit-limit-requests"], "2", "{third:#}");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0", "{third:#}");
    let retry_after: u64 = h["retry-after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in whole seconds; got {third:#}"));
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After within the minute window: {retry_after}"
    );
}

#[tokio::test]
async fn openai_sdk_maps_gateway_errors_to_its_exceptions() {
    let python = venv_python().await;
    let app = TestApp::spawn_with(|cfg| {
        let mut slow = cfg.plans["trial"].clone();
        slow.name = "Two per minute".into();
        slow.rpm = 2;
        cfg.plans.insert("slow".into(), slow);
    })
    .await;
    let keys = json!({
        "main": app.create_key("trial", None).await,
        "tiny": app.create_key("trial", Some("0.000000001")).await,
        "rate": app.create_key("slow", None).await,
        "tiny_slow": app.create_key("slow", Some("0.000000001")).await,
    });
    let r = run_checks(
        &python,
        &app,
        &keys,
        &[
            "bad_key",
            "no_budget",
            "no_budget_not_retried",
            "model_not_allowed",
            "unknown_model",
            "rate_limit",
        ],
    )
    .await;

    assert_sdk_error(
        "unknown key",
        &r["bad_key"],
        "AuthenticationError",
        401,
        "invalid_api_key",
        "authentication_error",
    );

    assert_no_budget(&r["no_budget"], &r["no_budget_not_retried"]);

    let na = &r["model_not_allowed"];
    assert_sdk_error(
        "deepseek-v4-pro on a trial key",
        na,
        "PermissionDeniedError",
        403,
        "model_not_allowed",
        "permission_error",
    );
    assert_eq!(na["param"], "model", "{na:#}");

    let um = &r["unknown_model"];
    assert_sdk_error(
        "unknown model",
        um,
        "NotFoundError",
        404,
        "model_not_found",
        "invalid_request_error",
    );
    assert_eq!(um["param"], "model", "{um:#}");

    assert_rate_limited(&r["rate_limit"]);
}

/// The streaming example on `/docs`, left after five chunks as a `break` leaves it, stops the
/// answer there: billed as the client's abort for what was made, not for the whole answer
/// (a plain `for` loop kept the connection open; found by an independent check).
#[tokio::test]
async fn the_docs_streaming_example_left_early_pays_only_for_what_was_made() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let keys = json!({"main": app.create_key("trial", None).await});
    let r = run_checks(&python, &app, &keys, &["docs_stream_break"]).await;
    let s = &r["docs_stream_break"];
    assert_eq!(s["chunks"], 5, "{s:#}");
    assert_eq!(s["with_block"], true, "{s:#}");
    let rid = s["request_id"].as_str().expect("a request id");
    let row = app.wait_ledger_row(rid).await;
    assert_eq!(row.finish.as_str(), "client_abort", "{row:?}");
    assert!(row.completion_tokens < 1000, "{row:?}");
}

#[tokio::test]
async fn openai_sdk_raises_when_a_stream_fails_mid_way() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let keys = json!({"main": app.create_key("trial", None).await});
    let r = run_checks(
        &python,
        &app,
        &keys,
        &["stream_error_event", "stream_dropped"],
    )
    .await;
    for (check, how) in [
        ("stream_error_event", "upstream error event"),
        ("stream_dropped", "upstream connection cut"),
    ] {
        let s = &r[check];
        // Role chunk and three words reach the client before the failure.
        assert_eq!(s["text"], "alpha bravo charlie ", "{how}: {s:#}");
        assert_eq!(s["chunks"], 4, "{how}: {s:#}");
        let e = &s["error"];
        assert!(e.is_object(), "{how}: the SDK raised nothing; {s:#}");
        assert_eq!(e["class"], "APIError", "{how}: {e:#}");
        assert_eq!(e["is_api_error"], true, "{how}: {e:#}");
        assert_eq!(e["is_status_error"], false, "{how}: {e:#}");
        assert_eq!(e["code"], "upstream_error", "{how}: {e:#}");
        assert_eq!(e["type"], "server_error", "{how}: {e:#}");
        assert_eq!(
            e["message"], "The upstream model provider failed to answer. Please retry.",
            "{how}: {e:#}"
        );
    }
}
