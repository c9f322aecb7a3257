//! Top-ups over HTTP against the simulated PayPal: the same key's budget grows once whatever
//! repeats (concurrent captures, duplicate webhooks), its plan moves up to a dearer plan and
//! never down, an unknown or revoked key is refused before PayPal is asked, a refunded top-up
//! takes back what is left of its credit without revoking the key, and every change is in the
//! key's budget history.

use modelrelay::activity::protocol::{Request, Response};
use reqwest::header::COOKIE;
use serde_json::{Value, json};

use modelrelay::shop::i18n::SELF_EN;

use crate::common::{TestApp, body};
use crate::pages::{element_text, esc};
use crate::shop_orders::{Browser, deliver, order_status};

const FLASH: &str = "deepseek-v4-flash";
const PRO: &str = "deepseek-v4-pro";

/// A key minted by the operator for `buyer@example.com`.
async fn key_on(app: &TestApp, plan: &str, budget: &str) -> String {
    app.create_key(plan, Some(budget)).await
}

/// Create a top-up order of `key` on `plan`, approved at PayPal: `(order id, PayPal id)`.
pub(crate) async fn approved_top_up(
    app: &TestApp,
    b: &mut Browser,
    plan: &str,
    key: &str,
) -> (String, String) {
    let (status, v) = b
        .post_json(
            app,
            "/api/orders",
            &json!({"plan": plan, "email": "buyer@example.com", "key": key}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let order_id = v["order_id"].as_str().unwrap().to_string();
    let paypal_id = v["paypal_order_id"].as_str().unwrap().to_string();
    assert!(app.pp().approve(&paypal_id));
    (order_id, paypal_id)
}

/// `keys show --json`'s document for a key, over the admin socket.
async fn shown(app: &TestApp, key: &str) -> Value {
    match app
        .admin(Request::KeysShow {
            key: key.to_string(),
        })
        .await
    {
        Response::Key { key } => serde_json::to_value(key).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn history(v: &Value) -> Vec<(String, String)> {
    v["budget_history"]
        .as_array()
        .expect("budget_history")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["amount_usd"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_top_up_grows_the_same_key_once_whatever_repeats_and_upgrades_its_plan() {
    let app = TestApp::spawn_shop_with(|c| c.plans.get_mut("pro").unwrap().rpm = 90).await;
    let key = key_on(&app, "trial", "1.00").await;
    // Before: the trial plan has no pro model.
    let refused = app.chat(&key, &body(PRO, "hi")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = approved_top_up(&app, &mut b, "pro", &key).await;

    // Five captures at once and two webhook deliveries: one increase.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let http = app.http.clone();
        let url = format!("{}/api/orders/{order_id}/capture", app.base);
        let (cookie, csrf) = (b.cookie_header(), b.csrf.clone());
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
    let prefix = app.key_state(&key).prefix();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"], "paid", "{v}");
        assert_eq!(v["order_id"], order_id.as_str());
        assert!(v["api_key"].is_null(), "a top-up never shows a key: {v}");
        assert_eq!(v["topped_up"], prefix.as_str());
        assert!(prefix.starts_with("sk-gateway-") && prefix.ends_with('…'));
    }
    for _ in 0..2 {
        let hook = app
            .pp()
            .webhook("PAYMENT.CAPTURE.COMPLETED", &paypal_id)
            .unwrap();
        assert_eq!(deliver(&app, hook).await, 200);
    }
    assert_eq!(app.pp().counts().completed_captures, 1);
    assert_eq!(order_status(&app, &order_id), "paid");
    // Another browser that learnt the order id sees the status, not which key was credited
    // (found by an independent check: it saw the key's prefix).
    let mut other = Browser::open(&app).await;
    let (status, v) = other.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid", "{v}");
    assert!(v["topped_up"].is_null() && v["api_key"].is_null(), "{v}");

    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.to_string(), "51.00");
    assert_eq!(ks.plan(), "pro");
    // The same key keeps working, now with the pro plan's models and RPM.
    let ok = app
        .chat(&key, &body(PRO, "hi [[sim reply=2 prompt=3]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "90");
    let total_keys: i64 = app
        .db()
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total_keys, 1);

    // The history shows the grant and the one top-up; the orders show the kind and the key.
    let v = shown(&app, &key).await;
    assert_eq!(
        history(&v),
        [
            ("grant".to_string(), "1.00".to_string()),
            ("top_up".to_string(), "50.00".to_string())
        ]
    );
    assert_eq!(v["budget_history"][1]["order_id"], order_id.as_str());
    match app.admin(Request::OrdersList { limit: None }).await {
        Response::Orders { orders } => {
            assert_eq!(orders.len(), 1);
            let o = serde_json::to_value(&orders[0]).unwrap();
            assert_eq!(o["kind"], "top_up");
            assert_eq!(o["key_id"], ks.id.as_str());
            assert_eq!(o["topped_up_key_id"], ks.id.as_str());
            assert_eq!(o["status"], "paid");
        }
        other => panic!("{other:?}"),
    }
    // The order look-up names the key by its prefix only.
    let state = &app.daemon.as_ref().unwrap().state;
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "buyer@example.com")
        .await
        .unwrap();
    assert_eq!(view.api_key, None);
    assert_eq!(view.topped_up.as_deref(), Some(prefix.as_str()));
}

#[tokio::test]
async fn a_cheaper_top_up_keeps_the_plan_and_bad_keys_are_refused_before_paypal() {
    let app = TestApp::spawn_shop().await;
    let key = key_on(&app, "pro", "2.00").await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = approved_top_up(&app, &mut b, "trial", &key).await;
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("paid")), "{v}");
    let ks = app.key_state(&key);
    assert_eq!(ks.plan(), "pro");
    assert_eq!(ks.balance().budget.to_string(), "3.00");
    let creates = app.pp().counts().create_calls;

    let revoked = key_on(&app, "trial", "1.00").await;
    match app
        .admin(Request::KeysRevoke {
            key: revoked.clone(),
        })
        .await
    {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    for (k, code) in [
        (
            "sk-gateway-0000000000000000000000000000000000000000".to_string(),
            "unknown_key",
        ),
        ("not a key".to_string(), "unknown_key"),
        // Left blank: a top-up without its key, not a purchase (found by an independent
        // check: it was sold as a new key).
        (String::new(), "unknown_key"),
        ("   ".to_string(), "unknown_key"),
        (revoked, "key_revoked"),
    ] {
        let (status, v) = b
            .post_json(
                &app,
                "/api/orders",
                &json!({"plan": "trial", "email": "a@b.co", "key": k}),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    for grant in ["", "  "] {
        let (status, v) = b
            .post_json(
                &app,
                "/api/orders",
                &json!({"plan": "trial", "email": "a@b.co", "key_grant": grant}),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["code"], "grant_expired", "{v}");
    }
    assert_eq!(
        app.pp().counts().create_calls,
        creates,
        "PayPal was not asked"
    );
}

#[tokio::test]
async fn a_refunded_top_up_takes_back_what_is_left_of_it_and_keeps_the_key() {
    let app = TestApp::spawn_shop_with(|c| {
        let s = c.plans.get_mut("starter").unwrap();
        s.budget_usd = "0.0002".parse().unwrap();
    })
    .await;
    let key = key_on(&app, "trial", "0.0001").await;
    let mut b = Browser::open(&app).await;

    // Refunded before any of it was spent: exactly its credit goes, the plan comes back.
    let (order_a, paypal_a) = approved_top_up(&app, &mut b, "starter", &key).await;
    b.capture(&app, &order_a).await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 300_000);
    assert_eq!(ks.plan(), "starter");
    for _ in 0..2 {
        let refund = app
            .pp()
            .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_a)
            .unwrap();
        assert_eq!(deliver(&app, refund).await, 200);
    }
    assert_eq!(order_status(&app, &order_a), "refunded");
    assert_eq!(ks.balance().budget.nanos(), 100_000);
    assert_eq!(ks.plan(), "trial");
    assert_eq!(
        refunded_shown(&app, &order_a).await,
        "5.00",
        "the Starter price, all of it"
    );
    assert_eq!(
        app.chat(&key, &body(FLASH, "hi [[sim reply=1 prompt=1]]"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the key keeps working"
    );

    // Refunded after most of it was spent: what is left goes, never below zero, the key is
    // exhausted (402), not revoked (401).
    let (order_b, paypal_b) = approved_top_up(&app, &mut b, "starter", &key).await;
    b.capture(&app, &order_b).await;
    let spend = app
        .chat(&key, &body(FLASH, "hi [[sim reply=300 prompt=10]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(spend.status(), 200);
    let left = ks.balance().remaining().nanos();
    assert!(left > 0 && left < 200_000, "{left}");
    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_b)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    let bal = ks.balance();
    assert_eq!(bal.remaining().nanos(), 0);
    assert!(bal.budget >= bal.spent);
    assert_eq!(ks.status().as_str(), "exhausted");
    let after = app.chat(&key, &body(FLASH, "hi")).send().await.unwrap();
    assert_eq!(after.status(), 402);

    let v = shown(&app, &key).await;
    let h = history(&v);
    assert_eq!(h.len(), 5, "{h:?}");
    assert_eq!(h[2], ("refund".to_string(), "-0.0002".to_string()));
    assert_eq!(h[4].0, "refund");
    assert_eq!(
        h[4].1,
        format!("-{}", modelrelay::money::Usd::from_nanos(left))
    );
    // The database agrees with memory.
    let (budget, spent): (i64, i64) = app
        .db()
        .query_row("SELECT budget_nanos, spent_nanos FROM keys", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(budget, bal.budget.nanos());
    assert_eq!(spent, bal.spent.nanos());
}

/// Refunding an upgrading top-up moves the key to the dearest plan still paid for: not to the
/// plan of the refunded top-up's own "before" when that was itself refunded, and not off a
/// plan another top-up still pays for (found by an independent check: a key kept `standard`
/// after both upgrades were refunded, and lost `standard` while a second one was paid).
#[tokio::test]
async fn a_refunded_upgrade_leaves_the_key_on_the_dearest_plan_still_paid() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let refund = |paypal: String| {
        let app = &app;
        async move {
            let event = app
                .pp()
                .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal)
                .unwrap();
            assert_eq!(deliver(app, event).await, 200);
        }
    };

    // trial → standard → pro; the standard top-up refunded first, then the pro one.
    let key = key_on(&app, "trial", "0.01").await;
    let ks = app.key_state(&key);
    let (standard, paypal_standard) = approved_top_up(&app, &mut b, "standard", &key).await;
    b.capture(&app, &standard).await;
    let (pro, paypal_pro) = approved_top_up(&app, &mut b, "pro", &key).await;
    b.capture(&app, &pro).await;
    assert_eq!(ks.plan(), "pro");
    refund(paypal_standard).await;
    assert_eq!(ks.plan(), "pro", "pro is still paid for");
    refund(paypal_pro).await;
    assert_eq!(
        ks.plan(),
        "trial",
        "nothing above trial is paid for any more"
    );
    assert_eq!(
        shown(&app, &key).await["plan"],
        "trial",
        "the database agrees"
    );

    // trial → standard, standard again; the first refunded: the second still pays for it.
    let key = key_on(&app, "trial", "0.01").await;
    let ks = app.key_state(&key);
    let (first, paypal_first) = approved_top_up(&app, &mut b, "standard", &key).await;
    b.capture(&app, &first).await;
    let (second, paypal_second) = approved_top_up(&app, &mut b, "standard", &key).await;
    b.capture(&app, &second).await;
    refund(paypal_first).await;
    assert_eq!(ks.plan(), "standard", "the second top-up still pays for it");
    refund(paypal_second).await;
    assert_eq!(ks.plan(), "trial");
    assert_eq!(shown(&app, &key).await["plan"], "trial");

    // A bought pro key topped up with trial credit: its purchase refunded (the key kept for
    // the paid top-up), it is on trial — it kept pro's models for $1.
    let (bought, paypal_bought) = b.create_order(&app, "pro", "buyer@example.com").await;
    assert!(app.pp().approve(&paypal_bought));
    let (_, v) = b.capture(&app, &bought).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    let ks = app.key_state(&key);
    let (small, _) = approved_top_up(&app, &mut b, "trial", &key).await;
    b.capture(&app, &small).await;
    assert_eq!(ks.plan(), "pro");
    refund(paypal_bought).await;
    assert_eq!(ks.plan(), "trial", "only the trial top-up is paid");
    assert_eq!(shown(&app, &key).await["plan"], "trial");

    // A bought standard key upgraded to pro, both refunded (nothing paid, no credit left),
    // then topped up with trial credit: on trial, not on the refunded pro.
    let (bought, paypal_bought) = b.create_order(&app, "standard", "buyer@example.com").await;
    assert!(app.pp().approve(&paypal_bought));
    let (_, v) = b.capture(&app, &bought).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    let ks = app.key_state(&key);
    let (pro, paypal_pro) = approved_top_up(&app, &mut b, "pro", &key).await;
    b.capture(&app, &pro).await;
    refund(paypal_bought).await;
    assert_eq!(ks.plan(), "pro");
    refund(paypal_pro).await;
    assert_eq!(ks.balance().remaining().nanos(), 0);
    let (small, _) = approved_top_up(&app, &mut b, "trial", &key).await;
    b.capture(&app, &small).await;
    assert_eq!(ks.plan(), "trial", "the only order paid");
    assert_eq!(shown(&app, &key).await["plan"], "trial");
}

/// A shop whose trial plan grants 0.0001 and starter 0.0002.
async fn spawn_small_plans() -> TestApp {
    TestApp::spawn_shop_with(|c| {
        c.plans.get_mut("trial").unwrap().budget_usd = "0.0001".parse().unwrap();
        c.plans.get_mut("starter").unwrap().budget_usd = "0.0002".parse().unwrap();
    })
    .await
}

/// A trial key bought, then topped up with starter (budget 0.0003): `(purchase, its PayPal id,
/// the key, the top-up)`.
async fn bought_and_topped_up(app: &TestApp, b: &mut Browser) -> (String, String, String, String) {
    let (order_p, paypal_p) = b.create_order(app, "trial", "buyer@example.com").await;
    assert!(app.pp().approve(&paypal_p));
    let (_, v) = b.capture(app, &order_p).await;
    let key = v["api_key"].as_str().expect("a key").to_string();
    let (order_t, _) = approved_top_up(app, b, "starter", &key).await;
    b.capture(app, &order_t).await;
    (order_p, paypal_p, key, order_t)
}

/// PayPal's order id of one of ours.
fn paypal_of(app: &TestApp, order_id: &str) -> String {
    app.db()
        .query_row(
            "SELECT paypal_order_id FROM orders WHERE order_id = ?1",
            [order_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// A bought key, then topped up: refunding the purchase takes back the purchase's own credit
/// and leaves the key working with the top-up's (it used to revoke the key, top-up and all).
/// A purchase whose key has no paid top-up left (its only one refunded) still revokes it.
#[tokio::test]
async fn a_purchase_refund_keeps_a_topped_up_key_and_takes_back_only_its_own_credit() {
    let app = spawn_small_plans().await;
    let mut b = Browser::open(&app).await;
    let (order_p, paypal_p, key, order_t) = bought_and_topped_up(&app, &mut b).await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 300_000);

    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_p)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(order_status(&app, &order_p), "refunded");
    assert_eq!(order_status(&app, &order_t), "paid");
    assert_eq!(ks.status().as_str(), "active");
    assert_eq!(
        ks.balance().budget.nanos(),
        200_000,
        "the purchase's 0.0001 back"
    );
    assert_eq!(ks.plan(), "starter");
    let ok = app
        .chat(&key, &body(FLASH, "hi [[sim reply=1 prompt=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the key keeps working on its top-up");
    let h = history(&shown(&app, &key).await);
    assert_eq!(
        h,
        [
            ("purchase".to_string(), "0.0001".to_string()),
            ("top_up".to_string(), "0.0002".to_string()),
            ("refund".to_string(), "-0.0001".to_string()),
        ]
    );
    let (budget, status): (i64, String) = app
        .db()
        .query_row(
            "SELECT budget_nanos, status FROM keys WHERE order_id = ?1",
            [&order_p],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((budget, status.as_str()), (200_000, "active"));
    // The order's look-up says the key stays, not that it was revoked.
    let token = crate::pages::csrf_token(&app.base).await;
    let (code, html) = crate::pages::post_form(
        &app.base,
        "/order?lang=en",
        Some(&token),
        &[
            ("order_id", &order_p),
            ("email", "buyer@example.com"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(code, 200);
    let kept = crate::pages::esc(modelrelay::shop::i18n::SELF_EN.order_note_refunded_kept);
    assert!(html.contains(&kept), "{html}");
    let revoked = crate::pages::esc(modelrelay::shop::i18n::EN.order_note_refunded);
    assert!(!html.contains(&revoked));

    // A second bought key whose top-up was refunded first: its purchase refund revokes it.
    let (order_q, paypal_q, key_q, order_u) = bought_and_topped_up(&app, &mut b).await;
    let paypal_u = paypal_of(&app, &order_u);
    for paypal in [&paypal_u, &paypal_q] {
        let refund = app
            .pp()
            .webhook("PAYMENT.CAPTURE.REFUNDED", paypal)
            .unwrap();
        assert_eq!(deliver(&app, refund).await, 200);
    }
    assert_eq!(order_status(&app, &order_q), "refunded");
    let view = modelrelay::shop::orders::lookup_order(
        &app.daemon.as_ref().unwrap().state,
        &order_q,
        "buyer@example.com",
    )
    .await
    .unwrap();
    assert!(!view.key_kept);
    let denied = app.chat(&key_q, &body(FLASH, "hi")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "revoked");
    // The top-up's own look-up no longer says its key works on.
    let token = crate::pages::csrf_token(&app.base).await;
    let (code, html) = crate::pages::post_form(
        &app.base,
        "/order?lang=en",
        Some(&token),
        &[
            ("order_id", &order_u),
            ("email", "buyer@example.com"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(code, 200);
    let se = &modelrelay::shop::i18n::SELF_EN;
    let revoked = crate::pages::esc(se.order_note_refunded_topup_revoked);
    assert!(html.contains(&revoked), "{html}");
    assert!(!html.contains(&crate::pages::esc(se.order_note_refunded_topup)));
}

/// A bought and topped-up key the operator revoked: its purchase refund takes back what is
/// left of the purchase's credit and the key stays revoked — with no "low balance" notice about
/// a key that cannot be used (the refund leaves it below a fifth of its budget).
#[tokio::test]
async fn a_revoked_key_stays_revoked_and_gets_no_notice_when_its_purchase_is_refunded() {
    let app = spawn_small_plans().await;
    let mut b = Browser::open(&app).await;
    let (order_p, paypal_p, key, _) = bought_and_topped_up(&app, &mut b).await;
    let ks = app.key_state(&key);
    // Spend down to between a fifth and a third of the budget (0.0003): not low yet.
    while ks.balance().remaining().nanos() > 100_000 {
        let r = app
            .chat(&key, &body(FLASH, "hi [[sim reply=50 prompt=1]]"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        ks.balance().remaining().nanos() > 60_000,
        "{:?}",
        ks.balance()
    );
    assert!(!ks.is_low());
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("revoke failed: {other:?}"),
    }
    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_p)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(order_status(&app, &order_p), "refunded");
    assert_eq!(ks.status().as_str(), "revoked");
    assert!(ks.is_low(), "{:?}", ks.balance());
    assert!(
        ks.first_crossing(modelrelay::keys::Notice::LowBalance),
        "no low-balance notice was queued for a revoked key"
    );
}

/// A refund that arrives while requests hold most of the key's money: it takes what is
/// available at once, and what the requests give back as they settle (what they do not spend),
/// until the top-up's credit is all taken back — never more, never what they spend, and the
/// database agrees. Held money used to stay with the customer.
#[tokio::test]
async fn a_refund_takes_back_what_requests_in_flight_held_once_they_settle() {
    let app = TestApp::spawn_shop_with(|c| {
        let s = c.plans.get_mut("starter").unwrap();
        s.budget_usd = "0.02".parse().unwrap();
    })
    .await;
    let key = key_on(&app, "trial", "0.0001").await;
    let mut b = Browser::open(&app).await;
    let (order, paypal) = approved_top_up(&app, &mut b, "starter", &key).await;
    b.capture(&app, &order).await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 20_100_000);

    // A slow stream holding nearly all of it.
    let mut req = body(FLASH, "hi [[sim reply=20 prompt=10 delay_ms=50]]");
    req["stream"] = true.into();
    req["max_tokens"] = 32768.into();
    let resp = app.chat(&key, &req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let held = ks.balance().held.nanos();
    assert!(held > 19_000_000, "{held}");
    let available = ks.available().nanos();

    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 20_100_000 - available);
    assert_eq!(ks.available().nanos(), 0);
    // A console attached now hears the rest taken back when the stream settles.
    let (mut console, _) = crate::activity::Sub::connect(&app).await;

    let rid = crate::common::request_id(&resp);
    let _ = resp.text().await.unwrap();
    let row = app.wait_ledger_row(&rid).await;
    let heard = async {
        loop {
            if let modelrelay::activity::protocol::ActivityEvent::KeyUpdated { key, .. } =
                console.event().await
                && key.budget_usd.nanos() == 100_000
            {
                return key.spent_usd.nanos();
            }
        }
    };
    let spent = tokio::time::timeout(std::time::Duration::from_secs(10), heard)
        .await
        .expect("consoles hear the budget the refund left");
    assert_eq!(spent, row.cost.nanos(), "its spend with this charge");
    assert_eq!(row.measured.as_str(), "provider");
    let cost = row.cost.nanos();
    assert!(cost > 0 && cost < 100_000, "{cost}");
    // The whole credit is back: the key has its own budget, less what it spent.
    let bal = ks.balance();
    assert_eq!(bal.budget.nanos(), 100_000);
    assert_eq!(bal.held.nanos(), 0);
    assert_eq!(bal.remaining().nanos(), 100_000 - cost);
    let doc = shown(&app, &key).await;
    // Every line of the refund names its order, the ones taken as requests settled too.
    for line in doc["budget_history"].as_array().unwrap() {
        if line["kind"] == "refund" {
            assert_eq!(line["order_id"], order.as_str(), "{line}");
        }
    }
    let h = history(&doc);
    let refunded: i64 = h
        .iter()
        .filter(|(k, _)| k == "refund")
        .map(|(_, usd)| usd.parse::<modelrelay::money::Usd>().unwrap().nanos())
        .sum();
    assert_eq!(refunded, -20_000_000, "{h:?}");
    let (budget, spent): (i64, i64) = app
        .db()
        .query_row("SELECT budget_nanos, spent_nanos FROM keys", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((budget, spent), (100_000, cost));
}

/// A partial refund (PayPal refunds part of the price) takes back the same share of the
/// order's credit — rounded down, so the customer keeps any fraction — and nothing else: the
/// key is not revoked and the order stays paid. A second partial refund takes its share too;
/// the refund of the rest then does what a whole refund does (the key is revoked: it had no
/// top-up), and nothing is taken twice. A replayed partial refund changes nothing.
#[tokio::test]
async fn a_partial_refund_takes_back_its_share_of_the_credit_and_keeps_the_key() {
    let (app, order, paypal, key) = small_starter_bought().await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 300_000);

    // $0.30 of $5.00 back: 6 % of the credit, 18 000 nano-USD.
    let part = app
        .pp()
        .refund_part(&paypal, "0.30".parse().unwrap())
        .expect("a partial refund");
    assert_eq!(deliver(&app, part.clone()).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 282_000);
    assert_eq!(ks.status().as_str(), "active");
    assert_eq!(order_status(&app, &order), "paid");
    // The same event again: already processed, nothing more taken.
    assert_eq!(deliver(&app, part.clone()).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 282_000);
    // What was given back shows: to the operator, in revenue, and to the buyer.
    assert_eq!(refunded_shown(&app, &order).await, "0.30");
    let socket = app.socket.to_str().unwrap();
    let listed = crate::cli::run_in(app.dir.path(), &["orders", "list", "--socket", socket], &[])
        .await
        .stdout;
    let row = listed.lines().find(|l| l.starts_with(&order)).unwrap();
    assert!(row.contains(" part-ref "), "{row}");
    let order_card = crate::cli::run_in(
        app.dir.path(),
        &["orders", "show", &order, "--socket", socket],
        &[],
    )
    .await
    .stdout;
    assert!(order_card.contains("paid (part refunded)"), "{order_card}");
    let card = crate::cli::run_in(
        app.dir.path(),
        &["keys", "show", &key, "--socket", socket],
        &[],
    )
    .await
    .stdout;
    assert!(
        card.contains("-$0.000018") && !card.contains("$-"),
        "{card}"
    );
    assert_eq!(revenue(&app).await, ("4700000000".into(), "4.70".into()));
    let page = looked_up(&app, &order).await;
    assert_eq!(element_text(&page, "order-refunded"), Some("$0.30 USD"));
    assert!(page.contains(&esc(SELF_EN.order_note_partly_refunded)));
    let ok = app
        .chat(&key, &body(FLASH, "hi [[sim reply=1 prompt=1]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the key works on");
    let spent = ks.balance().spent.nanos();

    // $1.33 more: 26.6 % of 300 000 = 79 800 nano-USD.
    let part = app
        .pp()
        .refund_part(&paypal, "1.33".parse().unwrap())
        .expect("a second partial refund");
    assert_eq!(deliver(&app, part).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 202_200);
    assert_eq!(order_status(&app, &order), "paid");
    assert_eq!(refunded_shown(&app, &order).await, "1.63");
    assert_eq!(revenue(&app).await, ("3370000000".into(), "3.37".into()));
    let h = history(&shown(&app, &key).await);
    assert_eq!(
        h,
        [
            ("purchase".to_string(), "0.0003".to_string()),
            ("refund".to_string(), "-0.000018".to_string()),
            ("refund".to_string(), "-0.0000798".to_string()),
        ]
    );

    // The rest ($3.37): a whole refund's outcome, the key had no top-up.
    let rest = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal)
        .expect("the refund of the rest");
    assert_eq!(deliver(&app, rest).await, 200);
    assert_eq!(order_status(&app, &order), "refunded");
    assert_eq!(ks.status().as_str(), "revoked");
    assert_eq!(
        ks.balance().spent.nanos(),
        spent,
        "what was spent stays spent"
    );
    assert_eq!(refunded_shown(&app, &order).await, "5.00");
    assert_eq!(revenue(&app).await, ("0".into(), "0.00".into()));
    let page = looked_up(&app, &order).await;
    assert_eq!(element_text(&page, "order-refunded"), Some("$5.00 USD"));
    assert!(!page.contains(&esc(SELF_EN.order_note_partly_refunded)));
}

/// `orders show --json`'s `refunded_usd` of an order, over the admin socket.
async fn refunded_shown(app: &TestApp, order_id: &str) -> String {
    match app
        .admin(Request::OrdersShow {
            order_id: order_id.to_string(),
        })
        .await
    {
        Response::Order { order } => serde_json::to_value(order).unwrap()["refunded_usd"]
            .as_str()
            .unwrap()
            .to_string(),
        other => panic!("{other:?}"),
    }
}

/// `/metrics`' revenue lines: (nano-USD, USD), as written.
async fn revenue(app: &TestApp) -> (String, String) {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    (
        line("modelrelay_revenue_nanousd"),
        line("modelrelay_revenue_usd"),
    )
}

/// The order look-up page of a `buyer@example.com` order.
async fn looked_up(app: &TestApp, order_id: &str) -> String {
    crate::topup_revoked::looked_up(app, order_id, "buyer@example.com").await
}

/// A partial refund of a topped-up purchase takes its share of the purchase's credit only; the
/// refund of the rest then takes what is left of it, not the whole credit again, and the key
/// keeps working on its top-up.
#[tokio::test]
async fn after_a_partial_refund_the_rest_takes_only_what_is_left() {
    let app = spawn_small_plans().await;
    let mut b = Browser::open(&app).await;
    let (order_p, paypal_p, key, _order_t) = bought_and_topped_up(&app, &mut b).await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 300_000);
    // Trial: $1.00 paid for 100 000 nano-USD of credit; $0.25 back is 25 000.
    let part = app
        .pp()
        .refund_part(&paypal_p, "0.25".parse().unwrap())
        .expect("a partial refund");
    assert_eq!(deliver(&app, part).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 275_000);
    let rest = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_p)
        .expect("the refund of the rest");
    assert_eq!(deliver(&app, rest).await, 200);
    assert_eq!(order_status(&app, &order_p), "refunded");
    assert_eq!(ks.status().as_str(), "active");
    assert_eq!(
        ks.balance().budget.nanos(),
        200_000,
        "the top-up's credit stays whole"
    );
}

/// A partial refund and then the rest, both while a request holds the key's money: together
/// they take the purchase's credit exactly once — the rest does not count again what the
/// partial is still owed by the request in flight.
#[tokio::test]
async fn a_partial_refund_and_the_rest_during_a_request_take_the_credit_once() {
    let app = spawn_small_plans().await;
    let mut b = Browser::open(&app).await;
    let (order_p, paypal_p, key, _order_t) = bought_and_topped_up(&app, &mut b).await;
    let ks = app.key_state(&key);
    assert_eq!(ks.balance().budget.nanos(), 300_000);
    // A slow stream holds (nearly) all of it.
    let slow = json!({"model": FLASH, "stream": true, "max_tokens": 100_000,
        "messages": [{"role": "user", "content": "[[sim reply=5 delay_ms=300]] hi"}]});
    let stream = app.chat(&key, &slow).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(ks.available().nanos() < 1_000, "{:?}", ks.balance());
    let part = app
        .pp()
        .refund_part(&paypal_p, "0.50".parse().unwrap())
        .expect("a partial refund");
    assert_eq!(deliver(&app, part).await, 200);
    let rest = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_p)
        .expect("the rest");
    assert_eq!(deliver(&app, rest).await, 200);
    assert_eq!(order_status(&app, &order_p), "refunded");
    drop(stream.text().await);
    // Settled: every line the purchase's refunds wrote adds up to its credit, no more.
    let taken = || -> i64 {
        app.db()
            .query_row(
                "SELECT -SUM(amount_nanos) FROM budget_history
                 WHERE order_id = ?1 AND kind = 'refund'",
                [&order_p],
                |r| r.get(0),
            )
            .unwrap()
    };
    for _ in 0..50 {
        if taken() == 100_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(taken(), 100_000);
    assert_eq!(
        ks.balance().budget.nanos(),
        200_000,
        "the top-up's credit stays whole"
    );
}

/// A partial refund that comes before the payment is recorded here (the capture's own event
/// is late) is refused, so PayPal sends it again; once the payment is recorded it takes its
/// share. (Acknowledged at once, it was lost: the key later got all its credit.)
#[tokio::test]
async fn a_partial_refund_before_the_payment_is_recorded_is_retried_not_lost() {
    let app = TestApp::spawn_shop_with(|c| {
        c.plans.get_mut("starter").unwrap().budget_usd = "0.0003".parse().unwrap();
    })
    .await;
    let mut b = Browser::open(&app).await;
    app.pp()
        .set_capture_mode(modelrelay::paypal::simulated::CaptureMode::Pending);
    let (order, paypal) = b.create_order(&app, "starter", "buyer@example.com").await;
    assert!(app.pp().approve(&paypal));
    let (_, v) = b.capture(&app, &order).await;
    assert_eq!(v["status"], "pending", "{v}");
    // PayPal completes the capture; its event has not arrived when the refund's does.
    let completed = app.pp().complete_pending(&paypal).expect("completed");
    let part = app
        .pp()
        .refund_part(&paypal, "0.30".parse().unwrap())
        .expect("a partial refund");
    assert_ne!(
        deliver(&app, part.clone()).await,
        200,
        "refused: PayPal sends it again"
    );
    assert_eq!(deliver(&app, completed).await, 200);
    assert_eq!(order_status(&app, &order), "paid");
    assert_eq!(deliver(&app, part).await, 200);
    let key_id: String = app
        .db()
        .query_row("SELECT id FROM keys WHERE order_id = ?1", [&order], |r| {
            r.get(0)
        })
        .unwrap();
    let budget: i64 = app
        .db()
        .query_row(
            "SELECT budget_nanos FROM keys WHERE id = ?1",
            [&key_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(budget, 282_000, "6 % of the credit taken back");
}

/// PayPal may deliver a refund again under a new event id: a partial refund already applied
/// (found by its refund id) is done. Before, counted in the order's refunded total, the resent
/// refund of more than half the price read as the rest of it: the order was marked refunded
/// and its key revoked.
#[tokio::test]
async fn a_partial_refund_resent_under_a_new_event_id_changes_nothing() {
    let (app, order, paypal, key) = small_starter_bought().await;
    let ks = app.key_state(&key);
    // $3.00 of $5.00: 60 % of 300 000 nano-USD.
    let part = app
        .pp()
        .refund_part(&paypal, "3.00".parse().unwrap())
        .expect("a partial refund");
    assert_eq!(deliver(&app, part.clone()).await, 200);
    assert_eq!(ks.balance().budget.nanos(), 120_000);
    let again = app.pp().resend_as_new(&part.1).expect("a resend");
    assert_ne!(again.1, part.1, "a new event id");
    assert_eq!(deliver(&app, again).await, 200);
    assert_eq!(order_status(&app, &order), "paid");
    assert_eq!(ks.status().as_str(), "active");
    assert_eq!(ks.balance().budget.nanos(), 120_000);
    assert_eq!(refunded_shown(&app, &order).await, "3.00");
}

/// A top-up bought in the shop stops at a key's budget ceiling too (only the operator's were
/// checked): refused before PayPal is asked.
#[tokio::test]
async fn a_shop_top_up_past_the_budget_ceiling_is_refused() {
    let app = TestApp::spawn_shop().await;
    let key = key_on(&app, "trial", "1").await;
    let ks = app.key_state(&key);
    ks.top_up(
        modelrelay::money::MAX_BUDGET.saturating_sub(ks.balance().budget),
        modelrelay::money::Usd::ZERO,
    );
    let mut b = Browser::open(&app).await;
    let (status, v) = b
        .post_json(
            &app,
            "/api/orders",
            &json!({"plan": "starter", "email": "buyer@example.com", "key": key}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "key_budget_full", "{v}");
    assert_eq!(app.pp().counts().create_calls, 0);
}

/// A shop whose Starter is $5.00 for a budget of $0.0003 (300 000 nano-USD, so refund shares
/// are exact enough to see the rounding), and one bought: (app, order id, PayPal id, key).
async fn small_starter_bought() -> (TestApp, String, String, String) {
    let app = TestApp::spawn_shop_with(|c| {
        c.plans.get_mut("starter").unwrap().budget_usd = "0.0003".parse().unwrap();
    })
    .await;
    let mut b = Browser::open(&app).await;
    let (order, paypal) = b.create_order(&app, "starter", "buyer@example.com").await;
    assert!(app.pp().approve(&paypal));
    let (_, v) = b.capture(&app, &order).await;
    let key = v["api_key"].as_str().expect("a key").to_string();
    (app, order, paypal, key)
}

/// The return page of a top-up's order (a reload after PayPal) is a top-up's page again, asking
/// for the key, not a purchase's offering a new one; the capture answer says it is a top-up, so
/// the page words a pending or failed one for credit, not a key (found by an independent check).
#[tokio::test]
async fn a_top_up_come_back_to_is_a_top_up_page_and_its_capture_says_so() {
    let app = TestApp::spawn_shop().await;
    let key = key_on(&app, "pro", "2.00").await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = approved_top_up(&app, &mut b, "trial", &key).await;
    let page = |id: &str| {
        let url = format!(
            "{}/checkout/trial?lang=en&order_id={id}&approved=1",
            app.base
        );
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let html = page(&order_id).await;
    assert!(html.contains(&esc(SELF_EN.checkout_topup_title)), "{html}");
    assert!(html.contains("id=\"topup-key\""), "the key is asked for");
    assert!(!html.contains(&esc(modelrelay::shop::i18n::EN.checkout_paypal_hint)));
    app.pp()
        .set_capture_mode(modelrelay::paypal::simulated::CaptureMode::Pending);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("pending")),
        "{v}"
    );
    assert_eq!(v["top_up"], true, "{v}");

    // A purchase's return page stays a purchase's; its capture says it is not a top-up.
    app.pp()
        .set_capture_mode(modelrelay::paypal::simulated::CaptureMode::Completed);
    let (purchase, paypal_id) = b.create_order(&app, "trial", "a@b.co").await;
    let html = page(&purchase).await;
    assert!(!html.contains(&esc(SELF_EN.checkout_topup_title)));
    assert!(app.pp().approve(&paypal_id));
    let (_, v) = b.capture(&app, &purchase).await;
    assert_eq!(
        (v["status"].as_str(), &v["top_up"]),
        (Some("paid"), &json!(false)),
        "{v}"
    );
}
