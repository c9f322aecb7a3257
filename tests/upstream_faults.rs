//! The pool under faults an independent check found it blind to: statuses DeepSeek never
//! answers a request with (a redirect, 408), streams that break after their first words, and
//! DeepSeek's own 429 on every account.

use modelrelay::upstream::simulated::AccountFault;

use crate::common::{SIM_KEY, TestApp, body, request_id};
use crate::upstream_pool::{SECOND, served_by, two_accounts};

/// The pool's view of one account, by name.
pub(super) fn account(app: &TestApp, name: &str) -> modelrelay::upstream::status::AccountStatus {
    let state = &app.daemon.as_ref().expect("running").state;
    state
        .upstream
        .status()
        .accounts
        .into_iter()
        .find(|a| a.name == name)
        .expect("the account")
}

/// A status DeepSeek never answers a request with (a 301 from an `http://` base URL, 408,
/// 409) means the account's address is wrong: it rests and the request fails over (each was
/// relayed as 502 while the account kept its share). A request's own size (413) rests nothing
/// and counts as no error of the account's: the customer gets 413 (it was a 502 the SDKs
/// retried; found by an independent re-check).
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
        let seen = served_by(&app);
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
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");
    assert_eq!(app.sim.requests().len(), 1, "not retried elsewhere");
    for name in ["first", "second"] {
        let a = account(&app, name);
        assert_eq!((a.state.as_str(), a.errors), ("healthy", 0), "{name}");
    }
}

