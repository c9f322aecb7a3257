//! DeepSeek's `usage` object read into billing's counts: walked by the cursor as DeepSeek
//! writes it, else straight from its text into typed counts by serde, or, for any shape that
//! reading does not take, through a JSON tree — all with the same rules ([`usage_from_json`]).
//!
//! Why three readings: the tree (`serde_json::Value`, whose maps hash every key with SipHash
//! under `preserve_order`) was ~8k instructions of every answer under callgrind, for an object
//! of six numbers, and serde's typed reading still ~2.8k. A property test holds them to the
//! same result.

use std::fmt;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::chunk::Obj;
use crate::gateway::billing::Usage;
use crate::gateway::json::cursor::Cursor;

/// Read DeepSeek's usage object; `None` when it is absent, null or lacks the counts. Without
/// the hit/miss split every prompt token is a miss (SPEC §4); with one half of it, the other
/// is what the prompt leaves (that half capped at the prompt).
pub fn usage_from_json(v: &Value) -> Option<Usage> {
    let obj = v.as_object()?;
    let num = |k: &str| obj.get(k).and_then(count_of);
    let reasoning = obj
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(count_of);
    from_counts(Counts {
        prompt: num("prompt_tokens"),
        completion: num("completion_tokens"),
        hit: num("prompt_cache_hit_tokens"),
        miss: num("prompt_cache_miss_tokens"),
        reasoning,
    })
}

/// [`usage_from_json`] of a usage object's text, read without a tree when it can be; `Err`
/// when the text is not JSON at all.
pub fn usage_from_text(text: &str) -> Result<Option<Usage>, serde_json::Error> {
    if let Some(counts) = walked(text) {
        return Ok(from_counts(counts));
    }
    match serde_json::from_str::<Obj<Typed>>(text) {
        Ok(Obj(t)) => Ok(from_counts(Counts {
            prompt: t.prompt_tokens.0,
            completion: t.completion_tokens.0,
            hit: t.prompt_cache_hit_tokens.0,
            miss: t.prompt_cache_miss_tokens.0,
            reasoning: t.completion_tokens_details.0,
        })),
        // Not an object, a repeated member, or not JSON: the tree decides.
        Err(_) => serde_json::from_str::<Value>(text).map(|v| usage_from_json(&v)),
    }
}

/// The usage object as DeepSeek writes it, read by the cursor (serde's typed reading, ~2.8k
/// instructions an answer under callgrind, was the larger half of a whole answer's reading):
/// counts that are plain integers, `completion_tokens_details` an object, every key unescaped
/// and named once. `None` for anything else, which serde reads.
fn walked(text: &str) -> Option<Counts> {
    let mut c = Cursor::new(text);
    // prompt, completion, cache hit, cache miss, reasoning.
    let mut n: [Option<u64>; 5] = [None; 5];
    let mut details = false;
    c.members(|c, key| {
        let i = match key {
            "prompt_tokens" => 0,
            "completion_tokens" => 1,
            "prompt_cache_hit_tokens" => 2,
            "prompt_cache_miss_tokens" => 3,
            "completion_tokens_details" => {
                if std::mem::replace(&mut details, true) {
                    return None;
                }
                return c.members(|c, key| {
                    if key != "reasoning_tokens" {
                        return c.skip_value();
                    }
                    if n[4].is_some() {
                        return None;
                    }
                    n[4] = Some(c.plain_count()?);
                    Some(())
                });
            }
            _ => return c.skip_value(),
        };
        if n[i].is_some() {
            return None;
        }
        n[i] = Some(c.plain_count()?);
        Some(())
    })?;
    let [prompt, completion, hit, miss, reasoning] = n;
    c.at_end().then_some(Counts {
        prompt,
        completion,
        hit,
        miss,
        reasoning,
    })
}

/// A count in a tree: a non-negative integer, or a float with a whole value (`77.0`).
fn count_of(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().and_then(crate::gateway::json::whole_count))
}

/// The counts as read, each `None` when absent or not a non-negative whole number.
struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    hit: Option<u64>,
    miss: Option<u64>,
    reasoning: Option<u64>,
}

