//! `store.sync = "full"`: the journal's group sync, so an answer waits for its ledger row to be
//! on disk but not for SQLite's commit.
//!
//! A settled row's journal record is handed to this thread (see [`super::journal`]) and the row
//! goes to the writer to be committed behind, in batches, as with `normal`; the answer's last
//! byte then waits for this thread to write the record to the segment and sync it. One write
//! serves every record handed over before it started: whoever asks while one runs is answered
//! by the next (group commit), so under load a sync covers many answers.
//!
//! A sync costs about the same for one record as for fifty (the device's write and flush, and
//! the wake-ups around them: ~30 µs of kernel CPU per sync on the bench's host), so when other
//! answers (requests not streamed) are in flight that have not asked yet, the thread waits up
//! to [`GROUP_WAIT`] for them before it writes — PostgreSQL's `commit_delay` with
//! `commit_siblings`. With no other answer in flight (a lone client) it writes at once; with
//! others the wait ends as soon as every one of them has asked. Streams are not waited for: each
//! ends when its upstream ends it, and each stream's last event would carry the wait. Answers in
//! flight may also be seconds from settling (DeepSeek still writing them): a wait that gathers
//! nothing makes the next syncs skip waiting, for longer each time ([`Pacing`]), so with slow
//! answers in flight nearly every sync goes ahead at once. bench/PROFILE.md has the figures.
//!
//! A plain thread blocking on its queue, as the writer is: `fdatasync` blocks, and a row goes
//! from the answer's task straight to the thread that syncs it and the word straight back. Before
//! this, a `full` answer waited for the writer to commit its row (a one-row SQLite transaction,
//! ~60k instructions and a WAL append) and sync the WAL; bench/PROFILE.md has the figures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::journal::{Fate, Segment};

/// A request to sync: the segment a row was appended to, its record (see
/// [`super::journal::Appended`]), and who waits for the sync.
type Ask = (
    Arc<Segment>,
    Option<(Vec<u8>, Arc<Fate>)>,
    oneshot::Sender<std::io::Result<()>>,
);

/// The longest a sync waits for answers in flight to ask too: about one sync's own time on
/// a virtual disk, so an answer waits at most twice what its sync alone would take, and far
/// less than what it took DeepSeek to write it.
const GROUP_WAIT: Duration = Duration::from_micros(150);

/// The store's side of the sync thread. Dropped, the thread ends once its queue is empty.
pub(super) struct Syncer {
    asks: mpsc::Sender<Ask>,
}

impl Syncer {
    /// Start the thread. `coming` counts the answers in flight, each of which asks for a sync
    /// when it settles, those waiting on one included (see [`super::Store::answers_in_flight`]).
    pub(super) fn start(coming: Arc<AtomicUsize>) -> std::io::Result<Syncer> {
        let (asks, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-fsync".into())
            .spawn(move || run(&rx, &coming))?;
        Ok(Syncer { asks })
    }

    /// Ask for `record` (when the segment's records are written here), and everything
    /// appended to `segment` so far, to be put on disk: the receiver hears when it is, or the
    /// error the write or sync met (the caller must then get its row onto disk another way).
    /// `None` once the thread has stopped.
    pub(super) fn sync(
        &self,
        segment: Arc<Segment>,
        record: Option<(Vec<u8>, Arc<Fate>)>,
    ) -> Option<oneshot::Receiver<std::io::Result<()>>> {
        let (tx, rx) = oneshot::channel();
        self.asks.send((segment, record, tx)).ok().map(|()| rx)
    }
}

/// Whether a sync waits for answers in flight, learnt from how the last waits went: answers in
/// flight may be minutes from settling (DeepSeek writing a long answer, a request queued for an
/// account), and a wait for them is then time lost on every answer (found by an independent
/// check: one slow answer in flight put ~0.23 ms on every other one, and no wait ever gathered
/// a row). After a wait that gathered nothing, the next 1, 2, 4, … up to [`MAX_SKIP`] syncs do
/// not wait; one that gathers something, or [`FORGET_AFTER`] since the last futile one, makes
/// them wait again.
#[derive(Debug, Default)]
struct Pacing {
    /// Syncs left that do not wait.
    skip: u32,
    /// How many the next wait that gathers nothing makes skip.
    backoff: u32,
    /// When the last wait gathered nothing.
    futile_at: Option<Instant>,
}

/// The most syncs in a row that do not wait after waits that gathered nothing: one answer in a
/// thousand still tries.
const MAX_SKIP: u32 = 1024;

/// How long what the waits learnt holds: past it, the next sync may wait again whatever the
/// skip count says (a skip of 1 024 at a few answers a second lasted minutes after the slow
/// answers had gone; found by an independent re-check).
const FORGET_AFTER: Duration = Duration::from_secs(1);

impl Pacing {
    /// Whether this sync may wait.
    fn may_wait(&mut self) -> bool {
        if self.skip > 0 {
            if self
                .futile_at
                .is_some_and(|at| at.elapsed() >= FORGET_AFTER)
            {
                self.skip = 0;
                self.backoff = 0;
                return true;
            }
            self.skip -= 1;
            return false;
        }
        true
    }

