//! A key's balance over its life (SPEC §4): exhausted when it cannot pay a token, revived by a
//! top-up, and the same after a restart as the ledger says.

use std::time::Duration;

use modelrelay::activity::protocol::{Request, Response};
use modelrelay::keys::KeyStatus;

use crate::billing::{
    FLASH, FLASH_OFF_PEAK, MISS_NANOS, OUT_NANOS, assert_books, assert_provider_row,
    body_priced_at_its_bound, call, cost, db_key, prompt_hold, usd,
};
use crate::common::{TestApp, body};

#[tokio::test]
async fn a_key_is_exhausted_when_it_cannot_pay_a_token_and_a_top_up_revives_it() {
    let app = TestApp::spawn().await;
    let (b, prompt) = body_priced_at_its_bound();
    let hold = prompt_hold(&b) + 5 * OUT_NANOS;
    // After the first request, 300 nano are left: less than one output token (600).
    let budget = hold + 300;
    let key = app.create_key("trial", Some(&usd(budget))).await;
    let id = app.key_state(&key).id.clone();

    let (rid, status, v) = call(&app, &key, &b).await;
    assert_eq!(status, 200, "{v}");
    let want = cost(0, prompt, 5, FLASH_OFF_PEAK);
    assert_eq!(want, hold);
    let row = app.ledger_row(&rid).expect("row");
    assert_provider_row(&row, FLASH, [prompt, 0, prompt, 5, 0], want);
    let state = app.key_state(&key);
    assert_eq!(state.balance().remaining().nanos(), 300);
    assert_eq!(state.status(), KeyStatus::Exhausted);
    match app.admin(Request::KeysShow { key: id.clone() }).await {
        Response::Key { key: view } => {
            assert_eq!(view.status, KeyStatus::Exhausted);
            assert_eq!(view.remaining_usd.nanos(), 300);
            assert_eq!(view.spent_usd.nanos(), want);
        }
        other => panic!("{other:?}"),
    }
    let mut persisted = String::new();
    for _ in 0..200 {
        persisted = db_key(&app, &key).3;
        if persisted == "exhausted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(persisted, "exhausted", "the status reaches the database");

    // A later request is refused, whatever it asks, and never reaches upstream.
    let (rid2, status, v) = call(&app, &key, &body(FLASH, "[[sim reply=1]] hi")).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_budget");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(app.ledger_row(&rid2).is_none());
    assert_eq!(app.sim.requests().len(), 1);

    // Top-up: active again, budget and remaining move by exactly the amount.
    let top = 10_000_000; // $0.01
    match app
        .admin(Request::KeysTopup {
            key: id.clone(),
            usd: usd(top).parse().expect("usd"),
        })
        .await
    {
        Response::Key { key: view } => {
            assert_eq!(view.status, KeyStatus::Active);
            assert_eq!(view.budget_usd.nanos(), budget + top);
            assert_eq!(view.remaining_usd.nanos(), 300 + top);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.status(), KeyStatus::Active);
    assert_eq!(
        db_key(&app, &key).3,
        "active",
        "the top-up is persisted with its status"
    );
    let (rid3, status, v) = call(&app, &key, &body(FLASH, "[[sim prompt=10 reply=1]] hi")).await;
    assert_eq!(status, 200, "{v}");
    let row3 = app.ledger_row(&rid3).expect("row");
    assert_eq!(row3.cost.nanos(), 10 * MISS_NANOS + OUT_NANOS);
    assert_eq!(assert_books(&app, &key), want + row3.cost.nanos());
    assert_eq!(
        state.balance().remaining().nanos(),
        300 + top - row3.cost.nanos()
    );
}

#[tokio::test]
async fn balances_and_status_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let (b, prompt) = body_priced_at_its_bound();
    let hold = prompt_hold(&b) + 5 * OUT_NANOS;
    let spender = app.create_key("trial", None).await;
    let exhausted = app.create_key("trial", Some(&usd(hold + 300))).await;
    let revived = app.create_key("trial", Some(&usd(hold + 300))).await;
    for text in [
        "[[sim prompt=300 hit=64 reply=12]]",
        "[[sim prompt=7 reply=3 reasoning=2]]",
    ] {
        let (_, status, _) = call(&app, &spender, &body(FLASH, text)).await;
        assert_eq!(status, 200);
    }
    let spent = cost(64, 236, 12, FLASH_OFF_PEAK) + cost(0, 7, 5, FLASH_OFF_PEAK);
    assert_eq!(assert_books(&app, &spender), spent);
    for k in [&exhausted, &revived] {
        let (_, status, _) = call(&app, k, &b).await;
        assert_eq!(status, 200);
        assert_eq!(app.key_state(k).status(), KeyStatus::Exhausted);
    }
    let revived_id = app.key_state(&revived).id.clone();
    match app
        .admin(Request::KeysTopup {
            key: revived_id,
            usd: "0.5".parse().expect("usd"),
        })
        .await
    {
        Response::Key { key } => assert_eq!(key.status, KeyStatus::Active),
        other => panic!("{other:?}"),
    }
    let before: Vec<_> = [&spender, &exhausted, &revived]
        .iter()
        .map(|k| {
            let s = app.key_state(k);
            let b = s.balance();
            (b.budget, b.spent, s.status(), s.requests())
        })
        .collect();

    app.shutdown().await;
    let TestApp { sim, dir, .. } = app;
    let config = crate::common::test_config(dir.path(), &sim);
    let app = TestApp::start(config, sim, dir).await;
    let after: Vec<_> = [&spender, &exhausted, &revived]
        .iter()
        .map(|k| {
            let s = app.key_state(k);
            let b = s.balance();
            (b.budget, b.spent, s.status(), s.requests())
        })
        .collect();
    assert_eq!(
        before, after,
        "(budget, spent, status, requests) after a restart"
    );
    for k in [&spender, &exhausted, &revived] {
        assert_books(&app, k);
    }
    assert_eq!(
        app.key_state(&exhausted).balance().spent.nanos(),
        cost(0, prompt, 5, FLASH_OFF_PEAK)
    );
    let (_, status, _) = call(&app, &exhausted, &body(FLASH, "[[sim reply=1]]")).await;
    assert_eq!(status, 402);
    let (_, status, _) = call(&app, &revived, &body(FLASH, "[[sim reply=1]]")).await;
    assert_eq!(status, 200);
}

/// Top-ups never take a key's budget past `MAX_BUDGET` ($1 billion): the sum would otherwise
/// wrap to a negative balance and, stored past 64 bits, keep the daemon from starting again.
#[tokio::test]
async fn top_ups_stop_at_the_budget_ceiling() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", Some("100000")).await;
    let state = app.key_state(&key);
    // As if after ~10 000 top-ups of the largest amount (memory only: the check reads it).
    state.top_up(
        modelrelay::money::Usd::from_dollars(999_800_000),
        modelrelay::money::Usd::ZERO,
    );
    let top = |usd: &'static str| {
        app.admin(Request::KeysTopup {
            key: state.id.clone(),
            usd: usd.parse().expect("usd"),
        })
    };
    match top("100000").await {
        Response::Key { key } => assert_eq!(key.budget_usd, modelrelay::money::MAX_BUDGET),
        other => panic!("{other:?}"),
    }
    match top("0.01").await {
        Response::Error { message } => {
            assert!(message.contains("would pass $1000000000.00"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(state.balance().budget, modelrelay::money::MAX_BUDGET);
    // Concurrent top-ups: the check and the top-up are one step, so of twenty that would each
    // fit alone, only one does.
    let other = app.create_key("pro", Some("100000")).await;
    let other = app.key_state(&other);
    other.top_up(
        modelrelay::money::Usd::from_dollars(999_750_000),
        modelrelay::money::Usd::ZERO,
    );
    let tops = (0..20).map(|_| {
        app.admin(Request::KeysTopup {
            key: other.id.clone(),
            usd: "100000".parse().expect("usd"),
        })
    });
    let answers = futures_util::future::join_all(tops).await;
    let done = answers
        .iter()
        .filter(|a| matches!(a, Response::Key { .. }))
        .count();
    assert_eq!(done, 1, "{done} of 20 went through");
    assert_eq!(
        other.balance().budget,
        modelrelay::money::Usd::from_dollars(999_950_000)
    );
}

/// A key whose last answer's charge reached the disk but whose "exhausted" mark did not (it is
/// written behind the answer; a kill -9 in between) is marked at the next start: shown and
/// stored `exhausted`, not `active` while every request gets 402.
#[tokio::test]
async fn an_exhausted_mark_lost_in_a_crash_is_made_at_the_next_start() {
    let mut app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let id = app.key_state(&key).id.clone();
    app.shutdown().await;
    // As the crash left it: charged down to 1 nano-USD, still `active`.
    app.db()
        .execute(
            "UPDATE keys SET spent_nanos = budget_nanos - 1 WHERE id = ?1",
            [&id],
        )
        .unwrap();
    let TestApp { sim, dir, .. } = app;
    let config = crate::common::test_config(dir.path(), &sim);
    let app = TestApp::start(config, sim, dir).await;
    assert_eq!(app.key_state(&key).status(), KeyStatus::Exhausted);
    for _ in 0..50 {
        if db_key(&app, &key).3 == "exhausted" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the mark did not reach the database: {:?}",
        db_key(&app, &key)
    );
}
