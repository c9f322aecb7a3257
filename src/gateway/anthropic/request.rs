//! An incoming Messages request (every field the client sends reaches upstream), checked for
//! what the gateway relies on, with what the gateway owns rewritten: `model` (the upstream
//! name), `max_tokens` (lowered to what the key can pay for) and `metadata.user_id` (the key's
//! id: DeepSeek isolates cache and scheduling per end user). A request is read the quick way
//! ([`view`]: byte spans, no tree) when it can be, and as a JSON map otherwise (which also
//! gives each error).

mod pieces;
mod view;

pub(super) use pieces::prompt_pieces;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::gateway::billing::HoldNeeds;
use crate::gateway::dialect::ClientRequest;
use crate::gateway::error::GatewayError;
use crate::gateway::json::case_twin;
use crate::gateway::json::members::Members;

/// Bytes added to the body length for the prompt's upper bound: the template's special
/// tokens (byte-level BPE never yields more tokens than bytes).
const PROMPT_BOUND_SLACK: u64 = 64;

/// A parsed `POST /v1/messages` body.
#[derive(Debug)]
pub struct MessagesRequest {
    body: Body,
    /// Model name asked for.
    pub model: String,
    /// `stream: true`?
    pub stream: bool,
    /// `max_tokens` the client asked for (required in this API).
    pub max_tokens: u64,
    /// Upper bound of prompt tokens, for the hold.
    pub prompt_upper_bound: u64,
    /// Estimate of prompt tokens (when upstream never reports usage, and for `count_tokens`).
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
/// estimate): one written in another case is refused ([`case_twin`]). `user_id` is not
/// Anthropic's, but it is how DeepSeek's OpenAI endpoint isolates users: a client's is dropped,
/// so that the identity upstream is only ever the key's (`metadata.user_id`).
const OWNED: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "max_tokens",
    "stream",
    "metadata",
    "user_id",
    // Dropped (see `NOT_ANTHROPIC`): a twin (`N`) would reach an upstream that reads names
    // regardless of case (found by a review).
    "max_completion_tokens",
    "n",
];

/// OpenAI's members that would lengthen or multiply an answer beyond what the hold covers
/// (`max_tokens` × 1): not Anthropic's, so never sent on, in case DeepSeek's endpoint read them
/// as its OpenAI one does (found by an independent check: forwarded as written).
const NOT_ANTHROPIC: &[&str] = &["max_completion_tokens", "n"];

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: None,
    }
}

/// Bytes of text in a `content` (a string, or blocks: text, thinking, tool use and results).
fn content_bytes(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.len() as u64,
        Some(Value::Array(blocks)) => blocks.iter().map(block_bytes).sum(),
        _ => 0,
    }
}

fn block_bytes(b: &Value) -> u64 {
    let text = |k: &str| {
        b.get(k)
            .and_then(Value::as_str)
            .map_or(0, |s| s.len() as u64)
    };
    match b.get("type").and_then(Value::as_str) {
        Some("tool_use") => text("name") + b.get("input").map_or(0, |i| i.to_string().len() as u64),
        Some("tool_result") => content_bytes(b.get("content")),
        Some("thinking") => text("thinking"),
        // Any other block (text, document, search result…): its text and what it contains.
        _ => text("text") + content_bytes(b.get("content")),
    }
}

/// The whole body as a JSON object.
fn object(raw: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| bad(format!("The request body is not valid JSON: {e}.")))?;
    match value {
        Value::Object(body) => {
            // A member that differs from one the gateway owns only in case: DeepSeek might
            // read it in place of the gateway's value.
            if let Some((k, owned)) = body
                .keys()
                .find_map(|k| case_twin(k, OWNED).map(|o| (k, o)))
            {
                return Err(bad(format!(
                    "{k}: Extra inputs are not permitted (member names are case-sensitive; did you mean `{owned}`?)"
                )));
            }
            Ok(body)
        }
        _ => Err(bad("The request body must be a JSON object.")),
    }
}

/// `model`: a non-empty string.
fn model_of(body: &Map<String, Value>) -> Result<String, GatewayError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        None | Some(Value::Null) => Err(bad("model: Field required")),
        _ => Err(bad("model: Input should be a non-empty string")),
    }
}

