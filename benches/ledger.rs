//! Ledger writer throughput: how many settled requests per second the single store writer
//! commits.
//!
//! Each settled request is one `Write::Usage` — the ledger row plus the paying key's
//! spent/requests/last_used update, in the writer's transaction — shaped as
//! `gateway::billing::settle` builds it. `--concurrency` tasks each play a stream of
//! requests one after another: submit the row, await its commit (as `settle` does before the
//! response's last byte), next. Every repeat uses a fresh database in a temp dir with
//! `--keys` keys minted as the admin path mints them, and is checked afterwards: exactly N
//! ledger rows, and every key's `spent_nanos`/`requests` equal to the sum of its rows.
//!
//! Rows are generated before the clock starts, so the figure is the writer's (queue, SQLite,
//! fsync, acknowledgements), not the random number generator's.
//!
//! The default `--concurrency` (8192, twice the writer's 4096-write batch cap) keeps the queue
//! deep enough that every batch is full, which is the writer's sustained capacity: at 50,000
//! settlements a second, with requests that last seconds, far more than 8192 are in flight and
//! everything that settles during one commit is queued for the next. With fewer tasks each
//! batch holds at most that many writes and the figure is that concurrency's, not the
//! writer's limit.
//!
//! ```text
//! cargo bench --bench ledger -- [--rows N] [--repeats K] [--keys K] [--concurrency C]
//! ```
//!
//! The last line is `LEDGER_ROWS_PER_SEC=<median>`.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports on stdout; harness = false targets are not cfg(test)"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use modelrelay::config::Config;
use modelrelay::keys::seal::Sealer;
use modelrelay::keys::token::{display_prefix, generate_key, generate_key_id, hash_key};
use modelrelay::keys::{KeyRecord, KeyStatus};
use modelrelay::money::{Usd, cost_of};
use modelrelay::pricing::{ModelPrices, PricePeriod};
use modelrelay::store::{Finish, Measured, Store, UsageRow, Write};

struct Args {
    rows: usize,
    repeats: usize,
    keys: usize,
    concurrency: usize,
    /// Run by `cargo test` rather than `cargo bench`.
    quick: bool,
}

/// `cargo bench` passes `--bench`; without it (`cargo test --all-targets` runs every bench
/// target too, passing only its name filter and whatever follows `--`) the defaults shrink to
/// a quick check of the same path and unknown arguments are ignored. Explicit flags apply in
/// both cases.
fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = !argv.iter().any(|a| a == "--bench");
    let mut a = if quick {
        Args {
            rows: 2_000,
            repeats: 1,
            keys: 8,
            concurrency: 256,
            quick,
        }
    } else {
        Args {
            rows: 200_000,
            repeats: 5,
            keys: 64,
            concurrency: 8192,
            quick,
        }
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            let n: usize = v
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name} {v:?} is not a count"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match flag.as_str() {
            "--rows" => a.rows = value("--rows")?,
            "--repeats" => a.repeats = value("--repeats")?,
            "--keys" => a.keys = value("--keys")?,
            "--concurrency" => a.concurrency = value("--concurrency")?,
            "--bench" => {}
            _ if quick => {}
            other => bail!(
                "unknown argument {other:?} (use --rows N --repeats K --keys K --concurrency C)"
            ),
        }
    }
    Ok(a)
}

/// A key as `AppState::prepare_key` mints it: random key and id, sealed copy, SHA-256, prefix.
fn mint_key(sealer: &Sealer, plan: &str, budget: Usd) -> Result<KeyRecord> {
    let key = generate_key()?;
    let id = generate_key_id()?;
    let sealed = sealer.seal(&id, &key)?;
    Ok(KeyRecord {
        id,
        hash: hash_key(&key),
        sealed,
        prefix: display_prefix(&key),
        plan: plan.into(),
        status: KeyStatus::Active,
        budget,
        spent: Usd::ZERO,
        requests: 0,
        email: Some("buyer@example.com".into()),
        note: None,
        order_id: None,
        created_at: Utc::now(),
        last_used_at: None,
    })
}

