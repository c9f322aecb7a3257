//! Why the store failed.

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
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
    /// The database file could not be created or its mode set.
    #[error("database file {0}")]
    Io(String),
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
