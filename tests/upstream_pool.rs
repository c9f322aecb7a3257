//! The upstream pool (issue 13) against the real daemon and a simulated DeepSeek playing two
//! accounts: failover on each failure kind with one ledger row and one charge, caps never
//! exceeded, the queue then 503, disabled accounts skipped and brought back, balances.

use std::sync::Arc;
use std::time::Duration;

use modelrelay::config::AccountConfig;
use modelrelay::money::Usd;
use modelrelay::upstream::simulated::{
    AccountFault, SimAccount, SimBalance, SimOptions, SimulatedDeepSeek,
};
use serde_json::Value;

use crate::common::{SIM_KEY, TestApp, body, request_id, test_config};

/// The second account's key at the simulator.
pub(super) const SECOND: &str = "sk-simulated-second";

pub(super) fn account(name: &str, key: &str) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        api_key: key.into(),
        api_key_file: None,
        base_url: String::new(),
        weight: 1,
        max_in_flight: Default::default(),
    }
}

/// A daemon in front of one simulator holding two accounts, `first` (the usual test key) and
/// `second`; `sim` and `f` adjust the simulator's options and the daemon's config.
pub(super) async fn two_accounts(
    sim: impl FnOnce(&mut SimOptions),
    f: impl FnOnce(&mut modelrelay::config::Config),
) -> TestApp {
    let mut opts = SimOptions {
        api_key: SIM_KEY.into(),
        accounts: vec![SimAccount::new(SECOND)],
        ..SimOptions::default()
    };
    sim(&mut opts);
    let sim = SimulatedDeepSeek::start(opts).await.expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = test_config(dir.path(), &sim);
    c.upstream.api_key = String::new();
    c.upstream.accounts = vec![account("first", SIM_KEY), account("second", SECOND)];
    f(&mut c);
    TestApp::start(c, sim, dir).await
}

/// The status of the account the simulator knows by `sim_key` (`first` is [`SIM_KEY`],
/// `second` [`SECOND`]).
fn status_by_key(app: &TestApp, sim_key: &str) -> modelrelay::upstream::status::AccountStatus {
    let name = if sim_key == SIM_KEY {
        "first"
    } else {
        "second"
    };
    crate::upstream_faults::account(app, name)
}

/// The accounts the simulator saw requests from, in order.
pub(super) fn served_by(app: &TestApp) -> Vec<Option<String>> {
    app.sim
        .requests()
        .iter()
        .map(|r| r.account.clone())
        .collect()
}

