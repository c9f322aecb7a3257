//! The shared state every handler sees ([`AppState`]) and how it is opened, the count of
//! requests in flight that shutdown waits on, and the small per-request pieces that go with it:
//! the request id and the middleware that assigns it (`state/edge.rs`), the client's address
//! (`state/client_ip.rs`); the data directory's checks at start are in `state/start.rs`.
//!
//! This module sits below the handlers: they import it, it imports none of them. The router
//! and the daemon's life cycle are in [`crate::app`], the only module that imports handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::activity::Activity;
use crate::activity::tracker::{ActivityTracker, TrackerParts};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::keys::seal::Sealer;
use crate::keys::{KeyState, KeyTable};
use crate::store::Store;
use crate::upstream::Upstream;

mod client_ip;
mod edge;
mod start;

pub use client_ip::ClientIp;
pub use edge::{RequestId, around, edge, new_request_id};
use start::{
    DEMO_MARKER, DEMO_TEXT, demo_database, demo_marker, lock_dir, mark_demo_database, plans_in_use,
    private_dir, room_to_start, unopened,
};
pub use start::{StartError, data_dir_in_use, io};

/// Everything a handler may need, shared behind an `Arc`.
pub struct AppState {
    /// The validated configuration (immutable while running).
    pub config: Arc<Config>,
    /// Models, plans and peak windows, ready for the request path.
    pub catalog: Catalog,
    /// Keys and balances in memory: the request path never reads SQLite.
    pub keys: Arc<KeyTable>,
    /// The database (one writer, two read connections: one for `/healthz` alone).
    pub store: Store,
    /// Seals keys at rest with the server secret.
    pub sealer: Sealer,
    /// The data directory's lock, held while the daemon runs ([`AppState::release_data_dir`]).
    data_lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Activity bus for the console.
    pub activity: Activity,
    /// Follows the bus to keep what a console sees when it connects (snapshots).
    pub tracker: ActivityTracker,
    /// The DeepSeek client.
    pub upstream: Upstream,
    /// When the daemon started (uptime).
    pub started: Instant,
    /// Requests holding money right now; shutdown waits for them to settle.
    pub in_flight: InFlight,
    /// Bytes of request bodies being read, per key and in all (bounded).
    pub bodies: crate::gateway::bodies::Bodies,
    /// Running with simulated upstream and PayPal (`serve --demo`): pages show a DEMO banner.
    pub demo: bool,
    /// Per-IP limits of the storefront.
    pub shop_limits: crate::shop::limits::ShopLimits,
    /// The PayPal client; `None` until `paypal.client_id` is configured (checkout then says so).
    pub paypal: Option<crate::paypal::PayPal>,
    /// Serialises order state changes (payments are rare; the request path never takes it).
    pub fulfil_lock: tokio::sync::Mutex<()>,
    /// Orders whose capture PayPal declined (`INSTRUMENT_DECLINED`), each with a fresh random
    /// suffix: the next capture, after the buyer approved another way to pay, goes under a new
    /// `PayPal-Request-Id` (PayPal may answer a repeated one with the stored decline). In
    /// memory: after a restart the first capture may meet the old decline once more, and the
    /// next one has a new id.
    pub capture_declines: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Captures at PayPal in progress, per order: another capture of the same order waits for
    /// the first (see `shop::checkout::capture_at_paypal`).
    pub capturing: crate::shop::checkout::Capturing,
    /// Cancelled when shutdown stops waiting: requests still in flight end, billed, at once.
    pub cut: tokio_util::sync::CancellationToken,
    /// Cancelled when shutdown begins (before the drain): work done only for a client that is
    /// gone (a stream read on for its usage) ends then rather than holding the drain.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Counters for `/metrics` (atomics; the request path takes no lock).
    pub metrics: crate::metrics::Metrics,
    /// Receipts and notices: whether email is on, and the outbox sender's wake-up.
    pub mailer: crate::mail::Mailer,
    /// Serialises key rotations (two at once must not both think they replaced the same text).
    pub rotate_lock: tokio::sync::Mutex<()>,
    /// Serializes the operator's top-ups, so that the check against a key's budget ceiling
    /// and the top-up it allows are one step (concurrent ones went past it).
    pub top_up_lock: tokio::sync::Mutex<()>,
    /// Serializes the operator's upstream enable/disable, so the account's state in memory and
    /// the one recorded for the next start are changed as one step (an enable and a disable
    /// sent at once could leave them disagreeing, and a restart flipped the account).
    pub upstream_lock: tokio::sync::Mutex<()>,
    /// The dashboard's replacements of the last minutes, for a form sent twice.
    pub recent_rotations: crate::shop::rotate::Recent,
}

