//! `GET /v1/models`, `GET /v1/models/{id}`, and the legacy OpenAI billing endpoints that chat
//! front-ends (NextChat, LobeChat…) call to show a balance.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::anthropic::Anthropic;
use super::auth::authenticate;
use super::dialect::Dialect;
use super::error::GatewayError;
use crate::keys::KeyState;
use crate::money::Usd;
use crate::state::AppState;
use crate::store::usage;

fn model_object(id: &str, anthropic: bool) -> Value {
    if anthropic {
        json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
    } else {
        json!({"id": id, "object": "model", "created": 0, "owned_by": "deepseek"})
    }
}

/// Whether the caller is an Anthropic client: their SDKs send `anthropic-version` on every
/// call, and Claude Code its key as `x-api-key`. They get Anthropic's shapes (the list with
/// `has_more`, errors with `type: "error"`) and may send the key either way.
fn is_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
        || (headers.contains_key("x-api-key") && !headers.contains_key(AUTHORIZATION))
}

/// Anthropic's paging of the model list: `limit` (1 to 1 000, 20 by default), and the page
/// right after `after_id` or right before `before_id`. Its SDKs page on with `after_id` while
/// `has_more`; OpenAI's list has no pages.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
}

impl Page {
    /// The page of `ids`, and whether more lie beyond it in the direction asked.
    fn of<'a>(&self, ids: &'a [&'a String]) -> Result<(&'a [&'a String], bool), GatewayError> {
        let bad = |message: &str, param| GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param),
        };
        let limit = match self.limit.as_deref() {
            None => 20,
            Some(l) => l
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| bad("limit: an integer from 1 to 1000.", "limit"))?,
        };
        // A cursor that names no model of the list: an empty page.
        let at = |id: &str| ids.iter().position(|m| m.as_str() == id);
        Ok(match (&self.after_id, &self.before_id) {
            (Some(_), Some(_)) => {
                return Err(bad("Give after_id or before_id, not both.", "before_id"));
            }
            (Some(after), None) => {
                let start = at(after).map_or(ids.len(), |i| i + 1);
                let end = start.saturating_add(limit).min(ids.len());
                (&ids[start..end], end < ids.len())
            }
            (None, Some(before)) => {
                let end = at(before).unwrap_or(0);
                let start = end.saturating_sub(limit);
                (&ids[start..end], start > 0)
            }
            (None, None) => {
                let end = limit.min(ids.len());
                (&ids[..end], end < ids.len())
            }
        })
    }
}

/// The models the key's plan allows.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    let anthropic = is_anthropic(&headers);
    list_as(&state, &headers, anthropic, page)
}

/// [`list`] under `/anthropic`: Anthropic's shape whatever the headers.
pub async fn list_anthropic(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    list_as(&state, &headers, true, page)
}

