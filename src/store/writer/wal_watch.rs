//! A WAL that grows past its usual size is said in the log. SQLite's checkpoints cannot move
//! frames a reader still needs, so while another program keeps a read transaction open on the
//! database (a `sqlite3` shell left in `BEGIN`, a dashboard's long query) the WAL grows with
//! every commit — 1.6 MB/s under load, 560 MB in six minutes, with nothing said anywhere
//! (found by an independent check). Once the reader ends, a checkpoint folds it, and the next
//! commit cuts the file back to `journal_size_limit` (40 MiB, set when the store opens).

use std::time::{Duration, Instant};

/// Above this the WAL is not its usual self (it is checkpointed every ~40 MiB).
pub(super) const WAL_WARN_ABOVE: u64 = 256 << 20;
/// How often the writer looks at the WAL's size (a `stat`): never per batch.
const LOOK_EVERY: Duration = Duration::from_secs(30);

/// What the writer last saw of the WAL's size.
#[derive(Default)]
pub(super) struct WalWatch {
    looked: Option<Instant>,
    /// The size last warned about, while it stays large.
    warned: Option<u64>,
}

impl WalWatch {
    /// After a commit: at most every [`LOOK_EVERY`], read the WAL's size and say when it is
    /// large, again each time it has grown by half since, and once when it is back.
    pub(super) fn after_commit(&mut self, conn: &rusqlite::Connection) {
        if self.looked.is_some_and(|at| at.elapsed() < LOOK_EVERY) {
            return;
        }
        self.looked = Some(Instant::now());
        self.saw(super::wal_bytes(conn));
    }

    /// The WAL is `bytes` long now.
    fn saw(&mut self, bytes: u64) {
        match self.warned {
            _ if bytes < WAL_WARN_ABOVE => {
                if self.warned.take().is_some() {
                    tracing::info!(
                        wal_mib = bytes >> 20,
                        "the database's WAL is back to its usual size"
                    );
                }
            }
            Some(before) if bytes < before.saturating_add(before / 2) => {}
            _ => {
                self.warned = Some(bytes);
                tracing::warn!(
                    wal_mib = bytes >> 20,
                    "the database's WAL keeps growing (usually ~40 MiB): another program holds \
                     a read transaction open on modelrelay.db (a sqlite3 shell, a dashboard, a \
                     copy), so checkpoints cannot fold it; end that program's transaction and \
                     the WAL is folded and cut back"
                );
            }
        }
    }

    #[cfg(test)]
    fn warned(&self) -> Option<u64> {
        self.warned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Said when large, again at each growth by half, not in between; and once back.
    #[test]
    fn a_large_wal_is_said_as_it_grows_and_once_back() {
        let mut w = WalWatch::default();
        w.saw(40 << 20);
        assert_eq!(w.warned(), None);
        w.saw(300 << 20);
        assert_eq!(w.warned(), Some(300 << 20));
        w.saw(400 << 20);
        assert_eq!(w.warned(), Some(300 << 20), "not yet half again");
        w.saw(450 << 20);
        assert_eq!(w.warned(), Some(450 << 20));
        w.saw(1 << 20);
        assert_eq!(w.warned(), None);
    }
}
