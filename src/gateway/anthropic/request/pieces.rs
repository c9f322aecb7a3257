//! A Messages request's prompt in pieces ([`crate::gateway::pieces`]): the texts the
//! estimate counts the bytes of (`content_bytes`, `block_bytes`: messages and system) and the
//! tools, with the number of messages. Walked by the cursor, borrowing the body's text; read
//! through a tree only where the walk is not sure (deep nesting).

use std::borrow::Cow;

use serde_json::Value;

use crate::gateway::json::cursor::Cursor;
use crate::gateway::pieces::{self, FRAME, Others, Piece, PieceText, PromptPieces, others_of_tree};

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
    let (mut frame, mut system, mut messages) = (Others::default(), Vec::new(), None);
    c.members_decoded(|c, key| {
        match key {
            "system" => {
                system.clear();
                content(c, &mut system)?;
            }
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
    // In the order DeepSeek's template reads them: a prompt's cached prefix is a prefix of
    // these ([`crate::keys::prompts`]). Each piece is labelled with its message's place and
    // role and its block's type: the same texts grouped into other messages, or as another
    // kind of block (a tool's result), are another prompt to DeepSeek's template, so to its
    // cache (found by an independent re-check).
    let mut out = Vec::with_capacity(2 + system.len() + said.len());
    out.push(frame.piece("frame".into(), None));
    out.extend(under("system", system));
    out.extend(tools.map(|t| tools_piece(Cow::Borrowed(t))));
    out.extend(said);
    Some(PromptPieces {
        pieces: out,
        messages: n,
        last_user,
    })
}

/// The tools' piece: after the system prompt, where DeepSeek's template writes them (found by
/// an independent re-check: with the tools first, a changed system prompt left them billed as
/// hits).
fn tools_piece(tools: Cow<'_, str>) -> Piece<'_> {
    Piece {
        message: None,
        label: "tools".into(),
        text: PieceText::Json(tools),
    }
}

/// Whether a message's pieces (labelled from the block on) are a user's turn: a text, an
/// image… — not only tools' results, which DeepSeek's template writes as a tool's turn.
fn a_turn(pieces: &[Piece]) -> bool {
    pieces.iter().any(|p| !p.label.starts_with(".tool_result"))
}

/// `pieces` with `at` put before each label.
fn under<'a>(at: &str, pieces: Vec<Piece<'a>>) -> impl Iterator<Item = Piece<'a>> {
    pieces.into_iter().map(move |mut p| {
        p.label.insert_str(0, at);
        p
    })
}

/// Message `i`'s pieces: what else it says (with its place and role), then its content's.
fn message<'a>(
    c: &mut Cursor<'a>,
    i: u64,
    out: &mut Vec<Piece<'a>>,
    user: &mut Option<u64>,
) -> Option<()> {
    let (mut role, mut said, mut others) = (None, Vec::new(), Others::default());
    c.members_decoded(|c, key| {
        match key {
            "role" => role = Some(c.raw_value()?),
            "content" => {
                said.clear();
                content(c, &mut said)?;
            }
            _ => others.put(key, c.raw_value()?),
        }
        Some(())
    })?;
    let role = match role {
        Some(r) if r.starts_with('"') => pieces::string(r)?,
        _ => Cow::Borrowed(""),
    };
    if role == "user" && a_turn(&said) {
        *user = Some(i);
    }
    thinking_first(&mut said, ".thinking");
    // The message's own piece first: a message with no text is still there.
    let at = format!("{i}:{role}");
    out.push(others.piece(at.clone(), Some(i)));
    out.extend(under(&at, said).map(|mut p| {
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

/// A block's pieces by its type: what else it says (an image, a tool use's id…), then a
/// tool use's name and input, a tool result's content, a thinking block's thinking, any
/// other block's `text` and `content`.
fn block<'a>(c: &mut Cursor<'a>, out: &mut Vec<Piece<'a>>) -> Option<()> {
    if c.next_byte()? != b'{' {
        out.push(Piece {
            message: None,
            label: ".text".into(),
            text: PieceText::Other(Cow::Borrowed(c.raw_value()?)),
        });
        return Some(());
    }
    let (mut others, mut inner) = (Others::default(), Vec::new());
    c.members_decoded(|c, key| {
        let raw = if key == "content" {
            inner.clear();
            c.value_with(|c| content(c, &mut inner))?
        } else {
            c.raw_value()?
        };
        others.put(key, raw);
        Some(())
    })?;
    let kind = match others.take_string("type") {
        Some(k) => pieces::string(k)?,
        None => Cow::Borrowed("text"),
    };
    // Claude Code moves its cache marks from block to block as a conversation grows; DeepSeek
    // ignores them.
    others.take("cache_control");
    let label = format!(".{kind}");
    let mut texts = Vec::new();
    let mut inner = Some(inner);
    match &*kind {
        "tool_use" => {
            texts.extend(others.take_string("name").map(PieceText::Written));
            texts.extend(
                others
                    .take("input")
                    .map(|i| PieceText::Json(Cow::Borrowed(i))),
            );
            inner = None;
        }
        "thinking" => {
            texts.extend(others.take_string("thinking").map(PieceText::Written));
            inner = None;
        }
        "tool_result" => {}
        _ => texts.extend(others.take_string("text").map(PieceText::Written)),
    }
    // A content read into pieces of its own is not part of what else the block says.
    let inner = inner.filter(|_| take_content(&mut others));
    out.push(others.piece(label.clone(), None));
    out.extend(texts.into_iter().map(|text| Piece {
        message: None,
        label: label.clone(),
        text,
    }));
    out.extend(under(&label, inner.unwrap_or_default()));
    Some(())
}

/// Takes out a block's `content` if it is one whose pieces are read (a string or blocks).
fn take_content(others: &mut Others) -> bool {
    others.take_if("content", |v| v.starts_with(['"', '[']))
}

/// The same pieces read through a tree.
fn by_tree(raw: &[u8]) -> Option<PromptPieces<'static>> {
    let body: Value = serde_json::from_slice(raw).ok()?;
    let messages = body.get("messages")?.as_array()?;
    let held = |k: &str, _: &Value| !FRAME.contains(&k);
    let mut out = vec![others_of_tree(
        body.as_object()?,
        held,
        "frame".into(),
        None,
    )];
    tree_content(body.get("system"), "system", None, &mut out);
    if let Some(tools @ Value::Array(_)) = body.get("tools") {
        out.push(tools_piece(Cow::Owned(tools.to_string())));
    }
    let mut last_user = None;
    for (i, m) in (0u64..).zip(messages) {
        let Some(obj) = m.as_object() else {
            out.push(Piece {
                message: Some(i),
                label: format!("{i}:"),
                text: PieceText::Other(Cow::Owned(m.to_string())),
            });
            continue;
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let at = format!("{i}:{role}");
        let held = |k: &str, _: &Value| k == "role" || k == "content";
        out.push(others_of_tree(obj, held, at.clone(), Some(i)));
        let from = out.len();
        tree_content(m.get("content"), &at, Some(i), &mut out);
        let own: Vec<Piece> = out[from..]
            .iter()
            .map(|p| Piece {
                label: p.label.get(at.len()..).unwrap_or_default().to_owned(),
                message: None,
                text: PieceText::Decoded(String::new()),
            })
            .collect();
        if role == "user" && a_turn(&own) {
            last_user = Some(i);
        }
        thinking_first(&mut out[from..], &format!("{at}.thinking"));
    }
    Some(PromptPieces {
        pieces: out,
        messages: messages.len() as u64,
        last_user,
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
                let Some(obj) = b.as_object() else {
                    out.push(Piece {
                        message,
                        label: format!("{at}.text"),
                        text: PieceText::Other(Cow::Owned(b.to_string())),
                    });
                    continue;
                };
                let kind = b.get("type").and_then(Value::as_str).unwrap_or("text");
                let label = format!("{at}.{kind}");
                let string = |k: &str, v: &Value, name: &str| k == name && v.is_string();
                let content =
                    |k: &str, v: &Value| k == "content" && (v.is_string() || v.is_array());
                let held = |k: &str, v: &Value| {
                    string(k, v, "type")
                        || k == "cache_control"
                        || match kind {
                            "tool_use" => string(k, v, "name") || k == "input",
                            "thinking" => string(k, v, "thinking"),
                            "tool_result" => content(k, v),
                            _ => string(k, v, "text") || content(k, v),
                        }
                };
                out.push(others_of_tree(obj, held, label.clone(), message));
                let text = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_owned);
                let mut push = |text| {
                    out.push(Piece {
                        message,
                        label: label.clone(),
                        text,
                    });
                };
                match kind {
                    "tool_use" => {
                        if let Some(name) = text("name") {
                            push(PieceText::Decoded(name));
                        }
                        if let Some(input) = b.get("input") {
                            push(PieceText::Json(Cow::Owned(input.to_string())));
                        }
                    }
                    "tool_result" => tree_content(b.get("content"), &label, message, out),
                    "thinking" => {
                        if let Some(t) = text("thinking") {
                            push(PieceText::Decoded(t));
                        }
                    }
                    _ => {
                        if let Some(t) = text("text") {
                            push(PieceText::Decoded(t));
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
