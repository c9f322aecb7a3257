//! A real browser: headless Debian Chromium, driven over WebDriver (ChromeDriver + fantoccini),
//! buys the Trial plan from a demo daemon through its pages — pricing, checkout, the simulated
//! PayPal approval page, the key on the spot — then checks that the key works on the API, that the
//! dashboard shows the plan's budget and that the order look-up shows the key. Screenshots are saved
//! under `<target>/test-artifacts/browser/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test.sh`); without them the test fails, it never skips.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use modelrelay::app::Daemon;
use modelrelay::config::Config;
use modelrelay::keys::KeyStatus;
use modelrelay::money::Usd;
use modelrelay::paypal::simulated::{SimPaypalOptions, SimulatedPaypal};
use modelrelay::shop::i18n::{A11Y_EN, EN};
use modelrelay::upstream::simulated::{SimOptions, SimulatedDeepSeek};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{SIM_KEY, TestApp, body, test_config};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one wait (an element, a text, the driver's port) may take.
const WAIT: Duration = Duration::from_secs(20);
/// How long the whole browser session may take before the test gives up.
const WHOLE: Duration = Duration::from_secs(180);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
const EMAIL: &str = "browser-buyer@example.com";

/// `<target>/test-artifacts/browser/`, emptied of an earlier run's files.
fn artifacts_dir() -> PathBuf {
    artifacts_dir_named("browser")
}

/// `<target>/test-artifacts/<name>/`, emptied of an earlier run's files.
pub(crate) fn artifacts_dir_named(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR is inside the target dir")
            .to_path_buf(),
    };
    let dir = target.join("test-artifacts").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the artifacts dir");
    }
    std::fs::create_dir_all(&dir).expect("create the artifacts dir");
    dir
}

/// A daemon in demo mode (approval page, DEMO banner) in front of a simulated DeepSeek and a
/// simulated PayPal configured through `paypal.api_base`.
pub(crate) async fn demo_shop() -> TestApp {
    let sim = SimulatedDeepSeek::start(SimOptions {
        api_key: SIM_KEY.into(),
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts");
    let opts = SimPaypalOptions::default();
    let paypal = SimulatedPaypal::start(opts.clone())
        .await
        .expect("simulated PayPal starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path(), &sim);
    config.paypal.api_base = paypal.base_url();
    config.paypal.client_id = opts.client_id;
    config.paypal.client_secret = opts.client_secret;
    config.paypal.webhook_id = opts.webhook_id;
    let socket = config.admin_socket();
    let db = config.server.data_dir.join("modelrelay.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let daemon = Daemon::start_with(config, listener, true)
        .await
        .expect("demo daemon starts");
    TestApp {
        base: format!("http://{}", daemon.http_addr),
        daemon: Some(daemon),
        sim,
        http: reqwest::Client::new(),
        socket,
        db,
        dir,
        paypal: Some(paypal),
    }
}

/// ChromeDriver on a free loopback port and a headless Chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Chromium and ChromeDriver are installed, or the test fails saying how to install them.
fn assert_installed() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the browser test needs Debian's chromium and chromium-driver. \
             Run ./scripts/test.sh as root (it installs them) or \
             `apt-get install -y chromium chromium-driver`."
        );
    }
}

/// ChromeDriver on a port of its own choosing, logging to `log`, its stderr into `stderr`.
fn spawn_driver(log: &Path, stderr: std::fs::File) -> Child {
    // --port=0: ChromeDriver picks a free port and prints it; no race for a port.
    Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .arg("--allowed-ips=127.0.0.1")
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"))
}

/// The port ChromeDriver prints on its stdout; the stdout is drained for as long as it runs.
async fn driver_port(driver: &mut Child, log: &Path) -> u16 {
    let stdout = driver.stdout.take().expect("piped stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        // Keep draining after the port is known so ChromeDriver never blocks on its stdout.
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|p| p.trim().trim_end_matches('.').parse::<u16>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(port)) => port,
        Ok(Err(_)) => panic!(
            "{CHROMEDRIVER} exited without reporting its port (exit: {:?}); see {}",
            driver.try_wait(),
            log.display()
        ),
        Err(_) => panic!(
            "{CHROMEDRIVER} did not report its port within {WAIT:?}; see {}",
            log.display()
        ),
    }
}

/// The WebDriver capabilities: headless Chromium at [`WIDTH`]×[`HEIGHT`], profile in `profile`.
fn capabilities(profile: &Path) -> serde_json::Map<String, Value> {
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": {"pageLoad": 30_000, "script": 30_000, "implicit": 0},
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--lang=en-US",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={WIDTH},{HEIGHT}"),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!("capabilities are an object")
    };
    caps
}

