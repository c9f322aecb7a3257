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
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    /// Generated.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

impl Wire {
    /// Take the input counts `other` has, keeping those it lacks, and the larger of two:
    /// a stream's input counts do not shrink, so a smaller one (a `0` placeholder in a later
    /// event) is not a correction.
    pub fn merge_input(&mut self, other: &Wire) {
        for (mine, theirs) in [
            (&mut self.input_tokens, other.input_tokens),
            (
                &mut self.cache_creation_input_tokens,
                other.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                other.cache_read_input_tokens,
            ),
        ] {
            if theirs > *mine {
                *mine = theirs;
            }
        }
    }

    /// The input counts, if the object has any of them.
    pub fn input(&self) -> Option<Input> {
        if self.input_tokens.is_none()
            && self.cache_creation_input_tokens.is_none()
            && self.cache_read_input_tokens.is_none()
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
