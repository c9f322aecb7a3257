//! Persistence: SQLite in WAL mode through tokio-rusqlite, embedded migrations, and one writer
//! task that commits in batches (group commit).
//!
//! Nothing on the request path reads SQLite. Requests hand their ledger rows to the writer and,
//! where a response must not leave before its bill is durable, await the commit acknowledgement;
//! one commit serves every row that arrived while the previous one was being written.

pub mod keys;
pub mod orders;
pub mod usage;

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use crate::keys::{KeyRecord, KeyStatus};
use crate::money::Usd;
pub use usage::{Finish, Measured, UsageRow};

/// Migrations, in order; an applied migration is never edited, a change is a new file.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_orders.sql")),
    (3, include_str!("migrations/0003_usage_by_time.sql")),
];

/// Most writes one transaction takes before committing.
const MAX_BATCH: usize = 4096;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database thread or the writer task is gone (shutting down).
    #[error("database is closed")]
    Closed,
    /// The row to change does not exist.
    #[error("no such key: {0}")]
    NoSuchKey(String),
    /// The change does not apply to the row's current state (e.g. paying a paid order).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value is not one this version understands.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<tokio_rusqlite::Error<StoreError>> for StoreError {
    fn from(e: tokio_rusqlite::Error<StoreError>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e,
            _ => StoreError::Closed,
        }
    }
}

/// One change for the writer.
#[derive(Debug, Clone)]
pub enum Write {
    /// A newly minted key.
    InsertKey(Box<KeyRecord>),
    /// A settled request: its ledger row, and the key's spent/requests counters.
    Usage(Box<UsageRow>),
    /// A status change (exhausted, revoked, re-activated).
    KeyStatus {
        /// Which key.
        key_id: String,
        /// Its new status.
        status: KeyStatus,
        /// When.
        at_ms: i64,
    },
    /// Mark a key exhausted, if the database agrees: still active and its remaining balance
    /// (budget − spent, as committed so far) below `below`. Deciding at apply time keeps a
    /// top-up committed just before from being overwritten.
    MarkExhausted {
        /// Which key.
        key_id: String,
        /// The plan's exhaustion threshold.
        below: Usd,
    },
    /// A new order.
    InsertOrder(Box<orders::OrderRecord>),
    /// PayPal's order id for an order.
    SetPaypalOrder {
        /// Ours.
        order_id: String,
        /// PayPal's.
        paypal_order_id: String,
    },
    /// Pay an order and mint its key, atomically (see [`orders::pay`]).
    PayOrder {
        /// Ours.
        order_id: String,
        /// PayPal's capture id.
        capture_id: String,
        /// The key it buys.
        key: Box<KeyRecord>,
        /// When.
        at_ms: i64,
    },
    /// An order's status (pending, failed, refunded).
    OrderStatus {
        /// Ours.
        order_id: String,
        /// New status.
        status: orders::OrderStatus,
        /// When.
        at_ms: i64,
    },
    /// A processed webhook event.
    WebhookSeen {
        /// PayPal's event id.
        event_id: String,
        /// Its type.
        event_type: String,
        /// When.
        at_ms: i64,
    },
    /// Budget added to a key.
    TopUp {
        /// Which key.
        key_id: String,
        /// How much.
        amount: Usd,
        /// When.
        at_ms: i64,
    },
    /// Changes nothing: its acknowledgement says that every write queued before it is
    /// committed (the activity tracker waits on one before reading the ledger).
    Barrier,
}

enum Job {
    Write(Write, Option<oneshot::Sender<Result<(), StoreError>>>),
    Close(oneshot::Sender<()>),
}

