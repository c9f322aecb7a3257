//! The one writer: a thread of its own that owns the database's write connection, takes what
//! is queued, applies it in one transaction, commits, and acknowledges each write (group
//! commit).
//!
//! A plain thread rather than a tokio task driving tokio-rusqlite's thread: a row goes from the
//! answer's task straight to the thread that commits it and its acknowledgement straight back
//! (no task in between to wake on the way in and out), the thread blocks on the queue itself,
//! and the statements every commit runs are prepared once for the thread's life instead of
//! being looked up in rusqlite's statement cache (its key is the SQL text, hashed and compared
//! on every use). bench/PROFILE.md has the instruction counts.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::StoreError;
use super::journal::{Fate, Segment};
use super::usage::UsageRow;
use super::write::Write;

mod commit;
mod wal_watch;

use commit::{Statements, commit_batch};

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
    /// As [`Ack::Reply`], for a ledger row whose charge stands whatever the commit does (the
    /// answer went out, or was cut, before it): if the commit fails, the waiter hears so and the
    /// row is kept and committed with a later batch (see [`Retained`]).
    /// (`None`: the row kept from a failed batch, nobody waiting any more.)
    Kept(Option<oneshot::Sender<Result<(), StoreError>>>),
    /// A waiting task, once the commit is made (in the OS: a reader sees it).
    Settled(oneshot::Sender<Result<(), StoreError>>),
    /// The row is also in this journal segment, which is held until the row is committed
    /// (see [`super::journal`]). Nobody waits, unless the writer was too far behind (see
    /// [`super::Store::record_usage`]): then the sender hears of the commit. Then: its charge
    /// stands whatever happens (as [`Ack::Kept`]), and, with `full`, whether its record did
    /// reach the segment (see `Retained::prepend_to`).
    Journaled(
        Arc<Segment>,
        Option<oneshot::Sender<Result<(), StoreError>>>,
        bool,
        Option<Arc<Fate>>,
    ),
}

/// The store's side of the writer: its queue, and how to hurry it.
pub(super) struct Handle {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::Thread,
    shared: Arc<Shared>,
}

/// What the writer's thread and the store both see.
#[derive(Default)]
pub(super) struct Shared {
    /// Set by a write somebody waits on: a lingering writer commits at once (see [`LINGER`]).
    urgent: AtomicBool,
    /// Commits made so far: the durability task (`store.sync = "normal"`) syncs after commits
    /// it has not seen.
    pub(super) commits: AtomicU64,
    /// Journaled rows queued and not yet committed (see [`super::BACKLOG_CAP`]).
    pub(super) backlog: AtomicUsize,
    /// The writer has stopped taking work.
    pub(super) stopped: AtomicBool,
    /// The last batch could not be committed, retries included (a full disk, a lock held by
    /// another program): `/healthz` says so until a commit succeeds.
    pub(super) failing: AtomicBool,
    /// Rows neither committed nor in the journal when the writer closed: bills lost.
    pub(super) lost_at_close: AtomicUsize,
}

impl Handle {
    /// Queue a job; false once the writer is gone.
    pub(super) fn send(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Somebody waits on what was just queued: end the writer's linger, if it is lingering.
    /// (A wake-up that finds it busy or blocked on the queue costs it a spurious return from
    /// `park`, which both handle.)
    pub(super) fn hurry(&self) {
        self.shared.urgent.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }

    /// What the thread shares with the store.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Start the writer's thread: it runs `setup` (open the connection, migrate, replay the
/// journal, read what the store needs at start), prepares its statements, hands `setup`'s
/// result back, and then takes jobs until [`Job::Close`] or until every [`Handle`] is gone.
pub(super) async fn start<T: Send + 'static>(
    setup: impl FnOnce() -> Result<(Connection, T), StoreError> + Send + 'static,
    always_sync: bool,
) -> Result<(Handle, T), StoreError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (jobs, rx) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let theirs = shared.clone();
    let thread = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            // Set however the thread ends, a panic included: the sync thread stops with it.
            let stopped = StopsOnDrop(theirs.clone());
            let (conn, out) = match setup() {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let closing = match Statements::prepare(&conn) {
                Ok(stmts) => {
                    let _ = ready_tx.send(Ok(out));
                    run(&conn, stmts, rx, &theirs, always_sync)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    None
                }
            };
            if closing.is_some() {
                checkpoint(&conn, "closing", true);
            }
            if let Err((_, e)) = conn.close() {
                tracing::warn!(error = %e, "database close failed");
            }
            drop(stopped);
            if let Some(done) = closing {
                let _ = done.send(());
            }
        })
        .map_err(|e| StoreError::Io(format!("ledger writer thread: {e}")))?;
    let out = ready_rx.await.map_err(|_| StoreError::Closed)??;
    Ok((
        Handle {
            jobs,
            thread: thread.thread().clone(),
            shared,
        },
        out,
    ))
}

