//! Reading an upstream answer that arrived with a 2xx: a whole JSON body, or an event stream,
//! each under two timers — idle (no data for `idle_timeout`: in a stream, DeepSeek's
//! keep-alive comments do not count; a whole answer's blank lines do, being its only sign of
//! life) and total (a stream's: the request's deadline; a whole answer's: [`WHOLE_ANSWER_LIMIT`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use hyper::Response;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::UpstreamError;
use super::http;
use super::pool::Slot;
use super::sse::{SseDecoder, SseItem};

/// Largest non-stream answer kept to relay; a larger one is read to its end for its usage
/// and not relayed ([`Whole::TooLarge`]).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// How much of the end of a too large answer is kept: its `usage` is among its last members.
const KEPT_TAIL: usize = 1024 * 1024;
/// Longest a whole (non-stream) answer is ever waited for once upstream took it (its 2xx head
/// came), in place of the request's deadline, while upstream keeps the connection alive (the
/// idle timer still cuts a silent one): see [`whole_answer_wait`]. DeepSeek writes a whole
/// answer only when it is done, and bills it whole: one cut at the request's deadline (900 s:
/// ~27k tokens at DeepSeek's slowest) was generated, billed to the operator, and free to the
/// customer, who could ask for it again and again (found by an independent check). Six hours
/// cover the longest output DeepSeek writes (384K tokens) at under 18 tokens a second.
pub const WHOLE_ANSWER_LIMIT: Duration = Duration::from_secs(6 * 3600);
/// The slowest DeepSeek is taken to write, in tokens a second, for [`whole_answer_wait`].
const SLOWEST_TOKENS_PER_SEC: u64 = 10;
/// How long DeepSeek may keep a request queued before it starts (it closes one not started
/// after 10 minutes).
const LONGEST_QUEUE: Duration = Duration::from_secs(600);

/// How long a whole answer of at most `max_tokens` output tokens is waited for once upstream
/// took it: what DeepSeek needs to queue it and write it at its slowest, at least the
/// request's own timeout, at most [`WHOLE_ANSWER_LIMIT`]. A bound from the answer's size, not
/// six hours for every request: an upstream that sends only blank lines (queued, or stalled
/// behind them) held an account's and a key's places for the whole six hours (found by an
/// independent re-check).
pub fn whole_answer_wait(max_tokens: u64, request_timeout: Duration) -> Duration {
    let writing = Duration::from_secs(max_tokens.div_ceil(SLOWEST_TOKENS_PER_SEC));
    (LONGEST_QUEUE + writing)
        .max(request_timeout)
        .min(WHOLE_ANSWER_LIMIT)
}

/// A whole (non-stream) answer as read.
#[derive(Debug)]
pub enum Whole {
    /// The body.
    Body(Vec<u8>),
    /// Over [`MAX_ANSWER`]: read to its end (DeepSeek generated it and bills it), and only
    /// its last bytes kept — where its usage is.
    TooLarge {
        /// The answer's last bytes (at most 1 MiB).
        tail: Vec<u8>,
    },
}

/// A 2xx answer whose body is still to be read.
pub struct Reply {
    resp: Response<Incoming>,
    idle: Duration,
    deadline: Instant,
    max_event: usize,
    /// The account's slot, held until the answer has been read.
    slot: Slot,
}

impl Reply {
    pub(super) fn new(
        resp: Response<Incoming>,
        idle: Duration,
        deadline: Instant,
        max_event: usize,
        slot: Slot,
    ) -> Reply {
        Reply {
            resp,
            idle,
            deadline,
            max_event,
            slot,
        }
    }

    /// The account serving it.
    pub fn account(&self) -> &str {
        &self.slot.account().name
    }

