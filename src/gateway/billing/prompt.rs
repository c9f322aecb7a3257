//! A request's prompt counted again when DeepSeek never reported it (a stream cut before its
//! usage came): by DeepSeek's own tokenizer ([`crate::gateway::tokens`]), with the part a
//! recent prompt of the key began with taken as DeepSeek's cache hits
//! ([`crate::keys::prompts`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::gateway::dialect::PromptPieces;
use crate::gateway::tokens;
use crate::keys::KeyState;
use crate::status::Api;

/// DeepSeek's prefix cache works in units of 64 tokens: a prefix shorter than a unit, and the
/// part of one past its last whole unit, are read as misses.
const CACHE_UNIT: u64 = 64;

/// A request's body and its dialect's reading of the prompt's texts in it
/// ([`crate::gateway::dialect::Dialect::prompt_pieces`]).
pub struct PromptSource {
    /// The body as the client sent it.
    pub raw: Bytes,
    /// The texts of its prompt, and its number of messages.
    pub pieces: fn(&[u8]) -> Option<PromptPieces>,
}

impl PromptSource {
    /// The prompt's tokens as DeepSeek counts them (with the estimate's few tokens of template
    /// a message), as (cache hits, misses); `None` if it cannot be counted. CPU work: on a
    /// blocking thread.
    pub async fn count(&self, key: &Arc<KeyState>, api: Api) -> Option<(u64, u64)> {
        let (raw, pieces, key) = (self.raw.clone(), self.pieces, key.clone());
        tokio::task::spawn_blocking(move || {
            let prompt = pieces(&raw)?;
            let counts = prompt
                .texts
                .iter()
                .map(|t| tokens::count(t))
                .collect::<Option<Vec<u64>>>()?;
            let prints: Vec<u64> = prompt
                .texts
                .iter()
                .map(|t| key.prompts.fingerprint(t))
                .collect();
            let shared = key.prompts.shared_prefix(api, &prints);
            let template = 4 * prompt.messages + 2;
            let total = counts.iter().sum::<u64>().saturating_add(template);
            let cached: u64 = counts[..shared].iter().sum();
            let hit = (cached / CACHE_UNIT * CACHE_UNIT).min(total);
            Some((hit, total - hit))
        })
        .await
        .ok()
        .flatten()
    }

    /// Remember this prompt with the key, in the background (DeepSeek read it, so it may have
    /// cached it for the key's next one).
    pub fn remember(&self, key: &Arc<KeyState>, api: Api) {
        let (raw, pieces, key) = (self.raw.clone(), self.pieces, key.clone());
        drop(tokio::task::spawn_blocking(move || {
            if let Some(prompt) = pieces(&raw) {
                let prints = prompt
                    .texts
                    .iter()
                    .map(|t| key.prompts.fingerprint(t))
                    .collect();
                key.prompts.remember(api, prints);
            }
        }));
    }
}
