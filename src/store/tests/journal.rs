//! The ledger's journal: a row is in it when `record_usage` returns (and on disk with `full`),
//! start-up replays what the ledger lacks exactly once, and segments go once their rows are
//! committed.

use std::time::Duration;

use super::*;
use crate::store::journal::{self, Journal};

async fn open_normal(path: &Path, interval_ms: u64) -> (Store, Vec<KeyRecord>) {
    open_normal_result(path, interval_ms).await.unwrap()
}

async fn open_normal_result(
    path: &Path,
    interval_ms: u64,
) -> Result<(Store, Vec<KeyRecord>), StoreError> {
    Store::open_with(path, SyncMode::Normal, Duration::from_millis(interval_ms)).await
}

/// Every segment file in the journal, with its text (zeros left out).
fn segment_texts(path: &Path) -> Vec<(PathBuf, String)> {
    let mut found: Vec<_> = std::fs::read_dir(journal::dir_of(path))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rows"))
        // A segment retired between the listing and the reading is gone, rows and all (the
        // writer retires them on its own thread: a test that read it unconditionally failed
        // now and then).
        .filter_map(|p| {
            // Without the zeros a new segment is written with.
            let text = read_if_there(&p)?;
            Some((p, String::from_utf8_lossy(&text).replace('\0', "")))
        })
        .collect();
    found.sort();
    found
}

/// A segment's bytes, or `None` when it was retired (removed) meanwhile.
fn read_if_there(file: &Path) -> Option<Vec<u8>> {
    match std::fs::read(file) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", file.display()),
    }
}

/// The rows the journal's segments hold (what a start would replay), by request id.
fn live_rows(path: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for (file, _) in segment_texts(path) {
        let seq: u64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let Some(bytes) = read_if_there(&file) else {
            continue;
        };
        let (rows, _) = journal::parse(&bytes, seq);
        ids.extend(rows.into_iter().map(|r| r.request_id));
    }
    ids
}

/// Record `n` ledger rows of `key_a`, `cost` nano-USD each, one after another.
async fn record_rows(store: &Store, prefix: &str, n: i64, cost: i64) {
    for i in 0..n {
        store
            .record_usage(usage(&format!("{prefix}{i}"), "key_a", cost, i), true)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_row_recorded_in_normal_mode_is_in_the_journal_when_recording_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // No turnover during the test: the row stays in the first segment.
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();

    store
        .record_usage(usage("req-journaled", "key_a", 150, 1), true)
        .await
        .unwrap();
    let texts = segment_texts(&path);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0].1.matches("req-journaled").count(), 1);
    assert!(texts[0].1.starts_with('\u{1e}') && texts[0].1.ends_with('\n'));

    // And it is committed behind, moving the key's counters once.
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].spent.nanos(), 150);
    assert_eq!(keys[0].requests, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 1);
    store.close().await;
}

#[tokio::test]
async fn a_row_recorded_in_full_mode_is_synced_in_the_journal_when_recording_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open_with(&path, SyncMode::Full, Duration::from_secs(3600))
        .await
        .unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    let segment = store.journal.current();
    assert_eq!((segment.appended(), segment.synced()), (0, 0));

    // Recorded together, synced together or one by one: each is on disk when its own
    // recording returns.
    let recorded: Vec<_> = (0..20)
        .map(|i| store.record_usage(usage(&format!("req-{i}"), "key_a", 10, i), true))
        .collect();
    for (i, r) in recorded.into_iter().enumerate() {
        r.await.unwrap();
        assert!(
            segment.synced() > i as u64,
            "row {i} returned before its sync"
        );
    }
    assert_eq!((segment.appended(), segment.synced()), (20, 20));
    // Written straight to the device wherever the filesystem allows it (`journal/staged.rs`).
    assert_eq!(
        segment.is_direct(),
        journal::takes_direct(&journal::dir_of(&path))
    );
    let text: String = segment_texts(&path).into_iter().map(|(_, t)| t).collect();
    assert_eq!(text.matches("\"request_id\":\"req-").count(), 20, "{text}");

    // Committed behind: a read sees every row, counters moved once each.
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 20);
    let (store, keys) = reopen(store, &path).await;
    assert_eq!((keys[0].spent.nanos(), keys[0].requests), (200, 20));
    store.close().await;
}