    /// A wait ended, having gathered `more` asks.
    fn waited(&mut self, more: usize) {
        if more > 0 {
            self.backoff = 0;
            self.skip = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_SKIP);
            self.skip = self.backoff;
            self.futile_at = Some(Instant::now());
        }
    }
}

/// The asks one sync serves: `first`, what is queued behind it, and what comes while answers in
/// flight that have not asked yet may (up to `wait` after `first`). It waits only while
/// `coming` counts more answers in flight than there are asks — never with none counted (only
/// streams in flight, or a test's store with no gateway) — and only when `pacing` says recent
/// waits gathered something.
fn gather<T>(
    rx: &mpsc::Receiver<T>,
    first: T,
    coming: &AtomicUsize,
    wait: Duration,
    pacing: &mut Pacing,
) -> Vec<T> {
    let mut asks = vec![first];
    asks.extend(rx.try_iter());
    if coming.load(Ordering::Acquire) <= asks.len() || !pacing.may_wait() {
        return asks;
    }
    let before = asks.len();
    let deadline = Instant::now() + wait;
    while coming.load(Ordering::Acquire) > asks.len() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok(ask) => {
                asks.push(ask);
                asks.extend(rx.try_iter());
            }
            Err(_) => break,
        }
    }
    pacing.waited(asks.len() - before);
    asks
}

/// The error of a sync asked of a thread that has stopped.
pub(super) fn gone() -> std::io::Error {
    std::io::Error::other("the journal's sync thread has stopped")
}

