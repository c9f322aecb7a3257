//! The seam between the one request pipeline and an API dialect.
//!
//! Admission, the relay, settlement, the ledger, activity events and metrics are shared; a
//! dialect decides only how a client request is parsed and rewritten for upstream, where the
//! usage is read in an answer or an event stream, how events are rewritten for the client, and
//! how errors are shaped. A second dialect is a new module implementing [`Dialect`], not a copy
//! of the handler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::Response;

use super::billing::{HoldNeeds, Reported, Usage};
use super::error::GatewayError;
pub use super::pieces::PromptPieces;
use crate::keys::{KeyState, KeyTable};
use crate::status::Api;
use crate::upstream::Endpoint;
use crate::upstream::sse::SseEvent;

/// One API dialect.
pub trait Dialect: Send + Sync + 'static {
    /// A parsed client request.
    type Request: ClientRequest;
    /// What rewrites one stream's events for the client.
    type Stream: StreamRewrite;
    /// Where upstream serves this dialect.
    const ENDPOINT: Endpoint;
    /// Which dialect it is (ledger rows, the console, metrics).
    const API: Api;

    /// The paying key of a request (401 in this dialect's words when there is none).
    fn authenticate(keys: &KeyTable, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError>;

    /// Parse and check a request body (400 for what the gateway cannot work with). The body
    /// is shared, so a request may keep it rather than copy what it relays.
    fn parse(raw: &bytes::Bytes) -> Result<Self::Request, GatewayError>;
    /// Read a whole (non-stream) answer: its usage, and the body for the client. `Err` says
    /// why it is not a usable answer (for the log).
    fn answer(raw: &[u8], public: &PublicModel) -> Result<Answer, String>;
    /// The usage of a whole answer too large to keep, read from its last bytes (`tail`):
    /// upstream's counts, or one side of them.
    fn usage_at_end(tail: &[u8]) -> (Option<Usage>, Reported);
    /// The texts of a request body's prompt, each as it goes into DeepSeek's template (what
    /// the prompt estimate counts the bytes of), and its number of messages: for a count by
    /// DeepSeek's tokenizer when a bill needs one ([`super::tokens`]), and for the key's
    /// recent prompts ([`crate::keys::prompts`]). Borrowed from the body where it can be
    /// ([`super::pieces`]). `None` for a body that is not one (it was parsed already, so
    /// never in practice).
    fn prompt_pieces(raw: &[u8]) -> Option<PromptPieces<'_>>;
    /// The rewriter for one stream of `req`, answering as model `public`.
    fn stream(req: &Self::Request, public: PublicModel) -> Self::Stream;
    /// An error as this dialect's clients expect it.
    fn error_response(e: GatewayError) -> Response;
    /// An error as the last event of a stream that already started.
    fn error_event(e: &GatewayError) -> String;
}

/// What the pipeline needs of a parsed request, whatever its dialect.
pub trait ClientRequest: Send + Sized + 'static {
    /// The model name the client asked for.
    fn model(&self) -> &str;
    /// Streamed?
    fn stream(&self) -> bool;
    /// What the hold must cover.
    fn hold_needs(&self) -> HoldNeeds;
    /// Prompt tokens estimated from the request, for when upstream never reports usage.
    fn prompt_estimate(&self) -> u64;
    /// The body for upstream: the client's fields, with what the gateway owns replaced
    /// (model, the key's id as the end-user id, the budget-lowered `max_tokens`).
    /// Consumes the request: its parsed body is edited in place, not copied.
    fn upstream_body(self, upstream_model: &str, user_id: &str, max_tokens: u64) -> Vec<u8>;
}

/// A whole answer, read.
pub struct Answer {
    /// Upstream's usage, if it reported one.
    pub usage: Option<Usage>,
    /// Output tokens estimated from the generated text (when usage is missing).
    pub output_estimate: u64,
    /// One side of a usage that lacks the other.
    pub reported: Reported,
    /// The body for the client.
    pub body: Vec<u8>,
}

