//! The usage dashboard (`/dashboard`): the key arrives in a POST form (never a URL, never
//! logged), CSRF-checked and limited per IP; the page shows the balance, totals, a daily-spend
//! chart, the latest requests, the budget history, and the self-service forms — add credit to
//! this key, replace it — which carry a grant ([`crate::shop::grant`]), never the key.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use governor::DefaultKeyedRateLimiter;
use serde::Deserialize;

use super::chart::{self, Chart};
use super::form::{FormPost, GuardedForm};
use super::notice::unavailable;
use super::view::{display_time, fill, plans_on_sale};
use crate::keys::KeyStatus;
use crate::keys::identify::look_up;
use crate::kinds::BudgetKind;
use crate::money::Usd;
use crate::shop::guard::Guard;
use crate::shop::i18n::SelfTexts;
use crate::shop::i18n::Texts;
use crate::shop::limits::ShopLimits;
use crate::shop::usage::{RecentRequest, UsageSummary, summary};
use crate::shop::web::PageCtx;
use crate::state::AppState;
use crate::store::Measured;
use crate::store::budget::BudgetEntry;
use crate::store::usage::TokenTotals;

/// What the page shows under the form.
enum DashOutcome {
    /// Nothing asked yet.
    Empty,
    /// No such key.
    NotFound,
    /// The key's usage.
    Found(Box<DashView>),
}

/// One recent request as shown.
struct RecentView {
    time: String,
    model: String,
    stream: bool,
    period: &'static str,
    period_class: &'static str,
    prompt: u64,
    cached: u64,
    completion: u64,
    cost: Usd,
    measured: &'static str,
    measured_class: &'static str,
    measured_help: &'static str,
    finish: &'static str,
}

impl RecentView {
    fn new(r: &RecentRequest, t: &Texts) -> RecentView {
        RecentView {
            time: display_time(&r.created_at),
            model: r.model.clone(),
            stream: r.stream,
            period: t.period(r.period),
            period_class: if r.period == "peak" {
                "peak"
            } else {
                "off-peak"
            },
            prompt: r.prompt_tokens,
            cached: r.cache_hit_tokens,
            completion: r.completion_tokens,
            cost: r.cost_usd,
            measured: t.measured(r.measured),
            measured_class: r.measured.as_str(),
            measured_help: match r.measured {
                Measured::Provider => t.measured_provider_help,
                Measured::Estimated => t.measured_estimated_help,
                Measured::Clamped => t.measured_clamped_help,
            },
            finish: t.finish(r.finish),
        }
    }
}

/// A plan the key may be topped up with.
struct TopUpButton {
    id: String,
    label: String,
}

/// One change of the budget as shown.
struct HistoryRow {
    when: String,
    kind: &'static str,
    amount: String,
    class: &'static str,
}

impl HistoryRow {
    fn new(e: &BudgetEntry, s: &SelfTexts) -> HistoryRow {
        let kind = match e.kind {
            BudgetKind::Purchase => s.history_purchase,
            BudgetKind::Grant => s.history_grant,
            BudgetKind::TopUp => s.history_top_up,
            BudgetKind::OperatorTopUp => s.history_operator_top_up,
            BudgetKind::Refund => s.history_refund,
        };
        let (amount, class) = if e.amount.is_negative() {
            (format!("−${}", Usd::from_nanos(-e.amount.nanos())), "bad")
        } else {
            (format!("+${}", e.amount), "good")
        };
        HistoryRow {
            when: display_time(&e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            kind,
            amount,
            class,
        }
    }
}

/// The self-service part of the dashboard.
struct SelfServe {
    /// The forms' reference to the key (`None`: the forms are left out).
    grant: Option<String>,
    /// Plans on sale, as top-up buttons.
    plans: Vec<TopUpButton>,
    /// Oldest first.
    history: Vec<HistoryRow>,
    /// Revoked: no credit, no replacement.
    revoked: bool,
}

/// A key's usage as shown.
struct DashView {
    selfserve: SelfServe,
    /// "Usage of {prefix}", filled: what the page's title says it shows.
    title_state: String,
    prefix: String,
    plan_name: String,
    status_text: &'static str,
    status_class: &'static str,
    status_note: Option<&'static str>,
    budget: Usd,
    spent: Usd,
    remaining: Usd,
    spent_permille: i64,
    /// The same share in whole per cent, for a browser that shows the bar as text.
    spent_percent: i64,
    requests: u64,
    tokens: TokenTotals,
    rpm: u32,
    models: Vec<String>,
    chart: Chart,
    recent: Vec<RecentView>,
}

/// Spent as a share of the budget, in thousandths, within 0..=1000.
fn permille(spent: Usd, budget: Usd) -> i64 {
    if budget.nanos() <= 0 {
        return 1000;
    }
    let p = i128::from(spent.nanos().max(0)) * 1000 / i128::from(budget.nanos());
    i64::try_from(p.min(1000)).unwrap_or(1000)
}

impl DashView {
    fn new(s: UsageSummary, state: &AppState, ctx: &PageCtx, selfserve: SelfServe) -> DashView {
        let t = ctx.t;
        let (status_class, status_note) = match s.status {
            KeyStatus::Active => ("good", None),
            KeyStatus::Exhausted => ("warn", Some(t.dash_note_exhausted)),
            KeyStatus::Revoked => ("bad", Some(t.dash_note_revoked)),
        };
        DashView {
            selfserve,
            title_state: fill(ctx.a11y.dash_found_title, &[("prefix", &s.prefix)]),
            status_text: t.key_status(s.status),
            status_class,
            status_note,
            spent_permille: permille(s.spent_usd, s.budget_usd),
            spent_percent: permille(s.spent_usd, s.budget_usd) / 10,
            rpm: state.catalog.rpm_of(&s.plan),
            models: state
                .catalog
                .plan(&s.plan)
                .map(|p| p.models.iter().cloned().collect())
                .unwrap_or_default(),
            chart: chart::build(&s.daily),
            recent: s.recent.iter().map(|r| RecentView::new(r, t)).collect(),
            prefix: s.prefix,
            plan_name: s.plan_name,
            budget: s.budget_usd,
            spent: s.spent_usd,
            remaining: s.remaining_usd,
            requests: s.requests,
            tokens: s.tokens,
        }
    }
}

#[derive(Template)]
#[template(path = "pages/dashboard.html")]
struct DashboardPage<'a> {
    ctx: &'a PageCtx,
    view: DashOutcome,
    /// No key matched: the field is marked wrong, and focus starts on it.
    not_found: bool,
}

