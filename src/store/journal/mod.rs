//! `store.sync = "normal"`: the ledger's journal, so an answer waits for neither the writer
//! thread nor SQLite's commit.
//!
//! A settled request's row is appended, in the request's own task, to a segment file under
//! `<data dir>/journal/` with one `write(2)`: once that returns the row is in the OS, which is
//! all `normal` promises before the last byte (a killed process loses nothing). The row then
//! goes to the writer like any other write, without anyone waiting, and is committed in batches
//! behind. Start-up replays every segment into SQLite before keys are loaded (rows whose
//! `request_id` is already in the ledger are skipped, so a row is never applied twice), then
//! deletes the segments.
//!
//! Hand-written because it is small and tied to our rows: a record is `0x1E`, the row as
//! JSON, `\n`. JSON escapes control characters, so `0x1E` only ever starts a record, and a
//! record torn by a power loss or a short write is told apart from the next one by it.
//!
//! A segment is deleted only when it can no longer hold the only copy of a row: every row
//! appended to it carries the segment (an `Arc`) to the writer, which counts it settled once
//! committed; a segment nobody else holds whose rows are all settled is [`Segment::drained`],
//! and the sync task then syncs the WAL and deletes it (see [`super::sync`]). A row whose
//! commit failed, or that was dropped unprocessed when the process stopped, is never counted,
//! so its segment stays for the next start. The sync task also starts a new segment every
//! interval, so the journal holds about one interval of rows.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::error::StoreError;
use super::usage::{self, UsageRow};

/// Starts a record.
const RS: u8 = 0x1E;
/// A segment file's extension.
const EXT: &str = "rows";

/// The journal of `normal` mode: the segment being appended to, and where new ones go.
pub(super) struct Journal {
    dir: PathBuf,
    current: ArcSwap<Segment>,
    next_seq: AtomicU64,
}

/// One segment file. Rows appended to it hold it until they are committed.
pub(super) struct Segment {
    file: File,
    path: PathBuf,
    /// Something was appended.
    written: AtomicBool,
    /// Rows appended whole.
    appended: AtomicU64,
    /// Of which the writer has committed (or refused for good). A row whose commit failed, or
    /// that was dropped unprocessed when the process stopped, is never counted: its segment
    /// stays for the next start's replay.
    settled: AtomicU64,
}

impl Segment {
    fn create(dir: &Path, seq: u64) -> std::io::Result<Segment> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("{seq:020}.{EXT}"));
        // Append-only: each record lands whole at the end, whichever task writes it.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        // The file's name must survive a power loss as well as what is synced into it.
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            file,
            path,
            written: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            settled: AtomicU64::new(0),
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

    /// Flush the segment to disk.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// Where the journal of the database at `db` lives.
pub(super) fn dir_of(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).join("journal")
}

impl Journal {
    /// Start a journal in `dir` (created 0700 if missing) after the segments already there.
    pub(super) fn start(dir: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let seq = segments(dir)?.last().map_or(0, |(seq, _)| seq + 1);
        let first = Segment::create(dir, seq)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(first),
            next_seq: AtomicU64::new(seq + 1),
        })
    }

    /// Append a row with one `write(2)`; the segment it went to is returned, to be held until
    /// the row is committed. An error (disk full, a short write) means the caller must get the
    /// row into the database another way.
    pub(super) fn append(&self, row: &UsageRow) -> std::io::Result<Arc<Segment>> {
        let mut record = Vec::with_capacity(512);
        record.push(RS);
        encode(row, &mut record)?;
        record.push(b'\n');
        let segment = self.current.load_full();
        let n = (&segment.file).write(&record)?;
        segment.written.store(true, Ordering::Release);
        if n != record.len() {
            // The torn record is skipped by replay; the next one starts with its own `RS`.
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write to the journal",
            ));
        }
        segment.appended.fetch_add(1, Ordering::AcqRel);
        Ok(segment)
    }

    /// Start a new segment if the current one was written to; returns the one retired.
    pub(super) fn rotate(&self) -> std::io::Result<Option<Arc<Segment>>> {
        if !self.current.load().written.load(Ordering::Acquire) {
            return Ok(None);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(Segment::create(&self.dir, seq)?);
        Ok(Some(self.current.swap(fresh)))
    }
}

