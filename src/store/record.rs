//! Recording a settled request's ledger row, as safe as `store.sync` promises before the
//! answer's last byte leaves.

use super::Store;
use super::error::StoreError;
use super::usage::UsageRow;
use super::write::Write;
use super::writer::{Ack, Job};

impl Store {
    /// Record a settled request's ledger row; the returned future resolves when the row is as
    /// safe as `store.sync` promises before an answer's last byte. `full`: committed and on
    /// disk ([`Store::submit`]). `normal`: in the OS — appended to the journal at once, in the
    /// caller's task (see [`super::journal`]), and committed behind without anyone waiting;
    /// if the journal cannot take it, committed first as `full` would.
    pub fn record_usage(
        &self,
        row: UsageRow,
    ) -> impl Future<Output = Result<(), StoreError>> + use<> {
        let commit = match self.journal.as_deref().map(|j| j.append(&row)) {
            Some(Ok(segment)) => {
                let job = Job::Write(Write::Usage(Box::new(row)), Ack::Journaled(segment));
                if self.jobs.send(job).is_err() {
                    // The store is closing: never settled, the row stays in the journal for
                    // the next start.
                    tracing::warn!(
                        "row recorded after the store closed; the next start applies it"
                    );
                }
                None
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "journal append failed; committing the row first");
                Some(self.submit(Write::Usage(Box::new(row))))
            }
            None => Some(self.submit(Write::Usage(Box::new(row)))),
        };
        async move {
            match commit {
                Some(committed) => committed.await,
                None => Ok(()),
            }
        }
    }
}
