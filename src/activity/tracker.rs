//! The activity tracker: the live state a console needs when it connects (requests in flight,
//! the latest finished ones, rate-limit hits, refusals, today's totals, upstream health), kept
//! by a task that follows the bus, and the [`Snapshot`]s built from it.
//!
//! The request path does nothing for it beyond the bus send it already does: the task applies
//! the events under a mutex held for a few field updates, and nothing on the request path ever
//! takes that mutex. Woken by an event, the task lets the next ones gather for [`GATHER`] and
//! applies them together, so a busy daemon wakes it a hundred times a second, not per event —
//! in turns of [`TURN`], so a request that arrives meanwhile waits for a turn, not the lot.
//!
//! **Hand-off.** A snapshot and the subscription that follows it are made together, by the
//! task, at a moment when it has applied every event sent so far and no event was sent since:
//! the subscription then yields exactly the events the snapshot does not reflect. That holds
//! for the tracked parts; the keys are read at that same moment (a request settling at that
//! very instant may already be in its key's balance and still follow as an event), and the
//! orders just after, from the database (order events carry absolute states, so a repeat
//! changes nothing). Only on a bus so busy that no such moment comes in [`HANDOFF_TRIES`]
//! tries may a few events be sent twice.
//!
//! **Resync.** At start-up, and whenever the task itself falls behind the bus, it subscribes
//! afresh, waits until the ledger writer has committed everything queued before (a barrier
//! write: a request's ledger row is queued before its `request_finished` is sent), and reloads
//! today's totals, today's paid orders and the latest finished requests from the database, in
//! one read transaction. Rows it counted that belong to events still to come are remembered
//! (by request id) so those events are not counted twice; requests in flight whose end it
//! missed are dropped when their rows show up, or once they are older than any request can be.

mod live;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};

use live::{Baseline, Live};

use super::fold::{DAY_MS, day_of};
use super::protocol::Snapshot;
use super::views::{key_view, order_view};
use super::{Activity, ActivityEvent};
use crate::clock::{mono_ms, now_ms};
use crate::keys::KeyTable;
use crate::store::{Store, StoreError, Write};

/// Finished requests kept.
pub const FINISHED_KEPT: usize = 50;
/// 402/403 refusals kept (within the last hour).
pub const REFUSALS_KEPT: usize = 200;
/// Rate-limit hits kept per key (within the last hour): a client hammering a 429 cannot grow
/// the daemon's memory, it only loses the oldest hits from view.
pub const HITS_PER_KEY: usize = 1000;
/// Orders in a snapshot.
pub const ORDERS_SHOWN: u32 = 100;
/// Attempts at an exact hand-off before settling for a possibly overlapping one.
pub const HANDOFF_TRIES: usize = 16;
/// How long past the upstream request timeout a request may still settle (its final bytes,
/// the ledger commit); a request in flight older than that was missed ending.
const SETTLE_SLACK: Duration = Duration::from_secs(60);
/// Between a request's settlement time stamp and its `request_finished` there is only
/// synchronous code; this bounds it generously (thread preemption, clock steps).
const SETTLE_MARGIN_MS: i64 = 60_000;
/// How long the request ids counted by a reload are kept to recognise their events.
const RELOADED_KEPT_MS: i64 = 5 * 60_000;
/// Snapshot requests waiting for the task.
const PENDING_REQUESTS: usize = 64;
/// After an event wakes the task, how long it lets the events that follow gather before it
/// applies them in one turn. Woken for each event, the task was polled three times a request
/// (started, routed, finished), each turn a trip through the scheduler and the bus's `select!`
/// (~3k instructions a request, bench/PROFILE.md); now a busy daemon wakes it at most 100
/// times a second, and an idle one not at all. A snapshot drains the bus first, so nothing a
/// console sees waits on this; the bus ([`super::BUS_CAPACITY`]) holds far more than a turn's
/// events at any rate the gateway can serve.
const GATHER: Duration = Duration::from_millis(10);
/// Events applied in one turn after a [`GATHER`] before the task lets the others run. Applied
/// in one go, a gathered 10 ms (~150 events at 5 000 requests a second) held the core for
/// ~100 µs, and a request that arrived meanwhile waited for all of it: ~10 % of `normal`'s
/// added p99 at one connection (bench/PROFILE.md). A turn of 32 is a few µs.
const TURN: usize = 32;

/// Why a snapshot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The task is gone: the daemon is stopping.
    #[error("the activity tracker is not running (the daemon is stopping)")]
    Stopped,
    /// The database could not be read.
    #[error("activity tracker: {0}")]
    Store(#[from] StoreError),
}

/// Events as the bus carries them.
pub type Events = broadcast::Receiver<Arc<ActivityEvent>>;

type Reply = oneshot::Sender<Result<(Snapshot, Events), TrackerError>>;

