//! The shared state every handler sees ([`AppState`]), and the small per-request pieces that
//! go with it: the request id (and the middleware that assigns it), the client's address, and
//! the count of requests in flight that shutdown waits on.
//!
//! This module sits below the handlers: they import it, it imports none of them. The router
//! and the daemon's life cycle are in [`crate::app`], the only module that imports handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::activity::Activity;
use crate::activity::tracker::{ActivityTracker, TrackerError, TrackerParts};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::keys::seal::Sealer;
use crate::keys::{KeyState, KeyTable};
use crate::store::Store;
use crate::upstream::Upstream;

/// The request id's headers, named once (a `&str` name is checked on every insert).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Everything a handler may need, shared behind an `Arc`.
pub struct AppState {
    /// The validated configuration (immutable while running).
    pub config: Arc<Config>,
    /// Models, plans and peak windows, ready for the request path.
    pub catalog: Catalog,
    /// Keys and balances in memory: the request path never reads SQLite.
    pub keys: Arc<KeyTable>,
    /// The database (one writer, one reader).
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

/// The `x-request-id` of the request being handled.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Files or sockets.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The database file could not be opened, migrated or brought up to date from the
    /// ledger's journal: which file, and why.
    #[error("{path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// Why.
        source: crate::store::StoreError,
    },
    /// The server secret.
    #[error("{0}")]
    Seal(#[from] crate::keys::seal::SealError),
    /// The upstream HTTP clients.
    #[error("HTTP client: {0}")]
    Http(#[from] crate::upstream::BuildError),
    /// The configuration.
    #[error("{0}")]
    Config(String),
    /// The data directory holds demo data and this is not a demo, or the other way round.
    #[error("{0}")]
    DemoMix(String),
    /// Another daemon holds the data directory.
    #[error(
        "another modelrelay daemon is using the data directory {0} (it holds {0}/modelrelay.lock); \
         stop it first: two daemons on one database would each keep their own balances"
    )]
    DataDirBusy(String),
    /// The activity tracker could not load today's state.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
}

/// Wrap an I/O error with what was being done.
pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// Create the data directory owner-only (0700, whatever the umask). An existing one is left
/// as the operator made it (systemd's `StateDirectory` decides its mode), with a warning when
/// anyone may list it; the files inside are 0600 either way.
fn private_dir(dir: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        // A file where the directory should be: said as such (it was warned about as a
        // directory open to everyone, then failed as "Not a directory").
        if !meta.is_dir() {
            return Err(StartError::Io {
                context: format!("data dir {}", dir.display()),
                source: std::io::Error::other("it is a file, not a directory"),
            });
        }
        if meta.permissions().mode() & 0o007 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the data directory is open to every local user; chmod 700 it (the database \
                 files inside are 0600 regardless)"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("cannot create data dir {}", dir.display())))?;
    // `mode` is filtered by the umask; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(format!(
        "cannot set the mode of data dir {}",
        dir.display()
    )))
}

/// Lock the data directory for this daemon (an exclusive `flock` on `modelrelay.lock`, which
/// the kernel drops with the process however it ends). Checked before the secret and the
/// database are touched: a second daemon on the same directory would load the same keys
/// into balances of its own, so a key revoked or spent on one would still pay on the other.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("modelrelay.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::DataDirBusy(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

/// Whether another daemon holds the data directory's lock now (checked, then let go).
pub fn data_dir_in_use(dir: &std::path::Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("modelrelay.lock"))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The file that marks a data directory as the demo's.
const DEMO_MARKER: &str = "DEMO";
/// What it says to whoever opens it.
const DEMO_TEXT: &str = "This data directory was made by `modelrelay serve --demo` (a simulated \
DeepSeek and PayPal).\nA real `modelrelay serve` refuses it: delete the directory to start afresh.\n";

