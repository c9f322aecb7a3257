//! `install.sh` into a staging root (`--root`), and the systemd unit it installs: the installed
//! tree, idempotence, `--uninstall`, shellcheck, `systemd-analyze verify` and the
//! `systemd-analyze security` exposure score (or, without an offline-capable systemd, each
//! hardening directive by name).

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a test failure with its message"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_modelrelay");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn install_sh() -> PathBuf {
    repo().join("install.sh")
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("systemd/modelrelay.service")).expect("read the unit")
}

/// Run a command; panics with its output unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn install(root: &Path, extra: &[&str]) -> Output {
    run_ok(
        Command::new("bash")
            .arg(install_sh())
            .arg("--root")
            .arg(root)
            .args(extra)
            .env_remove("DESTDIR"),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under `root`: relative path → "mode kind sha256".
fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let m = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, format!("{m:o} dir"));
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                let hash = hex::encode(Sha256::digest(&bytes));
                out.insert(rel, format!("{m:o} file {hash}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The installed tree as documented: modes and contents, and the installed binary accepts the
/// installed config.
fn assert_tree_as_documented(bin: &Path, unit: &Path, config: &Path, state: &Path) {
    assert_eq!(mode(bin), 0o755);
    assert_eq!(
        std::fs::read(bin).expect("binary"),
        std::fs::read(BIN).expect("built binary")
    );
    assert_eq!(mode(unit), 0o644);
    assert_eq!(std::fs::read_to_string(unit).expect("unit"), unit_text());
    assert_eq!(mode(config), 0o640);
    assert_eq!(
        std::fs::read(config).expect("config"),
        std::fs::read(repo().join("systemd/modelrelay.toml")).expect("example config")
    );
    assert!(state.is_dir());
    assert_eq!(mode(state), 0o750);
    // The installed binary runs and accepts the installed config.
    run_ok(
        Command::new(bin)
            .arg("check-config")
            .arg("--config")
            .arg(config),
    );
}

#[test]
fn install_into_a_staging_root_twice_then_uninstall() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let out = install(&root, &["--binary", BIN]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl enable --now modelrelay"),
        "next steps: {stdout}"
    );
    assert!(
        stdout.contains("behind_proxy = true"),
        "next steps: {stdout}"
    );
    assert!(
        stdout.contains("would create the system group and user"),
        "staging creates no user: {stdout}"
    );

    // The tree is as documented.
    let bin = root.join("usr/local/bin/modelrelay");
    let unit = root.join("etc/systemd/system/modelrelay.service");
    let config = root.join("etc/modelrelay/modelrelay.toml");
    let state = root.join("var/lib/modelrelay");
    assert_tree_as_documented(&bin, &unit, &config, &state);

    // A second run changes nothing, and an edited config is kept.
    let mut edited = std::fs::read_to_string(&config).expect("config");
    edited.push_str("\n# edited by the operator\n");
    std::fs::write(&config, &edited).expect("edit config");
    std::fs::write(state.join("modelrelay.db"), b"data").expect("fake database");
    let unchanged = listing(&root);
    let out = install(&root, &["--binary", BIN]);
    assert_eq!(listing(&root), unchanged, "second run changed the tree");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kept the existing config"),
        "second run: {stdout}"
    );
    // Not the first install's steps again: the binary is the same, nothing to restart.
    assert!(
        !stdout.contains("systemctl enable --now") && stdout.contains("nothing to restart"),
        "second run: {stdout}"
    );

    // An upgrade (another binary) says the running service needs a restart.
    let other = tmp.path().join("modelrelay-new");
    std::fs::copy(BIN, &other).expect("copy");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&other)
        .expect("open copy");
    std::io::Write::write_all(&mut f, b"\0").expect("change the copy");
    drop(f);
    let out = install(&root, &["--binary", other.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl restart modelrelay") && !stdout.contains("enable --now"),
        "upgrade: {stdout}"
    );
    install(&root, &["--binary", BIN]);
    let before = listing(&root);

    // DESTDIR works like --root.
    run_ok(
        Command::new("bash")
            .arg(install_sh())
            .arg("--binary")
            .arg(BIN)
            .env("DESTDIR", &root),
    );
    assert_eq!(listing(&root), before, "DESTDIR run changed the tree");

    // --uninstall removes the binary and the unit, keeps config and data.
    install(&root, &["--uninstall"]);
    assert!(!bin.exists(), "binary left behind");
    assert!(!unit.exists(), "unit left behind");
    assert_eq!(
        std::fs::read_to_string(&config).expect("config kept"),
        edited
    );
    assert_eq!(
        std::fs::read(state.join("modelrelay.db")).expect("data kept"),
        b"data"
    );
    // Uninstalling again is fine too.
    install(&root, &["--uninstall"]);
}

