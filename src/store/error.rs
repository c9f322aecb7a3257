//! Why the store failed.

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {}{}", .0, damaged_hint(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// The writer's thread or the reader's is gone (shutting down).
    #[error("database is closed")]
    Closed,
    /// The row to change does not exist.
    #[error("no such key: {0}")]
    NoSuchKey(String),
    /// The change does not apply to the row's current state (e.g. paying a paid order).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A file the store needs could not be made or used (the database file, the ledger's
    /// journal), or a thread of its own could not start; the text says which.
    #[error("{0}")]
    Io(String),
    /// A stored value is not one this version understands.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database has migrations this version does not know: a newer modelrelay wrote it.
    #[error(
        "the database was written by a newer modelrelay (migration {found}; this version knows \
         up to {known}): run the newer binary, or restore a backup taken before the upgrade"
    )]
    NewerDatabase {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest this version has.
        known: i64,
    },
    /// The batch holding the write could not be committed, retries included (a full disk, a
    /// lock another program holds): nothing of it is in the database.
    #[error("commit failed: {0}")]
    CommitFailed(String),
}

/// What to look at when SQLite finds the file damaged: on an appliance, a restore that left
/// the old database's `-wal` beside the backup (it failed as "database disk image is
/// malformed" alone; found by an independent check) — but a failing disk's read errors say
/// the same, and there the `-wal` holds committed rows the file does not: removing it is
/// advised only after a restore, never as the general cure (found by an independent check).
pub(super) fn damaged_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            " (the database file is damaged or could not be read back — a failing disk does this \
             too: see `dmesg`. If this follows a restore, remove the old modelrelay.db-wal and \
             modelrelay.db-shm left beside it — README, \"Restore\"; otherwise keep them, \
             copy the whole data directory aside first, and restore a backup)"
        }
        // A start on a full disk with no WAL to read said only "disk I/O error", which reads
        // as a failing disk (found by an independent check).
        Some(rusqlite::ErrorCode::SystemIoFailure) => {
            " (SQLite could not read or write the file: a full disk does this too — see `df -h` \
             for the data directory — as does a failing one)"
        }
        // SQLite names neither the directory nor the user (found by an independent check: an
        // existing database in a directory the daemon's user could not write).
        Some(rusqlite::ErrorCode::ReadOnly) => {
            " (the daemon's user must be able to write the database file and its directory, \
             where SQLite keeps the -wal and -shm files beside it)"
        }
        _ => "",
    }
}

impl StoreError {
    /// The database could not do it *now* (disk full, an I/O error, out of memory, the file
    /// locked or made read-only), or is itself damaged: the same write may well succeed once
    /// that is fixed, so this is no verdict on the write itself. A ledger row that meets one
    /// must not be counted as refused (and its journal record dropped): it is a bill, and
    /// memory has already charged it. What is left (a constraint, an unknown key, a value too
    /// big or of the wrong type) is the write's own fault and would fail again, so it is
    /// refused alone rather than retried, and cannot keep the daemon from starting.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                DiskFull
                    | SystemIoFailure
                    | OutOfMemory
                    | DatabaseBusy
                    | DatabaseLocked
                    | ReadOnly
                    | CannotOpen
                    | FileLockingProtocolFailed
                    | PermissionDenied
                    | OperationInterrupted
                    | SchemaChanged
                    | DatabaseCorrupt
                    | NotADatabase
                    | NoLargeFileSupport
                    | InternalMalfunction
            ),
            StoreError::Closed | StoreError::Io(_) | StoreError::CommitFailed(_) => true,
            _ => false,
        }
    }
}

impl From<tokio_rusqlite::Error<StoreError>> for StoreError {
    fn from(e: tokio_rusqlite::Error<StoreError>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => e,
            _ => StoreError::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged database says where to look; other SQLite errors say only what they are.
    #[test]
    fn a_damaged_database_points_at_the_restore_steps() {
        let sqlite = |code| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        for code in [rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_NOTADB] {
            let text = sqlite(code).to_string();
            assert!(text.contains("README, \"Restore\""), "{text}");
            // Removing the -wal is advised only after a restore: on a failing disk it holds
            // committed rows the file lacks.
            assert!(text.contains("If this follows a restore, remove"), "{text}");
            assert!(text.contains("otherwise keep them"), "{text}");
        }
        let busy = sqlite(rusqlite::ffi::SQLITE_BUSY).to_string();
        assert!(!busy.contains("Restore"), "{busy}");
        assert!(!busy.contains("directory"), "{busy}");
        let readonly = sqlite(rusqlite::ffi::SQLITE_READONLY).to_string();
        assert!(
            readonly.contains("write the database file and its directory"),
            "{readonly}"
        );
        let io = sqlite(rusqlite::ffi::SQLITE_IOERR).to_string();
        assert!(io.contains("a full disk does this too"), "{io}");
        assert!(!busy.contains("full disk"), "{busy}");
    }
}
