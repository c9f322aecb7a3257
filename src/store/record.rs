//! Recording a settled request's ledger row, as safe as `store.sync` promises before the
//! answer's last byte leaves.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::error::StoreError;
use super::usage::UsageRow;
use super::write::Write;
use super::writer::{Ack, Job};
use super::{BACKLOG_CAP, Store};

impl Store {
    /// Record a settled request's ledger row; the returned future resolves when the row is as
    /// safe as `store.sync` promises before an answer's last byte. The row is appended to the
    /// journal at once, in the caller's task (see [`super::journal`]), and committed behind
    /// without anyone waiting for the commit; `normal`: then it is in the OS, and that is all;
    /// `full`: the future also waits for the journal's sync (see [`super::fsync`]). It waits
    /// for the row's commit instead when the journal cannot take it, and as well when the
    /// writer is more than [`BACKLOG_CAP`] rows behind.
    ///
    /// `kept`: the row's charge stands whatever happens to the commit (its answer went out, or
    /// was cut, before it), so a row whose commit fails is kept and committed with a later
    /// batch rather than lost; a row whose answer is withheld when it cannot be recorded (a
    /// whole answer, whose charge is then given back) is not.
    pub fn record_usage(
        &self,
        row: UsageRow,
        kept: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + use<> {
        // The segment the row goes to (or the current one, when it cannot): if the row cannot be
        // recorded, requests are refused while that segment is the current one.
        let seq;
        let committed = match self.journal.append(&row) {
            Ok(super::journal::Appended { segment, record }) => {
                seq = segment.seq();
                let shared = self.writer.shared();
                // The writer is behind (the core is busy): this answer waits for its row's
                // commit, which leaves the core to the writer. Not while commits fail (a lock
                // another program holds, a full disk): the row is safe in the journal, and each
                // answer would wait out a failing commit's seconds.
                let over = shared.backlog.fetch_add(1, Ordering::Relaxed) >= BACKLOG_CAP
                    && !shared.failing.load(Ordering::Acquire);
                let (reply, committed) = if over {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                // `full`: the row must be on disk before the answer's last byte.
                let fate = record.as_ref().map(|(_, fate)| fate.clone());
                let told = fate.clone();
                let synced = self
                    .syncer
                    .as_ref()
                    .map(|s| s.sync(segment.clone(), record));
                let job = Job::Write(
                    Write::Usage(Box::new(row)),
                    Ack::Journaled(segment, reply, kept, fate),
                );
                if !self.writer.send(job) {
                    // The store is closing: never settled, the row stays in the journal for
                    // the next start.
                    tracing::warn!(
                        "row recorded after the store closed; the next start applies it"
                    );
                }
                let paced = committed.inspect(|_| self.hurry());
                match synced {
                    Some(synced) => Committed::Synced(synced, paced, self.writer.clone(), told),
                    None => paced.map_or(Committed::Now, Committed::Paced),
                }
            }
            Err(e) => {
                seq = self.journal.current_seq();
                tracing::warn!(error = %e, "journal append failed; committing the row first");
                self.queue_durable(Write::Usage(Box::new(row)), kept)
            }
        };
        let journal = self.journal.clone();
        async move {
            let outcome = settled(committed).await;
            // Closing is not the disk's fault: the next start applies the journal.
            if !matches!(outcome, Err(StoreError::Closed)) {
                journal.set_stuck(outcome.is_err().then_some(seq));
            }
            outcome
        }
    }
}

/// Wait for what `committed` says the row's answer waits for.
async fn settled(committed: Committed) -> Result<(), StoreError> {
    match committed {
        Committed::Now => Ok(()),
        Committed::Later(rx) => rx.await.map_err(|_| StoreError::Closed)?,
        // Safe in the journal already, whatever the commit's outcome (a failed commit
        // keeps the row's segment for the next start); the wait was only for pace.
        Committed::Paced(rx) => {
            let _ = rx.await;
            Ok(())
        }
        Committed::Closed => Err(StoreError::Closed),
        Committed::Synced(synced, paced, writer, fate) => {
            let on_disk = match synced {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(super::fsync::gone())),
                None => Err(super::fsync::gone()),
            };
            if let Some(rx) = paced {
                let _ = rx.await;
            }
            match on_disk {
                Ok(()) => Ok(()),
                // The journal could not be synced (an I/O error): the row is on disk
                // once a durable write queued after it is committed (queue order is
                // commit order, and that commit's sync puts every earlier one in the
                // WAL on disk).
                Err(e) => {
                    tracing::warn!(error = %e, "journal not synced; waiting for the row's commit");
                    let (tx, rx) = oneshot::channel();
                    let outcome = if writer.send(Job::Write(Write::Barrier, Ack::Reply(tx))) {
                        writer.hurry();
                        rx.await.unwrap_or(Err(StoreError::Closed))
                    } else {
                        Err(StoreError::Closed)
                    };
                    // The writer keeps the row or lets it go by this (see
                    // `writer::Retained::prepend_to`).
                    if let Some(fate) = &fate {
                        match &outcome {
                            Ok(()) => fate.delivered(),
                            Err(_) => fate.withheld(),
                        }
                    }
                    outcome
                }
            }
        }
    }
}

impl Store {
    /// Queue a write to be committed on disk, and how to hear of it (`kept`: see
    /// [`Store::record_usage`]).
    fn queue_durable(&self, w: Write, kept: bool) -> Committed {
        let (tx, rx) = oneshot::channel();
        let ack = if kept {
            Ack::Kept(Some(tx))
        } else {
            Ack::Reply(tx)
        };
        if !self.writer.send(Job::Write(w, ack)) {
            return Committed::Closed;
        }
        self.hurry();
        Committed::Later(rx)
    }
}

/// What an answer waits for before its last byte.
enum Committed {
    /// Nothing more.
    Now,
    /// The writer's word on the row's commit.
    Later(oneshot::Receiver<Result<(), StoreError>>),
    /// The row's commit, waited for only to let a writer that fell behind catch up.
    Paced(oneshot::Receiver<Result<(), StoreError>>),
    /// The store is closed.
    Closed,
    /// `full`: the journal's sync (see [`super::fsync`]), the commit if paced, the writer to
    /// wait on should the sync fail, and the row's fate to tell how that ended.
    Synced(
        Option<oneshot::Receiver<std::io::Result<()>>>,
        Option<oneshot::Receiver<Result<(), StoreError>>>,
        std::sync::Arc<super::writer::Handle>,
        Option<std::sync::Arc<super::journal::Fate>>,
    ),
}
