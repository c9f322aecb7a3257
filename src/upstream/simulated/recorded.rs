//! What the simulator remembers of each chat or messages request, for tests to inspect, and the
//! log that keeps it: every request by default, only the latest ones when a limit is set (a demo
//! left running for days must not grow without end).

use std::collections::VecDeque;

use axum::http::HeaderMap;
use serde_json::Value;

/// One chat or messages request as the simulator received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, starting at 0 (one sequence across both endpoints).
    pub index: usize,
    /// Which API the request came to.
    pub endpoint: Endpoint,
    /// The path and query string it was sent to, e.g. `/anthropic/v1/messages?beta=true`.
    pub path: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The raw `x-api-key` header, if any.
    pub x_api_key: Option<String>,
    /// The key of the account the request was made with (the one DeepSeek honours: Bearer,
    /// else `x-api-key` on the Anthropic route); `None` when it matched no account.
    pub account: Option<String>,
    /// Every header as received, so a test can check what was (not) forwarded.
    pub headers: HeaderMap,
    /// The parsed JSON body (`Value::Null` when the body was not JSON).
    pub body: Value,
    /// The DeepSeek model that answered (a `claude*` name mapped); `None` when refused.
    pub served_model: Option<String>,
    /// How the request ended so far.
    pub outcome: Outcome,
}

/// The API a recorded request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI's format: `POST /chat/completions` or `/v1/chat/completions`.
    ChatCompletions,
    /// Anthropic's format: `POST /anthropic/v1/messages` or `/anthropic/messages`.
    AnthropicMessages,
}

/// How a chat request ended, as observed by the simulator itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    InProgress,
    /// The whole answer (non-stream body, or stream through `[DONE]` / `message_stop`) was handed
    /// to the connection.
    Completed,
    /// The client went away while the answer was being produced normally.
    ClientDisconnected,
    /// Answered with this HTTP error status, or (500) an error event mid-stream.
    Failed(u16),
    /// The simulator cut the connection on purpose (`drop_after`) or because it was shut down.
    Dropped,
    /// The client went away while the simulator was stalling on purpose (`stall_after`).
    Stalled,
}

/// The recorded requests, numbered in arrival order; past `limit` the oldest are forgotten while
/// the numbering goes on, so an index handed out earlier never points at another request.
pub(super) struct Log {
    limit: Option<usize>,
    /// How many requests were forgotten: the first kept one's index.
    forgotten: usize,
    kept: VecDeque<RecordedRequest>,
}

impl Log {
    /// An empty log keeping at most `limit` requests (`None`: all of them).
    pub(super) fn new(limit: Option<usize>) -> Log {
        Log {
            limit,
            forgotten: 0,
            kept: VecDeque::new(),
        }
    }

    /// Record the request `make` builds from its index, and return that index.
    pub(super) fn push(&mut self, make: impl FnOnce(usize) -> RecordedRequest) -> usize {
        let index = self.forgotten + self.kept.len();
        self.kept.push_back(make(index));
        while self.limit.is_some_and(|limit| self.kept.len() > limit) {
            self.kept.pop_front();
            self.forgotten += 1;
        }
        index
    }

    /// Request `index`, unless it was never made or is forgotten.
    pub(super) fn get(&self, index: usize) -> Option<&RecordedRequest> {
        self.kept.get(index.checked_sub(self.forgotten)?)
    }

    /// Request `index` to update, unless it was never made or is forgotten.
    pub(super) fn get_mut(&mut self, index: usize) -> Option<&mut RecordedRequest> {
        self.kept.get_mut(index.checked_sub(self.forgotten)?)
    }

    /// The kept requests, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &RecordedRequest> {
        self.kept.iter()
    }
}
