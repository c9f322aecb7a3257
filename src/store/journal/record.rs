//! A journal record, and reading segments back at start-up.
//!
//! A record is `0x1E`, the segment's number (16 hex digits), the CRC-32 of the row's text (8 hex
//! digits), the row as JSON, `\n`. JSON escapes control characters, so `0x1E` only ever starts
//! a record. A segment is written over when reused (see [`super`]), so what follows its last
//! record may be an older life's records: they carry another number and are not rows. A
//! record torn by a power loss fails its checksum, even when the older record under it
//! completes it into valid JSON. Records of a version before reuse (`0x1E`, JSON, `\n`, in
//! segments only ever appended to) are read as they were.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::super::error::StoreError;
use super::super::usage::{self, UsageRow};

/// Starts a record.
const RS: u8 = 0x1E;
/// The number and checksum after [`RS`].
const HEADER: usize = 16 + 8;

/// The record of `row` in segment `seq`.
pub(crate) fn frame(seq: u64, row: &UsageRow) -> std::io::Result<Vec<u8>> {
    let mut record = Vec::with_capacity(512);
    record.push(RS);
    record.resize(1 + HEADER, b'0');
    encode(row, &mut record)?;
    let crc = crc32fast::hash(&record[1 + HEADER..]);
    hex(&mut record[1..17], seq);
    hex(&mut record[17..=HEADER], u64::from(crc));
    record.push(b'\n');
    Ok(record)
}

/// `v`'s last `out.len()` hex digits, lower case, into `out`.
fn hex(out: &mut [u8], v: u64) {
    for (i, digit) in out.iter_mut().rev().enumerate() {
        *digit = b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize];
    }
}

/// The row as the JSON object `serde_json::to_writer` writes for it (same members, same order,
/// same values; replay reads it with serde), written directly.
///
/// Hand-written for speed, in every answer's path: serde's map serialiser escaped each
/// of the nineteen member names byte by byte and formatted the cost through `collect_str`
/// (~7.7k instructions per row, callgrind; bench/PROFILE.md), and `write!` with a dozen
/// arguments costs ~4.6k in `core::fmt`. Names here are literals and numbers go through `itoa`;
/// the four strings still go through serde_json's escaping. A property test checks the text is
/// serde's, byte for byte.
pub(crate) fn encode(row: &UsageRow, out: &mut Vec<u8>) -> std::io::Result<()> {
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

/// The files in `dir` named `<number>.<ext>`, in the order they were numbered.
pub(super) fn segments(dir: &Path, ext: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Only files: anything else named so is not ours (a directory stopped the start with
        // an error naming the journal directory).
        if path.extension().and_then(|e| e.to_str()) != Some(ext) || !entry.file_type()?.is_file() {
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

/// The highest number of anything in `dir` named `<number>.<ext>` for one of `exts`, whatever
/// it is.
pub(super) fn highest_number(dir: &Path, exts: &[&str]) -> std::io::Result<Option<u64>> {
    let mut highest = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let named = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e));
        if let Some(n) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|_| named)
        {
            highest = highest.max(Some(n));
        }
    }
    Ok(highest)
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Rows found in the journal.
    pub found: usize,
    /// Of which applied (the rest were already in the ledger or refused).
    pub applied: usize,
    /// Records that could not be read (torn by a power loss or a short write).
    pub torn: usize,
}

/// The rows of segment `seq`'s text, and how many of its records could not be read. What is
/// not a record of this segment is passed over: the zeros of a new segment, an older life's
/// records and their pieces. A record of an older version (no number; only in a segment that
/// version wrote) is read up to its newline, whatever follows; one cut short, or followed by
/// anything but zeros, counts as torn.
pub(crate) fn parse(bytes: &[u8], seq: u64) -> (Vec<UsageRow>, usize) {
    let mut rows = Vec::new();
    let mut torn = 0;
    let mark = format!("{seq:016x}");
    // Records without a number only in a segment an older version wrote (it begins with one;
    // this version's begin with zeros or a numbered record): elsewhere one is no row of this
    // segment's life (found by an independent check: one written into a new segment's zeros
    // was applied).
    let older_version = bytes.starts_with(&[RS, b'{']);
    for record in bytes.split(|&b| b == RS).filter(|r| !r.is_empty()) {
        if record[0] == b'{' && !older_version {
            torn += 1;
            continue;
        }
        if record[0] == b'{' {
            let Some(end) = record.iter().position(|&b| b == b'\n') else {
                torn += 1;
                continue;
            };
            match serde_json::from_slice::<UsageRow>(&record[..end]) {
                Ok(row) => rows.push(row),
                Err(_) => torn += 1,
            }
            if record[end + 1..].iter().any(|&b| b != 0) {
                torn += 1;
            }
            continue;
        }
        if record.len() < HEADER || &record[..16] != mark.as_bytes() {
            continue;
        }
        let crc = std::str::from_utf8(&record[16..HEADER])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        let body = &record[HEADER..];
        let Some(end) = body.iter().position(|&b| b == b'\n') else {
            torn += 1;
            continue;
        };
        let text = &body[..end];
        match (crc, serde_json::from_slice::<UsageRow>(text)) {
            (Some(crc), Ok(row)) if crc == crc32fast::hash(text) => rows.push(row),
            _ => torn += 1,
        }
    }
    (rows, torn)
}

/// How many rows the segments in `dir` hold: what a start would replay (0 without the
/// directory, or with only the empty segment a new journal begins with).
pub(crate) fn rows_waiting(dir: &Path) -> std::io::Result<usize> {
    let files = match segments(dir, super::EXT) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut rows = 0;
    for (seq, path) in files {
        rows += parse(&std::fs::read(path)?, seq).0.len();
    }
    Ok(rows)
}

/// Apply every segment in `dir` to the database in one durable transaction (rows already in
/// the ledger are skipped), then delete the segments. Runs before the writer starts.
pub(crate) fn replay(c: &mut rusqlite::Connection, dir: &Path) -> Result<Replayed, StoreError> {
    let io = |e: std::io::Error| StoreError::Io(format!("ledger journal {}: {e}", dir.display()));
    let files = match segments(dir, super::EXT) {
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
    for (seq, path) in &files {
        let bytes = std::fs::read(path).map_err(io)?;
        let (rows, torn) = parse(&bytes, *seq);
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