/// The database: a writer queue and a read connection. Clones share both.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::UnboundedSender<Job>,
    reader: tokio_rusqlite::Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating) `<data_dir>/modelrelay.db`, migrate, start the writer; returns the keys.
    pub async fn open(path: &Path) -> Result<(Store, Vec<KeyRecord>), StoreError> {
        let writer = tokio_rusqlite::Connection::open(path).await?;
        writer
            .call(|c| -> Result<(), StoreError> {
                c.execute_batch(
                    "PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA foreign_keys = ON;
                     PRAGMA busy_timeout = 5000;",
                )?;
                // Throughput of the writer (see benches/ledger.rs), neither changes durability:
                // the random `request_id` index is written all over, so a cache that holds its
                // hot pages saves re-reading them, and checkpointing every ~40 MiB of WAL rather
                // than every ~4 MiB copies a page rewritten by many commits once, not each time.
                c.execute_batch(
                    "PRAGMA cache_size = -32768;
                     PRAGMA wal_autocheckpoint = 10000;",
                )?;
                migrate(c)
            })
            .await?;
        let keys = writer.call(keys::load_all).await?;
        let reader = tokio_rusqlite::Connection::open(path).await?;
        reader
            .call(|c| -> Result<(), StoreError> {
                c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")?;
                Ok(())
            })
            .await?;
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(writer, rx));
        Ok((
            Store {
                jobs,
                reader,
                path: path.to_path_buf(),
            },
            keys,
        ))
    }

    /// Queue a write and wait until it is committed.
    pub async fn write(&self, w: Write) -> Result<(), StoreError> {
        self.submit(w).await
    }

    /// Queue a write now; the returned future resolves when it is committed. Queue order is
    /// commit order, so writes submitted after this one land after it.
    pub fn submit(&self, w: Write) -> impl Future<Output = Result<(), StoreError>> + use<> {
        let (tx, rx) = oneshot::channel();
        let queued = self.jobs.send(Job::Write(w, Some(tx))).is_ok();
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Queue a write without waiting (it is still committed in order).
    pub fn write_later(&self, w: Write) {
        if self.jobs.send(Job::Write(w, None)).is_err() {
            tracing::error!("write after the store closed; it is lost");
        }
    }

    /// Commit everything queued so far, then stop the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Run a read-only query on the reader connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Ok(self.reader.call(move |c| f(c)).await?)
    }
}

/// Pages copied per backup step; between steps the writer carries on (WAL: a reader never
/// blocks it).
const BACKUP_PAGES_PER_STEP: std::ffi::c_int = 256;

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists; a backup never overwrites.
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(PathBuf),
    /// Creating, syncing or renaming the file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite's backup failed.
    #[error("backup: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task died.
    #[error("backup task failed")]
    Task,
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent copy of the live database at `dest`, taken with SQLite's online backup API
    /// from a separate connection while the daemon keeps serving; returns its size in bytes.
    ///
    /// The copy is one snapshot (the source connection holds a read transaction for the whole
    /// backup, so commits made meanwhile are neither half-copied nor restart it). It is written
    /// to `dest.tmp` (mode 0600), synced, and only then linked to `dest`, which is never
    /// overwritten.
    pub async fn backup(&self, dest: &Path) -> Result<u64, BackupError> {
        let src = self.path.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || backup_blocking(&src, &dest))
            .await
            .map_err(|_| BackupError::Task)?
    }
}

fn backup_blocking(src: &Path, dest: &Path) -> Result<u64, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |context: String| move |source| BackupError::Io { context, source };
    if dest.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // create_new: a leftover or concurrent `.tmp` is never clobbered either.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(tmp.clone())
            } else {
                BackupError::Io {
                    context: format!("cannot create {}", tmp.display()),
                    source: e,
                }
            }
        })?;
    let copied = copy_database(src, &tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot sync {}", tmp.display())))
    });
    let linked = copied.and_then(|()| {
        // A hard link fails if `dest` appeared meanwhile: no overwrite, even in a race.
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(BackupError::Exists(dest.to_path_buf()))
            }
            // A filesystem without hard links: check, then rename.
            Err(_) if dest.symlink_metadata().is_ok() => {
                Err(BackupError::Exists(dest.to_path_buf()))
            }
            Err(_) => std::fs::rename(&tmp, dest)
                .map_err(io(format!("cannot rename to {}", dest.display()))),
        }
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    let size = std::fs::metadata(dest)
        .map_err(io(format!("cannot stat {}", dest.display())))?
        .len();
    Ok(size)
}

