//! Layering (defaults → file → env) and merging here; secrets, validation and the example
//! config in the submodules. Each runs inside a `figment::Jail` (own working directory and
//! environment).

use std::path::PathBuf;

use figment::Jail;

use super::*;

mod example;
mod secrets;
mod validation;

/// Run `f` in a `figment::Jail`: its own working directory and environment, restored after.
#[allow(
    clippy::result_large_err,
    reason = "the closure's error type is figment's, fixed by Jail"
)]
fn jailed(f: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        f(jail);
        Ok(())
    });
}

/// Write `modelrelay.toml` into the jail and load it as `--config`.
fn load_file(jail: &Jail, toml: &str) -> Result<Config, ConfigError> {
    jail.create_file("modelrelay.toml", toml).unwrap();
    Config::load(Some(&jail.directory().join("modelrelay.toml")))
}

/// The message of a load that must fail.
fn error_of(jail: &Jail, toml: &str) -> String {
    match load_file(jail, toml) {
        Ok(_) => panic!("config should be refused:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

fn nanos(prices: &[Usd; 2]) -> [i64; 2] {
    prices.map(Usd::nanos)
}

#[test]
fn defaults_are_those_of_the_spec() {
    jailed(|_jail| {
        let c = Config::from_figment(Config::figment(None)).unwrap();

        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.server.data_dir, PathBuf::from("data"));
        assert_eq!(
            c.server.admin_socket,
            Some(PathBuf::from("data/modelrelay.sock"))
        );
        assert_eq!(c.admin_socket(), PathBuf::from("data/modelrelay.sock"));
        assert_eq!(c.server.admin_group, None);
        assert_eq!(c.server.secret_file, None);
        assert_eq!(c.server.max_body_bytes, 8_388_608);

        assert_eq!(c.upstream.base_url, "https://api.deepseek.com");
        assert_eq!(c.upstream.api_key, "");
        assert_eq!(c.upstream.api_key_file, None);
        assert_eq!(c.upstream.connect_timeout_secs, 10);
        assert_eq!(c.upstream.idle_timeout_secs, 120);
        assert_eq!(c.upstream.request_timeout_secs, 900);

        assert_eq!(c.paypal.env, PaypalEnv::Sandbox);
        assert_eq!(c.paypal.client_id, "");
        assert_eq!(c.paypal.client_secret, "");
        assert_eq!(c.paypal.client_secret_file, None);
        assert_eq!(c.paypal.webhook_id, "");
        assert_eq!(c.paypal.api_base, "");

        assert_eq!(c.pricing.peak_hours_utc, ["01:00-04:00", "06:00-10:00"]);
        assert_eq!(c.pricing.peak_days, ["mon", "tue", "wed", "thu", "fri"]);
        assert!(c.peak_schedule().is_ok());

        assert_eq!(
            c.models.keys().collect::<Vec<_>>(),
            ["deepseek-v4-flash", "deepseek-v4-pro"]
        );
        let flash = &c.models["deepseek-v4-flash"];
        assert_eq!(flash.upstream_model, "deepseek-v4-flash");
        assert_eq!(flash.max_output_tokens, 32768);
        assert_eq!(nanos(&flash.input_cache_hit), [3_000_000, 6_000_000]);
        assert_eq!(nanos(&flash.input_cache_miss), [150_000_000, 300_000_000]);
        assert_eq!(nanos(&flash.output), [600_000_000, 1_200_000_000]);
        let pro = &c.models["deepseek-v4-pro"];
        assert_eq!(pro.upstream_model, "deepseek-v4-pro");
        assert_eq!(pro.max_output_tokens, 32768);
        assert_eq!(nanos(&pro.input_cache_hit), [22_000_000, 44_000_000]);
        assert_eq!(nanos(&pro.input_cache_miss), [660_000_000, 1_320_000_000]);
        assert_eq!(nanos(&pro.output), [1_980_000_000, 3_960_000_000]);

        let flash_only = vec!["deepseek-v4-flash".to_string()];
        let both = vec![
            "deepseek-v4-flash".to_string(),
            "deepseek-v4-pro".to_string(),
        ];
        let expected = [
            ("pro", "Pro", 50_000_000_000, 30, &both),
            ("standard", "Standard", 20_000_000_000, 60, &flash_only),
            ("starter", "Starter", 5_000_000_000, 30, &flash_only),
            ("trial", "Trial", 1_000_000_000, 30, &flash_only),
        ];
        assert_eq!(c.plans.len(), expected.len());
        for (id, name, price, rpm, models) in expected {
            let p = &c.plans[id];
            assert_eq!(p.name, name, "{id}");
            assert_eq!(p.price_usd.nanos(), price, "{id}");
            assert_eq!(p.budget_usd.nanos(), price, "{id}");
            assert_eq!(p.rpm, rpm, "{id}");
            assert_eq!(&p.models, models, "{id}");
            assert!(p.enabled, "{id}");
        }
    });
}

#[test]
fn load_without_a_file_uses_the_defaults() {
    jailed(|_jail| {
        assert_eq!(Config::locate(None), None);
        let c = Config::load(None).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.plans.len(), 4);
    });
}

#[test]
fn a_modelrelay_toml_in_the_working_directory_is_read() {
    jailed(|jail| {
        jail.create_file("modelrelay.toml", "[server]\nlisten = \"127.0.0.1:9001\"\n")
            .unwrap();
        assert_eq!(Config::locate(None), Some(PathBuf::from("modelrelay.toml")));
        assert_eq!(Config::load(None).unwrap().server.listen, "127.0.0.1:9001");
    });
}

#[test]
fn an_explicit_file_that_does_not_exist_is_an_error() {
    jailed(|jail| {
        let missing = jail.directory().join("nope.toml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(&err, ConfigError::MissingFile(p) if p == &missing));
        assert!(err.to_string().contains("nope.toml"), "{err}");
    });
}

#[test]
fn the_config_file_variable_names_the_file_and_is_not_a_key() {
    jailed(|jail| {
        jail.create_file("elsewhere.toml", "[server]\nlisten = \"127.0.0.1:9002\"\n")
            .unwrap();
        let path = jail.directory().join("elsewhere.toml");
        jail.set_env(ENV_CONFIG_FILE, path.display());
        assert_eq!(Config::locate(None), Some(path.clone()));
        // `MODELRELAY_CONFIG` has the env prefix but is not `config = …` in the figment.
        let c = Config::load(None)
            .unwrap_or_else(|e| panic!("MODELRELAY_CONFIG must not be read as a key: {e}"));
        assert_eq!(c.server.listen, "127.0.0.1:9002");
        // `--config` wins over the variable.
        jail.create_file("explicit.toml", "[server]\nlisten = \"127.0.0.1:9003\"\n")
            .unwrap();
        let explicit = jail.directory().join("explicit.toml");
        let c = Config::from_figment(Config::figment(Some(&explicit)))
            .unwrap_or_else(|e| panic!("MODELRELAY_CONFIG must not be read as a key: {e}"));
        assert_eq!(c.server.listen, "127.0.0.1:9003");
    });
}

/// A file touching every section: some keys of built-in entries, a new model and a new plan.
const MERGED_FILE: &str = r#"
            [server]
            listen = "0.0.0.0:9000"
            public_url = "https://relay.example.com/"
            data_dir = "/srv/relay"

            [upstream]
            base_url = "https://proxy.example.com/"
            idle_timeout_secs = 30

            [paypal]
            env = "live"
            client_id = "client-abc"

            [pricing]
            peak_days = ["sat", "sun"]

            [models.deepseek-v4-flash]
            output = ["0.70", "1.40"]

            [models.house-model]
            input_cache_hit = ["0.01", "0.01"]
            input_cache_miss = ["0.10", "0.10"]
            output = ["0.50", "0.50"]

            [plans.trial]
            rpm = 10

            [plans.pro]
            enabled = false

            [plans.team]
            name = "Team"
            price_usd = "100"
            budget_usd = "120.50"
            rpm = 120
            models = ["deepseek-v4-pro", "house-model"]
            "#;

#[test]
fn the_file_overrides_defaults_and_merges_entry_by_entry() {
    jailed(|jail| {
        let c = load_file(jail, MERGED_FILE).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        // A trailing slash is dropped so paths can be appended.
        assert_eq!(c.server.public_url, "https://relay.example.com");
        assert_eq!(c.upstream.base_url, "https://proxy.example.com");
        // The socket follows the data dir when not set.
        assert_eq!(
            c.admin_socket(),
            PathBuf::from("/srv/relay/modelrelay.sock")
        );
        // Untouched keys of a section keep their defaults.
        assert_eq!(c.server.max_body_bytes, 8_388_608);
        assert_eq!(c.upstream.idle_timeout_secs, 30);
        assert_eq!(c.upstream.connect_timeout_secs, 10);
        assert_eq!(c.upstream.request_timeout_secs, 900);
        assert_eq!(c.paypal.env, PaypalEnv::Live);
        assert_eq!(c.paypal.client_id, "client-abc");
        assert_eq!(c.pricing.peak_days, ["sat", "sun"]);
        assert_eq!(c.pricing.peak_hours_utc, ["01:00-04:00", "06:00-10:00"]);

        let flash = &c.models["deepseek-v4-flash"];
        assert_eq!(nanos(&flash.output), [700_000_000, 1_400_000_000]);
        assert_eq!(nanos(&flash.input_cache_miss), [150_000_000, 300_000_000]);
        assert_eq!(flash.upstream_model, "deepseek-v4-flash");
        let house = &c.models["house-model"];
        assert_eq!(house.upstream_model, "house-model");
        assert_eq!(house.max_output_tokens, 32768);

        let trial = &c.plans["trial"];
        assert_eq!(trial.rpm, 10);
        assert_eq!(trial.name, "Trial");
        assert_eq!(trial.price_usd, Usd::from_dollars(1));
        assert_eq!(trial.budget_usd, Usd::from_dollars(1));
        assert_eq!(trial.models, ["deepseek-v4-flash"]);
        assert!(trial.enabled);
        assert!(!c.plans["pro"].enabled);
        assert_eq!(c.plans["pro"].price_usd, Usd::from_dollars(50));
        let team = &c.plans["team"];
        assert_eq!(team.price_usd.nanos(), 100_000_000_000);
        assert_eq!(team.budget_usd.nanos(), 120_500_000_000);
        assert!(team.enabled);
        assert_eq!(c.plans.len(), 5);
    });
}

#[test]
fn the_environment_overrides_the_file() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_SERVER__LISTEN", "127.0.0.1:7000");
        jail.set_env("MODELRELAY_UPSTREAM__API_KEY", "sk-from-env");
        jail.set_env("MODELRELAY_PLANS__TRIAL__PRICE_USD", "2.50");
        jail.set_env("MODELRELAY_PLANS__STARTER__RPM", "45");
        jail.set_env("MODELRELAY_PRICING__PEAK_DAYS", r#"["sat", "sun"]"#);
        let c = load_file(
            jail,
            r#"
            [server]
            listen = "0.0.0.0:9000"
            public_url = "https://relay.example.com"
            [upstream]
            api_key = "sk-from-file"
            [plans.trial]
            price_usd = "3.00"
            rpm = 12
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.server.public_url, "https://relay.example.com");
        assert_eq!(c.upstream.api_key, "sk-from-env");
        // Money from the environment is exact, though figment reads `2.50` as a float.
        assert_eq!(c.plans["trial"].price_usd.nanos(), 2_500_000_000);
        assert_eq!(c.plans["trial"].rpm, 12);
        assert_eq!(c.plans["trial"].budget_usd, Usd::from_dollars(1));
        assert_eq!(c.plans["starter"].rpm, 45);
        assert_eq!(c.plans["starter"].name, "Starter");
        assert_eq!(c.pricing.peak_days, ["sat", "sun"]);
    });
}

