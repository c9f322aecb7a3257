//! The `modelrelay` binary: parse the command line and dispatch.

use clap::Parser;

fn main() -> std::process::ExitCode {
    modelrelay::cli::run(modelrelay::cli::Cli::parse())
}
