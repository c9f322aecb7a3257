//! The data directory at start: made owner-only, locked against a second daemon, marked as
//! the demo's or not, and the secret checked against the keys it must open; and
//! [`StartError`], every way a start can fail.

use crate::activity::tracker::TrackerError;
use crate::keys::seal::Sealer;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Files or sockets.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The database file could not be opened, migrated or brought up to date from the
    /// ledger's journal: which file, and why.
    #[error("{path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// Why.
        source: crate::store::StoreError,
    },
    /// The server secret.
    #[error("{0}")]
    Seal(#[from] crate::keys::seal::SealError),
    /// The upstream HTTP clients.
    #[error("HTTP client: {0}")]
    Http(#[from] crate::upstream::BuildError),
    /// The configuration.
    #[error("{0}")]
    Config(String),
    /// The data directory holds demo data and this is not a demo, or the other way round.
    #[error("{0}")]
    DemoMix(String),
    /// Another daemon holds the data directory.
    #[error(
        "another modelrelay daemon is using the data directory {0} (it holds {0}/modelrelay.lock); \
         stop it first: two daemons on one database would each keep their own balances"
    )]
    DataDirBusy(String),
    /// The disk holding the data directory has too little room for the daemon to start.
    #[error(
        "the disk holding {dir} has {free} bytes free; modelrelay needs {needed} to start (its \
         ledger journal's first file alone takes 512 KiB): free some space (`df -h {dir}`)"
    )]
    DiskFull {
        /// The data directory.
        dir: String,
        /// Bytes free for the daemon's user.
        free: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The activity tracker could not load today's state.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
}

/// Room a start needs on the data directory's disk: the journal's first segment (512 KiB),
/// the database's `-shm` and `-wal` as a start writes them, and some slack.
pub const START_ROOM: u64 = 2 * 1024 * 1024;

/// Refuse a start on a disk with less than [`START_ROOM`] free for this user. It would fail
/// anyway, as "disk I/O error" or "database or disk is full", or die of SIGBUS: SQLite maps
/// its `-shm` file, whose blocks it allocates only in part, and a page without a block on a
/// full file system faults (found by an independent check, after a `kill -9`, on ext4 with
/// 1 KiB blocks). A disk whose room cannot be read is not refused.
pub(super) fn room_to_start(dir: &std::path::Path) -> Result<(), StartError> {
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    if free < START_ROOM {
        return Err(StartError::DiskFull {
            dir: dir.display().to_string(),
            free,
            needed: START_ROOM,
        });
    }
    Ok(())
}

/// Wrap an I/O error with what was being done.
pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// Create the data directory owner-only (0700, whatever the umask). An existing one is left
/// as the operator made it (systemd's `StateDirectory` decides its mode), with a warning when
/// anyone may list it; the files inside are 0600 either way.
pub(super) fn private_dir(dir: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        // A file where the directory should be: said as such (it was warned about as a
        // directory open to everyone, then failed as "Not a directory").
        if !meta.is_dir() {
            return Err(StartError::Io {
                context: format!("data dir {}", dir.display()),
                source: std::io::Error::other("it is a file, not a directory"),
            });
        }
        if meta.permissions().mode() & 0o007 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the data directory is open to every local user; chmod 700 it (the database \
                 files inside are 0600 regardless)"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("cannot create data dir {}", dir.display())))?;
    // `mode` is filtered by the umask; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(format!(
        "cannot set the mode of data dir {}",
        dir.display()
    )))
}

