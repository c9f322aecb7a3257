//! `modelrelay serve`: bind, start the daemon, tell systemd it is ready, and on a signal drain
//! what is in flight (a second signal cuts it). `--demo` puts a simulated DeepSeek (two
//! accounts) and a simulated PayPal behind it.

use std::process::ExitCode;

use super::out::fail;
use crate::app::Daemon;
use crate::config::{AccountConfig, Config};
use crate::paypal::simulated::{SimPaypalOptions, SimulatedPaypal};
use crate::upstream::simulated::{SimOptions, SimulatedDeepSeek};

/// The threads the ledger lives on: its writer (commits), the journal's sync (`full`'s
/// answers wait on it) and the periodic sync (`normal`).
const LEDGER_THREADS: [&str; 3] = ["ledger-writer", "ledger-fsync", "ledger-sync"];

/// Exit code of a daemon stopped because a ledger thread died (`EX_SOFTWARE`).
const LEDGER_DIED: i32 = 70;

/// A panic on a ledger thread ends the process, as a `kill -9` would: left running, the
/// daemon went on serving answers it could no longer bill (found by an independent check,
/// whose panic came from a log that could not be written). Every row a client has is in the
/// journal, which the next start replays; systemd starts it again (`Restart=on-failure`).
fn exit_when_a_ledger_thread_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let thread = std::thread::current();
        if let Some(name) = thread.name().filter(|n| LEDGER_THREADS.contains(n)) {
            tracing::error!(
                thread = name,
                "a ledger thread stopped: no answer could be billed; exiting, so that the service \
                 starts again and replays the ledger's journal"
            );
            std::process::exit(LEDGER_DIED);
        }
    }));
}

/// `serve [--demo]`: run the daemon until SIGTERM/SIGINT, then drain.
pub(super) async fn serve(mut config: Config, demo: bool) -> ExitCode {
    exit_when_a_ledger_thread_panics();
    let _sim = if demo {
        let sim = match SimulatedDeepSeek::start(SimOptions::demo()).await {
            Ok(s) => s,
            Err(e) => return fail(format_args!("cannot start the simulated DeepSeek: {e}")),
        };
        demo_accounts(&mut config, &sim);
        let pp_opts = SimPaypalOptions::default();
        let paypal = match SimulatedPaypal::start(pp_opts.clone()).await {
            Ok(p) => p,
            Err(e) => return fail(format_args!("cannot start the simulated PayPal: {e}")),
        };
        config.paypal.api_base = paypal.base_url();
        // The simulator is a sandbox whatever the config says: no warning about live payments
        // over plain HTTP, and the demo's orders are always its own PayPal's.
        config.paypal.env = crate::config::PaypalEnv::Sandbox;
        config.paypal.client_id = pp_opts.client_id;
        config.paypal.client_secret = pp_opts.client_secret;
        config.paypal.webhook_id = pp_opts.webhook_id;
        tracing::warn!(
            upstream = %sim.base_url(),
            paypal = %paypal.base_url(),
            "DEMO MODE: answers come from a simulated DeepSeek and payments from a simulated PayPal"
        );
        Some((sim, paypal))
    } else {
        if config.upstream_key_missing() {
            // Refused rather than started: every request would fail upstream, and the
            // storefront would sell keys that cannot work.
            return fail(format_args!(
                "{}: every request would fail upstream (or try `modelrelay serve --demo`)",
                config.missing_key_text()
            ));
        }
        None
    };
    // What `check-config` warns about, in the log too (the operator of a service reads the
    // journal, not a check they may never have run) — the demo's included: its pages name
    // `server.public_url` too, and a demo moved to another port showed customers
    // `http://127.0.0.1:8080` without a word (found by a newcomer following README).
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    let listener = match tokio::net::TcpListener::bind(&config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            // The same config started twice: the port is taken by the daemon that holds the
            // data directory, which is what the operator needs to hear.
            if e.kind() == std::io::ErrorKind::AddrInUse
                && crate::state::data_dir_in_use(&config.server.data_dir)
            {
                return fail(crate::state::StartError::DataDirBusy(
                    config.server.data_dir.display().to_string(),
                ));
            }
            return fail(format_args!(
                "cannot listen on {}: {e}",
                config.server.listen
            ));
        }
    };
    // Listen for signals before the daemon starts (and logs "modelrelay started"), so none is
    // missed and a SIGTERM that comes early still drains and exits 0.
    let mut signals = Signals::new();
    let daemon = match Daemon::start_with(config, listener, demo).await {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    crate::notify::ready();
    signals.recv().await;
    let drain = std::time::Duration::from_secs(daemon.state.config.server.drain_secs);
    tracing::info!(
        drain_secs = drain.as_secs(),
        in_flight = daemon.state.in_flight.get(),
        "shutting down: letting requests in flight finish (a second signal cuts them at once)"
    );
    crate::notify::stopping();
    let cut = daemon.state.cut.clone();
    let stopping = daemon.shutdown_within(drain);
    tokio::pin!(stopping);
    let lost = tokio::select! {
        lost = &mut stopping => lost,
        () = signals.recv() => {
            tracing::warn!("second signal: cutting requests in flight now (they are billed)");
            cut.cancel();
            stopping.await
        }
    };
    // Bills were lost (the database could not take them, nor the journal: a full disk): not
    // a clean stop, for systemd and whoever reads its status.
    if lost > 0 {
        tracing::error!(
            lost,
            "stopped with ledger rows lost (each is logged above as LEDGER ROW LOST)"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Demo mode's pool: two accounts on the simulated DeepSeek, each with its own key and
/// balance, so the console's Upstream view and `upstream status` have something to show.
fn demo_accounts(config: &mut Config, sim: &SimulatedDeepSeek) {
    let names = ["primary", "secondary"];
    config.upstream.base_url = sim.base_url();
    config.upstream.api_key.clear();
    config.upstream.api_key_file = None;
    config.upstream.accounts = sim
        .account_keys()
        .into_iter()
        .zip(names)
        .map(|(api_key, name)| AccountConfig {
            name: name.into(),
            api_key,
            api_key_file: None,
            base_url: String::new(),
            weight: 1,
            max_in_flight: Default::default(),
        })
        .collect();
}

/// SIGTERM and SIGINT (Ctrl-C), either one. SIGHUP is caught too, and only logged: its default
/// action killed the daemon at once (a foreground daemon whose SSH session dropped, an
/// operator expecting a reload), with no drain and no ledger rows for the requests in flight.
/// There is no reload; a restart reads the configuration.
struct Signals {
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let unix = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::warn!(
                            "SIGHUP ignored: modelrelay has no reload; restart it to read its \
                             configuration (SIGTERM stops it after draining)"
                        );
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP"),
        }
        Signals { unix }
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        match &mut self.unix {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
