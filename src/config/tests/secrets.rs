//! Secrets: `*_file` variants read and trimmed (also when named by the environment), refused
//! together with the inline value or when missing, and redacted in the rendered config.

use super::*;

#[test]
fn secret_files_are_read_and_trimmed() {
    jailed(|jail| {
        jail.create_file("deepseek_api_key", "  sk-from-credential\n\n")
            .unwrap();
        // Notepad's byte-order mark and line ending: neither is part of the secret.
        jail.create_file("paypal_client_secret", "\u{feff}pp-secret\r\n")
            .unwrap();
        let dir = jail.directory().to_path_buf();
        let c = load_file(
            jail,
            &format!(
                "[upstream]\napi_key_file = {:?}\n[paypal]\nclient_secret_file = {:?}\n",
                dir.join("deepseek_api_key"),
                dir.join("paypal_client_secret"),
            ),
        )
        .unwrap();
        assert_eq!(c.upstream.api_key, "sk-from-credential");
        assert_eq!(c.paypal.client_secret, "pp-secret");
        assert_eq!(c.upstream.api_key_file, Some(dir.join("deepseek_api_key")));
    });
}

#[test]
fn a_secret_file_can_be_named_by_the_environment() {
    jailed(|jail| {
        jail.create_file("key", "sk-env-file\n").unwrap();
        let path = jail.directory().join("key");
        jail.set_env("MODELRELAY_UPSTREAM__API_KEY_FILE", path.display());
        let c = Config::from_figment(Config::figment(None)).unwrap();
        assert_eq!(c.upstream.api_key, "sk-env-file");
    });
}

#[test]
fn a_secret_and_its_file_together_are_an_error() {
    jailed(|jail| {
        jail.create_file("key", "sk-file").unwrap();
        jail.create_file("pp", "pp-file").unwrap();
        let dir = jail.directory().to_path_buf();
        let err = error_of(
            jail,
            &format!(
                "[upstream]\napi_key = \"sk-inline\"\napi_key_file = {:?}\n",
                dir.join("key")
            ),
        );
        assert!(
            err.contains("upstream.api_key") && err.contains("upstream.api_key_file"),
            "{err}"
        );
        assert!(err.contains("not both"), "{err}");
        let err = error_of(
            jail,
            &format!(
                "[paypal]\nclient_secret = \"inline\"\nclient_secret_file = {:?}\n",
                dir.join("pp")
            ),
        );
        assert!(err.contains("paypal.client_secret_file"), "{err}");
        assert!(err.contains("not both"), "{err}");
        // Where the inline one may have come from.
        assert!(err.contains("MODELRELAY_PAYPAL__CLIENT_SECRET"), "{err}");
    });
}

/// An empty secret file (whitespace, a byte-order mark) is refused by name: it was read as no
/// secret at all ("no upstream key configured", naming no file).
#[test]
fn an_empty_secret_file_is_an_error_naming_it() {
    jailed(|jail| {
        jail.create_file("empty", " \n").unwrap();
        let empty = jail.directory().join("empty");
        let err = load_file(jail, &format!("[upstream]\napi_key_file = {empty:?}\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::EmptySecretFile { key, path } if key == "upstream.api_key_file" && path == &empty),
            "{err:?}"
        );
        assert!(err.to_string().contains("is empty"), "{err}");
    });
}

#[test]
fn a_missing_secret_file_is_an_error() {
    jailed(|jail| {
        let missing = jail.directory().join("no-such-credential");
        let err =
            load_file(jail, &format!("[upstream]\napi_key_file = {missing:?}\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::SecretFile { key, path, .. } if key == "upstream.api_key_file" && path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such-credential"), "{err}");
        let err = load_file(
            jail,
            &format!("[paypal]\nclient_secret_file = {missing:?}\n"),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::SecretFile { key, .. } if key == "paypal.client_secret_file"
            ),
            "{err:?}"
        );
    });
}

