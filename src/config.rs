//! Configuration: built-in defaults, then the TOML file, then `MODELRELAY_*` environment
//! variables (figment), then validation. Names and defaults are those of SPEC §2.
//!
//! Models and plans merge entry by entry: a file that sets `[plans.trial] rpm = 10` changes
//! only that field of the built-in trial plan. A plan can be withdrawn from sale with
//! `enabled = false`; keys already sold on it keep working.
//!
//! This file holds the keys, their defaults and the errors; `load` builds a [`Config`] from its
//! layers, `secrets` reads the `*_file` secrets and redacts them, `validate` explains what cannot
//! work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::money::Usd;
use crate::pricing::{PeakSchedule, Weekday};

mod defaults;
mod load;
mod parse_error;
#[cfg(test)]
mod proptests;
mod secrets;
mod smtp;
pub use secrets::SecretFiles;
#[cfg(test)]
mod tests;
mod validate;
mod warnings;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "MODELRELAY_";
/// The environment variable that names the config file.
pub const ENV_CONFIG_FILE: &str = "MODELRELAY_CONFIG";
/// How long a shutdown waits for requests in flight before cutting them (the default of
/// `server.drain_secs`).
pub const DEFAULT_DRAIN_SECS: u64 = 30;
/// PayPal's sandbox REST API.
pub const PAYPAL_SANDBOX_BASE_URL: &str = "https://api-m.sandbox.paypal.com";
/// PayPal's live REST API.
pub const PAYPAL_LIVE_BASE_URL: &str = "https://api-m.paypal.com";

/// Everything the operator can set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, public URL, data and socket paths.
    pub server: ServerConfig,
    /// The DeepSeek API the gateway forwards to.
    pub upstream: UpstreamConfig,
    /// PayPal REST credentials for the storefront.
    pub paypal: PaypalConfig,
    /// When peak prices apply.
    pub pricing: PricingConfig,
    /// How durable the ledger is.
    pub store: StoreConfig,
    /// Models sold, by public name.
    pub models: BTreeMap<String, ModelConfig>,
    /// Plans sold, by id (used in URLs and keys).
    pub plans: BTreeMap<String, PlanConfig>,
    /// Receipts and notices by SMTP (off until configured).
    pub email: EmailConfig,
    /// Secret files `check-config` could not read because systemd provides them to the
    /// service only (one line each, for [`Config::warnings`]).
    #[serde(skip)]
    pub unread_secrets: Vec<String>,
}

/// `[store]`: how durable a committed ledger row is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `full`: a response's last byte leaves only after its ledger row is on disk. `normal`:
    /// after it is in the OS (safe against a crashed or killed process); the disk is synced
    /// every `sync_interval_ms`, which bounds what a power loss can drop.
    pub sync: SyncMode,
    /// In `normal` mode, how often the ledger is synced to disk, in milliseconds.
    pub sync_interval_ms: u64,
}

/// `store.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every commit is on disk before it is acknowledged.
    Full,
    /// Every commit is in the OS before it is acknowledged; on disk within the sync interval.
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync: SyncMode::Full,
            sync_interval_ms: 200,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address (gateway and storefront).
    pub listen: String,
    /// The URL customers reach, used in docs pages and examples.
    pub public_url: String,
    /// Holds `modelrelay.db` and, unless `secret_file` is set, `secret.key`.
    pub data_dir: PathBuf,
    /// The admin socket; empty means `<data_dir>/modelrelay.sock`.
    pub admin_socket: Option<PathBuf>,
    /// A group whose members may use the admin socket (socket mode 0660); empty: owner only (0600).
    pub admin_group: Option<String>,
    /// The 32-byte key that seals API keys at rest; empty means `<data_dir>/secret.key`.
    pub secret_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A reverse proxy on this machine (Caddy, nginx) forwards to us: take the client address
    /// from the `X-Forwarded-For` it appends (only for connections from loopback).
    pub behind_proxy: bool,
    /// Serve `GET /metrics` to every client, not only loopback ones (default false).
    pub metrics_public: bool,
    /// On SIGTERM/SIGINT, how many seconds requests in flight may take to finish before they
    /// are cut (and billed for what was generated). A second signal cuts at once.
    pub drain_secs: u64,
    /// Log filter for `serve` (`error`, `warn`, `info`, `debug`, `trace`, or a `tracing`
    /// directive list such as `"info,modelrelay=debug"`); `RUST_LOG`, when set, wins.
    pub log_level: String,
    /// Client connections served at once; more wait in the listen backlog. Clamped at start
    /// to what the file-descriptor limit allows.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, from their first byte (and to start
    /// its first request on a new connection); also how long an idle HTTP/1.1 connection from
    /// a client not on loopback is kept (one from loopback, the reverse proxy: 150 s).
    pub header_timeout_secs: u64,
    /// Seconds a request body may take before it must keep arriving at 1 KiB/s on average.
    pub body_timeout_secs: u64,
    /// Seconds a connection with no request in progress and no traffic is kept (HTTP/2; for
    /// HTTP/1.1 see `header_timeout_secs`), and how long a client may take none of its
    /// answers while every request it has in progress waits on it (see `server::conn`).
    pub idle_timeout_secs: u64,
}

