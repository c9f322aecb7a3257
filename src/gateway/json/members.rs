//! A request body read by its top-level members — each name and the span of its value's text —
//! and written again for upstream by copying every member as the client wrote it, except the few
//! the gateway owns ([`Edit`]). A body the cursor is not sure of (an escaped member name,
//! nesting past its limit, a number out of `f64`'s range) is left to the tree.
//!
//! Why: a JSON tree (`serde_json::Map`, an `IndexMap` with SipHash under `preserve_order`)
//! hashes every key of every message and serialises the whole body again for upstream — ~21k
//! instructions of a small chat request, and millions for an agent's 60 KB request, under
//! callgrind (bench/PROFILE.md). The members are walked by the [`Cursor`]; the property tests
//! of both dialects hold its walk to serde's (names, texts and offsets).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
#[cfg(test)]
use serde::de::MapAccess;
use serde::de::Visitor;
use serde_json::Value;
#[cfg(test)]
use serde_json::value::RawValue;

use super::cursor::Cursor;

/// Bodies with more top-level members than this (nothing a client sends) go through the tree
/// rather than a quadratic search for repeated names.
const MAX_MEMBERS: usize = 64;

/// A body read by its top-level members.
#[derive(Debug)]
pub(in crate::gateway) struct Members {
    raw: Bytes,
    /// Each name once (a repeated name keeps its first place and its last value, as a JSON
    /// map reads it), in the order of the body.
    members: Vec<(String, Range<usize>)>,
}

/// A body's members and, for each, its value's text (borrowed from the body).
pub(in crate::gateway) struct Read<'a> {
    pub members: Members,
    values: Vec<&'a str>,
}

impl<'a> Read<'a> {
    /// The text of member `name`'s value (its last, when repeated).
    pub(in crate::gateway) fn get(&self, name: &str) -> Option<&'a str> {
        let i = self.members.members.iter().position(|(n, _)| n == name)?;
        Some(self.values[i])
    }
}

/// What the gateway does to one of its own members when writing the body for upstream.
pub(in crate::gateway) enum Edit<'e> {
    /// Left out.
    Drop,
    /// Its value becomes this JSON text (the member is added at the end when absent).
    Set(&'e [u8]),
    /// Its value is written by this function from the client's value text (`null` when the
    /// member is absent, and then added at the end).
    Merge(&'e dyn Fn(&mut Vec<u8>, &[u8])),
}

/// Read `raw` (a JSON object) by its top-level members; `None` when it is not a JSON object
/// or has more than [`MAX_MEMBERS`] members. `walk` reads each member's value (given its name)
/// as the cursor passes it: a dialect reads what it needs in the same walk that finds the
/// members, not in a second one over their texts. `walk` must pass over exactly one value
/// (`Cursor::skip_value` for the members it does not read), or answer `None`.
pub(in crate::gateway) fn read_walking<'a>(
    raw: &'a Bytes,
    walk: impl FnMut(&mut Cursor<'a>, &'a str) -> Option<()>,
) -> Option<Read<'a>> {
    let all = top_walked_with(raw, walk)?;
    if all.len() > MAX_MEMBERS {
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
    Some(Read {
        members: Members {
            raw: raw.clone(),
            members,
        },
        values,
    })
}