/// The ledger's request ids, in order.
async fn ids(store: &Store) -> Vec<String> {
    store
        .read(|c| {
            let mut q = c.prepare("SELECT request_id FROM usage ORDER BY request_id")?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap()
}

/// `full` on a full disk: a row whose record cannot be written is committed before its answer
/// is let go; when that commit fails too, the answer is withheld and its charge given back, so
/// the row must never be committed later (it was: queued as a journaled row before its write
/// failed, it was kept and committed behind, billing the 503; found by an independent check).
/// Rows whose record did go in, or whose charge stands, reach the database once it takes
/// writes again, without a restart (a first fix left delivered rows out until one).
#[tokio::test]
async fn a_row_whose_record_cannot_be_written_is_committed_first_or_never() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open_with(&path, SyncMode::Full, Duration::from_secs(3600))
        .await
        .unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    // The sync task's first tick comes at once (the next in an hour): let it pass before any
    // row is written, so that the journal stays on its first segment (a turn to another one
    // would end the refusals checked below, as it should).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = store.journal.current_seq();
    // The database cannot commit (another program holds its lock).
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Its record written, the answer goes out; the row waits for the database.
    store
        .record_usage(usage("req-delivered", "key_a", 10, 1), false)
        .await
        .unwrap();
    assert!(!store.cannot_record(), "its row is safe in the journal");
    // Now the journal cannot take records either: a whole answer's recording fails (its
    // answer is withheld); a row whose charge stands is kept.
    store.journal.fail_writes();
    let refused = store
        .record_usage(usage("req-withheld", "key_a", 20, 2), false)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // The gateway refuses requests up front now (`Store::cannot_record`), while the journal
    // is on the segment that failed.
    assert_eq!(store.journal.current_seq(), first);
    assert!(store.cannot_record());
    let _ = store
        .record_usage(usage("req-kept", "key_a", 40, 3), true)
        .await;
    lock.execute_batch("ROLLBACK").unwrap();
    // The database takes writes again: the delivered and the kept rows come in, the withheld
    // one never does.
    store.write(insert(key("key_b", 2))).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = ids(&store).await;
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ["req-delivered", "req-kept"]);
    // The commits succeed again: requests are taken again, before any row is recorded.
    assert!(!store.cannot_record());
    // With the journal still failing, a whole answer's row is committed before it is let go.
    store
        .record_usage(usage("req-committed", "key_a", 80, 4), false)
        .await
        .unwrap();
    assert_eq!(
        ids(&store).await,
        ["req-committed", "req-delivered", "req-kept"]
    );
    let (store, keys) = reopen(store, &path).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!((a.spent.nanos(), a.requests), (130, 3));
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 3);
    store.close().await;
}

#[tokio::test]
async fn a_row_recorded_in_normal_mode_is_not_waited_for_to_be_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    record_rows(&store, "req-", 3, 10).await;
    let segment = store.journal.current();
    assert_eq!((segment.appended(), segment.synced()), (3, 0));
    store.close().await;
}

