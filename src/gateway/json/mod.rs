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
