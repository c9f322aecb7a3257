//! Everything the soak's tasks share: the two simulators (in this process), the gateway (a
//! child process) and how to reach it, the keys, the counters, and the stop signal.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use modelrelay::activity::client;
use modelrelay::activity::protocol::{KeyView, Request, Response};
use modelrelay::money::Usd;
use modelrelay::paypal::simulated::{SimPaypalOptions, SimulatedPaypal};
use modelrelay::upstream::simulated::{SimAccount, SimOptions, SimulatedDeepSeek};
use tokio::process::Child;
use tokio::sync::{Mutex, watch};

use super::Opts;
use super::daemon::{self, ACCOUNTS, Paths, TRIAL_BUDGET};
use super::keys::{KeyPool, Tier};
use super::shop::OrderRec;
use super::tally::Tally;
use crate::procs;

/// Keys made at the start: how many, on which plan, with what budget, for what.
const START_KEYS: [(usize, &str, &str, Tier); 3] = [
    (4, "pro", "1000", Tier::Big),
    (3, "trial", TRIAL_BUDGET, Tier::Small),
    (1, "starter", "100", Tier::Limited),
];

/// The shared state of a run.
pub struct World {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub base: String,
    /// The customers' HTTP client (no proxy from the environment: everything is loopback).
    pub http: reqwest::Client,
    /// The release binary.
    pub bin: PathBuf,
    /// Config, data dir, socket, log.
    pub paths: Paths,
    /// The simulated DeepSeek, both accounts.
    pub sim: SimulatedDeepSeek,
    /// The simulated PayPal.
    pub paypal: SimulatedPaypal,
    /// The keys.
    pub keys: KeyPool,
    /// The counters.
    pub tally: Tally,
    /// Turns true when the load must stop.
    pub stop: watch::Receiver<bool>,
    orders: std::sync::Mutex<Vec<OrderRec>>,
    daemon: Mutex<Option<Child>>,
    pid: u32,
}

impl World {
    /// Start both simulators and the gateway, and wait until it listens.
    pub async fn start(opts: &Opts, stop: watch::Receiver<bool>) -> anyhow::Result<World> {
        let paths = Paths::prepare(&opts.work)?;
        let sim = SimulatedDeepSeek::start(SimOptions {
            api_key: ACCOUNTS[0].1.to_owned(),
            accounts: vec![SimAccount::new(ACCOUNTS[1].1)],
            ..SimOptions::default()
        })
        .await
        .context("start the simulated DeepSeek")?;
        let paypal = SimulatedPaypal::start(SimPaypalOptions::default())
            .await
            .context("start the simulated PayPal")?;
        let addr = procs::free_port()?;
        let toml = daemon::config(
            &paths,
            &addr.to_string(),
            &sim.base_url(),
            &paypal.base_url(),
        );
        std::fs::write(&paths.config, toml)?;
        let bin = opts
            .modelrelay
            .canonicalize()
            .with_context(|| format!("the modelrelay binary {}", opts.modelrelay.display()))?;
        let child = daemon::spawn(&bin, &paths)?;
        let pid = child.id().context("the daemon exited at once")?;
        if let Err(e) = procs::wait_port(addr, Duration::from_secs(60)).await {
            let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
            bail!("{e}; the daemon's log:\n{log}");
        }
        // The HTTP port answers before the admin socket listens: the first admin call waits
        // for it too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !matches!(
            client::call(&paths.socket, &Request::KeysList).await,
            Ok(Response::Keys { .. })
        ) {
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
                bail!("the admin socket did not answer within 60 s; the daemon's log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("HTTP client")?;
        Ok(World {
            base: format!("http://{addr}"),
            http,
            bin,
            paths,
            sim,
            paypal,
            keys: KeyPool::default(),
            tally: Tally::default(),
            stop,
            orders: std::sync::Mutex::default(),
            daemon: Mutex::new(Some(child)),
            pid,
        })
    }

    /// The gateway's pid (the one sampled; it must never change).
    pub fn daemon_pid(&self) -> u32 {
        self.pid
    }

    /// Whether the load should stop.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep `d`, or less if the load stops meanwhile; false when it stopped.
    pub async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// One admin socket call; the daemon's own refusal is an error too.
    pub async fn admin(&self, req: &Request) -> anyhow::Result<Response> {
        let resp = client::call(&self.paths.socket, req)
            .await
            .with_context(|| format!("admin socket: {req:?}"))?;
        if let Response::Error { message } = &resp {
            bail!("admin socket refused {req:?}: {message}");
        }
        Ok(resp)
    }

    /// `keys show` over the socket: the key as the daemon holds it in memory.
    pub async fn key_view(&self, key: &str) -> anyhow::Result<KeyView> {
        match self.admin(&Request::KeysShow { key: key.into() }).await? {
            Response::Key { key } => Ok(key),
            other => bail!("keys_show answered {other:?}"),
        }
    }

    /// Every key in memory.
    pub async fn key_views(&self) -> anyhow::Result<Vec<KeyView>> {
        match self.admin(&Request::KeysList).await? {
            Response::Keys { keys } => Ok(keys),
            other => bail!("keys_list answered {other:?}"),
        }
    }

    /// The keys the load starts with, made over the admin socket.
    pub async fn setup_keys(&self) -> anyhow::Result<()> {
        for (n, plan, budget, tier) in START_KEYS {
            let budget: Usd = budget.parse().context("budget")?;
            for _ in 0..n {
                let req = Request::KeysCreate {
                    plan: plan.into(),
                    email: Some("soak@example.com".into()),
                    budget_usd: Some(budget),
                    note: Some("soak".into()),
                };
                match self.admin(&req).await? {
                    Response::Created { key, api_key } => {
                        self.keys.add(key.id, api_key, tier, key.budget_usd.nanos());
                    }
                    other => bail!("keys_create answered {other:?}"),
                }
            }
        }
        Ok(())
    }

    /// An order the soak paid for.
    pub fn remember_order(&self, o: OrderRec) {
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o);
    }

    /// Every order the soak paid for.
    pub fn orders(&self) -> Vec<OrderRec> {
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lift every account fault (before the final checks).
    pub fn clear_faults(&self) {
        for (_, key) in ACCOUNTS {
            self.sim.set_fault(key, None);
        }
    }

    /// Whether the gateway process is still the one started (not exited).
    pub async fn daemon_alive(&self) -> bool {
        let mut d = self.daemon.lock().await;
        match d.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM the gateway and wait for it; its exit status.
    pub async fn stop_daemon(&self) -> anyhow::Result<ExitStatus> {
        let mut d = self.daemon.lock().await;
        let child = d.as_mut().context("the daemon was already stopped")?;
        let status = daemon::terminate(child).await;
        *d = None;
        status
    }

    /// `modelrelay ARGS` against the daemon.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        daemon::cli(&self.bin, &self.paths, args).await
    }
}
