//! The admin socket's client half, for the CLI and the console: connect to the daemon's Unix
//! socket, send [`Request`] lines, read [`Response`] lines. It knows only the
//! [`protocol`](super::protocol), never the daemon's insides.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Request, Response};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there.
    #[error(
        "no modelrelay daemon is answering on {0} (is `modelrelay serve` running? if it runs \
         with another config, pass that file: --config FILE, e.g. \
         /etc/modelrelay/modelrelay.toml)"
    )]
    NoDaemon(PathBuf),
    /// The socket exists but we may not use it.
    #[error(
        "permission denied on {0}: run as the daemon's user or a member of server.admin_group \
         who may enter the socket's directory"
    )]
    Denied(PathBuf),
    /// Another user could stand in for the daemon at this socket: what the CLI would send
    /// (whole keys, with `keys show KEY`) is not sent there.
    #[error("not using the admin socket {0}: {1}")]
    Untrusted(PathBuf, String),
    /// The daemon said no, in its own words (a peer it does not serve).
    #[error("{0}")]
    Refused(String),
    /// The daemon hung up or sent something unreadable.
    #[error("the daemon closed the connection or answered garbage: {0}")]
    Protocol(String),
    /// The daemon went away after the command was sent and before it answered (stopped,
    /// killed): a change may have been made all the same.
    #[error(
        "the daemon went away before answering (stopped or restarted?); what was asked may have \
         been done all the same: look (e.g. `modelrelay keys show KEY`) before asking again"
    )]
    Unanswered,
    /// The daemon took the connection but said nothing in time (stopped with SIGSTOP, frozen,
    /// or far behind): a change asked may be made when it resumes.
    #[error(
        "the daemon on {0} did not answer within {1} s (stopped, frozen or overloaded?); if a \
         change was asked, look (e.g. `modelrelay keys show KEY`) before asking again"
    )]
    Silent(PathBuf, u64),
}

/// How long a CLI command waits for the daemon's answer: a backup copies the whole database,
/// everything else answers in well under a second on a working daemon (waiting for ever on a
/// frozen one left scripts and cron jobs hanging; found by an independent check).
fn answer_within(req: &Request) -> std::time::Duration {
    match req {
        Request::Backup { .. } => std::time::Duration::from_secs(3600),
        _ => std::time::Duration::from_secs(60),
    }
}

/// Longest answer line read: far past any daemon's (`keys list` of a hundred thousand keys is
/// tens of MiB), so that a socket that is not the daemon's cannot grow the CLI without bound.
pub const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connect to the socket at `path`, if no other user could have put it there.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        trusted_place(path)?;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => ClientError::Denied(path.to_path_buf()),
                _ => ClientError::NoDaemon(path.to_path_buf()),
            })?;
        let (r, w) = stream.into_split();
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Send a request.
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Read the next response line (`None` when the daemon hung up).
    pub async fn recv(&mut self) -> Result<Option<Response>, ClientError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_ANSWER)
            .read_line(&mut line)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') && n as u64 >= MAX_ANSWER {
            return Err(ClientError::Protocol(format!(
                "an answer longer than {} MiB",
                MAX_ANSWER / (1024 * 1024)
            )));
        }
        serde_json::from_str(line.trim())
            .map(Some)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Send one request and read the line that answers it (`None`: the daemon closed first).
    /// A daemon that refuses this peer says why and closes, perhaps before the request went
    /// out: its line may be waiting all the same, and is the answer.
    pub async fn ask(&mut self, req: &Request) -> Result<Option<Response>, ClientError> {
        match self.send(req).await {
            Ok(()) => self.recv().await,
            Err(e) => match self.recv().await {
                Ok(Some(answer)) => Ok(Some(answer)),
                _ => Err(e),
            },
        }
    }

    /// Send one request and read its answer.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        // A top-up the daemon made just before a kill was reported as failed with no hint it
        // went through, so a retry doubled the credit (found by an independent check).
        self.ask(req).await?.ok_or(ClientError::Unanswered)
    }
}

