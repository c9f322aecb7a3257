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

#[tokio::test]
async fn demo_mode_banner_and_purchase_through_the_pages() {
    let plain = TestApp::spawn().await;
    let (status, _, _) = get(&plain.base, "/demo/paypal/approve?order_id=ord_x", None).await;
    assert_eq!(status, 404, "no approval page outside demo mode");

    let mut demo = start_demo().await;
    let base = demo.base.clone();
    for path in PAGES.iter().filter(|p| **p != "/checkout/team") {
        let (status, _, html) = get(&base, &format!("{path}?lang=zh"), None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            html.contains("id=\"demo-banner\"") && html.contains(&esc(ZH.demo_banner)),
            "{path}"
        );
    }
    let (_, _, html) = get(&base, "/checkout/trial", None).await;
    assert!(html.contains("id=\"pay-demo\"") && html.contains(&esc(EN.checkout_pay_demo)));
    assert!(
        !html.contains("paypal.com/sdk"),
        "no PayPal SDK in demo mode"
    );
    let (status, _, _) = get(&base, "/demo/paypal/approve?order_id=ord_unknown", None).await;
    assert_eq!(status, 404);

    // What checkout.js does: create the order with the CSRF header…
    let token = csrf_token(&base).await;
    let client = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{base}/api/orders"))
        .header(COOKIE, format!("mr_csrf={token}"))
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({"plan": "trial", "email": "Buyer@Example.com"}))
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

    // …then the approval page shows the plan and amount…
    let resp = client
        .get(format!("{base}/demo/paypal/approve?order_id={order_id}"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("id=\"approve\"") && html.contains("$1.00 USD") && html.contains("Trial")
    );
    assert!(html.contains(&format!("name=\"order_id\" value=\"{order_id}\"")));
    // …refuses an approval without the CSRF token…
    let resp = client
        .post(format!("{base}/demo/paypal/approve"))
        .header(COOKIE, &cookie)
        .form(&[("order_id", order_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // …approves with it and sends the buyer back to the checkout page…
    let resp = client
        .post(format!("{base}/demo/paypal/approve"))
        .header(COOKIE, &cookie)
        .form(&[("order_id", order_id.as_str()), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("/checkout/trial?order_id={order_id}&approved=1")
    );
    let resp = client
        .get(format!("{base}{location}"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("id=\"checkout-status\" role=\"status\">"),
        "resuming shows the status"
    );
    // …which captures (checkout.js) and gets the key.
    let resp = client
        .post(format!("{base}/api/orders/{order_id}/capture"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "paid", "{v}");
    let key = v["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-gateway-"));

    // The order look-up shows the key for the right email (any case)…
    let (status, html) = post_form(
        &base,
        "/order",
        Some(&token),
        &[
            ("order_id", &order_id),
            ("email", " buyer@example.COM "),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(element_text(&html, "api-key"), Some(key.as_str()));
    assert_eq!(element_text(&html, "order-id"), Some(order_id.as_str()));
    assert_eq!(element_text(&html, "order-status"), Some(EN.order_paid));
    assert!(html.contains("$1.00 USD"));
    // …and the same generic answer as an unknown order for a wrong email.
    let (_, wrong) = post_form(
        &base,
        "/order",
        Some(&token),
        &[
            ("order_id", &order_id),
            ("email", "other@example.com"),
            ("csrf_token", &token),
        ],
    )
    .await;
    let (_, unknown) = post_form(
        &base,
        "/order",
        Some(&token),
        &[
            ("order_id", "ord_nosuchorder0000000"),
            ("email", "other@example.com"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert!(!wrong.contains(&key) && wrong.contains(&esc(EN.order_not_found)));
    let strip = |h: &str| {
        h.replace(order_id.as_str(), "")
            .replace("ord_nosuchorder0000000", "")
    };
    assert_eq!(strip(&wrong), strip(&unknown), "indistinguishable");

    // The dashboard shows the plan's budget for the new key.
    let (status, html) = post_form(
        &base,
        "/dashboard",
        Some(&token),
        &[("key", &key), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(element_text(&html, "budget"), Some("$1.00"));
    assert_eq!(element_text(&html, "remaining"), Some("$1.00"));
    assert!(html.contains("id=\"no-requests\""));

    // Approving the same order again is refused with a page, not a crash.
    let resp = client
        .post(format!("{base}/demo/paypal/approve"))
        .header(COOKIE, &cookie)
        .form(&[("order_id", order_id.as_str()), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_client_error() || resp.status() == 303,
        "{}",
        resp.status()
    );

    if let Some(d) = demo.daemon.take() {
        d.shutdown().await;
    }
}
