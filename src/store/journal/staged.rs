//! `store.sync = "full"`: records handed to the sync thread, which writes and syncs them in one
//! `pwrite(2)` on a descriptor opened `O_DIRECT | O_DSYNC`.
//!
//! With `full` every answer waits for its row to be on disk, and at a moderate rate each answer
//! gets a sync of its own: what that sync costs in kernel time is most of what `full` costs
//! over `normal` (bench/PROFILE.md). Written by the request's task into the page cache and then
//! `fdatasync`ed, a record costs two system calls, a dirty page's bookkeeping and the
//! writeback; written straight from this buffer to the device with `O_DSYNC` it costs one call
//! and no page cache. Direct I/O wants the offset, length and buffer aligned to the device's
//! block, so the thread keeps the segment's last partial block here and writes whole blocks
//! (4 KiB: every block size Linux devices use divides it), padded with zeros past the last
//! record — replay reads zeros after a record as nothing, and the next write covers them.
//!
//! Hand-written because the journal is (see [`super`]). Where the filesystem refuses
//! `O_DIRECT` (tmpfs, some network filesystems) or a direct write (`EINVAL`: an alignment it
//! wants larger), the same bytes are written through the page cache and `fdatasync`ed: the
//! same promise, the cost of before.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The alignment of a direct write's offset, length and buffer.
const BLOCK: usize = 4096;

/// A segment's records not yet whole blocks on disk, and how to write them. Only the sync
/// thread (and the segment's creation) uses it.
pub(super) struct Stage {
    /// The segment opened `O_DIRECT | O_DSYNC`, while direct writes work.
    direct: Option<File>,
    /// The file offset of `bytes[0]`, a multiple of [`BLOCK`].
    base: u64,
    /// Records from `base` on: the partial block written last time, then what came since.
    bytes: Vec<u8>,
    /// Where the aligned copy is made for a direct write (kept to be reused).
    scratch: Vec<u8>,
    /// Tests: the next write puts its records on disk and then fails, as a write that ran out
    /// of room part of the way through.
    #[cfg(test)]
    tear_next: bool,
}

impl Stage {
    /// The stage of the segment at `path`, whose file `file` holds nothing yet worth keeping
    /// (a new file or a spare); with `direct`, opened for direct writes where the filesystem
    /// allows them. A new file (`fill`) gets `size` bytes of zeros written and synced first,
    /// through the direct descriptor if it opened.
    pub(super) fn open(
        path: &Path,
        file: &File,
        direct: bool,
        fill: Option<usize>,
    ) -> std::io::Result<Stage> {
        let direct = if direct { open_direct(path) } else { None };
        let mut stage = Stage {
            direct,
            base: 0,
            bytes: Vec::new(),
            scratch: Vec::new(),
            #[cfg(test)]
            tear_next: false,
        };
        if let Some(size) = fill {
            let zeros = vec![0u8; size];
            if !stage.write_direct(&zeros, 0)? {
                file.write_all_at(&zeros, 0)?;
                file.sync_data()?;
            }
        }
        Ok(stage)
    }

    /// Whether this stage writes through `O_DIRECT` (tests).
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Put `records` on disk after those written before, in `file` (the segment's own
    /// descriptor, for when direct writes are refused). On an error nothing new is kept: the
    /// caller's rows must reach the disk another way, and the next write starts where this one
    /// did. Nor is anything new left in the file: a write that ran out of room part of the way
    /// (a segment grown past the blocks written ahead, on a full disk) left the records before
    /// the tear whole on disk, and the next start applied them — a row whose answer was
    /// withheld, and its charge given back, was billed (found by an independent check). So the
    /// file is cut back to the records written before. Returns where the next record goes.
    pub(super) fn write<'a>(
        &mut self,
        file: &File,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> std::io::Result<u64> {
        let kept = self.bytes.len();
        for record in records {
            self.bytes.extend_from_slice(record);
        }
        let bytes = std::mem::take(&mut self.bytes);
        let outcome = match self.write_direct(&bytes, self.base) {
            Ok(true) => Ok(()),
            Ok(false) => file
                .write_all_at(&bytes, self.base)
                .and_then(|()| file.sync_data()),
            Err(e) => Err(e),
        };
        #[cfg(test)]
        let outcome = match std::mem::take(&mut self.tear_next) {
            true => outcome.and(Err(std::io::Error::from_raw_os_error(28))),
            false => outcome,
        };
        self.bytes = bytes;
        if let Err(e) = outcome {
            self.bytes.truncate(kept);
            let end = self.base + kept as u64;
            // Cutting a file back takes no new blocks; it is synced like the records are.
            if let Err(cut) = file.set_len(end).and_then(|()| file.sync_data()) {
                tracing::error!(
                    error = %cut,
                    path = ?file,
                    "a failed journal write could not be cut back: rows whose answers were \
                     withheld may be billed at the next start"
                );
            }
            return Err(e);
        }
        let end = self.base + self.bytes.len() as u64;
        // Keep the last partial block: the next write rewrites it with what follows.
        let whole = self.bytes.len() / BLOCK * BLOCK;
        self.bytes.drain(..whole);
        self.base += whole as u64;
        Ok(end)
    }

    /// Write `bytes` at `at` (a multiple of [`BLOCK`]) through the direct descriptor, padded
    /// with zeros to whole blocks: `Ok(false)` when there is none, or when the filesystem
    /// refused the write as unaligned (then there is none from now on).
    fn write_direct(&mut self, bytes: &[u8], at: u64) -> std::io::Result<bool> {
        let Some(direct) = &self.direct else {
            return Ok(false);
        };
        let len = bytes.len().div_ceil(BLOCK) * BLOCK;
        // Grown when a write needs more, never cleared: `clear` and `resize` zeroed the whole
        // buffer byte by byte at every write, ~9k instructions of each `full` answer's ~180k
        // (callgrind, bench/PROFILE.md); only the padding after the records needs zeros.
        if self.scratch.len() < len + BLOCK {
            self.scratch.resize(len + BLOCK, 0);
        }
        // The buffer's first address on a block boundary: safe code has no aligned allocation
        // in std short of a layout of our own, and one block more of room costs nothing.
        let skip = (BLOCK - self.scratch.as_ptr().addr() % BLOCK) % BLOCK;
        let aligned = &mut self.scratch[skip..skip + len];
        aligned[..bytes.len()].copy_from_slice(bytes);
        aligned[bytes.len()..].fill(0);
        match direct.write_all_at(aligned, at) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
                tell_once(&e);
                self.direct = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The segment at `path` opened for direct, synchronous writes, if the filesystem allows it.
fn open_direct(path: &Path) -> Option<File> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags((OFlag::O_DIRECT | OFlag::O_DSYNC).bits())
        .open(path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            tell_once(&e);
            None
        }
    }
}

/// Whether a file in `dir` opens for direct writes (tests: where segments should use them).
#[cfg(test)]
pub(crate) fn takes_direct(dir: &Path) -> bool {
    let probe = dir.join("direct.probe");
    let opened = std::fs::write(&probe, b"").is_ok() && open_direct(&probe).is_some();
    let _ = std::fs::remove_file(&probe);
    opened
}

/// Log, once a process (a segment is opened every interval), that direct writes are refused.
fn tell_once(e: &std::io::Error) {
    static TOLD: AtomicBool = AtomicBool::new(false);
    if !TOLD.swap(true, Ordering::Relaxed) {
        tracing::info!(error = %e, "ledger journal: the filesystem refuses direct writes; writing through the page cache");
    }
}

#[cfg(test)]
mod tests {
    //! Records written by the stage land one after another from the segment's start, through
    //! direct writes or the page cache alike, with nothing but zeros after them.
    use proptest::prelude::*;

