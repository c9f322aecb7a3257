//! View models shared by the pages: plans, models, prices and the peak rule, built from the live
//! config so that no page can drift from what the gateway charges.

use crate::config::{Config, PlanConfig};
use crate::money::Usd;
use crate::shop::i18n::Texts;

/// A plan as the pages show it.
pub(super) struct PlanView {
    /// Id (URLs).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it costs.
    pub price: Usd,
    /// What the key may spend.
    pub budget: Usd,
    /// Requests per minute.
    pub rpm: u32,
    /// Requests of one key in progress at once.
    pub max_in_flight: u32,
    /// Public model names.
    pub models: Vec<String>,
}

impl PlanView {
    /// The view of one configured plan.
    pub fn new(id: &str, p: &PlanConfig) -> PlanView {
        PlanView {
            id: id.to_string(),
            name: p.name.clone(),
            price: p.price_usd,
            budget: p.budget_usd,
            rpm: p.rpm,
            max_in_flight: p.max_in_flight,
            models: p.models.clone(),
        }
    }
}

/// The plans on sale (enabled), cheapest first.
pub(super) fn plans_on_sale(config: &Config) -> Vec<PlanView> {
    let mut plans: Vec<PlanView> = config
        .plans
        .iter()
        .filter(|(_, p)| p.enabled)
        .map(|(id, p)| PlanView::new(id, p))
        .collect();
    plans.sort_by(|a, b| a.price.cmp(&b.price).then_with(|| a.id.cmp(&b.id)));
    plans
}

/// One period's prices of a model, USD per 1M tokens.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct PriceRow {
    /// Prompt tokens served from cache.
    pub hit: Usd,
    /// Prompt tokens not in cache.
    pub miss: Usd,
    /// Output tokens.
    pub out: Usd,
}

/// A model as the pages show it.
pub(super) struct ModelView {
    /// Public name.
    pub name: String,
    /// Output cap.
    pub max_output: u32,
    /// Off-peak prices.
    pub off_peak: PriceRow,
    /// Peak prices.
    pub peak: PriceRow,
    /// Whether peak prices ever apply and differ from off-peak ones (else one price is shown;
    /// with no peak hours set, the pages showed a range up to prices never charged).
    pub peaks: bool,
    /// Names of the plans on sale that include it.
    pub plans: Vec<String>,
    /// The same, joined for prose.
    pub plans_text: String,
}

/// The configured models with the plans on sale that include them; with `on_sale_only`, only
/// models that some plan on sale includes (all of them if none is).
pub(super) fn models(
    config: &Config,
    plans: &[PlanView],
    t: &Texts,
    on_sale_only: bool,
) -> Vec<ModelView> {
    // The schedule parsed once (`has_peak_hours` would parse it again).
    let always_peak = always_peak(config);
    let periods = two_periods(config, always_peak);
    let all: Vec<ModelView> = config
        .models
        .iter()
        .map(|(name, m)| {
            let in_plans: Vec<String> = plans
                .iter()
                .filter(|p| p.models.iter().any(|x| x == name))
                .map(|p| p.name.clone())
                .collect();
            let peak = PriceRow {
                hit: m.input_cache_hit[1],
                miss: m.input_cache_miss[1],
                out: m.output[1],
            };
            // Peak all the time: the one price shown is the peak one.
            let off_peak = if always_peak {
                peak.clone()
            } else {
                PriceRow {
                    hit: m.input_cache_hit[0],
                    miss: m.input_cache_miss[0],
                    out: m.output[0],
                }
            };
            ModelView {
                name: name.clone(),
                max_output: m.max_output_tokens,
                peaks: periods && peak != off_peak,
                off_peak,
                peak,
                plans_text: in_plans.join(t.list_sep),
                plans: in_plans,
            }
        })
        .collect();
    if on_sale_only && all.iter().any(|m| !m.plans.is_empty()) {
        all.into_iter().filter(|m| !m.plans.is_empty()).collect()
    } else {
        all
    }
}

/// The model the code samples use: the first model of the cheapest plan on sale.
pub(super) fn sample_model(config: &Config, plans: &[PlanView]) -> String {
    plans
        .first()
        .and_then(|p| p.models.first().cloned())
        .or_else(|| config.models.keys().next().cloned())
        .unwrap_or_default()
}