/// A request id exactly as the gateway's middleware makes them (time-ordered).
fn request_id(_rng: &mut StdRng) -> String {
    modelrelay::state::new_request_id()
}

/// One settled request, every column filled as `billing::settle` fills it.
fn settled_row(
    rng: &mut StdRng,
    key_id: &str,
    models: &[(String, ModelPrices)],
    now_ms: i64,
) -> UsageRow {
    // Mostly the cheap model.
    let (model, prices) = &models[usize::from(rng.random_bool(0.2))];
    let period = if rng.random_bool(0.35) {
        PricePeriod::Peak
    } else {
        PricePeriod::OffPeak
    };
    let stream = rng.random_bool(0.7);
    let prompt: u64 = rng.random_range(20..30_000);
    let hit = if rng.random_bool(0.6) {
        prompt * rng.random_range(0..95) / 100
    } else {
        0
    };
    let completion: u64 = rng.random_range(1..4_000);
    let reasoning = if rng.random_bool(0.3) {
        completion * rng.random_range(10..80) / 100
    } else {
        0
    };
    let (measured, finish, status) = match rng.random_range(0..100) {
        0..=93 => (Measured::Provider, Finish::Complete, 200),
        94..=96 => (Measured::Estimated, Finish::ClientAbort, 499),
        97 => (Measured::Estimated, Finish::UpstreamError, 200),
        98 => (Measured::Estimated, Finish::UpstreamTimeout, 504),
        _ => (Measured::Provider, Finish::Rejected, 400),
    };
    let cost = cost_of(hit, prompt - hit, completion, prices.get(period));
    let latency_ms: u64 = rng.random_range(150..90_000);
    UsageRow {
        request_id: request_id(rng),
        key_id: key_id.to_string(),
        model: model.clone(),
        stream,
        period,
        prompt_tokens: prompt,
        cache_hit_tokens: hit,
        cache_miss_tokens: prompt - hit,
        completion_tokens: completion,
        reasoning_tokens: reasoning,
        cost,
        measured,
        status,
        finish,
        latency_ms,
        ttft_ms: stream.then(|| rng.random_range(80..latency_ms.clamp(81, 5_000))),
        created_at_ms: now_ms - i64::try_from(latency_ms).unwrap_or(0),
        api: modelrelay::status::Api::OpenAi,
        account: String::new(),
    }
}

struct RunResult {
    rows_per_sec: f64,
    secs: f64,
}