/// What to do with one upstream event.
pub enum Step {
    /// Send these bytes to the client.
    Send(String),
    /// Send nothing.
    Skip,
    /// The stream is complete; these bytes are its end, sent once the request has settled.
    End(String),
}

/// Rewrites one stream's events for the client and reads what billing needs on the way.
pub trait StreamRewrite: Send + 'static {
    /// One upstream event; `Err` says why the stream cannot go on (for the log).
    fn event(&mut self, ev: &SseEvent, tally: &mut Tally) -> Result<Step, String>;
    /// Upstream closed without the dialect's end marker: the end to send when what arrived
    /// is complete anyway, else why the stream broke.
    fn end_at_eof(&mut self, tally: &Tally) -> Result<String, String>;
    /// What the client is told when the stream broke (an `Err` from [`StreamRewrite::event`]
    /// or [`StreamRewrite::end_at_eof`]): a plain upstream error, unless the dialect read a
    /// more telling reason in upstream's own error event.
    fn failure(&self) -> GatewayError {
        GatewayError::Upstream
    }
    /// Whether the stream's opening event reports the prompt's counts (Anthropic's
    /// `message_start` does; DeepSeek's OpenAI stream reports them only in its last chunk).
    fn prompt_at_opening(&self) -> bool {
        false
    }
}

/// What a stream relay has seen so far.
pub struct Tally {
    /// Upstream's usage, once reported.
    pub usage: Option<Usage>,
    /// One side of the usage, reported before (or without) the whole of it.
    pub reported: Reported,
    chunks_with_text: u64,
    text_bytes: u64,
    /// Time to the first generated output.
    pub first_token: Option<Duration>,
    /// Upstream said the answer is over (a `finish_reason`, a `stop_reason`): with the usage,
    /// what arrived is whole even if the connection breaks before the end marker.
    pub finished: bool,
    started: Instant,
}

/// What an event (or a whole answer) generated: how many of its deltas had output, and
/// their bytes in all. Counts, not a list, so that reading a chunk allocates nothing for it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    /// Deltas (or messages) with any output.
    pub deltas: u64,
    /// Their output's bytes (text, reasoning, tool calls), as decoded.
    pub bytes: u64,
}

impl Generated {
    /// One delta's output bytes; a delta with none is not counted.
    pub fn push(&mut self, bytes: usize) {
        if bytes > 0 {
            self.deltas += 1;
            self.bytes += bytes as u64;
        }
    }

    /// One delta that had `bytes` of output.
    pub fn one(bytes: usize) -> Generated {
        let mut g = Generated::default();
        g.push(bytes);
        g
    }
}

impl Tally {
    /// Nothing seen yet for a request that started at `started`.
    pub fn new(started: Instant) -> Tally {
        Tally {
            usage: None,
            reported: Reported::default(),
            chunks_with_text: 0,
            text_bytes: 0,
            first_token: None,
            finished: false,
            started,
        }
    }

    /// Count what an event's deltas generated.
    pub fn add(&mut self, generated: Generated) {
        if generated.deltas > 0 {
            self.chunks_with_text += generated.deltas;
            self.text_bytes += generated.bytes;
            let started = self.started;
            self.first_token.get_or_insert_with(|| started.elapsed());
        }
    }

    /// DeepSeek streams one token per delta, so the delta count is the estimate; an upstream
    /// that batches (over 12 bytes a delta on average) is estimated at 4 bytes a token instead.
    pub fn output_estimate(&self) -> u64 {
        if self.text_bytes > 12 * self.chunks_with_text {
            self.text_bytes.div_ceil(4)
        } else {
            self.chunks_with_text
        }
    }
}

/// The public model name, JSON-encoded once per request (not once per chunk).
#[derive(Debug, Clone)]
pub struct PublicModel {
    name: String,
    json: String,
}

impl PublicModel {
    /// Encode `name` as a JSON string.
    pub fn new(name: &str) -> PublicModel {
        PublicModel {
            name: name.to_string(),
            // A `&str` always serialises; the fallback is never taken.
            json: serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\"")),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a JSON string literal.
    pub fn json(&self) -> &str {
        &self.json
    }
}