/// `[upstream]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// DeepSeek's base URL (`/chat/completions` is appended).
    pub base_url: String,
    /// The operator's DeepSeek API key.
    pub api_key: String,
    /// A file holding the API key instead (systemd credentials).
    pub api_key_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout_secs: u64,
    /// Longest silence allowed from upstream; a stream's keep-alive comments do not count as
    /// data, a whole answer's blank lines do.
    pub idle_timeout_secs: u64,
    /// Longest a whole request may take.
    pub request_timeout_secs: u64,
    /// Largest single event accepted in an upstream stream, in bytes; a bigger one cuts the
    /// stream as an upstream error (billed for what was relayed).
    pub max_event_bytes: usize,
    /// Several DeepSeek accounts (`[[upstream.accounts]]`); empty means the one account of
    /// `api_key` / `api_key_file`, named `default`. Both at once is an error.
    pub accounts: Vec<AccountConfig>,
    /// How long a request waits for a free slot when every account is at its cap, before 503
    /// `upstream_busy`.
    pub queue_timeout_ms: u64,
    /// How often a disabled account is tried again (its balance endpoint), in seconds.
    pub probe_secs: u64,
    /// How often each account's DeepSeek balance is read, in seconds.
    pub balance_poll_secs: u64,
    /// Below this USD balance an account is reported low.
    pub low_balance_usd: Usd,
}

/// `[[upstream.accounts]]`: one DeepSeek account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Its name (logs, the console, the ledger).
    pub name: String,
    /// Its API key.
    #[serde(default)]
    pub api_key: String,
    /// A file holding the API key instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Its base URL; empty means `upstream.base_url`.
    #[serde(default)]
    pub base_url: String,
    /// Its share of the traffic relative to the others (caps scale with it).
    #[serde(default = "one")]
    pub weight: u32,
    /// Requests in flight it may carry per model id (default: `models.<id>.max_in_flight`).
    #[serde(default)]
    pub max_in_flight: BTreeMap<String, u32>,
}

fn one() -> u32 {
    1
}

/// One upstream account as the daemon uses it: the shorthand and the list made alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Its API key.
    pub api_key: String,
    /// DeepSeek's root under its base URL (no trailing slash, no `/v1`): where the Anthropic
    /// endpoint and the balance are.
    pub base_url: String,
    /// Its base URL as given (no trailing slash; `/v1` kept when given): where the OpenAI-shaped
    /// paths (`/chat/completions`, `/models`) are called, which DeepSeek serves with and
    /// without `/v1` — a reverse proxy may forward only `<prefix>/v1/…`.
    pub openai_base: String,
    /// Its weight (at least 1).
    pub weight: u32,
    /// Its cap per model id, where it differs from the model's default.
    pub max_in_flight: BTreeMap<String, u32>,
}

impl UpstreamConfig {
    /// The accounts in use: the `[[upstream.accounts]]`, or the one `default` account of
    /// `api_key`.
    pub fn resolved_accounts(&self) -> Vec<Account> {
        let given = |b: &str| {
            if b.is_empty() { &self.base_url } else { b }
                .trim_end_matches('/')
                .to_string()
        };
        let base = |b: &str| {
            let b = given(b);
            // DeepSeek gives `https://api.deepseek.com/v1` as an OpenAI base URL too (the `v1`
            // is no model version), but serves its Anthropic endpoint and the balance only at
            // the root: with `/v1` kept, both were 404s (found by an independent check).
            // Any case (`/V1` too), as a URL's path is typed; only in the path (a host named
            // `v1`, `http://v1`, is no path: it became `http:/`).
            let path_at = b
                .find("://")
                .map_or(0, |s| b[s + 3..].find('/').map_or(b.len(), |p| s + 3 + p));
            match b
                .len()
                .checked_sub(3)
                .and_then(|at| b.get(at..).map(|end| (at, end)))
            {
                Some((at, end)) if at >= path_at && end.eq_ignore_ascii_case("/v1") => {
                    b[..at].to_string()
                }
                _ => b,
            }
        };
        // `/v1` where `base` strips it, in DeepSeek's case: `/V1` was kept in the OpenAI
        // routes' URL while the root had it stripped (found by an independent check).
        let openai = |b: &str| {
            let (root, b) = (base(b), given(b));
            if root.len() + 3 == b.len() {
                format!("{root}/v1")
            } else {
                b
            }
        };
        if self.accounts.is_empty() {
            return vec![Account {
                name: "default".into(),
                api_key: self.api_key.clone(),
                base_url: base(""),
                openai_base: openai(""),
                weight: 1,
                max_in_flight: BTreeMap::new(),
            }];
        }
        self.accounts
            .iter()
            .map(|a| Account {
                name: a.name.clone(),
                api_key: a.api_key.clone(),
                base_url: base(&a.base_url),
                openai_base: openai(&a.base_url),
                weight: a.weight.max(1),
                max_in_flight: a.max_in_flight.clone(),
            })
            .collect()
    }
}

