//! The upstream pool in the console: read on connect, every two seconds and at once on
//! `account_changed` (one read at a time); requests per minute from the deltas of each
//! account's `requests` counter; the Upstream view's enable/disable flow through the socket.

use super::*;

/// The fixture's pool with `f` applied.
fn pool_with(f: impl FnOnce(&mut UpstreamView)) -> UpstreamView {
    let mut v = upstream_view();
    f(&mut v);
    v
}

fn account_changed(name: &str, state: &str, at_ms: i64) -> Event {
    ev(ActivityEvent::AccountChanged {
        account: name.into(),
        state: state.into(),
        reason: "upstream answered 402".into(),
        at_ms,
    })
}

const READ: Action = Action::Send(Command::UpstreamStatus);

/// The reads of the pool among `actions`.
fn reads(actions: &[Action]) -> usize {
    actions.iter().filter(|a| **a == READ).count()
}

#[test]
fn the_pool_is_read_every_two_seconds_and_at_once_when_an_account_changes() {
    let mut app = app();
    assert!(
        !app.upstream_poll.waiting,
        "the fixture's read was answered"
    );
    assert_eq!(reads(&app.handle(Event::Tick(NOW + 1_000))), 0);
    assert_eq!(app.handle(Event::Tick(NOW + 2_000)), vec![READ]);
    // One read at a time: a slow daemon never gets a queue of them.
    assert_eq!(reads(&app.handle(Event::Tick(NOW + 4_500))), 0);
    assert!(app.handle(pool_read(upstream_view())).is_empty());
    assert_eq!(reads(&app.handle(Event::Tick(NOW + 5_000))), 0, "just read");

    // An account changed state: read now, not in two seconds.
    assert_eq!(
        app.handle(account_changed("primary", "disabled", NOW + 5_100)),
        vec![READ]
    );
    // Another change while that read is under way: one more read once it is answered.
    assert!(
        app.handle(account_changed("secondary", "cooling", NOW + 5_200))
            .is_empty()
    );
    assert_eq!(app.handle(pool_read(upstream_view())), vec![READ]);
    assert!(app.handle(pool_read(upstream_view())).is_empty());

    // Disconnected: no reads (the last answer stays on screen); reconnected: one at once.
    app.handle(Event::Disconnected("gone".into()));
    assert_eq!(reads(&app.handle(Event::Tick(NOW + 60_000))), 0);
    assert!(
        app.handle(account_changed("primary", "healthy", NOW + 60_100))
            .is_empty()
    );
    assert!(app.model.upstream_pool.view.is_some());
    assert_eq!(reads(&app.handle(Event::Connected)), 1);
}

#[test]
fn a_failed_read_is_kept_quietly_and_cleared_by_the_next_answer() {
    let mut app = app();
    app.handle(Event::Tick(NOW + 2_000));
    app.handle(Event::Reply(
        Command::UpstreamStatus,
        Ok(Response::Error {
            message: "unknown command".into(),
        }),
    ));
    assert_eq!(app.modal, None, "a look-up never opens a dialog");
    let pool = &app.model.upstream_pool;
    assert_eq!(pool.error.as_deref(), Some("unknown command"));
    assert_eq!(pool.view, Some(upstream_view()), "the last answer stays");
    app.handle(Event::Tick(NOW + 4_000));
    app.handle(Event::Reply(Command::UpstreamStatus, Err("gone".into())));
    assert_eq!(app.model.upstream_pool.error.as_deref(), Some("gone"));
    app.handle(Event::Tick(NOW + 6_000));
    app.handle(pool_read(upstream_view()));
    assert_eq!(app.model.upstream_pool.error, None);
    assert_eq!(app.model.upstream_pool.read_ms, NOW + 6_000);
}

#[test]
fn requests_per_minute_come_from_the_deltas_of_each_accounts_counter() {
    let mut app = app();
    let rpm = |app: &App, name: &str| app.model.upstream_pool.requests_per_min(name);
    assert_eq!(rpm(&app, "primary"), None, "one reading is no rate");
    let read = |app: &mut App, at: i64, primary: u64, secondary: u64| {
        app.handle(Event::Tick(at));
        app.handle(pool_read(pool_with(|v| {
            v.accounts[0].requests = primary;
            v.accounts[1].requests = secondary;
        })));
    };
    // 4 more in 2 s: 120 a minute; none on the other.
    read(&mut app, NOW + 2_000, 124, 40);
    assert_eq!(rpm(&app, "primary"), Some(120.0));
    assert_eq!(rpm(&app, "secondary"), Some(0.0));
    // Over the readings of the last minute, not the last delta alone.
    read(&mut app, NOW + 4_000, 124, 43);
    assert_eq!(rpm(&app, "primary"), Some(60.0));
    assert_eq!(rpm(&app, "secondary"), Some(45.0));
    // A minute later the early burst has left the window.
    read(&mut app, NOW + 64_000, 124, 43);
    assert_eq!(rpm(&app, "primary"), Some(0.0));
    read(&mut app, NOW + 94_000, 154, 43);
    assert_eq!(rpm(&app, "primary"), Some(60.0), "30 in the last 30 s");
    // A counter that went down is a restarted daemon: no rate until two new readings.
    read(&mut app, NOW + 96_000, 3, 43);
    assert_eq!(rpm(&app, "primary"), None);
    read(&mut app, NOW + 98_000, 5, 43);
    assert_eq!(rpm(&app, "primary"), Some(60.0));
    // After a gap in the reads (a reconnection): the rate across the gap, 17 in 102 s.
    read(&mut app, NOW + 200_000, 22, 43);
    assert_eq!(rpm(&app, "primary"), Some(10.0));
    assert_eq!(rpm(&app, "nobody"), None);
}

