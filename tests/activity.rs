//! The console's side of the admin socket: the protocol round-trips; a request in flight shows
//! in snapshots with its output growing; a console that stops reading never slows a request nor
//! grows the daemon's memory, and is resynchronised with a fresh snapshot when it reads again.
//! (That a snapshot plus the events after it reproduce the daemon's state is in
//! `activity_snapshot`, with the raw subscription from here.)

use std::time::Duration;

use futures_util::StreamExt;
use modelrelay::activity::ActivityEvent;
use modelrelay::activity::protocol::{
    InFlightView, KeyView, OrderView, RateLimitHits, Request, Response, Snapshot, Totals,
    UpstreamHealth,
};
use modelrelay::money::Usd;
use modelrelay::status::{Api, Finish, KeyStatus, Measured, OrderStatus};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;

use crate::common::{TestApp, body, request_id};

pub(crate) const FLASH: &str = "deepseek-v4-flash";

/// A raw subscription, spoken by hand.
pub(crate) struct Sub {
    lines: Lines<BufReader<UnixStream>>,
}

impl Sub {
    /// Connect and send `subscribe`; nothing is read yet.
    pub(crate) async fn open(app: &TestApp) -> Sub {
        let mut stream = UnixStream::connect(&app.socket).await.unwrap();
        stream
            .write_all(b"{\"cmd\":\"subscribe\"}\n")
            .await
            .unwrap();
        Sub {
            lines: BufReader::new(stream).lines(),
        }
    }

    /// Connect, subscribe, and read `subscribed` and the snapshot.
    pub(crate) async fn connect(app: &TestApp) -> (Sub, Snapshot) {
        let mut sub = Sub::open(app).await;
        assert!(matches!(sub.next().await, Response::Subscribed));
        match sub.next().await {
            Response::Snapshot { snapshot } => (sub, *snapshot),
            other => panic!("a snapshot right after subscribed, got {other:?}"),
        }
    }

    /// The next line but heartbeats (a stuck daemon fails the test instead of hanging it).
    pub(crate) async fn next(&mut self) -> Response {
        loop {
            match self.next_line().await {
                Response::Heartbeat => continue,
                other => return other,
            }
        }
    }

