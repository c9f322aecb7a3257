//! Keyboard navigation, the Keys filter and sort, and the action flows through the socket
//! commands (revoke, top up, comp key), including failures.

use super::*;

#[test]
fn navigation_help_and_quit() {
    let mut app = app();
    assert_eq!(app.view, View::Live);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Keys);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Upstream);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Limits);
    press(&mut app, KeyCode::Char('5'));
    assert_eq!(app.view, View::Upstream);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Live);
    press(&mut app, KeyCode::Char('6'));
    assert_eq!(app.view, View::Live, "no sixth view");
    press(&mut app, KeyCode::Char('3'));
    assert_eq!(app.view, View::Orders);
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(app.modal, Some(Modal::Help));
    assert_eq!(press(&mut app, KeyCode::Char('q')), None, "q closes help");
    assert_eq!(app.modal, None);
    assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Action::Quit));
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
}

#[test]
fn keys_filter_sort_and_selection() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    let ids =
        |app: &App| -> Vec<String> { app.visible_keys().iter().map(|k| k.id.clone()).collect() };
    assert_eq!(
        ids(&app),
        ["key_old", "key_pro", "key_trial"],
        "created order"
    );
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_old"));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_trial"));
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, KeySort::Remaining);
    assert_eq!(ids(&app), ["key_old", "key_trial", "key_pro"]);
    assert_eq!(
        app.selected().map(|k| k.id.as_str()),
        Some("key_trial"),
        "the selection follows the key, not the row"
    );
    press(&mut app, KeyCode::Char('/'));
    type_str(&mut app, "PRO");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
    assert_eq!(ids(&app), ["key_pro"]);
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_pro"));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.filter, "");
    assert_eq!(ids(&app).len(), 3);
    // A whole key pasted in finds its key (the console knows its shown beginning).
    press(&mut app, KeyCode::Char('/'));
    app.handle(Event::Paste(
        "sk-gateway-TrIaxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
    ));
    press(&mut app, KeyCode::Enter);
    assert_eq!(ids(&app), ["key_trial"]);
    // Also as copied out of a header.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('/'));
    app.handle(Event::Paste(
        "Bearer sk-gateway-PrOoxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
    ));
    press(&mut app, KeyCode::Enter);
    assert_eq!(ids(&app), ["key_pro"]);
}

/// Ctrl or Alt with a letter is not the letter (Ctrl-R opened the revoke confirmation, Ctrl-U
/// typed into the filter); Ctrl and Alt together (AltGr on some systems) types its character.
#[test]
fn ctrl_and_alt_letters_are_not_the_letters() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    for m in [KeyModifiers::CONTROL, KeyModifiers::ALT] {
        for c in ['r', 't', 'q', 'j'] {
            assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char(c), m)), None);
            assert_eq!(app.modal, None, "{m:?}-{c}");
        }
    }
    assert_eq!(app.view, View::Keys);
    press(&mut app, KeyCode::Char('/'));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    app.on_key(KeyEvent::new(
        KeyCode::Char('@'),
        KeyModifiers::CONTROL | KeyModifiers::ALT,
    ));
    type_str(&mut app, "pro");
    assert_eq!(app.filter, "@pro");
}

#[test]
fn revoke_asks_first_then_sends_the_socket_command() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(press(&mut app, KeyCode::Char('r')), None);
    let confirm = Modal::ConfirmRevoke {
        key_id: "key_pro".into(),
        prefix: "sk-gateway-PrOo…".into(),
    };
    assert_eq!(app.modal, Some(confirm));
    assert_eq!(press(&mut app, KeyCode::Char('x')), None, "other keys wait");
    assert!(app.modal.is_some());
    assert_eq!(press(&mut app, KeyCode::Char('n')), None);
    assert_eq!(app.modal, None, "n cancels");
    press(&mut app, KeyCode::Char('r'));
    let action = yes(&mut app);
    let cmd = Command::Revoke {
        key_id: "key_pro".into(),
        prefix: "sk-gateway-PrOo…".into(),
    };
    assert_eq!(action, Some(Action::Send(cmd.clone())));
    assert_eq!(
        app.modal,
        Some(Modal::Working("revoking sk-gateway-PrOo…".into())),
        "one ellipsis"
    );
    assert_eq!(
        cmd.request(),
        crate::activity::protocol::Request::KeysRevoke {
            key: "key_pro".into()
        }
    );
    let mut revoked = app.model.keys["key_pro"].clone();
    revoked.status = KeyStatus::Revoked;
    app.handle(Event::Reply(cmd, Ok(Response::Key { key: revoked })));
    assert_eq!(app.modal, None);
    assert_eq!(app.model.keys["key_pro"].status, KeyStatus::Revoked);
    assert_eq!(app.status_message(), Some("revoked sk-gateway-PrOo…"));
    press(&mut app, KeyCode::Char('r'));
    assert_eq!(app.modal, None, "a revoked key cannot be revoked again");
    assert_eq!(
        app.status_message(),
        Some("sk-gateway-PrOo… is revoked already"),
        "and says so"
    );
    for (c, says) in [('t', "credit cannot be added"), ('R', "cannot be replaced")] {
        press(&mut app, KeyCode::Char(c));
        assert_eq!(app.modal, None);
        assert!(app.status_message().unwrap().contains(says), "{c}");
    }
}