/// Wait (by the clock, up to a minute) until `ok` holds.
async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (by the clock, up to a minute) until the daemon shows `n` requests in flight (each
/// announced once admitted: what follows is the queue for an account's slot).
async fn wait_announced(app: &TestApp, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = crate::activity::snapshot(app).await.in_flight.len();
        if shown == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{shown} requests in flight, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_failure_kind_fails_over_once_billed_once() {
    for (fault, disabled) in [
        (AccountFault::Status(500), false),
        (AccountFault::Status(503), false),
        (AccountFault::Status(429), false),
        (AccountFault::Status(401), true),
        (AccountFault::Status(403), true),
        (AccountFault::Status(402), true),
    ] {
        let app = two_accounts(|_| {}, |_| {}).await;
        let key = app.create_key("trial", None).await;
        // Make "first" the one chosen (the least loaded, first in order), and fail it.
        app.sim.set_fault(SIM_KEY, Some(fault));
        for stream in [false, true] {
            let mut b = body("deepseek-v4-flash", "[[sim prompt=10 reply=3]] hi");
            b["stream"] = stream.into();
            let resp = app.chat(&key, &b).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{fault:?}");
            let rid = request_id(&resp);
            let _ = resp.text().await;
            let row = app.wait_ledger_row(&rid).await;
            assert_eq!(row.account, "second", "{fault:?}");
            assert_eq!(row.completion_tokens, 3);
            assert_eq!(row.measured.as_str(), "provider");
        }
        // One row and one charge per request, whatever the failover.
        let (rows, spent) = app.ledger_totals(&key);
        assert_eq!(rows, 2);
        assert_eq!(app.key_state(&key).balance().spent, spent);
        let status = app.daemon.as_ref().unwrap().state.upstream.status();
        let first = &status.accounts[0];
        let want = if disabled { "disabled" } else { "cooling" };
        assert_eq!(first.state.as_str(), want, "{fault:?}");
        assert!(status.failovers >= 1);
    }
}

#[tokio::test]
async fn a_hung_or_unreachable_account_fails_over_and_4xx_does_not() {
    // Unreachable: an account whose base URL refuses connections.
    let app = two_accounts(
        |_| {},
        |c| {
            c.upstream.accounts[0].base_url = "http://127.0.0.1:9".into();
            c.upstream.idle_timeout_secs = 1;
        },
    )
    .await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=2]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.wait_ledger_row(&request_id(&resp)).await.account,
        "second"
    );
    // Hanging before its first byte (timeout) fails over too.
    let app = two_accounts(|_| {}, |c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Hang));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=2]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.wait_ledger_row(&request_id(&resp)).await.account,
        "second"
    );
    // The request's own fault (400/422) is not retried elsewhere.
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim fail=422]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let seen = served_by(&app);
    assert_eq!(seen.iter().filter(|a| a.is_some()).count(), seen.len());
    assert_eq!(
        app.sim
            .requests()
            .iter()
            .filter(|r| r.body.to_string().contains("fail=422"))
            .count(),
        1,
        "one attempt"
    );
}

