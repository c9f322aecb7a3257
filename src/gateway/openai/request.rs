//! The incoming chat request (every field the client sends reaches upstream). A request is
//! read the quick way ([`view`]: byte spans, no tree) when it can be, and as a JSON map
//! otherwise (which also gives each error).

mod pieces;
mod view;

pub(super) use pieces::prompt_pieces;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use super::usage::usage_from_json;
use crate::gateway::billing::HoldNeeds;
use crate::gateway::dialect::ClientRequest;
use crate::gateway::error::GatewayError;
use crate::gateway::json::case_twin;
use crate::gateway::json::members::Members;

/// Bytes added to the body length for the prompt upper bound: the chat template's special
/// tokens. Byte-level BPE never yields more tokens than bytes, and the JSON around each
/// message is longer than its template tokens, so `body length + this` bounds the prompt.
const PROMPT_BOUND_SLACK: u64 = 64;

/// A parsed `POST /v1/chat/completions` body.
#[derive(Debug)]
pub struct ChatRequest {
    body: Body,
    /// Public model name asked for.
    pub model: String,
    /// `stream: true`?
    pub stream: bool,
    /// Did the client ask for usage on the stream (`stream_options.include_usage`)?
    pub include_usage: bool,
    /// `max_tokens` (or `max_completion_tokens`) the client asked for.
    pub max_tokens: Option<u64>,
    /// Choices asked for (`n`).
    pub n: u64,
    /// Upper bound of prompt tokens, for the hold.
    pub prompt_upper_bound: u64,
    /// Estimate of prompt tokens, for billing when upstream never reports usage.
    pub prompt_estimate: u64,
}

/// The body as read.
#[derive(Debug)]
enum Body {
    /// By its members' spans (the quick reading).
    View(Members),
    /// As a JSON map (whatever the quick reading did not take).
    Tree(Map<String, Value>),
}

/// The top-level members the gateway sets or reads (billing, the hold, the route, the
/// estimate): one written in another case is refused ([`case_twin`]).
const OWNED: &[&str] = &[
    "model",
    "messages",
    "tools",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
    "stream_options",
    "user_id",
];

/// A member that differs from one of [`OWNED`] only in case: refused, as DeepSeek might read it
/// in place of the gateway's value.
fn refuse_case_twins(body: &Map<String, Value>) -> Result<(), GatewayError> {
    for k in body.keys() {
        if let Some(owned) = case_twin(k, OWNED) {
            return Err(bad(
                format!(
                    "Unrecognized request argument `{k}`: member names are case-sensitive (did you mean `{owned}`?)."
                ),
                owned,
            ));
        }
    }
    Ok(())
}

fn bad(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: Some(param),
    }
}

fn optional_count(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(bad(format!("`{field}` must be a positive integer."), field)),
        },
    }
}

/// Bytes of text in a message's content (string, or array of parts with `text`).
fn content_bytes(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.len() as u64,
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.len() as u64,
                _ => match p.get("text") {
                    Some(Value::String(s)) => s.len() as u64,
                    _ => 0,
                },
            })
            .sum(),
        _ => 0,
    }
}

/// Check each message's shape and count the bytes of text in them (content, reasoning and
/// tool calls), for the prompt estimate.
fn messages_text_bytes(messages: &[Value]) -> Result<u64, GatewayError> {
    let mut text_bytes = 0u64;
    for m in messages {
        let Some(obj) = m.as_object() else {
            return Err(bad("Each message must be an object.", "messages"));
        };
        if !matches!(obj.get("role"), Some(Value::String(_))) {
            return Err(bad("Each message needs a string `role`.", "messages"));
        }
        match obj.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            _ => {
                return Err(bad(
                    "A message's `content` must be a string or an array.",
                    "messages",
                ));
            }
        }
        text_bytes +=
            content_bytes(obj.get("content")) + content_bytes(obj.get("reasoning_content"));
        // The participant's name goes upstream with the message: counted as content is.
        text_bytes += content_bytes(obj.get("name"));
        if let Some(calls) = obj.get("tool_calls") {
            text_bytes += calls.to_string().len() as u64;
        }
    }
    Ok(text_bytes)
}

/// `stream` and `stream_options.include_usage`.
fn stream_flags(body: &Map<String, Value>) -> Result<(bool, bool), GatewayError> {
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        _ => return Err(bad("`stream` must be a boolean.", "stream")),
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            _ => {
                return Err(bad(
                    "`stream_options.include_usage` must be a boolean.",
                    "stream_options",
                ));
            }
        },
        _ => return Err(bad("`stream_options` must be an object.", "stream_options")),
    };
    Ok((stream, include_usage))
}