#[tokio::test]
async fn start_up_applies_journaled_rows_the_ledger_lacks_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store
        .write(used(usage("req-1", "key_a", 100, 1)))
        .await
        .unwrap();
    store.close().await;
    drop(store);

    // What a killed daemon leaves: a row that was committed, two that were not, one of a key
    // the ledger does not know, and a record cut short by a power loss, over two segments.
    let jdir = journal::dir_of(&path);
    let journal = Journal::start(&jdir, false).unwrap();
    journal.append(&usage("req-1", "key_a", 100, 1)).unwrap();
    journal.append(&usage("req-2", "key_a", 200, 2)).unwrap();
    let old = journal
        .rotate()
        .unwrap()
        .expect("the first segment was written");
    journal.append(&usage("req-ghost", "key_x", 5, 3)).unwrap();
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(old.path())
        .unwrap();
    std::io::Write::write_all(&mut torn, b"\x1e{\"request_id\":\"req-cut").unwrap();
    journal.append(&usage("req-3", "key_a", 300, 4)).unwrap();
    drop((journal, old, torn));
    let written = segment_texts(&path);
    assert_eq!(written.iter().filter(|(_, t)| !t.is_empty()).count(), 2);

    let (store, keys) = open_normal(&path, 3_600_000).await;
    assert_eq!(
        keys[0].spent.nanos(),
        600,
        "100 committed + 200 + 300 replayed"
    );
    assert_eq!(keys[0].requests, 3);
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 3);
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(600)));
    // The replayed segments are gone; the new journal starts empty.
    assert_eq!(segment_texts(&path).len(), 1);
    assert_eq!(live_rows(&path), Vec::<String>::new());
    let replayed = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT cost_nanos, created_at FROM usage WHERE request_id = 'req-3'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(replayed, (300, 4));

    // Opening again changes nothing.
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].spent.nanos(), 600);
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 3);
    store.close().await;
}

/// A journal of the version before segments were reused (records without a number): what a
/// power loss may leave past the last write — zeros, or junk — does not cost the whole records
/// before it; a record cut short is still skipped, and counted.
#[test]
fn whole_records_of_an_older_version_are_read_whatever_follows_them() {
    let record = |row: &crate::store::usage::UsageRow| {
        let mut r = vec![0x1e];
        journal::encode(row, &mut r).unwrap();
        r.push(b'\n');
        r
    };
    let mut text = record(&usage("req-1", "key_a", 100, 1));
    text.extend_from_slice(&[0; 100]);
    text.extend(record(&usage("req-2", "key_a", 200, 2)));
    text.extend_from_slice(b"junk\x00\x00");
    text.extend(record(&usage("req-3", "key_a", 300, 3)));
    text.extend_from_slice(b"\x1e{\"request_id\":\"req-cut");
    text.extend_from_slice(&[0; 4096]);
    let (rows, torn) = journal::parse(&text, 5);
    let ids: Vec<_> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["req-1", "req-2", "req-3"]);
    assert_eq!(torn, 2, "the junk and the cut record");
}

/// A reused segment: only the records of its own number are rows. An older life's records
/// after them are passed over, and a record torn by a power loss is caught by its checksum
/// even when the older record under it completes it into valid JSON (here: this life's
/// request id with the older row's cost).
#[test]
fn a_reused_segment_reads_only_its_own_whole_records() {
    let frame = |seq, id: &str, cost| journal::frame(seq, &usage(id, "key_a", cost, 1)).unwrap();
    let older: Vec<u8> = (0..4).flat_map(|_| frame(7, "req-o", 900)).collect();
    let mut text = older.clone();
    let first = frame(9, "req-a", 100);
    text[..first.len()].copy_from_slice(&first);
    let (rows, torn) = journal::parse(&text, 9);
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.request_id.as_str(), r.cost.nanos()))
        .collect();
    assert_eq!(got, [("req-a", 100)]);
    assert_eq!(torn, 0, "the older records are not torn ones");

    // The second record torn after its request id: the rest is the older record's.
    let second = frame(9, "req-b", 100);
    let at = first.len();
    let cut = second.windows(5).position(|w| w == b"req-b").unwrap() + 5;
    text[at..at + cut].copy_from_slice(&second[..cut]);
    let mixed = &text[at + 1 + 24..];
    let end = mixed.iter().position(|&b| b == b'\n').unwrap();
    let row: crate::store::usage::UsageRow = serde_json::from_slice(&mixed[..end]).unwrap();
    assert_eq!((row.request_id.as_str(), row.cost.nanos()), ("req-b", 900));
    let (rows, torn) = journal::parse(&text, 9);
    assert_eq!(rows.len(), 1);
    assert_eq!(torn, 1, "the torn record, caught by its checksum");
    // Read as another segment's, none of it is a row.
    let (rows, torn) = journal::parse(&text, 8);
    assert_eq!((rows.len(), torn), (0, 0));
    // A record of the older version's shape (no number) in this version's segment is none of
    // its rows, valid JSON as it is.
    let mut legacy = vec![0x1e];
    journal::encode(&usage("req-forged", "key_a", 500, 1), &mut legacy).unwrap();
    legacy.push(b'\n');
    let mut forged = first.clone();
    forged.extend(&legacy);
    forged.extend_from_slice(&[0; 64]);
    let (rows, torn) = journal::parse(&forged, 9);
    let ids: Vec<_> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!((ids, torn), (vec!["req-a"], 1));
}

