//! Observability: `GET /healthz` (database and upstream reachability) and `GET /metrics`
//! (Prometheus text format, loopback only unless `server.metrics_public`).
//!
//! The counters are plain atomics in fixed tables sized at start (routes are the router's
//! templates, models come from the config, statuses from a fixed list), so the request path
//! never takes a lock. Labels never carry a key, an email or a prompt: per-key and per-order
//! figures are aggregated (keys by status, revenue) when the page is scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::status::Api;

/// Route templates counted by name; anything else (unmatched paths) is `other`.
const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/count_tokens",
    "/anthropic/messages",
    "/anthropic/messages/count_tokens",
    "/anthropic/v1/models",
    "/anthropic/v1/models/{id}",
    "/anthropic",
    "/anthropic/{*rest}",
    "/v1/models",
    "/v1/models/{id}",
    "/v1/dashboard/billing/subscription",
    "/v1/dashboard/billing/usage",
    "/v1",
    "/v1/",
    "/v1/{*rest}",
    "/",
    "/pricing",
    "/docs",
    "/checkout/{plan}",
    "/order",
    "/dashboard",
    "/dashboard/rotate",
    "/mail/opt-out/{token}",
    "/demo/paypal/approve",
    "/assets/{*path}",
    "/api/usage",
    "/api/orders",
    "/api/orders/{order_id}/capture",
    "/api/keys/rotate",
    "/webhooks/paypal",
    "/healthz",
    "/metrics",
    "other",
];

/// Slot of a dialect in the per-dialect counters.
fn api_slot(api: Api) -> usize {
    match api {
        Api::OpenAi => 0,
        Api::Anthropic => 1,
    }
}

/// Slot of a route template in [`ROUTES`]; unmatched or unknown routes are `other`.
pub(crate) fn route_slot(template: Option<&str>) -> usize {
    template
        .and_then(|t| ROUTES.iter().position(|r| *r == t))
        .unwrap_or(ROUTES.len() - 1)
}

/// HTTP statuses counted individually; others are counted by class (`2xx`, `4xx`, …).
const STATUSES: &[u16] = &[
    200, 201, 204, 301, 302, 303, 304, 400, 401, 402, 403, 404, 405, 408, 409, 413, 415, 422, 429,
    499, 500, 502, 503, 504,
];

/// Labels of the status slots: the listed codes, then one per class 1xx–5xx.
fn status_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(s) => s.to_string(),
        None => format!("{}xx", slot - STATUSES.len() + 1),
    }
}

/// Slot of a status code (see [`status_label`]).
fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|s| *s == status) {
        Some(i) => i,
        None => STATUSES.len() + usize::from((status / 100).clamp(1, 5)) - 1,
    }
}

const STATUS_SLOTS: usize = STATUSES.len() + 5;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Token kinds, in the order of [`ModelCounters::tokens`].
const TOKEN_KINDS: [&str; 4] = [
    "prompt_cache_hit",
    "prompt_cache_miss",
    "completion",
    "reasoning",
];

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Per-model counters of settled chat requests.
struct ModelCounters {
    /// Settled requests by the status the client got.
    requests: Box<[AtomicU64]>,
    /// Tokens by kind ([`TOKEN_KINDS`]).
    tokens: [AtomicU64; 4],
    /// Charged, nano-USD.
    spend_nanos: AtomicI64,
}

/// The process's counters (since start).
pub struct Metrics {
    /// Model names, in the order of `models`.
    model_names: Vec<String>,
    /// One per model name, then one for a model not in the config.
    models: Vec<ModelCounters>,
    /// HTTP responses by route × status slot.
    http: Box<[AtomicU64]>,
    /// Upstream latency histogram: one count per bucket (not cumulative), then +Inf.
    latency_buckets: Box<[AtomicU64]>,
    /// Sum of observed upstream latencies, microseconds.
    latency_sum_us: AtomicU64,
    /// Requests refused by a key's rate limit.
    rate_limited: AtomicU64,
    /// Settled requests by API dialect ([`Api::OpenAi`], [`Api::Anthropic`]) and status slot.
    by_api: [Box<[AtomicU64]>; 2],
    /// Charged by API dialect, nano-USD.
    spend_by_api: [AtomicI64; 2],
    /// Messages the SMTP server accepted.
    mail_sent: AtomicU64,
    /// Attempts to send a message that failed (each retry counts).
    mail_failed: AtomicU64,
    /// The cached upstream check.
    pub(crate) upstream_check: tokio::sync::Mutex<Option<(Instant, AccountHealth)>>,
}

/// Each account's last reachability check, by name.
pub type AccountHealth = Vec<(String, UpstreamHealth)>;

