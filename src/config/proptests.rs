//! Properties of config loading (issue 11): `Config::load` of arbitrary text, and of
//! TOML-ish text made of the real sections and keys with values of every type and edge
//! (huge and negative numbers, NaN, money and window strings, arrays, inline tables, garbage
//! lines), never panics; it answers a config or an error that says something; a config it
//! accepts has a peak schedule and renders back to TOML.

use figment::Jail;
use proptest::prelude::*;

use super::{Config, ConfigError};
use crate::proptest_support::text;

/// Load `toml` as `--config`, in a jail (its own directory and environment).
#[allow(
    clippy::result_large_err,
    reason = "the closure's error type is figment's, fixed by Jail"
)]
fn load(toml: &str) -> Result<Config, ConfigError> {
    let mut loaded = None;
    Jail::expect_with(|jail| {
        jail.create_file("modelrelay.toml", toml)?;
        loaded = Some(Config::load(Some(
            &jail.directory().join("modelrelay.toml"),
        )));
        Ok(())
    });
    loaded.unwrap_or_else(|| Err(ConfigError::Invalid(vec!["jail did not run".into()])))
}

/// What a loaded config must satisfy, or what its error must say.
fn check(outcome: Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(c) => {
            prop_assert!(c.peak_schedule().is_ok());
            let rendered = c.redacted_toml();
            prop_assert!(
                toml::from_str::<toml::Table>(&rendered).is_ok(),
                "{}",
                rendered
            );
            let _ = c.warnings();
        }
        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
    }
    Ok(())
}

const SECTIONS: &[&str] = &[
    "",
    "[server]",
    "[upstream]",
    "[[upstream.accounts]]",
    "[paypal]",
    "[pricing]",
    "[models.deepseek-v4-flash]",
    "[models.\"x y\"]",
    "[plans.trial]",
    "[plans.new]",
    "[nope]",
    "[server.deeper]",
];

const KEYS: &[&str] = &[
    "accounts",
    "admin_group",
    "admin_socket",
    "aliases",
    "api_base",
    "api_key",
    "api_key_file",
    "balance_poll_secs",
    "base_url",
    "behind_proxy",
    "body_timeout_secs",
    "budget_usd",
    "client_id",
    "client_secret",
    "client_secret_file",
    "connect_timeout_secs",
    "data_dir",
    "drain_secs",
    "enabled",
    "env",
    "header_timeout_secs",
    "idle_timeout_secs",
    "input_cache_hit",
    "input_cache_miss",
    "listen",
    "log_level",
    "low_balance_usd",
    "max_body_bytes",
    "max_connections",
    "max_event_bytes",
    "max_in_flight",
    "max_output_tokens",
    "name",
    "off_peak_dates",
    "output",
    "peak_days",
    "peak_hours_utc",
    "price_usd",
    "probe_secs",
    "public_url",
    "queue_timeout_ms",
    "request_timeout_secs",
    "rpm",
    "secret_file",
    "upstream_model",
    "webhook_id",
    "weight",
    "unknown_key",
];

/// A TOML value as text: any type, with the config's meaningful strings and the edges.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "60", "1024", "-1", "9223372036854775807", "-9223372036854775808",
            "4294967296", "0.5", "2.50", "1e300", "-0.0", "nan", "inf", "-inf", "true", "false",
            "\"01:00-04:00\"", "\"22:00-02:00\"", "\"24:00-01:00\"", "\"mon\"", "\"Sunday\"",
            "\"0.60\"", "\"-1.00\"", "\"99999999999\"", "\"0.0000000001\"", "\"127.0.0.1:0\"",
            "\"http://127.0.0.1:9\"", "\"https://\"", "\"2026-10-01\"", "\"2026-02-30\"", "\"\"",
            "1979-05-27T07:32:00Z", "[\"0.1\", \"0.2\"]", "[0.1, 0.2]", "[1, \"a\"]",
        ])
        .prop_map(String::from),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => text(12).prop_map(|t| serde_json::to_string(&t).unwrap_or_default()),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|kv| {
                let members: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", members.join(", "))
            }),
        ]
    })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => prop::sample::select(SECTIONS).prop_map(String::from),
        1 => text(20),
        1 => Just("# a comment".to_string()),
    ]
}

