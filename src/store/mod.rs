//! Persistence: SQLite in WAL mode, embedded migrations, one writer thread that commits in
//! batches (group commit), and two read connections through tokio-rusqlite (the second for
//! `/healthz` alone).
//!
//! Nothing on the request path reads SQLite. Requests append their ledger rows to a journal
//! (synced to disk before the answer's last byte with `store.sync = "full"`) and hand them to
//! the writer, which commits them behind in batches; other writes (orders, keys, top-ups) await
//! their commit, and one commit serves every write that arrived while the previous one was
//! being written.

pub mod accounts;
mod backup;
pub mod budget;
mod error;
mod fsync;
mod journal;
pub mod keys;
pub mod mail;
mod migrate;
pub mod orders;
mod record;
mod refunds;
mod sync;
pub mod usage;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::SyncMode;
use crate::keys::KeyRecord;
pub use backup::BackupError;
pub use error::StoreError;
use journal::Journal;
pub use usage::{Finish, Measured, UsageRow};
pub use write::Write;
use writer::{Ack, Job};

/// The database: a writer queue and two read connections (one for `/healthz`). Clones share
/// them.
#[derive(Clone)]
pub struct Store {
    /// The writer's queue (see [`writer`]); the last clone gone, the writer finishes and stops.
    writer: Arc<writer::Handle>,
    reader: tokio_rusqlite::Connection,
    /// A second read connection, for `/healthz` alone: a customer's long read (a busy key's
    /// ledger) on `reader` made the probe time out and say the service was down (found by an
    /// independent check at a year's scale).
    probe: tokio_rusqlite::Connection,
    path: PathBuf,
    /// The database file's device and inode when it was opened: `path` naming another file,
    /// or none, means it was removed or replaced under the daemon (see [`Store::file_gone`]).
    file_id: Option<(u64, u64)>,
    /// Where settled rows go before the writer commits them (see [`journal`]).
    journal: Arc<Journal>,
    /// `store.sync = "full"`: puts the journal on disk before an answer's last byte (see
    /// [`fsync`]).
    syncer: Option<Arc<fsync::Syncer>>,
    /// The gateway's requests in flight not streamed (see [`Store::answers_in_flight`]).
    coming: Arc<std::sync::atomic::AtomicUsize>,
}

/// Journaled rows the writer may have queued before an answer waits for its row's commit as
/// in `full` mode: the writer runs at the lowest priority (see `writer.rs`), and this bounds
/// the queue when the core is never idle. A few MiB of rows; more than a second of them at
/// any rate where the core still has time to spare.
const BACKLOG_CAP: usize = if cfg!(test) { 4 } else { 8192 };

/// How long a read waits for what was queued before it to be committed (a few milliseconds
/// normally) before it reads what is committed.
const BARRIER_WAIT: Duration = Duration::from_secs(1);

impl Store {
    /// Open (creating) `<data_dir>/modelrelay.db` with full durability, migrate, start the
    /// writer; returns the keys.
    pub async fn open(path: &Path) -> Result<(Store, Vec<KeyRecord>), StoreError> {
        Store::open_with(path, SyncMode::Full, Duration::from_millis(200)).await
    }

