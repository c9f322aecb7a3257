//! Open-loop load at a fixed rate: request i is due at `start + i/rate` whatever happened to the
//! ones before, and its latency counts from when it was due (no coordinated omission). A thread
//! with a precise sleep releases requests to a pool of keep-alive connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};

use crate::client::{Conn, Target};
use crate::stats::{quantile, us};

/// One fixed-rate step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Requests per second asked for.
    pub rate: u32,
    /// Requests per second completed.
    pub achieved: f64,
    /// p50 and p99 latency (µs) from the due time.
    pub p50: f64,
    /// p99 latency (µs).
    pub p99: f64,
    /// Failed requests.
    pub errors: usize,
}

/// Run `rate` requests/s for `secs` seconds over up to `conns` connections.
pub async fn step(t: &Target, rate: u32, secs: f64, conns: usize) -> anyhow::Result<Step> {
    let n = (f64::from(rate) * secs) as usize;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let body = Bytes::from_static(crate::client::body::PLAIN.as_bytes());
    let mut workers = Vec::new();
    for _ in 0..conns {
        let mut c = Conn::open(t.addr).await?;
        let (rx, t, body) = (rx.clone(), t.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let due = { rx.lock().await.recv().await };
                let Some(due) = due else { break };
                match c.exchange(&t, &body).await {
                    Ok(_) => lat.push(us(due.elapsed())),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let pacer = std::thread::spawn(move || {
        let gap = Duration::from_secs_f64(1.0 / f64::from(rate));
        for i in 0..n {
            let due = start + gap * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        lat.extend(l);
        errors += e;
    }
    let _ = pacer.join();
    let took = start.elapsed().as_secs_f64();
    Ok(Step {
        rate,
        achieved: lat.len() as f64 / took,
        p50: quantile(&mut lat, 0.5),
        p99: quantile(&mut lat, 0.99),
        errors,
    })
}

/// Steps up the given rates, stopping once p99 is past `give_up_us` or the rate is not kept.
pub async fn sweep(
    t: &Target,
    rates: &[u32],
    secs: f64,
    conns: usize,
    give_up_us: f64,
) -> anyhow::Result<Vec<Step>> {
    let mut out = Vec::new();
    for &rate in rates {
        let s = step(t, rate, secs, conns).await?;
        let stop = s.p99 > give_up_us || s.achieved < 0.9 * f64::from(rate) || s.errors > 0;
        out.push(s);
        if stop {
            break;
        }
    }
    Ok(out)
}

/// The highest rate whose p99 stayed under `limit_us` with no errors and the rate kept.
pub fn highest_under(steps: &[Step], limit_us: f64) -> u32 {
    steps
        .iter()
        .filter(|s| s.p99 < limit_us && s.errors == 0 && s.achieved >= 0.95 * f64::from(s.rate))
        .map(|s| s.rate)
        .max()
        .unwrap_or(0)
}
