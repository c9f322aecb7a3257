//! A request's prompt in pieces — each text as it goes into DeepSeek's template, with what it
//! is (its message's place and role, its kind of block) — for the two things that read it:
//! a cut stream's count by DeepSeek's tokenizer ([`super::tokens`]), and the fingerprints
//! of the key's recent prompts ([`crate::keys::prompts`]) that say which part was cached.
//!
//! Why pieces borrow the body's text: every stream's prompt is fingerprinted when it ends,
//! and reading the body into a `serde_json::Value` for that cost a Claude Code-shaped request
//! ~2.2M instructions on top of its ~0.86M (bench/PROFILE.md). So each dialect walks the body
//! once with the cursor (a tree only where the walk is not sure), a string is hashed as
//! written, and a text is decoded only when a count needs it.

use std::borrow::Cow;
use std::hash::Hasher;

/// One piece's text.
pub enum PieceText<'a> {
    /// A JSON string as written in the body, quotes included.
    Written(&'a str),
    /// A text, decoded already.
    Decoded(String),
    /// A JSON value (a tool list, a tool's input or calls), as written or as serde_json writes
    /// it compactly: it goes into DeepSeek's template as compact JSON.
    Json(Cow<'a, str>),
    /// What else a message, part or block says (its other members, as a JSON object; an image
    /// as it is): no text the estimate counts, but another prompt to DeepSeek's template when
    /// it changes — a message without text whose role changed, an image replaced (found by an
    /// independent re-check: they left no trace, and what came after them was billed as
    /// cached). Counted as no tokens.
    Other(Cow<'a, str>),
}

/// The members of an object that its pieces do not hold (as written), for its
/// [`PieceText::Other`] piece: the last of a name given twice, in the place of its first, as
/// in a JSON map.
#[derive(Default)]
pub struct Others<'a>(Vec<(String, &'a str)>);

impl<'a> Others<'a> {
    /// Member `name` is `raw`.
    pub fn put(&mut self, name: &str, raw: &'a str) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(m) => m.1 = raw,
            None => self.0.push((name.to_owned(), raw)),
        }
    }

    /// Member `name`, as written.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| n == name).map(|m| m.1)
    }

    /// Member `name`, taken out (a piece of its own holds it).
    pub fn take(&mut self, name: &str) -> Option<&'a str> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// Member `name`, if it is a string: taken out.
    pub fn take_string(&mut self, name: &str) -> Option<&'a str> {
        let at = self
            .0
            .iter()
            .position(|(n, v)| n == name && v.starts_with('"'))?;
        Some(self.0.remove(at).1)
    }

    /// Takes member `name` out if `held(its text)`; whether it did.
    pub fn take_if(&mut self, name: &str, held: impl Fn(&str) -> bool) -> bool {
        let at = self.0.iter().position(|(n, v)| n == name && held(v));
        at.map(|at| self.0.remove(at)).is_some()
    }

    /// The piece of what is left.
    pub fn piece(self, label: String, message: Option<u64>) -> Piece<'a> {
        let mut text = String::from("{");
        for (i, (name, raw)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::Value::from(name.as_str()).to_string());
            text.push(':');
            text.push_str(raw);
        }
        text.push('}');
        Piece {
            label,
            message,
            text: PieceText::Other(Cow::Owned(text)),
        }
    }
}

/// How a dialect reads message `i` at the cursor (an object): its pieces into `out`, and `i`
/// into `last_user` if it is a user's turn.
pub(in crate::gateway) type ReadMessage<'a> = fn(
    c: &mut crate::gateway::json::cursor::Cursor<'a>,
    i: u64,
    out: &mut Vec<Piece<'a>>,
    last_user: &mut Option<u64>,
) -> Option<()>;

