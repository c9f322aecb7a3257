//! Buying a plan over HTTP against the simulated PayPal: create → approve → capture → key,
//! exactly once whatever repeats; tampered captures, forged webhooks, pending captures, refunds,
//! and order look-up.

use modelrelay::paypal::simulated::CaptureMode;
use modelrelay::store::orders::OrderStatus;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::common::{TestApp, body};

/// A browser: its cookies (CSRF, order tokens) and CSRF token.
pub(crate) struct Browser {
    pub(crate) cookies: Vec<(String, String)>,
    pub(crate) csrf: String,
    /// The address a reverse proxy says it is at (`X-Forwarded-For`), if any.
    pub(crate) forwarded_for: Option<String>,
}

impl Browser {
    /// Open a page to get the CSRF cookie and token, as the checkout page does.
    pub(crate) async fn open(app: &TestApp) -> Browser {
        Browser::open_from(app, None).await
    }

    /// [`Browser::open`], every request as from `ip` behind the daemon's reverse proxy
    /// (`server.behind_proxy`): per-IP limits count it apart.
    pub(crate) async fn open_from(app: &TestApp, ip: Option<String>) -> Browser {
        let mut get = app.http.get(format!("{}/pricing", app.base));
        if let Some(ip) = &ip {
            get = get.header("X-Forwarded-For", ip);
        }
        let resp = get.send().await.unwrap();
        let mut b = Browser {
            cookies: vec![],
            csrf: String::new(),
            forwarded_for: ip,
        };
        b.take_cookies(&resp);
        let html = resp.text().await.unwrap();
        let meta = html
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .expect("csrf meta");
        b.csrf = meta.split('"').next().unwrap().to_string();
        assert_eq!(
            b.cookie("mr_csrf"),
            Some(b.csrf.as_str()),
            "meta token equals the cookie"
        );
        b
    }

