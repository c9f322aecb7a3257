//! Issue 11, the admin socket: a peer cannot make the daemon buffer an endless request line or
//! hold a connection it never uses, and a subscribed console that only listens is left alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use modelrelay::activity::server::{MAX_LINE, SocketTimeouts, serve_with};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::common::TestApp;

/// Short timeouts, so the tests do not wait a minute.
const SHORT: SocketTimeouts = SocketTimeouts {
    idle: Duration::from_millis(600),
    line: Duration::from_millis(600),
};

/// A second admin socket served for the daemon's state with [`SHORT`] timeouts; it stops when
/// the sender is dropped.
fn short_socket(app: &TestApp) -> (PathBuf, watch::Sender<bool>) {
    let path = app.dir.path().join("short.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (stop, stopped) = watch::channel(false);
    let state = app.daemon.as_ref().unwrap().state.clone();
    tokio::spawn(serve_with(state, listener, stopped, SHORT));
    (path, stop)
}

/// Everything the daemon still sends until it closes the connection (a connection the daemon
/// keeps open fails the test instead of hanging it). A daemon that hangs up on a peer whose
/// bytes it did not read resets the connection once its last words are read.
async fn rest_until_closed(stream: &mut UnixStream) -> String {
    let mut rest = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("unreadable: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the daemon closes the connection");
    String::from_utf8(rest).unwrap()
}

fn error_line(message: &str) -> String {
    format!("{}\n", json!({"type": "error", "message": message}))
}

#[tokio::test]
async fn an_endless_request_line_is_cut_at_the_cap_and_answered_with_an_error() {
    let app = TestApp::spawn().await;
    let mut stream = UnixStream::connect(&app.socket).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut accepted = 0usize;
    let write_all = async {
        while accepted < 10 << 20 {
            match stream.write(&chunk).await {
                Ok(n) => accepted += n,
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), write_all)
        .await
        .expect("the daemon stops taking the line instead of waiting for its newline");
    // What the kernel's socket buffers hold comes on top of the daemon's cap.
    assert!(
        accepted < 1 << 20,
        "{accepted} bytes of a line without a newline were taken"
    );
    assert!(accepted > MAX_LINE, "the cap itself is taken: {accepted}");
    assert_eq!(
        rest_until_closed(&mut stream).await,
        error_line("command too long for the admin socket (over 64 KiB)")
    );
    // The daemon is unharmed.
    let pong = app
        .admin(modelrelay::activity::protocol::Request::Ping)
        .await;
    assert!(
        matches!(pong, modelrelay::activity::protocol::Response::Pong { .. }),
        "{pong:?}"
    );
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn().await;
    let (path, _stop) = short_socket(&app);
    // Nothing at all: closed without a word.
    let started = Instant::now();
    let mut silent = UnixStream::connect(&path).await.unwrap();
    assert_eq!(rest_until_closed(&mut silent).await, "");
    let waited = started.elapsed();
    assert!(waited >= SHORT.idle, "closed after {waited:?}");
    // One request, then nothing: answered, then closed the same way.
    let mut once = UnixStream::connect(&path).await.unwrap();
    once.write_all(b"{\"cmd\":\"ping\"}\n").await.unwrap();
    let answer = rest_until_closed(&mut once).await;
    let pong: Value = serde_json::from_str(answer.trim_end()).unwrap();
    assert_eq!(pong["type"], "pong", "{answer}");
    // Half a line, never finished: told so, then closed.
    let started = Instant::now();
    let mut slow = UnixStream::connect(&path).await.unwrap();
    slow.write_all(b"{\"cmd\":\"pi").await.unwrap();
    assert_eq!(
        rest_until_closed(&mut slow).await,
        error_line("request line not completed in time")
    );
    assert!(started.elapsed() >= SHORT.line);
}

#[tokio::test]
async fn a_subscribed_console_that_only_listens_keeps_receiving_events() {
    let app = TestApp::spawn().await;
    let (path, _stop) = short_socket(&app);
    let stream = UnixStream::connect(&path).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    lines
        .get_mut()
        .get_mut()
        .write_all(b"{\"cmd\":\"subscribe\"}\n")
        .await
        .unwrap();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line")
            .unwrap()
            .expect("the subscription stays open");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await["type"], "subscribed");
    assert_eq!(next().await["type"], "snapshot");
    // Silent for several idle timeouts, then something happens.
    tokio::time::sleep(SHORT.idle * 4).await;
    let key = app.create_key("trial", None).await;
    let event = next().await;
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["event"]["kind"], "key_created", "{event}");
    let prefix = event["event"]["key"]["prefix"].as_str().unwrap();
    assert!(
        key.starts_with(prefix.trim_end_matches('…')),
        "{prefix} {key}"
    );
}