/// Marks the writer [`Shared::stopped`] when dropped.
struct StopsOnDrop(Arc<Shared>);

impl Drop for StopsOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
    }
}

/// How long the writer lets journaled rows gather before committing them (`store.sync =
/// "normal"`). Nobody waits for those commits, so one commit every few milliseconds takes what
/// would have been dozens of one-row commits (and their thread wake-ups) at a moderate rate.
/// Not longer: the commit shares the core with the requests, and a bigger one delays the
/// answers that arrive while it runs (same-session A/B, added p99 at one connection / CPU per
/// request at 5 000/s: 20 ms ~745 µs / 120 µs, 5 ms ~490–640 / 119–125, 2 ms ~455–495 /
/// 128–130; see bench/PROFILE.md).
const LINGER: Duration = Duration::from_millis(5);

/// With `full`, a batch somebody waits on is committed at once, unless the previous batch held
/// at least this many writes: then writes arrive faster than commits, and the writer gathers more of
/// them first (see [`gather`]). PostgreSQL's `commit_delay` / `commit_siblings` in spirit.
const SIBLINGS: usize = 8;
/// How long the writer sleeps between looks at the queue while it gathers.
const GATHER_STEP: Duration = Duration::from_micros(100);
/// Most looks: what gathering may add to a waiting answer's time (~0.5 ms, beside the
/// milliseconds an answer waits in a queue at such load anyway).
const GATHER_STEPS: u32 = 5;
/// A batch this large is not gathered for: the writes already outpace the commits (the writer
/// is the bottleneck, as in the ledger benchmark), and a sleep would only idle it.
const GATHERED_ENOUGH: usize = 32;

