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
use super::billing::{Outcome, Pending, PromptSource, Reported, RequestCtx};
use super::dialect::{ClientRequest, Dialect, PublicModel};
use super::error::{GatewayError, rate_headers};
use super::stream;
use crate::activity::ActivityEvent;
use crate::state::{AppState, ClientIp, RequestId};
use crate::store::Finish;
use crate::upstream::{Dispatch, EventStream, UpstreamError, Whole};

/// Serve one request of dialect `D`.
pub async fn handle<D: Dialect>(state: Arc<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let admitted = match admit::<D>(&state, &parts, body).await {
        Ok(a) => a,
        Err(refusal) => return refusal.respond::<D>(&state),
    };
    let rate = admitted.rate;
    let (pending, call) = start::<D>(&state, &parts, admitted);
    let mut resp = if call.stream.is_some() {
        // Boxed, as a whole answer's is: inline, the relay's largest state (a whole answer's
        // reading and settlement) made every request's handler ~7.3 KiB, and at 10 000 open
        // streams that cost ~2.4 KiB of memory a stream (mimalloc, bench/PROFILE.md), though
        // a stream's handler ends with its head.
        Box::pin(relay::<D>(state, pending, call, None)).await
    } else {
        detached::<D>(state, pending, call).await
    };
    rate_headers(&rate, resp.headers_mut());
    resp
}

/// A whole (non-stream) answer is read to its end and billed by its usage whether or not its
/// client waits for it: DeepSeek generates it, and bills the operator for it, all the same —
/// a client that hung up just before the end paid only for its prompt, so a script hanging
/// up each request of a large `max_tokens` cost the operator its output for nothing (found by
/// a white-box review). The relay is polled in place while the client waits; dropped before
/// its end (the client gone), it is handed to a task of its own to finish (a task for every
/// request cost ~4 % more instructions per request), and told so by `here`'s closing.
/// A stream's client that goes away stops it instead (DeepSeek stops generating then).
async fn detached<D: Dialect>(state: Arc<AppState>, pending: Pending, call: Call<D>) -> Response {
    let (here, gone) = tokio::sync::oneshot::channel::<std::convert::Infallible>();
    Detachable {
        relay: Some(Box::pin(relay::<D>(state, pending, call, Some(gone)))),
        here: Some(here),
    }
    .await
}

/// A relay that finishes on a task of its own if it is dropped before its end.
struct Detachable {
    relay: Option<std::pin::Pin<Box<dyn Future<Output = Response> + Send>>>,
    /// Dropped when the relay is handed over: its client went away.
    here: Option<tokio::sync::oneshot::Sender<std::convert::Infallible>>,
}

impl Future for Detachable {
    type Output = Response;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        // Not polled again once done (a future's contract); if it were, it stays pending.
        let Some(relay) = self.relay.as_mut() else {
            return std::task::Poll::Pending;
        };
        let done = relay.as_mut().poll(cx);
        if done.is_ready() {
            self.relay = None;
        }
        done
    }
}

impl Drop for Detachable {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            drop(self.here.take());
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let _unheard = relay.await;
                    });
                }
                Err(_) => tracing::error!("a whole answer's relay could not be finished"),
            }
        }
    }
}

/// Whether the client of a detached whole answer went away (its handler was dropped).
fn client_gone(client: &mut Option<ClientWatch>) -> bool {
    client.as_mut().is_some_and(|c| {
        matches!(
            c.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        )
    })
}

/// Closed when the handler waiting for a detached whole answer is dropped.
type ClientWatch = tokio::sync::oneshot::Receiver<std::convert::Infallible>;

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
        prompt: Some(PromptSource {
            raw: a.raw,
            pieces: D::prompt_pieces,
        }),
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
    Whole(Result<Whole, UpstreamError>),
}