#[test]
fn install_sh_help_and_bad_arguments() {
    let out = run_ok(Command::new("bash").arg(install_sh()).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--binary", "--root", "--uninstall", "DESTDIR"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let out = Command::new("bash")
        .arg(install_sh())
        .arg("--frobnicate")
        .output()
        .expect("run install.sh");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument"));
}

#[test]
fn install_sh_passes_shellcheck() {
    let out = Command::new("shellcheck")
        .arg(install_sh())
        .output()
        .unwrap_or_else(|e| {
            panic!("shellcheck is required (scripts/test.sh installs it: apt-get install shellcheck): {e}")
        });
    assert!(
        out.status.success(),
        "shellcheck install.sh:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hardening the unit must carry, checked by name when `systemd-analyze` cannot score it.
const HARDENING: &[&str] = &[
    "Type=notify",
    "User=modelrelay",
    "Group=modelrelay",
    "StateDirectory=modelrelay",
    "RuntimeDirectory=modelrelay",
    "RuntimeDirectoryMode=0750",
    "ConfigurationDirectory=modelrelay",
    "Restart=on-failure",
    "LimitNOFILE=65536",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "UMask=0027",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "DevicePolicy=closed",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
];

/// The unit denies `@resources`, which holds setpriority(2): the daemon's background threads
/// (the ledger writer, the prompt recorder) lower their own priority with it, so the unit must
/// give that one call back, else under systemd they stay at normal priority and every start
/// logs "ledger writer left at normal priority" (found by a newcomer reading the unit).
#[test]
fn unit_lets_background_threads_lower_their_priority() {
    let unit = unit_text();
    let filters: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    let deny = filters
        .iter()
        .position(|f| f.starts_with('~') && f.split_whitespace().any(|g| g == "@resources"))
        .expect("the unit denies @resources");
    assert!(
        filters[deny + 1..]
            .iter()
            .any(|f| !f.starts_with('~') && f.split_whitespace().any(|c| c == "setpriority")),
        "setpriority is denied with @resources and never given back: {filters:?}"
    );
}

#[test]
fn unit_is_hardened_and_matches_the_example_config() {
    let unit = unit_text();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for directive in HARDENING {
        assert!(lines.contains(directive), "the unit lacks `{directive}`");
    }
    assert!(lines.contains(
        &"ExecStart=/usr/local/bin/modelrelay serve --config /etc/modelrelay/modelrelay.toml"
    ));
    assert!(
        lines.iter().any(|l| l.starts_with("#LoadCredential=")),
        "LoadCredential examples"
    );
    let stop = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let secs: u64 = stop
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    // The drain time (30 s by default), then 10 s for cut requests to settle and 5 s to close.
    assert!(
        secs >= 60,
        "TimeoutStopSec={secs} must exceed the drain time plus the cut and close"
    );
    // The paths in the unit are the ones the example config uses.
    let example =
        std::fs::read_to_string(repo().join("systemd/modelrelay.toml")).expect("example config");
    assert!(example.contains("data_dir = \"/var/lib/modelrelay\""));
    assert!(example.contains("admin_socket = \"/run/modelrelay/modelrelay.sock\""));
}

fn systemd_analyze() -> PathBuf {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // The test command installs systemd; its absence is a broken setup, not a pass.
    assert!(
        found,
        "systemd-analyze not found: run ./scripts/test.sh (it installs systemd) or apt-get install systemd"
    );
    PathBuf::from("systemd-analyze")
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let sa = systemd_analyze();
    let tmp = tempfile::tempdir().expect("tempdir");
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let unit = unit_text().replace("/usr/local/bin/modelrelay", BIN);
    let path = tmp.path().join("modelrelay.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new(&sa)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("modelrelay.service:"),
        "systemd-analyze verify:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unit_security_exposure_is_at_most_2() {
    let sa = systemd_analyze();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("etc/systemd/system");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("modelrelay.service"), unit_text()).expect("write unit");
    let out = Command::new(&sa)
        .arg("security")
        .arg("--offline=true")
        .arg(format!("--root={}", tmp.path().display()))
        .arg("--no-pager")
        .arg("modelrelay.service")
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(line) = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    else {
        // Older systemd (before 250) has no --offline: the directives test stands in for it.
        assert!(
            stderr.contains("offline") || stderr.contains("root"),
            "systemd-analyze security gave no score:\n{stdout}{stderr}"
        );
        eprintln!("systemd-analyze security --offline unsupported here: {stderr}");
        return;
    };
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}

/// What `Type=notify` relies on: `serve` sends READY=1 to `$NOTIFY_SOCKET` once it is up.
#[test]
fn serve_notifies_systemd_when_ready() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().expect("tempdir");
    let notify_path = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut child = Command::new(BIN)
        .args(["serve", "--demo"])
        .current_dir(tmp.path())
        .env_remove("MODELRELAY_CONFIG")
        .env("MODELRELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("MODELRELAY_SERVER__DATA_DIR", tmp.path().join("data"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start modelrelay serve --demo");
    // A fresh database is migrated first: before each migration systemd is asked to wait
    // longer (a migration of a large ledger takes minutes), then READY=1.
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let ready = loop {
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"READY=1" => break Ok(()),
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => break Err(e),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    ready.expect("READY=1 within 60 s");
    assert!(!got.is_empty(), "no notice before the migrations");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m,
            &format!(
                "EXTEND_TIMEOUT_USEC=900000000\nSTATUS=applying database migration {}",
                i + 1
            )
        );
    }
}

/// An upgrade keeps the operator's config; when the new binary refuses it (a value an earlier
/// version accepted), install.sh says so before telling the operator to restart, since the
/// restart would stop the running service and the new version would not start.
#[test]
fn an_upgrade_warns_when_the_new_binary_refuses_the_kept_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    install(&root, &["--binary", BIN]);
    let config = root.join("etc/modelrelay/modelrelay.toml");
    let upgrade = |name: &str| {
        // Another binary than the installed one: an upgrade.
        let other = tmp.path().join(name);
        std::fs::copy(BIN, &other).expect("copy");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&other)
            .expect("open copy");
        std::io::Write::write_all(&mut f, name.as_bytes()).expect("change the copy");
        drop(f);
        install(&root, &["--binary", other.to_str().expect("utf-8")])
    };

    // An accepted config: no warning.
    let out = upgrade("modelrelay-a");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("refuses the kept config") && !stdout.contains("Fix "),
        "accepted config: {stdout}\n{stderr}"
    );

    // "info,modelrelay" was a valid filter for the first release (a bare target), and is
    // refused now.
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(
        text.contains("log_level = \"info\""),
        "example config: {text}"
    );
    std::fs::write(
        &config,
        text.replace("log_level = \"info\"", "log_level = \"info,modelrelay\""),
    )
    .expect("edit config");
    let out = upgrade("modelrelay-b");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refuses the kept config") && stderr.contains("server.log_level"),
        "refused config, stderr: {stderr}"
    );
    assert!(
        stdout.contains("Fix ") && stdout.contains("check-config --config"),
        "refused config, stdout: {stdout}"
    );
    // The config is the operator's: kept as it was.
    assert!(
        std::fs::read_to_string(&config)
            .expect("config")
            .contains("log_level = \"info,modelrelay\"")
    );
}
