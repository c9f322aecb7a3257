//! A snapshot plus the events after it reproduce the daemon's state: a console's view built by
//! the test's own, minimal applier from the events of real traffic (a stream, rate-limit hits,
//! 402/403 refusals, a purchase, a revocation) matches a fresh snapshot taken afterwards.

use modelrelay::activity::ActivityEvent;
use modelrelay::activity::protocol::{
    InFlightView, OrderView, RateLimitHits, Request, Response, Snapshot,
};
use modelrelay::money::Usd;
use modelrelay::status::{Finish, KeyStatus, OrderStatus};
use modelrelay::store::UsageRow;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::activity::{FLASH, Sub, snapshot};
use crate::common::{TestApp, body, request_id};

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a console does with an event: the test's own, minimal, applier.
fn apply(s: &mut Snapshot, e: &ActivityEvent) {
    match e {
        ActivityEvent::RequestStarted { .. }
        | ActivityEvent::RequestProgress { .. }
        | ActivityEvent::RequestRouted { .. }
        | ActivityEvent::RequestFinished { .. } => apply_request(s, e),
        // Upstream accounts are not part of the snapshot.
        ActivityEvent::AccountChanged { .. } => {}
        ActivityEvent::RateLimited { .. } | ActivityEvent::Refused { .. } => apply_limit(s, e),
        ActivityEvent::KeyCreated { .. }
        | ActivityEvent::KeyExhausted { .. }
        | ActivityEvent::KeyRevoked { .. }
        | ActivityEvent::KeyToppedUp { .. } => apply_key(s, e),
        ActivityEvent::OrderCreated { .. }
        | ActivityEvent::OrderPaid { .. }
        | ActivityEvent::OrderRefunded { .. } => apply_order(s, e),
        ActivityEvent::KeyUpdated { key, .. } => {
            if let Some(k) = s.keys.iter_mut().find(|k| k.id == key.id) {
                *k = key.clone();
            }
        }
        // The outbox is not in the snapshot.
        ActivityEvent::MailChanged { .. } => {}
        ActivityEvent::OrderChanged { order, .. } => {
            if let Some(o) = s.orders.iter_mut().find(|o| o.order_id == order.order_id) {
                *o = order.clone();
            }
        }
    }
}

/// Requests: in flight, their progress, finished (with their key's balance and today's totals).
fn apply_request(s: &mut Snapshot, e: &ActivityEvent) {
    match e.clone() {
        ActivityEvent::RequestStarted {
            request_id,
            key_id,
            key_prefix,
            plan,
            model,
            stream,
            client_ip,
            api,
            at_ms,
        } => s.in_flight.push(InFlightView {
            request_id,
            key_id,
            key_prefix,
            plan,
            model,
            stream,
            client_ip,
            api,
            account: String::new(),
            started_ms: at_ms,
            output_tokens: 0,
        }),
        ActivityEvent::RequestRouted {
            request_id,
            account,
            ..
        } => {
            if let Some(r) = s.in_flight.iter_mut().find(|r| r.request_id == request_id) {
                r.account = account;
            }
        }
        ActivityEvent::RequestProgress {
            request_id,
            output_tokens,
            ..
        } => {
            if let Some(r) = s.in_flight.iter_mut().find(|r| r.request_id == request_id) {
                r.output_tokens = r.output_tokens.max(output_tokens);
            }
        }
        ActivityEvent::RequestFinished {
            ref request_id,
            ref key_id,
            finish,
            cost_usd,
            latency_ms,
            at_ms,
            ..
        } => {
            s.in_flight.retain(|r| &r.request_id != request_id);
            s.finished.push(e.clone());
            if s.finished.len() > 50 {
                s.finished.remove(0);
            }
            s.today.requests += 1;
            s.today.spend_usd = s.today.spend_usd.saturating_add(cost_usd);
            if finish == Finish::Complete {
                s.upstream.last_latency_ms = Some(latency_ms);
            }
            let k = s.keys.iter_mut().find(|k| &k.id == key_id).unwrap();
            k.spent_usd = k.spent_usd.saturating_add(cost_usd);
            k.remaining_usd = remaining(k);
            k.requests += 1;
            k.last_used_at = Some(rfc3339(at_ms));
        }
        _ => {}
    }
}

