//! The warnings about a valid configuration that cannot do its job as it stands (`check-config`
//! and `serve` print them), and what counts as a missing upstream key.

use super::Config;

impl Config {
    /// No key to call DeepSeek with: every request would fail upstream. Valid for
    /// `serve --demo`, which brings its own; `serve` refuses to start. The one place that says
    /// what counts as an upstream key.
    pub fn upstream_key_missing(&self) -> bool {
        !self.accounts_without_key().is_empty()
    }

    /// The upstream accounts that have no key (`default` when no pool is configured).
    pub fn accounts_without_key(&self) -> Vec<String> {
        self.upstream
            .resolved_accounts()
            .into_iter()
            .filter(|a| a.api_key.trim().is_empty())
            .map(|a| a.name)
            .collect()
    }

    /// What [`Config::upstream_key_missing`] means, in the operator's words.
    pub fn missing_key_text(&self) -> String {
        if self.upstream.accounts.is_empty() {
            return "no upstream key configured (upstream.api_key, upstream.api_key_file or \
                    MODELRELAY_UPSTREAM__API_KEY)"
                .to_string();
        }
        let names: Vec<String> = self
            .accounts_without_key()
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        format!(
            "upstream account {} has no key (set its api_key or api_key_file)",
            names.join(", ")
        )
    }

