//! The disk's own fsync latency, measured in the same run as the gateway: the physical floor of
//! a durable answer. With `store.sync = "full"` every answer waits for its ledger row's record
//! in the journal to be synced, one `fdatasync` of a segment written ahead; nothing on this
//! disk can answer durably faster.
//!
//! What is timed mirrors that sync: a 4 KiB page written into a preallocated file (the
//! journal's segments are written over, not appended to), then `fdatasync`. The file sits in
//! the gateway's data directory, on the same filesystem.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use crate::stats::us;

/// Pages in the preallocated file (4 MiB, SQLite's default WAL size before a checkpoint).
const PAGES: u64 = 1024;
const PAGE: usize = 4096;

/// `n` timed writes + `fdatasync` (µs each) to a scratch file in `dir`, which is removed after.
pub fn measure(dir: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let path = dir.join("fsync-probe.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let page = vec![0x5a_u8; PAGE];
    for _ in 0..PAGES {
        f.write_all(&page)?;
    }
    f.sync_all()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        f.seek(SeekFrom::Start((i % PAGES) * PAGE as u64))?;
        let t = Instant::now();
        f.write_all(&page)?;
        f.sync_data()?;
        out.push(us(t.elapsed()));
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(out)
}