    /// The whole body of a non-stream answer. DeepSeek writes it only when it is done and
    /// sends blank lines meanwhile (while it queues, and while it generates): those are its
    /// only sign of life, so they count for the idle timer here — a thinking model's long
    /// answer is waited for (`wait` from its head, see [`whole_answer_wait`], not the request's
    /// deadline), where
    /// ignoring them cut every answer that took longer than the idle timeout, paid to DeepSeek
    /// and, with the SDKs' retries, paid three times (found by an independent check). Silence
    /// (not even a blank line) for the idle timeout is a hung path. The account is told how it
    /// went: a body that is no JSON object (a proxy's page, nothing), an error object, or
    /// silence after the head is its failure; the limit on a whole answer, or on its size
    /// (the customer's asking), is not.
    pub async fn json(mut self, wait: Duration) -> Result<Whole, UpstreamError> {
        self.deadline = self
            .deadline
            .max(Instant::now() + wait.min(WHOLE_ANSWER_LIMIT));
        let read = self.read_whole().await;
        match &read {
            Ok(Whole::Body(body)) => {
                let body = body.trim_ascii_start();
                if !body.starts_with(b"{") {
                    let e = UpstreamError::Malformed("the answer is not a JSON object".into());
                    self.slot.failed(&e.to_string());
                    return Err(e);
                }
                if is_error_object(body) {
                    self.slot.failed("a 200 whose body is an error object");
                } else {
                    self.slot.worked();
                    self.slot.finished(false);
                }
            }
            // Megabytes of answer: the account works; the size was the customer's asking.
            Ok(Whole::TooLarge { .. }) => {
                self.slot.worked();
                self.slot.finished(false);
            }
            // The limit on a whole answer says nothing about the account.
            Err(UpstreamError::Timeout) if Instant::now() >= self.deadline => {}
            Err(e) => self.slot.failed(&e.to_string()),
        }
        read
    }

    async fn read_whole(&mut self) -> Result<Whole, UpstreamError> {
        let mut buf = Vec::new();
        let mut too_large = false;
        let mut last_byte = Instant::now();
        loop {
            let wait = self.deadline.min(last_byte + self.idle);
            match tokio::time::timeout_at(wait, http::chunk(self.resp.body_mut())).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Err(e)) => return Err(UpstreamError::Malformed(format!("body cut: {e}"))),
                Ok(Ok(None)) if too_large => return Ok(Whole::TooLarge { tail: buf }),
                Ok(Ok(None)) => {
                    // A byte-order mark before the JSON (serde refuses it; the SSE decoder
                    // already drops one): a whole answer is not thrown away for it.
                    if buf.starts_with(b"\xEF\xBB\xBF") {
                        buf.drain(..3);
                    }
                    return Ok(Whole::Body(buf));
                }
                Ok(Ok(Some(c))) => {
                    if !c.is_empty() {
                        last_byte = Instant::now();
                    }
                    // The blank lines before the JSON are not kept: hours of them would
                    // otherwise count against the answer's size limit.
                    let c = if buf.is_empty() {
                        c.trim_ascii_start()
                    } else {
                        &c[..]
                    };
                    buf.extend_from_slice(c);
                    if buf.len() > MAX_ANSWER && !too_large {
                        // From here only the tail is kept, in an allocation of its own: the
                        // 64 MiB one (128 MiB of capacity) was kept to the answer's end.
                        too_large = true;
                        buf = buf[buf.len() - KEPT_TAIL..].to_vec();
                    }
                    if too_large && buf.len() > 2 * KEPT_TAIL {
                        buf.drain(..buf.len() - KEPT_TAIL);
                    }
                }
            }
        }
    }

    /// The body as server-sent events.
    pub fn events(self) -> EventStream {
        let now = Instant::now();
        EventStream {
            resp: self.resp,
            idle: self.idle,
            deadline: self.deadline,
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(self.deadline.min(now + self.idle))),
            decoder: SseDecoder::new(self.max_event),
            ready: VecDeque::new(),
            scratch: Vec::new(),
            eof: false,
            failed: None,
            content: false,
            preamble_seen: false,
            ended: false,
            slot: self.slot,
        }
    }

    /// The raw response (the benchmark's pass-through route relays it untouched).
    #[cfg(feature = "bench-passthrough")]
    pub fn into_response(self) -> Response<Incoming> {
        self.resp
    }
}