/// A stream that breaks after its first words (an error event, a cut connection) is the
/// account's failure: counted and rested, so the next requests go to the other account (an
/// account whose every stream broke stayed healthy with its share, and an error event did
/// not even count). The customer pays what reached them, once.
#[tokio::test]
async fn a_stream_that_breaks_after_its_first_words_rests_its_account() {
    for fault in ["error_after=2", "drop_after=2", "garbage_after=2"] {
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
            served_by(&app)[1..]
                .iter()
                .all(|a| a.as_deref() == Some(other)),
            "{fault}: {:?}",
            served_by(&app)
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
    assert_eq!(app.sim.requests().len(), 3, "{:?}", served_by(&app));
    assert_eq!(
        app.key_state(&key).balance().spent.nanos(),
        0,
        "nothing charged"
    );
}

/// A whole answer (its usage came) whose connection is cut before the end marker is complete
/// for the customer and no failure of the account's: both say the same (the row said
/// complete while the account rested; found by an independent re-check).
#[tokio::test]
async fn a_whole_answer_cut_before_its_end_marker_rests_nothing() {
    // Cut, or an error event in place of the end marker (it rested the account: found by an
    // independent re-check).
    for fault in ["drop_at_end=1", "error_at_end=1"] {
        let app = two_accounts(|_| {}, |_| {}).await;
        let key = app.create_key("trial", None).await;
        let mut b = body("deepseek-v4-flash", &format!("[[sim reply=3 {fault}]] hi"));
        b["stream"] = true.into();
        b["stream_options"] = serde_json::json!({"include_usage": true});
        let resp = app.chat(&key, &b).send().await.unwrap();
        let rid = request_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(text.contains("[DONE]"), "{fault}: {text}");
        let row = app.wait_ledger_row(&rid).await;
        assert_eq!(row.finish.as_str(), "complete", "{fault}: {row:?}");
        for name in ["first", "second"] {
            let a = account(&app, name);
            assert_eq!(
                (a.state.as_str(), a.errors),
                ("healthy", 0),
                "{fault} {name}: {a:?}"
            );
        }
    }
}

/// A stream whose first event cannot be read (taken for its opening: no answer yet), or whose
/// event after the opening cannot, is the account's failure: it rests (the first was told
/// nothing, and kept its share; found by an independent re-check).
#[tokio::test]
async fn a_stream_broken_at_its_opening_rests_its_account() {
    for fault in ["garbage=1", "garbage_after=0"] {
        let app = two_accounts(|_| {}, |_| {}).await;
        let key = app.create_key("trial", None).await;
        let mut b = body("deepseek-v4-flash", &format!("[[sim reply=3 {fault}]] hi"));
        b["stream"] = true.into();
        let resp = app.chat(&key, &b).send().await.unwrap();
        let text = resp.text().await.unwrap();
        assert!(text.contains("upstream_error"), "{fault}: {text}");
        let broke = app.sim.requests()[0].account.clone().expect("an account");
        let name = if broke == SIM_KEY { "first" } else { "second" };
        let s = account(&app, name);
        assert_eq!(
            (s.state.as_str(), s.errors),
            ("cooling", 1),
            "{fault}: {s:?}"
        );
    }
}

/// Wait until account `name`'s rest is over (its `cooling_until`), and 300 ms more.
async fn rest_over(app: &TestApp, name: &str) {
    let until = account(app, name).cooling_until_ms.expect("resting");
    let left = until - chrono::Utc::now().timestamp_millis();
    let left = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
    tokio::time::sleep(left + std::time::Duration::from_millis(300)).await;
}

/// Two accounts, `second` capped at one flash request and busy with a long stream, `first`
/// rested once (5 s) and then given its trial, a long stream whose first words came:
/// `(app, key, the trial's stream, the busy stream's response)`.
async fn trial_under_way() -> (
    TestApp,
    String,
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    reqwest::Response,
) {
    use futures_util::StreamExt;
    let app = two_accounts(
        |_| {},
        |c| {
            c.upstream.accounts[1]
                .max_in_flight
                .insert("deepseek-v4-flash".into(), 1);
            c.upstream.queue_timeout_ms = 500;
        },
    )
    .await;
    let key = app.create_key("pro", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-flash", "[[sim reply=1]] rest first"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(account(&app, "first").state.as_str(), "cooling");
    app.sim.set_fault(SIM_KEY, None);
    // `second` full with a long stream (30 s: it outlasts the rest on a loaded machine too);
    // once `first` may be tried, its trial is a long one.
    let mut long = body("deepseek-v4-flash", "[[sim reply=300 delay_ms=100]] long");
    long["stream"] = true.into();
    let busy = app.chat(&key, &long).send().await.unwrap();
    assert_eq!(busy.status(), 200);
    rest_over(&app, "first").await;
    let mut trial = app.chat(&key, &long).send().await.unwrap().bytes_stream();
    let first = trial.next().await.expect("the trial streams").unwrap();
    assert!(!first.is_empty());
    (app, key, trial, busy)
}

/// A resting account whose trial stream has begun serves again while it runs (on probation:
/// a break would rest it for longer): held out until a long trial ended, a working account
/// left customers with 503 while the other was full (found by an independent re-check).
#[tokio::test]
async fn a_trial_under_way_lets_its_account_serve_again() {
    let (app, key, trial, busy) = trial_under_way().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // While the trial streams, `first` takes other requests.
    for _ in 0..3 {
        let resp = app
            .chat(
                &key,
                &body("deepseek-v4-flash", "[[sim reply=1]] meanwhile"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(account(&app, "first").state.as_str(), "healthy");
    drop(trial);
    drop(busy);
}

/// A resting account's trial is decided by the whole answer: a trial stream that breaks after
/// its first words leaves it resting, for longer (its first words brought it back, the break
/// counted for nothing, and the next request broke again every few seconds; found by an
/// independent re-check).
#[tokio::test]
async fn a_trial_whose_stream_breaks_keeps_the_account_resting_for_longer() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("pro", None).await;
    let mut broken = body("deepseek-v4-flash", "[[sim reply=6 error_after=2]] hi");
    broken["stream"] = true.into();
    let resp = app.chat(&key, &broken).send().await.unwrap();
    resp.text().await.unwrap();
    let bad = app.sim.requests()[0].account.clone().expect("an account");
    let name = if bad == SIM_KEY { "first" } else { "second" };
    assert_eq!(account(&app, name).state.as_str(), "cooling");
    // The other account busy with a slow stream, so that the trial goes to the resting one
    // once its rest is over.
    let mut slow = body("deepseek-v4-flash", "[[sim reply=150 delay_ms=200]] slow");
    slow["stream"] = true.into();
    let slow = app.chat(&key, &slow).send().await.unwrap();
    rest_over(&app, name).await;
    let resp = app.chat(&key, &broken).send().await.unwrap();
    resp.text().await.unwrap();
    let trial = app.sim.requests().last().unwrap().account.clone();
    assert_eq!(trial.as_deref(), Some(bad.as_str()), "the trial went to it");
    let s = account(&app, name);
    assert_eq!(s.state.as_str(), "cooling", "{s:?}");
    assert_eq!(s.errors, 2, "{s:?}");
    // Resting for the doubled backoff (10 s), not 5 s again.
    // Counted from the break (when the test looks is a loaded machine's business).
    let rest = s.cooling_until_ms.unwrap() - s.last_error.as_ref().expect("the break").1;
    assert!(rest > 7_000, "rests {rest} ms: {s:?}");
    drop(slow);
}

/// A failure fails over to an account whose rest is over (it takes the request as its trial):
/// only accounts still resting are skipped (a request failed with 502 where it was served
/// before; found by an independent re-check).
#[tokio::test]
async fn a_failure_fails_over_to_an_account_due_its_trial() {
    // Weights make `second` first whenever both may serve.
    let app = two_accounts(|_| {}, |c| c.upstream.accounts[1].weight = 100).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    app.sim.set_fault(SECOND, Some(AccountFault::Status(500)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] one"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    app.sim.set_fault(SIM_KEY, None);
    tokio::time::sleep(std::time::Duration::from_millis(5_300)).await;
    let before = app.sim.requests().len();
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] two"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Vec<_> = served_by(&app)[before..].to_vec();
    assert_eq!(
        seen,
        [Some(SECOND.to_string()), Some(SIM_KEY.to_string())],
        "second failed, first took it as its trial"
    );
    assert_eq!(account(&app, "first").state.as_str(), "healthy");
}

/// While a trial's stream runs (its account back on probation), a request of the account's
/// that breaks rests it for twice its last rest, not from the first backoff again (an account
/// whose streams broke rested 5 s at a time for ever); a request taken early while the only
/// account rests brings it back only once its stream ends whole (it flapped twice a second).
/// Both found by an independent re-check.
#[tokio::test]
async fn probation_keeps_the_backoff_and_early_requests_wait_for_the_end() {
    use futures_util::StreamExt;
    let (app, key, trial, busy) = trial_under_way().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(account(&app, "first").state.as_str(), "healthy");
    // Another request on `first` breaks after its first words: 10 s, not 5.
    let mut broken = body("deepseek-v4-flash", "[[sim reply=6 error_after=2]] breaks");
    broken["stream"] = true.into();
    app.chat(&key, &broken)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = account(&app, "first");
    assert_eq!(s.state.as_str(), "cooling", "{s:?}");
    // Counted from the break (when the test looks is a loaded machine's business).
    let rest = s.cooling_until_ms.unwrap() - s.last_error.as_ref().expect("the break").1;
    assert!(rest > 7_000, "rests {rest} ms: {s:?}");
    drop(trial);
    drop(busy);

    // One account alone, resting: a request taken early does not bring it back at its first
    // words, only at its whole end. "Early" is while its rest (5 s from the break) lasts: a
    // look after it (a machine stalled that long) proves nothing, and the part is run again.
    let mut looked = false;
    for _ in 0..3 {
        let app = TestApp::spawn().await;
        let key = app.create_key("pro", None).await;
        app.chat(&key, &broken)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let state = |app: &TestApp| account(app, "default").state.as_str().to_string();
        assert_eq!(state(&app), "cooling");
        let rest_end = account(&app, "default").cooling_until_ms.expect("resting");
        let mut short = body("deepseek-v4-flash", "[[sim reply=10 delay_ms=100]] early");
        short["stream"] = true.into();
        let mut early = app.chat(&key, &short).send().await.unwrap().bytes_stream();
        early.next().await.expect("it streams").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let still_resting = state(&app);
        if chrono::Utc::now().timestamp_millis() >= rest_end {
            continue;
        }
        assert_eq!(still_resting, "cooling", "not at its first words");
        while early.next().await.is_some() {}
        // Back once its end has settled: before its rest is over (after it, a probe would
        // bring it back too).
        while state(&app) != "healthy" && chrono::Utc::now().timestamp_millis() < rest_end {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(state(&app), "healthy", "at its whole end");
        looked = true;
        break;
    }
    assert!(looked, "three tries, each looked after the rest was over");
}

/// While every account rests, a request goes to the one due soonest; when that one fails again,
/// its rest starts again from now, so the next request goes to the other — which may have
/// recovered (the failing account stayed first in line and took every request, each failing,
/// for as long as its rest lasted; found by an independent re-check).
#[tokio::test]
async fn a_resting_account_that_fails_again_goes_to_the_back_of_the_line() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(503)));
    app.sim.set_fault(SECOND, Some(AccountFault::Status(503)));
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-flash", "[[sim reply=1]] both fail"),
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error());
    // The account tried first rests until a little sooner: it is first in line. It still
    // fails; the other has recovered.
    let first_in_line = served_by(&app)[0].clone().expect("an account");
    let recovered = if first_in_line == SIM_KEY {
        SECOND
    } else {
        SIM_KEY
    };
    app.sim.set_fault(recovered, None);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = app
            .chat(
                &key,
                &body("deepseek-v4-flash", &format!("[[sim reply=1]] r{i}")),
            )
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    let served = served_by(&app);
    assert_eq!(
        served[2].as_deref(),
        Some(first_in_line.as_str()),
        "{served:?}"
    );
    assert_eq!(&statuses[1..], [200, 200], "{statuses:?} {served:?}");
    assert!(
        served[3..].iter().all(|a| a.as_deref() == Some(recovered)),
        "{served:?}"
    );
}

/// A trial DeepSeek answers with its 400 (the customer's request at fault) brings the account
/// back on probation, its backoff kept: a break then rests it for twice as long (the 400 wiped
/// the backoff, and any customer could turn a 40 s rest back into 5 s; found by an independent
/// re-check).
#[tokio::test]
async fn a_trial_answered_with_deepseeks_400_keeps_the_backoff() {
    let app = TestApp::spawn().await;
    let key = app.create_key("pro", None).await;
    let only = |app: &TestApp| {
        app.daemon
            .as_ref()
            .expect("running")
            .state
            .upstream
            .status()
            .accounts[0]
            .clone()
    };
    let mut broken = body("deepseek-v4-flash", "[[sim reply=6 error_after=2]] hi");
    broken["stream"] = true.into();
    app.chat(&key, &broken)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(only(&app).state.as_str(), "cooling");
    tokio::time::sleep(std::time::Duration::from_millis(5_300)).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(400)));
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-flash", "[[sim reply=1]] the trial"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let s = only(&app);
    assert_eq!(s.state.as_str(), "healthy", "it answered");
    assert_eq!(
        s.backoff_ms, 5_000,
        "on probation, its last rest kept: {s:?}"
    );
    app.sim.set_fault(SIM_KEY, None);
    app.chat(&key, &broken)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = only(&app);
    assert_eq!(s.state.as_str(), "cooling", "{s:?}");
    // Counted from the break (when the test looks is a loaded machine's business).
    let rest = s.cooling_until_ms.unwrap() - s.last_error.as_ref().expect("the break").1;
    assert!(rest > 7_000, "rests {rest} ms: {s:?}");
}