/// `GET /dashboard`: the key form.
pub async fn dashboard_form(ctx: PageCtx) -> Response {
    ctx.page(
        DashboardPage {
            ctx: &ctx,
            view: DashOutcome::Empty,
            not_found: false,
        }
        .render(),
    )
}

/// The dashboard form's fields.
#[derive(Default, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf_token: String,
}

impl GuardedForm for KeyForm {
    const PAGE: &'static str = "/dashboard";

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<IpAddr> {
        &limits.dashboard
    }

    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// `POST /dashboard`: past the guard (CSRF, per-IP limit against key guessing), the key's
/// usage; an unknown key, whatever its shape, is simply not found.
pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    Guard((ctx, form)): Guard<FormPost<KeyForm>>,
) -> Response {
    let pasted = crate::keys::token::as_pasted(&form.key);
    let key = look_up(&state.keys, &pasted).ok();
    let view = match key {
        None => DashOutcome::NotFound,
        Some(key) => {
            let id = key.id.clone();
            let history = state
                .store
                .read(move |c| crate::store::budget::history(c, &id))
                .await;
            match (summary(&state, &key).await, history) {
                (Ok(s), Ok(history)) => {
                    let selfserve = SelfServe {
                        grant: crate::shop::grant::issue(
                            &state,
                            &key.id,
                            &crate::keys::token::hash_key(&pasted),
                            &ctx.grant_binding(),
                        ),
                        plans: top_up_buttons(&state, ctx.s),
                        history: history.iter().map(|e| HistoryRow::new(e, ctx.s)).collect(),
                        revoked: key.status() == KeyStatus::Revoked,
                    };
                    DashOutcome::Found(Box::new(DashView::new(s, &state, &ctx, selfserve)))
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(key_id = %key.id, error = %e, "usage query failed");
                    return unavailable(&ctx);
                }
            }
        }
    };
    let found = matches!(view, DashOutcome::Found(_));
    let page = DashboardPage {
        ctx: &ctx,
        view,
        not_found: !found,
    };
    let mut resp = ctx.page(page.render());
    // The page says "no key matches"; its status says so too (it was 200).
    if !found {
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
    }
    resp
}

/// The plans on sale as "Add credit" buttons.
fn top_up_buttons(state: &AppState, s: &SelfTexts) -> Vec<TopUpButton> {
    plans_on_sale(&state.config)
        .into_iter()
        .map(|p| TopUpButton {
            label: fill(
                s.topup_plan_button,
                &[
                    ("name", &p.name),
                    ("budget", &p.budget.to_string()),
                    ("price", &p.price.to_string()),
                ],
            ),
            id: p.id,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permille_is_clamped() {
        let d = Usd::from_dollars;
        assert_eq!(permille(Usd::ZERO, d(5)), 0);
        assert_eq!(permille(Usd::from_nanos(2_500_000_000), d(5)), 500);
        assert_eq!(permille(d(6), d(5)), 1000);
        assert_eq!(permille(d(1), Usd::ZERO), 1000);
        assert_eq!(permille(Usd::from_nanos(-3), d(1)), 0);
    }
}
