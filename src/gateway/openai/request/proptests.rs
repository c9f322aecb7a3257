//! Properties of the chat request parser and of DeepSeek's usage reading (issue 11): arbitrary
//! bytes and arbitrary JSON never panic; every valid request parses to what it says, with a
//! prompt estimate under the hold's upper bound; the upstream body keeps every client field but
//! the ones the gateway owns; usage is read with absent counts as zero and a consistent split.
//! And the cursor's walks against serde's readings: the top-level members (names, texts,
//! places) and the compact length of tools, as written and with edits that may break them.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{ChatRequest, usage_from_json};
use crate::gateway::dialect::ClientRequest;
use crate::gateway::json::members;
use crate::proptest_support::{
    every_edit, json, json_sized, plain_name, style, text, write, write_plain_names,
};

/// The keys the parser reads, for arbitrary JSON to hit them often.
pub(super) const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "text",
    "reasoning_content",
    "tool_calls",
    "tools",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "n",
];

/// What a generated valid request asked for.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    pub(super) body: Map<String, Value>,
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
    n: u64,
}

/// A field that is absent, null, or has a value.
fn maybe<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<Option<T>>> {
    prop_oneof![Just(None), Just(Some(None)), s.prop_map(|v| Some(Some(v)))]
}

fn content() -> impl Strategy<Value = Option<Value>> {
    let part = prop_oneof![
        text(20).prop_map(|t| json!({"type": "text", "text": t})),
        text(10).prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
        part(),
    ];
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        text(40).prop_map(|t| Some(Value::String(t))),
        prop::collection::vec(part, 0..4).prop_map(|p| Some(Value::Array(p))),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            prop::sample::select(vec!["system", "user", "assistant", "tool"])
                .prop_map(String::from),
            text(8),
        ],
        content(),
        prop::option::of(text(20)),
        prop::option::of(part()),
        prop::option::of(text(8)),
    )
        .prop_map(|(role, content, reasoning, tool_calls, name)| {
            let mut m = Map::new();
            m.insert("role".into(), Value::String(role));
            if let Some(c) = content {
                m.insert("content".into(), c);
            }
            if let Some(r) = reasoning {
                m.insert("reasoning_content".into(), Value::String(r));
            }
            if let Some(t) = tool_calls {
                m.insert("tool_calls".into(), t);
            }
            if let Some(n) = name {
                m.insert("name".into(), Value::String(n));
            }
            Value::Object(m)
        })
}

/// Client fields the gateway passes on untouched (and `user_id`, which it owns).
fn extra_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "temperature",
            "top_p",
            "logit_bias",
            "stop",
            "user_id",
            "seed"
        ])
        .prop_map(String::from),
        text(8).prop_filter(
            "not a field the parser reads, nor one in another case",
            |k| {
                !KEYS.contains(&k.as_str())
                    && crate::gateway::json::case_twin(k, super::OWNED).is_none()
            }
        ),
    ]
}

