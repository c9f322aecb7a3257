//! The simulator's core, shared by both wire formats: the `[[sim …]]` directives, deterministic
//! token counting, the prefix cache look-up, and the resulting [`Plan`] of the answer. Each
//! format validates its own request into a [`Prompt`] first.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Shared;
const DEFAULT_REPLY: &str = "Hello! This is a simulated DeepSeek answer from the modelrelay demo upstream; \
no real model was called, so the reply is always the same.";
pub(super) const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const THOUGHTS: &[&str] = &[
    "hmm,",
    "let",
    "me",
    "think",
    "this",
    "through",
    "carefully.",
];

/// Values of the `[[sim …]]` directives found in a request.
#[derive(Default, Debug)]
pub(super) struct Directives {
    pub(super) reply: Option<u64>,
    pub(super) reasoning: Option<u64>,
    pub(super) prompt: Option<u64>,
    pub(super) hit: Option<u64>,
    pub(super) delay_ms: Option<u64>,
    pub(super) first_delay_ms: Option<u64>,
    pub(super) keepalive_ms: Option<u64>,
    pub(super) fail: Option<u64>,
    pub(super) stall_after: Option<u64>,
    pub(super) drop_after: Option<u64>,
    pub(super) error_after: Option<u64>,
    /// Stream: after this many tokens, an error event saying upstream is overloaded
    /// (Anthropic's `overloaded_error`), then the end.
    pub(super) overloaded_after: Option<u64>,
    /// Stream: after this many tokens, an event that is not JSON, then the end marker.
    pub(super) garbage_after: Option<u64>,
    pub(super) no_usage: bool,
    /// Anthropic wire: usage objects carry `output_tokens` and no input counts.
    pub(super) output_usage_only: bool,
    /// Every count in the usage reported as 0 (a broken upstream's).
    pub(super) zero_usage: bool,
    /// Anthropic wire: usage counts written as strings (a whole answer's; a stream's in
    /// `message_delta`).
    pub(super) usage_mistyped: bool,
    pub(super) garbage: bool,
    /// The whole answer, usage included, then the connection cut where the end marker
    /// (`[DONE]`, `message_stop`) would be.
    pub(super) drop_at_end: bool,
    /// Stream: the whole answer, usage included, then an error event in place of the end marker.
    pub(super) error_at_end: bool,
    /// Anthropic wire: a stall sends `ping` events rather than SSE comments.
    pub(super) ping_keepalive: bool,
}

impl Directives {
    fn absorb(&mut self, text: &str) {
        let mut rest = text;
        while let Some(start) = rest.find("[[sim") {
            let after = &rest[start + 5..];
            let Some(end) = after.find("]]") else { return };
            for (key, value) in after[..end]
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
            {
                let Ok(n) = value.parse::<u64>() else {
                    tracing::debug!(key, value, "ignoring non-integer sim directive");
                    continue;
                };
                let slot = match key {
                    "reply" => &mut self.reply,
                    "reasoning" => &mut self.reasoning,
                    "prompt" => &mut self.prompt,
                    "hit" => &mut self.hit,
                    "delay_ms" => &mut self.delay_ms,
                    "first_delay_ms" => &mut self.first_delay_ms,
                    "keepalive_ms" => &mut self.keepalive_ms,
                    "fail" => &mut self.fail,
                    "stall_after" => &mut self.stall_after,
                    "drop_after" => &mut self.drop_after,
                    "error_after" => &mut self.error_after,
                    "overloaded_after" => &mut self.overloaded_after,
                    "garbage_after" => &mut self.garbage_after,
                    "no_usage" => {
                        self.no_usage = n != 0;
                        continue;
                    }
                    "garbage" => {
                        self.garbage = n != 0;
                        continue;
                    }
                    "error_at_end" => {
                        self.error_at_end = n != 0;
                        continue;
                    }
                    "drop_at_end" => {
                        self.drop_at_end = n != 0;
                        continue;
                    }
                    "ping_keepalive" => {
                        self.ping_keepalive = n != 0;
                        continue;
                    }
                    "output_usage_only" => {
                        self.output_usage_only = n != 0;
                        continue;
                    }
                    "zero_usage" => {
                        self.zero_usage = n != 0;
                        continue;
                    }
                    "usage_mistyped" => {
                        self.usage_mistyped = n != 0;
                        continue;
                    }
                    _ => continue,
                };
                *slot = Some(n);
            }
            rest = &after[end + 2..];
        }
    }
}

/// `n` tokens cycling through `words`: each word followed by a space except the last.
fn tokens<'a>(words: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    words
        .take(n)
        .enumerate()
        .map(|(i, w)| {
            if i + 1 < n {
                format!("{w} ")
            } else {
                w.to_owned()
            }
        })
        .collect()
}

/// A DeepSeek-style (UUID-shaped) completion id.
pub(super) fn random_id() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn ms(n: Option<u64>, default: Duration) -> Duration {
    n.map_or(default, Duration::from_millis)
}