/// `serve --demo` brings its own DeepSeek and PayPal: their key files, which only the service
/// may read under systemd, are left unread (a real config was refused); the mail server's is
/// still read, as the demo sends mail through it.
#[test]
fn the_demo_reads_the_mail_servers_secret_alone() {
    jailed(|jail| {
        let missing = jail.directory().join("no-such-credential");
        let toml = format!(
            "[[upstream.accounts]]\nname = \"b\"\napi_key_file = {missing:?}\n\
             [paypal]\nclient_secret_file = {missing:?}\n"
        );
        jail.create_file("modelrelay.toml", &toml).unwrap();
        let path = jail.directory().join("modelrelay.toml");
        Config::load_with(Some(&path), SecretFiles::Demo).unwrap();
        assert!(Config::load_with(Some(&path), SecretFiles::Read).is_err());
        jail.create_file(
            "modelrelay.toml",
            &format!("{toml}[email]\nfrom = \"a@example.com\"\nsmtp_url_file = {missing:?}\n"),
        )
        .unwrap();
        let err = Config::load_with(Some(&path), SecretFiles::Demo).unwrap_err();
        assert!(
            matches!(&err, ConfigError::SecretFile { key, .. } if key == "email.smtp_url_file"),
            "{err:?}"
        );
    });
}

#[test]
fn redacted_toml_hides_secrets_only() {
    jailed(|jail| {
        jail.create_file("pp", "pp-very-secret\n").unwrap();
        jail.set_env("MODELRELAY_UPSTREAM__API_KEY", "sk-very-secret");
        let pp = jail.directory().join("pp");
        let c = load_file(
            jail,
            &format!(
                "[paypal]\nclient_id = \"client-visible\"\nwebhook_id = \"WH-visible\"\nclient_secret_file = {pp:?}\n"
            ),
        )
        .unwrap();
        assert_eq!(c.upstream.api_key, "sk-very-secret");
        let text = c.redacted_toml();
        assert!(!text.contains("sk-very-secret"), "{text}");
        assert!(!text.contains("pp-very-secret"), "{text}");
        // The one read from its file is shown as the file alone.
        assert_eq!(text.matches("<redacted>").count(), 1, "{text}");
        assert!(text.contains("client_secret = \"\""), "{text}");
        assert!(text.contains("client_secret_file = "), "{text}");
        for visible in [
            "client-visible",
            "WH-visible",
            "127.0.0.1:8080",
            "https://api.deepseek.com",
            "deepseek-v4-pro",
            "01:00-04:00",
            "\"0.60\"",
        ] {
            assert!(text.contains(visible), "{visible:?} missing from:\n{text}");
        }
        // The original is untouched.
        assert_eq!(c.upstream.api_key, "sk-very-secret");

        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.upstream.api_key, "<redacted>");
        assert_eq!(back.paypal.client_secret, "");
        assert_eq!(back.paypal.client_id, "client-visible");
        assert_eq!(back.paypal.client_secret_file, Some(pp));
        assert_eq!(back.plans["pro"].price_usd, Usd::from_dollars(50));
        assert_eq!(
            nanos(&back.models["deepseek-v4-flash"].input_cache_hit),
            [3_000_000, 6_000_000]
        );
        assert_eq!(back.redacted_toml(), text);
    });
}

#[test]
fn redacted_toml_of_the_defaults_reloads_as_the_same_config() {
    jailed(|jail| {
        let c = Config::from_figment(Config::figment(None)).unwrap();
        let text = c.redacted_toml();
        let again = load_file(jail, &text).unwrap();
        assert_eq!(again.redacted_toml(), text);
    });
}

