//! The Upstream view: one entry per DeepSeek account — its state (a cooling one with the seconds
//! left), in flight against the cap per model, requests per minute, errors, its DeepSeek balance
//! per currency with the age of the reading and `is_available`, and its last error — then the
//! pool: the USD balance, the customers' liability, coverage, failovers and the warnings.
//!
//! From [`WIDE`] columns an account is one line; narrower it is three (load, balance, last
//! error), so that 80 columns show everything without cutting the numbers.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::Theme;
use super::format::{ago, clip, money, secs, usd};
use crate::activity::protocol::{AccountView, BalanceView, UpstreamView};
use crate::console::app::App;

/// From this width an account takes one line.
const WIDE: u16 = 140;
/// The widest account name shown whole.
const NAME_MAX: usize = 16;
/// The state column: `cooling 4m59s` and a little room.
const STATE_W: usize = 13;
/// The requests-per-minute and errors columns.
const RPM_W: usize = 7;
const ERRORS_W: usize = 6;
/// The reading's age and availability columns (wide only).
const READ_W: usize = 6;
const AVAIL_W: usize = 5;

/// Paint the Upstream view into `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let pool = &app.model.upstream_pool;
    let Some(view) = &pool.view else {
        draw_unread(frame, area, app, t);
        return;
    };
    let per_account: u16 = if area.width >= WIDE { 1 } else { 3 };
    let wanted = 2 + per_account * view.accounts.len().max(1) as u16;
    let summary = 2 + view.warnings.len().max(1) as u16;
    let top_h = wanted.min(area.height.saturating_sub(summary).max(4));
    let [top, bottom] =
        Layout::vertical([Constraint::Length(top_h), Constraint::Min(0)]).areas(area);
    draw_accounts(frame, top, app, view, t);
    draw_pool(frame, bottom, view, t);
}

/// Before the first answer: waiting for it, or why it failed.
fn draw_unread(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Upstream accounts ", t.accent));
    let line = match &app.model.upstream_pool.error {
        Some(e) => Span::styled(format!(" cannot read the upstream pool: {e}"), t.bad),
        None => Span::styled(" reading the upstream pool…", t.dim),
    };
    frame.render_widget(Paragraph::new(Line::from(line)).block(block), area);
}

/// The column widths of one rendering.
struct Columns {
    wide: bool,
    name: usize,
    load: usize,
    balance: usize,
}

