//! `modelrelay check-config` run as the real binary: the effective config printed as TOML with
//! every secret redacted, wherever it came from, and refusals that name the unknown key or the
//! missing file.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure with its message"
)]

use crate::cli::run_in;

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
base_url = "https://proxy-user:proxy-pass-secret@proxy.example"

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
        !out.contains(SECRET) && !out.contains(PAYPAL_SECRET) && !out.contains("proxy-pass"),
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

    // A secret from the environment is redacted just the same.
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
async fn check_config_redacts_a_secret_read_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
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
    // Shown as its file alone: with the value beside it the printed config was one `serve`
    // refuses ("set upstream.api_key or upstream.api_key_file, not both").
    assert_eq!(v["upstream"]["api_key"].as_str(), Some(""), "{out}");
    assert_eq!(
        v["upstream"]["api_key_file"].as_str(),
        secret_file.to_str(),
        "{out}"
    );
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, out).expect("write the printed config");
    let again = run_in(
        dir.path(),
        &["check-config", "--config", printed.to_str().expect("utf-8")],
        &[],
    )
    .await;
    assert_eq!(again.code, Some(0), "{again:#?}");
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

/// The systemd setup install.sh recommends: secrets as credentials under
/// `/run/credentials/modelrelay.service/`, which exist only while the service runs and only for
/// its user. `check-config` says so as a warning instead of refusing the file; the admin
/// commands, which need no secret, do not read them; `serve` still refuses a secret it cannot
/// read. A secret file anywhere else that is missing stays an error for `check-config` too.
#[tokio::test]
async fn secrets_systemd_provides_are_warnings_for_check_config_and_unread_by_admin_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cred = "/run/credentials/modelrelay.service/deepseek_api_key";
    assert!(!std::path::Path::new(cred).exists());
    let file = dir.path().join("systemd.toml");
    let config = file.to_str().expect("utf-8");

    let run = check(
        dir.path(),
        &file,
        &format!("[upstream]\napi_key_file = \"{cred}\"\n"),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("upstream.api_key_file")
            && run.stderr.contains("systemd hands it to the service"),
        "{run:#?}"
    );
    assert!(
        !run.stderr.contains("no upstream key configured"),
        "a key systemd provides is not missing: {run:#?}"
    );

    let run = run_in(dir.path(), &["keys", "list", "--config", config], &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("no modelrelay daemon is answering"),
        "{run:#?}"
    );

    let run = run_in(dir.path(), &["serve", "--config", config], &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("cannot read upstream.api_key_file"),
        "{run:#?}"
    );

    // The rest is checked as `serve` will: mail from a credential still needs its sender, and
    // a pool account with no key at all is named though another's key is a credential.
    let pool = format!(
        "[[upstream.accounts]]\nname = \"a\"\napi_key_file = \"{cred}\"\n\
         [[upstream.accounts]]\nname = \"b\"\n"
    );
    let run = check(
        dir.path(),
        &file,
        &format!("[email]\nsmtp_url_file = \"{cred}\"\n{pool}"),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("email.from must be set"), "{run:#?}");
    let run = check(dir.path(), &file, &pool).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("upstream account \"b\" has no key"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("account \"a\""), "{run:#?}");

    // A path that only starts like a credential is not one.
    let run = check(
        dir.path(),
        &file,
        "[upstream]\napi_key_file = \"/run/credentials/../../nowhere\"\n",
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");

    // Anywhere else, a missing secret file is the operator's mistake.
    let missing = dir.path().join("nowhere.key");
    let run = check(
        dir.path(),
        &file,
        &format!("[upstream]\napi_key_file = \"{}\"\n", missing.display()),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("nowhere.key"), "{run:#?}");
}

/// Write a config of `[server] data_dir` (under `dir`) and `rest` to `file`, and run
/// `check-config` on it.
async fn check(dir: &std::path::Path, file: &std::path::Path, rest: &str) -> crate::cli::Run {
    let data = dir.join("data");
    std::fs::write(
        file,
        format!("[server]\ndata_dir = \"{}\"\n{rest}", data.display()),
    )
    .expect("write config");
    run_in(
        dir,
        &["check-config", "--config", file.to_str().expect("utf-8")],
        &[],
    )
    .await
}

/// A pool with one account lacking its key: the warning names that account.
#[tokio::test]
async fn check_config_names_the_pool_account_that_has_no_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    std::fs::write(
        &file,
        "[[upstream.accounts]]\nname = \"x\"\napi_key = \"sk-x\"\n\n\
         [[upstream.accounts]]\nname = \"y\"\n",
    )
    .expect("write config");
    let run = run_in(
        dir.path(),
        &["check-config", "--config", file.to_str().expect("utf-8")],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("upstream account \"y\" has no key"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("\"x\""), "{run:#?}");
}