/// While the database cannot commit nothing drains, and the journal does not start a new
/// segment every interval (each one 512 KiB written ahead: 150 files for 150 rows in 30 s of a
/// locked database, found by an independent check); reads meanwhile wait for the commit only a
/// moment (they took up to 22 s); once the lock goes every row is committed.
#[tokio::test]
async fn a_database_that_cannot_commit_does_not_fill_the_journal_nor_hold_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 20).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The first row's commit waits out the lock's busy timeout (5 s), and fails.
    store
        .record_usage(usage("req-first", "key_a", 10, 0), true)
        .await
        .unwrap();
    for _ in 0..200 {
        if store.commits_failing() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.commits_failing());
    // Past the backlog cap answers do not wait for failing commits (each waited seconds).
    let recording = std::time::Instant::now();
    for i in 1..12 {
        store
            .record_usage(usage(&format!("req-{i}"), "key_a", 10, i), true)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recording.elapsed() < Duration::from_secs(4),
        "{:?}",
        recording.elapsed()
    );
    let files = segment_texts(&path).len();
    assert!(
        files <= 3,
        "{files} segments for 12 rows over ~30 intervals"
    );
    let asked = std::time::Instant::now();
    let seen = count(&store, "SELECT count(*) FROM usage").await;
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(seen, 0, "nothing committed yet");
    // The rows are on disk in the journal meanwhile (`normal` syncs within the interval).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let current = store.journal.current();
    assert_eq!(current.synced(), current.appended());
    lock.execute_batch("ROLLBACK").unwrap();
    let mut committed = 0;
    for _ in 0..100 {
        committed = count(&store, "SELECT count(*) FROM usage").await;
        if committed == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, 12);
    store.close().await;
}

/// A start that cannot write (here another connection holds the write lock past the busy
/// timeout; a full disk likewise) fails and keeps the segments, rather than skip their rows
/// as refused and delete them: they are bills.
#[tokio::test]
async fn a_replay_that_cannot_write_now_keeps_the_rows_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.close().await;
    drop(store);
    let journal = Journal::start(&journal::dir_of(&path), false).unwrap();
    journal.append(&usage("req-1", "key_a", 100, 1)).unwrap();
    drop(journal);

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let Err(err) = open_normal_result(&path, 3_600_000).await else {
        panic!("the start went on without its journaled rows")
    };
    assert!(err.is_transient(), "{err}");
    other.execute_batch("COMMIT").unwrap();
    let texts = segment_texts(&path);
    assert_eq!(texts.iter().filter(|(_, t)| t.contains("req-1")).count(), 1);

    let (store, keys) = open_normal(&path, 3_600_000).await;
    assert_eq!(keys[0].spent.nanos(), 100);
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 1);
    store.close().await;
}

#[tokio::test]
async fn segments_are_retired_once_their_rows_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 20).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    record_rows(&store, "req-", 50, 10).await;
    // Within a few ticks: a new segment, the WAL synced, the old one retired (deleted or kept
    // as a spare: a reused one's older records are not its rows).
    let mut left = live_rows(&path);
    for _ in 0..250 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = live_rows(&path);
    }
    assert!(left.is_empty(), "segments still holding rows: {left:?}");
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 50);
    assert_eq!(
        count(&store, "SELECT spent_nanos FROM keys WHERE id = 'key_a'").await,
        500
    );
    store.close().await;
}

#[tokio::test]
async fn a_settled_read_sees_the_rows_recorded_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    record_rows(&store, "req-", 3, 100).await;
    // The writer lets journaled rows gather before committing them; the read sees them anyway.
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(300)));
    store.close().await;
}