pub(super) fn valid() -> impl Strategy<Value = Asked> {
    (
        (
            prop_oneof![Just("deepseek-v4-flash".to_string()), text(16)]
                .prop_filter("non-empty", |m| !m.is_empty()),
            prop::collection::vec(message(), 1..5),
            prop::option::of(tools()),
            maybe(any::<bool>()),
            maybe((maybe(any::<bool>()), part())),
        ),
        (
            maybe(prop_oneof![1u64..100_000, 1..=u64::MAX]),
            maybe(1u64..=u64::MAX),
            maybe(1u64..=16),
            prop::collection::vec((extra_key(), part()), 0..4),
        ),
    )
        .prop_map(
            |((model, messages, tools, stream, opts), (max, max_c, n, extra))| {
                let mut body = Map::new();
                for (k, v) in extra {
                    body.insert(k, v);
                }
                body.insert("model".into(), Value::String(model.clone()));
                body.insert("messages".into(), Value::Array(messages));
                if let Some(t) = tools {
                    body.insert("tools".into(), t);
                }
                let set = |body: &mut Map<String, Value>, k: &str, v: Option<Option<Value>>| {
                    if let Some(v) = v {
                        body.insert(k.into(), v.unwrap_or(Value::Null));
                    }
                };
                set(&mut body, "stream", stream.map(|s| s.map(Value::Bool)));
                let include_usage = matches!(opts, Some(Some((Some(Some(true)), _))));
                set(
                    &mut body,
                    "stream_options",
                    opts.map(|o| {
                        o.map(|(inc, other)| {
                            let mut o = match other {
                                Value::Object(o) => o,
                                _ => Map::new(),
                            };
                            o.remove("include_usage");
                            if let Some(inc) = inc {
                                o.insert(
                                    "include_usage".into(),
                                    inc.map_or(Value::Null, Value::Bool),
                                );
                            }
                            Value::Object(o)
                        })
                    }),
                );
                set(&mut body, "max_tokens", max.map(|m| m.map(Value::from)));
                set(
                    &mut body,
                    "max_completion_tokens",
                    max_c.map(|m| m.map(Value::from)),
                );
                set(&mut body, "n", n.map(|m| m.map(Value::from)));
                Asked {
                    body,
                    model,
                    stream: matches!(stream, Some(Some(true))),
                    include_usage,
                    max_tokens: max.flatten().or(max_c.flatten()),
                    n: n.flatten().unwrap_or(1),
                }
            },
        )
}

/// A usage field: absent, null, a count, or a value that is not a count.
fn count() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => (0u64..1_000_000).prop_map(|n| Some(Value::from(n))),
        1 => any::<u64>().prop_map(|n| Some(Value::from(n))),
        1 => prop_oneof![Just(json!(-1)), Just(json!(1.5)), Just(json!("7")), Just(json!(5.0))]
            .prop_map(Some),
    ]
}

/// A small piece of arbitrary JSON, for the parts of a generated request.
fn part() -> impl Strategy<Value = Value> {
    json_sized(KEYS, 2, 8)
}

/// A tool list as a request may carry it: a list of anything, or null.
fn tools() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop::collection::vec(part(), 0..4).prop_map(Value::Array)
    ]
}

/// Members of a request put in again, of the wrong type, or behind an escaped name; with
/// [`JSON_EDITS`], the edits the top-level walk and the quick reading are tried with.
pub(super) const MEMBER_EDITS: &[&str] = &[
    "\"model\":\"m\",",
    "\"stream\":true,",
    "\"n\":2,",
    "\"messages\":[],",
    "\"mod\\u0065l\":",
    "\"role\":1,",
    "\"content\":5,",
    "\"content\":[{\"text\":3},\"x\"],",
    "\"reasoning_content\":{},",
    "\"tool_calls\":[1.5],",
    "\"tool_calls\":null,",
    "\"tools\":\"x\",",
    "\"tools\":{},",
    "\"max_tokens\":0,",
    "\"max_completion_tokens\":7,",
    "\"stream_options\":[],",
    "\"include_usage\":1,",
    "\"n\":17,",
];

/// Where the quick reading takes `text`, the tree takes it too, with the same fields, estimate
/// and upstream body (as a JSON object, no member twice).
fn agrees_with_the_tree(text: &str) -> Result<(), TestCaseError> {
    let raw = bytes::Bytes::from(text.to_owned());
    let tree = ChatRequest::parse_tree(&raw);
    if super::view::parse(&raw).is_none() {
        return Ok(());
    }
    let tree = match tree {
        Ok(t) => t,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the tree refused ({e:?}) what the quick reading took: {text}"
            )));
        }
    };
    let quick = ChatRequest::parse_bytes(&raw).unwrap();
    prop_assert!(matches!(quick.body, super::Body::View(_)));
    prop_assert_eq!(
        (
            &quick.model,
            quick.stream,
            quick.include_usage,
            quick.max_tokens,
            quick.n
        ),
        (
            &tree.model,
            tree.stream,
            tree.include_usage,
            tree.max_tokens,
            tree.n
        ),
        "{}",
        text
    );
    prop_assert_eq!(
        (quick.prompt_estimate, quick.prompt_upper_bound),
        (tree.prompt_estimate, tree.prompt_upper_bound),
        "{}",
        text
    );
    let q = quick.upstream_body("up", "key_x", 7);
    let names = members::member_names(&q).unwrap();
    prop_assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        names.len(),
        "a member twice: {:?}",
        names
    );
    let q: Value = serde_json::from_slice(&q).unwrap();
    let t: Value = serde_json::from_slice(&tree.upstream_body("up", "key_x", 7)).unwrap();
    prop_assert_eq!(q, t, "{}", text);
    Ok(())
}