impl ChatRequest {
    /// Parse and check the fields the gateway relies on; anything else is upstream's to judge.
    pub fn parse(raw: &[u8]) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse_bytes(&Bytes::copy_from_slice(raw))
    }

    /// [`ChatRequest::parse`] of a body the request keeps (no copy).
    pub fn parse_bytes(raw: &Bytes) -> Result<ChatRequest, GatewayError> {
        match view::parse(raw) {
            Some(r) => Ok(ChatRequest {
                model: r.model,
                stream: r.stream,
                include_usage: r.include_usage,
                max_tokens: r.max_tokens,
                n: r.n,
                prompt_upper_bound: raw.len() as u64 + PROMPT_BOUND_SLACK,
                prompt_estimate: estimate(r.text_bytes, r.messages),
                body: Body::View(r.members),
            }),
            None => ChatRequest::parse_tree(raw),
        }
    }

    /// The reading through a JSON map: slower, and the one that names what is wrong.
    fn parse_tree(raw: &[u8]) -> Result<ChatRequest, GatewayError> {
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| GatewayError::InvalidRequest {
                message: format!("The request body is not valid JSON: {e}."),
                param: None,
            })?;
        let Value::Object(body) = value else {
            return Err(GatewayError::InvalidRequest {
                message: "The request body must be a JSON object.".into(),
                param: None,
            });
        };
        refuse_case_twins(&body)?;
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) => {
                return Err(bad("Missing required parameter: `model`.", "model"));
            }
            _ => return Err(bad("`model` must be a non-empty string.", "model")),
        };
        let messages = match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => return Err(bad("`messages` must not be empty.", "messages")),
            None | Some(Value::Null) => {
                return Err(bad("Missing required parameter: `messages`.", "messages"));
            }
            _ => {
                return Err(bad(
                    "`messages` must be an array of message objects.",
                    "messages",
                ));
            }
        };
        let mut text_bytes = messages_text_bytes(messages)?;
        match body.get("tools") {
            None => {}
            Some(tools @ (Value::Array(_) | Value::Null)) => {
                text_bytes += tools.to_string().len() as u64;
            }
            Some(_) => {
                return Err(bad("`tools` must be an array of tool objects.", "tools"));
            }
        }
        let (stream, include_usage) = stream_flags(&body)?;
        let max_tokens = match optional_count(&body, "max_tokens")? {
            Some(n) => Some(n),
            None => optional_count(&body, "max_completion_tokens")?,
        };
        let n = optional_count(&body, "n")?.unwrap_or(1);
        if n > 16 {
            return Err(bad("`n` must be at most 16.", "n"));
        }
        let prompt_estimate = estimate(text_bytes, messages.len() as u64);
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            max_tokens,
            n,
            prompt_upper_bound: raw.len() as u64 + PROMPT_BOUND_SLACK,
            prompt_estimate,
            body: Body::Tree(body),
        })
    }
}

/// Prompt tokens estimated from the bytes of text and the number of messages.
fn estimate(text_bytes: u64, messages: u64) -> u64 {
    text_bytes.div_ceil(4) + 4 * messages + 2
}