    /// [`Store::open`] with a durability mode (`store.sync`): `Full`, every commit is on disk
    /// before it is acknowledged; `Normal`, in the OS (a killed process loses nothing), and a
    /// task syncs the WAL to disk every `interval` after commits, which bounds what a power
    /// loss can drop (rows whose charges are then lost: it only ever favours the customer).
    pub async fn open_with(
        path: &Path,
        sync: SyncMode,
        interval: Duration,
    ) -> Result<(Store, Vec<KeyRecord>), StoreError> {
        let journal_dir = journal::dir_of(path);
        refuse_a_lost_database(path, &journal_dir)?;
        private_files(path)?;
        let db = path.to_path_buf();
        let dir = journal_dir.clone();
        // On the writer's thread, which keeps the connection: migrate, then the rows a stopped
        // daemon had journaled but not committed, before anything reads keys.
        let (writer, (keys, replayed)) = writer::start(
            move || -> Result<_, StoreError> {
                let mut c = rusqlite::Connection::open(&db)?;
                let synchronous = match sync {
                    SyncMode::Full => "FULL",
                    SyncMode::Normal => "NORMAL",
                };
                c.execute_batch(&format!(
                    "PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = {synchronous};
                     PRAGMA foreign_keys = ON;
                     PRAGMA busy_timeout = 5000;"
                ))?;
                // Throughput of the writer (see benches/ledger.rs), neither changes durability:
                // the random `request_id` index is written all over, so a cache that holds its
                // hot pages saves re-reading them, and checkpointing every ~40 MiB of WAL rather
                // than every ~4 MiB copies a page rewritten by many commits once, not each time.
                // A WAL that grew past that (another program's read transaction kept
                // checkpoints from folding it: 560 MB in six minutes, found by an independent
                // check) is cut back to 40 MiB, its usual size, when the next commit starts it
                // over, instead of keeping its size until the next start (`writer::wal_watch`
                // says it grows).
                c.execute_batch(
                    "PRAGMA cache_size = -32768;
                     PRAGMA wal_autocheckpoint = 10000;
                     PRAGMA journal_size_limit = 41943040;",
                )?;
                // A large WAL (an unclean stop, a full disk) folded first: the space it
                // frees may be what the replay below needs; and on a disk short of room the
                // WAL is kept small from the start — a restart is the usual way out of a full
                // disk under systemd, and the large WAL filled it again within seconds (found
                // by an independent check). See `writer::Compaction`.
                if writer::wal_bytes(&c) >= writer::COMPACT_ABOVE {
                    writer::checkpoint(&c, "at start", false);
                }
                if writer::disk_is_tight(&c) {
                    writer::keep_wal_small(&c);
                }
                migrate::migrate(&mut c)?;
                let replayed = journal::replay(&mut c, &dir)?;
                let unopened = orders::fail_unopened(&c)?;
                if unopened > 0 {
                    tracing::info!(
                        orders = unopened,
                        "orders stored before a stop but never opened at PayPal marked failed"
                    );
                }
                c.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
                let keys = keys::load_all(&mut c)?;
                Ok((c, (keys, replayed)))
            },
            sync == SyncMode::Full,
        )
        .await?;
        let writer = Arc::new(writer);
        if replayed.torn > 0 {
            // Each is a row (or part of one) that could not be read and is now gone with its
            // segment: a torn last write is expected after a crash, more is not.
            tracing::warn!(
                found = replayed.found,
                applied = replayed.applied,
                torn = replayed.torn,
                "ledger rows replayed from the journal; some records could not be read"
            );
        } else if replayed.found > 0 {
            tracing::info!(
                found = replayed.found,
                applied = replayed.applied,
                torn = replayed.torn,
                "ledger rows replayed from the journal"
            );
        }
        let staged = matches!(sync, SyncMode::Full);
        let journal = Arc::new(Journal::start(&journal_dir, staged).map_err(|e| {
            StoreError::Io(format!("ledger journal {}: {e}", journal_dir.display()))
        })?);
        let coming = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let syncer = match sync {
            SyncMode::Full => Some(Arc::new(
                fsync::Syncer::start(coming.clone())
                    .map_err(|e| StoreError::Io(format!("ledger journal's sync thread: {e}")))?,
            )),
            SyncMode::Normal => None,
        };
        let reader = read_only(path).await?;
        let probe = read_only(path).await?;
        let file_id = file_id(path);
        sync::start(
            path.to_path_buf(),
            interval,
            Arc::downgrade(&writer),
            journal.clone(),
        )
        .map_err(|e| StoreError::Io(format!("ledger sync thread: {e}")))?;
        Ok((
            Store {
                writer,
                reader,
                probe,
                path: path.to_path_buf(),
                file_id,
                journal,
                syncer,
                coming,
            },
            keys,
        ))
    }

    /// The count of requests in flight not streamed, each of which records a row when it
    /// settles, for the gateway to keep (`crate::state::InFlight`): with `full`, a sync waits a
    /// little for those that have not asked yet (see [`fsync`]).
    pub fn answers_in_flight(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.coming.clone()
    }