/// Where the cursor counts `text`'s compact length, it is the tree's.
fn compact_as_tree(text: &str) -> Result<(), TestCaseError> {
    if let Some(walked) = members::compact_len_walked(text) {
        prop_assert_eq!(Some(walked), members::compact_len_of_tree(text), "{}", text);
    }
    Ok(())
}

/// Where the cursor walks `text`'s top level, serde reads the same members at the same places.
fn walked_as_serde(text: &str) -> Result<(), TestCaseError> {
    let raw = text.as_bytes();
    if let Some(walked) = members::top_walked(raw) {
        let at = |all: &[(std::borrow::Cow<'_, str>, &str)]| -> Vec<(String, String, usize)> {
            all.iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        v.to_string(),
                        v.as_ptr() as usize - raw.as_ptr() as usize,
                    )
                })
                .collect()
        };
        let serde = members::top_by_serde(raw);
        prop_assert_eq!(Some(at(&walked)), serde.as_deref().map(at), "{}", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid request, written in any style, parses to what it asked for, and its prompt
    /// estimate is under the upper bound the hold is taken on.
    #[test]
    fn valid_requests_parse_with_the_estimate_under_the_bound(a in valid(), st in style()) {
        let raw = write(&Value::Object(a.body.clone()), &st);
        let r = ChatRequest::parse(raw.as_bytes()).unwrap();
        prop_assert_eq!(&r.model, &a.model);
        prop_assert_eq!(
            (r.stream, r.include_usage, r.max_tokens, r.n),
            (a.stream, a.include_usage, a.max_tokens, a.n)
        );
        prop_assert_eq!(r.prompt_upper_bound, raw.len() as u64 + super::PROMPT_BOUND_SLACK);
        prop_assert!(r.prompt_estimate <= r.prompt_upper_bound);
    }

    /// The upstream body is a JSON object with every client field as sent, except the ones
    /// the gateway owns: the model, `user_id`, `max_tokens` (and no `max_completion_tokens`),
    /// and on a stream `stream_options.include_usage` (its other options kept).
    #[test]
    fn the_upstream_body_keeps_every_client_field(
        a in valid(),
        up_model in text(12),
        user_id in text(12),
        max_tokens in 1u64..=u64::MAX,
    ) {
        let raw = serde_json::to_vec(&a.body).unwrap();
        let r = ChatRequest::parse(&raw).unwrap();
        let up: Map<String, Value> =
            serde_json::from_slice(&r.upstream_body(&up_model, &user_id, max_tokens)).unwrap();
        let owned = ["model", "user_id", "max_tokens", "max_completion_tokens", "stream_options"];
        for (k, v) in &a.body {
            if !owned.contains(&k.as_str()) || (k == "stream_options" && !a.stream) {
                prop_assert_eq!(up.get(k), Some(v), "{}", k);
            }
        }
        prop_assert_eq!(&up["model"], &Value::String(up_model));
        prop_assert_eq!(&up["user_id"], &Value::String(user_id));
        prop_assert_eq!(&up["max_tokens"], &Value::from(max_tokens));
        prop_assert!(!up.contains_key("max_completion_tokens"));
        if a.stream {
            let opts = up["stream_options"].as_object().unwrap();
            prop_assert_eq!(&opts["include_usage"], &Value::Bool(true));
            if let Some(Value::Object(sent)) = a.body.get("stream_options") {
                for (k, v) in sent.iter().filter(|(k, _)| *k != "include_usage") {
                    prop_assert_eq!(opts.get(k), Some(v));
                }
            }
        }
        // And nothing else.
        let mut keys: BTreeSet<&str> = a.body.keys().map(String::as_str).collect();
        keys.extend(["model", "user_id", "max_tokens"]);
        keys.remove("max_completion_tokens");
        if a.stream {
            keys.insert("stream_options");
        }
        prop_assert_eq!(up.keys().map(String::as_str).collect::<BTreeSet<_>>(), keys);
    }

    /// Every valid request whose top-level names need no escape is taken by the quick reading
    /// (so the test below compares something), whatever its style of writing otherwise (a
    /// body with an escaped name goes through the tree).
    #[test]
    fn valid_requests_take_the_quick_reading(a in valid(), st in style()) {
        prop_assume!(a.body.keys().all(|k| plain_name(k)));
        let raw = bytes::Bytes::from(write_plain_names(&Value::Object(a.body.clone()), &st));
        prop_assert!(super::view::parse(&raw).is_some(), "{:?}", raw);
    }

    /// The quick reading and the tree agree: on every field, the estimate, and the upstream
    /// body (as a JSON object); and where the tree refuses, the quick reading does not take
    /// the request (so the tree gives the error).
    #[test]
    fn the_quick_reading_agrees_with_the_tree(
        body in prop_oneof![valid().prop_map(|a| Value::Object(a.body)), json(KEYS)],
        st in style(),
        stream_twice in any::<bool>(),
        plain in any::<bool>(),
    ) {
        // Half the bodies with their names as clients write them (see below).
        let mut text = if plain { write_plain_names(&body, &st) } else { write(&body, &st) };
        // A repeated member: the last value counts, as in a JSON map.
        if stream_twice && text.trim_end().ends_with('}') && body.as_object().is_some_and(|o| !o.is_empty()) {
            let end = text.rfind('}').unwrap();
            text.replace_range(end.., r#","stream":true,"n":2}"#);
        }
        agrees_with_the_tree(&text)?;
    }

    /// The top-level members as the cursor walks them are serde's (names, value texts, and
    /// where each value starts), wherever the cursor answers: on requests and arbitrary JSON,
    /// as written and with an edit that may break them tried at every place.
    #[test]
    fn the_walked_members_are_serdes(
        body in prop_oneof![3 => valid().prop_map(|a| Value::Object(a.body)), 1 => json(KEYS)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
    ) {
        let text = write(&body, &st);
        every_edit(&text, at, cut, MEMBER_EDITS, walked_as_serde)?;
    }

    /// The compact length the cursor counts is the length of the text serde_json writes for
    /// the same JSON, wherever the cursor answers: on tool lists and arbitrary JSON, as
    /// written and with an edit tried at every place.
    #[test]
    fn the_walked_compact_length_is_the_trees(
        v in prop_oneof![1 => json(KEYS), 1 => prop::collection::vec(json_sized(KEYS, 3, 24), 0..4).prop_map(Value::Array)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        members in prop::collection::vec((prop::sample::select(vec!["a", "b", "type"]), json_sized(KEYS, 2, 8)), 0..5),
    ) {
        let text = write(&v, &st);
        every_edit(&text, at, cut, &[], compact_as_tree)?;
        // An object that may name a key twice (a map cannot, so it is written by hand).
        let members: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\": {}", write(v, &st)))
            .collect();
        compact_as_tree(&format!("{{{}}}", members.join(",")))?;
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ChatRequest::parse(&raw);
    }

    /// Arbitrary JSON never panics; whatever parses keeps its estimate under the bound and
    /// gives an upstream body that is a JSON object.
    #[test]
    fn arbitrary_json_never_panics(v in json(KEYS), st in style()) {
        let raw = write(&v, &st);
        if let Ok(r) = ChatRequest::parse(raw.as_bytes()) {
            prop_assert!(r.prompt_estimate <= r.prompt_upper_bound);
            let up = r.upstream_body("m", "key_x", 1);
            prop_assert!(serde_json::from_slice::<Map<String, Value>>(&up).is_ok());
        }
    }

    /// Usage: `None` without the output count or any prompt count; the split is upstream's
    /// when it sends both halves (what the hits leave of the prompt at least the misses), else
    /// derived so that hit + miss = prompt; absent reasoning counts as zero.
    #[test]
    fn usage_reads_counts_with_a_consistent_split(
        fields in prop::collection::vec(count(), 5),
        details in prop::bool::ANY,
        junk in json(KEYS),
    ) {
        let names = [
            "prompt_tokens",
            "completion_tokens",
            "prompt_cache_hit_tokens",
            "prompt_cache_miss_tokens",
            "reasoning_tokens",
        ];
        let mut obj = Map::new();
        let mut det = Map::new();
        for (name, f) in names.iter().zip(&fields) {
            if let Some(v) = f {
                if *name == "reasoning_tokens" {
                    det.insert((*name).into(), v.clone());
                } else {
                    obj.insert((*name).into(), v.clone());
                }
            }
        }
        if details {
            obj.insert("completion_tokens_details".into(), Value::Object(det));
        }
        // A count: a non-negative integer, or a float with a whole value.
        let n = |i: usize| {
            fields[i].as_ref().and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_f64().and_then(crate::gateway::json::whole_count))
            })
        };
        let got = usage_from_json(&Value::Object(obj));
        // The prompt: its count, else the split's sum; no usage without the output count or
        // anything about the prompt.
        let prompt = match (n(0), n(2), n(3)) {
            (Some(p), _, _) => Some(p),
            (None, None, None) => None,
            (None, h, m) => Some(h.unwrap_or(0).saturating_add(m.unwrap_or(0))),
        };
        match (prompt, n(1)) {
            (Some(prompt), Some(completion)) => {
                let u = got.unwrap();
                prop_assert_eq!(u.completion, completion);
                prop_assert_eq!(u.reasoning, if details { n(4).unwrap_or(0) } else { 0 });
                match (n(2), n(3)) {
                    // Upstream's split, with no prompt token left out of it.
                    (Some(h), Some(m)) => {
                        prop_assert_eq!((u.hit, u.miss), (h, m.max(prompt.saturating_sub(h))));
                        prop_assert_eq!(u.prompt, prompt.max(h.saturating_add(u.miss)));
                    }
                    _ => {
                        prop_assert_eq!(u.prompt, prompt);
                        prop_assert!(u.hit <= prompt);
                        prop_assert_eq!(u.hit + u.miss, prompt);
                    }
                }
                if n(2).is_none() && n(3).is_none() {
                    prop_assert_eq!((u.hit, u.miss), (0, prompt));
                }
            }
            _ => prop_assert_eq!(got, None),
        }
        // Anything else: no panic.
        let _ = usage_from_json(&junk);
    }
}

