//! The admin socket's server half: a Unix listener speaking [`protocol`](super::protocol), for
//! the CLI and the console (their half is [`client`](super::client)). Mode 0600 (0660 with
//! `server.admin_group`); every peer's credentials are checked as well, since a socket file's
//! mode is easy to loosen by accident.
//!
//! `subscribe` answers `subscribed`, then a [`Snapshot`](super::protocol::Snapshot) from the
//! [tracker](super::tracker), then events; a subscriber that reads too slowly gets `lagged` and
//! a fresh snapshot. Nothing here is awaited by the request path: events reach a subscriber
//! through its own bounded bus receiver.
//!
//! A peer cannot make the daemon hold much for it: a request line is read only up to
//! [`MAX_LINE`] (a longer one is answered with an error and the connection closed, never
//! buffered whole), and a connection that starts no request for [`IDLE_TIMEOUT`], or does not
//! finish its line within [`LINE_TIMEOUT`], is closed ([`SocketTimeouts`]). A subscribed console
//! only listens, so it is never timed out.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Group, Uid, User};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::time::timeout;

use super::protocol::{Request, Response};
use super::tracker::TrackerError;
use crate::config::Config;
use crate::state::AppState;

/// Longest request line accepted (bytes, without its newline).
pub const MAX_LINE: usize = 64 * 1024;

/// Most admin connections open at once: consoles and CLI commands need a handful. Past it,
/// new peers wait in the listen backlog (holding no descriptor of ours) until one closes, so
/// a peer opening thousands cannot take the descriptors the HTTP side needs.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection may go without starting a request before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request line may take from its first byte to its newline.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the daemon looks whether its socket's file is still there (see [`made_again`]).
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// How long the socket waits for a peer that is not subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketTimeouts {
    /// No request started for this long: the connection is closed without a word (a client
    /// keeping a connection for later finds it closed and opens another).
    pub idle: Duration,
    /// A request line not finished this long after its first byte is answered with an error,
    /// and the connection closed. Also the bound on writing an answer to a peer that does not
    /// read it.
    pub line: Duration,
}

impl Default for SocketTimeouts {
    fn default() -> Self {
        SocketTimeouts {
            idle: IDLE_TIMEOUT,
            line: LINE_TIMEOUT,
        }
    }
}

/// Refused when a daemon answers on the admin socket at `path` (nothing there, or a socket
/// left by a daemon that died, is fine). Checked before the database is opened too (see
/// `app::Daemon::start_with`).
pub fn not_answering(path: &std::path::Path) -> std::io::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another modelrelay daemon is already listening there",
        ));
    }
    Ok(())
}

/// Bind the socket: refuse if a daemon already answers there, replace a stale file, set the
/// mode and group.
pub fn bind(config: &Config) -> std::io::Result<UnixListener> {
    let path = config.admin_socket();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Made closed whatever the umask (it was 0777 under umask 000, and another user could
        // put a socket of their own in the daemon's place; found by an independent check):
        // only the group's members need to reach the socket, and they only pass through.
        let mode = if config.server.admin_group.is_some() {
            0o711
        } else {
            0o700
        };
        // Each directory made here gets its mode exactly: the umask would take the group's
        // passage away (0700 under umask 077; found by an independent re-check).
        let missing: Vec<&std::path::Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        std::fs::create_dir_all(dir)?;
        for made in missing {
            std::fs::set_permissions(made, std::fs::Permissions::from_mode(mode))?;
        }
        warn_if_open(dir);
    }
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; remove it or set server.admin_socket",
            ));
        }
        not_answering(&path)?;
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    let mode = match &config.server.admin_group {
        Some(name) => match give_to_group(&path, name) {
            Ok(gid) => {
                warn_if_closed_to(&path, name, gid);
                0o660
            }
            // The daemon still starts (customers go on being served): the socket stays its
            // user's and root's, and the log says why the group cannot use it. It used to stop
            // the daemon with "cannot bind admin socket: EPERM", naming no group (found by an
            // independent check: a start loop under `Restart=on-failure`).
            Err(why) => {
                tracing::warn!(
                    socket = %path.display(),
                    group = %name,
                    "server.admin_group: {why}; the admin socket is open to the daemon's user \
                     and root only"
                );
                0o600
            }
        },
        None => 0o600,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Say so when the socket's directory (one that was there before) lets other users put a
/// socket of their own in the daemon's place: the CLI and the console refuse it.
fn warn_if_open(dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.mode() & 0o022 != 0
        && meta.mode() & 0o1000 == 0
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.mode() & 0o7777),
            "the admin socket's directory is writable by other users, who could put a socket \
             of their own there: the CLI and the console refuse it; make it 0700 (0711 with \
             server.admin_group)"
        );
    }
}

