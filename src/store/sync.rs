//! Commits of journaled rows (and, with `store.sync = "normal"`, of every write nobody waits on)
//! are acknowledged once in the OS (SQLite's `synchronous = NORMAL` in WAL mode), and this thread
//! syncs the WAL file to disk every interval when there were commits since the last sync — so
//! with `normal` a power loss drops at most an interval of rows, while a crashed or killed
//! process drops none (with `full` the rows were on disk in the journal before their answers).
//!
//! It also keeps the ledger's journal short (see [`super::journal`]): every interval it starts
//! a new segment, syncs the one retired if some of its rows are not committed yet, and deletes
//! the retired segments whose rows are all committed (or keeps them to reuse), once the WAL
//! holding them is synced.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::journal::{Journal, Segment};
use super::writer::Handle;

/// A retired journal segment, deleted once [`Segment::drained`].
type Retired = Arc<Segment>;

/// Start the thread that, every `interval` until the store is gone, turns the journal over and
/// syncs `<db>-wal` if the writer committed since the last sync (it counts its commits). A
/// thread of its own, started with the store: as a task handing each tick to tokio's blocking
/// pool, a machine short of threads made the hand-off panic, and the daemon served on with
/// nothing synced (found by an independent check); now such a start is refused.
pub(super) fn start(
    db: PathBuf,
    interval: Duration,
    store: Weak<Handle>,
    journal: Arc<Journal>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ledger-sync".into())
        .spawn(move || every(&db, interval, &store, &journal))
        .map(drop)
}

/// The thread's loop.
fn every(db: &Path, interval: Duration, store: &Weak<Handle>, journal: &Journal) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut synced = 0u64;
    let mut retired: Vec<Retired> = Vec::new();
    let mut next = Instant::now() + interval;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        // A tick that ran late delays the next rather than bunching them up.
        next = (next + interval).max(Instant::now());
        let Some(writer) = store.upgrade() else {
            return;
        };
        let shared = writer.shared().clone();
        drop(writer);
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let now = shared.commits.load(Ordering::Acquire);
        match turn(&wal, now != synced, journal, &mut retired) {
            Ok(true) => synced = now,
            Ok(false) => {}
            // A checkpoint may have truncated or recreated the WAL meanwhile; next tick.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(error = %e, "WAL sync skipped");
            }
            // Anything else (out of descriptors): rows committed since the last sync
            // are not on disk, which `store.sync = "normal"` promises within the
            // interval — said (it was only at debug; found by an independent check).
            Err(e) => {
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::warn!(error = %e, since_last_said = held, "WAL not synced to disk (said at most once a minute)");
                }
            }
        }
    }
}

/// One tick, on the sync thread: retire the journal's segment, sync the WAL if there were
/// commits or segments are ready to go, retire those. `Ok(true)` when the WAL was synced.
fn turn(
    wal: &Path,
    committed: bool,
    journal: &Journal,
    retired: &mut Vec<Retired>,
) -> std::io::Result<bool> {
    // Decided before the sync: a drained segment has every row committed, and the sync below
    // puts those commits on disk. One that drains meanwhile waits for the next tick.
    let (ready, held): (Vec<Retired>, Vec<Retired>) = std::mem::take(retired)
        .into_iter()
        .partition(Segment::drained);
    *retired = held;
    // A new segment only once the ones retired before have gone, or when this one is full:
    // while commits fail nothing drains, and a new segment every tick wrote 512 KiB of zeros
    // a tick until the disk filled (found by an independent check: 150 files, 76 MB, for 150
    // rows in 30 s of a locked database).
    // And at once when the directory was removed: its rows would go on into the removed
    // segment until it filled, the one copy of them while commits fail.
    let turn_over = retired.is_empty() || journal.current_full() || journal.dir_gone();
    match if turn_over {
        journal.rotate()
    } else {
        Ok(None)
    } {
        Ok(Some(old)) => {
            // Rows not yet committed are only here: on disk within the interval too.
            if !Segment::drained(&old)
                && let Err(e) = old.sync()
            {
                tracing::warn!(error = %e, "journal sync failed");
            }
            retired.push(old);
        }
        // Kept on: its rows not on disk yet (`normal`) are synced within the interval too.
        Ok(None) => {
            if let Err(e) = journal.sync_current_if_behind() {
                tracing::warn!(error = %e, "journal sync failed");
            }
        }
        Err(e) => {
            warn_now_and_then(&e);
            // The segment kept on is open already: its rows not on disk yet are synced within
            // the interval all the same (they were not while a new one could not be opened,
            // e.g. out of descriptors; found by an independent check).
            if let Err(e) = journal.sync_current_if_behind() {
                tracing::warn!(error = %e, "journal sync failed");
            }
        }
    }
    if !committed && ready.is_empty() {
        return Ok(false);
    }
    if let Err(e) = sync_wal(wal) {
        retired.extend(ready);
        return Err(e);
    }
    for segment in ready {
        match journal.retire(&segment) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
                if let Some(held) = SAID.due() {
                    tracing::warn!(error = %e, path = %segment.path().display(), since_last_said = held, "journal segment not retired (said at most once a minute)");
                }
                retired.push(segment);
            }
        }
    }
    Ok(true)
}

/// Log a failed start of a journal segment at most once a minute: on a full disk it fails
/// every tick, and `normal`'s ticks (200 ms) wrote ~18 000 warnings an hour while the database's
/// own errors already said why (found by an independent check).
fn warn_now_and_then(e: &std::io::Error) {
    static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
    if let Some(held) = SAID.due() {
        tracing::warn!(error = %e, since_last_said = held, "could not start a new journal segment (said at most once a minute)");
    }
}

/// fsync is per file, whoever opened it: this flushes what SQLite's writer wrote.
fn sync_wal(wal: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .open(wal)
        .and_then(|f| f.sync_data())
}
