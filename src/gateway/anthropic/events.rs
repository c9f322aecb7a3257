//! A Messages stream, event by event: each upstream event is read (its `type`, the usage it
//! carries, the text its deltas add) and sent on in our own framing, named by its type — its
//! data only once read as valid JSON of a Messages event, never upstream's framing as it came.
//! `message_start` gets the public model name (spliced into its text, or through a tree);
//! `message_stop` is the end, sent once the request has settled; an `error` event breaks the
//! stream (the client gets our own error event instead).

mod scan;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::usage::{self, Wire, to_billing};
use crate::gateway::dialect::{Generated, PublicModel, Step, StreamRewrite, Tally};
use crate::gateway::error::GatewayError;
use crate::gateway::json::{error_text, is_json};
use crate::upstream::sse::SseEvent;

/// The end of a complete stream, when upstream closed without sending it.
const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// The parts of an event the relay reads; everything else is skipped.
#[derive(Deserialize)]
struct View<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<Wire>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<Wire>,
}

/// A usage object of the wrong shape (counts as strings) is read as no usage — billed by
/// estimate, the event relayed — rather than breaking a stream whose content all arrived;
/// as a whole answer's is (`answer.rs`).
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Wire>, D::Error> {
    Ok(Option::<usage::Lenient>::deserialize(d)?.and_then(|l| l.0))
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

/// One stream's rewriter.
pub struct Events {
    public: PublicModel,
    /// The input counts seen so far, field by field: a later usage object that repeats only
    /// some of them (or none) keeps the others.
    input: Wire,
    output: Option<u64>,
    /// Upstream's error event said it was overloaded: the client is told so in Anthropic's
    /// words (`overloaded_error`, which Claude Code and the SDKs know to retry later), not
    /// as a plain `api_error`.
    overloaded: bool,
}

impl Events {
    /// For a stream answering as model `public`.
    pub fn new(public: PublicModel) -> Events {
        Events {
            public,
            input: Wire::default(),
            output: None,
            overloaded: false,
        }
    }

    /// Note a usage object. `message_start`'s output count is a placeholder (a first token);
    /// only `message_delta`'s (cumulative: the latest is the count) is the answer's.
    fn note(&mut self, usage: &Wire, final_output: bool, tally: &mut Tally) {
        self.input.merge_input(usage);
        if let Some(input) = self.input.input() {
            let b = to_billing(input, 0);
            tally.reported.prompt = Some((b.hit, b.miss));
        }
        // Cumulative, so it never shrinks: a later smaller count (a final `0` after an interim
        // 500, with the text relayed) is not taken (found by an independent check).
        if final_output && let Some(out) = usage.output_tokens {
            let out = self.output.map_or(out, |before| before.max(out));
            self.output = Some(out);
            tally.reported.output = Some(out);
        }
        if let (Some(input), Some(out)) = (self.input.input(), self.output) {
            tally.usage = Some(to_billing(input, out));
        }
    }
}

/// `message_start` with the public model name in `message.model`: spliced into the text where
/// the scanner finds it, through a tree where it is not sure.
fn start(data: &str, public: &str) -> Result<String, String> {
    match scan::start_model(data) {
        Some(None) => Ok(data.to_owned()),
        Some(Some(at)) => {
            let name = serde_json::to_string(public).map_err(|e| e.to_string())?;
            let mut out = String::with_capacity(data.len() + name.len());
            for part in [&data[..at.start], &name, &data[at.end..]] {
                out.push_str(part);
            }
            Ok(out)
        }
        None => start_tree(data, public),
    }
}

/// [`start`] through a tree (and the error when `data` is not JSON).
fn start_tree(data: &str, public: &str) -> Result<String, String> {
    let mut v: Value =
        serde_json::from_str(data).map_err(|e| format!("message_start is not JSON: {e}"))?;
    if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut)
        && m.contains_key("model")
    {
        m.insert("model".into(), Value::String(public.to_string()));
    }
    serde_json::to_string(&v).map_err(|e| e.to_string())
}

/// `event: <name>` and `data: <json>`, one event (pushed, not `format!`ed: once a token).
fn render(name: &str, data: &str) -> String {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    for part in ["event: ", name, "\ndata: ", data, "\n\n"] {
        out.push_str(part);
    }
    out
}