/// Rate-limit hits and refusals.
fn apply_limit(s: &mut Snapshot, e: &ActivityEvent) {
    match e.clone() {
        ActivityEvent::RateLimited {
            key_id,
            key_prefix,
            limit,
            at_ms,
        } => match s.rate_limited.iter_mut().find(|r| r.key_id == key_id) {
            Some(r) => r.hits_ms.push(at_ms),
            None => s.rate_limited.push(RateLimitHits {
                key_id,
                key_prefix,
                limit,
                hits_ms: vec![at_ms],
                pushed_out_ms: None,
            }),
        },
        ActivityEvent::Refused { status, .. } => {
            if matches!(status, 402 | 403) {
                s.refusals.push(e.clone());
            }
        }
        _ => {}
    }
}

/// Keys: minted, exhausted, revoked, topped up.
fn apply_key(s: &mut Snapshot, e: &ActivityEvent) {
    match e.clone() {
        ActivityEvent::KeyCreated { key } => s.keys.push(key),
        ActivityEvent::KeyExhausted { key_id, .. } => {
            s.keys.iter_mut().find(|k| k.id == key_id).unwrap().status = KeyStatus::Exhausted;
        }
        ActivityEvent::KeyRevoked { key_id, .. } => {
            let k = s.keys.iter_mut().find(|k| k.id == key_id).unwrap();
            k.status = KeyStatus::Revoked;
            k.remaining_usd = remaining(k);
        }
        ActivityEvent::KeyToppedUp {
            key_id, budget_usd, ..
        } => {
            let k = s.keys.iter_mut().find(|k| k.id == key_id).unwrap();
            k.budget_usd = budget_usd;
            k.remaining_usd = remaining(k);
            if k.status == KeyStatus::Exhausted {
                k.status = KeyStatus::Active;
            }
        }
        _ => {}
    }
}

/// Orders: created, paid (today's revenue), refunded.
fn apply_order(s: &mut Snapshot, e: &ActivityEvent) {
    match e.clone() {
        ActivityEvent::OrderCreated {
            order_id,
            plan,
            amount_usd,
            email,
            at_ms,
            ..
        } => s.orders.insert(
            0,
            OrderView {
                order_id,
                status: OrderStatus::Created,
                plan,
                amount_usd,
                email,
                key_id: None,
                paypal_order_id: None,
                paypal_app: None,
                paypal_capture_id: None,
                created_at: rfc3339(at_ms),
                paid_at: None,
                kind: Default::default(),
                topped_up_key_id: None,
                refunded_usd: Usd::ZERO,
            },
        ),
        ActivityEvent::OrderPaid {
            order_id,
            amount_usd,
            key_id,
            at_ms,
            ..
        } => {
            let o = s
                .orders
                .iter_mut()
                .find(|o| o.order_id == order_id)
                .unwrap();
            o.status = OrderStatus::Paid;
            o.key_id = Some(key_id);
            o.paid_at = Some(rfc3339(at_ms));
            s.today.revenue_usd = s.today.revenue_usd.saturating_add(amount_usd);
        }
        ActivityEvent::OrderRefunded { order_id, .. } => {
            let o = s
                .orders
                .iter_mut()
                .find(|o| o.order_id == order_id)
                .unwrap();
            o.status = OrderStatus::Refunded;
            o.refunded_usd = o.amount_usd;
        }
        _ => {}
    }
}

/// An order as both sides can know it (PayPal's ids only the database has).
fn order_facts(o: &OrderView) -> (String, OrderStatus, String, Usd, String, Option<String>) {
    (
        o.order_id.clone(),
        o.status,
        o.plan.clone(),
        o.amount_usd,
        o.email.clone(),
        o.key_id.clone(),
    )
}

