//! The whole run: start the mock (core 1), nginx and the gateway (core 0), measure every phase
//! `repeats` times with the same client code (core 1), then LiteLLM (core 0) the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::client::Target;
use crate::headline::Headline;
use crate::openloop::{self, Step};
use crate::procs::{self, Proc};
use crate::stats::{median, median_each, p3};
use crate::streams::{self, StreamsResult};
use crate::wrk;
use crate::{fsync, latency, servers};

/// Options of `mr-bench run`.
#[derive(Args, Clone, Debug)]
pub struct Opts {
    /// The release `modelrelay` binary, built with `--features bench-passthrough`.
    #[arg(long)]
    pub modelrelay: PathBuf,
    /// This harness binary (started again as the mock).
    #[arg(long)]
    pub harness: PathBuf,
    /// Report file.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// Scratch directory (configs, data dirs, logs).
    #[arg(long, default_value = "target/bench/work")]
    pub work: PathBuf,
    /// Every phase is repeated this many times; the report gives medians.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Requests per target per repeat in the latency phase.
    #[arg(long, default_value_t = 10_000)]
    pub latency_requests: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    pub wrk_secs: u32,
    /// Requests per second at which CPU per request is measured.
    #[arg(long, default_value_t = 5000)]
    pub cpu_rate: u32,
    /// Concurrent stream counts.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub streams: Vec<usize>,
    /// Script that starts LiteLLM: `<script> PORT BASE_URL`. Empty skips LiteLLM.
    #[arg(long, default_value = "bench/litellm/start.sh")]
    pub litellm: String,
    /// Ledger writer figure measured by `cargo bench --bench ledger` (rows/s), for the report.
    #[arg(long)]
    pub ledger_rows_per_sec: Option<f64>,
    /// Versions and machine description, for the report (pre-rendered Markdown).
    #[arg(long)]
    pub machine: Option<PathBuf>,
    /// Phases to run (all by default): latency, throughput, sweep, cpu, streams, litellm.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,throughput,sweep,cpu,streams,litellm"
    )]
    pub phases: Vec<String>,
    /// Core for the servers under test (gateway, nginx, LiteLLM).
    #[arg(long, default_value_t = 0)]
    pub server_core: u32,
    /// Core for the mock and the load generators.
    #[arg(long, default_value_t = 1)]
    pub load_core: u32,
    /// Which run this is (commit, date), for the before/after tables.
    #[arg(long, default_value = "this run")]
    pub label: String,
    /// An earlier run's headline figures (the `RESULTS.json` it wrote), shown as "before".
    #[arg(long)]
    pub before: Option<PathBuf>,
}

/// Everything measured, medians over the repeats.
#[derive(Default)]
pub struct Results {
    /// Options used.
    pub repeats: usize,
    /// Requests per target per repeat (latency).
    pub latency_requests: usize,
    /// Added p50/p99/p99.9 µs per target, non-stream.
    pub added: BTreeMap<String, [f64; 3]>,
    /// Added p50/p99/p99.9 µs per target, time to first byte of a stream.
    pub added_ttfb: BTreeMap<String, [f64; 3]>,
    /// Absolute p50/p99/p99.9 µs per target, non-stream.
    pub absolute: BTreeMap<String, [f64; 3]>,
    /// Absolute p50/p99/p99.9 µs per target, stream time to first byte.
    pub absolute_ttfb: BTreeMap<String, [f64; 3]>,
    /// wrk closed-loop RPS at 64 connections per target.
    pub rps: BTreeMap<String, f64>,
    /// wrk closed-loop RPS at 1 connection per target.
    pub rps1: BTreeMap<String, f64>,
    /// Open-loop sweeps per target (the last repeat's steps) and the highest RPS with p99 under
    /// 1 ms and 5 ms (medians).
    pub sweeps: BTreeMap<String, (Vec<Step>, f64, f64)>,
    /// CPU µs per request at a fixed rate, per server.
    pub cpu_us: BTreeMap<String, f64>,
    /// The rate used for CPU per request.
    pub cpu_rate: u32,
    /// Streams: (direct, through the gateway) per N.
    pub streams: Vec<(StreamsResult, StreamsResult)>,
    /// Ledger writer rows/s.
    pub ledger: Option<f64>,
    /// Machine and versions (Markdown).
    pub machine: String,
    /// Notes gathered on the way (failures of optional parts).
    pub notes: Vec<String>,
    /// The disk's write + fdatasync p50/p99/p99.9 µs in the gateway's data directory, over every
    /// repeat of the latency phase (see `fsync.rs`), and how many were timed.
    pub fsync: Option<([f64; 3], usize)>,
    /// This run's label (`--label`).
    pub label: String,
    /// The earlier run's headline (`--before`), when given and readable.
    pub before: Option<Headline>,
}

