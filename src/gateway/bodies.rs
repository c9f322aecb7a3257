//! Bytes of request bodies being read, per key and in all. A body is read whole before it is
//! checked, and the body timer asks only 1 KiB/s of it ([`crate::server::MIN_RATE`]), so an
//! upload that trickles holds what it has sent for as long as it takes — two hours and more
//! for 8 MiB. Unbounded, a key starting uploads at its rate grew the daemon without limit:
//! `count_tokens` takes no place in flight, the chat routes up to `max_in_flight` ×
//! `server.max_body_bytes` a key (found by an independent check: 22 → 752 MB in 200 s from one
//! spent Trial key, nothing charged, nothing on the console; a few keys more and the OOM
//! killer takes every customer's streams with the daemon). So one key's bodies may hold at most
//! [`PER_KEY`] bodies of the largest size at once, and all keys' together [`IN_ALL`].
//!
//! What is counted is what has arrived — the memory — not what a body declares: counted
//! declared, sixteen Trial keys trickling bodies that declared 8 MiB filled the server's bound
//! while the daemon held ~30 MB, and every customer met 503 for hours (a re-check). And a
//! revoked key's bodies stop being read at their next piece: the revocation that ends such an
//! attack ended none of the bodies already arriving, two hours each at the body timer's rate.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::error::GatewayError;
use crate::activity::ActivityEvent;
use crate::keys::KeyState;
use crate::state::AppState;

/// How many bodies of the largest size (`server.max_body_bytes`) one key's bodies being read
/// may hold at once: room for a coding agent's subagents sending large contexts together (six
/// 5 MB bodies at once met the bound at two; a re-check), while fewer than eight keys cannot
/// fill the server's bound alone.
pub const PER_KEY: usize = 4;

/// How many bodies of the largest size all keys' bodies being read may hold at once (256 MiB at
/// the default 8 MiB limit, beside the 256 MiB streams may keep for slow readers).
pub const IN_ALL: usize = 32;

/// How many of the keys sending the most the log names when the server's bound is reached.
const SENDERS_NAMED: usize = 32;

/// The bytes of bodies being read, in all; each key's are on the key.
#[derive(Debug)]
pub struct Bodies {
    in_all: AtomicUsize,
    key_cap: usize,
    all_cap: usize,
}

/// Which bound a body would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The key's: it is sending this many bytes of bodies at most.
    Key(usize),
    /// The server's, all keys together.
    Server,
}

impl Bodies {
    /// The bounds for bodies of at most `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Bodies {
        Bodies {
            in_all: AtomicUsize::new(0),
            key_cap: max_body_bytes.saturating_mul(PER_KEY),
            all_cap: max_body_bytes.saturating_mul(IN_ALL),
        }
    }

    /// A body of `key` begins: nothing counted yet.
    pub fn start<'a>(&'a self, key: &'a KeyState) -> Reading<'a> {
        Reading {
            bodies: self,
            key,
            bytes: 0,
        }
    }

    /// Bytes being read now, in all.
    pub fn in_all(&self) -> usize {
        self.in_all.load(Ordering::Acquire)
    }
}

/// Add `n` to `counter` unless that takes it past `cap` (a compare-and-swap: never over the
/// cap under any concurrency, never a refusal while there is room).
fn take(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |have| {
            have.checked_add(n).filter(|total| *total <= cap)
        })
        .is_ok()
}

/// One body's bytes, counted while it is read; given back when dropped (read, refused, or its
/// request gone).
pub struct Reading<'a> {
    bodies: &'a Bodies,
    key: &'a KeyState,
    bytes: usize,
}

