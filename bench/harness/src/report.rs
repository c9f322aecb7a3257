//! `bench/RESULTS.md`: the targets as ratios first, then the absolute figures.

use std::fmt::Write as _;

use crate::headline::Headline;
use crate::run::{DIRECT, GATEWAY as GW, GATEWAY_NORMAL as NORMAL, LITELLM, NGINX, PASS, Results};
use crate::targets;

fn get<T: Copy>(m: &std::collections::BTreeMap<String, T>, k: &str) -> Option<T> {
    m.get(k).copied()
}

/// A figure with `digits` decimals, or "—" when it was not measured.
pub(crate) fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "—".into(),
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

    let now = Headline::of(r);
    targets::render(&mut s, r, &now);
    if let Some(before) = &r.before {
        before_after(&mut s, before, &now);
    }
    durability(&mut s, r);

    let _ = writeln!(s, "## Added latency at one connection (µs)\n");
    let _ = writeln!(
        s,
        "{} requests per target per repeat (LiteLLM: a tenth), targets alternated in rounds.\n",
        r.latency_requests
    );
    latency_table(
        &mut s,
        "through",
        &[NGINX, GW, NORMAL, PASS, LITELLM],
        &r.added,
        &r.added_ttfb,
    );
    let _ = writeln!(s, "\nAbsolute (µs), for reference:\n");
    latency_table(
        &mut s,
        "target",
        &[DIRECT, NGINX, GW, NORMAL, PASS, LITELLM],
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
    for k in [DIRECT, NGINX, GW, NORMAL, PASS, LITELLM] {
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

/// Headline figures of the earlier run next to this one's, per target.
fn before_after(s: &mut String, before: &Headline, now: &Headline) {
    let _ = writeln!(
        s,
        "## Before and after
"
    );
    let _ = writeln!(
        s,
        "Before: {}. After: {}. Non-stream unless said; added latency at one connection.\n",
        before.label, now.label
    );
    let _ = writeln!(
        s,
        "| target | added p99 µs | stream TTFB added p99 µs | RPS @64 | RPS @1 | CPU µs/request |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let pair = |b: Option<f64>, a: Option<f64>, d: usize| format!("{} → {}", f(b, d), f(a, d));
    for k in [NGINX, GW, NORMAL, PASS, LITELLM] {
        let _ = writeln!(
            s,
            "| {k} | {} | {} | {} | {} | {} |",
            pair(before.p99(k), now.p99(k), 1),
            pair(before.ttfb_p99(k), now.ttfb_p99(k), 1),
            pair(get(&before.rps, k), get(&now.rps, k), 0),
            pair(get(&before.rps1, k), get(&now.rps1, k), 0),
            pair(get(&before.cpu_us, k), get(&now.cpu_us, k), 1),
        );
    }
    let _ = writeln!(s);
}

/// What each `store.sync` mode costs at one connection, against the disk's own fsync.
fn durability(s: &mut String, r: &Results) {
    let _ = writeln!(s, "## Durability: `store.sync` full vs normal\n");
    let _ = writeln!(
        s,
        "`full` (the default) sends an answer's last byte only after its ledger row is on disk \
         (written to the ledger's journal and synced there, one fdatasync shared by the answers \
         that settle together; committed to SQLite behind); `normal` hands the row to the OS \
         before the last byte and syncs every `store.sync_interval_ms`. \
         The disk's fsync is a 4 KiB write + fdatasync in the gateway's data directory, timed \
         in the same run between latency repeats.\n"
    );
    match r.fsync {
        Some(([p50, p99, p999], n)) => {
            let _ = writeln!(
                s,
                "Disk fsync ({n} timed): p50 {p50:.1} µs, p99 {p99:.1} µs, p99.9 {p999:.1} µs.\n"
            );
        }
        None => {
            let _ = writeln!(s, "Disk fsync: not measured in this run.\n");
        }
    }
    let _ = writeln!(
        s,
        "| mode | added p50 µs | p99 | p99.9 | RPS @64 | RPS @1 | CPU µs/request |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (mode, k) in [("full", GW), ("normal", NORMAL)] {
        let a = get(&r.added, k);
        let c = |i: usize| f(a.map(|x| x[i]), 1);
        let _ = writeln!(
            s,
            "| {mode} | {} | {} | {} | {} | {} | {} |",
            c(0),
            c(1),
            c(2),
            f(get(&r.rps, k), 0),
            f(get(&r.rps1, k), 0),
            f(get(&r.cpu_us, k), 1)
        );
    }
    let _ = writeln!(s);
}