/// The writer's loop: take what is queued (up to `MAX_BATCH`), apply it in one transaction (one
/// bad write cannot sink the others; see [`try_commit`]), commit, acknowledge. Returns who
/// asked it to close, if anyone did.
///
/// When a batch holds only journaled rows, it first lingers (see [`LINGER`]) unless a write
/// with a waiter is queued. The linger parks the thread rather than blocking on the queue, so
/// the rows queued meanwhile do not wake it one by one; [`Handle::hurry`] does.
fn run<'c>(
    conn: &'c Connection,
    mut stmts: Statements<'c>,
    rx: mpsc::Receiver<Job>,
    shared: &Shared,
    always_sync: bool,
) -> Option<oneshot::Sender<()>> {
    // Answers do not wait for its commits (in both modes their rows are in the journal first);
    // a waited write loses only the time the core spends answering others. It cannot starve
    // for long: past `BACKLOG_CAP` queued rows each new answer waits for its commit, which
    // idles the workers.
    crate::background::yield_core_to_answers("ledger writer");
    let mut closing: Option<oneshot::Sender<()>> = None;
    // What the connection's `synchronous` is set to: FULL (`Some(true)`) for a batch that must
    // be on disk once committed, NORMAL otherwise (see [`commit_batch`]); unknown at first.
    let mut on_disk: Option<bool> = None;
    let mut previous = 0;
    let mut retained = Retained::default();
    let mut compaction = Compaction::default();
    let mut wal_watch = wal_watch::WalWatch::default();
    while closing.is_none() {
        // While commits fail, the writer does not wait for new work to try again: kept rows
        // must reach the database once it takes writes (and `/healthz` must see it does) even
        // if nothing else is written — a probe write every second.
        let failing = shared.failing.load(Ordering::Acquire) || !retained.is_empty();
        let first = if failing {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        };
        let mut batch = Vec::new();
        match first {
            Some(Job::Write(w, ack)) => batch.push((w, ack)),
            Some(Job::Close(done)) => closing = Some(done),
            None => batch.push((Write::Probe, Ack::None)),
        }
        let mut lingered = false;
        loop {
            // Cleared before the queue is drained: a waited write queued after the drain ends
            // the linger below, one queued before it is in the batch.
            shared.urgent.store(false, Ordering::SeqCst);
            if closing.is_none() {
                drain(&rx, &mut batch, &mut closing);
            }
            let nobody_waits = batch
                .iter()
                .all(|(_, ack)| matches!(ack, Ack::Journaled(_, None, ..)));
            if always_sync
                && !nobody_waits
                && !lingered
                && previous >= SIBLINGS
                && batch.len() < GATHERED_ENOUGH
                && closing.is_none()
            {
                gather(&rx, &mut batch, &mut closing);
            }
            if lingered || !nobody_waits || batch.len() >= MAX_BATCH || closing.is_some() {
                break;
            }
            linger(&shared.urgent);
            lingered = true;
        }
        previous = batch.len();
        if batch.is_empty() {
            continue;
        }
        let journaled = batch
            .iter()
            .filter(|(_, ack)| matches!(ack, Ack::Journaled(..)))
            .count();
        // A batch of writes that may change nothing (read barriers, re-arming notices) commits
        // even on a full disk: it says nothing of whether the database takes writes.
        let proves = !retained.is_empty()
            || batch
                .iter()
                .any(|(w, _)| !matches!(w, Write::Barrier | Write::Rearm { .. }));
        retained.prepend_to(&mut batch);
        let was_failing = shared.failing.load(Ordering::Acquire);
        if was_failing {
            compaction.before_retry(conn);
        }
        let retry = !was_failing;
        let done = commit_batch(
            conn,
            &mut stmts,
            batch,
            always_sync,
            &mut on_disk,
            retry,
            &shared.failing,
        );
        let ok = done.is_ok();
        // Set by `commit_batch` at a failed attempt: a batch that failed and then committed on
        // a retry is a failure that ended too.
        let failed = was_failing || shared.failing.load(Ordering::Acquire);
        if let Err(kept) = done {
            retained.keep(kept);
        }
        // (`commit_batch` sets it at a first failed attempt; a batch that then commits but
        // proves nothing leaves it as it was before.)
        let failing_now = if proves || !ok { !ok } else { was_failing };
        shared.failing.store(failing_now, Ordering::Release);
        // The failures were logged loudly; their end is said too (an operator who freed disk
        // space otherwise saw the errors merely stop).
        if failed && !failing_now {
            tracing::info!("database commits succeed again; the ledger's waiting rows are in");
            compaction.recovered(conn);
        }
        shared.backlog.fetch_sub(journaled, Ordering::Relaxed);
        shared.commits.fetch_add(1, Ordering::Release);
        wal_watch.after_commit(conn);
    }
    // Finish what was queued before the close request took effect. What is queued after is
    // dropped with the queue: its waiters hear the store is closed, and a journaled row stays
    // in its segment for the next start.
    let rest: Vec<_> = rx
        .try_iter()
        .filter_map(|job| match job {
            Job::Write(w, ack) => Some((w, ack)),
            Job::Close(_) => None,
        })
        .collect();
    // Refuse what comes after: a send now fails (`write_later` logs it) instead of being
    // accepted into a queue nobody reads.
    drop(rx);
    let mut rest = rest;
    retained.prepend_to(&mut rest);
    if !rest.is_empty() {
        let retry = !shared.failing.load(Ordering::Acquire);
        if let Err(kept) = commit_batch(
            conn,
            &mut stmts,
            rest,
            always_sync,
            &mut on_disk,
            retry,
            &shared.failing,
        ) && !kept.is_empty()
        {
            // Journaled ones are still in the journal for the next start; the others are lost.
            let lost: Vec<&UsageRow> = kept
                .iter()
                .filter(|(_, ack)| !in_journal(ack))
                .filter_map(|(w, _)| match w {
                    Write::Usage(row) => Some(&**row),
                    _ => None,
                })
                .collect();
            tracing::error!(
                rows = kept.len(),
                lost = lost.len(),
                "ledger rows still not committed at close; the journaled ones are applied at the next start"
            );
            // The log (journald) is the last place these bills can be kept: each one in it, for
            // the operator to charge by hand (found by an independent check: a stop on a full
            // disk lost streams' bills with nothing but a count, and exited 0).
            for row in lost.iter().take(LOST_ROWS_LOGGED) {
                tracing::error!(
                    request_id = %row.request_id,
                    key_id = %row.key_id,
                    model = %row.model,
                    cost = %row.cost,
                    prompt_tokens = row.prompt_tokens,
                    completion_tokens = row.completion_tokens,
                    created_at_ms = row.created_at_ms,
                    "LEDGER ROW LOST: not in the database or the journal"
                );
            }
            shared.lost_at_close.store(lost.len(), Ordering::Release);
        }
    }
    closing
}

