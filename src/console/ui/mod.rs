//! Rendering, and nothing else: [`draw`] paints an [`App`] onto a frame. The layout is a header
//! (every view; a third line, the alert, while the upstream pool has warnings), the tab bar,
//! the view, and a status line; dialogs float over the view.

mod dialog;
pub mod format;
mod keys;
mod limits;
mod live;
mod orders;
#[cfg(test)]
mod tests;
mod upstream;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};

use super::app::{App, Modal, View};

/// The styles of one rendering: coloured, or monochrome with `NO_COLOR`.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// Headings, the active tab, labels.
    pub accent: Style,
    /// Good news: active keys, 200s, paid orders.
    pub good: Style,
    /// Needs a look: exhausted keys, slow upstream, pending orders.
    pub warn: Style,
    /// Bad news: errors, revoked keys, disconnection.
    pub bad: Style,
    /// Secondary text.
    pub dim: Style,
    /// The selected row.
    pub selected: Style,
    /// Column headings.
    pub heading: Style,
}

impl Theme {
    /// The theme for `mono` (no colours, only bold/reverse/dim).
    pub fn new(mono: bool) -> Theme {
        let plain = Style::default();
        if mono {
            Theme {
                accent: plain.add_modifier(Modifier::BOLD),
                good: plain,
                warn: plain.add_modifier(Modifier::BOLD),
                bad: plain.add_modifier(Modifier::BOLD),
                dim: plain,
                selected: plain.add_modifier(Modifier::REVERSED),
                heading: plain.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            }
        } else {
            Theme {
                accent: plain.fg(Color::Cyan).add_modifier(Modifier::BOLD),
                good: plain.fg(Color::Green),
                warn: plain.fg(Color::Yellow),
                bad: plain.fg(Color::Red).add_modifier(Modifier::BOLD),
                dim: plain.fg(Color::DarkGray),
                selected: plain.bg(Color::Blue).fg(Color::White),
                heading: plain.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            }
        }
    }
}

