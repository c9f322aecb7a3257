//! The one writer task: it takes what is queued, applies it in one transaction, commits, and
//! acknowledges each write (group commit).

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::journal::Segment;
use super::usage::{self, UsageRow};
use super::write::{Write, apply};

/// Most writes one transaction takes before committing.
const MAX_BATCH: usize = 4096;

/// A job for the writer.
pub(super) enum Job {
    Write(Write, Ack),
    Close(oneshot::Sender<()>),
}

/// Who hears of a write once it is committed.
pub(super) enum Ack {
    /// Nobody.
    None,
    /// A waiting task, with the write's own result, once the commit is on disk.
    Reply(oneshot::Sender<Result<(), StoreError>>),
    /// A waiting task, once the commit is made (in the OS: a reader sees it).
    Settled(oneshot::Sender<Result<(), StoreError>>),
    /// The row is also in this journal segment (`store.sync = "normal"`), which is held until
    /// the row is committed (see [`super::journal`]). Nobody waits, unless the writer was too
    /// far behind (see [`super::Store::record_usage`]): then the sender hears of the commit.
    Journaled(
        std::sync::Arc<Segment>,
        Option<oneshot::Sender<Result<(), StoreError>>>,
    ),
}

/// How long the writer lets journaled rows gather before committing them (`store.sync =
/// "normal"`). Nobody waits for those commits, so one commit every few milliseconds takes what
/// would have been dozens of one-row commits (and their thread wake-ups) at a moderate rate.
/// Not longer: the commit shares the core with the requests, and a bigger one delays the
/// answers that arrive while it runs (same-session A/B, added p99 at one connection / CPU per
/// request at 5 000/s: 20 ms ~745 µs / 120 µs, 5 ms ~490–640 / 119–125, 2 ms ~455–495 /
/// 128–130; see bench/PROFILE.md).
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer: take what is queued (up to `MAX_BATCH`), apply it in one transaction (one bad
/// write cannot sink the others; see [`try_commit`]), commit, acknowledge.
///
/// When a batch holds only journaled rows, it first lingers (see [`LINGER`]) unless `urgent`
/// says a write with a waiter was queued.
pub(super) async fn run_writer(
    conn: tokio_rusqlite::Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    urgent: std::sync::Arc<tokio::sync::Notify>,
    backlog: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    always_sync: bool,
) {
    // On the connection's own thread, where SQLite's work happens. Only when answers do not
    // wait for commits (`normal`): with `full` every answer waits for the writer, which would
    // then queue behind the very answers it holds up (measured: no gain at one connection).
    if !always_sync
        && let Err(e) = conn
            .call(|_| {
                yield_core_to_answers();
                Ok::<_, StoreError>(())
            })
            .await
    {
        tracing::warn!(error = %e, "ledger writer left at normal priority");
    }
    let mut closing: Option<oneshot::Sender<()>> = None;
    // What the connection's `synchronous` is set to: FULL (`Some(true)`) for a batch someone
    // waits on to be on disk, and for every batch when `always_sync` (`store.sync = "full"`);
    // NORMAL otherwise (see [`commit_batch`]); unknown at first.
    let mut on_disk: Option<bool> = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Vec::new();
        let push = |job: Job, batch: &mut Vec<_>, closing: &mut Option<_>| match job {
            Job::Write(w, ack) => batch.push((w, ack)),
            Job::Close(done) => *closing = Some(done),
        };
        push(first, &mut batch, &mut closing);
        let mut lingered = false;
        loop {
            // Registered before the queue is drained: a waited write queued after the drain
            // wakes the linger below, one queued before it is in the batch.
            let hurried = urgent.notified();
            tokio::pin!(hurried);
            hurried.as_mut().enable();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => push(job, &mut batch, &mut closing),
                    Err(_) => break,
                }
            }
            let nobody_waits = batch
                .iter()
                .all(|(_, ack)| matches!(ack, Ack::Journaled(_, None)));
            if lingered || !nobody_waits || batch.len() >= MAX_BATCH || closing.is_some() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = hurried => {}
            }
            lingered = true;
        }
        if batch.is_empty() {
            continue;
        }
        let journaled = batch
            .iter()
            .filter(|(_, ack)| matches!(ack, Ack::Journaled(..)))
            .count();
        commit_batch(&conn, batch, always_sync, &mut on_disk).await;
        backlog.fetch_sub(journaled, std::sync::atomic::Ordering::Relaxed);
        // The durability task (`store.sync = "normal"`) syncs after commits it has not seen.
        commits.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
    // Stop taking work, then finish what was queued before the close request took effect.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(job) = rx.try_recv() {
        if let Job::Write(w, ack) = job {
            rest.push((w, ack));
        }
    }
    if !rest.is_empty() {
        commit_batch(&conn, rest, always_sync, &mut on_disk).await;
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Run the calling thread (the writer's SQLite thread) at the lowest priority, `nice` 19
/// (`store.sync = "normal"` only).
///
/// Its commits share the core with the tokio workers answering requests; at normal priority a
/// batch commit that starts just before an answer's bytes arrive delays that answer by the
/// commit's length (the added p99 at one connection in bench/PROFILE.md). At nice 19 the
/// scheduler gives the core to a woken worker first. Nobody waits for journaled rows, and a
/// waited write loses only the time the core spends answering others; at saturation the writer
/// cannot starve for long, because past [`super::BACKLOG_CAP`] queued rows each new answer waits
/// for its commit, which idles the workers.
fn yield_core_to_answers() {
    // On Linux nice is per thread and a thread id names that one thread; raising one's own
    // nice needs no privilege.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::warn!(error = %e, "ledger writer left at normal priority");
    }
}

/// Apply writes in one transaction, each as if in a savepoint of its own (one bad write cannot
/// sink the others; see [`try_commit`]), commit, and acknowledge each with its own result.
///
/// With `always_sync` (`store.sync = "full"`) every commit is synced to disk (`synchronous =
/// FULL`). Otherwise (`normal`) a commit is synced only when a write in the batch was submitted
/// to be durable ([`Ack::Reply`]: an order, a key, a top-up, a row the journal could not
/// take): journaled ledger rows are promised only against a killed process, read barriers
/// nothing, and the sync task syncs the WAL every interval.
async fn commit_batch(
    conn: &tokio_rusqlite::Connection,
    batch: Vec<(Write, Ack)>,
    always_sync: bool,
    on_disk: &mut Option<bool>,
) {
    let (writes, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let durable = always_sync || acks.iter().any(|ack| matches!(ack, Ack::Reply(_)));
    if *on_disk != Some(durable) {
        let pragma = if durable {
            "PRAGMA synchronous = FULL;"
        } else {
            "PRAGMA synchronous = NORMAL;"
        };
        match conn
            .call(move |c| c.execute_batch(pragma).map_err(StoreError::from))
            .await
        {
            Ok(()) => *on_disk = Some(durable),
            Err(e) => {
                // Unknown now: set again before the next batch. This one commits as it was (a
                // connection that cannot run a PRAGMA is not going to commit either).
                tracing::warn!(error = %e, "could not set synchronous");
                *on_disk = None;
            }
        }
    }
    let writes = std::sync::Arc::new(writes);
    // A failed commit (disk full, I/O error) is retried before the batch is given up: these
    // rows are bills, and memory has already charged them.
    let mut result = try_commit(conn, writes.clone()).await;
    for delay_ms in [50, 500, 2000] {
        if result.is_ok() {
            break;
        }
        tracing::warn!(delay_ms, "database commit failed; retrying");
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        result = try_commit(conn, writes.clone()).await;
    }
    match result {
        Ok(results) => {
            for (r, ack) in results.into_iter().zip(acks) {
                if let Err(e) = &r {
                    tracing::error!(error = %e, "database write refused");
                }
                match ack {
                    Ack::Reply(tx) | Ack::Settled(tx) => {
                        let _ = tx.send(r);
                    }
                    // Committed (or refused for good): the segment may go once drained.
                    Ack::Journaled(segment, reply) => {
                        segment.settle_one();
                        if let Some(tx) = reply {
                            let _ = tx.send(r);
                        }
                    }
                    Ack::None => {}
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = writes.len(), "DATABASE COMMIT FAILED: writes in this batch are lost");
            for ack in acks {
                match ack {
                    Ack::Reply(tx) | Ack::Settled(tx) => {
                        let _ = tx.send(Err(StoreError::Corrupt(format!("commit failed: {e}"))));
                    }
                    // Not counted settled: the segment stays and the next start replays it.
                    Ack::Journaled(_, reply) => {
                        if let Some(tx) = reply {
                            let _ =
                                tx.send(Err(StoreError::Corrupt(format!("commit failed: {e}"))));
                        }
                    }
                    Ack::None => {}
                }
            }
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
async fn try_commit(
    conn: &tokio_rusqlite::Connection,
    writes: std::sync::Arc<Vec<Write>>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let result = conn
        .call(
            move |c| -> Result<Vec<Result<(), StoreError>>, StoreError> {
                if let Some(all_ok) = commit_all_or_nothing(c, &writes)? {
                    return Ok(all_ok);
                }
                commit_with_savepoints(c, &writes)
            },
        )
        .await;
    Ok(result?)
}

/// Apply every write in one transaction and commit: `Some` (every write succeeded), or `None`
/// with nothing changed (a write failed; the transaction is rolled back).
fn commit_all_or_nothing(
    c: &rusqlite::Connection,
    writes: &[Write],
) -> Result<Option<Vec<Result<(), StoreError>>>, StoreError> {
    let tx = Batch::begin(c)?;
    let mut totals = KeyTotals::default();
    for w in writes {
        let r = match w {
            Write::Usage(u) => totals
                .add(tx.c, u)
                .and_then(|()| usage::insert_row(tx.c, u)),
            // Anything else may read or change a key's counters: it sees them up to date.
            other => totals.flush(tx.c).and_then(|()| apply(tx.c, other)),
        };
        if r.is_err() {
            tx.rollback()?;
            return Ok(None);
        }
    }
    if totals.flush(tx.c).is_err() {
        tx.rollback()?;
        return Ok(None);
    }
    tx.commit()?;
    Ok(Some(writes.iter().map(|_| Ok(())).collect()))
}

/// The batch's transaction, begun and ended with cached statements: rusqlite's
/// `transaction()` and `commit()` go through `execute_batch`, which compiles `BEGIN` and
/// `COMMIT` again for every batch (callgrind: ~3.4k instructions per request at one
/// connection, where each answer is a batch). Dropped while open, it rolls back.
struct Batch<'c> {
    c: &'c rusqlite::Connection,
    open: bool,
}

impl<'c> Batch<'c> {
    fn begin(c: &'c rusqlite::Connection) -> Result<Batch<'c>, StoreError> {
        c.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        Ok(Batch { c, open: true })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.c.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }

    fn rollback(mut self) -> Result<(), StoreError> {
        self.open = false;
        self.c.prepare_cached("ROLLBACK")?.execute([])?;
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // A failed write or COMMIT left it open (SQLite may already have rolled back).
        if self.open && !self.c.is_autocommit() {
            let _ = self
                .c
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
        }
    }
}

/// What the ledger rows of a batch add to each key's counters, moved with one `UPDATE` per
/// key instead of one per row (at load a batch holds many rows of the same few keys; the
/// statement was a sixth of a row's cost). Applied before any other kind of write and at the
/// end of the batch, so nothing in the transaction sees counters that lag its rows.
#[derive(Default)]
struct KeyTotals<'a> {
    keys: HashMap<&'a str, Total>,
}

/// One key's share of a batch.
#[derive(Default)]
struct Total {
    cost_nanos: i64,
    requests: i64,
    last_used_ms: i64,
}

impl<'a> KeyTotals<'a> {
    /// Count a row; a sum that would overflow moves the counters first.
    fn add(&mut self, c: &rusqlite::Connection, u: &'a UsageRow) -> Result<(), StoreError> {
        let cost = u.cost.nanos();
        if self
            .keys
            .get(u.key_id.as_str())
            .is_some_and(|t| t.cost_nanos.checked_add(cost).is_none())
        {
            self.flush(c)?;
        }
        let t = self.keys.entry(u.key_id.as_str()).or_default();
        t.cost_nanos += cost;
        t.requests += 1;
        t.last_used_ms = t.last_used_ms.max(u.created_at_ms);
        Ok(())
    }

    /// Move every key's counters by what was counted, and start again.
    fn flush(&mut self, c: &rusqlite::Connection) -> Result<(), StoreError> {
        for (key_id, t) in self.keys.drain() {
            usage::add_to_key(c, key_id, t.cost_nanos, t.requests, t.last_used_ms)?;
        }
        Ok(())
    }
}

/// Apply the writes in one transaction, a savepoint each (a failed write is rolled back alone
/// and reported), and commit.
fn commit_with_savepoints(
    c: &mut rusqlite::Connection,
    writes: &[Write],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut tx = c.transaction()?;
    let mut results = Vec::with_capacity(writes.len());
    for w in writes {
        let sp = tx.savepoint()?;
        let r = apply(&sp, w);
        if r.is_ok() {
            sp.commit()?;
        } else {
            drop(sp); // rolls back to the savepoint
        }
        results.push(r);
    }
    tx.commit()?;
    Ok(results)
}