/// Keep demo data and real data apart. `serve --demo` marks the directory it creates (a
/// `DEMO` file), and a real `serve` refuses a marked one: its keys were sold through the
/// simulated PayPal, and would spend the operator's real DeepSeek balance. A demo refuses a
/// directory that already holds a real database, whose orders and keys it would add to.
/// Returns whether the directory is to be marked (once the database is open). Directories a
/// demo made before this check existed carry no mark, and a real `serve` takes them.
fn demo_marker(dir: &std::path::Path, demo: bool) -> Result<bool, StartError> {
    let marker = dir.join(DEMO_MARKER);
    let marked = marker.exists();
    let has_db = dir.join("modelrelay.db").exists();
    match (demo, marked) {
        (true, true) | (false, false) => Ok(false),
        (true, false) if has_db => Err(StartError::DemoMix(format!(
            "the data directory {} holds a real database; `serve --demo` would sell keys into \
             it through its simulated PayPal. Give the demo a data directory of its own \
             (server.data_dir, or MODELRELAY_SERVER__DATA_DIR)",
            dir.display()
        ))),
        (true, false) => Ok(true),
        (false, true) => Err(StartError::DemoMix(format!(
            "the data directory {} holds demo data (made by `serve --demo`: keys sold through \
             the simulated PayPal, which would spend your real DeepSeek balance). Point \
             server.data_dir elsewhere, or delete that directory to start afresh",
            dir.display()
        ))),
    }
}

/// How many keys `sealer` does not open (sealed with another secret), and the newest of them;
/// `None` when it opens every one. All are tried, not only the newest: a key sold under a wrong
/// secret became the newest, and the next start said nothing of the older keys it could not
/// open (found by an independent re-check). Opening one is a few microseconds.
fn unopened(sealer: &Sealer, records: &[crate::keys::KeyRecord]) -> Option<(usize, String)> {
    let mut count = 0;
    let mut newest: Option<&crate::keys::KeyRecord> = None;
    for r in records {
        if sealer.open(&r.id, &r.sealed).is_err() {
            count += 1;
            if newest.is_none_or(|n| r.created_at > n.created_at) {
                newest = Some(r);
            }
        }
    }
    newest.map(|r| (count, r.id.clone()))
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
        let secret_path = config
            .server
            .secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secret.key"));
        let db_path = data_dir.join("modelrelay.db");
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
            return Err(crate::keys::seal::SealError::Missing {
                path: secret_path,
                keys: records.len(),
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
        tracing::info!(
            sync = match config.store.sync {
                crate::config::SyncMode::Full => "full",
                crate::config::SyncMode::Normal => "normal",
            },
            interval_ms = config.store.sync_interval_ms,
            "ledger durability"
        );
        let catalog = Catalog::from_config(&config).map_err(StartError::Config)?;
        for r in &records {
            if catalog.plan(&r.plan).is_none() {
                tracing::warn!(key_id = %r.id, plan = %r.plan, "key's plan is no longer in the config");
            }
        }
        let keys = Arc::new(KeyTable::new(records.into_iter().map(|r| {
            let rpm = catalog.rpm_of(&r.plan);
            (r.hash, KeyState::from_record(r, rpm))
        })));
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
        let tracker = ActivityTracker::start(parts, upstream.request_timeout).await?;
        let metrics = crate::metrics::Metrics::new(config.models.keys().cloned());
        let mailer = crate::mail::Mailer::new(config.email.enabled());
        let in_flight = InFlight::counting(store.answers_in_flight());
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
            demo,
            shop_limits: crate::shop::limits::ShopLimits::default(),
            paypal,
            fulfil_lock: tokio::sync::Mutex::new(()),
            capture_declines: std::sync::Mutex::default(),
            capturing: crate::shop::checkout::Capturing::default(),
            cut: tokio_util::sync::CancellationToken::new(),
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

/// The client's address: the TCP peer, or — with `server.behind_proxy` and a loopback peer (the
/// proxy) — the address the proxy appended last to `X-Forwarded-For`. Per-IP limits and the
/// console use it; without it, every customer behind a proxy would share one address.
///
/// Only that last entry is trusted: everything before it is whatever the client sent. When it
/// is not an address (a port and IPv6 brackets are allowed), the client is unknown — the
/// unspecified address `0.0.0.0`, which is never loopback and shares one per-IP allowance —
/// and never an earlier, client-written entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

impl ClientIp {
    /// The client whose address could not be known.
    pub const UNKNOWN: ClientIp = ClientIp(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));

    /// Work it out from the connection and headers.
    pub fn of(state: &AppState, parts: &axum::http::request::Parts) -> ClientIp {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            // A dual-stack listener (`[::]:…`) sees IPv4 peers as `::ffff:a.b.c.d`: as the
            // IPv4 address they are, a local proxy is loopback and per-IP limits are per client.
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| {
                c.0.ip().to_canonical()
            });
        if !state.config.server.behind_proxy {
            if peer.is_loopback()
                && !PROXY_WARNED.load(std::sync::atomic::Ordering::Relaxed)
                && parts.headers.contains_key("x-forwarded-for")
            {
                warn_proxy_unset(peer);
            }
            return ClientIp(peer);
        }
        if peer.is_loopback() {
            let last = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .map(|v| v.to_str().ok().and_then(|v| v.rsplit(',').next()));
            return match last {
                Some(Some(entry)) => parse_forwarded(entry)
                    .map_or(ClientIp::UNKNOWN, |ip| ClientIp(ip.to_canonical())),
                // A header that is not text: unknown, like any other unparsable entry.
                Some(None) => ClientIp::UNKNOWN,
                // No header: the proxy itself (or a local client) is talking.
                None => ClientIp(peer),
            };
        }
        ClientIp(peer)
    }

    /// The address as shown to the operator (`unknown` when it could not be known).
    pub fn label(&self) -> String {
        match self.0 {
            _ if *self == ClientIp::UNKNOWN => "unknown".into(),
            // Every admitted request's announcement carries it: four numbers written directly
            // rather than through `Display`'s formatter (~1.3k instructions a request,
            // bench/PROFILE.md); the same text.
            std::net::IpAddr::V4(v4) => {
                let mut out = String::with_capacity(15);
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(digits.format(octet));
                }
                out
            }
            std::net::IpAddr::V6(_) => self.0.to_string(),
        }
    }
}