    /// The next line, whatever it is.
    pub(crate) async fn next_line(&mut self) -> Response {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the daemon sends a line")
            .expect("readable")
            .expect("the subscription stays open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a response ({e}): {line}"))
    }

    /// The next event (nothing else may come).
    pub(crate) async fn event(&mut self) -> ActivityEvent {
        match self.next().await {
            Response::Event { event } => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// A subscription with nothing to tell hears a heartbeat every few seconds, so a console can
/// tell a stuck daemon from an idle one.
#[tokio::test]
async fn an_idle_subscription_hears_heartbeats() {
    let app = TestApp::spawn().await;
    let (mut sub, _) = Sub::connect(&app).await;
    let started = std::time::Instant::now();
    for _ in 0..2 {
        assert!(matches!(sub.next_line().await, Response::Heartbeat));
    }
    let took = started.elapsed();
    assert!(
        took >= modelrelay::activity::protocol::HEARTBEAT,
        "two heartbeats came within {took:?}"
    );
}

/// A snapshot from a connection of its own.
pub(crate) async fn snapshot(app: &TestApp) -> Snapshot {
    Sub::connect(app).await.1
}

/// A key with every optional field set.
fn key_view() -> KeyView {
    KeyView {
        id: "key_1".into(),
        prefix: "sk-gateway-AbCd…".into(),
        plan: "pro".into(),
        status: KeyStatus::Exhausted,
        budget_usd: Usd::from_dollars(50),
        spent_usd: Usd::from_nanos(49_999_999_999),
        remaining_usd: Usd::from_nanos(1),
        held_usd: Usd::from_nanos(2),
        requests: 12,
        email: Some("a@b.co".into()),
        note: Some("comp — 赠送".into()),
        order_id: Some("ord_1".into()),
        created_at: "2026-01-02T03:04:05Z".into(),
        last_used_at: Some("2026-01-03T03:04:05Z".into()),
        budget_history: None,
    }
}

/// A request's life: started, progressed, finished.
fn request_events() -> Vec<ActivityEvent> {
    vec![
        ActivityEvent::RequestStarted {
            request_id: "req_1".into(),
            key_id: "key_1".into(),
            key_prefix: "sk-gateway-AbCd…".into(),
            plan: "pro".into(),
            model: FLASH.into(),
            stream: true,
            client_ip: Some("2001:db8::1".into()),
            api: modelrelay::status::Api::OpenAi,
            at_ms: 1,
        },
        ActivityEvent::RequestProgress {
            request_id: "req_1".into(),
            output_tokens: 42,
            at_ms: 2,
        },
        ActivityEvent::RequestFinished {
            request_id: "req_1".into(),
            key_id: "key_1".into(),
            model: FLASH.into(),
            status: 200,
            finish: Finish::UpstreamTimeout,
            cost_usd: Usd::from_nanos(1234),
            prompt_tokens: 10,
            completion_tokens: 3,
            measured: Measured::Estimated,
            latency_ms: 40,
            ttft_ms: Some(5),
            api: modelrelay::status::Api::OpenAi,
            account: String::new(),
            at_ms: 3,
        },
    ]
}

/// A rate-limit hit, a refusal of a known key and one of an unknown key.
fn refusal_events() -> Vec<ActivityEvent> {
    vec![
        ActivityEvent::RateLimited {
            key_id: "key_1".into(),
            key_prefix: "sk-gateway-AbCd…".into(),
            limit: 30,
            at_ms: 4,
        },
        ActivityEvent::Refused {
            key_id: Some("key_1".into()),
            status: 402,
            code: "insufficient_budget".into(),
            at_ms: 5,
        },
        ActivityEvent::Refused {
            key_id: None,
            status: 401,
            code: "invalid_api_key".into(),
            at_ms: 5,
        },
    ]
}

/// `key` created, exhausted and revoked.
fn key_events(key: KeyView) -> Vec<ActivityEvent> {
    vec![
        ActivityEvent::KeyCreated { key },
        ActivityEvent::KeyExhausted {
            key_id: "key_1".into(),
            at_ms: 6,
        },
        ActivityEvent::KeyRevoked {
            key_id: "key_1".into(),
            at_ms: 7,
        },
    ]
}

/// An order created, paid and refunded, then a key topped up.
fn money_events() -> Vec<ActivityEvent> {
    vec![
        ActivityEvent::OrderCreated {
            order_id: "ord_1".into(),
            plan: "pro".into(),
            amount_usd: Usd::from_dollars(50),
            email: "a@b.co".into(),
            at_ms: 8,
            order_kind: Default::default(),
            key_id: None,
        },
        ActivityEvent::OrderPaid {
            order_id: "ord_1".into(),
            plan: "pro".into(),
            amount_usd: Usd::from_dollars(50),
            key_id: "key_1".into(),
            at_ms: 9,
        },
        ActivityEvent::OrderRefunded {
            order_id: "ord_1".into(),
            key_id: Some("key_1".into()),
            at_ms: 10,
        },
        ActivityEvent::KeyToppedUp {
            key_id: "key_1".into(),
            amount_usd: "2.5".parse().unwrap(),
            budget_usd: "52.5".parse().unwrap(),
            at_ms: 11,
        },
    ]
}

/// One of every event, with every optional field set (the finished request is at index 2, the
/// refusal of a known key at 4).
fn every_event() -> Vec<ActivityEvent> {
    [
        request_events(),
        refusal_events(),
        key_events(key_view()),
        money_events(),
    ]
    .concat()
}

/// A snapshot with every part set, around `key` and the finished request and refusal of
/// `events` (from [`every_event`]).
fn full_snapshot(key: KeyView, events: &[ActivityEvent]) -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        uptime_secs: 3600,
        at_ms: 1_760_000_000_123,
        in_flight: vec![InFlightView {
            request_id: "req_2".into(),
            key_id: "key_1".into(),
            key_prefix: "sk-gateway-AbCd…".into(),
            plan: "pro".into(),
            model: FLASH.into(),
            stream: false,
            client_ip: None,
            api: modelrelay::status::Api::OpenAi,
            account: String::new(),
            started_ms: 1_760_000_000_000,
            output_tokens: 7,
        }],
        finished: vec![events[2].clone()],
        keys: vec![key],
        orders: vec![OrderView {
            order_id: "ord_1".into(),
            status: OrderStatus::Refunded,
            plan: "pro".into(),
            amount_usd: Usd::from_dollars(50),
            email: "a@b.co".into(),
            key_id: Some("key_1".into()),
            paypal_order_id: Some("PP-1".into()),
            paypal_app: None,
            paypal_capture_id: Some("CAP-1".into()),
            created_at: "2026-01-02T03:04:05Z".into(),
            paid_at: Some("2026-01-02T03:05:05Z".into()),
            kind: Default::default(),
            topped_up_key_id: None,
            refunded_usd: Usd::from_dollars(50),
        }],
        rate_limited: vec![RateLimitHits {
            key_id: "key_1".into(),
            key_prefix: "sk-gateway-AbCd…".into(),
            limit: 30,
            hits_ms: vec![1, 2, 3],
            pushed_out_ms: Some(0),
        }],
        refusals: vec![events[4].clone()],
        refusals_pushed_out_ms: Some(0),
        today: Totals {
            requests: 9,
            spend_usd: Usd::from_nanos(123_456_789),
            revenue_usd: Usd::from_dollars(55),
        },
        upstream: UpstreamHealth {
            last_error: Some("upstream_error 502".into()),
            last_error_ms: Some(1_759_999_999_000),
            last_latency_ms: Some(850),
        },
    }
}