/// Found by `usage_reads_counts_with_a_consistent_split`: with only the miss count, a miss
/// count above the prompt was billed as is (the hit-only case was already capped at the
/// prompt), so hit + miss exceeded the prompt upstream reported.
#[test]
fn a_lone_miss_count_is_capped_at_the_prompt() {
    let u = usage_from_json(
        &json!({"prompt_tokens": 10, "completion_tokens": 0, "prompt_cache_miss_tokens": 25}),
    )
    .unwrap();
    assert_eq!((u.prompt, u.hit, u.miss), (10, 0, 10));
}

/// Found by `the_upstream_body_keeps_every_client_field`: serde_json's default float parsing
/// is not always correctly rounded, so a client's number could reach upstream one unit in
/// the last place off (`2.2966094623938998e67` became `2.2966094623939e67`); the
/// `float_roundtrip` feature reads every float to the nearest double.
#[test]
fn client_numbers_reach_upstream_unchanged() {
    let t: f64 = 2.2966094623938998e67;
    let raw = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"temperature":{}}}"#,
        serde_json::to_string(&t).unwrap()
    );
    let r = ChatRequest::parse(raw.as_bytes()).unwrap();
    let up = String::from_utf8(r.upstream_body("m", "k", 1)).unwrap();
    let sent = format!(r#""temperature":{}"#, serde_json::to_string(&t).unwrap());
    assert!(up.contains(&sent), "{up} lacks {sent}");
}