/// Copy `src` into the (empty) database file `dest` page by page.
fn copy_database(src: &Path, dest: &Path) -> Result<(), BackupError> {
    use rusqlite::backup::{Backup, StepResult};
    let source = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    // One read transaction for the whole copy: every step reads the same snapshot.
    source.execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")?;
    let mut target = rusqlite::Connection::open(dest)?;
    {
        let backup = Backup::new(&source, &mut target)?;
        loop {
            match backup.step(BACKUP_PAGES_PER_STEP)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    source.execute_batch("COMMIT;")?;
    // The copy is a standalone file: no WAL beside it.
    target.execute_batch("PRAGMA journal_mode = DELETE;")?;
    target.close().map_err(|(_, e)| BackupError::Sqlite(e))?;
    Ok(())
}

fn migrate(c: &mut rusqlite::Connection) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for &(version, sql) in MIGRATIONS {
        let tx = c.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, chrono::Utc::now().timestamp_millis()],
            )?;
            tracing::info!(version, "applied database migration");
        }
        tx.commit()?;
    }
    Ok(())
}

/// The writer: take what is queued (up to `MAX_BATCH`), apply it in one transaction (one bad
/// write cannot sink the others; see [`try_commit`]), commit, acknowledge.
async fn run_writer(conn: tokio_rusqlite::Connection, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Vec::new();
        let mut push = |job: Job, batch: &mut Vec<_>| match job {
            Job::Write(w, ack) => batch.push((w, ack)),
            Job::Close(done) => closing = Some(done),
        };
        push(first, &mut batch);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => push(job, &mut batch),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        commit_batch(&conn, batch).await;
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
        commit_batch(&conn, rest).await;
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

type Ack = Option<oneshot::Sender<Result<(), StoreError>>>;

/// Apply writes in one transaction, each as if in a savepoint of its own (one bad write cannot
/// sink the others; see [`try_commit`]), commit, and acknowledge each with its own result.
async fn commit_batch(conn: &tokio_rusqlite::Connection, batch: Vec<(Write, Ack)>) {
    let (writes, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
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
                if let Some(ack) = ack {
                    let _ = ack.send(r);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = writes.len(), "DATABASE COMMIT FAILED: writes in this batch are lost");
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(Err(StoreError::Corrupt(format!("commit failed: {e}"))));
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
    c: &mut rusqlite::Connection,
    writes: &[Write],
) -> Result<Option<Vec<Result<(), StoreError>>>, StoreError> {
    let tx = c.transaction()?;
    for w in writes {
        if apply(&tx, w).is_err() {
            tx.rollback()?;
            return Ok(None);
        }
    }
    tx.commit()?;
    Ok(Some(writes.iter().map(|_| Ok(())).collect()))
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

fn apply(tx: &rusqlite::Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::InsertKey(k) => keys::insert(tx, k),
        Write::Usage(u) => usage::insert(tx, u),
        Write::KeyStatus {
            key_id,
            status,
            at_ms,
        } => keys::set_status(tx, key_id, *status, *at_ms),
        Write::MarkExhausted { key_id, below } => keys::mark_exhausted(tx, key_id, *below),
        Write::InsertOrder(o) => orders::insert(tx, o),
        Write::SetPaypalOrder {
            order_id,
            paypal_order_id,
        } => orders::set_paypal_order(tx, order_id, paypal_order_id),
        Write::PayOrder {
            order_id,
            capture_id,
            key,
            at_ms,
        } => orders::pay(tx, order_id, capture_id, key, *at_ms),
        Write::OrderStatus {
            order_id,
            status,
            at_ms,
        } => orders::set_status(tx, order_id, *status, *at_ms),
        Write::WebhookSeen {
            event_id,
            event_type,
            at_ms,
        } => orders::record_webhook(tx, event_id, event_type, *at_ms),
        Write::TopUp {
            key_id,
            amount,
            at_ms,
        } => keys::top_up(tx, key_id, *amount, *at_ms),
        Write::Barrier => Ok(()),
    }
}

#[cfg(test)]
mod tests;