/// Lock the data directory for this daemon (an exclusive `flock` on `modelrelay.lock`, which
/// the kernel drops with the process however it ends). Checked before the secret and the
/// database are touched: a second daemon on the same directory would load the same keys
/// into balances of its own, so a key revoked or spent on one would still pay on the other.
pub(super) fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("modelrelay.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::DataDirBusy(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

/// Whether another daemon holds the data directory's lock now (checked, then let go).
pub fn data_dir_in_use(dir: &std::path::Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("modelrelay.lock"))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The file that marks a data directory as the demo's.
pub(super) const DEMO_MARKER: &str = "DEMO";
/// What it says to whoever opens it.
pub(super) const DEMO_TEXT: &str = "This data directory was made by `modelrelay serve --demo` (a simulated \
DeepSeek and PayPal).\nA real `modelrelay serve` refuses it: delete the directory to start afresh.\n";

/// Keep demo data and real data apart. `serve --demo` marks the directory it creates (a
/// `DEMO` file), and a real `serve` refuses a marked one: its keys were sold through the
/// simulated PayPal, and would spend the operator's real DeepSeek balance. A demo refuses a
/// directory that already holds a real database, whose orders and keys it would add to.
/// Returns whether the directory is to be marked (once the database is open). Directories a
/// demo made before this check existed carry no mark, and a real `serve` takes them.
pub(super) fn demo_marker(dir: &std::path::Path, demo: bool) -> Result<bool, StartError> {
    let marker = dir.join(DEMO_MARKER);
    let marked = marker.exists();
    let has_db = dir.join("modelrelay.db").exists();
    match (demo, marked) {
        (true, true) | (false, false) => Ok(false),
        // The demo's own database whose `DEMO` file went (deleted, or the database copied
        // alone): the demo takes it again, and marks the directory (found by a re-check: a
        // real start said "made by the demo", the demo "a real database").
        (true, false) if has_db && marked_demo(&dir.join("modelrelay.db")) => Ok(true),
        (true, false) if has_db => Err(StartError::DemoMix(format!(
            "the data directory {} holds a real database; `serve --demo` would sell keys into \
             it through its simulated PayPal. Give the demo a data directory of its own \
             (server.data_dir, or MODELRELAY_SERVER__DATA_DIR)",
            dir.display()
        ))),
        (true, false) => Ok(true),
        (false, true) => Err(StartError::DemoMix(format!(
            "the data directory {} holds demo data (made by `serve --demo`: keys sold through \
             the simulated PayPal, which would spend your real DeepSeek balance). Point \
             server.data_dir elsewhere, or delete that directory to start afresh",
            dir.display()
        ))),
    }
}

/// The database header's `application_id` of a database a demo made ("MRDM"): the mark goes
/// wherever the database goes — a backup, a copy of the file alone, a directory whose `DEMO`
/// file was deleted — where the `DEMO` file alone stayed behind (found by an independent check:
/// a demo's backup restored for real served its keys with the operator's DeepSeek account).
pub(super) const DEMO_APPLICATION_ID: i32 = 0x4d52_444d;

/// Refuse a real start on a database a demo made ([`DEMO_APPLICATION_ID`]), read before the
/// store opens it (so nothing is written to it). A file that cannot be read here is left for the
/// store to report.
pub(super) fn demo_database(db: &std::path::Path, demo: bool) -> Result<(), StartError> {
    if demo {
        return Ok(());
    }
    if marked_demo(db) {
        return Err(StartError::DemoMix(format!(
            "the database {} was made by `serve --demo` (its keys were sold through the \
             simulated PayPal, and would spend your real DeepSeek balance): a demo's database, \
             or a backup of one, cannot be served for real. Restore a backup of the real \
             database, or start with an empty data directory",
            db.display()
        )));
    }
    Ok(())
}

/// Whether the database at `db` carries the demo's mark ([`DEMO_APPLICATION_ID`]); read only.
fn marked_demo(db: &std::path::Path) -> bool {
    use rusqlite::OpenFlags;
    if !db.exists() {
        return false;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let id = rusqlite::Connection::open_with_flags(db, flags).and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.query_row("PRAGMA application_id", [], |r| r.get::<_, i32>(0))
    });
    matches!(id, Ok(DEMO_APPLICATION_ID))
}