/// Buy a plan the way the storefront's page does; returns (order id, key id).
async fn buy(app: &TestApp, plan: &str, email: &str) -> (String, String) {
    let resp = app
        .http
        .get(format!("{}/pricing", app.base))
        .send()
        .await
        .unwrap();
    let mut cookies: Vec<String> = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let html = resp.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|m| m.split('"').next())
        .expect("csrf meta")
        .to_string();
    let post = |path: String, body: Value, cookies: &[String]| {
        app.http
            .post(format!("{}{path}", app.base))
            .header(COOKIE, cookies.join("; "))
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
    };
    let resp = post(
        "/api/orders".into(),
        json!({"plan": plan, "email": email}),
        &cookies,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    for v in resp.headers().get_all(SET_COOKIE) {
        cookies.push(v.to_str().unwrap().split(';').next().unwrap().to_string());
    }
    let v: Value = resp.json().await.unwrap();
    let order_id = v["order_id"].as_str().unwrap().to_string();
    assert!(app.pp().approve(v["paypal_order_id"].as_str().unwrap()));
    let resp = post(
        format!("/api/orders/{order_id}/capture"),
        json!({}),
        &cookies,
    )
    .await
    .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "paid", "{v}");
    let key = v["api_key"].as_str().unwrap();
    (order_id, app.key_state(key).id.clone())
}

/// What the traffic left to check: its keys, the slow stream and the purchase.
struct Traffic {
    streamer_id: String,
    limited_id: String,
    broke_id: String,
    /// The slow stream's request id and ledger row.
    rid: String,
    row: UsageRow,
    order_id: String,
    bought_key: String,
}