    use super::*;

    /// A segment of `fill` zeros with `batches` of records staged into it, one write a batch:
    /// the file's bytes, whether it was written directly, and the end the stage gave.
    fn written(direct: bool, batches: &[Vec<Vec<u8>>], fill: usize) -> (Vec<u8>, bool, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (path, file, mut stage) = segment(&dir, direct, fill);
        let mut end = 0;
        for batch in batches {
            end = stage.write(&file, batch.iter().map(Vec::as_slice)).unwrap();
        }
        (std::fs::read(&path).unwrap(), stage.is_direct(), end)
    }

    /// A new segment in `dir` of `fill` zeros, and its stage.
    fn segment(
        dir: &tempfile::TempDir,
        direct: bool,
        fill: usize,
    ) -> (std::path::PathBuf, File, Stage) {
        let path = dir.path().join("1.rows");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let stage = Stage::open(&path, &file, direct, Some(fill)).unwrap();
        (path, file, stage)
    }

    #[test]
    fn a_write_that_fails_part_way_leaves_no_record_of_it_behind() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (path, file, mut stage) = segment(&dir, direct, 4096);
            let first = b"first record\n".to_vec();
            assert_eq!(
                stage.write(&file, [first.as_slice()].into_iter()).unwrap(),
                13
            );
            // Records past a block, all on disk before the write "fails".
            let torn = vec![b'x'; 6000];
            stage.tear_next = true;
            assert!(
                stage
                    .write(&file, [torn.as_slice(), b"y\n"].into_iter())
                    .is_err()
            );
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                bytes, first,
                "direct {direct}: cut back to the first record"
            );
            // The next write goes on from the first record.
            let next = b"next\n".to_vec();
            assert_eq!(
                stage.write(&file, [next.as_slice()].into_iter()).unwrap(),
                18
            );
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..18], b"first record\nnext\n");
            assert!(bytes[18..].iter().all(|&b| b == 0), "direct {direct}");
        }
    }

    #[test]
    fn direct_writes_are_used_where_the_filesystem_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let takes_direct = takes_direct(dir.path());
        let batches = vec![vec![b"a record\n".to_vec()]];
        let (bytes, direct, end) = written(true, &batches, 4096);
        assert_eq!(direct, takes_direct);
        assert_eq!(
            (&bytes[..9], end, bytes.len()),
            (&b"a record\n"[..], 9, 4096)
        );
        let (_, direct, _) = written(false, &batches, 4096);
        assert!(!direct);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Batches of any size, records shorter or longer than a block: the file holds them
        /// all in order from its start, zeros after, and the next record would go at the end.
        #[test]
        fn records_land_one_after_another_whichever_way_they_are_written(
            batches in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(1u8..=255, 1..6000), 1..5),
                1..8,
            ),
            fill in prop::sample::select(vec![4096usize, 16384]),
        ) {
            let all: Vec<u8> = batches.concat().concat();
            for direct in [false, true] {
                let (bytes, _, end) = written(direct, &batches, fill);
                prop_assert_eq!(end, all.len() as u64);
                prop_assert_eq!(&bytes[..all.len()], &all[..]);
                prop_assert!(bytes[all.len()..].iter().all(|&b| b == 0));
                prop_assert!(bytes.len() >= fill);
            }
        }
    }
}