#[test]
fn every_event_and_a_full_snapshot_round_trip_as_json_lines() {
    let events = every_event();
    let mut kinds = std::collections::BTreeSet::new();
    for e in &events {
        let line = serde_json::to_string(&Response::Event { event: e.clone() }).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "event", "{line}");
        kinds.insert(v["event"]["kind"].as_str().unwrap().to_string());
        match serde_json::from_str::<Response>(&line).unwrap() {
            Response::Event { event } => assert_eq!(&event, e),
            other => panic!("{other:?}"),
        }
    }
    let expected = [
        "request_started",
        "request_progress",
        "request_finished",
        "rate_limited",
        "refused",
        "key_created",
        "key_exhausted",
        "key_revoked",
        "order_created",
        "order_paid",
        "order_refunded",
        "key_topped_up",
    ];
    assert_eq!(kinds.len(), expected.len(), "{kinds:?}");
    assert!(expected.iter().all(|k| kinds.contains(*k)), "{kinds:?}");

    let key = match &events[6] {
        ActivityEvent::KeyCreated { key } => key.clone(),
        other => panic!("{other:?}"),
    };
    let snap = full_snapshot(key, &events);
    let line = serde_json::to_string(&Response::Snapshot {
        snapshot: Box::new(snap.clone()),
    })
    .unwrap();
    assert!(!line.contains('\n'));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "snapshot");
    assert_eq!(
        v["snapshot"]["today"]["spend_usd"], "0.123456789",
        "money as decimal strings"
    );
    assert_eq!(v["snapshot"]["orders"][0]["status"], "refunded");
    match serde_json::from_str::<Response>(&line).unwrap() {
        Response::Snapshot { snapshot } => assert_eq!(*snapshot, snap),
        other => panic!("{other:?}"),
    }
    // The empty state, and the other subscription lines.
    let empty = serde_json::to_string(&Response::Snapshot {
        snapshot: Box::default(),
    })
    .unwrap();
    match serde_json::from_str::<Response>(&empty).unwrap() {
        Response::Snapshot { snapshot } => assert_eq!(*snapshot, Snapshot::default()),
        other => panic!("{other:?}"),
    }
    for (r, want) in [
        (Response::Subscribed, json!({"type": "subscribed"})),
        (Response::Heartbeat, json!({"type": "heartbeat"})),
        (
            Response::Lagged { missed: 17 },
            json!({"type": "lagged", "missed": 17}),
        ),
    ] {
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, want);
        let back = serde_json::to_value(serde_json::from_value::<Response>(v).unwrap()).unwrap();
        assert_eq!(back, want);
    }
    assert_eq!(
        serde_json::from_str::<Request>(r#"{"cmd":"subscribe"}"#).unwrap(),
        Request::Subscribe
    );
}

#[tokio::test]
async fn a_stream_in_flight_shows_in_snapshots_with_growing_output() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let req = app.chat(
        &key,
        &json!({"model": FLASH, "stream": true,
                "messages": [{"role": "user", "content": "hi [[sim reply=150 delay_ms=20]]"}]}),
    );
    let text = growing_stream(&app, &key, req, Api::OpenAi).await;
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

/// Claude Code's streams show in the console like the others: growing, with their dialect.
#[tokio::test]
async fn an_anthropic_stream_in_flight_shows_growing_output_and_its_dialect() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let req = crate::anthropic::post(
        &app,
        "/anthropic/v1/messages",
        &key,
        crate::anthropic::Auth::ApiKey,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 400, "stream": true,
                "messages": [{"role": "user", "content": "hi [[sim reply=150 delay_ms=20]]"}]}),
    );
    let text = growing_stream(&app, &key, req, Api::Anthropic).await;
    assert!(text.contains("event: message_stop"), "{text}");
}

