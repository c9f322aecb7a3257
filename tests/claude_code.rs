//! Claude Code itself against the gateway (issue 12): the npm package
//! `@anthropic-ai/claude-code`, pinned, run headless (`claude -p`) with `ANTHROPIC_BASE_URL` on
//! the daemon and a minted key as `ANTHROPIC_AUTH_TOKEN`, offline but for loopback.
//!
//! The package is installed by the test under `<target dir>/claude-code` with `npm install` when
//! that folder does not hold the pinned version (needs npm and the npm registry the first time).
//! It ships a native binary per platform (an optional dependency copied into place by its
//! postinstall), so the machine's Node version only has to run npm: the package declares
//! `node >= 22`, which npm 11 on Node 20 reports as a warning and installs anyway.
//!
//! Each run gets a fresh `HOME` and working directory, a clean environment (no proxies, no
//! Anthropic settings from the developer's shell), non-essential traffic, telemetry, error
//! reporting and the auto-updater off, and is killed (its whole process group) after
//! [`RUN_LIMIT`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::anthropic::FLASH;
use crate::common::{TestApp, expected_cost};
use crate::python_anthropic::{assert_billed_as_anthropic, ledger_rows};

/// The pinned Claude Code (an exact version: the request shapes asserted below are its own).
const VERSION: &str = "2.1.332";

/// How long one `claude -p` may take before its process group is killed.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// What every prompt asks the simulator for: 5000 prompt tokens of which 1000 cached, three
/// tokens of thinking (which `claude -p` does not print) and four words of answer.
const DIRECTIVE: &str = "[[sim prompt=5000 hit=1000 reasoning=3 reply=4]]";

/// The answer those four words make.
const ANSWER: &str = "alpha bravo charlie delta";

/// `<CARGO_TARGET_DIR or target>/claude-code`.
fn install_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("claude-code")
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `claude` binaries an install may hold: the wrapper's (the native binary once its
/// postinstall ran), else the platform package's own.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let scope = dir.join("node_modules/@anthropic-ai");
    let mut found = vec![scope.join("claude-code/bin/claude.exe")];
    if let Ok(entries) = std::fs::read_dir(&scope) {
        let mut native: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                name.to_string_lossy()
                    .starts_with(&format!("claude-code-{}-", std::env::consts::OS))
            })
            .map(|e| e.path().join("claude"))
            .collect();
        native.sort();
        found.extend(native);
    }
    found
}

/// The first candidate that reports the pinned version.
fn working_binary(dir: &Path) -> Option<PathBuf> {
    let home = tempfile::tempdir().ok()?;
    candidates(dir).into_iter().find(|bin| {
        Command::new(bin)
            .arg("--version")
            .env("HOME", home.path())
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).starts_with(&format!("{VERSION} "))
            })
    })
}

/// Install the pinned package unless it is there already; returns its `claude`.
fn prepare() -> Result<PathBuf, String> {
    let dir = install_dir();
    if let Some(bin) = working_binary(&dir) {
        return Ok(bin);
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--no-package-lock",
        ])
        // Bounded, so a registry that does not answer fails the test instead of hanging it.
        .args([
            "--fetch-timeout=120000",
            "--fetch-retries=2",
            "--loglevel=error",
        ])
        .arg("--prefix")
        .arg(&dir)
        .arg(format!("@anthropic-ai/claude-code@{VERSION}"))
        .output()
        .map_err(|e| {
            format!(
                "npm is required by the Claude Code test but could not be run ({e}); install \
                 Node.js with npm (`apt-get install npm`); the npm registry must be reachable"
            )
        })?;
    if !out.status.success() {
        return Err(describe("`npm install @anthropic-ai/claude-code`", &out));
    }
    working_binary(&dir).ok_or_else(|| {
        format!(
            "npm installed @anthropic-ai/claude-code@{VERSION} in {}, but no `claude` there \
             reports that version (tried {:?})\n{}",
            dir.display(),
            candidates(&dir),
            describe("npm install", &out)
        )
    })
}

/// The installed `claude`, prepared once per test process (other tests wait for the first).
async fn claude() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| BIN.get_or_init(prepare).clone())
        .await
        .expect("install did not panic");
    result.unwrap_or_else(|e| panic!("cannot install Claude Code {VERSION}: {e}"))
}

/// How one run of Claude Code is pointed at the gateway.
struct Setup<'a> {
    base_url: String,
    key: &'a str,
    /// `ANTHROPIC_MODEL`, and the small/fast (Haiku) model.
    models: [&'a str; 2],
    /// Extra arguments before the prompt.
    args: &'a [&'a str],
}

/// Run `claude -p PROMPT` in a fresh HOME; killed with its children after [`RUN_LIMIT`].
async fn run(bin: &Path, s: &Setup<'_>, prompt: &str) -> Output {
    let home = tempfile::tempdir().expect("temp HOME");
    let work = home.path().join("project");
    let tmp = home.path().join("tmp");
    for d in [&work, &tmp] {
        std::fs::create_dir_all(d).expect("temp dirs");
    }
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home.path())
        .env("TMPDIR", &tmp)
        .env("TERM", "dumb")
        .env("LANG", "C.UTF-8")
        .env("ANTHROPIC_BASE_URL", &s.base_url)
        .env("ANTHROPIC_AUTH_TOKEN", s.key)
        .env("ANTHROPIC_MODEL", s.models[0])
        .env("ANTHROPIC_SMALL_FAST_MODEL", s.models[1])
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", s.models[1])
        // Loopback only: no update checks, telemetry, error reports, connectivity probes
        // (`HEAD /api/hello` on the base URL) or DNS look-ups of Anthropic's hosts.
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        // A failure must fail the test, not wait through ten retries of ten minutes each.
        .env("CLAUDE_CODE_MAX_RETRIES", "1")
        .env("API_TIMEOUT_MS", "60000")
        .current_dir(&work)
        .arg("-p")
        .args(s.args)
        .arg(prompt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().expect("claude starts");
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    match tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await {
        Ok(out) => out.expect("claude runs"),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("claude -p did not finish within {RUN_LIMIT:?}; killed it")
        }
    }
}

