//! The ledger's journal, so an answer waits for neither the writer thread nor SQLite's commit.
//!
//! With `store.sync = "normal"` a settled request's row is written, in the request's own task,
//! to a segment file under `<data dir>/journal/` with one `pwrite(2)`: once that returns the
//! row is in the OS, which is all `normal` promises before the last byte (a killed process
//! loses nothing). With `full` the record is handed to the sync thread (see [`super::fsync`]),
//! which writes it with the others that came meanwhile and syncs them in one call (see
//! [`staged`]). The row then goes to the writer like any other write, without anyone waiting,
//! and is committed in batches behind.
//! Start-up replays every segment into SQLite before keys are loaded (rows whose `request_id`
//! is already in the ledger are skipped, so a row is never applied twice), then deletes the
//! segments.
//!
//! Segments are written over, not appended to: a new one is a file of zeros written and synced
//! before use, and one whose rows are all committed is kept as a spare and reused. Syncing a
//! write into blocks the file already has is a data flush; syncing an append also commits the
//! file's new size to the filesystem's own journal, which cost `full` ~100 µs more per answer
//! here (bench/PROFILE.md). PostgreSQL recycles its WAL segments for the same reason.
//!
//! Hand-written because it is small and tied to our rows (see [`record`] for the format). A
//! segment is deleted (or kept as a spare) only when it can no longer hold the only copy of a
//! row: every row written to it carries the segment (an `Arc`) to the writer, which counts it
//! settled once committed; a segment nobody else holds whose rows are all settled is
//! [`Segment::drained`], and the sync task then syncs the WAL and retires it (see
//! [`super::sync`]). A row whose commit failed, or that was dropped unprocessed when the
//! process stopped, is never counted, so its segment stays for the next start. The sync task
//! also starts a new segment every interval, so the journal holds about one interval of rows.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::usage::UsageRow;

mod record;
mod staged;

#[cfg(test)]
pub(super) use record::{encode, frame, parse};
pub(super) use record::{replay, rows_waiting};
#[cfg(test)]
pub(super) use staged::takes_direct;

/// A segment file's extension.
const EXT: &str = "rows";
/// A spare's: a retired segment whose rows are all committed, to be reused.
const SPARE: &str = "spare";
/// A new segment's size, written with zeros before use. One interval of rows at a few thousand
/// answers a second; a busier segment grows past it (then its syncs cost what appends do) and
/// is reused at its grown size.
const NEW_SIZE: usize = 512 * 1024;
/// Spares kept: a segment retires every interval and drains by the next, so two or three are
/// in use at a time.
const MAX_SPARES: usize = 4;

/// The ledger's journal: the segment rows are written to, where new ones go, and spares.
pub(super) struct Journal {
    dir: PathBuf,
    current: ArcSwap<Segment>,
    next_seq: AtomicU64,
    /// Retired segments to reuse, by path (only the sync task's thread and start-up use it).
    spares: Mutex<Vec<PathBuf>>,
    /// `full`: records are written by the sync thread, not the request's task.
    staged: bool,
    /// When [`Journal::dir_gone`] last looked (unix ms).
    dir_looked_ms: AtomicI64,
    /// The segment the last row recorded went to when it could be neither journaled nor
    /// committed (see `Store::cannot_record`), `u64::MAX` when it could; the journal is stuck
    /// while that segment is the current one.
    stuck_on: AtomicU64,
    /// Tests: writes of staged records fail, in every segment.
    #[cfg(test)]
    fail_writes: Arc<AtomicBool>,
}

/// Whether a `full` row's record reached the journal, as the sync thread tells it: a row whose
/// record did not is not in the journal (its segment does not hold it), and its answer may
/// have been withheld for it.
#[derive(Debug, Default)]
pub(super) struct Fate(AtomicU8);

impl Fate {
    const WRITTEN: u8 = 1;
    const FAILED: u8 = 2;
    /// Failed, and the answer went out all the same (the database took the row's batch and a
    /// durable write after it): the row is owed.
    const DELIVERED: u8 = 3;
    /// Failed, and the answer was withheld for it, its charge given back: the row is not owed.
    const WITHHELD: u8 = 4;

    /// The record is on disk in its segment.
    pub(super) fn written(&self) {
        self.0.store(Self::WRITTEN, Ordering::Release);
    }

    /// The record could not be written.
    pub(super) fn failed(&self) {
        self.0.store(Self::FAILED, Ordering::Release);
    }

    /// The record failed, and the answer went out all the same.
    pub(super) fn delivered(&self) {
        self.0.store(Self::DELIVERED, Ordering::Release);
    }

