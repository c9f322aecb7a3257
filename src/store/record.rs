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
    /// safe as `store.sync` promises before an answer's last byte. `full`: committed and on
    /// disk ([`Store::submit`]). `normal`: in the OS — appended to the journal at once, in the
    /// caller's task (see [`super::journal`]), and committed behind without anyone waiting;
    /// the future waits for the row's commit only when the journal cannot take it or the
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
        let committed = match self.journal.as_deref().map(|j| j.append(&row)) {
            Some(Ok(segment)) => {
                let over =
                    self.writer.shared().backlog.fetch_add(1, Ordering::Relaxed) >= BACKLOG_CAP;
                // The writer is behind (the core is busy): this answer waits for its row's
                // commit, which leaves the core to the writer.
                let (reply, committed) = if over {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                let job = Job::Write(Write::Usage(Box::new(row)), Ack::Journaled(segment, reply));
                if !self.writer.send(job) {
                    // The store is closing: never settled, the row stays in the journal for
                    // the next start.
                    tracing::warn!(
                        "row recorded after the store closed; the next start applies it"
                    );
                    Committed::Now
                } else if let Some(rx) = committed {
                    self.hurry();
                    Committed::Paced(rx)
                } else {
                    Committed::Now
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "journal append failed; committing the row first");
                self.queue_durable(Write::Usage(Box::new(row)), kept)
            }
            None => self.queue_durable(Write::Usage(Box::new(row)), kept),
        };
        async move {
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
            }
        }
    }

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
}