/// A count of requests in flight, with a way to wait until there are none.
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    /// Of which not streamed, shared with the store, whose `full` syncs wait a little for them
    /// ([`Store::answers_in_flight`]).
    answers: Arc<std::sync::atomic::AtomicUsize>,
    idle: tokio::sync::Notify,
}

impl InFlight {
    /// A count whose requests not streamed are also kept in `answers` (the store's
    /// [`Store::answers_in_flight`]).
    pub fn counting(answers: Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        InFlight {
            count: std::sync::atomic::AtomicUsize::new(0),
            answers,
            idle: tokio::sync::Notify::new(),
        }
    }

    /// One more request (`stream`: streamed).
    pub fn enter(&self, stream: bool) {
        if !stream {
            self.answers
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// One request settled (`stream`: as it entered).
    pub fn leave(&self, stream: bool) {
        if !stream {
            self.answers
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        if self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Requests in flight now.
    pub fn get(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Wait until none are in flight, or `limit` passes; true when none are.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.get() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get() == 0;
            }
        }
    }
}

impl AppState {
    /// Let another daemon open the data directory (the end of a clean shutdown, once the
    /// database is closed; an in-process restart needs it before this state is dropped).
    pub fn release_data_dir(&self) {
        if let Ok(mut lock) = self.data_lock.lock() {
            lock.take();
        }
    }

    /// Open the data dir, the database and the secret; load keys; start the activity tracker.
    pub async fn open(config: Config, demo: bool) -> Result<Arc<AppState>, StartError> {
        let data_dir = &config.server.data_dir;
        private_dir(data_dir)?;
        let data_lock = lock_dir(data_dir)?;
        let mark_demo = demo_marker(data_dir, demo)?;
        room_to_start(data_dir)?;
        let secret_path = config
            .server
            .secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secret.key"));
        let db_path = data_dir.join("modelrelay.db");
        demo_database(&db_path, demo)?;
        let (store, records) = Store::open_with(
            &db_path,
            config.store.sync,
            Duration::from_millis(config.store.sync_interval_ms),
        )
        .await
        .map_err(|e| match e {
            // Its text names the file already (the journal's directory, the database's).
            e @ crate::store::StoreError::Io(_) => StartError::Store(e),
            // "database: database or disk is full" named neither (found by an independent
            // check).
            source => StartError::Database {
                path: db_path.display().to_string(),
                source,
            },
        })?;
        // A first start makes the secret; a later one without it would make another, and keys
        // sealed since would not open with the old one put back.
        if !records.is_empty() && matches!(secret_path.try_exists(), Ok(false)) {
            store.close().await;
            let own = data_dir.join("secret.key");
            let elsewhere = (own != secret_path && own.exists()).then_some(own);
            return Err(crate::keys::seal::SealError::Missing {
                path: secret_path,
                keys: records.len(),
                elsewhere,
            }
            .into());
        }
        let sealer = Sealer::load_or_create(&secret_path)?;
        // Another secret than the one the database was made with (a wrong file put back): the
        // keys sold from now on would not open with the right one (found by an independent
        // re-check). Said, not refused: a secret made anew on purpose, after the old one was
        // lost for good, opens no older key either, until the next key is sold.
        if let Some((count, newest)) = unopened(&sealer, &records) {
            tracing::error!(
                path = %secret_path.display(),
                unopened = count,
                keys = records.len(),
                %newest,
                "the secret file does not open {count} of the {} keys in the database (their \
                 text cannot be shown again on the order page): if it is not the one the \
                 database was made with, stop the daemon and put that one back (keys sold from \
                 now on are sealed with this one)",
                records.len()
            );
        }
        if mark_demo {
            // Once the store opened: a start that fails before leaves the directory unmarked.
            let marker = data_dir.join(DEMO_MARKER);
            std::fs::write(&marker, DEMO_TEXT)
                .map_err(io(format!("cannot write {}", marker.display())))?;
        }
        if demo {
            // Every demo start, so a directory a demo made before the mark existed gets it too.
            mark_demo_database(&db_path)?;
        }
        tracing::info!(
            sync = match config.store.sync {
                crate::config::SyncMode::Full => "full",
                crate::config::SyncMode::Normal => "normal",
            },
            interval_ms = config.store.sync_interval_ms,
            "ledger durability"
        );
        let catalog = Catalog::from_config(&config).map_err(StartError::Config)?;
        plans_in_use(&catalog, &records)?;
        let keys = Arc::new(KeyTable::new(records.into_iter().map(|r| {
            let rpm = catalog.rpm_of(&r.plan);
            (r.hash, KeyState::from_record(r, rpm))
        })));
        // Orders another PayPal made are not asked of this one (`shop::orders::made_by_other_paypal`):
        // said at the start, not only when their buyers come back.
        let app = config.paypal.app();
        let other = store
            .read(move |c| crate::store::orders::open_of_other_paypal(c, &app))
            .await?;
        for (made_by, created, pending) in other {
            tracing::warn!(
                %made_by,
                configured = %config.paypal.app(),
                created,
                pending,
                "open orders were made under other PayPal settings (paypal.env:paypal.client_id): \
                 they are not settled with these (a pending one's money is held by that PayPal); \
                 `modelrelay orders show ID` names each one's PayPal (\"made at\"); configure that \
                 PayPal again to settle them"
            );
        }
        // Which notices of the current crossing each key has had, so a restart sends none twice.
        for (key_id, low, exhausted) in store.read(crate::store::mail::notice_flags).await? {
            if let Some(k) = keys.by_id(&key_id) {
                k.restore_notices(low, exhausted);
            }
        }
        // An empty client id is one of `Config::warnings`, logged by `serve`.
        let paypal = if config.paypal.client_id.trim().is_empty() {
            None
        } else {
            let settings = crate::paypal::PaypalSettings {
                base_url: config.paypal.base_url(),
                client_id: config.paypal.client_id.clone(),
                client_secret: config.paypal.client_secret.clone(),
                webhook_id: config.paypal.webhook_id.clone(),
            };
            Some(
                crate::paypal::PayPal::new(settings)
                    .map_err(|e| StartError::Config(e.to_string()))?,
            )
        };
        let activity = Activity::new();
        let upstream = Upstream::new(&config, activity.clone())?;
        upstream.start_watch();
        let started = Instant::now();
        let parts = TrackerParts {
            activity: activity.clone(),
            store: store.clone(),
            keys: keys.clone(),
            started,
        };
        // A whole answer waited for past the request timeout (`upstream::whole_answer_wait`)
        // drops out of the console's requests in flight then (its end is counted all the
        // same): a bound of hours made a console's reload read hours of ledger rows.
        let tracker = ActivityTracker::start(parts, upstream.request_timeout).await?;
        let metrics = crate::metrics::Metrics::new(config.models.keys().cloned());
        let mailer = crate::mail::Mailer::new(config.email.enabled());
        let in_flight = InFlight::counting(store.answers_in_flight());
        let bodies = crate::gateway::bodies::Bodies::new(config.server.max_body_bytes);
        let state = Arc::new(AppState {
            config: Arc::new(config),
            catalog,
            keys,
            store,
            sealer,
            data_lock: std::sync::Mutex::new(Some(data_lock)),
            activity,
            tracker,
            upstream,
            started,
            in_flight,
            bodies,
            demo,
            shop_limits: crate::shop::limits::ShopLimits::default(),
            paypal,
            fulfil_lock: tokio::sync::Mutex::new(()),
            capture_declines: std::sync::Mutex::default(),
            capturing: crate::shop::checkout::Capturing::default(),
            cut: tokio_util::sync::CancellationToken::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
            metrics,
            mailer,
            rotate_lock: tokio::sync::Mutex::new(()),
            top_up_lock: tokio::sync::Mutex::new(()),
            upstream_lock: tokio::sync::Mutex::new(()),
            recent_rotations: Default::default(),
        });
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    /// The store's `full` syncs wait for answers in flight, never for streams (each stream's
    /// last event would carry the wait), and the drain counts both.
    #[test]
    fn the_store_sees_answers_in_flight_and_not_streams() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let answers = std::sync::Arc::new(AtomicUsize::new(0));
        let in_flight = super::InFlight::counting(answers.clone());
        in_flight.enter(false);
        in_flight.enter(true);
        in_flight.enter(false);
        assert_eq!((in_flight.get(), answers.load(Ordering::Acquire)), (3, 2));
        in_flight.leave(true);
        in_flight.leave(false);
        assert_eq!((in_flight.get(), answers.load(Ordering::Acquire)), (1, 1));
        in_flight.leave(false);
        assert_eq!((in_flight.get(), answers.load(Ordering::Acquire)), (0, 0));
    }
}
