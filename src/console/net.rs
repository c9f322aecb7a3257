//! The console's two connections to the daemon: the subscription (reconnected with backoff
//! whenever it drops) and the command connection (revoke, top up, create, and the look-ups).
//! Both report through the one [`Event`] channel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::event::{Command, Event};
use crate::activity::client::{Client, ClientError};
use crate::activity::protocol::{Request, Response};

/// First retry after the subscription drops; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// How long a command may wait for its answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// A subscription silent this long is taken for a stuck daemon: the daemon says something at
/// least every [`HEARTBEAT`](crate::activity::protocol::HEARTBEAT).
const SILENT: Duration = Duration::from_secs(15);

/// Connect and subscribe; returns once the daemon said `subscribed`, or an error when it does
/// not within [`SILENT`].
pub async fn subscribe(path: &Path) -> Result<Client, ClientError> {
    let asked = async {
        let mut client = Client::connect(path).await?;
        match client.ask(&Request::Subscribe).await {
            Ok(Some(Response::Subscribed)) => Ok(client),
            Ok(Some(Response::Error { message })) => Err(ClientError::Refused(message)),
            Ok(Some(other)) => Err(ClientError::Protocol(format!(
                "expected `subscribed`, got {other:?}"
            ))),
            // A daemon that refuses a peer says why first (the case above); closing without
            // a word is something else at the socket (it was called "permission denied";
            // found by an independent check).
            Ok(None) => Err(ClientError::Protocol(
                "it closed the connection without answering".into(),
            )),
            Err(e) => Err(e),
        }
    };
    tokio::time::timeout(SILENT, asked)
        .await
        .unwrap_or_else(|_| Err(ClientError::Silent(path.to_path_buf(), SILENT.as_secs())))
}

/// Keep a subscription up for as long as the console runs, starting with `first`.
pub async fn subscription(path: PathBuf, first: Client, tx: mpsc::Sender<Event>) {
    let mut next = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = match next.take() {
            Some(c) => Ok(c),
            None => subscribe(&path).await,
        };
        let mut client = match attempt {
            Ok(c) => c,
            Err(e) => {
                if tx.send(Event::Disconnected(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        if tx.send(Event::Connected).await.is_err() {
            return;
        }
        let why = loop {
            match tokio::time::timeout(SILENT, client.recv()).await {
                Ok(Ok(Some(r))) => {
                    if tx.send(Event::Socket(r)).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(None)) => break "the daemon closed the connection".to_string(),
                Ok(Err(e)) => break e.to_string(),
                Err(_) => {
                    break format!(
                        "the daemon has said nothing for {} s (stopped, frozen or overloaded?)",
                        SILENT.as_secs()
                    );
                }
            }
        };
        if tx.send(Event::Disconnected(why)).await.is_err() {
            return;
        }
    }
}

/// Run commands one at a time on a kept connection, reporting each answer.
pub async fn commands(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::Sender<Event>,
) {
    let mut client: Option<Client> = None;
    while let Some(cmd) = rx.recv().await {
        let result = if cmd.is_operator_action() {
            // A change is sent once: on a connection just proven alive, so that a daemon that
            // restarted since the last command cannot leave it unknown whether it applied.
            match call(&path, &mut client, &Request::Ping).await {
                Ok(_) => call_once(&path, &mut client, &cmd.request()).await,
                Err(e) => Err(e),
            }
        } else {
            call(&path, &mut client, &cmd.request()).await
        };
        if tx.send(Event::Reply(cmd, result)).await.is_err() {
            return;
        }
    }
}

/// Send a request that is safe to repeat: a dead kept connection is replaced once.
async fn call(path: &Path, client: &mut Option<Client>, req: &Request) -> Result<Response, String> {
    let fresh = client.is_none();
    match call_once(path, client, req).await {
        Err(_) if !fresh => call_once(path, client, req).await,
        other => other,
    }
}

/// Send a request once, connecting first if needed; a failed connection is dropped.
async fn call_once(
    path: &Path,
    client: &mut Option<Client>,
    req: &Request,
) -> Result<Response, String> {
    let c = match client {
        Some(c) => c,
        None => client.insert(Client::connect(path).await.map_err(|e| e.to_string())?),
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, c.call(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            *client = None;
            Err(e.to_string())
        }
        Err(_) => {
            // Its answer may still come on this connection; a new one keeps answers in step.
            *client = None;
            Err(format!(
                "the daemon did not answer within {} s; check the key before retrying",
                COMMAND_TIMEOUT.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that takes the connection and says nothing (stopped with SIGSTOP): the console
    /// gives up in [`SILENT`] with a reason, instead of a blank screen for ever; a socket that
    /// closes without a word is not called "permission denied".
    #[tokio::test(start_paused = true)]
    async fn a_silent_or_closing_socket_is_said_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        crate::activity::client::silent_daemon(&path);
        let err = subscribe(&path).await.err().expect("not subscribed");
        assert!(
            err.to_string().contains("did not answer within 15 s"),
            "{err}"
        );
        let closing = dir.path().join("closing.sock");
        let listener = tokio::net::UnixListener::bind(&closing).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let err = subscribe(&closing).await.err().expect("not subscribed");
        let said = err.to_string();
        assert!(
            said.contains("closed the connection") && !said.contains("permission denied"),
            "{said}"
        );
    }

    /// A daemon that refuses this peer writes why and closes: the console says that, not
    /// "closed the connection or answered garbage" (or, in a race, "permission denied").
    #[tokio::test]
    async fn a_refusal_is_said_in_the_daemons_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refusing.sock");
        crate::activity::client::refusing_daemon(&path, "not allowed: not uid 65534");
        for _ in 0..20 {
            match subscribe(&path).await {
                Err(e) => assert_eq!(e.to_string(), "not allowed: not uid 65534"),
                Ok(_) => panic!("subscribed"),
            }
        }
    }
}
