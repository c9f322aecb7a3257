//! A Messages request's prompt in pieces ([`crate::gateway::pieces`]): the texts the
//! estimate counts the bytes of (`content_bytes`, `block_bytes`: messages and system) and the
//! tools, with the number of messages. Walked by the cursor, borrowing the body's text; read
//! through a tree only where the walk is not sure (deep nesting).

use std::borrow::Cow;

use serde_json::Value;

use crate::gateway::json::cursor::Cursor;
use crate::gateway::pieces::{self, Piece, PieceText, PromptPieces};

/// The prompt's pieces (see [`crate::gateway::dialect::Dialect::prompt_pieces`]).
pub(in crate::gateway::anthropic) fn prompt_pieces(raw: &[u8]) -> Option<PromptPieces<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    walked(text).or_else(|| by_tree(raw))
}

/// The pieces read by the cursor in one pass; `None` where it is not sure. A member's pieces
/// are read where it stands and put in the template's order at the end; a label's start
/// (a message's place and role, a block's type) is put on once it is known, as a member
/// may come after the ones it names.
fn walked(text: &str) -> Option<PromptPieces<'_>> {
    let mut c = Cursor::new(text);
    let (mut tools, mut system, mut messages) = (None, Vec::new(), None);
    c.members_decoded(|c, key| {
        match key {
            "tools" => tools = Some(c.raw_value()?),
            "system" => {
                system.clear();
                content(c, &mut system)?;
            }
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
    // In the order DeepSeek's template reads them: a prompt's cached prefix is a prefix of
    // these ([`crate::keys::prompts`]). Each piece is labelled with its message's place and
    // role and its block's type: the same texts grouped into other messages, or as another
    // kind of block (a tool's result), are another prompt to DeepSeek's template, so to its
    // cache (found by an independent re-check).
    let mut out = Vec::with_capacity(1 + system.len() + said.len());
    if let Some(t) = tools.filter(|t| t.starts_with('[')) {
        out.push(Piece {
            message: None,
            label: "tools".into(),
            text: PieceText::Json(Cow::Borrowed(t)),
        });
    }
    out.extend(under("system", system));
    out.extend(said);
    Some(PromptPieces {
        pieces: out,
        messages: n,
    })
}

/// `pieces` with `at` put before each label.
fn under<'a>(at: &str, pieces: Vec<Piece<'a>>) -> impl Iterator<Item = Piece<'a>> {
    pieces.into_iter().map(move |mut p| {
        p.label.insert_str(0, at);
        p
    })
}