/// A slow stream while a key goes over its RPM, a 402, a 403 and a purchase happen; then a
/// revocation, the last thing that happens.
async fn make_traffic(app: &TestApp, streamer: &str) -> Traffic {
    let limited = app.create_key("starter", None).await;
    let limited_id = app.key_state(&limited).id.clone();
    let broke = app.create_key("trial", Some("0.000000001")).await;
    let broke_id = app.key_state(&broke).id.clone();

    // A slow stream, while the rest happens.
    let slow = app.chat(
        streamer,
        &json!({"model": FLASH, "stream": true,
                "messages": [{"role": "user", "content": "hi [[sim reply=50 delay_ms=20]]"}]}),
    );
    let slow = tokio::spawn(async move {
        let resp = slow.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let rid = request_id(&resp);
        (rid, resp.text().await.unwrap())
    });
    // Over the starter plan's 2 RPM.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = app
            .chat(&limited, &body(FLASH, "hi [[sim reply=2 prompt=5]]"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        let _ = resp.bytes().await;
        if statuses.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // 402: a key that cannot pay for one token; 403: a model outside the plan.
    let resp = app.chat(&broke, &body(FLASH, "hi")).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let resp = app
        .chat(streamer, &body("deepseek-v4-pro", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A purchase.
    let (order_id, bought_key) = buy(app, "trial", "buyer@example.com").await;

    let (rid, text) = slow.await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let row = app.wait_ledger_row(&rid).await;
    // And a revocation, the last thing that happens.
    match app
        .admin(Request::KeysRevoke {
            key: limited_id.clone(),
        })
        .await
    {
        Response::Key { key } => assert_eq!(key.status, KeyStatus::Revoked),
        other => panic!("{other:?}"),
    }
    Traffic {
        streamer_id: app.key_state(streamer).id.clone(),
        limited_id,
        broke_id,
        rid,
        row,
        order_id,
        bought_key,
    }
}

#[tokio::test]
async fn a_snapshot_plus_the_events_after_it_reproduce_the_daemons_state() {
    let app = TestApp::spawn_shop_with(|c| {
        c.plans.get_mut("starter").unwrap().rpm = 2;
    })
    .await;
    let streamer = app.create_key("trial", None).await;
    let (mut sub, mut model) = Sub::connect(&app).await;
    assert_eq!(model.keys.len(), 1);
    assert!(model.in_flight.is_empty() && model.finished.is_empty());

    let t = make_traffic(&app, &streamer).await;
    let rid = &t.rid;
    let mut progress = Vec::new();
    let mut stream_span = (0, 0);
    for _ in 0..1000 {
        let e = sub.event().await;
        apply(&mut model, &e);
        match &e {
            ActivityEvent::RequestStarted {
                request_id, at_ms, ..
            } if request_id == rid => stream_span.0 = *at_ms,
            ActivityEvent::RequestFinished {
                request_id, at_ms, ..
            } if request_id == rid => stream_span.1 = *at_ms,
            ActivityEvent::RequestProgress {
                request_id,
                output_tokens,
                ..
            } if request_id == rid => progress.push(*output_tokens),
            _ => {}
        }
        if matches!(&e, ActivityEvent::KeyRevoked { key_id, .. } if *key_id == t.limited_id) {
            break;
        }
    }

    // Progress came, growing, and coalesced: at most 5 a second.
    assert!(!progress.is_empty(), "progress events for the slow stream");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let secs = (stream_span.1 - stream_span.0) as f64 / 1000.0;
    assert!(
        progress.len() as f64 <= secs * 5.0 + 1.0,
        "{} progress events in {secs} s",
        progress.len()
    );

    let now = snapshot(&app).await;
    check_requests(&model, &now, &t);
    check_limits(&model, &now, &t);
    check_keys_and_orders(&model, &now, &t);
    check_totals(&app, &model, &now);
}

/// Nothing in flight; the finished list, with the slow stream as the ledger has it.
fn check_requests(model: &Snapshot, now: &Snapshot, t: &Traffic) {
    assert!(now.in_flight.is_empty(), "{:?}", now.in_flight);
    assert!(model.in_flight.is_empty(), "{:?}", model.in_flight);
    assert_eq!(model.finished, now.finished);
    let slow_done = now
        .finished
        .iter()
        .find_map(|e| match e {
            ActivityEvent::RequestFinished {
                request_id,
                cost_usd,
                completion_tokens,
                finish,
                ..
            } if *request_id == t.rid => Some((*cost_usd, *completion_tokens, *finish)),
            _ => None,
        })
        .expect("the slow stream is among the finished");
    assert_eq!(slow_done, (t.row.cost, 50, Finish::Complete));
    assert!(t.row.cost > Usd::ZERO);
}

/// The limited key's hits; the 402 and the 403.
fn check_limits(model: &Snapshot, now: &Snapshot, t: &Traffic) {
    assert_eq!(model.rate_limited, now.rate_limited);
    assert_eq!(now.rate_limited.len(), 1, "{:?}", now.rate_limited);
    assert_eq!(now.rate_limited[0].key_id, t.limited_id);
    assert_eq!(now.rate_limited[0].limit, 2);
    assert!(!now.rate_limited[0].hits_ms.is_empty());

    assert_eq!(model.refusals, now.refusals);
    let refusals: Vec<(Option<String>, u16)> = now
        .refusals
        .iter()
        .filter_map(|e| match e {
            ActivityEvent::Refused { key_id, status, .. } => Some((key_id.clone(), *status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        [
            (Some(t.broke_id.clone()), 402),
            (Some(t.streamer_id.clone()), 403)
        ],
        "{:?}",
        now.refusals
    );
}

/// Key statuses and balances; the orders, the purchase first.
fn check_keys_and_orders(model: &Snapshot, now: &Snapshot, t: &Traffic) {
    assert_eq!(model.keys, now.keys, "key statuses and balances");
    let revoked = now.keys.iter().find(|k| k.id == t.limited_id).unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert!(now.keys.iter().any(|k| k.id == t.bought_key));

    let facts = |s: &Snapshot| s.orders.iter().map(order_facts).collect::<Vec<_>>();
    assert_eq!(facts(model), facts(now));
    assert_eq!(
        model.orders.iter().map(|o| &o.paid_at).collect::<Vec<_>>(),
        now.orders.iter().map(|o| &o.paid_at).collect::<Vec<_>>()
    );
    assert_eq!(now.orders[0].order_id, t.order_id);
    assert_eq!(now.orders[0].status, OrderStatus::Paid);
    assert_eq!(now.orders[0].key_id.as_deref(), Some(t.bought_key.as_str()));
}

/// Today's totals match the ledger's and the purchase; upstream's health.
fn check_totals(app: &TestApp, model: &Snapshot, now: &Snapshot) {
    assert_eq!(model.today, now.today);
    let (rows, spend): (i64, i64) = app
        .db()
        .query_row(
            "SELECT count(*), coalesce(sum(cost_nanos), 0) FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(now.today.requests, rows as u64);
    assert_eq!(now.today.spend_usd, Usd::from_nanos(spend));
    assert_eq!(
        now.today.revenue_usd,
        Usd::from_dollars(1),
        "the trial plan's price"
    );
    assert_eq!(model.upstream, now.upstream);
    assert!(now.upstream.last_latency_ms.is_some());
}

/// What a key has left: nothing once revoked.
fn remaining(k: &modelrelay::activity::protocol::KeyView) -> Usd {
    if k.status == KeyStatus::Revoked {
        Usd::ZERO
    } else {
        k.budget_usd.saturating_sub(k.spent_usd)
    }
}
