//! The OpenAI dialect: `POST /v1/chat/completions`, relayed to DeepSeek's own OpenAI-format
//! endpoint. Chunks and answers are read through a borrowed view and edited by splicing
//! ([`chunk`]); whatever that view does not take goes through the JSON tree ([`tree`]).

mod chunk;
mod request;
mod tree;
mod usage;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

pub use request::{ChatRequest, usage_from_json};

use super::billing::{Reported, Usage};
use super::dialect::{Answer, Dialect, PromptPieces, PublicModel, Step, StreamRewrite, Tally};
use super::error::GatewayError;
use super::json::{Key, error_text, has_empty_array, has_non_null};
use super::pipeline;
use crate::keys::{KeyState, KeyTable};
use crate::state::AppState;
use crate::status::Api;
use crate::upstream::Endpoint;
use crate::upstream::sse::SseEvent;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<Arc<AppState>>, req: Request) -> Response {
    pipeline::handle::<OpenAi>(state, req).await
}

/// The OpenAI chat-completions dialect.
pub struct OpenAi;

/// The end of a complete stream.
const DONE: &str = "data: [DONE]\n\n";

impl Dialect for OpenAi {
    type Request = ChatRequest;
    type Stream = Chunks;
    const ENDPOINT: Endpoint = Endpoint::ChatCompletions;
    const API: Api = Api::OpenAi;

    fn authenticate(keys: &KeyTable, headers: &HeaderMap) -> Result<Arc<KeyState>, GatewayError> {
        Ok(crate::keys::identify::authenticate(keys, headers)?)
    }

    fn parse(raw: &bytes::Bytes) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse_bytes(raw)
    }

    fn answer(raw: &[u8], public: &PublicModel) -> Result<Answer, String> {
        // Fast path: read what billing needs and rename the model in place, without a tree.
        if let Ok(text) = std::str::from_utf8(raw)
            && let Some(a) = chunk::answer(text, public)
            && a.has_choices
        {
            return Ok(Answer {
                usage: a.usage,
                output_estimate: a.generated.bytes.div_ceil(4),
                reported: Reported::default(),
                body: a.line.into_bytes(),
            });
        }
        let (usage, output_estimate, body) = tree::rewrite_answer(raw, public.name())?;
        Ok(Answer {
            usage,
            output_estimate,
            reported: Reported::default(),
            body,
        })
    }

    fn prompt_pieces(raw: &[u8]) -> Option<PromptPieces<'_>> {
        request::prompt_pieces(raw)
    }

    fn usage_at_end(tail: &[u8]) -> (Option<Usage>, Reported) {
        let usage = crate::gateway::json::last_object_member(tail, "usage")
            .and_then(|text| usage::usage_from_text(text).ok().flatten());
        (usage, Reported::default())
    }

    fn stream(req: &ChatRequest, public: PublicModel) -> Chunks {
        Chunks {
            public,
            include_usage: req.include_usage,
        }
    }

    fn error_response(e: GatewayError) -> Response {
        e.into_response()
    }

    fn error_event(e: &GatewayError) -> String {
        format!("data: {}\n\n", e.body_json())
    }
}

/// Rewrites one stream's chunks: the public model name, and `usage` hidden from a client that
/// did not ask for it (upstream is always asked for it, to bill).
pub struct Chunks {
    public: PublicModel,
    include_usage: bool,
}

