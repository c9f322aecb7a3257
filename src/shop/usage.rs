//! A key's usage, for the dashboard page and `GET /api/usage` (Bearer key): plan, budget,
//! spent, remaining, status, requests, tokens, recent requests and daily spend.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::ShopError;
use crate::gateway::error::rate_headers;
use crate::keys::identify::identify;

use crate::keys::{KeyState, KeyStatus, RateCheck};
use crate::money::Usd;
use crate::state::AppState;
use crate::store::usage::{self, TokenTotals, UsageRow};
use crate::store::{Finish, Measured, StoreError};

/// Days of spend the chart shows.
pub const CHART_DAYS: i64 = 30;
/// Recent requests listed.
pub const RECENT_ROWS: u32 = 20;

/// One recent request, as the customer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    /// `x-request-id`.
    pub request_id: String,
    /// RFC 3339 start time.
    pub created_at: String,
    /// Public model name.
    pub model: String,
    /// The API it was made in: `openai` or `anthropic` (SPEC §7: ledger rows carry it).
    pub api: &'static str,
    /// Streamed?
    pub stream: bool,
    /// off_peak or peak.
    pub period: &'static str,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Of which from cache.
    pub cache_hit_tokens: u64,
    /// Of which not.
    pub cache_miss_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Of which reasoning.
    pub reasoning_tokens: u64,
    /// Charged.
    pub cost_usd: Usd,
    /// provider or estimated.
    pub measured: Measured,
    /// How it ended.
    pub finish: Finish,
}

impl From<UsageRow> for RecentRequest {
    fn from(r: UsageRow) -> Self {
        RecentRequest {
            request_id: r.request_id,
            created_at: DateTime::from_timestamp_millis(r.created_at_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            model: r.model,
            api: r.api.as_str(),
            stream: r.stream,
            period: r.period.as_str(),
            prompt_tokens: r.prompt_tokens,
            cache_hit_tokens: r.cache_hit_tokens,
            cache_miss_tokens: r.cache_miss_tokens,
            completion_tokens: r.completion_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_usd: r.cost,
            measured: r.measured,
            finish: r.finish,
        }
    }
}

/// Spend of one UTC day.
#[derive(Debug, Clone, Serialize)]
pub struct DailySpend {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Charged that day.
    pub spent_usd: Usd,
}

/// Everything the dashboard shows about a key.
#[derive(Debug, Clone, Serialize)]
pub struct UsageSummary {
    /// Display prefix (never the key).
    pub prefix: String,
    /// Plan id.
    pub plan: String,
    /// Plan display name.
    pub plan_name: String,
    /// active, exhausted, revoked.
    pub status: KeyStatus,
    /// Granted in total.
    pub budget_usd: Usd,
    /// Charged in total.
    pub spent_usd: Usd,
    /// budget − spent; 0 for a revoked key (nothing of it can be spent: a refund that revoked
    /// it showed the refunded money as still there).
    pub remaining_usd: Usd,
    /// Requests settled.
    pub requests: u64,
    /// Token totals.
    pub tokens: TokenTotals,
    /// Latest requests, newest first.
    pub recent: Vec<RecentRequest>,
    /// The last [`CHART_DAYS`] days, oldest first, every day present (0 when nothing was spent).
    pub daily: Vec<DailySpend>,
}

/// Gather a key's usage (balances from memory, history from the ledger).
pub async fn summary(state: &AppState, key: &KeyState) -> Result<UsageSummary, StoreError> {
    let b = key.balance();
    let id = key.id.clone();
    let today = Utc::now().timestamp_millis() / 86_400_000 * 86_400_000;
    let from = today - (CHART_DAYS - 1) * 86_400_000;
    let (tokens, recent, days) = state
        .store
        .read(move |c| {
            Ok((
                usage::token_totals(c, &id)?,
                usage::recent(c, &id, RECENT_ROWS)?,
                usage::daily_spend(c, &id, from)?,
            ))
        })
        .await?;
    let daily = (0..CHART_DAYS)
        .map(|i| {
            let day = from + i * 86_400_000;
            let spent = days
                .iter()
                .find(|(d, _)| *d == day)
                .map_or(Usd::ZERO, |(_, s)| *s);
            DailySpend {
                date: DateTime::from_timestamp_millis(day)
                    .unwrap_or_default()
                    .format("%Y-%m-%d")
                    .to_string(),
                spent_usd: spent,
            }
        })
        .collect();
    Ok(UsageSummary {
        prefix: key.prefix(),
        plan: key.plan(),
        plan_name: state
            .catalog
            .plan(&key.plan())
            .map_or_else(|| key.plan(), |p| p.name.clone()),
        status: key.status(),
        budget_usd: b.budget,
        spent_usd: b.spent,
        remaining_usd: if key.status() == KeyStatus::Revoked {
            Usd::ZERO
        } else {
            b.remaining()
        },
        requests: key.requests(),
        tokens,
        recent: recent.into_iter().map(RecentRequest::from).collect(),
        daily,
    })
}

/// `GET /api/usage` with `Authorization: Bearer sk-gateway-…`: the key's [`UsageSummary`].
pub async fn api_usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<UsageSummary>, Response> {
    // A revoked key may still look at its history.
    let key = identify(&state.keys, &headers).map_err(|e| ShopError::from(e).into_response())?;
    let _turn = key.start_usage_look_up().map_err(|rate| {
        crate::gateway::admission::rate_limited(&state, &key, &rate);
        refused(&rate)
    })?;
    summary(&state, &key).await.map(Json).map_err(|e| {
        tracing::error!(error = %e, "usage query failed");
        ShopError::UsageUnavailable.into_response()
    })
}

/// A look-up refused by the key's look-up limit: the storefront's 429, with the limit's own
/// headers as the API's 429s carry them, and a `Retry-After` of when the limit (or the look-up
/// in progress) lets the next one through rather than the storefront's minute.
fn refused(rate: &RateCheck) -> Response {
    let mut r = ShopError::TooManyUsageReads.into_response();
    let h = r.headers_mut();
    rate_headers(rate, h);
    let secs = rate.reset.as_secs() + u64::from(rate.reset.subsec_nanos() > 0);
    // Refused with the limit not reached: another look-up of the key is running.
    let secs = if rate.allowed { 1 } else { secs.max(1) };
    h.insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}