/// The request's messages at the cursor, each object read by `message`: their pieces, their
/// number, and the last user's turn.
pub(in crate::gateway) fn messages<'a>(
    c: &mut crate::gateway::json::cursor::Cursor<'a>,
    message: ReadMessage<'a>,
) -> Option<(Vec<Piece<'a>>, u64, Option<u64>)> {
    let (mut out, mut n, mut user) = (Vec::new(), 0u64, None);
    c.elements(|c| {
        n += 1;
        let i = n - 1;
        if c.next_byte()? != b'{' {
            // Not a message (the parse refuses it): its place and text, so it is never skipped.
            let raw = c.raw_value()?;
            out.push(Piece {
                label: format!("{i}:"),
                message: Some(i),
                text: PieceText::Other(Cow::Borrowed(raw)),
            });
            return Some(());
        }
        message(c, i, &mut out, &mut user)
    })?;
    Some((out, n, user))
}

/// The piece of what else `obj` (read through a tree) says: its members but those `held`
/// says its pieces hold.
pub fn others_of_tree(
    obj: &serde_json::Map<String, serde_json::Value>,
    held: impl Fn(&str, &serde_json::Value) -> bool,
    label: String,
    message: Option<u64>,
) -> Piece<'static> {
    let rest: serde_json::Map<_, _> = obj
        .iter()
        .filter(|(k, v)| !held(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Piece {
        label,
        message,
        text: PieceText::Other(Cow::Owned(serde_json::Value::Object(rest).to_string())),
    }
}

/// One piece of a prompt.
pub struct Piece<'a> {
    /// What the text is (`3:user.content`, `tools`…): the same text in another role, message
    /// or kind of block is another prompt to DeepSeek's template, so to its cache.
    pub label: String,
    /// The message it is in (`None`: the tools or the system prompt).
    pub message: Option<u64>,
    /// The text.
    pub text: PieceText<'a>,
}

/// A request's prompt: its pieces in the order DeepSeek's template reads them (a cached
/// prefix of a prompt is a prefix of these), and its number of messages.
pub struct PromptPieces<'a> {
    /// The pieces.
    pub pieces: Vec<Piece<'a>>,
    /// Messages.
    pub messages: u64,
    /// The last message that is a user's turn (not a tool's result): see
    /// [`PromptPieces::turn_end`].
    pub last_user: Option<u64>,
}

/// Top-level members that change how DeepSeek's template writes the whole prompt (the tools,
/// written into its system prompt; a response format; thinking on or off, or its effort —
/// V4's template writes a text at the very start for the maximum effort): a prompt's first
/// piece holds them, so a recent prompt counts only if they were the same (found by
/// independent re-checks: a response format added, thinking turned off, or the effort set to
/// the maximum, left the rest billed as hits DeepSeek does not give).
pub const FRAME: [&str; 5] = [
    "tools",
    "response_format",
    "thinking",
    "reasoning_effort",
    "output_config",
];

impl PromptPieces<'_> {
    /// How many leading pieces end with the last user's turn: DeepSeek's template writes a
    /// user's last turn, and the turns after it (reasoning, tool calls and results), otherwise
    /// once another user's turn follows, so a recent prompt's cache counts past this point
    /// only for a prompt that has no user's turn after it (found by an independent re-check:
    /// a new question after an agent's tool loop had the loop billed as hits).
    pub fn turn_end(&self) -> usize {
        self.last_user.map_or(0, |m| {
            self.pieces
                .iter()
                .rposition(|p| p.message == Some(m))
                .map_or(0, |i| i + 1)
        })
    }
}

