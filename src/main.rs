//! The `modelrelay` binary: parse the command line and dispatch.

use clap::Parser;

/// mimalloc rather than glibc's malloc: allocation and freeing took ~14 % of the gateway's
/// samples under load, across threads that each allocate and free per request
/// (bench/PROFILE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process. mimalloc's arenas are 2 MiB-aligned and it
    // advises huge pages on them, so a touched 8 KiB connection buffer could make a whole
    // 2 MiB page resident, and khugepaged collapsed more of them later: with huge pages,
    // 1 000 open streams cost ~78 KiB of RSS each instead of ~50, and a 30-minute soak's
    // resident size stepped up by ~20 MiB at minute 22 with no change in load
    // (bench/PROFILE.md). The daemon's memory is many small buffers, not a large heap that
    // huge pages would speed up. Failing (an old kernel) only leaves the system's default.
    let _ = nix::sys::prctl::set_thp_disable(true);
    match modelrelay::cli::Cli::try_parse() {
        Ok(cli) => modelrelay::cli::run(cli),
        Err(e) => modelrelay::cli::command_line_error(&e),
    }
}
