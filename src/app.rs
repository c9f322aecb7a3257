//! The top floor: the router ([`app`]), the chat routes answered ahead of it ([`shortcut`]),
//! and the daemon's life cycle ([`Daemon`]: start on an already-bound listener — tests bind
//! `127.0.0.1:0` — drain, stop). The only module that imports the handlers; the state they
//! share is in [`crate::state`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::server::{Answer, Shortcut};
use crate::state::{AppState, StartError, io};

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(crate::gateway::router())
        .merge(crate::shop::router())
        .route(
            "/healthz",
            axum::routing::get(crate::metrics::health::healthz),
        )
        .route(
            "/metrics",
            axum::routing::get(crate::metrics::http::metrics),
        )
        // A wrong method on a route with no 405 of its own (the storefront's JSON API and
        // pages, `/healthz`, `/metrics`) says so in a body, not an empty 405 (axum keeps the
        // `Allow` header).
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::state::edge,
        ))
        .with_state(state)
}

/// A wrong method: the JSON error shape for machine routes, a line of text for pages.
async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path.starts_with("/api/") || path == "/healthz" || path == "/metrics" {
        return crate::gateway::error::GatewayError::MethodNotAllowed.into_response();
    }
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed.\n",
    )
        .into_response()
}

/// The API's chat routes, answered ahead of the router: the same handlers and the same edge
/// work ([`crate::state::around`]: request id, metrics, `nosniff`, HSTS) and CORS headers
/// ([`crate::gateway::cors_answer`]) as through it, without axum's routing and the per-request
/// clone of the route's middleware stack (callgrind: ~14k instructions per request; see
/// bench/PROFILE.md). Only `POST` to these exact paths: preflights, other methods (405 in the
/// API's shape) and every other path go to the router.
// The request is given back by value when not taken: boxing it would cost an allocation per
// request on the path this exists to make cheaper.
#[allow(clippy::result_large_err)]
pub fn shortcut(state: Arc<AppState>) -> Shortcut {
    use crate::gateway::anthropic::Anthropic;
    use crate::gateway::openai::OpenAi;
    use crate::gateway::pipeline::handle;
    use crate::metrics::route_slot;
    const CHAT: &str = "/v1/chat/completions";
    const MESSAGES: &str = "/v1/messages";
    const ANTHROPIC_MESSAGES: &str = "/anthropic/v1/messages";
    let slots = [CHAT, MESSAGES, ANTHROPIC_MESSAGES].map(|t| route_slot(Some(t)));
    #[cfg(feature = "bench-passthrough")]
    let passthrough = route_slot(None);
    Arc::new(move |req: Request| {
        if req.method() != Method::POST {
            return Err(req);
        }
        let state = state.clone();
        let answer: Answer = match req.uri().path() {
            CHAT => Box::pin(api(state, slots[0], req, handle::<OpenAi>)),
            MESSAGES => Box::pin(api(state, slots[1], req, handle::<Anthropic>)),
            ANTHROPIC_MESSAGES => Box::pin(api(state, slots[2], req, handle::<Anthropic>)),
            #[cfg(feature = "bench-passthrough")]
            "/bench/passthrough/chat/completions" => {
                Box::pin(api(state, passthrough, req, bench_passthrough))
            }
            _ => return Err(req),
        };
        Ok(answer)
    })
}

/// One shortcut route: its handler inside the edge's work, with the CORS headers.
async fn api<F: Future<Output = Response>>(
    state: Arc<AppState>,
    route: usize,
    req: Request,
    handler: impl FnOnce(Arc<AppState>, Request) -> F,
) -> Response {
    let for_handler = state.clone();
    crate::state::around(&state, route, req, |req| async move {
        let mut resp = handler(for_handler, req).await;
        crate::gateway::cors_answer(&mut resp);
        resp
    })
    .await
}