/// The billing rules over the counts read. DeepSeek's split adds up to the prompt
/// (hit + miss = prompt); where one that does not comes, no prompt token goes unbilled: what
/// the hits leave of the prompt is at least the misses, and the prompt is at least the two
/// (billed as split). Without a prompt count, the split is the prompt.
fn from_counts(c: Counts) -> Option<Usage> {
    let completion = c.completion?;
    let prompt = match (c.prompt, c.hit, c.miss) {
        (Some(p), _, _) => p,
        (None, None, None) => return None,
        (None, h, m) => h.unwrap_or(0).saturating_add(m.unwrap_or(0)),
    };
    let (hit, miss) = match (c.hit, c.miss) {
        (Some(h), Some(m)) => (h, m.max(prompt.saturating_sub(h))),
        (Some(h), None) => (h.min(prompt), prompt.saturating_sub(h)),
        (None, Some(m)) => (prompt.saturating_sub(m), m.min(prompt)),
        (None, None) => (0, prompt),
    };
    Some(Usage {
        prompt: prompt.max(hit.saturating_add(miss)),
        hit,
        miss,
        completion,
        reasoning: c.reasoning.unwrap_or(0),
    })
}

/// The usage object, typed. A member named twice fails serde's derive, which sends the
/// object to the tree (where the last one counts).
#[derive(Deserialize)]
struct Typed {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
    #[serde(default)]
    prompt_cache_hit_tokens: Count,
    #[serde(default)]
    prompt_cache_miss_tokens: Count,
    #[serde(default)]
    completion_tokens_details: Details,
}

