//! The pool under faults an independent check found it blind to: statuses DeepSeek never
//! answers a request with (a redirect, 408), streams that break after their first words, and
//! DeepSeek's own 429 on every account.

use modelrelay::upstream::simulated::AccountFault;

use crate::common::{SIM_KEY, TestApp, body, request_id};
use crate::upstream_pool::{SECOND, two_accounts};

/// The pool's view of one account, by name.
fn account(app: &TestApp, name: &str) -> modelrelay::upstream::status::AccountStatus {
    let state = &app.daemon.as_ref().expect("running").state;
    state
        .upstream
        .status()
        .accounts
        .into_iter()
        .find(|a| a.name == name)
        .expect("the account")
}

/// Which account (by the simulator's key) served each request, in order.
fn served(app: &TestApp) -> Vec<Option<String>> {
    app.sim
        .requests()
        .iter()
        .map(|r| r.account.clone())
        .collect()
}

/// A status DeepSeek never answers a request with (a 301 from an `http://` base URL, 408,
/// 409) means the account's address is wrong: it rests and the request fails over (each was
/// relayed as 502 while the account kept its share). A request's own size (413) rests nothing.
#[tokio::test]
async fn a_status_deepseek_never_sends_rests_the_account_and_fails_over() {
    for code in [301u16, 408, 409] {
        let app = two_accounts(|_| {}, |_| {}).await;
        let key = app.create_key("trial", None).await;
        app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(code)));
        for _ in 0..4 {
            let resp = app
                .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{code}");
        }
        let first = account(&app, "first");
        assert_eq!(first.state.as_str(), "cooling", "{code}: {first:?}");
        assert_eq!(first.errors, 1, "{code}: {first:?}");
        let seen = served(&app);
        assert_eq!(
            seen.iter()
                .filter(|a| a.as_deref() == Some(SIM_KEY))
                .count(),
            1,
            "{code}: one attempt on the resting account: {seen:?}"
        );
    }
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(413)));
    app.sim.set_fault(SECOND, Some(AccountFault::Status(413)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(app.sim.requests().len(), 1, "not retried elsewhere");
    for name in ["first", "second"] {
        assert_eq!(account(&app, name).state.as_str(), "healthy", "{name}");
    }
}

/// A stream that breaks after its first words (an error event, a cut connection) is the
/// account's failure: counted and rested, so the next requests go to the other account (an
/// account whose every stream broke stayed healthy with its share, and an error event did
/// not even count). The customer pays what reached them, once.
#[tokio::test]
async fn a_stream_that_breaks_after_its_first_words_rests_its_account() {
    for fault in ["error_after=2", "drop_after=2"] {
        let app = two_accounts(|_| {}, |_| {}).await;
        let key = app.create_key("trial", None).await;
        let mut b = body("deepseek-v4-flash", &format!("[[sim reply=6 {fault}]] hi"));
        b["stream"] = true.into();
        let resp = app.chat(&key, &b).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(text.contains("\"error\""), "{fault}: {text}");
        let row = app.wait_ledger_row(&rid).await;
        assert_eq!(row.finish.as_str(), "upstream_error", "{fault}: {row:?}");
        let broke = app.sim.requests()[0].account.clone().expect("an account");
        let (broke_name, other) = if broke == SIM_KEY {
            ("first", SECOND)
        } else {
            ("second", SIM_KEY)
        };
        let s = account(&app, broke_name);
        assert_eq!(s.state.as_str(), "cooling", "{fault}: {s:?}");
        assert_eq!(s.errors, 1, "{fault}: {s:?}");
        for _ in 0..3 {
            let resp = app
                .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] ok"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        assert!(
            served(&app)[1..]
                .iter()
                .all(|a| a.as_deref() == Some(other)),
            "{fault}: {:?}",
            served(&app)
        );
        // A stream that ends as DeepSeek ends one rests nothing.
        let mut whole = body("deepseek-v4-flash", "[[sim reply=3]] fine");
        whole["stream"] = true.into();
        let resp = app.chat(&key, &whole).send().await.unwrap();
        assert!(resp.text().await.unwrap().contains("[DONE]"));
        assert_eq!(
            account(
                &app,
                if broke_name == "first" {
                    "second"
                } else {
                    "first"
                }
            )
            .errors,
            0,
            "{fault}"
        );
    }
}

/// DeepSeek's 429 on every account (its limit of requests in flight) is busy: 503
/// `upstream_busy` with Retry-After, not 502; and while every account rests, a request is one
/// attempt, not one on each resting account in turn.
#[tokio::test]
async fn deepseeks_429_everywhere_is_busy_and_resting_accounts_are_not_tried_in_turn() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(429)));
    app.sim.set_fault(SECOND, Some(AccountFault::Status(429)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_busy", "{v}");
    assert_eq!(app.sim.requests().len(), 2, "both tried once");
    // Both rest now: the next request is one attempt, on one of them.
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] again"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(app.sim.requests().len(), 3, "{:?}", served(&app));
    assert_eq!(
        app.key_state(&key).balance().spent.nanos(),
        0,
        "nothing charged"
    );
}