/// A Chromium session through the ChromeDriver on `port` (whose log is `log`).
async fn open_session(port: u16, caps: serde_json::Map<String, Value>, log: &Path) -> Client {
    let session = tokio::time::timeout(
        WAIT * 3,
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await;
    match session {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!(
            "ChromeDriver could not start Chromium: {e}; see {}",
            log.display()
        ),
        Err(_) => panic!(
            "no Chromium session within {:?}; see {}",
            WAIT * 3,
            log.display()
        ),
    }
}

impl Browser {
    /// `label` names this session's ChromeDriver logs.
    async fn start(artifacts: &Path, label: &str) -> Browser {
        assert_installed();
        let log = artifacts.join(format!("chromedriver-{label}.log"));
        let stderr = std::fs::File::create(artifacts.join(format!("chromedriver-{label}.stderr")))
            .expect("create the ChromeDriver stderr file");
        let mut driver = spawn_driver(&log, stderr);
        let port = driver_port(&mut driver, &log).await;
        let profile = tempfile::tempdir().expect("profile dir");
        let client = open_session(port, capabilities(profile.path()), &log).await;
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Quit Chromium (ends the WebDriver session), then stop ChromeDriver.
    async fn shutdown(mut self) {
        let _ = tokio::time::timeout(WAIT, self.client.close()).await;
        let _ = self.driver.kill().await;
    }
}

/// Poll `probe` until it yields a value; fail after [`WAIT`] with `what` and the last error.
pub(crate) async fn wait_until<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, String>,
) -> T {
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("no answer yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The visible text of the element `css`, once it exists and is displayed.
pub(crate) async fn visible_text(c: &Client, css: &str) -> String {
    wait_until(&format!("{css} to be displayed"), async || {
        let el = c.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        if el.is_displayed().await.map_err(|e| e.to_string())? {
            Ok(Some(el.text().await.map_err(|e| e.to_string())?))
        } else {
            Ok(None)
        }
    })
    .await
}

/// Click the element `css` once it is displayed.
pub(crate) async fn click(c: &Client, css: &str) {
    let el = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    el.click()
        .await
        .unwrap_or_else(|e| panic!("click on {css}: {e}"));
}

/// Type into the input `css` once it exists.
pub(crate) async fn type_into(c: &Client, css: &str, text: &str) {
    let el = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    el.send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

/// The `id` of the element that has the focus (empty for none, or one without an id).
pub(crate) async fn focused(c: &Client) -> String {
    c.execute("return document.activeElement.id", vec![])
        .await
        .expect("read the focus")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Wait until the element with `id` has the focus.
pub(crate) async fn wait_for_focus(c: &Client, id: &str) {
    wait_until(&format!("#{id} to have the focus"), async || {
        let now = focused(c).await;
        if now == id {
            Ok(Some(()))
        } else {
            Err(format!("the focus is on #{now}"))
        }
    })
    .await
}

/// The attribute `name` of the element `css` (`None` when it has none).
pub(crate) async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.attr(name)
        .await
        .unwrap_or_else(|e| panic!("{css}[{name}]: {e}"))
}

/// Wait until the page at `path` (and nothing else) is loaded.
pub(crate) async fn wait_for_path(c: &Client, path: &str) {
    wait_until(&format!("the browser to reach {path}"), async || {
        let url = c.current_url().await.map_err(|e| e.to_string())?;
        let ready = c
            .execute("return document.readyState", vec![])
            .await
            .map_err(|e| e.to_string())?;
        Ok((url.path() == path && ready == "complete").then_some(()))
    })
    .await
}

/// A full-page screenshot saved as `<artifacts>/<name>.png`: the window is made tall enough for
/// the whole page (its height includes the window's own frame, hence the frame is added), shot,
/// and put back to its usual size.
pub(crate) async fn screenshot(c: &Client, artifacts: &Path, name: &str) -> PathBuf {
    let needed = c
        .execute(
            "return Math.ceil(document.documentElement.scrollHeight \
                + (window.outerHeight - window.innerHeight))",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::from(HEIGHT));
    let height = u32::try_from(needed.clamp(u64::from(HEIGHT), 6000)).unwrap_or(HEIGHT);
    c.set_window_size(WIDTH, height)
        .await
        .expect("resize for the screenshot");
    let png = c.screenshot().await.expect("screenshot");
    c.set_window_size(WIDTH, HEIGHT).await.expect("resize back");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = artifacts.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

/// `$1.23` as money.
pub(crate) fn dollars(s: &str) -> Usd {
    s.trim()
        .strip_prefix('$')
        .unwrap_or_else(|| panic!("{s:?} is not a dollar amount"))
        .parse()
        .unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
}

/// Run `test` in a fresh browser; on failure save `failure-<label>.png` and the page source, and
/// always quit Chromium and ChromeDriver before the outcome is reported.
pub(crate) async fn with_browser<F, Fut>(artifacts: &Path, label: &str, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let browser = Browser::start(artifacts, label).await;
    let run = tokio::time::timeout(WHOLE, test(browser.client.clone()));
    let outcome = AssertUnwindSafe(run).catch_unwind().await;
    let failed = !matches!(outcome, Ok(Ok(())));
    if failed {
        let c = &browser.client;
        if let Ok(Ok(png)) = tokio::time::timeout(WAIT, c.screenshot()).await {
            let _ = std::fs::write(artifacts.join(format!("failure-{label}.png")), png);
        }
        if let Ok(Ok(html)) = tokio::time::timeout(WAIT, c.source()).await {
            let _ = std::fs::write(artifacts.join(format!("failure-{label}.html")), html);
        }
    }
    browser.shutdown().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!(
            "the browser session did not finish within {WHOLE:?}; see {}",
            artifacts.display()
        ),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The key on the checkout page once it has captured the order (an error shown there fails).
async fn key_on_the_checkout_page(c: &Client) -> String {
    wait_until("the key on the checkout page", async || {
        if let Ok(err) = c.find(Locator::Css("#checkout-error")).await
            && err.is_displayed().await.unwrap_or(false)
        {
            let text = err.text().await.unwrap_or_default();
            panic!("checkout shows an error: {text}");
        }
        let el = c
            .find(Locator::Css("#api-key"))
            .await
            .map_err(|e| e.to_string())?;
        let text = el.text().await.map_err(|e| e.to_string())?;
        Ok(text.starts_with("sk-gateway-").then_some(text))
    })
    .await
}

/// Buy the Trial plan (at `price`) through the pages; the key and the order id shown at checkout.
async fn buy_the_trial(c: &Client, base: &str, price: Usd, shots: &Path) -> (String, String) {
    // Pricing: the DEMO banner, then the Trial plan's Buy link.
    c.goto(&format!("{base}/pricing?lang=en"))
        .await
        .expect("open /pricing");
    assert!(!visible_text(c, "#demo-banner").await.is_empty());
    click(c, "#buy-trial").await;
    wait_for_path(c, "/checkout/trial").await;

    // Checkout: an email, then the demo pay button (creates the order over our JSON API).
    type_into(c, "#email", EMAIL).await;
    click(c, "#pay-demo").await;

    // The simulated PayPal's approval page shows the plan and the configured price.
    wait_for_path(c, "/demo/paypal/approve").await;
    assert_eq!(visible_text(c, "#approve-plan").await, "Trial");
    assert_eq!(
        visible_text(c, "#approve-amount").await,
        format!("${price} USD")
    );
    click(c, "#approve").await;

    // Back at checkout, the page captures the order and shows the key.
    let key = key_on_the_checkout_page(c).await;
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), "/checkout/trial");
    let order_id = visible_text(c, "#order-id").await;
    assert!(order_id.starts_with("ord_"), "order id {order_id:?}");
    // The result is said and its heading has the focus (found by an accessibility audit: the
    // focus stayed on the page and nothing was heard); the key itself is not said aloud.
    wait_for_focus(c, "result-heading").await;
    let said = wait_until("the result to be said", async || {
        let el = c
            .find(Locator::Css("#checkout-announce"))
            .await
            .map_err(|e| e.to_string())?;
        let text = el.text().await.map_err(|e| e.to_string())?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await;
    assert_eq!(said, EN.checkout_paid_h);
    // The copy button's outcome is said too: copied, or (where the clipboard is refused) the
    // key selected with the keys to press.
    click(c, ".copy-btn").await;
    let note = wait_until("the copy to be said", async || {
        let el = c
            .find(Locator::Css("#api-key-copy-note"))
            .await
            .map_err(|e| e.to_string())?;
        let text = el.prop("textContent").await.map_err(|e| e.to_string())?;
        Ok(text.filter(|t| !t.is_empty()))
    })
    .await;
    assert!(
        note == EN.copied || note == A11Y_EN.copy_select_key,
        "{note}"
    );
    assert_eq!(
        attr(c, "#api-key-copy-note", "role").await.as_deref(),
        Some("status")
    );
    screenshot(c, shots, "1-checkout-key").await;
    (key, order_id)
}

/// The daemon has the key, with the Trial plan's `budget`, and it works on the API (its
/// request is in the ledger when this returns).
async fn assert_the_key_works(app: &TestApp, key: &str, order_id: &str, budget: Usd) {
    let ks = app.key_state(key);
    assert_eq!(ks.plan(), "trial");
    assert_eq!(ks.balance().budget, budget);
    assert_eq!(ks.status(), KeyStatus::Active);
    assert_eq!(ks.email.as_deref(), Some(EMAIL));
    assert_eq!(ks.order_id.as_deref(), Some(order_id));
    let resp = app
        .chat(
            key,
            &body("deepseek-v4-flash", "Hello from the browser test!"),
        )
        .send()
        .await
        .expect("chat request");
    assert_eq!(resp.status(), 200);
    let request_id = crate::common::request_id(&resp);
    let answer: Value = resp.json().await.expect("chat JSON");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
    app.wait_ledger_row(&request_id).await;
}

/// The dashboard, given the key, shows its `budget`, one charged request and never the key.
async fn check_the_dashboard(c: &Client, base: &str, key: &str, budget: Usd, shots: &Path) {
    c.goto(&format!("{base}/dashboard?lang=en"))
        .await
        .expect("open /dashboard");
    type_into(c, "input[name=key]", key).await;
    click(c, "#dashboard-submit").await;
    let shown = visible_text(c, "#budget").await;
    assert_eq!(dollars(&shown), budget, "#budget shows {shown:?}");
    assert_eq!(shown, format!("${budget}"));
    assert_eq!(visible_text(c, "#status").await, EN.key_active);
    let spent = dollars(&visible_text(c, "#spent").await);
    let remaining = dollars(&visible_text(c, "#remaining").await);
    assert!(spent.nanos() > 0, "the chat request was charged");
    assert_eq!(spent.nanos() + remaining.nanos(), budget.nanos());
    assert_eq!(visible_text(c, "#requests").await, "1");
    let page = c.source().await.expect("page source");
    assert!(!page.contains(key), "the dashboard never echoes the key");
    screenshot(c, shots, "2-dashboard").await;
}

/// The order look-up, given the order id and email, shows the key of the paid Trial order.
async fn check_the_order_look_up(c: &Client, base: &str, key: &str, order_id: &str, shots: &Path) {
    c.goto(&format!("{base}/order?lang=en"))
        .await
        .expect("open /order");
    type_into(c, "#order_id", order_id).await;
    type_into(c, "#email", EMAIL).await;
    click(c, "#order-submit").await;
    assert_eq!(visible_text(c, "#api-key").await, key);
    assert_eq!(visible_text(c, "#order-id").await, order_id);
    assert_eq!(visible_text(c, "#order-status").await, EN.order_paid);
    assert_eq!(visible_text(c, "#order-plan").await, "Trial");
    screenshot(c, shots, "3-order-lookup").await;
}

#[tokio::test]
async fn a_browser_buys_the_trial_plan_and_sees_its_budget() {
    let app = demo_shop().await;
    let artifacts = artifacts_dir();
    let defaults = Config::default();
    let trial = &defaults.plans["trial"];
    let (price, budget) = (trial.price_usd, trial.budget_usd);
    assert_eq!(budget.to_string(), "1.00", "the built-in Trial budget");
    let base = app.base.clone();
    let shots = artifacts.clone();

    let bought = std::sync::Arc::new(std::sync::Mutex::new(None::<(String, String)>));
    let out = bought.clone();
    with_browser(&artifacts, "purchase", async move |c: Client| {
        let key_and_order = buy_the_trial(&c, &base, price, &shots).await;
        *out.lock().expect("lock") = Some(key_and_order);
    })
    .await;
    let (key, order_id) = bought.lock().expect("lock").clone().expect("bought");

    assert_the_key_works(&app, &key, &order_id, budget).await;

    // A second browser session (a returning customer): the dashboard and the order look-up.
    let base = app.base.clone();
    let shots = artifacts.clone();
    with_browser(&artifacts, "returning", async move |c: Client| {
        check_the_dashboard(&c, &base, &key, budget, &shots).await;
        check_the_order_look_up(&c, &base, &key, &order_id, &shots).await;
    })
    .await;
}
