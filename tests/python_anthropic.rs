//! The official `anthropic` Python SDK against the Anthropic dialect (issue 12):
//! tests/python/anthropic_checks.py, run in the venv of `python_client` (one requirements file
//! pins both SDKs). Messages with `x-api-key`, streams with Bearer (under `/anthropic` and with
//! `anthropic-beta`), `count_tokens`, every error status as the SDK's own exception, and the
//! SDK's retries: a 402 is sent once, a 502 three times. Billing is read from the ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modelrelay::store::UsageRow;
use serde_json::{Value, json};

use crate::anthropic::FLASH;
use crate::common::{TestApp, expected_cost};
use crate::python_client::{describe_output, python_command, repo, requirements, venv_python};

fn script() -> PathBuf {
    repo().join("tests/python/anthropic_checks.py")
}

/// Start the named checks of anthropic_checks.py against `app` (read with [`finish`]).
fn spawn_checks(
    python: &Path,
    app: &TestApp,
    keys: &Value,
    checks: &[&str],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(python_command(python));
    cmd.arg(script())
        .arg(&app.base)
        .arg(keys.to_string())
        .args(checks)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("python starts")
}

/// Wait for the checks (two minutes at most) and return `{check: result}`.
async fn finish(child: tokio::process::Child, checks: &[&str]) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("anthropic_checks.py finishes within two minutes")
        .expect("python runs");
    let what = "anthropic_checks.py";
    assert!(out.status.success(), "{}", describe_output(what, &out));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e})\n{}",
            describe_output(what, &out)
        )
    });
    let reqs = std::fs::read_to_string(requirements()).expect("requirements.txt");
    let pinned = reqs
        .lines()
        .find_map(|l| l.trim().strip_prefix("anthropic=="))
        .expect("requirements.txt pins anthropic==VERSION");
    assert_eq!(
        results["anthropic_version"], pinned,
        "the venv holds another anthropic than requirements.txt pins"
    );
    for name in checks {
        let r = &results[*name];
        assert!(
            !r.is_null() && r.get("unexpected").is_none(),
            "check {name} failed inside Python: {}\n{}",
            r.get("unexpected").unwrap_or(r),
            r.get("traceback").and_then(Value::as_str).unwrap_or("")
        );
    }
    results
}

async fn run_checks(python: &Path, app: &TestApp, keys: &Value, checks: &[&str]) -> Value {
    finish(spawn_checks(python, app, keys, checks), checks).await
}

/// The ledger rows of `key`, oldest first, once there are `n` (rows land after the answer).
pub(super) async fn ledger_rows(app: &TestApp, key: &str, n: usize) -> Vec<UsageRow> {
    let id = app.key_state(key).id.clone();
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = modelrelay::store::usage::recent(&app.db(), &id, 10_000).expect("ledger");
        if rows.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    rows.reverse();
    assert_eq!(rows.len(), n, "ledger rows of the key: {rows:#?}");
    rows
}

/// Every row is in the Anthropic dialect and the key's spend is their sum; returns the sum.
pub(super) fn assert_billed_as_anthropic(app: &TestApp, key: &str, rows: &[UsageRow]) -> i64 {
    for r in rows {
        assert_eq!(r.api.as_str(), "anthropic", "{r:#?}");
    }
    let sum: i64 = rows.iter().map(|r| r.cost.nanos()).sum();
    assert_eq!(
        app.key_state(key).balance().spent.nanos(),
        sum,
        "spend = Σ ledger"
    );
    assert_eq!(app.ledger_totals(key).1.nanos(), sum);
    sum
}

/// Which credential the SDK sent, and where.
fn assert_sent(what: &str, r: &Value, auth: &str, path: &str) {
    let sent = &r["sent"];
    let x_api_key = auth == "x-api-key";
    assert_eq!(sent["x-api-key"], x_api_key, "{what}: {sent:#}");
    let bearer = if x_api_key {
        Value::Null
    } else {
        "Bearer".into()
    };
    assert_eq!(sent["authorization"], bearer, "{what}: {sent:#}");
    assert_eq!(sent["path"], path, "{what}: {sent:#}");
}

