//! `mr-bench soak`: a long run of mixed load against the release gateway, looking for leaks and
//! broken books rather than speed.
//!
//! The harness plays everything around the gateway in its own process: the simulated DeepSeek
//! (two accounts) and the simulated PayPal from the modelrelay library, the customers' tools
//! (OpenAI and Anthropic requests, streams and not, some abandoned), the buyers (purchases and
//! top-ups with repeated captures and webhooks), the operator (`modelrelay keys …`, `upstream …`,
//! `backup` now and then, and `modelrelay console` attached in tmux the whole time) and the
//! upstream's bad days (faults in single requests, and whole accounts failing for a while).
//! The gateway itself is `modelrelay serve` in a process of its own, so its resident memory and
//! open descriptors can be sampled from `/proc`.
//!
//! At the end the load stops and drains, and the run checks what must hold after any amount of
//! traffic: memory and descriptors flat after the warm-up, every key's spend equal to the sum of
//! its ledger rows (in memory and on disk), no negative balance, nothing held, one key per paid
//! order and one budget increase per paid top-up, no 5xx but the documented upstream ones, the
//! daemon never restarted and exiting 0 on SIGTERM, the console still drawing. The figures go to
//! the `## Soak` section of `bench/RESULTS.md`; any failed check makes the exit status 1.

mod chaos;
mod checks;
mod console;
mod daemon;
mod keys;
mod outcome;
pub mod report;
mod sampler;
mod shop;
mod tally;
mod traffic;
mod verdict;
mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, watch};

use self::verdict::Verdict;
use self::world::World;

/// `mr-bench soak` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The release `modelrelay` binary.
    #[arg(long)]
    pub modelrelay: PathBuf,
    /// How long the load runs, in minutes.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Requests per second to the API, all kinds together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Tasks sending the API load (the rate is split between them).
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Seconds between two samples of the gateway's memory and descriptors.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Allowed resident-memory growth after the warm-up, in percent of the baseline…
    #[arg(long, default_value_t = 10.0)]
    pub rss_growth_pct: f64,
    /// …or in MiB, whichever is larger.
    #[arg(long, default_value_t = 8.0)]
    pub rss_growth_mib: f64,
    /// Allowed growth of the open descriptors after the warm-up.
    #[arg(long, default_value_t = 20)]
    pub fd_growth: i64,
    /// Where the run keeps its data dir, config, logs and tmux socket (emptied first).
    #[arg(long, default_value = "target/bench/soak")]
    pub work: PathBuf,
    /// The report whose `## Soak` section is written (the rest is kept).
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// What was measured, for the report (e.g. `abc1234 (with local changes)`).
    #[arg(long, default_value = "unknown")]
    pub commit: String,
    /// Seed of the load's choices (timing still varies from run to run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Most requests in flight at once; a tick that finds none free is counted and skipped, so a
/// gateway that slows down shows up in the report instead of piling up tasks.
const MAX_IN_FLIGHT: usize = 400;

/// Run the soak; `Ok(true)` when every check passed.
pub async fn run(opts: Opts) -> anyhow::Result<bool> {
    let duration = Duration::from_secs_f64(opts.minutes.max(0.1) * 60.0);
    let (stop_tx, stop) = watch::channel(false);
    let world = Arc::new(World::start(&opts, stop).await?);
    eprintln!(
        "soak: gateway pid {} on {}, {} min at {}/s; work dir {}",
        world.daemon_pid(),
        world.base,
        opts.minutes,
        opts.rate,
        opts.work.display()
    );
    world.setup_keys().await?;
    let console = console::Console::start(&world).await?;

    let sampler = tokio::spawn(sampler::run(
        world.clone(),
        console.pid(),
        Duration::from_secs(opts.sample_secs.max(1)),
    ));
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = Vec::new();
    let clients = opts.clients.max(1);
    for c in 0..clients {
        let rate = opts.rate / f64::from(clients);
        tasks.push(tokio::spawn(traffic::client(
            world.clone(),
            rate,
            opts.seed.wrapping_mul(1000).wrapping_add(u64::from(c)),
            permits.clone(),
        )));
    }
    tasks.push(tokio::spawn(traffic::limited_key(world.clone())));
    tasks.push(tokio::spawn(chaos::account_faults(
        world.clone(),
        opts.seed,
    )));
    tasks.push(tokio::spawn(chaos::operator(world.clone(), opts.seed)));
    tasks.push(tokio::spawn(shop::buyers(world.clone(), opts.seed)));

    progress(&world, started, duration).await;

    // Stop the load, then let every request in flight finish (streams stall at most the
    // upstream idle timeout; a hung one is a finding, reported after the bound).
    stop_tx.send_replace(true);
    for t in tasks {
        t.await.context("a load task panicked")?;
    }
    let drained = tokio::time::timeout(
        Duration::from_secs(60),
        permits.acquire_many(MAX_IN_FLIGHT as u32),
    )
    .await;
    if drained.is_err() {
        world
            .tally
            .surprise("requests still in flight 60 s after the load stopped".into());
    }
    world.clear_faults();
    let load_secs = started.elapsed().as_secs_f64();
    let samples = sampler.await.context("the sampler panicked")?;

    let mut verdict = Verdict::default();
    console.check(&world, &mut verdict).await;
    let memory = checks::settle_and_check(&world, &mut verdict).await?;
    let exit = world.stop_daemon().await;
    checks::after_exit(&world, exit, &memory, &mut verdict)?;
    let flat = sampler::judge(&samples, &opts, &mut verdict);
    std::fs::write(opts.work.join("samples.csv"), sampler::csv(&samples))?;
    console.stop().await;

    let section = report::render(&report::Inputs {
        opts: &opts,
        load_secs,
        world: &world,
        samples: &samples,
        flat: &flat,
        verdict: &verdict,
    });
    report::splice(&opts.out, &section)?;
    eprintln!("{}", verdict.summary());
    eprintln!("soak: wrote the ## Soak section of {}", opts.out.display());
    Ok(verdict.passed())
}

/// Wait out the run, with a line a minute on stderr so a long run shows it is alive.
async fn progress(world: &World, started: Instant, duration: Duration) {
    let mut next = Duration::from_secs(60);
    while started.elapsed() < duration {
        let left = duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if started.elapsed() >= next {
            next += Duration::from_secs(60);
            let t = world.tally.totals();
            eprintln!(
                "soak: {:>4.0} s  {} requests, {} surprises, {} purchases, {} top-ups",
                started.elapsed().as_secs_f64(),
                t.requests,
                t.surprises,
                world.tally.event_count("purchase"),
                world.tally.event_count("top-up"),
            );
        }
    }
}