    /// What a valid configuration cannot do as it stands, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        // A key systemd will provide is not missing (it stands in as a placeholder), and
        // `unread_secrets` says it could not be read from here.
        if self.upstream_key_missing() {
            w.push(format!(
                "{}: `serve` refuses to start without it, every request would fail upstream; \
                 `serve --demo` brings its own",
                self.missing_key_text()
            ));
        }
        w.extend(self.unread_secrets.iter().cloned());
        // Two accounts with one key are one DeepSeek account: its concurrency limit and
        // balance are shared, so the caps and coverage counted twice would be wrong.
        let accounts = self.upstream.resolved_accounts();
        for (i, a) in accounts.iter().enumerate() {
            let key = a.api_key.trim();
            if key.is_empty() || key == super::secrets::UNREAD_PLACEHOLDER {
                continue;
            }
            if let Some(b) = accounts[..i].iter().find(|b| b.api_key.trim() == key) {
                w.push(format!(
                    "upstream accounts {:?} and {:?} use the same api_key: they are one DeepSeek \
                     account, whose concurrency limit and balance they share (caps and \
                     coverage would count it twice)",
                    b.name, a.name
                ));
            }
        }
        // A `base_url` copied with an endpoint's path on it (`…/chat/completions`,
        // `…/anthropic`): every call would go to `<that>/chat/completions` and fail, and the
        // only word of it was a 404 at the balance check (found by a newcomer's check). A
        // proxy's own prefix is not one of these.
        for a in &accounts {
            let path_of = |url: &str| {
                url.parse::<hyper::Uri>()
                    .map(|u| u.path().trim_end_matches('/').to_ascii_lowercase())
                    .unwrap_or_default()
            };
            // The root too: `…/beta/v1` is a root of `…/beta` (found by an independent check).
            let paths = [path_of(&a.openai_base), path_of(&a.base_url)];
            let endpoint = [
                "/chat/completions",
                "/completions",
                "/anthropic",
                "/anthropic/v1",
                "/anthropic/v1/messages",
                "/messages",
                "/models",
                "/user/balance",
                // DeepSeek's base for its beta features (prefix and FIM completion): its chat
                // answers there, its Anthropic endpoint and balance do not.
                "/beta",
            ]
            .into_iter()
            .find(|e| paths.iter().any(|p| p.ends_with(e)));
            if let Some(endpoint) = endpoint {
                // An account without a `base_url` of its own has `upstream.base_url`'s: that is
                // the one to mend, said once (it was said of each such account, naming a
                // setting the operator never wrote).
                let own = self
                    .upstream
                    .accounts
                    .iter()
                    .find(|c| c.name == a.name)
                    .is_some_and(|c| !c.base_url.trim().is_empty());
                let which = if own {
                    format!("upstream account {:?}'s base_url", a.name)
                } else {
                    "upstream.base_url".to_string()
                };
                let what = if endpoint == "/beta" {
                    "DeepSeek's base for its beta features"
                } else {
                    "one of DeepSeek's endpoints"
                };
                let line = format!(
                    "{which} ends in {endpoint:?}, {what}: base_url is the \
                     API's root (\"https://api.deepseek.com\"), and the gateway adds \
                     /chat/completions, /anthropic/v1/messages, /models and /user/balance to it"
                );
                if !w.contains(&line) {
                    w.push(line);
                }
            }
        }
        // Holidays are listed a year at a time (the example file's are one year's): once all
        // are past, peak prices apply on next year's (found by an independent check in December).
        let today = chrono::Utc::now().date_naive();
        let dates: Vec<chrono::NaiveDate> = self
            .pricing
            .off_peak_dates
            .iter()
            .filter_map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .collect();
        if !dates.is_empty() && dates.iter().all(|d| *d < today) {
            w.push(format!(
                "pricing.off_peak_dates are all past (the last is {}): add the coming year's \
                 Chinese public holidays, or peak prices apply on them",
                dates
                    .iter()
                    .max()
                    .map_or_else(String::new, ToString::to_string)
            ));
        }
        // A warning, not an error: the daemon still serves (its socket then its user's and
        // root's only); a group deleted after install, or a typo, stopped it in a start loop
        // (found by an independent re-check).
        if let Some(group) = self.server.admin_group.as_deref()
            && !matches!(nix::unistd::Group::from_name(group), Ok(Some(_)))
        {
            w.push(format!(
                "server.admin_group = {group:?}: no such group on this machine (create it with \
                 groupadd, or leave admin_group unset); the admin socket stays the daemon's \
                 user's and root's"
            ));
        }
        // The unit gives the service `TimeoutStopSec=90s` to stop: a drain as long would be
        // cut by SIGKILL (found by an independent check).
        if self.server.drain_secs >= 80 {
            w.push(format!(
                "server.drain_secs = {} is near or past the example unit's TimeoutStopSec=90s: \
                 systemd would kill the daemon before its drain ends; keep it below 80 (if \
                 you raised TimeoutStopSec in a drop-in, this does not apply)",
                self.server.drain_secs
            ));
        }
        // The pages, the checkout and every mail name `public_url`: left at its default while
        // `listen` moved, they name a port nothing answers on (found by an independent check).
        let defaults = super::ServerConfig::default();
        if self.server.public_url == defaults.public_url && self.server.listen != defaults.listen {
            w.push(format!(
                "server.public_url is still {:?} while server.listen is {:?}: the docs, the \
                 checkout and mails give customers that address; set server.public_url to the \
                 one they use",
                defaults.public_url, self.server.listen
            ));
        }
        // A public site (behind a proxy, or taking real payments) whose public URL is this
        // machine's own, or plain HTTP (found by an independent check: README's proxy setup
        // keeps `listen` at its default, so the warning above never fired).
        let live = self.paypal.env == super::PaypalEnv::Live;
        let local = self
            .server
            .public_url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        let said_above =
            self.server.public_url == defaults.public_url && self.server.listen != defaults.listen;
        if local && (self.server.behind_proxy || live) && !said_above {
            w.push(format!(
                "server.public_url is {:?}, this machine's own address, while {}: the docs, the \
                 checkout's PayPal return links and mails give customers that address; set \
                 server.public_url to the https:// address they use",
                self.server.public_url,
                if self.server.behind_proxy {
                    "server.behind_proxy is on"
                } else {
                    "paypal.env is live"
                }
            ));
        } else if live && self.server.public_url.starts_with("http://") {
            w.push(format!(
                "server.public_url is {:?} with paypal.env = live: keys would be shown and \
                 payments made over plain HTTP; serve the site over TLS (README's reverse proxy) \
                 and give its https:// address",
                self.server.public_url
            ));
        }
        // What `serve` would only say in its log (found by an independent check: a newcomer's
        // `check-config` was clean while the storefront could not take a payment).
        if self.paypal.client_id.trim().is_empty() {
            w.push("paypal.client_id is empty: the storefront cannot take payments".into());
        } else if self.paypal.client_secret.trim().is_empty()
            && self.paypal.client_secret_file.is_none()
        {
            w.push(
                "paypal.client_secret is empty (and no client_secret_file): PayPal refuses every \
                 call, so the storefront cannot take payments"
                    .into(),
            );
        } else if self.paypal.webhook_id.trim().is_empty() {
            w.push(
                "paypal.webhook_id is empty: PayPal webhooks cannot be verified, so pending \
                 payments and refunds are never processed"
                    .into(),
            );
        }
        // Accepted (a positive number) but a chat of a few turns is larger: every request of a
        // coding agent (50–200 KB) would be a 413 (found by an independent check).
        if self.server.max_body_bytes > 0 && self.server.max_body_bytes < MIN_SENSIBLE_BODY {
            w.push(format!(
                "server.max_body_bytes = {} is below {MIN_SENSIBLE_BODY}: longer conversations \
                 and every coding agent's request (50–200 KB) would be refused with 413 (the \
                 default is 8388608)",
                self.server.max_body_bytes
            ));
        }
        // A key may hold at most its plan's `max_in_flight` of the accounts' room for a model:
        // at or above all of it, one key fills the pool and every other customer gets 503s
        // (found by an independent check).
        for (id, p) in &self.plans {
            for model in &p.models {
                let Some(m) = self.models.get(model) else {
                    continue;
                };
                let room: u64 = accounts
                    .iter()
                    .map(|a| {
                        u64::from(
                            a.max_in_flight
                                .get(model)
                                .copied()
                                .unwrap_or(m.max_in_flight),
                        )
                    })
                    .sum();
                if room > 0 && u64::from(p.max_in_flight) >= room {
                    w.push(format!(
                        "plans.{id}.max_in_flight = {} is at least the upstream accounts' room \
                         for {model} ({room} in all): one key of this plan can take all of it \
                         and leave every other customer 503 upstream_busy; lower it",
                        p.max_in_flight
                    ));
                }
            }
        }
        // Two plans on sale under one name look like one plan on the storefront.
        let on_sale: Vec<(&String, &super::PlanConfig)> =
            self.plans.iter().filter(|(_, p)| p.enabled).collect();
        for (i, (id, p)) in on_sale.iter().enumerate() {
            let name = p.name.trim();
            if let Some((other, q)) = on_sale[..i]
                .iter()
                .find(|(_, q)| q.name.trim().eq_ignore_ascii_case(name))
            {
                w.push(format!(
                    "plans.{other} ({:?}) and plans.{id} ({name:?}) are both on sale under one \
                     name: customers cannot tell them apart on the storefront",
                    q.name.trim()
                ));
            }
        }
        if !self.email.enabled()
            && self.email.smtp_url_file.is_none()
            && !self.email.from.trim().is_empty()
        {
            w.push(
                "email.from is set but email.smtp_url is empty: mail is off (no receipts or \
                 notices are sent)"
                    .into(),
            );
        }
        w
    }
}

/// Below this `server.max_body_bytes` is warned about: a conversation of a few turns, or any
/// request of a coding agent, is larger.
const MIN_SENSIBLE_BODY: usize = 65_536;
