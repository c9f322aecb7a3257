//! The load generator's HTTP/1.1 client: one keep-alive connection per worker, `TCP_NODELAY`,
//! and the three request shapes the benchmark sends (non-stream, stream, slow stream).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Where requests go: the mock directly, nginx, the gateway (full or pass-through), LiteLLM.
#[derive(Clone, Debug)]
pub struct Target {
    /// Short name for tables.
    pub name: String,
    /// Host and port.
    pub addr: SocketAddr,
    /// Path of the chat completions endpoint.
    pub path: String,
    /// `Authorization` header value, if any.
    pub auth: Option<String>,
}

impl Target {
    /// The full URL (for wrk).
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// Request bodies.
pub mod body {
    /// A short non-stream chat request.
    pub const PLAIN: &str = r#"{"model":"deepseek-v4-flash","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":64}"#;
    /// The same, streamed.
    pub const STREAM: &str = r#"{"model":"deepseek-v4-flash","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":64,"stream":true}"#;

    /// A stream whose `chunks` content chunks the mock spaces `interval_ms` apart.
    pub fn slow(chunks: usize, interval_ms: u64) -> String {
        format!(
            r#"{{"model":"deepseek-v4-flash","messages":[{{"role":"user","content":"slow:{chunks}:{interval_ms}"}}],"max_tokens":64,"stream":true}}"#
        )
    }
}

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    tx: Tx,
    /// Times the server closed the connection and it was opened again.
    pub reconnects: u32,
}

enum Tx {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// What a streamed response looked like to the client.
pub struct StreamTiming {
    /// Request sent → first `data:` bytes.
    pub ttfb: Duration,
    /// Arrival time of every body frame holding data after the first.
    pub frames: Vec<Instant>,
    /// The stream ended with `data: [DONE]`.
    pub done: bool,
}

impl Conn {
    /// Connect with `TCP_NODELAY`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        Ok(Conn {
            addr,
            tx: Tx::H1(Self::connect(addr).await?),
            reconnects: 0,
        })
    }

    /// An HTTP/2 connection without TLS (h2c, prior knowledge): many streams share it. Used
    /// where one TCP connection per stream would exceed the machine's descriptor limit.
    pub async fn open_h2(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            addr,
            tx: Tx::H2(tx),
            reconnects: 0,
        })
    }

    /// Another handle on the same HTTP/2 connection (`None` for HTTP/1.1).
    pub fn share(&self) -> Option<Conn> {
        match &self.tx {
            Tx::H2(tx) => Some(Conn {
                addr: self.addr,
                tx: Tx::H2(tx.clone()),
                reconnects: 0,
            }),
            Tx::H1(_) => None,
        }
    }

    async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(tx)
    }

    async fn send(
        &mut self,
        t: &Target,
        body: &Bytes,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let h2 = matches!(self.tx, Tx::H2(_));
        match &mut self.tx {
            Tx::H1(tx) => {
                if tx.ready().await.is_err() {
                    // The server closed the idle connection: open another (counted, rare).
                    *tx = Self::connect(self.addr).await?;
                    self.reconnects += 1;
                    tx.ready().await?;
                }
            }
            Tx::H2(tx) => tx.ready().await?,
        }
        let mut req = hyper::Request::post(format!("http://{}{}", t.addr, t.path))
            .header("content-type", "application/json");
        if !h2 {
            req = req.header("host", t.addr.to_string());
        }
        if let Some(a) = &t.auth {
            req = req.header("authorization", a);
        }
        let mut req = req.body(Full::new(body.clone()))?;
        if !h2 {
            // HTTP/1.1 wants the origin form.
            *req.uri_mut() = t.path.parse()?;
        }
        Ok(match &mut self.tx {
            Tx::H1(tx) => tx.send_request(req).await?,
            Tx::H2(tx) => tx.send_request(req).await?,
        })
    }

    /// A whole non-stream exchange; fails on a non-200 answer.
    pub async fn exchange(&mut self, t: &Target, body: &Bytes) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let resp = self.send(t, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let took = start.elapsed();
        if status != 200 {
            bail!(
                "{} answered {status}: {}",
                t.name,
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(took)
    }

    /// A streamed exchange, read to the end.
    pub async fn stream(&mut self, t: &Target, body: &Bytes) -> anyhow::Result<StreamTiming> {
        let start = Instant::now();
        let resp = self.send(t, body).await?;
        let status = resp.status();
        let mut b = resp.into_body();
        let mut ttfb = None;
        let mut frames = Vec::new();
        let mut tail = Vec::<u8>::new();
        while let Some(frame) = b.frame().await {
            let frame = frame?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let now = Instant::now();
            if ttfb.is_none() {
                ttfb = Some(now - start);
            } else {
                frames.push(now);
            }
            tail.extend_from_slice(&data);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
        if status != 200 {
            bail!("{} answered {status}", t.name);
        }
        let done = tail.windows(12).any(|w| w == b"data: [DONE]");
        Ok(StreamTiming {
            ttfb: ttfb.unwrap_or_else(|| start.elapsed()),
            frames,
            done,
        })
    }
}