/// An upstream event stream, decoded: comments and events, one at a time. Dropping it drops
/// the connection, which cancels the request at DeepSeek.
pub struct EventStream {
    resp: Response<Incoming>,
    idle: Duration,
    deadline: Instant,
    last_data: Instant,
    /// The idle and total timers as one, armed for the earlier of the two and moved on only
    /// when it fires before its time (an event since moved `last_data`, not the timer): a
    /// timer made for every read was ~8k instructions of a streamed request (bench/PROFILE.md).
    timer: Pin<Box<tokio::time::Sleep>>,
    decoder: SseDecoder,
    ready: VecDeque<SseItem>,
    scratch: Vec<SseItem>,
    eof: bool,
    /// Why decoding stopped, given after the events decoded before it in the same read: a read
    /// may hold whole events and then the start of one over the cap, and those events must
    /// still reach the client (and its bill), as they would had they come in a read of their own.
    failed: Option<String>,
    /// The account was told how its answer went (an event of the answer came, or an error).
    content: bool,
    /// An opening event came ([`EventStream::is_preamble`]).
    preamble_seen: bool,
    /// The account was told how the stream ended: failed before any answer, or, after the
    /// answer began, whole or broken ([`EventStream::finished`], [`EventStream::broke`]); once.
    ended: bool,
    /// The account's slot, given back when the stream ends (this is dropped); told how the
    /// answer went.
    slot: Slot,
}

