//! How the simulator interprets a chat request: DeepSeek's validation, the `[[sim …]]`
//! directives, deterministic token counting, and the resulting [`Plan`] of the answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::Shared;
use super::errors::{ApiError, check_auth};

const MAX_OUTPUT_TOKENS: u64 = 393_216;
const DEFAULT_REPLY: &str = "Hello! This is a simulated DeepSeek answer from the modelrelay demo upstream; \
no real model was called, so the reply is always the same.";
const WORDS: &[&str] = &[
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
    pub(super) no_usage: bool,
    pub(super) garbage: bool,
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
                    "no_usage" => {
                        self.no_usage = n != 0;
                        continue;
                    }
                    "garbage" => {
                        self.garbage = n != 0;
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

/// The text of a message whose content is a string or an array of content parts.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
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
fn random_id() -> String {
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

/// Everything needed to produce one successful answer.
pub(super) struct Plan {
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) reasoning: Vec<String>,
    pub(super) content: Vec<String>,
    pub(super) finish: &'static str,
    pub(super) usage: Option<Value>,
    pub(super) chunk_delay: Duration,
    pub(super) first_delay: Duration,
    pub(super) keepalive: Duration,
    pub(super) d: Directives,
}

/// What DeepSeek's validation accepted of a request body.
struct Checked<'a> {
    obj: &'a Map<String, Value>,
    model: &'a str,
    messages: &'a [Value],
    user: &'a str,
    max_tokens: Option<u64>,
}

/// Validate a request as DeepSeek does, apply its directives, and work out the whole answer.
pub(super) fn plan(
    sh: &Shared,
    auth: Option<&str>,
    parsed: Result<Value, serde_json::Error>,
) -> Result<Plan, ApiError> {
    check_auth(&sh.opts, auth)?;
    let body = parsed.map_err(|e| deser(&e))?;
    let req = check(sh, &body)?;

    let texts: Vec<String> = req.messages.iter().map(message_text).collect();
    let mut d = Directives::default();
    texts.iter().for_each(|t| d.absorb(t));
    if let Some(status) = d.fail {
        return Err(ApiError::canned(u16::try_from(status).unwrap_or(500)));
    }

    let counts: Vec<u64> = texts
        .iter()
        .map(|t| 4 + (t.len() as u64).div_ceil(4))
        .collect();
    let prompt = d.prompt.unwrap_or_else(|| 2 + counts.iter().sum::<u64>());
    let cached = if sh.opts.prefix_cache {
        sh.cache_hit(req.user, req.messages, &counts)
    } else {
        0
    };
    let hit = d.hit.unwrap_or(cached).min(prompt);

    let (reasoning, content, finish) = completion(&d, sh, req.max_tokens);
    let r = reasoning.len() as u64;
    let c = r + content.len() as u64;
    let usage = (!d.no_usage).then(|| {
        json!({"prompt_tokens": prompt, "completion_tokens": c, "total_tokens": prompt + c,
            "prompt_tokens_details": {"cached_tokens": hit}, "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt - hit, "completion_tokens_details": {"reasoning_tokens": r}})
    });
    let include_usage = req
        .obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    Ok(Plan {
        stream: req.obj.get("stream") == Some(&Value::Bool(true)),
        include_usage: include_usage && !d.no_usage,
        id: random_id(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs()),
        model: req.model.to_owned(),
        reasoning,
        content,
        finish,
        usage,
        chunk_delay: ms(d.delay_ms, sh.opts.chunk_delay),
        first_delay: ms(d.first_delay_ms, Duration::ZERO),
        // A zero interval would spin; one millisecond is as eager as anyone needs.
        keepalive: ms(d.keepalive_ms, Duration::from_secs(1)).max(Duration::from_millis(1)),
        d,
    })
}

/// DeepSeek's 400 for a body that is not the JSON object it expects.
fn deser(e: &dyn std::fmt::Display) -> ApiError {
    let message = format!("Failed to deserialize the JSON body into the target type: {e}");
    ApiError::new(400, message, "invalid_request_error")
}

/// DeepSeek's checks of the body, in the order it reports them.
fn check<'a>(sh: &Shared, body: &'a Value) -> Result<Checked<'a>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| deser(&"invalid type: expected a JSON object"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| sh.opts.models.iter().any(|x| x == m));
    let model =
        model.ok_or_else(|| ApiError::new(400, "Model Not Exist", "invalid_request_error"))?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid parameters: `messages` must be a non-empty array",
                "invalid_request_error",
            )
        })?;
    Ok(Checked {
        obj,
        model,
        messages,
        user: user_id(obj)?,
        max_tokens: max_tokens(obj)?,
    })
}

/// The `user_id` that keys the prefix cache (`anon` when absent), as DeepSeek restricts it.
fn user_id(obj: &Map<String, Value>) -> Result<&str, ApiError> {
    match obj.get("user_id") {
        None | Some(Value::Null) => Ok("anon"),
        Some(Value::String(u))
            if !u.is_empty()
                && u.len() <= 512
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(u)
        }
        Some(_) => Err(ApiError::new(
            400,
            "Invalid user_id: must match [a-zA-Z0-9\\-_]+ and be at most 512 bytes",
            "invalid_request_error",
        )),
    }
}

/// The `max_tokens` cap, if any, within DeepSeek's accepted range.
fn max_tokens(obj: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match obj.get("max_tokens") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|n| (1..=MAX_OUTPUT_TOKENS).contains(n)) {
            Some(n) => Ok(Some(n)),
            None => {
                let message = format!(
                    "Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_OUTPUT_TOKENS}]"
                );
                Err(ApiError::new(422, message, "invalid_request_error"))
            }
        },
    }
}

/// The reasoning and content tokens of the answer and its finish reason, cut at `max_tokens`.
fn completion(
    d: &Directives,
    sh: &Shared,
    max_tokens: Option<u64>,
) -> (Vec<String>, Vec<String>, &'static str) {
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
    let mut finish = "stop";
    if let Some(max) = max_tokens.map(to_usize)
        && reasoning.len() + content.len() > max
    {
        reasoning.truncate(max);
        content.truncate(max - reasoning.len());
        finish = "length";
    }
    (reasoning, content, finish)
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
    fn text_and_tokens() {
        let parts = json!({"content": [{"type": "text", "text": "ab"}, {"type": "image_url"}, {"text": "c"}]});
        assert_eq!(message_text(&parts), "abc");
        assert_eq!(message_text(&json!({"content": null})), "");
        assert_eq!(
            tokens(WORDS.iter().copied().cycle(), 3),
            ["alpha ", "bravo ", "charlie"]
        );
        assert!(tokens(WORDS.iter().copied(), 0).is_empty());
    }
}