/// What the tracker reads besides the bus: the database (reloads, orders), the keys (their
/// views in a snapshot) and the daemon's start (uptime).
#[derive(Clone)]
pub struct TrackerParts {
    /// The bus it follows.
    pub activity: Activity,
    /// The database.
    pub store: Store,
    /// Keys in memory.
    pub keys: Arc<KeyTable>,
    /// When the daemon started.
    pub started: Instant,
}

/// The tracker: shared state, and the way to ask its task for a snapshot. Its task ends when
/// this handle is dropped (with the daemon's state).
pub struct ActivityTracker {
    requests: mpsc::Sender<Reply>,
    parts: TrackerParts,
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // The state stays consistent through a panic mid-update (plain field writes), so a
    // poisoned lock is used as is rather than taking the console down with it.
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ActivityTracker {
    /// Load today's state from the database and start following the bus, for requests that
    /// last at most `request_timeout`. Call before the daemon serves.
    pub async fn start(
        parts: TrackerParts,
        request_timeout: Duration,
    ) -> Result<ActivityTracker, TrackerError> {
        let (requests, inbox) = mpsc::channel(PENDING_REQUESTS);
        let max_request = request_timeout.saturating_add(SETTLE_SLACK);
        let live = Live::new(i64::try_from(max_request.as_millis()).unwrap_or(i64::MAX));
        let live = Arc::new(Mutex::new(live));
        let rx = reload(&parts, &live).await?;
        let runner = Runner {
            live,
            parts: parts.clone(),
            rx,
        };
        tokio::spawn(runner.run(inbox));
        Ok(ActivityTracker { requests, parts })
    }

    /// A snapshot and the events that follow it (see the module docs: none of them is already
    /// reflected in it, bar a possible overlap on a saturated bus).
    pub async fn subscribe(&self) -> Result<(Snapshot, Events), TrackerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| TrackerError::Stopped)?;
        let (mut snapshot, events) = answer.await.map_err(|_| TrackerError::Stopped)??;
        let orders = self
            .parts
            .store
            .read(|c| crate::store::orders::recent_full(c, ORDERS_SHOWN))
            .await?;
        snapshot.orders = orders.iter().map(order_view).collect();
        Ok((snapshot, events))
    }

    /// The daemon's state now.
    pub async fn snapshot(&self) -> Result<Snapshot, TrackerError> {
        self.subscribe().await.map(|(s, _)| s)
    }
}

/// Subscribe afresh, wait for the ledger writer, and reload the database's view of today;
/// returns the new subscription.
async fn reload(parts: &TrackerParts, live: &Mutex<Live>) -> Result<Events, TrackerError> {
    // Subscribe first: every event sent from now on is in `rx`, and every request whose
    // event came before has its ledger row queued before the barrier below.
    let rx = parts.activity.subscribe();
    let subscribed_ms = now_ms();
    parts.store.write(Write::Barrier).await?;
    let max_request_ms = lock(live).max_request_ms;
    let day = day_of(subscribed_ms);
    let baseline = parts
        .store
        .read(move |c| {
            // One read transaction: the totals and the ids below see the same rows.
            let tx = c.unchecked_transaction()?;
            let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
            let (requests, spend) = crate::store::usage::totals_between(&tx, from, to)?;
            let paid = crate::store::orders::paid_between(&tx, from, to)?;
            let settled = crate::store::usage::settled_since(
                &tx,
                subscribed_ms.saturating_sub(max_request_ms),
                subscribed_ms - SETTLE_MARGIN_MS,
            )?;
            let latest = crate::store::usage::latest(&tx, FINISHED_KEPT as u32)?;
            drop(tx);
            Ok(Baseline {
                day,
                requests,
                spend,
                paid,
                settled,
                latest,
                keep_until_ms: subscribed_ms + RELOADED_KEPT_MS,
            })
        })
        .await?;
    lock(live).reload(baseline);
    Ok(rx)
}

/// The task: applies events, answers snapshot requests, resyncs when it lags.
struct Runner {
    live: Arc<Mutex<Live>>,
    parts: TrackerParts,
    rx: Events,
}

/// How draining the bus ended.
enum Drained {
    Empty,
    Lagged(u64),
    Closed,
}

