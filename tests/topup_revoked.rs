//! A top-up whose key is revoked while PayPal takes the money: the payment is held for review
//! (PayPal has it, nothing is credited, the buyer is told so), never left unrecorded with the
//! buyer told that nothing could be added (found by an independent check); and the order
//! look-up of a paid order whose key was revoked since says so.

use modelrelay::activity::protocol::{Request, Response};
use modelrelay::shop::i18n::{EN, SELF_EN};

use crate::common::TestApp;
use crate::pages::{csrf_token, esc, post_form};
use crate::shop_orders::{Browser, order_status};

/// A top-up of `key` on the pro plan, created and approved: `(order id, PayPal id)`.
async fn approved_top_up(app: &TestApp, b: &mut Browser, key: &str) -> (String, String) {
    crate::selfservice_topup::approved_top_up(app, b, "pro", key).await
}

/// The order's recorded capture id.
pub(crate) fn capture_of(app: &TestApp, order_id: &str) -> Option<String> {
    app.db()
        .query_row(
            "SELECT paypal_capture_id FROM orders WHERE order_id = ?1",
            [order_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// The budget in nano-USD of the test's one key, from the database.
pub(crate) fn budget(app: &TestApp) -> i64 {
    app.db()
        .query_row("SELECT budget_nanos FROM keys", [], |r| r.get(0))
        .unwrap()
}

/// PayPal captured (its answer lost), then the operator revoked the key: the buyer's capture
/// call asks PayPal, holds the payment for review and says so.
#[tokio::test]
async fn a_capture_taken_before_the_key_was_revoked_is_held_for_review() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", Some("1.00")).await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = approved_top_up(&app, &mut b, &key).await;
    crate::shop_review::capture_answer_lost(&app, &order_id, &paypal_id).await;
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("review")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("held for review"),
        "{v}"
    );
    assert_eq!(order_status(&app, &order_id), "review");
    assert!(
        capture_of(&app, &order_id).is_some(),
        "its capture recorded"
    );
    assert_eq!(budget(&app), 1_000_000_000, "nothing credited");
}

/// Nothing captured and the key revoked: refused before PayPal takes anything.
#[tokio::test]
async fn an_uncaptured_top_up_of_a_revoked_key_is_refused_and_not_captured() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", Some("1.00")).await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = approved_top_up(&app, &mut b, &key).await;
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("key_revoked")),
        "{v}"
    );
    assert_eq!(order_status(&app, &order_id), "created");
    assert_eq!(capture_of(&app, &order_id), None);
    // The look-up says it can no longer be paid, not "wait a minute and look again".
    let html = looked_up(&app, &order_id, "buyer@example.com").await;
    assert!(
        html.contains(&esc(SELF_EN.order_note_unpaid_revoked)),
        "{html}"
    );
    assert!(!html.contains(&esc(EN.order_note_created)));
}

/// The key revoked in the database while the payment is being recorded (the operator's
/// revocation has written it, and the key in memory is not revoked yet): the payment's write
/// is refused, and the order is held for review with its capture instead of left unpaid.
#[tokio::test]
async fn a_key_revoked_while_its_top_up_is_recorded_holds_the_payment_for_review() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", Some("1.00")).await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) = approved_top_up(&app, &mut b, &key).await;
    let revoked = app
        .db()
        .execute("UPDATE keys SET status = 'revoked'", [])
        .unwrap();
    assert_eq!(revoked, 1);
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("review")), "{v}");
    assert_eq!(order_status(&app, &order_id), "review");
    assert!(
        capture_of(&app, &order_id).is_some(),
        "its capture recorded"
    );
    assert_eq!(budget(&app), 1_000_000_000, "nothing credited");
}

/// The order look-up of `order_id` bought with `email`: its page.
pub(crate) async fn looked_up(app: &TestApp, order_id: &str, email: &str) -> String {
    let token = csrf_token(&app.base).await;
    let fields = [
        ("order_id", order_id),
        ("email", email),
        ("csrf_token", token.as_str()),
    ];
    let (status, html) = post_form(&app.base, "/order", Some(&token), &fields).await;
    assert_eq!(status, 200);
    html
}

/// A paid purchase, and a paid top-up, whose key the operator revoked since: the look-up says
/// the key no longer works, not "the key above is yours" or "it keeps working" (found by an
/// independent check).
#[tokio::test]
async fn the_look_up_of_a_paid_order_says_its_key_was_revoked_since() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (bought, paypal_id) = b.create_order(&app, "trial", "owner@b.co").await;
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(&app, &bought).await;
    assert_eq!(status, 200, "{v}");
    let key = v["api_key"].as_str().unwrap().to_string();
    let (topped, _) = approved_top_up(&app, &mut b, &key).await;
    let (status, v) = b.capture(&app, &topped).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("paid")), "{v}");
    for (order, email) in [(&bought, "owner@b.co"), (&topped, "buyer@example.com")] {
        let html = looked_up(&app, order, email).await;
        assert!(
            !html.contains(&esc(SELF_EN.order_note_paid_revoked)),
            "{order}"
        );
    }
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    for (order, email) in [(&bought, "owner@b.co"), (&topped, "buyer@example.com")] {
        let html = looked_up(&app, order, email).await;
        assert!(
            html.contains(&esc(SELF_EN.order_note_paid_revoked)),
            "{order}"
        );
        assert!(!html.contains(&esc(EN.order_note_paid)), "{order}");
        assert!(
            !html.contains(&esc(SELF_EN.order_note_paid_topup)),
            "{order}"
        );
    }
}

/// A top-up PayPal is still processing (a pending capture made before the key was revoked):
/// the buyer is told nothing can be added and the payment will be held for review, not that
/// the credit comes when it completes (found by an independent re-check); once it completes,
/// it is held.
#[tokio::test]
async fn a_pending_top_up_of_a_revoked_key_does_not_promise_the_credit() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", Some("1.00")).await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = approved_top_up(&app, &mut b, &key).await;
    app.pp()
        .set_capture_mode(modelrelay::paypal::simulated::CaptureMode::Pending);
    crate::shop_review::capture_answer_lost(&app, &order_id, &paypal_id).await;
    match app.admin(Request::KeysRevoke { key: key.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    let (status, v) = b.capture(&app, &order_id).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("pending")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("revoked") && message.contains("held for review"),
        "{v}"
    );
    let html = looked_up(&app, &order_id, "buyer@example.com").await;
    assert!(html.contains(&esc(SELF_EN.order_note_pending_revoked)));
    assert!(!html.contains(&esc(SELF_EN.order_note_pending_topup)));

    // PayPal completes it: held for review, nothing credited.
    let completed = app
        .pp()
        .complete_pending(&paypal_id)
        .expect("a completion event");
    assert_eq!(crate::shop_orders::deliver(&app, completed).await, 200);
    assert_eq!(order_status(&app, &order_id), "review");
    assert_eq!(budget(&app), 1_000_000_000, "nothing credited");
}
