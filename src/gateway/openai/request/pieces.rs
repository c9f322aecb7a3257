//! A chat request's prompt in pieces ([`crate::gateway::pieces`]): the texts the estimate
//! counts the bytes of (`content_bytes`, `messages_text_bytes`), and the tools, with the
//! number of messages. Walked by the cursor, borrowing the body's text; read through a tree
//! only where the walk is not sure (deep nesting).

use std::borrow::Cow;

use serde_json::Value;

use crate::gateway::json::cursor::Cursor;
use crate::gateway::pieces::{self, FRAME, Others, Piece, PieceText, PromptPieces, others_of_tree};

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
    let (mut frame, mut messages) = (Others::default(), None);
    c.members_decoded(|c, key| {
        match key {
            "messages" => messages = Some(pieces::messages(c, message)?),
            k if FRAME.contains(&k) => frame.put(k, c.raw_value()?),
            _ => c.skip_value()?,
        }
        Some(())
    })?;
    if !c.at_end() {
        return None;
    }
    let (said, n, last_user) = messages?;
    let tools = frame.get("tools").filter(|t| t.starts_with('['));
    Some(PromptPieces {
        pieces: in_order(
            frame.piece("frame".into(), None),
            tools.map(Cow::Borrowed),
            said,
        ),
        messages: n,
        last_user,
    })
}

/// The pieces in the order DeepSeek's template reads them: what frames the prompt, then the
/// messages, with the tools after the first message's text if it is a system prompt (where
/// the template writes them), before the messages otherwise (found by an independent
/// re-check: with the tools first, a changed system prompt left them billed as hits).
fn in_order<'a>(
    frame: Piece<'a>,
    tools: Option<Cow<'a, str>>,
    said: Vec<Piece<'a>>,
) -> Vec<Piece<'a>> {
    let mut out = Vec::with_capacity(2 + said.len());
    out.push(frame);
    let system = said.first().is_some_and(|p| p.label == "0:system");
    let at = if system {
        said.iter().take_while(|p| p.message == Some(0)).count()
    } else {
        0
    };
    let mut said = said.into_iter();
    out.extend(said.by_ref().take(at));
    if let Some(t) = tools {
        out.push(Piece {
            label: "tools".into(),
            message: None,
            text: PieceText::Json(t),
        });
    }
    out.extend(said);
    out
}

