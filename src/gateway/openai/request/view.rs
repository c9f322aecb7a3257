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
//! One difference is left on purpose: a member the gateway does not read is relayed as written,
//! so a lone UTF-16 surrogate escaped in it (`"\ud800"`), which the tree refuses, goes to
//! DeepSeek to judge.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::gateway::openai::chunk::Obj;
use crate::gateway::openai::cursor::Cursor;

/// A request read by its top-level members.
#[derive(Debug)]
pub(super) struct Members {
    raw: Bytes,
    /// Each name once (a repeated name keeps its first place and its last value, as a JSON
    /// map reads it), in the order of the body.
    members: Vec<(String, Range<usize>)>,
}

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

/// A JSON string read from the body, borrowed when it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The top-level object: every member's name and value text, in order, repeats included.
struct Top<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(Text(name)) = map.next_key()? {
                    members.push((name, map.next_value()?));
                }
                Ok(Top(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The top-level member names of a JSON object, repeats included (for tests).
#[cfg(test)]
pub(super) fn member_names(raw: &[u8]) -> Option<Vec<String>> {
    let Top(all) = serde_json::from_slice(raw).ok()?;
    Some(all.into_iter().map(|(n, _)| n.into_owned()).collect())
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
/// `text` member wins, as in a JSON map), 0 for anything else.
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
            fn visit_str<E>(self, _: &str) -> Result<Part, E> {
                Ok(Part(0))
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

/// Bytes of the compact JSON text of `raw` (what `Value::to_string` gives), as the tree
/// counts tool calls and tools.
fn compact_len(raw: &str) -> Option<u64> {
    compact_len_walked(raw).or_else(|| compact_len_of_tree(raw))
}

/// [`compact_len`] by the cursor, without a tree (a tool list of ~10 KB cost ~650k
/// instructions as a tree written out again); `None` where it is not sure (the property test
/// holds it to [`compact_len_of_tree`]).
pub(super) fn compact_len_walked(raw: &str) -> Option<u64> {
    let mut c = Cursor::new(raw);
    let len = c.compact_len()?;
    c.at_end().then_some(len)
}

/// [`compact_len`] through a `Value`.
pub(super) fn compact_len_of_tree(raw: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(raw).ok()?;
    Some(v.to_string().len() as u64)
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

/// The top-level members of `raw` (a JSON object), in order, repeats included: each name and
/// its value's text; `None` when the body is not a JSON object. Walked by the `cursor` where it
/// can; a body with an escaped name, or anything else it is not sure of, is read by serde.
fn top(raw: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    top_walked(raw).or_else(|| top_by_serde(raw))
}

/// [`top`] by the cursor, or `None` (the property test holds it to [`top_by_serde`]).
pub(super) fn top_walked(raw: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut c = Cursor::new(std::str::from_utf8(raw).ok()?);
    let mut all = Vec::new();
    c.members(|c, name| {
        all.push((Cow::Borrowed(name), c.raw_value()?));
        Some(())
    })?;
    c.at_end().then_some(all)
}

/// [`top`] by serde_json.
pub(super) fn top_by_serde(raw: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let Top(all) = serde_json::from_slice(raw).ok()?;
    Some(all.into_iter().map(|(n, v)| (n, v.get())).collect())
}

/// Read `raw` the quick way; `None` for anything this reading does not take (the tree
/// decides those).
pub(super) fn parse(raw: &Bytes) -> Option<Read> {
    let all = top(raw)?;
    // A repeated name keeps its first place and takes the last value. Bodies with many
    // members (nothing a chat client sends) go through the tree rather than a quadratic scan.
    if all.len() > 64 {
        return None;
    }
    let base = raw.as_ptr() as usize;
    let mut members: Vec<(String, Range<usize>)> = Vec::with_capacity(all.len());
    let mut values: Vec<&str> = Vec::with_capacity(all.len());
    for (name, value) in all {
        let start = value.as_ptr() as usize - base;
        let span = start..start + value.len();
        match members.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                members[i].1 = span;
                values[i] = value;
            }
            None => {
                members.push((name.into_owned(), span));
                values.push(value);
            }
        }
    }
    let get = |name: &str| {
        members
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| values[i])
    };
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
        if let Some(calls) = m.tool_calls {
            text_bytes += compact_len(calls.get())?;
        }
    }
    if let Some(tools) = get("tools") {
        text_bytes += compact_len(tools)?;
    }
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
        members: Members {
            raw: raw.clone(),
            members,
        },
    })
}

impl Members {
    /// The body for upstream: every member as the client wrote it, except the ones the
    /// gateway owns — `model`, `user_id`, `max_tokens` (and no `max_completion_tokens`) and, on
    /// a stream, `stream_options.include_usage` — which take its values, in their place or
    /// at the end.
    pub(super) fn upstream_body(
        &self,
        stream: bool,
        upstream_model: &str,
        user_id: &str,
        max_tokens: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + upstream_model.len() + 96);
        out.push(b'{');
        let (mut model, mut user, mut max, mut opts) = (false, false, false, false);
        for (name, span) in &self.members {
            let value = &self.raw[span.clone()];
            match name.as_str() {
                "max_completion_tokens" => continue,
                "model" => model = true,
                "user_id" => user = true,
                "max_tokens" => max = true,
                "stream_options" if stream => opts = true,
                _ => {}
            }
            member(&mut out, name);
            match name.as_str() {
                "model" => string(&mut out, upstream_model),
                "user_id" => string(&mut out, user_id),
                "max_tokens" => out.extend_from_slice(max_tokens.to_string().as_bytes()),
                "stream_options" if stream => stream_options(&mut out, value),
                _ => out.extend_from_slice(value),
            }
        }
        if !model {
            member(&mut out, "model");
            string(&mut out, upstream_model);
        }
        if !user {
            member(&mut out, "user_id");
            string(&mut out, user_id);
        }
        if !max {
            member(&mut out, "max_tokens");
            out.extend_from_slice(max_tokens.to_string().as_bytes());
        }
        if stream && !opts {
            member(&mut out, "stream_options");
            out.extend_from_slice(br#"{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }
}

/// `"name":`, after a comma unless it is the first member.
fn member(out: &mut Vec<u8>, name: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    string(out, name);
    out.push(b':');
}

/// `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The client's stream options (an object, or null) with `include_usage: true`.
fn stream_options(out: &mut Vec<u8>, value: &[u8]) {
    let mut opts = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    opts.insert("include_usage".into(), Value::Bool(true));
    let _ = serde_json::to_writer(&mut *out, &opts);
}