/// A tool list as agents send it (descriptions with quotes, line breaks and non-ASCII text,
/// integer bounds, nested schemas) is counted by the cursor, not the tree, and to the byte.
#[test]
fn a_tool_list_is_counted_without_a_tree() {
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Reads a file.\nUse \"offset\" for long files — caché.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 0},
                    "flags": {"type": "array", "items": {"enum": [true, false, null]}}
                },
                "required": ["path"]
            }
        }
    }]);
    // Compact, and spread over lines (the writer spells controls as `\u00XX`).
    for st in [[5u8], [1]] {
        let text = write(&tools, &st);
        let walked = members::compact_len_walked(&text);
        assert_eq!(walked, Some(tools.to_string().len() as u64), "{text}");
        assert_eq!(walked, members::compact_len_of_tree(&text));
    }
    // Short escapes, an escaped slash, a character escaped that needs none.
    let text = r#"[{"d": "a\nb\t\"c\"\/d\u00e9\u0001\ud83d\ude00", "n": -12}]"#;
    assert_eq!(
        members::compact_len_walked(text),
        members::compact_len_of_tree(text)
    );
    assert!(members::compact_len_walked(text).is_some());
}

/// A key repeated in one object (the tree keeps one) is found at every length, as the text's
/// last key too (where fewer than eight bytes follow it); keys that only share a length, their
/// first eight bytes or a prefix are not taken for repeats.
#[test]
fn repeated_keys_are_found_at_every_length() {
    for n in 0..=12 {
        let key = "k".repeat(n);
        for text in [
            format!(r#"{{"{key}":1,"{key}":2}}"#),
            format!(r#"{{"{key}":1,"x":[],"{key}":{{}}}}"#),
            format!(r#"[{{"{key}":1}},{{"{key}":2,"{key}":3}}]"#),
        ] {
            assert_eq!(members::compact_len_walked(&text), None, "{text}");
        }
        for text in [
            format!(r#"{{"{key}a":1,"{key}b":2}}"#),
            format!(r#"{{"{key}":1,"{key}k":2}}"#),
            format!(r#"{{"a{key}":1,"b{key}":2,"{key}":3}}"#),
        ] {
            let walked = members::compact_len_walked(&text);
            assert!(walked.is_some(), "{text}");
            assert_eq!(walked, members::compact_len_of_tree(&text), "{text}");
        }
    }
}

proptest! {
    // Each case reads its body again with ~60 edits at every place: 32 cases are thousands.
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The same agreement with an edit that may break the body tried at every place (JSON's
    /// tokens, escapes and numbers; the members the reading reads, again or escaped): wherever
    /// the quick reading still takes the body, the tree takes it too and reads the same.
    #[test]
    fn the_quick_reading_agrees_with_the_tree_after_any_edit(
        body in prop_oneof![3 => valid().prop_map(|a| Value::Object(a.body)), 1 => json(KEYS)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        plain in any::<bool>(),
    ) {
        // Half the bodies with their names as clients write them: the quick reading gives up
        // on an escaped top-level name, and `write` escapes one character in four.
        let text = if plain { write_plain_names(&body, &st) } else { write(&body, &st) };
        every_edit(&text, at, cut, MEMBER_EDITS, agrees_with_the_tree)?;
    }
}
