//! Everything about talking to DeepSeek: a pool of accounts ([`account`], [`pool`]) behind one
//! HTTP client ([`http`]: hyper's, pooled, over rustls), sending a request to an endpoint on the least busy healthy account and
//! failing over to another when an attempt fails before any byte came back, reading the answer
//! (a JSON body or an event stream) under the idle and total timers, classifying every failure
//! as an [`UpstreamError`], and watching each account's health and DeepSeek balance
//! ([`balance`], [`watch`]).
//!
//! The customer side — what a failure means to a customer, billing, the error shapes — is the
//! gateway's; nothing here imports it.

pub mod account;
pub mod balance;
mod client;
mod error;
pub mod http;
pub mod pool;
mod reply;
pub mod simulated;
pub mod sse;
pub mod status;
mod watch;

pub use client::{Dispatch, Endpoint, Upstream};
pub use error::{UpstreamError, redact};
pub use http::BuildError;
pub use reply::is_data_event;
pub use reply::{EventStream, MAX_ANSWER, Reply, Whole, whole_answer_wait};