/// Send the request upstream and answer the client from what comes back (`client`: for a
/// detached whole answer, whether its client still waits).
async fn relay<D: Dialect>(
    state: Arc<AppState>,
    pending: Pending,
    call: Call<D>,
    mut client: Option<ClientWatch>,
) -> Response {
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
            (reply, None) => {
                let wait = crate::upstream::whole_answer_wait(
                    ctx.hold.max_tokens,
                    state.upstream.request_timeout,
                );
                Arrived::Whole(reply.json(wait).await)
            }
        })
    };
    // Shutdown cuts a request that is still waiting on upstream; it is billed like a client
    // that went away, and told to retry. A detached whole answer whose client went away
    // before the request reached DeepSeek (queued for an account's slot, or connecting) is
    // not sent at all.
    let dispatch = pending.ctx().map(|c| &c.dispatch);
    let gone_unsent = async {
        if let (Some(c), Some(dispatch)) = (client.as_mut(), dispatch) {
            // Resolves only when the handler is dropped: nothing is ever sent on it.
            let _closed = c.await;
            // From now on a failed attempt is not tried again on another account.
            dispatch
                .abandoned
                .store(true, std::sync::atomic::Ordering::Release);
            if !dispatch.sent.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let answer = tokio::select! {
        a = answer => Ok(a),
        _ = state.cut.cancelled() => Err(Finish::Shutdown),
        () = gone_unsent => Err(Finish::ClientAbort),
    };
    match answer {
        Err(Finish::ClientAbort) => left_unsent::<D>(pending).await,
        Err(_) => cut_short::<D>(pending).await,
        Ok(Err(e)) => upstream_failed::<D>(pending, e).await,
        Ok(Ok(Arrived::Stream(events, rewrite))) => {
            stream::relay::<D>(state, pending, *events, rewrite, deadline).await
        }
        Ok(Ok(Arrived::Whole(Err(e)))) => upstream_failed::<D>(pending, e).await,
        Ok(Ok(Arrived::Whole(Ok(Whole::Body(raw))))) => whole::<D>(pending, &raw, client).await,
        Ok(Ok(Arrived::Whole(Ok(Whole::TooLarge { tail })))) => {
            too_large::<D>(pending, &tail).await
        }
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

/// The client of a detached whole answer went away before the request reached DeepSeek: it
/// owes nothing (unless it reached DeepSeek meanwhile: then its prompt, as any client gone).
async fn left_unsent<D: Dialect>(pending: Pending) -> Response {
    pending.settle(Outcome::client_gone()).await;
    D::error_response(GatewayError::Upstream)
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

/// A whole answer too large to relay (over [`crate::upstream::MAX_ANSWER`]: `n` choices with
/// `top_logprobs` and no `max_tokens` make one of over 100 MB): DeepSeek wrote it and bills it,
/// so it is billed by its usage, read from its end — free, it cost the operator its output for
/// nothing, and the SDKs retried the 502 twice, three times over (found by an independent
/// check). The client is told to ask for it as a stream, and not to retry it as it is.
async fn too_large<D: Dialect>(pending: Pending, tail: &[u8]) -> Response {
    let (usage, reported) = D::usage_at_end(tail);
    if let Some(ctx) = pending.ctx() {
        tracing::warn!(
            request_id = %ctx.request_id,
            provider_usage = usage.is_some(),
            "a whole answer over 64 MiB was billed and not relayed"
        );
    }
    pending
        .settle(Outcome {
            usage,
            output_estimate: 0,
            reported,
            finish: Finish::UpstreamError,
            status: 502,
            ttft: None,
        })
        .await;
    D::error_response(GatewayError::AnswerTooLarge)
}

/// A whole (non-stream) answer: settle (the ledger row is committed), then hand it over — or,
/// its client gone meanwhile, bill it as a client abort with the answer's own usage.
async fn whole<D: Dialect>(
    pending: Pending,
    raw: &[u8],
    mut client: Option<ClientWatch>,
) -> Response {
    let Some(ctx) = pending.ctx() else {
        return D::error_response(GatewayError::Upstream);
    };
    let answer = match D::answer(raw, &PublicModel::new(&ctx.model.name)) {
        Ok(a) => a,
        Err(why) => return upstream_failed::<D>(pending, UpstreamError::Malformed(why)).await,
    };
    let ttft = ctx.started.elapsed();
    if client_gone(&mut client) {
        pending
            .settle(Outcome {
                usage: answer.usage,
                output_estimate: answer.output_estimate,
                reported: answer.reported,
                finish: Finish::ClientAbort,
                status: 499,
                ttft: None,
            })
            .await;
        return D::error_response(GatewayError::Upstream);
    }
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