impl EventStream {
    /// The next item; `Ok(None)` when upstream closed the stream. An event (not a comment, not
    /// a `ping`) restarts the idle timer. The account is told how its answer went: the first
    /// event that is not an error means it works; a stream that fails, or ends, before one
    /// (a 200 and then silence, an error event, nothing at all) is its failure.
    pub async fn next(&mut self) -> Result<Option<SseItem>, UpstreamError> {
        let next = self.read_next().await;
        match &next {
            Ok(Some(SseItem::Event(e))) if !self.content && self.is_data(e) => {
                if is_error_event(e) {
                    (self.content, self.ended) = (true, true);
                    self.slot.failed("an error event before any answer");
                } else if !is_answer_data(&e.data) {
                    (self.content, self.ended) = (true, true);
                    self.slot.failed("a stream whose data is not JSON");
                } else if self.is_preamble(e) {
                    // The opening (`message_start`, a block's start, a role-only first
                    // chunk) is no answer yet: one followed by only keep-alives is a stall.
                    self.preamble_seen = true;
                } else {
                    self.content = true;
                    self.slot.began();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) if !self.content => {
                self.ended = true;
                self.slot.failed("the stream ended before any answer");
            }
            // After the answer began, the relay says how it ended (whole or broken), since
            // only the dialect knows whether what came is whole ([`EventStream::finished`],
            // [`EventStream::broke`]).
            Ok(None) => {}
            // The request's own total limit says nothing about the account.
            Err(UpstreamError::Timeout) if Instant::now() >= self.deadline => {}
            Err(e) if !self.content => {
                self.ended = true;
                self.slot.failed(&e.to_string());
            }
            Err(_) => {}
        }
        next
    }

    /// Let the stream be read until `until`, past the request's deadline if need be (the idle
    /// rule still holds): a client gone or stalled at the deadline is billed what upstream had
    /// already sent, read for a moment after it — with the timer armed for the deadline, that
    /// read stopped at once, and what DeepSeek wrote went unbilled (found by an independent
    /// check).
    pub fn read_until(&mut self, until: Instant) {
        self.deadline = self.deadline.max(until);
        let wait = self.deadline.min(self.last_data + self.idle);
        self.timer.as_mut().reset(wait);
    }

    /// The answer broke after it began (an error event, a cut, a stall, an event the dialect
    /// cannot read, an end before the answer was whole): the account is told once
    /// ([`Slot::broke`]); past the request's own deadline, not at all.
    pub fn broke(&mut self, why: &str) {
        if Instant::now() >= self.deadline || std::mem::replace(&mut self.ended, true) {
            return;
        }
        if self.content {
            self.slot.broke(why);
        } else {
            // Broken before any answer (an opening event the dialect cannot read): a failure
            // of the account's like a stall or an error event there (it was told nothing;
            // found by an independent re-check).
            self.slot.failed(why);
        }
    }

    /// The answer ended whole: a probation its first words began is over ([`Slot::finished`]).
    pub fn finished(&mut self) {
        if self.content && !std::mem::replace(&mut self.ended, true) {
            self.slot.finished(true);
        }
    }

    /// An event that opens an answer without being any of it: Anthropic's `message_start`
    /// and `content_block_start`, or an unnamed stream's first data event (OpenAI's first
    /// chunk carries only the role).
    fn is_preamble(&self, e: &super::sse::SseEvent) -> bool {
        match e.event.as_deref() {
            Some("message_start" | "content_block_start") => true,
            Some(_) => false,
            None => !self.preamble_seen && e.data.trim() != "[DONE]",
        }
    }

    /// Whether an event is data (not a `ping`, by its name or, unnamed, by its data).
    fn is_data(&self, e: &super::sse::SseEvent) -> bool {
        is_data_event(e)
    }

    async fn read_next(&mut self) -> Result<Option<SseItem>, UpstreamError> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                // Keep-alives (comments; Anthropic's `ping` events) are not data: a stream
                // stalled behind them still times out.
                // A `ping` is known by its event name, or by its data where the name is
                // missing (only the start of the text is looked at).
                if matches!(&item, SseItem::Event(e) if self.is_data(e)) {
                    self.last_data = Instant::now();
                }
                return Ok(Some(item));
            }
            if let Some(why) = self.failed.take() {
                self.eof = true;
                return Err(UpstreamError::Malformed(why));
            }
            if self.eof {
                return Ok(None);
            }
            let read = tokio::select! {
                biased;
                r = http::chunk(self.resp.body_mut()) => Some(r),
                () = self.timer.as_mut() => None,
            };
            let Some(read) = read else {
                let wait = self.deadline.min(self.last_data + self.idle);
                if Instant::now() < wait {
                    self.timer.as_mut().reset(wait);
                    continue;
                }
                return Err(UpstreamError::Timeout);
            };
            match read {
                Err(e) => return Err(UpstreamError::Malformed(format!("stream cut: {e}"))),
                Ok(Some(bytes)) => {
                    let fed = self.decoder.feed(&bytes, &mut self.scratch);
                    self.ready.extend(self.scratch.drain(..));
                    if let Err(e) = fed {
                        self.failed = Some(e.to_string());
                    }
                }
                Ok(None) => {
                    self.decoder.finish(&mut self.scratch);
                    self.ready.extend(self.scratch.drain(..));
                    self.eof = true;
                }
            }
        }
    }
}

/// Whether an event is upstream's error: Anthropic's `error` event, or an OpenAI-format chunk
/// that is an error object (only the start of the text is looked at).
fn is_error_event(e: &super::sse::SseEvent) -> bool {
    e.event.as_deref() == Some("error") || is_error_object(e.data.trim_start().as_bytes())
}

/// Whether `json` (an object's text) is an error: OpenAI's `{"error": …}` or Anthropic's
/// `{"type": "error", …}` (only its start is read).
fn is_error_object(json: &[u8]) -> bool {
    if starts_with_member(json, b"error") {
        return true;
    }
    // `{"type":"error"` however spaced.
    starts_with_member(json, b"type")
        && json
            .splitn(2, |&b| b == b':')
            .nth(1)
            .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"error\""))
}

