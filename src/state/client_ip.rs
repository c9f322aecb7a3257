//! The client's address, as per-client limits and the console see it: the TCP peer, or the
//! address a local reverse proxy appended to `X-Forwarded-For` (`server.behind_proxy`).

use std::net::SocketAddr;
use std::sync::Arc;

use super::AppState;

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
                // The last entry alone is decoded: bytes that are not text in what the client
                // wrote before it made the whole header unreadable, and the client unknown —
                // another allowance of the per-client limits (found by an independent check).
                .map(|v| {
                    v.as_bytes()
                        .rsplit(|b| *b == b',')
                        .next()
                        .and_then(|entry| std::str::from_utf8(entry).ok())
                });
            return match last {
                Some(Some(entry)) => parse_forwarded(entry)
                    .map_or(ClientIp::UNKNOWN, |ip| ClientIp(ip.to_canonical())),
                // A last entry that is not text: unknown, like any other unparsable entry.
                Some(None) => ClientIp::UNKNOWN,
                // No header: the proxy itself (or a local client) is talking.
                None => ClientIp(peer),
            };
        }
        if !FOREIGN_WARNED.load(std::sync::atomic::Ordering::Relaxed)
            && parts.headers.contains_key("x-forwarded-for")
        {
            warn_proxy_not_local(peer);
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

/// Whether [`warn_proxy_not_local`] has spoken.
static FOREIGN_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Say once, at the first request that shows it, that `X-Forwarded-For` came from a peer that
/// is not loopback while `server.behind_proxy` is on: the header is not believed from there, so
/// if that peer is the operator's proxy (in a container, or connecting to the machine's public
/// address) every customer counts as the proxy's one address, silently (found by an
/// independent check). A client reaching the daemon directly shows the same, hence "if".
fn warn_proxy_not_local(peer: std::net::IpAddr) {
    if !FOREIGN_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "a request from {peer}, which is not loopback, carries X-Forwarded-For: it is believed \
             only from a proxy on loopback. If {peer} is your reverse proxy (in a container, or \
             connecting to this machine's public address), every customer counts as {peer} for \
             per-client limits: have it connect to 127.0.0.1 (host networking)"
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

#[cfg(test)]
mod tests {
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
}
