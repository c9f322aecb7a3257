//! One batch of the writer's: applied in one transaction, committed (retried if the commit
//! fails), each write acknowledged with its own result.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, Statement};

use super::Ack;
use crate::store::error::StoreError;
use crate::store::usage::{self, UsageRow};
use crate::store::write::{Write, apply};

/// The statements of every batch, prepared once for the writer thread's life: rusqlite's
/// `prepare_cached` finds a statement by hashing and comparing its SQL text on every use
/// (callgrind: ~1.2k instructions a use, four uses per one-row batch), and `transaction()` /
/// `commit()` compile `BEGIN` and `COMMIT` again each time.
pub(super) struct Statements<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    rollback: Statement<'c>,
    insert_row: Statement<'c>,
    add_to_key: Statement<'c>,
}

impl<'c> Statements<'c> {
    /// Prepare them on the writer's connection (after the migrations: they name its tables).
    pub(super) fn prepare(c: &'c Connection) -> Result<Statements<'c>, StoreError> {
        Ok(Statements {
            begin: c.prepare("BEGIN DEFERRED")?,
            commit: c.prepare("COMMIT")?,
            rollback: c.prepare("ROLLBACK")?,
            insert_row: c.prepare(usage::INSERT_ROW)?,
            add_to_key: c.prepare(usage::ADD_TO_KEY)?,
        })
    }
}

/// Apply writes in one transaction, each as if in a savepoint of its own (one bad write cannot
/// sink the others; see [`try_commit`]), commit, and acknowledge each with its own result.
///
/// A commit is synced to disk (`synchronous = FULL`) when a write in the batch was submitted to
/// be durable ([`Ack::Reply`]: an order, a key, a top-up, a row the journal could not take),
/// and with `always_sync` (`store.sync = "full"`) when it holds any other write but a
/// journaled ledger row or a read barrier: journaled rows are in the journal until the WAL is
/// synced (with `full` the journal was synced before their answers; with `normal` they are
/// promised only against a killed process), read barriers promise nothing, and the sync task
/// syncs the WAL every interval. A failed commit is retried a few
/// times unless `retry` is false. `Ok` when the batch was committed; if not, `Err` with the
/// writes to keep for a later batch: its ledger rows whose charge stands (journaled, or
/// [`Ack::Kept`]), their waiters told of the failure.
pub(super) fn commit_batch<'c>(
    c: &'c Connection,
    stmts: &mut Statements<'c>,
    batch: Vec<(Write, Ack)>,
    always_sync: bool,
    on_disk: &mut Option<bool>,
    retry: bool,
    failing: &std::sync::atomic::AtomicBool,
) -> Result<(), Vec<(Write, Ack)>> {
    let (writes, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let durable = acks.iter().any(|ack| match ack {
        Ack::Reply(_) | Ack::Kept(_) => true,
        Ack::None => always_sync,
        // On disk in the journal already (synced there with `full`), and a read barrier
        // promises nothing.
        Ack::Journaled(..) | Ack::Settled(_) => false,
    });
    if *on_disk != Some(durable) {
        let pragma = if durable {
            "PRAGMA synchronous = FULL;"
        } else {
            "PRAGMA synchronous = NORMAL;"
        };
        match c.execute_batch(pragma) {
            Ok(()) => *on_disk = Some(durable),
            Err(e) => {
                // Unknown now: set again before the next batch. This one commits as it was (a
                // connection that cannot run a PRAGMA is not going to commit either).
                tracing::warn!(error = %e, "could not set synchronous");
                *on_disk = None;
            }
        }
    }
    // A failed commit (disk full, I/O error) is retried before the batch is given up: these
    // rows are bills, and memory has already charged them. Not when the batch before failed
    // too (`retry` false): every batch would then take seconds to fail while answers wait on
    // it (and a stop would take minutes); one attempt each until one succeeds.
    let mut result = try_commit(c, stmts, &writes);
    if result.is_err() {
        // Told at once, not after the retries' seconds: answers are waiting meanwhile.
        failing.store(true, std::sync::atomic::Ordering::Release);
    }
    let delays: &[u64] = if retry { &[50, 500, 2000] } else { &[] };
    for &delay_ms in delays {
        if result.is_ok() {
            break;
        }
        if let Err(e) = &result {
            tracing::warn!(delay_ms, error = %e, "database commit failed; retrying");
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        result = try_commit(c, stmts, &writes);
    }
    match result {
        Ok(results) => {
            for (r, ack) in results.into_iter().zip(acks) {
                if let Err(e) = &r {
                    // A conflict someone waits on is an answer to them (`mail retry` of a
                    // message already sent), told to the operator who asked; not an error of
                    // the daemon's.
                    let told = matches!(
                        ack,
                        Ack::Reply(_) | Ack::Kept(_) | Ack::Journaled(_, Some(_), ..)
                    );
                    if told && matches!(e, StoreError::Conflict(_)) {
                        tracing::info!(error = %e, "database write refused");
                    } else {
                        tracing::error!(error = %e, "database write refused");
                    }
                }
                match ack {
                    Ack::Reply(tx) | Ack::Kept(Some(tx)) | Ack::Settled(tx) => {
                        let _ = tx.send(r);
                    }
                    // Committed (or refused for good): the segment may go once drained.
                    Ack::Journaled(segment, reply, ..) => {
                        segment.settle_one();
                        if let Some(tx) = reply {
                            let _ = tx.send(r);
                        }
                    }
                    Ack::Kept(None) | Ack::None => {}
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                writes = writes.len(),
                "DATABASE COMMIT FAILED after retries: none of this batch's writes is in the \
                 database; those waited on failed, and ledger rows whose charge stands are \
                 kept for the next batch (journaled ones are also applied at the next start)"
            );
            let failed = || Err(StoreError::CommitFailed(e.to_string()));
            let mut kept = Vec::new();
            for (w, ack) in writes.into_iter().zip(acks) {
                match ack {
                    Ack::Reply(tx) => {
                        // A ledger row whose waiter is gone (a whole answer's client left while
                        // it waited): nobody gives its charge back, so the row is kept for the
                        // charge that stands.
                        if tx.send(failed()).is_err() && matches!(w, Write::Usage(_)) {
                            kept.push((w, Ack::Kept(None)));
                        }
                    }
                    Ack::Settled(tx) => {
                        let _ = tx.send(failed());
                    }
                    Ack::Kept(reply) => {
                        if let Some(tx) = reply {
                            let _ = tx.send(failed());
                        }
                        kept.push((w, Ack::Kept(None)));
                    }
                    // Not counted settled: the segment stays (the next start replays it) and
                    // the row is tried again with the next batch.
                    Ack::Journaled(segment, reply, stands, fate) => {
                        if let Some(tx) = reply {
                            let _ = tx.send(failed());
                        }
                        kept.push((w, Ack::Journaled(segment, None, stands, fate)));
                    }
                    Ack::None => {}
                }
            }
            Err(kept)
        }
    }
}

/// One attempt at a batch: one transaction, one commit.
///
/// Writes almost never fail, so the batch is first applied without savepoints (a savepoint per
/// write costs two statements and a copy of every page it touches in the sub-journal). If any
/// write fails, that transaction is rolled back whole and the batch is applied again with a
/// savepoint per write, so each write gets its own result exactly as if it had had its
/// savepoint all along.
fn try_commit<'c>(
    c: &'c Connection,
    stmts: &mut Statements<'c>,
    writes: &[Write],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    if let Some(all_ok) = commit_all_or_nothing(c, stmts, writes)? {
        return Ok(all_ok);
    }
    commit_with_savepoints(c, writes)
}

/// Apply every write in one transaction and commit: `Some` (every write succeeded), or `None`
/// with nothing changed (the database refused a write; the transaction is rolled back). A
/// failure of the moment ([`StoreError::is_transient`]) is the attempt's error: replaying the
/// batch write by write would only meet it again.
fn commit_all_or_nothing<'c>(
    c: &'c Connection,
    stmts: &mut Statements<'c>,
    writes: &[Write],
) -> Result<Option<Vec<Result<(), StoreError>>>, StoreError> {
    let tx = Batch::begin(c, stmts)?;
    let mut totals = KeyTotals::default();
    for w in writes {
        let r = match w {
            Write::Usage(u) => totals
                .add(tx.stmts, u)
                .and_then(|()| usage::insert_row_with(&mut tx.stmts.insert_row, u)),
            // Anything else may read or change a key's counters: it sees them up to date.
            other => totals.flush(tx.stmts).and_then(|()| apply(c, other)),
        };
        if let Err(e) = r {
            return tx.give_up(e);
        }
    }
    if let Err(e) = totals.flush(tx.stmts) {
        return tx.give_up(e);
    }
    tx.commit()?;
    Ok(Some(writes.iter().map(|_| Ok(())).collect()))
}

/// The batch's transaction, begun and ended with the prepared statements. Dropped while open,
/// it rolls back.
struct Batch<'s, 'c> {
    c: &'c Connection,
    stmts: &'s mut Statements<'c>,
    open: bool,
}

impl<'s, 'c> Batch<'s, 'c> {
    fn begin(
        c: &'c Connection,
        stmts: &'s mut Statements<'c>,
    ) -> Result<Batch<'s, 'c>, StoreError> {
        stmts.begin.execute([])?;
        Ok(Batch {
            c,
            stmts,
            open: true,
        })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.stmts.commit.execute([])?;
        self.open = false;
        Ok(())
    }

    /// A write failed with `e`: roll back, and say whether the batch is to be applied again
    /// write by write (`Ok(None)`: the database refused one) or the attempt failed (`e` is
    /// one of the moment).
    fn give_up<T>(self, e: StoreError) -> Result<Option<T>, StoreError> {
        self.rollback()?;
        if e.is_transient() { Err(e) } else { Ok(None) }
    }

    fn rollback(mut self) -> Result<(), StoreError> {
        // SQLite rolls the whole transaction back by itself on some errors (a full disk, an
        // I/O error, out of memory): nothing is left to roll back then.
        if !self.c.is_autocommit() {
            // Still open if it fails: `Drop` tries again.
            self.stmts.rollback.execute([])?;
        }
        self.open = false;
        Ok(())
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        // A failed write or COMMIT left it open (SQLite may already have rolled back).
        if self.open && !self.c.is_autocommit() {
            let _ = self.stmts.rollback.execute([]);
        }
    }
}

/// What the ledger rows of a batch add to each key's counters, moved with one `UPDATE` per
/// key instead of one per row (at load a batch holds many rows of the same few keys; the
/// statement was a sixth of a row's cost). Applied before any other kind of write and at the
/// end of the batch, so nothing in the transaction sees counters that lag its rows.
#[derive(Default)]
struct KeyTotals<'a> {
    keys: HashMap<&'a str, usage::KeyAdd>,
}

