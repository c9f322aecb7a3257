//! Orders made under PayPal settings the operator changed since (another app's `client_id`, or
//! `paypal.env` switched): the PayPal now configured cannot know them, so it is not asked, and
//! the buyer is never told "nothing was charged" while the other one may hold the money (found
//! by an independent check: such an order, captured there with the answer lost, read "pay
//! again").

use modelrelay::activity::protocol::{Request, Response};
use modelrelay::config::PaypalEnv;

use crate::common::TestApp;
use crate::shop_orders::{Browser, order_status};
use crate::shop_review::{capture_answer_lost, look_up_page, restart_with};

/// How many keys an order minted.
fn keys_of(app: &TestApp, order_id: &str) -> i64 {
    let sql = "SELECT count(*) FROM keys WHERE order_id = ?1";
    app.db().query_row(sql, [order_id], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn an_order_of_another_paypal_is_not_told_nothing_was_charged() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "switch@b.co").await;
    let app_of = |app: &TestApp| -> Option<String> {
        let sql = "SELECT paypal_app FROM orders WHERE order_id = ?1";
        app.db().query_row(sql, [&order_id], |r| r.get(0)).unwrap()
    };
    assert_eq!(app_of(&app).as_deref(), Some("sandbox:sim-client-id"));
    assert!(app.pp().approve(&paypal_id));
    // PayPal took the money; its answer never came back.
    capture_answer_lost(&app, &order_id, &paypal_id).await;
    assert_eq!(app.pp().counts().captures, 1);

    // The operator goes live; the live PayPal has never heard of this order.
    let tokens = app.pp().counts().token_requests;
    let app = restart_with(app, |c| c.paypal.env = PaypalEnv::Live).await;
    app.unknown_at_paypal(&order_id);
    // The start checks the credentials (one token) in the background: counted from after it.
    for _ in 0..500 {
        if app.pp().counts().token_requests > tokens {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let asked = app.pp().counts();
    assert_eq!(asked.token_requests, tokens + 1);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "order_of_other_paypal", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(!message.contains("nothing was charged"), "{message}");
    assert!(message.contains("If PayPal charged you"), "{message}");
    // The order page's look-up does not ask it either.
    let html = look_up_page(&app, &order_id, "switch@b.co").await;
    assert!(
        !html.to_lowercase().contains("nothing was charged"),
        "{html}"
    );
    assert_eq!(app.pp().counts(), asked, "the PayPal configured was asked");
    assert_eq!(order_status(&app, &order_id), "created");
    assert_eq!(keys_of(&app, &order_id), 0);
    // The operator's view names the PayPal that made it.
    let shown = app
        .admin(Request::OrdersShow {
            order_id: order_id.clone(),
        })
        .await;
    let Response::Order { order } = shown else {
        panic!("{shown:?}")
    };
    assert_eq!(order.paypal_app.as_deref(), Some("sandbox:sim-client-id"));

    // Back to the PayPal that made it: the lost capture is found and the order settles, once.
    let app = restart_with(app, |_| {}).await;
    let sql = "UPDATE orders SET paypal_order_id = ?2 WHERE order_id = ?1";
    app.db().execute(sql, [&order_id, &paypal_id]).unwrap();
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid", "{v}");
    assert!(v["api_key"].as_str().unwrap().starts_with("sk-gateway-"));
    assert_eq!(order_status(&app, &order_id), "paid");
    assert_eq!(keys_of(&app, &order_id), 1);
    // Asked again under the same request id: PayPal's replay, the money taken once.
    assert_eq!(app.pp().counts().completed_captures, 1);
}

/// An order made before which PayPal made it was recorded (an upgrade) is asked of the PayPal
/// configured, as before.
#[tokio::test]
async fn an_order_from_before_the_upgrade_is_asked_as_before() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "old@b.co").await;
    let sql = "UPDATE orders SET paypal_app = NULL WHERE order_id = ?1";
    app.db().execute(sql, [&order_id]).unwrap();
    let app = restart_with(app, |c| c.paypal.env = PaypalEnv::Live).await;
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(keys_of(&app, &order_id), 1);
}

/// The order look-up of an order another PayPal made does not ask it, so it does not say
/// "not paid" (nor, once its plan is withdrawn, "nothing was taken"): that PayPal may hold
/// the buyer's money (found by an independent check: "This order has not been paid. If you
/// have just paid, wait a minute and look again", for a payment captured there).
#[tokio::test]
async fn the_look_up_of_an_order_of_another_paypal_does_not_say_it_is_unpaid() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "lookup@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    capture_answer_lost(&app, &order_id, &paypal_id).await;

    let app = restart_with(app, |c| c.paypal.env = PaypalEnv::Live).await;
    let html = look_up_page(&app, &order_id, "lookup@b.co").await;
    assert!(!html.contains("has not been paid"), "{html}");
    assert!(!html.contains("wait a minute"), "{html}");
    assert!(html.contains("If PayPal charged you"), "{html}");
    assert!(html.contains("Cannot be checked here"), "{html}");
    assert!(!html.contains("Awaiting payment"), "{html}");

    // Its plan withdrawn since: still not "nothing was taken".
    let app = restart_with(app, |c| {
        c.paypal.env = PaypalEnv::Live;
        c.plans.get_mut("trial").unwrap().enabled = false;
    })
    .await;
    let html = look_up_page(&app, &order_id, "lookup@b.co").await;
    assert!(!html.contains("Nothing was taken"), "{html}");
    assert!(html.contains("If PayPal charged you"), "{html}");
    assert_eq!(order_status(&app, &order_id), "created");
    assert_eq!(keys_of(&app, &order_id), 0);

    // Back to the PayPal that made it: the look-up finds the payment and settles it.
    let app = restart_with(app, |_| {}).await;
    let html = look_up_page(&app, &order_id, "lookup@b.co").await;
    assert!(!html.contains("If PayPal charged you"), "{html}");
    assert_eq!(order_status(&app, &order_id), "paid");
    assert_eq!(keys_of(&app, &order_id), 1);
}