/// Non-stream with x-api-key: Anthropic's usage, billed from it; returns its cost.
async fn assert_message(app: &TestApp, m: &Value) -> i64 {
    assert_sent("message", m, "x-api-key", "/v1/messages");
    assert_eq!(
        (&m["type"], &m["role"], &m["model"], &m["stop_reason"]),
        (
            &json!("message"),
            &json!("assistant"),
            &json!("deepseek-v4-flash"),
            &json!("end_turn")
        ),
        "{m:#}"
    );
    assert!(m["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "alpha bravo charlie delta echo"}])
    );
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 360, "output_tokens": 5, "cache_read_input_tokens": 640,
            "cache_creation_input_tokens": 0})
    );
    let row = app.wait_ledger_row(m["request_id"].as_str().unwrap()).await;
    let message_cost = expected_cost(640, 360, 5, FLASH[0], FLASH[1], FLASH[2]);
    assert_eq!(
        (
            row.cache_hit_tokens,
            row.cache_miss_tokens,
            row.completion_tokens
        ),
        (640, 360, 5)
    );
    assert_eq!((row.cost.nanos(), row.stream), (message_cost, false));
    message_cost
}

/// `messages.stream()` with Bearer under /anthropic: thinking, then text, then the final
/// message the SDK assembled from the events; returns its cost.
async fn assert_stream(app: &TestApp, s: &Value) -> i64 {
    assert_sent("stream", s, "Bearer", "/anthropic/v1/messages");
    assert_eq!(s["content_type"], "text/event-stream");
    let events: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"message_stop"), "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "thinking").count(), 2);
    assert_eq!(events.iter().filter(|e| **e == "text").count(), 6);
    assert_eq!(s["text"], "alpha bravo charlie delta echo foxtrot");
    assert_eq!(
        s["content"],
        json!([{"type": "thinking", "thinking": "hmm, let", "has_signature": true},
            {"type": "text", "text": "alpha bravo charlie delta echo foxtrot"}])
    );
    assert_eq!(
        (&s["model"], &s["stop_reason"]),
        (&json!("deepseek-v4-flash"), &json!("end_turn"))
    );
    assert_eq!(
        s["usage"],
        json!({"input_tokens": 40, "output_tokens": 8, "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0})
    );
    let row = app.wait_ledger_row(s["request_id"].as_str().unwrap()).await;
    let stream_cost = expected_cost(0, 40, 8, FLASH[0], FLASH[1], FLASH[2]);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (40, 8));
    assert_eq!((row.cost.nanos(), row.stream), (stream_cost, true));
    stream_cost
}

/// `beta.messages.create(stream=True)`: the raw events (the SDK drops `ping`); returns its
/// cost.
async fn assert_stream_create(app: &TestApp, c: &Value) -> i64 {
    assert_sent("stream_create", c, "Bearer", "/v1/messages");
    assert_eq!(
        c["sent"]["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert_eq!(
        c["events"],
        json!([
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ])
    );
    assert_eq!(c["text"], "alpha bravo charlie");
    assert_eq!(c["message_delta_usage"], json!({"output_tokens": 3}));
    let create_cost = expected_cost(0, 20, 3, FLASH[0], FLASH[1], FLASH[2]);
    let row = app.wait_ledger_row(c["request_id"].as_str().unwrap()).await;
    assert_eq!(row.cost.nanos(), create_cost);
    create_cost
}

#[tokio::test]
async fn anthropic_sdk_messages_streams_and_count_tokens() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let checks = ["message", "stream", "stream_create", "count_tokens"];
    let r = run_checks(&python, &app, &json!({"main": key}), &checks).await;
    let message_cost = assert_message(&app, &r["message"]).await;
    let stream_cost = assert_stream(&app, &r["stream"]).await;
    let create_cost = assert_stream_create(&app, &r["stream_create"]).await;

    // count_tokens: the gateway's estimate, (400 + 8) bytes / 4 + 4 a message + 2; no row.
    assert_eq!(r["count_tokens"], json!({"input_tokens": 108}));

    let rows = ledger_rows(&app, &key, 3).await;
    let total = assert_billed_as_anthropic(&app, &key, &rows);
    assert_eq!(total, message_cost + stream_cost + create_cost);
}

