//! Tests of `pool.rs`.

use super::*;

fn pool(caps: &[(u32, u32)]) -> Arc<Pool> {
    let accounts = caps
        .iter()
        .enumerate()
        .map(|(i, (cap, weight))| {
            let cfg = crate::config::Account {
                name: format!("a{i}"),
                api_key: "k".into(),
                base_url: "http://x".into(),
                openai_base: "http://x".into(),
                weight: *weight,
                max_in_flight: Default::default(),
            };
            Arc::new(Account::new(&cfg, vec![*cap]))
        })
        .collect();
    Arc::new(Pool::new(accounts, vec!["m".into()], Activity::default()))
}

/// While every account rests, requests arriving together are spread over them, as many in
/// flight on each (a burst went whole to the account whose failure was oldest, each request
/// failing when it still failed and the other had recovered), and the account that failed
/// longest ago goes first.
#[tokio::test]
async fn while_all_rest_a_burst_probes_each_account() {
    let p = pool(&[(10, 1), (10, 1), (10, 1)]);
    // All rest; a2 failed first, then a0, then a1.
    for i in [2, 0, 1] {
        p.accounts[i].cool("503");
        std::thread::sleep(Duration::from_millis(3));
    }
    let mut slots = Vec::new();
    for _ in 0..6 {
        slots.push(p.acquire(0, &[], Duration::ZERO).await.unwrap());
    }
    let order: Vec<usize> = slots.iter().map(Slot::index).collect();
    assert_eq!(order, [2, 0, 1, 2, 0, 1]);
}

#[tokio::test]
async fn the_least_full_relative_to_cap_and_weight_is_chosen() {
    // a0: cap 10 weight 1; a1: cap 10 weight 3 — a1 takes three times as many.
    let p = pool(&[(10, 1), (10, 3)]);
    let mut slots = Vec::new();
    for _ in 0..8 {
        slots.push(p.acquire(0, &[], Duration::ZERO).await.unwrap());
    }
    let on = |i| slots.iter().filter(|s| s.index() == i).count();
    assert_eq!((on(0), on(1)), (2, 6));
}

/// Under light load every account is idle at each look: the weights still share the
/// traffic (the example config says "twice the share"), not the first account taking all.
#[tokio::test]
async fn idle_accounts_share_sequential_traffic_by_weight() {
    let p = pool(&[(10, 1), (10, 2)]);
    let mut on = [0; 2];
    for _ in 0..30 {
        let slot = p.acquire(0, &[], Duration::ZERO).await.unwrap();
        on[slot.index()] += 1;
    }
    assert_eq!(on, [10, 20]);
    // Back after a long absence (excluded here, as a resting account is): it takes its
    // share again, not every request until its count catches up.
    for _ in 0..20 {
        let slot = p.acquire(0, &[0], Duration::ZERO).await.unwrap();
        assert_eq!(slot.index(), 1);
    }
    let mut on = [0; 2];
    for _ in 0..6 {
        let slot = p.acquire(0, &[], Duration::ZERO).await.unwrap();
        on[slot.index()] += 1;
    }
    assert_eq!(on, [2, 4]);
}

/// Verdicts of requests sent before an account's last change of state change nothing:
/// answers of requests in flight when a rest began ended it within a second, and their
/// failures after the recovery began a new one (found by an independent check).
#[tokio::test]
async fn only_requests_sent_since_the_last_change_decide_the_state() {
    use crate::upstream::account::AccountState;
    let p = pool(&[(10, 1)]);
    let account = p.accounts[0].clone();
    let (mut early, mut early2, mut failing) = (
        p.acquire(0, &[], Duration::ZERO).await.unwrap(),
        p.acquire(0, &[], Duration::ZERO).await.unwrap(),
        p.acquire(0, &[], Duration::ZERO).await.unwrap(),
    );
    failing.failed("429");
    assert_eq!(account.state(), AccountState::Cooling);
    let until = account.rest_until();
    // An answer of a request sent before the rest: still resting.
    early.worked();
    assert_eq!(account.state(), AccountState::Cooling);
    // A failure of one: the rest is not lengthened.
    early2.failed("429 too");
    assert_eq!(account.rest_until(), until);
    assert_eq!(account.errors.load(Ordering::Relaxed), 2, "both counted");
    // The trial, once due, decides; then an older failure does not rest it again.
    let mut before_recovery = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    account.rest_over();
    let mut trial = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    trial.worked();
    assert_eq!(account.state(), AccountState::Healthy);
    before_recovery.failed("timed out");
    assert_eq!(account.state(), AccountState::Healthy);
}

