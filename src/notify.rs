//! systemd readiness notification (the `sd_notify` protocol) with std only.
//!
//! Under `Type=notify`, systemd passes a unix datagram socket in `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`) and waits for `READY=1` on it before it considers the
//! service started. Without `NOTIFY_SOCKET` (a shell, tests, another supervisor) every call here
//! does nothing. Failures are logged and otherwise ignored: a missed notification must never
//! stop the daemon.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tell systemd the service is up (HTTP listening, admin socket bound).
pub fn ready() {
    send("READY=1");
}

/// Tell systemd the service is shutting down (it may take up to the drain time).
pub fn stopping() {
    send("STOPPING=1");
}

/// Send `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, when set.
pub fn send(state: &str) {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    match notify_to(socket.as_deref(), state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::warn!(state, error = %e, "cannot notify systemd (NOTIFY_SOCKET)"),
    }
}

/// Send `state` to the notification socket `socket` (the value of `NOTIFY_SOCKET`). Returns
/// whether a datagram was sent: `Ok(false)` when `socket` is unset or empty.
pub fn notify_to(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to NOTIFY_SOCKET",
        ));
    }
    Ok(true)
}

/// The address named by a `NOTIFY_SOCKET` value: `@name` is the abstract socket `name`.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => abstract_addr(name),
        None => SocketAddr::from_pathname(socket),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn unset_or_empty_socket_is_a_no_op() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        assert_eq!(recv(&listener), "READY=1");
        assert!(notify_to(Some(path.as_os_str()), "STOPPING=1").unwrap());
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("modelrelay-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let env = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&env)), "READY=1").unwrap());
        assert_eq!(recv(&listener), "READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert!(notify_to(Some(path.as_os_str()), "READY=1").is_err());
    }
}