#[test]
fn the_smtp_url_is_a_secret_file_needs_a_sender_and_is_redacted() {
    jailed(|jail| {
        jail.create_file("smtp_url", "smtps://user:hunter2@smtp.example.com:465\n")
            .unwrap();
        let path = jail.directory().join("smtp_url");
        let c = load_file(
            jail,
            &format!("[email]\nsmtp_url_file = {path:?}\nfrom = \"Shop <billing@example.com>\"\n"),
        )
        .unwrap();
        assert!(c.email.enabled());
        assert_eq!(
            c.email.smtp_url,
            "smtps://user:hunter2@smtp.example.com:465"
        );
        let shown = c.redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("smtp_url = \"\""), "{shown}");
        assert!(shown.contains("smtp_url_file = "), "{shown}");

        let err = load_file(jail, "[email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("email.from must be set"), "{err}");
        let err = load_file(
            jail,
            "[email]\nsmtp_url = \"http://user:secret@x\"\nfrom = \"not an address\"\nsend_per_minute = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("email.smtp_url must start with smtp:// or smtps://"),
            "{err}"
        );
        assert!(!err.contains("secret"), "the URL is never echoed: {err}");
        assert!(err.contains("email.from = \"not an address\""), "{err}");
        assert!(
            err.contains("email.send_per_minute must be at least 1"),
            "{err}"
        );
        // Off by default.
        assert!(!Config::default().email.enabled());
    });
}

#[test]
fn a_key_a_header_cannot_carry_is_refused_without_printing_it() {
    jailed(|jail| {
        // A line break inside the key (a file's trailing one is trimmed, an inner one is not).
        jail.create_file("key", "sk-first-half\nsk-second-half\n")
            .unwrap();
        let path = jail.directory().join("key");
        let err = error_of(jail, &format!("[upstream]\napi_key_file = {path:?}\n"));
        assert!(
            err.contains("\"default\"") && err.contains("cannot carry"),
            "{err}"
        );
        assert!(!err.contains("sk-first-half"), "{err}");
        let err = error_of(
            jail,
            "[[upstream.accounts]]\nname = \"two\"\napi_key = \"sk-a\\u0007b\"\n",
        );
        assert!(
            err.contains("\"two\"") && err.contains("cannot carry"),
            "{err}"
        );
        // A key a header carries is not refused.
        let c = load_file(jail, "[upstream]\napi_key = \"sk-abc_DEF-123\"\n").unwrap();
        assert_eq!(c.upstream.api_key, "sk-abc_DEF-123");
    });
}

#[test]
fn an_accounts_key_file_that_cannot_be_read_names_the_account() {
    jailed(|jail| {
        let missing = jail.directory().join("gone");
        let err = load_file(
            jail,
            &format!("[[upstream.accounts]]\nname = \"spare\"\napi_key_file = {missing:?}\n"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"spare\""), "{err}");
    });
}

#[test]
fn two_accounts_with_one_key_are_warned_about() {
    jailed(|jail| {
        jail.create_file("k", "sk-same\n").unwrap();
        let path = jail.directory().join("k");
        let c = load_file(
            jail,
            &format!(
                "[[upstream.accounts]]\nname = \"a\"\napi_key = \"sk-same\"\n\
                 [[upstream.accounts]]\nname = \"b\"\napi_key_file = {path:?}\n\
                 [[upstream.accounts]]\nname = \"c\"\napi_key = \"sk-other\"\n"
            ),
        )
        .unwrap();
        let w: Vec<String> = c
            .warnings()
            .into_iter()
            .filter(|w| w.contains("upstream accounts"))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"a\" and \"b\""), "{w:?}");
    });
}

