//! Anthropic's usage in billing's terms — the one place the mapping lives (README and /docs
//! say the same):
//!
//! | Anthropic field | billed as |
//! |---|---|
//! | `input_tokens` | prompt tokens, cache miss |
//! | `cache_creation_input_tokens` | prompt tokens, cache miss |
//! | `cache_read_input_tokens` | prompt tokens, cache hit |
//! | `output_tokens` | output tokens (thinking included) |
//!
//! Absent fields count as zero. In a stream, the input counts come in `message_start` and the
//! output count in `message_delta`, cumulative: the last one wins.
//! Where one side never comes (a stream cut between the two, a usage without input counts),
//! the side that came is billed as reported and the other estimated ([`reported`]).

use serde::Deserialize;

use crate::gateway::billing::{Reported, Usage};

/// The input side of a usage object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Input {
    /// Not read from the cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Written to the cache (billed as misses: DeepSeek charges no cache write).
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// A usage object as DeepSeek's Anthropic endpoint sends it (all fields optional).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Wire {
    /// Not read from the cache.
    #[serde(default, deserialize_with = "opt_count")]
    pub input_tokens: Option<u64>,
    /// Written to the cache.
    #[serde(default, deserialize_with = "opt_count")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Read from the cache.
    #[serde(default, deserialize_with = "opt_count")]
    pub cache_read_input_tokens: Option<u64>,
    /// Generated.
    #[serde(default, deserialize_with = "opt_count")]
    pub output_tokens: Option<u64>,
}

/// A count of [`Wire`]: absent or null, a whole number (`77.0` too), or an error.
fn opt_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Count>::deserialize(d)? {
        None => Ok(None),
        Some(Count::Whole(n)) => Ok(Some(n)),
        Some(Count::Other) => Err(serde::de::Error::custom("not a token count")),
    }
}

impl Wire {
    /// Take a later event's input counts over this one's, as the SDKs read them: counts are
    /// cumulative (the latest is the count), and a field the later event has replaces this
    /// one's while a field it lacks keeps its value — so the bill is the usage the customer's
    /// own SDK reports. A later reading may move tokens between fields (`input_tokens` →
    /// `cache_read_input_tokens`); each field's larger counted those twice (found by an
    /// independent check: 4.1× the bill). One exception: a later reading whose counts are all
    /// `0` while this one had some is a placeholder, not a correction, and is passed over
    /// (no request reaches DeepSeek without input tokens).
    pub fn merge_input(&mut self, other: &Wire) {
        let present = [
            other.input_tokens,
            other.cache_creation_input_tokens,
            other.cache_read_input_tokens,
        ];
        if present.iter().all(Option::is_none) {
            return;
        }
        if other.input_total() == 0 && self.input_total() > 0 {
            return;
        }
        self.input_tokens = other.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = other
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = other
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// The sum of the input counts (saturating; absent ones are zero).
    fn input_total(&self) -> u64 {
        [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .into_iter()
        .flatten()
        .fold(0u64, u64::saturating_add)
    }

    /// The input counts, if the object has any that is not zero: no request reaches DeepSeek
    /// without input tokens, so all zeros are a placeholder (a `message_start` whose real
    /// counts come at the end), and the prompt is billed from the estimate, labelled so,
    /// rather than as none (found by an independent check: a cut stream paid no prompt).
    pub fn input(&self) -> Option<Input> {
        if self.input_tokens.unwrap_or(0) == 0
            && self.cache_creation_input_tokens.unwrap_or(0) == 0
            && self.cache_read_input_tokens.unwrap_or(0) == 0
        {
            return None;
        }
        Some(Input {
            input_tokens: self.input_tokens.unwrap_or(0),
            cache_creation_input_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            cache_read_input_tokens: self.cache_read_input_tokens.unwrap_or(0),
        })
    }
}

/// A usage object read without failing on a count of the wrong type, or on a usage that is
/// no object at all: `Lenient(None)` then, as `serde_json::from_value::<Wire>` would fail on
/// it — without building a tree first (a stream's two usage objects are read on every Claude
/// Code answer). A member written twice counts as written last, as a JSON map reads it.
pub struct Lenient(pub Option<Wire>);

/// The members of a usage object, by name.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Member {
    InputTokens,
    CacheCreationInputTokens,
    CacheReadInputTokens,
    OutputTokens,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lenient, D::Error> {
        d.deserialize_any(LenientVisitor)
    }
}

struct LenientVisitor;

impl<'de> serde::de::Visitor<'de> for LenientVisitor {
    type Value = Lenient;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
        // Each count: absent/null, a whole number, or of the wrong type (`Err`).
        let mut counts: [Result<Option<u64>, ()>; 4] = [Ok(None); 4];
        while let Some(member) = map.next_key::<Member>()? {
            let at = match member {
                Member::InputTokens => 0,
                Member::CacheCreationInputTokens => 1,
                Member::CacheReadInputTokens => 2,
                Member::OutputTokens => 3,
                Member::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            counts[at] = count(map.next_value::<Option<Count>>()?);
        }
        Ok(lenient(counts))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_unit<E>(self) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    /// serde's derive reads a struct from an array too, its fields by position (and so did
    /// the reading this one replaced): the same here, at most four elements.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
        let mut counts: [Result<Option<u64>, ()>; 4] = [Ok(None); 4];
        for slot in &mut counts {
            match seq.next_element::<Option<Count>>()? {
                Some(c) => *slot = count(c),
                None => return Ok(lenient(counts)),
            }
        }
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(Lenient(None));
        }
        Ok(lenient(counts))
    }
}

