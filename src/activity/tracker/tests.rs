//! The tracked state event by event (windows, bounds, the UTC day, reloads), and the tracker's
//! task against a real daemon state: the exact hand-off, a lagging tracker reloading from the
//! ledger, and start-up from an existing database.

use super::live::*;
use super::*;
use crate::activity::fold::HOUR_MS;
use crate::activity::protocol::Totals;
use crate::activity::views::finished_event;
use crate::admin::NewKey;
use crate::config::Config;
use crate::money::Usd;
use crate::pricing::PricePeriod;
use crate::state::AppState;
use crate::status::{Finish, Measured, OrderStatus};
use crate::store::UsageRow;
use crate::store::orders::OrderRecord;
use chrono::Utc;

const T0: i64 = 1_760_000_000_000;

fn live() -> Live {
    Live::new(960_000)
}

fn started(id: &str, at_ms: i64) -> ActivityEvent {
    ActivityEvent::RequestStarted {
        request_id: id.into(),
        key_id: "key_a".into(),
        key_prefix: "sk-gateway-Abcd…".into(),
        plan: "trial".into(),
        model: "deepseek-v4-flash".into(),
        stream: true,
        client_ip: Some("127.0.0.1".into()),
        api: crate::status::Api::OpenAi,
        at_ms,
    }
}

fn progress(id: &str, output_tokens: u64, at_ms: i64) -> ActivityEvent {
    ActivityEvent::RequestProgress {
        request_id: id.into(),
        output_tokens,
        at_ms,
    }
}

fn finished(id: &str, cost: i64, at_ms: i64) -> ActivityEvent {
    finished_as(id, cost, at_ms, Finish::Complete, 200)
}

fn finished_as(id: &str, cost: i64, at_ms: i64, finish: Finish, status: u16) -> ActivityEvent {
    ActivityEvent::RequestFinished {
        request_id: id.into(),
        key_id: "key_a".into(),
        model: "deepseek-v4-flash".into(),
        status,
        finish,
        cost_usd: Usd::from_nanos(cost),
        prompt_tokens: 5,
        completion_tokens: 3,
        measured: Measured::Provider,
        latency_ms: 100,
        ttft_ms: Some(10),
        api: crate::status::Api::OpenAi,
        account: String::new(),
        at_ms,
    }
}

fn refused(status: u16, at_ms: i64) -> ActivityEvent {
    ActivityEvent::Refused {
        key_id: Some("key_a".into()),
        status,
        code: "x".into(),
        at_ms,
    }
}

fn paid(order_id: &str, dollars: i64, at_ms: i64) -> ActivityEvent {
    ActivityEvent::OrderPaid {
        order_id: order_id.into(),
        plan: "trial".into(),
        amount_usd: Usd::from_dollars(dollars),
        key_id: "key_b".into(),
        at_ms,
    }
}

fn ids_in_flight(s: &Snapshot) -> Vec<&str> {
    s.in_flight.iter().map(|r| r.request_id.as_str()).collect()
}

