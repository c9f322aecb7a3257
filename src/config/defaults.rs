//! The built-in defaults of every key (SPEC §2), DeepSeek's list prices and the four plans
//! among them: what a config file that sets nothing gets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    Config, DEFAULT_DRAIN_SECS, DEFAULT_KEY_IN_FLIGHT, EmailConfig, ModelConfig, PaypalConfig,
    PaypalEnv, PlanConfig, PricingConfig, ServerConfig, StoreConfig, UpstreamConfig,
};
use crate::money::Usd;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            admin_socket: None,
            admin_group: None,
            secret_file: None,
            max_body_bytes: 8 * 1024 * 1024,
            behind_proxy: false,
            metrics_public: false,
            drain_secs: DEFAULT_DRAIN_SECS,
            log_level: "info".into(),
            max_connections: 10_000,
            header_timeout_secs: 30,
            body_timeout_secs: 60,
            idle_timeout_secs: 60,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.deepseek.com".into(),
            api_key: String::new(),
            api_key_file: None,
            connect_timeout_secs: 10,
            idle_timeout_secs: 120,
            request_timeout_secs: 900,
            max_event_bytes: 1024 * 1024,
            accounts: Vec::new(),
            queue_timeout_ms: 2000,
            probe_secs: 300,
            balance_poll_secs: 300,
            low_balance_usd: Usd::from_dollars(10),
        }
    }
}

impl Default for PaypalConfig {
    fn default() -> Self {
        PaypalConfig {
            env: PaypalEnv::Sandbox,
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: None,
            webhook_id: String::new(),
            api_base: String::new(),
        }
    }
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            peak_hours_utc: vec!["01:00-04:00".into(), "06:00-10:00".into()],
            peak_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            off_peak_dates: Vec::new(),
        }
    }
}

fn usd(nanos: i64) -> Usd {
    Usd::from_nanos(nanos)
}

impl Default for Config {
    fn default() -> Self {
        // Prices in nano-USD per 1M tokens (DeepSeek list prices, November 2026).
        let flash = ModelConfig {
            upstream_model: "deepseek-v4-flash".into(),
            max_output_tokens: 32768,
            input_cache_hit: [usd(3_000_000), usd(6_000_000)],
            input_cache_miss: [usd(150_000_000), usd(300_000_000)],
            output: [usd(600_000_000), usd(1_200_000_000)],
            // DeepSeek's own mapping for Anthropic clients: any other `claude*` is flash.
            aliases: vec!["claude*".into()],
            // DeepSeek's per-account limits, late 2026: 2 500 for flash, 500 for pro.
            max_in_flight: 2500,
        };
        let pro = ModelConfig {
            upstream_model: "deepseek-v4-pro".into(),
            max_output_tokens: 32768,
            input_cache_hit: [usd(22_000_000), usd(44_000_000)],
            input_cache_miss: [usd(660_000_000), usd(1_320_000_000)],
            output: [usd(1_980_000_000), usd(3_960_000_000)],
            aliases: vec!["claude-opus*".into()],
            max_in_flight: 500,
        };
        let plan = |name: &str, dollars: i64, rpm: u32, models: &[&str]| PlanConfig {
            name: name.into(),
            price_usd: Usd::from_dollars(dollars),
            budget_usd: Usd::from_dollars(dollars),
            rpm,
            models: models.iter().map(|m| m.to_string()).collect(),
            max_in_flight: DEFAULT_KEY_IN_FLIGHT,
            enabled: true,
        };
        let f = "deepseek-v4-flash";
        Config {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            paypal: PaypalConfig::default(),
            pricing: PricingConfig::default(),
            store: StoreConfig::default(),
            models: BTreeMap::from([(f.to_string(), flash), ("deepseek-v4-pro".into(), pro)]),
            plans: BTreeMap::from([
                ("trial".into(), plan("Trial", 1, 30, &[f])),
                ("starter".into(), plan("Starter", 5, 30, &[f])),
                ("standard".into(), plan("Standard", 20, 60, &[f])),
                ("pro".into(), plan("Pro", 50, 30, &[f, "deepseek-v4-pro"])),
            ]),
            email: EmailConfig::default(),
            unread_secrets: Vec::new(),
        }
    }
}