/// A new listener when the socket's file was removed while the daemon ran (an operator
/// tidying `/run`, a cleanup script): every CLI command and the console were told "no
/// modelrelay daemon is answering" until a restart, which drains the customers' requests
/// (found by an independent check). A file put there by someone else is left alone.
fn made_again(config: &Config) -> Option<UnixListener> {
    let path = config.admin_socket();
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match bind(config) {
            Ok(listener) => {
                tracing::warn!(
                    socket = %path.display(),
                    "the admin socket's file was removed while the daemon ran: made again"
                );
                Some(listener)
            }
            Err(e) => {
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::warn!(error = %e, socket = %path.display(), since_last_said = held, "the admin socket's file was removed and cannot be made again (said at most once a minute)");
                }
                None
            }
        },
        _ => None,
    }
}

/// Give the socket to the group named; its gid, or why not.
fn give_to_group(path: &std::path::Path, name: &str) -> Result<u32, String> {
    let group = match Group::from_name(name) {
        Ok(Some(g)) => g,
        Ok(None) => return Err("no such group on this machine".into()),
        Err(e) => return Err(format!("cannot look the group up: {e}")),
    };
    match nix::unistd::chown(path, None, Some(group.gid)) {
        Ok(()) => Ok(group.gid.as_raw()),
        Err(nix::errno::Errno::EPERM) => Err(format!(
            "the daemon's user is not a member of {name:?}, so it cannot give the socket to \
             it (add it: `usermod -aG {name} <the service's user>`, then restart)"
        )),
        Err(e) => Err(format!("cannot give the socket to the group: {e}")),
    }
}

/// Warn when the group cannot reach the socket for its directory: a 0660 socket in a 0700
/// directory (the default `<data_dir>`), or in one open to another group only (the unit's
/// `/run/modelrelay` is 0750 for the group `modelrelay`), lets no member in, and the command
/// then blames their membership.
fn warn_if_closed_to(socket: &std::path::Path, group: &str, gid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = socket.parent() else { return };
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let traversable = meta.mode() & 0o001 != 0 || (meta.gid() == gid && meta.mode() & 0o010 != 0);
    if !traversable {
        tracing::warn!(
            dir = %dir.display(),
            group,
            "server.admin_group cannot reach the admin socket: its directory is not open to that \
             group (give the directory to the group with mode 0750, or name the group that \
             owns it)"
        );
    }
}

/// The credentials a peer presented and what the daemon allows.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// The daemon's effective uid.
    pub daemon_uid: u32,
    /// The admin group's gid and member names, when configured.
    pub group: Option<(u32, Vec<String>)>,
}

impl PeerPolicy {
    /// The policy from config (group members read from the group database).
    pub fn from_config(config: &Config) -> PeerPolicy {
        let group = config
            .server
            .admin_group
            .as_deref()
            .and_then(|n| Group::from_name(n).ok().flatten())
            .map(|g| (g.gid.as_raw(), g.mem));
        PeerPolicy {
            daemon_uid: Uid::effective().as_raw(),
            group,
        }
    }

    /// Whether a peer that is not the daemon's user, root or of the group as its primary one
    /// is in the admin group all the same: as a supplementary group of its process (what
    /// `usermod -aG` gives at the next login; it was refused with "the daemon closed the
    /// connection"), or listed in the group database as it is now (read at each connection,
    /// not once at start). Blocking (NSS, /proc): off the async threads.
    pub fn allows_member(&self, uid: u32, pid: Option<i32>) -> bool {
        let Some((group_gid, members)) = &self.group else {
            return false;
        };
        if pid.is_some_and(|pid| supplementary_groups(pid).contains(group_gid)) {
            return true;
        }
        let Some(name) = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
        else {
            return false;
        };
        let listed_now = Group::from_gid(nix::unistd::Gid::from_raw(*group_gid))
            .ok()
            .flatten()
            .map(|g| g.mem);
        listed_now.as_ref().unwrap_or(members).contains(&name)
    }

    /// Same uid as the daemon, root, or (with a group) in the group.
    pub fn allows(&self, uid: u32, gid: u32, user_name: Option<&str>) -> bool {
        if uid == self.daemon_uid || uid == 0 {
            return true;
        }
        match &self.group {
            Some((group_gid, members)) => {
                gid == *group_gid || user_name.is_some_and(|n| members.iter().any(|m| m == n))
            }
            None => false,
        }
    }
}

/// The supplementary groups of process `pid` (its `Groups:` line in /proc), empty when they
/// cannot be read.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Accept connections until `stop` turns true, with the default [`SocketTimeouts`].
pub async fn serve(state: Arc<AppState>, listener: UnixListener, stop: watch::Receiver<bool>) {
    serve_with(state, listener, stop, SocketTimeouts::default()).await;
}