    fn take_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            self.cookies.push((k.to_string(), val.to_string()));
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn post_json(
        &mut self,
        app: &TestApp,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let mut post = app
            .http
            .post(format!("{}{path}", app.base))
            .header(COOKIE, self.cookie_header())
            .header("x-csrf-token", &self.csrf)
            .json(body);
        if let Some(ip) = &self.forwarded_for {
            post = post.header("X-Forwarded-For", ip);
        }
        let resp = post.send().await.unwrap();
        self.take_cookies(&resp);
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn create_order(
        &mut self,
        app: &TestApp,
        plan: &str,
        email: &str,
    ) -> (String, String) {
        let (status, v) = self
            .post_json(app, "/api/orders", &json!({"plan": plan, "email": email}))
            .await;
        assert_eq!(status, 200, "{v}");
        (
            v["order_id"].as_str().unwrap().to_string(),
            v["paypal_order_id"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) async fn capture(&mut self, app: &TestApp, order_id: &str) -> (u16, Value) {
        self.post_json(app, &format!("/api/orders/{order_id}/capture"), &json!({}))
            .await
    }
}

/// Keys minted for an order, from the database.
fn keys_of_order(app: &TestApp, order_id: &str) -> i64 {
    app.db()
        .query_row(
            "SELECT count(*) FROM keys WHERE order_id = ?1",
            [order_id],
            |r| r.get(0),
        )
        .unwrap()
}

pub(crate) fn order_status(app: &TestApp, order_id: &str) -> String {
    app.db()
        .query_row(
            "SELECT status FROM orders WHERE order_id = ?1",
            [order_id],
            |r| r.get(0),
        )
        .unwrap()
}

pub(crate) async fn deliver(app: &TestApp, webhook: (Vec<(String, String)>, String)) -> u16 {
    let (headers, raw) = webhook;
    let mut req = app
        .http
        .post(format!("{}/webhooks/paypal", app.base))
        .body(raw);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A Trial order captured as pending (PayPal holds the payment for review): its order id and
/// PayPal's, the capture's answer checked (pending, no key yet).
async fn pending_order(app: &TestApp, b: &mut Browser, email: &str) -> (String, String) {
    let (order_id, paypal_id) = b.create_order(app, "trial", email).await;
    app.pp().set_capture_mode(CaptureMode::Pending);
    assert!(app.pp().approve(&paypal_id));
    let (_, v) = b.capture(app, &order_id).await;
    assert_eq!(v["status"], "pending", "{v}");
    assert!(v["api_key"].is_null(), "{v}");
    (order_id, paypal_id)
}

#[tokio::test]
async fn a_purchase_yields_a_working_key_with_the_plans_budget() {
    let app = TestApp::spawn_shop_with(|c| {
        let p = c.plans.get_mut("starter").unwrap();
        p.price_usd = "7.00".parse().unwrap();
        p.budget_usd = "6.50".parse().unwrap();
    })
    .await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "starter", "Buyer@Example.com").await;
    assert!(order_id.starts_with("ord_"));
    // PayPal was asked for the plan's price, with our order id as invoice id.
    let pp_order = app.pp().order(&paypal_id).unwrap();
    assert_eq!(pp_order["purchase_units"][0]["amount"]["value"], "7.00");
    assert_eq!(
        pp_order["purchase_units"][0]["amount"]["currency_code"],
        "USD"
    );
    assert_eq!(
        pp_order["purchase_units"][0]["invoice_id"],
        order_id.as_str()
    );
    // Before approval, capture is refused and nothing is issued.
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(keys_of_order(&app, &order_id), 0);

    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid");
    let key = v["api_key"]
        .as_str()
        .expect("the key is shown on the spot")
        .to_string();
    assert!(key.starts_with("sk-gateway-"));
    let ks = app.key_state(&key);
    assert_eq!(ks.plan(), "starter");
    assert_eq!(ks.balance().budget.to_string(), "6.50");
    assert_eq!(ks.email.as_deref(), Some("Buyer@Example.com"));
    assert_eq!(order_status(&app, &order_id), "paid");
    // The key works.
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-flash", "hi [[sim reply=3 prompt=5]]"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_paid_order_yields_exactly_one_key_whatever_repeats() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    // Five captures at once (double clicks, retries).
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let http = app.http.clone();
        let url = format!("{}/api/orders/{order_id}/capture", app.base);
        let cookie = b.cookie_header();
        let csrf = b.csrf.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header(COOKIE, cookie)
                .header("x-csrf-token", csrf)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"], "paid");
        keys.insert(v["api_key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys.len(), 1, "every capture answer shows the same key");
    // The webhook arrives twice, and the page is reloaded (capture again).
    for _ in 0..2 {
        let hook = app
            .pp()
            .webhook("PAYMENT.CAPTURE.COMPLETED", &paypal_id)
            .unwrap();
        assert_eq!(deliver(&app, hook).await, 200);
    }
    let (_, v) = b.capture(&app, &order_id).await;
    assert_eq!(v["api_key"].as_str().unwrap(), keys.iter().next().unwrap());
    assert_eq!(keys_of_order(&app, &order_id), 1);
    let total_keys: i64 = app
        .db()
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total_keys, 1);
    assert_eq!(app.pp().counts().completed_captures, 1);
    assert_eq!(order_status(&app, &order_id), "paid");
}

#[tokio::test]
async fn a_capture_that_does_not_match_the_order_grants_nothing() {
    for mode in [
        CaptureMode::WrongAmount,
        CaptureMode::ShortAmount,
        CaptureMode::WrongCurrency,
        CaptureMode::Declined,
    ] {
        let app = TestApp::spawn_shop().await;
        let mut b = Browser::open(&app).await;
        let (order_id, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
        app.pp().set_capture_mode(mode);
        assert!(app.pp().approve(&paypal_id));
        let (status, v) = b.capture(&app, &order_id).await;
        assert_eq!(status, 200, "{mode:?}: {v}");
        // Money PayPal captured but that does not match is held for review (never "try
        // again"); a declined payment may be retried.
        let expected = if mode == CaptureMode::Declined {
            "failed"
        } else {
            "review"
        };
        assert_eq!(v["status"], expected, "{mode:?}: {v}");
        assert!(v["api_key"].is_null());
        assert_eq!(keys_of_order(&app, &order_id), 0, "{mode:?}");
        // The order says so too: a review is not a failed payment (the buyer was told the
        // payment had not gone through and to buy again, with PayPal holding the money),
        // and it keeps the capture's id for the operator's refund.
        assert_eq!(order_status(&app, &order_id), expected, "{mode:?}");
        let capture: Option<String> = app
            .db()
            .query_row(
                "SELECT paypal_capture_id FROM orders WHERE order_id = ?1",
                [&order_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(capture.is_some(), expected == "review", "{mode:?}");
        assert_eq!(app.daemon.as_ref().unwrap().state.keys.len(), 0);
        let state = &app.daemon.as_ref().unwrap().state;
        let shown = modelrelay::shop::orders::lookup_order(state, &order_id, "a@b.co")
            .await
            .unwrap();
        assert_eq!(shown.status.as_str(), expected, "{mode:?}");
        if expected == "review" {
            // Capturing again, or PayPal's COMPLETED event, leaves it held.
            for kind in ["PAYMENT.CAPTURE.COMPLETED"] {
                let hook = app.pp().webhook(kind, &paypal_id).unwrap();
                assert_eq!(deliver(&app, hook).await, 200, "{kind}");
                assert_eq!(order_status(&app, &order_id), "review", "{kind}");
            }
            let (_, v) = b.capture(&app, &order_id).await;
            assert_eq!(v["status"], "review", "{v}");
            assert!(
                v["message"].as_str().unwrap().contains("do not pay again"),
                "{v}"
            );
            assert_eq!(order_status(&app, &order_id), "review");
            // The operator refunds it in PayPal (what was captured, less than the price for a
            // short payment): refunded, and still no key.
            let refund = app
                .pp()
                .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_id)
                .unwrap();
            assert_eq!(deliver(&app, refund).await, 200);
            assert_eq!(order_status(&app, &order_id), "refunded");
            assert_eq!(keys_of_order(&app, &order_id), 0);
        }
    }
}

/// An order placed with an address an earlier checkout took and today's refuses (`x@[127.0.0.1]`)
/// still gets its key once paid, made without the address (it was never made: PayPal had the
/// money, the order stayed unpaid and every capture answered 503; found by an independent
/// check).
#[tokio::test]
async fn a_paid_order_whose_address_is_refused_today_still_gets_its_key() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "old@example.com").await;
    app.db()
        .execute(
            "UPDATE orders SET email = 'x@[127.0.0.1]' WHERE order_id = ?1",
            [&order_id],
        )
        .unwrap();
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid", "{v}");
    let key = v["api_key"].as_str().expect("the key").to_string();
    assert_eq!(keys_of_order(&app, &order_id), 1);
    let email: Option<String> = app
        .db()
        .query_row(
            "SELECT email FROM keys WHERE order_id = ?1",
            [&order_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(email, None);
    let ok = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// PayPal declining the buyer's payment method at capture (`INSTRUMENT_DECLINED`) is told as
/// such — 402 `payment_declined`, "choose another way to pay" — not as PayPal not answering
/// (a retry of which could never work); once the buyer approves another method, the same
/// order is captured and paid.
#[tokio::test]
async fn a_declined_payment_method_is_said_and_another_one_pays_the_same_order() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
    app.pp().set_capture_mode(CaptureMode::InstrumentDeclined);
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "payment_declined", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another way to pay"),
        "{v}"
    );
    assert_eq!(order_status(&app, &order_id), "created");
    assert_eq!(keys_of_order(&app, &order_id), 0);
    // Another method, approved in PayPal's window again.
    app.pp().set_capture_mode(CaptureMode::Completed);
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid");
    assert!(v["api_key"].as_str().is_some());
    assert_eq!(keys_of_order(&app, &order_id), 1);
}

#[tokio::test]
async fn a_forged_webhook_changes_nothing_and_a_refund_revokes_the_key() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = pending_order(&app, &mut b, "a@b.co").await;
    // A forged COMPLETED event: the signed event, its body tampered to claim a completion.
    let (headers, raw) = app.pp().complete_pending(&paypal_id).unwrap();
    let mut tampered: Value = serde_json::from_str(&raw).unwrap();
    tampered["id"] = json!("WH-FORGED-1");
    assert_eq!(
        deliver(&app, (headers.clone(), tampered.to_string())).await,
        400
    );
    // No signature headers at all.
    assert_eq!(deliver(&app, (vec![], raw.clone())).await, 400);
    assert_eq!(keys_of_order(&app, &order_id), 0);
    assert_eq!(order_status(&app, &order_id), "pending");
    // The genuine event completes it: the browser never came back, the webhook issues the key.
    assert_eq!(deliver(&app, (headers, raw)).await, 200);
    assert_eq!(keys_of_order(&app, &order_id), 1);
    assert_eq!(order_status(&app, &order_id), "paid");
    let view = modelrelay::shop::orders::lookup_order(
        &app.daemon.as_ref().unwrap().state,
        &order_id,
        "A@B.CO ",
    )
    .await
    .expect("look-up by id and email (case and spaces ignored)");
    assert_eq!(view.status, OrderStatus::Paid);
    let key = view.api_key.expect("the key of a paid order");
    let ok = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Refund: the key is revoked and the order marked.
    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_id)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(order_status(&app, &order_id), "refunded");
    let denied = app
        .chat(&key, &body("deepseek-v4-flash", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    // The customer's own view says nothing is left to spend (it showed the refunded budget
    // as remaining).
    let usage: Value = app
        .http
        .get(format!("{}/api/usage", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["status"], "revoked", "{usage}");
    assert_eq!(usage["remaining_usd"], "0.00", "{usage}");
}

#[tokio::test]
async fn the_key_is_shown_only_to_the_browser_that_bought_it_or_with_the_email() {
    let app = TestApp::spawn_shop().await;
    let mut buyer = Browser::open(&app).await;
    let (order_id, paypal_id) = buyer.create_order(&app, "trial", "me@example.com").await;
    assert!(app.pp().approve(&paypal_id));
    let (_, v) = buyer.capture(&app, &order_id).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    // Another browser that learnt the order id sees the status, not the key.
    let mut other = Browser::open(&app).await;
    let (status, v) = other.capture(&app, &order_id).await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "paid");
    assert!(v["api_key"].is_null(), "{v}");
    // Look-up: right email shows it; a wrong email and an unknown id look the same.
    let state = &app.daemon.as_ref().unwrap().state;
    assert_eq!(
        modelrelay::shop::orders::lookup_order(state, &order_id, "me@example.com")
            .await
            .unwrap()
            .api_key
            .as_deref(),
        Some(key.as_str())
    );
    assert!(
        modelrelay::shop::orders::lookup_order(state, &order_id, "you@example.com")
            .await
            .is_none()
    );
    // The id typed without its `ord_` finds it too.
    let bare = order_id.strip_prefix("ord_").unwrap();
    assert_eq!(
        modelrelay::shop::orders::lookup_order(state, bare, "me@example.com")
            .await
            .unwrap()
            .api_key
            .as_deref(),
        Some(key.as_str())
    );
    assert!(
        modelrelay::shop::orders::lookup_order(state, "ord_doesnotexist", "me@example.com")
            .await
            .is_none()
    );
    // Without the CSRF token nothing happens.
    let resp = app
        .http
        .post(format!("{}/api/orders", app.base))
        .json(&json!({"plan": "trial", "email": "x@y.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn bad_checkout_input_is_refused_clearly() {
    let app = TestApp::spawn_shop_with(|c| c.plans.get_mut("pro").unwrap().enabled = false).await;
    let mut b = Browser::open(&app).await;
    for (body, status, code) in [
        (
            json!({"plan": "trial", "email": "not-an-email"}),
            400,
            "invalid_email",
        ),
        (
            json!({"plan": "nosuch", "email": "a@b.co"}),
            404,
            "plan_not_found",
        ),
        (
            json!({"plan": "pro", "email": "a@b.co"}),
            404,
            "plan_not_found",
        ),
        (json!({"plan": 5}), 400, "invalid_request"),
    ]
    .into_iter()
    // Addresses the mailer could never send a receipt to (they were taken, and paid for).
    .chain(
        [
            "a,b@example.com",
            "bcc:evil@example.com",
            "x@example.com\u{202e}",
            // Invisible in a terminal, or looking like another address.
            "a\u{034f}b@example.com",
            "a\u{3164}b@example.com",
            "a@ex\u{180b}ample.com",
        ]
        .map(|email| {
            (
                json!({"plan": "trial", "email": email}),
                400,
                "invalid_email",
            )
        }),
    ) {
        let (got, v) = b.post_json(&app, "/api/orders", &body).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    let (status, v) = b.capture(&app, "ord_nosuchorder").await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(app.pp().counts().create_calls, 0);
}

#[tokio::test]
async fn the_operator_sees_orders_on_the_cli() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "cli@example.com").await;
    assert!(app.pp().approve(&paypal_id));
    let (_, v) = b.capture(&app, &order_id).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    let key_id = app.key_state(&key).id.clone();
    // tokio's Command: a blocking wait would stall the daemon running on this same runtime.
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelrelay"))
            .args(args)
            .arg("--socket")
            .arg(&app.socket)
            .env_remove("MODELRELAY_CONFIG")
            .current_dir(app.dir.path())
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["orders", "list", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let o = &list[0];
    assert_eq!(o["order_id"], order_id.as_str());
    assert_eq!(o["status"], "paid");
    assert_eq!(o["plan"], "trial");
    assert_eq!(o["amount_usd"], "1.00");
    assert_eq!(o["email"], "cli@example.com");
    assert_eq!(o["key_id"], key_id.as_str());
    assert!(o["created_at"].as_str().unwrap().ends_with('Z'));
    let (code, out, _) = run(&["orders", "show", &order_id]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("paid") && out.contains(&key_id), "{out}");
    assert!(!out.contains(&key), "the CLI never prints a sold key");
    let (code, _, err) = run(&["orders", "show", "ord_nope"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no order"), "{err}");
}

#[tokio::test]
async fn a_lost_webhook_is_recovered_by_the_order_look_up() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = pending_order(&app, &mut b, "lost@example.com").await;
    // PayPal completes the capture, but its webhook never reaches us.
    let _undelivered = app.pp().complete_pending(&paypal_id).unwrap();
    let state = &app.daemon.as_ref().unwrap().state;
    // A wrong email learns nothing and changes nothing.
    assert!(
        modelrelay::shop::orders::lookup_order(state, &order_id, "other@example.com")
            .await
            .is_none()
    );
    assert_eq!(order_status(&app, &order_id), "pending");
    // The buyer looks the order up: we ask PayPal, and the key is issued.
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "lost@example.com")
        .await
        .unwrap();
    assert_eq!(view.status, OrderStatus::Paid);
    let key = view.api_key.expect("key issued on reconciliation");
    assert_eq!(keys_of_order(&app, &order_id), 1);
    let ok = app
        .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// A look-up that finds PayPal holding the order's completed payment while this server cannot
/// record it (here another program holds the database's write lock; a full disk does the same)
/// says the payment is pending, not that the order is unpaid; once the database takes writes,
/// the next look-up issues the one key (found by an independent check: "This order has not
/// been paid" to a buyer who had).
#[tokio::test]
async fn a_payment_found_but_not_recorded_is_not_shown_as_unpaid() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = pending_order(&app, &mut b, "full@example.com").await;
    let _undelivered = app.pp().complete_pending(&paypal_id).unwrap();
    let (locked, view) = look_up_locked_then_free(&app, &order_id, "full@example.com").await;
    assert!(locked.unrecorded_payment, "{locked:?}");
    assert!(locked.api_key.is_none());
    assert!(!view.unrecorded_payment);
    assert_eq!(view.status, OrderStatus::Paid);
    assert!(view.api_key.is_some());
    assert_eq!(keys_of_order(&app, &order_id), 1);
}

/// The order look-up while another program holds the database's write lock (the payment
/// cannot be recorded, as on a full disk), then again once the lock is let go.
async fn look_up_locked_then_free(
    app: &TestApp,
    order_id: &str,
    email: &str,
) -> (
    modelrelay::shop::orders::OrderView,
    modelrelay::shop::orders::OrderView,
) {
    let state = &app.daemon.as_ref().unwrap().state;
    let lock = rusqlite::Connection::open(&app.db).unwrap();
    lock.execute_batch("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
        .unwrap();
    let locked = modelrelay::shop::orders::lookup_order(state, order_id, email)
        .await
        .unwrap();
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    let free = modelrelay::shop::orders::lookup_order(state, order_id, email)
        .await
        .unwrap();
    (locked, free)
}

/// The same when the look-up itself captures an approved order at PayPal and cannot record it:
/// the page whose own request just took the money said "not paid" (found by a re-check).
#[tokio::test]
async fn a_payment_the_look_up_takes_but_cannot_record_is_not_shown_as_unpaid() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "took@example.com").await;
    assert!(app.pp().approve(&paypal_id));
    let (locked, view) = look_up_locked_then_free(&app, &order_id, "took@example.com").await;
    assert!(locked.unrecorded_payment, "{locked:?}");
    assert_eq!(view.status, OrderStatus::Paid);
    assert!(view.api_key.is_some());
    assert_eq!(keys_of_order(&app, &order_id), 1);
    assert_eq!(app.pp().counts().completed_captures, 1);
}

/// A buyer who approved in PayPal's window but whose tab closed before our capture: the order
/// look-up captures it (as the checkout would have) and shows the key — it said "awaiting
/// payment, wait a minute" for good. An order not approved is not captured.
#[tokio::test]
async fn an_approved_order_never_captured_is_captured_by_the_look_up() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let state = &app.daemon.as_ref().unwrap().state;
    let (unapproved, _) = b.create_order(&app, "trial", "late@example.com").await;
    let view = modelrelay::shop::orders::lookup_order(state, &unapproved, "late@example.com")
        .await
        .unwrap();
    assert_eq!(view.status, OrderStatus::Created);
    assert_eq!(app.pp().counts().completed_captures, 0);

    let (order_id, paypal_id) = b.create_order(&app, "trial", "late@example.com").await;
    assert!(app.pp().approve(&paypal_id));
    // The tab closed here: no capture call from the browser.
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "late@example.com")
        .await
        .unwrap();
    assert_eq!(view.status, OrderStatus::Paid);
    assert!(view.api_key.is_some());
    assert_eq!(keys_of_order(&app, &order_id), 1);
    assert_eq!(app.pp().counts().completed_captures, 1);
    // Looking again changes nothing.
    let again = modelrelay::shop::orders::lookup_order(state, &order_id, "late@example.com")
        .await
        .unwrap();
    assert_eq!(again.api_key, view.api_key);
    assert_eq!(app.pp().counts().completed_captures, 1);
}

/// What `checkout.js` and API clients read, byte for byte: `{"error":{message,type,param,code}}`.
fn error_body(message: &str, kind: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

#[tokio::test]
async fn the_storefronts_json_refusals_keep_their_exact_bodies() {
    let app = TestApp::spawn_shop().await;
    let expect = async |resp: reqwest::Response, status: u16, body: String| {
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.text().await.unwrap(), body);
    };
    // Forged requests are refused before the per-IP limit, so they do not use it up.
    for _ in 0..3 {
        let resp = app
            .http
            .post(format!("{}/api/orders", app.base))
            .json(&json!({"plan": "trial", "email": "x@y.co"}))
            .send()
            .await
            .unwrap();
        let csrf = error_body(
            "Reload the page and try again.",
            "invalid_request_error",
            "csrf_failed",
        );
        expect(resp, 403, csrf).await;
    }
    let mut b = Browser::open(&app).await;
    let (status, v) = b.post_json(&app, "/api/orders", &json!({"plan": 5})).await;
    assert_eq!(status, 400);
    assert_eq!(
        v.to_string(),
        error_body(
            "Send a JSON body {\"plan\", \"email\"}.",
            "invalid_request_error",
            "invalid_request"
        )
    );
    for _ in 1..10 {
        let (status, _) = b.post_json(&app, "/api/orders", &json!({"plan": 5})).await;
        assert_eq!(status, 400);
    }
    let (status, v) = b.post_json(&app, "/api/orders", &json!({"plan": 5})).await;
    assert_eq!(status, 429, "the 11th order within a minute");
    assert_eq!(
        v.to_string(),
        error_body(
            "Too many orders from your address. Wait a minute and try again.",
            "rate_limit_error",
            "rate_limit_exceeded"
        )
    );
    let (status, v) = b.capture(&app, "ord_nosuchorder").await;
    assert_eq!(status, 404);
    assert_eq!(
        v.to_string(),
        error_body("No such order.", "invalid_request_error", "order_not_found")
    );
    // /api/usage refuses a missing key in the gateway's words.
    let resp = app
        .http
        .get(format!("{}/api/usage", app.base))
        .send()
        .await
        .unwrap();
    let missing = error_body(
        "Missing API key. Send it as `Authorization: Bearer sk-gateway-…`.",
        "authentication_error",
        "invalid_api_key",
    );
    expect(resp, 401, missing).await;
    // PayPal gets a word, not JSON.
    let event = json!({"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}});
    let resp = app
        .http
        .post(format!("{}/webhooks/paypal", app.base))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "signature not verified");
}

/// An attached console hears an order that goes pending, is held for review or fails, as the
/// order is stored (its Orders view kept showing `created`; found by an independent check).
#[tokio::test]
async fn an_attached_console_hears_orders_going_pending_to_review_or_failed() {
    let app = TestApp::spawn_shop().await;
    let (mut sub, _) = crate::activity::Sub::connect(&app).await;
    let mut b = Browser::open(&app).await;
    for (mode, want) in [
        (CaptureMode::Pending, OrderStatus::Pending),
        (CaptureMode::WrongAmount, OrderStatus::Review),
        (CaptureMode::Declined, OrderStatus::Failed),
    ] {
        let (order_id, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
        app.pp().set_capture_mode(mode);
        assert!(app.pp().approve(&paypal_id));
        let _ = b.capture(&app, &order_id).await;
        let order = loop {
            if let modelrelay::activity::ActivityEvent::OrderChanged { order, .. } =
                sub.event().await
                && order.order_id == order_id
            {
                break order;
            }
        };
        assert_eq!(order.status, want, "{mode:?}");
        assert_eq!(order.paypal_order_id.as_deref(), Some(paypal_id.as_str()));
        assert_eq!(order_status(&app, &order_id), want.as_str());
        assert_eq!(keys_of_order(&app, &order_id), 0);
    }
}

/// Two captures of one order at once (the return page reloaded while the first is at PayPal):
/// the second waits for the first and gets its answer, the key; PayPal is asked once, never
/// two overlapping captures (it may fail the second, and the buyer read "PayPal is not answering" while the
/// first went through; found by an independent check).
#[tokio::test]
async fn two_captures_of_one_order_at_once_both_show_the_key() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    app.pp()
        .set_capture_delay(std::time::Duration::from_millis(400));
    // The same browser twice (two tabs, or a reload).
    let mut again = Browser {
        cookies: b.cookies.clone(),
        csrf: b.csrf.clone(),
        forwarded_for: None,
    };
    let ((s1, v1), (s2, v2)) =
        tokio::join!(b.capture(&app, &order_id), again.capture(&app, &order_id));
    assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
    assert_eq!(v1["status"], "paid", "{v1}");
    assert_eq!(v2["status"], "paid", "{v2}");
    assert!(v1["api_key"].as_str().is_some());
    assert_eq!(v1["api_key"], v2["api_key"]);
    assert_eq!(keys_of_order(&app, &order_id), 1);
    let counts = app.pp().counts();
    assert_eq!(counts.completed_captures, 1);
    // The second took the first's answer once its turn came: PayPal is asked once (each
    // waiter asked again, under the same request id; found by an independent check).
    assert_eq!(counts.captures, 1, "PayPal asked once");
}

/// An order whose pending capture was recorded has been paid for: a 404 from PayPal about it
/// (PayPal's settings changed since it was made: another app, another `paypal.env`) must not
/// tell the buyer "nothing was charged, pay again".
#[tokio::test]
async fn a_pending_order_paypal_does_not_know_is_not_said_to_be_uncharged() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = pending_order(&app, &mut b, "held@b.co").await;
    // As if the PayPal now asked were not the one that took the payment.
    app.unknown_at_paypal(&order_id);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_ne!(v["error"]["code"], "order_expired", "{v}");
    assert_eq!(status, 502, "{v}");
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nothing was charged"),
        "{v}"
    );
    assert_eq!(keys_of_order(&app, &order_id), 0);
    assert_eq!(order_status(&app, &order_id), "pending");
}

/// An order PayPal no longer knows (its 404: `RESOURCE_NOT_FOUND`, issue `INVALID_RESOURCE_ID`)
/// can never be captured: the buyer is told so (409 `order_expired`, pay again), not "PayPal is
/// not answering, try again" (502 `payment_provider_error`) for ever.
#[tokio::test]
async fn capturing_an_order_paypal_does_not_know_says_it_expired() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = b.create_order(&app, "trial", "gone@b.co").await;
    // As if PayPal had forgotten the order (a demo restarted, an order PayPal dropped).
    app.unknown_at_paypal(&order_id);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "order_expired", "{v}");
    assert_eq!(keys_of_order(&app, &order_id), 0);
    assert_eq!(order_status(&app, &order_id), "created");
}