impl Members {
    /// The body for upstream: every member as the client wrote it, except those named in
    /// `edits`, which are left out, set or merged in their place — or, when absent and not
    /// dropped, added at the end in the order of `edits`.
    pub(in crate::gateway) fn write(&self, edits: &[(&str, Edit<'_>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + 160);
        out.push(b'{');
        // Which edits found their member.
        let mut done = vec![false; edits.len()];
        for (name, span) in &self.members {
            let value = &self.raw[span.clone()];
            let edit = edits.iter().position(|(n, _)| n == name);
            if let Some(i) = edit
                && let Some(d) = done.get_mut(i)
            {
                *d = true;
            }
            match edit.map(|i| &edits[i].1) {
                Some(Edit::Drop) => {}
                Some(Edit::Set(text)) => {
                    member(&mut out, name);
                    out.extend_from_slice(text);
                }
                Some(Edit::Merge(f)) => {
                    member(&mut out, name);
                    f(&mut out, value);
                }
                None => {
                    member(&mut out, name);
                    out.extend_from_slice(value);
                }
            }
        }
        for (i, (name, edit)) in edits.iter().enumerate() {
            if done.get(i).copied().unwrap_or(false) {
                continue;
            }
            match edit {
                Edit::Drop => {}
                Edit::Set(text) => {
                    member(&mut out, name);
                    out.extend_from_slice(text);
                }
                Edit::Merge(f) => {
                    member(&mut out, name);
                    f(&mut out, b"null");
                }
            }
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
pub(in crate::gateway) fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A JSON string read from the body, borrowed when it holds no escape.
pub(in crate::gateway) struct Text<'a>(pub Cow<'a, str>);

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
#[cfg(test)]
struct Top<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

#[cfg(test)]
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
pub(in crate::gateway) fn member_names(raw: &[u8]) -> Option<Vec<String>> {
    let Top(all) = serde_json::from_slice(raw).ok()?;
    Some(all.into_iter().map(|(n, _)| n.into_owned()).collect())
}

/// [`top_walked_with`] passing over every value (for tests).
#[cfg(test)]
pub(in crate::gateway) fn top_walked(raw: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    top_walked_with(raw, |c, _| c.skip_value())
}

/// The top-level members of `raw` (a JSON object), in order, repeats included: each name and
/// its value's text, walked by the cursor (each value read by `walk`, [`read_walking`]), which
/// validates every value as serde_json would. `None` when the body is not a JSON object, or is
/// one the cursor is not sure of (an escaped name, nesting past its limit): such a body goes
/// through the tree, which then decides everything. The property tests hold it to
/// [`top_by_serde`].
fn top_walked_with<'a>(
    raw: &'a [u8],
    mut walk: impl FnMut(&mut Cursor<'a>, &'a str) -> Option<()>,
) -> Option<Vec<(Cow<'a, str>, &'a str)>> {
    let mut c = Cursor::new(std::str::from_utf8(raw).ok()?);
    let mut all = Vec::new();
    c.members(|c, name| {
        all.push((Cow::Borrowed(name), c.value_with(|c| walk(c, name))?));
        Some(())
    })?;
    c.at_end().then_some(all)
}

/// [`top_walked_with`] by serde_json (for tests: its `RawValue` does not check what serde's tree
/// refuses in a value, such as a lone surrogate or a number out of range).
#[cfg(test)]
pub(in crate::gateway) fn top_by_serde(raw: &[u8]) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let Top(all) = serde_json::from_slice(raw).ok()?;
    Some(all.into_iter().map(|(n, v)| (n, v.get())).collect())
}

/// Bytes of the compact JSON text of `raw` (what `Value::to_string` gives), as the trees count
/// tools, tool calls and tool inputs.
pub(in crate::gateway) fn compact_len(raw: &str) -> Option<u64> {
    compact_len_walked(raw).or_else(|| compact_len_of_tree(raw))
}

/// [`compact_len`] of the value next at `c`, which ends past it: counted in the cursor's walk,
/// or through a tree of its text where the walk gives up (a float, say).
pub(in crate::gateway) fn compact_len_next(c: &mut Cursor<'_>) -> Option<u64> {
    let back = c.clone();
    if let Some(n) = c.compact_len() {
        return Some(n);
    }
    *c = back;
    compact_len_of_tree(c.raw_value()?)
}

/// [`compact_len`] by the cursor, without a tree (a tool list of ~10 KB cost ~650k
/// instructions as a tree written out again); `None` where it is not sure (the property tests
/// hold it to [`compact_len_of_tree`]).
pub(in crate::gateway) fn compact_len_walked(raw: &str) -> Option<u64> {
    let mut c = Cursor::new(raw);
    let len = c.compact_len()?;
    c.at_end().then_some(len)
}

/// [`compact_len`] through a `Value`.
pub(in crate::gateway) fn compact_len_of_tree(raw: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(raw).ok()?;
    Some(v.to_string().len() as u64)
}
