//! The HTTP server loop: accept, serve each connection with hyper, stop gracefully.
//!
//! Hand-written (about what `axum::serve` does) because `axum::serve` offers no way to bound
//! a connection's life: it sets no header-read timeout, no body timeout, no idle timeout and
//! no cap on connections, so a client that sends half a request — or nothing — keeps its
//! connection and its file descriptor forever. Here:
//! - at most `server.max_connections` connections are served at once (clamped to what the
//!   process's file-descriptor limit allows); over the cap, new connections wait in the
//!   kernel's backlog until one closes, and those in progress are untouched; one client
//!   address (not loopback, where a reverse proxy brings everyone from) holds at most a
//!   quarter of them, and is refused (closed) past that;
//! - a request's headers must arrive within `server.header_timeout_secs` of their first byte,
//!   and a connection must start its first request within that time too (the watchdog in
//!   [`conn`]; hyper's own header timer also closed idle keep-alive connections that soon);
//! - a request body must bring [`body::MIN_RATE`] bytes a second over each stretch of
//!   `server.body_timeout_secs` (or end within it: [`body::Deadline`]);
//! - a connection with no request in progress and no traffic for `server.idle_timeout_secs`
//!   is closed (HTTP/2 has no header timer); an HTTP/1.1 connection kept alive, after the
//!   header timeout, or 150 s from loopback (a reverse proxy keeps idle connections that long;
//!   see `conn::KEEP_ALIVE`).
//!
//! A request in progress is never cut by these: a stream that is slow because the model is
//! thinking counts as in progress until its response body has been sent.

mod body;

pub use body::{MIN_RATE, TooSlow};
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

/// File descriptors a client connection may hold: its socket, the watchdog's second handle on
/// it (`conn.rs::hung_up`), and one upstream connection (at two, a full house of connections
/// ran out of descriptors for upstream: its accounts rested on "too many open files"; found
/// by an independent check).
const FDS_PER_CONNECTION: u64 = 3;

/// `SO_SNDBUF` of an accepted connection (the kernel doubles it for its own bookkeeping): a
/// stalled client is then seen within the idle timeout down to ~3 KiB/s of reading.
const SEND_BUFFER: usize = 256 * 1024;

/// The client connections `fd_limit` descriptors serve at once.
fn connections_for(fd_limit: u64) -> usize {
    usize::try_from(fd_limit.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION)
        .unwrap_or(usize::MAX)
        .max(1)
}

impl Limits {
    /// From the config; `max_connections` clamped to the file-descriptor limit
    /// ([`FDS_PER_CONNECTION`] each, [`FD_RESERVE`] kept).
    pub fn from_config(s: &ServerConfig) -> Limits {
        let mut max_connections = s.max_connections.max(1);
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            let fits = connections_for(soft);
            if fits < max_connections {
                // The default asks for more than a shell's usual limit allows: said, not
                // warned, unless the operator chose the number (every start outside systemd
                // warned with default settings; found by an independent check).
                let chosen = s.max_connections != ServerConfig::default().max_connections;
                let why = "server.max_connections is more than the file-descriptor limit \
                           allows (three descriptors a connection, 128 kept for the daemon); \
                           raise LimitNOFILE (the systemd unit sets 65536) to serve more";
                if chosen {
                    tracing::warn!(
                        configured = max_connections,
                        fd_limit = soft,
                        using = fits,
                        "{why}"
                    );
                } else {
                    tracing::info!(
                        configured = max_connections,
                        fd_limit = soft,
                        using = fits,
                        "{why}"
                    );
                }
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
    let per_ip = PerIp::new((limits.max_connections / 4).max(1));
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
                // rather than spin, and say it once a minute, not at every try.
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::warn!(error = %e, since_last_said = held, "accept failed (said at most once a minute)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(counted) = per_ip.enter(addr.ip()) else {
            // One address holding a quarter of the slots: refused at once (closed), so that
            // one client — with no key, sending a request now and then to look busy — cannot
            // take every slot.
            tracing::debug!(%addr, "connection refused: too many from this address");
            continue;
        };
        // Small writes (SSE chunks, short JSON answers) must leave at once, not wait for the
        // client's delayed ACK (Nagle).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // A send buffer of a fixed, modest size rather than the kernel's autotuned one (up to
        // 4 MiB): a client that stops taking its answer is seen by how far its answer moves on
        // (`conn.rs`, `Finished`), and an answer moves on each time the socket has room for
        // more, which the kernel says once a third of the buffer has drained — with 4 MiB, a
        // minute and more for a slow but steady reader, who was cut as stalled (found by an
        // independent check). Plenty for answers of an LLM's pace, and for pages.
        if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&tcp, SEND_BUFFER) {
            tracing::debug!(error = %e, "cannot set SO_SNDBUF");
        }
        let conn = conn::Connection {
            app: app.clone(),
            addr,
            limits,
            closing: closing.clone(),
        };
        tracker.spawn(async move {
            conn.serve(tcp).await;
            drop(counted);
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    closing.cancel();
    tracker.wait().await;
}

/// Connections open per client address, each at most a quarter of the slots. Loopback is not
/// counted: a reverse proxy on the same machine brings every client from it (it limits them
/// itself), and so do local tools. Taken once per connection, not per request.
#[derive(Clone)]
struct PerIp {
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    cap: usize,
}

/// A connection counted against its address; dropped when it closes.
struct Counted {
    per_ip: PerIp,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn new(cap: usize) -> PerIp {
        PerIp {
            open: Arc::default(),
            cap,
        }
    }

    /// Count a connection from `ip`, or `None` when that address is at its cap. (`Some` with
    /// nothing counted for loopback.)
    fn enter(&self, ip: std::net::IpAddr) -> Option<Option<Counted>> {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return Some(None);
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Some(Counted {
            per_ip: self.clone(),
            ip,
        }))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_share_and_loopback_is_not_counted() {
        let per_ip = PerIp::new(2);
        let a: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        let first = per_ip.enter(a).unwrap();
        let second = per_ip.enter(mapped).unwrap();
        assert!(per_ip.enter(a).is_none(), "a third from the same address");
        assert!(per_ip.enter("198.51.100.1".parse().unwrap()).is_some());
        drop(first);
        assert!(per_ip.enter(a).is_some(), "one closed, one more may open");
        drop(second);
        for _ in 0..10 {
            assert!(matches!(
                per_ip.enter("127.0.0.1".parse().unwrap()),
                Some(None)
            ));
        }
    }

    /// Three descriptors a connection, 128 kept: under `ulimit -n 1024` (a shell's default)
    /// 298 connections, under the unit's 65536 more than the default 10 000.
    #[test]
    fn connections_fit_the_descriptors_they_need() {
        assert_eq!(connections_for(1024), 298);
        assert_eq!(connections_for(65_536), 21_802);
        assert_eq!(connections_for(100), 1);
    }
}
