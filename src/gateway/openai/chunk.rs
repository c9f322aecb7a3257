//! One streamed chunk, read without building a JSON tree: the relay only needs the generated
//! text lengths, the `usage` (last chunk), whether it is an error event, and two edits — the
//! public model name, and dropping `usage` for a client that did not ask for it. Both edits are
//! splices into the original text, so a chunk is never re-serialised; anything unexpected falls
//! back to the tree-based rewrite, which is always correct. The reading itself is done by a
//! one-pass scanner (`scan.rs`) where it is sure, else by the serde view below.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::usage::usage_from_text;
use crate::gateway::billing::Usage;
use crate::gateway::dialect::{Generated, PublicModel};
use crate::gateway::json::is_json;

mod scan;

/// The parts of a chunk the relay reads. Unknown fields are skipped without allocation.
#[derive(Deserialize)]
struct View<'a> {
    /// `"model": null` is a model member too (the tree rewrite replaces it).
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    model: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<Vec<Obj<Choice<'a>>>>,
    #[serde(borrow, default, deserialize_with = "raw_even_null")]
    usage: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    /// Streamed chunks.
    #[serde(borrow, default)]
    delta: Option<Obj<Delta<'a>>>,
    /// Whole (non-stream) answers.
    #[serde(borrow, default)]
    message: Option<Obj<Delta<'a>>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<Obj<ToolCall<'a>>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Obj<Function<'a>>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// A struct read only from a JSON object: serde's derive also reads a struct from an array,
/// by position, and such a chunk is the tree rewrite's to refuse.
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(Obj)
    }
}

/// `"usage": null` must be seen (to be removed), so null is kept as a raw `null`.
fn raw_even_null<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(d).map(Some)
}

/// What the relay learns from a chunk (or a whole answer), and the text to send on.
pub struct Read {
    /// What the choices' deltas (or messages) generated: text, reasoning, tool calls.
    pub generated: Generated,
    /// `usage`, when the chunk carries a non-null one.
    pub usage: Option<Usage>,
    /// The object had a `choices` member.
    pub has_choices: bool,
    /// The SSE event for the client (`data: …\n\n`), or the rewritten answer.
    pub line: String,
}

/// An `error` event from upstream: the stream cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamErrorEvent;

/// Read `data` and render it for the client; `None` when the fast path does not apply — not
/// JSON, or an unexpected shape (the caller then uses the tree-based rewrite, which reports
/// what is wrong).
pub fn read(
    data: &str,
    public_model: &PublicModel,
    include_usage: bool,
) -> Result<Option<Read>, UpstreamErrorEvent> {
    rewrite(
        data,
        public_model,
        include_usage,
        Output::Delta,
        ("data: ", "\n\n"),
    )
}

/// A whole non-stream answer with the public model name (usage kept); `None` when the fast
/// path does not apply.
pub fn answer(data: &str, public_model: &PublicModel) -> Option<Read> {
    rewrite(data, public_model, true, Output::Message, ("", ""))
        .ok()
        .flatten()
}

/// Where a choice holds its output: `delta` in a stream's chunks, `message` in a whole answer
/// (each reading counts only its own, as the tree rewrite does).
#[derive(Clone, Copy, Debug)]
enum Output {
    Delta,
    Message,
}

/// What the relay reads from a chunk or an answer, whichever reading gave it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parts<'a> {
    /// The `model` member's raw text (`null` included).
    model: Option<&'a str>,
    /// A non-null `choices` member.
    has_choices: bool,
    /// What the choices' outputs (of the reading's kind) generated.
    generated: Generated,
    /// The `usage` member's raw text (`null` included).
    usage: Option<&'a str>,
    /// A non-null `error` member.
    error: bool,
}

/// The parts of `data`: the scanner's reading where it is sure, else the serde view's; `None`
/// when the text is not JSON of the expected shape.
fn parts(data: &str, output: Output) -> Option<Parts<'_>> {
    scan::scan(data, output).or_else(|| view_parts(data, output))
}

/// The serde view's reading (the reference the scanner is held to), of text the tree takes:
/// the view does not check what it skips, and the text is relayed as it is.
fn view_parts(data: &str, output: Output) -> Option<Parts<'_>> {
    let Obj(view) = serde_json::from_str::<Obj<View<'_>>>(data).ok()?;
    if !is_json(data) {
        return None;
    }
    Some(Parts {
        model: view.model.map(RawValue::get),
        has_choices: view.choices.is_some(),
        generated: generated(view.choices.iter().flatten(), output),
        usage: view.usage.map(RawValue::get),
        error: view.error.is_some(),
    })
}