/// Message `i`'s pieces: what else it says (with its place and role), its name's,
/// reasoning's and content's texts, and its tool calls.
fn message<'a>(
    c: &mut Cursor<'a>,
    i: u64,
    out: &mut Vec<Piece<'a>>,
    user: &mut Option<u64>,
) -> Option<()> {
    // The texts of `name`, `reasoning_content` and `content`, in [`PARTS`]' order; the last
    // of a member named twice, as in a JSON map.
    let mut texts: [Vec<Part<'a>>; 3] = Default::default();
    let (mut role, mut calls, mut others) = (None, None, Others::default());
    c.members_decoded(|c, key| {
        let k = match key {
            "role" => return c.raw_value().map(|r| role = Some(r)),
            "tool_calls" => return c.raw_value().map(|t| calls = Some(t)),
            "name" => 0,
            "reasoning_content" => 1,
            "content" => 2,
            _ => return c.raw_value().map(|v| others.put(key, v)),
        };
        texts[k].clear();
        content(c, &mut texts[k])
    })?;
    let role = match role {
        Some(r) if r.starts_with('"') => pieces::string(r)?,
        _ => Cow::Borrowed(""),
    };
    if USER_TURNS.contains(&&*role) {
        *user = Some(i);
    }
    // Each piece is labelled with its message's place and role: the same texts grouped into
    // other messages (two parts of one, or two messages) are another prompt to DeepSeek's
    // template, so to its cache (found by an independent re-check). The message's own piece
    // first: a message with no text is still there.
    out.push(others.piece(format!("{i}:{role}"), Some(i)));
    for (k, texts) in PARTS.iter().zip(texts) {
        out.extend(texts.into_iter().map(|p| Piece {
            label: format!("{i}:{role}.{k}"),
            message: Some(i),
            text: match p {
                Part::Text(w) => PieceText::Written(w),
                Part::Other(o) => o,
            },
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

/// One piece of a content: a text as written, or what else a part says.
enum Part<'a> {
    Text(&'a str),
    Other(PieceText<'a>),
}

/// The pieces of a content as written (a string, or parts: strings, and objects with what
/// else they say before their `text`; anything else as it is).
fn content<'a>(c: &mut Cursor<'a>, out: &mut Vec<Part<'a>>) -> Option<()> {
    match c.next_byte()? {
        b'"' => out.push(Part::Text(c.raw_value()?)),
        b'[' => c.elements(|c| match c.next_byte()? {
            b'"' => c.raw_value().map(|w| out.push(Part::Text(w))),
            b'{' => {
                let mut others = Others::default();
                c.members_decoded(|c, key| c.raw_value().map(|v| others.put(key, v)))?;
                let text = others.take_string("text");
                out.push(Part::Other(others.piece(String::new(), None).text));
                if let Some(t) = text {
                    out.push(Part::Text(t));
                }
                Some(())
            }
            _ => c
                .raw_value()
                .map(|v| out.push(Part::Other(PieceText::Other(Cow::Borrowed(v))))),
        })?,
        _ => c.skip_value()?,
    }
    Some(())
}

/// The same pieces read through a tree.
fn by_tree(raw: &[u8]) -> Option<PromptPieces<'static>> {
    let body: Value = serde_json::from_slice(raw).ok()?;
    let messages = body.get("messages")?.as_array()?;
    let (mut out, mut last_user) = (Vec::new(), None);
    for (i, m) in (0u64..).zip(messages) {
        let Some(obj) = m.as_object() else {
            out.push(Piece {
                label: format!("{i}:"),
                message: Some(i),
                text: PieceText::Other(Cow::Owned(m.to_string())),
            });
            continue;
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if USER_TURNS.contains(&role) {
            last_user = Some(i);
        }
        let held = |k: &str, _: &Value| OWN.contains(&k);
        out.push(others_of_tree(obj, held, format!("{i}:{role}"), Some(i)));
        for k in PARTS {
            for text in content_texts(m.get(k)) {
                out.push(Piece {
                    label: format!("{i}:{role}.{k}"),
                    message: Some(i),
                    text,
                });
            }
        }
        if let Some(calls) = m.get("tool_calls") {
            out.push(Piece {
                label: format!("{i}:{role}.tool_calls"),
                message: Some(i),
                text: PieceText::Json(Cow::Owned(calls.to_string())),
            });
        }
    }
    let frame = others_of_tree(
        body.as_object()?,
        |k, _| !FRAME.contains(&k),
        "frame".into(),
        None,
    );
    let tools = match body.get("tools") {
        Some(t @ Value::Array(_)) => Some(Cow::Owned(t.to_string())),
        _ => None,
    };
    Some(PromptPieces {
        pieces: in_order(frame, tools, out),
        messages: messages.len() as u64,
        last_user,
    })
}

/// Roles whose message is a user's turn to DeepSeek's template (`developer` as well as
/// `user`; found by an independent re-check).
const USER_TURNS: [&str; 2] = ["user", "developer"];

/// A message's members that pieces of their own hold.
const OWN: [&str; 5] = ["role", "name", "reasoning_content", "content", "tool_calls"];

/// The pieces of a content in a tree (a string, or parts: strings, and objects with what
/// else they say before their `text`; anything else as it is).
fn content_texts(v: Option<&Value>) -> Vec<PieceText<'static>> {
    match v {
        Some(Value::String(s)) => vec![PieceText::Decoded(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .flat_map(|p| match p {
                Value::String(s) => vec![PieceText::Decoded(s.clone())],
                Value::Object(o) => {
                    let text = |k: &str, v: &Value| k == "text" && v.is_string();
                    let mut both = vec![others_of_tree(o, text, String::new(), None).text];
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        both.push(PieceText::Decoded(t.to_owned()));
                    }
                    both
                }
                _ => vec![PieceText::Other(Cow::Owned(p.to_string()))],
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod proptests;
