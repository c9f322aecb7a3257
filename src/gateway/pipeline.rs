//! The one request pipeline, for every dialect: admission → relay → settlement.
//!
//! A request is admitted (checks and hold, [`super::admission`]), announced to the console,
//! sent upstream, and then either relayed as a stream ([`super::stream`]) or read whole and
//! answered here; either way it settles exactly once ([`super::billing::Pending`]) and its
//! ledger row is committed before the answer's last byte leaves.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::admission::{Admitted, admit};
use super::billing::{Outcome, Pending, Reported, RequestCtx};
use super::dialect::{ClientRequest, Dialect, PublicModel};
use super::error::{GatewayError, rate_headers};
use super::stream;
use crate::activity::ActivityEvent;
use crate::state::{AppState, ClientIp, RequestId};
use crate::store::Finish;
use crate::upstream::{Dispatch, EventStream, UpstreamError};

/// Serve one request of dialect `D`.
pub async fn handle<D: Dialect>(state: Arc<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let admitted = match admit::<D>(&state, &parts, body).await {
        Ok(a) => a,
        Err(refusal) => return refusal.respond::<D>(&state),
    };
    let rate = admitted.rate;
    let (pending, call) = start::<D>(&state, &parts, admitted);
    let mut resp = relay::<D>(state, pending, call).await;
    rate_headers(&rate, resp.headers_mut());
    resp
}

/// What goes upstream for an admitted request.
struct Call<D: Dialect> {
    body: Vec<u8>,
    stream: Option<D::Stream>,
}

/// Announce an admitted request and wrap it so that it settles exactly once.
fn start<D: Dialect>(
    state: &Arc<AppState>,
    parts: &Parts,
    a: Admitted<D::Request>,
) -> (Pending, Call<D>) {
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let req = a.request;
    let stream = req
        .stream()
        .then(|| D::stream(&req, PublicModel::new(&a.model.name)));
    let prompt_estimate = req.prompt_estimate();
    // The parsed body (many times the raw size) is consumed into upstream's body here.
    let body = req.upstream_body(&a.model.upstream, &a.key.id, a.hold.max_tokens);
    let started_at = Utc::now();
    state.activity.emit(ActivityEvent::RequestStarted {
        request_id: request_id.clone(),
        key_id: a.key.id.clone(),
        key_prefix: a.key.prefix(),
        plan: a.key.plan(),
        model: a.model.name.clone(),
        stream: stream.is_some(),
        client_ip: Some(ClientIp::of(state, parts).label()),
        api: D::API,
        at_ms: started_at.timestamp_millis(),
    });
    let ctx = RequestCtx {
        request_id,
        key: a.key,
        model: a.model,
        hold: a.hold,
        slot: a.slot,
        stream: stream.is_some(),
        prompt_estimate,
        started: Instant::now(),
        started_at,
        api: D::API,
        dispatch: Dispatch::default(),
    };
    (Pending::new(state.clone(), ctx), Call { body, stream })
}

/// What upstream sent back, ready to relay.
enum Arrived<S> {
    Stream(Box<EventStream>, S),
    Whole(Result<Vec<u8>, UpstreamError>),
}

/// Send the request upstream and answer the client from what comes back.
async fn relay<D: Dialect>(state: Arc<AppState>, pending: Pending, call: Call<D>) -> Response {
    let deadline = tokio::time::Instant::now() + state.upstream.request_timeout;
    let answer = async {
        let sent = Instant::now();
        let Some(ctx) = pending.ctx() else {
            return Err(UpstreamError::NoAccount);
        };
        let up = state
            .upstream
            .send(
                D::ENDPOINT,
                &ctx.model.name,
                call.body,
                deadline,
                &ctx.dispatch,
            )
            .await;
        if matches!(&up, Ok(_) | Err(UpstreamError::Status { .. })) {
            state.metrics.upstream_latency(sent.elapsed());
        }
        if let Ok(reply) = &up {
            routed(&state, ctx, reply.account());
        }
        Ok(match (up?, call.stream) {
            (reply, Some(rewrite)) => Arrived::Stream(Box::new(reply.events()), rewrite),
            (reply, None) => Arrived::Whole(reply.json().await),
        })
    };
    // Shutdown cuts a request that is still waiting on upstream; it is billed like a client
    // that went away, and told to retry.
    let answer = tokio::select! {
        a = answer => Some(a),
        _ = state.cut.cancelled() => None,
    };
    match answer {
        None => cut_short::<D>(pending).await,
        Some(Err(e)) => upstream_failed::<D>(pending, e).await,
        Some(Ok(Arrived::Stream(events, rewrite))) => {
            stream::relay::<D>(state, pending, *events, rewrite, deadline).await
        }
        Some(Ok(Arrived::Whole(Err(e)))) => upstream_failed::<D>(pending, e).await,
        Some(Ok(Arrived::Whole(Ok(raw)))) => whole::<D>(pending, &raw).await,
    }
}

