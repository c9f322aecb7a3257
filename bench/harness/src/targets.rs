//! The targets table of `bench/RESULTS.md`: each goal as a ratio or a bound, computed the same way
//! from this run and, when an earlier run's headline is given (`--before`), from that one.

use std::fmt::Write as _;

use crate::headline::Headline;
use crate::report::f;
use crate::run::{GATEWAY, GATEWAY_NORMAL, LITELLM, NGINX, Results};

/// One goal computed from one run's headline: the text shown, and whether it is met (`None`:
/// not measured in that run).
struct Figure {
    shown: String,
    met: Option<bool>,
}

type Goal = (&'static str, &'static str, fn(&Headline) -> Figure);

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > f64::EPSILON => Some(a / b),
        _ => None,
    }
}

/// "`a ÷ b` (a unit ÷ b unit)" with the verdict `test(a ÷ b)`.
fn ratio_figure(
    a: Option<f64>,
    b: Option<f64>,
    unit: &str,
    digits: usize,
    test: fn(f64) -> bool,
) -> Figure {
    let r = ratio(a, b);
    let (fa, fb) = if unit.is_empty() {
        (f(a, 0), f(b, 0))
    } else {
        (format!("{} {unit}", f(a, 1)), format!("{} {unit}", f(b, 1)))
    };
    Figure {
        shown: match r {
            Some(_) => format!("{} ({fa} ÷ {fb})", f(r, digits)),
            None => "—".into(),
        },
        met: r.map(test),
    }
}

const GOALS: [Goal; 7] = [
    (
        "CPU per non-stream request: modelrelay ÷ nginx",
        "≤ 2",
        |h| {
            ratio_figure(
                h.cpu_us.get(GATEWAY).copied(),
                h.cpu_us.get(NGINX).copied(),
                "µs",
                2,
                |x| x <= 2.0,
            )
        },
    ),
    (
        "max RPS at 64 connections: modelrelay ÷ nginx",
        "≥ 0.5",
        |h| {
            ratio_figure(
                h.rps.get(GATEWAY).copied(),
                h.rps.get(NGINX).copied(),
                "",
                2,
                |x| x >= 0.5,
            )
        },
    ),
    (
        "added p99 time to first byte of a stream: modelrelay ÷ nginx",
        "≤ 1.25",
        |h| {
            ratio_figure(h.ttfb_p99(GATEWAY), h.ttfb_p99(NGINX), "µs", 2, |x| {
                x <= 1.25
            })
        },
    ),
    (
        "added p99, 1 connection, `store.sync = \"normal\"`: modelrelay ÷ nginx",
        "≤ 1.25",
        |h| ratio_figure(h.p99(GATEWAY_NORMAL), h.p99(NGINX), "µs", 2, |x| x <= 1.25),
    ),
    (
        "added p99, 1 connection, `store.sync = \"full\"` (default): modelrelay vs nginx + the disk's fsync p99",
        "≤ nginx + fsync",
        full_vs_floor,
    ),
    (
        "max RPS at 64 connections: modelrelay ÷ LiteLLM",
        "≥ 20",
        |h| {
            ratio_figure(
                h.rps.get(GATEWAY).copied(),
                h.rps.get(LITELLM).copied(),
                "",
                1,
                |x| x >= 20.0,
            )
        },
    ),
    (
        "added p99, 1 connection: modelrelay ÷ LiteLLM",
        "≤ 0.05",
        |h| ratio_figure(h.p99(GATEWAY), h.p99(LITELLM), "µs", 3, |x| x <= 0.05),
    ),
];

/// `store.sync = "full"` answers after an fsync: its floor is nginx's added p99 plus the disk's
/// own fsync p99, both measured in the same run.
fn full_vs_floor(h: &Headline) -> Figure {
    let (gw, ng, fs) = (h.p99(GATEWAY), h.p99(NGINX), h.fsync.map(|v| v[1]));
    match (gw, ng, fs) {
        (Some(gw), Some(ng), Some(fs)) => Figure {
            shown: format!("{gw:.1} µs vs {:.1} µs ({ng:.1} + {fs:.1})", ng + fs),
            met: Some(gw <= ng + fs),
        },
        (Some(gw), Some(ng), None) => Figure {
            shown: format!("{gw:.1} µs vs {ng:.1} µs + fsync (not measured)"),
            met: None,
        },
        _ => Figure {
            shown: "—".into(),
            met: None,
        },
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The "## Targets" section.
pub fn render(s: &mut String, r: &Results, now: &Headline) {
    let _ = writeln!(s, "## Targets\n");
    let before = r.before.as_ref();
    if let Some(b) = before {
        let _ = writeln!(s, "Before: {}.\n", b.label);
        let _ = writeln!(s, "| target | before | measured | goal | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|");
    } else {
        let _ = writeln!(s, "| target | measured | goal | verdict |");
        let _ = writeln!(s, "|---|---|---|---|");
    }
    let row = |s: &mut String, name: &str, was: Option<String>, fig: Figure, goal: &str| {
        let was = match (before, was) {
            (Some(_), Some(w)) => format!(" {w} |"),
            (Some(_), None) => " — |".into(),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            s,
            "| {name} |{was} {} | {goal} | {} |",
            fig.shown,
            verdict(fig.met)
        );
    };
    for (name, goal, compute) in GOALS {
        let was = before.map(|b| compute(b).shown);
        row(s, name, was, compute(now), goal);
    }
    if let Some((d, g)) = r.streams.iter().max_by_key(|(_, g)| g.n) {
        let n = g.n;
        let fig = |shown: String, met: bool| Figure {
            shown,
            met: Some(met),
        };
        row(
            s,
            &format!("{n} concurrent streams: stalls"),
            None,
            fig(
                format!("{} (direct: {})", g.stalls, d.stalls),
                g.stalls == 0,
            ),
            "0",
        );
        row(
            s,
            &format!("{n} concurrent streams: RSS per stream"),
            None,
            fig(
                format!("{:.1} KiB", g.rss_per_stream_kib),
                g.rss_per_stream_kib <= 32.0,
            ),
            "≤ 32 KiB",
        );
        let gap = g.gap_p99 - d.gap_p99;
        row(
            s,
            &format!("{n} concurrent streams: added p99 gap between chunks"),
            None,
            fig(
                format!("{:.0} µs ({:.0} − {:.0})", gap, g.gap_p99, d.gap_p99),
                gap <= 1000.0,
            ),
            "≤ 1000 µs",
        );
    }
    row(
        s,
        "ledger writer, settled requests per second",
        None,
        Figure {
            shown: f(r.ledger, 0),
            met: r.ledger.map(|x| x >= 50_000.0),
        },
        "≥ 50 000",
    );
    let _ = writeln!(s);
}