#[test]
fn a_fresh_snapshot_keeps_the_pool() {
    let mut app = app();
    app.handle(Event::Socket(Response::Snapshot {
        snapshot: Box::new(snapshot()),
    }));
    assert_eq!(app.model.upstream_pool.view, Some(upstream_view()));
}

#[test]
fn disable_asks_first_then_sends_upstream_disable_and_shows_the_outcome() {
    let mut app = app();
    press(&mut app, KeyCode::Char('5'));
    assert_eq!(app.view, View::Upstream);
    assert_eq!(
        app.selected_account().map(|a| a.name.as_str()),
        Some("primary")
    );
    // Nothing to enable on a healthy account: said, not asked.
    assert_eq!(press(&mut app, KeyCode::Char('e')), None);
    assert_eq!(app.modal, None);
    assert_eq!(
        app.status_message(),
        Some("upstream account primary is in service already")
    );
    press(&mut app, KeyCode::Char('d'));
    let confirm = Modal::ConfirmAccount {
        name: "primary".into(),
        enable: false,
    };
    assert_eq!(app.modal, Some(confirm));
    assert_eq!(press(&mut app, KeyCode::Char('x')), None, "other keys wait");
    assert_eq!(press(&mut app, KeyCode::Esc), None);
    assert_eq!(app.modal, None, "Esc cancels");
    press(&mut app, KeyCode::Char('d'));
    let cmd = Command::SetAccount {
        name: "primary".into(),
        enable: false,
    };
    assert_eq!(yes(&mut app), Some(Action::Send(cmd.clone())));
    assert!(matches!(app.modal, Some(Modal::Working(_))));
    assert_eq!(
        cmd.request(),
        crate::activity::protocol::Request::UpstreamDisable {
            name: "primary".into()
        }
    );
    let disabled = pool_with(|v| {
        v.accounts[0].state = "disabled".into();
        v.accounts[0].disabled_by_operator = true;
        v.warnings = vec!["account primary is disabled by the operator".into()];
    });
    app.handle(Event::Tick(NOW + 1_000));
    app.handle(Event::Reply(
        cmd,
        Ok(Response::Upstream {
            upstream: Box::new(disabled.clone()),
        }),
    ));
    assert_eq!(app.modal, None);
    assert_eq!(
        app.status_message(),
        Some("upstream account primary disabled")
    );
    assert_eq!(app.model.upstream_pool.view, Some(disabled));
    assert_eq!(app.model.upstream_pool.read_ms, NOW + 1_000);
    press(&mut app, KeyCode::Char('d'));
    assert_eq!(app.modal, None);
    assert_eq!(
        app.status_message(),
        Some("upstream account primary is disabled already")
    );
}

#[test]
fn enable_sends_upstream_enable_and_a_refusal_is_shown() {
    let mut app = app();
    press(&mut app, KeyCode::Char('5'));
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(
        app.selected_account().map(|a| a.name.as_str()),
        Some("secondary")
    );
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(app.row[4], 1, "the selection stops at the last account");
    // A cooling account may be put back at once.
    press(&mut app, KeyCode::Char('e'));
    let cmd = Command::SetAccount {
        name: "secondary".into(),
        enable: true,
    };
    assert_eq!(yes(&mut app), Some(Action::Send(cmd.clone())));
    assert_eq!(
        cmd.request(),
        crate::activity::protocol::Request::UpstreamEnable {
            name: "secondary".into()
        }
    );
    app.handle(Event::Reply(
        cmd,
        Ok(Response::Error {
            message: "no upstream account \"secondary\"".into(),
        }),
    ));
    assert_eq!(
        app.modal,
        Some(Modal::Failed("no upstream account \"secondary\"".into()))
    );
    // Keys other views use do nothing here.
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('r'));
    assert_eq!(app.modal, None);
}

#[test]
fn no_pool_read_yet_means_nothing_to_select() {
    let mut app = App::new("/tmp/s.sock", vec![], true);
    app.view = View::Upstream;
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('d'));
    assert_eq!(app.modal, None);
    assert!(app.selected_account().is_none());
}
