//! Online backups with SQLite's backup API.

use std::path::{Path, PathBuf};

/// Pages copied per backup step; between steps the writer carries on (WAL: a reader never
/// blocks it).
const BACKUP_PAGES_PER_STEP: std::ffi::c_int = 256;

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists; a backup never overwrites.
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(PathBuf),
    /// The temporary file a backup writes first exists: another backup to the same file is
    /// running, or one was cut off (then the file can go).
    #[error(
        "{0} already exists: another backup to this file is under way, or one was cut off \
         (then delete it and try again)"
    )]
    TempExists(PathBuf),
    /// Creating, syncing or renaming the file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite's backup failed; a damaged database says what to do, as the daemon's own errors
    /// do (it was "backup: database disk image is malformed" alone, to the operator about to
    /// need the advice most; found by an independent check).
    #[error("backup: {}{}", .0, damaged(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task died.
    #[error("backup task failed")]
    Task,
    /// The rows queued before the backup could not be committed first.
    #[error("backup: {0}")]
    Store(super::StoreError),
}

/// Copy the database at `src` to `dest` (blocking; see [`super::Store::backup`]).
pub(super) fn backup_blocking(src: &Path, dest: &Path) -> Result<u64, BackupError> {
    backup_with(dest, |tmp| copy_database(src, tmp))
}

/// The same from a connection the store holds open: the database file removed from under the
/// daemon can no longer be opened by its path, but the open connection still reads it (see
/// `Store::file_gone`), so its rows can be saved.
pub(super) fn backup_of_open(
    source: &rusqlite::Connection,
    dest: &Path,
) -> Result<u64, BackupError> {
    backup_with(dest, |tmp| {
        source.execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")?;
        let copied = copy_from(source, tmp);
        let _ = source.execute_batch("COMMIT;");
        copied
    })
}

/// Write `dest` through `dest.tmp` with `copy` (see [`backup_blocking`]).
fn backup_with(
    dest: &Path,
    copy: impl FnOnce(&Path) -> Result<(), BackupError>,
) -> Result<u64, BackupError> {
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
                BackupError::TempExists(tmp.clone())
            } else {
                BackupError::Io {
                    context: format!("cannot create {}", tmp.display()),
                    source: e,
                }
            }
        })?;
    let copied = copy(&tmp).and_then(|()| {
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
    let source = rusqlite::Connection::open_with_flags(
        src,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    // One read transaction for the whole copy: every step reads the same snapshot.
    source.execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")?;
    copy_from(&source, dest)?;
    source.execute_batch("COMMIT;")?;
    Ok(())
}

/// Copy what `source` reads (in its open transaction) into the empty database file `dest`.
fn copy_from(source: &rusqlite::Connection, dest: &Path) -> Result<(), BackupError> {
    use rusqlite::backup::{Backup, StepResult};
    let mut target = rusqlite::Connection::open(dest)?;
    {
        let backup = Backup::new(source, &mut target)?;
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
    // The copy is a standalone file: no WAL beside it.
    target.execute_batch("PRAGMA journal_mode = DELETE;")?;
    target.close().map_err(|(_, e)| BackupError::Sqlite(e))?;
    Ok(())
}

/// [`super::error::damaged_hint`] for a database SQLite finds damaged; nothing for the rest (a
/// full or read-only disk may be the destination's, which that hint would call the data
/// directory's).
fn damaged(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            super::error::damaged_hint(e)
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    /// A backup of a damaged database says what to do about it, not SQLite's words alone.
    #[test]
    fn a_damaged_database_s_backup_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("modelrelay.db");
        std::fs::write(&src, vec![0x5a_u8; 8192]).unwrap();
        let e = super::backup_blocking(&src, &dir.path().join("copy.db")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("is damaged"), "{text}");
        assert!(
            text.contains("copy the whole data directory aside"),
            "{text}"
        );
        assert!(!dir.path().join("copy.db").exists());
    }
}