/// Refuse a socket another user could have put in the daemon's place: one in a directory
/// others may write to (a daemon under umask 000 made its socket's directory 0777, and another
/// user's socket there took `keys show`'s whole key; found by an independent check); one of
/// another user's in a sticky directory anyone may add to (as /tmp: others cannot replace a
/// file there, but can put theirs there first); or one found from the current directory (a
/// relative path) in a directory of another user's — as git refuses a repository another user
/// owns. The directory is looked at where its symlinks lead (`data -> /tmp` passed as a
/// directory of one's own; found by an independent re-check).
fn trusted_place(path: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Nothing there: connecting says so.
    let Some((real, meta)) = std::fs::canonicalize(dir)
        .ok()
        .and_then(|real| std::fs::metadata(&real).ok().map(|m| (real, m)))
    else {
        return Ok(());
    };
    let untrusted = |why: String| Err(ClientError::Untrusted(path.to_path_buf(), why));
    let me = nix::unistd::geteuid().as_raw();
    let mine = |uid: u32| uid == me || uid == 0;
    let mode = meta.mode();
    let writable = mode & 0o022 != 0;
    if writable && mode & 0o1000 == 0 {
        return untrusted(format!(
            "its directory {} is writable by other users (mode {:o}), who could put a socket \
             of their own there; make it 0700 (0711 with server.admin_group)",
            real.display(),
            mode & 0o7777
        ));
    }
    if writable
        && let Some(name) = path.file_name()
        && let Ok(file) = std::fs::symlink_metadata(real.join(name))
        && !mine(file.uid())
    {
        return untrusted(format!(
            "it belongs to another user (uid {}), in {}, a directory anyone may add to; put \
             the daemon's socket in a directory of its own (server.admin_socket)",
            file.uid(),
            real.display()
        ));
    }
    if path.is_relative() && !mine(meta.uid()) {
        return untrusted(format!(
            "it was found from the current directory, and {} belongs to another user (uid {}); \
             give the daemon's config with --config, or its socket with --socket and an \
             absolute path",
            real.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// Connect, send one request, return the answer (or [`ClientError::Silent`] when it does not
/// come in time).
pub async fn call(path: &Path, req: &Request) -> Result<Response, ClientError> {
    let within = answer_within(req);
    let asked = async { Client::connect(path).await?.call(req).await };
    match tokio::time::timeout(within, asked).await {
        Ok(Ok(Response::Error { message })) => Ok(Response::Error {
            message: older_daemon(message),
        }),
        Ok(answer) => answer,
        Err(_) => Err(ClientError::Silent(path.to_path_buf(), within.as_secs())),
    }
}

/// A command a daemon older than this binary does not know is refused with serde's words
/// ("unknown variant `requests`"): say what it means — the binary was replaced and the daemon
/// not restarted (found by an upgrade check).
fn older_daemon(message: String) -> String {
    if message.starts_with("bad request: unknown variant")
        || message.starts_with("bad request: unknown field")
    {
        format!(
            "{message} — the running daemon is older than this command: restart it to run the \
             new binary (systemctl restart modelrelay)"
        )
    } else {
        message
    }
}

/// Tests: a socket at `path` that takes every connection and never answers (a daemon stopped
/// with SIGSTOP).
#[cfg(test)]
pub(crate) fn silent_daemon(path: &Path) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
}

/// Tests: a daemon at `path` that refuses every peer, writing `message` as its error line and
/// closing without reading the request (as the admin socket does to a uid it does not allow).
#[cfg(test)]
pub(crate) fn refusing_daemon(path: &Path, message: &'static str) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let line = format!("{{\"type\":\"error\",\"message\":\"{message}\"}}\n");
            s.write_all(line.as_bytes()).await.unwrap();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Something that is not the daemon, sending an endless line: the client stops at
    /// [`MAX_ANSWER`] with an error instead of growing without bound.
    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let chunk = vec![b'x'; 1 << 20];
            while s.write_all(&chunk).await.is_ok() {}
        });
        let err = call(&path, &Request::Ping).await.unwrap_err();
        assert!(err.to_string().contains("longer than 256 MiB"), "{err}");
    }

    /// A socket that takes the connection and never answers (a daemon stopped with SIGSTOP):
    /// the call gives up with a one-line reason, after a minute for a command and an hour for
    /// a backup (time is paused: the test takes no minute).
    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_never_answers_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        silent_daemon(&path);
        let asked = tokio::time::Instant::now();
        let err = call(&path, &Request::Ping).await.unwrap_err();
        assert!(matches!(err, ClientError::Silent(_, 60)), "{err:?}");
        assert!(
            err.to_string().contains("did not answer within 60 s"),
            "{err}"
        );
        assert_eq!(asked.elapsed().as_secs(), 60);
        let asked = tokio::time::Instant::now();
        let backup = Request::Backup {
            path: dir.path().join("copy.db"),
        };
        let err = call(&path, &backup).await.unwrap_err();
        assert!(matches!(err, ClientError::Silent(_, 3600)), "{err:?}");
        assert_eq!(asked.elapsed().as_secs(), 3600);
    }

    /// A daemon that refuses the peer writes why and closes without reading the request: the
    /// client gives that reason, whether its request went out or not.
    #[tokio::test]
    async fn a_refusal_written_before_the_request_is_read_is_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refusing.sock");
        refusing_daemon(&path, "not allowed: uid 65534");
        // A request larger than the socket's buffer cannot all go out before the close.
        let big = Request::KeysCreate {
            plan: "trial".into(),
            email: None,
            budget_usd: None,
            note: Some("x".repeat(4 << 20)),
        };
        for req in [Request::Ping, big] {
            match call(&path, &req).await {
                Ok(Response::Error { message }) => assert!(message.contains("not allowed")),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A socket another user could have put there is not used: in a directory others may
    /// write to (unless sticky, as /tmp), or found from the current directory in another
    /// user's directory; nothing is sent to it.
    #[tokio::test]
    async fn a_socket_another_user_could_have_placed_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        let path = open.join("admin.sock");
        refusing_daemon(&path, "an impostor");
        for (mode, used) in [
            (0o777, false),
            (0o775, false),
            (0o1777, true),
            (0o755, true),
        ] {
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            match call(&path, &Request::Ping).await {
                Err(ClientError::Untrusted(_, why)) => {
                    assert!(!used, "{mode:o}");
                    assert!(why.contains("writable by other users"), "{why}");
                }
                Ok(Response::Error { message }) => {
                    assert!(used, "{mode:o}");
                    assert_eq!(message, "an impostor");
                }
                other => panic!("{mode:o}: {other:?}"),
            }
        }
        // Found from the current directory, in a directory of another user's (as root only:
        // only root gives a directory or a file away).
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        if nix::unistd::chown(&theirs, Some(nobody), None).is_err() {
            return;
        }
        // Another user's socket in a sticky directory anyone may add to, also reached through
        // a symlink of one's own.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        nix::unistd::chown(&path, Some(nobody), None).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        for reached in [path.clone(), link.join("admin.sock")] {
            match call(&reached, &Request::Ping).await {
                Err(ClientError::Untrusted(_, why)) => {
                    assert!(why.contains("another user (uid 65534)"), "{why}");
                }
                other => panic!("{reached:?}: {other:?}"),
            }
        }
        let cwd = std::env::current_dir().unwrap();
        let mut relative = PathBuf::new();
        for _ in 1..cwd.components().count() {
            relative.push("..");
        }
        relative.push(theirs.strip_prefix("/").unwrap());
        relative.push("admin.sock");
        match call(&relative, &Request::Ping).await {
            Err(ClientError::Untrusted(_, why)) => {
                assert!(why.contains("belongs to another user (uid 65534)"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Named by an absolute path, it is the operator's choice.
        assert!(matches!(
            call(&theirs.join("admin.sock"), &Request::Ping).await,
            Err(ClientError::NoDaemon(_))
        ));
    }

    /// A daemon older than the command (the binary replaced, the daemon not restarted): its
    /// refusal says to restart it.
    #[tokio::test]
    async fn a_command_an_older_daemon_does_not_know_says_to_restart_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sock");
        refusing_daemon(
            &path,
            "bad request: unknown variant `requests`, expected one of `ping`",
        );
        match call(&path, &Request::Ping).await {
            Ok(Response::Error { message }) => {
                assert!(message.starts_with("bad request: unknown variant `requests`"));
                assert!(
                    message.contains("older than this command: restart it"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A daemon that takes the command and goes away before answering (killed mid-command):
    /// the operator is told it may have been done, not that it failed.
    #[tokio::test]
    async fn a_daemon_gone_before_answering_may_have_done_it() {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            let _ = BufReader::new(s).read_line(&mut line).await;
        });
        let req = Request::KeysTopup {
            key: "key_x".into(),
            usd: "1".parse().unwrap(),
        };
        let err = call(&path, &req).await.unwrap_err();
        assert!(matches!(err, ClientError::Unanswered), "{err}");
        assert!(err.to_string().contains("may have been done"), "{err}");
    }
}
