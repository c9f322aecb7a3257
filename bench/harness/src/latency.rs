//! Added latency at one connection: requests one at a time, the targets' rounds alternated so
//! that drift on a shared machine lands on all of them alike.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::client::{Conn, Target};
use crate::stats::{p3, us};

/// Per target: every request's time in µs (whole response, or time to first byte for streams).
pub type Samples = BTreeMap<String, Vec<f64>>;

/// `rounds` rounds of `per_round` requests to each target, after `warmup` unmeasured ones.
pub async fn measure(
    targets: &[Target],
    stream: bool,
    warmup: usize,
    rounds: usize,
    per_round: usize,
    tolerate_errors: bool,
    errors: &mut usize,
) -> anyhow::Result<Samples> {
    let body = Bytes::from_static(if stream {
        crate::client::body::STREAM.as_bytes()
    } else {
        crate::client::body::PLAIN.as_bytes()
    });
    let mut conns = Vec::new();
    for t in targets {
        conns.push(Conn::open(t.addr).await?);
    }
    let mut out: Samples = targets
        .iter()
        .map(|t| (t.name.clone(), Vec::new()))
        .collect();
    for (t, c) in targets.iter().zip(conns.iter_mut()) {
        for _ in 0..warmup {
            one(c, t, &body, stream).await?;
        }
    }
    for round in 0..rounds {
        // Rotate the order each round.
        for i in 0..targets.len() {
            let k = (i + round) % targets.len();
            let (t, c) = (&targets[k], &mut conns[k]);
            let v = out
                .get_mut(&t.name)
                .ok_or_else(|| anyhow::anyhow!("target"))?;
            for _ in 0..per_round {
                match one(c, t, &body, stream).await {
                    Ok(d) => v.push(us(d)),
                    // A peer that drops a connection now and then (LiteLLM under uvicorn does)
                    // loses that sample and gets a new connection; anyone else fails the run.
                    Err(e) if tolerate_errors => {
                        eprintln!("  {}: {e:#}; reconnecting", t.name);
                        *errors += 1;
                        *c = Conn::open(t.addr).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}

async fn one(
    c: &mut Conn,
    t: &Target,
    body: &Bytes,
    stream: bool,
) -> anyhow::Result<std::time::Duration> {
    use anyhow::Context;
    if stream {
        let s = c.stream(t, body).await.with_context(|| t.name.clone())?;
        anyhow::ensure!(s.done, "{}: stream ended without [DONE]", t.name);
        Ok(s.ttfb)
    } else {
        c.exchange(t, body).await.with_context(|| t.name.clone())
    }
}

/// p50/p99/p99.9 of `name` minus those of `base` (the mock straight).
pub fn added(s: &mut Samples, name: &str, base: &str) -> Option<[f64; 3]> {
    let b = p3(s.get_mut(base)?);
    let t = p3(s.get_mut(name)?);
    Some([t[0] - b[0], t[1] - b[1], t[2] - b[2]])
}