impl Reading<'_> {
    /// Count this body as `total` bytes (what has arrived): refused, nothing more is counted,
    /// when the key's or the server's bound would be passed.
    pub fn grow_to(&mut self, total: usize) -> Result<(), Full> {
        let Some(more) = total.checked_sub(self.bytes).filter(|n| *n > 0) else {
            return Ok(());
        };
        let Bodies {
            in_all,
            key_cap,
            all_cap,
        } = self.bodies;
        if !take(&self.key.reading, more, *key_cap) {
            return Err(Full::Key(*key_cap));
        }
        if !take(in_all, more, *all_cap) {
            self.key.reading.fetch_sub(more, Ordering::AcqRel);
            return Err(Full::Server);
        }
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.key.reading.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bodies.in_all.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Read `key`'s request body, enforcing `limit` (413 in our error shape, not axum's) and the
/// bounds above (429 `too_many_in_flight` for the key's, 503 for the server's; told to the
/// console, and the server's to the log, as a refusal). A body in a coding other than
/// `identity` is refused, not read (a gzipped body was refused as "not valid JSON", and a
/// plain one labelled `br` went through as if unlabelled); one that stopped arriving says so.
/// A body left unread by a refusal is read to its end in the background
/// (`server::body::linger`), not kept.
pub async fn read(
    state: &AppState,
    key: &KeyState,
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    if let Some(coding) = headers.get(header::CONTENT_ENCODING)
        && !coding
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::InvalidRequest {
            message: format!(
                "Content-Encoding {:?} is not supported: send the request body uncompressed.",
                String::from_utf8_lossy(coding.as_bytes())
                    .chars()
                    .take(40)
                    .collect::<String>()
            ),
            param: None,
        });
    }
    let mut reading = state.bodies.start(key);
    let refused = |full: Full| refuse(state, key, full);
    let declared = super::admission::declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::RequestTooLarge { limit });
    }
    // A body of one piece (most) is that piece, not a copy. From a second piece on, the
    // pieces are copied into one buffer, whose room is what is counted: each piece keeps
    // hyper's whole read buffer alive, so a body kept as its pieces held 30–300 times what it
    // counted (one-byte chunks, or 12-byte pieces of a declared body: one Trial key took the
    // daemon past 1 GB under its bound; found by a re-check).
    let mut first: Option<Bytes> = None;
    let mut whole: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(unread)?;
        // Revoked meanwhile: read no more of it (one atomic load a piece).
        if key.status() == crate::keys::KeyStatus::Revoked {
            return Err(GatewayError::InvalidApiKey(
                crate::keys::identify::IdentifyError::Revoked.message(),
            ));
        }
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(GatewayError::RequestTooLarge { limit });
        }
        if first.is_none() && whole.is_empty() {
            reading.grow_to(total).map_err(refused)?;
            first = Some(data);
            continue;
        }
        if whole.capacity() < total {
            // Doubling (a copy a doubling, not a piece), but never past a declared length.
            let doubled = total.max(whole.capacity().saturating_mul(2));
            let room = declared.map_or(doubled, |d| doubled.min(d.max(total)));
            reading.grow_to(room).map_err(refused)?;
            whole.reserve_exact(room - whole.len());
        }
        if let Some(earlier) = first.take() {
            whole.extend_from_slice(&earlier);
        }
        whole.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(whole)))
}

