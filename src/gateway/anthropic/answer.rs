//! A whole (non-stream) Messages answer: its usage, an estimate of its output from its text,
//! and the body for the client with the public model name.
//!
//! Read the quick way when it can be: the top-level members walked by the cursor
//! (`json/members.rs`), the content's text measured in that walk, the usage read from its own
//! text, and the body written again with only `model` replaced. Why: through a tree (parsed,
//! cloned for the typed reading, serialised again) a short answer cost ~36k instructions under
//! callgrind (bench/PROFILE.md). Whatever the quick reading is not sure of goes through the
//! tree, which also words every error; a property test holds the two to the same reading.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::usage;
use crate::gateway::billing::{Reported, Usage};
use crate::gateway::dialect::{Answer, PublicModel};
use crate::gateway::json::cursor::Cursor;
use crate::gateway::json::members::{self, Edit, compact_len_next};

/// A whole Messages answer: its usage, an estimate of its output, and the body with the
/// public model name.
pub(super) fn read(raw: &[u8], public: &PublicModel) -> Result<Answer, String> {
    match read_quick(&Bytes::copy_from_slice(raw), public) {
        Some(a) => Ok(a),
        None => read_tree(raw, public),
    }
}

/// The usage of an answer too large to keep, from its last bytes (see
/// [`crate::gateway::dialect::Dialect::usage_at_end`]).
pub(super) fn usage_at_end(tail: &[u8]) -> (Option<Usage>, Reported) {
    let wire = crate::gateway::json::last_object_member(tail, "usage")
        .and_then(|text| serde_json::from_str::<usage::Lenient>(text).ok())
        .and_then(|l| l.0);
    (
        wire.as_ref().and_then(usage::of_wire),
        wire.as_ref().map(usage::reported).unwrap_or_default(),
    )
}

/// [`read`] without a tree, or `None` for the tree to decide.
fn read_quick(raw: &Bytes, public: &PublicModel) -> Option<Answer> {
    let mut text = None;
    let body = members::read_walking(raw, |c, name| match name {
        "content" => {
            text = Some(content_text(c)?);
            Some(())
        }
        _ => c.skip_value(),
    })?;
    let usage = match body.get("usage") {
        None => None,
        Some(u) => serde_json::from_str::<Option<usage::Lenient>>(u)
            .ok()?
            .and_then(|l| l.0),
    };
    let mut name = Vec::new();
    members::string(&mut name, public.name());
    let rename = [("model", Edit::Set(&name))];
    let edits: &[_] = if body.get("model").is_some() {
        &rename
    } else {
        &[]
    };
    Some(Answer {
        usage: usage.as_ref().and_then(usage::of_wire),
        output_estimate: (text? as u64).div_ceil(4),
        reported: usage.as_ref().map(usage::reported).unwrap_or_default(),
        body: body.members.write(edits),
    })
}

/// The content (an array): the bytes of every block's `text` and `thinking` (when strings)
/// and the compact length of its `input`, whatever the block's type, as the tree counts them.
fn content_text(c: &mut Cursor<'_>) -> Option<usize> {
    let mut total = 0;
    c.elements(|c| {
        if c.next_byte()? != b'{' {
            return c.skip_value();
        }
        let (mut text, mut thinking, mut input) = (0, 0, 0);
        c.members(|c, key| {
            match key {
                "text" => text = c.text_or_zero()?,
                "thinking" => thinking = c.text_or_zero()?,
                "input" => input = compact_len_next(c)? as usize,
                _ => c.skip_value()?,
            }
            Some(())
        })?;
        total += text + thinking + input;
        Some(())
    })?;
    Some(total)
}

/// The parts of a whole answer that billing reads.
#[derive(Deserialize)]
struct Whole {
    #[serde(default)]
    content: Option<Vec<Value>>,
    /// Read leniently: a usage of the wrong shape is upstream's slip, and the answer is still
    /// relayed and billed by estimate (as an OpenAI answer's is), not refused unpaid.
    #[serde(default)]
    usage: Option<usage::Lenient>,
}

/// [`read`] through a JSON tree: slower, and the one that names what is wrong.
fn read_tree(raw: &[u8], public: &PublicModel) -> Result<Answer, String> {
    let mut v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let whole: Whole = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let Some(content) = whole.content else {
        return Err("no content".into());
    };
    let text: usize = content
        .iter()
        .map(|b| {
            ["text", "thinking"]
                .iter()
                .filter_map(|k| b.get(*k).and_then(Value::as_str))
                .map(str::len)
                .sum::<usize>()
                + b.get("input").map_or(0, |i| i.to_string().len())
        })
        .sum();
    if let Some(o) = v.as_object_mut()
        && o.contains_key("model")
    {
        o.insert("model".into(), Value::String(public.name().to_string()));
    }
    let wire = whole.usage.and_then(|l| l.0);
    Ok(Answer {
        usage: wire.as_ref().and_then(usage::of_wire),
        output_estimate: (text as u64).div_ceil(4),
        reported: wire.as_ref().map(usage::reported).unwrap_or_default(),
        body: serde_json::to_vec(&v).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_answer_is_read_and_renamed() {
        let raw = br#"{"id":"msg_1","type":"message","role":"assistant","model":"up","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hello there"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"cache_read_input_tokens":64,"output_tokens":9}}"#;
        let a = read(raw, &PublicModel::new("deepseek-v4-flash")).unwrap();
        let u = a.usage.unwrap();
        assert_eq!((u.prompt, u.hit, u.miss, u.completion), (69, 64, 5, 9));
        assert_eq!(a.output_estimate, 4);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["model"], "deepseek-v4-flash");
        assert_eq!(v["content"][1]["text"], "Hello there");
        assert!(read(br#"{"id":"x"}"#, &PublicModel::new("m")).is_err());
    }

    #[test]
    fn the_usage_at_the_end_of_an_answer_too_large_to_keep() {
        let tail = br#"xt":"end"}],"stop_reason":"max_tokens","usage":{"input_tokens":5,"cache_read_input_tokens":64,"output_tokens":9}}"#;
        let (u, r) = usage_at_end(tail);
        let u = u.unwrap();
        assert_eq!((u.prompt, u.hit, u.miss, u.completion), (69, 64, 5, 9));
        assert_eq!((r.prompt, r.output), (Some((64, 5)), Some(9)));
        let (u, r) = usage_at_end(br#"],"usage":{"output_tokens":9}}"#);
        assert!(u.is_none());
        assert_eq!((r.prompt, r.output), (None, Some(9)));
        assert!(usage_at_end(b"no usage here").0.is_none());
    }
}
