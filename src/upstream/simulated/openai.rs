//! The simulator's OpenAI-format route (`/chat/completions`): its handler, DeepSeek's validation
//! of a chat request into a [`Prompt`], and the shapes of its answer — the `usage` object, the
//! `chat.completion` body and the `chat.completion.chunk` stream ([`OpenAiWire`]).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::accounts::Ticket;
use super::directives::{Plan, Prompt, WORDS, answer};
use super::errors::{ApiError, bearer_key, check_auth};
use super::gate::{admit, fault, refuse};
use super::stream::{Wire, respond};
use super::{Endpoint, Outcome, Shared};

const MAX_OUTPUT_TOKENS: u64 = 393_216;
const DONE: &str = "data: [DONE]\n\n";
const ERROR_EVENT: &str = "data: {\"error\":{\"message\":\"Internal server error\",\"type\":\"server_error\",\
\"param\":null,\"code\":\"internal_error\"}}\n\n";

/// Record a chat request, apply its account's fault, validate it, check and charge the account,
/// and answer it (or refuse it in DeepSeek's shape).
pub(super) async fn chat(
    State(sh): State<Arc<Shared>>,
    ticket: Option<Extension<Arc<Ticket>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let recorded = parsed.as_ref().map_or(Value::Null, Clone::clone);
    let key = bearer_key(&headers);
    let index = sh.record(Endpoint::ChatCompletions, &uri, &headers, recorded, &key);
    if let Err(refused) = fault(&sh, &key, Some(index)).await {
        return refuse(&sh, Some(index), refused, ApiError::canned);
    }
    let plan = match plan(&sh, &headers, parsed) {
        Ok(plan) => plan,
        Err(e) => {
            sh.set_outcome(index, Outcome::Failed(e.status));
            return e.into_response();
        }
    };
    match admit(&sh, &key, ticket.as_deref().map(Arc::as_ref), &plan) {
        Ok(()) => respond(&sh, index, plan, OpenAiWire),
        Err(refused) => refuse(&sh, Some(index), refused, ApiError::canned),
    }
}

/// Validate a chat request as DeepSeek does, apply its directives, and work out the whole answer.
fn plan(
    sh: &Shared,
    headers: &HeaderMap,
    parsed: Result<Value, serde_json::Error>,
) -> Result<Plan, ApiError> {
    check_auth(sh, headers)?;
    let body = parsed.map_err(|e| deser(&e))?;
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
    let prompt = Prompt {
        texts: messages.iter().map(message_text).collect(),
        messages: Cow::Borrowed(messages),
        user: user_id(obj)?,
        max_tokens: max_tokens(obj)?,
        stream: obj.get("stream") == Some(&Value::Bool(true)),
        model: model.to_owned(),
        served: model.to_owned(),
    };
    let mut plan = answer(sh, prompt).map_err(ApiError::canned)?;
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    plan.include_usage = include_usage && !plan.d.no_usage;
    if obj.get("logprobs") == Some(&Value::Bool(true)) {
        let top = obj.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0);
        if top > 20 {
            let message = "Invalid top_logprobs value, the valid range of top_logprobs is [0, 20]";
            return Err(ApiError::new(422, message, "invalid_request_error"));
        }
        plan.logprobs = usize::try_from(top).ok();
    }
    Ok(plan)
}