fn rewrite(
    data: &str,
    public_model: &PublicModel,
    include_usage: bool,
    output: Output,
    (prefix, suffix): (&str, &str),
) -> Result<Option<Read>, UpstreamErrorEvent> {
    let Some(view) = parts(data, output) else {
        return Ok(None);
    };
    if view.error {
        return Err(UpstreamErrorEvent);
    }
    let usage = match view.usage {
        Some(raw) if raw != "null" => {
            let Ok(usage) = usage_from_text(raw) else {
                return Ok(None);
            };
            usage
        }
        _ => None,
    };
    // The edits, as (start, end, replacement) byte spans of `data`: at most two, kept in
    // place rather than in a vector (a chunk's reading allocates only its line).
    let mut edits: [Option<(usize, usize, &str)>; 2] = [None, None];
    if let Some(m) = view.model
        && m != public_model.json()
    {
        let (s, e) = span(data, m);
        edits[0] = Some((s, e, public_model.json()));
    }
    if !include_usage && let Some(u) = view.usage {
        let Some((s, e)) = member_span(data, "usage", u) else {
            return Ok(None);
        };
        edits[1] = Some((s, e, ""));
    }
    if let [Some(a), Some(b)] = edits
        && b.0 < a.0
    {
        edits = [Some(b), Some(a)];
    }
    let mut line =
        String::with_capacity(data.len() + prefix.len() + suffix.len() + public_model.json().len());
    line.push_str(prefix);
    let mut at = 0;
    for (s, e, with) in edits.into_iter().flatten() {
        if s < at {
            return Ok(None);
        }
        line.push_str(&data[at..s]);
        line.push_str(with);
        at = e;
    }
    line.push_str(&data[at..]);
    line.push_str(suffix);
    Ok(Some(Read {
        generated: view.generated,
        usage,
        has_choices: view.has_choices,
        line,
    }))
}

/// Generated bytes of each choice's output that has any (text, reasoning, tool calls).
fn generated<'c, 'a: 'c>(
    choices: impl Iterator<Item = &'c Obj<Choice<'a>>>,
    output: Output,
) -> Generated {
    let mut generated = Generated::default();
    for Obj(c) in choices {
        let d = match output {
            Output::Delta => &c.delta,
            Output::Message => &c.message,
        };
        let Some(Obj(d)) = d else {
            continue;
        };
        let mut n = d.content.as_ref().map_or(0, |s| s.len())
            + d.reasoning_content.as_ref().map_or(0, |s| s.len());
        for t in d.tool_calls.iter().flatten() {
            if let Some(Obj(f)) = &t.0.function {
                n += f.name.as_ref().map_or(0, |s| s.len())
                    + f.arguments.as_ref().map_or(0, |s| s.len());
            }
        }
        generated.push(n);
    }
    generated
}

/// Byte span of `part`, a sub-slice of `whole`.
fn span(whole: &str, part: &str) -> (usize, usize) {
    let s = part.as_ptr() as usize - whole.as_ptr() as usize;
    (s, s + part.len())
}