#[test]
fn the_environment_overrides_the_defaults_without_a_file() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_PLANS__TRIAL__PRICE_USD", "2.50");
        jail.set_env("MODELRELAY_PLANS__TRIAL__BUDGET_USD", "0.000000001");
        jail.set_env("MODELRELAY_SERVER__MAX_BODY_BYTES", "1024");
        let c = Config::from_figment(Config::figment(None)).unwrap();
        assert_eq!(c.plans["trial"].price_usd.nanos(), 2_500_000_000);
        assert_eq!(c.plans["trial"].budget_usd.nanos(), 1);
        assert_eq!(c.server.max_body_bytes, 1024);
    });
}

#[test]
fn unknown_keys_are_refused_and_named() {
    jailed(|jail| {
        // Named in full, as written in the file, without figment's profile prefix.
        for (toml, key) in [
            ("bogus = 1\n", "bogus"),
            ("[server]\nlisen = \"127.0.0.1:1\"\n", "server.lisen"),
            ("[upstream]\napi_keyy = \"x\"\n", "upstream.api_keyy"),
            ("[paypal]\nsecret = \"x\"\n", "paypal.secret"),
            ("[pricing]\npeak_hours = []\n", "pricing.peak_hours"),
            (
                "[models.deepseek-v4-flash]\ninput = [\"1\", \"1\"]\n",
                "models.deepseek-v4-flash.input",
            ),
            ("[plans.trial]\nrmp = 5\n", "plans.trial.rmp"),
        ] {
            let err = error_of(jail, toml);
            assert!(
                err.contains(&format!("modelrelay.toml: unknown key {key} (known here: ")),
                "error for {toml:?} should name {key}: {err}"
            );
            assert!(!err.contains("default."), "{err}");
        }
    });
}

