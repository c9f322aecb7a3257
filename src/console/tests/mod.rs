//! Tests of the console's state: fixtures here; `state` checks snapshot + events (idempotent),
//! requests/s and the no-snapshot fallback; `actions` checks navigation and the action flows
//! (revoke, top up, comp key); `upstream` the pool's reads, requests per minute and the
//! enable/disable flow.

mod actions;
mod state;
mod upstream;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, KeySort, Modal, View};
use super::event::{Action, Command, Event};
use crate::activity::protocol::{
    AccountView, ActivityEvent, BalanceView, CurrencyBalance, InFlightView, KeyView, ModelLoadView,
    OrderView, RateLimitHits, Response, Snapshot, Totals, UpstreamHealth, UpstreamView,
};
use crate::kinds::OrderKind;
use crate::money::Usd;
use crate::status::{Finish, KeyStatus, Measured, OrderStatus};

/// 2026-11-25T12:00:00Z.
pub(crate) const NOW: i64 = 1_795_608_000_000;

pub(crate) fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn key(id: &str, prefix: &str, plan: &str, budget: &str, spent: &str) -> KeyView {
    KeyView {
        id: id.into(),
        prefix: prefix.into(),
        plan: plan.into(),
        status: KeyStatus::Active,
        budget_usd: usd(budget),
        spent_usd: usd(spent),
        remaining_usd: usd(budget).saturating_sub(usd(spent)),
        held_usd: Usd::ZERO,
        requests: 3,
        email: Some(format!("{id}@example.com")),
        note: None,
        order_id: None,
        created_at: rfc(NOW - 86_400_000),
        last_used_at: Some(rfc(NOW - 180_000)),
        budget_history: None,
    }
}

pub(crate) fn finished(request_id: &str, key_id: &str, cost: &str, at_ms: i64) -> ActivityEvent {
    ActivityEvent::RequestFinished {
        request_id: request_id.into(),
        key_id: key_id.into(),
        model: "deepseek-v4-flash".into(),
        status: 200,
        finish: Finish::Complete,
        cost_usd: usd(cost),
        prompt_tokens: 12,
        completion_tokens: 300,
        measured: Measured::Provider,
        latency_ms: 1_234,
        ttft_ms: Some(87),
        api: crate::status::Api::OpenAi,
        account: String::new(),
        at_ms,
    }
}

pub(crate) fn started(request_id: &str, at_ms: i64) -> ActivityEvent {
    ActivityEvent::RequestStarted {
        request_id: request_id.into(),
        key_id: "key_pro".into(),
        key_prefix: "sk-gateway-PrOo…".into(),
        plan: "pro".into(),
        model: "deepseek-v4-flash".into(),
        stream: true,
        client_ip: Some("198.51.100.4".into()),
        api: crate::status::Api::OpenAi,
        at_ms,
    }
}

/// The stream in flight on the Pro key, started 4 s before [`NOW`].
fn snapshot_in_flight() -> InFlightView {
    InFlightView {
        request_id: "req_stream".into(),
        key_id: "key_pro".into(),
        key_prefix: "sk-gateway-PrOo…".into(),
        plan: "pro".into(),
        model: "deepseek-v4-flash".into(),
        stream: true,
        client_ip: Some("203.0.113.7".into()),
        api: crate::status::Api::OpenAi,
        account: String::new(),
        started_ms: NOW - 4_000,
        output_tokens: 120,
    }
}

/// The Pro key, a Trial key created an hour ago and a revoked Starter key ($1 of it unspent).
fn snapshot_keys() -> Vec<KeyView> {
    let mut revoked = key("key_old", "sk-gateway-OlDd…", "starter", "5", "4");
    revoked.status = KeyStatus::Revoked;
    revoked.requests = 40;
    let mut trial = key("key_trial", "sk-gateway-TrIa…", "trial", "1", "0.01");
    trial.created_at = rfc(NOW - 3_600_000);
    vec![
        key("key_pro", "sk-gateway-PrOo…", "pro", "50", "1.24"),
        trial,
        revoked,
    ]
}

