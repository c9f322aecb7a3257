//! The Messages request read without a JSON tree: the top-level members as spans of the body
//! (`json/members.rs`), the messages, system prompt and tools measured for the prompt estimate
//! in the same walk of the cursor, and the upstream body written by copying every other
//! member's text.
//!
//! Why: Claude Code sends ~60 KB or more on every turn (a long system prompt, a tool list of
//! ~35 KB, the conversation with file contents in tool results). Read into a tree, measured by
//! writing the tools out again, and serialised whole for upstream, such a body cost ~3.1M
//! instructions per request under callgrind (bench/PROFILE.md). Whatever this reading is not
//! sure of — a field of an unexpected type, a value it must refuse, an escaped key — makes
//! [`parse`] return `None`, and the request goes through the tree in
//! `request.rs`, which gives the same result or the precise error. A property test holds the two
//! readings to the same fields, the same estimate and the same upstream body.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::gateway::json::case_twin;
use crate::gateway::json::cursor::Cursor;
use crate::gateway::json::members::{self, Edit, Members, Text, compact_len_next};

/// What the quick reading learns from the body.
#[derive(Debug)]
pub(super) struct Quick {
    pub members: Members,
    pub model: String,
    pub stream: bool,
    /// `None` when absent (a request needs it; `count_tokens` does not).
    pub max_tokens: Option<u64>,
    /// Bytes of text in the messages, system prompt and tools, and the number of messages.
    pub text_bytes: u64,
    pub messages: u64,
}

/// Read `raw` the quick way; `None` for anything this reading does not take (the tree decides
/// those).
pub(super) fn parse(raw: &Bytes) -> Option<Quick> {
    // Read in the walk that finds the members (the last of a repeated member counts, as in a
    // JSON map): the messages' bytes of text and number, the system prompt's bytes, and the
    // tools' compact length.
    let (mut messages, mut system, mut tools) = (None, 0, 0);
    let body = members::read_walking(raw, |c, name| {
        match name {
            "messages" => messages = Some(walk_messages(c)?),
            "system" => {
                system = match c.next_byte()? {
                    b'n' if c.null() => 0,
                    b'"' | b'[' => content(c)?,
                    _ => return None,
                }
            }
            "tools" => {
                // A list (or null); anything else the tree refuses.
                if !matches!(c.next_byte()?, b'[' | b'n') {
                    return None;
                }
                tools = compact_len_next(c)?
            }
            // A twin of a member the gateway owns (`MAX_TOKENS`): the tree refuses it.
            _ if case_twin(name, super::OWNED).is_some() => return None,
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    let Text(model) = serde_json::from_str(body.get("model")?).ok()?;
    if model.is_empty() {
        return None;
    }
    let max_tokens = match body.get("max_tokens") {
        None => None,
        Some(text) => Some(serde_json::from_str::<u64>(text).ok().filter(|n| *n >= 1)?),
    };
    let (mut text_bytes, messages) = messages?;
    text_bytes += system + tools;
    let stream = match body.get("stream") {
        None | Some("null" | "false") => false,
        Some("true") => true,
        Some(_) => return None,
    };
    match body.get("metadata") {
        None | Some("null") => {}
        Some(m) if m.starts_with('{') => {}
        Some(_) => return None,
    }
    Some(Quick {
        model: model.into_owned(),
        stream,
        max_tokens,
        text_bytes,
        messages,
        members: body.members,
    })
}

/// The messages (a non-empty array of objects, each with a string `role` and a `content` that
/// is a string or blocks): their bytes of text and their number.
fn walk_messages(c: &mut Cursor<'_>) -> Option<(u64, u64)> {
    let (mut bytes, mut n) = (0, 0);
    c.elements(|c| {
        n += 1;
        bytes += message(c)?;
        Some(())
    })?;
    (n > 0).then_some((bytes, n))
}

/// One message's bytes of text; `None` unless its (last) `role` is a string and its (last)
/// `content` a string or an array.
fn message(c: &mut Cursor<'_>) -> Option<u64> {
    let (mut role, mut bytes) = (false, None);
    c.members(|c, key| {
        match key {
            "role" => {
                role = c.next_byte()? == b'"';
                c.skip_value()?;
            }
            "content" => {
                bytes = match c.next_byte()? {
                    b'"' | b'[' => Some(content(c)?),
                    _ => {
                        c.skip_value()?;
                        None
                    }
                };
            }
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    if role { bytes } else { None }
}

/// A content's bytes of text: a string's length, the sum of an array's blocks, 0 for anything
/// else (as the tree counts a tool result's content).
fn content(c: &mut Cursor<'_>) -> Option<u64> {
    match c.next_byte()? {
        b'"' => c.text().map(|n| n as u64),
        b'[' => {
            let mut bytes = 0;
            c.elements(|c| {
                bytes += block(c)?;
                Some(())
            })?;
            Some(bytes)
        }
        _ => c.skip_value().map(|()| 0),
    }
}

/// A block's bytes of text by its type: a tool use's name and compact input, a tool result's
/// content, a thinking block's thinking, any other block's `text` and `content` (a document's
/// or a search result's text; 0 for what is not text).
fn block(c: &mut Cursor<'_>) -> Option<u64> {
    if c.next_byte()? != b'{' {
        return c.skip_value().map(|()| 0);
    }
    let mut kind = Cow::Borrowed("");
    let (mut text, mut thinking, mut name, mut inner) = (0, 0, 0, 0);
    let mut input = 0;
    c.members(|c, key| {
        match key {
            "type" => {
                let raw = c.raw_value()?;
                kind = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                    // Escaped (rare): decoded by serde.
                    Some(k) if k.contains('\\') => serde_json::from_str::<Text>(raw).ok()?.0,
                    Some(k) => Cow::Borrowed(k),
                    None => Cow::Borrowed(""),
                };
            }
            "text" => text = c.text_or_zero()? as u64,
            "thinking" => thinking = c.text_or_zero()? as u64,
            "name" => name = c.text_or_zero()? as u64,
            "content" => inner = content(c)?,
            "input" => input = compact_len_next(c)?,
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    Some(match kind.as_ref() {
        "tool_use" => name + input,
        "tool_result" => inner,
        "thinking" => thinking,
        // Any other block (text, document, search result…): its text and what it contains.
        _ => text + inner,
    })
}

/// The body for upstream: every member as the client wrote it, except `model`, `max_tokens` and
/// `metadata.user_id`, which take the gateway's values, in their place or at the end, and
/// those left out (`user_id`, and OpenAI's `max_completion_tokens` and `n`: see
/// `super::NOT_ANTHROPIC`).
pub(super) fn upstream_body(
    members: &Members,
    upstream_model: &str,
    user_id: &str,
    max_tokens: u64,
) -> Vec<u8> {
    let mut model = Vec::new();
    members::string(&mut model, upstream_model);
    let max = max_tokens.to_string();
    let metadata = |out: &mut Vec<u8>, value: &[u8]| {
        let mut m = match serde_json::from_slice::<Value>(value) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        // A twin of `user_id` (`USER_ID`) goes: an upstream reading names regardless of case
        // could take it over ours.
        m.retain(|k, _| case_twin(k, &["user_id"]).is_none());
        m.insert("user_id".into(), Value::String(user_id.into()));
        // Writing a map of JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &m);
    };
    members.write(&[
        ("model", Edit::Set(&model)),
        ("max_tokens", Edit::Set(max.as_bytes())),
        ("metadata", Edit::Merge(&metadata)),
        ("user_id", Edit::Drop),
        ("max_completion_tokens", Edit::Drop),
        ("n", Edit::Drop),
    ])
}
