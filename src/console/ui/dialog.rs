//! Dialogs drawn over the view: help, confirmations (keys, and upstream accounts), the top-up
//! amount, the comp-key plan, the new key (shown once), progress and failures.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Padding, Paragraph, Wrap};

use super::Theme;
use crate::console::app::{App, Modal};

/// A `width`×`height` box centred in `area` (shrunk to fit).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// A dialog's title, lines and width.
type Dialog = (&'static str, Vec<Line<'static>>, u16);

/// Paint `modal` over `area` (a key shown once: over the whole screen if `area` is too small).
pub fn draw(frame: &mut Frame, area: Rect, app: &App, modal: &Modal, t: &Theme) {
    let Some((title, lines, width)) = dialog(app, modal, t) else {
        return;
    };
    if modal.is_confirmation() {
        return confirm(frame, area, app, (title, lines, width), t);
    }
    let api_key = match modal {
        Modal::NewKey { api_key, .. } | Modal::ReplacedKey { api_key, .. } => api_key,
        _ => return paint(frame, area, (title, lines, width), t),
    };
    // A key shown once must be seen whole: the dialog as it is where it fits, else just the
    // key and how to close, else a request to enlarge the window (and Enter or Esc do not
    // close it until the key was drawn whole, see `App::key_seen`).
    let screen = frame.area();
    if let Some(room) = [area, screen]
        .into_iter()
        .find(|a| height_of(&lines, width, *a) <= a.height)
    {
        app.key_seen.set(true);
        return paint(frame, room, (title, lines, width), t);
    }
    let compact = vec![
        Line::from(Span::styled(api_key.clone(), t.accent)),
        Line::from(Span::styled("Copy it now · Enter closes", t.dim)),
    ];
    if height_of(&compact, width, screen) <= screen.height {
        app.key_seen.set(true);
        return paint(frame, screen, (title, compact, width), t);
    }
    let enlarge = if app.quit_armed.get() {
        vec![Line::styled("Ctrl-C again quits; the key is lost", t.warn)]
    } else {
        vec![Line::raw("Enlarge the window to see the new key.")]
    };
    paint(frame, screen, (" Key ", enlarge, width), t);
}

/// A confirmation must show what `y` acts on: the dialog where it fits, else its question and
/// answer lines alone, else a request to enlarge the window — and `y` does nothing until one of
/// the first two was drawn (see `App::confirm_seen`).
fn confirm(frame: &mut Frame, area: Rect, app: &App, (title, lines, width): Dialog, t: &Theme) {
    let screen = frame.area();
    let seen = || {
        if app.confirm_seen.get().is_none() {
            app.confirm_seen.set(Some(std::time::Instant::now()));
        }
    };
    if let Some(room) = [area, screen]
        .into_iter()
        .find(|a| height_of(&lines, width, *a) <= a.height)
    {
        seen();
        return paint(frame, room, (title, lines, width), t);
    }
    // The question, any warning of harm (disabling the last account in service), the answer.
    let last = lines.len().saturating_sub(1);
    let compact: Vec<Line<'static>> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| *i == 0 || *i == last || l.spans.iter().any(|s| s.style == t.bad))
        .map(|(_, l)| l.clone())
        .collect();
    if height_of(&compact, width, screen) <= screen.height {
        seen();
        return paint(frame, screen, (title, compact, width), t);
    }
    app.confirm_seen.set(None);
    let enlarge = vec![Line::raw("Enlarge the window to confirm.")];
    paint(frame, screen, (title, enlarge, width), t);
}

/// Rows a dialog of `lines` takes in `area` with its border: long lines wrap at the width, by
/// words as the paragraph wraps them (counting by characters said a dialog fitted whose last
/// line was then cut; found by an independent check).
fn height_of(lines: &[Line], width: u16, area: Rect) -> u16 {
    let inner_w = width.min(area.width).saturating_sub(4).max(1) as usize;
    let rows = |line: &Line| -> usize {
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        let (mut rows, mut used) = (1, 0);
        for word in text.split(' ') {
            let w = word.chars().count();
            if used > 0 && used + 1 + w <= inner_w {
                used += 1 + w;
                continue;
            }
            if used > 0 {
                rows += 1;
            }
            // A word longer than the width is broken over whole rows.
            rows += w.saturating_sub(1) / inner_w;
            used = if w == 0 { 0 } else { (w - 1) % inner_w + 1 };
        }
        rows
    };
    let total: usize = lines.iter().map(rows).sum();
    u16::try_from(total + 2).unwrap_or(u16::MAX)
}