/// The row as the JSON object `serde_json::to_writer` writes for it (same members, same order,
/// same values; replay reads it with serde), written directly.
///
/// Hand-written for speed, in every `normal` answer's path: serde's map serialiser escaped each
/// of the nineteen member names byte by byte and formatted the cost through `collect_str`
/// (~7.7k instructions per row, callgrind; bench/PROFILE.md), and `write!` with a dozen
/// arguments costs ~4.6k in `core::fmt`. Names here are literals and numbers go through `itoa`;
/// the four strings still go through serde_json's escaping. A property test checks the text is
/// serde's, byte for byte.
pub(super) fn encode(row: &UsageRow, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut n = itoa::Buffer::new();
    let string = |out: &mut Vec<u8>, name: &[u8], v: &str| -> std::io::Result<()> {
        out.extend_from_slice(name);
        serde_json::to_writer(&mut *out, v)?;
        Ok(())
    };
    string(out, b"{\"request_id\":", &row.request_id)?;
    string(out, b",\"key_id\":", &row.key_id)?;
    string(out, b",\"model\":", &row.model)?;
    out.extend_from_slice(if row.stream {
        b",\"stream\":true"
    } else {
        b",\"stream\":false"
    });
    let word = |out: &mut Vec<u8>, name: &[u8], v: &str| {
        // Our own names (`as_str`): nothing in them to escape.
        out.extend_from_slice(name);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    };
    word(out, b",\"period\":", row.period.as_str());
    for (name, v) in [
        (&b",\"prompt_tokens\":"[..], row.prompt_tokens),
        (b",\"cache_hit_tokens\":", row.cache_hit_tokens),
        (b",\"cache_miss_tokens\":", row.cache_miss_tokens),
        (b",\"completion_tokens\":", row.completion_tokens),
        (b",\"reasoning_tokens\":", row.reasoning_tokens),
    ] {
        out.extend_from_slice(name);
        out.extend_from_slice(n.format(v).as_bytes());
    }
    out.extend_from_slice(b",\"cost\":\"");
    write!(out, "{}", row.cost)?;
    out.push(b'"');
    word(out, b",\"measured\":", row.measured.as_str());
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(n.format(row.status).as_bytes());
    word(out, b",\"finish\":", row.finish.as_str());
    out.extend_from_slice(b",\"latency_ms\":");
    out.extend_from_slice(n.format(row.latency_ms).as_bytes());
    out.extend_from_slice(b",\"ttft_ms\":");
    match row.ttft_ms {
        Some(ms) => out.extend_from_slice(n.format(ms).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"created_at_ms\":");
    out.extend_from_slice(n.format(row.created_at_ms).as_bytes());
    word(out, b",\"api\":", row.api.as_str());
    string(out, b",\"account\":", &row.account)?;
    out.push(b'}');
    Ok(())
}

/// The segment files in `dir`, in the order they were written.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
            continue;
        }
        if let Some(seq) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Rows found in the journal.
    pub found: usize,
    /// Of which applied (the rest were already in the ledger or refused).
    pub applied: usize,
    /// Records that could not be read (torn by a power loss or a short write).
    pub torn: usize,
}

/// The rows of one segment's text, and how many records in it could not be read (or were
/// followed by bytes no record wrote). A record is read up to its newline, whatever follows:
/// a whole record followed by the zeros a filesystem may leave past the last write at a power
/// loss, or by junk, is still a row (it was dropped whole before, with its segment); bytes
/// between records that are only zeros are that same fill, not a record.
pub(super) fn parse(bytes: &[u8]) -> (Vec<UsageRow>, usize) {
    let mut rows = Vec::new();
    let mut torn = 0;
    for record in bytes.split(|&b| b == RS).filter(|r| !r.is_empty()) {
        let Some(end) = record.iter().position(|&b| b == b'\n') else {
            if record.iter().any(|&b| b != 0) {
                torn += 1;
            }
            continue;
        };
        match serde_json::from_slice::<UsageRow>(&record[..end]) {
            Ok(row) => rows.push(row),
            Err(_) => torn += 1,
        }
        if record[end + 1..].iter().any(|&b| b != 0) {
            torn += 1;
        }
    }
    (rows, torn)
}

/// Apply every segment in `dir` to the database in one durable transaction (rows already in
/// the ledger are skipped), then delete the segments. Runs before the writer starts.
pub(super) fn replay(c: &mut rusqlite::Connection, dir: &Path) -> Result<Replayed, StoreError> {
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", dir.display()));
    let files = match segments(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(io(e)),
    };
    let mut done = Replayed::default();
    if files.is_empty() {
        return Ok(done);
    }
    // Durable before the segments go, whatever `store.sync` says for ordinary commits.
    c.execute_batch("PRAGMA synchronous = FULL;")?;
    let mut tx = c.transaction()?;
    for (_, path) in &files {
        let bytes = std::fs::read(path).map_err(io)?;
        let (rows, torn) = parse(&bytes);
        done.found += rows.len();
        done.torn += torn;
        for row in rows {
            let known: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM usage WHERE request_id = ?1)")?
                .query_row([&row.request_id], |r| r.get(0))?;
            if known {
                continue;
            }
            // A savepoint each: a row the database refuses (an unknown key) is skipped whole,
            // counters included, and does not keep the daemon from starting.
            let sp = tx.savepoint()?;
            match usage::insert(&sp, &row) {
                Ok(()) => {
                    sp.commit()?;
                    done.applied += 1;
                }
                // Disk full, an I/O error, a lock: nothing is applied and the segments stay,
                // so the start fails rather than drop the rows (the next start replays them).
                Err(e) if e.is_transient() => {
                    tracing::error!(
                        journal = %dir.display(),
                        segments = files.len(),
                        error = %e,
                        "cannot apply the ledger journal now (disk full? another program \
                         holding the database's write lock?); its rows are kept: fix that and \
                         start again"
                    );
                    return Err(e);
                }
                Err(e) => {
                    drop(sp);
                    tracing::error!(
                        request_id = %row.request_id,
                        key_id = %row.key_id,
                        error = %e,
                        "journal row refused by the database; not applied"
                    );
                }
            }
        }
    }
    tx.commit()?;
    for (_, path) in &files {
        std::fs::remove_file(path).map_err(io)?;
    }
    Ok(done)
}
