//! Snapshot + events reproduce the daemon's state, repeats change nothing, requests/s, expiry,
//! the no-snapshot fallback, disconnection.

use super::*;
use crate::console::model::Model;

/// What happens after the snapshot: a stream grows and ends, a key is limited and refused,
/// an order is created and paid, a key is topped up, another revoked, a third minted.
fn later_events() -> Vec<ActivityEvent> {
    vec![
        started("req_new", NOW + 1_000),
        ActivityEvent::RequestProgress {
            request_id: "req_new".into(),
            output_tokens: 40,
            at_ms: NOW + 1_500,
        },
        ActivityEvent::RequestProgress {
            request_id: "req_stream".into(),
            output_tokens: 250,
            at_ms: NOW + 1_600,
        },
        finished("req_stream", "key_pro", "0.5", NOW + 2_000),
        ActivityEvent::RateLimited {
            key_id: "key_pro".into(),
            key_prefix: "sk-gateway-PrOo…".into(),
            limit: 60,
            at_ms: NOW + 2_100,
        },
        ActivityEvent::Refused {
            key_id: Some("key_trial".into()),
            status: 402,
            code: "insufficient_budget".into(),
            at_ms: NOW + 2_200,
        },
        ActivityEvent::OrderCreated {
            order_id: "ord_NEWxxxxxxxxxxxxxxxxx".into(),
            plan: "standard".into(),
            amount_usd: usd("20"),
            email: "dave@example.com".into(),
            at_ms: NOW + 3_000,
            order_kind: Default::default(),
            key_id: None,
        },
        ActivityEvent::OrderPaid {
            order_id: "ord_NEWxxxxxxxxxxxxxxxxx".into(),
            plan: "standard".into(),
            amount_usd: usd("20"),
            key_id: "key_new".into(),
            at_ms: NOW + 3_500,
        },
        ActivityEvent::KeyCreated {
            key: key("key_new", "sk-gateway-NeWw…", "standard", "20", "0"),
        },
        ActivityEvent::KeyToppedUp {
            key_id: "key_trial".into(),
            amount_usd: usd("4"),
            budget_usd: usd("5"),
            at_ms: NOW + 4_000,
        },
        ActivityEvent::KeyRevoked {
            key_id: "key_pro".into(),
            at_ms: NOW + 5_000,
        },
    ]
}

/// Events the snapshot already reflects: its finished requests, its latest rate-limit hit and
/// refusal, its paid order, its stream's start and the Pro key's creation.
fn reflected_events() -> Vec<ActivityEvent> {
    let mut events = snapshot().finished;
    events.extend([
        ActivityEvent::RateLimited {
            key_id: "key_trial".into(),
            key_prefix: "sk-gateway-TrIa…".into(),
            limit: 30,
            at_ms: NOW - 1_000,
        },
        ActivityEvent::Refused {
            key_id: Some("key_trial".into()),
            status: 402,
            code: "insufficient_budget".into(),
            at_ms: NOW - 120_000,
        },
        ActivityEvent::OrderPaid {
            order_id: "ord_PAIDxxxxxxxxxxxxxxxx".into(),
            plan: "pro".into(),
            amount_usd: usd("20"),
            key_id: "key_pro".into(),
            at_ms: NOW - 3_000_000,
        },
        started("req_stream", NOW - 4_000),
        ActivityEvent::KeyCreated {
            key: key("key_pro", "sk-gateway-PrOo…", "pro", "50", "0"),
        },
    ]);
    events
}

/// The model after [`later_events`]: the new stream in flight, the old one finished and
/// charged, the Pro key revoked, the Trial key topped up, the new key and order, the new
/// rate-limit hit and refusal.
fn assert_later_events_applied(m: &Model) {
    assert_eq!(m.in_flight().len(), 1);
    assert_eq!(m.in_flight()[0].request_id, "req_new");
    assert_eq!(m.in_flight()[0].output_tokens, 40);
    assert_eq!(m.finished()[0].request_id, "req_stream");
    assert_eq!(
        m.finished()[0].key_prefix.as_deref(),
        Some("sk-gateway-PrOo…")
    );
    let pro = &m.keys["key_pro"];
    assert_eq!(pro.spent_usd, usd("1.74"));
    // Revoked: nothing of it can be used, as the daemon's view has it.
    assert_eq!(pro.remaining_usd, Usd::ZERO);
    assert_eq!(pro.requests, 4);
    assert_eq!(pro.status, KeyStatus::Revoked);
    let trial = &m.keys["key_trial"];
    assert_eq!(
        (trial.budget_usd, trial.remaining_usd),
        (usd("5"), usd("4.99"))
    );
    assert!(m.keys.contains_key("key_new"));
    assert_eq!(m.today().requests, 3);
    assert_eq!(m.today().spend_usd, usd("1.75"));
    assert_eq!(m.today().revenue_usd, usd("40"));
    assert_eq!(m.orders[0].order_id, "ord_NEWxxxxxxxxxxxxxxxxx");
    assert_eq!(m.orders[0].status, OrderStatus::Paid);
    assert_eq!(m.orders[0].email, "dave@example.com");
    assert_eq!(m.rate_limited()["key_pro"].hits_ms, vec![NOW + 2_100]);
    assert_eq!(m.rate_limited()["key_trial"].hits_ms.len(), 4);
    assert_eq!(m.refusals().len(), 3);
    assert_eq!(m.upstream().last_latency_ms, Some(1_234));
}

