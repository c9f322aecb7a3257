//! Validation: each problem explained with its key, and all of them reported at once.

use super::*;

/// A file with one problem, and what the message must say about it.
const INVALID_FILES: [(&str, &str); 34] = [
    (
        "[server]\nmax_connections = 0\n",
        "server.max_connections must be at least 1",
    ),
    (
        "[server]\nidle_timeout_secs = 0\n",
        "server.idle_timeout_secs must be at least 1",
    ),
    (
        "[server]\nheader_timeout_secs = 0\n",
        "server.header_timeout_secs must be at least 1",
    ),
    (
        "[server]\nadmin_socket = \"/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n",
        "a Unix socket's must be shorter than 108",
    ),
    (
        "[plans.trial]\nmodels = [\"gpt-4\"]\n",
        "plans.trial.models names unknown model \"gpt-4\"",
    ),
    (
        "[plans.trial]\nprice_usd = \"-1.00\"\n",
        "plans.trial.price_usd must be greater than 0",
    ),
    (
        "[plans.trial]\nprice_usd = \"1.005\"\n",
        "must be whole cents",
    ),
    (
        "[models.deepseek-v4-flash]\ninput_cache_miss = [\"-0.15\", \"0.30\"]\n",
        "models.deepseek-v4-flash.input_cache_miss: a price cannot be negative",
    ),
    (
        "[models.deepseek-v4-flash]\noutput = [\"0\", \"1.20\"]\n",
        "models.deepseek-v4-flash.output",
    ),
    (
        "[pricing]\npeak_hours_utc = [\"1:00-4:00\"]\n",
        "pricing.peak_hours_utc: \"1:00-4:00\"",
    ),
    (
        "[pricing]\npeak_hours_utc = [\"01:00\"]\n",
        "pricing.peak_hours_utc: \"01:00\"",
    ),
    (
        "[pricing]\npeak_hours_utc = [\"25:00-26:00\"]\n",
        "pricing.peak_hours_utc: \"25:00-26:00\"",
    ),
    (
        "[pricing]\npeak_days = [\"mon\", \"funday\"]\n",
        "pricing.peak_days: \"funday\"",
    ),
    (
        "[models.deepseek-v4-pro]\nmax_in_flight = 0\n",
        "models.deepseek-v4-pro.max_in_flight must be at least 1",
    ),
    (
        "[plans.trial]\nbudget_usd = \"9223372036.85\"\n",
        "plans.trial.budget_usd must be at most $1000000000.00",
    ),
    (
        "[plans.trial]\nprice_usd = \"100000.01\"\n",
        "plans.trial.price_usd must be at most $100000.00",
    ),
    (
        "[server]\nbody_timeout_secs = 9223372036854775807\n",
        "server.body_timeout_secs = 9223372036854775807 is more than a day (86400)",
    ),
    (
        "[upstream]\nprobe_secs = 9223372036854775807\n",
        "upstream.probe_secs = 9223372036854775807 is more than a day (86400)",
    ),
    (
        "[upstream]\nprobe_secs = 0\n",
        "upstream.probe_secs must be at least 1",
    ),
    (
        "[upstream]\nbalance_poll_secs = 0\n",
        "upstream.balance_poll_secs must be at least 1",
    ),
    (
        "[upstream]\nqueue_timeout_ms = 86400001\n",
        "upstream.queue_timeout_ms = 86400001 is more than a day",
    ),
    (
        "[upstream]\nrequest_timeout_secs = 86401\n",
        "upstream.request_timeout_secs = 86401 is more than a day (86400)",
    ),
    (
        "[plans.trial]\nrpm = 0\n",
        "plans.trial.rpm must be at least 1",
    ),
    (
        "[plans.trial]\nbudget_usd = \"0\"\n",
        "plans.trial.budget_usd must be greater than 0",
    ),
    (
        "[plans.trial]\nmodels = []\n",
        "plans.trial.models must name at least one model",
    ),
    (
        "[plans.trial]\nname = \" \"\n",
        "plans.trial.name must not be empty",
    ),
    (
        "[server]\nlisten = \"localhost\"\n",
        "server.listen = \"localhost\"",
    ),
    (
        "[server]\nlisten = \"127.0.0.1:99999\"\n",
        "server.listen = \"127.0.0.1:99999\"",
    ),
    (
        "[server]\npublic_url = \"relay.example.com\"\n",
        "server.public_url = \"relay.example.com\"",
    ),
    (
        "[upstream]\nbase_url = \"ftp://api.deepseek.com\"\n",
        "upstream.base_url = \"ftp://api.deepseek.com\"",
    ),
    ("[paypal]\napi_base = \"localhost:1\"\n", "paypal.api_base"),
    (
        "[upstream]\nconnect_timeout_secs = 0\n",
        "upstream.connect_timeout_secs must be greater than 0",
    ),
    (
        "[server]\nmax_body_bytes = 0\n",
        "server.max_body_bytes must be greater than 0",
    ),
    (
        "[models.deepseek-v4-flash]\nmax_output_tokens = 0\n",
        "models.deepseek-v4-flash.max_output_tokens must be greater than 0",
    ),
];

#[test]
fn validation_explains_each_problem() {
    jailed(|jail| {
        for (toml, expected) in INVALID_FILES {
            let err = error_of(jail, toml);
            assert!(err.starts_with("invalid configuration"), "{toml:?}: {err}");
            assert!(
                err.contains(expected),
                "error for {toml:?} should contain {expected:?}: {err}"
            );
        }
    });
}

#[test]
fn every_problem_is_reported_at_once() {
    jailed(|jail| {
        let err = load_file(
            jail,
            "[server]\nlisten = \"nowhere\"\n[plans.trial]\nrpm = 0\n[plans.pro]\nbudget_usd = \"0\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(lines) = &err else {
            panic!("expected Invalid, got {err:?}")
        };
        assert_eq!(lines.len(), 3, "{lines:?}");
    });
}
