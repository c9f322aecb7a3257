//! The Live view: streams in flight (growing as they generate) over the last finished requests.
//!
//! Columns are given out in the order the operator reads them: the model keeps its whole name
//! (squeezed only below 80 columns), and a request id, which is for finding a line in the logs,
//! gets what is left, shortened to its random tail first. Which dialect a request came in
//! (`openai`, `anthropic`) and which upstream account served it come next, when there is room.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::Theme;
use super::format::{clip, clip_start, clock, column_widths, cost, key_in, millis, whole};
use crate::console::app::App;
use crate::status::{Finish, Measured};

/// A request id in full: `req_` and 24 characters.
const REQUEST_FULL: u16 = 28;
/// The narrowest request-id column worth showing: `…` and the last 11 (random) characters.
const REQUEST_MIN: u16 = 12;
/// The widest model column (a longer name is cut).
const MODEL_MAX: usize = 24;

/// The dialect column: `anthropic` is the longest value.
const API_W: u16 = 9;
/// The widest account column (a longer name is cut).
const ACCOUNT_MAX: usize = 16;

/// The account column's width: the longest name it shows, at least its heading.
fn account_width<'a>(names: impl Iterator<Item = &'a str>) -> u16 {
    let longest = names.map(|m| m.chars().count()).max().unwrap_or(0);
    longest.clamp("ACCOUNT".len(), ACCOUNT_MAX) as u16
}

/// An account name as a cell (`-` until known).
fn account_cell(name: &str, width: u16) -> Cell<'static> {
    if name.is_empty() {
        Cell::from("-")
    } else {
        Cell::from(clip(name, width as usize))
    }
}

/// The model column's width: the longest name it shows, at least its heading.
fn model_width<'a>(models: impl Iterator<Item = &'a str>) -> u16 {
    let longest = models.map(|m| m.chars().count()).max().unwrap_or(0);
    longest.clamp("MODEL".len(), MODEL_MAX) as u16
}

/// Paint the Live view into `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    // In-flight rows get what they need up to half the view; finished requests get the rest.
    let wanted = m.in_flight_count().max(1) as u16 + 2;
    let [top, bottom] = Layout::vertical([
        Constraint::Length(wanted.min(area.height / 2).max(3)),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_in_flight(frame, top, app, t);
    draw_finished(frame, bottom, app, t);
}

fn draw_in_flight(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" In flight ({}) ", m.in_flight_count()),
        t.accent,
    ));
    if m.in_flight_count() == 0 {
        let p =
            Paragraph::new(Line::from(Span::styled(" no requests in flight", t.dim))).block(block);
        frame.render_widget(p, area);
        return;
    }
    let in_flight = m.in_flight();
    let model_w = model_width(in_flight.iter().map(|r| r.model.as_str()));
    let account_w = account_width(in_flight.iter().map(|r| r.account.as_str()));
    let mut widths = vec![16, 8, model_w, 7, 7, 6];
    let mut heads = vec!["KEY", "PLAN", "MODEL", "ELAPSED", "TOKENS", "TOK/S"];
    // The client address takes at least 7 columns; the optional ones go by priority.
    let mut spare = area
        .width
        .saturating_sub(widths.iter().sum::<u16>() + widths.len() as u16 + 7);
    let mut room = |w: u16| {
        let fits = spare > w;
        if fits {
            spare -= w + 1;
        }
        fits
    };
    let (api, account, request) = (room(API_W), room(account_w), room(REQUEST_FULL));
    for (on, w, head) in [
        (api, API_W, "API"),
        (account, account_w, "ACCOUNT"),
        (request, REQUEST_FULL, "REQUEST"),
    ] {
        if on {
            widths.push(w);
            heads.push(head);
        }
    }
    let fixed: u16 = widths.iter().sum::<u16>() + widths.len() as u16;
    let ip_width = area.width.saturating_sub(fixed).max(7);
    heads.push("CLIENT");
    let mut constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    constraints.push(Constraint::Min(7));
    // Numbers are written for the width their column gets (narrow, less than it asks for).
    let got = column_widths(&constraints, area.width, 0);
    let got = |i: usize| got.get(i).copied().unwrap_or(0) as usize;
    let rows = in_flight.into_iter().map(|r| {
        let elapsed = (app.now_ms - r.started_ms).max(0) as u64;
        let rate = if elapsed > 0 {
            r.output_tokens as f64 * 1000.0 / elapsed as f64
        } else {
            0.0
        };
        let mut cells = vec![
            Cell::from(key_in(&r.key_prefix, got(0))),
            Cell::from(r.plan.clone()),
            Cell::from(clip(&r.model, model_w as usize)),
            Cell::from(Line::from(whole(millis(elapsed), got(3))).right_aligned()),
            Cell::from(Line::from(whole(r.output_tokens.to_string(), got(4))).right_aligned()),
            Cell::from(Line::from(whole(format!("{rate:.1}"), got(5))).right_aligned()),
        ];
        if api {
            cells.push(Cell::from(r.api.as_str()));
        }
        if account {
            cells.push(account_cell(&r.account, account_w));
        }
        if request {
            cells.push(Cell::from(clip_start(&r.request_id, REQUEST_FULL as usize)));
        }
        let ip = r.client_ip.as_deref().unwrap_or("-");
        cells.push(Cell::from(clip(ip, ip_width as usize)));
        Row::new(cells)
    });
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .block(block);
    frame.render_widget(table, area);
}