/// Check `messages` and `system`, and count the bytes of text in them and in `tools`.
fn prompt_text_bytes(body: &Map<String, Value>) -> Result<(u64, u64), GatewayError> {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(bad("messages: at least one message is required")),
        None | Some(Value::Null) => return Err(bad("messages: Field required")),
        _ => return Err(bad("messages: Input should be a valid list")),
    };
    let mut bytes = 0u64;
    for m in messages {
        let Some(obj) = m.as_object() else {
            return Err(bad("messages: each message must be an object"));
        };
        if !matches!(obj.get("role"), Some(Value::String(_))) {
            return Err(bad("messages: each message needs a string `role`"));
        }
        match obj.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => {
                return Err(bad(
                    "messages: `content` must be a string or a list of blocks",
                ));
            }
        }
        bytes += content_bytes(obj.get("content"));
    }
    match body.get("system") {
        None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
        _ => return Err(bad("system: must be a string or a list of text blocks")),
    }
    bytes += content_bytes(body.get("system"));
    match body.get("tools") {
        None => {}
        Some(tools @ (Value::Array(_) | Value::Null)) => bytes += tools.to_string().len() as u64,
        Some(_) => return Err(bad("tools: Input should be a valid list")),
    }
    Ok((bytes, messages.len() as u64))
}

/// What `count_tokens` answers: the prompt estimate of a body (no `max_tokens` needed).
pub fn count_tokens(raw: &Bytes) -> Result<(String, u64), GatewayError> {
    if let Some(q) = view::parse(raw) {
        return Ok((q.model, estimate(q.text_bytes, q.messages)));
    }
    count_tokens_tree(raw)
}

/// [`count_tokens`] through a JSON map.
fn count_tokens_tree(raw: &[u8]) -> Result<(String, u64), GatewayError> {
    let body = object(raw)?;
    let model = model_of(&body)?;
    let (bytes, messages) = prompt_text_bytes(&body)?;
    Ok((model, estimate(bytes, messages)))
}

/// Four bytes a token, and a few tokens of template per message.
fn estimate(text_bytes: u64, messages: u64) -> u64 {
    text_bytes.div_ceil(4) + 4 * messages + 2
}

impl MessagesRequest {
    /// Parse and check the fields the gateway relies on; anything else is upstream's to judge.
    pub fn parse(raw: &Bytes) -> Result<MessagesRequest, GatewayError> {
        match view::parse(raw) {
            Some(view::Quick {
                members,
                model,
                stream,
                max_tokens: Some(max_tokens),
                text_bytes,
                messages,
            }) => Ok(MessagesRequest {
                model,
                stream,
                max_tokens,
                prompt_upper_bound: raw.len() as u64 + PROMPT_BOUND_SLACK,
                prompt_estimate: estimate(text_bytes, messages),
                body: Body::View(members),
            }),
            _ => MessagesRequest::parse_tree(raw),
        }
    }

    /// The reading through a JSON map: slower, and the one that names what is wrong.
    fn parse_tree(raw: &[u8]) -> Result<MessagesRequest, GatewayError> {
        let body = object(raw)?;
        let model = model_of(&body)?;
        let max_tokens = match body.get("max_tokens") {
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => n,
                _ => return Err(bad("max_tokens: Input should be a positive integer")),
            },
            None => return Err(bad("max_tokens: Field required")),
        };
        let (bytes, messages) = prompt_text_bytes(&body)?;
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            _ => return Err(bad("stream: Input should be a valid boolean")),
        };
        match body.get("metadata") {
            None | Some(Value::Null | Value::Object(_)) => {}
            _ => return Err(bad("metadata: Input should be an object")),
        }
        Ok(MessagesRequest {
            model,
            stream,
            max_tokens,
            prompt_upper_bound: raw.len() as u64 + PROMPT_BOUND_SLACK,
            prompt_estimate: estimate(bytes, messages),
            body: Body::Tree(body),
        })
    }
}

