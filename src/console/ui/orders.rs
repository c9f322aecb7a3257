//! The Orders view: the newest orders with their status, kind (purchase or top-up) and the key
//! each one paid for or credited; below them, the outbox of receipts and notices.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::Theme;
use super::format::{clip, column_widths, key_in, short_time, usd_in};
use crate::activity::protocol::OrderView;
use crate::console::app::App;
use crate::kinds::{MailStatus, OrderKind};
use crate::status::OrderStatus;

/// Rows of the outbox shown at most.
const MAIL_ROWS: u16 = 8;

/// Paint the Orders view into `area`: orders, then the outbox when it holds anything.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    if app.model.mail.is_empty() {
        draw_orders(frame, area, app, t);
        return;
    }
    let mail_h = (app.model.mail.len() as u16 + 2).min(MAIL_ROWS + 2);
    let [orders, mail] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(mail_h)]).areas(area);
    draw_orders(frame, orders, app, t);
    draw_mail(frame, mail, app, t);
}

fn draw_orders(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let wide = area.width >= 120;
    // Narrow, a top-up's plan is marked `+` instead of a column of its own.
    let legend = if wide { "" } else { ", + top-up" };
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" Orders ({}, newest first, UTC{legend}) ", m.orders.len()),
        t.accent,
    ));
    if m.orders.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(" no orders yet", t.dim))).block(block),
            area,
        );
        return;
    }
    // Narrow: the order id and key are cut to what tells them apart; the email takes the rest.
    let (id_w, key_w, kind_w) = if wide { (24, 21, 6) } else { (14, 16, 0) };
    let widths: Vec<u16> = [id_w, 11, kind_w, 8, 9, 8, key_w]
        .into_iter()
        .filter(|w| *w > 0)
        .collect();
    let fixed: u16 = widths.iter().sum::<u16>() + widths.len() as u16;
    let email_w = area.width.saturating_sub(fixed).max(8) as usize;
    let mut constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    constraints.push(Constraint::Min(8));
    let selected = (app.row[2] > 0).then_some(app.row[2]);
    // The amount is written for the width its column gets (narrow, less than it asks for).
    let got = column_widths(&constraints, area.width, u16::from(selected.is_some()));
    let amount_w = got.get(if wide { 4 } else { 3 }).copied().unwrap_or(0) as usize;
    // The key is written for the width its column gets, too.
    let key_got = got.get(if wide { 6 } else { 5 }).copied().unwrap_or(key_w);
    let shape = Shape {
        wide,
        id_w,
        key_w: key_got,
        email_w,
        amount_w,
    };
    let rows = m.orders.iter().map(|o| order_row(app, o, &shape, t));
    let heads: Vec<&str> = [
        "ORDER", "TIME", "KIND", "PLAN", "AMOUNT", "STATUS", "KEY", "EMAIL",
    ]
    .into_iter()
    .filter(|h| wide || *h != "KIND")
    .collect();
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .row_highlight_style(t.selected)
        .block(block);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

/// Column widths of the orders table.
#[derive(Clone, Copy)]
struct Shape {
    wide: bool,
    id_w: u16,
    key_w: u16,
    email_w: usize,
    amount_w: usize,
}

/// One order's row.
fn order_row<'a>(app: &App, o: &'a OrderView, shape: &Shape, t: &Theme) -> Row<'a> {
    let m = &app.model;
    let Shape {
        wide,
        id_w,
        key_w,
        email_w,
        amount_w,
    } = *shape;
    // Part of the price refunded (the order stays paid): said, or the view showed no change.
    let partly = crate::activity::views::partly_refunded(o);
    let status_style = match o.status {
        OrderStatus::Paid if partly => t.warn,
        OrderStatus::Paid => t.good,
        OrderStatus::Created | OrderStatus::Pending | OrderStatus::Review => t.warn,
        OrderStatus::Failed | OrderStatus::Refunded => t.bad,
    };
    let kind = match o.kind {
        OrderKind::Purchase => Span::raw("buy"),
        OrderKind::TopUp => Span::styled("top-up", t.accent),
    };
    // The key's display prefix reads better than its id, when the key is known.
    let key = o.key_id.as_deref().map_or_else(
        || "-".to_string(),
        |id| {
            if wide {
                id.to_string()
            } else {
                m.keys.get(id).map_or_else(
                    || clip(id, key_w as usize),
                    |k| key_in(&k.prefix, key_w as usize),
                )
            }
        },
    );
    let plan = match (wide, o.kind) {
        (false, OrderKind::TopUp) => Span::styled(clip(&format!("+{}", o.plan), 8), t.accent),
        _ => Span::raw(clip(&o.plan, 8)),
    };
    let mut cells = vec![
        Cell::from(clip(&o.order_id, id_w as usize)),
        Cell::from(short_time(&o.created_at)),
    ];
    if wide {
        cells.push(Cell::from(kind));
    }
    cells.extend([
        Cell::from(plan),
        Cell::from(Line::from(usd_in(o.amount_usd, amount_w)).right_aligned()),
        Cell::from(Span::styled(
            if partly {
                "part-ref"
            } else {
                o.status.as_str()
            },
            status_style,
        )),
        Cell::from(key),
        Cell::from(clip(&crate::text::visible(&o.email), email_w)),
    ]);
    Row::new(cells)
}

fn draw_mail(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let mail = &app.model.mail;
    let waiting = mail
        .iter()
        .filter(|m| m.status == MailStatus::Queued)
        .count();
    let failed = mail
        .iter()
        .filter(|m| m.status == MailStatus::Failed)
        .count();
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" Outbox ({waiting} queued, {failed} failed; `modelrelay mail retry ID`) "),
        t.accent,
    ));
    let widths = [6u16, 11, 11, 7, 3, 26];
    let fixed: u16 = widths.iter().sum::<u16>() + widths.len() as u16;
    let rest = area.width.saturating_sub(fixed).max(8) as usize;
    let rows = mail.iter().take(MAIL_ROWS as usize).map(|m| {
        let style = match m.status {
            MailStatus::Sent => t.good,
            MailStatus::Queued => t.warn,
            MailStatus::Failed => t.bad,
        };
        let about = m.order_id.as_deref().or(m.key_id.as_deref()).unwrap_or("-");
        let note = match &m.last_error {
            Some(e) if m.status != MailStatus::Sent => format!("{about} · {e}"),
            _ => about.to_string(),
        };
        Row::new(vec![
            Cell::from(Line::from(m.id.to_string()).right_aligned()),
            Cell::from(short_time(&m.created_at)),
            Cell::from(m.kind.as_str()),
            Cell::from(Span::styled(m.status.as_str(), style)),
            Cell::from(m.lang.as_str()),
            Cell::from(clip(&crate::text::visible(&m.recipient), 26)),
            Cell::from(clip(&note, rest)),
        ])
    });
    let mut constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    constraints.push(Constraint::Min(8));
    let heads = ["ID", "QUEUED", "KIND", "STATUS", "LNG", "TO", "ABOUT"];
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .block(block);
    frame.render_widget(table, area);
}