/// A value of the kind `key` takes, near its edges (mostly valid, sometimes not).
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let quoted = |v: Vec<&'static str>| {
        prop::sample::select(v)
            .prop_map(|s| serde_json::to_string(s).unwrap_or_default())
            .boxed()
    };
    let list = |item: BoxedStrategy<String>| {
        prop::collection::vec(item, 0..4)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed()
    };
    let money = || {
        prop_oneof![
            3 => quoted(vec!["0", "0.003", "0.60", "1.5", "20", "-1", "0.0000000001", "1e3", "", "x"]),
            1 => (0i64..100).prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec!["0.25", "1e-12", "-0.5", "9e18", "nan"]).prop_map(String::from),
        ]
        .boxed()
    };
    let count = prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["-1", "4294967296", "9223372036854775807", "1.5", "\"7\""])
            .prop_map(String::from),
    ]
    .boxed();
    match key {
        "listen" => quoted(vec![
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "[::1]:80",
            "localhost:80",
            "",
        ]),
        "public_url" | "base_url" | "api_base" => quoted(vec![
            "https://api.deepseek.com",
            "http://127.0.0.1:9/",
            "ftp://x",
            "",
        ]),
        "log_level" => quoted(vec!["info", "debug,modelrelay=trace", "nonsense=", "["]),
        "env" => quoted(vec!["sandbox", "live", "moon"]),
        "behind_proxy" | "metrics_public" | "enabled" => prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("1".to_string())
        ]
        .boxed(),
        "peak_hours_utc" => list(quoted(vec![
            "01:00-04:00",
            "22:00-02:00",
            "00:00-24:00",
            "1:00-2:00",
            "05:00-05:00",
        ])),
        "peak_days" => list(quoted(vec!["mon", "Friday", "SUN", "funday"])),
        "off_peak_dates" => list(quoted(vec!["2026-10-01", "2026-02-30", "01/10/2026"])),
        "aliases" | "models" => list(quoted(vec!["deepseek-chat", "deepseek-v4-flash", "", "x"])),
        "input_cache_hit" | "input_cache_miss" | "output" => prop_oneof![
            4 => (money(), money()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            1 => money(),
        ]
        .boxed(),
        "price_usd" | "budget_usd" | "low_balance_usd" => money(),
        "name" | "api_key" | "client_id" | "client_secret" | "webhook_id" | "upstream_model"
        | "admin_group" => text(10)
            .prop_map(|t| serde_json::to_string(&t).unwrap_or_default())
            .boxed(),
        _ => count,
    }
}

/// Keys of each section.
const SECTION_KEYS: &[(&str, &[&str])] = &[
    (
        "[server]",
        &[
            "listen",
            "public_url",
            "max_body_bytes",
            "behind_proxy",
            "metrics_public",
            "drain_secs",
            "log_level",
            "max_connections",
            "header_timeout_secs",
            "body_timeout_secs",
            "idle_timeout_secs",
            "admin_group",
        ],
    ),
    (
        "[upstream]",
        &[
            "base_url",
            "api_key",
            "connect_timeout_secs",
            "idle_timeout_secs",
            "request_timeout_secs",
            "max_event_bytes",
            "queue_timeout_ms",
            "probe_secs",
            "balance_poll_secs",
            "low_balance_usd",
        ],
    ),
    (
        "[[upstream.accounts]]",
        &["name", "api_key", "base_url", "weight"],
    ),
    (
        "[paypal]",
        &[
            "env",
            "client_id",
            "client_secret",
            "webhook_id",
            "api_base",
        ],
    ),
    (
        "[pricing]",
        &["peak_hours_utc", "peak_days", "off_peak_dates"],
    ),
    (
        "[models.deepseek-v4-flash]",
        &[
            "upstream_model",
            "max_output_tokens",
            "input_cache_hit",
            "input_cache_miss",
            "output",
            "aliases",
            "max_in_flight",
        ],
    ),
    (
        "[models.extra]",
        &[
            "upstream_model",
            "max_output_tokens",
            "input_cache_hit",
            "input_cache_miss",
            "output",
            "aliases",
            "max_in_flight",
        ],
    ),
    (
        "[plans.trial]",
        &[
            "name",
            "price_usd",
            "budget_usd",
            "rpm",
            "models",
            "enabled",
        ],
    ),
    (
        "[plans.new]",
        &[
            "name",
            "price_usd",
            "budget_usd",
            "rpm",
            "models",
            "enabled",
        ],
    ),
];

/// A config of the real sections, each at most once, with keys of its own and values of
/// their kind: many load, the rest are refused for a value.
fn shaped() -> impl Strategy<Value = String> {
    let section = (0..SECTION_KEYS.len()).prop_flat_map(|i| {
        let (name, keys) = SECTION_KEYS[i];
        let member = prop::sample::select(keys)
            .prop_flat_map(|k| value_for(k).prop_map(move |v| format!("{k} = {v}")));
        (
            Just(i),
            prop::collection::vec(member, 0..4).prop_map(move |m| {
                let mut seen = std::collections::BTreeSet::new();
                let unique: Vec<String> = m
                    .into_iter()
                    .filter(|l| seen.insert(l.split(" = ").next().unwrap_or_default().to_string()))
                    .collect();
                format!("{name}\n{}", unique.join("\n"))
            }),
        )
    });
    prop::collection::vec(section, 0..5).prop_map(|sections| {
        let mut seen = std::collections::BTreeSet::new();
        sections
            .into_iter()
            .filter(|(i, s)| seen.insert(*i) || s.starts_with("[["))
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Configs of the real sections and keys with values near their edges: never a panic,
    /// a config or a said error.
    #[test]
    fn shaped_configs_load_or_say_why(toml in shaped()) {
        check(load(&toml))?;
    }

    /// TOML-ish text of the real sections and keys: never a panic, a config or a said error.
    #[test]
    fn toml_ish_text_loads_or_says_why(lines in prop::collection::vec(line(), 0..16)) {
        check(load(&lines.join("\n")))?;
    }

    /// Arbitrary text: the same.
    #[test]
    fn arbitrary_text_loads_or_says_why(s in any::<String>()) {
        check(load(&s))?;
    }
}
