//! The simulator's Anthropic-format route (`POST /anthropic/v1/messages` and
//! `/anthropic/messages`): its handler, the key check (Bearer wins over `x-api-key`), DeepSeek's
//! validation of a Messages request and its `claude*` model mapping, turned into the shared
//! [`Prompt`]. The answer's shapes are in `anthropic_wire.rs`, the account checks in `gate.rs`.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::accounts::Ticket;
use super::anthropic_wire::AnthropicWire;
use super::directives::{Plan, Prompt, answer};
use super::errors::{AnthropicError, anthropic_key, check_key};
use super::gate::{admit, fault, refuse};
use super::stream::respond;
use super::{Endpoint, Outcome, Shared};

/// Record a Messages request, apply its account's fault, validate it, check and charge the
/// account, and answer it (or refuse it in Anthropic's shape).
pub(super) async fn messages(
    State(sh): State<Arc<Shared>>,
    ticket: Option<Extension<Arc<Ticket>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let recorded = parsed.as_ref().map_or(Value::Null, Clone::clone);
    let key = anthropic_key(&headers);
    let index = sh.record(Endpoint::AnthropicMessages, &uri, &headers, recorded, &key);
    if let Err(refused) = fault(&sh, &key, Some(index)).await {
        return refuse(&sh, Some(index), refused, AnthropicError::canned);
    }
    let plan = match plan(&sh, &key, parsed) {
        Ok(plan) => plan,
        Err(e) => {
            sh.set_outcome(index, Outcome::Failed(e.status));
            return e.into_response();
        }
    };
    match admit(&sh, &key, ticket.as_deref().map(Arc::as_ref), &plan) {
        Ok(()) => respond(&sh, index, plan, AnthropicWire),
        Err(refused) => refuse(&sh, Some(index), refused, AnthropicError::canned),
    }
}

fn invalid(message: impl Into<String>) -> AnthropicError {
    AnthropicError::invalid(message)
}

/// Check the key, validate the request as DeepSeek does, and work out the whole answer.
fn plan(
    sh: &Shared,
    key: &str,
    parsed: Result<Value, serde_json::Error>,
) -> Result<Plan, AnthropicError> {
    check_key(sh, key).map_err(|m| AnthropicError::new(401, "authentication_error", m))?;
    let body = parsed.map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("The request body must be a JSON object"))?;
    let requested = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("model: Field required"))?;
    let served = served_model(sh, requested).ok_or_else(|| invalid("Model Not Exist"))?;
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid("max_tokens: Field required")),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("max_tokens: Input should be a positive integer"))?,
    };
    let (mut texts, mut cached) = (Vec::new(), Vec::new());
    if let Some(system) = obj.get("system").filter(|s| !s.is_null()) {
        texts.push(system_text(system)?);
        // The system prompt leads the prefix the cache compares, as a system message does in
        // the OpenAI format.
        cached.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in message_list(obj)?.iter().enumerate() {
        texts.push(message_text(m, i)?);
        cached.push(m.clone());
    }
    let user = user_id(obj)?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
    };
    check_options(obj)?;
    let prompt = Prompt {
        texts,
        messages: Cow::Owned(cached),
        user,
        max_tokens: Some(max_tokens),
        stream,
        model: requested.to_owned(),
        served,
    };
    let mut plan = answer(sh, prompt).map_err(AnthropicError::canned)?;
    plan.id = format!("msg_{:024x}", rand::random::<u128>() >> 32);
    Ok(plan)
}

/// DeepSeek's mapping: its own names as they are, `claude-opus*` → pro, other `claude*` → flash.
fn served_model(sh: &Shared, requested: &str) -> Option<String> {
    if sh.opts.models.iter().any(|m| m == requested) {
        Some(requested.to_owned())
    } else if requested.starts_with("claude-opus") {
        Some("deepseek-v4-pro".to_owned())
    } else if requested.starts_with("claude") {
        Some("deepseek-v4-flash".to_owned())
    } else {
        None
    }
}