#[test]
fn snapshot_then_events_reproduce_the_daemon_and_repeats_change_nothing() {
    let mut app = app();
    let m = &app.model;
    assert_eq!(m.version.as_deref(), Some("0.1.0"));
    assert_eq!(m.in_flight().len(), 1);
    assert_eq!(m.finished().len(), 2);
    assert_eq!(m.finished()[0].request_id, "req_b", "newest first");
    assert_eq!(m.keys.len(), 3);
    assert_eq!(m.uptime_secs(NOW + 5_000), Some(7_625));

    // Events the snapshot already reflects change nothing.
    let before = app.model.clone();
    for e in reflected_events() {
        app.handle(ev(e));
    }
    assert_eq!(app.model, before, "reflected events must change nothing");

    // Later events apply once…
    for e in later_events() {
        app.handle(ev(e));
    }
    let once = app.model.clone();
    assert_later_events_applied(&app.model);

    // …and a second delivery changes nothing (rate-limit hits and refusals carry no id: only
    // those the snapshot reflects can repeat, which is checked above).
    for e in later_events() {
        if !matches!(
            e,
            ActivityEvent::RateLimited { .. } | ActivityEvent::Refused { .. }
        ) {
            app.handle(ev(e));
        }
    }
    assert_eq!(app.model, once, "repeated events must change nothing");
}

#[test]
fn a_fresh_snapshot_after_lag_replaces_everything() {
    let mut app = app();
    app.handle(ev(started("req_new", NOW + 1_000)));
    let actions = app.handle(Event::Socket(Response::Lagged { missed: 12 }));
    assert!(actions.is_empty(), "a daemon with snapshots resends one");
    assert_eq!(app.lagged, Some(12));
    let mut s = snapshot();
    s.at_ms = NOW + 9_000;
    s.in_flight.clear();
    s.today.spend_usd = usd("9");
    app.handle(Event::Socket(Response::Snapshot {
        snapshot: Box::new(s),
    }));
    assert_eq!(app.lagged, None);
    assert!(app.model.in_flight().is_empty());
    assert_eq!(app.model.today().spend_usd, usd("9"));
}

#[test]
fn without_a_snapshot_the_console_builds_from_events_and_look_ups() {
    let mut app = App::new("/tmp/s.sock", vec!["trial".into()], false);
    app.handle(Event::Tick(NOW));
    let actions = app.handle(Event::Connected);
    assert_eq!(
        actions,
        vec![
            Action::Send(Command::Ping),
            Action::Send(Command::KeysList),
            Action::Send(Command::OrdersList),
            Action::Send(Command::MailList),
            Action::Send(Command::UpstreamStatus)
        ]
    );
    app.handle(Event::Socket(Response::Subscribed));
    app.handle(ev(started("req_1", NOW + 100)));
    assert_eq!(app.model.in_flight().len(), 1);
    app.handle(Event::Reply(
        Command::Ping,
        Ok(Response::Pong {
            version: "0.0.9".into(),
        }),
    ));
    app.handle(Event::Tick(NOW + 200));
    app.handle(Event::Reply(
        Command::KeysList,
        Ok(Response::Keys {
            keys: vec![key("key_pro", "sk-gateway-PrOo…", "pro", "50", "1")],
        }),
    ));
    app.handle(Event::Reply(
        Command::OrdersList,
        Ok(Response::Orders {
            orders: snapshot().orders,
        }),
    ));
    assert_eq!(app.model.version.as_deref(), Some("0.0.9"));
    assert_eq!(app.model.orders.len(), 3);
    assert!(app.plans.contains(&"pro".to_string()), "plans seen on keys");
    // A request that settled before the key list was read is in its balance already.
    app.handle(ev(finished("req_0", "key_pro", "0.5", NOW + 150)));
    app.handle(ev(finished("req_1", "key_pro", "0.25", NOW + 300)));
    let pro = &app.model.keys["key_pro"];
    assert_eq!(pro.spent_usd, usd("1.25"));
    assert_eq!(app.model.finished().len(), 2);
    assert!(app.model.in_flight().is_empty());
    assert_eq!(
        app.handle(Event::Socket(Response::Lagged { missed: 3 })),
        vec![
            Action::Send(Command::KeysList),
            Action::Send(Command::OrdersList)
        ]
    );
}

