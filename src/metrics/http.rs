//! The HTTP side of observability: `GET /metrics` and `GET /healthz` (every response is counted
//! by [`crate::state::around`], for the router's routes and the shortcut's alike). The counters
//! themselves are in [`super`], below the shared state.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{escape, head};
use crate::keys::KeyStatus;
use crate::state::{AppState, ClientIp};

/// Figures read from the database when the page is scraped.
struct DbFigures {
    revenue_nanos: i64,
    orders: Vec<(String, i64)>,
}

async fn db_figures(state: &AppState) -> Option<DbFigures> {
    let read = state.store.read(|c| {
        let revenue_nanos: i64 = c.query_row(
            "SELECT COALESCE(SUM(amount_nanos - refunded_nanos), 0) FROM orders WHERE status = 'paid'",
            [],
            |r| r.get(0),
        )?;
        let mut stmt = c.prepare("SELECT status, COUNT(*) FROM orders GROUP BY status")?;
        let orders = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DbFigures {
            revenue_nanos,
            orders,
        })
    });
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: database figures unavailable");
            None
        }
        Err(_) => None,
    }
}

/// `GET /metrics`: Prometheus text format. Only for loopback clients unless
/// `server.metrics_public` is set (behind a proxy, the forwarded client address counts).
pub async fn metrics(State(state): State<Arc<AppState>>, ip: ClientIp) -> Response {
    if !state.config.server.metrics_public && !ip.0.is_loopback() {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let mut out = String::with_capacity(16 * 1024);
    state.metrics.render_counters(&mut out);
    head(
        &mut out,
        "modelrelay_requests_in_flight",
        "gauge",
        "Chat requests holding money right now (streams included).",
    );
    let _ = writeln!(
        out,
        "modelrelay_requests_in_flight {}",
        state.in_flight.get()
    );
    render_store(&mut out, &state);
    render_keys(&mut out, &state);
    super::upstream::render(&mut out, &state);
    if let Some(f) = db_figures(&state).await {
        render_db_figures(&mut out, &f);
    }
    head(
        &mut out,
        "modelrelay_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    let _ = writeln!(
        out,
        "modelrelay_uptime_seconds {}",
        state.started.elapsed().as_secs()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The ledger's database: whether it takes commits, and its WAL's size (an operator's
/// `sqlite3` left in a transaction, or a lock another program holds, showed only in the log
/// and `/healthz`; found by an independent check).
fn render_store(out: &mut String, state: &AppState) {
    head(
        out,
        "modelrelay_database_commits_failing",
        "gauge",
        "1 while the database takes no commits (a full disk, a lock another program holds).",
    );
    let _ = writeln!(
        out,
        "modelrelay_database_commits_failing {}",
        u8::from(state.store.commits_failing())
    );
    head(
        out,
        "modelrelay_database_wal_bytes",
        "gauge",
        "Size of the database's WAL file (usually under ~40 MiB; growing past that: another \
         program holds a read transaction open).",
    );
    let _ = writeln!(
        out,
        "modelrelay_database_wal_bytes {}",
        state.store.wal_bytes()
    );
}

/// API keys by status, counted from the live key table.
fn render_keys(out: &mut String, state: &AppState) {
    let mut by_status = [0u64; 3];
    for k in state.keys.all() {
        let i = match k.status() {
            KeyStatus::Active => 0,
            KeyStatus::Exhausted => 1,
            KeyStatus::Revoked => 2,
        };
        by_status[i] += 1;
    }
    head(out, "modelrelay_keys", "gauge", "API keys by status.");
    for (status, n) in [KeyStatus::Active, KeyStatus::Exhausted, KeyStatus::Revoked]
        .iter()
        .zip(by_status)
    {
        let _ = writeln!(out, "modelrelay_keys{{status=\"{}\"}} {n}", status.as_str());
    }
}

/// Revenue and orders, from the database.
fn render_db_figures(out: &mut String, f: &DbFigures) {
    head(
        out,
        "modelrelay_revenue_nanousd",
        "gauge",
        "Paid orders less what was refunded of them, nano-USD, all time.",
    );
    let _ = writeln!(out, "modelrelay_revenue_nanousd {}", f.revenue_nanos);
    head(
        out,
        "modelrelay_revenue_usd",
        "gauge",
        "Paid orders less what was refunded of them, USD, all time.",
    );
    // Written from the integer, not through a float: exact to the nano-dollar at any size.
    let _ = writeln!(
        out,
        "modelrelay_revenue_usd {}",
        crate::money::Usd::from_nanos(f.revenue_nanos)
    );
    head(
        out,
        "modelrelay_orders",
        "gauge",
        "Orders by status, all time.",
    );
    for (status, n) in &f.orders {
        let _ = writeln!(
            out,
            "modelrelay_orders{{status=\"{}\"}} {n}",
            escape(status)
        );
    }
}
