//! The example config shipped for systemd installs: it loads, equals the defaults apart from
//! its paths, and shows every key.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;

/// The example config shipped for systemd installs.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/modelrelay.toml");

/// Every key path of a TOML table, as `section.key` (plans and models included).
fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => key_paths(t, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn the_example_config_loads_and_equals_the_defaults() {
    jailed(|_jail| {
        let example = Config::load(Some(Path::new(EXAMPLE)))
            .unwrap_or_else(|e| panic!("{EXAMPLE} does not load: {e}"));
        let defaults = Config::from_figment(Config::figment(None)).unwrap();
        assert_eq!(
            example.server.data_dir,
            PathBuf::from("/var/lib/modelrelay")
        );
        assert_eq!(
            example.admin_socket(),
            PathBuf::from("/run/modelrelay/modelrelay.sock")
        );

        let mut same = example.clone();
        same.server.data_dir = defaults.server.data_dir.clone();
        same.server.admin_socket = defaults.server.admin_socket.clone();
        // The example lists this year's holidays; the default has none.
        assert!(!example.pricing.off_peak_dates.is_empty());
        same.pricing.off_peak_dates = defaults.pricing.off_peak_dates.clone();
        assert_eq!(same.redacted_toml(), defaults.redacted_toml());
    });
}

#[test]
fn the_example_config_shows_every_key() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let example: toml::Table = toml::from_str(&text).unwrap();
    let mut shown = BTreeSet::new();
    key_paths(&example, "", &mut shown);

    jailed(|_jail| {
        let defaults = Config::from_figment(Config::figment(None)).unwrap();
        let table: toml::Table = toml::from_str(&defaults.redacted_toml()).unwrap();
        let mut all = BTreeSet::new();
        key_paths(&table, "", &mut all);
        let missing: Vec<_> = all.difference(&shown).collect();
        assert!(missing.is_empty(), "example config lacks {missing:?}");
    });

    // Optional keys, unset by default, are shown commented out.
    for key in [
        "admin_group",
        "secret_file",
        "api_key_file",
        "client_secret_file",
        "smtp_url_file",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("# {key} = "))),
            "example config should show `# {key} = …`"
        );
    }
    assert!(text.contains("/run/credentials/modelrelay.service/deepseek_api_key"));
    assert!(text.contains("MODELRELAY_UPSTREAM__API_KEY"));
}
