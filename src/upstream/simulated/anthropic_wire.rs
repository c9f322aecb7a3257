//! The shapes of an Anthropic-format answer ([`AnthropicWire`]): the `message` body and the named
//! SSE events (`message_start`, `content_block_*`, `ping`, `message_delta`, `message_stop`,
//! `error`), with usage in Anthropic's meaning — `input_tokens` are the prompt's cache misses,
//! `cache_read_input_tokens` its cache hits, `output_tokens` include reasoning.

use serde_json::{Value, json};

use super::directives::Plan;
use super::stream::{KEEPALIVE, Wire};

const ERROR_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
\"message\":\"Internal server error\"}}\n\n";
/// Anthropic's words for an overloaded server, mid-stream.
const OVERLOADED_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\
\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
/// Anthropic's keep-alive: an event, not an SSE comment.
const PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// DeepSeek's Anthropic-format answer: one `message` body, or the Messages streaming events with
/// one `thinking_delta` or `text_delta` per token.
pub(super) struct AnthropicWire;

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn stop_reason(p: &Plan) -> &'static str {
    if p.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The thinking block's signature; nothing checks it, but clients keep and resend it.
fn signature(p: &Plan) -> String {
    format!("sim-signature-{}", p.id)
}

/// The message without content or usage, as both the body and `message_start` begin.
fn message(p: &Plan, content: Value, stop: Option<&str>) -> Value {
    json!({"id": p.id, "type": "message", "role": "assistant", "model": p.model, "content": content,
        "stop_reason": stop, "stop_sequence": null})
}

fn insert(v: &mut Value, key: &str, value: Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.to_owned(), value);
    }
}

/// Whether the answer has a text block: when it has content, or nothing else to show.
fn has_text(p: &Plan) -> bool {
    !p.content.is_empty() || p.reasoning.is_empty()
}

fn block_start(index: usize, block: Value) -> String {
    event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_delta(index: usize, delta: Value) -> String {
    event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: usize) -> String {
    event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

/// The end of the thinking block (index 0): its signature, then its stop.
fn close_thinking(p: &Plan) -> String {
    let sig = json!({"type": "signature_delta", "signature": signature(p)});
    format!("{}{}", block_delta(0, sig), block_stop(0))
}

impl Wire for AnthropicWire {
    fn whole(&self, p: &Plan) -> String {
        let mut content = Vec::new();
        if !p.reasoning.is_empty() {
            content.push(json!({"type": "thinking", "thinking": p.reasoning.concat(),
                "signature": signature(p)}));
        }
        if has_text(p) {
            content.push(json!({"type": "text", "text": p.content.concat()}));
        }
        let mut body = message(p, Value::Array(content), Some(stop_reason(p)));
        if !p.d.no_usage {
            let usage = if p.d.zero_usage {
                json!({"input_tokens": 0, "output_tokens": 0})
            } else if p.d.output_usage_only {
                json!({"output_tokens": p.output()})
            } else if p.d.usage_mistyped {
                json!({"input_tokens": (p.prompt - p.hit).to_string(),
                    "output_tokens": p.output().to_string()})
            } else {
                json!({"input_tokens": p.prompt - p.hit, "output_tokens": p.output(),
                    "cache_read_input_tokens": p.hit, "cache_creation_input_tokens": 0})
            };
            insert(&mut body, "usage", usage);
        }
        body.to_string()
    }

    fn opening(&self, p: &Plan) -> String {
        let mut start = message(p, json!([]), None);
        if !p.d.no_usage {
            let usage = if p.d.zero_usage {
                json!({"input_tokens": 0, "output_tokens": 0})
            } else if p.d.output_usage_only {
                json!({"output_tokens": 1})
            } else {
                json!({"input_tokens": p.prompt - p.hit, "cache_read_input_tokens": p.hit,
                    "cache_creation_input_tokens": 0, "output_tokens": 1})
            };
            insert(&mut start, "usage", usage);
        }
        let first = if p.reasoning.is_empty() {
            json!({"type": "text", "text": ""})
        } else {
            json!({"type": "thinking", "thinking": "", "signature": ""})
        };
        format!(
            "{}{}{}",
            event(
                "message_start",
                &json!({"type": "message_start", "message": start})
            ),
            block_start(0, first),
            event("ping", &json!({"type": "ping"})),
        )
    }

    fn token(&self, p: &Plan, i: usize) -> String {
        let r = p.reasoning.len();
        if let Some(word) = p.reasoning.get(i) {
            return block_delta(0, json!({"type": "thinking_delta", "thinking": word}));
        }
        let text_index = usize::from(r > 0);
        let delta = block_delta(
            text_index,
            json!({"type": "text_delta", "text": p.content[i - r]}),
        );
        if i == r && r > 0 {
            let open = block_start(1, json!({"type": "text", "text": ""}));
            format!("{}{open}{delta}", close_thinking(p))
        } else {
            delta
        }
    }

    fn closing(&self, p: &Plan) -> String {
        let close = match (p.reasoning.is_empty(), has_text(p)) {
            (false, false) => close_thinking(p),
            (no_thinking, _) => block_stop(usize::from(!no_thinking)),
        };
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(p), "stop_sequence": null}});
        if p.d.usage_mistyped {
            insert(
                &mut delta,
                "usage",
                json!({"output_tokens": p.output().to_string()}),
            );
        } else if p.d.zero_usage {
            insert(&mut delta, "usage", json!({"output_tokens": 0}));
        } else if !p.d.no_usage {
            insert(&mut delta, "usage", json!({"output_tokens": p.output()}));
        }
        format!("{close}{}{MESSAGE_STOP}", event("message_delta", &delta))
    }

    fn error(&self) -> &'static str {
        ERROR_EVENT
    }

    fn overloaded(&self) -> &'static str {
        OVERLOADED_EVENT
    }

    fn garbage(&self, i: usize) -> String {
        format!("event: content_block_delta\ndata: {{\"type\": garbage chunk {i}\n\n")
    }

    fn garbage_end(&self) -> &'static str {
        MESSAGE_STOP
    }

    fn keepalive(&self, p: &Plan) -> &'static str {
        if p.d.ping_keepalive { PING } else { KEEPALIVE }
    }
}
