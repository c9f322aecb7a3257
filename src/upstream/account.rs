//! One upstream account at run time: where it is, its key, its caps and requests in flight per
//! model, and its health — all atomics, read on every request without a lock.
//!
//! Health is a small state machine: `healthy`; `cooling` after a 429, a 5xx, a timeout or a
//! connection failure (5 s, doubling up to 5 min, then one trial request — half-open — decides);
//! `disabled` after DeepSeek refused the account itself (401/403, or 402 "Insufficient
//! Balance") until the operator enables it or a probe finds it working.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// First cooling period after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest cooling period.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Serving.
    Healthy,
    /// Resting after a failure; tried again once the backoff has passed.
    Cooling,
    /// Refused by DeepSeek (key or balance), or by the operator; not used until enabled.
    Disabled,
}

impl AccountState {
    /// The name shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Healthy => "healthy",
            AccountState::Cooling => "cooling",
            AccountState::Disabled => "disabled",
        }
    }

    fn from_u8(v: u8) -> AccountState {
        match v {
            0 => AccountState::Healthy,
            1 => AccountState::Cooling,
            _ => AccountState::Disabled,
        }
    }
}

/// Why an account was disabled (a probe may bring back only what DeepSeek disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledBy {
    /// DeepSeek refused it.
    Upstream,
    /// The operator turned it off.
    Operator,
}

pub use crate::clock::{mono_ms, now_ms};

/// An upstream URL parsed once: parsing it on every request (IDNA host processing included)
/// showed in the profile. Keeps the text, for the error of a URL that does not parse (the
/// config's check refuses such a base URL, so this is a second guard).
pub(super) struct Prepared {
    raw: String,
    uri: Option<hyper::Uri>,
}

impl Prepared {
    fn new(raw: String) -> Prepared {
        let uri = raw.parse().ok();
        Prepared { raw, uri }
    }

    /// The parsed URL, or why there is none.
    pub(super) fn uri(&self) -> Result<&hyper::Uri, String> {
        self.uri
            .as_ref()
            .ok_or_else(|| format!("the upstream URL {:?} does not parse", self.raw))
    }
}

/// A DeepSeek account.
pub struct Account {
    /// Its name.
    pub name: String,
    /// The same, shared with the requests it serves (no copy a request).
    pub label: std::sync::Arc<str>,
    /// `Bearer <key>`.
    pub(super) auth: String,
    /// SHA-256 of its key, hex: what the operator's "disabled" flag is kept for (a new key
    /// under the same name is not the account that was disabled).
    pub key_sha256: String,
    /// The same as a header value, built once. Configuration refuses a key a header cannot
    /// carry; `None` is only for an account built from an unvalidated config (each request
    /// then fails as unreachable, with that reason in the log, rather than panicking).
    pub(super) auth_header: Option<hyper::header::HeaderValue>,
    /// `<base as given>/chat/completions`.
    pub(super) chat_url: Prepared,
    /// `<base>/anthropic/v1/messages`.
    pub(super) messages_url: Prepared,
    /// `<base>/user/balance`.
    pub(super) balance_url: String,
    /// `<base as given>/models`: asked when the balance is not where it should be (see
    /// `watch::fetch`).
    pub(super) models_url: String,
    /// Its weight.
    pub weight: u32,
    /// Cap per model slot.
    pub caps: Vec<u32>,
    /// In flight per model slot.
    in_flight: Vec<AtomicU32>,
    state: AtomicU8,
    /// Moved on at every change of state or rest: a request's verdict counts only if its slot
    /// was taken in the epoch it is given in. Requests sent before a rest (or before the
    /// recovery after it) ended that rest within a second when their answers came, or began
    /// a new one with their failures (found by an independent check).
    epoch: AtomicU64,
    /// While cooling: when a trial may go, on the monotonic clock ([`mono_ms`]): kept on the
    /// wall clock, a step of it back (NTP) kept the account resting as long as the step.
    until_ms: AtomicI64,
    backoff_ms: AtomicU64,
    /// Its kept backoff was earned by a stream that broke after it began: only a stream that
    /// ends whole clears it. A whole non-stream answer says nothing of its streams (with mixed
    /// traffic, an account whose every stream broke rested 5 s at a time for ever, each
    /// non-stream answer wiping its backoff: found by an independent re-check).
    streams_broke: AtomicBool,
    /// A half-open trial is under way.
    trial: AtomicBool,
    disabled_by_operator: AtomicBool,
    /// Its last balance check answered 401 (the key), or 404 or a redirect (`base_url`), and
    /// no answer of it has come since. Not acted on by the requests (a passing 401 of the balance endpoint would
    /// take a working account out), but the storefront sells no key while every account is
    /// disabled or so (see [`Account::may_serve`]).
    refused_at_balance: AtomicBool,
    /// Something answered at its `base_url` since the start (an HTTP answer of any status, to a
    /// request or a balance check): while nothing has, a balance check that cannot connect
    /// refuses it as a 404 does (a mistyped host or port sold keys that could only get 502s;
    /// found by a newcomer's check), while one that has answered before is only down for now.
    answered: AtomicBool,
    /// Requests sent (attempts) and failed attempts.
    pub requests: AtomicU64,
    /// Smooth weighted round robin's running score among equally full accounts
    /// (`Pool::smooth_turn`).
    pub turn: AtomicI64,
    /// Failed attempts.
    pub errors: AtomicU64,
    /// The last failure, for the operator.
    last_error: Mutex<Option<(String, i64)>>,
}