impl Runner {
    async fn run(mut self, mut inbox: mpsc::Receiver<Reply>) {
        loop {
            tokio::select! {
                biased;
                request = inbox.recv() => {
                    let Some(reply) = request else { return };
                    let answer = self.handoff().await;
                    let _ = reply.send(answer);
                }
                event = self.rx.recv() => match event {
                    Ok(e) => {
                        // The clocks before the event (a step moves what was in flight before
                        // it), the reload after it (the ledger's totals replace the fold's).
                        let back = self.observe_clocks();
                        self.apply(&e);
                        if back {
                            self.stepped_back().await;
                        }
                        // Let what follows gather, and apply it in one turn (see GATHER).
                        tokio::time::sleep(GATHER).await;
                        match self.drain_in_turns().await {
                            Drained::Empty => {}
                            Drained::Lagged(missed) => self.lagged(missed).await,
                            Drained::Closed => return,
                        }
                    }
                    Err(RecvError::Lagged(missed)) => self.lagged(missed).await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    fn apply(&self, e: &ActivityEvent) {
        lock(&self.live).apply(e, now_ms());
    }

    /// Look at the clocks ([`Live::observe_clocks`]): whether the wall clock stepped back to an
    /// earlier day than today's totals count.
    fn observe_clocks(&self) -> bool {
        lock(&self.live).observe_clocks(now_ms(), mono_ms())
    }

    /// After a step back across midnight, today (the earlier day) is reloaded from the ledger.
    async fn stepped_back(&mut self) {
        tracing::warn!("the wall clock stepped back to an earlier day; reloading its totals");
        self.reload().await;
    }

    /// Reload today from the ledger and follow the bus from the new subscription.
    async fn reload(&mut self) {
        match reload(&self.parts, &self.live).await {
            Ok(rx) => self.rx = rx,
            // Go on from the oldest event the bus still holds.
            Err(e) => {
                tracing::error!(error = %e, "activity tracker could not reload; totals may be short")
            }
        }
    }

    /// Apply everything sent so far.
    fn drain(&mut self) -> Drained {
        loop {
            if let Some(drained) = self.drain_some(usize::MAX) {
                return drained;
            }
        }
    }

    /// Apply everything sent so far, [`TURN`] events at a time, letting the other tasks on
    /// this thread run between turns — unless the bus holds a quarter of its capacity, which
    /// is caught up with at once (yielding then could let the bus lap the task).
    async fn drain_in_turns(&mut self) -> Drained {
        loop {
            if let Some(drained) = self.drain_some(TURN) {
                return drained;
            }
            if self.rx.len() < super::BUS_CAPACITY / 4 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Apply up to `max` events sent so far under one hold of the lock; `None` when `max`
    /// were applied and more may be waiting.
    fn drain_some(&mut self, max: usize) -> Option<Drained> {
        let mut live = lock(&self.live);
        for _ in 0..max {
            match self.rx.try_recv() {
                Ok(e) => live.apply(&e, now_ms()),
                Err(TryRecvError::Empty) => return Some(Drained::Empty),
                Err(TryRecvError::Lagged(missed)) => return Some(Drained::Lagged(missed)),
                Err(TryRecvError::Closed) => return Some(Drained::Closed),
            }
        }
        None
    }

    async fn lagged(&mut self, missed: u64) {
        tracing::warn!(
            missed,
            "the activity tracker fell behind the bus; reloading today's state from the database"
        );
        self.reload().await;
    }

    /// A snapshot and a subscription that starts exactly where the snapshot ends.
    async fn handoff(&mut self) -> Result<(Snapshot, Events), TrackerError> {
        if self.observe_clocks() {
            self.stepped_back().await;
        }
        let mut tries = 0;
        loop {
            match self.drain() {
                Drained::Empty => {}
                Drained::Lagged(missed) => {
                    self.lagged(missed).await;
                    continue;
                }
                Drained::Closed => return Err(TrackerError::Stopped),
            }
            // The bus was empty for us just before this subscription; if it still is just
            // after, nothing was sent in between, so the new subscription starts right after
            // the last event applied.
            let sub = self.parts.activity.subscribe();
            match self.rx.try_recv() {
                Err(TryRecvError::Empty) => return self.capture(sub),
                Ok(e) => {
                    self.apply(&e);
                    tries += 1;
                    if tries >= HANDOFF_TRIES {
                        tracing::debug!("bus too busy for an exact hand-off; events may repeat");
                        match self.drain() {
                            Drained::Empty => {}
                            Drained::Lagged(missed) => self.lagged(missed).await,
                            Drained::Closed => return Err(TrackerError::Stopped),
                        }
                        return self.capture(sub);
                    }
                }
                Err(TryRecvError::Lagged(missed)) => self.lagged(missed).await,
                Err(TryRecvError::Closed) => return Err(TrackerError::Stopped),
            }
        }
    }

    /// The snapshot (all but the orders) of the state as it is now.
    fn capture(&self, sub: Events) -> Result<(Snapshot, Events), TrackerError> {
        let at_ms = now_ms();
        let mut snapshot = lock(&self.live).view(at_ms);
        snapshot.version = env!("CARGO_PKG_VERSION").to_string();
        snapshot.uptime_secs = self.parts.started.elapsed().as_secs();
        snapshot.at_ms = at_ms;
        snapshot.keys = self.parts.keys.all().iter().map(|k| key_view(k)).collect();
        Ok((snapshot, sub))
    }
}

#[cfg(test)]
mod tests;