/// What went upstream for Claude Code's requests: DeepSeek's Anthropic route, streamed, with
/// Claude Code's tools, system prompt and thinking, and the gateway's own model and user id.
fn assert_relayed(app: &TestApp, key: &str) {
    let id = app.key_state(key).id.clone();
    for q in app.sim.requests() {
        let b = &q.body;
        let start: String = b.to_string().chars().take(300).collect();
        let what = format!("{} {start}…", q.path);
        assert!(q.path.starts_with("/anthropic/v1/messages"), "{what}");
        assert_eq!(b["stream"], true, "{what}");
        assert_eq!(b["model"], "deepseek-v4-flash", "{what}");
        assert_eq!(b["metadata"]["user_id"], id.as_str(), "{what}");
        assert!(
            b["tools"].as_array().is_some_and(|t| !t.is_empty()),
            "{what}"
        );
        assert!(
            b["system"].is_array() && b["thinking"].is_object(),
            "{what}"
        );
        let max = b["max_tokens"].as_u64().expect("max_tokens");
        assert!((1..=32_000).contains(&max), "{what}");
    }
}

#[tokio::test]
async fn claude_code_answers_headless_through_the_gateway_and_is_billed() {
    let bin = claude().await;
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let setup = Setup {
        base_url: app.base.clone(),
        key: &key,
        models: ["claude-sonnet-4-6", "claude-haiku-4-5"],
        args: &[],
    };
    let out = run(&bin, &setup, &format!("Say hello. {DIRECTIVE}")).await;
    let what = describe("claude -p", &out);
    assert!(out.status.success(), "{what}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.trim(), ANSWER, "{what}");

    // One request, answered and billed exactly from the usage upstream reported.
    assert_relayed(&app, &key);
    assert_eq!(app.sim.requests().len(), 1, "{:#?}", app.sim.requests());
    let rows = ledger_rows(&app, &key, 1).await;
    let one = expected_cost(1000, 4000, 7, FLASH[0], FLASH[1], FLASH[2]);
    for r in &rows {
        assert_eq!((r.status, r.stream), (200, true), "{r:#?}");
        assert_eq!(
            (r.cache_hit_tokens, r.cache_miss_tokens, r.completion_tokens),
            (1000, 4000, 7)
        );
        assert_eq!(r.cost.nanos(), one);
    }
    let total = assert_billed_as_anthropic(&app, &key, &rows);
    assert!(total > 0);
}

#[tokio::test]
async fn claude_code_with_a_deepseek_model_id_under_the_anthropic_prefix() {
    let bin = claude().await;
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let setup = Setup {
        base_url: format!("{}/anthropic", app.base),
        key: &key,
        models: ["deepseek-v4-flash", "deepseek-v4-flash"],
        args: &["--output-format", "json"],
    };
    let out = run(&bin, &setup, &format!("Say hello. {DIRECTIVE}")).await;
    let what = describe("claude -p --output-format json", &out);
    assert!(out.status.success(), "{what}");
    let result: Value = serde_json::from_slice(&out.stdout).expect(&what);
    assert_eq!(result["is_error"], false, "{what}");
    assert_eq!(result["result"], ANSWER, "{what}");
    assert_eq!(result["num_turns"], 1, "{what}");
    // Claude Code's own account of the usage is the gateway's bill.
    let u = &result["usage"];
    assert_eq!(
        (
            &u["input_tokens"],
            &u["cache_read_input_tokens"],
            &u["output_tokens"]
        ),
        (&4000.into(), &1000.into(), &7.into()),
        "{what}"
    );

    // For a model it does not know, Claude Code first sends a `system` message inside
    // `messages` (beta mid-conversation-tool-changes-2026-07-01). DeepSeek's validation takes
    // only `user` and `assistant` there, so that request is refused with a 400 (relayed by the
    // gateway, billed nothing) and Claude Code sends it again without one.
    assert_relayed(&app, &key);
    let sent = app.sim.requests();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let has_system = |q: &modelrelay::upstream::simulated::RecordedRequest| {
        q.body["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "system"))
    };
    assert!(has_system(&sent[0]) && !has_system(&sent[1]), "{sent:#?}");
    let rows = ledger_rows(&app, &key, 2).await;
    let statuses: Vec<(u16, i64)> = rows.iter().map(|r| (r.status, r.cost.nanos())).collect();
    let one = expected_cost(1000, 4000, 7, FLASH[0], FLASH[1], FLASH[2]);
    assert_eq!(statuses, [(400, 0), (200, one)], "{rows:#?}");
    assert_eq!(assert_billed_as_anthropic(&app, &key, &rows), one);
}