#[tokio::test]
async fn when_no_account_can_serve_the_customer_gets_one_error_and_pays_nothing() {
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    app.sim.set_fault(SECOND, Some(AccountFault::Status(503)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=2]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    // Each account tried once.
    assert_eq!(app.sim.requests().len(), 2);
    assert_eq!(app.key_state(&key).balance().spent, Usd::ZERO);
}

#[tokio::test]
async fn caps_are_never_exceeded_and_a_full_pool_queues_then_answers_503() {
    let app = Arc::new(
        two_accounts(
            |_| {},
            |c| {
                for a in &mut c.upstream.accounts {
                    a.max_in_flight.insert("deepseek-v4-flash".into(), 5);
                }
                c.upstream.queue_timeout_ms = 20_000;
                if let Some(p) = c.plans.get_mut("trial") {
                    p.rpm = 1000;
                    // 50 at once from one key: the pool's caps are what is tested here.
                    p.max_in_flight = 100;
                }
            },
        )
        .await,
    );
    let key = app.create_key("trial", None).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, key) = (app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut b = body("deepseek-v4-flash", "[[sim reply=5 delay_ms=20]] go");
            b["stream"] = true.into();
            let resp = app.chat(&key, &b).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text.trim_end().ends_with("data: [DONE]"))
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, true), "queued, then served");
    }
    for k in [SIM_KEY, SECOND] {
        let max = app.sim.max_in_flight(k);
        assert!(max <= 5, "{k}: {max} in flight at once, cap 5");
        assert!(max >= 1);
    }
    // Queue timeout short, every slot held: 503 upstream_busy with Retry-After.
    let app = two_accounts(
        |_| {},
        |c| {
            for a in &mut c.upstream.accounts {
                a.max_in_flight.insert("deepseek-v4-flash".into(), 1);
            }
            c.upstream.queue_timeout_ms = 300;
        },
    )
    .await;
    let key = app.create_key("trial", None).await;
    app.sim
        .set_fault(SIM_KEY, Some(AccountFault::Delay(Duration::from_secs(3))));
    app.sim
        .set_fault(SECOND, Some(AccountFault::Delay(Duration::from_secs(3))));
    let slow = |app: &TestApp| {
        app.chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hold"))
            .send()
    };
    let (a, b) = (slow(&app), slow(&app));
    let holders = tokio::spawn(async move { futures_util::future::join(a, b).await });
    wait_until("each holder has an account's slot", || {
        app.sim.in_flight(SIM_KEY) == 1 && app.sim.in_flight(SECOND) == 1
    })
    .await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] late"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_busy");
    assert_eq!(v["error"]["type"], "server_error");
    let (a, b) = holders.await.unwrap();
    assert_eq!(
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16()),
        (200, 200)
    );

    // One account failing (500), the other full for the whole queue timeout: busy too, with
    // Retry-After — what a retry should wait for — not the failure's 502.
    app.sim.set_fault(SECOND, Some(AccountFault::Status(500)));
    let holder = slow(&app);
    let holder = tokio::spawn(holder);
    wait_until("the holder has first's slot", || {
        app.sim.in_flight(SIM_KEY) == 1
    })
    .await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] late"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_busy", "{v}");
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn a_disabled_account_is_skipped_until_enabled_or_probed_back() {
    let app = two_accounts(|_| {}, |c| c.upstream.probe_secs = 1).await;
    let key = app.create_key("trial", None).await;
    // Out of money: 402 on chat, is_available false on the balance endpoint.
    app.sim
        .set_balance(SIM_KEY, Some(SimBalance::usd(Usd::ZERO)));
    let send = || {
        app.chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(app.wait_ledger_row(&request_id(&r)).await.account, "second");
    let before = app.sim.requests_of(SIM_KEY).len();
    for _ in 0..3 {
        let r = send().await.unwrap();
        assert_eq!(app.wait_ledger_row(&request_id(&r)).await.account, "second");
    }
    assert_eq!(
        app.sim.requests_of(SIM_KEY).len(),
        before,
        "skipped while disabled"
    );
    // Money back: the probe (every second here) finds it available and brings it back.
    app.sim
        .set_balance(SIM_KEY, Some(SimBalance::usd(Usd::from_dollars(50))));
    let state = &app.daemon.as_ref().unwrap().state;
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if state.upstream.status().accounts[0].state.as_str() == "healthy" {
            back = true;
            break;
        }
    }
    assert!(back, "the probe brought the account back");
    // The operator: disable, then enable again.
    assert!(state.upstream.set_enabled("first", false).is_some());
    for _ in 0..3 {
        let r = send().await.unwrap();
        assert_eq!(app.wait_ledger_row(&request_id(&r)).await.account, "second");
    }
    assert!(state.upstream.set_enabled("first", true).is_some());
    app.sim.set_fault(SECOND, Some(AccountFault::Status(500)));
    let r = send().await.unwrap();
    assert_eq!(app.wait_ledger_row(&request_id(&r)).await.account, "first");
}

#[tokio::test]
async fn off_peak_dates_are_priced_off_peak() {
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let all_day = |c: &mut modelrelay::config::Config| {
        c.pricing.peak_hours_utc = vec!["00:00-24:00".into()];
        c.pricing.peak_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec();
    };
    let peak = TestApp::spawn_with(all_day).await;
    let holiday = TestApp::spawn_with(move |c| {
        all_day(c);
        c.pricing.off_peak_dates = vec![today.clone()];
    })
    .await;
    for (app, want) in [(&peak, "peak"), (&holiday, "off_peak")] {
        let key = app.create_key("trial", None).await;
        let resp = app
            .chat(
                &key,
                &body("deepseek-v4-flash", "[[sim prompt=100 reply=10]] hi"),
            )
            .send()
            .await
            .unwrap();
        let row = app.wait_ledger_row(&request_id(&resp)).await;
        assert_eq!(row.period.as_str(), want);
        let per_token = if want == "peak" {
            [300, 1200]
        } else {
            [150, 600]
        };
        assert_eq!(row.cost.nanos(), 100 * per_token[0] + 10 * per_token[1]);
    }
}

