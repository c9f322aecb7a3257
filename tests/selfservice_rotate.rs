//! Key rotation: `POST /api/keys/rotate` (Bearer) and `modelrelay keys rotate`. The old text
//! answers 401 from that moment; the new one has the same id, plan, budget, spend and ledger
//! history; a stream in flight on the old text finishes and is billed to the same balance; the
//! change survives a restart; the order look-up no longer shows the key.

use futures_util::StreamExt;
use modelrelay::activity::protocol::{Request, Response};
use serde_json::Value;

use crate::common::{TestApp, body};
use crate::shop_orders::Browser;

const FLASH: &str = "deepseek-v4-flash";

/// `POST /api/keys/rotate` with `key` as Bearer: the status and the JSON answer.
pub(super) async fn rotate(app: &TestApp, key: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn chat_status(app: &TestApp, key: &str) -> u16 {
    app.chat(key, &body(FLASH, "hi [[sim reply=2 prompt=3]]"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rotation_replaces_the_text_and_keeps_the_balance_the_history_and_streams_in_flight() {
    let app = TestApp::spawn().await;
    let old = app.create_key("starter", Some("2.00")).await;
    assert_eq!(chat_status(&app, &old).await, 200);
    let state = app.key_state(&old);
    let id = state.id.clone();

    // A stream in flight on the old text.
    let stream = app
        .chat(
            &old,
            &serde_json::json!({
                "model": FLASH,
                "stream": true,
                "messages": [{"role": "user", "content": "long [[sim reply=30 delay_ms=40]]"}]
            }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();
    let _first = chunks.next().await.unwrap().unwrap();

    let (status, v) = rotate(&app, &old).await;
    assert_eq!(status, 200, "{v}");
    let new = v["api_key"].as_str().unwrap().to_string();
    assert!(new.starts_with("sk-gateway-") && new != old);
    assert_eq!(v.as_object().unwrap().len(), 1, "only the key: {v}");

    // The old text is refused from now on; the new one is the same key.
    assert_eq!(chat_status(&app, &old).await, 401);
    let (status, _) = rotate(&app, &old).await;
    assert_eq!(status, 401);
    let same = app.key_state(&new);
    assert!(std::sync::Arc::ptr_eq(&state, &same), "the same live state");
    assert_eq!(same.id, id);
    assert_eq!(same.plan(), "starter");
    assert_eq!(same.prefix(), modelrelay::keys::token::display_prefix(&new));

    // The stream started on the old text finishes and is billed to the same balance.
    while let Some(c) = chunks.next().await {
        c.unwrap();
    }
    let before = same.balance();
    assert_eq!(chat_status(&app, &new).await, 200);
    let after = same.balance();
    assert!(after.spent > before.spent);
    assert_eq!(after.budget, before.budget);
    assert_eq!(same.requests(), 3);
    let (rows, cost) = app.ledger_totals(&new);
    assert_eq!(rows, 3, "one ledger history across the rotation");
    assert_eq!(cost, after.spent);
    // The usage page of the new key shows the old requests too.
    let usage: Value = app
        .get(&new, "/api/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["requests"], 3);

    // The database holds the new text: after a restart, the new one works, the old one not.
    let mut app = app;
    app.shutdown().await;
    let TestApp { sim, dir, .. } = app;
    let config = crate::common::test_config(dir.path(), &sim);
    let app = TestApp::start(config, sim, dir).await;
    assert_eq!(chat_status(&app, &new).await, 200);
    assert_eq!(chat_status(&app, &old).await, 401);
    assert_eq!(app.key_state(&new).balance().budget.to_string(), "2.00");
}

#[tokio::test]
async fn the_operator_rotates_by_id_and_revoked_or_unknown_keys_are_refused() {
    let app = TestApp::spawn().await;
    let old = app.create_key("trial", None).await;
    let id = app.key_state(&old).id.clone();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelrelay"))
        .args(["keys", "rotate", &id, "--socket"])
        .arg(&app.socket)
        .env_remove("MODELRELAY_CONFIG")
        .current_dir(app.dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(new.starts_with("sk-gateway-"), "{new}");
    assert_eq!(chat_status(&app, &old).await, 401);
    assert_eq!(chat_status(&app, &new).await, 200);

    match app.admin(Request::KeysRevoke { key: id.clone() }).await {
        Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    let (status, v) = rotate(&app, &new).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    match app.admin(Request::KeysRotate { key: id }).await {
        Response::Error { message } => assert!(message.contains("revoked"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (status, _) = rotate(&app, "sk-gateway-nosuchkeynosuchkeynosuchkeynosuchkey").await;
    assert_eq!(status, 401);
}

/// Rotations asked at once with the same text: the first replaces it, the others find it gone
/// (401, as any request with it would) rather than each minting a text that the next one
/// replaces — the customer would be left holding a dead key.
#[tokio::test]
async fn of_simultaneous_rotations_with_one_text_only_the_first_replaces_it() {
    let app = TestApp::spawn().await;
    let old = app.create_key("trial", None).await;
    let all = futures_util::future::join_all((0..6).map(|_| rotate(&app, &old))).await;
    let new: Vec<&str> = all
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, v)| v["api_key"].as_str().unwrap())
        .collect();
    assert_eq!(new.len(), 1, "{all:?}");
    for (status, v) in all.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 401, "{v}");
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    assert_eq!(chat_status(&app, new[0]).await, 200);
    assert_eq!(chat_status(&app, &old).await, 401);
}

#[tokio::test]
async fn rotation_is_limited_per_address() {
    let app = TestApp::spawn().await;
    let mut key = String::new();
    for i in 0..10 {
        if i % 5 == 0 {
            key = app.create_key("trial", None).await;
        }
        let (status, v) = rotate(&app, &key).await;
        assert_eq!(status, 200, "{v}");
        key = v["api_key"].as_str().unwrap().to_string();
    }
    let fresh = app.create_key("trial", None).await;
    let (status, v) = rotate(&app, &fresh).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        chat_status(&app, &fresh).await,
        200,
        "the refused rotation changed nothing"
    );
}

/// A key is replaced at most five times in a row, and once more every twelve minutes, from
/// whatever addresses: each replacement mails its owner, and a $1 key bought with a
/// stranger's address, replaced from many addresses, flooded that address (found by an
/// independent check). The dashboard's form says so in a page.
#[tokio::test]
async fn rotation_is_limited_per_key_whatever_the_address() {
    let app = TestApp::spawn_with(|c| c.server.behind_proxy = true).await;
    let mut key = app.create_key("trial", None).await;
    let from = |i: u32| format!("10.62.0.{}", i + 1);
    let rotate_from = async |key: &str, i: u32| {
        let r = app
            .http
            .post(format!("{}/api/keys/rotate", app.base))
            .bearer_auth(key)
            .header("X-Forwarded-For", from(i))
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
    };
    for i in 0..5 {
        let (status, _, v) = rotate_from(&key, i).await;
        assert_eq!(status, 200, "{v}");
        key = v["api_key"].as_str().unwrap().to_string();
    }
    let (status, retry, v) = rotate_from(&key, 5).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((600..=721).contains(&retry), "{retry}");
    assert_eq!(chat_status(&app, &key).await, 200, "the key still works");
    // Another key is not held back by this one's.
    let other = app.create_key("trial", None).await;
    assert_eq!(rotate_from(&other, 6).await.0, 200);
}

#[tokio::test]
async fn the_order_look_up_says_a_rotated_key_was_replaced() {
    let app = TestApp::spawn_shop().await;
    let mut b = Browser::open(&app).await;
    let (order_id, paypal_id) = b.create_order(&app, "trial", "me@example.com").await;
    assert!(app.pp().approve(&paypal_id));
    let (_, v) = b.capture(&app, &order_id).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    assert_eq!(v["key_replaced"], false, "{v}");
    let state = &app.daemon.as_ref().unwrap().state;
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "me@example.com")
        .await
        .unwrap();
    assert_eq!(view.api_key.as_deref(), Some(key.as_str()));
    assert!(view.replaced_at.is_none());

    let (status, _) = rotate(&app, &key).await;
    assert_eq!(status, 200);
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "me@example.com")
        .await
        .unwrap();
    assert_eq!(view.api_key, None, "the new key was shown once, not here");
    assert!(view.replaced_at.is_some());
    // The capture answer (a reload of the checkout page) does not show it either.
    let (_, v) = b.capture(&app, &order_id).await;
    assert!(v["api_key"].is_null(), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("replaced"), "{message}");
    // Said apart too, for the page to tell it in its own language (it said "shown only in
    // the browser that paid", to that browser).
    assert_eq!(v["key_replaced"], true, "{v}");
    // And the look-up page says the order is paid and its key replaced, nothing contradictory.
    let html = looked_up(&app, &order_id, "me@example.com").await;
    let en = &modelrelay::shop::i18n::EN;
    let se = &modelrelay::shop::i18n::SELF_EN;
    assert!(html.contains("id=\"order-replaced\""), "{html}");
    assert!(html.contains(&crate::pages::esc(se.order_note_paid_replaced)));
    assert!(!html.contains(&crate::pages::esc(en.order_note_paid_nokey)));
}

/// The order look-up page for `order_id` and `email`, in English.
async fn looked_up(app: &TestApp, order_id: &str, email: &str) -> String {
    let token = crate::pages::csrf_token(&app.base).await;
    let (status, html) = crate::pages::post_form(
        &app.base,
        "/order?lang=en",
        Some(&token),
        &[
            ("order_id", order_id),
            ("email", email),
            ("csrf_token", &token),
        ],
    )
    .await;
    assert_eq!(status, 200);
    html
}

async fn rotate_again(app: &TestApp, key: &str, idempotency: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth(key)
        .header("idempotency-key", idempotency)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A rotation whose answer was lost, sent again with the same old key and `Idempotency-Key`,
/// gets the same new text (it used to get 401: both texts lost). Another idempotency key, or
/// none, with the old text is still 401; a malformed or short one is 400; the old text never
/// works again.
#[tokio::test]
async fn a_rotation_sent_again_with_its_idempotency_key_gets_the_same_new_key() {
    let app = TestApp::spawn_shop().await;
    let old = app.create_key("trial", None).await;
    let (status, first) = rotate_again(&app, &old, "retry-7f3a-5b1c9e2d").await;
    assert_eq!(status, 200, "{first}");
    let new = first["api_key"].as_str().expect("a new key").to_string();
    assert_ne!(new, old);
    let (status, again) = rotate_again(&app, &old, "retry-7f3a-5b1c9e2d").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["api_key"].as_str(),
        Some(new.as_str()),
        "the same text"
    );
    assert_eq!(chat_status(&app, &new).await, 200);
    assert_eq!(chat_status(&app, &old).await, 401);
    let (status, other) = rotate_again(&app, &old, "another-4c0d2e7f19").await;
    assert_eq!(status, 401, "{other}");
    let (status, none) = rotate(&app, &old).await;
    assert_eq!(status, 401, "{none}");
    // The new text's own rotation with the same idempotency key is a new rotation.
    let (status, third) = rotate_again(&app, &new, "retry-7f3a-5b1c9e2d").await;
    assert_eq!(status, 200, "{third}");
    assert_ne!(third["api_key"].as_str(), Some(new.as_str()));
    // Too short to be unguessable: with the old key (leaked: why it is being replaced), a
    // guessed one would hand out the new key (found by an independent check).
    for bad in [
        "",
        "1",
        &"x".repeat(15),
        &"x".repeat(256),
        "a b c d e f g h i",
    ] {
        let (status, v) = rotate_again(&app, &new, bad).await;
        assert_eq!(status, 400, "{bad:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request");
    }
}

/// A rotation whose client hung up before its answer (the write held up meanwhile: another
/// connection holds the database's write lock) is still remembered by its idempotency key: the
/// same request sent again while it is being made waits for it, and once it is made every
/// sending, concurrent ones included, gets the one new text — none gets a 401 for the old key.
#[tokio::test]
async fn a_rotation_whose_client_hung_up_is_remembered_and_retries_wait_for_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_shop().await;
    let old = app.create_key("trial", Some("1.00")).await;
    let id = app.key_state(&old).id.clone();

    // Hold the write lock so the rotation's database write waits.
    let db = app.db();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();

    // The first sending, over a raw connection that hangs up before any answer.
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /api/keys/rotate HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {old}\r\n\
         Idempotency-Key: lost-1-9a8b7c6d5e4f\r\nContent-Length: 0\r\n\r\n"
    );
    first.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut none = [0u8; 1];
    let read =
        tokio::time::timeout(std::time::Duration::from_millis(50), first.read(&mut none)).await;
    assert!(read.is_err(), "no answer while the write is held");
    drop(first);

    // Retries while it is still being made, concurrently; then let the write through.
    let retries: Vec<_> = (0..5)
        .map(|_| {
            let (http, base, old) = (app.http.clone(), app.base.clone(), old.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/api/keys/rotate"))
                    .bearer_auth(&old)
                    .header("idempotency-key", "lost-1-9a8b7c6d5e4f")
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    db.execute_batch("COMMIT").unwrap();
    let mut texts = std::collections::HashSet::new();
    for r in retries {
        let (status, v) = r.await.unwrap();
        assert_eq!(status, 200, "{v}");
        texts.insert(v["api_key"].as_str().unwrap().to_string());
    }
    assert_eq!(texts.len(), 1, "one new text for every sending: {texts:?}");
    let new = texts.into_iter().next().unwrap();
    assert_ne!(new, old);
    assert_eq!(app.key_state(&new).id, id, "the same key");
    assert_eq!(chat_status(&app, &new).await, 200);
    assert_eq!(chat_status(&app, &old).await, 401);
    // Sent again later: the same text still.
    let (status, again) = rotate_again(&app, &old, "lost-1-9a8b7c6d5e4f").await;
    assert_eq!(
        (status, again["api_key"].as_str()),
        (200, Some(new.as_str()))
    );

    // A text made once but replaced since is not handed out again: the request is refused as
    // the old key deserves.
    let (status, newer) = rotate(&app, &new).await;
    assert_eq!(status, 200, "{newer}");
    let (status, v) = rotate_again(&app, &old, "lost-1-9a8b7c6d5e4f").await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "invalid_api_key");
}

/// The same, across a restart: a rotation recorded just before the daemon died (its answer
/// lost) is remembered from the database, so the request sent again gets its text; another
/// idempotency key is still 401, and a rotation replaced since is not handed out.
#[tokio::test]
async fn a_rotation_sent_again_after_a_restart_gets_the_same_new_key() {
    let mut app = TestApp::spawn().await;
    let old = app.create_key("trial", None).await;
    let (status, first) = rotate_again(&app, &old, "lost-at-crash-0e1f2a").await;
    assert_eq!(status, 200, "{first}");
    let new = first["api_key"].as_str().expect("a new key").to_string();
    let other = app.create_key("trial", None).await;
    let (status, o1) = rotate_again(&app, &other, "twice-3d4e5f6a7b8c").await;
    assert_eq!(status, 200);
    let (status, _) = rotate(&app, o1["api_key"].as_str().unwrap()).await;
    assert_eq!(status, 200, "rotated again since");
    app.shutdown().await;
    let TestApp { sim, dir, .. } = app;
    let config = crate::common::test_config(dir.path(), &sim);
    let app = TestApp::start(config, sim, dir).await;
    let (status, again) = rotate_again(&app, &old, "lost-at-crash-0e1f2a").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["api_key"].as_str(),
        Some(new.as_str()),
        "the same text"
    );
    assert_eq!(chat_status(&app, &new).await, 200);
    let (status, v) = rotate_again(&app, &old, "another-4c0d2e7f19").await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = rotate_again(&app, &other, "twice-3d4e5f6a7b8c").await;
    assert_eq!(status, 401, "replaced since: {v}");
}

/// Whoever made a top-up order of a key (anyone who had its text then) learns nothing of the
/// text its owner replaced it with: the order's look-up and its capture answer showed the
/// new text's prefix (found by an independent check). A top-up ordered after the rotation
/// shows the key as it is.
#[tokio::test]
async fn a_top_up_order_shows_nothing_of_a_key_replaced_since() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let mut other = Browser::open(&app).await;
    let (status, v) = other
        .post_json(
            &app,
            "/api/orders",
            &serde_json::json!({"plan": "trial", "email": "someone@example.com", "key": key}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let order_id = v["order_id"].as_str().unwrap().to_string();
    let paypal_id = v["paypal_order_id"].as_str().unwrap().to_string();
    let state = &app.daemon.as_ref().unwrap().state;
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "someone@example.com")
        .await
        .unwrap();
    let old_prefix = view.topped_up.clone().unwrap();
    assert!(
        key.starts_with(old_prefix.trim_end_matches('…')),
        "{old_prefix}"
    );

    let (status, v) = rotate(&app, &key).await;
    assert_eq!(status, 200, "{v}");
    let new_key = v["api_key"].as_str().unwrap().to_string();
    let new_prefix = &new_key[..15];
    let view = modelrelay::shop::orders::lookup_order(state, &order_id, "someone@example.com")
        .await
        .unwrap();
    assert_eq!(view.topped_up.as_deref(), Some("sk-gateway-…"));
    assert!(view.replaced_at.is_some());
    // Paid now: the credit goes to the same key; the answer names no text of it.
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = other.capture(&app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid", "{v}");
    assert_eq!(v["topped_up"], "sk-gateway-…", "{v}");
    assert!(!v.to_string().contains(new_prefix), "{v}");
    // The owner's own top-up after the rotation shows the key as it is.
    let mut owner = Browser::open(&app).await;
    let (_, v) = owner
        .post_json(
            &app,
            "/api/orders",
            &serde_json::json!({"plan": "trial", "email": "me@example.com", "key": new_key}),
        )
        .await;
    let mine = v["order_id"].as_str().unwrap().to_string();
    let view = modelrelay::shop::orders::lookup_order(state, &mine, "me@example.com")
        .await
        .unwrap();
    assert_eq!(
        view.topped_up.as_deref().map(|p| p.trim_end_matches('…')),
        Some(new_prefix)
    );
}

/// A rotation sent again with its idempotency key gets its text even after a flood of other
/// rotations pushed it out of memory (the daemon keeps the last 256 there): the database has
/// every request of the last ten minutes (it answered 401, the new text never seen; found by
/// an independent check).
#[tokio::test]
async fn a_rotation_sent_again_after_a_flood_of_others_gets_the_same_new_key() {
    let app = TestApp::spawn_shop_with(|c| c.server.behind_proxy = true).await;
    let old = app.create_key("trial", None).await;
    let (status, first) = rotate_again(&app, &old, "victim-retry-1-aa55bb").await;
    assert_eq!(status, 200, "{first}");
    let new = first["api_key"].as_str().unwrap().to_string();
    // Someone else rotates their own keys 300 times, from as many addresses (five times each:
    // a key's own limit).
    let mut theirs = String::new();
    for i in 0..300u32 {
        if i % 5 == 0 {
            theirs = app.create_key("trial", None).await;
        }
        let r = app
            .http
            .post(format!("{}/api/keys/rotate", app.base))
            .bearer_auth(&theirs)
            .header("Idempotency-Key", format!("flood-{i}-0123456789ab"))
            .header(
                "X-Forwarded-For",
                format!("10.61.{}.{}", i / 250, i % 250 + 1),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{i}");
        theirs = r.json::<Value>().await.unwrap()["api_key"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let (status, again) = rotate_again(&app, &old, "victim-retry-1-aa55bb").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["api_key"].as_str(), Some(new.as_str()));
}

/// The look-up of a paid top-up whose key's text was replaced since says the credit is on the
/// key under its new text, not "the key above keeps working in your tools" beside "this key was
/// replaced" (found by an independent check).
#[tokio::test]
async fn the_look_up_of_a_top_up_whose_key_was_replaced_says_so() {
    let app = TestApp::spawn_shop().await;
    let key = app.create_key("trial", None).await;
    let mut b = Browser::open(&app).await;
    let (order_id, _) =
        crate::selfservice_topup::approved_top_up(&app, &mut b, "trial", &key).await;
    let (_, v) = b.capture(&app, &order_id).await;
    assert_eq!(v["status"], "paid", "{v}");
    let (status, _) = rotate(&app, &key).await;
    assert_eq!(status, 200);
    let html = looked_up(&app, &order_id, "buyer@example.com").await;
    let se = &modelrelay::shop::i18n::SELF_EN;
    assert!(html.contains("id=\"order-replaced\""), "{html}");
    assert!(html.contains(&crate::pages::esc(se.order_note_paid_topup_replaced)));
    assert!(!html.contains(&crate::pages::esc(se.order_note_paid_topup)));
}

/// A replacement the database cannot record now (another program holds its write lock; a full
/// disk fails the same way) is a 503 to retry, with `Retry-After`, as an order then is — it was
/// a 500 `internal_error` (found by an independent check) — and the key still works; once the
/// lock goes, the replacement goes through.
#[tokio::test]
async fn a_rotation_the_database_cannot_record_now_is_a_503_to_retry() {
    let app = TestApp::spawn_shop().await;
    let old = app.create_key("trial", Some("1.00")).await;
    let lock = rusqlite::Connection::open(&app.db).unwrap();
    lock.execute_batch("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
        .unwrap();
    let resp = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    lock.execute_batch("ROLLBACK;").unwrap();
    drop(lock);
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "30");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "service_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it still works"),
        "{v}"
    );
    let models = app.get(&old, "/v1/models").send().await.unwrap();
    assert_eq!(models.status(), 200, "the old text still works");
    let again = app
        .http
        .post(format!("{}/api/keys/rotate", app.base))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}