/// The benchmark's pass-through route, its body read as axum's `Bytes` extractor reads it.
#[cfg(feature = "bench-passthrough")]
async fn bench_passthrough(state: Arc<AppState>, req: Request) -> Response {
    use axum::extract::FromRequest;
    use axum::response::IntoResponse;
    match bytes::Bytes::from_request(req, &state).await {
        Ok(body) => crate::gateway::passthrough::relay(axum::extract::State(state), body).await,
        Err(rejection) => rejection.into_response(),
    }
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
    /// The admin socket's own stop, sent after the drain: the operator can still watch the
    /// requests finish, list keys and take a backup while the daemon drains (the socket was
    /// closed at the signal, and a scheduled backup then failed with "no daemon").
    admin_stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    admin: JoinHandle<()>,
}

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
        // A daemon answering on the admin socket is refused before the database is opened:
        // one older than the data directory's lock (before 2026-12-03) does not take it, and
        // the start went on to migrate the database under it, then failed at the socket (found
        // by an independent check of an upgrade).
        let socket = config.admin_socket();
        crate::activity::server::not_answering(&socket)
            .map_err(io(format!("cannot bind admin socket {}", socket.display())))?;
        let state = AppState::open(config, demo).await?;
        // A key whose "exhausted" mark did not reach the disk before the daemon stopped (it is
        // written behind the answer) is marked now: its requests would be refused with 402,
        // but it would show `active` and its owner would never get the notice.
        // And one left exhausted on disk while its balance pays for a request (reactivated in
        // memory only before a restart) is active.
        for key in state.keys.all() {
            crate::admin::mark_if_exhausted(&state, &key);
            crate::admin::reactivate_if_funded(&state, &key);
        }
        crate::shop::rotate::reload(&state).await;
        crate::admin::restore_disabled_accounts(&state).await;
        crate::shop::start_background(&state);
        let http_addr = listener.local_addr().map_err(io("listener address"))?;
        let socket_path = state.config.admin_socket();
        let (stop, stopped) = watch::channel(false);
        let (admin_stop, admin_stopped) = watch::channel(false);
        let admin_listener = crate::activity::server::bind(&state.config).map_err(io(format!(
            "cannot bind admin socket {}",
            socket_path.display()
        )))?;
        let admin = tokio::spawn(crate::activity::server::serve(
            state.clone(),
            admin_listener,
            admin_stopped,
        ));
        let served = crate::server::App {
            router: app(state.clone()),
            shortcut: shortcut(state.clone()),
        };
        let limits = crate::server::Limits::from_config(&state.config.server);
        let http = tokio::spawn(crate::server::serve(listener, served, limits, stopped));
        tracing::info!(%http_addr, socket = %socket_path.display(), keys = state.keys.len(), version = crate::cli::VERSION, "modelrelay started");
        Ok(Daemon {
            state,
            http_addr,
            socket_path,
            stop,
            admin_stop,
            http,
            admin,
        })
    }

    /// Stop accepting, let requests in flight finish (up to `server.drain_secs`, by default
    /// [`crate::config::DEFAULT_DRAIN_SECS`]), cut and bill the rest, flush the ledger and close the database.
    /// Returns how many ledger rows were lost (see [`crate::store::Store::close`]).
    pub async fn shutdown(self) -> usize {
        let drain = Duration::from_secs(self.state.config.server.drain_secs);
        self.shutdown_within(drain).await
    }

    /// [`Daemon::shutdown`] with a given drain time. Cancelling `state.cut` meanwhile (a
    /// second signal) ends the drain at once.
    pub async fn shutdown_within(self, drain: Duration) -> usize {
        let _ = self.stop.send(true);
        let state = &self.state;
        state.stopping.cancel();
        let (idle, second_signal) = tokio::select! {
            idle = state.in_flight.wait_idle(drain) => (idle, false),
            () = state.cut.cancelled() => (state.in_flight.get() == 0, true),
        };
        if !idle {
            // Said as it happened: a second signal cut the drain short (the log spoke of the
            // drain time; found by an independent check).
            let why = if second_signal {
                "a second signal ends the drain; cutting the requests still in flight (they are billed)"
            } else {
                "requests still in flight after the drain time; cutting them (they are billed)"
            };
            tracing::warn!(in_flight = state.in_flight.get(), "{why}");
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
        let _ = self.admin_stop.send(true);
        let mut http = self.http;
        if tokio::time::timeout(Duration::from_secs(5), &mut http)
            .await
            .is_err()
        {
            http.abort();
        }
        self.admin.abort();
        let _ = std::fs::remove_file(&self.socket_path);
        let lost = state.store.close().await;
        state.release_data_dir();
        tracing::info!("modelrelay stopped");
        lost
    }
}
