//! The demo flow over real HTTP (`demo = true`, simulated DeepSeek and PayPal): the banner, the
//! approval page, the key shown at checkout, at order look-up and on the dashboard.

use modelrelay::app::Daemon;
use modelrelay::paypal::simulated::{SimPaypalOptions, SimulatedPaypal};
use modelrelay::shop::i18n::{EN, ZH};
use modelrelay::upstream::simulated::{SimOptions, SimulatedDeepSeek};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect;

use crate::common::{SIM_KEY, TestApp, test_config};
use crate::pages::{PAGES, csrf_token, element_text, esc, get, post_form};

/// A daemon started with `demo = true`, in front of a simulated DeepSeek and PayPal.
struct Demo {
    daemon: Option<Daemon>,
    base: String,
    _sim: SimulatedDeepSeek,
    _paypal: SimulatedPaypal,
    _dir: tempfile::TempDir,
}

async fn start_demo() -> Demo {
    let sim = SimulatedDeepSeek::start(SimOptions {
        api_key: SIM_KEY.into(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let opts = SimPaypalOptions::default();
    let paypal = SimulatedPaypal::start(opts.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), &sim);
    config.paypal.api_base = paypal.base_url();
    config.paypal.client_id = opts.client_id;
    config.paypal.client_secret = opts.client_secret;
    config.paypal.webhook_id = opts.webhook_id;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start_with(config, listener, true).await.unwrap();
    Demo {
        base: format!("http://{}", daemon.http_addr),
        daemon: Some(daemon),
        _sim: sim,
        _paypal: paypal,
        _dir: dir,
    }
}

/// Every page but the Team checkout, in Chinese, shows the DEMO banner; the Trial checkout has
/// the demo pay button and no PayPal SDK; an unknown order has no approval page.
async fn assert_demo_pages(base: &str) {
    for path in PAGES.iter().filter(|p| **p != "/checkout/team") {
        let (status, _, html) = get(base, &format!("{path}?lang=zh"), None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            html.contains("id=\"demo-banner\"") && html.contains(&esc(ZH.demo_banner)),
            "{path}"
        );
    }
    let (_, _, html) = get(base, "/checkout/trial", None).await;
    assert!(html.contains("id=\"pay-demo\"") && html.contains(&esc(EN.checkout_pay_demo)));
    assert!(
        !html.contains("paypal.com/sdk"),
        "no PayPal SDK in demo mode"
    );
    let (status, _, _) = get(base, "/demo/paypal/approve?order_id=ord_unknown", None).await;
    assert_eq!(status, 404);
}

/// A buyer going through the demo checkout as `checkout.js` does: one HTTP client that follows
/// no redirects, the CSRF token, the cookies and the order it created.
struct Buyer {
    client: reqwest::Client,
    base: String,
    token: String,
    cookie: String,
    order_id: String,
}

impl Buyer {
    /// Create a Trial order with the CSRF header, keeping the cookies the answer sets.
    async fn create_order(base: &str) -> Buyer {
        Buyer::create(
            base,
            serde_json::json!({"plan": "trial", "email": "Buyer@Example.com"}),
        )
        .await
    }

    /// Create the order `body` asks for (as `Buyer::create_order`).
    async fn create(base: &str, body: serde_json::Value) -> Buyer {
        let token = csrf_token(base).await;
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        let resp = client
            .post(format!("{base}/api/orders"))
            .header(COOKIE, format!("mr_csrf={token}"))
            .header("x-csrf-token", &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut cookies = vec![format!("mr_csrf={token}")];
        for v in resp.headers().get_all(SET_COOKIE) {
            cookies.push(v.to_str().unwrap().split(';').next().unwrap().to_string());
        }
        let cookie = cookies.join("; ");
        let v: serde_json::Value = resp.json().await.unwrap();
        let order_id = v["order_id"].as_str().unwrap().to_string();
        Buyer {
            client,
            base: base.to_string(),
            token,
            cookie,
            order_id,
        }
    }

    /// GET `path_and_query` with the buyer's cookies.
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// Post the approval form for the order, with the CSRF token.
    async fn approve(&self) -> reqwest::Response {
        self.client
            .post(format!("{}/demo/paypal/approve", self.base))
            .header(COOKIE, &self.cookie)
            .form(&[
                ("order_id", self.order_id.as_str()),
                ("csrf_token", &self.token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// The approval page shows the plan and amount, refuses an approval without the CSRF token,
    /// approves with it and sends the buyer back to a checkout page that shows the status.
    async fn approve_on_the_demo_page(&self) {
        let order_id = &self.order_id;
        let resp = self
            .get(&format!("/demo/paypal/approve?order_id={order_id}"))
            .await;
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("id=\"approve\"") && html.contains("$1.00 USD") && html.contains("Trial")
        );
        assert!(html.contains(&format!("name=\"order_id\" value=\"{order_id}\"")));
        // Cancelling goes back to the plan's checkout, which says nothing was taken.
        assert!(
            html.contains("href=\"/checkout/trial?cancelled=1\" id=\"approve-cancel\""),
            "{html}"
        );
        let resp = self
            .client
            .post(format!("{}/demo/paypal/approve", self.base))
            .header(COOKIE, &self.cookie)
            .form(&[("order_id", order_id.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let resp = self.approve().await;
        assert_eq!(resp.status(), 303);
        let location = resp.headers()[LOCATION].to_str().unwrap().to_string();
        assert_eq!(
            location,
            format!("/checkout/trial?order_id={order_id}&approved=1")
        );
        let resp = self.get(&location).await;
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.unwrap();
        // The status line is the script's to show as it captures; without a script the page
        // says where to finish instead.
        assert!(
            html.contains("id=\"checkout-status\" role=\"status\" hidden>"),
            "{html}"
        );
        assert!(html.contains("<noscript>"), "{html}");
    }

    /// Capture the approved order (as `checkout.js` does); the answer carries the new key.
    async fn capture(&self) -> String {
        let resp = self
            .client
            .post(format!(
                "{}/api/orders/{}/capture",
                self.base, self.order_id
            ))
            .header(COOKIE, &self.cookie)
            .header("x-csrf-token", &self.token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["status"], "paid", "{v}");
        let key = v["api_key"].as_str().unwrap().to_string();
        assert!(key.starts_with("sk-gateway-"));
        key
    }

    /// The order look-up (a form post) for `order_id` and `email`.
    async fn look_up(&self, order_id: &str, email: &str) -> (reqwest::StatusCode, String) {
        post_form(
            &self.base,
            "/order",
            Some(&self.token),
            &[
                ("order_id", order_id),
                ("email", email),
                ("csrf_token", &self.token),
            ],
        )
        .await
    }

    /// The order look-up shows the key for the right email (any case), and the same generic
    /// answer as an unknown order for a wrong email.
    async fn assert_order_look_up(&self, key: &str) {
        let order_id = &self.order_id;
        let (status, html) = self.look_up(order_id, " buyer@example.COM ").await;
        assert_eq!(status, 200);
        assert_eq!(element_text(&html, "api-key"), Some(key));
        assert_eq!(element_text(&html, "order-id"), Some(order_id.as_str()));
        assert_eq!(element_text(&html, "order-status"), Some(EN.order_paid));
        assert!(html.contains("$1.00 USD"));
        let (_, wrong) = self.look_up(order_id, "other@example.com").await;
        let (_, unknown) = self
            .look_up("ord_nosuchorder0000000", "other@example.com")
            .await;
        assert!(!wrong.contains(key) && wrong.contains(&esc(EN.order_not_found)));
        let strip = |h: &str| {
            h.replace(order_id.as_str(), "")
                .replace("ord_nosuchorder0000000", "")
        };
        assert_eq!(strip(&wrong), strip(&unknown), "indistinguishable");
    }

    /// The dashboard shows the plan's budget for the new key.
    async fn assert_dashboard(&self, key: &str) {
        let (status, html) = post_form(
            &self.base,
            "/dashboard",
            Some(&self.token),
            &[("key", key), ("csrf_token", &self.token)],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(element_text(&html, "budget"), Some("$1.00"));
        assert_eq!(element_text(&html, "remaining"), Some("$1.00"));
        assert!(html.contains("id=\"no-requests\""));
    }
}

#[tokio::test]
async fn demo_mode_banner_and_purchase_through_the_pages() {
    let plain = TestApp::spawn().await;
    let (status, _, _) = get(&plain.base, "/demo/paypal/approve?order_id=ord_x", None).await;
    assert_eq!(status, 404, "no approval page outside demo mode");

    let mut demo = start_demo().await;
    let base = demo.base.clone();
    assert_demo_pages(&base).await;

    // What checkout.js does: create the order with the CSRF header…
    let buyer = Buyer::create_order(&base).await;
    // …then the approval page shows the plan and amount, refuses an approval without the CSRF
    // token, approves with it and sends the buyer back to the checkout page…
    buyer.approve_on_the_demo_page().await;
    // …which captures (checkout.js) and gets the key.
    let key = buyer.capture().await;

    buyer.assert_order_look_up(&key).await;
    buyer.assert_dashboard(&key).await;

    // A top-up's approval page says the credit is added, and its "Cancel" goes back to the
    // top-up's checkout, not a purchase's (found by an independent check: paying there bought
    // a new key).
    let topup = Buyer::create(
        &base,
        serde_json::json!({"plan": "trial", "email": "buyer@example.com", "key": key}),
    )
    .await;
    let html = topup
        .get(&format!("/demo/paypal/approve?order_id={}", topup.order_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("href=\"/checkout/trial?cancelled=1&amp;topup=1\" id=\"approve-cancel\""),
        "{html}"
    );
    assert!(html.contains("adds the credit to your key"), "{html}");

    // Approving the same order again is refused with a page, not a crash.
    let resp = buyer.approve().await;
    assert!(
        resp.status().is_client_error() || resp.status() == 303,
        "{}",
        resp.status()
    );

    if let Some(d) = demo.daemon.take() {
        d.shutdown().await;
    }
}
