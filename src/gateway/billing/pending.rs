//! A request that holds money, settled exactly once ([`Pending`]), and what settling it did
//! ([`Billed`]).

use std::sync::Arc;

use super::{Outcome, Reported, RequestCtx, settle};
use crate::money::Usd;
use crate::state::AppState;
use crate::store::Finish;

/// What settling a request did: what it charged the key, and whether its ledger row is as safe
/// as `store.sync` promises (if not, the answer must not be delivered).
#[derive(Debug, Clone, Copy)]
pub struct Billed {
    /// The row is committed (`full`) or journaled (`normal`).
    pub recorded: bool,
    /// Charged to the key's balance in memory.
    pub charged: Usd,
}

/// A request holding money: settled exactly once, by [`Pending::settle`] or, if the request
/// is dropped first (the client went away while we waited on upstream), by `Drop`, which bills
/// it as a client abort in a task of its own. A hold can therefore never leak.
pub struct Pending {
    state: Arc<AppState>,
    ctx: Option<RequestCtx>,
}

impl Pending {
    /// Wrap a request that holds money.
    pub fn new(state: Arc<AppState>, ctx: RequestCtx) -> Pending {
        state.in_flight.enter(ctx.stream);
        Pending {
            state,
            ctx: Some(ctx),
        }
    }

    /// The request.
    pub fn ctx(&self) -> Option<&RequestCtx> {
        self.ctx.as_ref()
    }

    /// The daemon's state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Settle now (nothing to settle if it already was), for a request whose charge stands
    /// whatever the ledger does (a stream, a cut, a failure): a row that cannot be recorded now
    /// is kept and committed once the database takes writes again. `recorded` says whether it
    /// is already as safe as `store.sync` promises.
    pub async fn settle(self, o: Outcome) -> Billed {
        self.settle_as(o, true).await
    }

    /// Settle a whole answer not yet sent: when its row cannot be recorded as `store.sync`
    /// promises (`recorded` false), the caller withholds the answer and gives the charge back,
    /// so the row is not kept for a later commit.
    pub async fn settle_before_answer(self, o: Outcome) -> Billed {
        self.settle_as(o, false).await
    }

    async fn settle_as(mut self, o: Outcome, kept: bool) -> Billed {
        let Some(ctx) = self.ctx.take() else {
            return Billed {
                recorded: true,
                charged: Usd::ZERO,
            };
        };
        // Leave on every path, including this future being dropped mid-settlement.
        let _leave = Leave(&self.state, ctx.stream);
        settle(&self.state, &ctx, o, kept).await
    }
}

/// Leaves the count of requests in flight when dropped (`.1`: the request is streamed).
struct Leave<'a>(&'a AppState, bool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.in_flight.leave(self.1);
    }
}

impl Outcome {
    /// A client that went away before any answer reached it: billed by [`super::bill`]'s rule for
    /// an abort (its prompt once the request reached DeepSeek, else nothing).
    pub fn client_gone() -> Outcome {
        Outcome {
            usage: None,
            output_estimate: 0,
            reported: Reported::default(),
            finish: Finish::ClientAbort,
            status: 499,
            ttft: None,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let state = self.state.clone();
            let o = Outcome::client_gone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let _leave = Leave(&state, ctx.stream);
                        settle(&state, &ctx, o, true).await;
                    });
                }
                Err(_) => {
                    state.in_flight.leave(ctx.stream);
                    tracing::error!(
                        request_id = %ctx.request_id,
                        "request dropped outside the runtime; its hold stays until restart"
                    );
                }
            }
        }
    }
}
