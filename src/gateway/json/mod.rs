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

/// The member of `owned` that `name` would be read as by a parser that matches member names
/// regardless of case — Go's `encoding/json` does: ASCII case, and the two non-ASCII letters
/// that fold to ASCII ones, K (U+212A, Kelvin) for `k` and ſ (U+017F, long s) for `s` — when
/// `name` is not that member itself. The gateway sets or reads those members (`model`,
/// `max_tokens`…); a twin such as `MAX_TOKENS` copied upstream after the gateway's own value
/// could be the one DeepSeek reads, so the request is refused instead. `owned` is in lower-case
/// ASCII.
pub(super) fn case_twin(name: &str, owned: &[&'static str]) -> Option<&'static str> {
    // Quick way out for the names every request has: one with no upper-case ASCII letter and
    // no byte past ASCII is either an owned name itself or no twin of one (the owned names
    // are lower-case ASCII): a pass over a few bytes, not a comparison with each.
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        return None;
    }
    owned.iter().copied().find(|o| {
        let mut want = o.bytes();
        name.chars().all(|c| {
            let c = match c {
                '\u{212A}' => 'k',
                '\u{17F}' => 's',
                c => c.to_ascii_lowercase(),
            };
            want.next().is_some_and(|w| char::from(w) == c)
        }) && want.next().is_none()
    })
}

/// The text of the last object member named `name` in `tail`, the end of a JSON text whose
/// start is gone (a whole answer too large to keep: its `usage` is among its last members).
/// A member's name is found by its quotes: inside a JSON string a quote is escaped, so
/// `"usage"` whose opening quote is not escaped, followed by a colon, is a member's name,
/// never text (a name ending in `\"usage` is passed over). A member of that name nested in
/// something else (an Anthropic tool's input) is not the last one, since DeepSeek writes the
/// answer's `usage` after its content. The object it names is read by serde up to its close
/// (what follows it is not looked at).
pub(super) fn last_object_member<'t>(tail: &'t [u8], name: &str) -> Option<&'t str> {
    let quoted = format!("\"{name}\"");
    let mut end = tail.len();
    while let Some(at) = find_last(&tail[..end], quoted.as_bytes()) {
        end = at;
        let backslashes = tail[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        let rest = tail[at + quoted.len()..].trim_ascii_start();
        let Some(value) = rest.strip_prefix(b":").map(<[u8]>::trim_ascii_start) else {
            continue;
        };
        if !value.starts_with(b"{") {
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(value);
        let Ok(raw) = <&serde_json::value::RawValue as serde::Deserialize>::deserialize(&mut de)
        else {
            continue;
        };
        return Some(raw.get());
    }
    None
}

/// Where `needle` last occurs in `hay`.
fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// A token count written as a JSON float (`77.0`, `1e2`): its value when it is a whole,
/// non-negative number, saturating at `u64::MAX` like the integers past it. DeepSeek writes
/// integers; a relay or a library in front of it may not, and throwing the whole usage away
/// for such a count billed an estimate instead of the provider's figures. (Token counts, not
/// money: money never goes through a float.)
pub(super) fn whole_count(f: f64) -> Option<u64> {
    // `as` saturates at `u64::MAX`; `-0.0` reads as 0.
    (f >= 0.0 && f.fract() == 0.0).then_some(f as u64)
}

/// What the log keeps of an upstream error event: its `error` member only (a chunk may carry
/// the model's output beside it, which the log does not keep), at most 300 characters, with
/// key-shaped words redacted as in upstream's error answers (an event echoing the operator's
/// key was logged verbatim: found by an independent check).
pub(super) fn error_text(data: &str) -> String {
    let error = serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("error").map(ToString::to_string))
        .unwrap_or_else(|| format!("({} bytes, no readable error member)", data.len()));
    crate::upstream::redact(&error, 300)
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

/// The text after each `key:` in `text` (one JSON event; `key` given with its quotes, e.g.
/// `"finish_reason"`), from the value's first byte on. Read from the text, not a tree: inside
/// a JSON string every quote is escaped, so the key with both its quotes followed by a colon
/// appears only as a member name. Whitespace around the colon is allowed.
fn member_values<'t>(text: &'t str, key: &Key) -> impl Iterator<Item = &'t [u8]> {
    let b = text.as_bytes();
    let finder = key
        .0
        .get_or_init(|| memchr::memmem::Finder::new(key.1.as_bytes()));
    finder.find_iter(b).filter_map(move |at| {
        let rest = skip_space(&b[at + key.1.len()..]);
        rest.strip_prefix(b":").map(skip_space)
    })
}

fn skip_space(s: &[u8]) -> &[u8] {
    &s[s.iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len())..]
}

/// Whether `text` (one JSON event) has a member named `key` whose value is not `null`: the end
/// of an answer, in a stream that may break after it (see [`member_values`]); anything it
/// cannot read is "no".
pub(super) fn has_non_null(text: &str, key: &Key) -> bool {
    member_values(text, key).any(|v| !v.is_empty() && !v.starts_with(b"null"))
}