#[test]
fn unknown_keys_from_the_environment_are_refused() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_SERVER__LISSEN", "127.0.0.1:1");
        let err = Config::from_figment(Config::figment(None)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown key MODELRELAY_SERVER__LISSEN (known here: listen,"),
            "{err}"
        );
    });
}

#[test]
fn wrong_types_are_refused() {
    jailed(|jail| {
        let err = error_of(jail, "[server]\nmax_body_bytes = \"lots\"\n");
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = error_of(jail, "[paypal]\nenv = \"production\"\n");
        assert!(err.contains("production"), "{err}");
        let err = error_of(jail, "[plans.trial]\nprice_usd = \"1.5.0\"\n");
        assert!(err.contains("1.5.0"), "{err}");
        let err = error_of(jail, "[plans.trial]\nprice_usd = \"0.0000000001\"\n");
        assert!(err.contains("more than 9 decimal places"), "{err}");
        // What was found, as written: not serde's "signed int `-3`".
        let err = error_of(jail, "[server]\nmax_connections = -3\n");
        assert!(err.ends_with("found -3"), "{err}");
        // Not "0 or more": 0 is refused for this key too.
        let err = error_of(jail, "[upstream]\nprobe_secs = -1\n");
        assert!(
            err.contains("expected a whole number, not negative, found -1"),
            "{err}"
        );
        let err = error_of(jail, "[server]\nlisten = 8080\n");
        assert!(err.ends_with("found 8080"), "{err}");
        // A date without quotes is a TOML date, which comes through as a table: said so.
        let err = error_of(jail, "[pricing]\noff_peak_dates = [2026-12-25]\n");
        assert!(
            err.contains("off_peak_dates") && err.contains("put it in quotes"),
            "{err}"
        );
        // A name too long says so, and is repeated clipped (it said only which characters).
        let long = "p".repeat(400);
        let err = error_of(
            jail,
            &format!(
                "[plans.{long}]\nname = \"x\"\nprice_usd = \"1\"\nbudget_usd = \"1\"\nrpm = 1\nmodels = [\"deepseek-v4-flash\"]\n"
            ),
        );
        assert!(err.contains("1 to 64") && !err.contains(&long), "{err}");
        let err = error_of(jail, "[server]\ndata_dir = \"\"\n");
        assert!(err.contains("server.data_dir must not be empty"), "{err}");
        jail.create_file("afile", "x").unwrap();
        let err = error_of(jail, "[server]\ndata_dir = \"afile\"\n");
        assert!(err.contains("is a file, not a directory"), "{err}");
        let err = error_of(jail, "[server]\ndata_dir = \"afile/sub/dir\"\n");
        assert!(err.contains("cannot be made: \"afile\" is a file"), "{err}");
        let err = error_of(jail, "[server]\ndata_dir = \" \"\n");
        assert!(err.contains("server.data_dir must not be empty"), "{err}");
        let err = error_of(jail, "[server]\ndata_dir = \"data \"\n");
        assert!(err.contains("begins or ends with a space"), "{err}");
        let err = error_of(jail, "[upstream]\nlow_balance_usd = \"-5\"\n");
        assert!(
            err.contains("upstream.low_balance_usd") && err.contains("negative"),
            "{err}"
        );
    });
}

