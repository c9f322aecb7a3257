//! The quick reading of a whole Messages answer against the tree's: on generated answers
//! (content blocks of every kind with any `input`, usage of any shape, the model present or
//! not) and arbitrary JSON, as written and with edits that may break them at every place,
//! wherever the quick reading answers the tree answers the same usage, estimate and body (as
//! JSON); and it does answer for generated answers as DeepSeek writes them.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{read_quick, read_tree};
use crate::gateway::dialect::PublicModel;
use crate::proptest_support::{
    every_edit, json, json_sized, plain_names, style, text, write, write_plain_names,
};

/// The keys the readings read, for arbitrary JSON to hit them often.
const KEYS: &[&str] = &[
    "content",
    "text",
    "thinking",
    "input",
    "usage",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
];

/// Members put into an answer by an edit: each member read, of the wrong type or repeated.
const MEMBER_EDITS: &[&str] = &[
    "\"content\":null,",
    "\"content\":\"x\",",
    "\"content\":[{\"text\":\"ab\"}],",
    "\"text\":7,",
    "\"thinking\":\"\\u00e9\",",
    "\"input\":1.5e3,",
    "\"input\":{\"a\":-0},",
    "\"usage\":{\"output_tokens\":-1},",
    "\"usage\":{\"output_tokens\":3,\"output_tokens\":4},",
    "\"usage\":[1,2],",
    "\"usage\":null,",
    "\"model\":5,",
    "\"mod\\u0065l\":\"x\",",
];

fn block() -> impl Strategy<Value = Value> {
    prop_oneof![
        text(24).prop_map(|t| json!({"type": "text", "text": t})),
        text(24).prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        (text(8), json_sized(KEYS, 2, 8))
            .prop_map(|(n, i)| json!({"type": "tool_use", "id": "t", "name": n, "input": i})),
        json_sized(KEYS, 2, 6),
    ]
}

fn usage() -> impl Strategy<Value = Value> {
    let count =
        prop_oneof![4 => (0u64..100_000).prop_map(Value::from), 1 => json_sized(KEYS, 1, 2)];
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "other",
            ]),
            count,
        ),
        0..5,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// An answer as DeepSeek's Anthropic endpoint writes it, `model` and `usage` sometimes absent.
fn answer() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(block(), 0..4),
        prop::option::of(usage()),
        any::<bool>(),
    )
        .prop_map(|(content, usage, model)| {
            let mut a = Map::new();
            for (k, v) in [
                ("id", json!("msg_1")),
                ("type", json!("message")),
                ("role", json!("assistant")),
            ] {
                a.insert(k.into(), v);
            }
            if model {
                a.insert("model".into(), json!("deepseek-v4-flash"));
            }
            a.insert("content".into(), Value::Array(content));
            a.insert("stop_reason".into(), json!("end_turn"));
            if let Some(u) = usage {
                a.insert("usage".into(), u);
            }
            Value::Object(a)
        })
}

/// Where the quick reading answers, the tree answers the same.
fn quick_as_tree(text: &str) -> Result<(), TestCaseError> {
    let public = PublicModel::new("deepseek-v4-pro");
    let Some(q) = read_quick(&Bytes::from(text.to_owned()), &public) else {
        return Ok(());
    };
    let t = match read_tree(text.as_bytes(), &public) {
        Ok(t) => t,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the tree refused ({e}) what the quick reading took: {text}"
            )));
        }
    };
    prop_assert_eq!(
        (q.usage, q.output_estimate, q.reported),
        (t.usage, t.output_estimate, t.reported),
        "{}",
        text
    );
    let qb: Value = serde_json::from_slice(&q.body).unwrap();
    let tb: Value = serde_json::from_slice(&t.body).unwrap();
    prop_assert_eq!(qb, tb, "{}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The quick reading agrees with the tree (above) on answers and arbitrary JSON, as
    /// written and with an edit tried at every place.
    #[test]
    fn the_quick_reading_agrees_with_the_tree(
        v in prop_oneof![3 => answer(), 1 => json(KEYS)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        plain in any::<bool>(),
    ) {
        // Half with names as DeepSeek writes them: the quick reading gives up on an escaped
        // name, and `write` escapes one character in four.
        let text = if plain { write_plain_names(&v, &st) } else { write(&v, &st) };
        every_edit(&text, at, cut, MEMBER_EDITS, quick_as_tree)?;
    }

    /// The quick reading answers for answers as DeepSeek writes them (compact, plain names)
    /// whose usage holds counts, so the test above compares something.
    #[test]
    fn the_quick_reading_answers(v in answer()) {
        let counts = v.get("usage").and_then(Value::as_object).is_none_or(|u| u.values().all(Value::is_u64));
        prop_assume!(counts && plain_names(&v));
        let text = v.to_string();
        prop_assert!(read_quick(&Bytes::from(text.clone()), &PublicModel::new("m")).is_some(), "{}", text);
    }
}