/// Paint one dialog, centred in `area`.
fn paint(frame: &mut Frame, area: Rect, (title, lines, width): Dialog, t: &Theme) {
    let height = height_of(&lines, width, area);
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(t.accent)
        .padding(Padding::horizontal(1))
        .title(Span::styled(title, t.accent));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        rect,
    );
}

/// What a dialog shows (`None`: the filter, typed in the status line).
fn dialog(app: &App, modal: &Modal, t: &Theme) -> Option<Dialog> {
    Some(match modal {
        Modal::Filter => return None,
        Modal::Help => help(app, t),
        Modal::ConfirmRevoke { .. }
        | Modal::ConfirmTopUp { .. }
        | Modal::ConfirmCreate { .. }
        | Modal::ConfirmRotate { .. } => confirmation(modal, t)?,
        Modal::ConfirmAccount { name, enable } => confirm_account(app, name, *enable, t),
        Modal::ReplacedKey {
            api_key,
            old_prefix,
        } => (
            " Replaced key — shown once ",
            vec![
                Line::from(vec![
                    Span::raw("The key "),
                    Span::styled(old_prefix.clone(), t.dim),
                    Span::raw(" now is:"),
                ]),
                Line::raw(""),
                Line::from(Span::styled(api_key.clone(), t.accent)),
                Line::raw(""),
                Line::raw("The old text no longer works. Copy this now: it is not shown again."),
                Line::from(Span::styled("Enter or Esc closes", t.dim)),
            ],
            (api_key.chars().count() as u16 + 6).max(72),
        ),
        Modal::TopUpAmount {
            prefix,
            input,
            error,
            ..
        } => top_up_amount(prefix, input, error.as_deref(), t),
        Modal::ChoosePlan { selected } => choose_plan(app, *selected, t),
        Modal::Working(what) => (" Working ", vec![Line::raw(what.clone())], 50),
        Modal::NewKey { api_key, plan } => (
            " New key — shown once ",
            vec![
                Line::raw(format!("A {plan} key was minted:")),
                Line::raw(""),
                Line::from(Span::styled(api_key.clone(), t.accent)),
                Line::raw(""),
                Line::raw("Copy it now: the console will not show it again."),
                Line::from(Span::styled("Enter or Esc closes", t.dim)),
            ],
            (api_key.chars().count() as u16 + 6).max(62),
        ),
        Modal::Failed(msg) => (
            " Failed ",
            vec![
                Line::from(Span::styled(msg.clone(), t.bad)),
                Line::raw(""),
                Line::from(Span::styled("any key closes", t.dim)),
            ],
            60,
        ),
    })
}

fn help(app: &App, t: &Theme) -> Dialog {
    let keys = |k: &'static str, what: &'static str| {
        Line::from(vec![
            Span::styled(format!("  {k:<14}"), t.accent),
            Span::raw(what),
        ])
    };
    let lines = vec![
        keys("Tab Shift-Tab", "next / previous view"),
        keys("1 2 3 4 5", "Live, Keys, Orders, Limits, Upstream"),
        keys("↑ ↓  j k", "move the selection"),
        keys("PgUp PgDn g G", "page, first, last"),
        keys("/", "filter keys (Enter keeps, Esc clears)"),
        keys("s", "sort keys: created, remaining, spent, …"),
        keys("r", "revoke the selected key"),
        keys("t", "top up the selected key"),
        keys("n", "mint a comp key (shown once)"),
        keys("R", "replace the selected key's text (shown once)"),
        keys("e  d", "enable / disable the selected upstream account"),
        keys("?", "this help; any key closes it"),
        keys("q  Ctrl-C", "quit"),
        Line::raw(""),
        Line::from(Span::styled(format!("  socket {}", app.socket), t.dim)),
        Line::from(Span::styled(
            "  times are UTC · ~ marks an estimated cost · NO_COLOR=1 for monochrome",
            t.dim,
        )),
    ];
    (" Help ", lines, 78)
}

