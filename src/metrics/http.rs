//! The HTTP side of observability: the middleware that counts responses, `GET /metrics`
//! and `GET /healthz`. The counters themselves are in [`super`], below the shared state.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{UPSTREAM_CHECK_TTL, UpstreamHealth, escape, head, route_slot};
use crate::keys::KeyStatus;
use crate::state::{AppState, ClientIp};

/// Count every response by route template and status (a middleware).
pub async fn count_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = route_slot(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let resp = next.run(req).await;
    state.metrics.http_response(route, resp.status().as_u16());
    resp
}

/// Figures read from the database when the page is scraped.
struct DbFigures {
    revenue_nanos: i64,
    orders: Vec<(String, i64)>,
}

async fn db_figures(state: &AppState) -> Option<DbFigures> {
    let read = state.store.read(|c| {
        let revenue_nanos: i64 = c.query_row(
            "SELECT COALESCE(SUM(amount_nanos), 0) FROM orders WHERE status = 'paid'",
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
    render_keys(&mut out, &state);
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
        "Paid orders (refunds excluded), nano-USD, all time.",
    );
    let _ = writeln!(out, "modelrelay_revenue_nanousd {}", f.revenue_nanos);
    head(
        out,
        "modelrelay_revenue_usd",
        "gauge",
        "Paid orders (refunds excluded), USD, all time.",
    );
    let _ = writeln!(
        out,
        "modelrelay_revenue_usd {}",
        f.revenue_nanos as f64 / 1e9
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

/// Is upstream reachable? A `GET <base_url>/models` (free, no tokens) with a short timeout;
/// the answer is reused for 30 s so probes cannot hammer DeepSeek.
pub async fn upstream_health(state: &AppState) -> UpstreamHealth {
    let mut cached = state.metrics.upstream_check.lock().await;
    if let Some((at, h)) = cached.as_ref()
        && at.elapsed() < UPSTREAM_CHECK_TTL
    {
        return h.clone();
    }
    let started = Instant::now();
    let result = probe(&state.config.upstream).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let h = match result {
        Ok(status) => {
            let error = match status {
                401 | 403 => Some(format!("upstream rejected the API key ({status})")),
                s if s >= 500 => Some(format!("upstream answered {s}")),
                _ => None,
            };
            UpstreamHealth {
                ok: error.is_none(),
                status: Some(status),
                latency_ms,
                error,
            }
        }
        Err(e) => UpstreamHealth {
            ok: false,
            status: None,
            latency_ms,
            error: Some(e),
        },
    };
    *cached = Some((Instant::now(), h.clone()));
    h
}

/// `GET <base_url>/models` with the operator's key and a 5 s limit: the HTTP status, or why
/// there was none (never upstream's address or key).
async fn probe(c: &crate::config::UpstreamConfig) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(c.connect_timeout_secs.clamp(1, 5)))
        .timeout(Duration::from_secs(5))
        .user_agent(concat!("modelrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|_| "cannot build the HTTP client".to_string())?;
    let resp = client
        .get(format!("{}/models", c.base_url.trim_end_matches('/')))
        .bearer_auth(&c.api_key)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            }
        })?;
    Ok(resp.status().as_u16())
}

/// `GET /healthz`: 200 when the database answers `SELECT 1` through the reader and upstream
/// is reachable; 503 naming the failing part otherwise.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.store.read(|c| {
        let one: i64 = c.query_row("SELECT 1", [], |r| r.get(0))?;
        Ok(one)
    });
    let database = match tokio::time::timeout(Duration::from_secs(5), db).await {
        Ok(Ok(1)) => Ok(()),
        Ok(Ok(n)) => Err(format!("SELECT 1 returned {n}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    let upstream = upstream_health(&state).await;
    let ok = database.is_ok() && upstream.ok;
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": match &database {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        },
        "upstream": {
            "status": if upstream.ok { "ok" } else { "error" },
            "http_status": upstream.status,
            "latency_ms": upstream.latency_ms,
            "error": upstream.error,
        },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}
