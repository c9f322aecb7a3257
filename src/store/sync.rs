//! Commits of journaled rows (and, with `store.sync = "normal"`, of every write nobody waits on)
//! are acknowledged once in the OS (SQLite's `synchronous = NORMAL` in WAL mode), and this task
//! syncs the WAL file to disk every interval when there were commits since the last sync — so
//! with `normal` a power loss drops at most an interval of rows, while a crashed or killed
//! process drops none (with `full` the rows were on disk in the journal before their answers).
//!
//! It also keeps the ledger's journal short (see [`super::journal`]): every interval it starts
//! a new segment, syncs the one retired if some of its rows are not committed yet, and deletes
//! the retired segments whose rows are all committed (or keeps them to reuse), once the WAL
//! holding them is synced.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::journal::{Journal, Segment};
use super::writer::Handle;

/// A retired journal segment, deleted once [`Segment::drained`].
type Retired = Arc<Segment>;

/// Every `interval`, until the store is gone: turn the journal over and sync `<db>-wal` if
/// the writer committed since the last sync (it counts its commits).
pub(super) async fn every(
    db: PathBuf,
    interval: Duration,
    store: Weak<Handle>,
    journal: Arc<Journal>,
) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut synced = 0u64;
    let mut retired: Vec<Retired> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(writer) = store.upgrade() else {
            return;
        };
        let shared = writer.shared().clone();
        drop(writer);
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let now = shared.commits.load(Ordering::Acquire);
        let (wal, journal) = (wal.clone(), journal.clone());
        let mut held = std::mem::take(&mut retired);
        let done = tokio::task::spawn_blocking(move || {
            let outcome = turn(&wal, now != synced, &journal, &mut held);
            (outcome, held)
        })
        .await;
        match done {
            Ok((outcome, held)) => {
                retired = held;
                match outcome {
                    Ok(true) => synced = now,
                    Ok(false) => {}
                    // A checkpoint may have truncated or recreated the WAL meanwhile; next tick.
                    Err(e) => tracing::debug!(error = %e, "WAL sync skipped"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "store sync task failed"),
        }
    }
}

/// One tick, on a blocking thread: retire the journal's segment, sync the WAL if there were
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
    let turn_over = retired.is_empty() || journal.current_full();
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
        Err(e) => warn_now_and_then(&e),
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
                tracing::warn!(error = %e, path = %segment.path().display(), "journal segment not retired");
                retired.push(segment);
            }
        }
    }
    Ok(true)
}

/// When a failed start of a segment was last logged, in seconds since the Unix epoch.
static TURN_WARNED_AT: AtomicU64 = AtomicU64::new(0);

/// Log a failed start of a journal segment at most once a minute: on a full disk it fails
/// every tick, and `normal`'s ticks (200 ms) wrote ~18 000 warnings an hour while the database's
/// own errors already said why (found by an independent check).
fn warn_now_and_then(e: &std::io::Error) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = TURN_WARNED_AT.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && TURN_WARNED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %e, "could not start a new journal segment (said at most once a minute)");
    }
}

/// fsync is per file, whoever opened it: this flushes what SQLite's writer wrote.
fn sync_wal(wal: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .open(wal)
        .and_then(|f| f.sync_data())
}
