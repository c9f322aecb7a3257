//! Events about PayPal orders the storefront did not create. Anyone can make a PayPal order on
//! the merchant's account (the checkout page publishes the client id the JS SDK needs), put
//! another customer's order id in its `custom_id`, pay it and have it refunded: PayPal then
//! signs and delivers genuine events for it. They must change nothing of that customer's order
//! (found by an independent check: such a refund revoked a paid customer's key, and such a
//! capture put a buyer's order into review before they paid).

use serde_json::{Value, json};

use crate::common::{TestApp, body};
use crate::shop_orders::{Browser, deliver, order_status};

/// An order made and paid at the (simulated) PayPal by someone else, as the JS SDK makes one:
/// no invoice id, `custom_id` naming `victim`'s order. Returns its PayPal order id.
async fn foreign_paid_order(app: &TestApp, victim: &str, value: &str) -> String {
    let base = app.pp().base_url();
    let token = crate::shop_review::paypal_token(app).await;
    let created = app
        .http
        .post(format!("{base}/v2/checkout/orders"))
        .bearer_auth(&token)
        .json(&json!({"intent": "CAPTURE", "purchase_units": [{
            "custom_id": victim,
            "amount": {"currency_code": "USD", "value": value},
        }]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(app.pp().approve(&id));
    let captured = app
        .http
        .post(format!("{base}/v2/checkout/orders/{id}/capture"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(captured.status(), 201, "{:?}", captured.text().await);
    id
}

/// The refund of someone else's payment naming a paid customer's order neither revokes the
/// customer's key nor marks the order refunded; nor does its reversal.
#[tokio::test]
async fn a_refund_of_a_foreign_payment_naming_an_order_changes_nothing() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "victim@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    let key = v["api_key"].as_str().unwrap().to_string();

    for kind in ["PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED"] {
        let foreign = foreign_paid_order(&app, &order_id, "1.00").await;
        let event = app.pp().webhook(kind, &foreign).unwrap();
        assert!(
            event.1.contains(&order_id),
            "the event names the victim's order"
        );
        assert_eq!(deliver(&app, event).await, 200, "acknowledged (not ours)");
        assert_eq!(order_status(&app, &order_id), "paid", "{kind}");
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "hi [[sim reply=3]]"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{kind}: the key still works");
    }
    let refunded: i64 = app
        .db()
        .query_row(
            "SELECT refunded_nanos FROM orders WHERE order_id = ?1",
            [&order_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refunded, 0);

    // The customer's own refund still applies.
    let own = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_id)
        .unwrap();
    assert_eq!(deliver(&app, own).await, 200);
    assert_eq!(order_status(&app, &order_id), "refunded");
}

/// A capture of someone else's PayPal order naming a buyer's unpaid order (for a cent, or for
/// the whole price) neither holds that order for review nor pays it: the buyer then pays and
/// gets their key.
#[tokio::test]
async fn a_foreign_capture_naming_an_order_neither_holds_nor_pays_it() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "buyer@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    for value in ["0.01", "1.00"] {
        let foreign = foreign_paid_order(&app, &order_id, value).await;
        let event = app
            .pp()
            .webhook("PAYMENT.CAPTURE.COMPLETED", &foreign)
            .unwrap();
        assert!(
            event.1.contains(&order_id),
            "the event names the buyer's order"
        );
        assert_eq!(deliver(&app, event).await, 200);
        assert_eq!(order_status(&app, &order_id), "created", "after ${value}");
    }
    let keys: i64 = app
        .db()
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 0);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid", "{v}");
    assert!(v["api_key"].as_str().unwrap().starts_with("sk-gateway-"));
    assert_eq!(app.pp().counts().completed_captures, 3);
}

/// Our own order's refund arriving before its payment was recorded (the capture's answer was
/// lost, and the completion event has not come): PayPal is asked whose capture it is, and the
/// order is refunded; a completion delivered later gives nothing.
#[tokio::test]
async fn a_refund_before_the_payment_was_recorded_is_bound_by_asking_paypal() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "early@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    crate::shop_review::capture_answer_lost(&app, &order_id, &paypal_id).await;
    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &paypal_id)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(order_status(&app, &order_id), "refunded");
    let completed = app.pp().webhook("PAYMENT.CAPTURE.COMPLETED", &paypal_id);
    if let Some(completed) = completed {
        assert_eq!(deliver(&app, completed).await, 200);
    }
    assert_eq!(order_status(&app, &order_id), "refunded");
    let keys: i64 = app
        .db()
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 0);
}

/// A foreign refund naming an order whose PayPal order PayPal no longer knows (404): not that
/// order's, acknowledged (PayPal redelivered it for days, an error logged each time).
#[tokio::test]
async fn a_foreign_refund_naming_an_order_paypal_does_not_know_is_acknowledged() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = b.create_order(&app, "trial", "gone@b.co").await;
    // As if PayPal had forgotten the order (an old one never approved).
    app.unknown_at_paypal(&order_id);
    let foreign = foreign_paid_order(&app, &order_id, "1.00").await;
    let refund = app
        .pp()
        .webhook("PAYMENT.CAPTURE.REFUNDED", &foreign)
        .unwrap();
    assert_eq!(deliver(&app, refund).await, 200);
    assert_eq!(order_status(&app, &order_id), "created");
}