#[test]
fn a_log_level_that_is_no_level_is_refused_and_filters_are_taken() {
    jailed(|jail| {
        let err = error_of(jail, "[server]\nlog_level = \"loud\"\n");
        assert!(err.contains("\"loud\" is not a level"), "{err}");
        let err = error_of(jail, "[server]\nlog_level = \"warn,verbose\"\n");
        assert!(err.contains("\"verbose\" is not a level"), "{err}");
        for ok in [
            "info",
            "WARN",
            "warn,modelrelay=debug",
            "off",
            "modelrelay[x]=trace",
        ] {
            let c = load_file(jail, &format!("[server]\nlog_level = {ok:?}\n"));
            assert!(c.is_ok(), "{ok}: {:?}", c.err());
        }
    });
}

#[test]
fn every_pricing_problem_is_listed_not_just_the_first() {
    jailed(|jail| {
        let err = error_of(
            jail,
            "[pricing]\npeak_hours_utc = [\"25:00-26:00\"]\npeak_days = [\"someday\"]\n\
             off_peak_dates = [\"2026-13-01\"]\n",
        );
        for part in [
            "pricing.peak_hours_utc",
            "pricing.peak_days",
            "pricing.off_peak_dates",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    });
}

#[test]
fn a_secret_that_does_not_parse_is_not_shown_in_the_error() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_PAYPAL__CLIENT_SECRET", "00012345");
        let err = Config::from_figment(Config::figment(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("MODELRELAY_PAYPAL__CLIENT_SECRET: expected a string (not shown"),
            "{err}"
        );
        assert!(!err.contains("12345"), "{err}");
    });
}