/// A paid Pro order, an open Starter order and a refunded one (the revoked key's).
fn snapshot_orders() -> Vec<OrderView> {
    vec![
        OrderView {
            order_id: "ord_PAIDxxxxxxxxxxxxxxxx".into(),
            status: OrderStatus::Paid,
            plan: "pro".into(),
            amount_usd: usd("20"),
            email: "alice@example.com".into(),
            key_id: Some("key_pro".into()),
            paypal_order_id: None,
            paypal_app: None,
            paypal_capture_id: None,
            created_at: "2026-11-25T11:02:03Z".into(),
            paid_at: Some("2026-11-25T11:02:09Z".into()),
            kind: OrderKind::Purchase,
            topped_up_key_id: None,
            refunded_usd: usd("0"),
        },
        OrderView {
            order_id: "ord_OPENxxxxxxxxxxxxxxxx".into(),
            status: OrderStatus::Created,
            plan: "starter".into(),
            amount_usd: usd("5"),
            email: "bob@example.com".into(),
            key_id: None,
            paypal_order_id: None,
            paypal_app: None,
            paypal_capture_id: None,
            created_at: "2026-11-25T11:30:00Z".into(),
            paid_at: None,
            kind: OrderKind::Purchase,
            topped_up_key_id: None,
            refunded_usd: usd("0"),
        },
        OrderView {
            order_id: "ord_BACKxxxxxxxxxxxxxxxx".into(),
            status: OrderStatus::Refunded,
            plan: "starter".into(),
            amount_usd: usd("5"),
            email: "carol@example.com".into(),
            key_id: Some("key_old".into()),
            paypal_order_id: None,
            paypal_app: None,
            paypal_capture_id: None,
            created_at: "2026-11-24T09:00:00Z".into(),
            paid_at: Some("2026-11-24T09:00:05Z".into()),
            kind: OrderKind::Purchase,
            topped_up_key_id: None,
            refunded_usd: usd("5"),
        },
    ]
}

/// The Trial key out of budget, the Pro key asking for a model outside its plan.
fn snapshot_refusals() -> Vec<ActivityEvent> {
    vec![
        ActivityEvent::Refused {
            key_id: Some("key_trial".into()),
            status: 402,
            code: "insufficient_budget".into(),
            at_ms: NOW - 120_000,
        },
        ActivityEvent::Refused {
            key_id: Some("key_pro".into()),
            status: 403,
            code: "model_not_allowed".into(),
            at_ms: NOW - 60_000,
        },
    ]
}

/// A daemon with three keys, a stream in flight, two finished requests, three orders,
/// rate-limit hits and refusals.
pub(crate) fn snapshot() -> Snapshot {
    Snapshot {
        version: "0.1.0".into(),
        uptime_secs: 7_620,
        at_ms: NOW,
        in_flight: vec![snapshot_in_flight()],
        finished: vec![
            finished("req_a", "key_pro", "0.000182", NOW - 30_000),
            finished("req_b", "key_trial", "0.01", NOW - 10_000),
        ],
        keys: snapshot_keys(),
        orders: snapshot_orders(),
        rate_limited: vec![RateLimitHits {
            key_id: "key_trial".into(),
            key_prefix: "sk-gateway-TrIa…".into(),
            limit: 30,
            hits_ms: vec![NOW - 2_400_000, NOW - 60_000, NOW - 59_000, NOW - 1_000],
            pushed_out_ms: None,
        }],
        refusals: snapshot_refusals(),
        refusals_pushed_out_ms: None,
        today: Totals {
            requests: 2,
            spend_usd: usd("1.25"),
            revenue_usd: usd("20"),
        },
        upstream: UpstreamHealth {
            last_error: Some("upstream_error 502".into()),
            last_error_ms: Some(NOW - 300_000),
            last_latency_ms: Some(1_234),
        },
    }
}

/// A model's load against its cap.
fn load(model: &str, in_flight: u32, cap: u32) -> ModelLoadView {
    ModelLoadView {
        model: model.into(),
        in_flight,
        cap,
    }
}