/// A retired segment is kept and reused as a later one (no new file, no zeros to write), and
/// what it held before is not read back as rows of its new life; a restart reuses the spares
/// left and numbers its segments after them.
#[test]
fn retired_segments_are_reused_and_their_old_rows_are_not_read_again() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let rows_of = |jdir: &Path| -> Vec<String> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(jdir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rows") {
                let seq: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                let (rows, torn) = journal::parse(&std::fs::read(&path).unwrap(), seq);
                assert_eq!(torn, 0);
                ids.extend(rows.into_iter().map(|r| r.request_id));
            }
        }
        ids.sort();
        ids
    };
    let journal = Journal::start(&jdir, false).unwrap();
    let first = journal.current();
    let inode = std::fs::metadata(first.path()).unwrap().ino();
    for i in 0..3 {
        journal
            .append(&usage(&format!("req-old-{i}"), "key_a", 1, i))
            .unwrap();
    }
    drop(first);
    let old = journal.rotate().unwrap().unwrap();
    journal.retire(&old).unwrap();
    drop(old);
    journal.append(&usage("req-mid", "key_a", 1, 3)).unwrap();
    let mid = journal.rotate().unwrap().unwrap();
    let reused = journal.current();
    assert_eq!(
        std::fs::metadata(reused.path()).unwrap().ino(),
        inode,
        "the spare, reused"
    );
    journal.append(&usage("req-new", "key_a", 1, 4)).unwrap();
    assert_eq!(rows_of(&jdir), ["req-mid", "req-new"]);

    // Restarted: the spare left behind is reused, numbered after every name it ever had.
    journal.retire(&mid).unwrap();
    drop((journal, mid, reused));
    let again = Journal::start(&jdir, false).unwrap();
    let seq_of = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    assert_eq!(seq_of(again.current().path()), 3);
    again.append(&usage("req-after", "key_a", 1, 5)).unwrap();
    assert_eq!(rows_of(&jdir), ["req-after", "req-new"]);
}

/// Anything named like a segment but no file is passed over, also when it bears the number the
/// next segment would take (a directory `0.rows`, or one numbered after the last spare, stopped
/// the start: found by independent checks).
#[tokio::test]
async fn a_directory_named_like_a_segment_does_not_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let jdir = journal::dir_of(&path);
    std::fs::create_dir_all(jdir.join("00000000000000000000.rows")).unwrap();
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    record_rows(&store, "req-", 2, 10).await;
    store.close().await;
    drop(store);
    // A spare left, and a directory numbered after it.
    std::fs::write(jdir.join("00000000000000000005.spare"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir_all(jdir.join("00000000000000000006.rows")).unwrap();
    let (store, keys) = open_normal(&path, 3_600_000).await;
    assert_eq!(keys[0].requests, 2);
    let current = store.journal.current();
    assert!(
        current.path().ends_with("00000000000000000007.rows"),
        "{}",
        current.path().display()
    );
    store.close().await;
}

#[test]
fn a_segment_is_drained_only_when_every_row_appended_is_settled_and_nobody_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::start(dir.path(), false).unwrap();
    let first = journal
        .append(&usage("req-1", "key_a", 1, 1))
        .unwrap()
        .segment;
    let second = journal
        .append(&usage("req-2", "key_a", 1, 2))
        .unwrap()
        .segment;
    let retired = journal.rotate().unwrap().expect("written to");
    assert!(!journal::Segment::drained(&retired), "rows still queued");
    first.settle_one();
    drop(first);
    // A row dropped without being committed (a stopped process) is not settled.
    drop(second);
    assert!(
        !journal::Segment::drained(&retired),
        "one row never committed"
    );
    retired.settle_one();
    assert!(journal::Segment::drained(&retired));
    let _held = retired.clone();
    assert!(
        !journal::Segment::drained(&retired),
        "a row being appended holds it"
    );
}

