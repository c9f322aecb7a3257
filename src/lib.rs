//! modelrelay: a self-hosted OpenAI-compatible gateway that resells DeepSeek models on prepaid
//! keys, with exact per-token billing.
//!
//! Module map:
//! - [`cli`]: the command line; [`config`]: figment layering and validation.
//! - [`console`]: the operator's live TUI (ratatui) on the admin socket.
//! - [`app`]: the router and the daemon's start and shutdown (the top floor).
//! - [`state`]: the state handlers share, request ids, client addresses.
//! - [`server`]: the HTTP accept loop with connection limits and timeouts.
//! - [`gateway`]: `/v1` — auth, rate limits, billing holds, the chat relay (stream and not).
//! - [`upstream`]: the DeepSeek client, SSE decoding, and the simulated DeepSeek.
//! - [`keys`]: keys in memory (balances as atomics), key material, sealing.
//! - [`store`]: SQLite, migrations, the group-committing writer, the ledger.
//! - [`money`], [`pricing`], [`catalog`]: nano-dollar money, peak windows, models and plans.
//! - [`status`]: the small enums every floor shares (how a request ended, order and key status);
//!   [`kinds`]: those of self-service (order kind, budget changes, mail).
//! - [`mail`]: receipts and notices: the outbox's mailer (SMTP) and the messages.
//! - [`shop`]: the storefront (pages, checkout API, webhooks, dashboard).
//! - [`activity`]: the event bus, the admin socket (wire protocol, server, client), the fold of
//!   events into a live view shared with the console; [`admin`]: key administration.
//! - [`metrics`]: `/healthz` and the Prometheus `/metrics` page.
//! - [`notify`]: systemd readiness notification (`Type=notify`); [`background`]: the priority
//!   of threads no answer waits for.

pub mod activity;
pub mod admin;
pub mod app;
pub mod background;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod gateway;
pub mod keys;
pub mod kinds;
pub mod mail;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod paypal;
pub mod pricing;
#[cfg(test)]
mod proptest_support;
pub mod server;
pub mod shop;
pub mod state;
pub mod status;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod upstream;
