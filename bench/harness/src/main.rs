//! `mr-bench`: the benchmark harness for modelrelay.
//!
//! `mr-bench mock` serves an instant DeepSeek-shaped upstream; `mr-bench run` starts the mock,
//! nginx, the gateway and LiteLLM pinned to cores, measures them with the same client code, and
//! writes `bench/RESULTS.md`. `bench/run.sh` is the one command that builds and runs it all.
//! `mr-bench soak` (through `bench/soak.sh`) runs a long mixed load with faults and checks for
//! leaks and broken books, writing the `## Soak` section of the same file.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod fsync;
mod headline;
mod latency;
mod mock;
mod openloop;
mod procs;
mod report;
mod run;
mod servers;
mod soak;
mod stats;
mod streams;
mod targets;
mod wrk;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mr-bench", about = "modelrelay benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the instant mock upstream.
    Mock {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Run the whole benchmark and write the report.
    Run(Box<run::Opts>),
    /// Run the soak (long mixed load with faults) and write its section of the report.
    Soak(Box<soak::Opts>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Mock { listen } => {
            // The mock shares its core with the load generator: one thread is all it gets.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(mock::serve(listen))
        }
        Cmd::Run(opts) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out: PathBuf = opts.out.clone();
            let results = rt.block_on(run::run(*opts))?;
            // The soak's section is written by another command: keep it.
            let old = std::fs::read_to_string(&out).unwrap_or_default();
            let new = soak::report::carry_over(&old, &report::render(&results));
            std::fs::write(&out, new)?;
            // The headline figures, for a later run's `--before`.
            let json = out.with_extension("json");
            let headline = headline::Headline::of(&results);
            std::fs::write(&json, serde_json::to_string_pretty(&headline)?)?;
            println!("wrote {} and {}", out.display(), json.display());
            Ok(())
        }
        Cmd::Soak(opts) => {
            // The simulators, the load and the checks share two threads; the gateway under
            // test is another process.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            if rt.block_on(soak::run(*opts))? {
                Ok(())
            } else {
                // The report is written; the exit status says it failed.
                std::process::exit(1)
            }
        }
    }
}
