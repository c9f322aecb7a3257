//! `store.sync = "full"`: the journal's group sync, so an answer waits for its ledger row to be
//! on disk but not for SQLite's commit.
//!
//! A settled row is appended to the journal in the request's task (see [`super::journal`]) and
//! goes to the writer to be committed behind, in batches, as with `normal`; the answer's last
//! byte then waits for this thread to `fdatasync` the segment the row went to. One sync serves
//! every row appended before it started: whoever asks while a sync runs is answered by the next
//! one (group commit), so under load a sync covers many answers.
//!
//! A plain thread blocking on its queue, as the writer is: `fdatasync` blocks, and a row goes
//! from the answer's task straight to the thread that syncs it and the word straight back. Before
//! this, a `full` answer waited for the writer to commit its row (a one-row SQLite transaction,
//! ~60k instructions and a WAL append) and sync the WAL; bench/PROFILE.md has the figures.

use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::journal::Segment;

/// A request to sync: the segment a row was appended to, and who waits for the sync.
type Ask = (Arc<Segment>, oneshot::Sender<std::io::Result<()>>);

/// The store's side of the sync thread. Dropped, the thread ends once its queue is empty.
pub(super) struct Syncer {
    asks: mpsc::Sender<Ask>,
}

impl Syncer {
    /// Start the thread.
    pub(super) fn start() -> std::io::Result<Syncer> {
        let (asks, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-fsync".into())
            .spawn(move || run(&rx))?;
        Ok(Syncer { asks })
    }

    /// Ask for everything appended to `segment` so far to be put on disk: the receiver hears
    /// when it is, or the error the sync met (the caller must then get its row onto disk
    /// another way). `None` once the thread has stopped.
    pub(super) fn sync(
        &self,
        segment: Arc<Segment>,
    ) -> Option<oneshot::Receiver<std::io::Result<()>>> {
        let (tx, rx) = oneshot::channel();
        self.asks.send((segment, tx)).ok().map(|()| rx)
    }
}

/// The error of a sync asked of a thread that has stopped.
pub(super) fn gone() -> std::io::Error {
    std::io::Error::other("the journal's sync thread has stopped")
}

/// Take every ask queued, sync each segment they name once, answer them all; again until the
/// store drops its [`Syncer`].
fn run(rx: &mpsc::Receiver<Ask>) {
    while let Ok(first) = rx.recv() {
        // Everything queued by now was appended before this sync starts: one sync covers it.
        let mut asks = vec![first];
        asks.extend(rx.try_iter());
        // Nearly always one segment; two around a turn of the journal (see `super::sync`).
        let mut segments: Vec<(Arc<Segment>, std::io::Result<()>)> = Vec::new();
        for (segment, _) in &asks {
            if !segments.iter().any(|(s, _)| Arc::ptr_eq(s, segment)) {
                let synced = segment.sync();
                if let Err(e) = &synced {
                    tracing::warn!(error = %e, path = %segment.path().display(), "journal sync failed");
                }
                segments.push((segment.clone(), synced));
            }
        }
        for (segment, reply) in asks {
            let outcome = match segments.iter().find(|(s, _)| Arc::ptr_eq(s, &segment)) {
                Some((_, Ok(()))) => Ok(()),
                Some((_, Err(e))) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => Err(gone()),
            };
            let _ = reply.send(outcome);
        }
    }
}
