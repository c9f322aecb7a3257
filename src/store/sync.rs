//! `store.sync = "normal"`: commits are acknowledged once in the OS (SQLite's `synchronous =
//! NORMAL` in WAL mode), and this task syncs the WAL file to disk every interval when there
//! were commits since the last sync — so a power loss drops at most an interval of rows,
//! while a crashed or killed process drops none.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::WeakUnboundedSender;

use super::writer::Job;

/// Sync `<db>-wal` every `interval` after commits, until the store is gone.
pub(super) async fn every(
    db: PathBuf,
    interval: Duration,
    commits: Arc<AtomicU64>,
    store: WeakUnboundedSender<Job>,
) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut synced = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(alive) = store.upgrade() else { return };
        if alive.is_closed() {
            return;
        }
        drop(alive);
        let now = commits.load(Ordering::Acquire);
        if now == synced {
            continue;
        }
        let path = wal.clone();
        // fsync is per file, whoever opened it: this flushes what SQLite's writer wrote.
        let done = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .open(&path)
                .and_then(|f| f.sync_data())
        })
        .await;
        match done {
            Ok(Ok(())) => synced = now,
            // A checkpoint may have truncated or recreated the WAL meanwhile; next tick.
            Ok(Err(e)) => tracing::debug!(error = %e, "WAL sync skipped"),
            Err(e) => tracing::warn!(error = %e, "WAL sync task failed"),
        }
    }
}