/// A model some plans on sale lack, with the plans that have it (for the 403 advice).
pub(super) struct RestrictedModel {
    /// Public name.
    pub model: String,
    /// The plans that include it, joined.
    pub plans: String,
}

/// Models not included in every plan on sale.
pub(super) fn restricted(
    models: &[ModelView],
    plans: &[PlanView],
    t: &Texts,
) -> Vec<RestrictedModel> {
    models
        .iter()
        .filter(|m| m.plans.len() < plans.len())
        .map(|m| RestrictedModel {
            model: m.name.clone(),
            plans: if m.plans.is_empty() {
                t.model_no_plan.to_string()
            } else {
                m.plans_text.clone()
            },
        })
        .collect()
}

/// Replace `{name}` placeholders in a translated sentence.
pub(super) fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Whether `[pricing]` makes two periods: peak hours on some day, and not every hour of every
/// day (that is one period, peak).
pub(super) fn has_peak_hours(config: &Config) -> bool {
    two_periods(config, always_peak(config))
}

/// [`has_peak_hours`], given whether every hour of every day is peak.
fn two_periods(config: &Config, always_peak: bool) -> bool {
    !config.pricing.peak_hours_utc.is_empty()
        && !config.pricing.peak_days.is_empty()
        && !always_peak
}

/// Whether `[pricing]` makes every hour of every day peak.
fn always_peak(config: &Config) -> bool {
    config.peak_schedule().is_ok_and(|s| s.always_peak())
}

/// The sentence saying when peak prices apply, from `[pricing]`.
pub(super) fn peak_rule(config: &Config, t: &Texts) -> String {
    peak_rule_on(config, t, chrono::Utc::now().date_naive())
}

/// [`peak_rule`] as of `today` (UTC): off-peak dates before it are not listed (a year's
/// holidays, all past by December, were listed to customers as if to come; found by an
/// independent check).
fn peak_rule_on(config: &Config, t: &Texts, today: chrono::NaiveDate) -> String {
    let windows: Vec<String> = config
        .pricing
        .peak_hours_utc
        .iter()
        .map(|w| w.trim().replace('-', "–"))
        .collect();
    let days: Vec<&str> = config
        .pricing
        .peak_days
        .iter()
        .filter_map(|d| t.day(d))
        .collect();
    if windows.is_empty() || days.is_empty() {
        return t.peak_none.to_string();
    }
    let days_text = if days.len() == 7 {
        t.days_every.to_string()
    } else if days == [t.day_mon, t.day_tue, t.day_wed, t.day_thu, t.day_fri] {
        t.days_weekdays.to_string()
    } else {
        days.join(t.list_sep)
    };
    let mut rule = fill(
        t.peak_rule,
        &[("windows", &windows.join(t.list_sep)), ("days", &days_text)],
    );
    // What the schedule does that the line above does not say (a Saturday 03:00 inside a
    // Friday 22:00–05:00 window is peak; found by an independent check).
    let wraps = config.pricing.peak_hours_utc.iter().any(|w| {
        w.split_once('-')
            .is_some_and(|(start, end)| end.trim() < start.trim())
    });
    if wraps {
        next_sentence(&mut rule);
        rule.push_str(t.peak_wrap);
    }
    let dates: Vec<&str> = config
        .pricing
        .off_peak_dates
        .iter()
        .map(|d| d.trim())
        .filter(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|date| date >= today)
        })
        .collect();
    if !dates.is_empty() {
        next_sentence(&mut rule);
        rule.push_str(&fill(
            t.peak_off_dates,
            &[("dates", &dates.join(t.list_sep))],
        ));
    }
    rule
}

/// A space before the next sentence, unless the last ends with a full-width stop (Chinese
/// sets none after `。`).
fn next_sentence(text: &mut String) {
    if !text.ends_with('。') {
        text.push(' ');
    }
}