/// A count as read: absent or null, a whole number, or of the wrong type (`Err`).
fn count(c: Option<Count>) -> Result<Option<u64>, ()> {
    match c {
        None => Ok(None),
        Some(Count::Whole(n)) => Ok(Some(n)),
        Some(Count::Other) => Err(()),
    }
}

/// The usage of four counts in `Wire`'s order, if none is of the wrong type.
fn lenient(counts: [Result<Option<u64>, ()>; 4]) -> Lenient {
    let [Ok(input), Ok(creation), Ok(read), Ok(output)] = counts else {
        return Lenient(None);
    };
    Lenient(Some(Wire {
        input_tokens: input,
        cache_creation_input_tokens: creation,
        cache_read_input_tokens: read,
        output_tokens: output,
    }))
}

/// A count as written: a whole number (an integer, or a float with a whole value: `77.0`), or
/// anything else (read through and set aside).
enum Count {
    Whole(u64),
    Other,
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> serde::de::Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
        Ok(Count::Whole(n))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Count, E> {
        Ok(Count::Other)
    }

    fn visit_f64<E>(self, f: f64) -> Result<Count, E> {
        Ok(crate::gateway::json::whole_count(f).map_or(Count::Other, Count::Whole))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
        Ok(Count::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Count, E> {
        Ok(Count::Other)
    }

    fn visit_unit<E>(self) -> Result<Count, E> {
        Ok(Count::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Count::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Count::Other)
    }
}

/// Billing's counts from the input side and the output count.
pub fn to_billing(input: Input, output: u64) -> Usage {
    let miss = input
        .input_tokens
        .saturating_add(input.cache_creation_input_tokens);
    let hit = input.cache_read_input_tokens;
    Usage {
        prompt: miss.saturating_add(hit),
        hit,
        miss,
        completion: output,
        reasoning: 0,
    }
}

/// A whole usage object: billing's counts when it has both sides.
pub fn of_wire(w: &Wire) -> Option<Usage> {
    Some(to_billing(w.input()?, w.output_tokens?))
}

/// The sides a usage object has, each on its own: what billing takes over its estimates when
/// the object is not whole.
pub fn reported(w: &Wire) -> Reported {
    Reported {
        prompt: w.input().map(|i| {
            let b = to_billing(i, 0);
            (b.hit, b.miss)
        }),
        output: w.output_tokens,
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping() {
        let w: Wire = serde_json::from_str(
            r#"{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":640,"output_tokens":50}"#,
        )
        .unwrap();
        assert_eq!(
            of_wire(&w),
            Some(Usage {
                prompt: 760,
                hit: 640,
                miss: 120,
                completion: 50,
                reasoning: 0
            })
        );
        // Cache fields missing (one user report): zero, and still the provider's counts.
        let w: Wire = serde_json::from_str(r#"{"input_tokens":7,"output_tokens":3}"#).unwrap();
        assert_eq!(
            of_wire(&w).map(|u| (u.hit, u.miss, u.completion)),
            Some((0, 7, 3))
        );
        // Only one side: no usage from this object alone.
        let w: Wire = serde_json::from_str(r#"{"output_tokens":3}"#).unwrap();
        assert_eq!(of_wire(&w), None);
    }
}
