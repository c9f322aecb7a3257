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
    turn: Turn,
}

/// Where a prompt's last user's turn is: its message, and how many leading pieces end with
/// it. A later prompt with a user's turn after that message shares at most those pieces
/// (DeepSeek's template writes what came after a user's last turn otherwise once another
/// follows: `crate::gateway::pieces::PromptPieces::turn_end`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Turn {
    /// The message.
    pub message: Option<u64>,
    /// Pieces up to the end of it.
    pub end: usize,
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
    pub fn remember(&self, scope: Scope, read_at: Instant, pieces: Vec<u64>, turn: Turn) {
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
            turn,
        });
    }

    /// How many leading pieces of `pieces` (whose last user's turn is in message
    /// `last_user`) a recent prompt in the same scope, read before `started`, began with.
    pub fn shared_prefix(
        &self,
        scope: &Scope,
        started: Instant,
        pieces: &[u64],
        last_user: Option<u64>,
    ) -> usize {
        if scope.account.is_none() {
            return 0;
        }
        let kept = self.lock();
        kept.iter()
            .filter(|r| {
                r.scope == *scope && r.read_at <= started && r.read_at.elapsed() < CACHE_LIFE
            })
            .map(|r| {
                let shared = r
                    .pieces
                    .iter()
                    .zip(pieces)
                    .take_while(|(a, b)| a == b)
                    .count();
                if last_user > r.turn.message {
                    shared.min(r.turn.end)
                } else {
                    shared
                }
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
        assert_eq!(r.shared_prefix(&flash, later, &p(&["a"]), None), 0);
        r.remember(
            flash.clone(),
            read,
            p(&["sys", "q1", "a1"]),
            Turn::default(),
        );
        r.remember(flash.clone(), read, p(&["sys", "other"]), Turn::default());
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["sys", "q1", "a1", "q2"]), None),
            3
        );
        assert_eq!(r.shared_prefix(&flash, later, &p(&["sys", "q9"]), None), 1);
        // Another dialect, model or account has its own cache; one started before the prompt
        // was read found none; another role is another piece; an unknown account, nothing.
        for other in [
            scope(Api::Anthropic, "flash", Some("a")),
            scope(Api::OpenAi, "pro", Some("a")),
            scope(Api::OpenAi, "flash", Some("b")),
            scope(Api::OpenAi, "flash", None),
        ] {
            assert_eq!(
                r.shared_prefix(&other, later, &p(&["sys", "q1"]), None),
                0,
                "{other:?}"
            );
        }
        let earlier = read.checked_sub(Duration::from_millis(1)).unwrap();
        assert_eq!(
            r.shared_prefix(&flash, earlier, &p(&["sys", "q1"]), None),
            0
        );
        let as_system = vec![text_print(&r, "system", "sys")];
        assert_eq!(r.shared_prefix(&flash, later, &as_system, None), 0);
        r.remember(
            scope(Api::OpenAi, "flash", None),
            read,
            p(&["x"]),
            Turn::default(),
        );
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["x"]), None),
            0,
            "not remembered"
        );
        for i in 0..KEPT {
            r.remember(flash.clone(), read, p(&[&format!("x{i}")]), Turn::default());
        }
        assert_eq!(
            r.shared_prefix(&flash, later, &p(&["sys", "q1"]), None),
            0,
            "forgotten"
        );
    }

    /// Past a recent prompt's last user's turn, only a prompt with no user's turn after it
    /// shares pieces: the same agent loop going on, not a new question after it.
    #[test]
    fn a_new_users_turn_shares_nothing_past_the_last_one() {
        let r = RecentPrompts::default();
        let p = |t: &[&str]| t.iter().map(|s| text_print(&r, "x", s)).collect::<Vec<_>>();
        let flash = Scope {
            api: Api::OpenAi,
            model: "flash".into(),
            account: Some("a".into()),
        };
        let (read, later) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        // System, question (message 1, ending at piece 2), call, result.
        let turn = Turn {
            message: Some(1),
            end: 2,
        };
        r.remember(
            flash.clone(),
            read,
            p(&["sys", "q", "call", "result"]),
            turn,
        );
        let going_on = p(&["sys", "q", "call", "result", "call2"]);
        assert_eq!(r.shared_prefix(&flash, later, &going_on, Some(1)), 4);
        let asked_again = p(&["sys", "q", "call", "result", "done", "q2"]);
        assert_eq!(r.shared_prefix(&flash, later, &asked_again, Some(5)), 2);
    }
}
