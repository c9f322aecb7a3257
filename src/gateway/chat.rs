//! `POST /v1/chat/completions`: the checks in order (auth, rate limit, body, model, plan, hold),
//! then upstream, then the non-stream answer here or the stream relay in `stream.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;

use super::billing::{Outcome, Pending, RequestCtx, reserve};
use super::error::{GatewayError, rate_headers};
use super::types::{ChatRequest, Usage};
use super::{auth, stream};
use crate::activity::ActivityEvent;
use crate::keys::KeyStatus;
use crate::money::Usd;
use crate::state::{AppState, RequestId};
use crate::store::Finish;
use crate::upstream::UpstreamError;

/// Largest non-stream answer read from upstream.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// The handler.
pub async fn chat_completions(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let peer = Some(crate::state::ClientIp::of(&state, &parts).0.to_string());
    let key = match auth::authenticate(&state, &parts.headers) {
        Ok(k) => k,
        Err(e) => return refused(&state, None, e),
    };
    let rate = key.check_rate();
    if !rate.allowed {
        state.metrics.rate_limited();
        state.activity.emit(ActivityEvent::RateLimited {
            key_id: key.id.clone(),
            key_prefix: key.prefix.clone(),
            limit: rate.limit,
            at_ms: Utc::now().timestamp_millis(),
        });
        return GatewayError::RateLimited(rate).into_response();
    }
    // A key that cannot pay for the smallest request is told so before its body is read, and
    // a body whose bytes alone (each may be a prompt token) it could never pay for is refused
    // without reading it into memory.
    let period = state.catalog.period_now();
    let plan = state.catalog.plan(&key.plan);
    let floor = plan.map_or(Usd::from_nanos(1), |p| p.exhausted_below);
    if key.status() == KeyStatus::Exhausted || key.available() < floor {
        let e = GatewayError::InsufficientBudget {
            available: key.available(),
        };
        let mut resp = refused(&state, Some(&key.id), e);
        rate_headers(&rate, resp.headers_mut());
        return resp;
    }
    let affordable = plan.map_or(usize::MAX, |p| {
        affordable_bytes(key.available(), p.max_prompt_price[period as usize])
    });
    let result = async {
        let max_body = state.config.server.max_body_bytes;
        let raw = match read_body(body, max_body.min(affordable), &parts.headers).await {
            Err(GatewayError::RequestTooLarge { .. }) if affordable < max_body => {
                return Err(GatewayError::InsufficientBudget {
                    available: key.available(),
                });
            }
            Err(GatewayError::RequestTooLarge { .. }) => {
                return Err(GatewayError::RequestTooLarge { limit: max_body });
            }
            other => other?,
        };
        let req = ChatRequest::parse(&raw)?;
        let model = state
            .catalog
            .model(&req.model)
            .ok_or_else(|| GatewayError::ModelNotFound(req.model.clone()))?;
        let allowed = state
            .catalog
            .plan(&key.plan)
            .is_some_and(|p| p.models.contains(&model.name));
        if !allowed {
            return Err(GatewayError::ModelNotAllowed(model.name.clone()));
        }
        let hold = reserve(&key, model, period, &req)?;
        Ok((req, model.clone(), hold))
    }
    .await;
    let (req, model, hold) = match result {
        Ok(r) => r,
        Err(e) => {
            let mut resp = refused(&state, Some(&key.id), e);
            rate_headers(&rate, resp.headers_mut());
            return resp;
        }
    };
    let upstream_body = req.upstream_body(&model.upstream, &key.id, hold.max_tokens);
    let (stream, include_usage, prompt_estimate) =
        (req.stream, req.include_usage, req.prompt_estimate);
    // The parsed body can be many times the raw size; it is not needed past this point.
    drop(req);
    state.activity.emit(ActivityEvent::RequestStarted {
        request_id: request_id.clone(),
        key_id: key.id.clone(),
        key_prefix: key.prefix.clone(),
        plan: key.plan.clone(),
        model: model.name.clone(),
        stream,
        client_ip: peer,
        at_ms: Utc::now().timestamp_millis(),
    });
    let ctx = RequestCtx {
        request_id,
        key,
        model,
        hold,
        stream,
        prompt_estimate,
        started: Instant::now(),
        started_at: Utc::now(),
    };
    let pending = Pending::new(state.clone(), ctx);
    let deadline = tokio::time::Instant::now() + state.upstream.request_timeout;
    let answer = async {
        let sent = Instant::now();
        let up = state.upstream.chat(upstream_body, deadline).await;
        if matches!(&up, Ok(_) | Err(UpstreamError::Status { .. })) {
            state.metrics.upstream_latency(sent.elapsed());
        }
        match up {
            Err(e) => Err(e),
            Ok(up) if stream => Ok(Ok(up)),
            Ok(up) => Ok(Err(
                read_answer(up, state.upstream.idle_timeout, deadline).await
            )),
        }
    };
    // Shutdown cuts a request that is still waiting on upstream; it is billed like a client
    // that went away, and told to retry.
    let answer = tokio::select! {
        a = answer => Some(a),
        _ = state.cut.cancelled() => None,
    };
    let mut resp = match answer {
        None => cut_short(pending).await,
        Some(Err(e)) => upstream_failed(pending, e).await,
        Some(Ok(Ok(up))) => stream::relay(state.clone(), pending, up, include_usage, deadline),
        Some(Ok(Err(read))) => non_stream(pending, read).await,
    };
    rate_headers(&rate, resp.headers_mut());
    resp
}

