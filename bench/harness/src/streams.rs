//! Many concurrent slow streams: each client holds its own connection and reads a stream whose
//! chunks the mock spaces `interval` apart; we record time to first byte, the gaps between
//! chunks, stalls, and the gateway's resident memory while they are all open.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{Conn, Target};
use crate::stats::{quantile, us};

/// Streams opened per second.
pub const RAMP_PER_SEC: f64 = 1000.0;

/// Content chunks per stream so that, `interval` apart, every stream is still open 5 s after
/// the last one was opened.
pub fn chunks_for(n: usize, interval: Duration) -> usize {
    let secs = n as f64 / RAMP_PER_SEC + 5.0;
    (secs / interval.as_secs_f64()).ceil() as usize
}

/// What one step (N streams) gave.
#[derive(Clone, Debug, Default)]
pub struct StreamsResult {
    /// Streams opened.
    pub n: usize,
    /// HTTP/2 connections they shared (0: one HTTP/1.1 connection each).
    pub h2_conns: usize,
    /// p50 / p99 time to first byte, µs.
    pub ttfb: [f64; 2],
    /// p99 of (gap between chunks − the mock's interval), µs.
    pub gap_p99: f64,
    /// The largest such excess, µs.
    pub gap_max: f64,
    /// Streams that failed, ended without `[DONE]`, or had a gap over interval + 1 s.
    pub stalls: usize,
    /// RSS of the watched process with every stream open, minus before, KiB per stream.
    pub rss_per_stream_kib: f64,
}

/// Open `n` streams (ramped), read them all, and sample `watch_pid`'s RSS while all are open;
/// the memory per stream is counted from `rss_idle_kib`, the process before any stream (memory
/// freed by an earlier step stays with the process and would hide what a step costs).
pub async fn run(
    t: &Target,
    n: usize,
    chunks: usize,
    interval: Duration,
    watch_pid: Option<u32>,
    rss_idle_kib: u64,
    h2_conns: usize,
) -> anyhow::Result<StreamsResult> {
    // With h2_conns > 0 the streams share that many HTTP/2 connections (h2c) instead of one
    // HTTP/1.1 connection each.
    let mut shared = Vec::new();
    for _ in 0..h2_conns {
        shared.push(Conn::open_h2(t.addr).await?);
    }
    let body = Bytes::from(crate::client::body::slow(
        chunks,
        interval.as_millis() as u64,
    ));
    let mut tasks = Vec::with_capacity(n);
    // Streams arrive one by one at RAMP_PER_SEC, as customers would, not in bursts.
    let ramp_start = Instant::now();
    for i in 0..n {
        if i > 0 {
            let due = ramp_start + Duration::from_secs_f64(i as f64 / RAMP_PER_SEC);
            tokio::time::sleep_until(due.into()).await;
        }
        let (t, body) = (t.clone(), body.clone());
        let h2 = shared.get(i % shared.len().max(1)).and_then(Conn::share);
        tasks.push(tokio::spawn(async move {
            let mut c = match h2 {
                Some(c) => c,
                None => Conn::open(t.addr).await?,
            };
            c.stream(&t, &body).await
        }));
    }
    // Every stream is open once the ramp is over and the first chunk had time to arrive (the
    // caller makes streams outlast the ramp by a few seconds).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ramp = ramp_start.elapsed();
    let rss_during = watch_pid.map(crate::procs::rss_kib).unwrap_or(0);
    let mut ttfb = Vec::with_capacity(n);
    let mut gaps = Vec::new();
    let mut stalls = 0;
    let stall = interval + Duration::from_secs(1);
    // MRB_DUMP=path: every gap's end (ms since the ramp began) and excess (µs), to see when
    // the large ones happen.
    let mut dump = std::env::var("MRB_DUMP")
        .ok()
        .filter(|_| watch_pid.is_some())
        .map(|_| format!("# ramp start {ramp_start:?}\n"));
    for task in tasks {
        match task.await? {
            Ok(s) => {
                ttfb.push(us(s.ttfb));
                let mut bad = !s.done;
                let last = s.frames.len().saturating_sub(2);
                for (k, w) in s.frames.windows(2).enumerate() {
                    let gap = w[1] - w[0];
                    if gap > stall {
                        bad = true;
                    }
                    gaps.push(us(gap) - us(interval));
                    if let Some(d) = dump.as_mut() {
                        let at = w[1].saturating_duration_since(ramp_start).as_secs_f64() * 1e3;
                        let end = if k == last { " last" } else { "" };
                        d.push_str(&format!("{at:.1} {:.0}{end}\n", us(gap) - us(interval)));
                    }
                }
                stalls += usize::from(bad);
            }
            Err(e) => {
                eprintln!("stream failed: {e:#}");
                stalls += 1;
            }
        }
    }
    if let (Some(d), Ok(path)) = (dump, std::env::var("MRB_DUMP")) {
        std::fs::write(path, d)?;
    }
    eprintln!(
        "  {} streams to {}: ramp {:.1}s",
        n,
        t.name,
        ramp.as_secs_f64()
    );
    Ok(StreamsResult {
        n,
        h2_conns,
        ttfb: [quantile(&mut ttfb, 0.5), quantile(&mut ttfb, 0.99)],
        gap_p99: quantile(&mut gaps, 0.99),
        gap_max: gaps.iter().copied().fold(f64::NAN, f64::max),
        stalls,
        rss_per_stream_kib: (rss_during.saturating_sub(rss_idle_kib)) as f64 / n as f64,
    })
}
