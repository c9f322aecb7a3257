//! The headless browser (see tests/browser.rs) at checkout when the capture does not go
//! through: PayPal not answering leaves the approved order's id on the page and a button that
//! tries its capture again (which then shows the key); an order that was never approved, come
//! back to as if it were, offers to pay again. Messages are the page's own, in its language.
//! Screenshots go to `<target>/test-artifacts/browser-checkout-*/`.

use fantoccini::{Client, Locator};
use modelrelay::paypal::simulated::CaptureMode;
use modelrelay::shop::i18n::{EN, ZH};

use crate::browser::{
    artifacts_dir_named, click, demo_shop, screenshot, type_into, visible_text, wait_for_path,
    wait_until, with_browser,
};
use crate::common::TestApp;

const EMAIL: &str = "retry-buyer@example.com";

/// Keys in the database.
fn keys(app: &TestApp) -> i64 {
    app.db()
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .expect("count keys")
}

/// Whether `css` is displayed now.
async fn shown(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(el) => el.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Start buying the Trial plan in `lang` up to the demo's approval page; its order id.
async fn to_the_approval_page(c: &Client, base: &str, lang: &str) -> String {
    c.goto(&format!("{base}/checkout/trial?lang={lang}"))
        .await
        .expect("open the checkout");
    type_into(c, "#email", EMAIL).await;
    click(c, "#pay-demo").await;
    wait_for_path(c, "/demo/paypal/approve").await;
    let url = c.current_url().await.expect("url");
    url.query_pairs()
        .find(|(k, _)| k == "order_id")
        .map(|(_, v)| v.into_owned())
        .expect("the approval page names the order")
}

#[tokio::test]
async fn a_capture_paypal_does_not_answer_can_be_tried_again_and_then_shows_the_key() {
    let app = demo_shop().await;
    let artifacts = artifacts_dir_named("browser-checkout-retry");
    let (base, shots) = (app.base.clone(), artifacts.clone());
    app.pp().set_capture_mode(CaptureMode::Unavailable);
    let app = &app;
    with_browser(&artifacts, "retry", async move |c: Client| {
        let order_id = to_the_approval_page(&c, &base, "en").await;
        click(&c, "#approve").await;
        wait_for_path(&c, "/checkout/trial").await;

        // PayPal answered 503: the page says so in its own words, keeps the order's id in
        // sight and offers to try again; it never offers to pay again for an approved order.
        assert_eq!(visible_text(&c, "#checkout-error").await, EN.js_provider);
        assert_eq!(visible_text(&c, "#retry-order-id").await, order_id);
        assert!(
            !shown(&c, "#checkout-pay").await,
            "no second payment offered"
        );
        assert!(!shown(&c, "#checkout-result").await);
        screenshot(&c, &shots, "1-capture-failed").await;
        assert_eq!(keys(app), 0, "nothing issued yet");

        // PayPal answers again: the same order is captured and its key shown.
        app.pp().set_capture_mode(CaptureMode::Completed);
        click(&c, "#retry-capture").await;
        let key = wait_until("the key after trying again", async || {
            let text = visible_text(&c, "#api-key").await;
            Ok(text.starts_with("sk-gateway-").then_some(text))
        })
        .await;
        assert_eq!(visible_text(&c, "#order-id").await, order_id);
        assert!(!shown(&c, "#checkout-retry").await);
        assert!(!shown(&c, "#checkout-error").await);
        let ks = app.key_state(&key);
        assert_eq!(ks.order_id.as_deref(), Some(order_id.as_str()));
        assert_eq!(keys(app), 1, "one key for the order");
        assert_eq!(app.pp().counts().completed_captures, 1);
        screenshot(&c, &shots, "2-retried").await;
    })
    .await;
}

#[tokio::test]
async fn an_order_never_approved_offers_to_pay_again_in_the_pages_language() {
    let app = demo_shop().await;
    let artifacts = artifacts_dir_named("browser-checkout-not-approved");
    let (base, shots) = (app.base.clone(), artifacts.clone());
    let app = &app;
    with_browser(&artifacts, "not-approved", async move |c: Client| {
        // Back from PayPal without approving, with a URL that says it was (a reload of an
        // old tab, a hand-edited link): the capture is refused, nothing is taken, and the
        // buyer can pay again. The Chinese page says it in Chinese.
        let order_id = to_the_approval_page(&c, &base, "zh").await;
        c.goto(&format!(
            "{base}/checkout/trial?lang=zh&order_id={order_id}&approved=1"
        ))
        .await
        .expect("open the return URL");
        assert_eq!(
            visible_text(&c, "#checkout-error").await,
            ZH.js_not_approved
        );
        assert!(shown(&c, "#checkout-pay").await, "the buyer can pay again");
        assert!(!shown(&c, "#checkout-retry").await);
        assert_eq!(keys(app), 0);
        screenshot(&c, &shots, "3-not-approved").await;
    })
    .await;
}

#[tokio::test]
async fn an_order_paypal_no_longer_knows_offers_to_pay_again_not_to_retry() {
    let app = demo_shop().await;
    let artifacts = artifacts_dir_named("browser-checkout-expired");
    let (base, shots) = (app.base.clone(), artifacts.clone());
    app.pp().set_capture_mode(CaptureMode::Expired);
    let app = &app;
    with_browser(&artifacts, "expired", async move |c: Client| {
        let _ = to_the_approval_page(&c, &base, "en").await;
        click(&c, "#approve").await;
        wait_for_path(&c, "/checkout/trial").await;
        // Expired at PayPal: trying this order again can never work, so no "Try again"; the
        // buyer pays again with a new order.
        assert_eq!(
            visible_text(&c, "#checkout-error").await,
            EN.js_order_expired
        );
        assert!(shown(&c, "#checkout-pay").await, "the pay form is back");
        assert!(!shown(&c, "#checkout-retry").await);
        assert_eq!(keys(app), 0);
        screenshot(&c, &shots, "4-expired").await;
    })
    .await;
}