/// A peer opening thousands of connections cannot take the daemon's descriptors: past
/// `MAX_CONNECTIONS` open at once, a new one waits (in the kernel's backlog) until one closes,
/// and is then served.
#[tokio::test]
async fn admin_connections_past_the_cap_wait_for_a_free_one() {
    use modelrelay::activity::server::MAX_CONNECTIONS;
    let app = TestApp::spawn().await;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(UnixStream::connect(&app.socket).await.unwrap());
    }
    // Each held connection is served: a ping on the last one is answered.
    let ping = |s: UnixStream| async move {
        let mut s = BufReader::new(s);
        s.get_mut()
            .write_all(b"{\"cmd\":\"ping\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        line
    };
    let last = held.pop().unwrap();
    assert!(ping(last).await.contains("pong"));
    held.push(UnixStream::connect(&app.socket).await.unwrap());
    // One past the cap: connected (backlog), not answered while every slot is taken.
    let extra = tokio::spawn(ping(UnixStream::connect(&app.socket).await.unwrap()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!extra.is_finished(), "served past the cap");
    held.truncate(MAX_CONNECTIONS - 1);
    let answer = tokio::time::timeout(Duration::from_secs(5), extra)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(answer.contains("pong"), "{answer}");
}

/// The socket's file removed while the daemon runs (a cleanup of `/run`) is made again within
/// seconds, so the CLI and the console reach the daemon without a restart (they were told "no
/// modelrelay daemon is answering" until one, which drains the customers' requests).
#[tokio::test]
async fn a_socket_file_removed_while_running_is_made_again() {
    use modelrelay::activity::client;
    use modelrelay::activity::protocol::{Request, Response};
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    // Past the daemon's first look at the file (at its start).
    assert!(matches!(
        app.admin(Request::KeysList).await,
        Response::Keys { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&app.socket).expect("remove the socket file");
    assert!(client::call(&app.socket, &Request::KeysList).await.is_err());
    let started = Instant::now();
    let answer = loop {
        match client::call(&app.socket, &Request::KeysList).await {
            Ok(r) => break r,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the socket was not made again: {e}"),
        }
    };
    assert!(matches!(answer, Response::Keys { .. }), "{answer:?}");
    let mode = std::fs::metadata(&app.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// An admin command run in another user's directory reads no `./modelrelay.toml` of theirs (the
/// socket it names got `keys show`'s whole key; found by an independent re-check), says why and
/// sends nothing; with `--config` the operator chose it. (As root only: only root gives a file
/// away.)
#[tokio::test]
async fn an_admin_command_reads_no_config_another_user_left_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let listened = dir.path().join("listened.sock");
    let file = theirs.join("modelrelay.toml");
    std::fs::write(
        &file,
        format!("[server]\nadmin_socket = \"{}\"\n", listened.display()),
    )
    .unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    if nix::unistd::chown(&file, Some(nobody), None).is_err() {
        return;
    }
    let heard = UnixListener::bind(&listened).unwrap();
    let key = "sk-gateway-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd";
    let run = crate::cli::run_in(&theirs, &["keys", "show", key], &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("belongs to another user (uid 65534)")
            && run.stderr.contains("--config"),
        "{run:#?}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(300), heard.accept()).await;
    assert!(
        accepted.is_err(),
        "nothing connected to the socket it names"
    );
    // Named with --config, it is read (and its socket asked).
    // (Taken and dropped at once: the command then says the daemon went away.)
    let asked = tokio::spawn(async move { heard.accept().await.is_ok() });
    let run = crate::cli::run_in(
        &theirs,
        &["keys", "list", "--config", "modelrelay.toml"],
        &[],
    )
    .await;
    assert!(asked.await.unwrap(), "{run:#?}");
}
