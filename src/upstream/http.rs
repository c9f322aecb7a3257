//! The HTTP client for DeepSeek's API calls: hyper's pooled client (`hyper-util`) over rustls,
//! used directly rather than through reqwest.
//!
//! Why not reqwest here (it still serves the balance watch and PayPal, where a request a minute
//! costs nothing): on the answer path its request builder, redirect layer and pending-request
//! state parse the upstream URL into a `url::Url` twice per request, whatever the policy, and
//! clone the request for a redirect that a POST to DeepSeek never takes — ~13k instructions,
//! 5 % of a whole gateway request under callgrind (bench/PROFILE.md). What is left here is what
//! the relay needs: a pooled keep-alive connection (HTTP/1.1, or HTTP/2 when the server offers
//! it over TLS), a connect timeout, TCP_NODELAY, and the body read as it comes. Timers for
//! the whole request and for idleness are the caller's (`client.rs`, `reply.rs`), as they were.
//!
//! What changes from reqwest, on purpose: a redirect is not followed (a 3xx is an upstream
//! error like any other status, where reqwest would have re-sent the POST as a GET), and the
//! `HTTP(S)_PROXY` environment variables are not read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Why the upstream HTTP clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// rustls refused its own defaults (the crypto provider lacks a protocol version).
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The balance watch's reqwest client.
    #[error("{0}")]
    Watch(#[from] reqwest::Error),
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting took longer than `upstream.connect_timeout_secs`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// Anything else: refused, reset, TLS, DNS, a URL that does not parse (the whole cause
    /// chain, for the log).
    #[error("{0}")]
    Failed(String),
    /// This machine could not open a connection: out of file descriptors (the process's or
    /// the system's) or of socket memory. Not DeepSeek's failure (the cause chain, for the log).
    #[error("{0}")]
    OutOfResources(String),
}

/// A pooled HTTP client for DeepSeek.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Told>,
}

/// A request body that says when hyper first takes it (`sent`): a connection is then open and
/// the request is being written, so DeepSeek may see — and charge for — the prompt. Until then
/// (connecting, or a connection that never opens) a client that goes away owes nothing.
pub struct Told {
    body: Full<Bytes>,
    sent: Option<Arc<AtomicBool>>,
}

impl hyper::body::Body for Told {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(sent) = this.sent.take() {
            sent.store(true, Ordering::Release);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The `User-Agent` sent upstream.
const USER_AGENT: &str = concat!("modelrelay/", env!("CARGO_PKG_VERSION"));

impl HttpClient {
    /// A client whose connections time out connecting after `connect_timeout` and are dropped
    /// from the pool after `idle` unused.
    pub fn new(connect_timeout: Duration, idle: Duration) -> Result<HttpClient, BuildError> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        // https URLs are the TLS layer's to handle; it hands plain TCP back for http.
        tcp.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool would never drop an idle connection.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle)
            .build(tls);
        Ok(HttpClient { client })
    }

    /// POST `body` as JSON to `uri` with `authorization`; resolves when the response head
    /// arrives. `sent` is set once the request is being written on an open connection.
    pub async fn post_json(
        &self,
        uri: &Uri,
        authorization: &HeaderValue,
        body: Bytes,
        sent: Arc<AtomicBool>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut req = Request::new(Told {
            body: Full::new(body),
            sent: Some(sent),
        });
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.insert(header::AUTHORIZATION, authorization.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        self.client.request(req).await.map_err(classify)
    }
}

/// A connect timeout apart (it counts as a timeout, as reqwest counted it), anything else
/// with its causes spelled out: hyper-util's own message is only "client error (Connect)".
fn classify(e: hyper_util::client::legacy::Error) -> SendError {
    if times_out(&e) {
        return SendError::ConnectTimeout;
    }
    let (text, local) = spelled_out(&e);
    if local {
        SendError::OutOfResources(text)
    } else {
        SendError::Failed(text)
    }
}

/// `e` with its causes, and whether one of them is this machine running out of resources.
fn spelled_out(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut text = String::new();
    let mut local = false;
    let mut cause = Some(e);
    while let Some(c) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c.to_string());
        local |= c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| OUT_OF_RESOURCES.contains(&n));
        cause = c.source();
    }
    (text, local)
}

/// `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: the errors of a connection this machine could not
/// open. Taken for DeepSeek's, they rested every account one after the other (a flood of
/// HTTP/2 streams under a low descriptor limit; found by an independent check).
const OUT_OF_RESOURCES: [i32; 4] = [
    nix::libc::EMFILE,
    nix::libc::ENFILE,
    nix::libc::ENOBUFS,
    nix::libc::ENOMEM,
];