/// Tell the console which account serves a request (its ledger row has it from the
/// request's dispatch).
fn routed(state: &AppState, ctx: &RequestCtx, account: &str) {
    state.activity.emit(ActivityEvent::RequestRouted {
        request_id: ctx.request_id.clone(),
        account: account.to_string(),
        at_ms: crate::clock::now_ms(),
    });
}

/// The daemon is shutting down and could not wait for this request.
async fn cut_short<D: Dialect>(pending: Pending) -> Response {
    pending
        .settle(Outcome {
            usage: None,
            output_estimate: 0,
            reported: Reported::default(),
            finish: Finish::Shutdown,
            status: 503,
            ttft: None,
        })
        .await;
    D::error_response(GatewayError::ShuttingDown)
}

/// Upstream failed before answering: bill nothing, tell the client.
async fn upstream_failed<D: Dialect>(pending: Pending, e: UpstreamError) -> Response {
    let request_id = pending
        .ctx()
        .map(|c| c.request_id.as_str())
        .unwrap_or_default();
    e.log(request_id);
    let finish = match &e {
        UpstreamError::Timeout => Finish::UpstreamTimeout,
        e if e.rejects_request() => Finish::Rejected,
        _ => Finish::UpstreamError,
    };
    let mut client = GatewayError::from(e);
    // Upstream's message may name the model as DeepSeek knows it: the customer sees the name
    // they asked for (the operator's mapping stays the operator's).
    if let (Some(ctx), GatewayError::UpstreamRejected { message, .. }) =
        (pending.ctx(), &mut client)
    {
        let m = &ctx.model;
        if !m.upstream.is_empty() && m.upstream != m.name && message.contains(&m.upstream) {
            *message = message.replace(&m.upstream, &m.name);
        }
    }
    pending
        .settle(Outcome {
            usage: None,
            output_estimate: 0,
            reported: Reported::default(),
            finish,
            status: client.status().as_u16(),
            ttft: None,
        })
        .await;
    D::error_response(client)
}

/// A whole (non-stream) answer: settle (the ledger row is committed), then hand it over.
async fn whole<D: Dialect>(pending: Pending, raw: &[u8]) -> Response {
    let Some(ctx) = pending.ctx() else {
        return D::error_response(GatewayError::Upstream);
    };
    let answer = match D::answer(raw, &PublicModel::new(&ctx.model.name)) {
        Ok(a) => a,
        Err(why) => return upstream_failed::<D>(pending, UpstreamError::Malformed(why)).await,
    };
    let ttft = ctx.started.elapsed();
    let (state, key) = (pending.state().clone(), ctx.key.clone());
    let billed = pending
        .settle_before_answer(Outcome {
            usage: answer.usage,
            output_estimate: answer.output_estimate,
            reported: answer.reported,
            finish: Finish::Complete,
            status: 200,
            ttft: Some(ttft),
        })
        .await;
    if !billed.recorded {
        // `full` promises the bill is on disk before the answer leaves, `normal` that it is in
        // the OS: neither holds, so the answer stays here — and what it was charged goes back
        // to the key (a client retrying the 503 would otherwise pay again and again for
        // nothing until a restart read the balance from disk).
        super::billing::uncharge(&state, &key, billed.charged);
        return D::error_response(GatewayError::NotRecorded);
    }
    let mut resp = (StatusCode::OK, answer.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
