//! What the soak saw, counted: requests by kind and outcome, the other activities (faults,
//! purchases, CLI calls) by name, the request ids that must each have a ledger row, and every
//! surprise — anything the gateway's contract does not allow in the situation the soak made —
//! with the first few in words. Any surprise fails the run.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Surprises kept in words (all are counted).
const SURPRISES_KEPT: usize = 40;

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    scenarios: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
    surprises: Vec<String>,
    surprise_count: u64,
    billed: Vec<String>,
}

/// The run's counters (one lock; the soak's rate makes contention a non-issue).
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

/// Totals for the progress line.
pub struct Totals {
    /// Requests of every kind.
    pub requests: u64,
    /// Surprises.
    pub surprises: u64,
}

impl Tally {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request of `kind` ended with `outcome`.
    pub fn request(&self, kind: &str, outcome: &str) {
        *self
            .lock()
            .requests
            .entry((kind.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// A request was sent with the upstream fault or client behaviour `scenario`.
    pub fn scenario(&self, scenario: &str) {
        *self
            .lock()
            .scenarios
            .entry(scenario.to_owned())
            .or_default() += 1;
    }

    /// Something else happened once (a purchase, a fault, a CLI call…).
    pub fn event(&self, name: &str) {
        *self.lock().events.entry(name.to_owned()).or_default() += 1;
    }

    /// How many times `name` happened.
    pub fn event_count(&self, name: &str) -> u64 {
        self.lock().events.get(name).copied().unwrap_or(0)
    }

    /// Something that must not happen did.
    pub fn surprise(&self, what: String) {
        let mut t = self.lock();
        t.surprise_count += 1;
        if t.surprises.len() < SURPRISES_KEPT {
            eprintln!("soak: SURPRISE: {what}");
            t.surprises.push(what);
        }
    }

    /// The request `id` reached upstream and was answered (or abandoned after its headers):
    /// it must have exactly one ledger row.
    pub fn must_bill(&self, id: String) {
        self.lock().billed.push(id);
    }

    /// Totals for the progress line.
    pub fn totals(&self) -> Totals {
        let t = self.lock();
        Totals {
            requests: t.requests.values().sum(),
            surprises: t.surprise_count,
        }
    }

    /// `(kind, outcome) → count`.
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.lock().requests.clone()
    }

    /// `scenario → requests sent with it`.
    pub fn scenarios(&self) -> BTreeMap<String, u64> {
        self.lock().scenarios.clone()
    }

    /// `event → count`.
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.lock().events.clone()
    }

    /// How many surprises, and the first ones in words.
    pub fn surprises(&self) -> (u64, Vec<String>) {
        let t = self.lock();
        (t.surprise_count, t.surprises.clone())
    }

    /// The request ids that must have a ledger row.
    pub fn billed(&self) -> Vec<String> {
        self.lock().billed.clone()
    }
}