/// Whether an I/O error of kind `TimedOut` is among `e`'s causes (hyper-util's connect
/// timeout is one, under its "tcp connect error").
fn times_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The next piece of a response body: `None` at its end. Trailers are skipped.
pub async fn chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error caused, somewhere down its chain, by running out of descriptors is this
    /// machine's; a refused connection is not.
    #[test]
    fn out_of_descriptors_is_told_apart_from_upstream_failures() {
        #[derive(Debug, thiserror::Error)]
        #[error("tcp open error")]
        struct Outer(#[source] std::io::Error);
        let emfile = Outer(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
        let (text, local) = spelled_out(&emfile);
        assert!(local, "{text}");
        assert!(text.starts_with("tcp open error: "), "{text}");
        let refused = Outer(std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED));
        assert!(!spelled_out(&refused).1);
        assert!(!spelled_out(&std::io::Error::other("x")).1);
    }

    /// A port nothing listens on: connecting is refused, with the cause in the text.
    #[tokio::test]
    async fn refused_connection_says_why() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = HttpClient::new(Duration::from_secs(5), Duration::from_secs(90)).expect("client");
        let uri: Uri = format!("http://127.0.0.1:{port}/chat/completions")
            .parse()
            .expect("uri");
        let sent = Arc::new(AtomicBool::new(false));
        let e = c
            .post_json(
                &uri,
                &HeaderValue::from_static("Bearer x"),
                Bytes::from_static(b"{}"),
                sent.clone(),
            )
            .await
            .expect_err("nothing listens");
        let text = e.to_string();
        assert!(matches!(e, SendError::Failed(_)), "{e:?}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(
            !sent.load(Ordering::Acquire),
            "never on the wire: a client that leaves owes nothing"
        );
    }

    /// The request counts as sent once it is written on an open connection (found by an
    /// independent check: it counted as sent from the moment it left the queue, so a client
    /// that went away while the gateway was still connecting paid for its prompt).
    #[tokio::test]
    async fn a_request_on_an_open_connection_is_sent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"{}") {
                let n = sock.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before the body");
                got.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
        });
        let c = HttpClient::new(Duration::from_secs(5), Duration::from_secs(90)).expect("client");
        let uri: Uri = format!("http://127.0.0.1:{port}/chat/completions")
            .parse()
            .expect("uri");
        let sent = Arc::new(AtomicBool::new(false));
        let r = c
            .post_json(
                &uri,
                &HeaderValue::from_static("Bearer x"),
                Bytes::from_static(b"{}"),
                sent.clone(),
            )
            .await
            .expect("answered");
        assert_eq!(r.status(), 200);
        assert!(sent.load(Ordering::Acquire));
        server.await.expect("server");
    }

    /// An https URL is spoken to in TLS, naming the host (SNI) and offering HTTP/2 and
    /// HTTP/1.1 (ALPN): the bytes a server receives first are a ClientHello.
    #[tokio::test]
    async fn https_urls_start_a_tls_handshake_offering_h2() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut hello = vec![0u8; 4096];
            let n = sock.read(&mut hello).await.expect("read");
            hello.truncate(n);
            hello // dropping the socket fails the handshake
        });
        let c = HttpClient::new(Duration::from_secs(5), Duration::from_secs(90)).expect("client");
        let uri: Uri = format!("https://localhost:{port}/chat/completions")
            .parse()
            .expect("uri");
        let e = c
            .post_json(
                &uri,
                &HeaderValue::from_static("Bearer x"),
                Bytes::new(),
                Arc::new(AtomicBool::new(false)),
            )
            .await
            .expect_err("no TLS server");
        assert!(matches!(e, SendError::Failed(_)), "{e:?}");
        let hello = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client connected")
            .expect("server");
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        let has = |needle: &[u8]| hello.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"localhost"), "SNI names the host");
        assert!(
            has(b"\x02h2") && has(b"\x08http/1.1"),
            "ALPN offers h2 and http/1.1"
        );
    }

    /// An I/O `TimedOut` under the error is a connect timeout; another kind is not.
    #[test]
    fn timed_out_io_cause_is_a_connect_timeout() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        // hyper-util's error cannot be built outside it: the walk over causes that
        // classify() uses is tested on an error shaped like its connect error.
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ));
        assert!(times_out(&e));
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "no",
        ));
        assert!(!times_out(&e));
    }
}
