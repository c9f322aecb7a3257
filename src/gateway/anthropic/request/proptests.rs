//! Properties of the Messages request parser and `count_tokens` (issue 11): arbitrary bytes
//! and arbitrary JSON never panic; every valid request parses to what it says, with a prompt
//! estimate under the hold's upper bound and the same estimate from `count_tokens`; the
//! upstream body keeps every client field but the model, `max_tokens` and
//! `metadata.user_id`; the quick reading (`view.rs`) takes every valid request written plainly,
//! and wherever it takes a body — valid, arbitrary, or with an edit that may break it at any
//! place — the tree takes it too, with the same fields, estimate and upstream body.

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Body, MessagesRequest, PROMPT_BOUND_SLACK, count_tokens, count_tokens_tree};
use crate::gateway::dialect::ClientRequest;
use crate::proptest_support::{
    every_edit, json, json_sized, plain_names, style, text, write, write_plain_names,
};

/// The keys the parser reads, for arbitrary JSON to hit them often.
pub(super) const KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "role",
    "content",
    "type",
    "text",
    "thinking",
    "tool_use",
    "tool_result",
    "name",
    "input",
    "system",
    "tools",
    "stream",
    "metadata",
    "user_id",
];

/// What a generated valid request asked for.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    pub(super) body: Map<String, Value>,
    model: String,
    stream: bool,
    max_tokens: u64,
}

fn block() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text(20).prop_map(|t| json!({"type": "text", "text": t})),
        text(20).prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        (text(8), part())
            .prop_map(|(n, i)| json!({"type": "tool_use", "id": "t", "name": n, "input": i})),
        text(10).prop_map(|d| json!({"type": "image", "source": {"type": "base64", "data": d}})),
        part(),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            text(20).prop_map(|t| json!({"type": "tool_result", "tool_use_id": "t", "content": t})),
            prop::collection::vec(inner, 0..3)
                .prop_map(|c| json!({"type": "tool_result", "tool_use_id": "t", "content": c})),
        ]
    })
}

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        text(40).prop_map(Value::String),
        prop::collection::vec(block(), 0..4).prop_map(Value::Array),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            prop::sample::select(vec!["user", "assistant"]).prop_map(String::from),
            text(8),
        ],
        content(),
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}))
}