fn ids(events: &[ActivityEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ActivityEvent::RequestFinished { request_id, .. } => Some(request_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_goes_from_in_flight_to_finished() {
    let mut l = live();
    l.apply(&started("r1", T0), T0);
    l.apply(&progress("r1", 7, T0 + 200), T0 + 200);
    // A late, smaller count never winds the tokens back; an unknown id changes nothing.
    l.apply(&progress("r1", 5, T0 + 250), T0 + 250);
    l.apply(&progress("nobody", 9, T0 + 250), T0 + 250);
    let s = l.view(T0 + 300);
    assert_eq!(s.in_flight.len(), 1);
    assert_eq!(s.in_flight[0].request_id, "r1");
    assert_eq!(s.in_flight[0].output_tokens, 7);
    assert_eq!(s.in_flight[0].started_ms, T0);
    assert!(s.finished.is_empty());

    l.apply(&finished("r1", 1234, T0 + 400), T0 + 400);
    let s = l.view(T0 + 500);
    assert!(s.in_flight.is_empty());
    assert_eq!(ids(&s.finished), ["r1"]);
    assert_eq!(s.today.requests, 1);
    assert_eq!(s.today.spend_usd, Usd::from_nanos(1234));
    assert_eq!(s.upstream.last_latency_ms, Some(100));
}

#[test]
fn in_flight_is_oldest_first_and_forgets_requests_older_than_any_can_be() {
    let mut l = live();
    l.apply(&started("late", T0 + 10), T0 + 10);
    l.apply(&started("early", T0), T0);
    let s = l.view(T0 + 20);
    let order: Vec<_> = s.in_flight.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(order, ["early", "late"]);
    // Their ends were missed (a lag): past the longest possible request they are dropped.
    let s = l.view(T0 + 10 + l.max_request_ms);
    assert!(s.in_flight.is_empty());
}

#[test]
fn a_step_of_the_wall_clock_moves_the_starts_of_requests_in_flight() {
    let mut l = live();
    let mono = 5_000;
    assert!(
        !l.observe_clocks(T0, mono),
        "the first look only notes the clocks"
    );
    l.apply(&started("r1", T0), T0);
    // Two hours forward in 10 ms of real time: r1 is 10 ms old, not two hours, and is kept
    // past the longest a request can last as measured by the stepped clock.
    let step = 2 * HOUR_MS;
    assert!(!l.observe_clocks(T0 + 10 + step, mono + 10));
    let s = l.view(T0 + 20 + step);
    assert_eq!(ids_in_flight(&s), ["r1"]);
    assert_eq!(s.in_flight[0].started_ms, T0 + step);
    // A request started after the step keeps its stamp; the monotonic rule still drops both
    // once they are older than any request can be.
    l.apply(&started("r2", T0 + 30 + step), T0 + 30 + step);
    assert!(!l.observe_clocks(T0 + 40 + step, mono + 40));
    assert_eq!(
        l.view(T0 + 40 + step).in_flight[1].started_ms,
        T0 + 30 + step
    );
    assert!(
        l.view(T0 + 30 + step + l.max_request_ms)
            .in_flight
            .is_empty()
    );
    // Drift within a second is not a step.
    let mut l = live();
    l.observe_clocks(T0, mono);
    l.apply(&started("r3", T0), T0);
    l.observe_clocks(T0 + 60_900, mono + 60_000);
    assert_eq!(l.view(T0 + 60_900).in_flight[0].started_ms, T0);
}

#[test]
fn a_step_back_across_midnight_asks_for_the_day_again() {
    let midnight = (day_of(T0) + 1) * DAY_MS;
    let mut l = live();
    l.observe_clocks(midnight + 5 * 60_000, 1);
    l.apply(
        &finished("a", 100, midnight + 5 * 60_000),
        midnight + 5 * 60_000,
    );
    assert_eq!(l.view(midnight + 5 * 60_000).today.requests, 1);
    // Ten minutes back: the clock is on yesterday, whose totals the fold rolled past.
    assert!(l.observe_clocks(midnight - 5 * 60_000, 2));
    // A step back within the day asks nothing.
    let mut l = live();
    l.observe_clocks(midnight + 20 * 60_000, 1);
    l.apply(
        &finished("b", 100, midnight + 20 * 60_000),
        midnight + 20 * 60_000,
    );
    assert!(!l.observe_clocks(midnight + 10 * 60_000, 2));
}

#[test]
fn the_latest_fifty_finished_are_kept_newest_last() {
    let mut l = live();
    for i in 0..60 {
        l.apply(&finished(&format!("r{i:02}"), 1, T0 + i), T0 + i);
    }
    let s = l.view(T0 + 100);
    let kept = ids(&s.finished);
    assert_eq!(kept.len(), FINISHED_KEPT);
    assert_eq!(kept.first().map(String::as_str), Some("r10"));
    assert_eq!(kept.last().map(String::as_str), Some("r59"));
    assert_eq!(
        s.today.requests, 60,
        "totals count every request, not the kept ones"
    );
}

#[test]
fn totals_follow_the_utc_day() {
    let day = day_of(T0);
    let midnight = (day + 1) * DAY_MS;
    let mut l = live();
    l.apply(&finished("a", 100, midnight - 5_000), midnight - 5_000);
    l.apply(&paid("o1", 5, midnight - 4_000), midnight - 4_000);
    // The same payment reported twice (capture and webhook) is revenue once.
    l.apply(&paid("o1", 5, midnight - 3_000), midnight - 3_000);
    let s = l.view(midnight - 1);
    assert_eq!(s.today.requests, 1);
    assert_eq!(s.today.spend_usd, Usd::from_nanos(100));
    assert_eq!(s.today.revenue_usd, Usd::from_dollars(5));

    // Past midnight: a request that started yesterday (latency 100 ms) is yesterday's, as in
    // the ledger; today starts from zero.
    l.apply(&finished("b", 200, midnight + 50), midnight + 50);
    let s = l.view(midnight + 60);
    assert_eq!(s.today, Totals::default());
    l.apply(&finished("c", 300, midnight + 500), midnight + 500);
    l.apply(&paid("o2", 20, midnight + 600), midnight + 600);
    let s = l.view(midnight + 700);
    assert_eq!(s.today.requests, 1);
    assert_eq!(s.today.spend_usd, Usd::from_nanos(300));
    assert_eq!(s.today.revenue_usd, Usd::from_dollars(20));
    assert_eq!(ids(&s.finished), ["a", "b", "c"], "the list spans days");
}

#[test]
fn rate_limit_hits_cover_the_last_hour_and_are_bounded_per_key() {
    let mut l = live();
    let hit = |key: &str, at_ms: i64| ActivityEvent::RateLimited {
        key_id: key.into(),
        key_prefix: format!("sk-gateway-{key}…"),
        limit: 30,
        at_ms,
    };
    l.apply(&hit("k1", T0), T0);
    l.apply(&hit("k1", T0 + 1_000), T0 + 1_000);
    l.apply(&hit("k2", T0 + 2_000), T0 + 2_000);
    let s = l.view(T0 + 3_000);
    assert_eq!(s.rate_limited.len(), 2);
    assert_eq!(s.rate_limited[0].key_id, "k1");
    assert_eq!(s.rate_limited[0].key_prefix, "sk-gateway-k1…");
    assert_eq!(s.rate_limited[0].limit, 30);
    assert_eq!(s.rate_limited[0].hits_ms, [T0, T0 + 1_000]);
    // An hour on, the first hit is gone; later, the keys without hits too.
    let s = l.view(T0 + HOUR_MS + 500);
    assert_eq!(s.rate_limited[0].hits_ms, [T0 + 1_000]);
    let s = l.view(T0 + 3 * HOUR_MS);
    assert!(s.rate_limited.is_empty());

    // A client hammering its 429: memory stays bounded, the newest hits stay.
    let start = T0 + 4 * HOUR_MS;
    for i in 0..(HITS_PER_KEY as i64 + 500) {
        l.apply(&hit("k3", start + i), start + i);
    }
    let s = l.view(start + 10_000);
    let hits = &s.rate_limited[0].hits_ms;
    assert_eq!(hits.len(), HITS_PER_KEY);
    assert_eq!(hits.last(), Some(&(start + HITS_PER_KEY as i64 + 499)));
}

#[test]
fn refusals_keep_the_last_hours_402s_403s_and_budget_held_429s_bounded() {
    let mut l = live();
    l.apply(&refused(401, T0), T0);
    l.apply(&refused(404, T0), T0);
    l.apply(&refused(402, T0), T0);
    l.apply(&refused(403, T0 + 1), T0 + 1);
    // A 429 refusal is `budget_held` (a rate-limit hit is an event of its own).
    l.apply(&refused(429, T0 + 1), T0 + 1);
    let s = l.view(T0 + 2);
    let statuses: Vec<u16> = s
        .refusals
        .iter()
        .filter_map(|e| match e {
            ActivityEvent::Refused { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [402, 403, 429]);
    for i in 0..300 {
        l.apply(&refused(402, T0 + 10 + i), T0 + 10 + i);
    }
    assert_eq!(l.view(T0 + 400).refusals.len(), REFUSALS_KEPT);
    assert!(l.view(T0 + 400 + HOUR_MS).refusals.is_empty());
}

#[test]
fn upstream_health_names_the_latest_failure() {
    let mut l = live();
    l.apply(&finished_as("a", 0, T0, Finish::UpstreamError, 502), T0 + 1);
    let s = l.view(T0 + 2);
    assert_eq!(s.upstream.last_error.as_deref(), Some("upstream_error 502"));
    assert_eq!(s.upstream.last_error_ms, Some(T0));
    assert_eq!(s.upstream.last_latency_ms, None);
    l.apply(
        &finished_as("b", 0, T0 + 10, Finish::UpstreamTimeout, 504),
        T0 + 11,
    );
    assert_eq!(
        l.view(T0 + 12).upstream.last_error.as_deref(),
        Some("upstream_timeout 504")
    );
    // A stream that broke after its 200 went out.
    l.apply(
        &finished_as("c", 5, T0 + 20, Finish::UpstreamError, 200),
        T0 + 21,
    );
    l.apply(&finished("d", 5, T0 + 30), T0 + 31);
    let s = l.view(T0 + 32);
    assert_eq!(
        s.upstream.last_error.as_deref(),
        Some("upstream_error mid-stream")
    );
    assert_eq!(s.upstream.last_error_ms, Some(T0 + 20));
    assert_eq!(s.upstream.last_latency_ms, Some(100));
    // Client aborts say nothing about upstream.
    l.apply(
        &finished_as("e", 5, T0 + 40, Finish::ClientAbort, 200),
        T0 + 41,
    );
    assert_eq!(l.view(T0 + 42).upstream, s.upstream);
}

fn row(id: &str, cost: i64, created_at_ms: i64) -> UsageRow {
    UsageRow {
        request_id: id.into(),
        key_id: "key_a".into(),
        model: "deepseek-v4-flash".into(),
        stream: true,
        period: PricePeriod::OffPeak,
        prompt_tokens: 5,
        cache_hit_tokens: 0,
        cache_miss_tokens: 5,
        completion_tokens: 3,
        reasoning_tokens: 0,
        cost: Usd::from_nanos(cost),
        measured: Measured::Provider,
        status: 200,
        finish: Finish::Complete,
        latency_ms: 100,
        ttft_ms: Some(10),
        created_at_ms,
        api: crate::status::Api::OpenAi,
        account: String::new(),
    }
}

#[test]
fn a_reload_counts_each_request_once_and_clears_missed_ends() {
    let mut l = live();
    l.apply(&started("r1", T0), T0);
    l.apply(&started("r2", T0 + 1), T0 + 1);
    // The tracker lagged: r1 and r3 settled meanwhile (rows committed); r3's event is still on
    // its way to the new subscription, r1's was lost.
    l.reload(Baseline {
        day: day_of(T0),
        requests: 7,
        spend: Usd::from_nanos(700),
        paid: vec![("o1".into(), Usd::from_dollars(5))],
        settled: vec!["r1".into(), "r3".into()],
        latest: vec![row("r3", 30, T0 + 2), row("r1", 10, T0)],
        keep_until_ms: T0 + RELOADED_KEPT_MS,
    });
    l.apply(&finished("r3", 30, T0 + 102), T0 + 200);
    l.apply(&finished("r4", 40, T0 + 300), T0 + 300);
    l.apply(&paid("o1", 5, T0 + 310), T0 + 310);
    let s = l.view(T0 + 400);
    assert_eq!(
        s.today.requests, 8,
        "r3 counted by the reload only, r4 by its event"
    );
    assert_eq!(s.today.spend_usd, Usd::from_nanos(740));
    assert_eq!(s.today.revenue_usd, Usd::from_dollars(5));
    let flying: Vec<_> = s.in_flight.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(flying, ["r2"], "r1 ended while the tracker lagged");
    assert_eq!(ids(&s.finished), ["r1", "r3", "r4"]);
    match &s.finished[0] {
        ActivityEvent::RequestFinished {
            at_ms, cost_usd, ..
        } => {
            assert_eq!(*at_ms, T0 + 100, "a row ends at its start plus its latency");
            assert_eq!(*cost_usd, Usd::from_nanos(10));
        }
        other => panic!("{other:?}"),
    }
}

/// A daemon's state on a temp dir (no HTTP, no socket).
async fn open(dir: &tempfile::TempDir) -> Arc<AppState> {
    let mut c = Config::default();
    c.server.data_dir = dir.path().to_path_buf();
    c.pricing.peak_hours_utc = vec![];
    AppState::open(c, false).await.unwrap()
}

async fn key_id(state: &AppState) -> String {
    let (key, _) = crate::admin::create_key(
        state,
        NewKey {
            plan: "trial".into(),
            ..NewKey::default()
        },
    )
    .await
    .unwrap();
    key.id.clone()
}

/// What billing does: queue the row, then announce it.
fn settle(state: &AppState, request_id: &str, key_id: &str, cost: i64) {
    let mut r = row(request_id, cost, now_ms() - 100);
    r.key_id = key_id.into();
    let queued = state.store.submit(Write::Usage(Box::new(r.clone())));
    drop(queued);
    state.activity.emit(finished_event(&r));
}

#[tokio::test]
async fn a_snapshot_and_its_events_meet_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir).await;
    let now = now_ms();
    // Sent, not yet applied by the task (this runtime has one thread and it is ours): the
    // hand-off applies them before the snapshot is taken.
    for i in 0..10 {
        state.activity.emit(started(&format!("r{i}"), now));
    }
    let (snap, mut events) = state.tracker.subscribe().await.unwrap();
    assert_eq!(snap.in_flight.len(), 10);
    assert_eq!(snap.version, env!("CARGO_PKG_VERSION"));
    assert!(snap.at_ms >= now);
    assert!(
        matches!(events.try_recv(), Err(TryRecvError::Empty)),
        "nothing the snapshot reflects is sent again"
    );
    state.activity.emit(progress("r3", 12, now + 1));
    match events.try_recv().as_deref() {
        Ok(ActivityEvent::RequestProgress { output_tokens, .. }) => assert_eq!(*output_tokens, 12),
        other => panic!("{other:?}"),
    }
    let snap = state.tracker.snapshot().await.unwrap();
    let r3 = snap
        .in_flight
        .iter()
        .find(|r| r.request_id == "r3")
        .unwrap();
    assert_eq!(r3.output_tokens, 12);
}

#[tokio::test]
async fn a_lagging_tracker_reloads_the_day_from_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir).await;
    let key = key_id(&state).await;
    // More settlements than the bus holds, with no chance for the task to run: it lags.
    let n = crate::activity::BUS_CAPACITY + 1000;
    for i in 0..n {
        settle(&state, &format!("req_{i:05}"), &key, 7);
    }
    let snap = state.tracker.snapshot().await.unwrap();
    assert_eq!(snap.today.requests, n as u64, "{:?}", snap.today);
    assert_eq!(snap.today.spend_usd, Usd::from_nanos(7 * n as i64));
    let kept = ids(&snap.finished);
    assert_eq!(kept.len(), FINISHED_KEPT);
    assert_eq!(kept.last(), Some(&format!("req_{:05}", n - 1)));
    let (rows, sum) = state
        .store
        .read(move |c| crate::store::usage::totals(c, &key))
        .await
        .unwrap();
    assert_eq!((rows, sum), (snap.today.requests, snap.today.spend_usd));

    // Back in step: the next settlement is counted once.
    let key = snap.keys[0].id.clone();
    settle(&state, "req_after", &key, 5);
    let snap = state.tracker.snapshot().await.unwrap();
    assert_eq!(snap.today.requests, n as u64 + 1);
    assert_eq!(
        ids(&snap.finished).last().map(String::as_str),
        Some("req_after")
    );
}

#[tokio::test]
async fn a_restarted_daemon_starts_from_todays_ledger_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir).await;
    let key = key_id(&state).await;
    for i in 0..3 {
        let mut r = row(&format!("old_{i}"), 11, now_ms() - 1_000);
        r.key_id = key.clone();
        state.store.write(Write::Usage(Box::new(r))).await.unwrap();
    }
    // Yesterday's request is not today's.
    let mut r = row("yesterday", 1_000, now_ms() - DAY_MS - 1_000);
    r.key_id = key.clone();
    state.store.write(Write::Usage(Box::new(r))).await.unwrap();
    let order = OrderRecord {
        order_id: "ord_1".into(),
        plan: "trial".into(),
        email: "a@b.co".into(),
        amount: Usd::from_dollars(1),
        currency: "USD".into(),
        status: OrderStatus::Created,
        paypal_order_id: Some("PP1".into()),
        paypal_app: None,
        paypal_capture_id: None,
        key_id: None,
        browser_token_hash: None,
        created_at: Utc::now(),
        paid_at: None,
        refunded_at: None,
    };
    state
        .store
        .write(Write::InsertOrder(Box::new(order)))
        .await
        .unwrap();
    let (record, _) = crate::admin::prepare_key(
        &state,
        NewKey {
            plan: "trial".into(),
            order_id: Some("ord_1".into()),
            ..NewKey::default()
        },
    )
    .unwrap();
    state
        .store
        .write(Write::PayOrder {
            order_id: "ord_1".into(),
            capture_id: "CAP1".into(),
            key: Box::new(record),
            at_ms: now_ms(),
        })
        .await
        .unwrap();
    state.store.close().await;
    state.release_data_dir();
    drop(state);

    let state = open(&dir).await;
    let snap = state.tracker.snapshot().await.unwrap();
    assert_eq!(snap.today.requests, 3, "{:?}", snap.today);
    assert_eq!(snap.today.spend_usd, Usd::from_nanos(33));
    assert_eq!(snap.today.revenue_usd, Usd::from_dollars(1));
    assert_eq!(
        ids(&snap.finished),
        ["old_0", "old_1", "old_2", "yesterday"],
        "the latest ledger rows, in commit order"
    );
    assert_eq!(snap.keys.len(), 2);
    assert_eq!(snap.orders.len(), 1);
    assert_eq!(snap.orders[0].status, OrderStatus::Paid);
    assert_eq!(snap.upstream.last_latency_ms, Some(100));
    // The payment reported again (a webhook after the restart) is not revenue twice.
    state.activity.emit(paid("ord_1", 1, now_ms()));
    let snap = state.tracker.snapshot().await.unwrap();
    assert_eq!(snap.today.revenue_usd, Usd::from_dollars(1));
}

/// A long gather is applied in turns of [`TURN`] events, other tasks running between them
/// (applied in one go, a busy 10 ms held the worker for ~100 µs and a request arriving then
/// waited for all of it), and to the end: nothing is left on the bus.
#[tokio::test]
async fn a_long_gather_is_applied_in_turns_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(&dir).await;
    let now = now_ms();
    let n = 20 * TURN;
    assert!(
        n < crate::activity::BUS_CAPACITY / 4,
        "turns yield below this"
    );
    for i in 0..n {
        state.activity.emit(started(&format!("r{i}"), now));
    }
    // This runtime has one thread: what the probe sees between its own turns is what the
    // tracker left on the bus at each of its turns.
    let activity = state.activity.clone();
    let probe = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let held = activity.queued();
            if seen.last() != Some(&held) {
                seen.push(held);
            }
            if held == 0 {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    });
    let seen = tokio::time::timeout(GATHER * 100, probe)
        .await
        .expect("the bus is drained")
        .unwrap();
    let between = seen.iter().filter(|&&h| h > 0 && h < n).count();
    assert!(between >= 5, "other tasks ran between turns: {seen:?}");
    let snap = state.tracker.snapshot().await.unwrap();
    assert_eq!(snap.in_flight.len(), n);
}