fn draw_accounts(frame: &mut Frame, area: Rect, app: &App, view: &UpstreamView, t: &Theme) {
    let pool = &app.model.upstream_pool;
    let mut title = vec![
        Span::styled(
            format!(" Upstream accounts ({}) ", view.accounts.len()),
            t.accent,
        ),
        Span::styled(format!("read {} ", age(pool.read_ms, app.now_ms)), t.dim),
    ];
    if let Some(e) = &pool.error {
        title.push(Span::styled(format!("· last read failed: {e} "), t.bad));
    }
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let cols = Columns {
        wide: area.width >= WIDE,
        name: width_of(view.accounts.iter().map(|a| a.name.clone()), "ACCOUNT").min(NAME_MAX),
        load: width_of(view.accounts.iter().map(load_text), "IN FLIGHT / CAP"),
        balance: width_of(
            view.accounts
                .iter()
                .map(|a| balance_text(a.balance.as_ref())),
            "BALANCE",
        ),
    };
    let mut lines = vec![heading(&cols, t)];
    if view.accounts.is_empty() {
        lines.push(Line::from(Span::styled(" no accounts configured", t.dim)));
    }
    let per = if cols.wide { 1 } else { 3 };
    let fit = (inner.height.saturating_sub(1) as usize / per).max(1);
    let row = app.row[4].min(view.accounts.len().saturating_sub(1));
    let first = row.saturating_sub(fit - 1);
    for (i, a) in view.accounts.iter().enumerate().skip(first).take(fit) {
        lines.extend(account_lines(a, i == row, &cols, app, view, t));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The widest of `texts`, at least `heading`'s width.
fn width_of(texts: impl Iterator<Item = String>, heading: &str) -> usize {
    texts
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(heading.chars().count())
}

/// `text` cut or padded to `width` characters, left-aligned.
fn cell(text: &str, width: usize) -> String {
    format!("{:<width$}", clip(text, width))
}

/// `text` cut or padded to `width` characters, right-aligned.
fn cell_right(text: &str, width: usize) -> String {
    format!("{:>width$}", clip(text, width))
}

fn heading(c: &Columns, t: &Theme) -> Line<'static> {
    let mut text = format!(
        " {} {} {} {} {}",
        cell("ACCOUNT", c.name),
        cell("STATE", STATE_W),
        cell("IN FLIGHT / CAP", c.load),
        cell_right("REQ/MIN", RPM_W),
        cell_right("ERRORS", ERRORS_W),
    );
    if c.wide {
        text.push_str(&format!(
            " {} {} {} LAST ERROR",
            cell("BALANCE", c.balance),
            cell_right("READ", READ_W),
            cell("AVAIL", AVAIL_W),
        ));
    }
    Line::from(Span::styled(text, t.heading))
}

/// One account: a line from [`WIDE`] columns, else three.
fn account_lines(
    a: &AccountView,
    selected: bool,
    c: &Columns,
    app: &App,
    view: &UpstreamView,
    t: &Theme,
) -> Vec<Line<'static>> {
    let now = app.now_ms;
    let (state, state_style) = state_text(a, now, t);
    let rpm = app
        .model
        .upstream_pool
        .requests_per_min(&a.name)
        .map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
    let full = a.models.iter().any(|m| m.cap > 0 && m.in_flight >= m.cap);
    let mut first = vec![
        Span::styled(
            format!(
                "{}{}",
                if selected { "▸" } else { " " },
                cell(&a.name, c.name)
            ),
            if selected { t.selected } else { t.accent },
        ),
        Span::raw(" "),
        Span::styled(cell(&state, STATE_W), state_style),
        Span::raw(" "),
        Span::styled(
            cell(&load_text(a), c.load),
            if full { t.warn } else { t.good },
        ),
        Span::raw(format!(" {} ", cell_right(&rpm, RPM_W))),
        Span::styled(
            cell_right(&a.errors.to_string(), ERRORS_W),
            if a.errors > 0 { t.warn } else { t.dim },
        ),
    ];
    let balance = balance_cells(a.balance.as_ref(), view, now, t);
    let error = error_span(a, now, t);
    if c.wide {
        first.push(Span::raw(" "));
        first.push(Span::styled(cell(&balance.text, c.balance), balance.style));
        first.push(Span::styled(
            format!(" {} ", cell_right(&balance.read, READ_W)),
            t.dim,
        ));
        first.push(Span::styled(
            cell(&balance.available.0, AVAIL_W),
            balance.available.1,
        ));
        first.push(Span::raw(" "));
        first.push(error);
        return vec![Line::from(first)];
    }
    let [second, third] = detail_lines(balance, error, t);
    vec![Line::from(first), second, third]
}

/// Below 140 columns, an account's balance (with the reading's age and availability) and its
/// last error, each on a line of its own.
fn detail_lines(balance: BalanceCells, error: Span<'static>, t: &Theme) -> [Line<'static>; 2] {
    let read = match balance.read.as_str() {
        "-" => String::new(),
        "now" => " · read just now".to_string(),
        age => format!(" · read {age} ago"),
    };
    let mut second = vec![
        Span::styled("   balance ", t.dim),
        Span::styled(balance.text, balance.style),
        Span::styled(read, t.dim),
    ];
    if !balance.available.0.is_empty() {
        let words = if balance.available.0 == "yes" {
            " · available"
        } else {
            " · NOT available"
        };
        second.push(Span::styled(words, balance.available.1));
    }
    [
        Line::from(second),
        Line::from(vec![Span::raw("   "), error]),
    ]
}

/// `healthy`, `probation`, `cooling 12s` (the seconds until the trial request), `trial due`,
/// `disabled`.
fn state_text(a: &AccountView, now_ms: i64, t: &Theme) -> (String, Style) {
    match a.state.as_str() {
        // Back from a rest with its backoff kept: a failure rests it for twice as long.
        "healthy" if a.backoff_ms > 0 => ("probation".into(), t.good),
        "healthy" => ("healthy".into(), t.good),
        "cooling" => {
            // Whole seconds left, rounded up: `0s` only once the trial is due.
            let left = a
                .cooling_until_ms
                .map_or(0, |until| (until - now_ms).max(0));
            let left = u64::try_from(left).unwrap_or(0).div_ceil(1000);
            if left == 0 {
                // Its trial goes with the next request that needs it ("cooling 0s" stayed
                // on screen for as long as no request came).
                ("trial due".into(), t.warn)
            } else {
                (format!("cooling {}", secs(left)), t.warn)
            }
        }
        "disabled" => ("disabled".into(), t.bad),
        other => (other.to_string(), t.warn),
    }
}