/// A client that gives up while its request waits in the queue for an account (every slot
/// held) owes nothing: DeepSeek never saw the request. Its row says so (499, client abort,
/// $0), on both dialects, streamed or not, and its hold goes back; the requests that were
/// served are charged as usual.
#[tokio::test]
async fn a_request_abandoned_in_the_queue_costs_nothing() {
    let app = two_accounts(
        |_| {},
        |c| {
            for a in &mut c.upstream.accounts {
                a.max_in_flight.insert("deepseek-v4-flash".into(), 1);
            }
            c.upstream.queue_timeout_ms = 20_000;
            // The holders' 5 s without a byte is no upstream timeout.
            c.upstream.idle_timeout_secs = 30;
        },
    )
    .await;
    let key = app.create_key("starter", None).await;
    for k in [SIM_KEY, SECOND] {
        app.sim
            .set_fault(k, Some(AccountFault::Delay(Duration::from_secs(5))));
    }
    let slow = |app: &TestApp| {
        app.chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hold"))
            .send()
    };
    let (a, b) = (slow(&app), slow(&app));
    let holders = tokio::spawn(async move { futures_util::future::join(a, b).await });
    wait_until("each holder has an account's slot", || {
        app.sim.in_flight(SIM_KEY) == 1 && app.sim.in_flight(SECOND) == 1
    })
    .await;
    wait_announced(&app, 2).await;

    // A long prompt, so that a charge for it could not hide: abandoned once it waits in the
    // queue, and gone (settled) before the next.
    let long = format!("[[sim reply=3]] {}", "word ".repeat(4000));
    let mut streamed = body("deepseek-v4-flash", &long);
    streamed["stream"] = true.into();
    let anthropic = serde_json::json!({
        "model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": long}],
    });
    let abandoned = [
        app.chat(&key, &body("deepseek-v4-flash", &long)),
        app.chat(&key, &streamed),
        app.http
            .post(format!("{}/v1/messages", app.base))
            .header("x-api-key", &key)
            .json(&anthropic),
    ];
    for req in abandoned {
        let send = req.send();
        tokio::select! {
            biased;
            () = wait_announced(&app, 3) => {}
            r = send => panic!("answered before the client left: {r:?}"),
        }
        wait_announced(&app, 2).await;
    }
    assert_eq!(
        (app.sim.in_flight(SIM_KEY), app.sim.in_flight(SECOND)),
        (1, 1),
        "the holders held both slots all along"
    );
    let (a, b) = holders.await.unwrap();
    assert_eq!(
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16()),
        (200, 200)
    );

    let id = app.key_state(&key).id.clone();
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = modelrelay::store::usage::recent(&app.db(), &id, 10).expect("query");
        if rows.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rows.len(), 5, "{rows:?}");
    let (served, queued): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.status == 200);
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|r| r.cost.nanos() > 0));
    for r in &queued {
        assert_eq!(r.status, 499, "{r:?}");
        assert_eq!(r.finish, modelrelay::store::Finish::ClientAbort);
        assert_eq!(r.cost, Usd::ZERO, "never sent, never charged: {r:?}");
        assert_eq!((r.prompt_tokens, r.completion_tokens), (0, 0));
    }
    assert_eq!(app.sim.requests().len(), 2, "upstream saw the holders only");
    let b = app.key_state(&key).balance();
    assert_eq!(b.held, Usd::ZERO);
    let charged: i64 = served.iter().map(|r| r.cost.nanos()).sum();
    assert_eq!(b.spent.nanos(), charged);
}

/// One account alone: a failure is the customer's 502 at once, with no failover counted or
/// logged (there is no other account to fail over to).
#[tokio::test]
async fn one_account_alone_counts_no_failover() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let status = app.daemon.as_ref().unwrap().state.upstream.status();
    assert_eq!(status.failovers, 0);
    assert_eq!(status.accounts[0].requests, 1);
}