fn list_as(
    state: &AppState,
    headers: &HeaderMap,
    anthropic: bool,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    let key = match key_of(state, headers, anthropic) {
        Ok(k) => k,
        Err(e) => return respond_error(e, anthropic),
    };
    let ids: Vec<&String> = state
        .catalog
        .plan(&key.plan())
        .map(|p| p.models.iter().collect())
        .unwrap_or_default();
    if anthropic {
        // A query that cannot be read (a parameter twice, bad escapes): said, not taken for
        // none (found by an independent re-check).
        let Ok(Query(page)) = page else {
            let e = GatewayError::InvalidRequest {
                message: "The query could not be read: give limit, after_id and before_id at \
                          most once each."
                    .into(),
                param: None,
            };
            return respond_error(e, true);
        };
        let (ids, has_more) = match page.of(&ids) {
            Ok(p) => p,
            Err(e) => return respond_error(e, true),
        };
        let data: Vec<Value> = ids.iter().map(|m| model_object(m, true)).collect();
        return Json(json!({"data": data, "has_more": has_more,
            "first_id": ids.first(), "last_id": ids.last()}))
        .into_response();
    }
    let data: Vec<Value> = ids.iter().map(|m| model_object(m, false)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// The key, found the way the caller's dialect sends it.
fn key_of(
    state: &AppState,
    headers: &HeaderMap,
    anthropic: bool,
) -> Result<Arc<KeyState>, GatewayError> {
    if anthropic {
        Anthropic::authenticate(&state.keys, headers)
    } else {
        authenticate(state, headers)
    }
}

/// An error in the caller's dialect.
fn respond_error(e: GatewayError, anthropic: bool) -> Response {
    if anthropic {
        Anthropic::error_response(e)
    } else {
        e.into_response()
    }
}

/// One model, if the key's plan allows it.
pub async fn get(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let anthropic = is_anthropic(&headers);
    match get_one(&state, id, &headers, anthropic) {
        Ok(r) => r,
        Err(e) => respond_error(e, anthropic),
    }
}

/// [`get`] under `/anthropic`: Anthropic's shape whatever the headers.
pub async fn get_anthropic(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match get_one(&state, id, &headers, true) {
        Ok(r) => r,
        Err(e) => respond_error(e, true),
    }
}

fn get_one(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    anthropic: bool,
) -> Result<Response, GatewayError> {
    let key = key_of(state, headers, anthropic)?;
    let Ok(Path(id)) = id else {
        return Err(GatewayError::ModelNotFound("(not valid UTF-8)".into()));
    };
    // A name the chat routes serve (an alias such as `claude-opus-4-1` included) is a model
    // here too: a client that checks its model before using it must not be told no for one
    // that works. It is described under the name asked for.
    let Some(model) = state.catalog.model(&id) else {
        return Err(GatewayError::ModelNotFound(id));
    };
    let allowed = state
        .catalog
        .plan(&key.plan())
        .is_some_and(|p| p.models.contains(&model.name));
    if !allowed {
        let served = (model.name != id).then(|| model.name.clone());
        return Err(GatewayError::ModelNotAllowed(id, served));
    }
    Ok(Json(model_object(&id, anthropic)).into_response())
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
    Ok(private(
        Json(Subscription {
            object: "billing_subscription",
            has_payment_method: true,
            canceled: false,
            canceled_at: None,
            delinquent: None,
            access_until: 0,
            soft_limit: 0,
            hard_limit: 0,
            system_hard_limit: 0,
            soft_limit_usd: &budget,
            hard_limit_usd: &budget,
            system_hard_limit_usd: &budget,
            plan: PlanRef {
                id: key.plan(),
                title: plan_title,
            },
            account_name: key.prefix(),
            remaining_usd: number(b.remaining().to_string()),
            status: key.status(),
        })
        .into_response(),
    ))
}

// The two billing answers are structs written straight to bytes: in a `json!` tree their money
// (raw decimals) would be read back into `f64`s.

/// `GET /v1/dashboard/billing/subscription`'s answer (OpenAI's shape).
#[derive(Serialize)]
struct Subscription<'a> {
    object: &'static str,
    has_payment_method: bool,
    canceled: bool,
    canceled_at: Option<i64>,
    delinquent: Option<bool>,
    access_until: i64,
    soft_limit: i64,
    hard_limit: i64,
    system_hard_limit: i64,
    soft_limit_usd: &'a RawValue,
    hard_limit_usd: &'a RawValue,
    system_hard_limit_usd: &'a RawValue,
    plan: PlanRef,
    account_name: String,
    remaining_usd: Box<RawValue>,
    status: crate::keys::KeyStatus,
}

#[derive(Serialize)]
struct PlanRef {
    id: String,
    title: String,
}

/// `GET /v1/dashboard/billing/usage`'s answer: costs in cents.
#[derive(Serialize)]
struct UsageAnswer {
    object: &'static str,
    total_usage: Box<RawValue>,
    daily_costs: Vec<UsageDay>,
}

/// One UTC day: its timestamp in seconds, a line per model.
#[derive(Serialize)]
struct UsageDay {
    timestamp: i64,
    line_items: Vec<LineItem>,
}

#[derive(Serialize)]
struct LineItem {
    name: String,
    cost: Box<RawValue>,
}

/// Query of the usage endpoint: `YYYY-MM-DD`, end exclusive.
#[derive(Deserialize)]
pub struct UsageQuery {
    start_date: Option<String>,
    end_date: Option<String>,
}

fn date_ms(s: &str, param: &'static str) -> Result<i64, GatewayError> {
    // Exactly YYYY-MM-DD: chrono alone also takes `2026-1-1` and leading spaces.
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    let date = if shaped {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
    } else {
        None
    };
    date.and_then(|d| d.and_hms_opt(0, 0, 0))
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
    // Free, but it reads the key's ledger: a limit of its own at the key's RPM, one at a time.
    let _turn = key.start_usage_look_up().map_err(|rate| {
        crate::gateway::admission::rate_limited(&state, &key, &rate);
        GatewayError::RateLimited(rate)
    })?;
    let Ok(Query(q)) = q else {
        return Err(GatewayError::InvalidRequest {
            message: "Give `start_date` and `end_date` at most once each, as YYYY-MM-DD.".into(),
            param: None,
        });
    };
    let from = q
        .start_date
        .as_deref()
        .map(|s| date_ms(s, "start_date"))
        .transpose()?
        // No start: from the beginning (an end date before 1970 is then no error).
        .unwrap_or(i64::MIN);
    let to = q
        .end_date
        .as_deref()
        .map(|s| date_ms(s, "end_date"))
        .transpose()?
        .unwrap_or(i64::MAX);
    if from > to {
        return Err(GatewayError::InvalidRequest {
            message: "`end_date` must not be before `start_date`.".into(),
            param: Some("end_date"),
        });
    }
    let id = key.id.clone();
    let days = state
        .store
        .read(move |c| usage::daily_costs(c, &id, from, to))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "usage query failed");
            GatewayError::Internal
        })?;
    // All time is the live figure (a row may still be on its way to the ledger); a range is the
    // ledger's, the sum of its days.
    let spent = if q.start_date.is_none() && q.end_date.is_none() {
        key.balance().spent
    } else {
        Usd::from_nanos(days.iter().map(|(_, _, cost)| cost.nanos()).sum())
    };
    // OpenAI's shape: one entry per UTC day, its timestamp in seconds, a line per model, costs
    // in cents like `total_usage`.
    let mut daily: Vec<UsageDay> = Vec::new();
    for (day_ms, model, cost) in days {
        let item = LineItem {
            name: model,
            cost: number(cost.cents_string()),
        };
        match daily.last_mut() {
            Some(day) if day.timestamp == day_ms / 1000 => day.line_items.push(item),
            _ => daily.push(UsageDay {
                timestamp: day_ms / 1000,
                line_items: vec![item],
            }),
        }
    }
    Ok(private(
        Json(UsageAnswer {
            object: "list",
            total_usage: number(spent.cents_string()),
            daily_costs: daily,
        })
        .into_response(),
    ))
}