/// `flash 3/2500 · pro 1/500`.
fn load_text(a: &AccountView) -> String {
    a.models
        .iter()
        .map(|m| {
            let short = m.model.rsplit('-').next().unwrap_or(&m.model);
            format!("{short} {}/{}", m.in_flight, m.cap)
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `USD 110.00 · CNY 50.00`, or `not read yet`.
fn balance_text(b: Option<&BalanceView>) -> String {
    match b {
        None => "not read yet".into(),
        Some(b) if b.currencies.is_empty() => "none reported".into(),
        Some(b) => b
            .currencies
            .iter()
            .map(|c| money(&c.currency, c.total))
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

/// A balance as shown: the amounts, how old the reading is, whether DeepSeek says the account
/// may be used.
struct BalanceCells {
    text: String,
    style: Style,
    /// `now`, `12s`…, or `-` when never read.
    read: String,
    /// `yes` / `no` (empty when never read), and its style.
    available: (String, Style),
}

fn balance_cells(
    b: Option<&BalanceView>,
    view: &UpstreamView,
    now: i64,
    t: &Theme,
) -> BalanceCells {
    let text = balance_text(b);
    let Some(b) = b else {
        return BalanceCells {
            text,
            style: t.dim,
            read: "-".into(),
            available: (String::new(), t.dim),
        };
    };
    let low = b
        .currencies
        .iter()
        .any(|c| c.currency == "USD" && c.total < view.low_balance_usd);
    BalanceCells {
        text,
        style: if low { t.bad } else { t.good },
        read: ago(b.at_ms, now),
        available: if b.is_available {
            ("yes".into(), t.good)
        } else {
            ("no".into(), t.bad)
        },
    }
}

/// The last error with its age, what the operator did, or `no errors`.
fn error_span(a: &AccountView, now: i64, t: &Theme) -> Span<'static> {
    let by_operator = if a.disabled_by_operator && a.state == "disabled" {
        "disabled by the operator · "
    } else {
        ""
    };
    match (&a.last_error, a.last_error_ms) {
        (Some(e), Some(at)) => Span::styled(
            format!("{by_operator}last error {e} · {}", age(at, now)),
            t.bad,
        ),
        (Some(e), None) => Span::styled(format!("{by_operator}last error {e}"), t.bad),
        _ if !by_operator.is_empty() => Span::styled("disabled by the operator", t.warn),
        _ => Span::styled("no errors", t.dim),
    }
}

/// `just now`, `12s ago`.
fn age(then_ms: i64, now_ms: i64) -> String {
    match ago(then_ms, now_ms).as_str() {
        "now" => "just now".into(),
        a => format!("{a} ago"),
    }
}

/// The pool: balance, liability, coverage, failovers, then the warnings.
fn draw_pool(frame: &mut Frame, area: Rect, view: &UpstreamView, t: &Theme) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Pool ", t.accent));
    let read = view.balance_read();
    let coverage = match view.coverage_percent {
        // No reading is not an empty account (an upstream without DeepSeek's balance endpoint).
        _ if !read => Span::styled("- (no balance reading)", t.dim),
        Some(p) => Span::styled(
            view.coverage_text().unwrap_or_default(),
            if p < 100 { t.bad } else { t.good },
        ),
        None => Span::styled("- (nothing owed)", t.dim),
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(" USD balance ", t.dim),
        Span::raw(if read {
            usd(view.usd_balance)
        } else {
            "unknown".to_string()
        }),
        Span::styled("  liability ", t.dim),
        Span::raw(usd(view.liability_usd)),
        Span::styled("  coverage ", t.dim),
        coverage,
        Span::styled("  failovers ", t.dim),
        Span::raw(view.failovers.to_string()),
    ])];
    if view.warnings.is_empty() {
        lines.push(Line::from(Span::styled(" no warnings", t.good)));
    }
    for w in &view.warnings {
        lines.push(Line::from(Span::styled(format!(" ⚠ {w}"), t.warn)));
    }
    // A warning names a command to run: wrapped, not cut.
    let p = Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false });
    frame.render_widget(p, area);
}
