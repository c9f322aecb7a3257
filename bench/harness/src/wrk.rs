//! Closed-loop maximum throughput with `wrk` (Debian's package): N connections each sending
//! the next request as soon as the last answer arrived.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::client::Target;

/// Requests/s, and the non-2xx count wrk saw.
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Answers that were not 2xx/3xx, plus socket errors.
    pub errors: u64,
}

/// `wrk -t1 -c<conns> -d<secs>s` against `t`, pinned to `core`.
pub fn run(t: &Target, conns: u32, secs: u32, core: u32, dir: &Path) -> anyhow::Result<WrkResult> {
    let script = dir.join(format!("wrk-{}.lua", t.name));
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!(
        "wrk.body = '{}'\n",
        crate::client::body::PLAIN.replace('\'', "\\'")
    ));
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    if let Some(a) = &t.auth {
        lua.push_str(&format!("wrk.headers[\"Authorization\"] = \"{a}\"\n"));
    }
    std::fs::write(&script, lua)?;
    let out = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "-s"])
        .arg(&script)
        .arg(t.url())
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    let Some(rps) = rps else {
        bail!("wrk output not understood: {text}");
    };
    let grab = |key: &str| -> u64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|d| d.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    let errors = grab("Non-2xx or 3xx responses:") + grab("Socket errors:");
    Ok(WrkResult { rps, errors })
}
