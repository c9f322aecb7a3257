//! The `## Soak` section of `bench/RESULTS.md`: what ran, how every request ended, the faults,
//! the purchases and operator commands, memory and descriptors, and each invariant with its
//! figures. It replaces the section of an earlier soak and leaves the rest of the file alone
//! (and `mr-bench run`, which rewrites the file, carries the section over).

use std::fmt::Write as _;
use std::path::Path;

use super::Opts;
use super::sampler::{self, Flat, Growth, Sample};
use super::verdict::Verdict;
use super::world::World;

const HEADING: &str = "## Soak";

/// What the section is made from.
pub struct Inputs<'a> {
    /// The run's options.
    pub opts: &'a Opts,
    /// How long the load ran.
    pub load_secs: f64,
    /// Counters and keys.
    pub world: &'a World,
    /// Memory and descriptor samples.
    pub samples: &'a [Sample],
    /// Their judgement.
    pub flat: &'a Flat,
    /// Every check.
    pub verdict: &'a Verdict,
}

/// A table cell: no pipe may end the cell early.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The section, heading included, ending with a newline.
pub fn render(i: &Inputs<'_>) -> String {
    let mut s = String::new();
    let result = if i.verdict.passed() { "PASS" } else { "FAIL" };
    let requests = i.world.tally.requests();
    let total: u64 = requests.values().sum();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "**{result}** — `bench/soak.sh --minutes {}`, {}, modelrelay {}. Load ran {:.1} min at \
         {:.0} requests/s aimed ({:.1}/s sent, all kinds); the release gateway in its own process \
         against the simulated DeepSeek (two accounts) and PayPal, the console attached in tmux \
         throughout. What runs and how it is judged: `bench/README.md`, section Soak.\n",
        i.opts.minutes,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        i.opts.commit,
        i.load_secs / 60.0,
        i.opts.rate,
        total as f64 / i.load_secs.max(1.0),
    );

    let _ = writeln!(s, "### Checks\n\n| check | figures | |\n|---|---|---|");
    for c in &i.verdict.checks {
        let mark = if c.ok { "ok" } else { "**FAIL**" };
        let _ = writeln!(s, "| {} | {} | {mark} |", cell(&c.name), cell(&c.figures));
    }
    let (n, first) = i.world.tally.surprises();
    if n > 0 {
        let _ = writeln!(s, "\nSurprises ({n}; the first {}):\n", first.len());
        for f in &first {
            let _ = writeln!(s, "- {}", f.replace('\n', " "));
        }
    }

    let _ = writeln!(
        s,
        "\n### Requests by outcome\n\n| kind | outcome | count |\n|---|---|---:|"
    );
    for ((kind, outcome), n) in &requests {
        let _ = writeln!(s, "| {kind} | {} | {n} |", cell(outcome));
    }
    let _ = writeln!(s, "| **all** | | **{total}** |");

    let _ = writeln!(
        s,
        "\n### Faults injected\n\nPer request (chat and messages requests sent with each; the \
         rest of the `[[sim …]]` directive sets the reply's length and pace):\n\n\
         | scenario | requests |\n|---|---:|"
    );
    for (scenario, n) in i.world.tally.scenarios() {
        let _ = writeln!(s, "| {scenario} | {n} |");
    }
    let events = i.world.tally.events();
    let faults: Vec<String> = events
        .iter()
        .filter_map(|(k, n)| {
            k.strip_prefix("account fault: ")
                .map(|f| format!("{f} ×{n}"))
        })
        .collect();
    let _ = writeln!(
        s,
        "\nPer account (one account at a time, 6 s every 20 s): {}.\n",
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        }
    );

    let _ = writeln!(
        s,
        "### Storefront and operator\n\n| what | count |\n|---|---:|"
    );
    for (k, n) in &events {
        if !k.starts_with("account fault: ") {
            let _ = writeln!(s, "| {} | {n} |", cell(k));
        }
    }

    let _ = writeln!(
        s,
        "\n### Memory and descriptors\n\n{} samples, one every {} s; baseline = median of the \
         second fifth (the first is warm-up), end = median of the last fifth. The database's \
         size is shown, not judged: memory that followed it would point at SQLite's page \
         cache.\n\n\
         | series | start | baseline | end | max | growth | bound |\n|---|---:|---:|---:|---:|---:|---:|---:|",
        i.samples.len(),
        i.opts.sample_secs,
    );
    for (name, g) in [
        ("gateway RSS, MiB", &i.flat.rss_mib),
        ("gateway open fds", &i.flat.fds),
        ("console RSS, MiB", &i.flat.console_mib),
    ] {
        let _ = writeln!(s, "{}", growth_row(name, g));
    }
    let db = &i.flat.db_mib;
    let _ = writeln!(
        s,
        "| database, MiB (not judged) | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | — |",
        db.start,
        db.baseline,
        db.end,
        db.max,
        db.end - db.baseline
    );
    let _ = writeln!(
        s,
        "\nThe maxima come from the slow and hung account faults: requests wait on upstream \
         meanwhile and connections pile up, then close; the medians are not moved by them."
    );
    let _ = writeln!(
        s,
        "\nOver the run (every sample: `target/bench/soak/samples.csv`):\n\n\
         | s | gateway RSS, MiB | of it: heap | of it: huge pages | gateway fds | console RSS, MiB | database, MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for x in sampler::digest(i.samples, 11) {
        let _ = writeln!(
            s,
            "| {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} |",
            x.at_secs,
            mib(x.rss_kib),
            mib(x.anon_kib),
            mib(x.huge_kib),
            x.fds,
            mib(x.console_kib),
            mib(x.db_kib)
        );
    }
    s
}

