//! The prompts a key's streams sent lately, as fingerprints of their pieces (each text as it
//! goes into DeepSeek's template): what DeepSeek's prefix cache may hold for the key.
//!
//! Why: DeepSeek caches a prompt's prefix for each end user (the gateway sends the key's id as
//! `user_id`) and bills the part of a later prompt that starts with it at the cache-hit price,
//! ~50 times cheaper. When a stream is cut before DeepSeek's usage came (OpenAI's stream
//! reports the prompt only in its last chunk: a "stop" pressed in SillyTavern), the prompt is
//! counted by the gateway, and all of it was billed as a cache miss — 38 times DeepSeek's
//! price on a long cached conversation (found by an independent check). Now the pieces a
//! recent prompt of the key began with are billed as hits: a conversation resent with one more
//! message starts with the whole of the last one.
//!
//! Kept in memory with the key (a restart forgets them: the next cut is billed as misses), the
//! last [`KEPT`] for at most [`CACHE_LIFE`] (DeepSeek keeps its cache for hours, "best effort").

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::status::Api;

/// Prompts kept a key.
pub const KEPT: usize = 8;
/// How long a prompt is taken to stay in DeepSeek's cache.
pub const CACHE_LIFE: Duration = Duration::from_secs(3600);

/// One prompt: its dialect (each has its own template, so its own cache entries), when it was
/// sent, and a fingerprint of each piece.
struct Recent {
    api: Api,
    at: Instant,
    pieces: Vec<u64>,
}

/// A key's recent prompts, newest last.
#[derive(Default)]
pub struct RecentPrompts {
    kept: Mutex<VecDeque<Recent>>,
    /// Fingerprints are keyed at random, per key: a customer cannot write two different texts
    /// with one fingerprint to have a new text billed as a cache hit.
    hasher: std::collections::hash_map::RandomState,
}

impl RecentPrompts {
    /// A prompt DeepSeek read (so it may have cached its prefix).
    pub fn remember(&self, api: Api, pieces: Vec<u64>) {
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(Recent {
            api,
            at: Instant::now(),
            pieces,
        });
    }

    /// How many leading pieces of `pieces` a recent prompt of the same dialect began with.
    pub fn shared_prefix(&self, api: Api, pieces: &[u64]) -> usize {
        let kept = self.lock();
        kept.iter()
            .filter(|r| r.api == api && r.at.elapsed() < CACHE_LIFE)
            .map(|r| {
                r.pieces
                    .iter()
                    .zip(pieces)
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// A piece's fingerprint, for this key's prompts.
    pub fn fingerprint(&self, text: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Recent>> {
        // Plain data, consistent after any panic: a poisoned lock is used as it is.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_of_a_recent_prompt_of_the_same_dialect() {
        let r = RecentPrompts::default();
        let p = |t: &[&str]| t.iter().map(|s| r.fingerprint(s)).collect::<Vec<_>>();
        assert_eq!(r.shared_prefix(Api::OpenAi, &p(&["a"])), 0);
        r.remember(Api::OpenAi, p(&["sys", "q1", "a1"]));
        r.remember(Api::OpenAi, p(&["sys", "other"]));
        assert_eq!(
            r.shared_prefix(Api::OpenAi, &p(&["sys", "q1", "a1", "q2"])),
            3
        );
        assert_eq!(r.shared_prefix(Api::OpenAi, &p(&["sys", "q9"])), 1);
        assert_eq!(r.shared_prefix(Api::Anthropic, &p(&["sys", "q1"])), 0);
        for i in 0..KEPT {
            r.remember(Api::OpenAi, p(&[&format!("x{i}")]));
        }
        assert_eq!(
            r.shared_prefix(Api::OpenAi, &p(&["sys", "q1"])),
            0,
            "forgotten"
        );
    }
}
