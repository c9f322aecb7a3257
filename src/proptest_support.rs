//! Strategies the property tests share (tests only): text that needs escaping, arbitrary JSON
//! with a parser's own keys mixed in, and JSON written the way other programs write it (any
//! whitespace between tokens, any characters escaped), so the parsers never see only serde's
//! compact form.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Short text: mostly letters, often characters JSON must escape, sometimes anything.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec!['"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1f}']),
            1 => prop::sample::select(vec!['é', '中', '😀', '\u{2028}', '\u{feff}', '\u{7f}']),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// A JSON number: integers of every size and sign, and finite floats.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..100_000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// Arbitrary JSON whose object keys are often one of `keys` (the ones a parser looks at).
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    json_sized(keys, 4, 48)
}

/// Arbitrary JSON as [`json`], at most `depth` deep with about `nodes` values (for the parts of
/// a larger generated document).
pub fn json_sized(
    keys: &'static [&'static str],
    depth: u32,
    nodes: u32,
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, nodes, 6, move |inner| {
        let key = prop_oneof![
            3 => prop::sample::select(keys).prop_map(str::to_string),
            1 => text(6),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// How to write JSON: one byte per choice, used in turn (whitespace, escapes).
pub fn style() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..32)
}

/// `v` written as valid JSON in `style`: whitespace between tokens and characters written as
/// `\uXXXX` (or `\/`) where the style says so.
pub fn write(v: &Value, style: &[u8]) -> String {
    let mut w = Writer {
        style,
        at: 0,
        out: String::new(),
        plain_names: false,
    };
    w.value(v);
    w.space();
    w.out
}

/// [`write`], but every member name written as serde_json writes it (escaped only where JSON
/// requires): what clients send, and what the quick readings walk without giving up.
pub fn write_plain_names(v: &Value, style: &[u8]) -> String {
    let mut w = Writer {
        style,
        at: 0,
        out: String::new(),
        plain_names: true,
    };
    w.value(v);
    w.space();
    w.out
}

/// Whether `name` is written without an escape (no `"`, `\` or control character).
pub fn plain_name(name: &str) -> bool {
    !name
        .chars()
        .any(|c| c == '"' || c == '\\' || (c as u32) < 0x20)
}

/// Whether every member name in `v`, at any depth, is [`plain_name`].
pub fn plain_names(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.iter().all(|(k, v)| plain_name(k) && plain_names(v)),
        Value::Array(a) => a.iter().all(plain_names),
        _ => true,
    }
}

struct Writer<'a> {
    style: &'a [u8],
    at: usize,
    out: String,
    /// Member names as serde_json writes them ([`write_plain_names`]).
    plain_names: bool,
}

impl Writer<'_> {
    fn next(&mut self) -> u8 {
        let b = self.style.get(self.at % self.style.len().max(1)).copied();
        self.at += 1;
        b.unwrap_or(0)
    }

    fn space(&mut self) {
        let ws = match self.next() % 8 {
            0 => " ",
            1 => "\n  ",
            2 => "\t",
            3 => "\r\n",
            _ => "",
        };
        self.out.push_str(ws);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            let escape = self.next().is_multiple_of(4);
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '/' if escape => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || escape => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &Value) {
        self.space();
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => self.out.push_str(&v.to_string()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.value(item);
                    self.space();
                }
                if items.is_empty() {
                    self.space();
                }
                self.out.push(']');
            }
            Value::Object(members) => {
                self.out.push('{');
                for (i, (k, item)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    if self.plain_names {
                        self.out.push_str(&Value::String(k.clone()).to_string());
                    } else {
                        self.string(k);
                    }
                    self.space();
                    self.out.push(':');
                    self.value(item);
                    self.space();
                }
                if members.is_empty() {
                    self.space();
                }
                self.out.push('}');
            }
        }
    }
}

#[test]
fn written_json_reads_back_as_the_same_value() {
    let v = serde_json::json!({"a\"/é😀\n": [1, -2, 1.5, null, true, {"": "x\u{1}"}], "b": {}});
    for style in [vec![0u8], vec![1, 4, 8], vec![2, 3, 5, 7, 11, 13]] {
        let text = write(&v, &style);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v, "{text}");
    }
}

/// Edits that make or break JSON, for [`edited`]: structural tokens, escapes whole and
/// broken, number forms, literals whole and cut, whitespace JSON has and has not, a raw
/// control character.
pub const JSON_EDITS: &[&str] = &[
    "", "{", "}", "[", "]", "\"", ",", ":", "\\", "\\u", "\\ud83d", "\\udc00", "0", "01", "-", ".",
    "e", "1e", "+", "null", "nul", "true", "tru", " ", "\t", "\u{1}", "\u{7f}", "é", "\u{c}",
    "\u{b}", "\u{a0}", "\r\n", "\\n", "\\t", "\\/", "\\b", "\\x", "E", "E+", "e-", "1E5",
    "\\ud800", "9e999",
];

/// `text` with one edit at byte `i` (moved back to a char boundary): `cut` bytes taken out,
/// `put` put in.
pub fn edited(text: &str, i: usize, cut: usize, put: &str) -> String {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    let mut j = (i + cut).min(text.len());
    while !text.is_char_boundary(j) {
        j -= 1;
    }
    format!("{}{}{}", &text[..i], put, &text[j..])
}

/// `check` on `text` as it is, then with each of [`JSON_EDITS`] and `more` put in (taking out
/// `cut` bytes) at every place of [`edit_places`]: how the quick readings' properties try texts
/// that may no longer be JSON, or JSON they must not take.
pub fn every_edit<E>(
    text: &str,
    at: prop::sample::Index,
    cut: usize,
    more: &[&str],
    mut check: impl FnMut(&str) -> Result<(), E>,
) -> Result<(), E> {
    check(text)?;
    for i in edit_places(text, at) {
        for put in JSON_EDITS.iter().chain(more) {
            check(&edited(text, i, cut, put))?;
        }
    }
    Ok(())
}

/// Where an edit is tried: just after every `{`, `[`, `,`, `:` and `"` (where a member, a
/// value or an escape put in keeps the text JSON more often than not), and at `at`.
pub fn edit_places(text: &str, at: prop::sample::Index) -> Vec<usize> {
    let mut places: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| b"{[,:\"".contains(b))
        .map(|(i, _)| i + 1)
        .collect();
    places.push(at.index(text.len() + 1));
    places
}