/// A balance in one currency (all of it paid in).
fn currency(code: &str, total: &str) -> CurrencyBalance {
    CurrencyBalance {
        currency: code.into(),
        total: usd(total),
        granted: Usd::ZERO,
        topped_up: usd(total),
    }
}

/// `primary`, healthy and busy, its balance read 30 s ago; `secondary`, cooling for 12 s more
/// after a 429, holding USD and CNY. $135 covers the keys' $49.75 (271%); no warnings.
pub(crate) fn upstream_view() -> UpstreamView {
    let primary = AccountView {
        name: "primary".into(),
        state: "healthy".into(),
        cooling_until_ms: None,
        backoff_ms: 0,
        weight: 1,
        models: vec![
            load("deepseek-v4-flash", 3, 2500),
            load("deepseek-v4-pro", 1, 500),
        ],
        balance: Some(BalanceView {
            is_available: true,
            at_ms: NOW - 30_000,
            currencies: vec![currency("USD", "110")],
        }),
        disabled_by_operator: false,
        last_error: Some("upstream_error 502".into()),
        last_error_ms: Some(NOW - 300_000),
        requests: 120,
        errors: 2,
    };
    let secondary = AccountView {
        name: "secondary".into(),
        state: "cooling".into(),
        cooling_until_ms: Some(NOW + 12_000),
        models: vec![
            load("deepseek-v4-flash", 0, 2500),
            load("deepseek-v4-pro", 0, 500),
        ],
        balance: Some(BalanceView {
            is_available: true,
            at_ms: NOW - 45_000,
            currencies: vec![currency("USD", "25"), currency("CNY", "50")],
        }),
        last_error: Some("upstream answered 429".into()),
        last_error_ms: Some(NOW - 3_000),
        requests: 40,
        errors: 5,
        ..primary.clone()
    };
    UpstreamView {
        accounts: vec![primary, secondary],
        usd_balance: usd("135"),
        liability_usd: usd("49.75"),
        coverage_percent: Some(271),
        low_balance_usd: usd("10"),
        failovers: 3,
        warnings: vec![],
    }
}

/// The answer to a read of the pool.
pub(crate) fn pool_read(view: UpstreamView) -> Event {
    Event::Reply(
        Command::UpstreamStatus,
        Ok(Response::Upstream {
            upstream: Box::new(view),
        }),
    )
}

/// An app that received `snapshot()` and `upstream_view()` at [`NOW`].
pub(crate) fn app() -> App {
    let mut app = App::new("/run/modelrelay/modelrelay.sock", vec![], true);
    app.handle(Event::Tick(NOW));
    app.handle(Event::Connected);
    app.handle(Event::Socket(Response::Subscribed));
    app.handle(Event::Socket(Response::Snapshot {
        snapshot: Box::new(snapshot()),
    }));
    app.handle(pool_read(upstream_view()));
    app
}

/// Draw one frame at 80×24, as the console does before it reads the next key.
pub(crate) fn drawn(app: &App) {
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    term.draw(|f| crate::console::ui::draw(f, app)).unwrap();
}

/// Answer the open confirmation `y` once it was drawn and read (before, `y` does nothing).
pub(crate) fn yes(app: &mut App) -> Option<Action> {
    drawn(app);
    read_the_confirmation(app);
    press(app, KeyCode::Char('y'))
}

/// As if the confirmation on screen had been there for [`crate::console::app::CONFIRM_READ`].
pub(crate) fn read_the_confirmation(app: &App) {
    let long_ago = std::time::Instant::now()
        .checked_sub(crate::console::app::CONFIRM_READ)
        .expect("the clock is past 250 ms");
    if app.confirm_seen.get().is_some() {
        app.confirm_seen.set(Some(long_ago));
    }
}

pub(crate) fn press(app: &mut App, code: KeyCode) -> Option<Action> {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub(crate) fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, KeyCode::Char(c));
    }
}

fn ev(e: ActivityEvent) -> Event {
    Event::Socket(Response::Event { event: e })
}