/// A count as `Value::as_u64` reads one: a non-negative integer that fits, else nothing
/// (any other value is skipped, not an error).
#[derive(Default)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
        Ok(Count(Some(n)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
        Ok(Count(u64::try_from(n).ok()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Count, E> {
        Ok(Count(crate::gateway::json::whole_count(f)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_unit<E>(self) -> Result<Count, E> {
        Ok(Count(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
}

/// `completion_tokens_details.reasoning_tokens` (the last one, as in a JSON map); nothing when
/// the details are not an object.
#[derive(Default)]
struct Details(Option<u64>);

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
                let mut reasoning = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "reasoning_tokens" {
                        reasoning = map.next_value::<Count>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Details(reasoning))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_unit<E>(self) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Details, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Details(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::proptest_support::{json_sized, style, write};

    const KEYS: &[&str] = &[
        "prompt_tokens",
        "completion_tokens",
        "prompt_cache_hit_tokens",
        "prompt_cache_miss_tokens",
        "completion_tokens_details",
        "reasoning_tokens",
    ];

    /// A count: mostly numbers of every kind, sometimes anything.
    fn count() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..100_000).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            json_sized(KEYS, 1, 3),
        ]
    }

    fn usage_like() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(prop::option::of(count()), 4),
            prop::option::of(prop_oneof![
                prop::option::of(count()).prop_map(|c| match c {
                    Some(c) => json!({"reasoning_tokens": c, "other": 1}),
                    None => json!({}),
                }),
                json_sized(KEYS, 1, 3),
            ]),
        )
            .prop_map(|(counts, details)| {
                let mut o = serde_json::Map::new();
                for (k, c) in KEYS.iter().zip(counts) {
                    if let Some(c) = c {
                        o.insert((*k).into(), c);
                    }
                }
                if let Some(d) = details {
                    o.insert("completion_tokens_details".into(), d);
                }
                Value::Object(o)
            })
    }

    /// A usage object as DeepSeek writes it (plain counts, each there or not, the cursor's
    /// path), sometimes with a count of another kind or a repeated member.
    fn deepseek_like() -> impl Strategy<Value = Value> {
        let plain = || prop_oneof![0u64..100_000, 0u64..10_000_000_000_000_000_000];
        (
            prop::collection::vec(prop::option::of(plain()), 4),
            prop::option::of(prop::option::of(plain())),
            prop::option::of(plain()),
            prop::option::of(count()),
        )
            .prop_map(|(counts, details, cached, odd)| {
                let mut o = serde_json::Map::new();
                for (k, c) in KEYS.iter().zip(counts) {
                    if let Some(c) = c {
                        o.insert((*k).into(), c.into());
                    }
                }
                if let Some(d) = details {
                    let d = d.map_or_else(|| json!({}), |r| json!({"reasoning_tokens": r}));
                    o.insert("completion_tokens_details".into(), d);
                }
                if let Some(c) = cached {
                    o.insert("prompt_tokens_details".into(), json!({"cached_tokens": c}));
                }
                if let Some(c) = odd {
                    o.insert("prompt_cache_miss_tokens".into(), c);
                }
                Value::Object(o)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The cursor's and serde's readings and the tree agree on DeepSeek's usage objects,
        /// every usage-like object and arbitrary JSON, however it is written (whitespace,
        /// escapes).
        #[test]
        fn the_typed_reading_agrees_with_the_tree(
            v in prop_oneof![deepseek_like(), usage_like(), json_sized(KEYS, 3, 12)],
            st in style(),
            repeat in any::<bool>(),
        ) {
            let mut text = write(&v, &st);
            // A member named twice: the last counts, as in a JSON map.
            if repeat && v.as_object().is_some_and(|o| !o.is_empty()) {
                let end = text.rfind('}').unwrap();
                text.replace_range(end.., r#","prompt_tokens":7}"#);
            }
            let tree = serde_json::from_str::<Value>(&text).ok().as_ref().and_then(usage_from_json);
            prop_assert_eq!(usage_from_text(&text).ok().flatten(), tree, "{}", text);
        }
    }

    /// Typed: DeepSeek's own object, and the reasoning count inside its details.
    #[test]
    fn deepseek_usage_reads_typed() {
        let text = r#"{"prompt_tokens":100,"completion_tokens":30,"total_tokens":130,
            "prompt_tokens_details":{"cached_tokens":64},"prompt_cache_hit_tokens":64,
            "prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":10}}"#;
        assert!(serde_json::from_str::<Obj<Typed>>(text).is_ok());
        assert!(walked(text).is_some(), "read by the cursor");
        let u = usage_from_text(text).unwrap().unwrap();
        assert_eq!(
            (u.prompt, u.hit, u.miss, u.completion, u.reasoning),
            (100, 64, 36, 30, 10)
        );
        // A reasoning count named twice inside the details: the last counts, as in the tree.
        let text = r#"{"prompt_tokens":1,"completion_tokens":9,
            "completion_tokens_details":{"reasoning_tokens":1,"reasoning_tokens":5}}"#;
        assert!(serde_json::from_str::<Obj<Typed>>(text).is_ok());
        let tree = usage_from_json(&serde_json::from_str(text).unwrap());
        assert_eq!(usage_from_text(text).unwrap(), tree);
        assert_eq!(tree.map(|u| u.reasoning), Some(5));
    }

    /// Counts written as whole floats are counts; a split that does not add up to the prompt
    /// leaves no prompt token unbilled; without a prompt count the split is the prompt (found
    /// by an independent check: each of these billed an estimate or let prompt tokens go free).
    #[test]
    fn awkward_counts_and_splits() {
        let read = |t: &str| {
            let u = usage_from_text(t).unwrap().unwrap();
            let tree = usage_from_json(&serde_json::from_str(t).unwrap()).unwrap();
            assert_eq!(u, tree, "{t}");
            (u.prompt, u.hit, u.miss, u.completion)
        };
        assert_eq!(
            read(
                r#"{"prompt_tokens":100.0,"prompt_cache_miss_tokens":100,"completion_tokens":12.0}"#
            ),
            (100, 0, 100, 12)
        );
        assert_eq!(
            read(r#"{"prompt_tokens":1e2,"completion_tokens":12}"#),
            (100, 0, 100, 12)
        );
        assert!(
            usage_from_text(r#"{"prompt_tokens":1.5,"completion_tokens":12}"#)
                .unwrap()
                .is_none()
        );
        // More than 64 bits: the largest count (the hold caps the charge).
        assert_eq!(
            read(r#"{"prompt_tokens":10,"completion_tokens":18446744073709551616}"#).3,
            u64::MAX
        );
        // The split short of the prompt: the rest are misses.
        assert_eq!(
            read(
                r#"{"prompt_tokens":1000,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":0,"completion_tokens":10}"#
            ),
            (1000, 0, 1000, 10)
        );
        assert_eq!(
            read(
                r#"{"prompt_tokens":1000,"prompt_cache_hit_tokens":600,"prompt_cache_miss_tokens":100,"completion_tokens":10}"#
            ),
            (1000, 600, 400, 10)
        );
        // The split past the prompt: billed as split, the prompt read as its sum.
        assert_eq!(
            read(
                r#"{"prompt_tokens":10,"prompt_cache_hit_tokens":500,"prompt_cache_miss_tokens":500,"completion_tokens":1}"#
            ),
            (1000, 500, 500, 1)
        );
        // No prompt count: the split is the prompt.
        assert_eq!(
            read(
                r#"{"completion_tokens":10,"prompt_cache_hit_tokens":3,"prompt_cache_miss_tokens":7}"#
            ),
            (10, 3, 7, 10)
        );
        assert!(
            usage_from_text(r#"{"completion_tokens":10}"#)
                .unwrap()
                .is_none()
        );
    }
}
