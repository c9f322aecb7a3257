//! The headless browser (see tests/browser.rs) keeps a customer's key: on the dashboard it adds
//! the Pro plan's credit to a Trial key through the checkout and the simulated PayPal — the
//! same key's budget grows, it keeps working and moves to Pro — then replaces the key, which
//! shows the new one once and leaves the old one refused. The dashboard never echoes the key.
//! On the way, the language switch of each page reached by a form keeps the customer where
//! they were: the top-up checkout stays this key's top-up in the other language, the
//! replacement's confirmation leads to the dashboard, and the new key's page has no switch.
//! Screenshots go to `<target>/test-artifacts/browser-selfservice/`.

use fantoccini::{Client, Locator};
use modelrelay::money::Usd;
use modelrelay::shop::i18n::{SELF_EN, SELF_ZH};

use crate::browser::{
    artifacts_dir_named, attr, click, demo_shop, dollars, screenshot, type_into, visible_text,
    wait_for_focus, wait_for_path, wait_until, with_browser,
};
use crate::common::body;

const EMAIL: &str = "topup-buyer@example.com";

/// Enter `key` on the dashboard.
async fn open_dashboard(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/dashboard?lang=en"))
        .await
        .expect("open /dashboard");
    type_into(c, "input[name=key]", key).await;
    click(c, "#dashboard-submit").await;
    visible_text(c, "#budget").await;
    let page = c.source().await.expect("page source");
    assert!(!page.contains(key), "the dashboard never echoes the key");
}

/// Wait until the page shown is in `lang` (`<html lang>`).
async fn page_in(c: &Client, lang: &str) {
    wait_until(&format!("a page in {lang}"), async || {
        let now = c
            .execute("return document.documentElement.lang", vec![])
            .await
            .map_err(|e| e.to_string())?;
        Ok((now == lang).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_browser_tops_up_its_key_and_replaces_it() {
    let app = demo_shop().await;
    let key = app.create_key("trial", None).await;
    let prefix = app.key_state(&key).prefix();
    let artifacts = artifacts_dir_named("browser-selfservice");
    let base = app.base.clone();
    let shots = artifacts.clone();
    let (k, p) = (key.clone(), prefix.clone());
    with_browser(&artifacts, "topup", async move |c: Client| {
        open_dashboard(&c, &base, &k).await;
        assert_eq!(visible_text(&c, "#budget").await, "$1.00");
        click(&c, "#topup-pro").await;
        wait_for_path(&c, "/checkout/pro").await;
        let for_line = visible_text(&c, "#topup-for").await;
        assert!(for_line.contains(&p), "{for_line}");
        // In Chinese: still this key's top-up (the switch posts the page's form again; it led
        // to the plan's purchase page, found by an accessibility audit).
        click(&c, "#lang-switch a[hreflang=zh]").await;
        page_in(&c, "zh-CN").await;
        wait_for_path(&c, "/checkout/pro").await;
        assert_eq!(
            visible_text(&c, "h1").await,
            SELF_ZH.checkout_topup_title,
            "a top-up, not a purchase"
        );
        let for_line = visible_text(&c, "#topup-for").await;
        assert!(for_line.contains(&p), "{for_line}");
        assert!(
            c.find(Locator::Css("#topup-key")).await.is_err(),
            "no key asked for"
        );
        type_into(&c, "#email", EMAIL).await;
        click(&c, "#pay-demo").await;
        wait_for_path(&c, "/demo/paypal/approve").await;
        click(&c, "#approve").await;
        let done = visible_text(&c, "#checkout-topped-up").await;
        assert!(done.contains(&p), "{done}");
        wait_for_focus(&c, "topped-up-heading").await;
        assert!(!c.source().await.expect("source").contains(&k));
        screenshot(&c, &shots, "1-topped-up").await;

        // The same key, its budget grown by Pro's, now on Pro; the history shows both.
        open_dashboard(&c, &base, &k).await;
        assert_eq!(
            dollars(&visible_text(&c, "#budget").await),
            Usd::from_dollars(51)
        );
        let history = visible_text(&c, "#budget-history").await;
        assert!(
            history.contains("Granted") && history.contains("+$50.00"),
            "{history}"
        );
        assert!(history.contains(SELF_EN.history_top_up), "{history}");
        screenshot(&c, &shots, "2-dashboard-after-topup").await;
    })
    .await;

    let ks = app.key_state(&key);
    assert_eq!(ks.plan(), "pro");
    assert_eq!(ks.balance().budget, Usd::from_dollars(51));
    let pro = app
        .chat(&key, &body("deepseek-v4-pro", "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(pro.status(), 200, "the same key works, with Pro's models");

    // Replace the key from the dashboard: confirm, then the new key once.
    let base = app.base.clone();
    let shots = artifacts.clone();
    let k = key.clone();
    let new_key = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = new_key.clone();
    with_browser(&artifacts, "rotate", async move |c: Client| {
        open_dashboard(&c, &base, &k).await;
        click(&c, "#rotate-submit").await;
        let body = visible_text(&c, "#rotate-confirm-body").await;
        assert!(body.contains(SELF_EN.rotate_confirm_button) || body.contains("stops working"));
        // The confirmation came by POST: its switch leads to the dashboard (it was a 405).
        assert_eq!(
            attr(&c, "#lang-switch a[hreflang=zh]", "href")
                .await
                .as_deref(),
            Some("/dashboard?lang=zh")
        );
        click(&c, "#rotate-confirm-submit").await;
        let shown = visible_text(&c, "#api-key").await;
        assert!(shown.starts_with("sk-gateway-") && shown != k, "{shown}");
        assert!(
            c.find(Locator::Css("#lang-switch")).await.is_err(),
            "no switch to lose the new key by"
        );
        screenshot(&c, &shots, "3-new-key").await;
        *out.lock().expect("lock") = shown;
    })
    .await;
    let new_key = new_key.lock().expect("lock").clone();
    let old = app
        .chat(&key, &body("deepseek-v4-flash", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = app
        .chat(&new_key, &body("deepseek-v4-flash", "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    assert_eq!(
        app.key_state(&new_key).balance().budget,
        Usd::from_dollars(51)
    );
}