impl<'a> KeyTotals<'a> {
    /// Count a row; a sum that would overflow moves the counters first.
    fn add(&mut self, stmts: &mut Statements<'_>, u: &'a UsageRow) -> Result<(), StoreError> {
        if self
            .keys
            .get(u.key_id.as_str())
            .is_some_and(|t| t.would_overflow(u))
        {
            self.flush(stmts)?;
        }
        self.keys.entry(u.key_id.as_str()).or_default().count(u);
        Ok(())
    }

    /// Move every key's counters by what was counted, and start again.
    fn flush(&mut self, stmts: &mut Statements<'_>) -> Result<(), StoreError> {
        for (key_id, add) in self.keys.drain() {
            usage::add_to_key_with(&mut stmts.add_to_key, key_id, &add)?;
        }
        Ok(())
    }
}

/// Apply the writes in one transaction, a savepoint each (a write the database refuses is
/// rolled back alone and reported), and commit.
///
/// A write that fails for a reason of the moment ([`StoreError::is_transient`]: disk full, an
/// I/O error, a lock) fails the whole attempt instead, so [`commit_batch`] retries the batch and,
/// if it never commits, leaves journaled rows in their segment for the next start. Counting
/// such a row as refused would settle its journal record: a bill lost for good.
fn commit_with_savepoints(
    c: &Connection,
    writes: &[Write],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    // Unchecked: the writer's statements borrow the connection, and nothing else on this
    // thread opens a transaction (the one `commit_all_or_nothing` began is closed).
    let mut tx = c.unchecked_transaction()?;
    let mut results = Vec::with_capacity(writes.len());
    for w in writes {
        let sp = tx.savepoint()?;
        match apply(&sp, w) {
            Ok(()) => {
                sp.commit()?;
                results.push(Ok(()));
            }
            // Dropping the transaction rolls the whole attempt back.
            Err(e) if e.is_transient() => return Err(e),
            // SQLite rolled the whole transaction back by itself: what follows would run
            // outside it, each write committing alone. Retry the batch instead.
            Err(e) if c.is_autocommit() => return Err(e),
            Err(e) => {
                drop(sp); // rolls back to the savepoint
                results.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests;