async fn run_once(args: &Args, seed: u64, dir: &Path) -> Result<RunResult> {
    let path = dir.join("modelrelay.db");
    let (store, existing) = Store::open(&path).await?;
    if !existing.is_empty() {
        bail!("fresh database already has {} keys", existing.len());
    }
    let store = Arc::new(store);

    // Keys, committed one by one as the admin socket does (`create_key`).
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let sealer = Sealer::from_secret(&secret);
    let mut key_ids = Vec::with_capacity(args.keys);
    for _ in 0..args.keys {
        let k = mint_key(&sealer, "standard", Usd::from_dollars(20))?;
        key_ids.push(k.id.clone());
        store.write(Write::InsertKey(Box::new(k))).await?;
    }

    // The requests, dealt round-robin to the concurrent tasks.
    let config = Config::default();
    let models: Vec<(String, ModelPrices)> = ["deepseek-v4-flash", "deepseek-v4-pro"]
        .iter()
        .map(|m| {
            let mc = config
                .models
                .get(*m)
                .with_context(|| format!("default config lacks {m}"))?;
            Ok((
                m.to_string(),
                ModelPrices::new(mc.input_cache_hit, mc.input_cache_miss, mc.output),
            ))
        })
        .collect::<Result<_>>()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let now_ms = Utc::now().timestamp_millis();
    let tasks = args.concurrency.min(args.rows);
    let mut per_task: Vec<Vec<UsageRow>> = (0..tasks)
        .map(|_| Vec::with_capacity(args.rows / tasks + 1))
        .collect();
    let mut expected: HashMap<String, (i64, i64)> = HashMap::new();
    for i in 0..args.rows {
        let key_id = &key_ids[rng.random_range(0..key_ids.len())];
        let row = settled_row(&mut rng, key_id, &models, now_ms + (i / 64) as i64);
        let e = expected.entry(row.key_id.clone()).or_default();
        e.0 += row.cost.nanos();
        e.1 += 1;
        per_task[i % tasks].push(row);
    }

    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for rows in per_task {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut failed = 0usize;
            for row in rows {
                if store.submit(Write::Usage(Box::new(row))).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for h in handles {
        failed += h.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    drop(store);
    if failed > 0 {
        bail!("{failed} of {} writes were refused", args.rows);
    }

    verify(&path, args.rows, &expected)?;
    Ok(RunResult {
        rows_per_sec: args.rows as f64 / secs,
        secs,
    })
}

/// Check the database from a connection of its own: N rows, and each key's counters equal to
/// the sum of what was submitted for it.
fn verify(path: &Path, rows: usize, expected: &HashMap<String, (i64, i64)>) -> Result<()> {
    let c = rusqlite::Connection::open(path)?;
    let (n, ledger_sum): (i64, i64) = c.query_row(
        "SELECT count(*), coalesce(sum(cost_nanos), 0) FROM usage",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (spent_sum, requests_sum): (i64, i64) = c.query_row(
        "SELECT coalesce(sum(spent_nanos), 0), coalesce(sum(requests), 0) FROM keys",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let want_sum: i64 = expected.values().map(|e| e.0).sum();
    let mut errors = Vec::new();
    if usize::try_from(n).ok() != Some(rows) {
        errors.push(format!("usage has {n} rows, {rows} were submitted"));
    }
    if ledger_sum != want_sum {
        errors.push(format!(
            "usage cost sum {ledger_sum} != submitted {want_sum}"
        ));
    }
    if spent_sum != want_sum {
        errors.push(format!(
            "keys.spent_nanos sum {spent_sum} != submitted {want_sum}"
        ));
    }
    if usize::try_from(requests_sum).ok() != Some(rows) {
        errors.push(format!("keys.requests sum {requests_sum} != {rows}"));
    }
    let mut stmt = c.prepare(
        "SELECT k.id, k.spent_nanos, k.requests,
                (SELECT coalesce(sum(cost_nanos), 0) FROM usage u WHERE u.key_id = k.id)
         FROM keys k",
    )?;
    let per_key = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for k in per_key {
        let (id, spent, requests, ledger) = k?;
        let (want_spent, want_requests) = expected.get(&id).copied().unwrap_or_default();
        if spent != want_spent || requests != want_requests || ledger != want_spent {
            errors.push(format!(
                "key {id}: spent {spent}, requests {requests}, ledger {ledger}; \
                 submitted {want_spent} over {want_requests}"
            ));
        }
    }
    if !errors.is_empty() {
        bail!("ledger check failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// `; load average 1.23` on Linux: on a small machine other work skews the figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .map(|l| format!("; load average {l}"))
        })
        .unwrap_or_default()
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    println!(
        "ledger writer{}: {} rows x {} repeats, {} keys, {} concurrent tasks, fresh database per repeat",
        if args.quick {
            " (quick check: run without --bench)"
        } else {
            ""
        },
        args.rows,
        args.repeats,
        args.keys,
        args.concurrency
    );
    let mut rates = Vec::with_capacity(args.repeats);
    for r in 0..args.repeats {
        let dir = tempfile::tempdir()?;
        let res = run_once(&args, 0x1ed9e5 + r as u64, dir.path())
            .await
            .with_context(|| format!("repeat {}", r + 1))?;
        println!(
            "repeat {}: {} rows in {:.3} s = {:.0} rows/s (verified){}",
            r + 1,
            args.rows,
            res.secs,
            res.rows_per_sec,
            load_average()
        );
        rates.push(res.rows_per_sec);
    }
    let med = median(&rates);
    println!("median: {med:.0} rows/s");
    println!("LEDGER_ROWS_PER_SEC={med:.0}");
    Ok(())
}