/// The journal's directory removed while the daemon runs is made again at the next new
/// segment, so rows go on into a file the next start can replay (they went into the removed
/// segment, out of sight; found by an independent check).
#[test]
fn a_journal_directory_removed_while_running_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let journal = Journal::start(&jdir, false).unwrap();
    journal.append(&usage("req-1", "key_a", 1, 1)).unwrap();
    std::fs::remove_dir_all(&jdir).unwrap();
    let _old = journal.rotate().unwrap().expect("written to");
    let appended = journal.append(&usage("req-2", "key_a", 1, 2)).unwrap();
    assert!(appended.segment.path().starts_with(&jdir));
    assert!(
        appended.segment.path().exists(),
        "the new segment is on disk"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&jdir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn a_backup_holds_the_rows_recorded_before_it_was_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    record_rows(&store, "req-b", 3, 100).await;
    // The rows are in the journal, not yet committed (the writer lingers): the backup commits
    // them first, or a restore from it would lose answered requests.
    let dest = dir.path().join("backup.db");
    store.backup(&dest).await.unwrap();
    let copy = rusqlite::Connection::open(&dest).unwrap();
    let (n, spent): (i64, i64) = copy
        .query_row(
            "SELECT (SELECT count(*) FROM usage), spent_nanos FROM keys WHERE id = 'key_a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, spent), (3, 300));
    store.close().await;
}

#[tokio::test]
async fn the_ledger_writer_runs_at_the_lowest_priority() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let before = niced_threads();
    let (store, _) = open_normal(&path, 3_600_000).await;
    // The writer has set its priority by the time it has committed something.
    store.write(insert(key("key_a", 1))).await.unwrap();
    let after = niced_threads();
    assert!(
        after.iter().any(|t| !before.contains(t)),
        "no new thread at nice 19: before {before:?}, after {after:?}"
    );
    store.close().await;
}

/// This process's threads at nice 19.
fn niced_threads() -> Vec<String> {
    crate::background::threads()
        .into_iter()
        .filter(|(_, _, nice)| *nice == 19)
        .map(|(tid, _, _)| tid)
        .collect()
}

#[tokio::test]
async fn past_the_backlog_cap_an_answer_waits_for_its_rows_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = open_normal(&path, 3_600_000).await;
    store.write(insert(key("key_a", 1))).await.unwrap();
    // All queued before any is awaited: the writer is behind by more than the cap (4 in
    // tests), so the rows past it wait for their commits, which take the rows before them too.
    let recorded: Vec<_> = (0..50)
        .map(|i| store.record_usage(usage(&format!("req-cap{i}"), "key_a", 10, i), true))
        .collect();
    for r in futures_util::future::join_all(recorded).await {
        r.unwrap();
    }
    // Read past the store (no barrier): every row is committed already.
    let direct = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = direct
        .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
    store.close().await;
}

mod encoding {
    //! The journal's hand-written record against serde's: byte for byte, for any row.
    use proptest::prelude::*;

    use crate::money::Usd;
    use crate::pricing::PricePeriod;
    use crate::status::{Api, Finish, Measured};
    use crate::store::journal::encode;
    use crate::store::usage::UsageRow;

    /// Text with what JSON must escape: quotes, backslashes, control characters, non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{0,30}",
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀a]{0,12}",
        ]
    }

    prop_compose! {
        fn row()(
            (request_id, key_id, model, account) in (text(), text(), text(), text()),
            stream in any::<bool>(),
            period in prop::sample::select(vec![PricePeriod::OffPeak, PricePeriod::Peak]),
            tokens in any::<[u64; 5]>(),
            cost in any::<i64>(),
            measured in prop::sample::select(vec![
                Measured::Provider, Measured::Estimated, Measured::Clamped,
            ]),
            status in any::<u16>(),
            finish in prop::sample::select(vec![
                Finish::Complete, Finish::ClientAbort, Finish::UpstreamError,
                Finish::UpstreamTimeout, Finish::Rejected, Finish::Shutdown,
            ]),
            (latency_ms, ttft_ms, created_at_ms) in (any::<u64>(), any::<Option<u64>>(), any::<i64>()),
            api in prop::sample::select(vec![Api::OpenAi, Api::Anthropic]),
        ) -> UsageRow {
            UsageRow {
                request_id, key_id, model, stream, period,
                prompt_tokens: tokens[0], cache_hit_tokens: tokens[1],
                cache_miss_tokens: tokens[2], completion_tokens: tokens[3],
                reasoning_tokens: tokens[4], cost: Usd::from_nanos(cost), measured, status,
                finish, latency_ms, ttft_ms, created_at_ms, api, account,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The record is exactly serde's text, so replay (which reads it with serde) gets the
        /// row back whole.
        #[test]
        fn the_record_is_serdes_text_and_reads_back(row in row()) {
            let mut ours = Vec::new();
            encode(&row, &mut ours).unwrap();
            let serdes = serde_json::to_vec(&row).unwrap();
            prop_assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&serdes)
            );
            let back: UsageRow = serde_json::from_slice(&ours).unwrap();
            prop_assert_eq!(serde_json::to_vec(&back).unwrap(), serdes);
        }
    }
}