    /// Queue a write and wait until it is committed.
    pub async fn write(&self, w: Write) -> Result<(), StoreError> {
        self.submit(w).await
    }

    /// Queue a write now; the returned future resolves when it is committed. Queue order is
    /// commit order, so writes submitted after this one land after it.
    pub fn submit(&self, w: Write) -> impl Future<Output = Result<(), StoreError>> + use<> {
        let (tx, rx) = oneshot::channel();
        let queued = self.writer.send(Job::Write(w, Ack::Reply(tx)));
        self.hurry();
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Someone waits on what was just queued: the writer must not linger over journaled rows.
    fn hurry(&self) {
        self.writer.hurry();
    }

    /// Queue a write without waiting (it is still committed in order).
    pub fn write_later(&self, w: Write) {
        if !self.writer.send(Job::Write(w, Ack::None)) {
            tracing::error!("write after the store closed; it is lost");
        }
    }

    /// Commit everything queued so far, then stop the writer.
    ///
    /// Returns how many ledger rows were lost: neither committed nor in the journal (the
    /// database could not commit them, and the journal could not take them; each is logged).
    pub async fn close(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Job::Close(tx)) {
            self.hurry();
            let _ = rx.await;
        }
        self.writer
            .shared()
            .lost_at_close
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Run a read-only query on the reader connection. It first waits for everything queued
    /// before it to be committed: settled rows are committed a few milliseconds after their
    /// answers (see [`journal`]), and a customer who looks at their usage right after a
    /// request, or an operator at a key, expects to see it.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // A barrier that cannot commit (the database refuses writes) still lets the read go
        // on: what is committed is better than an error (`keys show` failed during a full
        // disk), and the kept rows come in once the database takes writes again. Nor is it
        // waited for long: a commit held up by another program's lock waits out its retries
        // (`/api/usage` and `keys show` took up to 22 s; found by an independent check).
        match tokio::time::timeout(BARRIER_WAIT, self.settle()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "read barrier not committed; reading what is")
            }
            Err(_) => tracing::debug!("read barrier not committed in time; reading what is"),
        }
        Ok(self.reader.call(move |c| f(c)).await?)
    }

    /// Run a read-only query on what is committed now, without waiting for what is queued, on
    /// a connection of its own (`/healthz`: it must answer at once, whatever the writer or
    /// the other readers are doing).
    pub async fn read_committed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Ok(self.probe.call(move |c| f(c)).await?)
    }

    /// Resolves once everything queued before it is committed (not necessarily synced: a
    /// reader sees it).
    pub async fn settle(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if !self
            .writer
            .send(Job::Write(Write::Barrier, Ack::Settled(tx)))
        {
            return Err(StoreError::Closed);
        }
        self.hurry();
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// A read connection to `path` (queries only, waiting up to 5 s for a lock).
async fn read_only(path: &Path) -> Result<tokio_rusqlite::Connection, StoreError> {
    let c = tokio_rusqlite::Connection::open(path).await?;
    c.call(|c| -> Result<(), StoreError> {
        c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")?;
        Ok(())
    })
    .await?;
    Ok(c)
}

/// A database file that is missing while the ledger's journal holds rows is a database lost
/// (removed while the daemon ran, or the data directory's file deleted or not restored), not
/// a new install: a start that made a new, empty one there refused every journaled row (their
/// keys unknown) and went on selling with every key, order and balance gone (found by an
/// independent check: `rm -rf` of the data directory under load, then a restart). Refused,
/// saying what to do, before anything is created.
fn refuse_a_lost_database(path: &Path, journal_dir: &Path) -> Result<(), StoreError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let rows = journal::rows_waiting(journal_dir)
        .map_err(|e| StoreError::Io(format!("ledger journal {}: {e}", journal_dir.display())))?;
    if rows == 0 {
        return Ok(());
    }
    Err(StoreError::Io(format!(
        "{} is missing, but the ledger journal {} holds {rows} rows of it: the database was \
         lost (removed, or not put back). Restore it (README, \"Backups and restore\"); to \
         start afresh on purpose, remove {} too",
        path.display(),
        journal_dir.display(),
        journal_dir.display(),
    )))
}

