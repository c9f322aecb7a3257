//! Helpers the unit tests share (tests only) beyond the property tests' strategies.

/// Set in the environment of the child [`in_a_child_behind_a_closed_proxy`] starts.
const PROXY_CHILD: &str = "MODELRELAY_TEST_PROXY_CHILD";

/// Whether this test process is the child [`in_a_child_behind_a_closed_proxy`] started.
pub fn is_proxy_child() -> bool {
    std::env::var_os(PROXY_CHILD).is_some()
}

/// Run the unit test `name` (its full path) again in a child process whose environment names
/// a proxy nothing listens on (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`; no `NO_PROXY`), and
/// assert that it passed there: what a client would do with the environment's proxy shows,
/// without changing this process's environment under the other tests.
pub fn in_a_child_behind_a_closed_proxy(name: &str) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(PROXY_CHILD, "1")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("ALL_PROXY", &proxy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
