//! The event scanner (`scan.rs`) against the serde view it stands in front of: on generated
//! Messages events (every type DeepSeek sends, deltas of every kind with escaped text, any
//! whitespace) and arbitrary JSON, as written and with edits that may break them at every
//! place, it gives up or reads exactly what the view reads; and it does answer for the
//! generated events that carry no usage.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::scan::{scan, start_model};
use super::{Delta, View, start, start_tree};
use crate::proptest_support::{every_edit, json, style, text, write, write_plain_names};

/// The keys the scanner and the view read, for arbitrary JSON to hit them often.
const KEYS: &[&str] = &[
    "type",
    "delta",
    "text",
    "thinking",
    "partial_json",
    "usage",
    "message",
    "index",
    "output_tokens",
];

/// Members put into an event by an edit: each member read, repeated, of the wrong type or
/// escaped.
const MEMBER_EDITS: &[&str] = &[
    "\"type\":\"ping\",",
    "\"type\":7,",
    "\"type\":\"content_block_d\\u0065lta\",",
    "\"delta\":{},",
    "\"delta\":[\"x\"],",
    "\"delta\":null,",
    "\"text\":\"\\u00e9\\n\",",
    "\"text\":null,",
    "\"text\":3,",
    "\"thinking\":\"t\",",
    "\"partial_json\":\"{\\\"a\\\"\",",
    "\"usage\":{\"output_tokens\":3},",
    "\"usage\":null,",
    "\"message\":{},",
    "\"t\\u0065xt\":\"x\",",
    "\"model\":\"m\",",
    "\"model\":7,",
];

/// A Messages event as DeepSeek sends it (the ones with usage included, for the scanner to
/// give up on).
fn event() -> impl Strategy<Value = Value> {
    let text_delta = (0usize..4, text(24)).prop_map(|(kind, t)| {
        let delta = match kind {
            0 => json!({"type": "text_delta", "text": t}),
            1 => json!({"type": "thinking_delta", "thinking": t}),
            2 => json!({"type": "input_json_delta", "partial_json": t}),
            _ => json!({"type": "signature_delta", "signature": t}),
        };
        json!({"type": "content_block_delta", "index": 1, "delta": delta})
    });
    prop_oneof![
        4 => text_delta,
        1 => Just(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        1 => Just(json!({"type": "content_block_stop", "index": 0})),
        1 => Just(json!({"type": "ping"})),
        1 => Just(json!({"type": "message_stop"})),
        1 => (0u64..1000).prop_map(|n| json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}})),
        1 => Just(json!({"type": "message_start", "message": {"id": "m", "model": "x", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}})),
        1 => Just(json!({"type": "error", "error": {"type": "overloaded_error", "message": "x"}})),
    ]
}

/// Where the scanner reads `text`, the view reads it too: the same type, no usage, the same
/// bytes of delta text.
fn scanned_as_viewed(text: &str) -> Result<(), TestCaseError> {
    let Some(s) = scan(text) else {
        return Ok(());
    };
    let view = match serde_json::from_str::<View<'_>>(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the view refused ({e}) what the scanner read: {text}"
            )));
        }
    };
    prop_assert_eq!(s.kind, view.kind.as_ref(), "{}", text);
    prop_assert!(view.usage.is_none() && view.message.is_none(), "{}", text);
    prop_assert_eq!(
        s.delta_bytes,
        view.delta.as_ref().map_or(0, Delta::bytes),
        "{}",
        text
    );
    Ok(())
}

/// Where the scanner finds `message_start`'s model (or that there is none), the splice gives
/// the tree's rename (as JSON).
fn spliced_as_tree(text: &str) -> Result<(), TestCaseError> {
    if start_model(text).is_none() {
        return Ok(());
    }
    let spliced: Value = serde_json::from_str(&start(text, "pub\"lic").unwrap()).unwrap();
    let tree = match start_tree(text, "pub\"lic") {
        Ok(t) => t,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the tree refused ({e}) what the scanner took: {text}"
            )));
        }
    };
    prop_assert_eq!(
        spliced,
        serde_json::from_str::<Value>(&tree).unwrap(),
        "{}",
        text
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The scanner gives up or reads what the view reads, and the rename of `message_start`
    /// by splice gives the tree's, on events and arbitrary JSON, as written and with an edit
    /// tried at every place.
    #[test]
    fn the_scanner_reads_what_the_view_and_the_tree_read(
        v in prop_oneof![3 => event(), 1 => json(KEYS)],
        st in style(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        plain in any::<bool>(),
    ) {
        // Half with names as DeepSeek writes them: the scanner gives up on an escaped name,
        // and `write` escapes one character in four.
        let text = if plain { write_plain_names(&v, &st) } else { write(&v, &st) };
        every_edit(&text, at, cut, MEMBER_EDITS, |t| {
            scanned_as_viewed(t)?;
            spliced_as_tree(t)
        })?;
    }

    /// The scanner answers for every generated event without usage (as DeepSeek writes them:
    /// compact, names and types unescaped), so the test above compares something.
    #[test]
    fn the_scanner_answers_for_events_without_usage(v in event()) {
        prop_assume!(v.get("usage").is_none() && v.get("message").is_none());
        let text = v.to_string();
        prop_assert!(scan(&text).is_some(), "{}", text);
    }

    /// The scanner finds the model of a `message_start` as DeepSeek writes it (compact, plain
    /// names), whatever the name.
    #[test]
    fn the_scanner_finds_the_model(model in text(16)) {
        let v = json!({"type": "message_start", "message": {"id": "m", "model": model,
            "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}});
        let text = v.to_string();
        prop_assert!(start_model(&text).is_some_and(|m| m.is_some()), "{}", text);
    }
}