/// A cooling account's trial that ends without a verdict on the account — the request's own
/// 400/422, or a client that leaves before the answer — must not leave it cooling for good:
/// the flag of the trial stayed set, and with another account healthy it never served again.
#[tokio::test]
async fn a_trial_that_upstream_refuses_as_the_requests_fault_brings_the_account_back() {
    // A model DeepSeek does not know (the operator's `upstream_model` mistyped).
    let app = two_accounts(
        |_| {},
        |c| {
            let mut ghost = c.models["deepseek-v4-flash"].clone();
            ghost.upstream_model = "deepseek-ghost".into();
            ghost.aliases.clear();
            c.models.insert("ghost".into(), ghost);
            c.plans.get_mut("pro").unwrap().models.push("ghost".into());
        },
    )
    .await;
    let key = app.create_key("pro", None).await;
    let state = app.daemon.as_ref().unwrap().state.clone();
    let account_state = |i: usize| state.upstream.status().accounts[i].state.as_str();
    // "first" fails once: it cools, the request fails over.
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(account_state(0), "cooling");
    app.sim.set_fault(SIM_KEY, None);
    // "second" busy with a slow stream, so the trial goes to "first" once it is due.
    let mut slow = body("deepseek-v4-flash", "[[sim reply=40 delay_ms=200]] slow");
    slow["stream"] = true.into();
    let slow = app.chat(&key, &slow).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    tokio::time::sleep(Duration::from_millis(5_300)).await;
    // A first trial answered with an error that is neither the request's nor a reason to
    // rest the account (DeepSeek does not know the configured model): no verdict, so the
    // trial is freed for the next request.
    let resp = app
        .chat(&key, &body("ghost", "[[sim reply=1]] first trial"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(account_state(0), "cooling");
    // The next trial: upstream refuses the request itself.
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim fail=422]] trial"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let trial = app
        .sim
        .requests()
        .into_iter()
        .find(|r| r.body.to_string().contains("fail=422"))
        .expect("the trial reached upstream");
    assert_eq!(
        trial.account.as_deref(),
        Some(SIM_KEY),
        "the trial went to first"
    );
    assert_eq!(account_state(0), "healthy", "it answered: it works");
    drop(slow);
    // And it serves again (before, with "second" healthy, it never did).
    let before = app.sim.requests().len();
    for _ in 0..6 {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] again"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let firsts = app.sim.requests()[before..]
        .iter()
        .filter(|r| r.account.as_deref() == Some(SIM_KEY))
        .count();
    assert!(firsts >= 2, "first took {firsts} of 6");
}

/// An account whose base URL is not DeepSeek's API (a mistyped path: 404) rests like a
/// failing one, and the request fails over to another (it kept its share of every request
/// for good, each a 502); the operator sees its errors and the last one. A request's own 422
/// is not counted against the account.
#[tokio::test]
async fn an_account_answering_404_rests_and_the_request_fails_over() {
    let app = two_accounts(
        |_| {},
        |c| {
            let base = c.upstream.base_url.clone();
            c.upstream.accounts[0].base_url = format!("{base}/wrong");
        },
    )
    .await;
    let key = app.create_key("trial", None).await;
    for _ in 0..4 {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let status = app.daemon.as_ref().unwrap().state.upstream.status();
    let first = &status.accounts[0];
    assert_eq!(first.state.as_str(), "cooling", "{first:?}");
    assert_eq!(first.errors, 1, "rested after its first 404: {first:?}");
    assert!(
        first
            .last_error
            .as_ref()
            .is_some_and(|e| e.0.contains("404")),
        "{first:?}"
    );
    assert!(
        served_by(&app).iter().all(|a| a.as_deref() == Some(SECOND)),
        "every request answered by second"
    );
    // A request's own fault, on a working account, is not the account's error.
    let app = two_accounts(|_| {}, |_| {}).await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim fail=422]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let status = app.daemon.as_ref().unwrap().state.upstream.status();
    assert_eq!(status.accounts.iter().map(|a| a.errors).sum::<u64>(), 0);
}