/// Whether [`warn_proxy_unset`] has spoken (then requests skip the header look-up).
static PROXY_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Say once, at the first request that shows it, that a local proxy is in front while
/// `server.behind_proxy` is off: every customer then shares the proxy's address for per-client
/// limits, so one visitor's failed look-ups lock every buyer out (found by an independent check).
fn warn_proxy_unset(peer: std::net::IpAddr) {
    if !PROXY_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "requests from a local proxy carry X-Forwarded-For but server.behind_proxy is false: \
             every customer counts as {peer} for per-client limits; set server.behind_proxy = true"
        );
    }
}

/// One `X-Forwarded-For` entry: `203.0.113.9`, `203.0.113.9:5555`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:5555`.
fn parse_forwarded(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(std::net::IpAddr::V6)
}

impl axum::extract::FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(state, parts))
    }
}

/// A new request id: `req_`, the time in milliseconds (12 hex digits), then 12 random
/// alphanumerics. Ids only need to be unique, not secret, so the thread-local generator spares
/// the hot path a system call; the time prefix makes ids arrive in order, so the ledger's
/// unique index on them is appended to rather than written at random pages (which is what
/// slows an index down once the ledger holds millions of rows).
pub fn new_request_id() -> String {
    use rand::Rng;
    use std::fmt::Write as _;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    let _ = write!(id, "{:012x}", ms & 0xffff_ffff_ffff);
    id.extend(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(12)
            .map(char::from),
    );
    id
}

/// The one middleware every response from the router passes (one layer, not three: each
/// `from_fn` layer boxes the route's service and future per request, which showed in the
/// profile); its work is [`around`], which the chat routes answered ahead of the router
/// (`crate::app::shortcut`) run too:
/// - every response gets an `x-request-id` (and handlers the same id, as [`RequestId`]);
///   Anthropic's routes (and `/v1/models` asked by an Anthropic client) also as `request-id`,
///   where the `anthropic` SDKs read it (`message._request_id`);
/// - it is counted by route template and status for `/metrics`;
/// - headers every response carries, API and storefront alike: `X-Content-Type-Options:
///   nosniff` (a JSON error must never be sniffed into HTML), and — when `server.public_url` is
///   https — `Strict-Transport-Security`, so a browser that once reached the shop over TLS never
///   falls back to plain HTTP, where a key or a payment could be read on the way.
pub async fn edge(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = crate::metrics::route_slot(
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str),
    );
    around(&state, route, req, |req| next.run(req)).await
}