/// What the last upstream reachability check found.
#[derive(Debug, Clone)]
pub struct UpstreamHealth {
    /// Reachable (any HTTP answer counts: it is a reachability check, not an auth check).
    pub ok: bool,
    /// The HTTP status upstream answered, if it did.
    pub status: Option<u16>,
    /// How long the check took, milliseconds.
    pub latency_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// How long an upstream check result is reused.
pub(crate) const UPSTREAM_CHECK_TTL: Duration = Duration::from_secs(30);

impl Metrics {
    /// Counters for the configured models.
    pub fn new(model_names: impl IntoIterator<Item = String>) -> Metrics {
        let model_names: Vec<String> = model_names.into_iter().collect();
        let models = (0..=model_names.len())
            .map(|_| ModelCounters {
                requests: counters(STATUS_SLOTS),
                tokens: Default::default(),
                spend_nanos: AtomicI64::new(0),
            })
            .collect();
        Metrics {
            model_names,
            models,
            http: counters(ROUTES.len() * STATUS_SLOTS),
            latency_buckets: counters(LATENCY_BUCKETS.len() + 1),
            latency_sum_us: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            by_api: [counters(STATUS_SLOTS), counters(STATUS_SLOTS)],
            spend_by_api: [AtomicI64::new(0), AtomicI64::new(0)],
            mail_sent: AtomicU64::new(0),
            mail_failed: AtomicU64::new(0),
            upstream_check: tokio::sync::Mutex::new(None),
        }
    }

    fn model(&self, name: &str) -> &ModelCounters {
        let i = self
            .model_names
            .iter()
            .position(|m| m == name)
            .unwrap_or(self.model_names.len());
        &self.models[i.min(self.models.len() - 1)]
    }

    /// A settled chat request: its model, final status, tokens and charge.
    pub fn settled(&self, model: &str, row: &Settled) {
        let status = row.status;
        let m = self.model(model);
        m.requests[status_slot(status)].fetch_add(1, Ordering::Relaxed);
        let kinds = row.tokens;
        for (counter, n) in m.tokens.iter().zip(kinds) {
            // Saturating, not wrapping: a counter that wrapped would read as a reset.
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(n))
            });
        }
        m.spend_nanos
            .fetch_add(row.cost.nanos().max(0), Ordering::Relaxed);
        let a = api_slot(row.api);
        self.by_api[a][status_slot(status)].fetch_add(1, Ordering::Relaxed);
        self.spend_by_api[a].fetch_add(row.cost.nanos().max(0), Ordering::Relaxed);
    }
}

/// What the metrics count of a settled request (a copy of its ledger row's figures, so that
/// the row itself can go to the store before they are counted).
#[derive(Clone, Copy, Debug)]
pub struct Settled {
    /// Final HTTP status.
    pub status: u16,
    /// Cache-hit, cache-miss, completion and reasoning tokens.
    pub tokens: [u64; 4],
    /// What the key was charged.
    pub cost: crate::money::Usd,
    /// The API dialect it came through.
    pub api: crate::status::Api,
}

impl Settled {
    /// The figures of `row`.
    pub fn of(row: &crate::store::UsageRow) -> Settled {
        Settled {
            status: row.status,
            tokens: [
                row.cache_hit_tokens,
                row.cache_miss_tokens,
                row.completion_tokens,
                row.reasoning_tokens,
            ],
            cost: row.cost,
            api: row.api,
        }
    }
}