/// `messages`: a non-empty array of `{role: user|assistant, content}`.
fn message_list(obj: &Map<String, Value>) -> Result<&[Value], AnthropicError> {
    let messages = obj
        .get("messages")
        .ok_or_else(|| invalid("messages: Field required"))?
        .as_array()
        .ok_or_else(|| invalid("messages: Input should be a valid list"))?;
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    Ok(messages)
}

/// The text of message `i`, after checking its role and content.
fn message_text(m: &Value, i: usize) -> Result<String, AnthropicError> {
    let at = format!("messages.{i}");
    match m.get("role").and_then(Value::as_str) {
        Some("user" | "assistant") => {}
        _ => {
            return Err(invalid(format!(
                "{at}.role: Input should be 'user' or 'assistant'"
            )));
        }
    }
    let content = m
        .get("content")
        .ok_or_else(|| invalid(format!("{at}.content: Field required")))?;
    content_text(content, &at)
}

/// The text of a content that is a string or a list of blocks.
fn content_text(content: &Value, at: &str) -> Result<String, AnthropicError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| block_text(b, &format!("{at}.content.{j}")))
            .collect(),
        _ => Err(invalid(format!(
            "{at}.content: Input should be a valid string or list of content blocks"
        ))),
    }
}

/// The text a block adds to the prompt: text, thinking, a tool call's name and input, a tool
/// result's content; other types (image, document, redacted_thinking, …) add none.
fn block_text(b: &Value, at: &str) -> Result<String, AnthropicError> {
    let field = |name: &str| {
        b.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("{at}.{name}: Field required")))
    };
    match field("type")?.as_str() {
        "text" => field("text"),
        "thinking" => field("thinking"),
        "tool_use" => {
            let input = b.get("input").map_or_else(String::new, Value::to_string);
            Ok(format!("{} {input}", field("name")?))
        }
        "tool_result" => match b.get("content") {
            None | Some(Value::Null) => Ok(String::new()),
            Some(c) => content_text(c, at),
        },
        _ => Ok(String::new()),
    }
}

/// `system`: a string or a list of text blocks.
fn system_text(system: &Value) -> Result<String, AnthropicError> {
    let bad = || invalid("system: Input should be a valid string or list of text blocks");
    match system {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match (b.get("type"), b.get("text")) {
                (Some(t), Some(Value::String(text))) if t == "text" => Ok(text.clone()),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// `metadata.user_id`, which keys the prefix cache (`anon` when absent); it must be a string.
fn user_id(obj: &Map<String, Value>) -> Result<&str, AnthropicError> {
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => return Ok("anon"),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("metadata: Input should be a valid object")),
    };
    match metadata.get("user_id") {
        None | Some(Value::Null) => Ok("anon"),
        Some(Value::String(u)) => Ok(u),
        Some(_) => Err(invalid("metadata.user_id: Input should be a valid string")),
    }
}

/// The types of the optional fields DeepSeek accepts (their values do not steer the simulator).
fn check_options(obj: &Map<String, Value>) -> Result<(), AnthropicError> {
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let ok = |k: &str, valid: fn(&Value) -> bool, what: &str| match present(k) {
        Some(v) if !valid(v) => Err(invalid(format!("{k}: Input should be {what}"))),
        _ => Ok(()),
    };
    ok("tools", valid_tools, "a list of tools with a name")?;
    ok(
        "tool_choice",
        valid_tool_choice,
        "an object of type auto, any, tool or none",
    )?;
    ok(
        "thinking",
        |v| v.get("type").is_some_and(Value::is_string),
        "an object with a type",
    )?;
    ok("temperature", Value::is_number, "a valid number")?;
    ok("top_p", Value::is_number, "a valid number")?;
    ok("top_k", Value::is_u64, "a non-negative integer")?;
    ok(
        "stop_sequences",
        |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "a list of strings",
    )
}

fn valid_tools(v: &Value) -> bool {
    v.as_array().is_some_and(|tools| {
        tools
            .iter()
            .all(|t| t.get("name").is_some_and(Value::is_string))
    })
}

fn valid_tool_choice(v: &Value) -> bool {
    match v.get("type").and_then(Value::as_str) {
        Some("auto" | "any" | "none") => true,
        Some("tool") => v.get("name").is_some_and(Value::is_string),
        _ => false,
    }
}