#[test]
fn top_up_takes_an_amount_then_confirmation() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::End);
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_trial"));
    press(&mut app, KeyCode::Char('t'));
    type_str(&mut app, "0.0.1");
    press(&mut app, KeyCode::Enter);
    match &app.modal {
        Some(Modal::TopUpAmount { error: Some(e), .. }) => assert!(e.contains("0.0.1"), "{e}"),
        other => panic!("{other:?}"),
    }
    for _ in 0..5 {
        press(&mut app, KeyCode::Backspace);
    }
    // A character that is not part of an amount is shown and refused, not dropped ("5,50"
    // became $550).
    for typed in ["5,50", "1e3", "x2.5"] {
        type_str(&mut app, typed);
        press(&mut app, KeyCode::Enter);
        match &app.modal {
            Some(Modal::TopUpAmount {
                input,
                error: Some(e),
                ..
            }) => {
                assert_eq!(input, typed);
                assert!(e.contains(typed), "{e}");
            }
            other => panic!("{typed}: {other:?}"),
        }
        for _ in 0..typed.len() {
            press(&mut app, KeyCode::Backspace);
        }
    }
    type_str(&mut app, "2.5");
    press(&mut app, KeyCode::Enter);
    let confirm = Modal::ConfirmTopUp {
        key_id: "key_trial".into(),
        prefix: "sk-gateway-TrIa…".into(),
        usd: usd("2.5"),
    };
    assert_eq!(app.modal, Some(confirm));
    let cmd = Command::TopUp {
        key_id: "key_trial".into(),
        prefix: "sk-gateway-TrIa…".into(),
        usd: usd("2.5"),
    };
    assert_eq!(yes(&mut app), Some(Action::Send(cmd.clone())));
    app.handle(Event::Reply(
        cmd.clone(),
        Ok(Response::Error {
            message: "key key_trial is revoked".into(),
        }),
    ));
    assert_eq!(
        app.modal,
        Some(Modal::Failed("key key_trial is revoked".into()))
    );
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
    let mut topped = app.model.keys["key_trial"].clone();
    topped.budget_usd = usd("3.5");
    topped.remaining_usd = usd("3.49");
    app.handle(Event::Reply(cmd, Ok(Response::Key { key: topped })));
    assert_eq!(app.model.keys["key_trial"].remaining_usd, usd("3.49"));
    assert_eq!(
        app.status_message(),
        Some("added $2.50 to sk-gateway-TrIa…; $3.49 left")
    );
    // A tiny top-up is said exactly (it read "added $0.00 …; $0.00 left"), and a key it
    // leaves exhausted is said to be.
    let tiny = Command::TopUp {
        key_id: "key_trial".into(),
        prefix: "sk-gateway-TrIa…".into(),
        usd: usd("0.000001"),
    };
    let mut still = app.model.keys["key_trial"].clone();
    still.remaining_usd = usd("0.00001244");
    still.status = KeyStatus::Exhausted;
    app.handle(Event::Reply(tiny, Ok(Response::Key { key: still })));
    assert_eq!(
        app.status_message(),
        Some("added $0.000001 to sk-gateway-TrIa…; $0.00001244 left (still exhausted)")
    );
}

#[test]
fn a_comp_key_is_minted_on_a_chosen_plan_and_shown_once() {
    let mut app = App::new("/tmp/s.sock", vec!["starter".into(), "trial".into()], true);
    app.handle(Event::Tick(NOW));
    app.view = View::Keys;
    press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.modal, Some(Modal::ChoosePlan { selected: 0 }));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.modal,
        Some(Modal::ConfirmCreate {
            plan: "trial".into()
        })
    );
    let cmd = Command::Create {
        plan: "trial".into(),
    };
    assert_eq!(yes(&mut app), Some(Action::Send(cmd.clone())));
    let api_key = "sk-gateway-NeWwAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab";
    app.handle(Event::Reply(
        cmd,
        Ok(Response::Created {
            key: key("key_comp", "sk-gateway-NeWw…", "trial", "1", "0"),
            api_key: api_key.into(),
        }),
    ));
    assert_eq!(
        app.modal,
        Some(Modal::NewKey {
            api_key: api_key.into(),
            plan: "trial".into()
        })
    );
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_comp"));
    drawn(&app);
    press(&mut app, KeyCode::Char('q'));
    assert!(app.modal.is_some(), "only Enter or Esc closes the key");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
    assert!(
        !format!("{app:?}").contains(api_key),
        "the full key is forgotten once closed"
    );
}

