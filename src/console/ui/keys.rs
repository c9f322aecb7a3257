//! The Keys view: every key with its budget gauge, filtered and sorted; the selected key is what
//! the revoke and top-up actions act on.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::Theme;
use super::format::{ago, clip, column_widths, count_in, gauge, key_in, parse_ms, usd_in, whole};
use crate::activity::protocol::KeyView;
use crate::console::app::App;
use crate::status::KeyStatus;

/// Paint the Keys view into `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let visible = app.visible_keys();
    let total = app.model.keys.len();
    let block = Block::new()
        .borders(Borders::TOP)
        .title(title(app, visible.len(), total, t));
    if visible.is_empty() {
        let text = if total == 0 {
            " no keys yet: press n to mint one, or `modelrelay keys create --plan trial`"
        } else {
            " no key matches the filter (Esc clears it)"
        };
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(text, t.dim))).block(block),
            area,
        );
        return;
    }
    let wide = area.width >= 120;
    let mut widths: Vec<u16> = vec![16, 8, 9, 11, 9, 9, 5, 5];
    let mut heads = vec![
        "KEY",
        "PLAN",
        "STATUS",
        "LEFT",
        "SPENT",
        "REMAINING",
        "REQS",
        "USED",
    ];
    if wide {
        widths[3] = 16;
        // Room for a busy key's whole count (shortened to `469k` otherwise) once the id
        // keeps its whole width: at 120 columns the wider count cut the id with no mark.
        if area.width >= 124 {
            widths[6] = 7;
        }
        widths.extend([9, 21]);
        heads.extend(["BUDGET", "ID"]);
        heads.push("EMAIL · NOTE");
    }
    let mut constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    if wide {
        constraints.push(Constraint::Min(10));
    }
    let selected = app.selected_key_index(&visible);
    // What each column gets in this window (narrow, less than it asks for).
    let got = column_widths(&constraints, area.width, u16::from(selected.is_some()));
    let got = |i: usize| got.get(i).copied().unwrap_or(0) as usize;
    // Only the rows that fit are built, from the one ratatui would scroll to (the selected
    // key on the last row once it is below the fold): every key's row was built every frame,
    // ~94 ms a keystroke with 2 300 keys in a debug build (found by an independent check).
    let room = usize::from(area.height.saturating_sub(2)).max(1);
    let first = selected.map_or(0, |s| (s + 1).saturating_sub(room));
    let shown = &visible[first..visible.len().min(first + room)];
    let rows = shown.iter().map(|k| row(k, app, wide, &got, t));
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .row_highlight_style(t.selected)
        .highlight_symbol("▸")
        .block(block);
    let mut state = TableState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(table, area, &mut state);
}

/// "Keys (n of m) sort: … filter: …".
fn title(app: &App, shown: usize, total: usize, t: &Theme) -> Line<'static> {
    let mut title = vec![Span::styled(
        if shown == total {
            format!(" Keys ({total}) ")
        } else {
            format!(" Keys ({shown} of {total}) ")
        },
        t.accent,
    )];
    title.push(Span::styled(format!("sort: {} ", app.sort.label()), t.dim));
    if !app.filter.is_empty() {
        title.push(Span::styled(format!("filter: {} ", app.filter), t.warn));
    }
    Line::from(title)
}

/// One key's row; `wide` adds its budget, id and email; `got(i)`: column `i`'s width.
fn row(
    k: &KeyView,
    app: &App,
    wide: bool,
    got: &impl Fn(usize) -> usize,
    t: &Theme,
) -> Row<'static> {
    let gauge_w = got(3);
    let status_style = match k.status {
        KeyStatus::Active => t.good,
        KeyStatus::Exhausted => t.warn,
        KeyStatus::Revoked => t.bad,
    };
    let used = k
        .last_used_at
        .as_deref()
        .and_then(parse_ms)
        .map_or_else(|| "never".to_string(), |at| ago(at, app.now_ms));
    let mut cells = vec![
        Cell::from(key_in(&k.prefix, got(0))),
        Cell::from(clip(&k.plan, 8)),
        Cell::from(Span::styled(k.status.as_str(), status_style)),
        Cell::from(Span::styled(
            if k.status == KeyStatus::Revoked {
                format!("{:─<gauge_w$}", "")
            } else {
                // Too narrow for its percentage, the gauge is the mark (`100%` read `10`).
                whole(gauge(k.remaining_usd, k.budget_usd, gauge_w), gauge_w)
            },
            status_style,
        )),
        Cell::from(Line::from(usd_in(k.spent_usd, got(4))).right_aligned()),
        // A revoked key has nothing left to spend, as `keys list` says (found by an
        // independent check: the view showed what was left when it was revoked).
        Cell::from(
            Line::from(if k.status == KeyStatus::Revoked {
                "-".to_string()
            } else {
                usd_in(k.remaining_usd, got(5))
            })
            .right_aligned(),
        ),
        Cell::from(Line::from(count_in(k.requests, got(6))).right_aligned()),
        Cell::from(Line::from(whole(used, got(7))).right_aligned()),
    ];
    if wide {
        cells.push(Cell::from(
            Line::from(usd_in(k.budget_usd, got(8))).right_aligned(),
        ));
        cells.push(Cell::from(k.id.clone()));
        // Cut with a mark: `op@example.com` cut to `op@example` read as another address.
        // The operator's note after it: which agent or customer a hand-made key is for
        // (found by an independent check: keys made for a team's agents looked alike).
        let email = crate::text::visible(k.email.as_deref().unwrap_or_default());
        let who = match k.note.as_deref().map(crate::text::visible) {
            Some(note) if email.is_empty() => note,
            Some(note) => format!("{email} · {note}"),
            None => email,
        };
        cells.push(Cell::from(clip(&who, got(10))));
    }
    Row::new(cells)
}