/// The gateway with its default durability (`store.sync = "full"`).
pub const GATEWAY: &str = "modelrelay";
/// The same binary with `store.sync = "normal"`.
pub const GATEWAY_NORMAL: &str = "modelrelay-normal";
/// The bare relay route of the full gateway (`--features bench-passthrough`).
pub const PASS: &str = "modelrelay-passthrough";
/// nginx as a plain reverse proxy.
pub const NGINX: &str = "nginx";
/// The mock, straight.
pub const DIRECT: &str = "direct";
/// LiteLLM's proxy.
pub const LITELLM: &str = "litellm";

/// Timed fsyncs per repeat of the latency phase.
const FSYNCS_PER_REPEAT: usize = 1000;

/// Run it all.
pub async fn run(o: Opts) -> anyhow::Result<Results> {
    let work = std::fs::canonicalize(".")?.join(&o.work);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut r = Results {
        repeats: o.repeats,
        latency_requests: o.latency_requests,
        ledger: o.ledger_rows_per_sec,
        label: o.label.clone(),
        ..Results::default()
    };
    if let Some(p) = &o.before {
        match Headline::load(p) {
            Ok(h) => r.before = Some(h),
            Err(e) => r
                .notes
                .push(format!("no before figures: {}: {e:#}", p.display())),
        }
    }
    if let Some(m) = &o.machine {
        r.machine = std::fs::read_to_string(m).unwrap_or_default();
    }

    let mock_addr = procs::free_port()?;
    let _mock = Proc::spawn(
        "mock",
        o.load_core,
        &[
            o.harness.display().to_string(),
            "mock".into(),
            "--listen".into(),
            mock_addr.to_string(),
        ],
        &[],
        &work.join("mock.log"),
    )?;
    procs::wait_port(mock_addr, Duration::from_secs(10)).await?;

    let nginx_addr = procs::free_port()?;
    let nginx = servers::start_nginx(&work, nginx_addr, mock_addr, o.server_core)?;
    procs::wait_port(nginx_addr, Duration::from_secs(10)).await?;

    let gw_addr = procs::free_port()?;
    let (gw, key, gw_data) =
        servers::start_gateway(&o, &work, GATEWAY, "full", gw_addr, mock_addr).await?;
    let gwn_addr = procs::free_port()?;
    let (gwn, key_normal, _) =
        servers::start_gateway(&o, &work, GATEWAY_NORMAL, "normal", gwn_addr, mock_addr).await?;

    let direct = Target {
        name: DIRECT.into(),
        addr: mock_addr,
        path: "/chat/completions".into(),
        auth: None,
    };
    let via_nginx = Target {
        name: NGINX.into(),
        addr: nginx_addr,
        path: "/chat/completions".into(),
        auth: None,
    };
    let gateway = Target {
        name: GATEWAY.into(),
        addr: gw_addr,
        path: "/v1/chat/completions".into(),
        auth: Some(format!("Bearer {key}")),
    };
    let normal = Target {
        name: GATEWAY_NORMAL.into(),
        addr: gwn_addr,
        path: "/v1/chat/completions".into(),
        auth: Some(format!("Bearer {key_normal}")),
    };
    let pass = Target {
        name: PASS.into(),
        addr: gw_addr,
        path: "/bench/passthrough/chat/completions".into(),
        auth: None,
    };
    let all = [
        direct.clone(),
        via_nginx.clone(),
        gateway.clone(),
        normal.clone(),
        pass.clone(),
    ];

    let on = |p: &str| o.phases.iter().any(|x| x == p);
    // 1. Added latency at one connection, non-stream and stream.
    if on("latency") {
        eprintln!(
            "latency: {} requests per target, {} repeats",
            o.latency_requests, o.repeats
        );
        let per_round = 500.min(o.latency_requests.max(1));
        let rounds = o.latency_requests.div_ceil(per_round);
        let mut fsyncs = Vec::new();
        for stream in [false, true] {
            let mut added: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
            let mut abs: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
            for _ in 0..o.repeats {
                let mut s =
                    latency::measure(&all, stream, 1000, rounds, per_round, false, &mut 0).await?;
                if !stream {
                    fsyncs.extend(fsync::measure(&gw_data, FSYNCS_PER_REPEAT)?);
                }
                for t in &all {
                    if let Some(a) = latency::added(&mut s, &t.name, DIRECT) {
                        added.entry(t.name.clone()).or_default().push(a);
                    }
                    if let Some(v) = s.get_mut(&t.name) {
                        abs.entry(t.name.clone()).or_default().push(p3(v));
                    }
                }
            }
            let (dst_added, dst_abs) = if stream {
                (&mut r.added_ttfb, &mut r.absolute_ttfb)
            } else {
                (&mut r.added, &mut r.absolute)
            };
            for (k, v) in added {
                dst_added.insert(k, median_each(&v));
            }
            for (k, v) in abs {
                dst_abs.insert(k, median_each(&v));
            }
        }
        if !fsyncs.is_empty() {
            r.fsync = Some((p3(&mut fsyncs), fsyncs.len()));
        }
        eprintln!("  added (non-stream): {:?}", r.added);
        eprintln!("  fsync p50/p99/p99.9 µs: {:?}", r.fsync);
    }

    // 2. Closed-loop throughput with wrk.
    if on("throughput") {
        eprintln!("throughput: wrk, 64 and 1 connections");
        for t in &all {
            for (conns, dst) in [(64, &mut r.rps), (1, &mut r.rps1)] {
                let mut v = Vec::new();
                for _ in 0..o.repeats {
                    let w = wrk::run(t, conns, o.wrk_secs, o.load_core, &work)?;
                    anyhow::ensure!(w.errors == 0, "{}: wrk saw {} errors", t.name, w.errors);
                    v.push(w.rps);
                }
                dst.insert(t.name.clone(), median(v));
            }
        }
        eprintln!("  rps@64: {:?}", r.rps);
    }

    // 3. Open-loop sweeps: highest rate with p99 under 1 ms and 5 ms.
    if on("sweep") {
        eprintln!("open-loop sweeps");
        for t in [&via_nginx, &gateway, &pass] {
            let top = r.rps.get(&t.name).copied().unwrap_or(10_000.0);
            let rates: Vec<u32> = (1..=12)
                .map(|i| (top * f64::from(i) / 10.0 / 250.0).round() as u32 * 250)
                .filter(|&x| x > 0)
                .collect();
            let (mut u1, mut u5, mut last) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..o.repeats {
                let steps = openloop::sweep(t, &rates, 1.5, 64, 20_000.0).await?;
                u1.push(f64::from(openloop::highest_under(&steps, 1000.0)));
                u5.push(f64::from(openloop::highest_under(&steps, 5000.0)));
                last = steps;
            }
            r.sweeps
                .insert(t.name.clone(), (last, median(u1), median(u5)));
        }
    }

    // 4. CPU per request at a fixed rate.
    if on("cpu") {
        let rate = o.cpu_rate;
        r.cpu_rate = rate;
        eprintln!("cpu per request at {rate}/s");
        let tck = procs::clk_tck();
        for (t, pid) in [
            (&gateway, gw.pid()),
            (&normal, gwn.pid()),
            (&pass, gw.pid()),
            (&via_nginx, nginx.pid()),
        ] {
            let mut v = Vec::new();
            for _ in 0..o.repeats {
                let before = procs::cpu_ticks(pid);
                let s = openloop::step(t, rate, 5.0, 16).await?;
                let after = procs::cpu_ticks(pid);
                let n = s.achieved * 5.0;
                v.push((after - before) as f64 / tck * 1e6 / n.max(1.0));
            }
            r.cpu_us.insert(t.name.clone(), median(v));
        }
        eprintln!("  {:?}", r.cpu_us);
    }

    // 5. Many concurrent slow streams, through the `full` gateway alone: the others, idle, are
    // stopped first, since they share its core (an idle gateway's sync thread was once seen
    // on it for 33 ms in the middle of a step, every stream's chunk waiting).
    drop(gwn);
    drop(nginx);
    let rss_idle = procs::rss_kib(gw.pid());
    for &n in o.streams.iter().filter(|_| on("streams")) {
        eprintln!("streams: {n}");
        let interval = Duration::from_millis(500);
        let chunks = streams::chunks_for(n, interval);
        // A proxied HTTP/1.1 stream holds two descriptors in the gateway; past the process's
        // limit, clients share HTTP/2 connections instead (as behind Caddy or nginx).
        let limit = procs::fd_limit(gw.pid());
        let h2 = match std::env::var("MRB_H2").ok().and_then(|v| v.parse().ok()) {
            Some(forced) => forced,
            None if 2 * n as u64 + 512 > limit => 100,
            None => 0,
        };
        let d = streams::run(&direct, n, chunks, interval, None, 0, 0).await?;
        let g = streams::run(&gateway, n, chunks, interval, Some(gw.pid()), rss_idle, h2).await?;
        eprintln!("  direct {d:?}\n  gateway {g:?}");
        r.streams.push((d, g));
        // Let the idle connections of this step close or settle before the next baseline.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(gw);

    // 6. LiteLLM, measured by the same code (fewer requests: it is ~100× slower).
    if !o.litellm.is_empty() && on("litellm") {
        match litellm(&o, &work, mock_addr, &direct, &mut r).await {
            Ok(()) => {}
            Err(e) => {
                eprintln!("litellm: {e:#}");
                r.notes
                    .push(format!("LiteLLM could not be measured: {e:#}"));
            }
        }
    }
    Ok(r)
}

async fn litellm(
    o: &Opts,
    work: &Path,
    mock_addr: std::net::SocketAddr,
    direct: &Target,
    r: &mut Results,
) -> anyhow::Result<()> {
    let addr = procs::free_port()?;
    eprintln!("litellm: starting on {addr}");
    let mut p = Proc::spawn(
        LITELLM,
        o.server_core,
        &[
            o.litellm.clone(),
            addr.port().to_string(),
            format!("http://{mock_addr}"),
        ],
        &[],
        &work.join("litellm.log"),
    )?;
    procs::wait_port(addr, Duration::from_secs(300)).await?;
    p.check_alive()?;
    let t = Target {
        name: LITELLM.into(),
        addr,
        path: "/v1/chat/completions".into(),
        auth: None,
    };
    let pair = [direct.clone(), t.clone()];
    let n = (o.latency_requests / 10).max(200);
    let mut dropped = 0;
    let per_round = 100.min(n);
    for stream in [false, true] {
        let mut added = Vec::new();
        let mut abs = Vec::new();
        for _ in 0..o.repeats {
            let mut s = latency::measure(
                &pair,
                stream,
                200,
                n.div_ceil(per_round),
                per_round,
                true,
                &mut dropped,
            )
            .await
            .context("litellm latency")?;
            if let Some(a) = latency::added(&mut s, LITELLM, DIRECT) {
                added.push(a);
            }
            if let Some(v) = s.get_mut(LITELLM) {
                abs.push(p3(v));
            }
        }
        let (da, db) = if stream {
            (&mut r.added_ttfb, &mut r.absolute_ttfb)
        } else {
            (&mut r.added, &mut r.absolute)
        };
        da.insert(LITELLM.into(), median_each(&added));
        db.insert(LITELLM.into(), median_each(&abs));
    }
    if dropped > 0 {
        r.notes.push(format!(
            "LiteLLM dropped {dropped} connection(s) mid-request in the latency phase (those \
             samples are left out)"
        ));
    }
    let mut v = Vec::new();
    let mut v1 = Vec::new();
    for _ in 0..o.repeats {
        let w = wrk::run(&t, 64, o.wrk_secs.max(5), o.load_core, work)?;
        if w.errors > 0 {
            r.notes.push(format!(
                "LiteLLM: wrk saw {} errors at 64 connections",
                w.errors
            ));
        }
        v.push(w.rps);
        v1.push(wrk::run(&t, 1, o.wrk_secs.max(5), o.load_core, work)?.rps);
    }
    r.rps.insert(LITELLM.into(), median(v));
    r.rps1.insert(LITELLM.into(), median(v1));
    let tck = procs::clk_tck();
    let before = procs::cpu_ticks(p.pid());
    let s = openloop::step(&t, 100, 5.0, 16).await?;
    let after = procs::cpu_ticks(p.pid());
    r.cpu_us.insert(
        LITELLM.into(),
        (after - before) as f64 / tck * 1e6 / (s.achieved * 5.0).max(1.0),
    );
    Ok(())
}
