//! Properties of the Anthropic usage mapping (issue 11): arbitrary JSON never panics; absent
//! or null fields count as zero; the input side exists when any input field does; billing's
//! prompt is always hit + miss (saturating), hits are cache reads, misses the rest.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Wire, of_wire, to_billing};
use crate::proptest_support::json;

const FIELDS: [&str; 4] = [
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
];

/// A usage field: absent, null, a count of any size, or a value that is not a count.
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => (0u64..1_000_000).prop_map(|n| Some(Value::from(n))),
        1 => any::<u64>().prop_map(|n| Some(Value::from(n))),
        1 => prop_oneof![Just(json!(-1)), Just(json!(2.5)), Just(json!("3")), Just(json!({})), Just(json!(77.0))]
            .prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The mapping of the README's table, for every combination of present, null and absent
    /// fields; a field that is not a count makes the object unreadable, never a panic.
    #[test]
    fn the_mapping_with_absent_fields_as_zero(
        fields in prop::collection::vec(field(), 4),
        extra in prop::collection::vec((prop::sample::select(vec!["service_tier", "x"]), json(&FIELDS)), 0..2),
    ) {
        let mut obj: Map<String, Value> = extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for (name, f) in FIELDS.iter().zip(&fields) {
            if let Some(v) = f {
                obj.insert((*name).into(), v.clone());
            }
        }
        let parsed = serde_json::from_value::<Wire>(Value::Object(obj));
        let counts: Option<Vec<Option<u64>>> = fields
            .iter()
            .map(|f| match f {
                None | Some(Value::Null) => Some(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_f64().and_then(crate::gateway::json::whole_count))
                    .map(Some),
            })
            .collect();
        let Some(counts) = counts else {
            prop_assert!(parsed.is_err());
            return Ok(());
        };
        let w = parsed.unwrap();
        let zero = |i: usize| counts[i].unwrap_or(0);
        let input = w.input();
        prop_assert_eq!(input.is_some(), counts[..3].iter().any(|c| c.is_some_and(|n| n > 0)));
        if let Some(i) = input {
            prop_assert_eq!(
                (i.input_tokens, i.cache_creation_input_tokens, i.cache_read_input_tokens),
                (zero(0), zero(1), zero(2))
            );
            let u = to_billing(i, zero(3));
            prop_assert_eq!(u.hit, zero(2));
            prop_assert_eq!(u128::from(u.miss), (u128::from(zero(0)) + u128::from(zero(1))).min(u128::from(u64::MAX)));
            prop_assert_eq!(u128::from(u.prompt), (u128::from(u.hit) + u128::from(u.miss)).min(u128::from(u64::MAX)));
            prop_assert_eq!((u.completion, u.reasoning), (zero(3), 0));
        }
        let whole = of_wire(&w);
        prop_assert_eq!(whole.is_some(), input.is_some() && counts[3].is_some());
        if let (Some(u), Some(i)) = (whole, input) {
            prop_assert_eq!(u, to_billing(i, zero(3)));
        }
    }

    /// Arbitrary JSON never panics.
    #[test]
    fn arbitrary_json_never_panics(v in json(&FIELDS)) {
        if let Ok(w) = serde_json::from_value::<Wire>(v) {
            let _ = of_wire(&w);
        }
    }
}

/// A usage object's text: the fields in any order, some written twice, other members, or no
/// object at all.
fn usage_text() -> impl Strategy<Value = String> {
    let member = (
        prop::sample::select(vec![
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "service_tier",
        ]),
        field(),
    );
    prop_oneof![
        6 => prop::collection::vec(member, 0..7).prop_map(|ms| {
            let parts: Vec<String> = ms
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k:?}:{v}")))
                .collect();
            format!("{{{}}}", parts.join(","))
        }),
        1 => prop::collection::vec(field(), 0..6).prop_map(|fs| {
            let parts: Vec<String> = fs
                .into_iter()
                .map(|f| f.map_or("null".to_string(), |v| v.to_string()))
                .collect();
            format!("[{}]", parts.join(","))
        }),
        1 => json(&FIELDS).prop_map(|v| v.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The lenient reading (`Lenient`, no tree) says what a tree read as `Wire` says, on text
    /// and on a tree alike: the usage when every count is a whole number or null, nothing
    /// otherwise — a repeated member counting as written last, as a JSON map keeps it.
    #[test]
    fn the_lenient_reading_is_the_trees(text in usage_text()) {
        let tree: Value = serde_json::from_str(&text).unwrap();
        let want = serde_json::from_value::<Wire>(tree.clone()).ok();
        let from_text = serde_json::from_str::<super::Lenient>(&text).unwrap().0;
        let from_tree = serde_json::from_value::<super::Lenient>(tree).unwrap().0;
        prop_assert_eq!(format!("{from_text:?}"), format!("{want:?}"), "{}", text);
        prop_assert_eq!(format!("{from_tree:?}"), format!("{want:?}"), "{}", text);
    }
}