impl StreamRewrite for Chunks {
    fn event(&mut self, ev: &SseEvent, tally: &mut Tally) -> Result<Step, String> {
        // Data split over several `data:` lines arrives joined by LF; in JSON an LF can only
        // be whitespace between tokens, so a space keeps the meaning and the event stays on
        // one line for the client. (memchr's search: `str::contains` was ~300 instructions an
        // event.)
        let joined;
        let d = if memchr::memchr(b'\n', ev.data.as_bytes()).is_some() {
            joined = ev.data.replace('\n', " ");
            joined.as_str()
        } else {
            ev.data.as_str()
        };
        let trimmed = d.trim();
        if trimmed == "[DONE]" {
            return Ok(Step::End(DONE.to_string()));
        }
        // An event with empty data (a bare `data:` line) carries nothing: the openai SDKs pass
        // over it, and so does the relay, rather than ending the stream as "not JSON".
        if trimmed.is_empty() {
            return Ok(Step::Skip);
        }
        // Whether this chunk ends the answer: looked for only in chunks without output (a
        // finish chunk's delta is usually empty) or with the usage (DeepSeek's last chunk), so
        // not in every chunk of the stream.
        static FINISH: Key = Key::new("\"finish_reason\"");
        let note_finish = |tally: &mut Tally| {
            if !tally.finished && has_non_null(d, &FINISH) {
                tally.finished = true;
            }
        };
        match chunk::read(d, &self.public, self.include_usage) {
            Ok(Some(read)) => {
                if read.generated.deltas == 0 || read.usage.is_some() {
                    note_finish(tally);
                }
                // OpenAI's own last chunk: the usage alone, `choices` empty. It follows every
                // choice's finish, whichever chunk carried it (one with output is not searched).
                static CHOICES: Key = Key::new("\"choices\"");
                if read.usage.is_some() && !tally.finished && has_empty_array(d, &CHOICES) {
                    tally.finished = true;
                }
                tally.add(read.generated);
                if read.usage.is_some() {
                    tally.usage = read.usage;
                }
                Ok(Step::Send(read.line))
            }
            // Not the plain shape: the tree-based rewrite handles (or reports) it.
            Ok(None) => {
                note_finish(tally);
                tree::rewrite_chunk(d, self.public.name(), self.include_usage, tally)
                    .map(Step::Send)
            }
            Err(chunk::UpstreamErrorEvent) => {
                Err(format!("upstream error event: {}", error_text(d)))
            }
        }
    }

    fn end_at_eof(&mut self, tally: &Tally) -> Result<String, String> {
        // DeepSeek puts the usage on the last chunk, the one with a `finish_reason`: with both,
        // the answer is complete (usage alone may be an interim count).
        if tally.usage.is_some() && tally.finished {
            Ok(DONE.to_string())
        } else {
            Err("stream ended without [DONE]".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::upstream::sse::SseEvent;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    /// A stream that breaks before `[DONE]` is whole only when upstream's usage came with a
    /// `finish_reason`: usage on a chunk that does not end the answer (an interim count) is not
    /// the end, and a cut there is a cut.
    #[test]
    fn eof_is_complete_only_after_the_finish_and_the_usage() {
        let mut c = Chunks {
            public: PublicModel::new("m"),
            include_usage: true,
        };
        let mut t = Tally::new(Instant::now());
        let interim = r#"{"model":"up","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        assert!(c.event(&ev(interim), &mut t).is_ok());
        assert!(t.usage.is_some() && !t.finished);
        assert!(c.end_at_eof(&t).is_err());
        // The finish on a chunk that also carries output and the usage.
        let mut t2 = Tally::new(Instant::now());
        let both = r#"{"model":"up","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        assert!(c.event(&ev(both), &mut t2).is_ok());
        assert!(t2.finished);
        let last = r#"{"model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        assert!(c.event(&ev(last), &mut t).is_ok());
        assert!(t.finished);
        assert_eq!(c.end_at_eof(&t), Ok(DONE.to_string()));
    }

    /// OpenAI's shape: the finish on the last chunk with output, then the usage alone with
    /// `choices` empty; a break after it is the end of a whole answer (it was "retry", billed
    /// in full). A bare `data:` is passed over, not a broken stream.
    #[test]
    fn eof_after_openai_usage_chunk_is_complete() {
        let mut c = Chunks {
            public: PublicModel::new("m"),
            include_usage: true,
        };
        let mut t = Tally::new(Instant::now());
        let last = r#"{"model":"up","choices":[{"index":0,"delta":{"content":"END"},"finish_reason":"stop"}]}"#;
        assert!(c.event(&ev(last), &mut t).is_ok());
        assert!(matches!(c.event(&ev(""), &mut t), Ok(Step::Skip)));
        assert!(c.end_at_eof(&t).is_err());
        let usage =
            r#"{"model":"up","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        assert!(c.event(&ev(usage), &mut t).is_ok());
        assert!(t.usage.is_some() && t.finished);
        assert_eq!(c.end_at_eof(&t), Ok(DONE.to_string()));
    }
}