/// Which PayPal environment to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaypalEnv {
    /// `https://api-m.sandbox.paypal.com`
    Sandbox,
    /// `https://api-m.paypal.com`
    Live,
}

/// `[paypal]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaypalConfig {
    /// sandbox or live.
    pub env: PaypalEnv,
    /// REST app client id.
    pub client_id: String,
    /// REST app secret.
    pub client_secret: String,
    /// A file holding the secret instead.
    pub client_secret_file: Option<PathBuf>,
    /// The webhook id PayPal assigned, used to verify webhook signatures.
    pub webhook_id: String,
    /// Override of the environment's base URL (tests, proxies).
    pub api_base: String,
}

impl PaypalConfig {
    /// Which PayPal this is, as orders record it: `sandbox:<client id>` or `live:<client id>`.
    /// Not the API base: a restarted demo's simulator, or a proxy put in front, is the same
    /// app (PayPal's order ids belong to the app and its environment, not to an address).
    pub fn app(&self) -> String {
        let env = match self.env {
            PaypalEnv::Sandbox => "sandbox",
            PaypalEnv::Live => "live",
        };
        format!("{env}:{}", self.client_id.trim())
    }

    /// PayPal's API base URL: `paypal.api_base`, else the environment's (no trailing slash).
    pub fn base_url(&self) -> String {
        if !self.api_base.is_empty() {
            return self.api_base.trim_end_matches('/').to_string();
        }
        match self.env {
            PaypalEnv::Sandbox => PAYPAL_SANDBOX_BASE_URL.into(),
            PaypalEnv::Live => PAYPAL_LIVE_BASE_URL.into(),
        }
    }
}

/// `[pricing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// UTC windows `HH:MM-HH:MM` in which peak prices apply…
    pub peak_hours_utc: Vec<String>,
    /// …on these UTC days (`mon` … `sun`)…
    pub peak_days: Vec<String>,
    /// …except on these dates (`YYYY-MM-DD`), off-peak all day: DeepSeek charges off-peak on
    /// Chinese public holidays.
    pub off_peak_dates: Vec<String>,
}

/// `[email]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP server, with credentials: `smtps://user:pass@host:465` (TLS),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtp://host:25` (plain, local
    /// relays only). Empty: email is off.
    pub smtp_url: String,
    /// A file holding the SMTP URL instead (systemd credentials).
    pub smtp_url_file: Option<PathBuf>,
    /// The sender, `billing@example.com` or `Example <billing@example.com>`.
    pub from: String,
    /// Messages sent per minute at most (the SMTP provider's rate).
    pub send_per_minute: u32,
    /// Seconds before the first retry of a failed message; each next retry waits twice as
    /// long, up to an hour.
    pub retry_secs: u64,
    /// Attempts before a message is given up (`modelrelay mail retry ID` queues it again).
    pub max_attempts: u32,
    /// Seconds the SMTP server may take to connect and to answer each read; a whole attempt
    /// is bounded by three times this.
    pub timeout_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: String::new(),
            smtp_url_file: None,
            from: String::new(),
            send_per_minute: 30,
            retry_secs: 60,
            max_attempts: 8,
            timeout_secs: 30,
        }
    }
}

impl EmailConfig {
    /// Is email configured (receipts and notices are queued and sent)?
    pub fn enabled(&self) -> bool {
        !self.smtp_url.trim().is_empty()
    }
}

/// A price pair `[off-peak, peak]`: exactly two (serde's arrays took a third and dropped it
/// silently; found by an independent check).
fn two_prices<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[Usd; 2], D::Error> {
    let prices = Vec::<Usd>::deserialize(d)?;
    <[Usd; 2]>::try_from(prices).map_err(|given| {
        serde::de::Error::custom(format!(
            "expected two prices, [off-peak, peak], found {}",
            given.len()
        ))
    })
}