/// Everything needed to produce one successful answer, in either wire format.
pub(super) struct Plan {
    pub(super) stream: bool,
    /// OpenAI's `stream_options.include_usage` (and not `no_usage`): `usage: null` on every chunk.
    pub(super) include_usage: bool,
    pub(super) id: String,
    pub(super) created: u64,
    /// The model name echoed in the answer: the one the request named.
    pub(super) model: String,
    /// The DeepSeek model that "answers" (differs from `model` for a mapped `claude*` name).
    pub(super) served: String,
    pub(super) reasoning: Vec<String>,
    pub(super) content: Vec<String>,
    /// The answer was cut at `max_tokens`.
    pub(super) truncated: bool,
    /// Prompt tokens, of which `hit` came from the prefix cache.
    pub(super) prompt: u64,
    pub(super) hit: u64,
    pub(super) chunk_delay: Duration,
    pub(super) first_delay: Duration,
    pub(super) keepalive: Duration,
    /// OpenAI wire, whole answers: `logprobs: true` asked, with this many `top_logprobs`
    /// for each token.
    pub(super) logprobs: Option<usize>,
    pub(super) d: Directives,
}

impl Plan {
    /// Output tokens, reasoning included, as both formats bill them.
    pub(super) fn output(&self) -> u64 {
        (self.reasoning.len() + self.content.len()) as u64
    }
}

/// A validated request as the shared core needs it, whichever format it came in.
pub(super) struct Prompt<'a> {
    /// The text of each prompt message (directives, token counts), aligned with `messages`.
    pub(super) texts: Vec<String>,
    /// The messages as the prefix cache compares them.
    pub(super) messages: Cow<'a, [Value]>,
    /// Whose prefix cache this request reads and feeds.
    pub(super) user: &'a str,
    pub(super) max_tokens: Option<u64>,
    pub(super) stream: bool,
    pub(super) model: String,
    pub(super) served: String,
}

/// Apply the directives of a validated request and work out its whole answer; `Err(status)` is
/// the `fail=` directive, which each format words in its own error body.
pub(super) fn answer(sh: &Shared, req: Prompt<'_>) -> Result<Plan, u16> {
    let mut d = Directives::default();
    req.texts.iter().for_each(|t| d.absorb(t));
    if let Some(status) = d.fail {
        return Err(u16::try_from(status).unwrap_or(500));
    }
    let counts: Vec<u64> = req
        .texts
        .iter()
        .map(|t| 4 + (t.len() as u64).div_ceil(4))
        .collect();
    let prompt = d.prompt.unwrap_or_else(|| 2 + counts.iter().sum::<u64>());
    let cached = if sh.opts.prefix_cache {
        sh.cache_hit(req.user, &req.messages, &counts)
    } else {
        0
    };
    let hit = d.hit.unwrap_or(cached).min(prompt);
    let (reasoning, content, truncated) = completion(&d, sh, req.max_tokens);
    Ok(Plan {
        stream: req.stream,
        include_usage: false,
        id: random_id(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs()),
        model: req.model,
        served: req.served,
        reasoning,
        content,
        truncated,
        prompt,
        hit,
        chunk_delay: ms(d.delay_ms, sh.opts.chunk_delay),
        first_delay: ms(d.first_delay_ms, Duration::ZERO),
        // A zero interval would spin; one millisecond is as eager as anyone needs.
        keepalive: ms(d.keepalive_ms, Duration::from_secs(1)).max(Duration::from_millis(1)),
        logprobs: None,
        d,
    })
}

/// The reasoning and content tokens of the answer, cut at `max_tokens` (then `true`).
fn completion(
    d: &Directives,
    sh: &Shared,
    max_tokens: Option<u64>,
) -> (Vec<String>, Vec<String>, bool) {
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let mut reasoning = tokens(
        THOUGHTS.iter().copied().cycle(),
        to_usize(d.reasoning.unwrap_or(0)),
    );
    let mut content = match d.reply {
        Some(n) => tokens(WORDS.iter().copied().cycle(), to_usize(n)),
        None => {
            let text = sh.opts.default_reply.as_deref().unwrap_or(DEFAULT_REPLY);
            tokens(text.split_whitespace(), text.split_whitespace().count())
        }
    };
    let mut truncated = false;
    if let Some(max) = max_tokens.map(to_usize)
        && reasoning.len() + content.len() > max
    {
        reasoning.truncate(max);
        content.truncate(max - reasoning.len());
        truncated = true;
    }
    (reasoning, content, truncated)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn directives_merge_and_later_wins() {
        let mut d = Directives::default();
        d.absorb(
            "x [[sim reply=3 fail=oops no_usage=1]] y [[sim reply=7 hit=5]] [[sim unterminated",
        );
        d.absorb("[[sim garbage=1 no_usage=0 bogus=2]]");
        assert_eq!((d.reply, d.hit, d.fail), (Some(7), Some(5), None));
        assert!(d.garbage && !d.no_usage);
    }

    #[test]
    fn tokens_cycle_with_spaces() {
        assert_eq!(
            tokens(WORDS.iter().copied().cycle(), 3),
            ["alpha ", "bravo ", "charlie"]
        );
        assert!(tokens(WORDS.iter().copied(), 0).is_empty());
    }
}
