//! A one-pass scanner for the common Messages event — a content block's delta, and every other
//! event that carries no usage — in front of the serde view (`View` in `events.rs`); and the
//! place of `message_start`'s model name, for the rename to splice it.
//!
//! Hand-written, and why: a Claude Code answer streams one `content_block_delta` per token or
//! so, hundreds an answer; under callgrind the serde view and the `format!` of each event were
//! ~5.2k instructions an event (bench/PROFILE.md). This reads the event's `type` and its delta's
//! text in one walk of the `cursor`.
//!
//! It is a filter, not a second source of truth: whenever it is not sure it would read the
//! text as the serde view does — an escaped key or type, a repeated member the view reads, a
//! delta that is not an object or a text that is not a string, and any event with `usage` or
//! `message` (`message_start` and `message_delta`, once a stream: the view reads those) — it
//! answers `None` and the serde view reads the text. Where it answers, the property test in
//! `proptests.rs` holds it to the view's reading. It validates the whole text as serde_json
//! would (the relay passes the event's data on as it came).

use std::ops::Range;

use crate::gateway::json::cursor::Cursor;

/// What the scanner reads from an event: its type and the bytes of text its delta adds.
#[derive(Debug, PartialEq)]
pub(super) struct Scanned<'a> {
    pub kind: &'a str,
    pub delta_bytes: usize,
}

/// Read `data` as the serde view would, or `None` to let the serde view decide.
pub(super) fn scan(data: &str) -> Option<Scanned<'_>> {
    let mut c = Cursor::new(data);
    let (mut kind, mut delta) = (None, None);
    c.members(|c, key| match key {
        "type" if kind.is_none() => {
            kind = Some(plain_string(c)?);
            Some(())
        }
        "delta" if delta.is_none() => {
            delta = Some(delta_bytes(c)?);
            Some(())
        }
        // A second `type` or `delta` (serde's "duplicate field"), and the members only the
        // view reads.
        "type" | "delta" | "usage" | "message" => None,
        _ => c.skip_value(),
    })?;
    c.at_end().then_some(())?;
    Some(Scanned {
        kind: kind?,
        delta_bytes: delta.unwrap_or(0),
    })
}

/// A string without escapes (the event's type), as written.
fn plain_string<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    let inner = c.raw_value()?.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A delta object: the decoded bytes of its `text`, `thinking` and `partial_json`, each a
/// string and each at most once.
fn delta_bytes(c: &mut Cursor<'_>) -> Option<usize> {
    if c.next_byte()? != b'{' {
        return None;
    }
    let mut seen = [false; 3];
    let mut bytes = 0;
    c.members(|c, key| {
        let i = match key {
            "text" => 0,
            "thinking" => 1,
            "partial_json" => 2,
            _ => return c.skip_value(),
        };
        if std::mem::replace(&mut seen[i], true) || c.next_byte()? != b'"' {
            return None;
        }
        bytes += c.text()?;
        Some(())
    })?;
    Some(bytes)
}

/// Where `message_start`'s `message.model` value lies in `data`: `Some(None)` when there is
/// none to rename (no model, or a message that is not an object), `None` where the scanner is
/// not sure (a repeated `message` or `model`, an escaped key, text that is not JSON).
pub(super) fn start_model(data: &str) -> Option<Option<Range<usize>>> {
    let mut c = Cursor::new(data);
    let (mut message, mut model) = (false, None);
    c.members(|c, key| match key {
        "message" if !message => {
            message = true;
            if c.next_byte()? != b'{' {
                return c.skip_value();
            }
            c.members(|c, key| match key {
                "model" if model.is_none() => {
                    let text = c.raw_value()?;
                    let start = text.as_ptr() as usize - data.as_ptr() as usize;
                    model = Some(start..start + text.len());
                    Some(())
                }
                "model" => None,
                _ => c.skip_value(),
            })
        }
        "message" => None,
        _ => c.skip_value(),
    })?;
    c.at_end().then_some(model)
}