/// Short words for how a request ended.
fn finish_word(f: Finish) -> &'static str {
    match f {
        Finish::Complete => "ok",
        Finish::ClientAbort => "client left",
        Finish::UpstreamError => "upstream error",
        Finish::UpstreamTimeout => "upstream timeout",
        Finish::Rejected => "rejected",
        Finish::Shutdown => "cut at shutdown",
    }
}

/// The finished table's columns at `width`, the model `model` wide if it fits: the fixed ones,
/// then, as room allows and in this order of priority, the dialect, the account (`account`
/// wide), the request id (the logs' handle), and how each request ended.
fn finished_columns(width: u16, model: u16, account_w: u16) -> (Vec<u16>, Vec<&'static str>) {
    let mut widths: Vec<u16> = vec![8, 16, model, 4, 10, 7, 5, 6];
    let mut heads = vec![
        "TIME", "KEY", "MODEL", "HTTP", "COST", "LATENCY", "TTFT", "OUT",
    ];
    // Columns are one space apart.
    let used = |w: &[u16]| w.iter().sum::<u16>() + w.len() as u16 - 1;
    let others = used(&widths) - model;
    widths[2] = model.min(width.saturating_sub(others)).max(6);
    let mut spare = width.saturating_sub(used(&widths));
    let mut room = |w: u16| {
        let fits = spare > w;
        if fits {
            spare -= w + 1;
        }
        fits
    };
    // How each ended first (an operator's first question about a finished request), then the
    // dialect and the account, then the request id.
    let end = room(16);
    let api = room(API_W);
    let account = room(account_w);
    let request = room(REQUEST_MIN);
    // What is left after the others widens the request id, up to its whole length.
    let request_w = REQUEST_MIN + spare.min(REQUEST_FULL - REQUEST_MIN);
    for (on, w, head) in [
        (api, API_W, "API"),
        (account, account_w, "ACCOUNT"),
        (end, 16, "END"),
        (request, request_w, "REQUEST"),
    ] {
        if on {
            widths.push(w);
            heads.push(head);
        }
    }
    (widths, heads)
}

fn draw_finished(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(
            " Finished (last {}, newest first, UTC) ",
            m.finished().len()
        ),
        t.accent,
    ));
    if m.finished().is_empty() {
        let p =
            Paragraph::new(Line::from(Span::styled(" nothing finished yet", t.dim))).block(block);
        frame.render_widget(p, area);
        return;
    }
    let model_w = model_width(m.finished().iter().map(|r| r.model.as_str()));
    let account_w = account_width(m.finished().iter().map(|r| r.account.as_str()));
    let (widths, heads) = finished_columns(area.width, model_w, account_w);
    let model_w = widths[2];
    let has = |h: &str| heads.contains(&h);
    let (api, account, ends) = (has("API"), has("ACCOUNT"), has("END"));
    let request_w = heads
        .iter()
        .position(|h| *h == "REQUEST")
        .map(|i| widths[i] as usize);
    let constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    let selected = (app.row[0] > 0).then_some(app.row[0]);
    // The cost is written for the width its column gets (narrow, less than it asks for).
    let got = column_widths(&constraints, area.width, u16::from(selected.is_some()));
    let got = |i: usize| got.get(i).copied().unwrap_or(0) as usize;
    let cost_w = got(4);
    let rows = m.finished().iter().map(|r| {
        let status_style = match r.status {
            200..=299 => t.good,
            400..=499 => t.warn,
            _ => t.bad,
        };
        let estimated = if r.measured == Measured::Estimated {
            "~"
        } else {
            ""
        };
        let mut cells = vec![
            Cell::from(clock(r.at_ms)),
            Cell::from(
                r.key_prefix
                    .as_deref()
                    .map_or_else(|| clip(&r.key_id, 16), |p| key_in(p, got(1))),
            ),
            Cell::from(clip(&r.model, model_w as usize)),
            Cell::from(Span::styled(r.status.to_string(), status_style)),
            Cell::from(
                Line::from(whole(format!("{estimated}{}", cost(r.cost_usd)), cost_w))
                    .right_aligned(),
            ),
            Cell::from(Line::from(whole(millis(r.latency_ms), got(5))).right_aligned()),
            Cell::from(
                Line::from(whole(r.ttft_ms.map_or_else(|| "-".into(), millis), got(6)))
                    .right_aligned(),
            ),
            Cell::from(Line::from(whole(r.completion_tokens.to_string(), got(7))).right_aligned()),
        ];
        if api {
            cells.push(Cell::from(r.api.as_str()));
        }
        if account {
            cells.push(account_cell(&r.account, account_w));
        }
        if ends {
            let style = if r.finish == Finish::Complete {
                t.dim
            } else {
                t.warn
            };
            cells.push(Cell::from(Span::styled(finish_word(r.finish), style)));
        }
        if let Some(w) = request_w {
            cells.push(Cell::from(clip_start(&r.request_id, w)));
        }
        Row::new(cells)
    });
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .row_highlight_style(t.selected)
        .block(block);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}