/// A key's balance or spending is for its holder only: never kept by a cache on the way
/// (`/api/usage` said so; these two did not).
fn private(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: Option<&str>, after: Option<&str>, before: Option<&str>) -> Page {
        Page {
            limit: limit.map(Into::into),
            after_id: after.map(Into::into),
            before_id: before.map(Into::into),
        }
    }

    /// Anthropic's paging over a list of three: the first page, the one after a cursor, the
    /// one before, an unknown cursor, and the limits refused.
    #[test]
    fn the_model_list_pages_as_anthropics_does() {
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let ids: Vec<&String> = names.iter().collect();
        let got = |p: Page| {
            p.of(&ids)
                .map(|(page, more)| (page.iter().map(|s| s.as_str()).collect::<Vec<_>>(), more))
        };
        assert_eq!(
            got(page(None, None, None)).unwrap(),
            (vec!["a", "b", "c"], false)
        );
        assert_eq!(
            got(page(Some("2"), None, None)).unwrap(),
            (vec!["a", "b"], true)
        );
        assert_eq!(
            got(page(Some("2"), Some("b"), None)).unwrap(),
            (vec!["c"], false)
        );
        assert_eq!(
            got(page(Some("1"), Some("a"), None)).unwrap(),
            (vec!["b"], true)
        );
        assert_eq!(
            got(page(Some("1"), None, Some("c"))).unwrap(),
            (vec!["b"], true)
        );
        assert_eq!(
            got(page(None, None, Some("b"))).unwrap(),
            (vec!["a"], false)
        );
        assert_eq!(got(page(None, Some("zz"), None)).unwrap(), (vec![], false));
        assert_eq!(got(page(None, None, Some("zz"))).unwrap(), (vec![], false));
        assert_eq!(got(page(Some("1000"), None, None)).unwrap().0.len(), 3);
        for bad in ["0", "1001", "-1", "x", "1.5", ""] {
            assert!(got(page(Some(bad), None, None)).is_err(), "{bad}");
        }
        assert!(got(page(None, Some("a"), Some("c"))).is_err());
    }
}