/// At most this many lost rows are logged one by one at close (the rest are counted).
const LOST_ROWS_LOGGED: usize = 10_000;

/// Whether the row of `ack` is safe in the journal (its record written, or being written by
/// the sync thread for an answer that waits for it).
fn in_journal(ack: &Ack) -> bool {
    matches!(ack, Ack::Journaled(_, _, _, fate) if fate.as_ref().is_none_or(|f| !f.has_failed()))
}

/// Ledger rows whose batch could not be committed (a full disk, a lock held by another
/// program) though their charge stands: journaled rows (`store.sync = "normal"`) and
/// [`Ack::Kept`] ones (an answer that went out). Each later batch carries them again until one
/// commits, so they reach the database — and a backup, and the customer's dashboard — once it
/// takes writes again, not only at the next start. At most [`RETAINED_MAX`]: past it the
/// oldest are let go (a journaled row stays in its segment for the next start to apply).
#[derive(Default)]
struct Retained(std::collections::VecDeque<(Write, Ack)>);

/// While commits fail, how often the writer tries again with nothing new to write.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How many retained rows the writer holds (~1 KiB each).
const RETAINED_MAX: usize = 65_536;

impl Retained {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Put them before `batch`'s own writes (their rows settled first). A journaled row whose
    /// record could not be written is not in the journal: kept as an [`Ack::Kept`] row when its
    /// charge stands, let go otherwise — its answer was withheld for it and its charge given
    /// back, and committed now it billed the withheld answer (found by an independent check, on
    /// a full disk). Rows whose record did go in stay journaled, retried until committed.
    fn prepend_to(&mut self, batch: &mut Vec<(Write, Ack)>) {
        let mut let_go = 0;
        for (_, ack) in &mut self.0 {
            let Ack::Journaled(segment, _, stands, Some(fate)) = ack else {
                continue;
            };
            // Its answer's fate is decided by a durable write behind it: until then the row is
            // retried as it is, never let go (let go as soon as its record failed, a row whose
            // barrier then committed in a later batch left a delivered answer unbilled).
            if !fate.has_failed() || (!*stands && fate.undecided()) {
                continue;
            }
            // Not in the journal: its segment does not hold it.
            segment.settle_one();
            if *stands || !fate.was_withheld() {
                *ack = Ack::Kept(None);
            } else {
                *ack = Ack::None;
                let_go += 1;
            }
        }
        if let_go > 0 {
            self.0
                .retain(|(w, ack)| !(matches!(ack, Ack::None) && matches!(w, Write::Usage(_))));
            tracing::warn!(
                rows = let_go,
                "ledger rows whose journal record could not be written, and whose answers were withheld, are not committed"
            );
        }
        if !self.0.is_empty() {
            let own = std::mem::take(batch);
            batch.extend(self.0.drain(..));
            batch.extend(own);
        }
    }

    fn keep(&mut self, rows: Vec<(Write, Ack)>) {
        self.0.extend(rows);
        let over = self.0.len().saturating_sub(RETAINED_MAX);
        if over > 0 {
            let lost = self
                .0
                .drain(..over)
                .filter(|(_, ack)| !in_journal(ack))
                .count();
            tracing::error!(
                dropped = over,
                lost,
                "too many ledger rows waiting for the database to take writes; the oldest are \
                 let go (journaled ones are applied at the next start)"
            );
        }
    }
}