/// What `serve` would say only in its log, `check-config` says too: no PayPal client id (no
/// payments), no webhook id (no refunds or pending payments), a sender with no SMTP server.
#[test]
fn a_storefront_that_cannot_take_payments_or_send_mail_is_warned_about() {
    jailed(|jail| {
        let says = |toml: &str| -> Vec<String> {
            let c = load_file(jail, &format!("[upstream]\napi_key = \"sk-x\"\n{toml}")).unwrap();
            c.warnings()
        };
        let w = says("");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("paypal.client_id is empty"), "{w:?}");
        // A client id without its secret: PayPal refuses every call.
        let w = says("[paypal]\nclient_id = \"id\"\nwebhook_id = \"W\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("paypal.client_secret is empty"), "{w:?}");
        let w = says("[paypal]\nclient_id = \"id\"\nclient_secret = \"s\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("paypal.webhook_id is empty"), "{w:?}");
        let paid = "[paypal]\nclient_id = \"id\"\nclient_secret = \"s\"\nwebhook_id = \"W\"\n";
        assert!(says(paid).is_empty(), "{:?}", says(paid));
        let w = says(&format!("{paid}[email]\nfrom = \"billing@example.com\"\n"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("mail is off"), "{w:?}");
    });
}

#[test]
fn a_secret_file_that_serve_would_refuse_is_refused_by_the_check() {
    jailed(|jail| {
        jail.create_file("short", &"ab".repeat(31)).unwrap();
        let path = jail.directory().join("short");
        let err = error_of(jail, &format!("[server]\nsecret_file = {path:?}\n"));
        assert!(err.contains("must hold 64 hex characters"), "{err}");
        // With a byte-order mark and a line end, a good one passes.
        jail.create_file("good", &format!("\u{feff}{}\r\n", "ab".repeat(32)))
            .unwrap();
        let path = jail.directory().join("good");
        load_file(jail, &format!("[server]\nsecret_file = {path:?}\n")).unwrap();
    });
}

/// The warnings about `topic` of a config with an upstream key and `toml`.
fn warnings_about(jail: &Jail, toml: &str, topic: &str) -> Vec<String> {
    let c = load_file(jail, &format!("[upstream]\napi_key = \"sk-x\"\n{toml}")).unwrap();
    c.warnings()
        .into_iter()
        .filter(|w| w.contains(topic))
        .collect()
}

/// `listen` moved and `public_url` left at its default: the pages would name a port nothing
/// answers on, so it is warned about; set together, nothing is said.
#[test]
fn a_public_url_left_behind_by_listen_is_warned_about() {
    jailed(|jail| {
        let says = |toml: &str| warnings_about(jail, toml, "public_url");
        let w = says("[server]\nlisten = \"127.0.0.1:9999\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"127.0.0.1:9999\""), "{w:?}");
        assert!(says("").is_empty());
        let both =
            "[server]\nlisten = \"127.0.0.1:9999\"\npublic_url = \"https://api.example.com\"\n";
        assert!(says(both).is_empty());
    });
}

/// An admin group that does not exist is a warning (the daemon still serves), not an error.
#[test]
fn an_unknown_admin_group_is_warned_about() {
    jailed(|jail| {
        let w = warnings_about(
            jail,
            "[server]\nadmin_group = \"no-such-group-here\"\n",
            "admin_group",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("no such group"), "{w:?}");
    });
}

/// A drain as long as the unit's stop timeout is warned about (systemd would kill the daemon
/// mid-drain); the default says nothing.
#[test]
fn a_drain_past_the_units_stop_timeout_is_warned_about() {
    jailed(|jail| {
        let says = |toml: &str| warnings_about(jail, toml, "drain_secs");
        assert_eq!(says("[server]\ndrain_secs = 100\n").len(), 1);
        assert!(says("[server]\ndrain_secs = 79\n").is_empty());
        assert!(says("").is_empty());
    });
}

/// Holidays all in the past are warned about (peak prices would apply on next year's); one to
/// come is enough to say nothing.
#[test]
fn off_peak_dates_all_past_are_warned_about() {
    jailed(|jail| {
        let says = |dates: &str| {
            let toml = format!("[pricing]\noff_peak_dates = [{dates}]\n");
            warnings_about(jail, &toml, "off_peak_dates")
        };
        let w = says("\"2020-01-01\", \"2020-10-01\"");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("the last is 2020-10-01"), "{w:?}");
        assert!(says("\"2020-01-01\", \"2999-01-01\"").is_empty());
        assert!(says("").is_empty());
    });
}

/// A body limit no real conversation fits in, and two plans on sale under one name, are warned
/// about (both were accepted in silence; found by an independent check); the defaults, and a
/// twin name on a plan withdrawn from sale, say nothing.
#[test]
fn a_tiny_body_limit_and_twin_plan_names_are_warned_about() {
    jailed(|jail| {
        let w = warnings_about(jail, "[server]\nmax_body_bytes = 10\n", "max_body_bytes");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("max_body_bytes = 10 is below 65536"), "{w:?}");
        assert!(
            warnings_about(jail, "[server]\nmax_body_bytes = 65536\n", "max_body_bytes").is_empty()
        );
        assert!(warnings_about(jail, "", "max_body_bytes").is_empty());
        let w = warnings_about(jail, "[plans.trial]\nname = \"starter\"\n", "both on sale");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("plans.starter (\"Starter\") and plans.trial (\"starter\") are both"),
            "{w:?}"
        );
        let withdrawn = "[plans.trial]\nname = \"Starter\"\nenabled = false\n";
        assert!(warnings_about(jail, withdrawn, "both on sale").is_empty());
        assert!(warnings_about(jail, "", "both on sale").is_empty());
    });
}