/// The /docs page's Anthropic Python example runs as written on an answer that thinks before
/// it answers, as DeepSeek's models do by default: it prints the answer's text (it printed
/// `content[0].text`, a thinking block's, and failed; found by an independent check).
#[tokio::test]
async fn the_docs_python_example_prints_an_answer_that_thought_first() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let r = run_checks(&python, &app, &json!({"main": key}), &["docs_snippet"]).await;
    let printed = r["docs_snippet"].as_array().expect("lines printed");
    assert_eq!(printed[0], "alpha bravo charlie", "{printed:?}");
    assert!(
        printed[1].as_str().unwrap().contains("output_tokens=8"),
        "{printed:?}"
    );
}

/// The SDK raised `class` for a gateway error of `status` with Anthropic's error `kind`.
fn assert_sdk_error(what: &str, e: &Value, class: &str, status: u64, kind: &str) {
    assert_eq!(e["class"], class, "{what}: exception class; got {e:#}");
    assert_eq!(e["status"], status, "{what}: status_code; got {e:#}");
    assert_eq!(e["type"], kind, "{what}: e.type; got {e:#}");
    assert_eq!(e["is_status_error"], true, "{what}: {e:#}");
    assert_eq!(
        e["is_internal_server_error"],
        status >= 500,
        "{what}: an InternalServerError exactly when 5xx; got {e:#}"
    );
    let message = e["api_message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{what}: error.message; got {e:#}");
    assert_eq!(
        e["body"],
        json!({"type": "error", "error": {"type": kind, "message": message}}),
        "{what}: Anthropic's error shape"
    );
    let rid = e["headers"]["x-request-id"].as_str().unwrap_or("");
    assert!(!rid.is_empty(), "{what}: x-request-id; got {e:#}");
    assert_eq!(e["retry_count"], "0", "{what}: sent once; got {e:#}");
}