/// A body refused by a bound: the console is told whose it was (the uploads that fill a bound
/// do not finish, so nothing else would show them), and a full server is said in the log.
fn refuse(state: &AppState, key: &KeyState, full: Full) -> GatewayError {
    static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
    let error = match full {
        Full::Key(limit) => {
            state.metrics.rate_limited();
            GatewayError::TooMuchUploading { limit }
        }
        Full::Server => {
            if let Some(held_back) = SAID.due() {
                // Whose bodies fill it (the refused are others): the keys sending the most,
                // found by a walk of the keys once a minute at most.
                let mut senders: Vec<(usize, String)> = state
                    .keys
                    .all()
                    .iter()
                    .map(|k| (k.reading.load(Ordering::Acquire), k.id.clone()))
                    .filter(|(bytes, _)| *bytes > 0)
                    .collect();
                senders.sort_unstable_by(|a, b| b.cmp(a));
                senders.truncate(SENDERS_NAMED);
                let senders = senders
                    .iter()
                    .map(|(bytes, id)| format!("{id} {bytes}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(
                    bytes = state.bodies.in_all(),
                    held_back,
                    senders = %senders,
                    "request bodies being read fill the server's bound ({IN_ALL} × \
                     server.max_body_bytes): new ones are refused (503) until they arrive; \
                     `senders` are the keys sending the most (bytes)"
                );
            }
            GatewayError::UploadsFull
        }
    };
    state.activity.emit(ActivityEvent::Refused {
        key_id: Some(key.id.clone()),
        status: error.status().as_u16(),
        code: error.code().to_string(),
        at_ms: crate::clock::now_ms(),
    });
    error
}

/// A body that could not be read: one that stopped arriving in time says so.
fn unread(e: axum::Error) -> GatewayError {
    let mut too_slow = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        too_slow |= c.is::<crate::server::TooSlow>();
        cause = c.source();
    }
    GatewayError::InvalidRequest {
        message: if too_slow {
            format!(
                "The request body did not arrive in time (it must keep coming at {} KiB/s or \
                 more).",
                crate::server::MIN_RATE / 1024
            )
        } else {
            "The request body could not be read.".into()
        },
        param: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRecord;
    use crate::money::Usd;

    fn key(id: &str) -> KeyState {
        KeyState::from_record(KeyRecord::for_tests(id, Usd::from_dollars(1)), 60)
    }

    /// A key's bodies may hold four of the largest size, all keys' thirty-two; past either the
    /// body is refused and counts nothing more; what is read is given back.
    #[test]
    fn bodies_are_bounded_per_key_and_in_all_and_given_back() {
        let bodies = Bodies::new(100);
        let a = key("key_a");
        let mut first = bodies.start(&a);
        first.grow_to(60).unwrap();
        first.grow_to(100).unwrap();
        first.grow_to(100).unwrap();
        let mut others: Vec<Reading<'_>> = (0..3).map(|_| bodies.start(&a)).collect();
        for r in &mut others {
            r.grow_to(100).unwrap();
        }
        let mut fifth = bodies.start(&a);
        assert_eq!(fifth.grow_to(1), Err(Full::Key(400)));
        assert_eq!(bodies.in_all(), 400);
        others.pop();
        fifth.grow_to(100).unwrap();
        assert_eq!(first.grow_to(101), Err(Full::Key(400)));
        drop((first, others, fifth));
        assert_eq!(bodies.in_all(), 0);
        assert_eq!(a.reading.load(Ordering::Acquire), 0);

        let keys: Vec<KeyState> = (0..9).map(|i| key(&format!("key_{i}"))).collect();
        let mut held = Vec::new();
        for k in &keys[..8] {
            for _ in 0..4 {
                let mut r = bodies.start(k);
                r.grow_to(100).unwrap();
                held.push(r);
            }
        }
        let mut last = bodies.start(&keys[8]);
        assert_eq!(last.grow_to(1), Err(Full::Server));
        // The key's count was given back with the refusal.
        assert_eq!(keys[8].reading.load(Ordering::Acquire), 0);
        held.pop();
        last.grow_to(100).unwrap();
        drop((held, last));
        assert_eq!(bodies.in_all(), 0);
    }

    /// Under any concurrency the bound holds and every byte is given back.
    #[test]
    fn the_bound_holds_under_concurrency() {
        let bodies = Bodies::new(10);
        let a = key("key_a");
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for i in 0..2_000 {
                        let mut r = bodies.start(&a);
                        if r.grow_to(1 + i % 10).is_ok() {
                            peak.fetch_max(a.reading.load(Ordering::Acquire), Ordering::AcqRel);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Acquire) <= 40);
        assert_eq!(a.reading.load(Ordering::Acquire), 0);
        assert_eq!(bodies.in_all(), 0);
    }
}
