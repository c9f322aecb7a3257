//! The Orders view: the newest orders with their status and the key each one paid for.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::Theme;
use super::format::{clip, short_time, usd};
use crate::console::app::App;
use crate::status::OrderStatus;

/// Paint the Orders view into `area`.
pub fn draw(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = &app.model;
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" Orders ({}, newest first, UTC) ", m.orders.len()),
        t.accent,
    ));
    if m.orders.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(" no orders yet", t.dim))).block(block),
            area,
        );
        return;
    }
    let wide = area.width >= 120;
    // Narrow: the order id and key are cut to what tells them apart; the email takes the rest.
    let (id_w, key_w) = if wide { (24, 21) } else { (14, 16) };
    let widths: Vec<u16> = vec![id_w, 11, 8, 9, 8, key_w];
    let fixed: u16 = widths.iter().sum::<u16>() + widths.len() as u16;
    let email_w = area.width.saturating_sub(fixed).max(8) as usize;
    let rows = m.orders.iter().map(|o| {
        let status_style = match o.status {
            OrderStatus::Paid => t.good,
            OrderStatus::Created | OrderStatus::Pending => t.warn,
            OrderStatus::Failed | OrderStatus::Refunded => t.bad,
        };
        // The key's display prefix reads better than its id, when the key is known.
        let key = o.key_id.as_deref().map_or_else(
            || "-".to_string(),
            |id| {
                if wide {
                    id.to_string()
                } else {
                    m.keys
                        .get(id)
                        .map_or_else(|| clip(id, key_w as usize), |k| k.prefix.clone())
                }
            },
        );
        Row::new(vec![
            Cell::from(clip(&o.order_id, id_w as usize)),
            Cell::from(short_time(&o.created_at)),
            Cell::from(clip(&o.plan, 8)),
            Cell::from(Line::from(usd(o.amount_usd)).right_aligned()),
            Cell::from(Span::styled(o.status.as_str(), status_style)),
            Cell::from(key),
            Cell::from(clip(&o.email, email_w)),
        ])
    });
    let mut constraints: Vec<Constraint> = widths.into_iter().map(Constraint::Length).collect();
    constraints.push(Constraint::Min(8));
    let heads = ["ORDER", "TIME", "PLAN", "AMOUNT", "STATUS", "KEY", "EMAIL"];
    let table = Table::new(rows, constraints)
        .header(Row::new(heads).style(t.heading))
        .row_highlight_style(t.selected)
        .block(block);
    let mut state = TableState::default().with_selected((app.row[2] > 0).then_some(app.row[2]));
    frame.render_stateful_widget(table, area, &mut state);
}
