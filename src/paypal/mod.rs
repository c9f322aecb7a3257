//! PayPal REST client: Orders v2 (create, capture, look up) and webhook verification by postback.
//!
//! Written against the REST API with reqwest because no PayPal crate is maintained well enough to
//! trust with money. What the storefront relies on:
//! - one OAuth2 client-credentials token, cached until shortly before it expires and refreshed
//!   once when PayPal answers 401 (tokens can be revoked before their stated expiry);
//! - `PayPal-Request-Id` on create and capture, so a retried call returns the original result
//!   instead of creating a second order or capture;
//! - a capture that PayPal says was already made is looked up and returned, so every retry of a
//!   capture converges on the one capture that exists;
//! - amounts cross the wire as exact two-decimal strings (`"1.00"`), never through floats;
//! - webhooks are verified by PayPal itself (`verify-webhook-signature`), posting the raw body
//!   verbatim so re-serialisation can never change what PayPal checks.
//!
//! [`simulated`] is a loopback PayPal speaking the same API, for `serve --demo` and the tests.

mod client;
pub mod simulated;
mod types;
mod verify;
mod wire;

pub use client::PayPal;
pub use types::*;

#[cfg(test)]
mod tests;