/// Two calls of a 2 RPM key pass, the third is a RateLimitError with `retry-after`.
fn assert_rate_limited(rl: &Value) {
    assert_eq!(rl["first_two"], json!(["alpha", "alpha"]), "{rl:#}");
    let third = &rl["third"];
    assert_sdk_error(
        "third request of a 2 RPM key",
        third,
        "RateLimitError",
        429,
        "rate_limit_error",
    );
    let retry_after: u64 = third["headers"]["retry-after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("retry-after in whole seconds; got {third:#}"));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

/// Errors cost nothing: the three that reached upstream (502, 504, upstream's 400) are in the
/// ledger at zero; the refusals before it have no row. The 2 RPM key paid for its two answers.
async fn assert_errors_cost_nothing(app: &TestApp, keys: &Value) {
    let main = keys["main"].as_str().unwrap();
    let rows = ledger_rows(app, main, 3).await;
    let statuses: Vec<u16> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 504, 400], "{rows:#?}");
    assert_eq!(assert_billed_as_anthropic(app, main, &rows), 0);
    let rate = keys["rate"].as_str().unwrap();
    let rows = ledger_rows(app, rate, 2).await;
    // "[[sim reply=1]]": 2 + 4 + 15 bytes / 4 = 10 prompt tokens, one word.
    let one_word = expected_cost(0, 10, 1, FLASH[0], FLASH[1], FLASH[2]);
    assert_eq!(assert_billed_as_anthropic(app, rate, &rows), 2 * one_word);
    let tiny = keys["tiny"].as_str().unwrap();
    assert_eq!(ledger_rows(app, tiny, 0).await.len(), 0);
}

#[tokio::test]
async fn anthropic_sdk_raises_its_exception_for_every_gateway_error() {
    let python = venv_python().await;
    let app = TestApp::spawn_with(|c| {
        c.server.max_body_bytes = 64 * 1024;
        c.upstream.idle_timeout_secs = 1;
        let mut slow = c.plans["trial"].clone();
        slow.name = "Two per minute".into();
        slow.rpm = 2;
        c.plans.insert("slow".into(), slow);
    })
    .await;
    let keys = json!({
        "main": app.create_key("trial", None).await,
        "tiny": app.create_key("trial", Some("0.000000001")).await,
        "rate": app.create_key("slow", None).await,
    });
    let r = run_checks(&python, &app, &keys, &["errors", "rate_limit"]).await;
    let e = &r["errors"];
    for (check, class, status, kind) in [
        (
            "bad_request",
            "BadRequestError",
            400,
            "invalid_request_error",
        ),
        (
            "bad_key",
            "AuthenticationError",
            401,
            "authentication_error",
        ),
        ("no_budget", "PaymentRequiredError", 402, "billing_error"),
        (
            "not_allowed",
            "PermissionDeniedError",
            403,
            "permission_error",
        ),
        ("unknown_model", "NotFoundError", 404, "not_found_error"),
        (
            "too_large",
            "ContentTooLargeError",
            413,
            "request_too_large",
        ),
        ("upstream_failed", "InternalServerError", 502, "api_error"),
        (
            "upstream_timeout",
            "GatewayTimeoutError",
            504,
            "timeout_error",
        ),
        // Upstream's own 400 about the request, passed on.
        (
            "upstream_rejected",
            "BadRequestError",
            400,
            "invalid_request_error",
        ),
    ] {
        assert_sdk_error(check, &e[check], class, status, kind);
    }

    assert_rate_limited(&r["rate_limit"]);
    assert_errors_cost_nothing(&app, &keys).await;
}

/// `modelrelay_http_requests_total` summed over routes for one status.
async fn responses_with_status(app: &TestApp, status: u16) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let label = format!("status=\"{status}\"}}");
    text.lines()
        .filter(|l| l.starts_with("modelrelay_http_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn anthropic_sdk_does_not_retry_a_402_but_retries_a_502() {
    let python = venv_python().await;
    let app = TestApp::spawn().await;
    let keys = json!({
        "main": app.create_key("trial", None).await,
        "tiny": app.create_key("trial", Some("0.000000001")).await,
    });
    let r = run_checks(&python, &app, &keys, &["retries"]).await;
    let r = &r["retries"];
    assert_eq!(
        r["sdk_max_retries"],
        json!([2, 2]),
        "the SDK's default retries"
    );

    let nb = &r["no_budget"];
    assert_eq!(
        (&nb["class"], &nb["status"]),
        (&json!("PaymentRequiredError"), &json!(402))
    );
    assert_eq!(nb["retry_count"], "0", "{nb:#}");
    assert_eq!(
        responses_with_status(&app, 402).await,
        1,
        "a 402 is sent once"
    );

    // The same client retries a 502 twice: the count above would have seen a retry.
    let uf = &r["upstream_failed"];
    assert_eq!(
        (&uf["class"], &uf["status"]),
        (&json!("InternalServerError"), &json!(502))
    );
    assert_eq!(uf["retry_count"], "2", "{uf:#}");
    assert_eq!(responses_with_status(&app, 502).await, 3);
    let upstream = app
        .sim
        .requests()
        .iter()
        .filter(|q| q.body.to_string().contains("retried"))
        .count();
    assert_eq!(upstream, 3, "the 502 reached upstream three times");
    let main = keys["main"].as_str().unwrap();
    let rows = ledger_rows(&app, main, 3).await;
    assert_eq!(assert_billed_as_anthropic(&app, main, &rows), 0);
}

#[tokio::test]
async fn anthropic_sdk_sees_503_when_the_daemon_shuts_down_mid_request() {
    let python = venv_python().await;
    let mut app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let child = spawn_checks(&python, &app, &json!({"main": key}), &["overloaded"]);
    // Python and the SDK start first: seconds on a loaded machine. A minute and a half at
    // most (the request then waits upstream 30 s, so it is still there when the stop comes).
    let started = std::time::Instant::now();
    while app.sim.requests().is_empty() && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(app.sim.requests().len(), 1, "the request reached upstream");
    let daemon = app.daemon.take().expect("running");
    daemon.shutdown_within(Duration::ZERO).await;
    let r = finish(child, &["overloaded"]).await;
    assert_sdk_error(
        "a request cut by shutdown",
        &r["overloaded"],
        "ServiceUnavailableError",
        503,
        "overloaded_error",
    );
}