#[test]
fn a_failed_command_connection_is_reported() {
    let mut app = app();
    app.view = View::Keys;
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('r'));
    let Some(Action::Send(cmd)) = yes(&mut app) else {
        panic!("no command");
    };
    app.handle(Event::Reply(
        cmd,
        Err("no modelrelay daemon is answering".into()),
    ));
    assert_eq!(
        app.modal,
        Some(Modal::Failed("no modelrelay daemon is answering".into()))
    );
    // Look-ups fail quietly: the subscription's state says what matters.
    app.handle(Event::Reply(Command::KeysList, Err("gone".into())));
    assert_eq!(
        app.modal,
        Some(Modal::Failed("no modelrelay daemon is answering".into()))
    );
}

#[test]
fn amounts() {
    assert_eq!(crate::console::parse_amount("$5"), Ok(usd("5")));
    assert_eq!(crate::console::parse_amount(" 2.50 "), Ok(usd("2.5")));
    assert!(crate::console::parse_amount("0").is_err());
    assert_eq!(crate::console::parse_amount("100000"), Ok(usd("100000")));
    assert_eq!(
        crate::console::parse_amount("100000.01"),
        Err("the top-up must be at most $100000.00".into())
    );
    assert!(crate::console::parse_amount("").is_err());
}

#[test]
fn rotating_a_key_shows_its_new_text_once() {
    let mut app = app();
    press(&mut app, KeyCode::Char('2'));
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some("key_pro"));
    press(&mut app, KeyCode::Char('R'));
    assert!(matches!(app.modal, Some(Modal::ConfirmRotate { .. })));
    let action = yes(&mut app);
    let cmd = Command::Rotate {
        key_id: "key_pro".into(),
        prefix: "sk-gateway-PrOo…".into(),
    };
    assert_eq!(action, Some(Action::Send(cmd.clone())));
    assert_eq!(
        cmd.request(),
        crate::activity::protocol::Request::KeysRotate {
            key: "key_pro".into()
        }
    );
    let mut rotated = app.model.keys["key_pro"].clone();
    rotated.prefix = "sk-gateway-NeW1…".into();
    app.handle(Event::Reply(
        cmd,
        Ok(Response::Rotated {
            key: rotated,
            api_key: "sk-gateway-NeW1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
        }),
    ));
    assert_eq!(app.model.keys["key_pro"].prefix, "sk-gateway-NeW1…");
    assert!(matches!(
        &app.modal,
        Some(Modal::ReplacedKey { api_key, old_prefix })
            if api_key.starts_with("sk-gateway-NeW1") && old_prefix == "sk-gateway-PrOo…"
    ));
    drawn(&app);
    assert_eq!(press(&mut app, KeyCode::Esc), None);
    assert_eq!(app.modal, None, "shown once");
}

/// Answers of actions queued behind a "Working…" dialog closed with Esc, coming while a key
/// shown once is open, wait for it to close: none replaces it (a second replacement's answer,
/// or a failure, wiped the first key's text; found by an independent check), and a Ctrl-C asks
/// twice while one still waits.
#[test]
fn answers_that_come_while_a_new_key_is_shown_wait_for_it() {
    let mut app = app();
    let rotate = |id: &str, prefix: &str| Command::Rotate {
        key_id: id.into(),
        prefix: prefix.into(),
    };
    let rotated = |app: &App, id: &str, text: &str| Response::Rotated {
        key: app.model.keys[id].clone(),
        api_key: text.into(),
    };
    let first = "sk-gateway-FiRsTxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let second = "sk-gateway-SeCoNdxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let r1 = rotated(&app, "key_pro", first);
    app.handle(Event::Reply(rotate("key_pro", "sk-gateway-PrOo…"), Ok(r1)));
    let r2 = rotated(&app, "key_trial", second);
    app.handle(Event::Reply(
        rotate("key_trial", "sk-gateway-TrIa…"),
        Ok(r2),
    ));
    app.handle(Event::Reply(
        rotate("key_trial", "sk-gateway-TrIa…"),
        Err("key key_trial is revoked".into()),
    ));
    let shown = |app: &App| match &app.modal {
        Some(Modal::ReplacedKey { api_key, .. }) => api_key.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(shown(&app), first);
    drawn(&app);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.on_key(ctrl_c), None, "a key still waits to be shown");
    press(&mut app, KeyCode::Enter);
    assert_eq!(shown(&app), second, "the next waited");
    press(&mut app, KeyCode::Enter);
    assert!(app.modal.is_some(), "not closed before it was drawn");
    drawn(&app);
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.modal,
        Some(Modal::Failed("key key_trial is revoked".into()))
    );
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
}

/// A warning the console was started with (a mistake in the configuration file) stays on the
/// status line for half a minute, then the hints come back.
#[test]
fn a_warning_at_start_stays_half_a_minute() {
    let mut app = App::new("/tmp/s.sock", vec![], true);
    app.handle(Event::Tick(NOW));
    app.warn_at_start("the configuration has an error".into(), NOW);
    for after in [0, 8_001, 29_000] {
        app.handle(Event::Tick(NOW + after));
        assert_eq!(
            app.status_message(),
            Some("the configuration has an error"),
            "{after} ms"
        );
    }
    app.handle(Event::Tick(NOW + 30_001));
    assert_eq!(app.status_message(), None);
}