/// Message `i`'s pieces (its content's, under its place and role).
fn message<'a>(c: &mut Cursor<'a>, i: u64, out: &mut Vec<Piece<'a>>) -> Option<()> {
    if c.next_byte()? != b'{' {
        return c.skip_value();
    }
    let (mut role, mut said) = (None, Vec::new());
    c.members_decoded(|c, key| {
        match key {
            "role" => role = Some(c.raw_value()?),
            "content" => {
                said.clear();
                content(c, &mut said)?;
            }
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    let role = match role {
        Some(r) if r.starts_with('"') => pieces::string(r)?,
        _ => Cow::Borrowed(""),
    };
    thinking_first(&mut said, ".thinking");
    out.extend(under(&format!("{i}:{role}"), said).map(|mut p| {
        p.message = Some(i);
        p
    }));
    Some(())
}

/// A message's thinking put before its other pieces (each kind in its order), as DeepSeek's
/// template writes a turn's reasoning ahead of its answer whatever the blocks' order: a later
/// piece counts as cached only if every one before it is the same, so a thinking block after
/// a text must not let that text be billed as cached when the thinking changed (OpenAI's
/// `reasoning_content` likewise, found by an independent re-check). `label`: a thinking
/// block's label in `pieces`.
fn thinking_first(pieces: &mut [Piece], label: &str) {
    pieces.sort_by_key(|p| p.label != label);
}

/// A content's pieces (a string, or blocks), labelled from the block on (`.text`,
/// `.tool_result.text`…).
fn content<'a>(c: &mut Cursor<'a>, out: &mut Vec<Piece<'a>>) -> Option<()> {
    match c.next_byte()? {
        b'"' => out.push(Piece {
            message: None,
            label: ".text".into(),
            text: PieceText::Written(c.raw_value()?),
        }),
        b'[' => c.elements(|c| block(c, out))?,
        _ => c.skip_value()?,
    }
    Some(())
}

/// A block's pieces by its type: a tool use's name and input, a tool result's content, a
/// thinking block's thinking, any other block's `text` and `content`.
fn block<'a>(c: &mut Cursor<'a>, out: &mut Vec<Piece<'a>>) -> Option<()> {
    if c.next_byte()? != b'{' {
        return c.skip_value();
    }
    let (mut kind, mut name, mut input, mut thinking, mut text) = (None, None, None, None, None);
    let mut inner = Vec::new();
    c.members_decoded(|c, key| {
        let slot = match key {
            "type" => &mut kind,
            "name" => &mut name,
            "input" => &mut input,
            "thinking" => &mut thinking,
            "text" => &mut text,
            "content" => {
                inner.clear();
                return content(c, &mut inner);
            }
            _ => return c.skip_value(),
        };
        *slot = Some(c.raw_value()?);
        Some(())
    })?;
    let string = |s: Option<&'a str>| s.filter(|s| s.starts_with('"'));
    let kind = match string(kind) {
        Some(k) => pieces::string(k)?,
        None => Cow::Borrowed("text"),
    };
    let label = format!(".{kind}");
    let mut push = |text| {
        out.push(Piece {
            message: None,
            label: label.clone(),
            text,
        });
    };
    match &*kind {
        "tool_use" => {
            if let Some(n) = string(name) {
                push(PieceText::Written(n));
            }
            if let Some(i) = input {
                push(PieceText::Json(Cow::Borrowed(i)));
            }
        }
        "thinking" => {
            if let Some(t) = string(thinking) {
                push(PieceText::Written(t));
            }
        }
        "tool_result" => out.extend(under(&label, inner)),
        _ => {
            if let Some(t) = string(text) {
                push(PieceText::Written(t));
            }
            out.extend(under(&label, inner));
        }
    }
    Some(())
}

/// The same pieces read through a tree.
fn by_tree(raw: &[u8]) -> Option<PromptPieces<'static>> {
    let body: Value = serde_json::from_slice(raw).ok()?;
    let messages = body.get("messages")?.as_array()?;
    let mut out = Vec::new();
    if let Some(tools @ Value::Array(_)) = body.get("tools") {
        out.push(Piece {
            message: None,
            label: "tools".into(),
            text: PieceText::Json(Cow::Owned(tools.to_string())),
        });
    }
    tree_content(body.get("system"), "system", None, &mut out);
    for (i, m) in (0u64..).zip(messages) {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (at, from) = (format!("{i}:{role}"), out.len());
        tree_content(m.get("content"), &at, Some(i), &mut out);
        thinking_first(&mut out[from..], &format!("{at}.thinking"));
    }
    Some(PromptPieces {
        pieces: out,
        messages: messages.len() as u64,
    })
}

/// A content in a tree (a string, or blocks), under `at`.
fn tree_content(v: Option<&Value>, at: &str, message: Option<u64>, out: &mut Vec<Piece<'static>>) {
    match v {
        Some(Value::String(s)) => out.push(Piece {
            message,
            label: format!("{at}.text"),
            text: PieceText::Decoded(s.clone()),
        }),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                let kind = b.get("type").and_then(Value::as_str).unwrap_or("text");
                let label = format!("{at}.{kind}");
                let text = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_owned);
                match kind {
                    "tool_use" => {
                        if let Some(name) = text("name") {
                            out.push(Piece {
                                message,
                                label: label.clone(),
                                text: PieceText::Decoded(name),
                            });
                        }
                        if let Some(input) = b.get("input") {
                            out.push(Piece {
                                message,
                                label,
                                text: PieceText::Json(Cow::Owned(input.to_string())),
                            });
                        }
                    }
                    "tool_result" => tree_content(b.get("content"), &label, message, out),
                    "thinking" => {
                        if let Some(t) = text("thinking") {
                            out.push(Piece {
                                message,
                                label,
                                text: PieceText::Decoded(t),
                            });
                        }
                    }
                    _ => {
                        if let Some(t) = text("text") {
                            out.push(Piece {
                                message,
                                label: label.clone(),
                                text: PieceText::Decoded(t),
                            });
                        }
                        tree_content(b.get("content"), &label, message, out);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod proptests;