/// DeepSeek's 400 for a body that is not the JSON object it expects.
fn deser(e: &dyn std::fmt::Display) -> ApiError {
    let message = format!("Failed to deserialize the JSON body into the target type: {e}");
    ApiError::new(400, message, "invalid_request_error")
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

/// DeepSeek's `usage` object, or `None` under `no_usage`.
fn usage(p: &Plan) -> Option<Value> {
    let (prompt, hit, out, r) = (p.prompt, p.hit, p.output(), p.reasoning.len() as u64);
    (!p.d.no_usage).then(|| {
        if p.d.zero_usage {
            return json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
        }
        json!({"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": hit}, "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt - hit, "completion_tokens_details": {"reasoning_tokens": r}})
    })
}

fn finish(p: &Plan) -> &'static str {
    if p.truncated { "length" } else { "stop" }
}

fn chunk(p: &Plan, delta: Value, finish: Option<&str>, usage: Option<Value>) -> String {
    let mut c = json!({"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
        "system_fingerprint": "fp_sim",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    if let (Some(u), Some(obj)) = (usage, c.as_object_mut()) {
        obj.insert("usage".to_owned(), u);
    }
    format!("data: {c}\n\n")
}

/// A whole answer's `"logprobs"` member: each content token with its log probability, its
/// bytes and its `top` alternatives.
fn logprobs(p: &Plan, top: usize) -> String {
    use std::fmt::Write as _;
    let entry = |out: &mut String, token: &str, logprob: &str| {
        let bytes: Vec<String> = token.bytes().map(|b| b.to_string()).collect();
        let _ = write!(
            out,
            "{{\"token\":{},\"logprob\":{logprob},\"bytes\":[{}]",
            Value::String(token.to_owned()),
            bytes.join(",")
        );
    };
    let mut out = String::from("\"logprobs\":{\"content\":[");
    for (i, token) in p.content.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        entry(&mut out, token, "-0.125");
        out.push_str(",\"top_logprobs\":[");
        for (j, alt) in WORDS.iter().cycle().take(top).enumerate() {
            if j > 0 {
                out.push(',');
            }
            entry(&mut out, alt, "-2.5");
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// DeepSeek's OpenAI-format answer: one `chat.completion` body, or `data:` chunks ending in
/// `[DONE]` with the usage on the last content chunk.
pub(super) struct OpenAiWire;

impl Wire for OpenAiWire {
    fn whole(&self, p: &Plan) -> String {
        let mut message = json!({"role": "assistant", "content": p.content.concat()});
        if !p.reasoning.is_empty()
            && let Some(m) = message.as_object_mut()
        {
            m.insert(
                "reasoning_content".to_owned(),
                Value::String(p.reasoning.concat()),
            );
        }
        let mut body = json!({"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish(p)}]});
        if let (Some(usage), Some(b)) = (usage(p), body.as_object_mut()) {
            b.insert("usage".to_owned(), usage);
        }
        if let Some(b) = body.as_object_mut() {
            b.insert("system_fingerprint".to_owned(), json!("fp_sim"));
        }
        match p.logprobs {
            // Written as text: an answer with 20 alternatives a token runs to megabytes.
            Some(top) => body
                .to_string()
                .replacen("\"logprobs\":null", &logprobs(p, top), 1),
            None => body.to_string(),
        }
    }

    fn opening(&self, p: &Plan) -> String {
        let first = if p.reasoning.is_empty() {
            json!({"role": "assistant", "content": ""})
        } else {
            json!({"role": "assistant", "content": null, "reasoning_content": ""})
        };
        chunk(p, first, None, p.include_usage.then_some(Value::Null))
    }

    fn token(&self, p: &Plan, i: usize) -> String {
        let r = p.reasoning.len();
        let delta = match p.reasoning.get(i) {
            Some(word) => json!({"content": null, "reasoning_content": word}),
            None if r > 0 => json!({"content": p.content[i - r], "reasoning_content": null}),
            None => json!({"content": p.content[i - r]}),
        };
        chunk(p, delta, None, p.include_usage.then_some(Value::Null))
    }

    fn closing(&self, p: &Plan) -> String {
        let last = chunk(p, json!({"content": ""}), Some(finish(p)), usage(p));
        format!("{last}{DONE}")
    }

    fn error(&self) -> &'static str {
        ERROR_EVENT
    }

    fn garbage(&self, i: usize) -> String {
        format!("data: {{\"id\": garbage chunk {i}\n\n")
    }

    fn garbage_end(&self) -> &'static str {
        DONE
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn text_of_string_and_parts() {
        let parts = json!({"content": [{"type": "text", "text": "ab"}, {"type": "image_url"}, {"text": "c"}]});
        assert_eq!(message_text(&parts), "abc");
        assert_eq!(message_text(&json!({"content": null})), "");
    }
}