/// Paint the whole console.
pub fn draw(frame: &mut Frame, app: &App) {
    let theme = Theme::new(app.mono);
    let alert = !app.model.upstream_pool.warnings().is_empty();
    let [header, tabs, body, status] = Layout::vertical([
        Constraint::Length(2 + u16::from(alert)),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, app, &theme);
    draw_tabs(frame, tabs, app, &theme);
    match app.view {
        View::Live => live::draw(frame, body, app, &theme),
        View::Keys => keys::draw(frame, body, app, &theme),
        View::Orders => orders::draw(frame, body, app, &theme),
        View::Limits => limits::draw(frame, body, app, &theme),
        View::Upstream => upstream::draw(frame, body, app, &theme),
    }
    draw_status(frame, status, app, &theme);
    if let Some(modal) = &app.modal {
        dialog::draw(frame, body, app, modal, &theme);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let now = app.now_ms;
    let version = m.version.as_deref().unwrap_or("?");
    let uptime = m
        .uptime_secs(now)
        .filter(|_| app.connected)
        .map_or_else(|| "?".to_string(), format::secs);
    let rps = m.requests_per_sec(now);
    let mut first = vec![
        Span::styled(format!(" modelrelay {version}"), t.accent),
        Span::styled("  up ", t.dim),
        Span::raw(uptime),
        Span::styled("  req/s ", t.dim),
        Span::raw(format!("{rps:.2}")),
        Span::styled("  in flight ", t.dim),
        Span::raw(m.in_flight_count().to_string()),
        Span::raw("  "),
    ];
    if app.connected {
        let state = match app.lagged {
            Some(n) => Span::styled(format!("● resync ({n} missed)"), t.warn),
            None => Span::styled("● live", t.good),
        };
        first.push(state);
    } else if app.disconnect_reason.is_some() {
        first.push(Span::styled("disconnected — reconnecting…", t.bad));
    } else {
        first.push(Span::styled("connecting…", t.warn));
    }
    let up = m.upstream();
    let mut second = vec![
        Span::styled(" today ", t.dim),
        Span::raw(format!("spend {}", format::usd(m.today().spend_usd))),
        Span::raw(format!("  revenue {}", format::usd(m.today().revenue_usd))),
        Span::styled("  upstream ", t.dim),
    ];
    match up.last_latency_ms {
        Some(ms) => second.push(Span::raw(format!("last {}", format::millis(ms)))),
        None => second.push(Span::styled("idle", t.dim)),
    }
    if let Some(err) = &up.last_error {
        let ago = up.last_error_ms.map(|at| format::ago(at, now));
        let used: usize = second.iter().map(Span::width).sum();
        let full = match &ago {
            // "now", not "now ago" (found by an independent check).
            Some(ago) if ago == "now" => format!("  last error {err} just now"),
            Some(ago) => format!("  last error {err} {ago} ago"),
            None => format!("  last error {err}"),
        };
        // On a narrow terminal the short form keeps the error in sight.
        let text = if used + full.chars().count() <= area.width as usize {
            full
        } else {
            format!("  ⚠ {err} {}", ago.unwrap_or_default())
        };
        second.push(Span::styled(text, t.bad));
    } else {
        second.push(Span::styled("  no errors", t.good));
    }
    let mut lines = vec![Line::from(first), Line::from(second)];
    lines.extend(alert_line(
        app.model.upstream_pool.warnings(),
        area.width,
        t,
    ));
    frame.render_widget(Paragraph::new(lines), area);
}

/// The first of the upstream pool's warnings and how many more there are, cut to `width` so
/// that the count stays in sight (`None` when all is well).
fn alert_line(warnings: &[String], width: u16, t: &Theme) -> Option<Line<'static>> {
    let first = warnings.first()?;
    let more = match warnings.len() - 1 {
        0 => String::new(),
        n => format!(" (+{n} more)"),
    };
    let room = (width as usize).saturating_sub(3 + more.chars().count());
    Some(Line::from(vec![
        Span::styled(format!(" ⚠ {}", format::clip(first, room)), t.bad),
        Span::styled(more, t.warn),
    ]))
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let titles = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| Line::from(format!("{} {}", i + 1, v.title())));
    let selected = View::ALL.iter().position(|v| *v == app.view);
    let tabs = Tabs::new(titles)
        .select(selected)
        .style(t.dim)
        .highlight_style(t.accent.add_modifier(Modifier::REVERSED))
        .divider("│");
    let [left, right] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(18)]).areas(area);
    frame.render_widget(tabs, left);
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled("? help  q quit ", t.dim)).right_aligned()),
        right,
    );
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let line = if !app.connected && app.disconnect_reason.is_some() {
        let why = app.disconnect_reason.as_deref().unwrap_or_default();
        Line::from(vec![
            Span::styled(" disconnected — reconnecting… ", t.bad),
            Span::styled(why.to_string(), t.dim),
        ])
    } else if let Some(msg) = app.status_message() {
        Line::from(Span::styled(format!(" {msg}"), t.warn))
    } else if app.modal == Some(Modal::Filter) {
        Line::from(vec![
            Span::styled(" filter: ", t.accent),
            Span::raw(format!("{}▏", app.filter)),
            Span::styled("  Enter keep · Esc clear", t.dim),
        ])
    } else {
        Line::from(Span::styled(hints(app.view), t.dim))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The key hints of a view, for the status line.
fn hints(view: View) -> &'static str {
    match view {
        View::Keys => {
            " ↑↓ select  / filter  s sort  r revoke  t top up  R replace  n new  Tab view"
        }
        View::Live => " ↑↓ scroll finished  Tab/1-5 view  ? help  q quit",
        View::Orders | View::Limits => " ↑↓ scroll  Tab/1-5 view  ? help  q quit",
        View::Upstream => " ↑↓ select  e enable  d disable  Tab/1-5 view  ? help  q quit",
    }
}
