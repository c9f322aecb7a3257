//! `store.sync = "full"`: the journal's group sync, so an answer waits for its ledger row to be
//! on disk but not for SQLite's commit.
//!
//! A settled row's journal record is handed to this thread (see [`super::journal`]) and the row
//! goes to the writer to be committed behind, in batches, as with `normal`; the answer's last
//! byte then waits for this thread to write the record to the segment and sync it. One write
//! serves every record handed over before it started: whoever asks while one runs is answered
//! by the next (group commit), so under load a sync covers many answers.
//!
//! A plain thread blocking on its queue, as the writer is: `fdatasync` blocks, and a row goes
//! from the answer's task straight to the thread that syncs it and the word straight back. Before
//! this, a `full` answer waited for the writer to commit its row (a one-row SQLite transaction,
//! ~60k instructions and a WAL append) and sync the WAL; bench/PROFILE.md has the figures.

use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::journal::{Fate, Segment};

/// A request to sync: the segment a row was appended to, its record (see
/// [`super::journal::Appended`]), and who waits for the sync.
type Ask = (
    Arc<Segment>,
    Option<(Vec<u8>, Arc<Fate>)>,
    oneshot::Sender<std::io::Result<()>>,
);

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

/// The error of a sync asked of a thread that has stopped.
pub(super) fn gone() -> std::io::Error {
    std::io::Error::other("the journal's sync thread has stopped")
}

/// Take every ask queued, put each segment they name on disk once with the records they bring,
/// answer them all; again until the store drops its [`Syncer`].
fn run(rx: &mpsc::Receiver<Ask>) {
    while let Ok(first) = rx.recv() {
        // Everything queued by now was appended before this sync starts: one sync covers it.
        let mut asks = vec![first];
        asks.extend(rx.try_iter());
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
