//! The chat request read without a JSON tree: the top-level members as byte spans of the body,
//! the few the gateway reads decoded from their own text, and the upstream body written by
//! copying every other member's text as it came.
//!
//! Why: the tree (`serde_json::Map`, an `IndexMap` with SipHash under `preserve_order`) hashed
//! every key of every message and serialised the whole body again for upstream — ~21k
//! instructions of a ~240k-instruction request under callgrind (bench/PROFILE.md). Whatever
//! this reading does not take as it expects — a field of an unexpected type, a value it must
//! refuse, anything odd — makes [`parse`] return `None`, and the request goes through the tree
//! in `request.rs`, which gives the same result or the precise error. A property test holds the
//! two readings to the same fields and the same upstream body.
//!
//! The top level is walked by the cursor (`json/members.rs`), which validates every member's
//! text as serde_json would (a lone UTF-16 surrogate escaped in a member the gateway does not
//! read is refused as the tree refuses it); a body it is not sure of goes through the tree.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::gateway::json::case_twin;
use crate::gateway::json::cursor::Cursor;
use crate::gateway::json::members::{self, Edit, Members, Text, compact_len, compact_len_next};
use crate::gateway::openai::chunk::Obj;

/// What the parser learns from the body.
#[derive(Debug)]
pub(super) struct Read {
    pub members: Members,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub n: u64,
    /// Bytes of text in the messages and tools, and the number of messages.
    pub text_bytes: u64,
    pub messages: u64,
}

/// A message, as far as the estimate and the checks need it. A repeated field is an error here
/// (serde's derive), so such a message goes through the tree.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Text<'a>>,
    #[serde(default)]
    content: Option<Content>,
    /// Anything: its text counts only when it is text or parts.
    #[serde(default)]
    reasoning_content: Option<Lenient>,
    /// The participant's name, sent upstream with the message: its text counts as content
    /// does (an independent check hid a 400 KB prompt in it).
    #[serde(default)]
    name: Option<Lenient>,
    /// `null` included: the tree counts its text (`null`) too.
    #[serde(default, borrow, deserialize_with = "raw_even_null")]
    tool_calls: Option<&'a RawValue>,
}

fn raw_even_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A message's content: a string or an array of parts (its bytes of text); anything else is
/// an error, for the tree to report.
struct Content(u64);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor { lenient: false })
    }
}

/// Reasoning content: text or parts count, anything else is no text (as the tree reads it).
struct Lenient(u64);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor { lenient: true })
            .map(|Content(n)| Lenient(n))
    }
}