/// What the relay reads from an event: the scanner's reading, or the serde view's.
struct Read<'a> {
    kind: Cow<'a, str>,
    /// `message_start`'s `message.usage`.
    start_usage: Option<Wire>,
    usage: Option<Wire>,
    /// Bytes of text the delta adds.
    delta_bytes: usize,
    /// The event written again from the tree, when the tree read it (a member written twice:
    /// the client then gets the one copy the relay billed by, not both).
    rewritten: Option<String>,
}

/// Read `data` (the scanner first; the serde view where it is not sure, on text the tree
/// takes; the tree where the view refuses it). Errors name the event's length, not its text:
/// that is the model's output, which the log does not keep.
fn read(data: &str) -> Result<Read<'_>, String> {
    let read = match scan::scan(data) {
        Some(s) => Read {
            kind: Cow::Borrowed(s.kind),
            start_usage: None,
            usage: None,
            delta_bytes: s.delta_bytes,
            rewritten: None,
        },
        None => match serde_json::from_str::<View<'_>>(data) {
            // The view does not check what it skips, and the event is relayed as it is.
            Ok(view) if is_json(data) => Read::of(view),
            _ => read_tree(data)?,
        },
    };
    if !is_event_name(&read.kind) {
        return Err(format!(
            "event type is not a name ({} bytes of data)",
            data.len()
        ));
    }
    Ok(read)
}

/// [`read`] through a tree: it refuses text that is not JSON, and reads a member written
/// twice as a JSON map does (the last one), as the OpenAI dialect's relay does.
fn read_tree(data: &str) -> Result<Read<'static>, String> {
    let tree: Value = serde_json::from_str(data)
        .map_err(|e| format!("event is not JSON ({} bytes): {e}", data.len()))?;
    let view = View::deserialize(&tree)
        .map_err(|e| format!("event is not a Messages event ({} bytes): {e}", data.len()))?;
    let read = Read::of(view);
    Ok(Read {
        kind: Cow::Owned(read.kind.into_owned()),
        rewritten: Some(tree.to_string()),
        ..read
    })
}

impl<'a> Read<'a> {
    fn of(view: View<'a>) -> Read<'a> {
        Read {
            delta_bytes: view.delta.as_ref().map_or(0, Delta::bytes),
            kind: view.kind,
            start_usage: view.message.and_then(|m| m.usage),
            usage: view.usage,
            rewritten: None,
        }
    }
}

/// Whether `kind` can name an event in our framing: ASCII letters, digits, `_`, `-` and `.`
/// (Anthropic's names are lower-case words joined by `_`; the rest leaves room for new ones).
/// Anything else — above all a line break, which would end the `event:` line and let the text
/// after it pass for events of its own — is refused, not relayed.
fn is_event_name(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Delta<'_> {
    /// Bytes of text: `text`, `thinking` and `partial_json` together.
    fn bytes(&self) -> usize {
        [&self.text, &self.thinking, &self.partial_json]
            .iter()
            .filter_map(|s| s.as_ref().map(|s| s.len()))
            .sum()
    }
}

impl StreamRewrite for Events {
    fn prompt_at_opening(&self) -> bool {
        true
    }

