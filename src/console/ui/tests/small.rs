//! What the console shows and does where things do not fit: a confirmation in a window too
//! small for it shows its question alone, or asks for a larger window (and `y` does nothing
//! until what it acts on was drawn); the Keys view with thousands of keys builds only the rows
//! on screen, the selected one always among them; a paste is text, never commands.

use crossterm::event::KeyCode;

use super::{screen, view};
use crate::console::app::{Modal, View};
use crate::console::event::{Action, Command, Event};
use crate::console::tests::{key, press, read_the_confirmation};

#[test]
fn a_confirmation_acts_only_once_what_it_acts_on_was_drawn() {
    for (w, h, shown) in [(80, 24, true), (20, 8, true), (30, 5, true), (20, 3, false)] {
        let mut a = view(View::Keys);
        press(&mut a, KeyCode::Char('j'));
        press(&mut a, KeyCode::Char('r'));
        assert!(matches!(a.modal, Some(Modal::ConfirmRevoke { .. })));
        // `y` before any frame: nothing.
        assert_eq!(press(&mut a, KeyCode::Char('y')), None, "{w}x{h}");
        assert!(matches!(a.modal, Some(Modal::ConfirmRevoke { .. })));
        let text: String = screen(&a, (w, h))
            .iter()
            .map(|l| l.replace(['│', ' '], ""))
            .collect();
        assert_eq!(text.contains("sk-gateway-PrOo…"), shown, "{w}x{h}: {text}");
        assert_eq!(!shown, text.contains("Enlarge"), "{w}x{h}: {text}");
        // Drawn a moment ago: a `y` already on its way (a paste of "ry" without bracketed
        // paste, keys held down) is not an answer.
        assert_eq!(press(&mut a, KeyCode::Char('y')), None, "{w}x{h}");
        read_the_confirmation(&a);
        let answer = press(&mut a, KeyCode::Char('y'));
        if shown {
            assert_eq!(
                answer,
                Some(Action::Send(Command::Revoke {
                    key_id: "key_pro".into(),
                    prefix: "sk-gateway-PrOo…".into(),
                })),
                "{w}x{h}"
            );
        } else {
            assert_eq!(answer, None, "{w}x{h}: y does nothing unseen");
            assert!(matches!(a.modal, Some(Modal::ConfirmRevoke { .. })));
        }
    }
}

/// Cut down to fit, a confirmation keeps its warning of harm: disabling the last account in
/// service said only "Disable upstream account primary?" at 40x8, and `y` took the service down.
#[test]
fn a_small_confirmation_keeps_its_warning() {
    let mut a = view(View::Upstream);
    let pool = a.model.upstream_pool.view.as_mut().expect("a pool read");
    pool.accounts.retain(|acc| acc.name == "primary");
    press(&mut a, KeyCode::Char('d'));
    assert!(
        matches!(a.modal, Some(Modal::ConfirmAccount { .. })),
        "{:?}",
        a.modal
    );
    let text: String = screen(&a, (40, 8))
        .iter()
        .map(|l| l.replace('│', ""))
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = text.split_whitespace().collect();
    let said = words.join(" ");
    assert!(said.contains("every request will fail"), "{said}");
    assert!(said.contains("y disable"), "{said}");
}

#[test]
fn the_keys_view_shows_the_selected_key_among_thousands() {
    let mut a = view(View::Keys);
    for i in 0..3000 {
        let k = key(
            &format!("key_{i:05}"),
            &format!("sk-gateway-{i:04}…"),
            "trial",
            "1.00",
            "0.10",
        );
        a.model.keys.insert(k.id.clone(), k);
    }
    // Down to the 2 500th key of the list (sorted by creation, then id).
    for _ in 0..2500 {
        press(&mut a, KeyCode::Char('j'));
    }
    let visible = a.visible_keys();
    let selected = a.selected_key_index(&visible).expect("a selection");
    let id = visible[selected].prefix.clone();
    let before = visible[selected - 1].prefix.clone();
    drop(visible);
    for (w, h) in [(80, 24), (200, 50)] {
        let lines = screen(&a, (w, h));
        let at = lines
            .iter()
            .position(|l| l.contains(&format!("▸{id}")))
            .unwrap_or_else(|| panic!("{w}x{h}: the selected key is shown:\n{}", lines.join("\n")));
        assert!(lines[at - 1].contains(&before), "{w}x{h}: in order");
        // It is the last row of the table (the footer lines follow), as ratatui scrolls.
        assert!(!lines[at + 1].contains("sk-gateway-"), "{w}x{h}");
    }
}

#[test]
fn a_paste_is_text_in_a_field_and_nothing_elsewhere() {
    let mut a = view(View::Keys);
    press(&mut a, KeyCode::Char('j'));
    // On the Keys view "ry" typed would revoke the selected key; pasted, it does nothing.
    assert!(a.handle(Event::Paste("ry".into())).is_empty());
    assert_eq!(a.modal, None);
    // In the filter: the text, without its newline.
    press(&mut a, KeyCode::Char('/'));
    a.handle(Event::Paste("pro\n".into()));
    assert_eq!(a.filter, "pro");
    assert_eq!(
        a.modal,
        Some(Modal::Filter),
        "a pasted newline does not close it"
    );
    press(&mut a, KeyCode::Esc);
    // In a top-up amount.
    press(&mut a, KeyCode::Char('t'));
    a.handle(Event::Paste("2.50".into()));
    match &a.modal {
        Some(Modal::TopUpAmount { input, .. }) => assert_eq!(input, "2.50"),
        other => panic!("{other:?}"),
    }
}
