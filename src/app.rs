//! The daemon: shared state, the router, and `Daemon::start`, which takes an already-bound
//! listener (tests bind `127.0.0.1:0`) and runs until told to shut down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::activity::Activity;
use crate::activity::tracker::{ActivityTracker, TrackerError};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::keys::seal::Sealer;
use crate::keys::{KeyState, KeyTable};
use crate::store::Store;
use crate::upstream::Upstream;

/// Everything a handler may need, shared behind an `Arc`.
pub struct AppState {
    /// The validated configuration (immutable while running).
    pub config: Arc<Config>,
    /// Models, plans and peak windows, ready for the request path.
    pub catalog: Catalog,
    /// Keys and balances in memory: the request path never reads SQLite.
    pub keys: KeyTable,
    /// The database (one writer, one reader).
    pub store: Store,
    /// Seals keys at rest with the server secret.
    pub sealer: Sealer,
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
    pub shop_limits: crate::shop::ShopLimits,
    /// The PayPal client; `None` until `paypal.client_id` is configured (checkout then says so).
    pub paypal: Option<crate::paypal::PayPal>,
    /// Serialises order state changes (payments are rare; the request path never takes it).
    pub fulfil_lock: tokio::sync::Mutex<()>,
    /// Cancelled when shutdown stops waiting: requests still in flight end, billed, at once.
    pub cut: tokio_util::sync::CancellationToken,
    /// Counters for `/metrics` (atomics; the request path takes no lock).
    pub metrics: crate::metrics::Metrics,
}

