//! A chat request's prompt in pieces ([`crate::gateway::pieces`]): the texts the estimate
//! counts the bytes of (`content_bytes`, `messages_text_bytes`), and the tools, with the
//! number of messages. Walked by the cursor, borrowing the body's text; read through a tree
//! only where the walk is not sure (deep nesting).

use std::borrow::Cow;

use serde_json::Value;

use crate::gateway::json::cursor::Cursor;
use crate::gateway::pieces::{self, Piece, PieceText, PromptPieces};

/// The prompt's pieces (see [`crate::gateway::dialect::Dialect::prompt_pieces`]).
pub(in crate::gateway::openai) fn prompt_pieces(raw: &[u8]) -> Option<PromptPieces<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    walked(text).or_else(|| by_tree(raw))
}

/// The pieces read by the cursor in one pass; `None` where it is not sure. A member's pieces
/// are read where it stands and put in the template's order at the end, with their message's
/// place and role once both are known (`role` may come after `content`).
fn walked(text: &str) -> Option<PromptPieces<'_>> {
    let mut c = Cursor::new(text);
    let (mut tools, mut messages) = (None, None);
    c.members_decoded(|c, key| {
        match key {
            "tools" => tools = Some(c.raw_value()?),
            "messages" => {
                let (mut out, mut n) = (Vec::new(), 0u64);
                c.elements(|c| {
                    n += 1;
                    message(c, n - 1, &mut out)
                })?;
                messages = Some((out, n));
            }
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    if !c.at_end() {
        return None;
    }
    let (said, n) = messages?;
    // In the order DeepSeek's template reads them (the tools first, in its system prompt).
    let mut out = Vec::with_capacity(1 + said.len());
    if let Some(t) = tools.filter(|t| t.starts_with('[')) {
        out.push(Piece {
            label: "tools".into(),
            message: None,
            text: PieceText::Json(Cow::Borrowed(t)),
        });
    }
    out.extend(said);
    Some(PromptPieces {
        pieces: out,
        messages: n,
    })
}

/// Message `i`'s pieces: its content's, reasoning's and name's texts, and its tool calls.
fn message<'a>(c: &mut Cursor<'a>, i: u64, out: &mut Vec<Piece<'a>>) -> Option<()> {
    if c.next_byte()? != b'{' {
        return c.skip_value();
    }
    // The texts of `name`, `reasoning_content` and `content`, in [`PARTS`]' order; the last
    // of a member named twice, as in a JSON map.
    let mut texts: [Vec<&'a str>; 3] = Default::default();
    let (mut role, mut calls) = (None, None);
    c.members_decoded(|c, key| {
        let k = match key {
            "role" => return c.raw_value().map(|r| role = Some(r)),
            "tool_calls" => return c.raw_value().map(|t| calls = Some(t)),
            "name" => 0,
            "reasoning_content" => 1,
            "content" => 2,
            _ => return c.skip_value(),
        };
        texts[k].clear();
        content(c, &mut texts[k])
    })?;
    let role = match role {
        Some(r) if r.starts_with('"') => pieces::string(r)?,
        _ => Cow::Borrowed(""),
    };
    // Each piece is labelled with its message's place and role: the same texts grouped into
    // other messages (two parts of one, or two messages) are another prompt to DeepSeek's
    // template, so to its cache (found by an independent re-check).
    for (k, texts) in PARTS.iter().zip(texts) {
        out.extend(texts.into_iter().map(|w| Piece {
            label: format!("{i}:{role}.{k}"),
            message: Some(i),
            text: PieceText::Written(w),
        }));
    }
    if let Some(calls) = calls {
        out.push(Piece {
            label: format!("{i}:{role}.tool_calls"),
            message: Some(i),
            text: PieceText::Json(Cow::Borrowed(calls)),
        });
    }
    Some(())
}

/// A message's members of text, in the order its pieces are compared (its tool calls come
/// last). A later piece counts as cached only if every one before it is the same, so this
/// order must not put a piece before one that DeepSeek's template writes ahead of it: the
/// template writes an assistant's reasoning before its answer (found by an independent
/// re-check: with the answer first, a conversation resent with the reasoning changed had its
/// answer billed as hits that DeepSeek does not give). A name, which the template may not
/// write at all, goes first: a changed name costs misses, never hits DeepSeek does not give.
const PARTS: [&str; 3] = ["name", "reasoning_content", "content"];

/// The texts of a content as written (a string, or parts: strings and objects with `text`).
fn content<'a>(c: &mut Cursor<'a>, out: &mut Vec<&'a str>) -> Option<()> {
    match c.next_byte()? {
        b'"' => out.push(c.raw_value()?),
        b'[' => c.elements(|c| match c.next_byte()? {
            b'"' => c.raw_value().map(|w| out.push(w)),
            b'{' => {
                let mut text = None;
                c.members_decoded(|c, key| {
                    if key == "text" {
                        text = Some(c.raw_value()?);
                        Some(())
                    } else {
                        c.skip_value()
                    }
                })?;
                if let Some(t) = text.filter(|t| t.starts_with('"')) {
                    out.push(t);
                }
                Some(())
            }
            _ => c.skip_value(),
        })?,
        _ => c.skip_value()?,
    }
    Some(())
}

/// The same pieces read through a tree.
fn by_tree(raw: &[u8]) -> Option<PromptPieces<'static>> {
    let body: Value = serde_json::from_slice(raw).ok()?;
    let messages = body.get("messages")?.as_array()?;
    let mut out = Vec::new();
    let mut push = |label: String, message, text: PieceText<'static>| {
        out.push(Piece {
            label,
            message,
            text,
        });
    };
    if let Some(tools @ Value::Array(_)) = body.get("tools") {
        let tools = PieceText::Json(Cow::Owned(tools.to_string()));
        push("tools".into(), None, tools);
    }
    for (i, m) in (0u64..).zip(messages) {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        for k in PARTS {
            for text in content_texts(m.get(k)) {
                push(format!("{i}:{role}.{k}"), Some(i), PieceText::Decoded(text));
            }
        }
        if let Some(calls) = m.get("tool_calls") {
            let calls = PieceText::Json(Cow::Owned(calls.to_string()));
            push(format!("{i}:{role}.tool_calls"), Some(i), calls);
        }
    }
    Some(PromptPieces {
        pieces: out,
        messages: messages.len() as u64,
    })
}

/// The texts of a content in a tree (a string, or parts with `text`).
fn content_texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                _ => p.get("text").and_then(Value::as_str).map(str::to_owned),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod proptests;
