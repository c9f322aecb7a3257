//! The HTTP server loop: accept, serve each connection with hyper, stop gracefully.
//!
//! Hand-written (about what `axum::serve` does) because `axum::serve` offers no way to bound
//! a connection's life: it sets no header-read timeout, no body timeout, no idle timeout and
//! no cap on connections, so a client that sends half a request — or nothing — keeps its
//! connection and its file descriptor forever. Here:
//! - at most `server.max_connections` connections are served at once (clamped to what the
//!   process's file-descriptor limit allows); over the cap, new connections wait in the
//!   kernel's backlog until one closes, and those in progress are untouched;
//! - a request's headers must arrive within `server.header_timeout_secs` (hyper's own timer,
//!   which for HTTP/1.1 also bounds an idle keep-alive connection), and a connection must start
//!   its first request within that time too;
//! - a request body must bring [`body::MIN_RATE`] bytes a second over each stretch of
//!   `server.body_timeout_secs` (or end within it: [`body::Deadline`]);
//! - a connection with no request in progress and no traffic for `server.idle_timeout_secs`
//!   is closed (HTTP/2 has no header timer).
//!
//! A request in progress is never cut by these: a stream that is slow because the model is
//! thinking counts as in progress until its response body has been sent.

mod body;
mod conn;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;

/// The bounds on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request's headers (and a new connection's first request) must arrive within this.
    pub header_timeout: Duration,
    /// Grace for a request body before the minimum rate applies.
    pub body_timeout: Duration,
    /// A connection with nothing in progress and no traffic is closed after this.
    pub idle_timeout: Duration,
}

/// What a connection serves: the router, and the routes answered ahead of it.
#[derive(Clone)]
pub struct App {
    /// Every route.
    pub router: Router,
    /// The busiest routes, answered without the router's per-request work (see
    /// `crate::app::shortcut`); a request it gives back goes to `router`.
    pub shortcut: Shortcut,
}

/// Answers a request, or gives it back for the router.
pub type Shortcut = Arc<dyn Fn(Request) -> Result<Answer, Request> + Send + Sync>;

/// A shortcut's answer to come.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// File descriptors kept for everything that is not a client connection (the database, the
/// admin socket, logs, upstream connections that are not per-stream).
const FD_RESERVE: u64 = 128;

impl Limits {
    /// From the config; `max_connections` clamped to the file-descriptor limit (each client
    /// connection may also hold one upstream connection, so two descriptors each).
    pub fn from_config(s: &ServerConfig) -> Limits {
        let mut max_connections = s.max_connections.max(1);
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            let fits = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2)
                .unwrap_or(usize::MAX)
                .max(1);
            if fits < max_connections {
                tracing::warn!(
                    configured = max_connections,
                    fd_limit = soft,
                    using = fits,
                    "server.max_connections is more than the file-descriptor limit allows; \
                     raise LimitNOFILE (the systemd unit sets 65536) to serve more"
                );
                max_connections = fits;
            }
        }
        Limits {
            max_connections,
            header_timeout: Duration::from_secs(s.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(s.body_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs.max(1)),
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true; then stop accepting, let connections
/// finish their requests, and return once they all closed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let closing = CancellationToken::new();
    loop {
        // A slot first: over the cap, connections wait in the backlog, not in our memory.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, addr): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: back off a little
                // rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes (SSE chunks, short JSON answers) must leave at once, not wait for the
        // client's delayed ACK (Nagle).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = conn::Connection {
            app: app.clone(),
            addr,
            limits,
            closing: closing.clone(),
        };
        tracker.spawn(async move {
            conn.serve(tcp).await;
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    closing.cancel();
    tracker.wait().await;
}
