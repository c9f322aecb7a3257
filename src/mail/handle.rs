//! The mailer as the rest of the daemon sees it: whether email is on, and a way to wake the
//! sending task when something was queued (it also looks on its own, every few seconds).

use std::sync::Arc;

use tokio::sync::Notify;

/// A cheap handle to the outbox's sender.
#[derive(Clone, Default)]
pub struct Mailer {
    enabled: bool,
    wake: Arc<Notify>,
}

impl Mailer {
    /// A handle; `enabled` when `[email]` is configured.
    pub fn new(enabled: bool) -> Mailer {
        Mailer {
            enabled,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Is email configured? While it is not, nothing is queued.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Something was queued (and committed): look at the outbox now.
    pub fn poke(&self) {
        if self.enabled {
            self.wake.notify_one();
        }
    }

    /// Wait until poked.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