/// A text setting given digits alone in the environment (read as a number) says how to quote
/// it; quoted, it is read as the text.
#[test]
fn a_text_setting_read_as_a_number_from_the_environment_says_to_quote_it() {
    jailed(|jail| {
        jail.set_env("MODELRELAY_PLANS__TRIAL__NAME", "2026");
        let err = Config::from_figment(Config::figment(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "MODELRELAY_PLANS__TRIAL__NAME: expected a string, found 2026 (in the environment"
            ),
            "{err}"
        );
        assert!(
            err.contains(r#"MODELRELAY_PLANS__TRIAL__NAME='"…"'"#),
            "{err}"
        );
        jail.set_env("MODELRELAY_PLANS__TRIAL__NAME", "\"2026\"");
        let c = Config::from_figment(Config::figment(None)).unwrap();
        assert_eq!(c.plans["trial"].name, "2026");
    });
}

/// A text inside a list given whole in one variable is quoted inside its value: the hint names
/// that variable, not one of the element's own (which does not exist).
#[test]
fn a_text_read_as_a_number_inside_a_list_from_the_environment_is_quoted_in_the_value() {
    jailed(|jail| {
        jail.set_env(
            "MODELRELAY_UPSTREAM__ACCOUNTS",
            r#"[{name=1,api_key="sk-aaaaaaaaaaaaaaaa"}]"#,
        );
        let err = Config::from_figment(Config::figment(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a text inside MODELRELAY_UPSTREAM__ACCOUNTS's value"),
            "{err}"
        );
        assert!(!err.contains("__0__NAME='"), "{err}");
        jail.set_env(
            "MODELRELAY_UPSTREAM__ACCOUNTS",
            r#"[{name="1",api_key="sk-aaaaaaaaaaaaaaaa"}]"#,
        );
        let c = Config::from_figment(Config::figment(None)).unwrap();
        assert_eq!(c.upstream.accounts[0].name, "1");
    });
}

/// DeepSeek's `/v1` form of its base URL leads to the same API: the gateway calls the root for
/// the Anthropic endpoint and the balance, and the base as given (without a trailing slash) for
/// the OpenAI-shaped paths, which DeepSeek serves with and without `/v1`.
#[test]
fn a_base_url_ending_in_v1_is_deepseeks_root() {
    let mut c = Config::default();
    for (given, root, openai) in [
        (
            "https://api.deepseek.com/v1",
            "https://api.deepseek.com",
            "https://api.deepseek.com/v1",
        ),
        (
            "https://api.deepseek.com/v1/",
            "https://api.deepseek.com",
            "https://api.deepseek.com/v1",
        ),
        (
            "https://api.deepseek.com/V1",
            "https://api.deepseek.com",
            "https://api.deepseek.com/v1",
        ),
        (
            "https://api.deepseek.com/v1/v1",
            "https://api.deepseek.com/v1",
            "https://api.deepseek.com/v1/v1",
        ),
        (
            "https://api.deepseek.com/",
            "https://api.deepseek.com",
            "https://api.deepseek.com",
        ),
        (
            "http://127.0.0.1:9/proxy",
            "http://127.0.0.1:9/proxy",
            "http://127.0.0.1:9/proxy",
        ),
        (
            "http://127.0.0.1:9/v1x",
            "http://127.0.0.1:9/v1x",
            "http://127.0.0.1:9/v1x",
        ),
        // A host named `v1` is no `/v1` path (it was cut to `http:/`).
        ("http://v1", "http://v1", "http://v1"),
        ("http://v1/", "http://v1", "http://v1"),
        ("http://v1/v1", "http://v1", "http://v1/v1"),
        // In DeepSeek's case for its routes (`/V1/chat/completions` was a 502).
        (
            "https://api.deepseek.com/V1/",
            "https://api.deepseek.com",
            "https://api.deepseek.com/v1",
        ),
    ] {
        c.upstream.base_url = given.into();
        let a = &c.upstream.resolved_accounts()[0];
        assert_eq!(a.base_url, root, "{given}");
        assert_eq!(a.openai_base, openai, "{given}");
    }
}

/// `server.public_url` is the site's root: a path (`/v1` gave `/v1/v1/…` in /docs), a query or
/// a fragment is refused with the key named; a trailing slash is not.
#[test]
fn a_public_url_with_a_path_query_or_fragment_is_refused() {
    jailed(|jail| {
        for bad in [
            "https://api.example.com/v1",
            "https://example.com/relay",
            "https://example.com?x=1",
            "https://example.com/relay?x=1#frag",
            "https://user:pw@shop.example.com",
        ] {
            let err = error_of(jail, &format!("[server]\npublic_url = {bad:?}\n"));
            assert!(err.contains("must be the site's root"), "{bad}: {err}");
        }
        let c = load_file(
            jail,
            "[server]\npublic_url = \"https://api.example.com/\"\n",
        )
        .unwrap();
        assert_eq!(c.server.public_url, "https://api.example.com");
    });
}

/// A site behind a proxy, or taking live payments, whose public URL is still this machine's
/// own is warned about (README's proxy setup keeps `listen` at its default, so the warning on
/// a moved `listen` never fired); so is live PayPal over plain HTTP.
#[test]
fn a_public_site_whose_public_url_is_local_or_plain_http_is_warned_about() {
    let said = |c: &Config, what: &str| c.warnings().iter().any(|w| w.contains(what));
    let mut c = Config::default();
    assert!(!said(&c, "this machine's own address"));
    c.server.behind_proxy = true;
    assert!(said(&c, "this machine's own address"));
    c.server.behind_proxy = false;
    c.paypal.env = PaypalEnv::Live;
    assert!(said(&c, "this machine's own address"));
    c.server.public_url = "http://shop.example.com".into();
    assert!(!said(&c, "this machine's own address"));
    assert!(said(&c, "over plain HTTP"));
    c.server.public_url = "https://shop.example.com".into();
    assert!(!said(&c, "over plain HTTP"));
    c.server.public_url = "http://[::1]:8080".into();
    c.server.behind_proxy = true;
    assert!(said(&c, "this machine's own address"));
    // With `listen` moved too (found by a re-check: said only with the default `listen`).
    c.server.listen = "127.0.0.1:9000".into();
    c.server.public_url = "http://127.0.0.1:9000".into();
    assert!(said(&c, "this machine's own address"));
}

/// A price is a pair `[off-peak, peak]`: a third value was dropped silently, one alone refused
/// in serde's words; both say what is expected now, with the key.
#[test]
fn a_price_is_exactly_two_values() {
    jailed(|jail| {
        for (prices, found) in [(r#"["0.60", "1.2", "3"]"#, 3), (r#"["0.60"]"#, 1)] {
            let err = error_of(
                jail,
                &format!("[models.deepseek-v4-flash]\noutput = {prices}\n"),
            );
            assert!(
                err.contains("models.deepseek-v4-flash.output")
                    && err.contains(&format!(
                        "expected two prices, [off-peak, peak], found {found}"
                    )),
                "{err}"
            );
        }
    });
}

/// A `base_url` copied with one of DeepSeek's endpoints on it is warned about (every call would
/// go to `<that>/chat/completions`); DeepSeek's root, its `/v1`, and a proxy's own prefix are not.
#[test]
fn a_base_url_naming_an_endpoint_is_warned_about() {
    let said = |c: &Config| {
        c.warnings()
            .iter()
            .any(|w| w.contains("one of DeepSeek's endpoints"))
    };
    let mut c = Config::default();
    for fine in [
        "https://api.deepseek.com",
        "https://api.deepseek.com/v1",
        "https://proxy.example.com/deepseek",
        "https://proxy.example.com/deepseek/v1/",
    ] {
        c.upstream.base_url = fine.into();
        assert!(!said(&c), "{fine}");
    }
    for wrong in [
        "https://api.deepseek.com/chat/completions",
        "https://api.deepseek.com/v1/chat/completions/",
        "https://api.deepseek.com/anthropic",
        "https://api.deepseek.com/anthropic/v1/messages",
        "https://api.deepseek.com/Models",
    ] {
        c.upstream.base_url = wrong.into();
        assert!(said(&c), "{wrong}");
    }
    // DeepSeek's base for its beta features: chat answers there, the rest does not; with
    // `/v1` after it too (the root is then `…/beta`).
    for beta in [
        "https://api.deepseek.com/beta/v1",
        "https://api.deepseek.com/beta",
    ] {
        c.upstream.base_url = beta.into();
        let w = c.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("ends in \"/beta\", DeepSeek's base for its beta features")),
            "{beta}: {w:?}"
        );
    }
}

/// Accounts without a `base_url` of their own have `upstream.base_url`'s: that one is named,
/// once; an account's own is named as its own.
#[test]
fn an_endpoint_in_the_shared_base_url_is_said_of_upstream_base_url_once() {
    let mut c = Config::default();
    c.upstream.base_url = "https://api.deepseek.com/chat/completions".into();
    for (name, key) in [("a", "sk-aaaaaaaaaaaaaaaa"), ("b", "sk-bbbbbbbbbbbbbbbb")] {
        c.upstream.accounts.push(AccountConfig {
            name: name.into(),
            api_key: key.into(),
            api_key_file: None,
            base_url: String::new(),
            weight: 1,
            max_in_flight: Default::default(),
        });
    }
    let said: Vec<String> = c
        .warnings()
        .into_iter()
        .filter(|w| w.contains("one of DeepSeek's endpoints"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("upstream.base_url ends in"), "{said:?}");
    c.upstream.base_url = "https://api.deepseek.com".into();
    c.upstream.accounts[1].base_url = "https://proxy.example.com/anthropic".into();
    let said: Vec<String> = c
        .warnings()
        .into_iter()
        .filter(|w| w.contains("one of DeepSeek's endpoints"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("upstream account \"b\"'s base_url"),
        "{said:?}"
    );
}

/// `server.listen` with a host name says an IP address is wanted; other mistakes keep the
/// general text.
#[test]
fn a_listen_address_with_a_host_name_says_so() {
    let mut c = Config::default();
    c.server.listen = "localhost:8080".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("an IP address and port, not a host name"),
        "{err}"
    );
    c.server.listen = "127.0.0.1".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("is not an address such as"), "{err}");
}