/// A refusal before upstream: an event for the console, and the error response.
fn refused(state: &AppState, key_id: Option<&str>, e: GatewayError) -> Response {
    if matches!(e.status().as_u16(), 401..=404) {
        state.activity.emit(ActivityEvent::Refused {
            key_id: key_id.map(str::to_string),
            status: e.status().as_u16(),
            code: e.code().to_string(),
            at_ms: Utc::now().timestamp_millis(),
        });
    }
    e.into_response()
}

/// Read the body, enforcing `server.max_body_bytes` (413 in our error shape, not axum's).
async fn read_body(
    body: Body,
    limit: usize,
    headers: &axum::http::HeaderMap,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::RequestTooLarge { limit });
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(GatewayError::RequestTooLarge { limit })
            } else {
                Err(GatewayError::InvalidRequest {
                    message: "The request body could not be read.".into(),
                    param: None,
                })
            }
        }
    }
}

/// The daemon is shutting down and could not wait for this request.
async fn cut_short(pending: Pending) -> Response {
    pending
        .settle(Outcome {
            usage: None,
            output_estimate: 0,
            finish: Finish::Shutdown,
            status: 503,
            ttft: None,
        })
        .await;
    GatewayError::ShuttingDown.into_response()
}

/// How many body bytes `available` can pay for as prompt at `price` per 1M tokens (each byte
/// may be a token), less the template slack.
fn affordable_bytes(available: Usd, price: Usd) -> usize {
    if price.nanos() <= 0 {
        return usize::MAX;
    }
    let tokens = i128::from(available.nanos()) * 1_000_000 / i128::from(price.nanos());
    usize::try_from((tokens - 64).max(0)).unwrap_or(usize::MAX)
}

/// Upstream failed before answering: bill nothing, tell the client.
async fn upstream_failed(pending: Pending, e: UpstreamError) -> Response {
    let request_id = pending
        .ctx()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    e.log(&request_id);
    let client = e.to_client();
    let finish = match (&e, &client) {
        (UpstreamError::Timeout, _) => Finish::UpstreamTimeout,
        (_, GatewayError::UpstreamRejected { .. }) => Finish::Rejected,
        _ => Finish::UpstreamError,
    };
    pending
        .settle(Outcome {
            usage: None,
            output_estimate: 0,
            finish,
            status: client.status().as_u16(),
            ttft: None,
        })
        .await;
    client.into_response()
}

/// Read a whole non-stream answer. DeepSeek sends blank lines while a request waits in its
/// queue; those do not count as data for the idle timer.
async fn read_answer(
    mut up: reqwest::Response,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, UpstreamError> {
    let mut buf = Vec::new();
    let mut last_data = tokio::time::Instant::now();
    loop {
        let wait = deadline.min(last_data + idle);
        match tokio::time::timeout_at(wait, up.chunk()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(UpstreamError::Malformed(format!("body cut: {e}"))),
            Ok(Ok(None)) => return Ok(buf),
            Ok(Ok(Some(c))) => {
                if c.iter().any(|b| !b.is_ascii_whitespace()) {
                    last_data = tokio::time::Instant::now();
                }
                buf.extend_from_slice(&c);
                if buf.len() > MAX_UPSTREAM_BODY {
                    return Err(UpstreamError::Malformed("answer too large".into()));
                }
            }
        }
    }
}

async fn non_stream(pending: Pending, read: Result<Vec<u8>, UpstreamError>) -> Response {
    // Fast path: read what billing needs and rename the model in place, without a JSON tree.
    if let (Ok(raw), Some(ctx)) = (&read, pending.ctx())
        && let Ok(text) = std::str::from_utf8(raw)
        && let Some(a) =
            super::chunk::answer(text, &super::chunk::PublicModel::new(&ctx.model.name))
        && a.has_choices
    {
        let ttft = ctx.started.elapsed();
        let output_estimate = (a.generated.iter().sum::<usize>() as u64).div_ceil(4);
        return answered(pending, a.usage, output_estimate, ttft, a.line.into_bytes()).await;
    }
    let parsed = read.and_then(|raw| {
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|e| UpstreamError::Malformed(format!("not JSON: {e}")))?;
        match v {
            Value::Object(o) if o.contains_key("choices") => Ok(o),
            _ => Err(UpstreamError::Malformed("no choices".into())),
        }
    });
    let mut answer = match parsed {
        Ok(a) => a,
        Err(e) => return upstream_failed(pending, e).await,
    };
    let Some(ctx) = pending.ctx() else {
        return GatewayError::Upstream.into_response();
    };
    let ttft = ctx.started.elapsed();
    let public = ctx.model.name.clone();
    let usage = answer.get("usage").and_then(Usage::from_json);
    let output_estimate = output_text_bytes(&answer).div_ceil(4);
    answer.insert("model".into(), Value::String(public));
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    answered(pending, usage, output_estimate, ttft, body).await
}

/// Settle a complete non-stream answer (the ledger row is committed), then hand it over.
async fn answered(
    pending: Pending,
    usage: Option<Usage>,
    output_estimate: u64,
    ttft: std::time::Duration,
    body: Vec<u8>,
) -> Response {
    pending
        .settle(Outcome {
            usage,
            output_estimate,
            finish: Finish::Complete,
            status: 200,
            ttft: Some(ttft),
        })
        .await;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Bytes of generated text in a non-stream answer (for the estimate when usage is missing).
fn output_text_bytes(answer: &serde_json::Map<String, Value>) -> u64 {
    let Some(Value::Array(choices)) = answer.get("choices") else {
        return 0;
    };
    choices
        .iter()
        .filter_map(|c| c.get("message"))
        .map(|m| super::stream::generated_bytes(m) as u64)
        .sum()
}