/// An account whose 200 is followed by nothing usable — only keep-alives until the idle
/// timeout, or a page that is no answer — rests as one failing before its head does, and its
/// trial is judged by the answer, not by the head (a 200 alone brought a cooling account back,
/// and a stalled account kept its share of every request, each failing, for good; found by an
/// independent check).
#[tokio::test]
async fn an_account_whose_200_brings_no_answer_rests_and_its_trial_needs_an_answer() {
    let app = two_accounts(|_| {}, |c| c.upstream.idle_timeout_secs = 1).await;
    let key = app.create_key("pro", None).await;
    // A stream whose head comes, then only keep-alives: the client gets its error event.
    let mut stalled = body(
        "deepseek-v4-flash",
        "[[sim reply=3 first_delay_ms=60000 keepalive_ms=50]] hi",
    );
    stalled["stream"] = true.into();
    let resp = app.chat(&key, &stalled).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("upstream_timeout"), "{text}");
    let bad = app.sim.requests()[0].account.clone().expect("an account");
    let good = if bad == SIM_KEY { SECOND } else { SIM_KEY };
    let s = status_by_key(&app, &bad);
    assert_eq!(s.state.as_str(), "cooling", "{s:?}");
    assert_eq!(s.errors, 1, "{s:?}");
    // The others go to the account that works.
    let before = app.sim.requests().len();
    for _ in 0..4 {
        let resp = app
            .chat(&key, &body("deepseek-v4-flash", "[[sim reply=1]] ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(
        app.sim.requests()[before..]
            .iter()
            .all(|r| r.account.as_deref() == Some(good)),
        "served by the working account"
    );

    // Its trial, once due (the working account busy with a slow stream): a 200 whose body is
    // a proxy's page is no answer, so the account stays cooling, for longer.
    let mut slow = body("deepseek-v4-flash", "[[sim reply=40 delay_ms=200]] slow");
    slow["stream"] = true.into();
    let slow = app.chat(&key, &slow).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    tokio::time::sleep(Duration::from_millis(5_300)).await;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim garbage=1]] trial"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let trial = app.sim.requests().last().unwrap().account.clone();
    assert_eq!(trial.as_deref(), Some(bad.as_str()), "the trial went to it");
    let s = status_by_key(&app, &bad);
    assert_eq!(
        s.state.as_str(),
        "cooling",
        "no answer, no verdict of health: {s:?}"
    );
    assert_eq!(s.errors, 2, "{s:?}");
    drop(slow);
}

