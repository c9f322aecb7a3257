//! The self-service pages over real HTTP, in both languages: the dashboard's budget history and
//! forms (a grant, never the key), the checkout in top-up mode from the pricing page and from
//! the dashboard (a grant from another browser or an altered one is refused), the order
//! look-up of a top-up (the key's prefix only) with the id filled in from a receipt's link, and
//! the replacement form's confirmation step, and where the language switch of each posted page
//! leads.

use modelrelay::shop::i18n::{EN, SELF_EN, SELF_ZH, ZH};
use reqwest::StatusCode;

use crate::common::TestApp;
use crate::pages::{browser_secret, csrf_token, esc, get, post_form, post_form_with};
use crate::shop_orders::Browser;

/// The value of the hidden input `name` in a form.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The grant of the dashboard opened with `key` in the browser whose CSRF token is `token`.
async fn dashboard_grant(app: &TestApp, key: &str, token: &str) -> String {
    let (status, html) = post_form(
        &app.base,
        "/dashboard?lang=en",
        Some(token),
        &[("key", key), ("csrf_token", token)],
    )
    .await;
    assert_eq!(status, 200);
    hidden(&html, "grant")
}

/// "Replace this key", confirmed, with `grant`.
async fn confirm_replacement(app: &TestApp, token: &str, grant: &str) -> (StatusCode, String) {
    post_form(
        &app.base,
        "/dashboard/rotate?lang=en",
        Some(token),
        &[("grant", grant), ("csrf_token", token), ("confirm", "yes")],
    )
    .await
}

