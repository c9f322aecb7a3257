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
//! A prompt counts only for a later one in the same scope ([`Scope`]: dialect, DeepSeek's
//! model, the upstream account — each has a cache of its own) that started after DeepSeek had
//! read it (its first token came): a first version matched by dialect alone, so a long prompt
//! sent to flash, or sent at the same moment, was billed as hits on pro (found by a review).
//! Each piece's fingerprint covers what it is (its role) as well as its text.
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

/// Where DeepSeek's cache of a prompt is: the dialect (each has its own template), the
/// model as DeepSeek knows it, and the upstream account that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The dialect.
    pub api: Api,
    /// DeepSeek's model name.
    pub model: String,
    /// The upstream account (`None`: unknown, which matches nothing).
    pub account: Option<std::sync::Arc<str>>,
}

/// One prompt: its scope, when DeepSeek had read it, and a fingerprint of each piece.
struct Recent {
    scope: Scope,
    read_at: Instant,
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
    /// A prompt DeepSeek had read by `read_at` (so it may have cached its prefix).
    pub fn remember(&self, scope: Scope, read_at: Instant, pieces: Vec<u64>) {
        if scope.account.is_none() {
            return;
        }
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(Recent {
            scope,
            read_at,
            pieces,
        });
    }

    /// How many leading pieces of `pieces` a recent prompt in the same scope, read before
    /// `started`, began with.
    pub fn shared_prefix(&self, scope: &Scope, started: Instant, pieces: &[u64]) -> usize {
        if scope.account.is_none() {
            return 0;
        }
        let kept = self.lock();
        kept.iter()
            .filter(|r| {
                r.scope == *scope && r.read_at <= started && r.read_at.elapsed() < CACHE_LIFE
            })
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

    /// A piece's fingerprint, for this key's prompts: what it is (`label`), and what `feed`
    /// gives the hasher of its text (`None`: it has none).
    pub fn fingerprint(
        &self,
        label: &str,
        feed: impl FnOnce(&mut std::hash::DefaultHasher) -> Option<()>,
    ) -> Option<u64> {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.hasher.build_hasher();
        label.hash(&mut h);
        feed(&mut h)?;
        Some(h.finish())
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

    fn text_print(r: &RecentPrompts, label: &str, text: &str) -> u64 {
        r.fingerprint(label, |h| {
            std::hash::Hasher::write(h, text.as_bytes());
            Some(())
        })
        .unwrap()
    }

    #[test]
    fn the_longest_prefix_of_a_prompt_read_before_in_the_same_scope() {
        let r = RecentPrompts::default();
        let p = |t: &[&str]| {
            t.iter()
                .map(|s| text_print(&r, "user", s))
                .collect::<Vec<_>>()
        };
        let scope = |api, model: &str, account: Option<&str>| Scope {
            api,
            model: model.into(),
            account: account.map(Into::into),
        };
        let flash = scope(Api::OpenAi, "flash", Some("a"));
        let (read, later) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        assert_eq!(r.shared_prefix(&flash, later, &p(&["a"])), 0);
        r.remember(flash.clone(), read, p(&["sys", "q1", "a1"]));
        r.remember(flash.clone(), read, p(&["sys", "other"]));
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["sys", "q1", "a1", "q2"])),
            3
        );
        assert_eq!(r.shared_prefix(&flash, later, &p(&["sys", "q9"])), 1);
        // Another dialect, model or account has its own cache; one started before the prompt
        // was read found none; another role is another piece; an unknown account, nothing.
        for other in [
            scope(Api::Anthropic, "flash", Some("a")),
            scope(Api::OpenAi, "pro", Some("a")),
            scope(Api::OpenAi, "flash", Some("b")),
            scope(Api::OpenAi, "flash", None),
        ] {
            assert_eq!(
                r.shared_prefix(&other, later, &p(&["sys", "q1"])),
                0,
                "{other:?}"
            );
        }
        let earlier = read.checked_sub(Duration::from_millis(1)).unwrap();
        assert_eq!(r.shared_prefix(&flash, earlier, &p(&["sys", "q1"])), 0);
        let as_system = vec![text_print(&r, "system", "sys")];
        assert_eq!(r.shared_prefix(&flash, later, &as_system), 0);
        r.remember(scope(Api::OpenAi, "flash", None), read, p(&["x"]));
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["x"])),
            0,
            "not remembered"
        );
        for i in 0..KEPT {
            r.remember(flash.clone(), read, p(&[&format!("x{i}")]));
        }
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["sys", "q1"])),
            0,
            "forgotten"
        );
    }
}