impl PieceText<'_> {
    /// The text as DeepSeek's tokenizer reads it: a string decoded, a JSON value as
    /// serde_json writes it compactly. `None` if it is not what it says (never for a body
    /// that was parsed).
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            PieceText::Written(w) => string(w),
            PieceText::Decoded(s) => Some(Cow::Borrowed(s)),
            PieceText::Json(j) => serde_json::from_str::<serde_json::Value>(j)
                .ok()
                .map(|v| Cow::Owned(v.to_string())),
            PieceText::Other(_) => Some(Cow::Borrowed("")),
        }
    }

    /// Feeds what identifies the text to `h`: a string as written between its quotes (a
    /// client writes the same text the same way each time: decoding every escape of a long
    /// prompt for its fingerprint cost more than all the rest, bench/PROFILE.md), a decoded
    /// text as it is (the same as a string written without escapes; never the same as one
    /// written with them), a JSON value's text without the whitespace between its tokens.
    /// Equal fingerprints mean equal texts; the same text written two ways may differ (billed
    /// as misses). `None` if it is not what it says.
    pub fn feed(&self, h: &mut impl Hasher) -> Option<()> {
        match self {
            PieceText::Written(w) => {
                let inner = w.strip_prefix('"')?.strip_suffix('"')?;
                // Written without an escape, a string's bytes are its text: the same as a
                // decoded text's. Written with escapes, they are not, and must never match a
                // decoded text (a tree's reading) with those bytes: `a\nb` written with its
                // escape is a line break, the same bytes decoded are a backslash and an `n`
                // (found by an independent re-check: new text billed as cache hits).
                let escaped = memchr::memchr(b'\\', inner.as_bytes()).is_some();
                h.write_u8(if escaped { 2 } else { 0 });
                h.write(inner.as_bytes());
            }
            PieceText::Decoded(s) => {
                h.write_u8(0);
                h.write(s.as_bytes());
            }
            PieceText::Json(j) => {
                h.write_u8(1);
                without_whitespace(j, |run| h.write(run));
            }
            PieceText::Other(o) => {
                h.write_u8(3);
                without_whitespace(o, |run| h.write(run));
            }
        }
        h.write_u8(0xff);
        Some(())
    }
}

/// A JSON string's text (`written`: as written, quotes included): borrowed unless it holds
/// an escape.
pub fn string(written: &str) -> Option<Cow<'_, str>> {
    match plain(written) {
        Some(inner) => Some(Cow::Borrowed(inner)),
        None => serde_json::from_str::<String>(written).ok().map(Cow::Owned),
    }
}

/// A JSON string's text between its quotes, if it holds no escape (so it is its text).
fn plain(written: &str) -> Option<&str> {
    let inner = written.strip_prefix('"')?.strip_suffix('"')?;
    (memchr::memchr(b'\\', inner.as_bytes()).is_none()).then_some(inner)
}

/// `json`'s text in runs, leaving out JSON's whitespace between tokens (inside strings it
/// stays).
fn without_whitespace(json: &str, mut run: impl FnMut(&[u8])) {
    let b = json.as_bytes();
    let (mut i, mut from) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // To the string's closing quote, passing over escapes.
                i += 1;
                while let Some(k) = b.get(i..).and_then(|r| memchr::memchr2(b'"', b'\\', r)) {
                    i += k + 1;
                    if b[i - 1] == b'"' {
                        break;
                    }
                    i += 1;
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                if from < i {
                    run(&b[from..i]);
                }
                i += 1;
                from = i;
            }
            _ => i += 1,
        }
    }
    if from < b.len() {
        run(&b[from..]);
    }
}

/// For the dialects' property tests: where `walked` answers for `text`, `by_tree` reads the
/// same pieces ([`same_as_tree`]).
#[cfg(test)]
pub(crate) fn same_walk_as_tree(
    text: &str,
    walked: fn(&str) -> Option<PromptPieces<'_>>,
    by_tree: fn(&[u8]) -> Option<PromptPieces<'static>>,
) -> Result<(), String> {
    let Some(w) = walked(text) else {
        return Ok(());
    };
    let Some(t) = by_tree(text.as_bytes()) else {
        return Err(format!("walked, not in the tree: {text}"));
    };
    same_as_tree(&w, &t).map_err(|e| format!("{e}: {text}"))
}

