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
                // billed, our estimate, written in through a tree (rare: never DeepSeek's).
                if read.usage.as_ref().and_then(|u| u.output_tokens).is_none() {
                    let text = read.rewritten.as_deref().unwrap_or(data);
                    if let Some(with) = with_output_count(text, tally.output_estimate()) {
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

/// `message_delta`'s `data` with `usage.output_tokens` set to `output` (its other counts kept;
/// a `usage` that is no object replaced), or `None` if it is no JSON object.
fn with_output_count(data: &str, output: u64) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(data).ok()?;
    let event = v.as_object_mut()?;
    let usage = event
        .entry("usage")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !usage.is_object() {
        *usage = serde_json::Value::Object(Default::default());
    }
    if let Some(u) = usage.as_object_mut() {
        u.insert("output_tokens".into(), output.into());
    }
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn a_stream_is_read_renamed_and_ended() {
        let mut e = Events::new(PublicModel::new("deepseek-v4-flash"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"deepseek-v4-flash-up","content":[],"usage":{"input_tokens":10,"cache_read_input_tokens":64,"output_tokens":1}}}"#;
        let Ok(Step::Send(out)) = e.event(&ev(start), &mut t) else {
            panic!()
        };
        assert!(out.starts_with("event: message_start\ndata: "));
        assert!(out.contains(r#""model":"deepseek-v4-flash""#), "{out}");
        assert!(
            t.usage.is_none(),
            "message_start's output count is a placeholder"
        );
        assert_eq!(t.reported.prompt, Some((64, 10)));
        for d in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
        ] {
            let Ok(Step::Send(out)) = e.event(&ev(d), &mut t) else {
                panic!("{d}")
            };
            assert!(out.ends_with("\n\n") && out.contains(d), "{out}");
        }
        let u = t.usage.unwrap();
        assert_eq!((u.hit, u.miss, u.completion), (64, 10, 7));
        assert_eq!(t.output_estimate(), 2);
        let Ok(Step::End(end)) = e.event(&ev(r#"{"type":"message_stop"}"#), &mut t) else {
            panic!()
        };
        assert_eq!(end, MESSAGE_STOP);
        assert!(
            e.event(
                &ev(r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#),
                &mut t
            )
            .is_err()
        );
        assert!(e.event(&ev("not json"), &mut t).is_err());
    }

    /// Upstream's own `overloaded_error` mid-stream reaches the client as `overloaded_error`
    /// (which the SDKs and Claude Code retry later); any other error event, or none, as a
    /// plain upstream error (found by an independent check: all were `api_error`).
    #[test]
    fn an_overloaded_error_event_is_told_as_overloaded() {
        for (data, busy) in [
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
                true,
            ),
            (
                r#"{"type":"error","error":{"message":"x","type":"overloaded_error"}}"#,
                true,
            ),
            (
                r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
                false,
            ),
            (
                r#"{"type":"error","error":{"type":"rate_limit_error"}}"#,
                false,
            ),
            (r#"{"type":"error","error":"overloaded_error"}"#, false),
            (r#"{"type":"error"}"#, false),
        ] {
            let mut e = Events::new(PublicModel::new("m"));
            let mut t = Tally::new(Instant::now());
            assert!(matches!(e.failure(), GatewayError::Upstream));
            assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
            let told = e.failure();
            assert_eq!(
                matches!(told, GatewayError::UpstreamOverloaded),
                busy,
                "{data}"
            );
            assert_eq!(matches!(told, GatewayError::Upstream), !busy, "{data}");
        }
    }

    /// A final `message_delta` without usage (DeepSeek always sends one) reaches the client
    /// with the output count as billed, our estimate: without it the SDKs failed reading the
    /// final message. One with usage passes as it came.
    #[test]
    fn a_message_delta_without_usage_gets_the_billed_output_count() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        for _ in 0..3 {
            let d = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
            assert!(e.event(&ev(d), &mut t).is_ok());
        }
        let delta =
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null}}"#;
        let Ok(Step::Send(out)) = e.event(&ev(delta), &mut t) else {
            panic!()
        };
        let data = out
            .strip_prefix("event: message_delta\ndata: ")
            .and_then(|d| d.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("{out}"));
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(t.output_estimate() > 0);
        assert_eq!(v["usage"]["output_tokens"], t.output_estimate(), "{v}");
        assert_eq!(v["delta"]["stop_reason"], "end_turn", "{v}");
        assert!(t.finished);
        // A usage without a readable output count: the count written in, the rest kept, one
        // `usage` member (it was appended as a second one, or passed without a count).
        for usage in [
            "{}",
            r#"{"input_tokens":20}"#,
            r#"{"output_tokens":null}"#,
            "null",
            r#"{"output_tokens":"7"}"#,
            r#"{"output_tokens":-3}"#,
        ] {
            let delta = format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{usage}}}"#
            );
            let Ok(Step::Send(out)) = e.event(&ev(&delta), &mut t) else {
                panic!("{delta}")
            };
            let data = out
                .strip_prefix("event: message_delta\ndata: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .unwrap_or_else(|| panic!("{out}"));
            assert_eq!(data.matches("\"usage\"").count(), 1, "{data}");
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(
                v["usage"]["output_tokens"],
                t.output_estimate(),
                "{usage}: {v}"
            );
            if usage.contains("input_tokens") {
                assert_eq!(v["usage"]["input_tokens"], 20, "{v}");
            }
        }
    }

    /// A `message_delta` whose usage repeats only some input counts keeps the others from
    /// `message_start` (as the SDKs read it); one whose counts are all zero is a placeholder.
    #[test]
    fn input_counts_are_merged_field_by_field() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"cache_read_input_tokens":64,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7}}"#;
        assert!(e.event(&ev(delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!(
            (u.hit, u.miss, u.completion),
            (64, 10, 7),
            "zeros: a placeholder"
        );
        // A later count of a field is the count (cumulative, as output is).
        let delta =
            r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":12,"output_tokens":9}}"#;
        assert!(e.event(&ev(delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!((u.hit, u.miss, u.completion), (64, 12, 9));
        // A full later reading is the count, smaller or not (a correction), a 0 in it too.
        let delta = r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":0,"cache_read_input_tokens":60,"output_tokens":9}}"#;
        assert!(e.event(&ev(delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!((u.hit, u.miss, u.completion), (60, 0, 9));
    }

    /// Readings as the SDK reads them (a field a later event lacks keeps its value): the
    /// bill is the usage the customer's own SDK reports. A ±1 in a partial reading moved the
    /// bill 17× when one reading was taken alone (found by an independent check).
    #[test]
    fn the_input_billed_is_what_the_sdk_reports() {
        for (start, delta, want) in [
            (
                r#"{"input_tokens":1000}"#,
                r#"{"cache_read_input_tokens":1000}"#,
                (1000, 1000),
            ),
            (
                r#"{"input_tokens":1000}"#,
                r#"{"cache_read_input_tokens":999}"#,
                (999, 1000),
            ),
            (
                r#"{"input_tokens":5,"cache_read_input_tokens":995}"#,
                r#"{"input_tokens":1000}"#,
                (995, 1000),
            ),
            (
                r#"{"input_tokens":1000,"cache_read_input_tokens":0}"#,
                r#"{"input_tokens":199,"cache_read_input_tokens":800}"#,
                (800, 199),
            ),
            (
                r#"{"input_tokens":1000,"cache_read_input_tokens":500}"#,
                r#"{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":1400}"#,
                (1400, 0),
            ),
        ] {
            let mut e = Events::new(PublicModel::new("m"));
            let mut t = Tally::new(Instant::now());
            let start =
                format!(r#"{{"type":"message_start","message":{{"model":"m","usage":{start}}}}}"#);
            assert!(e.event(&ev(&start), &mut t).is_ok());
            let delta = format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{{"output_tokens":3,{}}}}}"#,
                &delta[1..delta.len() - 1]
            );
            assert!(e.event(&ev(&delta), &mut t).is_ok());
            let u = t.usage.unwrap();
            assert_eq!((u.hit, u.miss), want, "{start} then {delta}");
        }
    }

    /// The output count never shrinks: a final `0` after an interim 500 is not the count.
    #[test]
    fn the_output_count_never_shrinks() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1000,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        for delta in [
            r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":500}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":0}}"#,
        ] {
            assert!(e.event(&ev(delta), &mut t).is_ok());
        }
        assert_eq!(t.usage.unwrap().completion, 500);
    }

    /// A later reading that moves input tokens into the cache read, same total, is the count:
    /// 800 hit + 200 miss, not 800 hit + 1 000 miss (each field's larger, as it was read).
    #[test]
    fn input_counts_moved_between_fields_are_not_counted_twice() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1000,"cache_read_input_tokens":0,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        assert_eq!(t.reported.prompt, Some((0, 1000)));
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":10,"input_tokens":200,"cache_read_input_tokens":800,"cache_creation_input_tokens":0}}"#;
        assert!(e.event(&ev(delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!(
            (u.prompt, u.hit, u.miss, u.completion),
            (1000, 800, 200, 10)
        );
    }

    /// A `message_start` whose input counts are all zero (the real ones to come at the end)
    /// reports no prompt: a stream cut before the end bills the estimate, labelled so, not
    /// a prompt of 0 tokens.
    #[test]
    fn zero_input_counts_are_a_placeholder() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        assert_eq!(t.reported.prompt, None);
        // Finished with its output count but input counts still zero, then cut before
        // message_stop: a whole answer (its prompt estimated), not an error to retry.
        let mut cut = Events::new(PublicModel::new("m"));
        let mut ct = Tally::new(Instant::now());
        assert!(cut.event(&ev(start), &mut ct).is_ok());
        let end = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":10,"input_tokens":0}}"#;
        assert!(cut.event(&ev(end), &mut ct).is_ok());
        assert!(ct.usage.is_none());
        assert_eq!(ct.reported.output, Some(10));
        assert!(cut.end_at_eof(&ct).is_ok());
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5,"input_tokens":30,"cache_read_input_tokens":10}}"#;
        assert!(e.event(&ev(delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!((u.hit, u.miss, u.completion), (10, 30, 5));
    }

    /// A `type` that is not a name (a line break, escaped in its JSON) would end our `event:`
    /// line and pass the rest off as events of its own: refused, not relayed.
    #[test]
    fn a_type_that_is_not_a_name_is_refused() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        for data in [
            r#"{"type":"ping\n\ndata: {\"type\":\"message_stop\"}\n\nevent: x"}"#,
            r#"{"type":"ping\revent: message_stop"}"#,
            r#"{"type":"ping\u000a"}"#,
            r#"{"type":"a b"}"#,
            r#"{"type":""}"#,
        ] {
            assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
        }
        let Ok(Step::Send(out)) = e.event(&ev(r#"{"type":"ping"}"#), &mut t) else {
            panic!()
        };
        assert_eq!(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    /// Text the tree refuses (a number out of `f64`'s range, a lone surrogate) is not relayed,
    /// even in a member the relay does not read; a member written twice is read as a JSON map
    /// reads it (the last), not taken for a broken stream.
    #[test]
    fn what_the_tree_refuses_is_not_relayed_and_repeats_are_read_as_a_map_does() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        for data in [
            r#"{"type":"ping","x":1e400}"#,
            r#"{"type":"ping","x":"\udcff"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\ud800"}}"#,
        ] {
            assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
        }
        let twice = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hel","text":"lo!"}}"#;
        let Ok(Step::Send(out)) = e.event(&ev(twice), &mut t) else {
            panic!()
        };
        assert!(out.starts_with("event: content_block_delta\n"), "{out}");
        assert!(
            out.contains(r#""text":"lo!""#) && !out.contains("hel"),
            "{out}"
        );
        let usage = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":5,"output_tokens":50,"output_tokens":60}}"#;
        assert!(e.event(&ev(usage), &mut t).is_ok());
        assert_eq!(t.usage.map(|u| u.completion), Some(60));
    }

    #[test]
    fn eof_is_complete_only_with_the_output_count() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        assert!(e.end_at_eof(&t).is_err());
        let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}"#;
        assert!(e.event(&ev(start), &mut t).is_ok());
        // An interim count (no `stop_reason`): the answer may go on; a break now is a break.
        let interim = r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":2}}"#;
        assert!(e.event(&ev(interim), &mut t).is_ok());
        assert!(t.usage.is_some());
        assert!(e.end_at_eof(&t).is_err());
        let last = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}"#;
        assert!(e.event(&ev(last), &mut t).is_ok());
        assert!(e.end_at_eof(&t).is_ok());
    }

    /// A bare `data:` and a `ping` whose data is not Anthropic's are passed over, not the end
    /// of the stream (found by an independent check: the stream ended with an error and was
    /// billed by estimate); an unreadable event of another name still ends it.
    #[test]
    fn empty_events_and_odd_pings_are_passed_over() {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        assert!(matches!(e.event(&ev(""), &mut t), Ok(Step::Skip)));
        assert!(matches!(e.event(&ev(" "), &mut t), Ok(Step::Skip)));
        let odd_ping = SseEvent {
            event: Some("ping".into()),
            data: "{}".into(),
        };
        assert!(matches!(e.event(&odd_ping, &mut t), Ok(Step::Skip)));
        let odd_delta = SseEvent {
            event: Some("content_block_delta".into()),
            data: "{}".into(),
        };
        assert!(e.event(&odd_delta, &mut t).is_err());
    }
}
