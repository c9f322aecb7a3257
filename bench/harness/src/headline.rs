//! The headline figures of a run, kept as JSON next to the report (`bench/RESULTS.json`) so that
//! a later run can show them as "before" (`--before`): the figures the targets are computed from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run::Results;

/// Medians of a run, per target name (see `run.rs` for the names).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Headline {
    /// Which run: commit and date.
    pub label: String,
    /// Added p50/p99/p99.9 µs, non-stream, one connection.
    #[serde(default)]
    pub added: BTreeMap<String, [f64; 3]>,
    /// Added p50/p99/p99.9 µs, stream time to first byte.
    #[serde(default)]
    pub added_ttfb: BTreeMap<String, [f64; 3]>,
    /// wrk RPS at 64 connections.
    #[serde(default)]
    pub rps: BTreeMap<String, f64>,
    /// wrk RPS at 1 connection.
    #[serde(default)]
    pub rps1: BTreeMap<String, f64>,
    /// CPU µs per non-stream request at a fixed rate.
    #[serde(default)]
    pub cpu_us: BTreeMap<String, f64>,
    /// The disk's write + fdatasync p50/p99/p99.9 µs, when measured.
    #[serde(default)]
    pub fsync: Option<[f64; 3]>,
}

impl Headline {
    /// The headline of a finished run.
    pub fn of(r: &Results) -> Headline {
        Headline {
            label: r.label.clone(),
            added: r.added.clone(),
            added_ttfb: r.added_ttfb.clone(),
            rps: r.rps.clone(),
            rps1: r.rps1.clone(),
            cpu_us: r.cpu_us.clone(),
            fsync: r.fsync.map(|(p, _)| p),
        }
    }

    /// Read a headline written by an earlier run (or transcribed from an earlier report).
    pub fn load(path: &Path) -> anyhow::Result<Headline> {
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }

    /// Added p99 µs (non-stream) of `k`.
    pub fn p99(&self, k: &str) -> Option<f64> {
        self.added.get(k).map(|v| v[1])
    }

    /// Added p99 µs of a stream's first byte through `k`.
    pub fn ttfb_p99(&self, k: &str) -> Option<f64> {
        self.added_ttfb.get(k).map(|v| v[1])
    }
}
