//! The small enums several floors share: how a request ended ([`Finish`]) and where its token
//! counts come from ([`Measured`]), where an order stands ([`OrderStatus`]) and where a key
//! stands ([`KeyStatus`]). They sit at the bottom so the wire protocol, the store, the keys and
//! the console can all name them without importing one another; each keeps the stored name it
//! is written to the database with.

use serde::{Deserialize, Serialize};

/// Which API dialect a request was made in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI's chat completions (`/v1/chat/completions`).
    #[default]
    OpenAi,
    /// Anthropic's messages (`/v1/messages`, `/anthropic/v1/messages`).
    Anthropic,
}

impl Api {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    /// From the stored name (anything else is the original dialect).
    pub fn parse(s: &str) -> Api {
        if s == "anthropic" {
            Api::Anthropic
        } else {
            Api::OpenAi
        }
    }
}

/// Where a row's token counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measured {
    /// Upstream's `usage`.
    Provider,
    /// Our estimate: upstream never reported usage (client gone, stream cut).
    Estimated,
    /// Upstream reported more tokens than the request could have used (a malformed answer):
    /// the counts, or the charge for them, were capped at what the request's hold allowed.
    Clamped,
}

impl Measured {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Measured::Provider => "provider",
            Measured::Estimated => "estimated",
            Measured::Clamped => "clamped",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// Upstream finished and the client got everything.
    Complete,
    /// The client went away: a stream was cancelled upstream, a whole answer that had
    /// reached DeepSeek was read to its end (and billed at its count).
    ClientAbort,
    /// Upstream failed (status, malformed answer, cut stream).
    UpstreamError,
    /// Upstream went idle or took too long.
    UpstreamTimeout,
    /// Upstream refused the request itself (400/422), passed on to the client.
    Rejected,
    /// The daemon was shutting down and cut the stream.
    Shutdown,
}

impl Finish {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Complete => "complete",
            Finish::ClientAbort => "client_abort",
            Finish::UpstreamError => "upstream_error",
            Finish::UpstreamTimeout => "upstream_timeout",
            Finish::Rejected => "rejected",
            Finish::Shutdown => "shutdown",
        }
    }

    /// From the stored name; an unknown name reads as an upstream error.
    pub(crate) fn parse(s: &str) -> Finish {
        match s {
            "complete" => Finish::Complete,
            "client_abort" => Finish::ClientAbort,
            "upstream_timeout" => Finish::UpstreamTimeout,
            "rejected" => Finish::Rejected,
            "shutdown" => Finish::Shutdown,
            _ => Finish::UpstreamError,
        }
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Created at PayPal, not paid yet.
    Created,
    /// Captured, but PayPal holds the money for review (a webhook completes it).
    Pending,
    /// Paid: its key exists.
    Paid,
    /// Declined, or never created at PayPal: no money was taken.
    Failed,
    /// Captured — PayPal holds the buyer's money — but not given: the capture does not match
    /// the order (amount, currency, invoice), or a top-up's key was revoked meanwhile. The
    /// operator settles it by hand (a refund in PayPal, or a key).
    Review,
    /// Refunded or reversed: its key is revoked.
    Refunded,
}

impl OrderStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Failed => "failed",
            OrderStatus::Review => "review",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// From the stored name.
    pub(crate) fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "created" => OrderStatus::Created,
            "pending" => OrderStatus::Pending,
            "paid" => OrderStatus::Paid,
            "failed" => OrderStatus::Failed,
            "review" => OrderStatus::Review,
            "refunded" => OrderStatus::Refunded,
            _ => return None,
        })
    }
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Its remaining balance cannot pay for a token; a top-up re-activates it.
    Exhausted,
    /// Turned off for good (by the operator or a refund).
    Revoked,
}

impl KeyStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Exhausted => "exhausted",
            KeyStatus::Revoked => "revoked",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "exhausted" => Some(KeyStatus::Exhausted),
            "revoked" => Some(KeyStatus::Revoked),
            _ => None,
        }
    }

    /// As kept in a key's atomic status byte.
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    /// Back from the status byte.
    pub(crate) fn from_u8(v: u8) -> KeyStatus {
        match v {
            0 => KeyStatus::Active,
            1 => KeyStatus::Exhausted,
            _ => KeyStatus::Revoked,
        }
    }
}
