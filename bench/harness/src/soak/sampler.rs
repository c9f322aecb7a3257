//! The gateway's resident memory (`VmRSS`) and open descriptors (`/proc/PID/fd`), and the
//! console's memory, sampled at a fixed interval while the load runs; and the judgement of
//! "flat".
//!
//! Flat means: split the samples in fifths; the first fifth is the warm-up (pools, caches and
//! the allocator's arenas fill up); the median of the second fifth is the baseline; the median
//! of the last fifth may exceed it by at most the bound (memory: the larger of a percentage and
//! a number of MiB; descriptors: a count). Medians, so that one sample taken while many streams
//! were open does not decide.
//!
//! Beside them, not judged, what would say where growth went: the gateway's resident memory
//! split into anonymous (heap: Rust's and SQLite's) and file-backed pages, and the database's
//! size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Opts;
use super::verdict::Verdict;
use super::world::World;
use crate::procs;

/// One sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_secs: f64,
    /// The gateway's resident memory, KiB.
    pub rss_kib: u64,
    /// The gateway's open descriptors.
    pub fds: u64,
    /// The console's resident memory, KiB (0 when it is not known).
    pub console_kib: u64,
    /// The database's size (pages × page size, the WAL's included), KiB.
    pub db_kib: u64,
    /// The gateway's anonymous resident memory (`RssAnon`), KiB.
    pub anon_kib: u64,
    /// The gateway's file-backed resident memory (`RssFile`: the binary, mapped files), KiB.
    pub file_kib: u64,
    /// Of its memory, what transparent huge pages back (`AnonHugePages`), KiB: the daemon
    /// turns them off, so this stays 0.
    pub huge_kib: u64,
}

/// The database's logical size in KiB (0 when it cannot be read).
fn db_kib(world: &World) -> u64 {
    let path = world.paths.data.join("modelrelay.db");
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(path, flags)
        .and_then(|c| {
            c.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map_or(0, |b| u64::try_from(b / 1024).unwrap_or(0))
}

fn sample(world: &World, started: Instant, console: Option<u32>) -> Sample {
    let pid = world.daemon_pid();
    let at_secs = started.elapsed().as_secs_f64();
    let (rss_kib, fds) = (procs::rss_kib(pid), fd_count(pid));
    let anon_kib = procs::status_kib(pid, "RssAnon:");
    let file_kib = procs::status_kib(pid, "RssFile:");
    let huge_kib = procs::rollup_kib(pid, "AnonHugePages:");
    Sample {
        at_secs,
        rss_kib,
        fds,
        console_kib: console.map_or(0, procs::rss_kib),
        db_kib: db_kib(world),
        anon_kib,
        file_kib,
        huge_kib,
    }
}

/// Sample every `every` until the load stops (and once more then); a gateway that exited is
/// a surprise, noted once.
pub async fn run(world: Arc<World>, console: Option<u32>, every: Duration) -> Vec<Sample> {
    let pid = world.daemon_pid();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut dead = false;
    loop {
        let running = !world.stopping();
        samples.push(sample(&world, started, console));
        if !dead && !world.daemon_alive().await {
            dead = true;
            world.tally.event("daemon exited");
            world
                .tally
                .surprise(format!("the gateway (pid {pid}) exited during the load"));
        }
        if !running || !world.pause(every).await {
            break;
        }
    }
    // The state at the stop, after the sleep was cut short.
    samples.push(sample(&world, started, console));
    samples
}

fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// One series judged flat or not.
#[derive(Clone, Debug, Default)]
pub struct Growth {
    /// The first sample.
    pub start: f64,
    /// Median of the second fifth.
    pub baseline: f64,
    /// Median of the last fifth.
    pub end: f64,
    /// The highest sample.
    pub max: f64,
    /// Allowed growth.
    pub bound: f64,
    /// `end - baseline <= bound`.
    pub ok: bool,
}

/// Every series judged.
#[derive(Clone, Debug, Default)]
pub struct Flat {
    /// The gateway's memory, MiB.
    pub rss_mib: Growth,
    /// The gateway's descriptors.
    pub fds: Growth,
    /// The console's memory, MiB.
    pub console_mib: Growth,
    /// The database, MiB (not judged).
    pub db_mib: Growth,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn growth(values: &[f64], window: usize, bound: impl Fn(f64) -> f64) -> Growth {
    let n = values.len();
    let baseline = median(values[window.min(n)..(2 * window).min(n)].to_vec());
    let end = median(values[n.saturating_sub(window)..].to_vec());
    let bound = bound(baseline);
    Growth {
        start: values.first().copied().unwrap_or(0.0),
        baseline,
        end,
        max: values.iter().copied().fold(0.0, f64::max),
        bound,
        ok: end - baseline <= bound,
    }
}

/// Judge the samples against the bounds of `opts`, adding the verdicts.
pub fn judge(samples: &[Sample], opts: &Opts, verdict: &mut Verdict) -> Flat {
    let window = (samples.len() / 5).max(1);
    let series = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let rss_bound = |base: f64| (base * opts.rss_growth_pct / 100.0).max(opts.rss_growth_mib);
    let flat = Flat {
        rss_mib: growth(&series(|s| s.rss_kib as f64 / 1024.0), window, rss_bound),
        fds: growth(&series(|s| s.fds as f64), window, |_| opts.fd_growth as f64),
        console_mib: growth(
            &series(|s| s.console_kib as f64 / 1024.0),
            window,
            rss_bound,
        ),
        db_mib: growth(&series(|s| s.db_kib as f64 / 1024.0), window, |_| 0.0),
    };
    let enough = samples.len() >= 5;
    verdict.add(
        "enough samples to judge (≥ 5)",
        format!("{} samples, {} per fifth", samples.len(), window),
        enough,
    );
    for (name, g, unit) in [
        ("gateway RSS flat", &flat.rss_mib, " MiB"),
        ("gateway open fds flat", &flat.fds, ""),
        ("console RSS flat", &flat.console_mib, " MiB"),
    ] {
        verdict.add(
            name,
            format!(
                "baseline {:.1}{unit} → end {:.1}{unit} ({:+.1}{unit}, bound +{:.1}{unit})",
                g.baseline,
                g.end,
                g.end - g.baseline,
                g.bound
            ),
            g.ok,
        );
    }
    flat
}

/// Every sample as CSV, for a closer look than the report's.
pub fn csv(samples: &[Sample]) -> String {
    let mut out =
        String::from("at_secs,rss_kib,fds,console_kib,db_kib,anon_kib,file_kib,huge_kib\n");
    for s in samples {
        out.push_str(&format!(
            "{:.1},{},{},{},{},{},{},{}\n",
            s.at_secs,
            s.rss_kib,
            s.fds,
            s.console_kib,
            s.db_kib,
            s.anon_kib,
            s.file_kib,
            s.huge_kib
        ));
    }
    out
}

/// About `n` samples spread evenly over the run (the first and the last included).
pub fn digest(samples: &[Sample], n: usize) -> Vec<Sample> {
    let len = samples.len();
    if len <= n {
        return samples.to_vec();
    }
    (0..n)
        .map(|i| samples[i * (len - 1) / (n - 1).max(1)])
        .collect()
}