impl ClientRequest for ChatRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn hold_needs(&self) -> HoldNeeds {
        HoldNeeds {
            prompt_upper_bound: self.prompt_upper_bound,
            max_tokens: self.max_tokens,
            n: self.n,
        }
    }

    fn prompt_estimate(&self) -> u64 {
        self.prompt_estimate
    }

    /// The client's fields, with what the gateway owns replaced; a stream always asks
    /// upstream for usage.
    fn upstream_body(self, upstream_model: &str, user_id: &str, max_tokens: u64) -> Vec<u8> {
        let stream = self.stream;
        let mut body = match self.body {
            Body::View(m) => {
                return view::upstream_body(&m, stream, upstream_model, user_id, max_tokens);
            }
            Body::Tree(body) => body,
        };
        body.insert("model".into(), Value::String(upstream_model.into()));
        body.insert("user_id".into(), Value::String(user_id.into()));
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), Value::from(max_tokens));
        if stream {
            let mut opts = match body.remove("stream_options") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            // A twin (`INCLUDE_USAGE`) goes: an upstream reading names regardless of case
            // could take it over ours.
            opts.retain(|k, _| case_twin(k, &["include_usage"]).is_none());
            opts.insert("include_usage".into(), Value::Bool(true));
            body.insert("stream_options".into(), Value::Object(opts));
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::billing::Usage;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn rejects_bad_bodies_with_the_field() {
        let cases = [
            (
                json!({"messages":[{"role":"user","content":"hi"}]}),
                Some("model"),
            ),
            (json!({"model":"m"}), Some("messages")),
            (json!({"model":"m","messages":[]}), Some("messages")),
            (json!({"model":"m","messages":"hi"}), Some("messages")),
            (
                json!({"model":1,"messages":[{"role":"user","content":"hi"}]}),
                Some("model"),
            ),
            (
                json!({"model":"m","messages":[{"content":"hi"}]}),
                Some("messages"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}),
                Some("stream"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}),
                Some("max_tokens"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":0}),
                Some("max_tokens"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":1}),
                Some("stream_options"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":"x"}),
                Some("tools"),
            ),
            (
                json!({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":{"type":"function"}}),
                Some("tools"),
            ),
            (json!([1, 2]), None),
        ];
        for (body, param) in cases {
            match parse(body.clone()) {
                Err(GatewayError::InvalidRequest { param: p, .. }) => {
                    assert_eq!(p, param, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(ChatRequest::parse(b"{not json").is_err());
    }

    #[test]
    fn upstream_body_keeps_client_fields_and_owns_the_rest() {
        let r = parse(json!({
            "model":"deepseek-v4-flash","messages":[{"role":"user","content":"hi","name":"bob"}],
            "temperature":0.3,"stream":true,"max_completion_tokens":50,"user_id":"spoof",
            "logit_bias":{}
        }))
        .unwrap();
        assert!(r.stream && !r.include_usage);
        assert_eq!(r.max_tokens, Some(50));
        let up: Value = serde_json::from_slice(&r.upstream_body("up-model", "key_x", 20)).unwrap();
        assert_eq!(up["model"], "up-model");
        assert_eq!(up["user_id"], "key_x");
        assert_eq!(up["max_tokens"], 20);
        assert!(up.get("max_completion_tokens").is_none());
        assert_eq!(up["stream_options"]["include_usage"], true);
        assert_eq!(up["temperature"], 0.3);
        assert_eq!(up["messages"][0]["name"], "bob");
        assert_eq!(up["logit_bias"], json!({}));
    }

    #[test]
    fn prompt_bounds() {
        let body = json!({"model":"m","messages":[{"role":"user","content":"x".repeat(400)}]});
        let raw = serde_json::to_vec(&body).unwrap();
        let r = ChatRequest::parse(&raw).unwrap();
        assert_eq!(r.prompt_estimate, 100 + 4 + 2);
        assert_eq!(r.prompt_upper_bound, raw.len() as u64 + 64);
        assert!(r.prompt_estimate <= r.prompt_upper_bound);
    }

    #[test]
    fn usage_split_and_fallback() {
        let u = usage_from_json(&json!({"prompt_tokens":100,"completion_tokens":30,
            "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36,
            "completion_tokens_details":{"reasoning_tokens":10}}))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt: 100,
                hit: 64,
                miss: 36,
                completion: 30,
                reasoning: 10
            }
        );
        let u = usage_from_json(&json!({"prompt_tokens":100,"completion_tokens":30})).unwrap();
        assert_eq!((u.hit, u.miss), (0, 100));
        assert!(usage_from_json(&Value::Null).is_none());
    }

    /// A member that differs from one the gateway owns only in case is refused (a Go-style
    /// reader upstream would take `MAX_TOKENS` over the gateway's `max_tokens`), by both
    /// readings; text hidden in a message's `name` or in a bare string part counts (found by
    /// an independent check).
    #[test]
    fn case_twins_are_refused_and_hidden_text_counts() {
        for twin in [
            r#""MAX_TOKENS":30000"#,
            r#""Model":"deepseek-v4-pro""#,
            r#""N":16"#,
            r#""Stream":true"#,
            r#""Stream_Options":{"include_usage":false}"#,
            r#""User_Id":"someone""#,
            r#""max_toKens":9"#,
            "\"\u{17f}tream\":true",
        ] {
            let raw = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":5,{twin}}}"#
            );
            match ChatRequest::parse(raw.as_bytes()) {
                Err(GatewayError::InvalidRequest { message, .. }) => {
                    assert!(message.contains("case-sensitive"), "{message}")
                }
                other => panic!("{raw}: {:?}", other.map(|r| r.max_tokens)),
            }
        }
        let big = "x".repeat(4000);
        for raw in [
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","name":"{big}","content":"hi"}}]}}"#
            ),
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":["{big}"]}}]}}"#),
        ] {
            let quick = ChatRequest::parse(raw.as_bytes()).unwrap();
            assert!(matches!(quick.body, Body::View(_)));
            assert!(quick.prompt_estimate >= 1000, "{}", quick.prompt_estimate);
            // The tree agrees.
            let tree = ChatRequest::parse_tree(raw.as_bytes()).unwrap();
            assert_eq!(tree.prompt_estimate, quick.prompt_estimate);
        }
    }

    /// A twin of `include_usage` inside `stream_options` does not reach upstream (the
    /// gateway's `include_usage` is the one a case-insensitive reader would take).
    #[test]
    fn a_nested_include_usage_twin_is_dropped() {
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":false,"x":1}}"#;
        for r in [
            ChatRequest::parse(raw).unwrap(),
            ChatRequest::parse_tree(raw).unwrap(),
        ] {
            let up: Value = serde_json::from_slice(&r.upstream_body("m", "key_x", 9)).unwrap();
            assert_eq!(
                up["stream_options"],
                serde_json::json!({"include_usage": true, "x": 1}),
                "{up}"
            );
        }
    }
}