/// Whether `json` (an object's text) begins with the member `name` (only its start is read).
fn starts_with_member(json: &[u8], name: &[u8]) -> bool {
    json.strip_prefix(b"{").is_some_and(|rest| {
        rest.trim_ascii_start()
            .strip_prefix(b"\"")
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with(b"\""))
    })
}

/// Whether an event's data can be part of an answer: a JSON object, or OpenAI's `[DONE]` (an
/// HTML page framed as SSE cannot).
fn is_answer_data(data: &str) -> bool {
    let d = data.trim();
    d.starts_with('{') || d == "[DONE]"
}

/// Whether an event is data, not a keep-alive (Anthropic's `ping`, known by its name or,
/// unnamed, by its data).
pub fn is_data_event(e: &super::sse::SseEvent) -> bool {
    e.event.as_deref() != Some("ping") && !(e.event.is_none() && is_ping_data(&e.data))
}

/// Whether an event's data is Anthropic's keep-alive, `{"type": "ping"}` however it is spaced
/// (or with its `type` escaped): an event without a name that is only a ping must not keep a
/// stalled stream alive. Reads only the start of the text (a chunk of another kind fails at
/// its first member).
fn is_ping_data(data: &str) -> bool {
    let b = data.trim_start().as_bytes();
    let Some(rest) = b.strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    // The first member's name: `type` (written plainly, which is how every event has it).
    let Some(rest) = rest.strip_prefix(br#""type""#) else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    if rest.starts_with(br#""ping""#) {
        return true;
    }
    // An escaped value (rare): decoded as JSON.
    rest.starts_with(b"\"")
        && rest.contains(&b'\\')
        && serde_json::from_slice::<serde_json::Value>(data.trim().as_bytes())
            .ok()
            .is_some_and(|v| v.get("type").and_then(serde_json::Value::as_str) == Some("ping"))
}

#[cfg(test)]
mod ping_tests {
    use super::{is_error_object, is_ping_data};

    /// A whole answer is waited for as long as DeepSeek could need to queue it and write its
    /// `max_tokens` at its slowest: at least the request's timeout, at most six hours.
    #[test]
    fn a_whole_answers_wait_follows_its_size() {
        use super::{WHOLE_ANSWER_LIMIT, whole_answer_wait};
        use std::time::Duration;
        let secs = Duration::from_secs;
        assert_eq!(whole_answer_wait(32_768, secs(900)), secs(600 + 3277));
        assert_eq!(whole_answer_wait(100, secs(900)), secs(900));
        assert_eq!(whole_answer_wait(100, secs(1)), secs(610));
        assert_eq!(whole_answer_wait(393_216, secs(900)), WHOLE_ANSWER_LIMIT);
        assert_eq!(whole_answer_wait(u64::MAX, secs(900)), WHOLE_ANSWER_LIMIT);
    }

    #[test]
    fn error_objects_of_both_dialects() {
        for e in [
            r#"{"error":{"message":"x"}}"#,
            r#"{ "error" : 1}"#,
            r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
            r#"{"type" : "error"}"#,
        ] {
            assert!(is_error_object(e.as_bytes()), "{e}");
        }
        for other in [
            r#"{"type":"message","content":[]}"#,
            r#"{"id":"x","choices":[]}"#,
            r#"{"type":"errorx"}"#,
            "",
        ] {
            assert!(!is_error_object(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn pings_however_spaced() {
        for ping in [
            r#"{"type":"ping"}"#,
            r#"{"type": "ping"}"#,
            r#" { "type" : "ping" } "#,
            r#"{"type":"p\u0069ng"}"#,
        ] {
            assert!(is_ping_data(ping), "{ping}");
        }
        for other in [
            r#"{"type":"content_block_delta","delta":{"text":"ping"}}"#,
            r#"{"id":"x","type":"ping"}"#,
            r#"{"type":"pingx"}"#,
            r#"{"type":"p\u0069ngx"}"#,
            "[DONE]",
            "",
        ] {
            assert!(!is_ping_data(other), "{other}");
        }
    }
}
