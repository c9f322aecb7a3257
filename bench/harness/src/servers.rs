//! The servers under test besides LiteLLM: nginx as a plain reverse proxy, and the gateway with
//! a real configuration (auth, the plan's rate limit, billing, the ledger) in either durability
//! mode (`store.sync = "full"`, the default, or `"normal"`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::procs::{self, Proc};
use crate::run::Opts;

/// Start nginx on `core`, proxying `addr` to the mock.
pub fn start_nginx(
    work: &Path,
    addr: std::net::SocketAddr,
    mock: std::net::SocketAddr,
    core: u32,
) -> anyhow::Result<Proc> {
    let dir = work.join("nginx");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    // One process (master_process off) so that its pid is the one doing the work; a plain
    // reverse proxy with upstream keep-alive, no buffering (as a streaming API needs).
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 200000;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 60000; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  tcp_nodelay on;
  keepalive_requests 100000000;
  upstream mock {{
    server {mock};
    keepalive 1024;
    keepalive_requests 100000000;
  }}
  server {{
    listen {addr} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Proc::spawn(
        "nginx",
        core,
        &[
            "nginx".into(),
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            path.display().to_string(),
        ],
        &[],
        &work.join("nginx.log"),
    )
}

/// Start the gateway named `name` on the server core with `store.sync = sync` and create its
/// benchmark key; returns the process, the key and the data directory.
pub async fn start_gateway(
    o: &Opts,
    work: &Path,
    name: &str,
    sync: &str,
    addr: std::net::SocketAddr,
    mock: std::net::SocketAddr,
) -> anyhow::Result<(Proc, String, std::path::PathBuf)> {
    let data = work.join(format!("{name}-data"));
    std::fs::create_dir_all(&data)?;
    let cfg = work.join(format!("{name}.toml"));
    // A real configuration: auth, the plan's RPM limit (set high enough never to refuse the
    // benchmark, but checked on every request), billing holds and settlement, the ledger.
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "{addr}"
data_dir = "{data}"
log_level = "warn"
drain_secs = 0

[store]
sync = "{sync}"

[upstream]
base_url = "http://{mock}"
api_key = "sk-bench-upstream"

[plans.pro]
budget_usd = "1000000"
rpm = 1000000000
max_in_flight = 1000000000

# The mock has no limit on requests in flight; DeepSeek caps an account at 2 500 flash
# requests, and so does the pool by default, which the 10 000-stream step would hit (the rest
# would queue, then get 503 upstream_busy, as they should against one real account).
[models.deepseek-v4-flash]
max_in_flight = 1000000
"#,
            data = data.display()
        ),
    )?;
    let gw = Proc::spawn(
        name,
        o.server_core,
        &[
            o.modelrelay.display().to_string(),
            "serve".into(),
            "--config".into(),
            cfg.display().to_string(),
        ],
        &[],
        &work.join(format!("{name}.log")),
    )?;
    procs::wait_port(addr, Duration::from_secs(30)).await?;
    // The HTTP port answers before the admin socket is always listening: retry for a while.
    let mut tries = 0;
    let out = loop {
        let out = std::process::Command::new(&o.modelrelay)
            .args([
                "keys", "create", "--plan", "pro", "--budget", "100000", "--config",
            ])
            .arg(&cfg)
            .output()
            .context("modelrelay keys create")?;
        tries += 1;
        if out.status.success() || tries >= 50 {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    anyhow::ensure!(
        key.starts_with("sk-gateway-"),
        "unexpected key output: {key}"
    );
    Ok((gw, key, data))
}