/// Client fields passed on untouched.
fn extra_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "temperature",
            "top_k",
            "thinking",
            "stop_sequences",
            "user_id"
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
        prop_oneof![Just("claude-sonnet-4".to_string()), text(16)]
            .prop_filter("non-empty", |m| !m.is_empty()),
        prop_oneof![1u64..100_000, 1..=u64::MAX],
        prop::collection::vec(message(), 1..4),
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            content().prop_map(Some)
        ],
        prop::option::of(tools()),
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<bool>().prop_map(|b| Some(Value::Bool(b)))
        ],
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            prop::collection::vec(
                (prop_oneof![Just("user_id".to_string()), text(6)], part()),
                0..3
            )
            .prop_map(|kv| Some(Value::Object(kv.into_iter().collect()))),
        ],
        prop::collection::vec((extra_key(), part()), 0..4),
    )
        .prop_map(
            |(model, max_tokens, messages, system, tools, stream, metadata, extra)| {
                let mut body: Map<String, Value> = extra.into_iter().collect();
                body.insert("model".into(), Value::String(model.clone()));
                body.insert("max_tokens".into(), Value::from(max_tokens));
                body.insert("messages".into(), Value::Array(messages));
                for (k, v) in [
                    ("system", system),
                    ("tools", tools),
                    ("stream", stream),
                    ("metadata", metadata),
                ] {
                    if let Some(v) = v {
                        body.insert(k.into(), v);
                    }
                }
                Asked {
                    stream: body.get("stream") == Some(&Value::Bool(true)),
                    body,
                    model,
                    max_tokens,
                }
            },
        )
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid request, written in any style, parses to what it asked for; its estimate is
    /// under the hold's bound, and `count_tokens` answers the same estimate.
    #[test]
    fn valid_requests_parse_with_the_estimate_under_the_bound(a in valid(), st in style()) {
        let raw = write(&Value::Object(a.body.clone()), &st);
        let r = MessagesRequest::parse(&Bytes::from(raw.clone())).unwrap();
        prop_assert_eq!((&r.model, r.stream, r.max_tokens), (&a.model, a.stream, a.max_tokens));
        prop_assert_eq!(r.prompt_upper_bound, raw.len() as u64 + PROMPT_BOUND_SLACK);
        prop_assert!(r.prompt_estimate <= r.prompt_upper_bound);
        prop_assert_eq!(count_tokens(&Bytes::from(raw.clone())).unwrap(), (a.model, r.prompt_estimate));
    }

    /// The upstream body has every client field as sent, except the model, `max_tokens` and
    /// `metadata.user_id` (the client's other metadata kept) and the members left out
    /// (`user_id`, OpenAI's `n` and `max_completion_tokens`), and nothing else.
    #[test]
    fn the_upstream_body_keeps_every_client_field(
        a in valid(),
        up_model in text(12),
        user_id in text(12),
        max_tokens in 1u64..=u64::MAX,
    ) {
        let r = MessagesRequest::parse(&Bytes::from(serde_json::to_vec(&a.body).unwrap())).unwrap();
        let up: Map<String, Value> =
            serde_json::from_slice(&r.upstream_body(&up_model, &user_id, max_tokens)).unwrap();
        let dropped = super::NOT_ANTHROPIC;
        for (k, v) in a.body.iter().filter(|(k, _)| {
            !["model", "max_tokens", "metadata", "user_id"].contains(&k.as_str())
                && !dropped.contains(&k.as_str())
        }) {
            prop_assert_eq!(up.get(k), Some(v), "{}", k);
        }
        prop_assert_eq!(&up["model"], &Value::String(up_model));
        prop_assert_eq!(&up["max_tokens"], &Value::from(max_tokens));
        let mut metadata = match a.body.get("metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        metadata.insert("user_id".into(), Value::String(user_id));
        prop_assert_eq!(&up["metadata"], &Value::Object(metadata));
        let mut keys: BTreeSet<&str> = a.body.keys().map(String::as_str).collect();
        keys.insert("metadata");
        // A client's top-level `user_id` never reaches DeepSeek: the key's is in `metadata`.
        keys.remove("user_id");
        for k in dropped {
            prop_assert!(!up.contains_key(*k), "{} went upstream", k);
            keys.remove(k);
        }
        prop_assert_eq!(up.keys().map(String::as_str).collect::<BTreeSet<_>>(), keys);
    }

    /// Arbitrary bytes never panic, in either entry point.
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let raw = Bytes::from(raw);
        let _ = MessagesRequest::parse(&raw);
        let _ = count_tokens(&raw);
    }

    /// Arbitrary JSON never panics; whatever parses keeps its estimate under the bound, gets
    /// the same estimate from `count_tokens`, and an upstream body that is a JSON object.
    #[test]
    fn arbitrary_json_never_panics(v in json(KEYS), st in style()) {
        let raw = write(&v, &st);
        let counted = count_tokens(&Bytes::from(raw.clone()));
        if let Ok(r) = MessagesRequest::parse(&Bytes::from(raw.clone())) {
            prop_assert!(r.prompt_estimate <= r.prompt_upper_bound);
            prop_assert_eq!(counted.ok(), Some((r.model.clone(), r.prompt_estimate)));
            let up = r.upstream_body("m", "key_x", 1);
            prop_assert!(serde_json::from_slice::<Map<String, Value>>(&up).is_ok());
        }
    }
}