/// Whether `text` (one JSON event) has a member named `key` whose value is the empty array:
/// OpenAI's last chunk of a stream, `"choices":[]` beside the usage (see [`member_values`]).
pub(super) fn has_empty_array(text: &str, key: &Key) -> bool {
    member_values(text, key).any(|v| {
        v.strip_prefix(b"[")
            .is_some_and(|r| skip_space(r).starts_with(b"]"))
    })
}

#[cfg(test)]
mod tests {
    /// The last `usage` member of a text's end: never one quoted inside a string, never one
    /// that is no object, the last of two (an Anthropic tool's input may hold its own).
    #[test]
    fn the_last_object_member_of_a_tail() {
        fn find(t: &str) -> Option<&str> {
            super::last_object_member(t.as_bytes(), "usage")
        }
        let tail = r#"ps":[1,2]}],"usage":{"prompt_tokens":3,"completion_tokens":4},"system_fingerprint":"fp"}"#;
        assert_eq!(
            find(tail),
            Some(r#"{"prompt_tokens":3,"completion_tokens":4}"#)
        );
        // Cut anywhere before: the start of the text is gone, not the usage.
        assert_eq!(find(&tail[5..]), find(tail));
        let quoted = r#"{"content":"say \"usage\":{\"x\":1}","usage" : {"a":1}}"#;
        assert_eq!(find(quoted), Some(r#"{"a":1}"#));
        let nested = r#"{"input":{"usage":{"fake":9}}}],"usage":{"output_tokens":7}}"#;
        assert_eq!(find(nested), Some(r#"{"output_tokens":7}"#));
        assert_eq!(find(r#"{"usage":null,"x":1}"#), None);
        assert_eq!(find(r#"{"usage":{"cut"#), None);
        assert_eq!(
            find(r#""x":{"usage":{"a":2}},"usage":5}"#),
            Some(r#"{"a":2}"#)
        );
        assert_eq!(find(""), None);
        let escaped = r#"{"usage":{"a":3},"input":{"x\"usage":{"b":4}}}"#;
        assert_eq!(find(escaped), Some(r#"{"a":3}"#));
    }

    /// What the log keeps of an upstream error event: its `error` member, key-shaped words
    /// redacted, never the rest of the chunk.
    #[test]
    fn an_error_event_is_logged_without_keys() {
        let data = r#"{"error":{"message":"internal at /srv/x.py key sk-UPSTREAMSECRET0123456789abcdef"},"choices":[{"delta":{"content":"private text"}}]}"#;
        let text = super::error_text(data);
        assert!(!text.contains("UPSTREAMSECRET"), "{text}");
        assert!(
            text.contains("[redacted]") && text.contains("/srv/x.py"),
            "{text}"
        );
        assert!(!text.contains("private text"), "{text}");
    }

    #[test]
    fn case_twins_of_owned_members() {
        use super::case_twin;
        const OWNED: &[&str] = &["model", "max_tokens", "stream", "n"];
        assert_eq!(case_twin("MAX_TOKENS", OWNED), Some("max_tokens"));
        assert_eq!(case_twin("Model", OWNED), Some("model"));
        assert_eq!(case_twin("N", OWNED), Some("n"));
        assert_eq!(case_twin("max_to\u{212A}ens", OWNED), Some("max_tokens"));
        assert_eq!(case_twin("\u{17F}tream", OWNED), Some("stream"));
        assert_eq!(case_twin("max_tokens", OWNED), None);
        assert_eq!(case_twin("temperature", OWNED), None);
        assert_eq!(case_twin("max_token", OWNED), None);
        assert_eq!(case_twin("max_tokensX", OWNED), None);
        assert_eq!(case_twin("", OWNED), None);
    }

    #[test]
    fn whole_floats_are_counts() {
        use super::whole_count;
        assert_eq!(whole_count(77.0), Some(77));
        assert_eq!(whole_count(-0.0), Some(0));
        assert_eq!(whole_count(1e300), Some(u64::MAX));
        assert_eq!(whole_count(2.5), None);
        assert_eq!(whole_count(-1.0), None);
    }

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

    #[test]
    fn an_empty_array_member_is_found() {
        static KEY: super::Key = super::Key::new("\"choices\"");
        let has = |t: &str| super::has_empty_array(t, &KEY);
        assert!(has(r#"{"choices":[],"usage":{}}"#));
        assert!(has(r#"{"choices" : [ ] ,"usage":{}}"#));
        assert!(!has(r#"{"choices":[{}],"usage":{}}"#));
        assert!(!has(r#"{"choices":null}"#));
        assert!(!has(r#"{"x":"\"choices\":[]"}"#));
        assert!(!has(r#"{"choices":["#));
    }
}