/// For the dialects' property tests: whether the walk's pieces are the tree's — the same
/// labels and messages, the same text for the tokenizer, and for a string written without
/// escapes the same fingerprint (a string with escapes is fingerprinted as written, a JSON
/// value's text may differ where its writing does in more than whitespace).
#[cfg(test)]
pub(crate) fn same_as_tree(walked: &PromptPieces, tree: &PromptPieces) -> Result<(), String> {
    let print = |t: &PieceText| {
        let mut h = std::hash::DefaultHasher::new();
        t.feed(&mut h).map(|()| h.finish())
    };
    let at = |p: &PromptPieces| p.pieces.iter().map(|p| p.message).collect::<Vec<_>>();
    if at(walked) != at(tree) {
        return Err(format!(
            "messages {:?} walked, {:?} in the tree",
            at(walked),
            at(tree)
        ));
    }
    if walked.last_user != tree.last_user {
        return Err(format!(
            "last user's turn {:?} walked, {:?} in the tree",
            walked.last_user, tree.last_user
        ));
    }
    if walked.messages != tree.messages || walked.pieces.len() != tree.pieces.len() {
        return Err(format!(
            "{} messages, {} pieces walked; {} and {} in the tree",
            walked.messages,
            walked.pieces.len(),
            tree.messages,
            tree.pieces.len()
        ));
    }
    for (w, t) in walked.pieces.iter().zip(&tree.pieces) {
        let (wt, tt) = (w.text.text(), t.text.text());
        if w.label != t.label || wt.is_none() || wt != tt {
            return Err(format!(
                "{}: {wt:?} walked, {}: {tt:?} in the tree",
                w.label, t.label
            ));
        }
        if let (PieceText::Other(wo), PieceText::Other(to)) = (&w.text, &t.text) {
            let value = |o: &str| serde_json::from_str::<serde_json::Value>(o).ok();
            if value(wo).is_none() || value(wo) != value(to) {
                return Err(format!("{}: {wo} walked, {to} in the tree", w.label));
            }
            continue;
        }
        let json = |p: &Piece| matches!(p.text, PieceText::Json(_) | PieceText::Other(_));
        let escaped = matches!(w.text, PieceText::Written(s) if plain(s).is_none());
        if json(w) != json(t) || (!json(w) && !escaped && print(&w.text) != print(&t.text)) {
            return Err(format!("{}: not the same fingerprint", w.label));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(t: &PieceText) -> u64 {
        // The same keys each time.
        let mut h = std::hash::DefaultHasher::new();
        t.feed(&mut h).unwrap();
        h.finish()
    }

    /// A string is identified by its text as written (a text without escapes as the same
    /// text decoded); a JSON value by its text without the whitespace between tokens (but
    /// not inside strings).
    #[test]
    fn the_same_text_written_the_same_way_is_the_same_piece() {
        let a = print(&PieceText::Written(r#""café \"x\"""#));
        assert_eq!(a, print(&PieceText::Written(r#""café \"x\"""#)));
        assert_ne!(a, print(&PieceText::Written(r#""café \"y\"""#)));
        assert_eq!(
            print(&PieceText::Written(r#""café x""#)),
            print(&PieceText::Decoded("café x".into()))
        );
        // Written with an escape, a line break; decoded, a backslash and an `n`: other texts.
        assert_ne!(
            print(&PieceText::Written(r#""a\nb""#)),
            print(&PieceText::Decoded(r"a\nb".into()))
        );
        assert_ne!(
            print(&PieceText::Written(r#""a\nb""#)),
            print(&PieceText::Decoded("a\nb".into())),
            "the same text written with an escape, as misses"
        );
        let compact = r#"[{"a":"b c","d":[1,2]}]"#;
        let spaced = "[ {\"a\" : \"b c\",\n\t\"d\": [1, 2] } ]";
        let (c, s) = (
            PieceText::Json(compact.into()),
            PieceText::Json(spaced.into()),
        );
        assert_eq!(print(&c), print(&s));
        assert_ne!(
            print(&c),
            print(&PieceText::Json(r#"[{"a":"bc","d":[1,2]}]"#.into())),
            "whitespace inside a string is text"
        );
        let escaped = r#"[{"a":"b\" c","d":1}]"#;
        let escaped_spaced = "[{\"a\": \"b\\\" c\", \"d\": 1}]";
        assert_eq!(
            print(&PieceText::Json(escaped.into())),
            print(&PieceText::Json(escaped_spaced.into())),
            "an escaped quote does not end the string"
        );
        assert_ne!(
            print(&PieceText::Json(r#""x""#.into())),
            print(&PieceText::Decoded("\"x\"".into())),
            "a JSON value is not a text"
        );
        // What a count reads: the decoded text, compact JSON.
        assert_eq!(PieceText::Written(r#""caf\u00e9""#).text().unwrap(), "café");
        assert_eq!(s.text().unwrap(), compact);
    }
}
