//! The pages that describe the service: home, pricing and docs, all generated from the live
//! config (plans, models, prices, peak windows, limits) and `server.public_url`.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::Datelike as _;

use super::view::{
    ModelView, PlanView, RestrictedModel, fill, human_bytes, models, peak_rule, plans_on_sale,
    restricted, sample_model,
};
use crate::money::Usd;
use crate::shop::i18n::AgentTexts;
use crate::shop::web::PageCtx;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "pages/home.html")]
struct Home<'a> {
    ctx: &'a PageCtx,
    models: Vec<ModelView>,
    cheapest: Option<Usd>,
    first_model: String,
}

/// `GET /`: what the service is, the models on sale, a quick start.
pub async fn home(State(state): State<Arc<AppState>>, ctx: PageCtx) -> Response {
    let plans = plans_on_sale(&state.config);
    let page = Home {
        ctx: &ctx,
        models: models(&state.config, &plans, ctx.t, true),
        cheapest: plans.first().map(|p| p.price),
        first_model: sample_model(&state.config, &plans),
    };
    ctx.page(page.render())
}

#[derive(Template)]
#[template(path = "pages/pricing.html")]
struct Pricing<'a> {
    ctx: &'a PageCtx,
    plans: Vec<PlanView>,
    models: Vec<ModelView>,
    peak_rule: String,
    /// "Add {name} to my key" links: (plan id, label).
    topup_links: Vec<(String, String)>,
}

/// `GET /pricing`: every plan on sale and the per-token prices.
pub async fn pricing(State(state): State<Arc<AppState>>, ctx: PageCtx) -> Response {
    let plans = plans_on_sale(&state.config);
    let topup_links = plans
        .iter()
        .map(|p| {
            let label = super::view::fill(ctx.s.pricing_topup_link, &[("name", &p.name)]);
            (p.id.clone(), label)
        })
        .collect();
    let page = Pricing {
        ctx: &ctx,
        models: models(&state.config, &plans, ctx.t, true),
        peak_rule: peak_rule(&state.config, ctx.t),
        plans,
        topup_links,
    };
    ctx.page(page.render())
}

#[derive(Template)]
#[template(path = "pages/docs.html")]
struct Docs<'a> {
    ctx: &'a PageCtx,
    plans: Vec<PlanView>,
    models: Vec<ModelView>,
    restricted: Vec<RestrictedModel>,
    peak_rule: String,
    /// Peak hours are set: the billing section says how a request's period is chosen.
    peaks: bool,
    first_model: String,
    err_413: String,
    /// The Anthropic clients section's strings.
    a: &'static AgentTexts,
    /// The other names models answer to, longest pattern first.
    aliases: Vec<AliasView>,
    /// The legacy usage example's range: this month (a fixed one showed nothing once past).
    usage_from: String,
    usage_to: String,
}

/// A name (or pattern) a model also answers to, for the docs.
struct AliasView {
    /// As configured (`claude-opus*`).
    name: String,
    /// The model serving it.
    model: String,
    /// The plans on sale that include that model, joined.
    plans: String,
}

/// Every configured alias of the models listed, longest first (the order the gateway tries
/// prefixes in), so the table reads top-down the way names are matched.
fn aliases(config: &crate::config::Config, models: &[ModelView]) -> Vec<AliasView> {
    let mut out: Vec<AliasView> = models
        .iter()
        .filter_map(|m| config.models.get(&m.name).map(|c| (m, c)))
        .flat_map(|(m, c)| {
            c.aliases.iter().map(move |a| AliasView {
                name: a.clone(),
                model: m.name.clone(),
                plans: m.plans_text.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.name.len().cmp(&a.name.len()).then(a.name.cmp(&b.name)));
    out
}

/// `GET /docs`: the customer documentation.
pub async fn docs(State(state): State<Arc<AppState>>, ctx: PageCtx) -> Response {
    let config = &state.config;
    let plans = plans_on_sale(config);
    let models = models(config, &plans, ctx.t, false);
    let today = chrono::Utc::now().date_naive();
    let this_month = today.with_day(1).unwrap_or(today);
    let next_month = this_month
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(this_month);
    let page = Docs {
        ctx: &ctx,
        restricted: restricted(&models, &plans, ctx.t),
        peak_rule: peak_rule(config, ctx.t),
        peaks: super::view::has_peak_hours(config),
        first_model: sample_model(config, &plans),
        err_413: fill(
            ctx.t.err_413_what,
            &[("size", &human_bytes(config.server.max_body_bytes))],
        ),
        a: ctx.lang.agent_texts(),
        aliases: aliases(config, &models),
        models,
        plans,
        usage_from: this_month.format("%Y-%m-%d").to_string(),
        usage_to: next_month.format("%Y-%m-%d").to_string(),
    };
    ctx.page(page.render())
}