/// While every account rests, the one whose last failure is oldest takes the next request: an
/// account back from a longer rest is found at once, not after the one failing again with a
/// short backoff (ordered by the end of their rests, the failing one stayed first in line and
/// took every request — 74 failures in 15 s; found by an independent re-check).
#[tokio::test]
async fn while_all_rest_the_account_that_failed_longest_ago_is_tried_first() {
    // Weights make `first` the one taken whenever both may serve.
    let app = two_accounts(|_| {}, |c| c.upstream.accounts[0].weight = 100).await;
    let key = app.create_key("trial", None).await;
    let ask = |note: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let b = body("deepseek-v4-flash", &format!("[[sim reply=1]] {note}"));
            app.chat(key, &b).send().await.unwrap().status().as_u16()
        }
    };
    // `first` fails twice (its trial too): it rests 10 s. `second` serves meanwhile.
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(503)));
    assert_eq!(ask("one").await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(5_300)).await;
    assert_eq!(ask("two").await, 200);
    let s = account(&app, "first");
    // Counted from the break (when the test looks is a loaded machine's business).
    let rest = s.cooling_until_ms.unwrap() - s.last_error.as_ref().expect("the break").1;
    assert!(rest > 8_000, "{s:?}");
    // Now `first` has recovered and `second` fails (5 s rest): both rest.
    app.sim.set_fault(SIM_KEY, None);
    app.sim.set_fault(SECOND, Some(AccountFault::Status(503)));
    assert_eq!(ask("three").await, 502);
    let before = app.sim.requests().len();
    assert_eq!(ask("four").await, 200);
    assert_eq!(ask("five").await, 200);
    let served = served_by(&app)[before..].to_vec();
    assert_eq!(
        served,
        [Some(SIM_KEY.to_string()), Some(SIM_KEY.to_string())]
    );
}