/// The span that removes the member `"key": value` (whose value is the sub-slice `value` of
/// `obj`) together with one adjoining comma, so that the object stays valid JSON. `None` if the
/// text around it is not the plain shape expected (escaped key, comments…).
fn member_span(obj: &str, key: &str, value: &str) -> Option<(usize, usize)> {
    let (vs, ve) = span(obj, value);
    let b = obj.as_bytes();
    let skip_ws_back = |mut i: usize| {
        while i > 0 && b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    let skip_ws_fwd = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let colon = skip_ws_back(vs);
    if colon == 0 || b[colon - 1] != b':' {
        return None;
    }
    let key_end = skip_ws_back(colon - 1);
    // `"key"`, compared in place (a `format!` here was ~600 instructions per chunk).
    let key_start = key_end.checked_sub(key.len() + 2)?;
    let quoted = obj.get(key_start..key_end)?.as_bytes();
    if quoted[0] != b'"'
        || quoted[quoted.len() - 1] != b'"'
        || &quoted[1..=key.len()] != key.as_bytes()
    {
        return None;
    }
    let before = skip_ws_back(key_start);
    let after = skip_ws_fwd(ve);
    match (b.get(before.wrapping_sub(1)), b.get(after)) {
        // `…, "usage": null` (not first): take the comma before it.
        (Some(b','), _) => Some((before - 1, ve)),
        // `{"usage": null, …`: take the comma after it.
        (Some(b'{'), Some(b',')) => Some((key_start, after + 1)),
        // `{"usage": null}`: the only member.
        (Some(b'{'), Some(b'}')) => Some((key_start, ve)),
        _ => None,
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    fn line(d: &str, model: &str, include: bool) -> String {
        read(d, &PublicModel::new(model), include)
            .unwrap()
            .unwrap()
            .line
    }

    #[test]
    fn untouched_chunk_is_passed_verbatim() {
        let d = r#"{"id":"a","model":"m","choices":[{"index":0,"delta":{"content":"hé"}}]}"#;
        let r = read(d, &PublicModel::new("m"), false).unwrap().unwrap();
        assert_eq!(r.line, format!("data: {d}\n\n"));
        assert_eq!(r.generated, Generated::one(3));
        assert!(r.usage.is_none());
    }

    #[test]
    fn model_is_renamed_and_null_usage_dropped() {
        let d = r#"{"id":"a","model":"up","choices":[],"usage":null}"#;
        assert_eq!(
            line(d, "pub", false),
            "data: {\"id\":\"a\",\"model\":\"pub\",\"choices\":[]}\n\n"
        );
        assert_eq!(
            line(d, "pub", true),
            "data: {\"id\":\"a\",\"model\":\"pub\",\"choices\":[],\"usage\":null}\n\n"
        );
        // First member, with spaces; only member.
        let d = r#"{ "usage" : null , "model":"up"}"#;
        assert_eq!(line(d, "up", false), "data: {  \"model\":\"up\"}\n\n");
        assert_eq!(line(r#"{"usage":null}"#, "x", false), "data: {}\n\n");
    }

    #[test]
    fn usage_is_read_and_hidden_when_not_asked() {
        let d = r#"{"model":"m","choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"prompt_cache_hit_tokens":4,"prompt_cache_miss_tokens":6}}"#;
        let r = read(d, &PublicModel::new("m"), false).unwrap().unwrap();
        let u = r.usage.unwrap();
        assert_eq!((u.prompt, u.hit, u.miss, u.completion), (10, 4, 6, 3));
        let v: serde_json::Value =
            serde_json::from_str(r.line.trim_start_matches("data: ").trim()).unwrap();
        assert!(v.get("usage").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let r = read(d, &PublicModel::new("m"), true).unwrap().unwrap();
        assert_eq!(r.line, format!("data: {d}\n\n"));
    }

    #[test]
    fn reasoning_and_tool_calls_count_as_output() {
        let d = r#"{"choices":[{"delta":{"reasoning_content":"ab\n","tool_calls":[{"function":{"name":"f","arguments":"{\"q\":1}"}}]}},{"delta":{"content":""}}]}"#;
        let r = read(d, &PublicModel::new("m"), true).unwrap().unwrap();
        assert_eq!(r.generated, Generated::one(3 + 1 + 7));
    }

    #[test]
    fn whole_answer_keeps_usage_and_renames() {
        let d = r#"{"id":"a","model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"hello","reasoning_content":"hm"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let r = answer(d, &PublicModel::new("pub")).unwrap();
        assert!(r.has_choices);
        assert_eq!(r.generated, Generated::one(7));
        assert_eq!(r.usage.unwrap().completion, 2);
        assert_eq!(r.line, d.replace(r#""model":"up""#, r#""model":"pub""#));
        assert!(
            !answer(r#"{"id":"a"}"#, &PublicModel::new("pub"))
                .unwrap()
                .has_choices
        );
    }

    #[test]
    fn errors_and_garbage() {
        assert_eq!(
            read(
                r#"{"error":{"message":"x"}}"#,
                &PublicModel::new("m"),
                false
            )
            .err(),
            Some(UpstreamErrorEvent)
        );
        assert!(
            read("not json", &PublicModel::new("m"), false)
                .unwrap()
                .is_none()
        );
        assert!(
            read(r#"{"choices":7}"#, &PublicModel::new("m"), false)
                .unwrap()
                .is_none()
        );
    }

    /// Text the tree refuses — a lone surrogate, a number out of `f64`'s range — in a member
    /// the readings skip is left to the tree (which refuses it), not relayed as it came; the
    /// scanner gives up on such text, and so must the serde view behind it.
    #[test]
    fn what_the_tree_refuses_goes_to_the_tree() {
        let m = PublicModel::new("pub");
        for bad in [r#""id":"\udcff""#, r#""x":1e400"#, r#""x":[1e400]"#] {
            for repeat in ["", r#""model":"up","#] {
                let d = format!(
                    r#"{{{bad},{repeat}"model":"up","choices":[{{"index":0,"delta":{{"content":"hi"}}}}],"usage":null}}"#
                );
                assert!(read(&d, &m, false).unwrap().is_none(), "{d}");
                let d = d.replace("delta", "message");
                assert!(answer(&d, &m).is_none(), "{d}");
            }
        }
    }

    #[test]
    fn same_result_as_the_tree_rewrite() {
        // Every output must parse to the same JSON the tree-based rewrite would produce.
        for (d, include) in [
            (
                r#"{"id":"a","model":"up","choices":[{"delta":{"content":"x"}}],"usage":null}"#,
                false,
            ),
            (
                r#"{"usage":null,"id":"a","model":"up","choices":[]}"#,
                false,
            ),
            (
                r#"{"id":"a","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
                false,
            ),
            (
                r#"{"id":"a","model":"up","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
                true,
            ),
        ] {
            let fast = line(d, "pub", include);
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(d).unwrap();
            if !include {
                v.remove("usage");
            }
            if v.contains_key("model") {
                v.insert("model".into(), "pub".into());
            }
            let got: serde_json::Value =
                serde_json::from_str(fast.trim_start_matches("data: ").trim()).unwrap();
            assert_eq!(got, serde_json::Value::Object(v), "{d}");
        }
    }
}
