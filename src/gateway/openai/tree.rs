//! The tree-based reading of chunks and answers: the fallback for whatever the borrowed view
//! in [`super::chunk`] does not take (an unexpected shape), slower but always correct, and the
//! place that reports what is wrong with a malformed chunk.

use serde_json::{Map, Value};

use super::request::usage_from_json;
use crate::gateway::billing::Usage;
use crate::gateway::dialect::{Generated, Tally};

/// Bytes of generated output in a delta or message: text, reasoning, and tool calls (their
/// names and arguments are output tokens too).
pub fn generated_bytes(m: &Value) -> usize {
    let text: usize = ["content", "reasoning_content"]
        .iter()
        .filter_map(|k| m.get(*k).and_then(Value::as_str))
        .map(str::len)
        .sum();
    let tools: usize = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map_or(0, |calls| {
            calls
                .iter()
                .filter_map(|c| c.get("function"))
                .map(|f| {
                    ["name", "arguments"]
                        .iter()
                        .filter_map(|k| f.get(*k).and_then(Value::as_str))
                        .map(str::len)
                        .sum::<usize>()
                })
                .sum()
        });
    text + tools
}

/// Parse one upstream chunk, update the tally, and render it for the client.
pub fn rewrite_chunk(
    data: &str,
    public_model: &str,
    include_usage: bool,
    tally: &mut Tally,
) -> Result<String, String> {
    let mut chunk: Map<String, Value> =
        serde_json::from_str(data).map_err(|e| format!("chunk is not JSON: {e}"))?;
    // `"error": null` is no error (the splicing fast path reads it so too).
    if chunk.get("error").is_some_and(|e| !e.is_null()) {
        return Err(format!(
            "upstream error event: {}",
            crate::gateway::json::error_text(data)
        ));
    }
    if let Some(Value::Array(choices)) = choices_of(&chunk)? {
        for c in choices {
            let Some(delta) = c.get("delta") else {
                continue;
            };
            let bytes = generated_bytes(delta);
            if bytes > 0 {
                tally.add(Generated::one(bytes));
            }
        }
    }
    if let Some(u) = chunk.get("usage").and_then(usage_from_json) {
        tally.usage = Some(u);
    }
    if !include_usage {
        chunk.remove("usage");
    }
    if chunk.contains_key("model") {
        chunk.insert("model".into(), Value::String(public_model.to_string()));
    }
    let json = serde_json::to_string(&chunk).map_err(|e| e.to_string())?;
    Ok(format!("data: {json}\n\n"))
}

/// A whole answer read as a tree: its usage, output estimate and the body with the public
/// model name; `Err` says why it is not an answer.
pub fn rewrite_answer(
    raw: &[u8],
    public_model: &str,
) -> Result<(Option<Usage>, u64, Vec<u8>), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let mut answer = match v {
        Value::Object(o) if o.contains_key("choices") => o,
        _ => return Err("no choices".into()),
    };
    choices_of(&answer)?;
    let usage = answer.get("usage").and_then(usage_from_json);
    let output_estimate = output_text_bytes(&answer).div_ceil(4);
    // Renamed where upstream named it, as the splicing fast path does.
    if answer.contains_key("model") {
        answer.insert("model".into(), Value::String(public_model.to_string()));
    }
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    Ok((usage, output_estimate, body))
}

/// The `choices` member when it has the shape of choices: absent, `null`, or a list of objects.
/// Anything else (`"choices": 5`, a list of strings) is not something a client's SDK can read,
/// so the chunk or answer is refused as upstream's error rather than relayed as if it were one.
fn choices_of(obj: &Map<String, Value>) -> Result<Option<&Value>, String> {
    match obj.get("choices") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Array(cs)) if cs.iter().all(Value::is_object) => Ok(Some(v)),
        Some(_) => Err("choices is not a list of objects".into()),
    }
}

/// Bytes of generated text in a non-stream answer (for the estimate when usage is missing).
fn output_text_bytes(answer: &Map<String, Value>) -> u64 {
    let Some(Value::Array(choices)) = answer.get("choices") else {
        return 0;
    };
    choices
        .iter()
        .filter_map(|c| c.get("message"))
        .map(|m| generated_bytes(m) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_calls_count_as_generated_output() {
        let delta = json!({"content": "ab", "tool_calls": [{"index": 0, "function": {"name": "get", "arguments": "{\"q\":1}"}}]});
        assert_eq!(generated_bytes(&delta), 2 + 3 + 7);
        assert_eq!(
            generated_bytes(&json!({"reasoning_content": "xyz", "content": null})),
            3
        );
        assert_eq!(generated_bytes(&json!({})), 0);
    }

    /// A chunk or answer whose `choices` is not a list of objects is upstream's error, not
    /// relayed (an SDK indexing `choices[0]` would fail on it).
    #[test]
    fn choices_of_the_wrong_shape_are_refused() {
        let mut tally = Tally::new(std::time::Instant::now());
        for bad in [
            r#"{"model":"m","choices":5}"#,
            r#"{"choices":"x"}"#,
            r#"{"choices":[1]}"#,
            r#"{"choices":{"index":0}}"#,
        ] {
            assert!(
                rewrite_chunk(bad, "pub", true, &mut tally).is_err(),
                "{bad}"
            );
            assert!(rewrite_answer(bad.as_bytes(), "pub").is_err(), "{bad}");
        }
        for good in [
            r#"{"choices":null}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[{}]}"#,
        ] {
            assert!(
                rewrite_chunk(good, "pub", true, &mut tally).is_ok(),
                "{good}"
            );
            assert!(rewrite_answer(good.as_bytes(), "pub").is_ok(), "{good}");
        }
    }
}
