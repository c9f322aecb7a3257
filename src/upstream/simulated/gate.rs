//! What happens to a request because of the account it was made with, before and around its
//! answer: the in-flight count from its headers to the end of its body ([`count`]), the fault a
//! test set for the account ([`fault`]), and DeepSeek's account checks on a valid request —
//! 402 when the balance is gone, 429 over the per-account cap — then the charge ([`admit`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::accounts::Ticket;
use super::directives::Plan;
use super::errors::{anthropic_key, bearer_key};
use super::{AccountFault, Outcome, Shared};

/// The key a chat request presents: Bearer on the OpenAI route; on the Anthropic route Bearer,
/// else `x-api-key`.
pub(super) fn presented_key(path: &str, headers: &HeaderMap) -> String {
    if path.starts_with("/anthropic") {
        anthropic_key(headers)
    } else {
        bearer_key(headers)
    }
}

/// Middleware of the chat routes: a request of a known account counts as in flight from here
/// (its headers have arrived) until its response body is dropped — finished or abandoned.
pub(super) async fn count(State(sh): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let key = presented_key(req.uri().path(), req.headers());
    let Some(ticket) = sh.accounts.enter(&key).map(Arc::new) else {
        return next.run(req).await;
    };
    req.extensions_mut().insert(ticket.clone());
    next.run(req).await.map(|inner| {
        Body::new(Held {
            inner,
            _ticket: ticket,
        })
    })
}

/// A response body that keeps its request's [`Ticket`] until hyper is done with it.
struct Held {
    inner: Body,
    _ticket: Arc<Ticket>,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request got no answer of its own.
pub(super) enum Refused {
    /// Answer this status in the route's error shape.
    Status(u16),
    /// The simulator is shutting down: cut the connection.
    Cut,
}

/// Records an outcome for a request whose handler is dropped (the client went away) while armed.
struct Mark<'a> {
    sh: &'a Shared,
    index: Option<usize>,
    outcome: Outcome,
}

impl Mark<'_> {
    fn disarm(mut self) {
        self.index = None;
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            self.sh.set_outcome(i, self.outcome.clone());
        }
    }
}

/// Apply the fault set for `key`, before the request is even validated: a status to answer,
/// a delay, or a hang that only the client going away (or shutdown) ends. `index` is the
/// recorded request, whose outcome a client going away sets.
pub(super) async fn fault(sh: &Shared, key: &str, index: Option<usize>) -> Result<(), Refused> {
    let (wait, gone) = match sh.accounts.fault(key) {
        None => return Ok(()),
        Some(AccountFault::Status(status)) => return Err(Refused::Status(status)),
        Some(AccountFault::Delay(d)) => (Some(d), Outcome::ClientDisconnected),
        Some(AccountFault::Hang) => (None, Outcome::Stalled),
    };
    let mark = Mark {
        sh,
        index,
        outcome: gone,
    };
    let mut stop = sh.stop.clone();
    let waited = tokio::select! {
        () = sleep_or_forever(wait) => Ok(()),
        _ = stop.wait_for(|s| *s) => Err(Refused::Cut),
    };
    mark.disarm();
    waited
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// DeepSeek's account checks on a request it is about to answer with `plan`: 402 when the
/// account's balance is at or below zero, 429 over its cap on requests in flight; then the
/// answer's whole usage is charged at list prices (before its first byte, so a client that has
/// read the answer always sees the balance after it).
pub(super) fn admit(
    sh: &Shared,
    key: &str,
    ticket: Option<&Ticket>,
    plan: &Plan,
) -> Result<(), Refused> {
    if !sh.accounts.can_pay(key) {
        return Err(Refused::Status(402));
    }
    // Every request of a known account has a ticket (see `count`); only those are capped.
    if ticket.is_some_and(|t| !t.admit(&plan.served)) {
        return Err(Refused::Status(429));
    }
    let miss = plan.prompt.saturating_sub(plan.hit);
    sh.accounts
        .charge(key, &plan.served, plan.hit, miss, plan.output());
    Ok(())
}

/// The response to a refused request in the route's error shape (`canned` per status), with its
/// outcome recorded when it was recorded.
pub(super) fn refuse<E: IntoResponse>(
    sh: &Shared,
    index: Option<usize>,
    refused: Refused,
    canned: fn(u16) -> E,
) -> Response {
    let (outcome, response) = match refused {
        Refused::Status(status) => (Outcome::Failed(status), canned(status).into_response()),
        Refused::Cut => (Outcome::Dropped, cut()),
    };
    if let Some(i) = index {
        sh.set_outcome(i, outcome);
    }
    response
}

/// A response whose body fails at once, which makes hyper cut the connection.
fn cut() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, io::Error>(io::Error::other("simulated DeepSeek shut down"))
    });
    Body::from_stream(failing).into_response()
}