impl Account {
    /// An account from config, healthy, with `caps` per model slot.
    pub fn new(a: &crate::config::Account, caps: Vec<u32>) -> Account {
        Account {
            name: a.name.clone(),
            label: a.name.as_str().into(),
            auth: format!("Bearer {}", a.api_key),
            key_sha256: {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(a.api_key.trim().as_bytes()))
            },
            auth_header: hyper::header::HeaderValue::try_from(format!("Bearer {}", a.api_key))
                .ok()
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            chat_url: Prepared::new(format!("{}/chat/completions", a.openai_base)),
            messages_url: Prepared::new(format!("{}/anthropic/v1/messages", a.base_url)),
            balance_url: format!("{}/user/balance", a.base_url),
            models_url: format!("{}/models", a.openai_base),
            weight: a.weight.max(1),
            in_flight: caps.iter().map(|_| AtomicU32::new(0)).collect(),
            caps,
            state: AtomicU8::new(0),
            epoch: AtomicU64::new(0),
            until_ms: AtomicI64::new(0),
            backoff_ms: AtomicU64::new(0),
            streams_broke: AtomicBool::new(false),
            trial: AtomicBool::new(false),
            disabled_by_operator: AtomicBool::new(false),
            refused_at_balance: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            turn: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Where it stands now.
    pub fn state(&self) -> AccountState {
        AccountState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Requests in flight for model slot `m`.
    pub fn in_flight(&self, m: usize) -> u32 {
        self.in_flight
            .get(m)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// How full it is for model `m`, relative to its cap × weight (lower is freer).
    pub(super) fn load(&self, m: usize) -> f64 {
        let cap = f64::from(self.caps.get(m).copied().unwrap_or(1).max(1));
        f64::from(self.in_flight(m)) / (cap * f64::from(self.weight))
    }

    /// May it take a request now (`now`: [`mono_ms`])? Healthy, or cooling with its backoff
    /// over and no trial under way (then this request is the trial).
    pub(super) fn usable(&self, now: i64) -> bool {
        match self.state() {
            AccountState::Healthy => true,
            AccountState::Cooling => {
                now >= self.until_ms.load(Ordering::Acquire) && !self.trial.load(Ordering::Acquire)
            }
            AccountState::Disabled => false,
        }
    }

    /// Take a slot for model `m` if it is under its cap: `Some(true)` when the slot is a
    /// cooling account's one trial (its holder must end it: [`Account::end_trial`]),
    /// `Some(false)` for an ordinary slot, `None` when there is none.
    pub(super) fn try_take(&self, m: usize, now: i64) -> Option<bool> {
        let counter = self.in_flight.get(m)?;
        let cap = self.caps.get(m).copied().unwrap_or(0);
        let trial = match self.state() {
            AccountState::Healthy => false,
            AccountState::Cooling => {
                if now < self.until_ms.load(Ordering::Acquire)
                    || self
                        .trial
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                {
                    return None;
                }
                true
            }
            AccountState::Disabled => return None,
        };
        let took = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !took && trial {
            self.trial.store(false, Ordering::Release);
        }
        took.then_some(trial)
    }

    /// A trial ended without a verdict (its request was dropped — the client left, the daemon
    /// stopped): the account stays cooling, and the next request is its trial. Without this,
    /// the flag stayed set and the account never served again.
    /// A cooling account whose trial stream began is back in service on probation: healthy,
    /// its backoff kept until an answer of it ends whole ([`Account::clear_backoff`]), so
    /// that a break of the trial, or of any request it takes meanwhile, rests it for twice
    /// as long. True when its state changed.
    pub(super) fn back_on_probation(&self) -> bool {
        self.trial.store(false, Ordering::Release);
        let was = self
            .state
            .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if was {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        was
    }

    /// An answer ended whole on a healthy account (a `stream`, or a whole answer): the next
    /// failure rests it from the first backoff again — unless the backoff is a broken
    /// stream's and the answer was not a stream ([`Account::streams_broke`]).
    pub(super) fn clear_backoff(&self, stream: bool) {
        if self.state() != AccountState::Healthy {
            return;
        }
        if stream {
            self.streams_broke.store(false, Ordering::Release);
        } else if self.streams_broke.load(Ordering::Acquire) {
            return;
        }
        if self.backoff_ms.load(Ordering::Acquire) != 0 {
            self.backoff_ms.store(0, Ordering::Release);
        }
    }

    /// A stream of it broke after it began: its backoff (about to be set) is a stream's.
    pub(super) fn stream_broke(&self) {
        self.streams_broke.store(true, Ordering::Release);
    }

    pub(super) fn end_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// Take a slot for model `m` under its cap whatever the state but disabled (a cooling
    /// account used because no other can serve).
    pub(super) fn take_early(&self, m: usize) -> bool {
        if self.state() == AccountState::Disabled {
            return false;
        }
        let (Some(counter), Some(cap)) = (self.in_flight.get(m), self.caps.get(m).copied()) else {
            return false;
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give a slot back.
    pub(super) fn give_back(&self, m: usize) {
        if let Some(c) = self.in_flight.get(m) {
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// The current epoch (see the field).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// An attempt succeeded: a cooling account is healthy again (on probation, its backoff
    /// kept, when the rest was a broken stream's: see [`Account::clear_backoff`]). True when
    /// its state changed.
    pub(super) fn succeeded(&self) -> bool {
        self.trial.store(false, Ordering::Release);
        self.heard();
        if self.refused_at_balance.load(Ordering::Relaxed) {
            self.refused_at_balance.store(false, Ordering::Release);
        }
        let was = self
            .state
            .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if was {
            if !self.streams_broke.load(Ordering::Acquire) {
                self.backoff_ms.store(0, Ordering::Release);
            }
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        was
    }

    /// An attempt failed in a way that rests the account (429, 5xx, timeout, unreachable):
    /// cooling, for twice as long as the last time (5 s first, 5 min at most). A failure
    /// while it already rests (requests sent before the rest began, or taken early because
    /// no account could serve) counts as an error and starts the rest again from now, its
    /// length kept: doubled, a burst of a dozen 429s rested an account for minutes, not 5 s;
    /// left as it was, the failing account stayed first in line while every account rested
    /// and took every request, each failing, while another had recovered (found by an
    /// independent re-check). True when its state changed.
    pub(super) fn cool(&self, why: &str) -> bool {
        self.note_error(why);
        let first = u64::try_from(FIRST_BACKOFF.as_millis()).unwrap_or(5000);
        let max = u64::try_from(MAX_BACKOFF.as_millis()).unwrap_or(300_000);
        match self.state() {
            AccountState::Disabled => return false,
            AccountState::Cooling if mono_ms() < self.until_ms.load(Ordering::Acquire) => {
                let rest = self.backoff_ms.load(Ordering::Acquire).max(first);
                let until = mono_ms().saturating_add(i64::try_from(rest).unwrap_or(i64::MAX));
                self.until_ms.fetch_max(until, Ordering::AcqRel);
                return false;
            }
            _ => {}
        }
        let backoff = match self.backoff_ms.load(Ordering::Acquire) {
            0 => first,
            b => b.saturating_mul(2).min(max),
        };
        self.backoff_ms.store(backoff, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.until_ms.store(
            mono_ms().saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)),
            Ordering::Release,
        );
        self.trial.store(false, Ordering::Release);
        self.state.swap(1, Ordering::AcqRel) != 1
    }

    /// DeepSeek refused the account (or the operator turned it off). True when its state
    /// changed.
    pub(super) fn disable(&self, by: DisabledBy, why: &str) -> bool {
        // The operator's switch is not a failure: the last error stays DeepSeek's.
        match by {
            DisabledBy::Operator => self.disabled_by_operator.store(true, Ordering::Release),
            DisabledBy::Upstream => self.note_error(why),
        }
        self.trial.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state.swap(2, Ordering::AcqRel) != 2
    }

    /// Back in service (the operator, or a probe that found it working). A probe does not
    /// bring back what the operator turned off. True when its state changed.
    pub(super) fn enable(&self, by: DisabledBy) -> bool {
        if by == DisabledBy::Upstream && self.disabled_by_operator.load(Ordering::Acquire) {
            return false;
        }
        self.disabled_by_operator.store(false, Ordering::Release);
        self.backoff_ms.store(0, Ordering::Release);
        self.streams_broke.store(false, Ordering::Release);
        self.trial.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state.swap(0, Ordering::AcqRel) != 0
    }

    /// Disabled by DeepSeek (a probe may bring it back).
    pub(super) fn disabled_by_upstream(&self) -> bool {
        self.state() == AccountState::Disabled && !self.disabled_by_operator.load(Ordering::Acquire)
    }

    /// What its balance check said: why the key or the `base_url` is wrong (a 401, a 404, a
    /// redirect: noted as its last error), or `None` for a reading. See the field.
    pub(super) fn balance_checked(&self, refused: Option<&str>) {
        if let Some(why) = refused {
            self.note_error(why);
        }
        self.refused_at_balance
            .store(refused.is_some(), Ordering::Release);
    }

    /// Something answered at its `base_url` (see the field).
    pub(super) fn heard(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Release);
        }
    }

    /// Whether anything has answered at its `base_url` since the start (see the field).
    pub(super) fn ever_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// Its last balance check said its key or `base_url` is wrong (see the field).
    pub fn balance_refused(&self) -> bool {
        self.refused_at_balance.load(Ordering::Acquire)
    }

    /// Whether it may serve requests as far as anyone knows: not disabled, and its key not
    /// refused at the last balance check with no answer since.
    pub fn may_serve(&self) -> bool {
        self.state() != AccountState::Disabled && !self.balance_refused()
    }

    /// Turned off by the operator (only the operator turns it back on).
    pub fn disabled_by_operator(&self) -> bool {
        self.disabled_by_operator.load(Ordering::Acquire)
    }

    /// The length of its last rest (ms) while it is kept: resting, or back on probation (a
    /// failure then rests it for twice this); 0 once an answer ended whole.
    pub fn backoff_ms(&self) -> u64 {
        self.backoff_ms.load(Ordering::Acquire)
    }

    /// When a cooling account may be tried again (unix ms, for display: its rest left, from
    /// now on the wall clock).
    pub fn cooling_until_ms(&self) -> Option<i64> {
        (self.state() == AccountState::Cooling).then(|| {
            let left = self.until_ms.load(Ordering::Acquire) - mono_ms();
            now_ms().saturating_add(left)
        })
    }

    /// A failed attempt that does not change the account's state, shown to the operator.
    pub(super) fn note_failure(&self, why: &str) {
        self.note_error(why);
    }

    fn note_error(&self, why: &str) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some((why.chars().take(300).collect(), now_ms()));
    }

    /// Tests: when a cooling account's rest ends, on the monotonic clock (the wall-clock
    /// reading of [`Account::cooling_until_ms`] may differ by a millisecond from one call to
    /// the next).
    #[cfg(test)]
    pub(super) fn rest_until(&self) -> Option<i64> {
        (self.state() == AccountState::Cooling).then(|| self.until_ms.load(Ordering::Acquire))
    }

    /// Tests: a cooling account's rest is over now.
    #[cfg(test)]
    pub(super) fn rest_over(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    /// The last failure and when (unix ms).
    pub fn last_error(&self) -> Option<(String, i64)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(cap: u32) -> Account {
        let cfg = crate::config::Account {
            name: "a".into(),
            api_key: "k".into(),
            base_url: "http://x".into(),
            openai_base: "http://x".into(),
            weight: 1,
            max_in_flight: Default::default(),
        };
        Account::new(&cfg, vec![cap])
    }

    #[test]
    fn slots_never_exceed_the_cap() {
        let a = account(2);
        let now = mono_ms();
        assert!(a.try_take(0, now).is_some() && a.try_take(0, now).is_some());
        assert!(a.try_take(0, now).is_none(), "cap 2");
        a.give_back(0);
        assert_eq!(a.try_take(0, now), Some(false));
        assert_eq!(a.in_flight(0), 2);
    }

    #[test]
    fn cooling_backs_off_then_one_trial_decides() {
        let a = account(10);
        assert!(a.cool("503"));
        assert_eq!(a.state(), AccountState::Cooling);
        // On the monotonic clock (a step of the wall clock does not move a rest).
        let now = mono_ms();
        assert!(!a.usable(now), "resting");
        let later = now + 5_001;
        assert!(a.usable(later));
        assert_eq!(a.try_take(0, later), Some(true), "the trial");
        assert_eq!(a.try_take(0, later), None, "one trial at a time");
        // A failure while it rests: noted, and the rest starts again from now, as long as
        // before (not doubled).
        let until = a.cooling_until_ms().unwrap();
        assert!(!a.cool("503 from before"));
        let again = a.cooling_until_ms().unwrap();
        let left = again - now_ms();
        // Shown on the wall clock, read apart from the monotonic one: a millisecond either way.
        assert!(
            again + 1 >= until && left > 4_000 && left <= 5_001,
            "{left}"
        );
        assert_eq!(
            a.last_error().map(|e| e.0),
            Some("503 from before".to_string())
        );
        // The trial's own failure, once the rest is over, doubles it.
        a.rest_over();
        assert!(!a.cool("503 again"), "still cooling, for longer");
        // 10 s now.
        let until = a.cooling_until_ms().unwrap();
        assert!(
            until - now_ms() > 9_000 && until - now_ms() <= 10_001,
            "{}",
            until - now_ms()
        );
        // Not before those 10 s (on the monotonic clock), then the trial.
        let rest_ends = a.rest_until().unwrap();
        assert!(rest_ends - mono_ms() > 9_000, "{}", rest_ends - mono_ms());
        assert_eq!(a.try_take(0, rest_ends - 1), None);
        assert_eq!(a.try_take(0, rest_ends), Some(true));
        assert!(a.succeeded());
        assert_eq!(a.state(), AccountState::Healthy);
        assert!(
            a.try_take(0, now) == Some(false) && a.try_take(0, now) == Some(false),
            "healthy: no trial limit"
        );
    }

    #[test]
    fn a_probe_does_not_undo_the_operator() {
        let a = account(1);
        a.disable(DisabledBy::Operator, "operator");
        assert!(a.disabled_by_operator());
        assert_eq!(
            a.last_error(),
            None,
            "the operator's switch is not an error"
        );
        assert!(!a.enable(DisabledBy::Upstream));
        assert_eq!(a.state(), AccountState::Disabled);
        assert!(a.enable(DisabledBy::Operator));
        a.disable(DisabledBy::Upstream, "401");
        assert!(a.disabled_by_upstream());
        assert!(a.enable(DisabledBy::Upstream));
        assert_eq!(a.state(), AccountState::Healthy);
    }
}