/// Move everything in the WAL into the database file and empty the WAL (`when` names the
/// moment, for the log). At a clean close: the read connections stay open to the end, so
/// SQLite's own checkpoint on the last close never runs, and `modelrelay.db` copied alone
/// after `systemctl stop` would miss every row since the last automatic checkpoint (up to
/// ~40 MiB of them). After a full disk: see [`Compaction`].
pub(super) fn checkpoint(conn: &rusqlite::Connection, when: &str, wait: bool) {
    // Only the closing one waits for readers as long as a commit would (`wait`): the others
    // run on the writer's thread while answers may wait on its commits, and a reader that
    // holds on (a backup, another program) stalled it 5 s a time (found by a review); a
    // reader's moment passes within [`HURRIED_BUSY`]. What a reader keeps is folded later.
    let hurry = !wait;
    if hurry {
        let _ = conn.busy_timeout(HURRIED_BUSY);
    }
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match done {
        Ok((0, _, _)) => {}
        // A reader in the middle of a read (an online backup) keeps its frames: the next
        // start's first checkpoint moves them.
        Ok((busy, log, moved)) => {
            tracing::warn!(busy, log, moved, when, "the checkpoint was not complete");
        }
        Err(e) => tracing::warn!(error = %e, when, "the checkpoint failed"),
    }
    if hurry && let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "cannot set the busy timeout back");
    }
}

/// The WAL folded into the database file while commits fail and once they succeed again.
///
/// Why: until its first automatic checkpoint (every ~40 MiB, for the writer's speed) the WAL
/// holds many copies of the same few pages and the database file almost nothing. On a full
/// disk the space an operator freed was taken again by the next commits' WAL frames within
/// seconds — the failure came back, and a restart could not even open the database (found by
/// an independent check). Folded, the WAL's copies become the one page each they stand for
/// in the database file, and the WAL's file is emptied: the space comes back.
#[derive(Default)]
pub(super) struct Compaction {
    last: Option<std::time::Instant>,
}

/// A WAL smaller than this is not worth folding while commits fail (each try copies it).
pub(super) const COMPACT_ABOVE: u64 = 4 << 20;
/// While commits fail, the WAL is folded at most this often (each try is that much I/O).
const COMPACT_EVERY: Duration = Duration::from_secs(10);

impl Compaction {
    /// Before a retry of a failed commit: fold a large WAL, at most every [`COMPACT_EVERY`].
    pub(super) fn before_retry(&mut self, conn: &rusqlite::Connection) {
        if self.last.is_some_and(|at| at.elapsed() < COMPACT_EVERY)
            || wal_bytes(conn) < COMPACT_ABOVE
        {
            return;
        }
        self.last = Some(std::time::Instant::now());
        checkpoint(conn, "while commits fail", false);
    }

    /// Commits succeed again: fold what the failure's backlog added, and, when the disk has
    /// little room left, from now on keep the WAL at SQLite's default size (~4 MiB before each
    /// checkpoint, its file cut back to that) rather than ~40 MiB: on a disk that filled once,
    /// the WAL's growth between checkpoints filled the space freed again within seconds.
    pub(super) fn recovered(&mut self, conn: &rusqlite::Connection) {
        self.last = None;
        // Only where the disk is short of room for the large WAL: a failure that was a lock
        // another program held says nothing about space, and the large WAL is the faster.
        // `keep_wal_small` does nothing when the WAL is small already.
        if disk_is_tight(conn) {
            keep_wal_small(conn);
        }
        checkpoint(conn, "after commits failed", false);
    }
}

/// Whether the database's disk is short of room for the large WAL (free space under
/// [`TIGHT_BELOW`]).
pub(super) fn disk_is_tight(conn: &rusqlite::Connection) -> bool {
    free_bytes(conn).is_some_and(|free| free < TIGHT_BELOW)
}

