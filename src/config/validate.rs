//! Validation: values that parse but cannot work, each explained on its own line and all
//! reported at once, in the order of the file's sections (the warnings about a valid
//! configuration are in `warnings.rs`).

use std::net::SocketAddr;

use super::{Config, ConfigError};

/// Longest timeout accepted: a day is past any request's or connection's real need, and far
/// from where adding it to a clock overflows (an absurd value made every connection panic).
const MAX_TIMEOUT_SECS: u64 = 86_400;

impl Config {
    /// Every problem of the configuration, or `Ok` when there is none.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut e = Vec::new();
        self.check_server(&mut e);
        self.check_upstream(&mut e);
        if self.store.sync_interval_ms == 0 || self.store.sync_interval_ms > 60_000 {
            e.push(format!(
                "store.sync_interval_ms = {} must be between 1 and 60000",
                self.store.sync_interval_ms
            ));
        }
        if !self.paypal.api_base.is_empty() && !is_http_url(&self.paypal.api_base) {
            e.push(format!(
                "paypal.api_base = {:?} must be an http:// or https:// URL with a host (and nothing else: no spaces or line breaks)",
                super::secrets::without_userinfo(&self.paypal.api_base)
            ));
        }
        if let Err(msgs) = self.peak_schedule_all() {
            e.extend(msgs);
        }
        self.check_models(&mut e);
        self.check_plans(&mut e);
        self.check_email(&mut e);
        if e.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(e))
        }
    }

    /// `[server]`: the listener, public URL, body limit, drain time and log filter.
    fn check_server(&self, e: &mut Vec<String>) {
        /// `sun_path`'s size on Linux, its terminating NUL included.
        const MAX_SOCKET_PATH: usize = 108;
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            // A host name (`localhost:8080`) is the usual slip: said as such.
            let named = s.listen.rsplit_once(':').is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok()
                    && host.parse::<std::net::IpAddr>().is_err()
                    && !host.is_empty()
                    && !host.starts_with('[')
                    && !host.contains('/')
            });
            e.push(if named {
                format!(
                    "server.listen = {:?}: an IP address and port, not a host name (\"127.0.0.1:8080\" \
                     for this machine only, \"0.0.0.0:8080\" for every address)",
                    s.listen
                )
            } else {
                format!(
                    "server.listen = {:?} is not an address such as \"127.0.0.1:8080\"",
                    s.listen
                )
            });
        }
        if !is_http_url(&s.public_url) {
            e.push(format!(
                "server.public_url = {:?} must be an http:// or https:// URL with a host (and nothing else: no spaces or line breaks)",
                s.public_url
            ));
        } else if s
            .public_url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains(['/', '?', '#', '@']))
        {
            // `…/v1` gave customers `…/v1/v1/chat/completions` in /docs, and the pages link
            // from the root, so no prefix can work (found by an independent check).
            e.push(format!(
                "server.public_url = {:?} must be the site's root, its scheme and host only (e.g. \
                 \"https://api.example.com\"): no path (the gateway adds /v1 itself; the pages \
                 link from the root, so the site cannot live under a path prefix), query, \
                 fragment or user name",
                s.public_url
            ));
        }
        if s.max_body_bytes == 0 {
            e.push("server.max_body_bytes must be greater than 0".into());
        }
        // What `serve` would refuse, `check-config` says first (found by an independent check).
        // Blank too: `" "` made a directory named by a space where the daemon was started.
        let dir = &s.data_dir;
        let existing = dir
            .ancestors()
            .find(|a| !a.as_os_str().is_empty() && std::fs::metadata(a).is_ok());
        if dir.to_str().is_some_and(|d| d.trim().is_empty()) {
            e.push("server.data_dir must not be empty".into());
        } else if dir.to_str().is_some_and(|d| d.trim() != d) {
            // "/var/lib/modelrelay " started a new, empty database beside the real one.
            e.push(format!(
                "server.data_dir = {:?} begins or ends with a space",
                crate::text::echoed(&dir.display().to_string())
            ));
        } else if let Some(found) = existing.filter(|a| !a.is_dir()) {
            let shown = dir.display().to_string();
            e.push(if found == dir.as_path() {
                format!("server.data_dir = {shown:?} is a file, not a directory")
            } else {
                format!(
                    "server.data_dir = {shown:?} cannot be made: {:?} is a file",
                    found.display().to_string()
                )
            });
        }
        // Refused rather than run as 1 without a word (`max_connections = 0` served one
        // connection at a time).
        if s.max_connections == 0 {
            e.push("server.max_connections must be at least 1".into());
        }
        for (key, v) in [
            ("header_timeout_secs", s.header_timeout_secs),
            ("body_timeout_secs", s.body_timeout_secs),
            ("idle_timeout_secs", s.idle_timeout_secs),
        ] {
            if v == 0 {
                e.push(format!("server.{key} must be at least 1"));
            } else if v > MAX_TIMEOUT_SECS {
                e.push(format!(
                    "server.{key} = {v} is more than a day ({MAX_TIMEOUT_SECS})"
                ));
            }
        }
        // What `serve` would refuse at start, said by `check-config` too.
        let socket = self.admin_socket();
        if socket.as_os_str().len() >= MAX_SOCKET_PATH {
            e.push(format!(
                "the admin socket path {} is {} bytes; a Unix socket's must be shorter than {} \
                 (set server.admin_socket to a shorter one)",
                socket.display(),
                socket.as_os_str().len(),
                MAX_SOCKET_PATH
            ));
        }
        // A secret file that exists must hold what `serve` reads from it (one it cannot read
        // here is `serve`'s to report; one that does not exist is created at the first start).
        if let Some(path) = &s.secret_file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            let t = text.trim_start_matches('\u{feff}').trim();
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                e.push(format!(
                    "server.secret_file = {} must hold 64 hex characters (32 bytes)",
                    path.display()
                ));
            }
        }
        if s.drain_secs > 3600 {
            e.push(format!(
                "server.drain_secs = {} is more than an hour; systemd would kill the service first",
                s.drain_secs
            ));
        }
        if s.log_level.trim().is_empty() {
            e.push("server.log_level must not be empty (e.g. \"info\")".into());
        } else if let Some(word) = bare_target(&s.log_level) {
            e.push(format!(
                "server.log_level = {:?}: {word:?} is not a level (error, warn, info, debug, \
                 trace or off); a target needs one, as in \"warn,modelrelay=debug\"",
                s.log_level
            ));
        } else if let Err(why) = tracing_subscriber::EnvFilter::try_new(&s.log_level) {
            e.push(format!(
                "server.log_level = {:?} is not a log filter such as \"info\" or \"warn,modelrelay=debug\": {why}",
                s.log_level
            ));
        }
    }

    /// `[upstream]`: the base URL and the timeouts.
    fn check_upstream(&self, e: &mut Vec<String>) {
        let u = &self.upstream;
        if !is_http_url(&u.base_url) {
            e.push(format!(
                "upstream.base_url = {:?} must be an http:// or https:// URL with a host (and nothing else: no spaces or line breaks)",
                super::secrets::without_userinfo(&u.base_url)
            ));
        }
        // A threshold below $0 never warns (it was accepted; found by an independent check).
        if u.low_balance_usd.is_negative() {
            e.push(format!(
                "upstream.low_balance_usd = \"{}\" cannot be negative (0 turns the warning off)",
                u.low_balance_usd
            ));
        }
        for (key, v) in [
            ("connect_timeout_secs", u.connect_timeout_secs),
            ("idle_timeout_secs", u.idle_timeout_secs),
            ("request_timeout_secs", u.request_timeout_secs),
        ] {
            if v == 0 {
                e.push(format!("upstream.{key} must be greater than 0"));
            } else if v > MAX_TIMEOUT_SECS {
                e.push(format!(
                    "upstream.{key} = {v} is more than a day ({MAX_TIMEOUT_SECS})"
                ));
            }
        }
        for (key, v) in [
            ("probe_secs", u.probe_secs),
            ("balance_poll_secs", u.balance_poll_secs),
        ] {
            // 0 would mean asking DeepSeek as often as the daemon can: refused, not guessed.
            if v == 0 {
                e.push(format!("upstream.{key} must be at least 1"));
            } else if v > MAX_TIMEOUT_SECS {
                e.push(format!(
                    "upstream.{key} = {v} is more than a day ({MAX_TIMEOUT_SECS})"
                ));
            }
        }
        if u.queue_timeout_ms > MAX_TIMEOUT_SECS * 1000 {
            e.push(format!(
                "upstream.queue_timeout_ms = {} is more than a day",
                u.queue_timeout_ms
            ));
        }
        self.check_accounts(e);
        // A key DeepSeek could never be sent (a stray line break or control byte from a pasted
        // key or a key file) would fail every request as "unreachable"; say so now, without
        // printing the key.
        for a in u.resolved_accounts() {
            if !a.api_key.is_empty()
                && hyper::header::HeaderValue::try_from(format!("Bearer {}", a.api_key)).is_err()
            {
                e.push(format!(
                    "upstream account {:?}: the API key holds a character an HTTP header cannot \
                     carry (a line break or other control character?)",
                    a.name
                ));
            }
        }
        if u.max_event_bytes < 1024 {
            e.push(format!(
                "upstream.max_event_bytes = {} is too small for DeepSeek's events (at least 1024)",
                u.max_event_bytes
            ));
        }
    }

    /// `[[upstream.accounts]]`: not with the shorthand, named once each, weights and caps
    /// that make sense, base URLs that are URLs.
    fn check_accounts(&self, e: &mut Vec<String>) {
        let u = &self.upstream;
        if u.accounts.is_empty() {
            return;
        }
        if !u.api_key.is_empty() || u.api_key_file.is_some() {
            e.push(
                "set upstream.api_key (or api_key_file) for one account, or [[upstream.accounts]] \
                 for several, not both"
                    .into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for a in &u.accounts {
            if a.name.trim().is_empty() || !is_ident(&a.name) {
                e.push(format!(
                    "upstream.accounts: the name {:?} must be 1 to 64 ASCII letters, digits, '.', '-' \
                     and '_'",
                    crate::text::echoed(&a.name)
                ));
            }
            if !names.insert(a.name.as_str()) {
                e.push(format!(
                    "upstream.accounts: the name {:?} is used twice",
                    a.name
                ));
            }
            if a.weight == 0 {
                e.push(format!(
                    "upstream.accounts {:?}: weight must be at least 1",
                    a.name
                ));
            }
            if !a.base_url.is_empty() && !is_http_url(&a.base_url) {
                e.push(format!(
                    "upstream.accounts {:?}: base_url = {:?} must be an http:// or https:// URL with a host (and nothing else: no spaces or line breaks)",
                    a.name,
                    super::secrets::without_userinfo(&a.base_url)
                ));
            }
            for (model, cap) in &a.max_in_flight {
                if !self.models.contains_key(model) {
                    e.push(format!(
                        "upstream.accounts {:?}: max_in_flight names no model {model:?}",
                        a.name
                    ));
                }
                if *cap == 0 {
                    e.push(format!(
                        "upstream.accounts {:?}: max_in_flight for {model} must be at least 1",
                        a.name
                    ));
                }
            }
        }
    }

    /// `[models.*]`: names, output caps and prices.
    fn check_models(&self, e: &mut Vec<String>) {
        if self.models.is_empty() {
            e.push("no models: define at least one [models.<name>]".into());
        }
        for (id, m) in &self.models {
            if !is_ident(id) {
                e.push(format!(
                    "models.{}: a model name is 1 to 64 ASCII letters, digits, '.', '-' and '_'",
                    crate::text::echoed(id)
                ));
            }
            if m.max_output_tokens == 0 {
                e.push(format!(
                    "models.{id}.max_output_tokens must be greater than 0"
                ));
            }
            for (field, pair) in [
                ("input_cache_hit", &m.input_cache_hit),
                ("input_cache_miss", &m.input_cache_miss),
                ("output", &m.output),
            ] {
                if pair.iter().any(|p| p.is_negative()) {
                    e.push(format!("models.{id}.{field}: a price cannot be negative"));
                }
            }
            if m.max_in_flight == 0 {
                // Every request for it would wait out the queue, then get 503 upstream_busy.
                e.push(format!("models.{id}.max_in_flight must be at least 1"));
            }
            if m.output.iter().any(|p| p.nanos() == 0) {
                e.push(format!(
                    "models.{id}.output: an output price of 0 would make every budget endless"
                ));
            }
        }
        self.check_aliases(e);
    }

    /// `models.*.aliases`: well formed, no model's id, and no name (or pattern) given twice.
    fn check_aliases(&self, e: &mut Vec<String>) {
        let mut seen: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
        for (id, m) in &self.models {
            for alias in &m.aliases {
                let stem = alias.strip_suffix('*').unwrap_or(alias);
                if stem.is_empty() || !is_ident(stem) {
                    e.push(format!(
                        "models.{id}.aliases: {alias:?} must be a name of ASCII letters, digits, \
                         '.', '-' and '_', optionally ending in '*'"
                    ));
                }
                if self.models.contains_key(alias.as_str()) {
                    e.push(format!(
                        "models.{id}.aliases: {alias:?} is the id of a model"
                    ));
                }
                if let Some(other) = seen.insert(alias.as_str(), id.as_str()) {
                    e.push(format!(
                        "models.{id}.aliases: {alias:?} is also an alias of models.{other}"
                    ));
                }
            }
        }
    }

    /// `[plans.*]`: ids, names, prices to the cent, budgets, rate limits and known models.
    fn check_plans(&self, e: &mut Vec<String>) {
        if self.plans.is_empty() {
            e.push("no plans: define at least one [plans.<id>]".into());
        }
        for (id, p) in &self.plans {
            if !is_ident(id) {
                e.push(format!(
                    "plans.{}: a plan id is 1 to 64 ASCII letters, digits, '.', '-' and '_'",
                    crate::text::echoed(id)
                ));
            }
            if p.name.trim().is_empty() {
                e.push(format!("plans.{id}.name must not be empty"));
            }
            if p.price_usd.nanos() <= 0 {
                e.push(format!("plans.{id}.price_usd must be greater than 0"));
            } else if p.price_usd.nanos() % 10_000_000 != 0 {
                e.push(format!(
                    "plans.{id}.price_usd = \"{}\" must be whole cents (PayPal charges USD to the cent)",
                    p.price_usd
                ));
            }
            if p.budget_usd.nanos() <= 0 {
                e.push(format!("plans.{id}.budget_usd must be greater than 0"));
            }
            // A price past the CLI's typo guard is a mistake; a budget past a key's ceiling
            // could not be granted (a few top-ups of one near nano-dollars' 64-bit limit
            // would overflow a key).
            for (field, v, max) in [
                ("budget_usd", p.budget_usd, crate::money::MAX_BUDGET),
                ("price_usd", p.price_usd, crate::money::MAX_AMOUNT),
            ] {
                if v > max {
                    e.push(format!("plans.{id}.{field} must be at most ${max}"));
                }
            }
            if p.rpm == 0 {
                e.push(format!("plans.{id}.rpm must be at least 1"));
            }
            if p.max_in_flight == 0 {
                e.push(format!("plans.{id}.max_in_flight must be at least 1"));
            }
            if p.models.is_empty() {
                e.push(format!("plans.{id}.models must name at least one model"));
            }
            for m in &p.models {
                if !self.models.contains_key(m) {
                    e.push(format!(
                        "plans.{id}.models names unknown model {m:?} (known: {})",
                        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
}

/// `http://` or `https://` followed by a host: a URL the HTTP clients can send to.
fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty())
        && s.parse::<hyper::Uri>()
            .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()))
}

/// A model name or plan id: short, and safe in URLs, keys and TOML table names.
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// `[email]`: a usable URL and sender once it is on, sane numbers always.
    pub(super) fn check_email(&self, e: &mut Vec<String>) {
        let m = &self.email;
        if m.enabled() {
            // Never echo the URL: it carries the password.
            if let Some(problem) = super::smtp::problem(m.smtp_url.trim()) {
                e.push(problem);
            }
            if m.from.trim().is_empty() {
                e.push(
                    "email.from must be set when email.smtp_url is (e.g. \"billing@example.com\")"
                        .into(),
                );
            } else if m.from.trim().parse::<lettre::message::Mailbox>().is_err() {
                e.push(format!(
                    "email.from = {:?} is not an address such as \"Shop <billing@example.com>\"",
                    m.from
                ));
            }
        }
        if m.send_per_minute == 0 {
            e.push("email.send_per_minute must be at least 1".into());
        }
        if m.max_attempts == 0 {
            e.push("email.max_attempts must be at least 1".into());
        }
        if m.retry_secs == 0 || m.retry_secs > 3600 {
            e.push("email.retry_secs must be between 1 and 3600".into());
        }
        if m.timeout_secs == 0 {
            e.push("email.timeout_secs must be greater than 0".into());
        }
    }
}

/// A directive of a log filter that is a bare word but not a level: the filter takes it as a
/// target at every level and drops everything else, so `"loud"` would silence the daemon.
fn bare_target(filter: &str) -> Option<&str> {
    const LEVELS: [&str; 12] = [
        "error", "warn", "info", "debug", "trace", "off", "0", "1", "2", "3", "4", "5",
    ];
    filter.split(',').map(str::trim).find(|d| {
        !d.is_empty()
            && !d.contains(['=', '['])
            && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d))
    })
}
