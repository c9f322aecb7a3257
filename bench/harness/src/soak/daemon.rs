//! The gateway under soak: its config file (both simulators, two upstream accounts, plans shaped
//! for the run), `modelrelay serve` as a child process with its log in the work dir, its stop
//! by SIGTERM, and the operator's CLI against it.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The simulated DeepSeek accounts' keys, as the config names them.
pub const ACCOUNTS: [(&str, &str); 2] = [("alpha", "sk-soak-alpha"), ("beta", "sk-soak-beta")];

/// The budget of a `trial` purchase or top-up in this run: small, so that bought keys run dry
/// within a minute of load and the 402 path and top-ups that revive a key keep happening.
pub const TRIAL_BUDGET: &str = "0.001";

/// Where things are for one run.
pub struct Paths {
    /// The work dir (emptied at the start).
    pub work: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The data dir (database, secret, admin socket).
    pub data: PathBuf,
    /// The admin socket.
    pub socket: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
}

impl Paths {
    /// Lay out (and empty) `work`.
    pub fn prepare(work: &Path) -> anyhow::Result<Paths> {
        // A run cut short (Ctrl-C) leaves its console's tmux server running.
        super::console::kill_server(&work.join("tmux.sock"));
        if work.exists() {
            std::fs::remove_dir_all(work)
                .with_context(|| format!("empty the work dir {}", work.display()))?;
        }
        let data = work.join("data");
        std::fs::create_dir_all(&data)?;
        // Absolute paths: the console in tmux and the CLI run from other directories.
        let work = work.canonicalize()?;
        let data = data.canonicalize()?;
        Ok(Paths {
            config: work.join("modelrelay.toml"),
            socket: data.join("admin.sock"),
            log: work.join("modelrelay.log"),
            data,
            work,
        })
    }
}

/// The config: a fixed loopback port, both simulators, a short upstream idle timeout (stalls
/// are part of the load and must end in seconds, not minutes), small caps on the pro model so
/// that the queue is used, off-peak prices at any hour, and plans whose RPM only bites on the
/// `starter` key that the load rate-limits on purpose.
pub fn config(paths: &Paths, listen: &str, upstream: &str, paypal: &str) -> String {
    let mut accounts = String::new();
    for (name, key) in ACCOUNTS {
        accounts.push_str(&format!(
            "[[upstream.accounts]]\nname = {name:?}\napi_key = {key:?}\nbase_url = {upstream:?}\n\
             max_in_flight = {{ \"deepseek-v4-pro\" = 10 }}\n\n"
        ));
    }
    format!(
        r#"# Written by mr-bench soak.
[server]
listen = {listen:?}
public_url = "http://{listen}"
data_dir = {data:?}
admin_socket = {socket:?}
drain_secs = 10
log_level = "info"

[upstream]
base_url = {upstream:?}
idle_timeout_secs = 3
request_timeout_secs = 60
queue_timeout_ms = 2000

{accounts}[paypal]
env = "sandbox"
client_id = "sim-client-id"
client_secret = "sim-secret"
webhook_id = "WH-SIM"
api_base = {paypal:?}

[pricing]
peak_hours_utc = []

[plans.trial]
budget_usd = "{TRIAL_BUDGET}"
rpm = 100000
max_in_flight = 100000

[plans.starter]
rpm = 30

[plans.standard]
rpm = 100000
max_in_flight = 100000

[plans.pro]
rpm = 100000
max_in_flight = 100000
"#,
        data = paths.data.display().to_string(),
        socket = paths.socket.display().to_string(),
    )
}

/// `modelrelay serve --config …`, its output to the log file.
pub fn spawn(bin: &Path, paths: &Paths) -> anyhow::Result<Child> {
    let log = std::fs::File::create(&paths.log)?;
    Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&paths.config)
        .env_remove("RUST_LOG")
        .env_remove("MODELRELAY_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {} serve", bin.display()))
}

/// SIGTERM, then wait for the exit (bounded: the drain is 10 s).
pub async fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let pid = child.id().context("the daemon has already been reaped")?;
    let pid = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(pid), Signal::SIGTERM).context("send SIGTERM")?;
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            let _ = child.kill().await;
            bail!("the daemon did not exit within 60 s of SIGTERM")
        }
    }
}

/// `modelrelay ARGS --socket … --config …`: its stdout, or why it failed (exit status and
/// stderr).
pub async fn cli(bin: &Path, paths: &Paths, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(bin)
            .args(args)
            .arg("--socket")
            .arg(&paths.socket)
            .arg("--config")
            .arg(&paths.config)
            .env_remove("MODELRELAY_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("modelrelay {args:?} took over 30 s"))??;
    if !out.status.success() {
        bail!(
            "modelrelay {args:?} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
