//! Build script: the commit a binary was built from, for `--version` and the start-up log, so an
//! operator can tell which build runs and whether an install was a downgrade (every build said
//! `0.1.0`; found by an independent check). Outside a git checkout (a source tarball) it is
//! `unknown`; with uncommitted changes it is marked `-modified`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let modified =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if modified { "-modified" } else { "" };
    // Not `MODELRELAY_…`: cargo also sets it when it runs tests, and the daemon reads every
    // `MODELRELAY_` variable as configuration.
    println!("cargo:rustc-env=RELAY_BUILD_COMMIT={commit}{suffix}");
    // Built again when HEAD moves (a commit, a checkout) or the index changes.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