/// Reads text or parts; `lenient` (reasoning content) takes any other value as no text.
struct ContentVisitor {
    lenient: bool,
}

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of parts")
    }
    fn visit_str<E>(self, s: &str) -> Result<Content, E> {
        Ok(Content(s.len() as u64))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut n = 0;
        while let Some(Part(bytes)) = seq.next_element()? {
            n += bytes;
        }
        Ok(Content(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
        if !self.lenient {
            return Err(serde::de::Error::custom("content is an object"));
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Content(0))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Content, E> {
        self.other()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Content, E> {
        self.other()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Content, E> {
        self.other()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Content, E> {
        self.other()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
        // `null` content is allowed (an assistant message with tool calls).
        Ok(Content(0))
    }
}

impl ContentVisitor {
    fn other<E: serde::de::Error>(&self) -> Result<Content, E> {
        if self.lenient {
            Ok(Content(0))
        } else {
            Err(E::custom("content is not text"))
        }
    }
}

/// One part of a content array: the bytes of its `text` when that is a string (the last
/// `text` member wins, as in a JSON map), of the part itself when it is a string, 0 for
/// anything else.
struct Part(u64);

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Part, A::Error> {
                let mut text = 0;
                while let Some(Text(k)) = map.next_key()? {
                    if k == "text" {
                        let v: &RawValue = map.next_value()?;
                        text = match serde_json::from_str::<Text<'_>>(v.get()) {
                            Ok(Text(s)) => s.len() as u64,
                            Err(_) => 0,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Part(text))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Part, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part(0))
            }
            /// A bare string among the parts is text too.
            fn visit_str<E>(self, s: &str) -> Result<Part, E> {
                Ok(Part(s.len() as u64))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_unit<E>(self) -> Result<Part, E> {
                Ok(Part(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// `stream_options`, when it is an object.
#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A count the client may set: absent or null is `None`; a positive integer is the count;
/// anything else is `Err` (for the tree to report).
fn count(raw: Option<&str>) -> Result<Option<u64>, ()> {
    match raw {
        None | Some("null") => Ok(None),
        Some(text) => match serde_json::from_str::<u64>(text) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(()),
        },
    }
}

/// Read `raw` the quick way; `None` for anything this reading does not take (the tree
/// decides those).
pub(super) fn parse(raw: &Bytes) -> Option<Read> {
    // The tools' compact length is counted in the walk that finds the members (the last of a
    // repeated member counts, as in a JSON map), not in a second walk over their text.
    let mut tools = None;
    let body = members::read_walking(raw, |c, name| match name {
        "tools" => {
            // A list (or null); anything else the tree refuses.
            if !matches!(c.next_byte()?, b'[' | b'n') {
                return None;
            }
            tools = Some(compact_len_next(c)?);
            Some(())
        }
        // A twin of a member the gateway owns (`MAX_TOKENS`): the tree refuses it.
        _ if case_twin(name, super::OWNED).is_some() => None,
        _ => c.skip_value(),
    })?;
    let get = |name: &str| body.get(name);
    let Text(model) = serde_json::from_str(get("model")?).ok()?;
    if model.is_empty() {
        return None;
    }
    let messages: Vec<Obj<Message<'_>>> = serde_json::from_str(get("messages")?).ok()?;
    if messages.is_empty() {
        return None;
    }
    let mut text_bytes = 0u64;
    for Obj(m) in &messages {
        m.role.as_ref()?;
        text_bytes += m.content.as_ref().map_or(0, |c| c.0);
        text_bytes += m.reasoning_content.as_ref().map_or(0, |r| r.0);
        text_bytes += m.name.as_ref().map_or(0, |r| r.0);
        if let Some(calls) = m.tool_calls {
            text_bytes += compact_len(calls.get())?;
        }
    }
    text_bytes += tools.unwrap_or(0);
    let stream = match get("stream") {
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => return None,
    };
    let include_usage = match get("stream_options") {
        None | Some("null") => false,
        Some(text) => {
            let Obj(o): Obj<StreamOptions> = serde_json::from_str(text).ok()?;
            o.include_usage.unwrap_or(false)
        }
    };
    let max_tokens = match count(get("max_tokens")).ok()? {
        Some(n) => Some(n),
        None => count(get("max_completion_tokens")).ok()?,
    };
    let n = count(get("n")).ok()?.unwrap_or(1);
    if n > 16 {
        return None;
    }
    let messages = messages.len() as u64;
    Some(Read {
        model: model.into_owned(),
        stream,
        include_usage,
        max_tokens,
        n,
        text_bytes,
        messages,
        members: body.members,
    })
}

/// The body for upstream: every member as the client wrote it, except the ones the gateway
/// owns — `model`, `user_id`, `max_tokens` (and no `max_completion_tokens`) and, on a stream,
/// `stream_options.include_usage` — which take its values, in their place or at the end.
pub(super) fn upstream_body(
    members: &Members,
    stream: bool,
    upstream_model: &str,
    user_id: &str,
    max_tokens: u64,
) -> Vec<u8> {
    let (mut model, mut user) = (Vec::new(), Vec::new());
    members::string(&mut model, upstream_model);
    members::string(&mut user, user_id);
    let max = max_tokens.to_string();
    let mut edits = vec![
        ("max_completion_tokens", Edit::Drop),
        ("model", Edit::Set(&model)),
        ("user_id", Edit::Set(&user)),
        ("max_tokens", Edit::Set(max.as_bytes())),
    ];
    if stream {
        edits.push(("stream_options", Edit::Merge(&stream_options)));
    }
    members.write(&edits)
}

/// The client's stream options (an object, or null) with `include_usage: true`.
fn stream_options(out: &mut Vec<u8>, value: &[u8]) {
    // The usual cases, without a tree: no options, or `include_usage` alone (whatever its value,
    // ours takes its place) — the tree writes the same text for both. A tree here was ~3k
    // instructions of a streamed request (bench/PROFILE.md).
    if only_include_usage(value) {
        out.extend_from_slice(br#"{"include_usage":true}"#);
        return;
    }
    let mut opts = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    // A twin (`INCLUDE_USAGE`) goes: an upstream reading names regardless of case could take
    // it over ours.
    opts.retain(|k, _| case_twin(k, &["include_usage"]).is_none());
    opts.insert("include_usage".into(), Value::Bool(true));
    let _ = serde_json::to_writer(&mut *out, &opts);
}

/// Whether `value` is `null`, or an object whose every member is `include_usage` (keys as
/// written, unescaped).
fn only_include_usage(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut c = Cursor::new(text);
    let read = match c.next_byte() {
        Some(b'n') => c.null(),
        Some(b'{') => c
            .members(|c, key| {
                if key == "include_usage" {
                    c.skip_value()
                } else {
                    None
                }
            })
            .is_some(),
        _ => false,
    };
    read && c.at_end()
}