/// A plan whose one key may take all the accounts' room for one of its models is warned about;
/// the defaults (32 against 2 500 and 500) say nothing.
#[test]
fn a_plan_whose_one_key_can_fill_the_accounts_is_warned_about() {
    jailed(|jail| {
        let w = warnings_about(
            jail,
            "[models.deepseek-v4-flash]\nmax_in_flight = 20\n",
            "is at least the upstream accounts' room",
        );
        // Every built-in plan includes flash.
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(
            w.iter().any(|w| w.starts_with(
                "plans.trial.max_in_flight = 32 is at least the upstream accounts' room for \
             deepseek-v4-flash (20 in all)"
            )),
            "{w:?}"
        );
        assert!(warnings_about(jail, "", "upstream accounts' room").is_empty());
        let lowered = "[models.deepseek-v4-flash]\nmax_in_flight = 20\n\
                       [plans.trial]\nmax_in_flight = 19\n[plans.starter]\nmax_in_flight = 19\n\
                       [plans.standard]\nmax_in_flight = 19\n[plans.pro]\nmax_in_flight = 19\n";
        assert!(warnings_about(jail, lowered, "upstream accounts' room").is_empty());
    });
}

/// A plan id typed wrong (here through the environment) is a new plan lacking its fields: the
/// error says so and names the built-in plans.
#[test]
fn a_mistyped_plan_id_says_it_made_a_new_plan() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_PLANS__TRAIL__RPM", "10");
        let err = error_of(jail, "[upstream]\napi_key = \"sk-x\"\n");
        assert!(err.contains("missing key"), "{err}");
        assert!(
            err.contains("plan \"trail\" is not a built-in one (pro, standard, starter, trial)"),
            "{err}"
        );
    });
}

/// A line TOML cannot read, or a value that did not parse, is quoted in the error — never a
/// secret on it (the journal got the DeepSeek key at every restart; found by an independent
/// check). A `*_file` path is not a secret and stays.
#[test]
fn parse_errors_show_no_secret_they_quote() {
    jailed(|jail| {
        for toml in [
            "[upstream]\napi_key = \"sk-a1b2c3d4e5f60718293a4b5c6d7e8f90\n",
            "[paypal]\nclient_secret = \"EPPSECRETa1b2c3\" extra\n",
            "[email]\nsmtp_url = smtps://user:hunter2@mail.example:465\n",
            "[paypal]\n'client_secret' = \"EPPSECRETa1b2c3\" x\n",
            "[paypal]\nclient_secret = \"\"\"\nEPPSECRETa1b2c3",
        ] {
            let e = error_of(jail, toml);
            for secret in ["a1b2c3d4e5f6", "EPPSECRET", "hunter2"] {
                assert!(!e.contains(secret), "{e}");
            }
            assert!(e.contains("not shown"), "{e}");
        }
        let e = error_of(
            jail,
            "[upstream]\napi_key_file = \"/run/credentials/x\" oops\n",
        );
        assert!(e.contains("/run/credentials/x"), "{e}");
        // A URL's user and password, quoted by a check after parsing.
        let e = error_of(jail, "[upstream]\nbase_url = \"ftp://u:hunter2@h\"\n");
        assert!(
            e.contains("ftp://<redacted>@h") && !e.contains("hunter2"),
            "{e}"
        );
        jail.set_env(
            "MODELRELAY_UPSTREAM__ACCOUNTS",
            r#"[{name="z",api_key="sk-a1b2c3d4e5f60718293a4b5c6d7e8f90" weight=2}]"#,
        );
        let e = error_of(jail, "");
        assert!(!e.contains("a1b2c3d4e5f6"), "{e}");
    });
}
