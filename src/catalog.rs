//! The catalog: models and plans from config, in the form the request path reads them.

use std::collections::{BTreeSet, HashMap};

use crate::config::Config;
use crate::money::{Usd, cost_of};
use crate::pricing::{ModelPrices, PeakSchedule, PricePeriod};

/// The prompt bound (in tokens) of the smallest possible chat request: a JSON body cannot be
/// much under 64 bytes, plus the 64 tokens of template slack the hold adds. A key that cannot
/// hold this plus one output token can make no request at all.
pub const SMALLEST_PROMPT_BOUND: u64 = 128;

/// A model on sale.
#[derive(Debug, Clone)]
pub struct Model {
    /// Public name (what customers send and see).
    pub name: String,
    /// Name sent to DeepSeek.
    pub upstream: String,
    /// Output cap.
    pub max_output_tokens: u32,
    /// Prices for both periods.
    pub prices: ModelPrices,
}

/// A plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Requests per minute per key.
    pub rpm: u32,
    /// Requests of one key in flight at once.
    pub max_in_flight: u32,
    /// Public model names included.
    pub models: BTreeSet<String>,
    /// Below this remaining balance a key of this plan is `exhausted`: the cost of the smallest
    /// request it could make (see [`SMALLEST_PROMPT_BOUND`]) on its cheapest model and period.
    pub exhausted_below: Usd,
    /// The cheapest prompt-token price (per 1M, a model's dearer of cache hit and miss) among
    /// its models, by period (index with `period as usize`): a body whose bytes the key could
    /// not pay for even on its cheapest model is refused before it is read; the model the body
    /// names is priced once it is read.
    pub min_prompt_price: [Usd; 2],
}

/// Models, plans and the peak schedule.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: HashMap<String, Model>,
    /// Exact aliases → model id.
    aliases: HashMap<String, String>,
    /// Prefix aliases (`claude-opus*` as `claude-opus`) → model id, longest prefix first, so the
    /// most specific pattern wins.
    prefixes: Vec<(String, String)>,
    by_upstream: HashMap<String, String>,
    plans: HashMap<String, Plan>,
    schedule: PeakSchedule,
}

impl Catalog {
    /// Build from a validated config.
    pub fn from_config(c: &Config) -> Result<Catalog, String> {
        let models: HashMap<String, Model> = c
            .models
            .iter()
            .map(|(name, m)| {
                (
                    name.clone(),
                    Model {
                        name: name.clone(),
                        upstream: m.upstream_model.clone(),
                        max_output_tokens: m.max_output_tokens,
                        prices: ModelPrices::new(m.input_cache_hit, m.input_cache_miss, m.output),
                    },
                )
            })
            .collect();
        let by_upstream = models
            .values()
            .map(|m| (m.upstream.clone(), m.name.clone()))
            .collect();
        let plans = c
            .plans
            .iter()
            .map(|(id, p)| {
                let exhausted_below = p
                    .models
                    .iter()
                    .filter_map(|m| models.get(m))
                    .flat_map(|m| {
                        [PricePeriod::OffPeak, PricePeriod::Peak].map(|period| {
                            let p = m.prices.get(period);
                            let prompt = p.cache_hit.max(p.cache_miss);
                            let worst = crate::money::TokenPrices {
                                cache_miss: prompt,
                                ..*p
                            };
                            cost_of(0, SMALLEST_PROMPT_BOUND, 1, &worst)
                        })
                    })
                    .min()
                    .unwrap_or(Usd::from_nanos(1));
                let min_prompt_price = [PricePeriod::OffPeak, PricePeriod::Peak].map(|period| {
                    p.models
                        .iter()
                        .filter_map(|m| models.get(m))
                        .map(|m| {
                            let p = m.prices.get(period);
                            p.cache_hit.max(p.cache_miss)
                        })
                        .min()
                        .unwrap_or(Usd::ZERO)
                });
                (
                    id.clone(),
                    Plan {
                        id: id.clone(),
                        name: p.name.clone(),
                        rpm: p.rpm,
                        max_in_flight: p.max_in_flight,
                        models: p.models.iter().cloned().collect(),
                        exhausted_below,
                        min_prompt_price,
                    },
                )
            })
            .collect();
        let mut aliases = HashMap::new();
        let mut prefixes = Vec::new();
        for (id, m) in &c.models {
            for alias in &m.aliases {
                match alias.strip_suffix('*') {
                    Some(prefix) => prefixes.push((prefix.to_string(), id.clone())),
                    None => {
                        aliases.insert(alias.clone(), id.clone());
                    }
                }
            }
        }
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Catalog {
            models,
            aliases,
            prefixes,
            by_upstream,
            plans,
            schedule: c.peak_schedule()?,
        })
    }

    /// A model by its id only (aliases are names to call it by, not models of their own).
    pub fn model_by_id(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    /// The model served under `name`: its id, else an alias of it (an exact alias before a
    /// `prefix*` one, the longest prefix first).
    pub fn model(&self, name: &str) -> Option<&Model> {
        if let Some(m) = self.models.get(name) {
            return Some(m);
        }
        let id = self.aliases.get(name).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|(_, id)| id)
        })?;
        self.models.get(id)
    }

    /// The public name of an upstream model name (for rewriting responses), if known.
    pub fn public_name_of(&self, upstream: &str) -> Option<&str> {
        self.by_upstream.get(upstream).map(String::as_str)
    }

    /// A plan by id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }

    /// Below this remaining balance a key of plan `id` is exhausted (1 nano-USD for a plan the
    /// config no longer has).
    pub fn exhausted_below(&self, id: &str) -> Usd {
        self.plan(id)
            .map_or(Usd::from_nanos(1), |p| p.exhausted_below)
    }

    /// The price period now.
    pub fn period_now(&self) -> PricePeriod {
        self.schedule.period_at(chrono::Utc::now())
    }

    /// The plan's RPM, or 60 for a key whose plan was removed from config.
    pub fn rpm_of(&self, plan: &str) -> u32 {
        self.plan(plan).map_or(60, |p| p.rpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_most_specific_first() {
        let mut c = Config::default();
        if let Some(m) = c.models.get_mut("deepseek-v4-flash") {
            m.aliases.push("gpt-4o".into());
        }
        let cat = Catalog::from_config(&c).unwrap();
        let id = |n: &str| cat.model(n).map(|m| m.name.clone());
        assert_eq!(id("deepseek-v4-pro").as_deref(), Some("deepseek-v4-pro"));
        assert_eq!(id("claude-opus-4-1").as_deref(), Some("deepseek-v4-pro"));
        assert_eq!(id("claude-opus").as_deref(), Some("deepseek-v4-pro"));
        assert_eq!(
            id("claude-sonnet-4-5").as_deref(),
            Some("deepseek-v4-flash")
        );
        assert_eq!(id("claude-3-5-haiku").as_deref(), Some("deepseek-v4-flash"));
        assert_eq!(id("claude").as_deref(), Some("deepseek-v4-flash"));
        assert_eq!(id("gpt-4o").as_deref(), Some("deepseek-v4-flash"));
        assert_eq!(id("gpt-4o-mini"), None, "an exact alias is not a prefix");
        assert_eq!(id("Claude-opus"), None, "names are case-sensitive");
        assert_eq!(id("gemini"), None);
    }
}