impl Metrics {
    /// One HTTP response to the route template in slot `route` (see [`route_slot`]).
    pub(crate) fn http_response(&self, route: usize, status: u16) {
        let r = route.min(ROUTES.len() - 1);
        self.http[r * STATUS_SLOTS + status_slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Time upstream took to answer with response headers.
    pub fn upstream_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A request refused by its key's rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A message of the outbox was accepted by the SMTP server.
    pub fn mail_sent(&self) {
        self.mail_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt to send a message failed.
    pub fn mail_failed(&self) {
        self.mail_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Write the counters held in memory.
    fn render_counters(&self, out: &mut String) {
        self.render_http(out);
        self.render_models(out);
        self.render_apis(out);
        self.render_latency(out);
        head(
            out,
            "modelrelay_rate_limited_total",
            "counter",
            "Requests refused by a key's rate limit.",
        );
        let _ = writeln!(
            out,
            "modelrelay_rate_limited_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        for (name, help, counter) in [
            (
                "modelrelay_mail_sent_total",
                "Receipts and notices the SMTP server accepted.",
                &self.mail_sent,
            ),
            (
                "modelrelay_mail_failed_total",
                "Attempts to send a receipt or notice that failed (each retry counts).",
                &self.mail_failed,
            ),
        ] {
            head(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
    }

    /// HTTP responses by route and status.
    fn render_http(&self, out: &mut String) {
        head(
            out,
            "modelrelay_http_requests_total",
            "counter",
            "HTTP responses by route template and status.",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for slot in 0..STATUS_SLOTS {
                let n = self.http[r * STATUS_SLOTS + slot].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "modelrelay_http_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                        escape(route),
                        status_label(slot)
                    );
                }
            }
        }
    }

    /// Per-model chat requests, tokens and spend, and the spend total.
    fn render_apis(&self, out: &mut String) {
        head(
            out,
            "modelrelay_api_requests_total",
            "counter",
            "Settled requests by API dialect (openai, anthropic) and the status the client got.",
        );
        for api in [Api::OpenAi, Api::Anthropic] {
            let slots = &self.by_api[api_slot(api)];
            for (slot, n) in slots.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "modelrelay_api_requests_total{{api=\"{}\",status=\"{}\"}} {n}",
                        api.as_str(),
                        status_label(slot)
                    );
                }
            }
        }
        head(
            out,
            "modelrelay_api_spend_usd_total",
            "counter",
            "Charged to keys by API dialect, USD.",
        );
        for api in [Api::OpenAi, Api::Anthropic] {
            let nanos = self.spend_by_api[api_slot(api)].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "modelrelay_api_spend_usd_total{{api=\"{}\"}} {}",
                api.as_str(),
                crate::money::Usd::from_nanos(nanos)
            );
        }
    }

    fn render_models(&self, out: &mut String) {
        let names = self
            .model_names
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("other"));
        let models: Vec<(&str, &ModelCounters)> = names.zip(self.models.iter()).collect();
        head(
            out,
            "modelrelay_chat_requests_total",
            "counter",
            "Settled chat completions by model and the status the client got.",
        );
        for (name, m) in &models {
            for slot in 0..STATUS_SLOTS {
                let n = m.requests[slot].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "modelrelay_chat_requests_total{{model=\"{}\",status=\"{}\"}} {n}",
                        escape(name),
                        status_label(slot)
                    );
                }
            }
        }
        head(
            out,
            "modelrelay_tokens_total",
            "counter",
            "Billed tokens by model and kind (completion includes reasoning).",
        );
        for (name, m) in &models {
            for (kind, c) in TOKEN_KINDS.iter().zip(&m.tokens) {
                let _ = writeln!(
                    out,
                    "modelrelay_tokens_total{{model=\"{}\",kind=\"{kind}\"}} {}",
                    escape(name),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        head(
            out,
            "modelrelay_spend_nanousd_total",
            "counter",
            "Charged to keys, nano-USD, by model.",
        );
        for (name, m) in &models {
            let _ = writeln!(
                out,
                "modelrelay_spend_nanousd_total{{model=\"{}\"}} {}",
                escape(name),
                m.spend_nanos.load(Ordering::Relaxed)
            );
        }
        let total: i64 = self
            .models
            .iter()
            .map(|m| m.spend_nanos.load(Ordering::Relaxed))
            .sum();
        head(
            out,
            "modelrelay_spend_usd",
            "gauge",
            "Charged to keys since start, USD (the nano-USD counter, written exactly).",
        );
        let _ = writeln!(
            out,
            "modelrelay_spend_usd {}",
            crate::money::Usd::from_nanos(total)
        );
    }

    /// The upstream latency histogram.
    fn render_latency(&self, out: &mut String) {
        head(
            out,
            "modelrelay_upstream_latency_seconds",
            "histogram",
            "Time upstream took to answer a chat request with response headers.",
        );
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "modelrelay_upstream_latency_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency_buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "modelrelay_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "modelrelay_upstream_latency_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "modelrelay_upstream_latency_seconds_count {cumulative}"
        );
    }
}

pub(crate) fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value (backslash, double quote, newline).
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub mod health;
pub mod http;
pub mod upstream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_slots_round_trip() {
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(418)), "4xx");
        assert_eq!(status_label(status_slot(207)), "2xx");
        assert_eq!(status_label(status_slot(599)), "5xx");
        assert_eq!(status_label(status_slot(0)), "1xx");
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(vec!["a".to_string()]);
        m.upstream_latency(Duration::from_millis(30));
        m.upstream_latency(Duration::from_secs(100));
        let mut out = String::new();
        m.render_counters(&mut out);
        assert!(out.contains("modelrelay_upstream_latency_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(out.contains("modelrelay_upstream_latency_seconds_bucket{le=\"60\"} 1\n"));
        assert!(out.contains("modelrelay_upstream_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("modelrelay_upstream_latency_seconds_count 2\n"));
    }
}