fn growth_row(name: &str, g: &Growth) -> String {
    format!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | +{:.1} |",
        g.start,
        g.baseline,
        g.end,
        g.max,
        g.end - g.baseline,
        g.bound
    )
}

/// `(start, end)` byte range of the `## Soak` section in `text`, up to the next `## ` heading.
fn find(text: &str) -> Option<(usize, usize)> {
    let mut at = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let heading = line.trim_end();
        match start {
            None if heading == HEADING => start = Some(at),
            Some(s) if heading.starts_with("## ") => return Some((s, at)),
            _ => {}
        }
        at += line.len();
    }
    start.map(|s| (s, text.len()))
}

/// `text` with its `## Soak` section replaced by `section` (or `section` appended).
pub fn with_section(text: &str, section: &str) -> String {
    match find(text) {
        Some((a, b)) => {
            let rest = &text[b..];
            let sep = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{sep}{rest}", &text[..a])
        }
        None if text.trim().is_empty() => section.to_owned(),
        None => format!("{}\n\n{section}", text.trim_end()),
    }
}

/// Write `section` into the file at `path`, keeping everything else in it.
pub fn splice(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, with_section(&old, section))?;
    Ok(())
}

/// For `mr-bench run`, which rewrites the whole file: the new report with the old file's soak
/// section, if it had one.
pub fn carry_over(old: &str, new: &str) -> String {
    match find(old) {
        Some((a, b)) => with_section(new, old[a..b].trim_end()) + "\n",
        None => new.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let file = "# R\n\n## A\na\n\n## Soak\nold\n\n## B\nb\n";
        let out = with_section(file, "## Soak\nnew\n");
        assert_eq!(out, "# R\n\n## A\na\n\n## Soak\nnew\n\n## B\nb\n");
        let last = with_section("# R\n\n## Soak\nold\n", "## Soak\nnew\n");
        assert_eq!(last, "# R\n\n## Soak\nnew\n");
        assert_eq!(with_section("# R\n", "## Soak\nx\n"), "# R\n\n## Soak\nx\n");
        assert_eq!(carry_over(file, "# R2\n"), "# R2\n\n## Soak\nold\n");
    }
}