/// A count of requests in flight, with a way to wait until there are none.
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlight {
    /// One more request.
    pub fn enter(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// One request settled.
    pub fn leave(&self) {
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
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The server secret.
    #[error("{0}")]
    Seal(#[from] crate::keys::seal::SealError),
    /// The HTTP client.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The configuration.
    #[error("{0}")]
    Config(String),
    /// The activity tracker could not load today's state.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

impl AppState {
    /// Open the data dir, the database and the secret; load keys; start the activity tracker.
    pub async fn open(config: Config, demo: bool) -> Result<Arc<AppState>, StartError> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(io(format!("cannot create data dir {}", data_dir.display())))?;
        let secret_path = config
            .server
            .secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secret.key"));
        let sealer = Sealer::load_or_create(&secret_path)?;
        let (store, records) = Store::open(&data_dir.join("modelrelay.db")).await?;
        let catalog = Catalog::from_config(&config).map_err(StartError::Config)?;
        for r in &records {
            if catalog.plan(&r.plan).is_none() {
                tracing::warn!(key_id = %r.id, plan = %r.plan, "key's plan is no longer in the config");
            }
        }
        let keys = KeyTable::new(records.into_iter().map(|r| {
            let rpm = catalog.rpm_of(&r.plan);
            KeyState::from_record(r, rpm)
        }));
        let upstream = Upstream::new(&config.upstream)?;
        let paypal = if config.paypal.client_id.is_empty() {
            tracing::warn!("paypal.client_id is empty: the storefront cannot take payments");
            None
        } else {
            let settings = crate::paypal::PaypalSettings {
                base_url: paypal_base(&config.paypal),
                client_id: config.paypal.client_id.clone(),
                client_secret: config.paypal.client_secret.clone(),
                webhook_id: config.paypal.webhook_id.clone(),
            };
            Some(
                crate::paypal::PayPal::new(settings)
                    .map_err(|e| StartError::Config(e.to_string()))?,
            )
        };
        let tracker = ActivityTracker::new(upstream.request_timeout);
        let metrics = crate::metrics::Metrics::new(config.models.keys().cloned());
        let state = Arc::new(AppState {
            config: Arc::new(config),
            catalog,
            keys,
            store,
            sealer,
            activity: Activity::new(),
            tracker,
            upstream,
            started: Instant::now(),
            in_flight: InFlight::default(),
            demo,
            shop_limits: crate::shop::ShopLimits::default(),
            paypal,
            fulfil_lock: tokio::sync::Mutex::new(()),
            cut: tokio_util::sync::CancellationToken::new(),
            metrics,
        });
        state.tracker.start(&state).await?;
        Ok(state)
    }
}

/// The client's address: the TCP peer, or — with `server.behind_proxy` and a loopback peer (the
/// proxy) — the address the proxy appended last to `X-Forwarded-For`. Per-IP limits and the
/// console use it; without it, every customer behind a proxy would share one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

impl ClientIp {
    /// Work it out from the connection and headers.
    pub fn of(state: &AppState, parts: &axum::http::request::Parts) -> ClientIp {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        if state.config.server.behind_proxy && peer.is_loopback() {
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
                .next_back();
            if let Some(ip) = forwarded {
                return ClientIp(ip);
            }
        }
        ClientIp(peer)
    }
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

/// PayPal's API base URL: `paypal.api_base`, else the environment's.
pub fn paypal_base(p: &crate::config::PaypalConfig) -> String {
    if !p.api_base.is_empty() {
        return p.api_base.trim_end_matches('/').to_string();
    }
    match p.env {
        crate::config::PaypalEnv::Sandbox => crate::paypal::SANDBOX_BASE_URL.into(),
        crate::config::PaypalEnv::Live => crate::paypal::LIVE_BASE_URL.into(),
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

/// Give every response an `x-request-id` (and handlers the same id).
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(crate::gateway::router())
        .merge(crate::shop::router())
        .route("/healthz", axum::routing::get(crate::metrics::healthz))
        .route("/metrics", axum::routing::get(crate::metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// A running daemon: HTTP and the admin socket.
pub struct Daemon {
    /// Shared state (tests inspect balances through it).
    pub state: Arc<AppState>,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The admin socket.
    pub socket_path: PathBuf,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    admin: JoinHandle<()>,
}

/// How long a shutdown waits for requests in flight before cutting them, unless the config's
/// `server.drain_secs` says otherwise (this is its default).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Daemon {
    /// Start serving on `listener` with `config`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Daemon, StartError> {
        Daemon::start_with(config, listener, false).await
    }

    /// Start serving; `demo` marks the pages with a DEMO banner and enables the local
    /// payment-approval page (the upstream and PayPal are simulated by the caller).
    pub async fn start_with(
        config: Config,
        listener: TcpListener,
        demo: bool,
    ) -> Result<Daemon, StartError> {
        let state = AppState::open(config, demo).await?;
        crate::shop::start_background(&state);
        if state.paypal.is_some() && state.config.paypal.webhook_id.is_empty() {
            tracing::warn!(
                "paypal.webhook_id is empty: PayPal webhooks cannot be verified, so pending \
                 payments and refunds are never processed"
            );
        }
        let http_addr = listener.local_addr().map_err(io("listener address"))?;
        let socket_path = state.config.admin_socket();
        let (stop, stopped) = watch::channel(false);
        let admin_listener = crate::activity::socket::bind(&state.config).map_err(io(format!(
            "cannot bind admin socket {}",
            socket_path.display()
        )))?;
        let admin = tokio::spawn(crate::activity::socket::serve(
            state.clone(),
            admin_listener,
            stopped.clone(),
        ));
        let router = app(state.clone());
        let mut stopped_http = stopped;
        let http = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped_http.wait_for(|s| *s).await;
            };
            // Small writes (SSE chunks, short JSON answers) must leave at once, not wait for
            // the client's delayed ACK (Nagle).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%http_addr, socket = %socket_path.display(), keys = state.keys.len(), "modelrelay started");
        Ok(Daemon {
            state,
            http_addr,
            socket_path,
            stop,
            http,
            admin,
        })
    }

    /// Stop accepting, let requests in flight finish (up to `server.drain_secs`, by default
    /// [`DRAIN_TIMEOUT`]), cut and bill the rest, flush the ledger and close the database.
    pub async fn shutdown(self) {
        let drain = Duration::from_secs(self.state.config.server.drain_secs);
        self.shutdown_within(drain).await;
    }

    /// [`Daemon::shutdown`] with a given drain time. Cancelling `state.cut` meanwhile (a
    /// second signal) ends the drain at once.
    pub async fn shutdown_within(self, drain: Duration) {
        let _ = self.stop.send(true);
        let state = &self.state;
        let idle = tokio::select! {
            idle = state.in_flight.wait_idle(drain) => idle,
            () = state.cut.cancelled() => state.in_flight.get() == 0,
        };
        if !idle {
            tracing::warn!(
                in_flight = state.in_flight.get(),
                "requests still in flight after the drain time; cutting them (they are billed)"
            );
        }
        // Every request still running now ends itself: streams send a final error event,
        // settle as `shutdown` and commit their ledger rows.
        state.cut.cancel();
        if !state.in_flight.wait_idle(Duration::from_secs(10)).await {
            tracing::error!(
                in_flight = state.in_flight.get(),
                "requests did not settle in time"
            );
        }
        let mut http = self.http;
        if tokio::time::timeout(Duration::from_secs(5), &mut http)
            .await
            .is_err()
        {
            http.abort();
        }
        self.admin.abort();
        let _ = std::fs::remove_file(&self.socket_path);
        state.store.close().await;
        tracing::info!("modelrelay stopped");
    }
}

#[cfg(test)]
mod tests {
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
