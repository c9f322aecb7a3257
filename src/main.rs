//! The `modelrelay` binary: parse the command line and dispatch.

use clap::Parser;

/// mimalloc rather than glibc's malloc: allocation and freeing took ~14 % of the gateway's
/// samples under load, across threads that each allocate and free per request
/// (bench/PROFILE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    modelrelay::cli::run(modelrelay::cli::Cli::parse())
}
