//! `bench/RESULTS.md`: the targets as ratios first, then the absolute figures.

use std::fmt::Write as _;

use crate::run::Results;

const GW: &str = "modelrelay";
const PASS: &str = "modelrelay-passthrough";
const NGINX: &str = "nginx";
const LITELLM: &str = "litellm";

fn get<T: Copy>(m: &std::collections::BTreeMap<String, T>, k: &str) -> Option<T> {
    m.get(k).copied()
}

fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "—".into(),
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// Render the report.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# modelrelay benchmark results\n");
    let _ = writeln!(
        s,
        "Produced by `bench/run.sh` (see bench/README.md). Medians of {} repeats. The gateway runs \
         with auth, the plan's rate limit, billing holds and settlement, and the ledger on, unless \
         the row says pass-through. \"Added\" = the figure through a proxy minus the same figure \
         straight to the mock, percentile by percentile. Servers under test are pinned to core 0; \
         the mock and the load generators to core 1. Where a target is not met, \
         bench/PROFILE.md has the profile that shows where the time goes.\n",
        r.repeats
    );

    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b.abs() > f64::EPSILON => Some(a / b),
        _ => None,
    };
    let added_p99 =
        |m: &std::collections::BTreeMap<String, [f64; 3]>, k: &str| get(m, k).map(|v| v[1]);

    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | measured | goal | verdict |");
    let _ = writeln!(s, "|---|---|---|---|");
    let row = |s: &mut String, name: &str, measured: String, goal: &str, ok: Option<bool>| {
        let _ = writeln!(s, "| {name} | {measured} | {goal} | {} |", verdict(ok));
    };
    let lat = ratio(added_p99(&r.added, GW), added_p99(&r.added, NGINX));
    row(
        &mut s,
        "added p99, 1 connection, non-stream: modelrelay ÷ nginx",
        format!(
            "{} ({} µs ÷ {} µs)",
            f(lat, 2),
            f(added_p99(&r.added, GW), 1),
            f(added_p99(&r.added, NGINX), 1)
        ),
        "≤ 1.25",
        lat.map(|x| x <= 1.25),
    );
    let ttft = ratio(
        added_p99(&r.added_ttfb, GW),
        added_p99(&r.added_ttfb, NGINX),
    );
    row(
        &mut s,
        "added p99 time to first byte of a stream: modelrelay ÷ nginx",
        format!(
            "{} ({} µs ÷ {} µs)",
            f(ttft, 2),
            f(added_p99(&r.added_ttfb, GW), 1),
            f(added_p99(&r.added_ttfb, NGINX), 1)
        ),
        "≤ 1.25",
        ttft.map(|x| x <= 1.25),
    );
    let rps = ratio(get(&r.rps, GW), get(&r.rps, NGINX));
    row(
        &mut s,
        "max RPS at 64 connections: modelrelay ÷ nginx",
        format!(
            "{} ({} ÷ {})",
            f(rps, 2),
            f(get(&r.rps, GW), 0),
            f(get(&r.rps, NGINX), 0)
        ),
        "≥ 0.5",
        rps.map(|x| x >= 0.5),
    );
    let cpu = get(&r.cpu_us, GW);
    row(
        &mut s,
        &format!("CPU per non-stream request (at {}/s)", r.cpu_rate),
        format!("{} µs", f(cpu, 1)),
        "≤ 40 µs",
        cpu.map(|x| x <= 40.0),
    );
    let vs_rps = ratio(get(&r.rps, GW), get(&r.rps, LITELLM));
    row(
        &mut s,
        "max RPS at 64 connections: modelrelay ÷ LiteLLM",
        format!(
            "{} ({} ÷ {})",
            f(vs_rps, 1),
            f(get(&r.rps, GW), 0),
            f(get(&r.rps, LITELLM), 0)
        ),
        "≥ 20",
        vs_rps.map(|x| x >= 20.0),
    );
    let vs_lat = ratio(added_p99(&r.added, GW), added_p99(&r.added, LITELLM));
    row(
        &mut s,
        "added p99, 1 connection: modelrelay ÷ LiteLLM",
        format!(
            "{} ({} µs ÷ {} µs)",
            f(vs_lat, 3),
            f(added_p99(&r.added, GW), 1),
            f(added_p99(&r.added, LITELLM), 1)
        ),
        "≤ 0.05",
        vs_lat.map(|x| x <= 0.05),
    );
    if let Some((d, g)) = r.streams.iter().max_by_key(|(_, g)| g.n) {
        let n = g.n;
        row(
            &mut s,
            &format!("{n} concurrent streams: stalls"),
            format!("{} (direct: {})", g.stalls, d.stalls),
            "0",
            Some(g.stalls == 0),
        );
        row(
            &mut s,
            &format!("{n} concurrent streams: RSS per stream"),
            format!("{:.1} KiB", g.rss_per_stream_kib),
            "≤ 32 KiB",
            Some(g.rss_per_stream_kib <= 32.0),
        );
        let gap = g.gap_p99 - d.gap_p99;
        row(
            &mut s,
            &format!("{n} concurrent streams: added p99 gap between chunks"),
            format!("{:.0} µs ({:.0} − {:.0})", gap, g.gap_p99, d.gap_p99),
            "≤ 1000 µs",
            Some(gap <= 1000.0),
        );
    }
    row(
        &mut s,
        "ledger writer, settled requests per second",
        f(r.ledger, 0),
        "≥ 50 000",
        r.ledger.map(|x| x >= 50_000.0),
    );
    let _ = writeln!(s);

    let _ = writeln!(s, "## Added latency at one connection (µs)\n");
    let _ = writeln!(
        s,
        "{} requests per target per repeat (LiteLLM: a tenth), targets alternated in rounds.\n",
        r.latency_requests
    );
    latency_table(
        &mut s,
        "through",
        &[NGINX, GW, PASS, LITELLM],
        &r.added,
        &r.added_ttfb,
    );
    let _ = writeln!(s, "\nAbsolute (µs), for reference:\n");
    latency_table(
        &mut s,
        "target",
        &["direct", NGINX, GW, PASS, LITELLM],
        &r.absolute,
        &r.absolute_ttfb,
    );

    let _ = writeln!(s, "\n## Throughput\n");
    let _ = writeln!(
        s,
        "Closed loop: `wrk -t1`, non-stream requests. Open loop: fixed rates over 64 connections, \
         latency counted from when each request was due.\n"
    );
    let _ = writeln!(
        s,
        "| target | RPS @64 conns | RPS @1 conn | highest RPS, p99 < 1 ms | p99 < 5 ms | CPU µs/request |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for k in ["direct", NGINX, GW, PASS, LITELLM] {
        let sw = r.sweeps.get(k);
        let _ = writeln!(
            s,
            "| {k} | {} | {} | {} | {} | {} |",
            f(get(&r.rps, k), 0),
            f(get(&r.rps1, k), 0),
            f(sw.map(|x| x.1), 0),
            f(sw.map(|x| x.2), 0),
            f(get(&r.cpu_us, k), 1)
        );
    }
    for (k, (steps, _, _)) in &r.sweeps {
        let _ = writeln!(s, "\nOpen-loop steps, {k} (last repeat):\n");
        let _ = writeln!(s, "| rate | achieved | p50 µs | p99 µs | errors |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for st in steps {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0} | {} |",
                st.rate, st.achieved, st.p50, st.p99, st.errors
            );
        }
    }

    let _ = writeln!(s, "\n## Concurrent slow streams\n");
    let _ = writeln!(
        s,
        "Streams open at 1 000 per second; each then gets content chunks 500 ms apart until 5 s \
         after the last one opened, so all N are open at once. RSS per stream is the \
         gateway's resident memory with every stream open minus its memory before the first \
         step, divided by N. A stall is \
         a stream that failed, ended without `[DONE]`, or went more than interval + 1 s without a \
         chunk. Each stream is also one HTTP/1.1 connection from the gateway to the mock. Where \
         one client connection per stream would pass the gateway's open-file limit (two \
         descriptors per stream; this sandbox's hard limit is 20 000 and cannot be raised), the \
         clients share h2c connections instead, as they would behind a reverse proxy speaking \
         HTTP/2 to the gateway. The direct baseline is always HTTP/1.1.\n"
    );
    let _ = writeln!(
        s,
        "| streams | client → gateway | stalls | RSS/stream KiB | TTFB p50 µs (direct) | TTFB p99 µs (direct) | gap p99 − interval µs (direct) | max gap excess µs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (d, g) in &r.streams {
        let conns = if g.h2_conns > 0 {
            format!("{} h2c connections", g.h2_conns)
        } else {
            "HTTP/1.1, one each".to_owned()
        };
        let _ = writeln!(
            s,
            "| {} | {conns} | {} | {:.1} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} |",
            g.n,
            g.stalls,
            g.rss_per_stream_kib,
            g.ttfb[0],
            d.ttfb[0],
            g.ttfb[1],
            d.ttfb[1],
            g.gap_p99,
            d.gap_p99,
            g.gap_max
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes from the run\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    if !r.machine.is_empty() {
        let _ = writeln!(s, "\n## Machine and versions\n");
        let _ = writeln!(s, "{}", r.machine);
    }
    s
}

/// A table of p50/p99/p99.9 (µs) per target: non-stream, then stream time to first byte.
fn latency_table(
    s: &mut String,
    first: &str,
    keys: &[&str],
    plain: &std::collections::BTreeMap<String, [f64; 3]>,
    ttfb: &std::collections::BTreeMap<String, [f64; 3]>,
) {
    let _ = writeln!(
        s,
        "| {first} | non-stream p50 | p99 | p99.9 | stream TTFB p50 | p99 | p99.9 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for &k in keys {
        let (a, b) = (get(plain, k), get(ttfb, k));
        let c = |v: Option<[f64; 3]>, i: usize| f(v.map(|x| x[i]), 1);
        let _ = writeln!(
            s,
            "| {k} | {} | {} | {} | {} | {} | {} |",
            c(a, 0),
            c(a, 1),
            c(a, 2),
            c(b, 0),
            c(b, 1),
            c(b, 2)
        );
    }
}