#[tokio::test]
async fn at_the_cap_a_request_waits_for_a_slot_then_gives_up() {
    let p = pool(&[(1, 1)]);
    let first = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    assert_eq!(
        p.acquire(0, &[], Duration::from_millis(50)).await.err(),
        Some(NoSlot::Busy)
    );
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.acquire(0, &[], Duration::from_secs(5)).await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    assert!(waiter.await.unwrap(), "the freed slot went to the waiter");
    assert_eq!(
        p.acquire(0, &[0], Duration::ZERO).await.err(),
        Some(NoSlot::NoneUsable),
        "the only account was tried"
    );
}

/// A trial whose request is dropped before any verdict (the client left) frees the trial:
/// the account stays cooling and the next request is its trial. Before, the flag stayed
/// set and, with another account healthy, the cooling one was never used again.
#[tokio::test]
async fn a_trial_dropped_undecided_lets_the_next_request_be_the_trial() {
    let p = pool(&[(4, 1), (4, 1)]);
    // a1 carries one request, so a0 (idle) is chosen first whenever it may serve.
    let _busy = p.acquire(0, &[0], Duration::ZERO).await.unwrap();
    p.accounts[0].cool("500");
    p.accounts[0].rest_over();
    let trial = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    assert_eq!(trial.index(), 0, "the trial");
    let other = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    assert_eq!(other.index(), 1, "one trial at a time");
    drop(other);
    drop(trial);
    let again = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    assert_eq!(again.index(), 0, "the next request is the trial");
    // A decided trial leaves the account to its verdict.
    let mut again = again;
    p.accounts[0].cool("500 again");
    again.decided();
    drop(again);
    assert_eq!(p.accounts[0].state().as_str(), "cooling");
    assert!(!p.accounts[0].usable(mono_ms()), "resting again");
}

/// With every account cooling (one request that failed on each cools them all), the
/// requests go to the one due back soonest and, once it is at its cap, to the next —
/// not 503 while the others have room.
#[tokio::test]
async fn with_every_account_cooling_all_of_their_slots_serve() {
    let p = pool(&[(2, 1), (3, 1)]);
    p.accounts[0].cool("500");
    p.accounts[1].cool("500");
    let mut slots = Vec::new();
    for _ in 0..5 {
        slots.push(p.acquire(0, &[], Duration::ZERO).await.unwrap());
    }
    let on = |i| slots.iter().filter(|s| s.index() == i).count();
    assert_eq!((on(0), on(1)), (2, 3));
    assert_eq!(
        p.acquire(0, &[], Duration::ZERO).await.err(),
        Some(NoSlot::Busy),
        "every slot taken"
    );
}

/// An account whose streams break while its whole answers work: with mixed traffic its
/// rests still double (a whole answer does not wipe a broken stream's backoff, nor does a
/// whole answer as its trial), until a stream of it ends whole.
#[tokio::test]
async fn only_a_whole_stream_clears_a_broken_streams_backoff() {
    use crate::upstream::account::AccountState;
    let p = pool(&[(10, 1)]);
    let account = p.accounts[0].clone();
    let mut stream = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    stream.began();
    stream.broke("cut after its first words");
    assert_eq!(account.state(), AccountState::Cooling);
    assert_eq!(account.backoff_ms(), 5_000);
    // Its trial is a whole answer, which works: back, its backoff kept.
    account.rest_over();
    let mut whole = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    whole.worked();
    whole.finished(false);
    assert_eq!(account.state(), AccountState::Healthy);
    assert_eq!(account.backoff_ms(), 5_000, "kept after the whole trial");
    let mut whole = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    whole.worked();
    whole.finished(false);
    assert_eq!(
        account.backoff_ms(),
        5_000,
        "kept after another whole answer"
    );
    // The next stream breaks: twice as long.
    let mut stream = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    stream.began();
    stream.broke("cut again");
    assert_eq!(account.backoff_ms(), 10_000);
    // A stream that ends whole (its trial, on probation) clears it, and a later whole
    // answer's failure rests it from the first backoff.
    account.rest_over();
    let mut stream = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    stream.began();
    assert_eq!(account.state(), AccountState::Healthy);
    stream.finished(true);
    assert_eq!(account.backoff_ms(), 0);
    let mut whole = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    whole.failed("503");
    assert_eq!(account.backoff_ms(), 5_000);
    account.rest_over();
    let mut whole = p.acquire(0, &[], Duration::ZERO).await.unwrap();
    whole.worked();
    whole.finished(false);
    assert_eq!(
        account.backoff_ms(),
        0,
        "a whole answer's own rest is cleared by one"
    );
}