/// "Revoke / top up / mint …?" (`None` for any other dialog).
fn confirmation(modal: &Modal, t: &Theme) -> Option<Dialog> {
    Some(match modal {
        Modal::ConfirmRevoke { key_id, prefix } => (
            " Revoke key ",
            vec![
                Line::from(vec![
                    Span::raw("Revoke "),
                    Span::styled(prefix.clone(), t.accent),
                    Span::raw(format!(" ({key_id})?")),
                ]),
                Line::raw("Its next request gets 401. This cannot be undone."),
                Line::raw(""),
                Line::from(Span::styled("y revoke · n or Esc cancel", t.warn)),
            ],
            60,
        ),
        Modal::ConfirmTopUp { prefix, usd: u, .. } => (
            " Top up key ",
            vec![
                Line::from(vec![
                    Span::raw("Add "),
                    // Exact: rounded to cents, 0.000001 read "$0.00" and 0.00005 "$0.0001".
                    Span::styled(format!("${u}"), t.accent),
                    Span::raw(" to "),
                    Span::styled(prefix.clone(), t.accent),
                    Span::raw("?"),
                ]),
                Line::raw(""),
                Line::from(Span::styled("y top up · n or Esc cancel", t.warn)),
            ],
            56,
        ),
        Modal::ConfirmCreate { plan } => (
            " New comp key ",
            vec![
                Line::from(vec![
                    Span::raw("Mint a comp key on plan "),
                    Span::styled(plan.clone(), t.accent),
                    Span::raw("?"),
                ]),
                Line::raw("The key is shown once; copy it from the next screen."),
                Line::raw(""),
                Line::from(Span::styled("y mint · n or Esc cancel", t.warn)),
            ],
            60,
        ),
        Modal::ConfirmRotate { key_id, prefix } => (
            " Replace key ",
            vec![
                Line::from(vec![
                    Span::raw("Replace the text of "),
                    Span::styled(prefix.clone(), t.accent),
                    Span::raw(format!(" ({key_id})?")),
                ]),
                Line::raw("Same plan, budget and history; the old text gets 401 at once."),
                Line::raw(""),
                Line::from(Span::styled("y replace · n or Esc cancel", t.warn)),
            ],
            66,
        ),
        _ => return None,
    })
}

/// "Disable / enable this upstream account?", saying what it does to the traffic.
fn confirm_account(app: &App, name: &str, enable: bool, t: &Theme) -> Dialog {
    let question = |verb: &str, rest: &str| {
        Line::from(vec![
            Span::raw(format!("{verb} upstream account ")),
            Span::styled(name.to_string(), t.accent),
            Span::raw(rest.to_string()),
        ])
    };
    if enable {
        return (
            " Enable account ",
            vec![
                question("Put", " back in service?"),
                Line::raw("It takes requests again at once."),
                Line::raw(""),
                Line::from(Span::styled("y enable · n or Esc cancel", t.warn)),
            ],
            60,
        );
    }
    let others_serving = app.model.upstream_pool.view.as_ref().is_some_and(|v| {
        v.accounts
            .iter()
            .any(|a| a.name != name && a.state != "disabled")
    });
    let mut lines = vec![question("Disable", "?")];
    if others_serving {
        lines.push(Line::raw(
            "Requests go to the other accounts until you enable it; no probe brings it back.",
        ));
    } else {
        lines.push(Line::raw(
            "It stays out of service until you enable it, restarts included.",
        ));
        lines.push(Line::from(Span::styled(
            "No other account is in service: every request will fail until one is enabled.",
            t.bad,
        )));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(
        "y disable · n or Esc cancel",
        t.warn,
    )));
    (" Disable account ", lines, 66)
}

fn top_up_amount(prefix: &str, input: &str, error: Option<&str>, t: &Theme) -> Dialog {
    let mut lines = vec![
        Line::from(vec![
            Span::raw("Add budget to "),
            Span::styled(prefix.to_string(), t.accent),
        ]),
        Line::raw(""),
        Line::from(vec![
            Span::raw("Amount (USD): $"),
            Span::styled(format!("{input}▏"), t.accent),
        ]),
    ];
    if let Some(e) = error {
        lines.push(Line::from(Span::styled(e.to_string(), t.bad)));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled("Enter next · Esc cancel", t.dim)));
    (" Top up key ", lines, 56)
}

fn choose_plan(app: &App, selected: usize, t: &Theme) -> Dialog {
    let mut lines = vec![Line::raw("Plan of the comp key (budget from the plan):")];
    for (i, p) in app.plans.iter().enumerate() {
        let (mark, style) = if i == selected {
            ("▸", t.selected)
        } else {
            (" ", t.good)
        };
        lines.push(Line::from(Span::styled(format!(" {mark}{p:<20}"), style)));
    }
    if app.plans.is_empty() {
        lines.push(Line::from(Span::styled("  (no plans known)", t.bad)));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled(
        "↑↓ choose · Enter next · Esc cancel",
        t.dim,
    )));
    (" New comp key ", lines, 50)
}