/// Take every ask queued (waiting a little for requests in flight, see [`gather`]), put each
/// segment they name on disk once with the records they bring, answer them all; again until
/// the store drops its [`Syncer`].
fn run(rx: &mpsc::Receiver<Ask>, coming: &AtomicUsize) {
    let mut pacing = Pacing::default();
    while let Ok(first) = rx.recv() {
        // Everything queued by now was appended before this sync starts: one sync covers it.
        let asks = gather(rx, first, coming, GROUP_WAIT, &mut pacing);
        // Nearly always one segment; two around a turn of the journal (see `super::sync`).
        let mut segments: Vec<(Arc<Segment>, std::io::Result<()>)> = Vec::new();
        for (segment, _, _) in &asks {
            if !segments.iter().any(|(s, _)| Arc::ptr_eq(s, segment)) {
                // In the order they were asked: the order they go into the segment.
                let records: Vec<&[u8]> = asks
                    .iter()
                    .filter(|(s, _, _)| Arc::ptr_eq(s, segment))
                    .filter_map(|(_, record, _)| record.as_ref().map(|(r, _)| r.as_slice()))
                    .collect();
                let synced = segment.put(&records);
                // Each row's word, for the writer (see `writer::Retained`).
                for (_, record, _) in asks.iter().filter(|(s, _, _)| Arc::ptr_eq(s, segment)) {
                    if let Some((_, fate)) = record {
                        match &synced {
                            Ok(()) => fate.written(),
                            Err(_) => fate.failed(),
                        }
                    }
                }
                if let Err(e) = &synced {
                    tracing::warn!(error = %e, path = %segment.path().display(), "journal sync failed");
                }
                segments.push((segment.clone(), synced));
            }
        }
        for (segment, _, reply) in asks {
            let outcome = match segments.iter().find(|(s, _)| Arc::ptr_eq(s, &segment)) {
                Some((_, Ok(()))) => Ok(()),
                Some((_, Err(e))) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => Err(gone()),
            };
            let _ = reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait no test reaches: a test that took it would take a minute.
    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn a_lone_request_is_synced_at_once() {
        let (tx, rx) = mpsc::channel::<u32>();
        let coming = AtomicUsize::new(1);
        let started = Instant::now();
        assert_eq!(
            gather(&rx, 1, &coming, LONG, &mut Pacing::default()),
            vec![1]
        );
        assert!(started.elapsed() < LONG / 2, "it waited for nobody");
        drop(tx);
    }

    #[test]
    fn a_sync_waits_for_the_answers_in_flight_and_no_longer() {
        let (tx, rx) = mpsc::channel::<u32>();
        let coming = AtomicUsize::new(3);
        tx.send(2).ok();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(3).ok();
            // Keep the queue open: the wait ends because all three asked, not on a hang-up.
            std::thread::sleep(Duration::from_millis(500));
        });
        let started = Instant::now();
        assert_eq!(
            gather(&rx, 1, &coming, LONG, &mut Pacing::default()),
            vec![1, 2, 3]
        );
        assert!(started.elapsed() < LONG / 2);
        late.join().ok();
    }

    #[test]
    fn the_wait_is_bounded_when_answers_in_flight_do_not_ask() {
        let (tx, rx) = mpsc::channel::<u32>();
        // Streams that go on for minutes: the sync goes ahead after the wait.
        let coming = AtomicUsize::new(40);
        assert_eq!(
            gather(
                &rx,
                1,
                &coming,
                Duration::from_millis(30),
                &mut Pacing::default()
            ),
            vec![1]
        );
        drop(tx);
    }

    #[test]
    fn a_closed_queue_ends_the_wait() {
        let (tx, rx) = mpsc::channel::<u32>();
        tx.send(2).ok();
        drop(tx);
        let coming = AtomicUsize::new(10);
        let started = Instant::now();
        assert_eq!(
            gather(&rx, 1, &coming, LONG, &mut Pacing::default()),
            vec![1, 2]
        );
        assert!(started.elapsed() < LONG / 2);
    }

    /// Waits that gather nothing (answers in flight that take seconds) stop being made, for
    /// longer each time; one that gathers something brings them back.
    #[test]
    fn futile_waits_back_off_and_a_fruitful_one_resumes_them() {
        let mut pacing = Pacing::default();
        let (tx, rx) = mpsc::channel::<u32>();
        let coming = AtomicUsize::new(5);
        let short = Duration::from_millis(5);
        // Which of the next syncs wait (an ask that finds the wait skipped is served alone).
        let mut waited = Vec::new();
        for _ in 0..8 {
            let before = pacing.skip;
            gather(&rx, 1, &coming, short, &mut pacing);
            waited.push(before == 0);
        }
        // Wait, skip 1, wait, skip 2, wait, skip 4 (one of them left over).
        assert_eq!(
            waited,
            [true, false, true, false, false, true, false, false]
        );
        assert_eq!((pacing.skip, pacing.backoff), (2, 4));
        // A wait that gathers an ask resets the backoff: the next sync waits again.
        pacing.waited(1);
        assert_eq!((pacing.skip, pacing.backoff), (0, 0));
        assert!(pacing.may_wait());
        // What futile waits taught is forgotten after a while, however many skips were left.
        pacing.waited(0);
        pacing.skip = MAX_SKIP;
        pacing.futile_at = Instant::now().checked_sub(FORGET_AFTER);
        assert!(pacing.may_wait());
        assert_eq!((pacing.skip, pacing.backoff), (0, 0));
        drop(tx);
    }
}
