//! The run's verdict: every check made, what was found, and whether it held; rendered as lines
//! for stderr here and as a table in the report.

/// One check and its figures.
#[derive(Clone, Debug)]
pub struct Check {
    /// What must hold.
    pub name: String,
    /// What was found.
    pub figures: String,
    /// Whether it held.
    pub ok: bool,
}

/// Every check of the run.
#[derive(Default, Debug)]
pub struct Verdict {
    /// In the order made.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// Record a check.
    pub fn add(&mut self, name: &str, figures: String, ok: bool) {
        self.checks.push(Check {
            name: name.to_owned(),
            figures,
            ok,
        });
    }

    /// Every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// One line per check, for stderr.
    pub fn summary(&self) -> String {
        let lines: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                let mark = if c.ok { "ok  " } else { "FAIL" };
                format!("{mark} {}: {}", c.name, c.figures)
            })
            .collect();
        let result = if self.passed() { "PASS" } else { "FAIL" };
        format!("{}\nsoak: {result}", lines.join("\n"))
    }
}