/// Members put into a body by an edit: each field the quick reading reads, of the wrong type,
/// repeated, escaped, or with a value whose compact length it cannot count.
pub(super) const MEMBER_EDITS: &[&str] = &[
    "\"role\":1,",
    "\"role\":\"x\",",
    "\"content\":5,",
    "\"content\":null,",
    "\"content\":\"abc\",",
    "\"content\":[],",
    "\"content\":[\"x\",{\"text\":\"y\"}],",
    "\"type\":\"tool_use\",",
    "\"type\":\"tool_result\",",
    "\"type\":\"thinking\",",
    "\"type\":\"text\",",
    "\"type\":\"tool\\u005fuse\",",
    "\"type\":7,",
    "\"text\":\"\\u00e9\\n\",",
    "\"text\":3,",
    "\"thinking\":\"x\",",
    "\"name\":\"n\",",
    "\"name\":[],",
    "\"input\":1.5,",
    "\"input\":{\"a\":[1,2.5e3]},",
    "\"input\":-0,",
    "\"input\":\"\\u001f\",",
    "\"system\":5,",
    "\"system\":null,",
    "\"system\":\"s\",",
    "\"tools\":[1.0],",
    "\"tools\":null,",
    "\"tools\":\"x\",",
    "\"tools\":{},",
    "\"metadata\":[],",
    "\"metadata\":{\"user_id\":1},",
    "\"stream\":1,",
    "\"stream\":true,",
    "\"max_tokens\":1.0,",
    "\"max_tokens\":0,",
    "\"max_tokens\":18446744073709551616,",
    "\"model\":\"\",",
    "\"model\":\"m\\u00e9\",",
    "\"messages\":[],",
    "\"messages\":{},",
    "\"mod\\u0065l\":\"x\",",
    "\"con\\u0074ent\":\"x\",",
];

/// Where the quick reading takes `text`, the tree takes it too, with the same model, stream
/// flag, `max_tokens`, estimate, `count_tokens` answer and upstream body (as JSON).
fn agrees_with_the_tree(text: &str) -> Result<(), TestCaseError> {
    let raw = Bytes::from(text.to_owned());
    let Some(q) = super::view::parse(&raw) else {
        return Ok(());
    };
    let counted = count_tokens_tree(&raw);
    let estimate = super::estimate(q.text_bytes, q.messages);
    prop_assert_eq!(
        counted.ok(),
        Some((q.model.clone(), estimate)),
        "count_tokens: {}",
        text
    );
    if q.max_tokens.is_none() {
        prop_assert!(MessagesRequest::parse_tree(&raw).is_err(), "{}", text);
        return Ok(());
    }
    let tree = match MessagesRequest::parse_tree(&raw) {
        Ok(t) => t,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the tree refused ({e:?}) what the quick reading took: {text}"
            )));
        }
    };
    let quick = MessagesRequest::parse(&raw).unwrap();
    prop_assert!(matches!(quick.body, Body::View(_)));
    prop_assert_eq!(
        (&quick.model, quick.stream, quick.max_tokens),
        (&tree.model, tree.stream, tree.max_tokens),
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
    let names = crate::gateway::json::members::member_names(&q).unwrap();
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every valid request whose names need no escape is taken by the quick reading (so the
    /// test below compares something), whatever its style of writing otherwise.
    #[test]
    fn valid_requests_take_the_quick_reading(a in valid(), st in style()) {
        let body = Value::Object(a.body);
        prop_assume!(plain_names(&body));
        let raw = Bytes::from(write_plain_names(&body, &st));
        let q = super::view::parse(&raw);
        prop_assert!(q.as_ref().is_some_and(|q| q.max_tokens == Some(a.max_tokens)), "{:?}", raw);
    }

    /// The quick reading agrees with the tree (above) on valid requests and arbitrary JSON, as
    /// written and with an edit tried at every place: JSON's tokens, escapes and numbers, and
    /// members of every field the quick reading reads, wrong, repeated or escaped.
    #[test]
    fn the_quick_reading_agrees_with_the_tree(
        body in prop_oneof![3 => valid().prop_map(|a| Value::Object(a.body)), 1 => json(KEYS)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        plain in any::<bool>(),
    ) {
        // Half the bodies with their names as clients write them: the quick reading gives up
        // on an escaped name, and `write` escapes one character in four.
        let text = if plain { write_plain_names(&body, &st) } else { write(&body, &st) };
        every_edit(&text, at, cut, MEMBER_EDITS, agrees_with_the_tree)?;
    }
}