/// The device and inode of the file at `path`, if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The database holds customers' emails and every request: it, its WAL and its shared-memory
/// file are the owner's alone (0600), whatever the umask. The file is created 0600 before
/// SQLite opens it — SQLite gives the WAL and SHM files the database file's mode — and files
/// left looser by an older version are tightened.
fn private_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Io(format!("database file {}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// The database file this store writes is no longer at its path: removed (an `rm -rf` of
    /// the data directory) or replaced while the daemon ran. Commits go on succeeding, into a
    /// file no start will open: every key, order and bill from then on is lost at the next
    /// start, which makes a new, empty database (found by an independent check: `/healthz`
    /// said `ok` throughout, and a key sold meanwhile answered 401 after a restart).
    pub fn file_gone(&self) -> bool {
        self.file_id
            .is_some_and(|id| file_id(&self.path) != Some(id))
    }

    /// The last batch of writes could not be committed (retries included); false again once
    /// one is.
    pub fn commits_failing(&self) -> bool {
        self.writer
            .shared()
            .failing
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// No request's row can be recorded now: the last one could not be (neither the journal
    /// nor the database took it: a full disk) and commits still fail. The gateway then
    /// refuses requests before asking DeepSeek, whose answers it would have to withhold
    /// (found by an independent check: a full disk sent every request upstream and withheld
    /// every answer, which the SDKs' retries tripled). False again once a commit succeeds
    /// (the writer retries every second), the journal moves on to another segment (a spare
    /// may take rows where the last segment could not grow), or a row is recorded.
    pub fn cannot_record(&self) -> bool {
        self.journal.stuck() && self.commits_failing()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the database's WAL file now (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        writer::wal_bytes_of(&self.path)
    }

    /// A consistent copy of the live database at `dest`, taken with SQLite's online backup API
    /// from a separate connection while the daemon keeps serving; returns its size in bytes.
    ///
    /// The copy is one snapshot (the source connection holds a read transaction for the whole
    /// backup, so commits made meanwhile are neither half-copied nor restart it). It is written
    /// to `dest.tmp` (mode 0600), synced, and only then linked to `dest`, which is never
    /// overwritten.
    ///
    /// Rows answered before the backup was asked for are committed first, so they are in it;
    /// when the database cannot commit (a full disk), the copy holds what is committed and
    /// `behind` is true: an operator copying the database off a full disk still gets it
    /// (found by an independent check: the backup was refused).
    pub async fn backup(&self, dest: &Path) -> Result<Backup, BackupError> {
        let behind = match self.settle().await {
            Ok(()) => false,
            Err(e @ StoreError::Closed) => return Err(BackupError::Store(e)),
            Err(e) => {
                tracing::warn!(error = %e, "backup taken of what is committed: the rows waiting for a commit are not in it");
                true
            }
        };
        let src = self.path.clone();
        let dest = dest.to_path_buf();
        // The file removed from under the daemon: its path opens nothing (or another file), but
        // the reader's connection still reads it — the backup is the operator's way to save it.
        if self.file_gone() {
            tracing::warn!(
                "backup taken through the daemon's open connection: the database file was \
                 removed or replaced while it ran"
            );
            let bytes = self
                .reader
                .call(move |c| Ok(backup::backup_of_open(c, &dest)))
                .await
                .map_err(|_: tokio_rusqlite::Error<StoreError>| BackupError::Task)??;
            return Ok(Backup { bytes, behind });
        }
        let bytes = tokio::task::spawn_blocking(move || backup::backup_blocking(&src, &dest))
            .await
            .map_err(|_| BackupError::Task)??;
        Ok(Backup { bytes, behind })
    }
}

/// A backup made (see [`Store::backup`]).
#[derive(Debug, Clone, Copy)]
pub struct Backup {
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Rows the database could not commit yet are not in it (they wait in the ledger's
    /// journal and in memory, and go in once it commits again).
    pub behind: bool,
}

#[cfg(test)]
mod tests;