/// What [`edge`] does around a handler, for a request routed to the metrics slot `route`:
/// also run by the routes answered ahead of the router (`crate::app::shortcut`), so both ways
/// in give the same headers, ids and counts.
pub async fn around<F: Future<Output = Response>>(
    state: &AppState,
    route: usize,
    mut req: Request,
    handler: impl FnOnce(Request) -> F,
) -> Response {
    let id = new_request_id();
    let path = req.uri().path();
    // Anthropic's SDKs list and look models up on `/v1/models` too (their exceptions carried
    // no request id there).
    let anthropic = path.starts_with("/v1/messages")
        || path.starts_with("/anthropic")
        || (path.starts_with("/v1/models")
            && (req.headers().contains_key("anthropic-version")
                || req.headers().contains_key("x-api-key")));
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = handler(req).await;
    state.metrics.http_response(route, resp.status().as_u16());
    let h = resp.headers_mut();
    if let Some(v) = header {
        if anthropic {
            h.insert(ANTHROPIC_REQUEST_ID, v.clone());
        }
        h.insert(X_REQUEST_ID, v);
    }
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if state.config.server.public_url.starts_with("https://") {
        h.insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
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

    /// The newest key opens with the secret it was sealed with, and only with it; an older
    /// key sealed with another secret (one replaced on purpose) is not what is checked.
    #[test]
    fn the_keys_a_secret_does_not_open_are_counted_with_the_newest_named() {
        use crate::keys::KeyRecord;
        use crate::keys::seal::Sealer;
        let (old, new) = (Sealer::from_secret(&[1; 32]), Sealer::from_secret(&[2; 32]));
        let key = |id: &str, by: &Sealer, at: i64| KeyRecord {
            id: id.into(),
            hash: [0; 32],
            sealed: by.seal(id, "sk-gateway-x").unwrap(),
            prefix: "sk-gateway-x…".into(),
            plan: "trial".into(),
            status: crate::keys::KeyStatus::Active,
            budget: crate::money::Usd::ZERO,
            spent: crate::money::Usd::ZERO,
            requests: 0,
            email: None,
            note: None,
            order_id: None,
            created_at: chrono::DateTime::from_timestamp(at, 0).unwrap(),
            last_used_at: None,
        };
        let records = vec![
            key("key_a", &old, 1),
            key("key_b", &new, 2),
            key("key_c", &old, 3),
            key("key_d", &new, 4),
            key("key_e", &old, 5),
        ];
        // Each secret misses the other's keys, whichever sealed the newest.
        assert_eq!(super::unopened(&new, &records), Some((3, "key_e".into())));
        assert_eq!(super::unopened(&old, &records), Some((2, "key_d".into())));
        assert_eq!(super::unopened(&old, &records[..1]), None);
        assert_eq!(super::unopened(&old, &[]), None);
    }

    #[test]
    fn forwarded_entries() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            super::parse_forwarded(" 203.0.113.9"),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            super::parse_forwarded("203.0.113.9:5555"),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            super::parse_forwarded("2001:db8::1"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            super::parse_forwarded("[2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            super::parse_forwarded("[2001:db8::1]:443"),
            Some(ip("2001:db8::1"))
        );
        for bad in [
            "unknown",
            "",
            "_hidden",
            "1.2.3",
            "[1.2.3.4]",
            "203.0.113.9:x",
        ] {
            assert_eq!(super::parse_forwarded(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_ip_labels_are_display_text() {
        use super::ClientIp;
        use std::net::{IpAddr, Ipv4Addr};
        assert_eq!(ClientIp::UNKNOWN.label(), "unknown");
        // Every octet value in every position (0 and 255 at the edges), and IPv6 as Display.
        for n in 0..=255u8 {
            for ip in [
                [n, 0, 0, 1],
                [127, n, 9, 10],
                [1, 255, n, 0],
                [203, 0, 113, n],
            ] {
                let ip = IpAddr::V4(Ipv4Addr::from(ip));
                if ClientIp(ip) != ClientIp::UNKNOWN {
                    assert_eq!(ClientIp(ip).label(), ip.to_string());
                }
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ClientIp(v6).label(), "2001:db8::1");
    }

    #[test]
    fn request_ids_are_unique_and_time_ordered() {
        let a = super::new_request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_request_id();
        assert_eq!(a.len(), 28);
        assert!(a.starts_with("req_") && a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(a[..16] < b[..16], "{a} then {b}");
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_request_id()).collect();
        assert_eq!(many.len(), 10_000);
    }
}
