//! `modelrelay console` attached for the whole run: in a detached tmux session (120×36, its own
//! tmux server socket in the work dir) on the daemon's admin socket, following every event of
//! the load. At the end its pane must still be alive and drawing: the header with "● live",
//! and the Keys view counting exactly the keys the daemon holds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use super::verdict::Verdict;
use super::world::World;

const SESSION: &str = "soak-console";

/// The console's own pid: the pane's process, or its child when tmux's shell did not `exec`.
fn console_of(pane: u32) -> u32 {
    let comm = std::fs::read_to_string(format!("/proc/{pane}/comm")).unwrap_or_default();
    if comm.trim() == "modelrelay" {
        return pane;
    }
    std::fs::read_to_string(format!("/proc/{pane}/task/{pane}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(pane)
}

/// The tmux session running the console.
pub struct Console {
    socket: std::path::PathBuf,
    pid: Option<u32>,
}

impl Console {
    /// Start the console and wait until it is live.
    pub async fn start(world: &World) -> anyhow::Result<Console> {
        let socket = world.paths.work.join("tmux.sock");
        let line = format!(
            "{} console --socket {}",
            world.bin.display(),
            world.paths.socket.display()
        );
        let mut c = Console { socket, pid: None };
        c.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            "120",
            "-y",
            "36",
            &line,
            // Keep the pane after an exit, so that a crash leaves its last words to read.
            ";",
            "set-option",
            "-t",
            SESSION,
            "remain-on-exit",
            "on",
        ])
        .await?;
        c.wait_for("● live", Duration::from_secs(30)).await?;
        let pane: Option<u32> = c
            .tmux(&["list-panes", "-t", SESSION, "-F", "#{pane_pid}"])
            .await?
            .trim()
            .parse()
            .ok();
        c.pid = pane.map(console_of);
        Ok(c)
    }

    /// The console's pid (tmux runs the command in the pane directly).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    async fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("run tmux (bench/soak.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "tmux {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The screen as text.
    pub async fn screen(&self) -> anyhow::Result<String> {
        self.tmux(&["capture-pane", "-p", "-t", SESSION]).await
    }

    async fn wait_for(&self, text: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen().await?;
            if screen.contains(text) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!("no {text:?} on the console after {within:?}; the screen:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After the load: the pane alive, the header live, the Keys view right.
    pub async fn check(&self, world: &World, verdict: &mut Verdict) {
        let dead = self
            .tmux(&["list-panes", "-t", SESSION, "-F", "#{pane_dead}"])
            .await
            .map(|s| s.trim() == "1")
            .unwrap_or(true);
        let live = self.wait_for("● live", Duration::from_secs(15)).await;
        let header = live
            .as_ref()
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
            .unwrap_or_default();
        verdict.add(
            "console alive and live after the load",
            match &live {
                Ok(_) => format!("pane alive: {}; header: `{header}`", !dead),
                Err(e) => format!("{e:#}"),
            },
            !dead && live.is_ok() && header.starts_with("modelrelay"),
        );
        let keys = world.key_views().await.map(|k| k.len()).unwrap_or(0);
        let want = format!("Keys ({keys})");
        let shown = match self.tmux(&["send-keys", "-t", SESSION, "2"]).await {
            Ok(_) => self.wait_for(&want, Duration::from_secs(15)).await,
            Err(e) => Err(e),
        };
        verdict.add(
            "console's Keys view counts every key",
            match &shown {
                Ok(_) => format!("shows `{want}`"),
                Err(e) => format!("{e:#}"),
            },
            shown.is_ok(),
        );
        // Back to the Live view for whoever looks at the session next.
        let _ = self.tmux(&["send-keys", "-t", SESSION, "1"]).await;
    }

    /// End the tmux server (and the console with it).
    pub async fn stop(&self) {
        let _ = self.tmux(&["kill-server"]).await;
    }
}

impl Drop for Console {
    /// On an early error too: the tmux server would otherwise outlive the run.
    fn drop(&mut self) {
        kill_server(&self.socket);
    }
}

/// End the tmux server on `socket`, if one listens there (a run cut short leaves it behind).
pub fn kill_server(socket: &std::path::Path) {
    if socket.exists() {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