/// Checkpoint the WAL every ~4 MiB (SQLite's default) and cut its file back to that, not
/// ~40 MiB, on this connection (unless it does already): for a disk short of room.
pub(super) fn keep_wal_small(conn: &rusqlite::Connection) {
    let now: Result<i64, _> = conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0));
    if now.is_ok_and(|pages| pages <= SMALL_WAL_PAGES) {
        return;
    }
    let set = format!(
        "PRAGMA wal_autocheckpoint = {SMALL_WAL_PAGES}; PRAGMA journal_size_limit = {};",
        SMALL_WAL_PAGES * 4096
    );
    match conn.execute_batch(&set) {
        Ok(()) => tracing::warn!(
            "the disk has little room left: the database's WAL is checkpointed every ~4 MiB \
             (not ~40 MiB) until the next start"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot make the WAL smaller"),
    }
}

/// The connection's busy timeout, as set when the store opens it (`store/mod.rs`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a checkpoint on the writer's way waits for readers.
const HURRIED_BUSY: Duration = Duration::from_millis(100);

/// Pages of WAL between checkpoints on a disk short of room (SQLite's default).
const SMALL_WAL_PAGES: i64 = 1000;

/// Free space under which, after commits failed, the WAL is kept small: room for a few of the
/// large WAL's ~40 MiB.
const TIGHT_BELOW: u64 = 160 << 20;

/// Bytes free for the daemon on the database's filesystem, if it can tell.
fn free_bytes(conn: &rusqlite::Connection) -> Option<u64> {
    let vfs = nix::sys::statvfs::statvfs(conn.path()?).ok()?;
    Some(vfs.blocks_available().saturating_mul(vfs.fragment_size()))
}

/// The size of the database's WAL file (0 when it cannot be read).
pub(super) fn wal_bytes(conn: &rusqlite::Connection) -> u64 {
    conn.path()
        .map_or(0, |p| wal_bytes_of(std::path::Path::new(p)))
}

/// The size of the WAL file of the database at `db` (0 when there is none).
pub(super) fn wal_bytes_of(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Gather the writes that arrive while the answers already waiting are kept waiting a little
/// longer: look at the queue every [`GATHER_STEP`], at most [`GATHER_STEPS`] times, and stop
/// as soon as a look finds nothing new (every writer is then waiting on this batch) or the
/// batch holds [`GATHERED_ENOUGH`].
///
/// Why: with `store.sync = "full"`, under load every answer waits for a commit, and each
/// commit's fixed cost (the WAL's pages, the `fsync` and its system call, the thread wake-ups)
/// is paid on the core the answers use. Committing whatever had arrived the moment the previous
/// commit ended made batches of 5–10 rows at 64 connections; gathering makes them 8–15, and the
/// gateway's CPU per request at that load fell by a fifth to a third (bench/PROFILE.md). It
/// sleeps rather than parks: with `normal`, each waited write unparks it ([`Handle::hurry`]),
/// which would end every step.
fn gather(
    rx: &mpsc::Receiver<Job>,
    batch: &mut Vec<(Write, Ack)>,
    closing: &mut Option<oneshot::Sender<()>>,
) {
    for _ in 0..GATHER_STEPS {
        std::thread::sleep(GATHER_STEP);
        let before = batch.len();
        drain(rx, batch, closing);
        if batch.len() == before || batch.len() >= GATHERED_ENOUGH || closing.is_some() {
            return;
        }
    }
}

/// Take what is queued into `batch`, up to [`MAX_BATCH`], stopping at a close request (what
/// is queued after it is committed once the loop ends, see [`run`]).
fn drain(
    rx: &mpsc::Receiver<Job>,
    batch: &mut Vec<(Write, Ack)>,
    closing: &mut Option<oneshot::Sender<()>>,
) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Job::Write(w, ack)) => batch.push((w, ack)),
            Ok(Job::Close(done)) => {
                *closing = Some(done);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Wait up to [`LINGER`] for more journaled rows, less if a write with a waiter is queued.
fn linger(urgent: &AtomicBool) {
    let deadline = Instant::now() + LINGER;
    while !urgent.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Returns early when hurried (or spuriously): the flag says which.
        std::thread::park_timeout(deadline - now);
    }
}