/// The new key a replacement page shows.
fn shown_key(page: &str) -> Option<&str> {
    page.split("id=\"api-key\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
}

#[tokio::test]
async fn the_dashboard_offers_credit_and_replacement_without_echoing_the_key() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let token = csrf_token(&app.base).await;
    for (lang, s, t) in [("en", &SELF_EN, &EN), ("zh", &SELF_ZH, &ZH)] {
        let (status, html) = post_form(
            &app.base,
            &format!("/dashboard?lang={lang}"),
            Some(&token),
            &[("key", &key), ("csrf_token", &token)],
        )
        .await;
        assert_eq!(status, 200);
        assert!(!html.contains(&key), "never the key");
        for text in [s.history_h, s.history_grant, s.topup_h, s.rotate_h] {
            assert!(html.contains(&esc(text)), "{lang}: {text}");
        }
        assert!(html.contains("formaction=\"/checkout/pro\""));
        assert!(html.contains(&esc(t.nav_dashboard)));
    }
    let (_, html) = post_form(
        &app.base,
        "/dashboard?lang=en",
        Some(&token),
        &[("key", &key), ("csrf_token", &token)],
    )
    .await;
    let grant = hidden(&html, "grant");

    // The checkout in top-up mode: the key's prefix, never the key; the grant for the JS call.
    let (status, page) = post_form(
        &app.base,
        "/checkout/pro?lang=en",
        Some(&token),
        &[("grant", &grant), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(status, 200);
    let prefix = app.key_state(&key).prefix();
    assert!(page.contains(&esc(&prefix)) && page.contains("id=\"topup-grant\""));
    assert!(!page.contains(&key));
    // Another browser (another CSRF cookie) or an altered grant gets nothing.
    let other = csrf_token(&app.base).await;
    let (status, _) = post_form(
        &app.base,
        "/checkout/pro",
        Some(&other),
        &[("grant", &grant), ("csrf_token", &other)],
    )
    .await;
    assert_eq!(status, 400);
    let mut altered = grant.clone();
    altered.replace_range(10..11, if &grant[10..11] == "A" { "B" } else { "A" });
    let (status, _) = post_form(
        &app.base,
        "/checkout/pro",
        Some(&token),
        &[("grant", &altered), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(status, 400);

    // "Replace this key" asks first; only the confirmed post replaces it.
    let (status, confirm) = post_form(
        &app.base,
        "/dashboard/rotate?lang=en",
        Some(&token),
        &[("grant", &grant), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(confirm.contains("rotate-confirm-form") && confirm.contains(&esc(&prefix)));
    assert_eq!(app.key_state(&key).prefix(), prefix, "nothing changed yet");
    let (status, done) = confirm_replacement(&app, &token, &grant).await;
    assert_eq!(status, 200);
    let shown = shown_key(&done).unwrap();
    assert!(shown.starts_with("sk-gateway-") && shown != key);
    assert_eq!(
        app.get(&key, "/api/usage").send().await.unwrap().status(),
        401
    );
    assert_eq!(
        app.get(shown, "/api/usage").send().await.unwrap().status(),
        200
    );
    // Without the CSRF token, nothing.
    let (status, _) = post_form(
        &app.base,
        "/dashboard/rotate",
        None,
        &[("grant", &grant), ("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 403);
}

/// A dashboard's grant is for the text it was shown: once the owner replaces a leaked key,
/// whoever opened the dashboard with the leaked text can neither replace the new text (and
/// take the balance) nor use the page's other form; the owner's new dashboard works.
#[tokio::test]
async fn a_grant_dies_with_the_text_it_was_issued_for() {
    let app = TestApp::spawn_shop().await;
    let leaked = app.create_key("trial", Some("3.00")).await;
    let thief = csrf_token(&app.base).await;
    let stolen = dashboard_grant(&app, &leaked, &thief).await;

    // The owner replaces the leaked text through the API.
    let r = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth(&leaked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let owners = v["api_key"].as_str().unwrap().to_string();

    for (path, confirm) in [("/dashboard/rotate?lang=en", "yes"), ("/checkout/pro", "")] {
        let (status, page) = post_form(
            &app.base,
            path,
            Some(&thief),
            &[
                ("grant", &stolen),
                ("csrf_token", &thief),
                ("confirm", confirm),
            ],
        )
        .await;
        assert_eq!(status, 400, "{path}");
        assert!(!page.contains("id=\"api-key\""), "{path}: no key shown");
    }
    let usage = |k: String| {
        let app = &app;
        async move { app.get(&k, "/api/usage").send().await.unwrap().status() }
    };
    assert_eq!(
        usage(owners.clone()).await,
        200,
        "the owner's text still works"
    );
    assert_eq!(usage(leaked.clone()).await, 401);

    // The owner's own dashboard, opened with the new text, replaces it.
    let token = csrf_token(&app.base).await;
    let grant = dashboard_grant(&app, &owners, &token).await;
    let (status, done) = confirm_replacement(&app, &token, &grant).await;
    assert_eq!(status, 200);
    assert!(shown_key(&done).is_some());
    assert_eq!(usage(owners).await, 401);
}

/// "Replace this key" sent twice by one page (a double click, at once or one after the other):
/// both answers show the same new text, and it works — not a key replaced twice, or a key
/// replaced once with its new text lost behind a "stale page" answer.
#[tokio::test]
async fn a_replacement_form_sent_twice_shows_the_one_new_key() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let token = csrf_token(&app.base).await;
    let grant = dashboard_grant(&app, &key, &token).await;
    let send = || confirm_replacement(&app, &token, &grant);
    let shown = |(status, page): (StatusCode, String)| -> String {
        assert_eq!(status, 200, "{page}");
        shown_key(&page)
            .unwrap_or_else(|| panic!("no key shown: {page}"))
            .to_string()
    };
    let (a, b) = futures_util::future::join(send(), send()).await;
    let (a, b) = (shown(a), shown(b));
    assert_eq!(a, b);
    assert_eq!(shown(send().await), a, "sent a third time, later");
    assert!(a.starts_with("sk-gateway-") && a != key);
    let status = |k: String| {
        let app = &app;
        async move { app.get(&k, "/api/usage").send().await.unwrap().status() }
    };
    assert_eq!(status(a).await, 200);
    assert_eq!(status(key).await, 401);
}

/// A key replaced its five times in a row by the API: the dashboard's replacement says so in a
/// page (429, how long to wait), and the key still works.
#[tokio::test]
async fn a_key_replaced_too_often_is_told_so_on_the_dashboard() {
    let app = TestApp::spawn_shop().await;
    let mut key = app.create_key("trial", None).await;
    for _ in 0..5 {
        let (status, v) = crate::selfservice_rotate::rotate(&app, &key).await;
        assert_eq!(status, 200, "{v}");
        key = v["api_key"].as_str().unwrap().to_string();
    }
    let token = csrf_token(&app.base).await;
    let grant = dashboard_grant(&app, &key, &token).await;
    let (status, page) = confirm_replacement(&app, &token, &grant).await;
    assert_eq!(status, 429, "{page}");
    assert!(
        page.contains("replaced too many times in the last hour")
            && page.contains("again in 12 min"),
        "{page}"
    );
    assert!(shown_key(&page).is_none());
    let usage = app.get(&key, "/api/usage").send().await.unwrap();
    assert_eq!(usage.status(), 200, "the key still works");
}

/// The language switch's links of a page (`&` as written in HTML undone).
fn switch_links(html: &str) -> Vec<String> {
    let Some(at) = html.find("id=\"lang-switch\"") else {
        return Vec::new();
    };
    let nav = &html[at..at + html[at..].find("</nav>").unwrap()];
    nav.split("href=\"")
        .skip(1)
        .map(|h| h[..h.find('"').unwrap()].replace("&#38;", "&"))
        .collect()
}

/// A page reached by a form's POST has no address to show again: its language switch leads to
/// the form's own page — the dashboard from a replacement's confirmation (`GET
/// /dashboard/rotate` was a bare 405), the top-up page that asks for the key from the
/// dashboard's top-up (the plan's plain address sells a new key) — each answering in the
/// language asked for; the page showing a new key has no switch, which would lose it (found by
/// an accessibility audit).
#[tokio::test]
async fn a_posted_pages_language_switch_leads_to_a_page_of_the_same_kind() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let token = csrf_token(&app.base).await;
    let grant = dashboard_grant(&app, &key, &token).await;
    let key_form = [("key", key.as_str()), ("csrf_token", token.as_str())];
    let grant_form = [("grant", grant.as_str()), ("csrf_token", token.as_str())];
    let lookup = [
        ("order_id", "ord_nothing"),
        ("email", "a@b.c"),
        ("csrf_token", token.as_str()),
    ];
    // (the page posted to, its form, where its switch leads)
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Fields, &str); 5] = [
        ("/dashboard?lang=en", &key_form, "/dashboard?"),
        (
            "/checkout/pro?lang=en",
            &grant_form,
            "/checkout/pro?topup=1&",
        ),
        ("/dashboard/rotate?lang=en", &grant_form, "/dashboard?"),
        ("/order?lang=en", &lookup, "/order?"),
        // A refusal of a posted form (no CSRF token) too.
        (
            "/dashboard/rotate?lang=en",
            &[("grant", grant.as_str())],
            "/dashboard?",
        ),
    ];
    for (path, fields, to) in cases {
        let (_, page) = post_form(&app.base, path, Some(&token), fields).await;
        let links = switch_links(&page);
        assert_eq!(
            links,
            [format!("{to}lang=en"), format!("{to}lang=zh")],
            "{path}"
        );
        let (status, _, html) = get(&app.base, &links[1], None).await;
        assert_eq!(status, 200, "{}", links[1]);
        assert!(html.contains("<html lang=\"zh-CN\">"), "{}", links[1]);
        if to.starts_with("/checkout/") {
            // Still a top-up: the key is asked for; nothing offers a new key.
            assert!(html.contains("id=\"topup-key\""));
            assert!(html.contains(&format!("<h1>{}</h1>", esc(SELF_ZH.checkout_topup_title))));
        }
    }
    // The new key, shown once: no switch to lose it by.
    let (status, done) = confirm_replacement(&app, &token, &grant).await;
    assert_eq!(status, 200);
    assert!(shown_key(&done).is_some());
    assert!(switch_links(&done).is_empty() && !done.contains("lang-switch"));
}

#[tokio::test]
async fn pricing_links_to_top_ups_and_the_order_look_up_names_the_credited_key() {
    let app = TestApp::spawn_shop().await;
    let (_, _, pricing) = get(&app.base, "/pricing?lang=zh", None).await;
    assert!(pricing.contains("href=\"/checkout/starter?topup=1\""));
    assert!(pricing.contains(&esc(SELF_ZH.pricing_topup_note)));
    let (status, _, checkout) = get(&app.base, "/checkout/starter?topup=1&lang=en", None).await;
    assert_eq!(status, 200);
    assert!(
        checkout.contains("id=\"topup-key\"")
            && checkout.contains(&esc(SELF_EN.checkout_topup_title))
    );

    // A top-up paid through the API, then looked up on the page.
    let key = app.create_key("trial", None).await;
    let mut b = Browser::open(&app).await;
    let (status, v) = b
        .post_json(
            &app,
            "/api/orders",
            &serde_json::json!({"plan": "starter", "email": "page@example.com", "key": key}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let order_id = v["order_id"].as_str().unwrap().to_string();
    assert!(app.pp().approve(v["paypal_order_id"].as_str().unwrap()));
    let (_, v) = b.capture(&app, &order_id).await;
    assert_eq!(v["status"], "paid", "{v}");

    // The receipt's link fills the id in.
    let (_, _, form) = get(&app.base, &format!("/order?order_id={order_id}"), None).await;
    assert!(form.contains(&format!("value=\"{order_id}\"")));
    let token = csrf_token(&app.base).await;
    let (status, html) = post_form(
        &app.base,
        "/order?lang=en",
        Some(&token),
        &[
            ("order_id", order_id.as_str()),
            ("email", "page@example.com"),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let prefix = app.key_state(&key).prefix();
    assert!(html.contains("id=\"order-topped-up\""), "{html}");
    assert!(html.contains(&esc(SELF_EN.order_kind_topup)) && html.contains(&esc(&prefix)));
    assert!(!html.contains(&key) && !html.contains("id=\"api-key\""));
    // Its note speaks of the credit, not of a key shown above.
    assert!(html.contains(&esc(SELF_EN.order_note_paid_topup)));
    assert!(!html.contains(&esc(EN.order_note_paid)));
}

/// A dashboard opened before the operator revoked its key: each form's refusal names what it
/// asked for — the replacement form says a revoked key cannot be replaced (it said "Add
/// credit to this key"), the top-up form that it cannot get credit.
#[tokio::test]
async fn a_revoked_keys_forms_say_what_cannot_be_done() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let token = csrf_token(&app.base).await;
    let grant = dashboard_grant(&app, &key, &token).await;
    app.admin(modelrelay::activity::protocol::Request::KeysRevoke { key: key.clone() })
        .await;
    for (path, heading, body) in [
        (
            "/dashboard/rotate?lang=en",
            SELF_EN.rotate_h,
            SELF_EN.rotate_revoked,
        ),
        (
            "/checkout/pro?lang=en",
            SELF_EN.topup_h,
            SELF_EN.topup_revoked,
        ),
    ] {
        let (status, page) = post_form(
            &app.base,
            path,
            Some(&token),
            &[("grant", &grant), ("csrf_token", &token), ("confirm", "")],
        )
        .await;
        assert_eq!(status, 400, "{path}");
        assert!(page.contains(&esc(heading)), "{path}: {page}");
        assert!(page.contains(&esc(body)), "{path}: {page}");
        assert!(!page.contains("id=\"api-key\""), "{path}: no key shown");
    }
}

/// The HTML of someone's dashboard (a saved or shared page prints its CSRF token and the
/// grant) neither replaces the key, nor shows the text a replacement already made, nor tops
/// the key up from another browser, even one that sets the printed token as its own cookie:
/// the grant is also sealed to a cookie no page prints (found by an independent check: such a
/// page replaced the key from any browser and showed the new text).
#[tokio::test]
async fn a_dashboards_html_alone_does_nothing_in_another_browser() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", Some("3.00")).await;
    let owner = csrf_token(&app.base).await;
    let (status, html) = post_form(
        &app.base,
        "/dashboard?lang=en",
        Some(&owner),
        &[("key", &key), ("csrf_token", &owner)],
    )
    .await;
    assert_eq!(status, 200);
    let grant = hidden(&html, "grant");
    assert!(html.contains(&owner), "the page prints its CSRF token");
    assert!(!html.contains(&browser_secret(&owner)), "never the secret");
    let theirs = [
        format!("mr_csrf={owner}"),
        format!(
            "mr_csrf={owner}; mr_browser={}",
            browser_secret("another-browser-0000000000000000")
        ),
    ];
    let attempt = |cookies: String, path: &'static str, confirm: &'static str| {
        let (app, grant, owner) = (&app, grant.clone(), owner.clone());
        async move {
            post_form_with(
                &app.base,
                path,
                Some(cookies),
                &[
                    ("grant", &grant),
                    ("csrf_token", &owner),
                    ("confirm", confirm),
                ],
            )
            .await
        }
    };
    for cookies in &theirs {
        for (path, confirm) in [
            ("/dashboard/rotate?lang=en", "yes"),
            ("/dashboard/rotate?lang=en", ""),
            ("/checkout/pro", ""),
        ] {
            let (status, page) = attempt(cookies.clone(), path, confirm).await;
            assert_eq!(status, 400, "{cookies} {path} {confirm}");
            assert!(!page.contains("id=\"api-key\""), "{path}: no key shown");
        }
        // The checkout's JSON call with the grant: no top-up order for the key.
        let r = app
            .http
            .post(format!("{}/api/orders", app.base))
            .header("Cookie", cookies)
            .header("x-csrf-token", &owner)
            .json(&serde_json::json!({"plan": "pro", "email": "x@b.co", "key_grant": grant}))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{cookies}: a top-up order from the grant");
    }
    let usage = |k: String| {
        let app = &app;
        async move { app.get(&k, "/api/usage").send().await.unwrap().status() }
    };
    assert_eq!(usage(key.clone()).await, 200, "the key was not replaced");

    // The owner's own browser replaces it; the same form from the other browser afterwards
    // does not get the new text.
    let (status, done) = confirm_replacement(&app, &owner, &grant).await;
    assert_eq!(status, 200);
    let new = shown_key(&done).unwrap().to_string();
    for cookies in &theirs {
        let (_, page) = attempt(cookies.clone(), "/dashboard/rotate?lang=en", "yes").await;
        assert!(!page.contains(&new), "{cookies}: the new text shown");
        assert!(!page.contains("id=\"api-key\""), "{cookies}: a key shown");
    }
    assert_eq!(usage(new).await, 200);
}

/// `GET /dashboard/rotate` (typed, or from the history) goes to the dashboard's form: the
/// replacement is a POST, and its address alone was a bare 405.
#[tokio::test]
async fn the_rotation_address_alone_leads_to_the_dashboard() {
    let app = TestApp::spawn_shop().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/dashboard/rotate?lang=zh", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dashboard");
}