/// A byte count for people: `8 MiB`, `512 KiB`, `1000 bytes`.
pub(super) fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM UTC`; anything else is shown as given.
pub(super) fn display_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters (query values, path parts).
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// At most `max` characters of `s` (for echoing form input back).
pub(super) fn clip(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::i18n::{EN, ZH};

    #[test]
    fn peak_rule_from_config() {
        let mut c = Config::default();
        let s = peak_rule(&c, &EN);
        assert!(s.contains("01:00–04:00"), "{s}");
        assert!(s.contains("06:00–10:00"), "{s}");
        assert!(s.contains(EN.days_weekdays), "{s}");
        c.pricing.peak_days = vec!["sat".into(), "sun".into()];
        let s = peak_rule(&c, &ZH);
        assert!(s.contains(ZH.day_sat) && s.contains(ZH.day_sun), "{s}");
        assert!(!s.contains(ZH.peak_wrap), "{s}");
        // A window past midnight, and dates off-peak all day, are said.
        c.pricing.peak_hours_utc = vec!["22:00-05:00".into()];
        c.pricing.off_peak_dates = vec![
            "2026-10-01".into(),
            "2026-12-25".into(),
            "2027-01-01".into(),
        ];
        let day = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let s = peak_rule_on(&c, &EN, day("2026-12-06"));
        assert!(s.contains(EN.peak_wrap), "{s}");
        assert!(s.contains("2026-12-25, 2027-01-01"), "{s}");
        // Past dates are not listed; today's is; none left, no sentence about dates.
        assert!(!s.contains("2026-10-01"), "{s}");
        let s = peak_rule_on(&c, &EN, day("2027-01-01"));
        assert!(s.contains("2027-01-01") && !s.contains("2026-12-25"), "{s}");
        let s = peak_rule_on(&c, &EN, day("2027-01-02"));
        assert!(!s.contains("2027"), "{s}");
        c.pricing.peak_hours_utc.clear();
        assert_eq!(peak_rule(&c, &EN), EN.peak_none);
    }

    #[test]
    fn helpers() {
        assert_eq!(human_bytes(8 * 1024 * 1024), "8 MiB");
        assert_eq!(human_bytes(2048), "2 KiB");
        assert_eq!(human_bytes(1536), "1536 bytes");
        assert_eq!(url_encode("ord_a b/ü"), "ord_a%20b%2F%C3%BC");
        assert_eq!(display_time("2026-11-03T12:34:56Z"), "2026-11-03 12:34 UTC");
        assert_eq!(display_time("nonsense"), "nonsense");
        assert_eq!(clip("  abcdef ", 3), "abc");
        assert_eq!(fill("a {x} b {y}", &[("x", "1"), ("y", "2")]), "a 1 b 2");
    }

    /// Peak hours covering every hour of every day make one period: the peak prices, shown as
    /// the only price (an off-peak row was shown that no request was ever charged).
    #[test]
    fn peak_all_the_time_shows_the_peak_price_alone() {
        let every_day: Vec<String> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        let shown = |windows: &[&str], days: &[String], dates: &[&str]| {
            let mut c = Config::default();
            c.pricing.peak_hours_utc = windows.iter().map(|w| w.to_string()).collect();
            c.pricing.peak_days = days.to_vec();
            c.pricing.off_peak_dates = dates.iter().map(|d| d.to_string()).collect();
            let plans = plans_on_sale(&c);
            let m = models(&c, &plans, &EN, true).remove(0);
            let peak_price = c.models[&m.name].output[1];
            (m.peaks, m.off_peak.out == peak_price, has_peak_hours(&c))
        };
        for windows in [
            &["00:00-24:00"][..],
            &["00:00-12:00", "12:00-24:00"],
            &["06:00-02:00", "01:00-06:00"],
        ] {
            assert_eq!(
                shown(windows, &every_day, &[]),
                (false, true, false),
                "{windows:?}"
            );
        }
        // Six days, a minute left out, or a date off-peak: two periods, both shown.
        assert_eq!(
            shown(&["00:00-24:00"], &every_day[..6], &[]),
            (true, false, true)
        );
        assert_eq!(
            shown(&["00:00-23:59"], &every_day, &[]),
            (true, false, true)
        );
        assert_eq!(
            shown(&["00:00-24:00"], &every_day, &["2026-12-25"]),
            (true, false, true)
        );
    }

    #[test]
    fn plans_sorted_and_enabled_only() {
        let mut c = Config::default();
        if let Some(p) = c.plans.get_mut("starter") {
            p.enabled = false;
        }
        let plans = plans_on_sale(&c);
        let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["trial", "standard", "pro"]);
        assert_eq!(sample_model(&c, &plans), "deepseek-v4-flash");
        let models = models(&c, &plans, &EN, true);
        let r = restricted(&models, &plans, &EN);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].model, "deepseek-v4-pro");
        assert_eq!(r[0].plans, "Pro");
    }
}