/// Mark the demo's database ([`DEMO_APPLICATION_ID`]), once the store has made or opened it.
pub(super) fn mark_demo_database(db: &std::path::Path) -> Result<(), StartError> {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.execute_batch(&format!("PRAGMA application_id = {DEMO_APPLICATION_ID}"))
        })
        .map_err(|e| StartError::Database {
            path: db.display().to_string(),
            source: crate::store::StoreError::Sqlite(e),
        })
}

/// How many keys `sealer` does not open (sealed with another secret), and the newest of them;
/// `None` when it opens every one. All are tried, not only the newest: a key sold under a wrong
/// secret became the newest, and the next start said nothing of the older keys it could not
/// open (found by an independent re-check). Opening one is a few microseconds.
pub(super) fn unopened(
    sealer: &Sealer,
    records: &[crate::keys::KeyRecord],
) -> Option<(usize, String)> {
    let mut count = 0;
    let mut newest: Option<&crate::keys::KeyRecord> = None;
    for r in records {
        if sealer.open(&r.id, &r.sealed).is_err() {
            count += 1;
            if newest.is_none_or(|n| r.created_at > n.created_at) {
                newest = Some(r);
            }
        }
    }
    newest.map(|r| (count, r.id.clone()))
}

/// Refuse a start where keys in service are on a plan the config no longer has: such a key
/// has no models and no rate limit of its own, so every request of it was a 403 on a model its
/// plan had while the dashboard said it was active, and no command moves a key to another plan
/// (found by an independent check). Revoked keys only read their history: they are logged.
pub(super) fn plans_in_use(
    catalog: &crate::catalog::Catalog,
    records: &[crate::keys::KeyRecord],
) -> Result<(), StartError> {
    use std::collections::BTreeMap;
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in records.iter().filter(|r| catalog.plan(&r.plan).is_none()) {
        if r.status == crate::keys::KeyStatus::Revoked {
            tracing::warn!(key_id = %r.id, plan = %r.plan, "revoked key's plan is no longer in the config");
        } else {
            missing.entry(&r.plan).or_default().push(&r.id);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = missing
        .iter()
        .map(|(plan, ids)| {
            let named = ids.iter().take(3).copied().collect::<Vec<_>>().join(", ");
            let more = if ids.len() > 3 { ", …" } else { "" };
            format!(
                "plan `{plan}`, used by {} key(s) ({named}{more})",
                ids.len()
            )
        })
        .collect();
    Err(StartError::Config(format!(
        "keys in service are on plans the config no longer has: {}. A key's plan gives its \
         models and rate limit: put each `[plans.<id>]` back, with `enabled = false` to stop \
         selling it (keys already sold keep working), or revoke those keys",
        each.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    /// The newest key opens with the secret it was sealed with, and only with it; an older
    /// key sealed with another secret (one replaced on purpose) is not what is checked.
    #[test]
    fn the_keys_a_secret_does_not_open_are_counted_with_the_newest_named() {
        use crate::keys::KeyRecord;
        use crate::keys::seal::Sealer;
        let (old, new) = (Sealer::from_secret(&[1; 32]), Sealer::from_secret(&[2; 32]));
        let key = |id: &str, by: &Sealer, at: i64| KeyRecord {
            sealed: by.seal(id, "sk-gateway-x").unwrap(),
            created_at: chrono::DateTime::from_timestamp(at, 0).unwrap(),
            ..KeyRecord::for_tests(id, crate::money::Usd::ZERO)
        };
        let records = vec![
            key("key_a", &old, 1),
            key("key_b", &new, 2),
            key("key_c", &old, 3),
            key("key_d", &new, 4),
            key("key_e", &old, 5),
        ];
        // Each secret misses the other's keys, whichever sealed the newest.
        assert_eq!(super::unopened(&new, &records), Some((3, "key_e".into())));
        assert_eq!(super::unopened(&old, &records), Some((2, "key_d".into())));
        assert_eq!(super::unopened(&old, &records[..1]), None);
        assert_eq!(super::unopened(&old, &[]), None);
    }
}