    /// The record failed, and the answer was withheld for it.
    pub(super) fn withheld(&self) {
        self.0.store(Self::WITHHELD, Ordering::Release);
    }

    /// Whether the record could not be written (`false` while not known yet).
    pub(super) fn has_failed(&self) -> bool {
        self.0.load(Ordering::Acquire) >= Self::FAILED
    }

    /// Whether the record failed and its answer was withheld: the only rows let go.
    pub(super) fn was_withheld(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::WITHHELD
    }

    /// Whether the record failed and its answer is not decided yet (its recording still
    /// waits for a durable write behind it).
    pub(super) fn undecided(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::FAILED
    }
}

/// A row appended to the journal.
pub(super) struct Appended {
    /// The segment it went to, to be held until the row is committed.
    pub segment: Arc<Segment>,
    /// `full`: its record, not written yet — the sync thread writes it ([`Segment::put`]),
    /// and says in its fate whether it did.
    pub record: Option<(Vec<u8>, Arc<Fate>)>,
}

/// One segment file. Rows written to it hold it until they are committed.
pub(super) struct Segment {
    file: File,
    path: PathBuf,
    /// Its number: the file's name, and the mark of every record written to it (a reused
    /// file's older records carry another).
    seq: u64,
    /// Where the next record goes.
    end: AtomicU64,
    /// Its size when it began: the room written ahead (a record past it grows the file).
    room: u64,
    /// Something was written.
    written: AtomicBool,
    /// Rows written whole.
    appended: AtomicU64,
    /// Of which the writer has committed (or refused for good). A row whose commit failed, or
    /// that was dropped unprocessed when the process stopped, is never counted: its segment
    /// stays for the next start's replay.
    settled: AtomicU64,
    /// Rows written whole before the last sync that succeeded began: on disk.
    synced: AtomicU64,
    /// `full`: the records the sync thread has not written whole blocks of yet.
    stage: Option<Mutex<staged::Stage>>,
    /// Tests: writes of staged records fail, as on a full disk (the journal's flag, shared).
    #[cfg(test)]
    fail_writes: Arc<AtomicBool>,
}

impl Segment {
    /// A new segment numbered `seq`: a spare renamed, else a file of zeros. Either way its
    /// blocks are written and synced, and its name is on disk, before a row goes in.
    /// `staged`: its records are written by the sync thread (see [`staged`]).
    fn create(
        dir: &Path,
        seq: u64,
        spare: Option<PathBuf>,
        staged: bool,
    ) -> std::io::Result<Segment> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("{seq:020}.{EXT}"));
        let reused = match spare {
            Some(spare) => match std::fs::rename(&spare, &path) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, spare = %spare.display(), "journal spare not reused");
                    let _ = std::fs::remove_file(&spare);
                    false
                }
            },
            None => false,
        };
        // A reused file keeps its blocks (and older records, told apart by their number).
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(!reused)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        let fill = (!reused).then_some(NEW_SIZE);
        let ready = || -> std::io::Result<(Option<Mutex<staged::Stage>>, u64)> {
            let stage = if staged {
                Some(Mutex::new(staged::Stage::open(&path, &file, true, fill)?))
            } else {
                if let Some(size) = fill {
                    file.write_all_at(&vec![0u8; size], 0)?;
                    file.sync_data()?;
                }
                None
            };
            // The file's name must survive a power loss as well as what is synced into it.
            File::open(dir)?.sync_all()?;
            Ok((stage, file.metadata()?.len()))
        };
        // A segment that could not be made ready (a full disk) holds nothing: it goes, or one
        // empty file was left for every interval the disk stayed full (found by an
        // independent check).
        let (stage, room) = ready().inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        Ok(Segment {
            file,
            path,
            seq,
            end: AtomicU64::new(0),
            room,
            written: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            stage,
            #[cfg(test)]
            fail_writes: Arc::default(),
        })
    }

    /// The writer committed (or refused for good) one of this segment's rows.
    pub(super) fn settle_one(&self) {
        self.settled.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `segment` holds nothing the database lacks, once the database's commits are on
    /// disk: every row appended to it is settled, and nobody else holds it (no row is being
    /// appended or still queued). The caller holds the one reference left.
    pub(super) fn drained(segment: &Arc<Segment>) -> bool {
        Arc::strong_count(segment) == 1
            && segment.settled.load(Ordering::Acquire) == segment.appended.load(Ordering::Acquire)
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Flush the segment to disk: every row appended so far is then on disk (see
    /// [`Segment::synced`]). With `full` there is nothing to flush: the sync thread writes
    /// each record synced, and the row's answer waits for it.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        if self.stage.is_some() {
            return Ok(());
        }
        let appended = self.appended.load(Ordering::Acquire);
        self.file.sync_data()?;
        self.synced.fetch_max(appended, Ordering::AcqRel);
        Ok(())
    }

    /// The sync thread's part: put on disk the `records` handed with rows appended to this
    /// segment (with `full`; see [`staged`]), or else everything written to it so far.
    pub(super) fn put(&self, records: &[&[u8]]) -> std::io::Result<()> {
        let Some(stage) = &self.stage else {
            return self.sync();
        };
        let mut stage = stage
            .lock()
            .map_err(|_| std::io::Error::other("the journal's stage was poisoned"))?;
        #[cfg(test)]
        let written = if self.fail_writes.load(Ordering::Acquire) {
            Err(std::io::Error::other("test: no space left on the device"))
        } else {
            stage.write(&self.file, records.iter().copied())
        };
        #[cfg(not(test))]
        let written = stage.write(&self.file, records.iter().copied());
        let end = written.inspect_err(|_| {
            // Counted as full, so the next tick moves on to a spare, whose blocks are
            // already the file's: a write past the room written ahead needs new blocks,
            // and on a full disk this segment took no more rows while a spare sat unused
            // (found by an independent check).
            self.end.fetch_max(self.room, Ordering::AcqRel);
        })?;
        self.end.store(end, Ordering::Release);
        self.synced
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    /// The segment's number.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether this segment's records go straight to the device (tests).
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.stage
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.is_direct()))
            .unwrap_or(false)
    }

    /// Whether every row written to it is on disk (as far as its syncs know).
    fn all_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= self.appended.load(Ordering::Acquire)
    }

    /// How many of the rows appended are known to be on disk.
    #[cfg(test)]
    pub(super) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// How many rows were appended whole.
    #[cfg(test)]
    pub(super) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }
}

