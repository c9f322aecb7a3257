//! The Limits view: rate-limit hits per key over the last hour, each with a sparkline of hits per
//! time slice, and the 402/403 refusals (and 429 `budget_held`) of the last hour.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::bar;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};

use super::Theme;
use super::format::{ago, clip, clock};
use crate::console::app::App;
use crate::console::model::HOUR_MS;

/// Bars of a sparkline; an empty slice shows a dot so the hour's extent stays visible.
const BARS: bar::Set = bar::Set {
    empty: "·",
    ..bar::NINE_LEVELS
};

/// Hits per slice of the last hour, `slices` slices oldest first.
pub fn buckets<'a>(
    hits_ms: impl IntoIterator<Item = &'a i64>,
    now_ms: i64,
    slices: usize,
) -> Vec<u64> {
    let slices = slices.max(1);
    let mut out = vec![0u64; slices];
    let start = now_ms - HOUR_MS;
    for &t in hits_ms {
        if t <= start || t > now_ms {
            continue;
        }
        let i = ((t - start - 1) as i128 * slices as i128 / HOUR_MS as i128) as usize;
        out[i.min(slices - 1)] += 1;
    }
    out
}

/// `+` after a key's count of hits when older ones of the hour fell out of what is kept (the
/// newest 1 000 a key), so the count is a floor (`modelrelay_rate_limited_total` in `/metrics`
/// counts every hit, of all keys together).
fn floor_mark(pushed_out: bool) -> &'static str {
    if pushed_out { "+" } else { "" }
}

/// Paint the Limits view into `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let keys = m.rate_limited().len();
    let wanted = keys as u16 + 3;
    let [top, bottom] = Layout::vertical([
        Constraint::Length(wanted.clamp(4, (area.height * 3 / 5).max(4))),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_hits(frame, top, app, t);
    draw_refusals(frame, bottom, app, t);
}

fn draw_hits(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let total: usize = m.rate_limited().values().map(|h| h.hits_ms.len()).sum();
    let more = floor_mark(m.rate_limited().values().any(|h| h.pushed_out_ms.is_some()));
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(
            " Rate-limit hits, {}: {total}{more} on {} key{} ",
            window(app),
            m.rate_limited().len(),
            if m.rate_limited().len() == 1 { "" } else { "s" }
        ),
        t.accent,
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let label_w: u16 = 16 + 1 + 5 + 1 + 5 + 1 + 5 + 1;
    let spark_w = inner.width.saturating_sub(label_w).min(60);
    let head = format!(
        "{:<16} {:>5} {:>5} {:>5} {}",
        "KEY",
        "RPM",
        "HITS",
        "LAST",
        if spark_w >= 20 {
            "hits per slice of the hour →  now"
        } else {
            "last hour"
        }
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(head, t.heading))),
        Rect { height: 1, ..inner },
    );
    if m.rate_limited().is_empty() {
        let p = Paragraph::new(Line::from(Span::styled(
            format!(" no key hit its rate limit ({})", window(app)),
            t.dim,
        )));
        frame.render_widget(p, Rect::new(inner.x, inner.y + 1, inner.width, 1));
        return;
    }
    let rows = inner.height.saturating_sub(1) as usize;
    let first = app.row[3].saturating_sub(rows.saturating_sub(1));
    for (i, hits) in m.rate_limited().values().enumerate().skip(first).take(rows) {
        let y = inner.y + 1 + (i - first) as u16;
        let last = hits
            .hits_ms
            .iter()
            .max()
            .map_or_else(|| "-".to_string(), |at| ago(*at, app.now_ms));
        let count = format!(
            "{}{}",
            hits.hits_ms.len(),
            floor_mark(hits.pushed_out_ms.is_some())
        );
        let label = format!(
            "{:<16} {:>5} {:>5} {:>5} ",
            clip(&hits.key_prefix, 16),
            hits.limit,
            count,
            last
        );
        let style = if i == app.row[3] && app.row[3] > 0 {
            t.selected
        } else {
            t.warn
        };
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(label, style))),
            Rect::new(inner.x, y, label_w.min(inner.width), 1),
        );
        if spark_w > 0 {
            let data = buckets(&hits.hits_ms, app.now_ms, spark_w as usize);
            let spark = Sparkline::default().data(&data).bar_set(BARS).style(t.warn);
            frame.render_widget(spark, Rect::new(inner.x + label_w, y, spark_w, 1));
        }
    }
}

fn draw_refusals(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    // Older refusals of the hour fell out of what is kept: the counts are of the newest ones,
    // and the title says so (a "+" on each count read "403 ×0+" for a code never seen).
    let (kept, short_kept) = if m.refusals_pushed_out() {
        let n = crate::activity::tracker::REFUSALS_KEPT;
        (format!(", the newest {n}"), format!(", newest {n}"))
    } else {
        (String::new(), String::new())
    };
    let count = |s: u16| m.refusals().iter().filter(|r| r.status == s).count();
    let coded = |c: &str| m.refusals().iter().filter(|r| r.code == c).count();
    // 429 here is `budget_held` (the key's own requests hold its money) or `too_many_in_flight`
    // (its plan's requests at once), each said once there is one.
    let mut held = match coded("budget_held") {
        0 => String::new(),
        n => format!("· 429 (held) ×{n} "),
    };
    if let n @ 1.. = coded("too_many_in_flight") {
        held.push_str(&format!("· 429 (at once) ×{n} "));
    }
    let mut title = format!(
        " Refusals, {}{kept}: 402 (no budget) ×{} · 403 (not in plan) ×{} {held}",
        window(app),
        count(402),
        count(403),
    );
    // At 80 columns the words cut the 429s off the end (found by an independent check): the
    // counts alone, the table below says what each code is.
    if title.chars().count() > usize::from(area.width) {
        title = format!(
            " Refusals ({}{short_kept}): 402 ×{} · 403 ×{} {}",
            short_window(app),
            count(402),
            count(403),
            held.replace(" (", " ").replace(") ×", " ×"),
        );
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, t.accent));
    if m.refusals().is_empty() {
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(" no refusals", t.dim))).block(block),
            area,
        );
        return;
    }
    let rows = m.refusals().iter().map(|r| {
        let style = t.warn;
        Row::new(vec![
            Cell::from(clock(r.at_ms)),
            Cell::from(Span::styled(r.status.to_string(), style)),
            Cell::from(clip(&r.code, 24)),
            Cell::from(
                r.key_id
                    .as_deref()
                    .map_or_else(|| "(unknown key)".to_string(), |k| m.key_label(k)),
            ),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(24),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["TIME", "STATUS", "CODE", "KEY"]).style(t.heading))
    .block(block);
    frame.render_widget(table, area);
}

/// The span the view covers: the last hour, or, for a daemon up for less, since it started —
/// what it counts lives in the daemon's memory, so a restart begins it afresh.
/// [`window`] in a few cells: `2m28s` since the start, or `1h`.
fn short_window(app: &App) -> String {
    match app.model.uptime_secs(app.now_ms) {
        Some(up) if up < 3600 => format!("last {}", super::format::secs(up)),
        _ => "last 1h".to_string(),
    }
}

fn window(app: &App) -> String {
    match app.model.uptime_secs(app.now_ms) {
        Some(up) if up < 3600 => {
            format!("since the daemon started {} ago", super::format::secs(up))
        }
        _ => "last hour".to_string(),
    }
}
