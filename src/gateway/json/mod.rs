//! Quick readings of JSON text shared by the dialects: a walk over the text that builds nothing
//! ([`cursor`]), and a body read by its top-level members and written again for upstream with
//! only the gateway's own members changed ([`members`]). Each one answers `None` where it is
//! not sure to read as serde_json does, and its caller then reads the text with serde.

pub(super) mod cursor;
pub(super) mod members;

/// Whether `text` is one JSON value that serde_json's tree takes: the cursor's walk, or the
/// tree itself where the walk is not sure (nesting past its limit). For text relayed verbatim
/// after a serde reading that does not check what it skips (`IgnoredAny` and `RawValue` take
/// a number out of `f64`'s range and a lone surrogate), which a strict client would refuse.
pub(super) fn is_json(text: &str) -> bool {
    let mut c = cursor::Cursor::new(text);
    (c.skip_value().is_some() && c.at_end())
        || serde_json::from_str::<serde_json::Value>(text).is_ok()
}

/// What the log keeps of an upstream error event: its `error` member only (a chunk may carry
/// the model's output beside it, which the log does not keep), at most 300 characters.
pub(super) fn error_text(data: &str) -> String {
    let error = serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("error").map(ToString::to_string))
        .unwrap_or_else(|| format!("({} bytes, no readable error member)", data.len()));
    error.chars().take(300).collect()
}

/// A member name for [`has_non_null`], with its quotes (`"finish_reason"`), and its searcher,
/// built once: building one per search was ~7k instructions of a streamed answer.
pub(super) struct Key(
    std::sync::OnceLock<memchr::memmem::Finder<'static>>,
    &'static str,
);

impl Key {
    /// The key `quoted` (with its quotes).
    pub(super) const fn new(quoted: &'static str) -> Key {
        Key(std::sync::OnceLock::new(), quoted)
    }
}

/// Whether `text` (one JSON event) has a member named `key` (given with its quotes, e.g.
/// `"finish_reason"`) whose value is not `null`: the end of an answer, in a stream that may
/// break after it. Read from the text, not a tree: inside a JSON string every quote is escaped,
/// so the key with both its quotes followed by a colon appears only as a member name. Whitespace
/// around the colon is allowed; anything it cannot read is "no".
pub(super) fn has_non_null(text: &str, key: &Key) -> bool {
    let b = text.as_bytes();
    let finder = key
        .0
        .get_or_init(|| memchr::memmem::Finder::new(key.1.as_bytes()));
    finder.find_iter(b).any(|at| {
        let rest = &b[at + key.1.len()..];
        let skip = |s: &[u8]| {
            s.iter()
                .position(|c| !c.is_ascii_whitespace())
                .unwrap_or(s.len())
        };
        let rest = &rest[skip(rest)..];
        let Some(rest) = rest.strip_prefix(b":") else {
            return false;
        };
        let rest = &rest[skip(rest)..];
        !rest.is_empty() && !rest.starts_with(b"null")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_member_with_a_value_is_found_and_strings_are_not_members() {
        static KEY: super::Key = super::Key::new("\"finish_reason\"");
        let has = |t: &str| super::has_non_null(t, &KEY);
        assert!(has(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#));
        assert!(has(r#"{"choices":[{"finish_reason" : "length"}]}"#));
        assert!(has(
            r#"{"choices":[{"index":0,"finish_reason":null},{"finish_reason":"stop"}]}"#
        ));
        assert!(!has(
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#
        ));
        assert!(!has(r#"{"choices":[{"delta":{"content":"x"}}]}"#));
        // In a string the quotes are escaped: not a member.
        assert!(!has(
            r#"{"choices":[{"delta":{"content":"\"finish_reason\":\"stop\""}}]}"#
        ));
        assert!(!has(r#"{"choices":[{"finish_reason":"#));
    }
}