/// Accept connections until `stop` turns true, timing out peers after `timeouts`.
pub async fn serve_with(
    state: Arc<AppState>,
    mut listener: UnixListener,
    mut stop: watch::Receiver<bool>,
    timeouts: SocketTimeouts,
) {
    let policy = Arc::new(PeerPolicy::from_config(&state.config));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = recheck.tick() => {
                if let Some(again) = made_again(&state.config) {
                    listener = again;
                }
                continue;
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: trying again at once would spin (and log)
                // as fast as the core allows.
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::warn!(error = %e, since_last_said = held, "admin socket accept failed (said at most once a minute)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read admin peer credentials; refused");
                continue;
            }
        };
        // The user database is only consulted for a peer that is neither us nor root, and off
        // the async threads (NSS look-ups can block).
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let allowed = policy.allows(uid, gid, None)
            || (policy.group.is_some() && {
                let policy = policy.clone();
                tokio::task::spawn_blocking(move || policy.allows_member(uid, pid))
                    .await
                    .unwrap_or(false)
            });
        if !allowed {
            tracing::warn!(
                uid = cred.uid(),
                "admin socket peer refused: not the daemon's user, root, or the admin group"
            );
            // Said to the peer too (it saw "closed the connection or answered garbage"); off
            // the accept loop, and never waiting on a peer that does not read.
            let refusal = Response::Error {
                message: format!(
                    "not allowed: the daemon answers its own user, root and the members of \
                     server.admin_group on this socket, not uid {uid}"
                ),
            };
            tokio::spawn(async move {
                let mut stream = stream;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), write_line(&mut stream, &refusal))
                        .await;
            });
            continue;
        }
        let conn = connection(state.clone(), stream, stop.clone(), timeouts);
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Write a line unless the daemon stops first (a console that stopped reading must not hold
/// a shutdown); false when the line could not be written.
async fn send(
    w: &mut (impl AsyncWriteExt + Unpin),
    r: &Response,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        written = write_line(w, r) => written.is_ok(),
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Why no request line was read.
enum LineError {
    /// The peer hung up (or the connection failed).
    Closed,
    /// No request started within the idle timeout.
    Idle,
    /// The line did not end within the line timeout.
    Slow,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
}

/// Read one request line into `buf` (newline included), holding at most [`MAX_LINE`] + 1 bytes
/// of it. A last line without its newline before the peer hangs up counts as a line.
async fn read_request(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    timeouts: SocketTimeouts,
) -> Result<(), LineError> {
    // Waiting for the first byte is idling; from then on the line has its own deadline.
    match timeout(timeouts.idle, reader.fill_buf()).await {
        Err(_) => return Err(LineError::Idle),
        Ok(Err(_)) => return Err(LineError::Closed),
        Ok(Ok([])) => return Err(LineError::Closed),
        Ok(Ok(_)) => {}
    }
    let mut capped = (&mut *reader).take(MAX_LINE as u64 + 1);
    match timeout(timeouts.line, capped.read_until(b'\n', buf)).await {
        Err(_) => Err(LineError::Slow),
        Ok(Err(_)) => Err(LineError::Closed),
        Ok(Ok(_)) if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE => Err(LineError::TooLong),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Write an answer, giving up on a peer that does not read it.
async fn answer(
    w: &mut (impl AsyncWriteExt + Unpin),
    r: &Response,
    timeouts: SocketTimeouts,
) -> bool {
    matches!(timeout(timeouts.line, write_line(w, r)).await, Ok(Ok(())))
}

async fn connection(
    state: Arc<AppState>,
    stream: UnixStream,
    mut stop: watch::Receiver<bool>,
    timeouts: SocketTimeouts,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let line = tokio::select! {
            line = read_request(&mut reader, &mut buf, timeouts) => line,
            _ = stop.wait_for(|s| *s) => return,
        };
        let refusal = match line {
            Ok(()) => None,
            // A client keeping a connection for later must not find a stray answer on it.
            Err(LineError::Closed | LineError::Idle) => return,
            Err(LineError::Slow) => Some("request line not completed in time"),
            Err(LineError::TooLong) => Some("command too long for the admin socket (over 64 KiB)"),
        };
        if let Some(message) = refusal {
            let message = message.into();
            answer(&mut write, &Response::Error { message }, timeouts).await;
            return;
        }
        let req: Request = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                let msg = Response::Error {
                    message: format!("bad request: {e}"),
                };
                if !answer(&mut write, &msg, timeouts).await {
                    return;
                }
                continue;
            }
        };
        if req == Request::Subscribe {
            subscription(&state, &mut write, stop).await;
            return;
        }
        let resp = crate::admin::handle_admin(&state, req).await;
        if !answer(&mut write, &resp, timeouts).await {
            return;
        }
    }
}

/// `subscribed`, a snapshot, then events until the client goes or the daemon stops.
///
/// The subscription to the bus is made before the snapshot is taken (by the tracker, in one
/// hand-off), so no event falls between the two. A client that reads too slowly loses events
/// (the bus never waits for it): it is told how many, and sent a fresh snapshot to resync.
async fn subscription(
    state: &AppState,
    write: &mut (impl AsyncWriteExt + Unpin),
    mut stop: watch::Receiver<bool>,
) {
    let fail = |e: TrackerError| Response::Error {
        message: e.to_string(),
    };
    let (snapshot, mut events) = match state.tracker.subscribe().await {
        Ok(s) => s,
        Err(e) => {
            send(write, &fail(e), &mut stop).await;
            return;
        }
    };
    if !send(write, &Response::Subscribed, &mut stop).await {
        return;
    }
    let snapshot = Response::Snapshot {
        snapshot: Box::new(snapshot),
    };
    if !send(write, &snapshot, &mut stop).await {
        return;
    }
    let heartbeat = super::protocol::HEARTBEAT;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            e = events.recv() => Some(e),
            _ = beat.tick() => None,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(next) = next else {
            if !send(write, &Response::Heartbeat, &mut stop).await {
                return;
            }
            continue;
        };
        let resp = match next {
            Ok(ev) => Response::Event {
                event: (*ev).clone(),
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "console lagged; sending a fresh snapshot");
                if !send(write, &Response::Lagged { missed }, &mut stop).await {
                    return;
                }
                match state.tracker.subscribe().await {
                    Ok((snapshot, fresh)) => {
                        events = fresh;
                        Response::Snapshot {
                            snapshot: Box::new(snapshot),
                        }
                    }
                    Err(e) => {
                        send(write, &fail(e), &mut stop).await;
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !send(write, &resp, &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy() {
        let p = PeerPolicy {
            daemon_uid: 1000,
            group: None,
        };
        assert!(p.allows(1000, 1000, None));
        assert!(p.allows(0, 0, None));
        assert!(!p.allows(1001, 1000, Some("eve")));
        let g = PeerPolicy {
            daemon_uid: 998,
            group: Some((997, vec!["alice".into()])),
        };
        assert!(g.allows(1001, 997, Some("bob")), "primary group matches");
        assert!(g.allows(1002, 1002, Some("alice")), "listed member");
        assert!(!g.allows(1003, 1003, Some("mallory")));
        assert!(!g.allows(1003, 1003, None));
    }

    /// The socket's directory, when the daemon makes it, is closed whatever the umask: 0700,
    /// 0711 when a group uses the socket (it was 0777 under umask 000).
    #[tokio::test]
    async fn the_sockets_directory_is_made_closed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        for (group, want) in [(None, 0o700), (Some("root"), 0o711)] {
            let dir = tmp.path().join(format!("run-{want:o}")).join("inner");
            let mut config = Config::default();
            config.server.admin_socket = Some(dir.join("admin.sock"));
            config.server.admin_group = group.map(str::to_string);
            let _listener = bind(&config).unwrap();
            for made in [&dir, dir.parent().unwrap()] {
                let mode = std::fs::metadata(made).unwrap().permissions().mode() & 0o7777;
                assert_eq!(mode, want, "{group:?} {made:?}");
            }
        }
    }

    /// A peer whose process holds the admin group as a supplementary group is a member (it was
    /// refused: only the primary group and the database's list, read at start, counted).
    #[test]
    fn a_supplementary_group_of_the_peer_counts() {
        let me = i32::try_from(std::process::id()).unwrap();
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut read = supplementary_groups(me);
        let mut expected = mine.clone();
        read.sort_unstable();
        expected.sort_unstable();
        expected.dedup();
        read.dedup();
        assert_eq!(read, expected, "the Groups: line of /proc/PID/status");
        // A uid no database knows, so only the process's groups can say yes.
        let nobody_known = 4_000_000_000;
        for gid in mine {
            let p = PeerPolicy {
                daemon_uid: 1,
                group: Some((gid, Vec::new())),
            };
            assert!(p.allows_member(nobody_known, Some(me)), "gid {gid}");
        }
        let p = PeerPolicy {
            daemon_uid: 1,
            group: Some((4_000_000_001, Vec::new())),
        };
        assert!(!p.allows_member(nobody_known, Some(me)));
        assert!(!p.allows_member(nobody_known, None));
    }
}