/// `full`: a segment whose records could not be written counts as full, so the next tick moves
/// on to a spare even while retired segments wait for commits: a write past the room written
/// ahead needs new blocks, and on a full disk the segment took no more rows while a spare sat
/// unused (found by an independent check).
#[test]
fn a_segment_whose_write_failed_counts_as_full() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let journal = Journal::start(&jdir, true).unwrap();
    let put = |id: &str| {
        let appended = journal.append(&usage(id, "key_a", 1, 1)).unwrap();
        let (record, _) = appended.record.expect("staged: the record is handed over");
        appended.segment.put(&[record.as_slice()])
    };
    put("req-ok").unwrap();
    assert!(!journal.current_full());
    journal.fail_writes();
    assert!(put("req-refused").is_err());
    assert!(journal.current_full());
    // Its row not recorded: the journal is stuck while that segment is the current one, and
    // not once the next tick has moved on to another.
    journal.set_stuck(Some(journal.current_seq()));
    assert!(journal.stuck());
    let _old = journal.rotate().unwrap().expect("written to");
    assert!(!journal.stuck());
}

/// A row whose charge stands, neither journaled nor committed when the store closes (a full
/// disk throughout), is counted as lost by `close` (the daemon then exits 1, each such row
/// logged), not dropped with a count in the log and a clean exit.
#[tokio::test]
async fn a_row_neither_journaled_nor_committed_at_close_is_counted_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open_with(&path, SyncMode::Full, Duration::from_secs(3600))
        .await
        .unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store
        .record_usage(usage("req-safe", "key_a", 10, 1), true)
        .await
        .unwrap();
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    store.journal.fail_writes();
    let kept = store
        .record_usage(usage("req-kept", "key_a", 20, 2), true)
        .await;
    assert!(kept.is_err(), "{kept:?}");
    assert_eq!(store.close().await, 1);
    lock.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn a_database_lost_while_its_journal_holds_rows_is_not_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.close().await;
    drop(store);
    // What a killed daemon leaves in its journal, and then the database file gone (removed
    // under the running daemon, which went on writing to the unlinked file).
    let jdir = journal::dir_of(&path);
    let journal = Journal::start(&jdir, false).unwrap();
    journal.append(&usage("req-1", "key_a", 100, 1)).unwrap();
    drop(journal);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    let err = match Store::open(&path).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a new, empty database was started in place of the lost one"),
    };
    assert!(
        err.contains("is missing") && err.contains("holds 1 rows"),
        "{err}"
    );
    assert!(
        !path.exists(),
        "nothing is created in the lost database's place"
    );
    assert_eq!(
        live_rows(&path),
        vec!["req-1".to_owned()],
        "the journal is kept"
    );

    // Removed on purpose, journal and all: a new database.
    std::fs::remove_dir_all(&jdir).unwrap();
    let (store, keys) = Store::open(&path).await.unwrap();
    assert!(keys.is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_database_file_removed_under_the_store_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    assert!(!store.file_gone());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    // Commits go on succeeding, into the unlinked file: only the path tells.
    store.write(insert(key("key_a", 1))).await.unwrap();
    assert!(store.file_gone(), "a removed database file is noticed");
    // Something else put in its place is not the store's file either.
    std::fs::write(&path, b"").unwrap();
    assert!(store.file_gone(), "a replaced database file is noticed");
    store.close().await;
}