/// A snapshot of a busy daemon carries only its latest finished requests: the rate is read
/// over the time they cover until a whole minute is known (it read 50 requests over 60 s for
/// a minute after attaching; found by an independent check).
#[test]
fn requests_per_second_of_a_busy_snapshot_counts_what_it_covers() {
    let mut s = snapshot();
    // 50 requests in the last 20 s (2.5 a second), and more before that the snapshot lacks.
    s.finished = (0..crate::activity::tracker::FINISHED_KEPT as i64)
        .map(|i| finished(&format!("r{i}"), "key_pro", "0", NOW - 20_000 + i * 400))
        .collect();
    let mut app = App::new("/tmp/s.sock", vec![], true);
    app.handle(Event::Tick(NOW));
    app.handle(Event::Connected);
    app.handle(Event::Socket(Response::Subscribed));
    app.handle(Event::Socket(Response::Snapshot {
        snapshot: Box::new(s),
    }));
    assert!((app.model.requests_per_sec(NOW) - 2.5).abs() < 1e-9);
    // Once a minute has passed since the oldest, the window is the minute again: at
    // NOW + 45 s it holds the 37 newer than NOW - 15 s.
    assert!((app.model.requests_per_sec(NOW + 45_000) - 37.0 / 60.0).abs() < 1e-9);
}

#[test]
fn requests_per_second_counts_the_last_minute() {
    let mut app = app();
    // The snapshot's two finished requests are 30 s and 10 s old.
    assert!((app.model.requests_per_sec(NOW) - 2.0 / 60.0).abs() < 1e-9);
    for i in 0..58 {
        app.handle(ev(finished(&format!("r{i}"), "key_pro", "0", NOW + 1_000)));
    }
    assert!((app.model.requests_per_sec(NOW + 1_000) - 1.0).abs() < 1e-9);
    app.handle(Event::Tick(NOW + 35_000));
    assert!((app.model.requests_per_sec(NOW + 35_000) - 59.0 / 60.0).abs() < 1e-9);
    app.handle(Event::Tick(NOW + 70_000));
    assert_eq!(app.model.requests_per_sec(NOW + 70_000), 0.0);
}

/// An attached console keeps what the daemon's snapshot keeps — the newest 1 000 hits of a key
/// and 200 refusals — so its counts agree with a console attached later (one attached through
/// a flood counted 5 055 hits of a key, one attached after it "1114+"; found by an
/// independent check).
#[test]
fn an_attached_console_keeps_what_a_snapshot_keeps() {
    let mut app = app();
    for i in 0..1_500 {
        app.handle(ev(ActivityEvent::RateLimited {
            key_id: "key_pro".into(),
            key_prefix: "sk-gateway-PrOo…".into(),
            limit: 60,
            at_ms: NOW + i,
        }));
        app.handle(ev(ActivityEvent::Refused {
            key_id: Some("key_pro".into()),
            status: 402,
            code: "insufficient_budget".into(),
            at_ms: NOW + i,
        }));
    }
    let hits = &app.model.rate_limited()["key_pro"];
    assert_eq!(hits.hits_ms.len(), crate::activity::tracker::HITS_PER_KEY);
    assert_eq!(hits.pushed_out_ms, Some(NOW + 499));
    assert_eq!(
        app.model.refusals().len(),
        crate::activity::tracker::REFUSALS_KEPT
    );
    assert!(app.model.refusals_pushed_out());
}

#[test]
fn old_hits_and_refusals_expire_and_totals_restart_at_midnight() {
    let mut app = app();
    app.handle(Event::Tick(NOW + 3_000_000));
    let hits = &app.model.rate_limited()["key_trial"].hits_ms;
    assert_eq!(hits.len(), 3, "the 40-minute-old hit fell out of the hour");
    app.handle(Event::Tick(NOW + 3_600_000));
    assert!(app.model.rate_limited().is_empty());
    assert!(app.model.refusals().is_empty());
    assert_eq!(app.model.today().spend_usd, usd("1.25"));
    app.handle(Event::Tick(NOW + 12 * 3_600_000));
    assert_eq!(*app.model.today(), Totals::default());
}

#[test]
fn disconnection_is_shown_and_reconnection_resubscribes() {
    let mut app = app();
    app.handle(Event::Disconnected(
        "the daemon closed the connection".into(),
    ));
    assert!(!app.connected);
    assert!(
        app.model.in_flight().is_empty(),
        "their end will never be seen"
    );
    let actions = app.handle(Event::Connected);
    assert!(app.connected);
    assert_eq!(app.disconnect_reason, None);
    assert_eq!(actions.len(), 5);
    assert_eq!(actions[4], Action::Send(Command::UpstreamStatus));
}
