//! How long accounts rest after every one of them failed (found by an independent check: a
//! rest doubled from 5 s to 5 minutes within seconds while every account rested, and healthy
//! accounts then sat out of service): an answer that ends whole on an account taken early
//! clears its backoff, and a request's own 400 on one brings it back no more than any answer
//! that is not whole.

use modelrelay::upstream::account::AccountState;

use crate::common::{TestApp, body, request_id};
use crate::upstream_faults::account as status;
use crate::upstream_pool::two_accounts;

/// A streamed chat request for `text`; returns the account that served it, once settled.
async fn stream(app: &TestApp, key: &str, text: &str) -> String {
    let mut b = body("deepseek-v4-flash", text);
    b["stream"] = true.into();
    let resp = app.chat(key, &b).send().await.unwrap();
    let rid = request_id(&resp);
    let _ = resp.text().await;
    app.wait_ledger_row(&rid).await.account
}

/// A stream cut after its first words, which rests the account that served it.
const CUT: &str = "[[sim reply=10 drop_after=3]] go";

/// That `name`'s state and backoff are as given.
fn assert_rest(app: &TestApp, name: &str, state: AccountState, backoff_ms: u64) {
    let s = status(app, name);
    assert_eq!((s.state, s.backoff_ms), (state, backoff_ms), "{s:?}");
}

/// Break a stream on each account: both rest, 5 s.
async fn both_resting(app: &TestApp, key: &str) {
    let a = stream(app, key, CUT).await;
    let b = stream(app, key, CUT).await;
    assert_ne!(a, b, "the second went to the account still in service");
    for name in ["first", "second"] {
        assert_rest(app, name, AccountState::Cooling, 5000);
    }
}

/// Both accounts' streams break (both rest, 5 s); a short stream then ends whole on one taken
/// early: that account is back with its backoff cleared, so its next failure rests it 5 s, not
/// 10 (it kept 5 s, "on probation", and every short/long pair doubled it).
#[tokio::test]
async fn a_whole_stream_on_an_account_taken_early_clears_its_backoff() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    both_resting(&app, &key).await;
    let whole = stream(&app, &key, "[[sim reply=2]] go").await;
    assert_rest(&app, &whole, AccountState::Healthy, 0);
    // Its next broken stream rests it from the first backoff again.
    let again = stream(&app, &key, CUT).await;
    assert_eq!(again, whole);
    assert_rest(&app, &whole, AccountState::Cooling, 5000);
}

/// While both accounts rest, a request that DeepSeek refuses as the request's own fault (a
/// 400 in its JSON) on one taken early is no answer that ends whole: the account rests on.
#[tokio::test]
async fn a_requests_own_400_on_an_account_taken_early_does_not_bring_it_back() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    both_resting(&app, &key).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim fail=400]] go"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    for name in ["first", "second"] {
        assert_rest(&app, name, AccountState::Cooling, 5000);
    }
}