/// A stream's opening alone (the role-only first chunk, then only keep-alives) is no answer:
/// the account rests. A whole answer that keeps sending its blank lines is a long answer, not a
/// dead account: waited for past the idle timeout and past the request's own total limit, and
/// no verdict on the account (a customer's large `max_tokens` rested accounts at will). Both
/// found by independent re-checks.
#[tokio::test]
async fn an_opening_alone_rests_an_account_and_a_slow_whole_answer_does_not() {
    let app = two_accounts(
        |_| {},
        |c| {
            c.upstream.idle_timeout_secs = 1;
            c.upstream.request_timeout_secs = 3;
        },
    )
    .await;
    let key = app.create_key("pro", None).await;
    // Slow whole answer: blank lines for longer than the idle timeout.
    let resp = app
        .chat(
            &key,
            &body(
                "deepseek-v4-flash",
                "[[sim reply=3 first_delay_ms=4000 keepalive_ms=50]] long",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let slow = app.sim.requests()[0].account.clone().unwrap();
    let s = status_by_key(&app, &slow);
    assert_eq!(s.state.as_str(), "healthy", "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
    // A stream that opens, then only keep-alives.
    let mut opened = body(
        "deepseek-v4-flash",
        "[[sim reply=3 stall_after=0 keepalive_ms=50]] hi",
    );
    opened["stream"] = true.into();
    let resp = app.chat(&key, &opened).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("upstream_timeout"), "{text}");
    let stalled = app.sim.requests()[1].account.clone().unwrap();
    let s = status_by_key(&app, &stalled);
    assert_eq!(s.state.as_str(), "cooling", "{s:?}");
}

/// [`two_accounts`] with account `index` (0: `first`, 1: `second`) behind a DeepSeek of its own
/// that knows only `model` (a proxy, say), returned to keep it running.
async fn knowing_one_model(index: usize, model: &str) -> (SimulatedDeepSeek, TestApp) {
    let sim = SimulatedDeepSeek::start(SimOptions {
        api_key: [SIM_KEY, SECOND][index].into(),
        models: vec![model.into()],
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    let base_url = sim.base_url();
    let app = two_accounts(|_| {}, |c| c.upstream.accounts[index].base_url = base_url).await;
    (sim, app)
}

/// An account whose `base_url` leads to a DeepSeek (a proxy, say) that does not know a model
/// the others serve: its 400 "Model Not Exist" moves the request to another account, and the
/// account is not rested — it serves its other models (it failed its whole share of the
/// model's requests, 502, while status said all was well; found by an independent check).
#[tokio::test]
async fn an_account_that_does_not_know_the_model_fails_over_without_resting() {
    let (pro_only, app) = knowing_one_model(0, "deepseek-v4-pro").await;
    let key = app.create_key("pro", None).await;
    for stream in [false, true] {
        for _ in 0..2 {
            let mut b = body("deepseek-v4-flash", "[[sim prompt=10 reply=3]] hi");
            b["stream"] = stream.into();
            let resp = app.chat(&key, &b).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let rid = request_id(&resp);
            let _ = resp.text().await;
            assert_eq!(app.wait_ledger_row(&rid).await.account, "second");
        }
    }
    // "first" was asked (idle accounts take turns) and refused each time.
    let asked = pro_only.requests().len();
    assert!(asked >= 2, "{asked}");
    let (rows, spent) = app.ledger_totals(&key);
    assert_eq!(rows, 4);
    assert_eq!(app.key_state(&key).balance().spent, spent);
    let first = crate::upstream_faults::account(&app, "first");
    assert_eq!(first.state.as_str(), "healthy");
    assert_eq!(first.errors, asked as u64);
    let (last, _) = first.last_error.expect("its last error");
    assert!(last.contains("Model Not Exist"), "{last}");
    // It still serves the model it knows.
    let mut served = Vec::new();
    for _ in 0..2 {
        let resp = app
            .chat(
                &key,
                &body("deepseek-v4-pro", "[[sim prompt=10 reply=3]] hi"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        served.push(app.wait_ledger_row(&request_id(&resp)).await.account);
    }
    assert!(served.iter().any(|a| a == "first"), "{served:?}");
    // When no account knows it, the customer gets one 502 and pays nothing.
    app.sim.set_fault(SECOND, Some(AccountFault::Status(500)));
    let before = app.key_state(&key).balance().spent;
    let resp = app
        .chat(&key, &body("deepseek-v4-flash", "[[sim reply=3]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(app.key_state(&key).balance().spent, before);
}

/// The one account that serves a model rests: a request for it, refused "Model Not Exist" by
/// the accounts that do not serve it, takes that account as its one attempt, as while every
/// account rests (it was a 502 until the rest was over; found by an independent check).
#[tokio::test]
async fn the_resting_account_that_knows_the_model_takes_the_request() {
    let (_flash_only, app) = knowing_one_model(1, "deepseek-v4-flash").await;
    let key = app.create_key("pro", None).await;
    // "first" (the only one serving pro) fails once and rests.
    app.sim.set_fault(SIM_KEY, Some(AccountFault::Status(500)));
    let resp = app
        .chat(&key, &body("deepseek-v4-pro", "[[sim reply=3]] hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        crate::upstream_faults::account(&app, "first")
            .state
            .as_str(),
        "cooling"
    );
    app.sim.set_fault(SIM_KEY, None);
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-pro", "[[sim prompt=10 reply=3]] hi"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let row = app.wait_ledger_row(&request_id(&resp)).await;
    assert_eq!(row.account, "first");
    assert_eq!(row.completion_tokens, 3);
    // One charge: the answer's (the 502 is a row of $0).
    let (rows, spent) = app.ledger_totals(&key);
    assert_eq!(rows, 2);
    assert_eq!(spent, row.cost);
    assert_eq!(app.key_state(&key).balance().spent, spent);
}