/// Where the journal of the database at `db` lives.
pub(super) fn dir_of(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).join("journal")
}

impl Journal {
    /// Start a journal in `dir` (created 0700 if missing) after the segments already there,
    /// with the spares left there to reuse. (Replay has run: segments still there are ones it
    /// kept, numbered before the new ones.) `staged` (`full`): records are written by the
    /// sync thread ([`Segment::put`]), not by [`Journal::append`].
    pub(super) fn start(dir: &Path, staged: bool) -> std::io::Result<Journal> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let spares = record::segments(dir, SPARE)?;
        // After every number a file here was ever given: a spare holds records of its earlier
        // lives, numbered at most its own number, and a reused file's new records must not be
        // mistaken for them. (After anything named so, too: a directory named as the next
        // segment stopped the start.)
        let seq = record::highest_number(dir, &[EXT, SPARE])?.map_or(0, |n| n + 1);
        let mut spares: Vec<PathBuf> = spares.into_iter().map(|(_, p)| p).collect();
        for extra in spares.split_off(spares.len().min(MAX_SPARES)) {
            std::fs::remove_file(extra)?;
        }
        let first = Segment::create(dir, seq, spares.pop(), staged)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(first),
            next_seq: AtomicU64::new(seq + 1),
            spares: Mutex::new(spares),
            staged,
            dir_looked_ms: AtomicI64::new(0),
            stuck_on: AtomicU64::new(u64::MAX),
            #[cfg(test)]
            fail_writes: Arc::default(),
        })
    }

    /// Write a row with one `pwrite(2)` (`normal`), or frame its record for the sync thread to
    /// write (`full`). An error (disk full, a short write) means the caller must get the row
    /// into the database another way.
    pub(super) fn append(&self, row: &UsageRow) -> std::io::Result<Appended> {
        let segment = self.current.load_full();
        let record = record::frame(segment.seq, row)?;
        if segment.stage.is_some() {
            segment.written.store(true, Ordering::Release);
            segment.appended.fetch_add(1, Ordering::AcqRel);
            return Ok(Appended {
                segment,
                record: Some((record, Arc::default())),
            });
        }
        let at = segment
            .end
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        let n = segment.file.write_at(&record, at)?;
        segment.written.store(true, Ordering::Release);
        if n != record.len() {
            // The torn record is skipped by replay (its checksum fails).
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write to the journal",
            ));
        }
        segment.appended.fetch_add(1, Ordering::AcqRel);
        Ok(Appended {
            segment,
            record: None,
        })
    }

    /// Start a new segment if the current one was written to; returns the one retired.
    pub(super) fn rotate(&self) -> std::io::Result<Option<Arc<Segment>>> {
        if !self.current.load().written.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.make_again_if_gone()?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        let fresh = Segment::create(&self.dir, seq, spare, self.staged)?;
        #[cfg(test)]
        let fresh = Segment {
            fail_writes: self.fail_writes.clone(),
            ..fresh
        };
        let fresh = Arc::new(fresh);
        Ok(Some(self.current.swap(fresh)))
    }

    /// Whether the journal's directory is gone (removed while the daemon ran): then a new
    /// segment is due at once, whatever is still to drain. Looked at once a second at most
    /// (a `stat`; the sync thread asks at every turn).
    pub(super) fn dir_gone(&self) -> bool {
        // The monotonic clock: a step back of the wall clock left the directory unwatched for
        // the step's length (found by an independent check).
        let now = crate::clock::mono_ms();
        let last = self.dir_looked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000 {
            return false;
        }
        self.dir_looked_ms.store(now, Ordering::Relaxed);
        !self.dir.exists()
    }

    /// The directory removed while the daemon ran (an operator tidying up) is made again, or
    /// every row went on into the removed segment, out of sight and out of reach of the next
    /// start's replay — while commits failed, the one copy of those rows (found by two
    /// independent checks). Its spares went with it.
    fn make_again_if_gone(&self) -> std::io::Result<()> {
        if self.dir.exists() {
            return Ok(());
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
        if let Ok(mut spares) = self.spares.lock() {
            spares.clear();
        }
        tracing::warn!(
            dir = %self.dir.display(),
            "the ledger journal's directory was removed while the daemon ran: made again (do \
             not remove it: rows not yet committed are only there)"
        );
        Ok(())
    }

    /// Whether the last row recorded could be neither journaled nor committed, and the journal
    /// has not moved on to another segment since (a new one, a spare's blocks on a full disk,
    /// may take the rows the last one could not).
    pub(super) fn stuck(&self) -> bool {
        self.stuck_on.load(Ordering::Acquire) == self.current.load().seq
    }

    /// Tell how the last row recorded went: `Some(seq)`, the segment it went to, when it could
    /// be neither journaled nor committed.
    pub(super) fn set_stuck(&self, on: Option<u64>) {
        // Every answer tells: written only when it changes, the line stays shared.
        let on = on.unwrap_or(u64::MAX);
        if self.stuck_on.load(Ordering::Relaxed) != on {
            self.stuck_on.store(on, Ordering::Release);
        }
    }

    /// The number of the segment rows are written to now.
    pub(super) fn current_seq(&self) -> u64 {
        self.current.load().seq
    }

    /// Whether the current segment has no room left in the blocks written ahead for it.
    pub(super) fn current_full(&self) -> bool {
        let current = self.current.load();
        current.end.load(Ordering::Relaxed) >= current.room
    }

    /// Sync the current segment if rows written to it are not known to be on disk.
    pub(super) fn sync_current_if_behind(&self) -> std::io::Result<()> {
        let current = self.current.load_full();
        if current.all_synced() {
            return Ok(());
        }
        current.sync()
    }

    /// A drained segment (see [`Segment::drained`]) leaves the journal: renamed a spare to be
    /// reused, or deleted when there are spares enough.
    pub(super) fn retire(&self, segment: &Segment) -> std::io::Result<()> {
        let Ok(mut spares) = self.spares.lock() else {
            return std::fs::remove_file(segment.path());
        };
        // A segment cut back after a failed write (see `staged::Stage::write`) is shorter than
        // a new one: as a spare it would hold fewer rows than its blocks promise on a full disk.
        let short = std::fs::metadata(segment.path()).map_or(true, |m| m.len() < NEW_SIZE as u64);
        if spares.len() >= MAX_SPARES || short {
            return std::fs::remove_file(segment.path());
        }
        // No sync of the directory: if the rename is lost to a power loss, the start replays
        // the segment, whose rows are all in the ledger already.
        let spare = segment.path().with_extension(SPARE);
        std::fs::rename(segment.path(), &spare)?;
        spares.push(spare);
        Ok(())
    }

    /// Tests: make writes of staged records fail from now on, in this segment and the next.
    #[cfg(test)]
    pub(super) fn fail_writes(&self) {
        self.fail_writes.store(true, Ordering::Release);
        self.current
            .load()
            .fail_writes
            .store(true, Ordering::Release);
    }

    /// The segment rows are written to now.
    #[cfg(test)]
    pub(super) fn current(&self) -> Arc<Segment> {
        self.current.load_full()
    }
}