impl ClientRequest for MessagesRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn hold_needs(&self) -> HoldNeeds {
        HoldNeeds {
            prompt_upper_bound: self.prompt_upper_bound,
            max_tokens: Some(self.max_tokens),
            n: 1,
        }
    }

    fn prompt_estimate(&self) -> u64 {
        self.prompt_estimate
    }

    fn upstream_body(self, upstream_model: &str, user_id: &str, max_tokens: u64) -> Vec<u8> {
        let mut body = match self.body {
            Body::View(m) => return view::upstream_body(&m, upstream_model, user_id, max_tokens),
            Body::Tree(body) => body,
        };
        body.insert("model".into(), Value::String(upstream_model.into()));
        body.insert("max_tokens".into(), Value::from(max_tokens));
        body.remove("user_id");
        for other in NOT_ANTHROPIC {
            body.remove(*other);
        }
        let mut metadata = match body.remove("metadata") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        // A twin of `user_id` (`USER_ID`) goes: an upstream reading names regardless of case
        // could take it over ours.
        metadata.retain(|k, _| case_twin(k, &["user_id"]).is_none());
        metadata.insert("user_id".into(), Value::String(user_id.into()));
        body.insert("metadata".into(), Value::Object(metadata));
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<MessagesRequest, GatewayError> {
        MessagesRequest::parse(&Bytes::from(serde_json::to_vec(&v).unwrap()))
    }

    #[test]
    fn required_fields_and_shapes() {
        let ok = json!({"model":"claude-sonnet-4","max_tokens":10,
            "messages":[{"role":"user","content":"hi"}]});
        assert!(parse(ok.clone()).is_ok());
        for (field, v) in [
            ("model", Value::Null),
            ("max_tokens", json!(0)),
            ("max_tokens", json!("10")),
            ("messages", json!([])),
            ("messages", json!([{"role":"user","content":7}])),
            ("system", json!(5)),
            ("stream", json!("yes")),
            ("metadata", json!("x")),
            ("tools", json!("x")),
            ("tools", json!({"name": "bash"})),
        ] {
            let mut b = ok.clone();
            b[field] = v;
            assert!(parse(b).is_err(), "{field}");
        }
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove("max_tokens");
        assert!(parse(b).is_err(), "max_tokens is required");
    }

    /// `n` and `max_completion_tokens` (OpenAI's) do not reach DeepSeek, whichever reading
    /// took the body (an escaped key sends it to the tree).
    #[test]
    fn openai_members_that_lengthen_an_answer_are_not_sent_on() {
        for model_key in ["model", r"mod\u0065l"] {
            let raw = format!(
                r#"{{"{model_key}":"claude-opus-4-1","max_tokens":1,"max_completion_tokens":32000,"n":16,"top_k":5,"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let r = MessagesRequest::parse(&Bytes::from(raw)).unwrap();
            let up: Value =
                serde_json::from_slice(&r.upstream_body("deepseek-v4-pro", "key_x", 1)).unwrap();
            let up = up.as_object().unwrap();
            assert!(
                !up.contains_key("max_completion_tokens"),
                "{model_key}: {up:?}"
            );
            assert!(!up.contains_key("n"), "{model_key}: {up:?}");
            assert_eq!(up["top_k"], 5, "{model_key}: {up:?}");
            assert_eq!(up["max_tokens"], 1, "{model_key}: {up:?}");
        }
        // Written in another case they are refused, as the gateway's own members are.
        for twin in [r#""N":16"#, r#""Max_Completion_Tokens":32000"#] {
            for model_key in ["model", r"mod\u0065l"] {
                let raw = format!(
                    r#"{{"{model_key}":"claude-opus-4-1","max_tokens":1,{twin},"messages":[{{"role":"user","content":"hi"}}]}}"#
                );
                let err = MessagesRequest::parse(&Bytes::from(raw)).unwrap_err();
                assert!(
                    matches!(err, GatewayError::InvalidRequest { .. }),
                    "{twin} {model_key}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn the_gateway_owns_model_max_tokens_and_user_id() {
        let r = parse(
            json!({"model":"claude-opus-4-1","max_tokens":32000,"stream":true,
            "system":[{"type":"text","text":"be brief"}],
            "metadata":{"user_id":"spoof","other":1},"tools":[{"name":"bash"}],
            "thinking":{"type":"enabled","budget_tokens":1024},
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}),
        )
        .unwrap();
        assert!(r.stream);
        let up: Value =
            serde_json::from_slice(&r.upstream_body("deepseek-v4-pro", "key_x", 99)).unwrap();
        assert_eq!(up["model"], "deepseek-v4-pro");
        assert_eq!(up["max_tokens"], 99);
        assert_eq!(up["metadata"], json!({"user_id":"key_x","other":1}));
        assert_eq!(up["thinking"]["budget_tokens"], 1024);
        assert_eq!(up["system"][0]["text"], "be brief");
        assert_eq!(up["tools"][0]["name"], "bash");
    }

    #[test]
    fn prompt_counts_every_kind_of_block() {
        let raw = Bytes::from(serde_json::to_vec(&json!({"model":"m","max_tokens":1,"system":"abcd",
            "messages":[{"role":"user","content":[{"type":"text","text":"x".repeat(40)},
                {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"yyyy"}]}]},
                {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"ls","input":{}}]}]}))
        .unwrap());
        let r = MessagesRequest::parse(&raw).unwrap();
        // 4 (system) + 40 + 4 (tool result) + 2 ("ls") + 2 ("{}") = 52 bytes → 13, plus 2 × 4 + 2.
        assert_eq!(r.prompt_estimate, 13 + 8 + 2);
        assert_eq!(r.prompt_upper_bound, raw.len() as u64 + 64);
        assert_eq!(count_tokens(&raw).unwrap().1, r.prompt_estimate);
    }

    /// As in the OpenAI dialect: case twins of owned members refused by both readings; the
    /// text of a document or search result block counts toward the estimate.
    #[test]
    fn case_twins_are_refused_and_block_text_counts() {
        for twin in [
            r#""MAX_TOKENS":30000"#,
            r#""Model":"deepseek-v4-pro""#,
            r#""Metadata":{"user_id":"someone"}"#,
            r#""SYSTEM":"x""#,
        ] {
            let raw = format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}],{twin}}}"#
            );
            match MessagesRequest::parse(&Bytes::from(raw.clone())) {
                Err(GatewayError::InvalidRequest { message, .. }) => {
                    assert!(message.contains("case-sensitive"), "{message}")
                }
                Err(e) => panic!("{raw}: {e:?}"),
                Ok(_) => panic!("{raw}: accepted"),
            }
            assert!(count_tokens(&Bytes::from(raw)).is_err());
        }
        let big = "x".repeat(4000);
        for block in [
            format!(
                r#"{{"type":"search_result","source":"s","title":"t","content":[{{"type":"text","text":"{big}"}}]}}"#
            ),
            format!(r#"{{"type":"document","content":"{big}"}}"#),
        ] {
            let raw = format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":[{block}]}}]}}"#
            );
            let quick = MessagesRequest::parse(&Bytes::from(raw.clone())).unwrap();
            assert!(matches!(quick.body, Body::View(_)));
            assert!(quick.prompt_estimate >= 1000, "{}", quick.prompt_estimate);
            let tree = MessagesRequest::parse_tree(raw.as_bytes()).unwrap();
            assert_eq!(tree.prompt_estimate, quick.prompt_estimate);
        }
    }

    /// A twin of `user_id` inside `metadata` does not reach upstream (found by an independent
    /// check: `{"user_id":"spoof","USER_ID":"spoof2"}` went up after the gateway's `user_id`).
    #[test]
    fn a_nested_user_id_twin_is_dropped() {
        let raw = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"spoof","USER_ID":"spoof2","User_Id":"s3","x":1}}"#;
        for r in [
            MessagesRequest::parse(&Bytes::from(raw)).unwrap(),
            MessagesRequest::parse_tree(raw.as_bytes()).unwrap(),
        ] {
            let up: Value = serde_json::from_slice(&r.upstream_body("m", "key_x", 9)).unwrap();
            assert_eq!(up["metadata"], json!({"x": 1, "user_id": "key_x"}), "{up}");
        }
    }

    /// A client's top-level `user_id` (DeepSeek's OpenAI endpoint isolates users by it) does
    /// not reach upstream in either reading, and a twin of it is refused (found by an
    /// independent check: `"user_id":"attacker"` went up beside the key's `metadata.user_id`).
    #[test]
    fn a_top_level_user_id_is_dropped_and_its_twin_refused() {
        let raw = r#"{"user_id":"attacker","model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"user_id":"again"}"#;
        for r in [
            MessagesRequest::parse(&Bytes::from(raw)).unwrap(),
            MessagesRequest::parse_tree(raw.as_bytes()).unwrap(),
        ] {
            let text = String::from_utf8(r.upstream_body("m", "key_x", 9)).unwrap();
            let up: Value = serde_json::from_str(&text).unwrap();
            assert!(up.get("user_id").is_none(), "{up}");
            assert_eq!(up["metadata"], json!({"user_id": "key_x"}), "{up}");
            assert!(
                !text.contains("attacker") && !text.contains("again"),
                "{text}"
            );
        }
        let twin = r#"{"User_Id":"attacker","model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(MessagesRequest::parse(&Bytes::from(twin)).is_err());
    }
}
