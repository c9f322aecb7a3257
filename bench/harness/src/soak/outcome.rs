//! How each answer is read and judged: the outcome it is counted under, or a surprise when the
//! gateway's contract does not allow it in that situation.
//!
//! Allowed, whatever the scenario: a whole answer, or a stream that ends with its end marker
//! (`[DONE]`, `message_stop`) or with an error event; 502/503/504 with the documented code for
//! the dialect (upstream faults reach every account now and then). Allowed only where the soak
//! made them possible: 402 on the small keys, 429 on the rate-limited key, 401 on a key whose
//! text was being rotated, 422 when upstream was told to refuse the request, an error event on a
//! stream whose upstream misbehaved. Everything else — a 500, a wrong error code, a stream cut
//! without a word, an answer that never comes — is a surprise.

use serde_json::Value;

use super::keys::Tier;
use super::traffic::{Api, Plan, Scenario};
use super::world::World;

/// The outcome's name for the report; surprises are also recorded with their details.
pub async fn judge(
    world: &World,
    plan: &Plan,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> String {
    let resp = match sent {
        Ok(r) => r,
        Err(e) if plan.scenario == Scenario::AbortEarly && e.is_timeout() => {
            return "client hung up before the answer".into();
        }
        Err(e) => return surprise(world, plan, format!("no answer: {e}")),
    };
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(id) = id else {
        return surprise(world, plan, format!("{status} without x-request-id"));
    };
    if status == 200 {
        return success(world, plan, resp, id).await;
    }
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) if plan.scenario == Scenario::AbortEarly && e.is_timeout() => {
            return "client hung up before the answer".into();
        }
        Err(e) => return surprise(world, plan, format!("{status}, body unreadable: {e}")),
    };
    refusal(world, plan, status, &text)
}

/// A non-200 answer: allowed where the situation explains it, with the dialect's code.
fn refusal(world: &World, plan: &Plan, status: u16, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    // OpenAI's shape names a code; Anthropic's a type.
    let code = match plan.api {
        Api::OpenAi => v["error"]["code"].as_str(),
        Api::Anthropic | Api::CountTokens => v["error"]["type"].as_str(),
    }
    .unwrap_or("?")
    .to_owned();
    let anthropic = plan.api != Api::OpenAi;
    let expected = match status {
        402 if plan.key.tier == Tier::Small => Some(if anthropic {
            "billing_error"
        } else {
            "insufficient_budget"
        }),
        429 if plan.key.tier == Tier::Limited => Some(if anthropic {
            "rate_limit_error"
        } else {
            "rate_limit_exceeded"
        }),
        401 if world.keys.rotated_since(&plan.key) => Some(if anthropic {
            "authentication_error"
        } else {
            "invalid_api_key"
        }),
        422 if plan.scenario == Scenario::Fail422 => None,
        502 => Some(if anthropic {
            "api_error"
        } else {
            "upstream_error"
        }),
        503 => Some(if anthropic {
            "overloaded_error"
        } else {
            "upstream_busy"
        }),
        504 => Some(if anthropic {
            "timeout_error"
        } else {
            "upstream_timeout"
        }),
        _ => {
            if status >= 500 {
                world.tally.event("undocumented 5xx");
            }
            let short: String = text.chars().take(200).collect();
            return surprise(world, plan, format!("{status} {short}"));
        }
    };
    match expected {
        Some(want) if want != code => {
            if status >= 500 {
                world.tally.event("undocumented 5xx");
            }
            let short: String = text.chars().take(200).collect();
            surprise(
                world,
                plan,
                format!("{status} with {code}, not {want}: {short}"),
            )
        }
        Some(want) if status == 401 => format!("{status} {want} (key text rotated meanwhile)"),
        Some(want) => format!("{status} {want}"),
        None => format!("{status} passed on"),
    }
}

/// A 200: read it whole (or abandon the stream where the scenario says so) and check its end.
async fn success(world: &World, plan: &Plan, mut resp: reqwest::Response, id: String) -> String {
    let billed = plan.api != Api::CountTokens;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) if plan.scenario == Scenario::AbortEarly && e.is_timeout() => {
                // The timer fired while a non-stream answer was being read: an abort all the same.
                world.tally.must_bill(id);
                return "client hung up before the answer".into();
            }
            Err(e) => return surprise(world, plan, format!("200, body broke off: {e}")),
        }
        if let Some(k) = plan.abort_after
            && count(&body, b"data:") >= k
        {
            drop(resp);
            world.tally.must_bill(id);
            return "client hung up mid-stream".into();
        }
    }
    if billed {
        world.tally.must_bill(id);
    }
    let text = String::from_utf8_lossy(&body);
    if !plan.stream {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let whole = match plan.api {
            Api::OpenAi => v["choices"].is_array(),
            Api::Anthropic => v["type"] == "message",
            Api::CountTokens => v["input_tokens"].is_u64(),
        };
        if !whole {
            let short: String = text.chars().take(200).collect();
            return surprise(world, plan, format!("200 that is not an answer: {short}"));
        }
        return "ok".into();
    }
    let ended = match plan.api {
        Api::OpenAi => openai_end(&text),
        _ => anthropic_end(&text),
    };
    match ended {
        End::Clean => "ok".into(),
        End::Error if plan.scenario != Scenario::Normal => "ok, ended by an error event".into(),
        End::Error => surprise(
            world,
            plan,
            "a stream with no fault ended in an error".into(),
        ),
        End::Cut => {
            let tail: String = text
                .chars()
                .rev()
                .take(200)
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .collect();
            surprise(
                world,
                plan,
                format!("stream ended without an end marker: …{tail}"),
            )
        }
    }
}

/// How a stream ended.
enum End {
    /// Its end marker.
    Clean,
    /// An error event last.
    Error,
    /// Neither: cut without a word.
    Cut,
}

/// OpenAI's SSE: the last `data:` is `[DONE]`, or an `{"error": …}` object.
fn openai_end(text: &str) -> End {
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    let is_error =
        |d: &str| serde_json::from_str::<Value>(d).is_ok_and(|v| v.get("error").is_some());
    match data.last() {
        Some(&"[DONE]") if data.iter().any(|d| is_error(d)) => End::Error,
        Some(&"[DONE]") => End::Clean,
        Some(d) if is_error(d) => End::Error,
        _ => End::Cut,
    }
}

/// Anthropic's SSE: the last event is `message_stop`, or `error`.
fn anthropic_end(text: &str) -> End {
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(str::trim)
        .next_back();
    match last {
        Some("message_stop") => End::Clean,
        Some("error") => End::Error,
        _ => End::Cut,
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Record a surprise about `plan`; the outcome it is counted under.
fn surprise(world: &World, plan: &Plan, what: String) -> String {
    world.tally.surprise(format!(
        "{} ({}, {:?} key): {what}",
        plan.kind,
        plan.scenario.name(),
        plan.key.tier
    ));
    "SURPRISE".into()
}