/// `[models.<public name>]`; prices are USD per 1M tokens as `[off-peak, peak]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model name sent to DeepSeek; empty means the public name.
    #[serde(default)]
    pub upstream_model: String,
    /// Output cap used when a request does not set `max_tokens`, and the most it may set.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Prompt tokens served from cache.
    #[serde(deserialize_with = "two_prices")]
    pub input_cache_hit: [Usd; 2],
    /// Prompt tokens not in cache.
    #[serde(deserialize_with = "two_prices")]
    pub input_cache_miss: [Usd; 2],
    /// Completion tokens, reasoning included.
    #[serde(deserialize_with = "two_prices")]
    pub output: [Usd; 2],
    /// Other names this model is served under, with its prices, plan rules and upstream
    /// name; a trailing `*` matches any suffix (`claude-opus*`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Requests in flight one upstream account may carry for this model (DeepSeek caps each
    /// account; an account's own `max_in_flight` overrides it).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_max_in_flight() -> u32 {
    500
}

/// `[plans.<id>]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Display name.
    pub name: String,
    /// What the customer pays.
    pub price_usd: Usd,
    /// What the key may spend.
    pub budget_usd: Usd,
    /// Requests per minute per key.
    pub rpm: u32,
    /// Public model names the plan includes.
    pub models: Vec<String>,
    /// Requests one key of the plan may have in flight at once, streams included: past it,
    /// 429 `too_many_in_flight`. Every account's limit of requests in flight is shared by all
    /// keys; without this, one key holding long streams could take it all and leave every
    /// other customer a 503.
    #[serde(default = "default_key_in_flight")]
    pub max_in_flight: u32,
    /// False withdraws the plan from sale; existing keys keep working.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A plan's default `max_in_flight` per key: far above what one person's client or agent
/// keeps open (SillyTavern one, Claude Code's parallel sub-agents about ten), and a sixteenth of
/// an account's 500 `deepseek-v4-pro` requests.
pub const DEFAULT_KEY_IN_FLIGHT: u32 = 32;

fn default_key_in_flight() -> u32 {
    DEFAULT_KEY_IN_FLIGHT
}

fn default_max_output_tokens() -> u32 {
    32768
}

fn yes() -> bool {
    true
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment does not parse, has an unknown key or a wrong type.
    #[error("{}", parse_error::describe(.0))]
    Parse(Box<figment::Error>),
    /// A `--config` file that does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// A `*_file` secret that cannot be read.
    #[error("cannot read {key} = {path}: {source}")]
    SecretFile {
        /// The config key naming the file (and, for a pool account, the account).
        key: String,
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A `*_file` secret that holds nothing (it was read as no secret at all: "no upstream key
    /// configured", naming no file; found by an independent check).
    #[error("{key} = {} is empty: it must hold the secret itself", .path.display())]
    EmptySecretFile {
        /// The config key naming the file.
        key: String,
        /// The path given.
        path: PathBuf,
    },
    /// Values that parse but make no sense, one line each.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Parse(Box::new(e))
    }
}

impl Config {
    /// The parsed peak windows and days.
    pub fn peak_schedule(&self) -> Result<PeakSchedule, String> {
        self.peak_schedule_all().map_err(|e| e.join("; "))
    }

    /// [`Config::peak_schedule`], with every problem (one line each), not just the first.
    pub(crate) fn peak_schedule_all(&self) -> Result<PeakSchedule, Vec<String>> {
        let mut errors = Vec::new();
        let mut windows = Vec::new();
        for w in &self.pricing.peak_hours_utc {
            match crate::pricing::parse_window(w) {
                Ok(win) => windows.push(win),
                Err(why) => errors.push(format!("pricing.peak_hours_utc: {w:?} {why}")),
            }
        }
        let mut days = Vec::new();
        for d in &self.pricing.peak_days {
            match d.parse::<Weekday>() {
                Ok(day) => days.push(day),
                Err(_) => errors.push(format!(
                    "pricing.peak_days: {d:?} is not one of mon, tue, wed, thu, fri, sat, sun"
                )),
            }
        }
        let mut dates = Vec::new();
        for d in &self.pricing.off_peak_dates {
            match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                Ok(date) => dates.push(date),
                Err(_) => errors.push(format!(
                    "pricing.off_peak_dates: {d:?} is not a date YYYY-MM-DD"
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PeakSchedule::new(windows, days).with_off_peak_dates(dates))
    }

    /// The admin socket path (resolved by `normalize`).
    pub fn admin_socket(&self) -> PathBuf {
        self.server
            .admin_socket
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("modelrelay.sock"))
    }
}
