//! The rows a [`Fold`](super::Fold) keeps: finished requests, refusals, a key's rate-limit
//! hits; each converts losslessly from and back to the event it came from.

use std::collections::VecDeque;

use crate::activity::protocol::{ActivityEvent, RateLimitHits};
use crate::money::Usd;
use crate::status::{Api, Finish, Measured};

/// A finished request, as the live views list it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRow {
    /// `x-request-id`.
    pub request_id: String,
    /// Key id.
    pub key_id: String,
    /// Key display prefix (when known).
    pub key_prefix: Option<String>,
    /// Public model name.
    pub model: String,
    /// HTTP status sent.
    pub status: u16,
    /// How it ended.
    pub finish: Finish,
    /// Charged.
    pub cost_usd: Usd,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Provider-measured or estimated.
    pub measured: Measured,
    /// Start to last byte.
    pub latency_ms: u64,
    /// Start to first token.
    pub ttft_ms: Option<u64>,
    /// The API dialect it was made in.
    pub api: Api,
    /// The upstream account that served it.
    pub account: String,
    /// Unix ms it finished.
    pub at_ms: i64,
}

impl FinishedRow {
    /// The row of a `request_finished` event (`None` for any other event).
    pub fn of(e: &ActivityEvent, key_prefix: Option<String>) -> Option<FinishedRow> {
        let ActivityEvent::RequestFinished {
            request_id,
            key_id,
            model,
            status,
            finish,
            cost_usd,
            prompt_tokens,
            completion_tokens,
            measured,
            latency_ms,
            ttft_ms,
            api,
            account,
            at_ms,
        } = e
        else {
            return None;
        };
        Some(FinishedRow {
            request_id: request_id.clone(),
            key_id: key_id.clone(),
            key_prefix,
            model: model.clone(),
            status: *status,
            finish: *finish,
            cost_usd: *cost_usd,
            prompt_tokens: *prompt_tokens,
            completion_tokens: *completion_tokens,
            measured: *measured,
            latency_ms: *latency_ms,
            ttft_ms: *ttft_ms,
            api: *api,
            account: account.clone(),
            at_ms: *at_ms,
        })
    }

    /// Back to the event it came from.
    pub fn to_event(&self) -> ActivityEvent {
        ActivityEvent::RequestFinished {
            request_id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            model: self.model.clone(),
            status: self.status,
            finish: self.finish,
            cost_usd: self.cost_usd,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            measured: self.measured,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            api: self.api,
            account: self.account.clone(),
            at_ms: self.at_ms,
        }
    }
}

/// A 402/403 refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Key id, when known.
    pub key_id: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// Error code.
    pub code: String,
    /// Unix ms.
    pub at_ms: i64,
}

impl Refusal {
    /// The refusal a `refused` event tells (`None` for any other event).
    pub fn of(e: &ActivityEvent) -> Option<Refusal> {
        match e {
            ActivityEvent::Refused {
                key_id,
                status,
                code,
                at_ms,
            } => Some(Refusal {
                key_id: key_id.clone(),
                status: *status,
                code: code.clone(),
                at_ms: *at_ms,
            }),
            _ => None,
        }
    }

    /// Back to the event it came from.
    pub fn to_event(&self) -> ActivityEvent {
        ActivityEvent::Refused {
            key_id: self.key_id.clone(),
            status: self.status,
            code: self.code.clone(),
            at_ms: self.at_ms,
        }
    }
}

/// One key's rate-limit hits.
#[derive(Debug, Clone, PartialEq)]
pub struct Hits {
    /// Key display prefix (as first seen).
    pub key_prefix: String,
    /// The plan's RPM (as last seen).
    pub limit: u32,
    /// Unix ms of each hit, in the order they came.
    pub hits_ms: VecDeque<i64>,
    /// The newest hit of the last hour pushed out of `hits_ms` by newer ones: its length is
    /// then a floor of the hour's hits.
    pub pushed_out_ms: Option<i64>,
}

impl Hits {
    /// A key's hits from a snapshot, keyed by key id.
    pub fn of(r: &RateLimitHits) -> (String, Hits) {
        let hits = Hits {
            key_prefix: r.key_prefix.clone(),
            limit: r.limit,
            hits_ms: r.hits_ms.iter().copied().collect(),
            pushed_out_ms: r.pushed_out_ms,
        };
        (r.key_id.clone(), hits)
    }

    /// Back to a snapshot's view of key `key_id`.
    pub fn view(&self, key_id: &str) -> RateLimitHits {
        RateLimitHits {
            key_id: key_id.to_string(),
            key_prefix: self.key_prefix.clone(),
            limit: self.limit,
            hits_ms: self.hits_ms.iter().copied().collect(),
            pushed_out_ms: self.pushed_out_ms,
        }
    }
}