/// Send a slow stream of 150 tokens and watch it in snapshots: in flight with the key, plan,
/// model, dialect and account, its output growing; then finished as the ledger has it. Returns
/// the stream's body.
async fn growing_stream(
    app: &TestApp,
    key: &str,
    req: reqwest::RequestBuilder,
    api: Api,
) -> String {
    let stream = tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        (rid, resp.text().await.unwrap())
    });
    let mut first = None;
    for _ in 0..200 {
        let s = snapshot(app).await;
        if let Some(r) = s.in_flight.first().filter(|r| r.output_tokens > 0) {
            first = Some(r.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = first.expect("the stream shows in flight with output");
    assert_eq!(first.key_id, app.key_state(key).id);
    assert_eq!(first.key_prefix, app.key_state(key).prefix());
    assert_eq!(
        (first.plan.as_str(), first.model.as_str()),
        ("trial", FLASH)
    );
    assert!(first.stream);
    assert_eq!(first.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!((first.api, first.account.as_str()), (api, "default"));
    assert!(first.output_tokens < 150, "{first:?}");

    // Its progress comes every 200 ms while it streams (3 s here): wait for the next one,
    // by the clock, up to a minute (a loaded machine's timers are late).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let second = loop {
        let s = snapshot(app).await;
        let second = s
            .in_flight
            .iter()
            .find(|r| r.request_id == first.request_id)
            .expect("still in flight")
            .clone();
        if second.output_tokens > first.output_tokens {
            break second;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{first:?} then {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(second.started_ms, first.started_ms);

    let (rid, text) = stream.await.unwrap();
    assert_eq!(rid, first.request_id);
    let row = app.wait_ledger_row(&rid).await;
    let s = snapshot(app).await;
    assert!(s.in_flight.is_empty(), "{:?}", s.in_flight);
    match s.finished.last() {
        Some(ActivityEvent::RequestFinished {
            request_id,
            cost_usd,
            completion_tokens,
            api: finished_api,
            account,
            ..
        }) => {
            assert_eq!(request_id, &rid);
            assert_eq!(*cost_usd, row.cost);
            assert_eq!(*completion_tokens, 150);
            assert_eq!((*finished_api, account.as_str()), (api, "default"));
        }
        other => panic!("{other:?}"),
    }
    text
}

/// Send events straight onto the bus (as fast as anything could), `n` of them.
fn flood(app: &TestApp, n: usize) {
    let activity = &app.daemon.as_ref().unwrap().state.activity;
    for i in 0..n {
        activity.emit(ActivityEvent::RequestProgress {
            request_id: "req_flood".into(),
            output_tokens: i as u64,
            at_ms: 0,
        });
    }
}

/// Read a stuck subscription again until it says it lagged and sends a snapshot with the
/// 300 requests run meanwhile.
async fn resynced(stuck: &mut Sub) -> Box<Snapshot> {
    assert!(matches!(stuck.next().await, Response::Subscribed));
    assert!(matches!(stuck.next().await, Response::Snapshot { .. }));
    let mut resynced = None;
    for _ in 0..100_000 {
        if let Response::Lagged { missed } = stuck.next().await {
            assert!(missed > 0);
            match stuck.next().await {
                Response::Snapshot { snapshot } => {
                    if snapshot.today.requests >= 300 {
                        resynced = Some(snapshot);
                        break;
                    }
                }
                other => panic!("a snapshot after lagged, got {other:?}"),
            }
        }
    }
    resynced.expect("lagged, then a snapshot with the requests run meanwhile")
}

#[tokio::test]
async fn a_console_that_stops_reading_never_slows_requests_nor_grows_memory() {
    let app = TestApp::spawn_with(|c| {
        c.plans.get_mut("trial").unwrap().rpm = 100_000;
    })
    .await;
    let key = app.create_key("trial", Some("100")).await;
    let state = app.daemon.as_ref().unwrap().state.clone();
    let bus = &state.activity;
    let base = bus.subscribers();
    // Subscribes, then never reads.
    let mut stuck = Sub::open(&app).await;
    for _ in 0..400 {
        if bus.subscribers() > base {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        bus.subscribers(),
        base + 1,
        "the console's subscription is open"
    );
    // Enough to fill its socket: from here on the daemon cannot write to it.
    flood(&app, bus.capacity() * 2);

    let run = futures_util::stream::iter(0..300)
        .map(|i| {
            let text = format!("hi {i} [[sim reply=20 prompt=5]]");
            let mut b = body(FLASH, &text);
            b["stream"] = json!(i % 2 == 0);
            let req = app.chat(&key, &b);
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let _ = resp.bytes().await.unwrap();
                status
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<u16>>();
    let statuses = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("300 requests complete while a console is stuck");
    assert_eq!(statuses.len(), 300);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // The bus holds at most its capacity, whatever the stuck console: push it far past it.
    assert!(bus.queued() <= bus.capacity());
    flood(&app, bus.capacity() * 3);
    assert_eq!(
        bus.queued(),
        bus.capacity(),
        "full for the stuck console, and no more"
    );
    let resp = app
        .chat(&key, &body(FLASH, "still there? [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await;

    // Reading again, the console is told what it missed and given a fresh snapshot.
    let snap = resynced(&mut stuck).await;
    assert!(snap.in_flight.is_empty(), "{:?}", snap.in_flight);
    let rows: i64 = app
        .db()
        .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 301);
    assert!(
        (300..=301).contains(&snap.today.requests),
        "{:?}",
        snap.today
    );
}