    fn event(&mut self, ev: &SseEvent, tally: &mut Tally) -> Result<Step, String> {
        // Multi-line data arrives joined by LF; in JSON an LF is whitespace between tokens.
        let joined;
        let data = if memchr::memchr(b'\n', ev.data.as_bytes()).is_some() {
            joined = ev.data.replace('\n', " ");
            joined.as_str()
        } else {
            ev.data.as_str()
        };
        // An event that carries nothing (a bare `data:`), or a keep-alive whose data is not
        // Anthropic's (`event: ping` with `{}`): passed over, not a broken stream. The SDKs
        // pass over the first too.
        if data.trim().is_empty() {
            return Ok(Step::Skip);
        }
        let read = match read(data) {
            Ok(r) => r,
            Err(_) if ev.event.as_deref() == Some("ping") => return Ok(Step::Skip),
            Err(e) => return Err(e),
        };
        match read.kind.as_ref() {
            "error" => {
                self.overloaded = says_overloaded(data);
                return Err(format!("upstream error event: {}", error_text(data)));
            }
            "message_start" => {
                if let Some(u) = &read.start_usage {
                    self.note(u, false, tally);
                }
                return Ok(Step::Send(render(
                    "message_start",
                    &start(data, self.public.name())?,
                )));
            }
            "message_delta" => {
                if let Some(u) = &read.usage {
                    self.note(u, true, tally);
                }
                static STOP: crate::gateway::json::Key =
                    crate::gateway::json::Key::new("\"stop_reason\"");
                if crate::gateway::json::has_non_null(data, &STOP) {
                    tally.finished = true;
                }
                // DeepSeek sends its output count here; one without it (no usage, a usage
                // without a readable `output_tokens`) made the SDKs fail on the final message
                // of an answer billed whole (found by independent checks): the output as
                // billed, our estimate, written in (rare: never DeepSeek's).
                let output = read
                    .usage
                    .as_ref()
                    .and_then(|u| u.output_tokens)
                    .is_none()
                    .then(|| tally.output_estimate());
                // And the input counts as billed (`message_start`'s): DeepSeek sends only the
                // output here, where Anthropic's API repeats the input counts, and clients
                // that read usage from this event alone (LangChain's ChatAnthropic) reported
                // a streamed prompt as 0 tokens (found by an independent check).
                let input = self.input_to_repeat(read.usage.as_ref());
                if output.is_some() || input.is_some() {
                    let text = read.rewritten.as_deref().unwrap_or(data);
                    if let Some(with) = with_counts(text, output, input.as_ref()) {
                        return Ok(Step::Send(render("message_delta", &with)));
                    }
                }
            }
            "content_block_delta" if read.delta_bytes > 0 => {
                tally.add(Generated::one(read.delta_bytes));
            }
            "message_stop" => return Ok(Step::End(render("message_stop", data))),
            _ => {}
        }
        Ok(Step::Send(render(
            &read.kind,
            read.rewritten.as_deref().unwrap_or(data),
        )))
    }

    fn failure(&self) -> GatewayError {
        if self.overloaded {
            GatewayError::UpstreamOverloaded
        } else {
            GatewayError::Upstream
        }
    }

    fn end_at_eof(&mut self, tally: &Tally) -> Result<String, String> {
        // The final `message_delta` (with its `stop_reason`) carried the output count: the
        // answer is complete (a `message_delta` without one may be an interim count), also
        // when its input counts never came (all zeros: the prompt is then billed from the
        // estimate, labelled so — not the client told to retry and pay twice).
        if tally.finished && tally.reported.output.is_some() {
            Ok(MESSAGE_STOP.to_string())
        } else {
            Err("stream ended without message_stop".into())
        }
    }
}

/// Whether an `error` event's `error.type` is `overloaded_error`.
fn says_overloaded(data: &str) -> bool {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        error: Inner<'a>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    serde_json::from_str::<Event<'_>>(data).is_ok_and(|e| e.error.kind == "overloaded_error")
}

impl Events {
    /// The input counts a `message_delta` whose usage is `usage` should carry and does not:
    /// those billed (`message_start`'s, merged), when there are any and the event's own
    /// differ from them.
    fn input_to_repeat(&self, usage: Option<&Wire>) -> Option<Wire> {
        self.input.input()?;
        let billed = &self.input;
        let has = usage.copied().unwrap_or_default();
        let differs = |want: Option<u64>, have: Option<u64>| want.is_some() && want != have;
        (differs(billed.input_tokens, has.input_tokens)
            || differs(
                billed.cache_creation_input_tokens,
                has.cache_creation_input_tokens,
            )
            || differs(billed.cache_read_input_tokens, has.cache_read_input_tokens))
        .then_some(*billed)
    }
}

/// `message_delta`'s `data` with `usage.output_tokens` set to `output` and the input counts of
/// `input` that it has (each other member kept; a `usage` that is no object replaced), or
/// `None` if it is no JSON object. Through a tree: once a stream, at its end.
fn with_counts(data: &str, output: Option<u64>, input: Option<&Wire>) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(data).ok()?;
    let event = v.as_object_mut()?;
    let usage = event
        .entry("usage")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !usage.is_object() {
        *usage = serde_json::Value::Object(Default::default());
    }
    if let Some(u) = usage.as_object_mut() {
        if let Some(input) = input {
            for (name, count) in [
                ("input_tokens", input.input_tokens),
                (
                    "cache_creation_input_tokens",
                    input.cache_creation_input_tokens,
                ),
                ("cache_read_input_tokens", input.cache_read_input_tokens),
            ] {
                if let Some(n) = count {
                    u.insert(name.into(), n.into());
                }
            }
        }
        if let Some(out) = output {
            u.insert("output_tokens".into(), out.into());
        }
    }
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
