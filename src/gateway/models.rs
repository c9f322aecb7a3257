//! `GET /v1/models`, `GET /v1/models/{id}`, and the legacy OpenAI billing endpoints that chat
//! front-ends (NextChat, LobeChat…) call to show a balance.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::auth::authenticate;
use super::error::GatewayError;
use crate::money::Usd;
use crate::state::AppState;
use crate::store::usage;

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "deepseek"})
}

/// The models the key's plan allows.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let key = authenticate(&state, &headers)?;
    let data: Vec<Value> = state
        .catalog
        .plan(&key.plan())
        .map(|p| p.models.iter().map(|m| model_object(m)).collect())
        .unwrap_or_default();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// One model, if the key's plan allows it.
pub async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let key = authenticate(&state, &headers)?;
    let Ok(Path(id)) = id else {
        return Err(GatewayError::ModelNotFound("(not valid UTF-8)".into()));
    };
    if state.catalog.model_by_id(&id).is_none() {
        return Err(GatewayError::ModelNotFound(id));
    }
    let allowed = state
        .catalog
        .plan(&key.plan())
        .is_some_and(|p| p.models.contains(&id));
    if !allowed {
        return Err(GatewayError::ModelNotAllowed(id));
    }
    Ok(Json(model_object(&id)).into_response())
}

/// A money amount as a JSON number, written from its exact decimal (no float in between).
fn number(s: String) -> Box<RawValue> {
    RawValue::from_string(s)
        .unwrap_or_else(|_| RawValue::from_string("0".into()).unwrap_or_default())
}

/// `GET /v1/dashboard/billing/subscription`: the key's budget as the "hard limit".
pub async fn subscription(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let key = authenticate(&state, &headers)?;
    let b = key.balance();
    let plan_title = state
        .catalog
        .plan(&key.plan())
        .map_or_else(|| key.plan(), |p| p.name.clone());
    let budget = number(b.budget.to_string());
    Ok(Json(json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "canceled": false,
        "canceled_at": null,
        "delinquent": null,
        "access_until": 0,
        "soft_limit": 0,
        "hard_limit": 0,
        "system_hard_limit": 0,
        "soft_limit_usd": budget,
        "hard_limit_usd": budget,
        "system_hard_limit_usd": budget,
        "plan": {"id": key.plan(), "title": plan_title},
        "account_name": key.prefix(),
        "remaining_usd": number(b.remaining().to_string()),
        "status": key.status(),
    }))
    .into_response())
}

/// Query of the usage endpoint: `YYYY-MM-DD`, end exclusive.
#[derive(Deserialize)]
pub struct UsageQuery {
    start_date: Option<String>,
    end_date: Option<String>,
}

fn date_ms(s: &str, param: &'static str) -> Result<i64, GatewayError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .ok_or(GatewayError::InvalidRequest {
            message: format!("`{param}` must be a date such as 2026-11-01."),
            param: Some(param),
        })
}

/// `GET /v1/dashboard/billing/usage`: spend in US cents between two dates (all time without).
pub async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, GatewayError> {
    let key = authenticate(&state, &headers)?;
    let Ok(Query(q)) = q else {
        return Err(GatewayError::InvalidRequest {
            message: "Give `start_date` and `end_date` at most once each, as YYYY-MM-DD.".into(),
            param: None,
        });
    };
    let spent: Usd = match (&q.start_date, &q.end_date) {
        (None, None) => key.balance().spent,
        (start, end) => {
            let from = start
                .as_deref()
                .map(|s| date_ms(s, "start_date"))
                .transpose()?
                .unwrap_or(0);
            let to = end
                .as_deref()
                .map(|s| date_ms(s, "end_date"))
                .transpose()?
                .unwrap_or(i64::MAX);
            let id = key.id.clone();
            state
                .store
                .read(move |c| usage::spent_between(c, &id, from, to))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "usage query failed");
                    GatewayError::Internal
                })?
        }
    };
    Ok(Json(json!({
        "object": "list",
        "total_usage": number(spent.cents_string()),
        "daily_costs": [],
    }))
    .into_response())
}
