//! Activity: what happens in the daemon, as events on a broadcast bus that the admin socket
//! forwards to consoles. Publishing never blocks and never fails: with no subscriber, or a
//! subscriber that lags, events are simply dropped for that subscriber.
//!
//! Bottom floor (clients use these): this bus, the wire [`protocol`], the socket's
//! [`client`] half, and the [`fold`] of events into a live view that the daemon and the
//! console share. Daemon side: the [`tracker`] follows the bus to keep the state a console
//! gets as a snapshot when it connects, [`views`] turns records into wire views, and the
//! socket's [`server`] half serves both.

pub mod client;
pub mod fold;
pub mod protocol;
pub mod server;
pub mod tracker;
pub mod upstream_view;
pub mod views;

use std::sync::Arc;

use tokio::sync::broadcast;

pub use protocol::ActivityEvent;

/// Events kept for a slow subscriber before it starts losing them.
pub const BUS_CAPACITY: usize = 4096;

/// The bus.
#[derive(Clone)]
pub struct Activity {
    tx: broadcast::Sender<Arc<ActivityEvent>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// An empty bus.
    pub fn new() -> Activity {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Activity { tx }
    }

    /// Publish; never blocks.
    pub fn emit(&self, event: ActivityEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    /// A new subscription, starting now.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ActivityEvent>> {
        self.tx.subscribe()
    }

    /// Most events the bus holds, however slow its subscribers: its memory bound.
    pub fn capacity(&self) -> usize {
        BUS_CAPACITY
    }

    /// Events held now (not yet seen by every subscriber); never above [`Activity::capacity`].
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Subscriptions open now (the tracker's included).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
